//! What constrains the output: a grammar from one of the request forms clients speak
//! (OpenAI `response_format`, vLLM `structured_outputs` and its older `guided_*` fields,
//! llama.cpp `json_schema` and `grammar`), and OpenAI `logit_bias`. Checked here; the
//! grammar is compiled where the tokenizer is known (`generate`).

use serde_json::{Map, Value};
use tuili_engine::ConstraintSpec;

use crate::validate::kind;
use crate::ServerError;

/// Largest `logit_bias` magnitude (OpenAI's limit).
pub const MAX_BIAS: f64 = 100.0;
/// Most `logit_bias` entries.
pub const MAX_BIAS_ENTRIES: usize = 1024;

/// A checked grammar and bias.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guidance {
    /// The grammar, and the request field it came from (named by compile errors).
    pub grammar: Option<(String, ConstraintSpec)>,
    /// (token id, bias); ids are checked against the vocabulary when submitting.
    pub logit_bias: Vec<(u32, f32)>,
}

/// Reads every grammar form and `logit_bias` from a request body; more than one grammar
/// is an error naming both fields.
pub fn guidance(map: &Map<String, Value>) -> Result<Guidance, ServerError> {
    let mut found: Vec<(String, ConstraintSpec)> = Vec::new();
    if let Some(v) = map.get("response_format").filter(|v| !v.is_null()) {
        found.extend(response_format(v)?);
    }
    if let Some(v) = map.get("structured_outputs").filter(|v| !v.is_null()) {
        found.extend(structured_outputs(v)?);
    }
    for key in ["guided_json", "json_schema"] {
        if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
            found.push((key.into(), json_schema(key, v)?));
        }
    }
    if let Some(v) = map.get("guided_regex").filter(|v| !v.is_null()) {
        found.push((
            "guided_regex".into(),
            ConstraintSpec::Regex(string("guided_regex", v)?),
        ));
    }
    if let Some(v) = map.get("guided_choice").filter(|v| !v.is_null()) {
        found.push(("guided_choice".into(), choice("guided_choice", v)?));
    }
    for key in ["guided_grammar", "grammar"] {
        if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
            found.push((key.into(), grammar(key, v)?));
        }
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        return Err(ServerError::field(
            found[1].0.clone(),
            format!(
                "only one output constraint may be given, got {}",
                names.join(" and ")
            ),
        ));
    }
    Ok(Guidance {
        grammar: found.pop(),
        logit_bias: logit_bias(map.get("logit_bias"))?,
    })
}

/// OpenAI `response_format`: `text` (no grammar), `json_object`, or `json_schema` with
/// `json_schema.schema`; with the path of what holds the grammar.
fn response_format(v: &Value) -> Result<Option<(String, ConstraintSpec)>, ServerError> {
    let p = "response_format";
    let Some(obj) = v.as_object() else {
        return Err(ServerError::field(
            p,
            format!("{p} must be an object, got {}", kind(v)),
        ));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some((p.into(), ConstraintSpec::JsonObject))),
        Some("json_schema") => {
            let Some(js) = obj.get("json_schema").and_then(Value::as_object) else {
                return Err(ServerError::field(
                    "response_format.json_schema",
                    "response_format of type json_schema needs a json_schema object with a schema",
                ));
            };
            let at = "response_format.json_schema.schema";
            match js.get("schema") {
                // OpenAI allows leaving the schema out: any JSON object then.
                None | Some(Value::Null) => Ok(Some((at.into(), ConstraintSpec::JsonObject))),
                Some(s) => Ok(Some((at.into(), json_schema(at, s)?))),
            }
        }
        other => Err(ServerError::field(
            "response_format.type",
            format!(
                "response_format.type must be one of text, json_object, json_schema, got {}",
                other.map_or_else(|| "nothing".to_string(), |t| format!("'{t}'"))
            ),
        )),
    }
}

/// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar`,
/// `json_object`.
fn structured_outputs(v: &Value) -> Result<Option<(String, ConstraintSpec)>, ServerError> {
    let p = "structured_outputs";
    let Some(obj) = v.as_object() else {
        return Err(ServerError::field(
            p,
            format!("{p} must be an object, got {}", kind(v)),
        ));
    };
    let mut found = Vec::new();
    for (key, val) in obj {
        if val.is_null() {
            continue;
        }
        let at = format!("{p}.{key}");
        let spec = match key.as_str() {
            "json" => json_schema(&at, val)?,
            "regex" => ConstraintSpec::Regex(string(&at, val)?),
            "choice" => choice(&at, val)?,
            "grammar" => grammar(&at, val)?,
            "json_object" if *val == Value::Bool(true) => ConstraintSpec::JsonObject,
            "json_object" if *val == Value::Bool(false) => continue,
            "json_object" => {
                return Err(ServerError::field(
                    at.clone(),
                    format!("{at} must be a boolean"),
                ))
            }
            _ => {
                return Err(ServerError::unsupported(
                    at.clone(),
                    format!(
                        "{at}: unrecognized; use one of json, regex, choice, grammar, json_object"
                    ),
                ))
            }
        };
        found.push((at, spec));
    }
    if found.len() > 1 {
        return Err(ServerError::field(
            p,
            format!("{p} may hold only one of json, regex, choice, grammar, json_object"),
        ));
    }
    Ok(found.pop())
}

/// A JSON schema given as an object (or a boolean), or as a string holding one.
fn json_schema(at: &str, v: &Value) -> Result<ConstraintSpec, ServerError> {
    let schema = match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ServerError::field(at, format!("{at} is a string that is not JSON: {e}"))
        })?,
        other => other.clone(),
    };
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ServerError::field(
            at,
            format!("{at} must be a JSON schema object, got {}", kind(&schema)),
        ));
    }
    Ok(ConstraintSpec::JsonSchema(schema))
}

fn string(at: &str, v: &Value) -> Result<String, ServerError> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        Some(_) => Err(ServerError::field(at, format!("{at} must not be empty"))),
        None => Err(ServerError::field(
            at,
            format!("{at} must be a string, got {}", kind(v)),
        )),
    }
}

fn choice(at: &str, v: &Value) -> Result<ConstraintSpec, ServerError> {
    let items = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
        ServerError::field(at, format!("{at} must be a non-empty list of strings"))
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, s)| string(&format!("{at}[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()
        .map(ConstraintSpec::Choice)
}

/// A grammar: llguidance's Lark dialect, or GBNF (llama.cpp's `::=` rules, `root` first),
/// which is rewritten into it.
fn grammar(at: &str, v: &Value) -> Result<ConstraintSpec, ServerError> {
    let g = string(at, v)?;
    if g.contains("::=") {
        return crate::gbnf::to_lark(&g)
            .map(ConstraintSpec::Lark)
            .map_err(|e| ServerError::field(at, format!("{at}: {e}")));
    }
    Ok(ConstraintSpec::Lark(g))
}

/// OpenAI `logit_bias`: `{"token id": bias}` with biases in [-100, 100].
fn logit_bias(v: Option<&Value>) -> Result<Vec<(u32, f32)>, ServerError> {
    let p = "logit_bias";
    let obj = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(ServerError::field(
                p,
                format!(
                    "{p} must be an object mapping token ids to biases, got {}",
                    kind(other)
                ),
            ))
        }
    };
    if obj.len() > MAX_BIAS_ENTRIES {
        return Err(ServerError::field(
            p,
            format!(
                "{p} may hold at most {MAX_BIAS_ENTRIES} entries, got {}",
                obj.len()
            ),
        ));
    }
    obj.iter()
        .map(|(key, val)| {
            let at = format!("{p}.{key}");
            let id: u32 = key.parse().map_err(|_| {
                ServerError::field(
                    at.clone(),
                    format!("{p} keys must be token ids (non-negative integers), got '{key}'"),
                )
            })?;
            match val.as_f64() {
                Some(b) if (-MAX_BIAS..=MAX_BIAS).contains(&b) => Ok((id, b as f32)),
                _ => Err(ServerError::field(
                    at.clone(),
                    format!("{at} must be a number between -{MAX_BIAS} and {MAX_BIAS}, got {val}"),
                )),
            }
        })
        .collect()
}

