//! SIMD kernels behind `matmul` and the attention dot products, picked once per
//! process by CPU feature detection ([`select`]).
//!
//! # Integer activations, exact block sums
//!
//! A quantized matmul first quantizes each token's activations per 32-element block to
//! int16 with an f32 scale (`d = max|x| / 32767`, relative error ~1e-5: invisible in
//! perplexity, where llama.cpp's 8-bit activations cost ~0.5%). Every weight format is
//! decoded to small integer *codes* (Q4_0: `q - 8`; Q6_K: `(q - 32) * scale`; ...) so
//! that a weight block times an activation block is an exact integer (`vpmaddwd`), kept
//! as 8 partial sums ("lanes"). Then one float step per block:
//!
//! ```text
//! acc[k] = fma(ws[j] * d_x[j], float(isum_j[k]), acc[k])      k = 0..8
//! ```
//!
//! where `ws[j]` is the weight's float scale of block `j` and lane `k` of block `j` holds
//! the products of elements `{2k, 2k+1, 16+2k, 17+2k}`. Blocks come in groups of 8 (256
//! elements, one K-quant super-block); formats with a minimum (Q4_1, Q5_1, Q2_K, Q4_K,
//! Q5_K) end each group with `acc = fma(minv, s_x, acc)`, lane `j` pairing the weight's
//! (negated) block minimum with the block's activation sum. The output is
//! `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
//!
//! Because the integer part is exact and the float part runs in this fixed order for
//! every output, results do not depend on how many tokens are in the batch, on the tile
//! a kernel works on, nor on the instruction set: the AVX2, NEON and scalar kernels give
//! bit-identical outputs, and tests check exactly that.
//!
//! # Interleaved rows: one block sum per output
//!
//! Every table has interleaved products (`interleave::interleavable`): the weights of
//! every integer format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q2_K to Q6_K)
//! are repacked once, at load, in groups of 16 rows (`interleave`), and follow the
//! *block-sum specification* instead (`blocksum`): each output has one float
//! accumulator and each block's integer sum stays whole,
//!
//! ```text
//! acc = fma(ws[j] * d_x[j], float(isum_j), acc)     isum_j = Σ_i c[32j+i] q_x[32j+i]
//! acc = fma(minv[j], s_x[j], acc)                   (Q4_1, Q5_1, Q4_K, Q5_K)
//! ```
//!
//! blocks in order; the output is `acc`. The K-quants' float scales are the products
//! `ws = d · sc` and `minv = -(dmin · m)` of the super-block's f16 and the sub-block's
//! integers, exact in f32. The K-quants of 16-element sub-blocks (Q6_K, Q3_K, Q2_K)
//! take one scale per half of a block, with one integer sum and one fused step per
//! half (and Q2_K its half's minimum times the half's `s16_x`), so that Q6_K's sums
//! stay within 32 bits without the scale folded into the codes. A 512-bit register
//! then holds one lane per row: `vpdpwssd` adds an element pair of 16 rows, and one
//! float step serves 16 outputs per block instead of the 8 lanes of one (AVX2: 8 rows
//! per register, NEON: 4). Batch invariance holds as before (the integer part is exact,
//! the float part one fixed sequence per output), and every table, [`scalar`] included,
//! gives the same bits. `matmul` runs only these products for integer weights; the
//! lane-specification products stay as tested twins until they are removed.
//!
//! Float weights (F32, F16, BF16) keep f32 activations: `acc[i % 8] = fma(w[i], x[i],
//! acc[i % 8])` in element order, then the same reduction. The one exception: where the
//! CPU has AVX-512 BF16, the `avx512_bf16` table runs BF16 weights under the bf16-pair
//! specification ([`bf16dot`]: activations rounded to bf16, `vdpbf16ps`'s pairs).
//!
//! # Shape of the code
//!
//! A matmul decodes a panel of weight rows to codes (`Panel`) and multiplies it by
//! tiles of tokens. [`scalar`] is the specification (plain Rust, written for clarity);
//! `avx2` and `neon` are its fast twins, and `avx512` replaces the AVX2 many-token
//! product where AVX-512 VNNI is present (two tokens per 512-bit register). The scalar
//! fallback calls `f32::mul_add`, which is a library call on x86-64 CPUs without FMA
//! (correct, slow; such CPUs predate 2013).

// Kernels index several parallel arrays (rows, tokens, lanes) with one counter.
#![allow(clippy::needless_range_loop)]

