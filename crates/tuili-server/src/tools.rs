//! Tool calling: `tools`, `tool_choice` and `parallel_tool_calls` checked; the tool calls
//! of earlier assistant turns made ready for the chat template; the model's call format
//! told from its template; and the grammar that makes `required` or a named function
//! always produce calls whose arguments fit the tool's schema.

use serde_json::{json, Map, Value};
use tuili_engine::ConstraintSpec;
use tuili_tokenizer::Tokenizer;

use crate::validate::kind;
use crate::ServerError;

/// Most tools one request may declare.
pub const MAX_TOOLS: usize = 128;

/// Which tool the model may or must call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Never: the tools are not shown to the model.
    None,
    /// The model decides.
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Named(String),
}

/// The tools of a chat request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// OpenAI's `{"type": "function", "function": {"name", "description", "parameters"}}`.
    pub tools: Vec<Value>,
    /// `tool_choice` (default `auto`).
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): more than one call per turn.
    pub parallel: bool,
}

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// Hermes, Qwen2.5, Qwen3: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.
    Hermes,
    /// Qwen3-Coder: `<tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n
    /// </function>\n</tool_call>`.
    QwenXml,
    /// Llama 3.x: the whole answer is `{"name": ..., "parameters": {...}}` (after the
    /// `<|python_tag|>` special token, which decoding hides), several joined by `;`.
    Llama3,
    /// Mistral: `[TOOL_CALLS]` (a special token, hidden) then a JSON list of
    /// `{"name", "arguments"}`.
    Mistral,
    /// Mistral's tekken v11+ models (Ministral 3, Mistral Small 3.1/3.2, Magistral,
    /// Devstral): `[TOOL_CALLS]NAME[ARGS]{...}` per call, maybe `[CALL_ID]ID` before
    /// `[ARGS]` (see [`crate::mistral`]).
    MistralV11,
    /// gpt-oss's harmony: a message `<|channel|>commentary to=functions.NAME
    /// <|constrain|>json<|message|>{...}` per call (see [`crate::harmony_grammar`]).
    Harmony,
}

impl ToolFormat {
    /// The format a chat template asks its model to use, if it knows one.
    pub fn of_template(source: &str) -> Option<ToolFormat> {
        if source.contains("<|channel|>") {
            Some(ToolFormat::Harmony)
        } else if source.contains("<tool_call>") && source.contains("<function=") {
            Some(ToolFormat::QwenXml)
        } else if source.contains("<tool_call>") {
            Some(ToolFormat::Hermes)
        } else if source.contains("[TOOL_CALLS]") && source.contains("[ARGS]") {
            // The template writes past calls as `[TOOL_CALLS]NAME[ARGS]...`.
            Some(ToolFormat::MistralV11)
        } else if source.contains("[TOOL_CALLS]") {
            Some(ToolFormat::Mistral)
        } else if source.contains("<|python_tag|>") || source.contains("\"parameters\": ") {
            Some(ToolFormat::Llama3)
        } else {
            None
        }
    }

    /// The key a call's arguments go under.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            ToolFormat::Hermes
            | ToolFormat::QwenXml
            | ToolFormat::Mistral
            | ToolFormat::MistralV11
            | ToolFormat::Harmony => "arguments",
        }
    }
}

