//! A ragged batch laid out token by token, checked once for every device.

use crate::ModelError;

/// One sequence's part of a batch: `tokens` at positions `start..`, its K/V behind
/// `blocks` (and `local_blocks` for the local layers of a split pool), logits wanted for
/// `tokens[logits_from..]` (`tokens.len()` for none).
pub struct SeqChunk<'a> {
    /// New tokens of the sequence.
    pub tokens: &'a [u32],
    /// Positions already in the cache before these tokens.
    pub start: usize,
    /// Block table covering at least `start + tokens.len()` positions.
    pub blocks: &'a [u32],
    /// Block table of the local (sliding-window) layers of a split pool (ignored, and
    /// may be empty, otherwise): as long as `blocks` needs to be, but only the entries
    /// of positions `start + 1 - window ..` (the window of the first token onward) are
    /// read; earlier ones may be [`crate::FREED_BLOCK`].
    pub local_blocks: &'a [u32],
    /// First token whose logits are returned.
    pub logits_from: usize,
}

/// The tokens of a batch in order, chunk after chunk.
#[derive(Default)]
pub struct Batch<'a> {
    /// The chunks, as given.
    pub chunks: &'a [SeqChunk<'a>],
    /// Token ids: `[n]`.
    pub tokens: Vec<u32>,
    /// Per token: (chunk index, absolute position): `[n]`.
    pub place: Vec<(usize, usize)>,
    /// The tokens whose logits are wanted, in order: `[m]`.
    pub logit_rows: Vec<usize>,
    /// The longest sequence after this step, in positions.
    pub max_len: usize,
}

impl<'a> Batch<'a> {
    /// Lays out `chunks`, checking every token id against `vocab` and every block table
    /// against a pool of `n_blocks` blocks of `block_size` positions, and, when `local`
    /// is `(n_local_blocks, window)` (a split pool), every local table against its region.
    pub fn new(
        chunks: &'a [SeqChunk<'a>],
        vocab: usize,
        n_blocks: usize,
        block_size: usize,
        local: Option<(usize, usize)>,
    ) -> Result<Batch<'a>, ModelError> {
        let mut b = Batch {
            chunks,
            ..Batch::default()
        };
        for (ci, c) in chunks.iter().enumerate() {
            let end = c.start + c.tokens.len();
            check_table(c.blocks, 0, end, n_blocks, block_size)?;
            if let Some((n_local, window)) = local {
                let from = (c.start + 1).saturating_sub(window);
                check_table(c.local_blocks, from, end, n_local, block_size)?;
            }
            if let Some(&id) = c.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::TokenOutOfRange { id, vocab });
            }
            b.max_len = b.max_len.max(end);
            for (i, &t) in c.tokens.iter().enumerate() {
                if i >= c.logits_from {
                    b.logit_rows.push(b.tokens.len());
                }
                b.place.push((ci, c.start + i));
                b.tokens.push(t);
            }
        }
        Ok(b)
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the batch has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Checks that `blocks` covers `n_pos` positions, those from `from` on with block ids
/// inside a pool of `n_blocks` blocks of `block_size` positions.
pub fn check_table(
    blocks: &[u32],
    from: usize,
    n_pos: usize,
    n_blocks: usize,
    block_size: usize,
) -> Result<(), ModelError> {
    let need = n_pos.div_ceil(block_size);
    if blocks.len() < need {
        return Err(ModelError::BlockTable(format!(
            "{n_pos} positions need {need} blocks of {block_size}, the table has {}",
            blocks.len()
        )));
    }
    let first = (from / block_size).min(need);
    if let Some(&b) = blocks[first..need]
        .iter()
        .find(|&&b| b as usize >= n_blocks)
    {
        return Err(ModelError::BlockTable(format!(
            "block {b} is outside the pool of {n_blocks} blocks"
        )));
    }
    Ok(())
}