/// Defines `scores_by_dot` (attention scores of the query heads that share one K/V head,
/// over rows stored as any `KvType`) from the module's dot (`#[inline(always)]` or
/// `#[inline]`, so it inlines), and `mix_by_axpy` from its axpy: each row is decoded by
/// the module's `decode_kv` (f32 rows that are aligned are read in place), then results
/// are those of its `dot`/`axpy` on the decoded row, bit for bit.
macro_rules! grouped_attention_ops {
    ($dot:ident, $axpy:ident) => {
        /// `out[h, p] = dot(q[h], row p)`, row `p` = the `hd` values of `ty` from element
        /// `rows[p]` of `base`; `q`: `[g, hd]`, `out`: `[g, rows.len()]`.
        pub(super) unsafe fn scores_by_dot(
            ty: $crate::kv::KvType,
            q: &[f32],
            base: &[u8],
            rows: &[usize],
            out: &mut [f32],
        ) {
            // SAFETY: `Kernels::scores_kv`/`mix_kv` checked that every row lies within
            // `base` and the shapes agree, and the table (whose `dot`/`axpy`/`decode_kv`
            // these are) runs on this CPU
            unsafe {
                let np = rows.len();
                let hd = q.len() / (out.len() / np.max(1)).max(1);
                let mut buf = vec![0f32; hd];
                for (p, &r) in rows.iter().enumerate() {
                    let k = $crate::kernels::row_f32(ty, base, r, &mut buf, decode_kv);
                    for (h, qh) in q.chunks_exact(hd).enumerate() {
                        out[h * np + p] = $dot(qh, k);
                    }
                }
            }
        }

        /// `out[h] = Σ_p coef[h, p] · row p`, as one axpy per position in order from
        /// zeros; `coef`: `[g, rows.len()]`, `out`: `[g, hd]`.
        pub(super) unsafe fn mix_by_axpy(
            ty: $crate::kv::KvType,
            coef: &[f32],
            base: &[u8],
            rows: &[usize],
            out: &mut [f32],
        ) {
            // SAFETY: `Kernels::scores_kv`/`mix_kv` checked that every row lies within
            // `base` and the shapes agree, and the table (whose `dot`/`axpy`/`decode_kv`
            // these are) runs on this CPU
            unsafe {
                let np = rows.len();
                let hd = out.len() / (coef.len() / np.max(1)).max(1);
                let mut buf = vec![0f32; hd];
                out.fill(0.0);
                for (p, &r) in rows.iter().enumerate() {
                    let v = $crate::kernels::row_f32(ty, base, r, &mut buf, decode_kv);
                    for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
                        $axpy(coef[h * np + p], v, oh);
                    }
                }
            }
        }
    };
}

mod acts;
mod bf16dot;
mod blocksum;
mod buffers;
mod format;
mod interleave;
mod scalar;
mod table;
pub mod tune;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use crate::kv::KvType;
pub(crate) use acts::{OctetView, PackView};

pub use acts::QuantActs;
pub(crate) use buffers::{AlignedBuf, Out, Panel};
pub(crate) use format::{FFormat, MinKind, QFormat};
pub(crate) use interleave::{interleavable, pack, pack_releasing, Packed, IROWS};
pub use table::{available, scalar, scalar_twin, select, Kernels};

/// From this many tokens on (batched decode, prefill), activations are quantized by all
/// the threads, each taking whole token pairs (quantized, then packed).
const PARALLEL_QUANTIZE_MIN: usize = 2;

/// From this many tokens on, tables with a token-octet layout (`QuantActs::q8`) build it
/// and their interleaved products may run tiles of 8 tokens.
const OCTETS_FROM: usize = 8;

/// Elements per activation block (one f32 scale each).
pub const QB: usize = 32;
/// Activation blocks per group: 256 elements, one K-quant super-block.
pub const GROUP: usize = 8;

/// The final reduction of the 8 lanes, shared by every instruction set:
/// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
#[inline(always)]
pub(crate) fn reduce8(a: &[f32; 8]) -> f32 {
    let s4 = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// The `buf.len()` values of `ty` from element `r` of `base`: in place when they are f32
/// and aligned, else decoded into `buf` by `decode`.
#[inline(always)]
pub(crate) fn row_f32<'a>(
    ty: KvType,
    base: &'a [u8],
    r: usize,
    buf: &'a mut [f32],
    decode: unsafe fn(KvType, &[u8], &mut [f32]),
) -> &'a [f32] {
    let bytes = &base[ty.bytes(r)..ty.bytes(r + buf.len())];
    if ty == KvType::F32 {
        // SAFETY: every 4 bytes are a valid f32; `align_to` only takes aligned ones.
        let (pre, mid, _) = unsafe { bytes.align_to::<f32>() };
        if pre.is_empty() && mid.len() == buf.len() {
            return mid;
        }
    }
    // SAFETY: the table that passes `decode` runs only where its instructions do.
    unsafe { decode(ty, bytes, buf) };
    buf
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_interleaved;
