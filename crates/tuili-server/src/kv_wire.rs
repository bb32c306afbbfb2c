//! The msgpack payload of vLLM's KV events (`vllm/distributed/kv_events.py`), byte for
//! byte as msgspec writes it: `KVEventBatch` is `[ts, [events], data_parallel_rank]` and
//! each event a tagged array-like struct, its class name first, then every field in
//! declaration order (msgspec's `omit_defaults` leaves arrays whole: unset fields are nil).
//!
//! - `BlockStored`: block_hashes, parent_block_hash, token_ids, block_size, lora_id,
//!   medium, lora_name, extra_keys, group_idx, kv_cache_spec_kind,
//!   kv_cache_spec_sliding_window.
//! - `BlockRemoved`: block_hashes, medium, group_idx.
//! - `AllBlocksCleared`: nothing.
//!
//! Hashes are vLLM's integer form (unsigned 64-bit); `medium` is `"GPU"`, the tier vLLM
//! names its own KV pool (consumers read `"CPU"` as an offload tier), whatever device
//! holds tuili's pool.

use tuili_engine::KvEvent;

/// The medium every event names: the engine's own KV pool.
const MEDIUM: &str = "GPU";

/// One batch as msgspec encodes vLLM's `KVEventBatch(ts, events, data_parallel_rank)`.
pub fn encode_batch(ts: f64, events: &[KvEvent], dp_rank: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 16 * events.len());
    array(&mut out, 3);
    out.push(0xcb);
    out.extend_from_slice(&ts.to_bits().to_be_bytes());
    array(&mut out, events.len());
    for e in events {
        match e {
            KvEvent::BlockStored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
            } => {
                array(&mut out, 12);
                str(&mut out, "BlockStored");
                uints(&mut out, block_hashes.iter().copied());
                match parent_block_hash {
                    Some(h) => uint(&mut out, *h),
                    None => nil(&mut out),
                }
                uints(&mut out, token_ids.iter().map(|&t| u64::from(t)));
                uint(&mut out, *block_size as u64);
                nil(&mut out); // lora_id
                str(&mut out, MEDIUM);
                for _ in 0..5 {
                    // lora_name, extra_keys, group_idx, kv_cache_spec_kind,
                    // kv_cache_spec_sliding_window
                    nil(&mut out);
                }
            }
            KvEvent::BlockRemoved { block_hashes } => {
                array(&mut out, 4);
                str(&mut out, "BlockRemoved");
                uints(&mut out, block_hashes.iter().copied());
                str(&mut out, MEDIUM);
                nil(&mut out); // group_idx
            }
            KvEvent::AllBlocksCleared => {
                array(&mut out, 1);
                str(&mut out, "AllBlocksCleared");
            }
        }
    }
    uint(&mut out, dp_rank);
    out
}

fn nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// The shortest msgpack form of an unsigned integer, as msgspec picks it.
fn uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= u64::from(u8::MAX) {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn uints(out: &mut Vec<u8>, vs: impl ExactSizeIterator<Item = u64>) {
    array(out, vs.len());
    for v in vs {
        uint(out, v);
    }
}

fn array(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Only the fixed tags and medium pass here, all shorter than 32 bytes (fixstr).
fn str(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() < 32);
    out.push(0xa0 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// What msgspec 0.23 encodes for vLLM's structs (array-like) holding the same events:
    /// `KVEventBatch(1.5, [BlockStored([2**63+5, 7], None, [1, 2, 300, 70000], 2, None,
    /// "GPU", None), BlockRemoved([9], "GPU"), AllBlocksCleared()], 0)`.
    #[test]
    fn bytes_are_msgspecs() {
        let events = [
            KvEvent::BlockStored {
                block_hashes: vec![(1 << 63) + 5, 7],
                parent_block_hash: None,
                token_ids: vec![1, 2, 300, 70000],
                block_size: 2,
            },
            KvEvent::BlockRemoved {
                block_hashes: vec![9],
            },
            KvEvent::AllBlocksCleared,
        ];
        assert_eq!(
            hex(&encode_batch(1.5, &events, 0)),
            "93cb3ff8000000000000939cab426c6f636b53746f72656492cf800000000000000507c0940102cd\
             012cce0001117002c0a3475055c0c0c0c0c094ac426c6f636b52656d6f7665649109a3475055c091\
             b0416c6c426c6f636b73436c656172656400"
        );
    }

    #[test]
    fn long_lists_use_array16() {
        let ev = [KvEvent::BlockRemoved {
            block_hashes: (0..20).collect(),
        }];
        let b = encode_batch(0.0, &ev, 0);
        // batch, ts, events list, event array, tag, then the 20 hashes as array16.
        let at = 1 + 9 + 1 + 1 + 13;
        assert_eq!(&b[at..at + 3], &[0xdc, 0, 20]);
    }
}
