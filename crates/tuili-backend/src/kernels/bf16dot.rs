//! The bf16-pair specification of BF16 weights' products, for CPUs with AVX-512 BF16
//! (`vdpbf16ps`): twice the multiply-adds per instruction of the f32-activation path,
//! at the price of rounding the activations to bf16 (as llama.cpp does for BF16
//! weights on every CPU).
//!
//! For a row `w` (`cols` bf16 values) and a token `x` (`cols` f32 values), both padded
//! with zeros to whole chunks of 32 elements:
//!
//! ```text
//! xb[e]   = round_bf16(x[e])                             RNE; denormals to ±0; NaN quiet
//! acc[i]  = fma'(w[32c + 2i + 1], xb[32c + 2i + 1], acc[i])      i = 0..16, chunks c
//! acc[i]  = fma'(w[32c + 2i],     xb[32c + 2i],     acc[i])      in order, from zeros
//! h[i]    = acc[i] + acc[i + 8]                                  i = 0..8
//! out     = ((h0 + h4) + (h2 + h6)) + ((h1 + h5) + (h3 + h7))
//! ```
//!
//! where `fma'` is a fused multiply-add that reads denormal inputs as zero and flushes a
//! denormal result to zero (of its sign): what `vdpbf16ps` does, the odd element of each
//! pair first. [`gemm`] is the specification in plain Rust; a table runs it only after
//! [`matches`] found its kernel bit-identical to it on this CPU (values that round,
//! overflow, underflow and are not numbers), so a CPU whose instruction computed
//! anything else would keep the f32-activation path. Results do not depend on the
//! batch, the tile or the thread count, as for every other product.

use super::{reduce8, AlignedBuf, Out};
use crate::quant::{bf16_to_f32, f32_to_bf16};

/// Elements per chunk: one 512-bit register of bf16.
pub(crate) const CHUNK: usize = 32;

/// `x` rounded to bf16 as `vcvtne2ps2bf16` does: to nearest even, a denormal to zero of
/// its sign, a NaN to a quiet NaN with its sign and high payload bits.
pub(crate) fn round_bf16(x: f32) -> u16 {
    f32_to_bf16(flush(x))
}

/// `v`, or zero of its sign where it is denormal.
#[inline(always)]
fn flush(v: f32) -> f32 {
    if v.is_subnormal() {
        0f32.copysign(v)
    } else {
        v
    }
}

/// `vdpbf16ps`'s fused multiply-add: denormal inputs read as zero, a denormal result
/// flushed to zero.
#[inline(always)]
fn fma_flushed(a: f32, b: f32, c: f32) -> f32 {
    flush(flush(a).mul_add(flush(b), flush(c)))
}

/// Activations prepared for the bf16-pair products of one matmul (`Kernels::prepare_bf16`):
/// every thread's rows read them.
#[derive(Debug, Default, Clone)]
pub struct Bf16Acts {
    pub(super) cols: usize,
    pub(super) n: usize,
    /// `[n, chunks, 32]`: the tokens rounded to bf16 ([`round_bf16`]), zero-padded.
    pub(super) xb: AlignedBuf<i16>,
    /// `[n, chunks, 2, 16]`: the same widened to f32, each chunk's odd elements then its
    /// even ones, where the table's kernel reads them (`widened`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) xf: AlignedBuf<f32>,
    pub(super) widened: bool,
}

impl Bf16Acts {
    /// Sizes `xb` for `n` tokens of `cols`; `xf` is left as it is, not `widened`.
    pub(super) fn reset(&mut self, cols: usize, n: usize) {
        self.cols = cols;
        self.n = n;
        self.xb.resize(n * cols.div_ceil(CHUNK) * CHUNK, 0);
        self.widened = false;
    }
}

/// The specification's preparation: `x` (`[n, cols]`) rounded to bf16 into `acts.xb`.
///
/// # Safety
/// None beyond the types (plain Rust, as the table's function type asks).
pub(super) unsafe fn prepare(x: &[f32], cols: usize, acts: &mut Bf16Acts) {
    let n = x.len() / cols.max(1);
    acts.reset(cols, n);
    let nc = cols.div_ceil(CHUNK);
    for (t, xt) in x.chunks_exact(cols).enumerate() {
        let dst = &mut acts.xb[t * nc * CHUNK..(t + 1) * nc * CHUNK];
        // The padding too: `xb` is reused from call to call (`reset` keeps old values).
        let padded = xt.iter().copied().chain(std::iter::repeat(0.0));
        for (d, v) in dst.iter_mut().zip(padded) {
            *d = round_bf16(v) as i16;
        }
    }
}

