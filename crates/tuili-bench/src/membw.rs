//! Sustained memory read bandwidth, measured the way a decode step reads its weights:
//! every thread of the pool streams its own contiguous share of one buffer far larger
//! than the caches, and the pass ends when the slowest thread is done.

use std::time::Instant;

use tuili_backend::pool::{SyncPtr, ThreadPool};

/// Buffer size of `tuili bench --membw`: far above any last-level cache (working sets of
/// 64 MiB or less read measurably faster on the EPYC the issue was measured on).
pub const DEFAULT_BYTES: usize = 1 << 30;

/// Timed passes over the buffer, after one untimed pass.
pub const DEFAULT_PASSES: usize = 8;

/// Read bandwidth measured with one thread count.
#[derive(Debug, Clone)]
pub struct Bandwidth {
    /// Threads that read the buffer together.
    pub threads: usize,
    /// Bytes read per pass.
    pub bytes: usize,
    /// Bytes per second of each timed pass.
    pub samples: Vec<f64>,
}

impl Bandwidth {
    /// Mean bytes per second over the passes.
    pub fn mean(&self) -> f64 {
        mean(&self.samples)
    }

    /// Sample standard deviation of bytes per second (0 for one pass).
    pub fn stddev(&self) -> f64 {
        stddev(&self.samples)
    }
}

/// Mean of `v` (0 when empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Sample standard deviation of `v` (n - 1 in the denominator, as llama-bench), 0 for
/// fewer than two values.
pub fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    let ss: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

/// Reads a buffer of `bytes` (rounded down to whole `u64`s, at least one per thread)
/// `passes` times with every thread of `pool` and returns the bandwidth of each pass.
pub fn measure(pool: &ThreadPool, bytes: usize, passes: usize) -> Bandwidth {
    let n_threads = pool.n_threads();
    let n_words = (bytes / 8).max(n_threads);
    // Zeroed memory comes as untouched pages; the threads that will read it write it
    // first (first touch places pages near them), and non-zero so no page stays the
    // shared zero page.
    let mut buf = vec![0u64; n_words];
    let p = SyncPtr::new(&mut buf);
    pool.for_ranges(n_words, 1, &|r| {
        // SAFETY: `for_ranges` hands out disjoint ranges within `buf`.
        let s = unsafe { p.slice(r.clone()) };
        for (v, i) in s.iter_mut().zip(r) {
            *v = i as u64 | 1;
        }
    });
    let read_bytes = n_words * 8;
    let mut samples = Vec::with_capacity(passes);
    // One untimed pass, so the timed ones start from a steady state.
    for pass in 0..=passes {
        let t0 = Instant::now();
        let total = sum_parallel(pool, &buf);
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(total);
        if pass > 0 {
            samples.push(read_bytes as f64 / secs.max(1e-9));
        }
    }
    Bandwidth {
        threads: n_threads,
        bytes: read_bytes,
        samples,
    }
}

/// Wrapping sum of `buf`, each thread summing one contiguous range.
fn sum_parallel(pool: &ThreadPool, buf: &[u64]) -> u64 {
    let partial: Vec<std::sync::atomic::AtomicU64> = (0..pool.n_threads())
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    pool.run(&|t, n| {
        let r = tuili_backend::pool::split(buf.len(), 8, t, n);
        partial[t].store(sum(&buf[r]), std::sync::atomic::Ordering::Relaxed);
    });
    partial
        .iter()
        .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
        .fold(0u64, u64::wrapping_add)
}

/// Wrapping sum of `s`, with the widest vector loads this CPU has.
fn sum(s: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { sum_avx2(s) };
    }
    sum_lanes(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(s: &[u64]) -> u64 {
    sum_lanes(s)
}

/// Sixteen independent running sums, 128 bytes per step: integer adds may be reordered,
/// so this compiles to several wide loads in flight rather than one add chain, and the
/// memory system, not the core, sets the pace.
#[inline(always)]
fn sum_lanes(s: &[u64]) -> u64 {
    const LANES: usize = 16;
    let mut acc = [0u64; LANES];
    let chunks = s.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    let t = tail.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    acc.iter().fold(t, |a, &b| a.wrapping_add(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_sum_matches_serial_at_every_length() {
        let buf: Vec<u64> = (0..100u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for n in 0..buf.len() {
            let serial = buf[..n].iter().fold(0u64, |a, &b| a.wrapping_add(b));
            assert_eq!(sum(&buf[..n]), serial, "length {n}");
            assert_eq!(sum_lanes(&buf[..n]), serial, "length {n}");
        }
    }

    #[test]
    fn parallel_sum_matches_serial() {
        let pool = ThreadPool::new(3);
        let buf: Vec<u64> = (0..10_007u64).map(|i| i.wrapping_mul(0x9E37)).collect();
        let serial = buf.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        assert_eq!(sum_parallel(&pool, &buf), serial);
    }

    #[test]
    fn measure_reports_each_pass() {
        let pool = ThreadPool::new(2);
        let bw = measure(&pool, 4 << 20, 3);
        assert_eq!(bw.threads, 2);
        assert_eq!(bw.bytes, 4 << 20);
        assert_eq!(bw.samples.len(), 3);
        // Any machine reads 4 MiB faster than 10 MB/s and slower than 100 TB/s.
        assert!(bw.samples.iter().all(|&s| s > 1e7 && s < 1e14), "{bw:?}");
    }

    #[test]
    fn stats_match_llama_bench() {
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(stddev(&[5.0]), 0.0);
        assert!((mean(&[1.0, 2.0, 3.0, 4.0]) - 2.5).abs() < 1e-12);
        // Sample standard deviation of 1..4 is sqrt(5/3).
        assert!((stddev(&[1.0, 2.0, 3.0, 4.0]) - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
