//! The kernel table (`Kernels`: one instruction set's functions behind safe, shape-checked
//! methods) and its selection, once per process, by CPU detection.

use std::sync::OnceLock;

use crate::kv::KvType;
use crate::pool::SyncPtr;

use super::bf16dot::Bf16Kernels;
#[cfg(target_arch = "aarch64")]
use super::neon;
use super::tune::Attention;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{
    FFormat, OctetView, Out, PackView, Packed, Panel, QFormat, QuantActs, IROWS, OCTETS_FROM,
    PARALLEL_QUANTIZE_MIN, QB,
};

// Function types of one instruction set. Every one is `unsafe`: it may use
// instructions the CPU must have (guaranteed by the table being built only after
// detection) and trusts the shapes its safe caller checked.
type QuantizeFn =
    unsafe fn(x: &[f32], q: &mut [i16], d: &mut [f32], s: &mut [f32], s16: &mut [f32]);
type PackFn = unsafe fn(v: &PackView, pairs: std::ops::Range<usize>);
type OctetFn = unsafe fn(v: &OctetView, octets: std::ops::Range<usize>);
type DecodeFn = unsafe fn(fmt: QFormat, w: &[u8], row_bytes: usize, panel: &mut Panel);
type GemmFn = unsafe fn(p: &Panel, acts: &QuantActs, t0: usize, nt: usize, out: Out);
type GemvFn =
    unsafe fn(fmt: QFormat, w: &[u8], row_bytes: usize, acts: &QuantActs, t: usize, out: Out);
type DirectFn = unsafe fn(
    fmt: QFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &QuantActs,
    t0: usize,
    nt: usize,
    out: Out,
);
/// The last argument: whether many tokens run in half-group tiles (`tune`; tables
/// without that tile shape ignore it).
type InterleavedFn = unsafe fn(
    p: &Packed,
    rows: std::ops::Range<usize>,
    acts: &QuantActs,
    nt: usize,
    out: Out,
    half_tiles: bool,
);
type FloatGemmFn =
    unsafe fn(f: FFormat, w: &[u8], nr: usize, cols: usize, x: &[f32], nt: usize, out: Out);
type DotFn = unsafe fn(a: &[f32], b: &[f32]) -> f32;
type AxpyFn = unsafe fn(a: f32, x: &[f32], y: &mut [f32]);
/// Attention over stored rows: `base` holds values of type `ty`, `rows` are element
/// offsets of rows in it (as if it held f32).
type RowsFn = unsafe fn(ty: KvType, a: &[f32], base: &[u8], rows: &[usize], out: &mut [f32]);
type SoftmaxFn = unsafe fn(x: &mut [f32], scale: f32);
type GluFn = unsafe fn(act: crate::ops::Glu, gate: &mut [f32], up: &[f32]);