/// `out[t * ldo + r] = w[r] · x[t]` under the bf16-pair specification, for bf16 weights
/// `w: [nr, cols]` and the tokens `acts` holds.
///
/// # Safety
/// `out` is valid for the writes of these rows and tokens and no one else writes them
/// meanwhile.
pub(super) unsafe fn gemm(w: &[u8], nr: usize, acts: &Bf16Acts, out: Out) {
    // SAFETY: this fn's contract.
    unsafe { pairs_gemm::<true>(w, nr, acts, out) }
}

/// [`gemm`], with each pair's odd element first (`ODD_FIRST`, the specification) or
/// its even one.
///
/// # Safety
/// As [`gemm`].
unsafe fn pairs_gemm<const ODD_FIRST: bool>(w: &[u8], nr: usize, acts: &Bf16Acts, out: Out) {
    let (cols, nt) = (acts.cols, acts.n);
    let nc = cols.div_ceil(CHUNK);
    let at = |row: &[u8], e: usize| {
        if e < cols {
            bf16_to_f32(u16::from_le_bytes([row[2 * e], row[2 * e + 1]]))
        } else {
            0.0
        }
    };
    for t in 0..nt {
        let xb = &acts.xb[t * nc * CHUNK..(t + 1) * nc * CHUNK];
        let x = |e: usize| bf16_to_f32(xb[e] as u16);
        for r in 0..nr {
            let row = &w[r * 2 * cols..(r + 1) * 2 * cols];
            let mut acc = [0f32; 16];
            for c in 0..nc {
                for (i, a) in acc.iter_mut().enumerate() {
                    let e = CHUNK * c + 2 * i;
                    let (first, second) = if ODD_FIRST { (e + 1, e) } else { (e, e + 1) };
                    *a = fma_flushed(at(row, first), x(first), *a);
                    *a = fma_flushed(at(row, second), x(second), *a);
                }
            }
            let h: [f32; 8] = std::array::from_fn(|i| acc[i] + acc[i + 8]);
            // SAFETY: the caller's contract covers this row and token.
            unsafe { *out.ptr.add(t * out.ldo + r) = reduce8(&h) };
        }
    }
}

/// A table's bf16-pair products: `prepare` once per matmul, then `gemm` per rows.
#[derive(Clone, Copy)]
pub(super) struct Bf16Kernels {
    pub(super) prepare: unsafe fn(x: &[f32], cols: usize, acts: &mut Bf16Acts),
    pub(super) gemm: unsafe fn(w: &[u8], nr: usize, acts: &Bf16Acts, out: Out),
}

/// The specification's own.
pub(super) const SPECIFICATION: Bf16Kernels = Bf16Kernels { prepare, gemm };

