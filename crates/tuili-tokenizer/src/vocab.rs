//! The vocabulary: token texts, their attributes, and the special tokens llama.cpp finds by
//! name (`llama_vocab::impl::load`).

use std::collections::HashMap;

use crate::TokenizerError;

/// Token attributes (llama.cpp's `llama_token_attr`, from `tokenizer.ggml.token_type`).
pub(crate) mod attr {
    pub const UNDEFINED: u8 = 0;
    pub const NORMAL: u8 = 1 << 0;
    pub const UNKNOWN: u8 = 1 << 1;
    pub const CONTROL: u8 = 1 << 2;
    pub const USER_DEFINED: u8 = 1 << 3;
    pub const UNUSED: u8 = 1 << 4;
    pub const BYTE: u8 = 1 << 5;

    /// The GGUF token type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte) as attributes; anything else is undefined.
    pub fn from_token_type(t: i32) -> u8 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => UNDEFINED,
        }
    }
}

/// Token texts with their ids, attributes and scores.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub texts: Vec<String>,
    pub attrs: Vec<u8>,
    pub scores: Vec<f32>,
    pub to_id: HashMap<String, u32>,
}

impl Vocab {
    /// Build from the raw token list. Empty texts are renamed `[EMPTY_<id>]` as llama.cpp
    /// does; a text that occurs twice is an error (llama.cpp refuses such files too).
    pub(crate) fn new(
        tokens: Vec<String>,
        scores: Option<Vec<f32>>,
        token_types: Option<Vec<i32>>,
    ) -> Result<Vocab, TokenizerError> {
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n > i32::MAX as usize {
            return Err(TokenizerError::VocabTooLarge {
                got: n,
                max: i32::MAX as usize,
            });
        }
        for (what, got) in [
            ("tokenizer.ggml.scores", scores.as_ref().map(Vec::len)),
            (
                "tokenizer.ggml.token_type",
                token_types.as_ref().map(Vec::len),
            ),
        ] {
            if let Some(got) = got.filter(|&g| g < n) {
                return Err(TokenizerError::TooFewEntries {
                    what,
                    got,
                    vocab: n,
                });
            }
        }
        let mut to_id = HashMap::with_capacity(n);
        let mut texts = Vec::with_capacity(n);
        for (i, mut text) in tokens.into_iter().enumerate() {
            if text.is_empty() {
                text = format!("[EMPTY_{i}]");
            }
            if let Some(&first) = to_id.get(&text) {
                return Err(TokenizerError::DuplicateToken {
                    text,
                    first,
                    second: i as u32,
                });
            }
            to_id.insert(text.clone(), i as u32);
            texts.push(text);
        }
        let attrs = match token_types {
            Some(t) => t[..n].iter().map(|&t| attr::from_token_type(t)).collect(),
            None => vec![attr::NORMAL; n],
        };
        let scores = match scores {
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };
        Ok(Vocab {
            texts,
            attrs,
            scores,
            to_id,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.to_id.get(text).copied()
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    pub(crate) fn attr(&self, id: u32) -> u8 {
        self.attrs
            .get(id as usize)
            .copied()
            .unwrap_or(attr::UNDEFINED)
    }

    /// SentencePiece byte fallback: `<0xNN>`, else the byte itself as a token.
    pub(crate) fn byte_token(&self, b: u8) -> Option<u32> {
        self.id(&format!("<0x{b:02X}>"))
            .or_else(|| std::str::from_utf8(&[b]).ok().and_then(|s| self.id(s)))
    }

    /// The token named by the first of `names` the vocabulary has. (llama.cpp takes whichever
    /// its hash map yields first; list order makes Qwen's EOT `<|im_end|>`, as its logs show,
    /// rather than `<|endoftext|>`.)
    fn find_any(&self, names: &[&str]) -> Option<u32> {
        names.iter().find_map(|n| self.id(n))
    }

    fn mark_control(&mut self, id: u32) {
        if let Some(a) = self.attrs.get_mut(id as usize) {
            *a |= attr::CONTROL;
        }
    }
}

// Token texts llama.cpp recognises by name when the metadata gives no id.
const EOT_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_NAMES: &[&str] = &["<|eom_id|>"];
const FIM_PRE_NAMES: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_NAMES: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_NAMES: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_NAMES: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_NAMES: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_NAMES: &[&str] = &["<|file_sep|>"];
/// Tokens that end generation, whatever the metadata says.
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Special tokens found by id or by name, and the end-of-generation set.
#[derive(Debug, Default)]
pub(crate) struct Specials {
    pub eot: Option<u32>,
    /// Sorted, deduplicated.
    pub eog: Vec<u32>,
}

/// Find EOT/EOM/FIM tokens by name, mark them control, and collect the end-of-generation
/// set, following llama.cpp's load order (including its workarounds for harmony-style and
/// Gemma 4 vocabularies).
pub(crate) fn detect_specials(vocab: &mut Vocab, eos: Option<u32>, eot: Option<u32>) -> Specials {
    let found = |given: Option<u32>, names: &[&str], vocab: &mut Vocab| -> Option<u32> {
        if given.is_some() {
            return given;
        }
        let id = vocab.find_any(names)?;
        vocab.mark_control(id);
        Some(id)
    };
    let eot = found(eot, EOT_NAMES, vocab);
    let eom = found(None, EOM_NAMES, vocab);
    for names in [FIM_PRE_NAMES, FIM_SUF_NAMES, FIM_MID_NAMES] {
        found(None, names, vocab);
    }
    let fim_pad = found(None, FIM_PAD_NAMES, vocab);
    let fim_rep = found(None, FIM_REP_NAMES, vocab);
    let fim_sep = found(None, FIM_SEP_NAMES, vocab);

    let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
    for name in EOG_NAMES {
        if let Some(id) = vocab.id(name) {
            eog.push(id);
            vocab.mark_control(id);
        }
    }
    eog.extend([eos, eot, eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();

    let has = |eog: &[u32], vocab: &Vocab, name: &str| -> Option<u32> {
        vocab.id(name).filter(|id| eog.binary_search(id).is_ok())
    };
    // Harmony (gpt-oss) and solar-open: `<|end|>` ends a message, not the generation.
    if let Some(end) = has(&eog, vocab, "<|end|>") {
        let call = has(&eog, vocab, "<|call|>").or(has(&eog, vocab, "<|calls|>"));
        let ret = has(&eog, vocab, "<|return|>");
        let flush = has(&eog, vocab, "<|flush|>");
        if call.is_some() && (ret.is_some() || flush.is_some()) {
            eog.retain(|&id| id != end);
            vocab.attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    // Gemma 4 and PaddleOCR: `</s>` is an ordinary token there.
    if has(&eog, vocab, "<|tool_response>").is_some() {
        if let Some(s) = has(&eog, vocab, "</s>") {
            eog.retain(|&id| id != s);
            vocab.attrs[s as usize] = attr::NORMAL;
        }
    }
    // gpt-oss: these are always rendered (llama.cpp's "quick hack").
    for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = vocab.id(name) {
            vocab.attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    Specials { eot, eog }
}