/// The kernels of one instruction set.
pub struct Kernels {
    pub(super) name: &'static str,
    /// Set by `TUILI_KERNELS=f32`: matmul takes the f32-activation reference path.
    pub(crate) f32_reference: bool,
    pub(super) quantize: QuantizeFn,
    /// Builds the extra activation layout this table's `gemm` reads, if any.
    pub(super) pack: Option<PackFn>,
    /// Builds the token-octet layout (`QuantActs::q8`) this table's interleaved products
    /// of [`OCTETS_FROM`] tokens or more read, if any.
    pub(super) octets: Option<OctetFn>,
    pub(super) decode: DecodeFn,
    pub(super) gemm: GemmFn,
    /// One token straight from the weight bytes (codes in registers), where the
    /// instruction set has it; the same operations as `decode` + `gemm`.
    pub(super) gemv: Option<GemvFn>,
    /// A few tokens straight from the weight bytes (`direct_max` at most), where the
    /// instruction set has it; the same operations as `decode` + `gemm`.
    pub(super) direct: Option<DirectFn>,
    pub(super) direct_max: usize,
    /// Products of weights repacked with rows interleaved (`interleave`): the
    /// block-sum specification for the formats that `interleave::interleavable` names.
    pub(super) interleaved: InterleavedFn,
    /// Whether `interleaved` has the half-group tiles that `tune` chooses between.
    pub(super) tunes_tiles: bool,
    pub(super) float_gemm: FloatGemmFn,
    /// BF16 weights under the bf16-pair specification (`bf16dot`) instead of
    /// `float_gemm`'s, where the CPU has an instruction for it that passed
    /// `bf16dot::matches`.
    pub(super) bf16: Option<Bf16Kernels>,
    pub(super) dot: DotFn,
    pub(super) axpy: AxpyFn,
    pub(super) scores: RowsFn,
    pub(super) mix: RowsFn,
    pub(super) softmax: SoftmaxFn,
    pub(super) glu: GluFn,
    /// A table of narrower registers this CPU also runs (AVX2 under AVX-512), whose
    /// products and attention kernels the tunables may choose instead (`tune`): the
    /// same specification, so the same bits.
    pub(super) narrower: Option<&'static Kernels>,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernels({})", self.name())
    }
}

