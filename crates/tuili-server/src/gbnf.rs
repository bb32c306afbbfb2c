//! llama.cpp's GBNF grammars rewritten into llguidance's Lark dialect, which already reads
//! GBNF's strings, character classes and `{m,n}` repetitions: `name ::= body` becomes
//! `name: body`, `root` becomes `start`, `-` in names becomes `_`, `.` becomes a regex,
//! comments go, and each rule ends where the next `name ::=` begins.

/// The Lark text of a GBNF grammar, or what is wrong with it.
pub fn to_lark(gbnf: &str) -> Result<String, String> {
    let chars: Vec<char> = gbnf.chars().collect();
    let mut out = String::with_capacity(gbnf.len());
    let mut i = 0;
    let mut rules = 0;
    let mut has_root = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' | '[' => {
                let close = if c == '"' { '"' } else { ']' };
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != close {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                if i >= chars.len() {
                    return Err(format!("unterminated {c}...{close} at character {start}"));
                }
                out.extend(&chars[start..=i]);
                i += 1;
            }
            '\n' | '\r' | '\t' => {
                out.push(' ');
                i += 1;
            }
            '.' => {
                out.push_str("/(?s:.)/");
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let name = match word.as_str() {
                    "root" => "start".to_string(),
                    w if w.chars().all(|c| c.is_ascii_digit()) => w.to_string(),
                    w => w.replace('-', "_").to_ascii_lowercase(),
                };
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars[j..].starts_with(&[':', ':', '=']) {
                    if rules > 0 {
                        out.push('\n');
                    }
                    rules += 1;
                    has_root |= name == "start";
                    out.push_str(&name);
                    out.push(':');
                    i = j + 3;
                } else {
                    out.push_str(&name);
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if rules == 0 {
        return Err("no rule of the form `name ::= ...`".into());
    }
    if !has_root {
        return Err("the grammar has no `root` rule".into());
    }
    Ok(out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::to_lark;

    #[test]
    fn rules_names_and_comments_are_rewritten() {
        let g = "# yes or no\nroot ::= answer ws-end\nanswer ::= \"yes\" | \"no #1\"\n  | [a-c]{2,3}\nws-end ::= \".\" | .\n";
        let lark = to_lark(g).unwrap();
        assert_eq!(
            lark,
            "start: answer ws_end \nanswer: \"yes\" | \"no #1\"   | [a-c]{2,3} \nws_end: \".\" | /(?s:.)/"
        );
    }

    #[test]
    fn broken_grammars_are_errors() {
        assert!(to_lark("root ::= \"open")
            .unwrap_err()
            .contains("unterminated"));
        assert!(to_lark("answer ::= \"x\"").unwrap_err().contains("root"));
    }
}
