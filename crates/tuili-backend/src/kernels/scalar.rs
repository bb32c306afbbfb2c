//! The specification: plain Rust, one output at a time, in exactly the floating-point
//! order the SIMD twins follow (see the module docs of `kernels`). Also the fallback
//! on CPUs without a SIMD table.
//!
//! Every function here is `unsafe` only to share the function-pointer types of the
//! SIMD tables; none has a safety requirement of its own beyond the shapes their safe
//! callers in `kernels` check.

use crate::kv::KvType;

use super::{reduce8, FFormat, MinKind, Out, Packed, Panel, QFormat, QuantActs, GROUP, QB};
use crate::quant::mxfp4::{e8m0_half, KVALUES};
use crate::quant::{bf16_to_f32, f16_to_f32};

/// Largest |q| of a quantized activation.
pub(crate) const QMAX: f32 = 32767.0;
/// Blocks whose largest magnitude is below this quantize to zero (their inverse scale
/// would overflow f32).
pub(crate) const TINY: f32 = 1e-30;

// ---- activations --------------------------------------------------------------------

/// Quantizes one token: `x`: `[cols]`; `q`: `[cols]`; `d`, `s`: `[nbp]`; `s16`: `[2 nbp]`.
pub(super) unsafe fn quantize_row(
    x: &[f32],
    q: &mut [i16],
    d: &mut [f32],
    s: &mut [f32],
    s16: &mut [f32],
) {
    let nb = x.len() / QB;
    d[nb..].fill(0.0);
    s[nb..].fill(0.0);
    s16[2 * nb..].fill(0.0);
    for (b, xb) in x.chunks_exact(QB).enumerate() {
        let qb = &mut q[b * QB..(b + 1) * QB];
        let db = quantize_block(xb, qb);
        let sa: i32 = qb[..16].iter().map(|&v| v as i32).sum();
        let sb: i32 = qb[16..].iter().map(|&v| v as i32).sum();
        d[b] = db;
        s[b] = db * (sa + sb) as f32;
        s16[2 * b] = db * sa as f32;
        s16[2 * b + 1] = db * sb as f32;
    }
}

/// One block: returns its scale and writes `q = round_ties_even(x * 32767 / amax)`.
/// A block with a non-finite value gets scale NaN (so the outputs it touches are NaN)
/// and zero codes.
fn quantize_block(x: &[f32], q: &mut [i16]) -> f32 {
    if !x.iter().all(|v| v.is_finite()) {
        q.fill(0);
        return f32::NAN;
    }
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax < TINY {
        q.fill(0);
        return 0.0;
    }
    let id = QMAX / amax;
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = (v * id).round_ties_even().clamp(-QMAX, QMAX) as i16;
    }
    amax / QMAX
}