/// Refuses `logit_bias` ids outside the vocabulary of `vocab` tokens.
pub fn check_bias_ids(bias: &[(u32, f32)], vocab: usize) -> Result<(), ServerError> {
    match bias.iter().find(|(id, _)| *id as usize >= vocab) {
        Some((id, _)) => Err(ServerError::field(
            format!("logit_bias.{id}"),
            format!(
                "logit_bias.{id} is not a token id: the vocabulary has {vocab} tokens (0 to {})",
                vocab - 1
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Guidance, ServerError> {
        guidance(v.as_object().unwrap())
    }

    fn message(e: ServerError) -> (String, String) {
        match e {
            ServerError::InvalidField { param, message }
            | ServerError::Unsupported { param, message } => (param, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_request_form_gives_its_grammar() {
        let schema = json!({"type": "object"});
        let cases = [
            (
                json!({"response_format": {"type": "json_object"}}),
                ConstraintSpec::JsonObject,
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}}),
                ConstraintSpec::JsonSchema(schema.clone()),
            ),
            (
                json!({"structured_outputs": {"json": schema}}),
                ConstraintSpec::JsonSchema(schema.clone()),
            ),
            (
                json!({"structured_outputs": {"regex": "a+"}}),
                ConstraintSpec::Regex("a+".into()),
            ),
            (
                json!({"structured_outputs": {"choice": ["a", "b"]}}),
                ConstraintSpec::Choice(vec!["a".into(), "b".into()]),
            ),
            (
                json!({"structured_outputs": {"grammar": "start: \"a\""}}),
                ConstraintSpec::Lark("start: \"a\"".into()),
            ),
            (
                json!({"guided_json": "{\"type\": \"object\"}"}),
                ConstraintSpec::JsonSchema(schema.clone()),
            ),
            (
                json!({"json_schema": schema}),
                ConstraintSpec::JsonSchema(schema.clone()),
            ),
            (
                json!({"grammar": "start: \"a\""}),
                ConstraintSpec::Lark("start: \"a\"".into()),
            ),
        ];
        for (body, want) in cases {
            let g = parse(body.clone()).unwrap();
            assert_eq!(g.grammar.map(|(_, s)| s), Some(want), "{body}");
        }
        assert_eq!(
            parse(json!({"response_format": {"type": "text"}}))
                .unwrap()
                .grammar,
            None
        );
    }

    #[test]
    fn bad_forms_name_the_field() {
        let cases = [
            (
                json!({"response_format": {"type": "xml"}}),
                "response_format.type",
                "'xml'",
            ),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
                "schema",
            ),
            (
                json!({"structured_outputs": {"regex": 3}}),
                "structured_outputs.regex",
                "number",
            ),
            (
                json!({"structured_outputs": {"choice": []}}),
                "structured_outputs.choice",
                "non-empty",
            ),
            (
                json!({"structured_outputs": {"yaml": "x"}}),
                "structured_outputs.yaml",
                "unrecognized",
            ),
            (
                json!({"json_schema": "{not json"}),
                "json_schema",
                "not JSON",
            ),
            (
                json!({"json_schema": {}, "response_format": {"type": "json_object"}}),
                "json_schema",
                "response_format and json_schema",
            ),
            (json!({"logit_bias": {"x": 1}}), "logit_bias.x", "token ids"),
            (
                json!({"logit_bias": {"5": 101}}),
                "logit_bias.5",
                "between -100 and 100, got 101",
            ),
            (json!({"logit_bias": [1]}), "logit_bias", "a list"),
        ];
        for (body, param, needle) in cases {
            let (p, m) = message(parse(body.clone()).expect_err(&body.to_string()));
            assert_eq!(p, param, "{body}: {m}");
            assert!(m.contains(needle), "{body}: {m}");
        }
    }

    #[test]
    fn logit_bias_is_read_and_checked_against_the_vocabulary() {
        let g = parse(json!({"logit_bias": {"5": -100, "7": 2.5}})).unwrap();
        let mut b = g.logit_bias.clone();
        b.sort_by_key(|x| x.0);
        assert_eq!(b, vec![(5, -100.0), (7, 2.5)]);
        assert!(check_bias_ids(&b, 8).is_ok());
        let (p, m) = message(check_bias_ids(&b, 7).unwrap_err());
        assert_eq!(p, "logit_bias.7");
        assert!(m.contains("7 tokens"), "{m}");
    }
}
