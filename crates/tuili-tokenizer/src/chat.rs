//! Chat templates: the Jinja template a model ships in `tokenizer.chat_template`, rendered the
//! way Hugging Face `transformers` renders it (`apply_chat_template`).
//!
//! transformers uses a Jinja2 sandbox with `trim_blocks` and `lstrip_blocks` on, the
//! `loopcontrols` extension, a `tojson` filter that is Python's `json.dumps` (no HTML
//! escaping), and the globals `raise_exception` and `strftime_now`. We configure minijinja the
//! same way and add Python's string/dict methods through `minijinja-contrib`'s pycompat.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

use crate::TokenizerError;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The message text.
    pub content: String,
    /// An assistant's tool calls, as HF templates read them: a list of
    /// `{"type": "function", "id", "function": {"name", "arguments": {...}}}` with the
    /// arguments as an object.
    pub tool_calls: Option<serde_json::Value>,
    /// A tool result's `tool_call_id`.
    pub tool_call_id: Option<String>,
    /// The message's `name` (a tool result's function name).
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with the given role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }

    fn to_value(&self) -> Value {
        let mut pairs = vec![
            ("role", Value::from(self.role.as_str())),
            ("content", Value::from(self.content.as_str())),
        ];
        if let Some(calls) = &self.tool_calls {
            pairs.push(("tool_calls", json_value(calls)));
        }
        if let Some(id) = &self.tool_call_id {
            pairs.push(("tool_call_id", Value::from(id.as_str())));
        }
        if let Some(name) = &self.name {
            pairs.push(("name", Value::from(name.as_str())));
        }
        Value::from_pairs(pairs)
    }
}

/// A JSON value as the template sees it (key order kept, as Python's dicts).
fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (_, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::from(a.iter().map(json_value).collect::<Vec<_>>()),
        J::Object(o) => Value::from_pairs(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_value(v)))
                .collect::<Vec<_>>(),
        ),
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compile `source`; `bos` and `eos` are the texts the template sees as `bos_token` and
    /// `eos_token`.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        env.set_syntax(syntax.build().map_err(template_error)?);
        env.set_unknown_method_callback(python_methods);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_global("bos_token", bos.to_string());
        env.add_global("eos_token", eos.to_string());
        env.add_template_owned(NAME, without_generation_tags(source))
            .map_err(template_error)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
        })
    }

    /// The template's Jinja source (what tells a tool-call or reasoning format apart).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render `messages`; with `add_generation_prompt`, end with the header of an assistant
    /// turn so the model writes the reply.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_with(messages, add_generation_prompt, None, None)
    }

    /// Render as HF `apply_chat_template(messages, tools=tools, **kwargs)` does: `tools`
    /// (OpenAI's list of `{"type": "function", "function": {...}}`) is visible to the
    /// template, and each of `kwargs` (e.g. `enable_thinking`) is a template variable.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        kwargs: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, TokenizerError> {
        let messages: Vec<Value> = messages.iter().map(ChatMessage::to_value).collect();
        // transformers always passes `tools` and `documents`, as None when unused.
        let mut pairs: Vec<(String, Value)> = kwargs
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect();
        pairs.extend([
            ("messages".to_string(), Value::from(messages)),
            (
                "add_generation_prompt".to_string(),
                Value::from(add_generation_prompt),
            ),
            (
                "tools".to_string(),
                tools.map_or(Value::from(()), json_value),
            ),
            ("documents".to_string(), Value::from(())),
        ]);
        let template = self.env.get_template(NAME).map_err(template_error)?;
        template
            .render(Value::from_pairs(pairs))
            .map_err(template_error)
    }
}

fn template_error(e: Error) -> TokenizerError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    TokenizerError::Template(message)
}

