//! Tokenizers and chat templates from GGUF metadata.
//!
//! - [`Tokenizer`] turns text into token ids and back. It implements llama.cpp's two common
//!   vocabulary types: byte-level BPE (`tokenizer.ggml.model = "gpt2"`, with the
//!   `tokenizer.ggml.pre` pre-tokenizers `default`, `gpt-2`, `llama-bpe`, `qwen2`, `smollm`
//!   and their aliases) and SentencePiece (`"llama"`: score-ordered merges, `▁` for spaces,
//!   `<0xNN>` byte fallback). The ids are llama.cpp's, not Hugging Face's, where the two
//!   differ: llama.cpp is what GGUF models are tested with.
//! - [`StreamDecoder`] detokenizes one id at a time without ever splitting a UTF-8 character.
//! - [`ChatTemplate`] renders a model's Jinja chat template the way `transformers` does.
//!
//! The tokenizer is built from a plain [`TokenizerConfig`] (the `tokenizer.ggml.*` keys), so it
//! does not depend on how the metadata was read.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bpe;
mod chat;
mod gguf;
mod hf;
mod pretok;
mod spm;
mod stream;
mod tokenizer;
mod unicode;
mod vocab;

pub use chat::{strftime, ChatMessage, ChatTemplate};
pub use hf::hf_tokenizer_keys;
pub use stream::StreamDecoder;
pub use tokenizer::{Tokenizer, TokenizerConfig};

use thiserror::Error;

/// Everything that can go wrong building a tokenizer or rendering a chat template.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a vocabulary type we do not implement.
    #[error("unknown tokenizer model {0:?}; supported: \"gpt2\" (byte-level BPE), \"llama\" (SentencePiece)")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer we do not implement.
    #[error("unknown pre-tokenizer {name:?}; supported: {supported}", name = .0, supported = pretok::SUPPORTED_PRE)]
    UnknownPreTokenizer(String),
    /// The token list is empty.
    #[error("the vocabulary (tokenizer.ggml.tokens) is empty")]
    EmptyVocab,
    /// More tokens than ids can address.
    #[error("the vocabulary has {got} tokens, more than the limit of {max}")]
    VocabTooLarge {
        /// Tokens given.
        got: usize,
        /// The most allowed.
        max: usize,
    },
    /// A per-token array is shorter than the token list.
    #[error("{what} has {got} entries but the vocabulary has {vocab} tokens")]
    TooFewEntries {
        /// The metadata key.
        what: &'static str,
        /// Entries given.
        got: usize,
        /// Tokens in the vocabulary.
        vocab: usize,
    },
    /// Two tokens share one text, so text-to-id lookup is ambiguous.
    #[error("duplicate token {text:?} at ids {first} and {second}")]
    DuplicateToken {
        /// The repeated text.
        text: String,
        /// Its first id.
        first: u32,
        /// Its second id.
        second: u32,
    },
    /// A BPE vocabulary without `tokenizer.ggml.merges`.
    #[error("a \"gpt2\" (BPE) tokenizer needs tokenizer.ggml.merges, which is missing")]
    MissingMerges,
    /// The metadata asks to add a special token it does not define.
    #[error("{flag} is set but the {token} token id is missing or outside the vocabulary")]
    MissingSpecial {
        /// `add_bos` or `add_eos`.
        flag: &'static str,
        /// `BOS` or `EOS`.
        token: &'static str,
    },
    /// A pre-tokenizer regex failed to compile.
    #[error("pre-tokenizer regex {pattern:?}: {message}")]
    Regex {
        /// The regex as llama.cpp spells it.
        pattern: String,
        /// What the regex engine said.
        message: String,
    },
    /// A required metadata key is absent.
    #[error("the GGUF metadata has no {0} key")]
    MissingKey(&'static str),
    /// Reading the GGUF metadata failed (wrong value type, ...).
    #[error(transparent)]
    Gguf(#[from] tuili_gguf::GgufError),
    /// A Hugging Face tokenizer file is malformed or of a kind tuili does not read.
    #[error("{0}")]
    Hf(String),
    /// A chat template failed to compile or render (including `raise_exception`).
    #[error("chat template: {0}")]
    Template(String),
}