// ---- weight decoding ----------------------------------------------------------------

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Scale and min of sub-block `j` of a Q4_K/Q5_K block (6 bits each, packed in 12
/// bytes), as ggml's `get_scale_min_k4`.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Signed 6-bit scale of 16-element sub-block `j` of a Q3_K block.
pub(crate) fn scale_q3_k(j: usize, sc: &[u8]) -> i16 {
    let low = if j < 8 { sc[j] & 0x0f } else { sc[j - 8] >> 4 };
    let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i16 - 32
}

/// Decodes `panel.nr` rows (`w`: `[nr, row_bytes]`) of `fmt`.
pub(super) unsafe fn decode(fmt: QFormat, w: &[u8], row_bytes: usize, p: &mut Panel) {
    let (cols, ng) = (p.cols, p.ng);
    let npg = fmt.min_kind().per_group();
    let nb = cols / QB;
    let gbytes = fmt.group_bytes();
    for r in 0..p.nr {
        let row = &w[r * row_bytes..(r + 1) * row_bytes];
        for g in 0..ng {
            let nbj = (nb - GROUP * g).min(GROUP);
            let src = &row[g * gbytes..(g * gbytes + gbytes).min(row.len())];
            let codes = &mut p.codes[r * cols + 256 * g..r * cols + 256 * g + QB * nbj];
            let ws = &mut p.ws[(r * ng + g) * GROUP..(r * ng + g + 1) * GROUP];
            let minv = &mut p.minv[(r * ng + g) * npg..(r * ng + g + 1) * npg];
            ws.fill(0.0);
            minv.fill(0.0);
            decode_group(fmt, src, nbj, codes, ws, minv);
        }
    }
}

/// One group: `nbj` blocks (8 unless it is the tail of a 32-element format).
/// `codes`: `[32 nbj]`; `ws`: `[8]`; `minv`: `[per_group]`.
fn decode_group(
    fmt: QFormat,
    b: &[u8],
    nbj: usize,
    codes: &mut [i16],
    ws: &mut [f32],
    minv: &mut [f32],
) {
    let ts = fmt.ty().type_size();
    match fmt {
        QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Q5_0 | QFormat::Q5_1 | QFormat::Q8_0 => {
            for j in 0..nbj {
                let blk = &b[j * ts..(j + 1) * ts];
                let c = &mut codes[QB * j..QB * (j + 1)];
                ws[j] = f16_at(blk, 0);
                match fmt {
                    QFormat::Q4_0 => legacy_codes(c, &blk[2..], 0, -8),
                    QFormat::Q4_1 => {
                        minv[j] = f16_at(blk, 2);
                        legacy_codes(c, &blk[4..], 0, 0);
                    }
                    QFormat::Q5_0 => {
                        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                        legacy_codes(c, &blk[6..], qh, -16);
                    }
                    QFormat::Q5_1 => {
                        minv[j] = f16_at(blk, 2);
                        let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
                        legacy_codes(c, &blk[8..], qh, 0);
                    }
                    _ => {
                        for (ci, &q) in c.iter_mut().zip(&blk[2..]) {
                            *ci = q as i8 as i16;
                        }
                    }
                }
            }
        }
        QFormat::Q4K | QFormat::Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let qs = if fmt == QFormat::Q4K {
                &b[16..144]
            } else {
                &b[48..176]
            };
            for j in 0..GROUP {
                let (sc, m) = scale_min_k4(j, &b[4..16]);
                ws[j] = d * sc as f32;
                minv[j] = -(dmin * m as f32);
                for l in 0..QB {
                    let v = qs[32 * (j / 2) + l];
                    let mut q = if j % 2 == 0 { v & 0x0f } else { v >> 4 };
                    if fmt == QFormat::Q5K {
                        q |= ((b[16 + l] >> j) & 1) << 4;
                    }
                    codes[QB * j + l] = q as i16;
                }
            }
        }
        QFormat::Q6K => {
            let d = f16_at(b, 208);
            for j in 0..GROUP {
                let (h, p) = (j / 4, j % 4);
                ws[j] = d;
                for l in 0..QB {
                    let ql = b[64 * h + 32 * (p & 1) + l];
                    let nib = if p < 2 { ql & 0x0f } else { ql >> 4 };
                    let hb = (b[128 + 32 * h + l] >> (2 * p)) & 3;
                    let sc = b[192 + 2 * j + l / 16] as i8 as i16;
                    codes[QB * j + l] = ((nib | (hb << 4)) as i16 - 32) * sc;
                }
            }
        }
        QFormat::Q3K => {
            let d = f16_at(b, 108);
            for j in 0..GROUP {
                let (h, p) = (j / 4, j % 4);
                ws[j] = d;
                for l in 0..QB {
                    let low = ((b[32 + 32 * h + l] >> (2 * p)) & 3) as i16;
                    let off = if b[l] & (1 << (4 * h + p)) != 0 { 0 } else { 4 };
                    codes[QB * j + l] = (low - off) * scale_q3_k(2 * j + l / 16, &b[96..108]);
                }
            }
        }
        QFormat::Mxfp4 => {
            for j in 0..nbj {
                let blk = &b[17 * j..17 * (j + 1)];
                ws[j] = e8m0_half(blk[0]);
                for l in 0..QB {
                    let nib = if l < 16 {
                        blk[1 + l] & 0x0f
                    } else {
                        blk[1 + l - 16] >> 4
                    };
                    codes[QB * j + l] = KVALUES[nib as usize] as i16;
                }
            }
        }
        QFormat::Q2K => {
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            for (g16, m) in minv.iter_mut().enumerate() {
                *m = -(dmin * (b[g16] >> 4) as f32);
            }
            for j in 0..GROUP {
                let (h, p) = (j / 4, j % 4);
                ws[j] = d;
                for l in 0..QB {
                    let q = ((b[16 + 32 * h + l] >> (2 * p)) & 3) as i16;
                    codes[QB * j + l] = q * (b[2 * j + l / 16] & 0x0f) as i16;
                }
            }
        }
    }
}

/// Codes of a 4/5-bit legacy block: element `i` is the low nibble of `qs[i]` (i < 16)
/// or the high nibble of `qs[i - 16]`, plus bit `i` of `qh` as its 5th bit, plus `offset`.
fn legacy_codes(c: &mut [i16], qs: &[u8], qh: u32, offset: i16) {
    for i in 0..QB {
        let nib = if i < 16 {
            qs[i] & 0x0f
        } else {
            qs[i - 16] >> 4
        };
        let hb = ((qh >> i) & 1) as u8;
        c[i] = (nib | (hb << 4)) as i16 + offset;
    }
}

// ---- products -----------------------------------------------------------------------

/// `out[(t - t0) * ldo + r] = row r · token t` for every row of the panel.
pub(super) unsafe fn gemm(p: &Panel, a: &QuantActs, t0: usize, nt: usize, out: Out) {
    // SAFETY: the caller upholds the table's contract: `out` is valid for the writes of
    // these rows and tokens and no one else writes them meanwhile
    unsafe {
        for t in t0..t0 + nt {
            for r in 0..p.nr {
                *out.ptr.add((t - t0) * out.ldo + r) = dot_row(p, r, a, t);
            }
        }
    }
}

