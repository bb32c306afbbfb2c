//! Pre-tokenizers: split text into words before BPE, exactly as llama.cpp does.
//!
//! llama.cpp (`llama-vocab.cpp`) gives each `tokenizer.ggml.pre` value a list of regexes that
//! are applied one after the other: each regex cuts every piece left by the previous one into
//! its matches and the text between them. Two regexes (GPT-2's and Llama 3's) have hand-written
//! matchers in `unicode.cpp`; we port those. Every other regex runs on a "collapsed" copy of
//! the text where each non-ASCII code point becomes one marker character for its category, and
//! `\p{..}` in the regex becomes a class of that marker plus the ASCII members. We do the same,
//! so categories, white space and look-ahead behave as llama.cpp's, not as a Unicode regex
//! engine's.

use crate::unicode::{self, ACCENT_MARK, LETTER, NUMBER, PUNCTUATION, SYMBOL, WHITESPACE};
use crate::TokenizerError;

/// GPT-2's split regex. llama.cpp matches this exact string with a hand-written splitter.
pub(crate) const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's split regex (case-insensitive contractions spelled out); also hand-written.
pub(crate) const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with single digits.
pub(crate) const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's form of the o200k split regex (gpt-oss, Llama 4): runs of upper then lower
/// case letters by lookahead over `\p{L}`, numbers of 1 to 3 digits, `/` kept after
/// punctuation.
pub(crate) const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a `tokenizer.ggml.pre` value changes the BPE vocabulary's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PreOptions {
    /// A word that is itself a vocabulary token is emitted whole, skipping merges.
    pub ignore_merges: bool,
    /// Add BOS unless the metadata says otherwise.
    pub default_add_bos: bool,
}

/// The `tokenizer.ggml.pre` values we accept, grouped by the regex list llama.cpp uses.
pub(crate) const SUPPORTED_PRE: &str =
    "default, gpt-2 (gpt2), llama-bpe (llama3), qwen2, smollm (starcoder), gpt-4o (llama4) and their aliases";

/// The regex list and options for one pre-tokenizer name (`None`: llama.cpp's default).
pub(crate) fn regexes_for(pre: Option<&str>) -> Option<(Vec<&'static str>, PreOptions)> {
    const PLAIN: PreOptions = PreOptions {
        ignore_merges: false,
        default_add_bos: false,
    };
    let name = match pre {
        None => "default",
        Some(p) => p,
    };
    let found = match name {
        "default" => (
            vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            PLAIN,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => (
            vec![LLAMA3],
            PreOptions {
                ignore_merges: true,
                default_add_bos: true,
            },
        ),
        "dbrx" | "smaug-bpe" => (vec![LLAMA3], PLAIN),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" => (vec![QWEN2], PLAIN),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => (vec![r"\p{N}", GPT2], PLAIN),
        // "gpt2" is not a name llama.cpp writes, but it is the obvious spelling of "gpt-2".
        "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
        | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
        | "trillion" | "granite-docling" | "exaone4" => (vec![GPT2], PLAIN),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" => (vec![GPT4O], PLAIN),
        _ => return None,
    };
    Some(found)
}

enum Step {
    /// llama.cpp's hand-written GPT-2 splitter.
    Gpt2,
    /// llama.cpp's hand-written Llama 3 splitter.
    Llama3,
    /// Any other regex; `collapsed` when it uses `\p{..}` categories.
    Regex {
        re: fancy_regex::Regex,
        collapsed: bool,
    },
}

/// A compiled list of split regexes.
pub(crate) struct PreTokenizer {
    steps: Vec<Step>,
}

impl std::fmt::Debug for PreTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreTokenizer")
            .field("steps", &self.steps.len())
            .finish()
    }
}

// Marker characters of the collapsed text, one per category (llama.cpp uses bytes 0xD0..0xD5).
const MARK_OTHER: char = '\u{D0}';
const MARK_NUMBER: char = '\u{D1}';
const MARK_LETTER: char = '\u{D2}';
const MARK_PUNCTUATION: char = '\u{D3}';
const MARK_ACCENT: char = '\u{D4}';
const MARK_SYMBOL: char = '\u{D5}';
/// Non-ASCII white space collapses to a vertical tab, which every regex engine calls `\s`.
const MARK_SPACE: char = '\u{0B}';

