//! SplitMix64, the one small seeded generator of the workspace: random weights of the
//! synthetic models, the sampler's draws, the benchmark's token ids and the seeded
//! streams of tests. Runs are reproducible across platforms and dependency versions.

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit counter stepped by a fixed odd
/// constant, each value scrambled by [`SplitMix64::mix`].
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The step of the counter: 2^64 divided by the golden ratio, made odd.
    pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        Self::mix(self.0)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `next_u64() % n`: an index or count below `n` (which must not be 0), with the
    /// modulo's small bias.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// The finalizer: a bijection of 64-bit values that spreads every input bit over
    /// the whole output (also a hash on its own).
    pub fn mix(z: u64) -> u64 {
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_stream() {
        // The first outputs for seed 1234567 of the reference C implementation
        // (Vigna's splitmix64.c).
        let mut r = SplitMix64::new(1_234_567);
        let want = [
            6_457_827_717_110_365_317,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = SplitMix64::new(1);
        assert!((0..10_000).all(|_| r.below(300) < 300));
        assert!((0..10_000).all(|_| (0.0..1.0).contains(&r.next_f64())));
    }
}
