//! The msgpack payload of vLLM's KV events (`vllm/distributed/kv_events.py`), byte for
//! byte as msgspec writes it. `KVEventBatch` is an array-like struct:
//! `[ts, [events], data_parallel_rank]`. Each event is a tagged struct, in one of two
//! layouts ([`KvWireLayout`]):
//!
//! - `Map` (vLLM now, and what `vllm-router` reads): a map whose first key is `type`, the
//!   class name, then the fields in declaration order; `omit_defaults` leaves out the
//!   optional fields that are unset (all of them here), the required ones are there even
//!   when nil.
//! - `Array` (vLLM's earlier `array_like` events, which older decoders read): the class
//!   name, then every field in declaration order, unset ones nil (msgspec never thins an
//!   array).
//!
//! Fields: `BlockStored` block_hashes, parent_block_hash, token_ids, block_size, lora_id,
//! medium, lora_name (required), then extra_keys, group_idx, kv_cache_spec_kind,
//! kv_cache_spec_sliding_window; `BlockRemoved` block_hashes, medium, then group_idx;
//! `AllBlocksCleared` none.
//!
//! Hashes are vLLM's integer form (unsigned 64-bit); `medium` is `"GPU"`, the tier vLLM
//! names its own KV pool (consumers read `"CPU"` as an offload tier), whatever device
//! holds tuili's pool.

use tuili_engine::KvEvent;

/// The medium every event names: the engine's own KV pool.
const MEDIUM: &str = "GPU";

/// How events are laid out in a batch (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvWireLayout {
    /// Tagged maps, as vLLM encodes its events now.
    #[default]
    Map,
    /// Tagged arrays, as vLLM encoded them before.
    Array,
}

impl std::str::FromStr for KvWireLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "map" => Ok(KvWireLayout::Map),
            "array" => Ok(KvWireLayout::Array),
            _ => Err(format!("unknown KV-event layout '{s}' (use map or array)")),
        }
    }
}

/// One event's fields, written as a tagged map or array.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    layout: KvWireLayout,
}

impl Writer<'_> {
    /// Starts an event of class `tag` with `present` fields written (map) out of
    /// `declared` (array).
    fn start(&mut self, tag: &str, present: usize, declared: usize) {
        match self.layout {
            KvWireLayout::Map => {
                map(self.out, present + 1);
                str(self.out, "type");
            }
            KvWireLayout::Array => array(self.out, declared + 1),
        }
        str(self.out, tag);
    }

    fn key(&mut self, name: &str) {
        if self.layout == KvWireLayout::Map {
            str(self.out, name);
        }
    }

    /// Optional fields left unset: absent from a map, nil in an array.
    fn unset(&mut self, n: usize) {
        if self.layout == KvWireLayout::Array {
            for _ in 0..n {
                nil(self.out);
            }
        }
    }
}

/// One batch as msgspec encodes vLLM's `KVEventBatch(ts, events, data_parallel_rank)`.
pub fn encode_batch(ts: f64, events: &[KvEvent], dp_rank: u64, layout: KvWireLayout) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 16 * events.len());
    array(&mut out, 3);
    out.push(0xcb);
    out.extend_from_slice(&ts.to_bits().to_be_bytes());
    array(&mut out, events.len());
    let mut w = Writer {
        out: &mut out,
        layout,
    };
    for e in events {
        match e {
            KvEvent::BlockStored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
            } => {
                w.start("BlockStored", 7, 11);
                w.key("block_hashes");
                uints(w.out, block_hashes.iter().copied());
                w.key("parent_block_hash");
                match parent_block_hash {
                    Some(h) => uint(w.out, *h),
                    None => nil(w.out),
                }
                w.key("token_ids");
                uints(w.out, token_ids.iter().map(|&t| u64::from(t)));
                w.key("block_size");
                uint(w.out, *block_size as u64);
                w.key("lora_id");
                nil(w.out);
                w.key("medium");
                str(w.out, MEDIUM);
                w.key("lora_name");
                nil(w.out);
                // extra_keys, group_idx, kv_cache_spec_kind, kv_cache_spec_sliding_window
                w.unset(4);
            }
            KvEvent::BlockRemoved { block_hashes } => {
                w.start("BlockRemoved", 2, 3);
                w.key("block_hashes");
                uints(w.out, block_hashes.iter().copied());
                w.key("medium");
                str(w.out, MEDIUM);
                w.unset(1); // group_idx
            }
            KvEvent::AllBlocksCleared => w.start("AllBlocksCleared", 0, 0),
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

fn map(out: &mut Vec<u8>, n: usize) {
    debug_assert!(n < 16);
    out.push(0x80 | n as u8);
}

/// Only the fixed tags, keys and medium pass here, all shorter than 32 bytes (fixstr).
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

    fn events() -> [KvEvent; 3] {
        [
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
        ]
    }

    /// What msgspec 0.23 encodes for vLLM's structs holding the same events:
    /// `KVEventBatch(1.5, [BlockStored([2**63+5, 7], None, [1, 2, 300, 70000], 2, None,
    /// "GPU", None), BlockRemoved([9], "GPU"), AllBlocksCleared()], 0)`, events as maps.
    #[test]
    fn map_bytes_are_msgspecs() {
        assert_eq!(
            hex(&encode_batch(1.5, &events(), 0, KvWireLayout::Map)),
            "93cb3ff80000000000009388a474797065ab426c6f636b53746f726564ac626c6f636b5f68617368\
             657392cf800000000000000507b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f69\
             6473940102cd012cce00011170aa626c6f636b5f73697a6502a76c6f72615f6964c0a66d65646975\
             6da3475055a96c6f72615f6e616d65c083a474797065ac426c6f636b52656d6f766564ac626c6f63\
             6b5f6861736865739109a66d656469756da347505581a474797065b0416c6c426c6f636b73436c65\
             6172656400"
        );
    }

    /// The same with vLLM's earlier array-like events.
    #[test]
    fn array_bytes_are_msgspecs() {
        assert_eq!(
            hex(&encode_batch(1.5, &events(), 0, KvWireLayout::Array)),
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
        let b = encode_batch(0.0, &ev, 0, KvWireLayout::Array);
        // batch, ts, events list, event array, tag, then the 20 hashes as array16.
        let at = 1 + 9 + 1 + 1 + 13;
        assert_eq!(&b[at..at + 3], &[0xdc, 0, 20]);
    }
}
