//! A Hugging Face tokenizer directory (`tokenizer.json`, `tokenizer_config.json` or
//! `chat_template.jinja`, `generation_config.json`) as the `tokenizer.*` GGUF keys that
//! llama.cpp's converter writes, so that [`crate::Tokenizer::from_gguf`] and
//! [`crate::ChatTemplate::from_gguf`] serve both formats with one implementation.
//!
//! Two kinds of `tokenizer.json` are read:
//! - byte-level BPE (`model.type = "BPE"` with a `ByteLevel` pre-tokenizer: SmolLM2, Qwen2.5,
//!   Llama 3) as llama.cpp's `gpt2` model; the pre-tokenizer is recognised from its regex
//!   (or, for SmolLM2's, its `Digits` + `ByteLevel` sequence) as llama.cpp's name for it;
//! - SentencePiece-style BPE (`byte_fallback`, spaces as `▁`: Gemma 3) as llama.cpp's `llama`
//!   model, each token scored by its first merge's rank (`-rank`: SentencePiece merges the
//!   adjacent pair whose result scores highest, which is the pair of lowest rank).

use std::path::Path;

use serde_json::Value as Json;
use tuili_gguf::Value;

use crate::TokenizerError;

/// The largest tokenizer file read (real ones are up to ~35 MB).
const MAX_JSON_BYTES: u64 = 256 << 20;

/// The most token ids accepted (the largest real vocabularies have ~260k); bounds the
/// arrays a hostile id could size.
const MAX_VOCAB: u64 = 1 << 22;

/// Split regexes of `tokenizer.json` pre-tokenizers and llama.cpp's names for them.
const PRE_REGEXES: &[(&str, &str)] = &[
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "qwen2",
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        "llama-bpe",
    ),
];

fn bad(file: &str, problem: String) -> TokenizerError {
    TokenizerError::Hf(format!("{file}: {problem}"))
}

fn read_json(dir: &Path, name: &str) -> Result<Option<Json>, TokenizerError> {
    tuili_safetensors::read_json(&dir.join(name), MAX_JSON_BYTES)
        .map_err(|e| TokenizerError::Hf(e.to_string()))
}

