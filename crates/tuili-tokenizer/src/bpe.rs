//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): words from the pre-tokenizer are spelled
//! in GPT-2's byte alphabet and merged pair by pair, lowest merge rank first, leftmost first
//! among equal ranks (llama.cpp's `llm_tokenizer_bpe_session`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::unicode::byte_to_char;

/// The merge table over interned symbol strings.
#[derive(Debug)]
pub(crate) struct Bpe {
    /// `(left symbol, right symbol) -> (rank, merged symbol)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Vocabulary id of each interned symbol, if the symbol is a token.
    sym_token: Vec<Option<u32>>,
    /// Interned symbol of each byte's GPT-2 character.
    byte_sym: [u32; 256],
    /// Token of each byte's GPT-2 character (the fallback for unmergeable symbols).
    byte_token: [Option<u32>; 256],
}

/// Interns strings to dense ids while the merge table is built.
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(s.to_string(), id);
        id
    }
}

impl Bpe {
    /// Build from `"left right"` merge lines (rank = line index) and the token lookup.
    pub(crate) fn new(merges: &[String], token_to_id: &HashMap<String, u32>) -> Bpe {
        let mut interner = Interner {
            ids: HashMap::with_capacity(merges.len() * 2),
        };
        let mut byte_sym = [0u32; 256];
        let mut byte_token = [None; 256];
        for (b, &c) in byte_to_char().iter().enumerate() {
            let s = c.to_string();
            byte_sym[b] = interner.intern(&s);
            byte_token[b] = token_to_id.get(&s).copied();
        }
        let mut table = HashMap::with_capacity(merges.len());
        for (rank, line) in merges.iter().enumerate() {
            // Like llama.cpp, split at the first space after the first byte; a line without
            // one cannot match any pair and is ignored.
            let split = line.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1);
            let Some(split) = split else {
                continue;
            };
            let (left, right) = (&line[..split], &line[split + 1..]);
            let l = interner.intern(left);
            let r = interner.intern(right);
            let merged = interner.intern(&format!("{left}{right}"));
            // The first (lowest) rank of a duplicated pair wins, as with llama.cpp's emplace.
            table.entry((l, r)).or_insert((rank as u32, merged));
        }
        let mut sym_token = vec![None; interner.ids.len()];
        for (text, &sym) in &interner.ids {
            sym_token[sym as usize] = token_to_id.get(text).copied();
        }
        Bpe {
            merges: table,
            sym_token,
            byte_sym,
            byte_token,
        }
    }

    /// Append the tokens of one pre-tokenized word (raw bytes) to `out`.
    pub(crate) fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        // Symbols form a linked list over the word; `len == 0` marks one merged away.
        struct Sym {
            start: usize,
            len: usize,
            sym: u32,
            prev: usize,
            next: usize,
        }
        const NONE: usize = usize::MAX;
        let n = word.len();
        let mut syms: Vec<Sym> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                start: i,
                len: 1,
                sym: self.byte_sym[b as usize],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            })
            .collect();

        // Candidate merges: (rank, left index, right index, left symbol, right symbol).
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
            if l == NONE || r == NONE {
                return;
            }
            if let Some(&(rank, _)) = self.merges.get(&(syms[l].sym, syms[r].sym)) {
                heap.push(Reverse((rank, l, r, syms[l].sym, syms[r].sym)));
            }
        };
        for i in 1..n {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, l_sym, r_sym))) = heap.pop() {
            // Skip candidates made stale by an earlier merge of either side.
            if syms[l].len == 0
                || syms[r].len == 0
                || syms[l].sym != l_sym
                || syms[r].sym != r_sym
                || syms[l].next != r
            {
                continue;
            }
            let Some(&(_, merged)) = self.merges.get(&(l_sym, r_sym)) else {
                continue;
            };
            syms[l].len += syms[r].len;
            syms[l].sym = merged;
            syms[r].len = 0;
            let after = syms[r].next;
            syms[l].next = after;
            if after != NONE {
                syms[after].prev = l;
            }
            let before = syms[l].prev;
            push(&mut heap, &syms, before, l);
            push(&mut heap, &syms, l, after);
        }

        let mut i = if n == 0 { NONE } else { 0 };
        while i != NONE {
            let s = &syms[i];
            match self.sym_token.get(s.sym as usize).copied().flatten() {
                Some(id) => out.push(id),
                // A merge result missing from the vocabulary: fall back to its bytes,
                // dropping bytes that have no token either (llama.cpp does the same).
                None => out.extend(
                    word[s.start..s.start + s.len]
                        .iter()
                        .filter_map(|&b| self.byte_token[b as usize]),
                ),
            }
            i = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> HashMap<String, u32> {
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect()
    }

    #[test]
    fn merges_lowest_rank_first() {
        // "abab": ranks prefer "a b" then "ab ab".
        let v = vocab(&["a", "b", "ab", "abab", "ba"]);
        let merges: Vec<String> = ["a b", "ab ab", "b a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bpe = Bpe::new(&merges, &v);
        let mut out = Vec::new();
        bpe.encode_word(b"abab", &mut out);
        assert_eq!(out, [3]);
        out.clear();
        bpe.encode_word(b"aba", &mut out);
        assert_eq!(out, [2, 0]);
    }

    #[test]
    fn leftmost_pair_wins_a_tie() {
        let v = vocab(&["a", "aa"]);
        let merges = vec!["a a".to_string()];
        let bpe = Bpe::new(&merges, &v);
        let mut out = Vec::new();
        bpe.encode_word(b"aaa", &mut out);
        assert_eq!(out, [1, 0]);
    }

    #[test]
    fn unknown_merge_result_falls_back_to_bytes() {
        // "xy" is merged but is not a token: emit "x" and "y".
        let v = vocab(&["x", "y"]);
        let merges = vec!["x y".to_string()];
        let bpe = Bpe::new(&merges, &v);
        let mut out = Vec::new();
        bpe.encode_word(b"xy", &mut out);
        assert_eq!(out, [0, 1]);
    }

    #[test]
    fn bytes_use_the_gpt2_alphabet() {
        let v = vocab(&["Ġ", "a", "Ġa"]);
        let merges = vec!["Ġ a".to_string()];
        let bpe = Bpe::new(&merges, &v);
        let mut out = Vec::new();
        bpe.encode_word(b" a", &mut out);
        assert_eq!(out, [2]);
    }
}
