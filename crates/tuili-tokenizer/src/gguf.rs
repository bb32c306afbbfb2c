//! Reading the tokenizer and chat template out of a GGUF file's metadata.

use tuili_gguf::GgufFile;

use crate::{ChatTemplate, Tokenizer, TokenizerConfig, TokenizerError};

/// An optional key: absent is `None`, present with the wrong type is an error.
fn optional<'f, T>(
    file: &'f GgufFile,
    key: &str,
    get: impl FnOnce(&'f GgufFile, &str) -> tuili_gguf::Result<T>,
) -> Result<Option<T>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(_) => Ok(Some(get(file, key)?)),
    }
}

/// A token id; one too large for `u32` is out of every vocabulary and so ignored later.
fn id(file: &GgufFile, key: &str) -> Result<Option<u32>, TokenizerError> {
    Ok(optional(file, key, GgufFile::get_u64)?.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
}

fn strings(file: &GgufFile, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
    Ok(optional(file, key, GgufFile::get_str_array)?
        .map(|v| v.into_iter().map(str::to_string).collect()))
}

impl TokenizerConfig {
    /// The `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<TokenizerConfig, TokenizerError> {
        let tokens = strings(file, "tokenizer.ggml.tokens")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.tokens"))?;
        Ok(TokenizerConfig {
            model: file.get_str("tokenizer.ggml.model")?.to_string(),
            pre: optional(file, "tokenizer.ggml.pre", GgufFile::get_str)?.map(str::to_string),
            tokens,
            scores: optional(file, "tokenizer.ggml.scores", GgufFile::get_f32_array)?,
            token_types: optional(file, "tokenizer.ggml.token_type", GgufFile::get_i32_array)?,
            merges: strings(file, "tokenizer.ggml.merges")?,
            bos: id(file, "tokenizer.ggml.bos_token_id")?,
            eos: id(file, "tokenizer.ggml.eos_token_id")?,
            eot: id(file, "tokenizer.ggml.eot_token_id")?,
            unk: id(file, "tokenizer.ggml.unknown_token_id")?,
            pad: id(file, "tokenizer.ggml.padding_token_id")?,
            add_bos: optional(file, "tokenizer.ggml.add_bos_token", GgufFile::get_bool)?,
            add_eos: optional(file, "tokenizer.ggml.add_eos_token", GgufFile::get_bool)?,
            add_space_prefix: optional(
                file,
                "tokenizer.ggml.add_space_prefix",
                GgufFile::get_bool,
            )?,
        })
    }
}

impl Tokenizer {
    /// The tokenizer a GGUF file describes.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::new(TokenizerConfig::from_gguf(file)?)
    }
}

impl ChatTemplate {
    /// The file's `tokenizer.chat_template`, with `bos_token`/`eos_token` set to the texts of
    /// its BOS and EOS tokens (empty when the metadata names none); `None` when the file has
    /// no template.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<ChatTemplate>, TokenizerError> {
        let Some(source) = optional(file, "tokenizer.chat_template", GgufFile::get_str)? else {
            return Ok(None);
        };
        let token_text = |key: &str| -> Result<String, TokenizerError> {
            let Some(id) = id(file, key)? else {
                return Ok(String::new());
            };
            let text = file
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.str_at(id as usize))
                .unwrap_or_default();
            Ok(text.to_string())
        };
        let bos = token_text("tokenizer.ggml.bos_token_id")?;
        let eos = token_text("tokenizer.ggml.eos_token_id")?;
        ChatTemplate::new(source, &bos, &eos).map(Some)
    }
}