impl Kernels {
    /// `"avx512_bf16"`, `"avx512"`, `"avx2"`, `"neon_dotprod"`, `"neon"` or `"scalar"`
    /// (`"f32-reference"` when forced so).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The name of the narrower table whose kernels the tunables may choose instead
    /// (`"avx2"` under `"avx512"`), if any.
    pub fn narrower_name(&self) -> Option<&'static str> {
        self.narrower.map(|n| n.name)
    }

    /// Dot product of two f32 rows (attention scores), in a fixed order:
    /// element `i` goes to accumulator `(i / 8) % 4`, lane `i % 8`.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot: lengths differ");
        // SAFETY: the table exists only where its instructions run; lengths checked.
        unsafe { (self.dot)(a, b) }
    }

    /// `y[i] = fma(a, x[i], y[i])`.
    pub fn axpy(&self, a: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy: lengths differ");
        // SAFETY: as in `dot`.
        unsafe { (self.axpy)(a, x, y) }
    }

    /// Attention scores of `g` query heads against `rows.len()` keys:
    /// `out[h, p] = dot(q[h], base[rows[p]..][..hd])`, bit-identical to
    /// [`Kernels::dot`]. `q`: `[g, hd]`, `out`: `[g, rows.len()]`.
    ///
    /// # Panics
    /// If the shapes disagree or a row lies outside `base`.
    pub fn scores(&self, q: &[f32], hd: usize, base: &[f32], rows: &[usize], out: &mut [f32]) {
        self.scores_kv(KvType::F32, q, hd, f32_bytes(base), rows, out)
    }

    /// [`Kernels::scores`] over keys stored as `ty` (`base`: `[.., hd]` values of `ty`,
    /// `rows`: element offsets): bit-identical to `scores` over the rows `ty` decodes to
    /// ([`KvType::decode`]), the decoding done in registers.
    ///
    /// # Panics
    /// If the shapes disagree, a row lies outside `base`, or (`q8_0`) a row or `hd` is
    /// not whole blocks.
    pub fn scores_kv(
        &self,
        ty: KvType,
        q: &[f32],
        hd: usize,
        base: &[u8],
        rows: &[usize],
        out: &mut [f32],
    ) {
        check_rows("scores", ty, q.len(), hd, base, rows, out.len());
        let table = self.for_attention(Attention::Scores, hd);
        // SAFETY: as in `dot`; shapes checked.
        unsafe { (table.scores)(ty, q, base, rows, out) }
    }

    /// Weighted sums of `rows.len()` value rows for `g` heads: `out[h] = Σ_p coef[h, p]
    /// · base[rows[p]..][..hd]`, bit-identical to zeros followed by one
    /// [`Kernels::axpy`] per position in order. `coef`: `[g, rows.len()]`, `out`: `[g, hd]`.
    ///
    /// # Panics
    /// As [`Kernels::scores`].
    pub fn mix(&self, coef: &[f32], base: &[f32], rows: &[usize], out: &mut [f32]) {
        self.mix_kv(KvType::F32, coef, f32_bytes(base), rows, out)
    }

    /// [`Kernels::mix`] over values stored as `ty`, as [`Kernels::scores_kv`].
    ///
    /// # Panics
    /// As [`Kernels::scores_kv`].
    pub fn mix_kv(&self, ty: KvType, coef: &[f32], base: &[u8], rows: &[usize], out: &mut [f32]) {
        let hd = if coef.is_empty() {
            0
        } else {
            out.len() * rows.len() / coef.len()
        };
        check_rows("mix", ty, out.len(), hd, base, rows, coef.len());
        let table = self.for_attention(Attention::Mix, hd);
        // SAFETY: as in `dot`; shapes checked.
        unsafe { (table.mix)(ty, coef, base, rows, out) }
    }

    /// The table that runs attention kernel `k` over heads of `hd` elements: this one,
    /// or its narrower twin where the tunables chose it.
    fn for_attention(&self, k: Attention, hd: usize) -> &Kernels {
        match self.narrower {
            Some(n) if super::tune::current().narrow_attention(k, hd) => n,
            _ => self,
        }
    }

    /// `ops::softmax_scaled` (the same bits), compiled for this instruction set.
    pub fn softmax(&self, x: &mut [f32], scale: f32) {
        // SAFETY: as in `dot`.
        unsafe { (self.softmax)(x, scale) }
    }

    /// `ops::Glu::apply_plain` (the same bits), compiled for this instruction set: its
    /// element-wise loops vectorize to the table's register width.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn glu(&self, act: crate::ops::Glu, gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "glu: gate and up lengths differ");
        // SAFETY: as in `dot`; the lengths were checked above.
        unsafe { (self.glu)(act, gate, up) }
    }

    /// Quantizes `x` (`[n, cols]`) into `acts`, reusing its buffers.
    ///
    /// # Panics
    /// If `cols` is not a positive multiple of 32 or `x` not whole rows (shapes come
    /// from the weight, checked when it was built, not from input data).
    pub fn quantize_acts(&self, x: &[f32], cols: usize, acts: &mut QuantActs) {
        assert!(
            cols > 0 && cols.is_multiple_of(QB) && x.len().is_multiple_of(cols),
            "quantize_acts: rows of {cols} (a multiple of {QB}) expected, got {} values",
            x.len()
        );
        let n = x.len() / cols;
        acts.reset(cols, n);
        let np = n.div_ceil(2);
        let nbp = acts.nbp();
        // One token takes the one-token product, which reads no pair layout.
        let pair_bufs = self.pack.filter(|_| n >= 2).map(|_| acts.size_packed());
        let octet_bufs = self
            .octets
            .filter(|_| n >= OCTETS_FROM)
            .map(|_| acts.size_octets());
        let (q, d) = (SyncPtr::new(&mut acts.q), SyncPtr::new(&mut acts.d));
        let (s, s16) = (SyncPtr::new(&mut acts.s), SyncPtr::new(&mut acts.s16));
        let xsum = SyncPtr::new(&mut acts.xsum);
        let xsum16 = SyncPtr::new(&mut acts.xsum16);
        let view = pair_bufs.map(|(qp, dp, sp, s16p)| PackView {
            n,
            cols,
            nbp,
            q: q.0.cast_const(),
            d: d.0.cast_const(),
            s: s.0.cast_const(),
            s16: s16.0.cast_const(),
            qp,
            dp,
            sp,
            s16p,
        });
        let octet_view = octet_bufs.map(|to| OctetView {
            n,
            cols,
            nbp,
            q: q.0.cast_const(),
            d: d.0.cast_const(),
            s: s.0.cast_const(),
            s16: s16.0.cast_const(),
            xsum: xsum.0.cast_const(),
            xsum16: xsum16.0.cast_const(),
            to,
        });
        // Token pairs `pairs`: quantized, then copied into the pair or octet layout if
        // the table has one (octets are whole ranges of 4 pairs, but the last).
        let job = |pairs: std::ops::Range<usize>| {
            for t in 2 * pairs.start..(2 * pairs.end).min(n) {
                // SAFETY: the table exists only where its instructions run; `reset` sized
                // every buffer for `cols`, and token t's rows belong to this caller alone.
                unsafe {
                    (self.quantize)(
                        &x[t * cols..(t + 1) * cols],
                        q.slice(t * cols..(t + 1) * cols),
                        d.slice(t * nbp..(t + 1) * nbp),
                        s.slice(t * nbp..(t + 1) * nbp),
                        s16.slice(t * 2 * nbp..(t + 1) * 2 * nbp),
                    );
                    // The exact (half-)block sums of the interleaved products' offsets.
                    let qt = q.slice(t * cols..(t + 1) * cols);
                    let halves = xsum16.slice(t * 2 * nbp..(t + 1) * 2 * nbp);
                    for (o, qh) in halves.iter_mut().zip(qt.chunks_exact(QB / 2)) {
                        *o = qh.iter().map(|&v| v as i32).sum();
                    }
                    for (o, h) in xsum
                        .slice(t * nbp..(t + 1) * nbp)
                        .iter_mut()
                        .zip(halves.chunks_exact(2).take(cols / QB))
                    {
                        *o = h[0] + h[1];
                    }
                };
            }
            if let (Some(pack), Some(v)) = (self.pack, &view) {
                // SAFETY: `size_packed` sized the pair buffers; these pairs' tokens were
                // just quantized, and their slots are written by this caller alone.
                unsafe { pack(v, pairs.clone()) };
            }
            if let (Some(octets), Some(v)) = (self.octets, &octet_view) {
                // SAFETY: `size_octets` sized the octet buffers; these octets' tokens
                // (pairs `4u..4u + 4`) were just quantized, and their slots are written
                // by this caller alone.
                unsafe { octets(v, pairs.start / 4..pairs.end.div_ceil(4)) };
            }
        };
        let align = if octet_view.is_some() { 4 } else { 1 };
        if n >= PARALLEL_QUANTIZE_MIN {
            // Token pairs split among the threads.
            crate::pool::global().for_ranges(np, align, &job);
        } else {
            job(0..np);
        }
        acts.packed = view.is_some();
        acts.octets = octet_view.is_some();
    }

    /// Decodes `panel.nr` rows of `fmt` (`w`: `[nr, row_bytes]`) into `panel`, which
    /// `reset` sized.
    pub(crate) fn decode(&self, fmt: QFormat, w: &[u8], row_bytes: usize, panel: &mut Panel) {
        assert_eq!(w.len(), panel.nr * row_bytes, "decode: weight bytes");
        assert_eq!(
            row_bytes * fmt.ty().block_size(),
            panel.cols * fmt.ty().type_size()
        );
        // SAFETY: shapes checked above; the table exists only where it runs.
        unsafe { (self.decode)(fmt, w, row_bytes, panel) }
    }

    /// `out[t * ldo + r] = row r of panel · token t0 + t`, for all rows and `nt` tokens.
    ///
    /// # Safety
    /// `out` must be valid for those writes and not written by anyone else meanwhile.
    pub(crate) unsafe fn gemm(&self, p: &Panel, acts: &QuantActs, t0: usize, nt: usize, out: Out) {
        // SAFETY: the caller upholds this method's contract (`out` valid for the writes,
        // written by no one else meanwhile); the shapes are asserted above, and the table
        // exists only where its instructions run
        unsafe {
            assert!(t0 + nt <= acts.n && acts.cols == p.cols, "gemm: shapes");
            (self.gemm)(p, acts, t0, nt, out)
        }
    }

    /// Whether [`Kernels::gemv`] runs (else decode a panel and use `gemm`).
    pub(crate) fn has_gemv(&self) -> bool {
        self.gemv.is_some()
    }

    /// `out[r] = row r of w · token t`, for the rows of `w` (`[nr, row_bytes]`).
    ///
    /// # Safety
    /// As for [`Kernels::gemm`]; `has_gemv` must be true (else it does nothing).
    pub(crate) unsafe fn gemv(
        &self,
        fmt: QFormat,
        w: &[u8],
        row_bytes: usize,
        acts: &QuantActs,
        t: usize,
        out: Out,
    ) {
        // SAFETY: the caller upholds this method's contract (`out` valid for the writes,
        // written by no one else meanwhile); the shapes are asserted above, and the table
        // exists only where its instructions run
        unsafe {
            assert!(
                t < acts.n && row_bytes * fmt.ty().block_size() == acts.cols * fmt.ty().type_size()
            );
            assert!(w.len().is_multiple_of(row_bytes), "gemv: weight bytes");
            if let Some(f) = self.gemv {
                f(fmt, w, row_bytes, acts, t, out)
            }
        }
    }

    /// Most tokens [`Kernels::direct`] takes (0: it does not run).
    pub(crate) fn direct_max(&self) -> usize {
        if self.direct.is_some() {
            self.direct_max
        } else {
            0
        }
    }

    /// `out[t * ldo + r] = row r of w · token t0 + t` for the rows of `w`
    /// (`[nr, row_bytes]`) and `nt <= direct_max()` tokens, decoding in registers.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`]; `direct_max` must be at least `nt` (else it does
    /// nothing).
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn direct(
        &self,
        fmt: QFormat,
        w: &[u8],
        row_bytes: usize,
        acts: &QuantActs,
        t0: usize,
        nt: usize,
        out: Out,
    ) {
        // SAFETY: the caller upholds this method's contract (`out` valid for the writes,
        // written by no one else meanwhile); the shapes are asserted above, and the table
        // exists only where its instructions run
        unsafe {
            assert!(
                t0 + nt <= acts.n
                    && row_bytes * fmt.ty().block_size() == acts.cols * fmt.ty().type_size()
            );
            assert!(w.len().is_multiple_of(row_bytes), "direct: weight bytes");
            if let Some(f) = self.direct.filter(|_| nt <= self.direct_max) {
                f(fmt, w, row_bytes, acts, t0, nt, out)
            }
        }
    }

    /// `out[t * ldo + r - rows.start] = row r of p · token t` for rows `rows` (starting
    /// at a multiple of 16) and tokens `0..nt`.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`].
    pub(crate) unsafe fn interleaved(
        &self,
        p: &Packed,
        rows: std::ops::Range<usize>,
        acts: &QuantActs,
        nt: usize,
        out: Out,
    ) {
        let t = super::tune::current();
        let table = match self.narrower {
            Some(n) if t.narrow_product(p.fmt, nt) => n,
            _ => self,
        };
        // SAFETY: the caller upholds this method's contract, which is the one below
        unsafe { table.interleaved_tiled(p, rows, acts, nt, out, t.half_tiles(p.fmt)) }
    }

    /// [`Kernels::interleaved`] in the tile shape given (`half`: half-group tiles for
    /// many tokens, where the table has them), whatever the tunables say. The same bits.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`].
    pub(crate) unsafe fn interleaved_tiled(
        &self,
        p: &Packed,
        rows: std::ops::Range<usize>,
        acts: &QuantActs,
        nt: usize,
        out: Out,
        half: bool,
    ) {
        // SAFETY: the caller upholds this method's contract (`out` valid for the writes,
        // written by no one else meanwhile); the shapes are asserted above, and the table
        // exists only where its instructions run
        unsafe {
            assert!(
                nt <= acts.n
                    && acts.cols == p.cols
                    && rows.start.is_multiple_of(IROWS)
                    && rows.start <= rows.end
                    && rows.end <= p.rows,
                "interleaved: shapes"
            );
            (self.interleaved)(p, rows, acts, nt, out, half)
        }
    }

    /// `out[t * ldo + r] = w[r] · x[t]` for float weights `w: [nr, cols]`, `x: [nt, cols]`.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn float_gemm(
        &self,
        f: FFormat,
        w: &[u8],
        nr: usize,
        cols: usize,
        x: &[f32],
        nt: usize,
        out: Out,
    ) {
        // SAFETY: the caller upholds this method's contract (`out` valid for the writes,
        // written by no one else meanwhile); the shapes are asserted above, and the table
        // exists only where its instructions run
        unsafe {
            let esize = if f == FFormat::F32 { 4 } else { 2 };
            assert!(
                w.len() == nr * cols * esize && x.len() == nt * cols,
                "float_gemm: shapes"
            );
            (self.float_gemm)(f, w, nr, cols, x, nt, out)
        }
    }

    /// Whether BF16 weights run under the bf16-pair specification (`bf16dot`) here.
    pub fn bf16_pairs(&self) -> bool {
        self.bf16.is_some()
    }

    /// Prepares `x` (`[n, cols]`) in `acts` for this table's bf16-pair products, once
    /// per matmul; nothing where the table has none.
    pub fn prepare_bf16(&self, x: &[f32], cols: usize, acts: &mut QuantActs) {
        assert!(
            cols > 0 && x.len().is_multiple_of(cols),
            "prepare_bf16: rows of {cols} expected, got {} values",
            x.len()
        );
        if let Some(b) = self.bf16 {
            // SAFETY: the table exists only where its instructions run; shapes checked.
            unsafe { (b.prepare)(x, cols, &mut acts.bf16) }
        }
    }

    /// `out[t * ldo + r] = w[r] · x[t]` for bf16 weights `w: [nr, cols]` under the
    /// bf16-pair specification, the tokens `x` as `prepare_bf16` left them in `acts`;
    /// `false` (nothing written) where this table has none.
    ///
    /// # Safety
    /// As for [`Kernels::gemm`].
    pub(crate) unsafe fn bf16_gemm(
        &self,
        w: &[u8],
        nr: usize,
        cols: usize,
        acts: &QuantActs,
        out: Out,
    ) -> bool {
        let Some(b) = self.bf16 else {
            return false;
        };
        assert!(
            acts.bf16.cols == cols && w.len() == nr * cols * 2,
            "bf16_gemm: shapes"
        );
        // SAFETY: the caller upholds this method's contract; shapes asserted above, and
        // the table exists only where its instructions run
        unsafe { (b.gemm)(w, nr, &acts.bf16, out) };
        true
    }
}