/// One output: row `r` of the panel times token `t`.
fn dot_row(p: &Panel, r: usize, a: &QuantActs, t: usize) -> f32 {
    let (cols, ng, nbp) = (p.cols, p.ng, a.nbp());
    let nb = cols / QB;
    let mk = p.min_kind();
    let npg = mk.per_group();
    let codes = &p.codes[r * cols..(r + 1) * cols];
    let ws = &p.ws[r * ng * GROUP..(r + 1) * ng * GROUP];
    let minv = &p.minv[r * ng * npg..(r + 1) * ng * npg];
    let xq = a.q(t);
    let xd = &a.d[t * nbp..(t + 1) * nbp];
    let xs = &a.s[t * nbp..(t + 1) * nbp];
    let xs16 = &a.s16[t * 2 * nbp..(t + 1) * 2 * nbp];
    let mut acc = [0f32; 8];
    for g in 0..ng {
        let nbj = (nb - GROUP * g).min(GROUP);
        for j in 0..nbj {
            let b = GROUP * g + j;
            let pj = ws[b] * xd[b];
            let c = &codes[QB * b..QB * (b + 1)];
            let x = &xq[QB * b..QB * (b + 1)];
            for (k, acc_k) in acc.iter_mut().enumerate() {
                let isum = [2 * k, 2 * k + 1, 16 + 2 * k, 17 + 2 * k]
                    .iter()
                    .fold(0i32, |s, &i| s.wrapping_add(c[i] as i32 * x[i] as i32));
                *acc_k = pj.mul_add(isum as f32, *acc_k);
            }
        }
        match mk {
            MinKind::None => {}
            MinKind::Per32 => {
                for k in 0..GROUP {
                    acc[k] = minv[GROUP * g + k].mul_add(xs[GROUP * g + k], acc[k]);
                }
            }
            MinKind::Per16 => {
                for half in 0..2 {
                    for k in 0..GROUP {
                        let i = 2 * GROUP * g + GROUP * half + k;
                        acc[k] = minv[i].mul_add(xs16[i], acc[k]);
                    }
                }
            }
        }
    }
    reduce8(&acc)
}

/// `Kernels::interleaved`: the block-sum specification read from the interleaved layout.
pub(super) unsafe fn interleaved(
    p: &Packed,
    rows: std::ops::Range<usize>,
    a: &QuantActs,
    nt: usize,
    out: Out,
    _half_tiles: bool,
) {
    // SAFETY: the caller upholds the table's contract: `out` is valid for the writes of
    // these rows and tokens and no one else writes them meanwhile
    unsafe {
        for r in rows.clone() {
            for t in 0..nt {
                *out.ptr.add(t * out.ldo + r - rows.start) =
                    super::blocksum::blocksum(|b| p.block(r, b), a, t);
            }
        }
    }
}

/// Element `i` of a float row.
#[inline(always)]
pub(crate) fn float_at(f: FFormat, w: &[u8], i: usize) -> f32 {
    match f {
        FFormat::F32 => f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]),
        FFormat::F16 => f16_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])),
        FFormat::BF16 => bf16_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])),
    }
}

/// Float weights: `acc[i % 8] = fma(w[i], x[i], acc[i % 8])` in element order.
pub(super) unsafe fn float_gemm(
    f: FFormat,
    w: &[u8],
    nr: usize,
    cols: usize,
    x: &[f32],
    nt: usize,
    out: Out,
) {
    // SAFETY: the caller upholds the table's contract: `out` is valid for the writes of
    // these rows and tokens and no one else writes them meanwhile
    unsafe {
        let rb = w.len() / nr.max(1);
        for t in 0..nt {
            let xt = &x[t * cols..(t + 1) * cols];
            for r in 0..nr {
                let row = &w[r * rb..(r + 1) * rb];
                let mut acc = [0f32; 8];
                for (i, &xi) in xt.iter().enumerate() {
                    acc[i % 8] = float_at(f, row, i).mul_add(xi, acc[i % 8]);
                }
                *out.ptr.add(t * out.ldo + r) = reduce8(&acc);
            }
        }
    }
}

/// Element `i` goes to accumulator `(i / 8) % 4`, lane `i % 8`; the four are added
/// `(a0 + a1) + (a2 + a3)` lane by lane, then reduced.
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0f32; 8]; 4];
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let lane = &mut acc[(i / 8) % 4][i % 8];
        *lane = x.mul_add(y, *lane);
    }
    let sum: [f32; 8] = std::array::from_fn(|k| (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]));
    reduce8(&sum)
}

grouped_attention_ops!(dot, axpy);

/// [`KvType::decode`]: the specification of every table's decoding of stored K/V rows.
pub(super) unsafe fn decode_kv(ty: KvType, b: &[u8], out: &mut [f32]) {
    ty.decode(b, out)
}

/// `y[i] = fma(a, x[i], y[i])`.
pub(super) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (v, &u) in y.iter_mut().zip(x) {
        *v = a.mul_add(u, *v);
    }
}

/// `ops::softmax_scaled`.
pub(super) unsafe fn softmax(x: &mut [f32], scale: f32) {
    crate::ops::softmax_scaled(x, scale)
}

/// `ops::Glu::apply_plain`.
pub(super) unsafe fn glu(act: crate::ops::Glu, gate: &mut [f32], up: &[f32]) {
    act.apply_plain(gate, up)
}
