//! Prefix affinity: the first blocks of a prompt are hashed, and rendezvous (highest random
//! weight) hashing picks a replica for that hash. A conversation that grows keeps its first
//! blocks, so it keeps its replica and that replica's prefix cache; a replica that leaves
//! moves only the conversations it held.

/// FNV-1a, 64 bits: stable across builds and platforms, unlike `DefaultHasher`.
pub fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of the first `blocks` whole blocks of `block_chars` bytes of `prompt`; `None`
/// when the prompt is shorter than one block or affinity is off (`blocks == 0`).
pub fn prefix_key(prompt: &str, block_chars: usize, blocks: usize) -> Option<u64> {
    let whole = (prompt.len() / block_chars.max(1)).min(blocks);
    if whole == 0 {
        return None;
    }
    Some(fnv1a(&prompt.as_bytes()[..whole * block_chars], 0))
}

/// Mixes two hashes (splitmix64's finalizer over their xor).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The index in `names` with the highest weight for `key` (rendezvous hashing).
pub fn rendezvous<S: AsRef<str>>(key: u64, names: &[S]) -> Option<usize> {
    (0..names.len()).max_by_key(|&i| mix(key, fnv1a(names[i].as_ref().as_bytes(), 0x5151)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_covers_whole_blocks_only() {
        assert_eq!(prefix_key("short", 8, 4), None);
        assert_eq!(
            prefix_key("abcdefgh-tail", 8, 4),
            prefix_key("abcdefgh-other", 8, 4)
        );
        assert_ne!(prefix_key("abcdefgh", 8, 4), prefix_key("abcdefgX", 8, 4));
        // Past the hashed blocks, the conversation may grow without changing the key.
        let a = "x".repeat(32);
        assert_eq!(
            prefix_key(&a, 8, 4),
            prefix_key(&(a.clone() + "more turns"), 8, 4)
        );
        assert_eq!(prefix_key(&a, 8, 0), None);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_lost_replica_s_keys() {
        let three = ["edge-a", "edge-b", "edge-c"];
        let two = ["edge-a", "edge-c"];
        let mut counts = [0usize; 3];
        for k in 0..3000u64 {
            let key = fnv1a(&k.to_le_bytes(), 0);
            let i = rendezvous(key, &three).unwrap();
            counts[i] += 1;
            let j = rendezvous(key, &two).unwrap();
            if i != 1 {
                assert_eq!(two[j], three[i], "a key not on the removed replica moved");
            }
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread {counts:?}");
        }
        assert_eq!(rendezvous::<&str>(1, &[]), None);
    }
}