/// The `tokenizer.*` keys for the tokenizer files in `dir`. Without `tokenizer.json` the
/// vocabulary is llama.cpp's `"none"` (ids only).
pub fn hf_tokenizer_keys(dir: &Path) -> Result<Vec<(String, Value)>, TokenizerError> {
    let s = |v: &str| Value::String(v.to_string());
    let Some(tok) = read_json(dir, "tokenizer.json")? else {
        return Ok(vec![("tokenizer.ggml.model".into(), s("none"))]);
    };
    let f = "tokenizer.json";
    let model = tok
        .get("model")
        .ok_or_else(|| bad(f, "has no \"model\"".into()))?;
    let ty = model.get("type").and_then(Json::as_str).unwrap_or("?");
    let byte_fallback = model.get("byte_fallback").and_then(Json::as_bool) == Some(true);
    let spm = !is_byte_level(&tok) && byte_fallback;
    if ty != "BPE" || !(is_byte_level(&tok) || spm) {
        return Err(bad(
            f,
            format!(
                "a {ty} model with neither a ByteLevel pre-tokenizer nor byte_fallback; \
                 supported: byte-level BPE, SentencePiece-style BPE"
            ),
        ));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| bad(f, "model.vocab is not an object".into()))?;
    let added = tok
        .get("added_tokens")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut entries: Vec<(u64, String, i32)> = Vec::with_capacity(vocab.len() + added.len());
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(f, format!("model.vocab[{text:?}] is not an id")))?;
        entries.push((id, text.clone(), 1));
    }
    for a in &added {
        let (Some(id), Some(text)) = (
            a.get("id").and_then(Json::as_u64),
            a.get("content").and_then(Json::as_str),
        ) else {
            return Err(bad(
                f,
                format!("added_tokens entry {a} lacks an id or content"),
            ));
        };
        // llama.cpp's token types: 3 control (special), 4 user-defined.
        let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
        entries.retain(|(i, _, _)| *i != id);
        entries.push((id, text.to_string(), if special { 3 } else { 4 }));
    }
    let n = entries.iter().map(|e| e.0 + 1).max().unwrap_or(0);
    if n > MAX_VOCAB {
        return Err(bad(
            f,
            format!("token ids go up to {n}, more than the limit of {MAX_VOCAB}"),
        ));
    }
    // Gaps get llama.cpp's placeholder names.
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut types = vec![1i32; n as usize];
    for (id, text, t) in entries {
        tokens[id as usize] = text;
        types[id as usize] = t;
    }
    let merges = model
        .get("merges")
        .and_then(Json::as_array)
        .ok_or_else(|| bad(f, "model.merges is missing".into()))?
        .iter()
        .map(|m| match m {
            Json::String(m) => Ok(m.clone()),
            Json::Array(p) if p.len() == 2 && p.iter().all(Json::is_string) => Ok(format!(
                "{} {}",
                p[0].as_str().unwrap_or(""),
                p[1].as_str().unwrap_or("")
            )),
            _ => Err(bad(f, format!("model.merges holds {m}, not a pair"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Unboxed, as the GGUF reader holds a vocabulary's arrays (see `UNBOXED_FROM`).
    let strings = |v: Vec<String>| Value::StrArray(v.iter().map(String::as_str).collect());
    let mut keys = if spm {
        spm_keys(&tok, &tokens, &mut types, &merges)?
    } else {
        vec![
            ("tokenizer.ggml.model".to_string(), s("gpt2")),
            ("tokenizer.ggml.pre".into(), s(pre_name(&tok)?)),
            ("tokenizer.ggml.merges".into(), strings(merges)),
        ]
    };
    let types = Value::I32Array(types);
    keys.push(("tokenizer.ggml.token_type".into(), types));
    special_keys(dir, &tokens, &mut keys)?;
    keys.insert(1, ("tokenizer.ggml.tokens".into(), strings(tokens)));
    if let Some(t) = chat_template(dir)? {
        keys.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    Ok(keys)
}

/// The keys of a SentencePiece-style vocabulary: scores from merge ranks, byte tokens
/// (`<0xNN>`) typed 6 and the unknown token 2, as llama.cpp's SentencePiece converter types
/// them; `add_space_prefix` when the normalizer prepends `▁`.
fn spm_keys(
    tok: &Json,
    tokens: &[String],
    types: &mut [i32],
    merges: &[String],
) -> Result<Vec<(String, Value)>, TokenizerError> {
    let f = "tokenizer.json";
    let normalizers: Vec<&Json> = match tok.get("normalizer") {
        Some(n) if type_of(n) == "Sequence" => n
            .get("normalizers")
            .and_then(Json::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default(),
        Some(n) if !n.is_null() => vec![n],
        _ => Vec::new(),
    };
    let mut prefix = false;
    for n in &normalizers {
        let is = |key: &str, want: &str| {
            n.get(key)
                .and_then(|p| p.get("String").or(Some(p)))
                .and_then(Json::as_str)
                == Some(want)
        };
        match type_of(n) {
            "Replace" if is("pattern", " ") && n.get("content").and_then(Json::as_str) == Some("▁") => {}
            "Prepend" if n.get("prepend").and_then(Json::as_str) == Some("▁") => prefix = true,
            other => {
                return Err(bad(f, format!("normalizer {other} is not one of SentencePiece's (Replace ' ' → '▁', Prepend '▁')")))
            }
        }
    }
    // A split on ' ' finds nothing once the normalizer has made every space '▁'.
    for p in pre_tokenizers(tok) {
        let on_space = p
            .get("pattern")
            .and_then(|p| p.get("String"))
            .and_then(Json::as_str)
            == Some(" ");
        if !(type_of(p) == "Split" && on_space) {
            return Err(bad(
                f,
                format!("pre_tokenizer {p} in a SentencePiece-style vocabulary"),
            ));
        }
    }
    if !normalizers.iter().any(|n| type_of(n) == "Replace") {
        return Err(bad(
            f,
            "a byte_fallback vocabulary without the ' ' → '▁' normalizer".into(),
        ));
    }
    let index: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // Tokens no merge makes (single characters, specials) score below every merged one.
    let mut scores = vec![-(merges.len() as f32) - 1.0; tokens.len()];
    for (rank, m) in merges.iter().enumerate().rev() {
        let joined: String = m.split(' ').collect();
        if let Some(&i) = index.get(joined.as_str()) {
            scores[i] = -(rank as f32);
        }
    }
    for (i, t) in tokens.iter().enumerate() {
        let byte = t.len() == 6 && t.starts_with("<0x") && t.ends_with('>');
        if byte && types[i] == 1 {
            types[i] = 6;
        }
    }
    let unk = tok
        .get("model")
        .and_then(|m| m.get("unk_token"))
        .and_then(Json::as_str)
        .and_then(|u| index.get(u));
    if let Some(&u) = unk {
        types[u] = 2;
    }
    Ok(vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("llama".into()),
        ),
        ("tokenizer.ggml.scores".into(), Value::F32Array(scores)),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(prefix),
        ),
    ])
}

fn pre_tokenizers(tok: &Json) -> Vec<&Json> {
    match tok.get("pre_tokenizer") {
        Some(p) if p.get("type").and_then(Json::as_str) == Some("Sequence") => p
            .get("pretokenizers")
            .and_then(Json::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default(),
        Some(p) if !p.is_null() => vec![p],
        _ => Vec::new(),
    }
}

fn type_of(j: &Json) -> &str {
    j.get("type").and_then(Json::as_str).unwrap_or("")
}

fn is_byte_level(tok: &Json) -> bool {
    pre_tokenizers(tok)
        .iter()
        .any(|p| type_of(p) == "ByteLevel")
}

/// llama.cpp's name for the pre-tokenizer of `tok`.
fn pre_name(tok: &Json) -> Result<&'static str, TokenizerError> {
    let pres = pre_tokenizers(tok);
    let kinds: Vec<&str> = pres.iter().map(|p| type_of(p)).collect();
    let uses_regex = |p: &Json| p.get("use_regex").and_then(Json::as_bool).unwrap_or(true);
    match kinds.as_slice() {
        ["ByteLevel"] if uses_regex(pres[0]) => return Ok("gpt-2"),
        ["Digits", "ByteLevel"]
            if pres[0].get("individual_digits").and_then(Json::as_bool) == Some(true)
                && uses_regex(pres[1]) =>
        {
            return Ok("smollm")
        }
        ["Split", "ByteLevel"] if !uses_regex(pres[1]) => {
            let re = pres[0]
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Json::as_str);
            if let Some(&(_, name)) = PRE_REGEXES.iter().find(|(r, _)| Some(*r) == re) {
                return Ok(name);
            }
        }
        _ => {}
    }
    Err(bad(
        "tokenizer.json",
        format!(
            "pre_tokenizer {} is not one tuili recognises (byte-level with the GPT-2, SmolLM, \
             Qwen2 or Llama 3 split)",
            tok.get("pre_tokenizer")
                .map(Json::to_string)
                .unwrap_or_default()
        ),
    ))
}

/// BOS/EOS/UNK/PAD ids and the add-BOS/EOS flags, from `tokenizer_config.json`, with
/// `generation_config.json`'s EOS id taking precedence (it is what generation stops on).
fn special_keys(
    dir: &Path,
    tokens: &[String],
    keys: &mut Vec<(String, Value)>,
) -> Result<(), TokenizerError> {
    let cfg = read_json(dir, "tokenizer_config.json")?.unwrap_or(Json::Null);
    let id_of = |name: &str| -> Option<u32> {
        let v = cfg.get(name)?;
        let text = v
            .as_str()
            .or_else(|| v.get("content").and_then(Json::as_str))?;
        tokens.iter().position(|t| t == text).map(|i| i as u32)
    };
    let mut eos = id_of("eos_token");
    if let Some(g) = read_json(dir, "generation_config.json")? {
        let first = match g.get("eos_token_id") {
            Some(Json::Array(ids)) => ids.first().and_then(Json::as_u64),
            Some(v) => v.as_u64(),
            None => None,
        };
        if let Some(id) = first.filter(|&i| i < tokens.len() as u64) {
            eos = Some(id as u32);
        }
    }
    for (key, id) in [
        ("bos", id_of("bos_token")),
        ("eos", eos),
        ("unknown", id_of("unk_token")),
        ("padding", id_of("pad_token")),
    ] {
        if let Some(id) = id {
            keys.push((format!("tokenizer.ggml.{key}_token_id"), Value::U32(id)));
        }
    }
    for flag in ["add_bos_token", "add_eos_token"] {
        if let Some(b) = cfg.get(flag).and_then(Json::as_bool) {
            keys.push((format!("tokenizer.ggml.{flag}"), Value::Bool(b)));
        }
    }
    Ok(())
}

/// `tokenizer_config.json`'s `chat_template` (a string, or the `default` of a list of named
/// templates), else `chat_template.jinja`.
fn chat_template(dir: &Path) -> Result<Option<String>, TokenizerError> {
    if let Some(cfg) = read_json(dir, "tokenizer_config.json")? {
        match cfg.get("chat_template") {
            Some(Json::String(t)) => return Ok(Some(t.clone())),
            Some(Json::Array(named)) => {
                let default = named
                    .iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some("default"));
                if let Some(t) = default
                    .and_then(|t| t.get("template"))
                    .and_then(Json::as_str)
                {
                    return Ok(Some(t.to_string()));
                }
            }
            _ => {}
        }
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let t = std::fs::read_to_string(&jinja)
            .map_err(|e| bad(&jinja.display().to_string(), e.to_string()))?;
        return Ok(Some(t));
    }
    Ok(None)
}
