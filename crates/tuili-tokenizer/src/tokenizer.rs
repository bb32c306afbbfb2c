//! [`Tokenizer`]: text to token ids and back, with llama.cpp's results.

use crate::bpe::Bpe;
use crate::pretok::{self, PreTokenizer};
use crate::unicode::char_to_byte;
use crate::vocab::{attr, detect_specials, Vocab};
use crate::{spm, TokenizerError};

/// The `tokenizer.ggml.*` metadata a tokenizer is built from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerConfig {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a BPE vocabulary (`None`: llama.cpp's default).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts; the index is the id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`: SentencePiece merge scores.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs, best first (BPE only).
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
}

enum Model {
    Bpe {
        pre: PreTokenizer,
        bpe: Box<Bpe>,
        ignore_merges: bool,
    },
    Spm,
}

/// A tokenizer built from GGUF metadata. Encoding gives the same ids as llama.cpp's
/// `llama_tokenize`; it is `Send + Sync` and holds no per-call state.
pub struct Tokenizer {
    model: Model,
    vocab: Vocab,
    /// What each token decodes to when special tokens are shown (llama.cpp's piece cache).
    pieces: Vec<Vec<u8>>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which
    /// they are cut out of the input.
    specials: Vec<u32>,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl std::fmt::Debug for Tokenizer {
    // A summary: the vocabulary itself runs to hundreds of thousands of strings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let model = match self.model {
            Model::Bpe { .. } => "bpe",
            Model::Spm => "spm",
        };
        f.debug_struct("Tokenizer")
            .field("model", &model)
            .field("vocab_size", &self.vocab.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .finish()
    }
}

