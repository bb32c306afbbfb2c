//! ggml's reference quantizers for the K-quants (`quantize_row_q*_K_ref` in
//! ggml-quants.c), followed operation for operation so that the bytes match: the same
//! searches for sub-block scales (`make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants`), the same f32 expressions in the same order, and the same
//! round-half-to-even `nearest_int`.
//!
//! Inputs are finite (the public `quantize` checks); nothing here indexes by a
//! computed value, so even odd inputs cannot panic.

use super::kquants::{scale_min_k4, scale_q3_k};
use super::{quantize_blocks, read_f16, write_f16};
use tuili_gguf::QK_K;

/// Below this, a group counts as all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, as ggml's `nearest_int` (exact for |v| < 2^22).
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits(); // 1.5 * 2^23 puts the integer in the mantissa
    (bits & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `make_qx_quants` with `rmse_type == 1` and no importance weights: symmetric quants
/// in `-nmax..nmax` (stored with offset `nmax`), scale searched to minimize the error
/// weighted by x². Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], out: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        out.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (o, &v) in out.iter_mut().zip(x) {
        let l = quant(iscale, v);
        *o = (l + nmax) as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (nmax + quant(iscale, v)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants` with `do_rmse`: symmetric 3-bit quants (offset `nmax`), refined by
/// moving one quant at a time while the x²-weighted fit improves. Returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], out: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (o, &v) in out.iter_mut().zip(x) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *o = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (o, &v) in out.iter_mut().zip(x) {
            let w = v * v;
            let cur = *o as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *o as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *o = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for o in out.iter_mut() {
        *o += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The search settings of `make_qkx2_quants`.
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
}

/// `make_qkx2_quants`: asymmetric quants `0..=nmax` with a scale and a min (≤ 0),
/// fitted by weighted least squares over `nstep + 1` trial scales. Returns
/// `(scale, -min)`.
fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], out: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        out.fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax;
    let error = |scale: f32, min: f32, l: u8, v: f32| {
        let diff = scale * l as f32 + min - v;
        if p.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        out[i] = l.clamp(0, nmax) as u8;
        best_error += weights[i] * error(scale, min, out[i], x[i]);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    // Trial quants, at most 32 per group (the K-quants use 16 or 32).
    let mut aux = [0u8; 32];
    let aux = &mut aux[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let w = weights[i];
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                cur_error += weights[i] * error(this_scale, this_min, aux[i], x[i]);
            }
            if cur_error < best_error {
                out.copy_from_slice(aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Pack 2-bit quants: byte l of each 32-byte run holds elements l, l+32, l+64, l+96 of
/// its 128 (Q2_K and Q3_K).
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for (half, q) in qs.chunks_exact_mut(32).take(2).enumerate() {
        let l = &l[128 * half..128 * half + 128];
        for (k, b) in q.iter_mut().enumerate() {
            *b = l[k] | (l[k + 32] << 2) | (l[k + 64] << 4) | (l[k + 96] << 6);
        }
    }
}

// ---- Q2_K -------------------------------------------------------------------------

/// `quantize_row_q2_K_ref` for one super-block (16 sub-blocks of 16).
fn encode_q2_k(x: &[f32; QK_K], y: &mut [u8; 84]) {
    const Q4SCALE: f32 = 15.0;
    let p = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let mut weights = [0.0f32; 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(&p, xs, &weights, &mut l[16 * j..16 * j + 16]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let (sc, rest) = y.split_at_mut(16);
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v) as u8;
        }
        write_f16(rest, 64, max_scale / Q4SCALE);
    } else {
        sc.fill(0);
        write_f16(rest, 64, 0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &v) in sc.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * v) << 4) as u8;
        }
        write_f16(rest, 66, max_min / Q4SCALE);
    } else {
        write_f16(rest, 66, 0.0);
    }
    // Requantize against the scales as stored.
    let d_all = read_f16(rest, 64);
    let dmin_all = read_f16(rest, 66);
    for j in 0..16 {
        let d = d_all * (sc[j] & 0x0f) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d);
            l[16 * j + ii] = q.clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, &mut rest[..64]);
}

pub(super) fn quantize_q2_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q2_k)
}

// ---- Q3_K -------------------------------------------------------------------------

/// `quantize_row_q3_K_ref` for one super-block (16 sub-blocks of 16).
fn encode_q3_k(x: &[f32; QK_K], y: &mut [u8; 110]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    let (hmask, rest) = y.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, d_bytes) = rest.split_at_mut(12);
    sc.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            // ggml stores nearest_int into an int8_t before clamping.
            let q = (nearest_int(iscale * s) as i8).clamp(-32, 31) + 32;
            let q = q as u8;
            if j < 8 {
                sc[j] = q & 0x0f;
            } else {
                sc[j - 8] |= (q & 0x0f) << 4;
            }
            sc[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
        }
        write_f16(d_bytes, 0, 1.0 / iscale);
    } else {
        write_f16(d_bytes, 0, 0.0);
    }
    let d_all = read_f16(d_bytes, 0);
    for j in 0..16 {
        let d = d_all * scale_q3_k(j, sc) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    // The third bit of element j goes to bit j / 32 of hmask[j % 32].
    hmask.fill(0);
    let mut low = [0u8; QK_K];
    for (j, (&q, lo)) in l.iter().zip(low.iter_mut()).enumerate() {
        let mut q = q as u8;
        if q > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            q -= 4;
        }
        *lo = q;
    }
    pack_2bit(&low, qs);
}

pub(super) fn quantize_q3_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q3_k)
}

// ---- Q4_K and Q5_K ----------------------------------------------------------------

/// The shared front half of `quantize_row_q4_K_ref` and `quantize_row_q5_K_ref`:
/// fit each sub-block of 32, pack the 6-bit scales and mins and the f16 `d`, `dmin`
/// into `head` (16 bytes), then requantize against the stored scales into `l`.
fn encode_k4_head(x: &[f32; QK_K], p: &Qkx2, head: &mut [u8], l: &mut [u8; QK_K]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut weights = [0.0f32; 32];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(p, xs, &weights, &mut l[32 * j..32 * j + 32]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut head[4..16];
    sc.fill(0);
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t, then caps it at 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    write_f16(head, 0, max_scale / 63.0);
    write_f16(head, 2, max_min / 63.0);
    let d_all = read_f16(head, 0);
    let dmin_all = read_f16(head, 2);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &head[4..16]);
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = q.clamp(0, p.nmax) as u8;
        }
    }
}

/// `quantize_row_q4_K_ref` for one super-block (8 sub-blocks of 32).
fn encode_q4_k(x: &[f32; QK_K], y: &mut [u8; 144]) {
    let p = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let (head, qs) = y.split_at_mut(16);
    encode_k4_head(x, &p, head, &mut l);
    for (i, q) in qs.chunks_exact_mut(32).enumerate() {
        for (k, b) in q.iter_mut().enumerate() {
            *b = l[64 * i + k] | (l[64 * i + k + 32] << 4);
        }
    }
}

pub(super) fn quantize_q4_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q4_k)
}

/// `quantize_row_q5_K_ref` for one super-block (8 sub-blocks of 32).
fn encode_q5_k(x: &[f32; QK_K], y: &mut [u8; 176]) {
    let p = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let (head, rest) = y.split_at_mut(16);
    encode_k4_head(x, &p, head, &mut l);
    let (qh, ql) = rest.split_at_mut(32);
    qh.fill(0);
    for (i, q) in ql.chunks_exact_mut(32).enumerate() {
        let (m1, m2) = (1u8 << (2 * i), 2u8 << (2 * i));
        for (k, b) in q.iter_mut().enumerate() {
            let mut l1 = l[64 * i + k];
            if l1 > 15 {
                l1 -= 16;
                qh[k] |= m1;
            }
            let mut l2 = l[64 * i + k + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[k] |= m2;
            }
            *b = l1 | (l2 << 4);
        }
    }
}

pub(super) fn quantize_q5_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q5_k)
}

// ---- Q6_K -------------------------------------------------------------------------

/// `quantize_row_q6_K_ref` for one super-block (16 sub-blocks of 16, i8 scales).
fn encode_q6_k(x: &[f32; QK_K], y: &mut [u8; 210]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    y.fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return; // all zeros, d = 0
    }
    let (ql, rest) = y.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (sc, d_bytes) = rest.split_at_mut(16);
    let iscale = -128.0 / max_scale;
    write_f16(d_bytes, 0, 1.0 / iscale);
    for (s, &v) in sc.iter_mut().zip(&scales) {
        // The i32 from MIN(127, ...) is stored into an int8_t.
        *s = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    let d_all = read_f16(d_bytes, 0);
    for j in 0..16 {
        let d = d_all * (sc[j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    for half in 0..2 {
        let l = &l[128 * half..128 * half + 128];
        let ql = &mut ql[64 * half..64 * half + 64];
        let qh = &mut qh[32 * half..32 * half + 32];
        for k in 0..32 {
            let q = |o: usize| l[k + o] as u8;
            ql[k] = (q(0) & 0x0f) | ((q(64) & 0x0f) << 4);
            ql[k + 32] = (q(32) & 0x0f) | ((q(96) & 0x0f) << 4);
            qh[k] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
}

pub(super) fn quantize_q6_k(src: &[f32], dst: &mut [u8]) {
    quantize_blocks(src, dst, encode_q6_k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
        ];
        for (v, want) in cases {
            assert_eq!(nearest_int(v), want, "{v}");
        }
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }
}
