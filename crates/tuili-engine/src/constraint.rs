//! Grammar-constrained sampling with llguidance: a token trie built from the served
//! model's vocabulary, grammars compiled from JSON schemas, regexes, choices or Lark, and
//! per-sequence matchers whose token masks the sampler applies before drawing.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use tuili_tokenizer::Tokenizer;

/// What a request's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// Any JSON object (OpenAI `response_format: json_object`).
    JsonObject,
    /// JSON valid under this JSON schema.
    JsonSchema(serde_json::Value),
    /// Text matching this regular expression (Rust `regex` syntax), whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark dialect (which also reads GBNF-style rules).
    Lark(String),
}

/// How JSON is laid out: one line, `", "` and `": "` between items (as Python's
/// `json.dumps`), so that small models cannot loop on whitespace.
fn json_layout() -> serde_json::Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

impl ConstraintSpec {
    /// The llguidance grammar of this spec.
    fn grammar(&self) -> Result<TopLevelGrammar, String> {
        let schema = |mut s: serde_json::Value| {
            if let Some(obj) = s.as_object_mut() {
                obj.entry("x-guidance").or_insert_with(json_layout);
            }
            TopLevelGrammar::from_json_schema(s)
        };
        Ok(match self {
            ConstraintSpec::JsonObject => schema(serde_json::json!({"type": "object"})),
            ConstraintSpec::JsonSchema(s) => {
                if !s.is_object() && !s.is_boolean() {
                    return Err("the JSON schema must be an object or a boolean".into());
                }
                schema(s.clone())
            }
            ConstraintSpec::Regex(r) => TopLevelGrammar::from_regex(r),
            ConstraintSpec::Choice(c) => {
                if c.is_empty() {
                    return Err("the choice list is empty".into());
                }
                // Lark string literals take JSON's escapes.
                let alts: Vec<String> = c
                    .iter()
                    .map(|s| serde_json::to_string(s).expect("a string serializes"))
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
            ConstraintSpec::Lark(g) => {
                if g.trim().is_empty() {
                    return Err("the grammar is empty".into());
                }
                TopLevelGrammar::from_lark(g.clone())
            }
        })
    }
}

/// The tokenizer as llguidance sees it: every token's bytes (special tokens behind the
/// trie's marker byte, so that no text can spell them) and tuili's own tokenization.
struct TokenizerView {
    tok: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for TokenizerView {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        match std::str::from_utf8(s) {
            Ok(text) => self.tok.encode(text, false, false),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// The bytes llguidance matches for each token: what the stream decoder emits for a
/// normal token; `0xFF` + the name for a control token; nothing for the unknown token.
fn trie_words(tok: &Tokenizer) -> Vec<Vec<u8>> {
    (0..tok.vocab_size() as u32)
        .map(|id| {
            let bytes = tok.token_bytes(id);
            if Some(id) == tok.unk() || bytes.is_empty() {
                Vec::new()
            } else if tok.is_control(id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(bytes);
                w
            } else {
                bytes.to_vec()
            }
        })
        .collect()
}

/// Compiles grammars for one tokenizer. Building the trie and the factory takes a
/// fraction of a second on a large vocabulary, so it happens on the first grammar.
pub struct GrammarCompiler {
    tok: Arc<Tokenizer>,
    factory: OnceLock<Result<Arc<ParserFactory>, String>>,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler").finish_non_exhaustive()
    }
}

impl GrammarCompiler {
    /// A compiler for grammars over `tok`'s vocabulary.
    pub fn new(tok: Arc<Tokenizer>) -> GrammarCompiler {
        GrammarCompiler {
            tok,
            factory: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&Arc<ParserFactory>, String> {
        self.factory
            .get_or_init(|| {
                let eog = self.tok.eog_ids();
                let eos = self.tok.eos().or(eog.first().copied()).unwrap_or(0);
                let info = TokRxInfo::new(self.tok.vocab_size() as u32, eos);
                let mut trie = TokTrie::from(&info, &trie_words(&self.tok));
                if !eog.is_empty() {
                    trie = trie.with_eos_tokens(eog);
                }
                let env: TokEnv = Arc::new(TokenizerView {
                    tok: self.tok.clone(),
                    trie,
                });
                let mut f = ParserFactory::new_simple(&env)
                    .map_err(|e| format!("cannot build the grammar engine: {e}"))?;
                // Errors come back to the client; nothing goes to stderr.
                f.quiet();
                Ok(Arc::new(f))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Compiles `spec` into a constraint ready for a new sequence, or says why it does not
    /// compile (a bad schema, regex or grammar).
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, String> {
        let factory = self.factory()?;
        let parser = factory
            .create_parser(spec.grammar()?)
            .map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        Ok(Constraint { matcher })
    }
}

/// The grammar state of one sequence. Cloning gives an independent state (for `n > 1`).
pub struct Constraint {
    matcher: Matcher,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

/// The tokens allowed next and how long computing them took.
pub(crate) struct TokenMask {
    allowed: SimpleVob,
    /// Time spent computing the mask.
    pub took: Duration,
}

impl TokenMask {
    /// Sets every disallowed logit to −∞ (logits past the tokenizer's vocabulary, a
    /// model's padding rows, are never allowed).
    pub fn apply(&self, logits: &mut [f32]) {
        let words = self.allowed.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (b, l) in chunk.iter_mut().enumerate() {
                if bits & (1 << b) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}

impl Constraint {
    /// The tokens the grammar allows next (end-of-generation ones once it may end).
    pub(crate) fn mask(&mut self) -> Result<TokenMask, String> {
        let t = Instant::now();
        let allowed = self.matcher.compute_mask().map_err(|e| e.to_string())?;
        if allowed.is_zero() {
            return Err("the grammar allows no token here".into());
        }
        Ok(TokenMask {
            allowed,
            took: t.elapsed(),
        })
    }

    /// Advances past the sampled `token`; an error when the grammar does not allow it.
    pub fn accept(&mut self, token: u32) -> Result<(), String> {
        self.matcher
            .consume_token(token)
            .map_err(|e| format!("grammar error: {e}"))
    }

    /// Whether the grammar is complete: nothing more may follow.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Rng;
    use tuili_tokenizer::TokenizerConfig;

    /// GPT-2's byte alphabet: printable Latin-1 stands for itself, the rest moves up.
    fn byte_char(b: u8) -> char {
        let keep = |x: u8| (0x21..=0x7E).contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE;
        if keep(b) {
            return b as char;
        }
        char::from_u32(256 + (0..b).filter(|&x| !keep(x)).count() as u32).expect("a char")
    }

    /// A byte-level BPE tokenizer: the 256 bytes, a few merges, then control tokens
    /// (`<|im_end|>` ends generation).
    pub(crate) fn tokenizer() -> Arc<Tokenizer> {
        let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
        let merges: Vec<String> = ["\" :", "Ġ \"", "t r", "tr u", "tru e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
        tokens.extend(["<|im_start|>", "<|im_end|>"].map(String::from));
        let mut types = vec![1; tokens.len()];
        let n = types.len();
        types[n - 2..].fill(3);
        let cfg = TokenizerConfig {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            eos: Some(n as u32 - 1),
            tokens,
            token_types: Some(types),
            merges: Some(merges),
            ..Default::default()
        };
        Arc::new(Tokenizer::new(cfg).expect("a valid tokenizer"))
    }

    /// Draws tokens with random logits through the mask until the grammar ends or
    /// `max` tokens; returns the text and whether it ended.
    fn run(tok: &Tokenizer, mut c: Constraint, seed: u64, max: usize) -> (String, bool) {
        let mut rng = Rng::new(seed);
        let mut ids = Vec::new();
        for _ in 0..max {
            let mask = c.mask().expect("a mask");
            let mut logits: Vec<f32> = (0..tok.vocab_size() + 7)
                .map(|_| rng.next_f64() as f32 * 4.0)
                .collect();
            mask.apply(&mut logits);
            let t = crate::argmax(&logits);
            if tok.is_eog(t) {
                return (tok.decode(&ids, true), true);
            }
            assert!(!tok.is_control(t), "a control token {t} passed the mask");
            c.accept(t).expect("an allowed token is accepted");
            ids.push(t);
            if c.is_finished() {
                return (tok.decode(&ids, true), true);
            }
        }
        (tok.decode(&ids, true), false)
    }

    #[test]
    fn random_draws_through_a_schema_mask_give_valid_json() {
        let tok = tokenizer();
        let g = GrammarCompiler::new(tok.clone());
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "kind": {"enum": ["a", "b"]},
                "n": {"type": "integer", "minimum": 0, "maximum": 9}
            },
            "required": ["ok", "kind", "n"],
            "additionalProperties": false
        });
        let c = g.compile(&ConstraintSpec::JsonSchema(schema)).unwrap();
        for seed in 0..8 {
            let (text, ended) = run(&tok, c.clone(), seed, 200);
            assert!(ended, "seed {seed}: {text}");
            let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
            assert!(v["ok"].is_boolean(), "{text}");
            assert!(["a", "b"].contains(&v["kind"].as_str().unwrap()), "{text}");
            assert!((0..=9).contains(&v["n"].as_i64().unwrap()), "{text}");
            assert_eq!(v.as_object().unwrap().len(), 3, "{text}");
        }
    }

    #[test]
    fn choices_regexes_and_lark_constrain_the_text() {
        let tok = tokenizer();
        let g = GrammarCompiler::new(tok.clone());
        let choice = ConstraintSpec::Choice(vec!["yes".into(), "no \"quoted\"".into()]);
        let c = g.compile(&choice).unwrap();
        for seed in 0..6 {
            let (text, ended) = run(&tok, c.clone(), seed, 50);
            assert!(
                ended && (text == "yes" || text == "no \"quoted\""),
                "{text}"
            );
        }
        let c = g
            .compile(&ConstraintSpec::Regex("[0-9]{3}-[a-c]+".into()))
            .unwrap();
        let (text, _) = run(&tok, c, 3, 12);
        assert!(
            text.len() >= 5 && text[..3].bytes().all(|b| b.is_ascii_digit()),
            "{text}"
        );
        assert_eq!(&text[3..4], "-", "{text}");
        assert!(text[4..].bytes().all(|b| b"abc".contains(&b)), "{text}");
        let lark = ConstraintSpec::Lark("start: \"x\" NUM\nNUM: /[1-3]/".into());
        let (text, ended) = run(&tok, g.compile(&lark).unwrap(), 1, 10);
        assert!(
            ended && ["x1", "x2", "x3"].contains(&text.as_str()),
            "{text}"
        );
    }

    #[test]
    fn bad_schemas_and_grammars_are_errors_that_name_the_problem() {
        let g = GrammarCompiler::new(tokenizer());
        let bad = [
            (
                ConstraintSpec::JsonSchema(serde_json::json!({"type": "strin"})),
                "strin",
            ),
            (
                ConstraintSpec::JsonSchema(serde_json::json!(3)),
                "object or a boolean",
            ),
            (ConstraintSpec::Regex("[a-".into()), "["),
            (
                ConstraintSpec::Lark("start: missing_rule".into()),
                "missing_rule",
            ),
            (ConstraintSpec::Choice(vec![]), "empty"),
        ];
        for (spec, needle) in bad {
            let e = g.compile(&spec).expect_err(&format!("{spec:?} compiles"));
            assert!(e.contains(needle), "{spec:?}: {e}");
        }
    }

    #[test]
    fn the_mask_allows_the_end_only_where_the_grammar_may_end() {
        let tok = tokenizer();
        let g = GrammarCompiler::new(tok.clone());
        let eos = tok.eos().unwrap();
        let mut c = g.compile(&ConstraintSpec::Regex("ab+".into())).unwrap();
        let allowed = |c: &mut Constraint, t: u32| {
            let mut l = vec![0.0; tok.vocab_size()];
            c.mask().unwrap().apply(&mut l);
            l[t as usize] == 0.0
        };
        assert!(!allowed(&mut c, eos));
        assert!(allowed(&mut c, b'a' as u32) && !allowed(&mut c, b'b' as u32));
        c.accept(b'a' as u32).unwrap();
        assert!(!allowed(&mut c, eos));
        c.accept(b'b' as u32).unwrap();
        assert!(allowed(&mut c, eos) && allowed(&mut c, b'b' as u32));
        assert!(c.accept(b'a' as u32).is_err());
    }
}