static SCALAR: Kernels = Kernels {
    name: "scalar",
    f32_reference: false,
    quantize: super::scalar::quantize_row,
    pack: None,
    octets: None,
    decode: super::scalar::decode,
    gemm: super::scalar::gemm,
    gemv: None,
    direct: None,
    direct_max: 0,
    interleaved: super::scalar::interleaved,
    tunes_tiles: false,
    float_gemm: super::scalar::float_gemm,
    bf16: None,
    dot: super::scalar::dot,
    axpy: super::scalar::axpy,
    scores: super::scalar::scores_by_dot,
    mix: super::scalar::mix_by_axpy,
    softmax: super::scalar::softmax,
    glu: super::scalar::glu,
    narrower: None,
};

/// The plain-Rust kernels: the specification the SIMD ones match bit for bit.
pub fn scalar() -> &'static Kernels {
    &SCALAR
}

/// The scalar kernels with the bf16-pair specification for BF16 weights.
static SCALAR_BF16: Kernels = Kernels {
    name: "scalar_bf16",
    bf16: Some(super::bf16dot::SPECIFICATION),
    ..SCALAR
};

/// The plain-Rust kernels of `k`'s specification: [`scalar`], with the bf16-pair
/// products where `k` runs BF16 weights so ([`Kernels::bf16_pairs`]).
pub fn scalar_twin(k: &Kernels) -> &'static Kernels {
    if k.bf16_pairs() {
        &SCALAR_BF16
    } else {
        &SCALAR
    }
}