/// `\p{..}` names llama.cpp collapses, with their marker and ASCII members (as a class body).
const CATEGORIES: &[(&str, char, &str)] = &[
    (r"\p{N}", MARK_NUMBER, "0-9"),
    (r"\p{L}", MARK_LETTER, "A-Za-z"),
    (r"\p{P}", MARK_PUNCTUATION, r"!-#%-*,-/:-;?-@\[-\]_\{\}"),
    (r"\p{M}", MARK_ACCENT, ""),
    (r"\p{S}", MARK_SYMBOL, r"\$\+<->\^`\|"),
    (r"\p{Lu}", MARK_LETTER, "A-Za-z"),
    (r"\p{Ll}", MARK_LETTER, "A-Za-z"),
    (r"\p{Lt}", MARK_LETTER, "A-Za-z"),
    (r"\p{Lm}", MARK_LETTER, "A-Za-z"),
    (r"\p{Lo}", MARK_LETTER, "A-Za-z"),
];

/// Rewrite `\p{..}` in `pattern` to classes over the collapsed alphabet.
fn collapse_regex(pattern: &str) -> Result<String, TokenizerError> {
    if !pattern.is_ascii() {
        return Err(TokenizerError::Regex {
            pattern: pattern.to_string(),
            message: "a regex with unicode categories must be ASCII".into(),
        });
    }
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() * 2);
    // Nested classes do not occur in these regexes; track whether we are inside `[...]`.
    let mut inside = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let escaped = i > 0 && bytes[i - 1] == b'\\';
        if c == b'[' && !escaped {
            inside = true;
        } else if c == b']' && inside && !escaped {
            inside = false;
        } else if let Some(&(name, mark, ascii)) = CATEGORIES
            .iter()
            .find(|(name, _, _)| pattern[i..].starts_with(name))
        {
            if !inside {
                out.push('[');
            }
            out.push(mark);
            out.push_str(ascii);
            if !inside {
                out.push(']');
            }
            i += name.len();
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    Ok(out)
}

impl PreTokenizer {
    /// Compile a regex list, using the hand-written splitters where llama.cpp does.
    pub(crate) fn new(patterns: &[&str]) -> Result<PreTokenizer, TokenizerError> {
        let mut steps = Vec::with_capacity(patterns.len());
        for &pattern in patterns {
            let step = if pattern == GPT2 {
                Step::Gpt2
            } else if pattern == LLAMA3 {
                Step::Llama3
            } else {
                let collapsed = CATEGORIES.iter().any(|(name, _, _)| pattern.contains(name));
                let source = if collapsed {
                    collapse_regex(pattern)?
                } else {
                    pattern.to_string()
                };
                let re = fancy_regex::Regex::new(&source).map_err(|e| TokenizerError::Regex {
                    pattern: pattern.to_string(),
                    message: e.to_string(),
                })?;
                Step::Regex { re, collapsed }
            };
            steps.push(step);
        }
        Ok(PreTokenizer { steps })
    }

    /// Split `text` into words; the words concatenate back to `text`.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let cpts: Vec<char> = text.chars().collect();
        if cpts.is_empty() {
            return Vec::new();
        }
        let flags: Vec<u8> = cpts.iter().map(|&c| unicode::flags(c)).collect();
        // Piece lengths in code points; starts as the whole text.
        let mut offsets = vec![cpts.len()];
        for step in &self.steps {
            offsets = match step {
                Step::Gpt2 => split_gpt2(&cpts, &flags, &offsets),
                Step::Llama3 => split_llama3(&cpts, &flags, &offsets),
                Step::Regex { re, collapsed } => {
                    split_regex(re, *collapsed, &cpts, &flags, &offsets)
                }
            };
        }
        let mut byte_of: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        byte_of.push(text.len());
        let mut words = Vec::with_capacity(offsets.len());
        let mut start = 0;
        for len in offsets {
            words.push(&text[byte_of[start]..byte_of[start + len]]);
            start += len;
        }
        words
    }
}

/// Collects piece lengths for one segment, like llama.cpp's `_add_token`.
struct Pieces<'o> {
    prev_end: usize,
    out: &'o mut Vec<usize>,
}

impl Pieces<'_> {
    /// End the current piece at `end`; returns its length.
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

/// One segment of the text, `[ini, end)` in code points. Positions outside it read as `None`,
/// which is how llama.cpp's matchers see the segment's edges.
struct Segment<'a> {
    cpts: &'a [char],
    flags: &'a [u8],
    ini: usize,
    end: usize,
}

impl Segment<'_> {
    fn cpt(&self, pos: usize) -> Option<char> {
        (self.ini <= pos && pos < self.end).then(|| self.cpts[pos])
    }
    fn flags(&self, pos: usize) -> Option<u8> {
        (self.ini <= pos && pos < self.end).then(|| self.flags[pos])
    }
}

fn has(f: Option<u8>, bit: u8) -> bool {
    matches!(f, Some(x) if x & bit != 0)
}

