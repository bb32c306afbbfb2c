//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`): start from single characters and
//! repeatedly merge the adjacent pair whose concatenation is the vocabulary token with the
//! highest score (llama.cpp's `llm_tokenizer_spm_session`). Characters that end up without a
//! token fall back to `<0xNN>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::vocab::Vocab;

/// One merge candidate; the heap pops the highest score, then the leftmost pair.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Byte length of the merged text, to spot candidates made stale by other merges.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Append the tokens of `text` (spaces already escaped to `▁`) to `out`.
pub(crate) fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    // Symbols: byte ranges of `text` in a linked list; `len == 0` marks one merged away.
    struct Sym {
        start: usize,
        len: usize,
        prev: usize,
        next: usize,
    }
    const NONE: usize = usize::MAX;
    let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let n = starts.len();
    let mut syms: Vec<Sym> = starts
        .iter()
        .enumerate()
        .map(|(i, &start)| Sym {
            start,
            len: starts.get(i + 1).copied().unwrap_or(text.len()) - start,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
        })
        .collect();

    let mut heap = BinaryHeap::new();
    let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: usize, r: usize| {
        if l == NONE || r == NONE {
            return;
        }
        let merged = &text[syms[l].start..syms[r].start + syms[r].len];
        if let Some(id) = vocab.id(merged) {
            heap.push(Bigram {
                left: l,
                right: r,
                score: vocab.score(id),
                size: merged.len(),
            });
        }
    };
    for i in 1..n {
        try_add(&mut heap, &syms, i - 1, i);
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (b.left, b.right);
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
            continue;
        }
        syms[l].len += syms[r].len;
        syms[r].len = 0;
        let after = syms[r].next;
        syms[l].next = after;
        if after != NONE {
            syms[after].prev = l;
        }
        let before = syms[l].prev;
        try_add(&mut heap, &syms, before, l);
        try_add(&mut heap, &syms, l, after);
    }

    let mut i = if n == 0 { NONE } else { 0 };
    while i != NONE {
        let s = &syms[i];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| vocab.byte_token(b))),
        }
        i = s.next;
    }
}