/// Whether `kernel` gives the specification's bits (any NaN for a NaN) on this CPU, over values
/// that round to even, overflow, underflow to denormals and are not numbers, ragged
/// rows and 1 to 13 tokens: the check a table passes before it runs `kernel`.
///
/// # Safety
/// `kernel`'s instructions run on this CPU.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) unsafe fn matches(kernel: Bf16Kernels) -> bool {
    // xorshift: no dependency, the same values every run.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    // Long rows too: the sums of few products of 8-bit values are often exact, and
    // then no order of them can be told from another.
    for (kind, cols) in [
        (0, 45),
        (0, 600),
        (1, 96),
        (2, 33),
        (3, 64),
        (4, 300),
        (5, 64),
    ] {
        let mut value = |kind: u64| {
            let r = next();
            match kind {
                // Moderate values: the sums round.
                0 => ((r % 20001) as f32 - 10000.0) / 997.0,
                // Any exponent: products overflow and underflow.
                1 => f32::from_bits(r as u32 & 0x807f_ffff | (((r >> 32) % 254 + 1) as u32) << 23),
                // Any bits: infinities and NaNs too.
                2 => f32::from_bits(r as u32),
                // The smallest exponents: denormal inputs and results.
                3 => f32::from_bits(r as u32 & 0x80ff_ffff | (((r >> 40) % 6) as u32) << 23),
                // From 2^-56 up: products down to 2^-112, sums that cancel to 2^-126.
                4 => f32::from_bits(r as u32 & 0x807f_ffff | (((r >> 40) % 7 + 71) as u32) << 23),
                // Just under that: products that underflow, and are flushed.
                _ => f32::from_bits(r as u32 & 0x807f_ffff | (((r >> 40) % 30 + 41) as u32) << 23),
            }
        };
        // Batches from 8 tokens on may take another path (`avx512::bf16`).
        let (nr, nt) = (5, 13);
        let w: Vec<u8> = (0..nr * cols)
            .flat_map(|_| round_bf16(value(kind)).to_le_bytes())
            .collect();
        let x: Vec<f32> = (0..nt * cols).map(|_| value(kind)).collect();
        for n in 1..=nt {
            let mut outs = [vec![0f32; n * nr], vec![0f32; n * nr]];
            for (k, o) in [SPECIFICATION, kernel].into_iter().zip(&mut outs) {
                let mut acts = Bf16Acts::default();
                let out = Out {
                    ptr: o.as_mut_ptr(),
                    ldo: nr,
                };
                // SAFETY: `o` holds `n` rows of `nr` outputs; the caller vouches for
                // `kernel`'s instructions.
                unsafe {
                    (k.prepare)(&x[..n * cols], cols, &mut acts);
                    (k.gemm)(&w, nr, &acts, out);
                }
            }
            let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
            if !outs[0].iter().zip(&outs[1]).all(|(a, b)| same(a, b)) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bf16_is_to_nearest_even_with_denormals_flushed() {
        let r = |bits: u32| round_bf16(f32::from_bits(bits));
        assert_eq!(r(0x3f80_0000), 0x3f80, "1.0 is exact");
        assert_eq!(r(0x3f80_7fff), 0x3f80, "below the half rounds down");
        assert_eq!(r(0x3f80_8000), 0x3f80, "a tie rounds to the even 0x3f80");
        assert_eq!(r(0x3f81_8000), 0x3f82, "a tie rounds to the even 0x3f82");
        assert_eq!(r(0x3f80_8001), 0x3f81, "above the half rounds up");
        assert_eq!(r(0x7f7f_ffff), 0x7f80, "the largest f32 rounds to infinity");
        assert_eq!(r(0xff80_0000), 0xff80, "-inf stays");
        assert_eq!(
            r(0x8000_0001),
            0x8000,
            "a denormal goes to zero of its sign"
        );
        assert_eq!(r(0x0040_0000), 0x0000, "a large denormal too");
        assert_eq!(r(0x0080_0000), 0x0080, "the smallest normal stays");
        assert_eq!(r(0x7f80_0001), 0x7fc0, "a signalling NaN turns quiet");
        assert_eq!(
            r(0xffc1_2345),
            0xffc1,
            "a quiet NaN keeps sign and high payload"
        );
    }

    /// The specification is a dot product: on values that bf16 holds exactly, it is
    /// within f32 rounding of the exact sum (f64), and each output is its own row and
    /// token's.
    #[test]
    fn the_specification_is_the_dot_product_of_the_rounded_values() {
        let (nr, nt) = (3, 2);
        for cols in [1, 31, 32, 33, 100] {
            let wf: Vec<f32> = (0..nr * cols)
                .map(|i| bf16_to_f32(round_bf16(((i * 7919) % 201) as f32 / 50.0 - 2.0)))
                .collect();
            let w: Vec<u8> = wf
                .iter()
                .flat_map(|&v| round_bf16(v).to_le_bytes())
                .collect();
            let x: Vec<f32> = (0..nt * cols)
                .map(|i| ((i * 104_729) % 157) as f32 / 40.0 - 1.9)
                .collect();
            let mut o = vec![0f32; nt * nr];
            let out = Out {
                ptr: o.as_mut_ptr(),
                ldo: nr,
            };
            let mut acts = Bf16Acts::default();
            // SAFETY: `o` holds every output.
            unsafe {
                prepare(&x, cols, &mut acts);
                gemm(&w, nr, &acts, out);
            }
            for t in 0..nt {
                for r in 0..nr {
                    let exact: f64 = (0..cols)
                        .map(|e| {
                            let xb = bf16_to_f32(round_bf16(x[t * cols + e])) as f64;
                            wf[r * cols + e] as f64 * xb
                        })
                        .sum();
                    let got = o[t * nr + r] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                        "cols {cols} row {r} token {t}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    /// The check a table passes accepts the specification itself and refuses a kernel
    /// that takes each pair's elements in the other order.
    #[test]
    fn the_self_check_tells_the_specification_from_another_order() {
        // SAFETY: both are plain Rust.
        unsafe {
            assert!(matches(SPECIFICATION));
            assert!(!matches(Bf16Kernels {
                prepare,
                gemm: pairs_gemm::<false>,
            }));
        }
    }
}