/// Reads `tools`, `tool_choice` and `parallel_tool_calls`; `None` without tools.
pub fn tool_spec(map: &Map<String, Value>) -> Result<Option<ToolSpec>, ServerError> {
    let tools = match map.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => {
            return Err(ServerError::field(
                "tools",
                format!("tools must be a list of tools, got {}", kind(other)),
            ))
        }
    };
    if tools.len() > MAX_TOOLS {
        return Err(ServerError::field(
            "tools",
            format!(
                "tools may hold at most {MAX_TOOLS} tools, got {}",
                tools.len()
            ),
        ));
    }
    let mut names = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        names.push(tool(i, t)?);
    }
    let choice = match map.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ServerError::field(
                    "tool_choice",
                    format!("tool_choice must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got '{other}'"),
                ))
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").is_some_and(|t| t == "function") => {
                if !names.iter().any(|n| n == name) {
                    return Err(ServerError::field(
                        "tool_choice.function.name",
                        format!("tool_choice.function.name '{name}' is not one of the tools"),
                    ));
                }
                ToolChoice::Named(name.to_string())
            }
            _ => {
                return Err(ServerError::field(
                    "tool_choice",
                    format!(
                        "tool_choice must be a string or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {}",
                        kind(v)
                    ),
                ))
            }
        },
    };
    let parallel = match map.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ServerError::field(
                "parallel_tool_calls",
                format!("parallel_tool_calls must be a boolean, got {}", kind(other)),
            ))
        }
    };
    if tools.is_empty() {
        return match choice {
            ToolChoice::None | ToolChoice::Auto => Ok(None),
            _ => Err(ServerError::field(
                "tool_choice",
                "tool_choice requires tools, but none were given",
            )),
        };
    }
    Ok(Some(ToolSpec {
        tools,
        choice,
        parallel,
    }))
}

/// Checks tool `i`; returns its function name.
fn tool(i: usize, t: &Value) -> Result<String, ServerError> {
    let at = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ServerError::field(
            format!("{at}.type"),
            format!("{at}.type must be 'function'"),
        ));
    }
    let name = t.pointer("/function/name").and_then(Value::as_str);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(ServerError::field(
            format!("{at}.function.name"),
            format!("'{at}.function.name' is required and must be a non-empty string"),
        ));
    };
    if let Some(p) = t.pointer("/function/parameters") {
        if !p.is_object() {
            return Err(ServerError::field(
                format!("{at}.function.parameters"),
                format!(
                    "{at}.function.parameters must be a JSON schema object, got {}",
                    kind(p)
                ),
            ));
        }
    }
    Ok(name.to_string())
}

/// An assistant message's `tool_calls` as chat templates read them (HF's layout): each
/// call's `arguments` parsed from OpenAI's JSON string into an object.
pub fn history_calls(at: &str, v: &Value) -> Result<Value, ServerError> {
    let Some(calls) = v.as_array() else {
        return Err(ServerError::field(
            at,
            format!("{at} must be a list, got {}", kind(v)),
        ));
    };
    let mut out = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let Some(name) = c.pointer("/function/name").and_then(Value::as_str) else {
            return Err(ServerError::field(
                format!("{at}.function.name"),
                format!("'{at}.function.name' is required"),
            ));
        };
        let args = match c.pointer("/function/arguments") {
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                ServerError::field(
                    format!("{at}.function.arguments"),
                    format!("{at}.function.arguments is not JSON: {e}"),
                )
            })?,
            Some(v @ Value::Object(_)) => v.clone(),
            None | Some(Value::Null) => json!({}),
            Some(other) => {
                return Err(ServerError::field(
                    format!("{at}.function.arguments"),
                    format!(
                        "{at}.function.arguments must be a JSON string, got {}",
                        kind(other)
                    ),
                ))
            }
        };
        out.push(json!({
            "id": c.get("id").cloned().unwrap_or(Value::Null),
            "type": "function",
            "function": {"name": name, "arguments": args},
        }));
    }
    Ok(Value::Array(out))
}

impl ToolSpec {
    /// The tools the template shows the model (none with `tool_choice: none`).
    pub fn shown(&self) -> Option<Value> {
        (self.choice != ToolChoice::None).then(|| Value::Array(self.tools.clone()))
    }