/// The fastest kernels this CPU runs, detected once.
///
/// `TUILI_KERNELS=scalar|avx2|avx512|avx512_bf16|neon|neon_dotprod` forces a table (when the CPU can run it), and
/// `TUILI_KERNELS=f32` keeps f32 activations in matmul (the slow accuracy reference).
pub fn select() -> &'static Kernels {
    static SELECTED: OnceLock<&'static Kernels> = OnceLock::new();
    SELECTED.get_or_init(|| {
        let best = available().last().copied().unwrap_or(&SCALAR);
        match std::env::var("TUILI_KERNELS").ok().as_deref() {
            None | Some("") => best,
            Some("f32") => {
                static REF: OnceLock<Kernels> = OnceLock::new();
                REF.get_or_init(|| Kernels {
                    name: "f32-reference",
                    f32_reference: true,
                    ..*best
                })
            }
            Some(want) => match available().into_iter().find(|k| k.name == want) {
                Some(k) => k,
                None => {
                    eprintln!(
                        "TUILI_KERNELS={want}: not available on this CPU (choose from {}, f32); using {}",
                        available().iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
                        best.name
                    );
                    best
                }
            },
        }
    })
}

/// Every kernel table this CPU can run, scalar first, fastest last.
pub fn available() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut v = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = avx2::kernels() {
        v.push(k);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = avx512::kernels() {
        v.push(k);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = avx512::bf16_kernels() {
        v.push(k);
    }
    #[cfg(target_arch = "aarch64")]
    v.push(neon::kernels());
    #[cfg(target_arch = "aarch64")]
    if let Some(k) = neon::dotprod_kernels() {
        v.push(k);
    }
    v
}

/// Checks the shapes of `scores` / `mix`: `heads` (`[g, hd]`) and `per_pos`
/// (`[g, rows.len()]`) agree, and every row (`hd` values of `ty` from element `r`)
/// exists, starting on a block of `ty`.
fn check_rows(
    what: &str,
    ty: KvType,
    heads: usize,
    hd: usize,
    base: &[u8],
    rows: &[usize],
    per_pos: usize,
) {
    let g = heads.checked_div(hd).unwrap_or(0);
    assert!(
        hd > 0 && heads == g * hd && per_pos == g * rows.len(),
        "{what}: shapes ({heads} head values of {hd}, {per_pos} for {} rows)",
        rows.len()
    );
    // One pass, no division per row (this runs on every attention call): the largest
    // row, and the OR of all of them, whose low bits say whether each starts on a block
    // (blocks are 1 or 32 values).
    let block = ty.block();
    debug_assert!(block.is_power_of_two());
    let (last, any) = rows.iter().fold((0, 0), |(m, o), &r| (m.max(r), o | r));
    assert!(
        hd.is_multiple_of(block) && any & (block - 1) == 0,
        "{what}: {ty} rows must start and end on blocks of {block}"
    );
    let n = base.len() / ty.bytes(block) * block;
    assert!(
        rows.is_empty() || last.checked_add(hd).is_some_and(|e| e <= n),
        "{what}: a row lies outside the {n} values",
    );
}

/// The bytes of `x` (native order: little-endian on every target tuili builds for).
fn f32_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: any f32 is 4 initialized bytes; u8 has alignment 1; same memory, same borrow.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, std::mem::size_of_val(x)) }
}