/// `[^\s\p{L}\p{N}]` for a code point inside the segment.
fn is_other(f: Option<u8>) -> bool {
    matches!(f, Some(x) if x & (WHITESPACE | LETTER | NUMBER) == 0)
}

fn segments(offsets: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    offsets.iter().scan(0usize, |start, &len| {
        let ini = *start;
        *start += len;
        Some((ini, ini + len))
    })
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn split_gpt2(cpts: &[char], flags: &[u8], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    for (ini, end) in segments(offsets) {
        let s = Segment {
            cpts,
            flags,
            ini,
            end,
        };
        let mut p = Pieces {
            prev_end: ini,
            out: &mut out,
        };
        let mut pos = ini;
        while pos < end {
            let c = cpts[pos];
            let f = Some(flags[pos]);
            if c == '\'' && pos + 1 < end {
                let next = cpts[pos + 1];
                if matches!(next, 's' | 't' | 'm' | 'd') {
                    pos += p.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = cpts[pos + 2];
                    if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                        pos += p.add(pos + 3);
                        continue;
                    }
                }
            }
            let space = usize::from(c == ' ');
            let mut f2 = if c == ' ' { s.flags(pos + 1) } else { f };
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let run: Option<fn(Option<u8>) -> bool> = if has(f2, LETTER) {
                Some(|f| has(f, LETTER))
            } else if has(f2, NUMBER) {
                Some(|f| has(f, NUMBER))
            } else if is_other(f2) {
                Some(is_other)
            } else {
                None
            };
            if let Some(pred) = run {
                pos += space;
                while pred(f2) {
                    pos += 1;
                    f2 = s.flags(pos);
                }
                p.add(pos);
                continue;
            }
            let mut n_ws = 0;
            while has(s.flags(pos + n_ws), WHITESPACE) {
                n_ws += 1;
            }
            // `\s+(?!\S)`: leave the last white space to prefix the next word.
            if n_ws > 1 && s.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                p.add(pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                p.add(pos);
                continue;
            }
            pos += 1;
            p.add(pos);
        }
    }
    out
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn split_llama3(cpts: &[char], flags: &[u8], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    for (ini, end) in segments(offsets) {
        let s = Segment {
            cpts,
            flags,
            ini,
            end,
        };
        let mut p = Pieces {
            prev_end: ini,
            out: &mut out,
        };
        let mut pos = ini;
        while pos < end {
            let c = cpts[pos];
            let f = Some(flags[pos]);
            if c == '\'' && pos + 1 < end {
                let next = cpts[pos + 1].to_ascii_lowercase();
                if matches!(next, 's' | 't' | 'm' | 'd') {
                    pos += p.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = cpts[pos + 2].to_ascii_lowercase();
                    if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                        pos += p.add(pos + 3);
                        continue;
                    }
                }
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(c == '\r' || c == '\n' || has(f, NUMBER))
                && (has(f, LETTER) || has(s.flags(pos + 1), LETTER))
            {
                pos += 1;
                while has(s.flags(pos), LETTER) {
                    pos += 1;
                }
                p.add(pos);
                continue;
            }
            // `\p{N}{1,3}`
            if has(f, NUMBER) {
                let mut run_start = pos;
                while has(s.flags(pos), NUMBER) {
                    pos += 1;
                    if pos - run_start >= 3 {
                        p.add(pos);
                        run_start = pos;
                    }
                }
                p.add(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (llama.cpp tests the current code point's flags
            // for "inside the segment", which it always is)
            let mut f2 = if c == ' ' { s.flags(pos + 1) } else { f };
            if !matches!(f2, Some(x) if x & (WHITESPACE | LETTER | NUMBER) != 0) {
                pos += usize::from(c == ' ');
                while is_other(f2) {
                    pos += 1;
                    f2 = s.flags(pos);
                }
                while matches!(s.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                p.add(pos);
                continue;
            }
            let mut n_ws = 0;
            let mut last_newline_end = 0;
            while has(s.flags(pos + n_ws), WHITESPACE) {
                if matches!(cpts[pos + n_ws], '\r' | '\n') {
                    last_newline_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // `\s*[\r\n]+`
            if last_newline_end > 0 {
                pos = last_newline_end;
                p.add(pos);
                continue;
            }
            // `\s+(?!\S)`
            if n_ws > 1 && s.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                p.add(pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                p.add(pos);
                continue;
            }
            pos += 1;
            p.add(pos);
        }
    }
    out
}

fn collapse_char(c: char, flags: u8, categories: bool) -> char {
    if c.is_ascii() {
        return c;
    }
    if flags & WHITESPACE != 0 {
        return MARK_SPACE;
    }
    if !categories {
        return c;
    }
    match flags & !WHITESPACE {
        NUMBER => MARK_NUMBER,
        LETTER => MARK_LETTER,
        PUNCTUATION => MARK_PUNCTUATION,
        ACCENT_MARK => MARK_ACCENT,
        SYMBOL => MARK_SYMBOL,
        _ => MARK_OTHER,
    }
}

/// Split every piece by a general regex: matches and the gaps between them become pieces.
fn split_regex(
    re: &fancy_regex::Regex,
    collapsed: bool,
    cpts: &[char],
    flags: &[u8],
    offsets: &[usize],
) -> Vec<usize> {
    let text: String = cpts
        .iter()
        .zip(flags)
        .map(|(&c, &f)| collapse_char(c, f, collapsed))
        .collect();
    // Byte offset of each code point of `text`, plus the end.
    let mut byte_of: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    byte_of.push(text.len());
    let cpt_of = |byte: usize| byte_of.partition_point(|&b| b < byte);

    let mut out = Vec::with_capacity(offsets.len());
    for (ini, end) in segments(offsets) {
        let base = byte_of[ini];
        let piece = &text[base..byte_of[end]];
        let mut done = ini;
        for m in re.find_iter(piece) {
            // A regex that gives up (backtrack limit) leaves the rest of the piece whole.
            let Ok(m) = m else { break };
            let (m_ini, m_end) = (cpt_of(base + m.start()), cpt_of(base + m.end()));
            if m_ini > done {
                out.push(m_ini - done);
            }
            if m_end > m_ini {
                out.push(m_end - m_ini);
            }
            done = m_end;
        }
        if end > done {
            out.push(end - done);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: &str, text: &str) -> Vec<String> {
        let (patterns, _) = regexes_for(Some(pre)).expect("known pre-tokenizer");
        let pt = PreTokenizer::new(&patterns).expect("compiles");
        pt.split(text).into_iter().map(String::from).collect()
    }

    #[test]
    fn collapsed_regex_keeps_classes_flat() {
        assert_eq!(
            collapse_regex(r"[^\r\n\p{L}\p{N}]?\p{L}+").expect("ascii"),
            "[^\\r\\n\u{D2}A-Za-z\u{D1}0-9]?[\u{D2}A-Za-z]+"
        );
        assert!(collapse_regex("é\\p{L}").is_err());
    }

    #[test]
    fn gpt2_splits_words_contractions_and_spaces() {
        assert_eq!(
            split("gpt-2", "Hello world's  end\t\tx 123!"),
            ["Hello", " world", "'s", " ", " end", "\t", "\t", "x", " 123", "!"]
        );
    }

    #[test]
    fn smollm_splits_digits_first() {
        assert_eq!(
            split("smollm", "abc123 45"),
            ["abc", "1", "2", "3", " ", "4", "5"]
        );
    }

    #[test]
    fn llama3_groups_three_digits_and_newlines() {
        assert_eq!(
            split("llama-bpe", "I'M 12345\n\n  ok"),
            ["I", "'M", " ", "123", "45", "\n\n", " ", " ok"]
        );
    }

    #[test]
    fn qwen2_matches_the_llama3_splitter_except_digits() {
        assert_eq!(
            split("qwen2", "I'M 12345\n\n  ok 你好，世界!\r\n"),
            [
                "I",
                "'M",
                " ",
                "1",
                "2",
                "3",
                "4",
                "5",
                "\n\n",
                " ",
                " ok",
                " 你好",
                "，世界",
                "!\r\n"
            ]
        );
    }

    /// Splits equal the Python `regex` module's for every corpus text and pre-tokenizer
    /// (tests/data/pretok_splits.json, from scripts/gen_fixtures.py).
    #[test]
    fn splits_match_python_regex() {
        let fx: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/pretok_splits.json")).expect("json");
        let cases = fx["cases"].as_array().expect("cases");
        let mut failures = Vec::new();
        for case in cases {
            let pre = case["pre"].as_str().expect("pre");
            let text = case["text"].as_str().expect("text");
            let want: Vec<&str> = case["words"]
                .as_array()
                .expect("words")
                .iter()
                .map(|w| w.as_str().expect("word"))
                .collect();
            let got = split(pre, text);
            if got != want {
                failures.push(format!("{pre} {text:?}:\n   got {got:?}\n  want {want:?}"));
            }
        }
        assert!(cases.len() > 150);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn words_concatenate_back_to_the_text() {
        let text = "  x\u{3000}y 🎉🎉 e\u{301} ²³ \u{85}end  ";
        for pre in ["default", "gpt-2", "llama-bpe", "qwen2", "smollm", "gpt-4o"] {
            assert_eq!(split(pre, text).concat(), text, "{pre}");
        }
    }
}