    /// The grammar of the answer: for `required` and a named function, one call (or
    /// several with `parallel_tool_calls`) in `format`, each `{"name", "arguments"}`
    /// fitting its tool; for `auto`, a lazy grammar: free text until the format's trigger,
    /// then calls only, as llama.cpp's lazy grammars do. `tok` is the model's vocabulary:
    /// control-token markers (Mistral's `[TOOL_CALLS]`, harmony's) are matched as its tokens.
    pub fn grammar(&self, format: ToolFormat, tok: &Tokenizer) -> Option<ConstraintSpec> {
        let wanted: Vec<&Value> = match &self.choice {
            ToolChoice::None => return None,
            ToolChoice::Auto | ToolChoice::Required => self.tools.iter().collect(),
            ToolChoice::Named(n) => self
                .tools
                .iter()
                .filter(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(n))
                .collect(),
        };
        let auto = self.choice == ToolChoice::Auto;
        let tool_calls = tok.token_id("[TOOL_CALLS]");
        match format {
            ToolFormat::QwenXml => return Some(ConstraintSpec::Lark(self.xml_grammar(&wanted))),
            ToolFormat::Harmony => {
                let g = crate::harmony_grammar::grammar(&wanted, auto, tok);
                return Some(ConstraintSpec::Lark(g));
            }
            ToolFormat::MistralV11 => {
                let g = crate::mistral_grammar::grammar(&wanted, auto, self.parallel, tok)?;
                return Some(ConstraintSpec::Lark(g));
            }
            // Without its trigger token the model cannot start calls: nothing to switch on.
            ToolFormat::Mistral if auto && tool_calls.is_none() => return None,
            _ => {}
        }
        let calls: Vec<Value> = wanted
            .iter()
            .map(|t| {
                let f = &t["function"];
                let params = match f.get("parameters") {
                    Some(p) if p.is_object() => p.clone(),
                    _ => json!({"type": "object"}),
                };
                let key = format.arguments_key();
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f["name"]}, key: params},
                    "required": ["name", key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut schema = if calls.len() == 1 {
            calls.into_iter().next().expect("one call")
        } else {
            json!({"anyOf": calls})
        };
        let layout = json_layout();
        Some(ConstraintSpec::Lark(match format {
            ToolFormat::Hermes => {
                schema["x-guidance"] = layout;
                // Further calls, each on its own line, with parallel_tool_calls.
                let more = if self.parallel {
                    " (\"\\n\"? \"<tool_call>\\n\" body \"\\n</tool_call>\")*"
                } else {
                    ""
                };
                let tail =
                    format!("body \"\\n</tool_call>\"{more} \"\\n\"?\nbody: %json {schema}\n");
                self.tagged(&tail)
            }
            ToolFormat::QwenXml | ToolFormat::Harmony | ToolFormat::MistralV11 => {
                unreachable!("the XML, harmony and Mistral v11 grammars are built above")
            }
            ToolFormat::Llama3 => {
                schema["x-guidance"] = layout;
                let more = if self.parallel { " (\"; \" body)*" } else { "" };
                let calls = format!("body{more}\nbody: %json {schema}\n");
                if self.choice == ToolChoice::Auto {
                    // The whole answer is the calls, or text that does not open with `{`.
                    format!("start: FREE | {calls}FREE: /(?s:([^{{].*)?)/\n")
                } else {
                    format!("start: {calls}")
                }
            }
            ToolFormat::Mistral => {
                let mut list = json!({"type": "array", "items": schema, "minItems": 1});
                if !self.parallel {
                    list["maxItems"] = json!(1);
                }
                list["x-guidance"] = layout;
                // The list after the `[TOOL_CALLS]` token where the vocabulary has it. Under
                // `auto` the answer is the calls or anything without the trigger: decoding
                // hides the trigger, so calls after text could not be told from text.
                match tool_calls {
                    None => format!("start: %json {list}\n"),
                    Some(id) => {
                        let calls = format!("<[{id}]> \" \"? %json {list}");
                        if auto {
                            format!("start: {calls} | <[^{id}]>*\n")
                        } else {
                            format!("start: {calls}\n")
                        }
                    }
                }
            }
        }))
    }
}

/// How a call's JSON is written: no free whitespace, `", "` and `": "` as the templates
/// write it.
pub(crate) fn json_layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl ToolSpec {
    /// The start of a grammar whose calls open with `<tool_call>` (then `tail`): only
    /// calls, or for `auto` free text until the model writes `<tool_call>` (FREE is text
    /// without the trigger; CALL is such text then the trigger, so the lexer sees which
    /// one it is at the trigger's end).
    fn tagged(&self, tail: &str) -> String {
        if self.choice == ToolChoice::Auto {
            format!(
                "start: FREE | CALL \"\\n\" {tail}FREE: /(?s:.*)/ & ~/(?s:.*<tool_call>.*)/\nCALL: FREE \"<tool_call>\"\n"
            )
        } else {
            format!("start: \"<tool_call>\\n\" {tail}")
        }
    }

    /// Qwen3-Coder's XML calls: `<function=NAME>` then each parameter of the tool's
    /// schema in its order (the required ones always, the others optionally) as
    /// `<parameter=KEY>\nVALUE\n</parameter>\n`, then `</function>`. A string value is
    /// text without `</parameter>` (one of an `enum`'s strings when it has one); any other
    /// is JSON fitting the parameter's schema.
    fn xml_grammar(&self, wanted: &[&Value]) -> String {
        let lit = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut rules = String::new();
        let mut calls = Vec::new();
        for (i, t) in wanted.iter().enumerate() {
            let f = &t["function"];
            let name = f["name"].as_str().unwrap_or_default();
            let params = &f["parameters"];
            let required: Vec<&str> = params["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seq = String::new();
            if let Some(props) = params["properties"].as_object() {
                for (j, (key, schema)) in props.iter().enumerate() {
                    const END: &str = "\"\\n</parameter>\\n\"";
                    let choices: Option<Vec<String>> = schema["enum"]
                        .as_array()
                        .map(|e| e.iter().filter_map(Value::as_str).map(lit).collect());
                    let value = match choices {
                        Some(c) if schema["type"] == "string" && !c.is_empty() => {
                            format!("({}) {END}", c.join(" | "))
                        }
                        // Text and its end in one lexeme, so the lexer needs no lookahead.
                        _ if schema["type"] == "string" => "XML_TEXT_END".to_string(),
                        _ => {
                            let mut s = schema.clone();
                            if s.is_object() {
                                s["x-guidance"] = json_layout();
                            }
                            format!("%json {s} {END}")
                        }
                    };
                    rules += &format!(
                        "p{i}_{j}: {} {value}\n",
                        lit(&format!("<parameter={key}>\n"))
                    );
                    let opt = if required.contains(&key.as_str()) {
                        ""
                    } else {
                        "?"
                    };
                    seq += &format!(" p{i}_{j}{opt}");
                }
            }
            rules += &format!(
                "c{i}: {}{seq} \"</function>\"\n",
                lit(&format!("<function={name}>\n"))
            );
            calls.push(format!("c{i}"));
        }
        let more = if self.parallel {
            " (\"\\n\"? \"<tool_call>\\n\" body \"\\n</tool_call>\")*"
        } else {
            ""
        };
        let tail = format!(
            "body \"\\n</tool_call>\"{more} \"\\n\"?\nbody: {}\n{rules}XML_TEXT_END: /(?s:.*\\n<\\/parameter>\\n)/ & ~/(?s:.*<\\/parameter>..+)/\n",
            calls.join(" | ")
        );
        self.tagged(&tail)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(v: Value) -> Result<Option<ToolSpec>, ServerError> {
        tool_spec(v.as_object().unwrap())
    }

    pub(crate) fn weather() -> Value {
        json!({"type": "function", "function": {"name": "weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"]}}})
    }

    #[test]
    fn tools_and_choices_are_read() {
        assert_eq!(spec(json!({})).unwrap(), None);
        let s = spec(json!({"tools": [weather()], "tool_choice": "required",
                            "parallel_tool_calls": false}))
        .unwrap()
        .unwrap();
        assert_eq!(s.choice, ToolChoice::Required);
        assert!(!s.parallel);
        let s = spec(json!({"tools": [weather()],
                            "tool_choice": {"type": "function", "function": {"name": "weather"}}}))
        .unwrap()
        .unwrap();
        assert_eq!(s.choice, ToolChoice::Named("weather".into()));
        assert!(s.shown().is_some());
        let none = spec(json!({"tools": [weather()], "tool_choice": "none"}))
            .unwrap()
            .unwrap();
        assert_eq!(none.shown(), None);
    }

    #[test]
    fn bad_tools_name_the_field() {
        let cases = [
            (json!({"tools": {}}), "tools"),
            (
                json!({"tools": [{"type": "function", "function": {}}]}),
                "tools[0].function.name",
            ),
            (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
            (
                json!({"tools": [weather()], "tool_choice": "always"}),
                "tool_choice",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
                "tool_choice.function.name",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (
                json!({"tools": [weather()], "parallel_tool_calls": 1}),
                "parallel_tool_calls",
            ),
        ];
        for (body, param) in cases {
            match spec(body.clone()) {
                Err(ServerError::InvalidField { param: p, .. }) => assert_eq!(p, param, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn formats_come_from_templates_and_their_grammars_compile() {
        assert_eq!(
            ToolFormat::of_template("x <tool_call> y"),
            Some(ToolFormat::Hermes)
        );
        assert_eq!(
            ToolFormat::of_template("{{ '[TOOL_CALLS]' }}"),
            Some(ToolFormat::Mistral)
        );
        assert_eq!(
            ToolFormat::of_template("{{- '[TOOL_CALLS]' + name + '[ARGS]' + arguments }}"),
            Some(ToolFormat::MistralV11)
        );
        assert_eq!(
            ToolFormat::of_template("<|python_tag|>"),
            Some(ToolFormat::Llama3)
        );
        assert_eq!(
            ToolFormat::of_template("<tool_call>\n<function=example_function_name>"),
            Some(ToolFormat::QwenXml)
        );
        assert_eq!(
            ToolFormat::of_template("{{- \"<|start|>assistant<|channel|>final<|message|>\" }}"),
            Some(ToolFormat::Harmony)
        );
        assert_eq!(ToolFormat::of_template("{{ messages }}"), None);
        let s = spec(json!({"tools": [weather()], "tool_choice": "required"}))
            .unwrap()
            .unwrap();
        let none = spec(json!({"tools": [weather()], "tool_choice": "none"}))
            .unwrap()
            .unwrap();
        let Some((tok, g)) = compiler("smol.gguf") else {
            return;
        };
        assert_eq!(none.grammar(ToolFormat::Hermes, &tok), None);
        for f in [
            ToolFormat::Hermes,
            ToolFormat::Llama3,
            ToolFormat::Mistral,
            ToolFormat::MistralV11,
            ToolFormat::QwenXml,
            ToolFormat::Harmony,
        ] {
            let lark = s.grammar(f, &tok).unwrap();
            if let Err(e) = g.compile(&lark) {
                panic!("{f:?}: {e}: {lark:?}");
            }
        }
    }

    /// The tokenizer of the real model `name` and a grammar compiler over it; `None` (the
    /// test skips) without test models.
    pub(crate) fn compiler(
        name: &str,
    ) -> Option<(
        std::sync::Arc<tuili_tokenizer::Tokenizer>,
        tuili_engine::GrammarCompiler,
    )> {
        let path = tuili_testkit::model(name)?;
        let file = tuili_gguf::GgufFile::open(&path).unwrap();
        let cfg = tuili_tokenizer::TokenizerConfig::from_gguf(&file).unwrap();
        Some(compiler_of(cfg))
    }

    fn compiler_of(
        cfg: tuili_tokenizer::TokenizerConfig,
    ) -> (
        std::sync::Arc<tuili_tokenizer::Tokenizer>,
        tuili_engine::GrammarCompiler,
    ) {
        let tok = std::sync::Arc::new(tuili_tokenizer::Tokenizer::new(cfg).unwrap());
        let g = tuili_engine::GrammarCompiler::new(tok.clone());
        (tok, g)
    }

    /// The constraint of the tool grammar that request `body` asks for in `format`.
    pub(crate) fn constraint(
        g: &tuili_engine::GrammarCompiler,
        tok: &tuili_tokenizer::Tokenizer,
        body: Value,
        format: ToolFormat,
    ) -> tuili_engine::Constraint {
        let s = spec(body).unwrap().unwrap();
        g.compile(&s.grammar(format, tok).unwrap()).unwrap()
    }

    /// Whether `text`, tokenized as the model would write it, fits the constraint to its end.
    pub(crate) fn fits(
        tok: &tuili_tokenizer::Tokenizer,
        mut c: tuili_engine::Constraint,
        text: &str,
    ) -> bool {
        tok.encode(text, false, true)
            .into_iter()
            .all(|t| c.accept(t).is_ok())
    }

    #[test]
    fn auto_is_free_text_until_the_trigger_then_only_valid_calls() {
        let auto = spec(json!({"tools": [weather()]})).unwrap().unwrap();
        assert_eq!(auto.choice, ToolChoice::Auto);
        let Some((tok, g)) = compiler("qwen.gguf") else {
            return;
        };
        // A vocabulary without Mistral's trigger token: nothing to switch on.
        assert_eq!(auto.grammar(ToolFormat::Mistral, &tok), None);
        let c = g
            .compile(&auto.grammar(ToolFormat::Hermes, &tok).unwrap())
            .unwrap();
        let call = "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        assert!(fits(
            &tok,
            c.clone(),
            "It is sunny, <b>really</b> {not json}."
        ));
        assert!(fits(&tok, c.clone(), ""));
        assert!(fits(&tok, c.clone(), &format!("Let me look.\n{call}")));
        assert!(fits(&tok, c.clone(), &format!("{call}\n{call}\n")));
        // After the trigger: the arguments must fit the schema and the name must exist.
        let bad_args = "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"town\": 1}}";
        assert!(!fits(&tok, c.clone(), bad_args));
        assert!(!fits(&tok, c.clone(), "<tool_call>\n{\"name\": \"stocks\""));
        // Nothing but calls after the first one.
        assert!(!fits(&tok, c.clone(), &format!("{call}\nDone.")));
        let single = spec(json!({"tools": [weather()], "parallel_tool_calls": false}))
            .unwrap()
            .unwrap();
        let c = g
            .compile(&single.grammar(ToolFormat::Hermes, &tok).unwrap())
            .unwrap();
        assert!(fits(&tok, c.clone(), call));
        assert!(!fits(&tok, c, &format!("{call}\n{call}")));
    }

    /// A tool with a required string, an optional bounded integer and an enum.
    pub(crate) fn booking() -> Value {
        json!({"type": "function", "function": {"name": "book", "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "nights": {"type": "integer", "minimum": 1, "maximum": 9},
                "room": {"type": "string", "enum": ["single", "double"]},
            },
            "required": ["city"]}}})
    }

    #[test]
    fn qwen_xml_calls_follow_the_tools_schemas() {
        let Some((tok, g)) = compiler("qwen.gguf") else {
            return;
        };
        let required = spec(json!({"tools": [weather(), booking()], "tool_choice": "required"}))
            .unwrap()
            .unwrap();
        let c = g
            .compile(&required.grammar(ToolFormat::QwenXml, &tok).unwrap())
            .unwrap();
        let call = "<tool_call>\n<function=book>\n<parameter=city>\nSão Paulo, \"centro\"\n</parameter>\n<parameter=nights>\n3\n</parameter>\n</function>\n</tool_call>";
        assert!(fits(&tok, c.clone(), call));
        // The parser reads back what the grammar lets through.
        let body = call
            .strip_prefix("<tool_call>\n")
            .and_then(|b| b.strip_suffix("\n</tool_call>"))
            .unwrap();
        let (name, args) = crate::tool_xml::parse_call(body).unwrap();
        assert_eq!(name, "book");
        let args: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(args["nights"], 3);
        assert_eq!(args["city"], "São Paulo, \"centro\"");
        // Each rule: a known function, its required parameter, values that fit.
        for bad in [
            "Sure.",
            "<tool_call>\n<function=hotel>",
            "<tool_call>\n<function=book>\n<parameter=nights>",
            "<tool_call>\n<function=book>\n<parameter=city>\nRome\n</parameter>\n<parameter=nights>\n12\n",
            "<tool_call>\n<function=book>\n<parameter=city>\nRome\n</parameter>\n<parameter=room>\nsuite",
        ] {
            assert!(!fits(&tok, c.clone(), bad), "{bad:?}");
        }
        // auto: free text, then calls only once `<tool_call>` is written.
        let auto = spec(json!({"tools": [booking()]})).unwrap().unwrap();
        let c = g
            .compile(&auto.grammar(ToolFormat::QwenXml, &tok).unwrap())
            .unwrap();
        assert!(fits(&tok, c.clone(), "No call needed, <b>thanks</b>."));
        assert!(fits(&tok, c.clone(), &format!("Booking now.\n{call}")));
        assert!(!fits(&tok, c, "<tool_call>\n<function=weather>"));
    }

    #[test]
    fn llama_auto_is_text_or_calls_from_the_first_character() {
        let Some((tok, g)) = compiler("smol.gguf") else {
            return;
        };
        let auto = spec(json!({"tools": [weather()]})).unwrap().unwrap();
        let c = g
            .compile(&auto.grammar(ToolFormat::Llama3, &tok).unwrap())
            .unwrap();
        let call = "{\"name\": \"weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert!(fits(&tok, c.clone(), call));
        assert!(fits(&tok, c.clone(), &format!("{call}; {call}")));
        assert!(fits(&tok, c.clone(), "It is sunny {maybe}."));
        assert!(fits(&tok, c.clone(), ""));
        assert!(!fits(&tok, c.clone(), "{\"name\": \"stocks\""));
        assert!(!fits(&tok, c, &format!("{call} done")));
    }

    /// Control tokens of harmony's messages and Mistral's calls and thoughts.
    const MARKERS: [&str; 12] = [
        "<|start|>",
        "<|end|>",
        "<|message|>",
        "<|channel|>",
        "<|constrain|>",
        "<|return|>",
        "<|call|>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "[CALL_ID]",
        "[THINK]",
        "[/THINK]",
    ];

    /// SmolLM2's vocabulary plus [`MARKERS`] as control tokens (type 3), as gpt-oss's and
    /// Mistral's GGUFs mark them (the tokenizer then treats harmony's as it does gpt-oss's:
    /// `<|call|>` and `<|return|>` end the generation, `<|end|>` does not).
    pub(crate) fn marked_compiler() -> Option<(
        std::sync::Arc<tuili_tokenizer::Tokenizer>,
        tuili_engine::GrammarCompiler,
    )> {
        let path = tuili_testkit::model("smol.gguf")?;
        let file = tuili_gguf::GgufFile::open(&path).unwrap();
        let mut cfg = tuili_tokenizer::TokenizerConfig::from_gguf(&file).unwrap();
        let n = cfg.tokens.len();
        cfg.tokens.extend(MARKERS.map(String::from));
        cfg.token_types
            .get_or_insert_with(|| vec![1; n])
            .extend([3; MARKERS.len()]);
        if let Some(scores) = cfg.scores.as_mut() {
            scores.extend([0.0; MARKERS.len()]);
        }
        let (tok, g) = compiler_of(cfg);
        for m in MARKERS {
            assert_eq!(tok.encode(m, false, true).len(), 1, "{m}");
        }
        Some((tok, g))
    }

    /// Where in `text` (tokenized as the model would write it, markers as their tokens) the
    /// constraint refuses a token: that token's byte range; `None` when all fit.
    pub(crate) fn rejected_at(
        tok: &tuili_tokenizer::Tokenizer,
        mut c: tuili_engine::Constraint,
        text: &str,
    ) -> Option<std::ops::Range<usize>> {
        let mut at = 0;
        for t in tok.encode(text, false, true) {
            let len = tok.decode(&[t], false).len();
            if c.accept(t).is_err() {
                return Some(at..at + len);
            }
            at += len;
        }
        None
    }

    /// Asserts that `text` is refused at the token holding byte `at`.
    #[track_caller]
    pub(crate) fn refused_at(
        tok: &tuili_tokenizer::Tokenizer,
        c: &tuili_engine::Constraint,
        text: &str,
        at: usize,
    ) {
        match rejected_at(tok, c.clone(), text) {
            Some(r) => assert!(r.contains(&at), "{text:?}: refused at {r:?}, not at {at}"),
            None => panic!("{text:?} fits"),
        }
    }

    #[test]
    fn mistral_calls_open_with_their_trigger_token_and_auto_is_lazy() {
        let Some((tok, g)) = marked_compiler() else {
            return;
        };
        let call = "[{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}]";
        let body = json!({"tools": [weather(), booking()], "tool_choice": "required"});
        let c = constraint(&g, &tok, body, ToolFormat::Mistral);
        assert!(fits(&tok, c.clone(), &format!("[TOOL_CALLS]{call}")));
        assert!(fits(&tok, c.clone(), &format!("[TOOL_CALLS] {call}")));
        let two = "[TOOL_CALLS][{\"name\": \"book\", \"arguments\": {\"city\": \"Rome\", \"nights\": 2}}, {\"name\": \"weather\", \"arguments\": {\"city\": \"Rome\"}}]";
        assert!(fits(&tok, c.clone(), two));
        // The trigger is its token, not text that spells it; then only calls that fit.
        refused_at(&tok, &c, call, 0);
        let spelled = tok.encode(&format!("[TOOL_CALLS]{call}"), false, false);
        assert!(c.clone().accept(spelled[0]).is_err());
        let bad =
            "[TOOL_CALLS][{\"name\": \"book\", \"arguments\": {\"city\": \"Rome\", \"nights\": 12";
        refused_at(&tok, &c, bad, bad.find("12").unwrap() + 1);
        let unknown = "[TOOL_CALLS][{\"name\": \"stocks\"";
        refused_at(&tok, &c, unknown, unknown.find("stocks").unwrap());
        let body = json!({"tools": [weather(), booking()], "tool_choice": "required",
                          "parallel_tool_calls": false});
        let c = constraint(&g, &tok, body, ToolFormat::Mistral);
        refused_at(&tok, &c, two, two.find("}, {").unwrap() + 1);

        // auto: text, or the trigger then calls; the trigger cannot follow text.
        let c = constraint(&g, &tok, json!({"tools": [weather()]}), ToolFormat::Mistral);
        assert!(fits(
            &tok,
            c.clone(),
            "It is sunny, <b>really</b> [1, 2] {not json}."
        ));
        assert!(fits(&tok, c.clone(), ""));
        let answer = format!("[TOOL_CALLS]{call}");
        assert!(fits(&tok, c.clone(), &answer));
        let late = format!("Let me look.{answer}");
        refused_at(&tok, &c, &late, late.find("[TOOL_CALLS]").unwrap());
        let wrong = "[TOOL_CALLS][{\"name\": \"weather\", \"arguments\": {\"town\"";
        refused_at(&tok, &c, wrong, wrong.find("town").unwrap());
        // The parser reads the call from the text the client sees (the trigger hidden).
        let ids = tok.encode(&answer, false, true);
        let mut p = crate::chat_output::OutputParser::new(Some(ToolFormat::Mistral), false, false);
        let mut pieces = p.push(&tok.decode(&ids, true));
        pieces.extend(p.finish());
        assert_eq!(
            pieces,
            [crate::chat_output::Piece::ToolCall {
                index: 0,
                name: "weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            }]
        );
    }

    #[test]
    fn history_arguments_become_objects() {
        let calls = json!([{"id": "c1", "type": "function",
                            "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]);
        let v = history_calls("messages[1].tool_calls", &calls).unwrap();
        assert_eq!(v[0]["function"]["arguments"]["city"], "Paris");
        assert_eq!(v[0]["id"], "c1");
        let bad = json!([{"function": {"name": "w", "arguments": "{oops"}}]);
        assert!(history_calls("m", &bad).is_err());
    }
}
