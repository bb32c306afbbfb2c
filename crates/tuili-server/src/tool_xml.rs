//! Qwen3-Coder's XML tool calls: the body between `<tool_call>` and `</tool_call>` is
//! `<function=NAME>` then `<parameter=KEY>\nVALUE\n</parameter>` per argument, then
//! `</function>`. Values are text; one that reads as JSON (a number, `true`, an object...)
//! is taken as that JSON, as vLLM's parser does when it has no schema, else as a string.

use serde_json::{Map, Value};

/// The function name and the arguments (a JSON object text) of one call body, or `None`
/// when the body is not such a call.
pub(crate) fn parse_call(body: &str) -> Option<(String, String)> {
    let rest = body.trim().strip_prefix("<function=")?;
    let (name, mut rest) = rest.split_once('>')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut args = Map::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("</function>") {
            return after
                .trim()
                .is_empty()
                .then(|| (name.to_string(), Value::Object(args).to_string()));
        }
        let (key, after) = rest.strip_prefix("<parameter=")?.split_once('>')?;
        let (value, after) = after.split_once("</parameter>")?;
        // The template puts the value on lines of its own.
        let value = value.strip_prefix('\n').unwrap_or(value);
        let value = value.strip_suffix('\n').unwrap_or(value);
        args.insert(key.trim().to_string(), typed(value));
        rest = after;
    }
}

fn typed(value: &str) -> Value {
    match serde_json::from_str::<Value>(value.trim()) {
        Ok(
            v @ (Value::Number(_)
            | Value::Bool(_)
            | Value::Null
            | Value::Object(_)
            | Value::Array(_)),
        ) => v,
        _ => Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(body: &str) -> (String, Value) {
        let (name, a) = parse_call(body).expect("a call");
        (name, serde_json::from_str(&a).unwrap())
    }

    #[test]
    fn qwen3_coder_calls_parse() {
        // As Qwen3-Coder writes them (the layout its chat template shows the model).
        let body = "\n<function=get_weather>\n<parameter=city>\nSan Francisco, CA\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n</function>\n";
        let (name, a) = args(body);
        assert_eq!(name, "get_weather");
        assert_eq!(
            a,
            json!({"city": "San Francisco, CA", "days": 3, "metric": true})
        );
        let code = "<function=write_file>\n<parameter=path>\nsrc/main.rs\n</parameter>\n<parameter=content>\nfn main() {\n    println!(\"<hi>\");\n}\n</parameter>\n</function>";
        let (_, a) = args(code);
        assert_eq!(a["content"], "fn main() {\n    println!(\"<hi>\");\n}");
        let nested = "<function=f>\n<parameter=opts>\n{\"a\": [1, 2]}\n</parameter>\n</function>";
        assert_eq!(args(nested).1, json!({"opts": {"a": [1, 2]}}));
        assert_eq!(args("<function=ping>\n</function>").1, json!({}));
    }

    #[test]
    fn other_bodies_are_not_calls() {
        for body in [
            "{\"name\": \"f\", \"arguments\": {}}",
            "<function=f>\n<parameter=a>\n1\n</parameter>",
            "<function=>\n</function>",
            "<function=f>\n<parameter=a>\n1\n</parameter>\n</function>\ntrailing",
        ] {
            assert_eq!(parse_call(body), None, "{body}");
        }
    }
}