/// Piece of the input after special tokens are cut out.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl Tokenizer {
    /// Build a tokenizer, applying llama.cpp's defaults where the metadata is silent.
    ///
    /// Special-token ids outside the vocabulary are ignored, as llama.cpp does.
    pub fn new(cfg: TokenizerConfig) -> Result<Tokenizer, TokenizerError> {
        let TokenizerConfig {
            model,
            pre,
            tokens,
            scores,
            token_types,
            merges,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
        } = cfg;
        let mut vocab = Vocab::new(tokens, scores, token_types)?;
        let n = vocab.len();
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let pick = |given: Option<u32>, default: Option<u32>| in_range(given).or(in_range(default));

        // Defaults per vocabulary type, as in llama.cpp's `load`. (llama.cpp defaults a BPE
        // vocabulary's BOS and EOS to id 11; we leave them unset instead.)
        let (model, default_bos, default_eos, default_unk, default_add_bos, default_prefix) =
            match model.as_str() {
                "gpt2" => {
                    let pre_name = pre.as_deref();
                    let (patterns, opts) = pretok::regexes_for(pre_name).ok_or_else(|| {
                        TokenizerError::UnknownPreTokenizer(pre.clone().unwrap_or_default())
                    })?;
                    let merges = merges.ok_or(TokenizerError::MissingMerges)?;
                    let m = Model::Bpe {
                        pre: PreTokenizer::new(&patterns)?,
                        bpe: Box::new(Bpe::new(&merges, &vocab.to_id)),
                        ignore_merges: opts.ignore_merges,
                    };
                    (m, None, None, None, opts.default_add_bos, false)
                }
                "llama" => (Model::Spm, Some(1), Some(2), Some(0), true, true),
                _ => return Err(TokenizerError::UnknownModel(model)),
            };
        let bos = pick(bos, default_bos);
        let eos = pick(eos, default_eos);
        let add_bos = add_bos.unwrap_or(default_add_bos);
        let add_eos = add_eos.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                flag: "add_bos",
                token: "BOS",
            });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecial {
                flag: "add_eos",
                token: "EOS",
            });
        }
        let found = detect_specials(&mut vocab, eos, in_range(eot));

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                vocab.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials.sort_by_key(|&id| std::cmp::Reverse(vocab.texts[id as usize].len()));

        let mut tok = Tokenizer {
            model,
            pieces: Vec::new(),
            specials,
            eog: found.eog,
            bos,
            eos,
            eot: found.eot,
            unk: pick(unk, default_unk),
            pad: in_range(pad),
            add_bos,
            add_eos,
            add_space_prefix: add_space_prefix.unwrap_or(default_prefix),
            vocab,
        };
        tok.pieces = (0..n as u32).map(|id| tok.render_piece(id)).collect();
        Ok(tok)
    }

    /// What token `id` decodes to with special tokens shown (llama.cpp's `token_to_piece`
    /// with `special = true`).
    fn render_piece(&self, id: u32) -> Vec<u8> {
        let text = &self.vocab.texts[id as usize];
        let a = self.vocab.attr(id);
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match self.model {
                Model::Spm => text.replace('▁', " ").into_bytes(),
                // Characters outside the byte alphabet (a vocabulary stored as plain text)
                // are kept as they are.
                Model::Bpe { .. } => {
                    let mut out = Vec::with_capacity(text.len());
                    for c in text.chars() {
                        match char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                    out
                }
            };
        }
        if a & attr::BYTE != 0 {
            // `<0xNN>`
            if let Some(b) = text
                .strip_prefix("<0x")
                .and_then(|t| t.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                return vec![b];
            }
        }
        // Unused and undefined tokens decode to nothing.
        Vec::new()
    }

    /// Cut special tokens out of `text`, longest token first, like llama.cpp's
    /// `tokenizer_st_partition`. Control and unknown tokens are only matched when
    /// `parse_special`; user-defined tokens always are.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut frags = vec![Fragment::Text(text)];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.specials {
            if !parse_special && self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.vocab.texts[id as usize].as_str();
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(mut t) => {
                        while let Some(at) = t.find(needle) {
                            if at > 0 {
                                next.push(Fragment::Text(&t[..at]));
                            }
                            next.push(Fragment::Token(id));
                            t = &t[at + needle.len()..];
                        }
                        if !t.is_empty() {
                            next.push(Fragment::Text(t));
                        }
                    }
                    token => next.push(token),
                }
            }
            frags = next;
        }
        frags
    }

    /// Token ids of `text`.
    ///
    /// `add_special`: add BOS/EOS as the metadata says (llama.cpp's `add_special`).
    /// `parse_special`: recognise control-token texts such as `<|im_start|>` in `text`;
    /// without it they are tokenized as plain text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let frags = self.partition(text, parse_special);
        match &self.model {
            Model::Bpe {
                pre,
                bpe,
                ignore_merges,
            } => {
                let alphabet = crate::unicode::byte_to_char();
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => {
                            for word in pre.split(t) {
                                if *ignore_merges {
                                    let spelled: String =
                                        word.bytes().map(|b| alphabet[b as usize]).collect();
                                    if let Some(id) = self.vocab.id(&spelled) {
                                        out.push(id);
                                        continue;
                                    }
                                }
                                bpe.encode_word(word.as_bytes(), &mut out);
                            }
                        }
                    }
                }
            }
            Model::Spm => {
                // A text fragment at the start or after a special token gets a space prefix.
                let mut prev_special = true;
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 1);
                            if self.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            spm::encode(&self.vocab, &s.replace(' ', "▁"), &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// The bytes token `id` decodes to, or nothing when `skip_special` hides it or the id is
    /// outside the vocabulary.
    pub(crate) fn piece(&self, id: u32, skip_special: bool) -> &[u8] {
        if skip_special && self.vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 {
            return &[];
        }
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Whether `ids` starts with a BOS that [`decode`](Self::decode) drops.
    pub(crate) fn drops_bos(&self, first: u32, skip_special: bool) -> bool {
        skip_special && self.add_bos && Some(first) == self.bos
    }

    /// Whether decoding strips the leading space of the first piece (SentencePiece's
    /// prefix space).
    pub(crate) fn strips_prefix_space(&self) -> bool {
        self.add_space_prefix
    }

    /// Text of `ids`; invalid UTF-8 becomes U+FFFD. With `skip_special`, control and unknown
    /// tokens are left out (llama.cpp's `remove_special`/`unparse_special`).
    ///
    /// Like llama.cpp's `llama_detokenize` this drops a leading BOS / trailing EOS the
    /// tokenizer would add, and strips the prefix space of a SentencePiece first token. It does
    /// not apply `clean_up_tokenization_spaces`: the text is exactly the tokens' bytes, so a
    /// [`StreamDecoder`](crate::StreamDecoder) gives the same text piece by piece. Ids outside
    /// the vocabulary decode to nothing.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut ids = ids;
        let mut strip = self.add_space_prefix;
        if let Some(&first) = ids.first() {
            if self.drops_bos(first, skip_special) {
                ids = &ids[1..];
                strip = false;
            }
        }
        if let Some(&last) = ids.last() {
            if skip_special && self.add_eos && Some(last) == self.eos {
                ids = &ids[..ids.len() - 1];
            }
        }
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.piece(id, skip_special);
            let piece = if i == 0 && strip {
                piece.strip_prefix(b" ").unwrap_or(piece)
            } else {
                piece
            };
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes token `id` decodes to, special tokens shown; empty for an unknown id.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.piece(id, false)
    }

    /// The raw vocabulary string of token `id` (e.g. `Ġthe`, `▁the`, `<0x0A>`); empty for an
    /// unknown id.
    pub fn token_text(&self, id: u32) -> &str {
        self.vocab.texts.get(id as usize).map_or("", String::as_str)
    }

    /// The id of the token whose vocabulary string is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (from the metadata, or found by name like `<|im_end|>`).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `id` ends generation: EOS, EOT and the tokens llama.cpp treats as
    /// end-of-generation by name (`<|im_end|>`, `<|endoftext|>`, FIM padding/repo/file tokens, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` is a control token (hidden by `skip_special`).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }

    /// Whether [`encode`](Self::encode) with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`encode`](Self::encode) with `add_special` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
}