/// transformers' `{% generation %}...{% endgeneration %}` marks assistant text for masks and
/// otherwise renders its body; an `if true` block keeps the same whitespace handling.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        // The tag ends at the first `%}` after its `{%` (`{%}` is not a tag end).
        let Some(len) = rest[start + 2..].find("%}").map(|e| e + 4) else {
            break;
        };
        let tag = &rest[start..start + len];
        out.push_str(&rest[..start]);
        // Keep the `-`/`+` whitespace modifiers on both ends.
        let body = &tag[2..len - 2];
        let inner = body.trim_start_matches(['-', '+']);
        let lead = &body[..body.len() - inner.len()];
        let inner = inner.trim_end_matches(['-', '+']);
        let trail = &body[lead.len() + inner.len()..];
        match inner.trim() {
            "generation" => {
                let _ = write!(out, "{{%{lead} if true {trail}%}}");
            }
            "endgeneration" => {
                let _ = write!(out, "{{%{lead} endif {trail}%}}");
            }
            _ => out.push_str(tag),
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// Python's methods on strings, lists and dicts (minijinja-contrib's pycompat), with
/// `str.title` corrected to Python's rule: a letter is upper-cased unless it follows a cased
/// character, so `"quotes"` becomes `"Quotes"`.
fn python_methods(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let (Some(s), "title", true) = (value.as_str(), method, args.is_empty()) {
        let mut out = String::with_capacity(s.len());
        let mut prev_cased = false;
        for c in s.chars() {
            if prev_cased {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            prev_cased = c.is_lowercase() || c.is_uppercase();
        }
        return Ok(Value::from(out));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current time (UTC) formatted like Python's `strftime`.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Format Unix time `secs` (UTC) with the common `strftime` directives; `%-d` style (no
/// padding) is accepted as glibc does. Unknown directives are copied as written.
pub fn strftime(format: &str, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (hour, minute, second) = (tod / 3600, tod % 3600 / 60, tod % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = before[(month - 1) as usize] + day + i64::from(leap && month > 2);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let month_name = MONTHS[(month - 1) as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let pad = if chars.peek() == Some(&'-') {
            chars.next();
            false
        } else {
            true
        };
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let num = |v: i64, width: usize| {
            if pad {
                format!("{v:0width$}")
            } else {
                v.to_string()
            }
        };
        let s = match d {
            'Y' => year.to_string(),
            'y' => num(year.rem_euclid(100), 2),
            'm' => num(month, 2),
            'd' => num(day, 2),
            'e' => format!("{day:>2}"),
            'H' => num(hour, 2),
            'I' => num(hour12, 2),
            'M' => num(minute, 2),
            'S' => num(second, 2),
            'j' => num(yday, 3),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'B' => month_name.to_string(),
            'b' | 'h' => month_name[..3].to_string(),
            'A' => WEEKDAYS[weekday].to_string(),
            'a' => WEEKDAYS[weekday][..3].to_string(),
            'u' => (weekday + 1).to_string(),
            'w' => ((weekday + 1) % 7).to_string(),
            'F' => format!("{year}-{month:02}-{day:02}"),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            '%' => "%".to_string(),
            other => format!("%{}{other}", if pad { "" } else { "-" }),
        };
        out.push_str(&s);
    }
    out
}

/// Python `json.dumps` options transformers' `tojson` exposes.
struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// Longest `tojson` indent accepted; a template cannot make us allocate without bound.
const MAX_INDENT: usize = 64;

/// `tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => {
            let indent = match v.as_i64() {
                Some(n) => " ".repeat(usize::try_from(n).unwrap_or(0).min(MAX_INDENT + 1)),
                None => v.as_str().unwrap_or_default().to_string(),
            };
            if indent.len() > MAX_INDENT {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson indent must be at most {MAX_INDENT} characters, got {v}"),
                ));
            }
            Some(indent)
        }
    };
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(other) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson separators must be two strings, got {}", other.len()),
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    dump(&value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

fn dump(value: &Value, opts: &JsonOpts, level: usize, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Number => out.push_str(&py_float(f64::try_from(value.clone())?)),
        ValueKind::String => dump_str(value.as_str().unwrap_or_default(), opts, out),
        ValueKind::Map => {
            let mut items = Vec::new();
            for key in value.try_iter()? {
                let k = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    ValueKind::None => "null".to_string(),
                    ValueKind::Bool if key.is_true() => "true".to_string(),
                    ValueKind::Bool => "false".to_string(),
                    _ => key.to_string(),
                };
                let v = value.get_item(&key)?;
                items.push((k, v));
            }
            if opts.sort_keys {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            container(out, opts, level, '{', '}', items.len(), |i, out| {
                let (k, v) = &items[i];
                dump_str(k, opts, out);
                out.push_str(&opts.key_sep);
                dump(v, opts, level + 1, out)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            container(out, opts, level, '[', ']', items.len(), |i, out| {
                dump(&items[i], opts, level + 1, out)
            })?;
        }
        _ => dump_str(&value.to_string(), opts, out),
    }
    Ok(())
}

/// Write `[ ... ]` or `{ ... }` with Python's layout for `indent`.
fn container(
    out: &mut String,
    opts: &JsonOpts,
    level: usize,
    open: char,
    close: char,
    n: usize,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..n {
        if i > 0 {
            out.push_str(&opts.item_sep);
        }
        if let Some(ind) = &opts.indent {
            out.push('\n');
            out.push_str(&ind.repeat(level + 1));
        }
        item(i, out)?;
    }
    if let Some(ind) = &opts.indent {
        out.push('\n');
        out.push_str(&ind.repeat(level));
    }
    out.push(close);
    Ok(())
}

fn dump_str(s: &str, opts: &JsonOpts, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (opts.ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`, as `json.dumps` writes it.
fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let exp = if x == 0.0 {
        0
    } else {
        x.abs().log10().floor() as i32
    };
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // Rust writes `1.5e-5`; Python writes `1.5e-05` and `1e+16`.
        let s = format!("{x:e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_a_known_instant() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(
            strftime("%d %B %Y, %A %a %b %j %I%p", t),
            "29 February 2024, Thursday Thu Feb 060 01PM"
        );
        assert_eq!(strftime("%-d %b %y %% %Q", t), "29 Feb 24 % %Q");
        assert_eq!(strftime("%F", 0), "1970-01-01");
    }

    #[test]
    fn python_floats() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.5), "0.5");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(1.5e16), "1.5e+16");
        assert_eq!(py_float(123456.789), "123456.789");
    }

    #[test]
    fn generation_tags_become_plain_blocks() {
        assert_eq!(
            without_generation_tags("a{%- generation %}b{% endgeneration -%}c{% if x %}"),
            "a{%- if true %}b{% endif -%}c{% if x %}"
        );
        // Malformed tags pass through untouched (the template compiler reports them).
        for odd in ["{%}", "{%", "x{%-%}", "{%+generation+%}{%%}"] {
            let out = without_generation_tags(odd);
            assert!(
                out == odd || out == "{%+ if true +%}{%%}",
                "{odd:?} -> {out:?}"
            );
        }
    }

    #[test]
    fn tools_tool_calls_and_kwargs_reach_the_template() {
        let src = "{% if tools %}T:{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}\
{% for m in messages %}[{{ m.role }}|{{ m.content }}\
{% for c in m.tool_calls or [] %}<{{ c.function.name }} {{ c.function.arguments | tojson }}>{% endfor %}\
{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}]{% endfor %}\
{% if enable_thinking is defined and not enable_thinking %}nothink{% endif %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(serde_json::json!([
            {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
        ]));
        let mut result = ChatMessage::new("tool", "42");
        result.tool_call_id = Some("c1".into());
        let tools = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        let kwargs = serde_json::json!({"enable_thinking": false});
        let out = t
            .render_with(
                &[ChatMessage::new("user", "hi"), call, result],
                false,
                Some(&tools),
                kwargs.as_object(),
            )
            .unwrap();
        assert_eq!(
            out,
            "T:f;[user|hi][assistant|<f {\"x\": 1}>][tool|42#c1]nothink"
        );
        // Without tools or kwargs, the same as before.
        let plain = t.render(&[ChatMessage::new("user", "hi")], false).unwrap();
        assert_eq!(plain, "[user|hi]");
    }
}
