//! Incremental detokenization that never splits a UTF-8 character.

use crate::Tokenizer;

/// Streaming detokenizer: push token ids, get text as soon as it is complete UTF-8.
///
/// Bytes of a character split across tokens (an emoji spelled as byte tokens, say) wait until
/// the character is whole. The concatenation of everything [`push`](Self::push) and
/// [`finish`](Self::finish) return equals [`Tokenizer::decode`] of all the ids, as long as the
/// tokenizer does not add EOS itself (then `decode` also drops a trailing EOS).
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    /// Bytes of a character still incomplete.
    pending: Vec<u8>,
    /// No token pushed yet.
    first: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that hides special tokens, like `decode(ids, true)`.
    pub fn new(tok: &'a Tokenizer) -> Self {
        Self::with_special(tok, true)
    }

    /// A decoder with the given `skip_special`, like `decode(ids, skip_special)`.
    pub fn with_special(tok: &'a Tokenizer, skip_special: bool) -> Self {
        StreamDecoder {
            tok,
            skip_special,
            pending: Vec::new(),
            first: true,
        }
    }

    /// Add one token; returns the text it completes (often empty mid-character).
    pub fn push(&mut self, id: u32) -> String {
        let mut piece = self.tok.piece(id, self.skip_special);
        if self.first {
            self.first = false;
            if self.tok.drops_bos(id, self.skip_special) {
                return String::new();
            }
            if self.tok.strips_prefix_space() {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
            }
        }
        self.pending.extend_from_slice(piece);
        self.drain()
    }

    /// Text of whatever is left; an incomplete character becomes U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }

    /// Emit all complete text; keep a trailing incomplete character.
    fn drain(&mut self) -> String {
        let mut out = String::new();
        let mut used = 0;
        for chunk in self.pending.utf8_chunks() {
            out.push_str(chunk.valid());
            let bad = chunk.invalid();
            let end = used + chunk.valid().len() + bad.len();
            // An invalid run at the very end may just be a character cut short.
            if !bad.is_empty()
                && end == self.pending.len()
                && std::str::from_utf8(bad).is_err_and(|e| e.error_len().is_none())
            {
                used += chunk.valid().len();
                break;
            }
            if !bad.is_empty() {
                out.push(char::REPLACEMENT_CHARACTER);
            }
            used = end;
        }
        self.pending.drain(..used);
        out
    }
}
