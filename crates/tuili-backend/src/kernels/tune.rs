//! Tunables: choices a kernel table may make differently on each CPU model without
//! changing a bit of any result, only its speed. They are chosen by a short measurement
//! on the CPU at hand ([`measure`], well under a second), not by vendor string; the
//! caller caches the choice per CPU model (`tuili` under `$TUILI_HOME/tune`).
//!
//! Two kinds of choice:
//! - **Tile shapes** of the AVX2 interleaved products: whether a batch of many tokens
//!   runs in tiles of one register half (8 rows) times 8 tokens, or of the whole 16-row
//!   group times 4 tokens. The first decodes each weight code once for twice the
//!   tokens (and, where the activations have the token-octet layout, needs no
//!   broadcast); the second reads each weight byte once per tile. Which is faster
//!   depends on the format's decoding cost and on the core (on an AMD Zen 3, in octets,
//!   the half tiles win by 15-20% for Q5_0, Q5_1, Q5_K, Q3_K and Q6_K, and are within a
//!   few percent of the whole-group tiles for Q4_0, Q4_1, Q4_K and Q8_0).
//! - **The narrower table**: a table with a narrower twin (AVX-512 over AVX2) may run a
//!   kernel on the twin instead, per format for the products (one token and many apart)
//!   and per head size for attention's scores and weighted sums. Where 512-bit
//!   operations issue as two 256-bit halves (AMD Zen 4), the 256-bit kernel can be the
//!   faster one.
//!
//! Every table and tile shape computes the same specification, bit for bit (the tests
//! check every table and both shapes against the scalar twin), so no choice changes a
//! result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{interleavable, pack, Kernels, Out, QFormat, QuantActs};
use crate::kv::KvType;
use crate::quant::quantize;

/// The tunables of the kernel tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunables {
    /// Interleaved formats whose many-token products run in half-group tiles (where the
    /// table running them has them), a bit per format.
    half_tiles: u16,
    /// Formats whose many-token products run on the narrower table.
    narrow_many: u16,
    /// Formats whose one-token products run on the narrower table.
    narrow_one: u16,
    /// Attention kernels on the narrower table: bit `3 k + c` for kernel `k` (scores,
    /// weighted sums) and head-size class `c` ([`head_class`]).
    narrow_attention: u8,
}

/// `fmt`'s bit in the tunables (its place in `QFormat::ALL`).
fn bit(fmt: QFormat) -> u16 {
    QFormat::ALL
        .iter()
        .position(|&f| f == fmt)
        .map_or(0, |i| 1 << i)
}

/// Attention's two row kernels, as the tunables name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attention {
    Scores = 0,
    Mix = 1,
}

/// Head sizes up to 64, up to 128, and larger: the kernels keep heads of each class in
/// registers differently, so each class chooses on its own.
const HEAD_CLASSES: [(usize, &str); 3] = [(64, "64"), (128, "128"), (256, "256")];

/// The class of a head of `hd` elements (an index into `HEAD_CLASSES`).
pub(crate) fn head_class(hd: usize) -> usize {
    HEAD_CLASSES
        .iter()
        .position(|&(max, _)| hd <= max)
        .unwrap_or(HEAD_CLASSES.len() - 1)
}

/// The name of attention kernel `k` for head class `c`, e.g. `scores/64`.
fn attention_name(k: Attention, c: usize) -> String {
    let kernel = match k {
        Attention::Scores => "scores",
        Attention::Mix => "mix",
    };
    format!("{kernel}/{}", HEAD_CLASSES[c].1)
}

fn attention_bit(k: Attention, c: usize) -> u8 {
    1 << (3 * k as usize + c)
}

/// `mask` with `b` set or cleared.
fn with_bit<T>(mask: T, b: T, on: bool) -> T
where
    T: std::ops::BitOr<Output = T> + std::ops::BitAnd<Output = T> + std::ops::Not<Output = T>,
{
    if on {
        mask | b
    } else {
        mask & !b
    }
}

/// Which list of formats a name belongs to, for [`Tunables::with_formats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatChoice {
    /// Many-token products in half-group tiles.
    HalfTiles,
    /// Many-token products on the narrower table.
    NarrowMany,
    /// One-token products on the narrower table.
    NarrowOne,
}

impl Tunables {
    /// Whether `fmt`'s many-token products run in half-group tiles.
    pub(crate) fn half_tiles(self, fmt: QFormat) -> bool {
        self.half_tiles & bit(fmt) != 0
    }

    /// Whether `fmt`'s products of `nt` tokens run on the narrower table.
    pub(crate) fn narrow_product(self, fmt: QFormat, nt: usize) -> bool {
        let mask = if nt == 1 {
            self.narrow_one
        } else {
            self.narrow_many
        };
        mask & bit(fmt) != 0
    }

    /// Whether attention kernel `k` over heads of `hd` elements runs on the narrower
    /// table.
    pub(crate) fn narrow_attention(self, k: Attention, hd: usize) -> bool {
        self.narrow_attention & attention_bit(k, head_class(hd)) != 0
    }

    fn mask(&mut self, which: FormatChoice) -> &mut u16 {
        match which {
            FormatChoice::HalfTiles => &mut self.half_tiles,
            FormatChoice::NarrowMany => &mut self.narrow_many,
            FormatChoice::NarrowOne => &mut self.narrow_one,
        }
    }

    fn with_format(mut self, which: FormatChoice, fmt: QFormat, on: bool) -> Tunables {
        let m = self.mask(which);
        *m = with_bit(*m, bit(fmt), on);
        self
    }

    /// The formats (GGUF type names, e.g. `Q5_0`) of one list.
    pub fn formats(mut self, which: FormatChoice) -> Vec<&'static str> {
        let m = *self.mask(which);
        QFormat::ALL
            .into_iter()
            .filter(|&f| m & bit(f) != 0)
            .map(|f| f.ty().name())
            .collect()
    }

    /// The attention kernels that run on the narrower table, e.g. `["scores/256"]`.
    pub fn narrow_attention_kernels(self) -> Vec<String> {
        attention_kernels()
            .filter(|&(k, c)| self.narrow_attention & attention_bit(k, c) != 0)
            .map(|(k, c)| attention_name(k, c))
            .collect()
    }

    /// These tunables with exactly the formats `names` (GGUF type names) in list
    /// `which`; a name that is not an interleaved format is an error that names it.
    pub fn with_formats<S: AsRef<str>>(
        self,
        which: FormatChoice,
        names: &[S],
    ) -> Result<Tunables, String> {
        let mut t = self;
        *t.mask(which) = 0;
        names.iter().try_fold(t, |t, n| {
            let n = n.as_ref();
            tunable()
                .find(|f| f.ty().name().eq_ignore_ascii_case(n))
                .map(|f| t.with_format(which, f, true))
                .ok_or_else(|| {
                    format!(
                        "'{n}' is not a format with tunable products (one of {})",
                        tunable()
                            .map(|f| f.ty().name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
    }

    /// These tunables with exactly the attention kernels `names` (as
    /// [`Tunables::narrow_attention_kernels`] writes them) on the narrower table.
    pub fn with_narrow_attention<S: AsRef<str>>(self, names: &[S]) -> Result<Tunables, String> {
        let mut t = self;
        t.narrow_attention = 0;
        for n in names {
            let n = n.as_ref();
            let (k, c) = attention_kernels()
                .find(|&(k, c)| attention_name(k, c) == n)
                .ok_or_else(|| {
                    format!(
                        "'{n}' is not an attention kernel (one of {})",
                        attention_kernels()
                            .map(|(k, c)| attention_name(k, c))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            t.narrow_attention |= attention_bit(k, c);
        }
        Ok(t)
    }

    fn to_bits(self) -> u64 {
        self.half_tiles as u64
            | (self.narrow_many as u64) << 16
            | (self.narrow_one as u64) << 32
            | (self.narrow_attention as u64) << 48
    }

    fn from_bits(b: u64) -> Tunables {
        Tunables {
            half_tiles: b as u16,
            narrow_many: (b >> 16) as u16,
            narrow_one: (b >> 32) as u16,
            narrow_attention: (b >> 48) as u8,
        }
    }
}

/// Every attention kernel and head class.
fn attention_kernels() -> impl Iterator<Item = (Attention, usize)> {
    [Attention::Scores, Attention::Mix]
        .into_iter()
        .flat_map(|k| (0..HEAD_CLASSES.len()).map(move |c| (k, c)))
}

/// The formats with tunable products: the interleaved ones.
fn tunable() -> impl Iterator<Item = QFormat> {
    QFormat::ALL.into_iter().filter(|&f| interleavable(f))
}

static CURRENT: AtomicU64 = AtomicU64::new(0);

/// The tunables the kernels run with now (all off until [`set`]).
pub fn current() -> Tunables {
    Tunables::from_bits(CURRENT.load(Ordering::Relaxed))
}

/// Makes the kernels run with `t` from the next product on. Results do not change.
pub fn set(t: Tunables) {
    CURRENT.store(t.to_bits(), Ordering::Relaxed);
}

/// One format's measurement: the speed of each tile shape, and the choice.
#[derive(Clone, Debug)]
pub struct Trial {
    /// GGUF type name.
    pub format: &'static str,
    /// Multiply-adds per second (×1e9, one thread) in whole-group tiles.
    pub group_gmacs: f64,
    /// The same in half-group tiles.
    pub half_gmacs: f64,
    /// Whether half tiles were chosen.
    pub half: bool,
}

/// Rows, columns and tokens of each measured product: 16 groups, a K-quant-sized row,
/// a prefill-sized batch (about 17M multiply-adds, under a millisecond).
const SHAPE: (usize, usize, usize) = (256, 1024, 64);
/// A variant is chosen only when this much faster: a tie keeps the whole-group tiles,
/// which read each weight byte once, and the table itself.
const MARGIN: f64 = 1.03;

/// One choice between a table and its narrower twin: the speed of each, and the choice.
#[derive(Clone, Debug)]
pub struct TableTrial {
    /// What was timed: a format and its tokens (`Q5_0 x64`, `Q5_0 x1`), or an attention
    /// kernel and head class (`scores/64`).
    pub kernel: String,
    /// Work per second, ×1e9 (multiply-adds for products, flops for attention), one
    /// thread, on the table itself.
    pub wide: f64,
    /// The same on its narrower twin.
    pub narrow: f64,
    /// Whether the narrower twin was chosen.
    pub chose_narrow: bool,
}

/// What [`measure`] found.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The choices.
    pub tunables: Tunables,
    /// The table whose tile shapes were timed (the narrower twin where the table has
    /// no tile shapes of its own), if any has them.
    pub tiles_table: Option<&'static str>,
    /// The tile shapes' timings.
    pub tiles: Vec<Trial>,
    /// The timings of the table against its narrower twin.
    pub tables: Vec<TableTrial>,
}

/// A fixed pseudo-random sequence (xorshift) in [-0.5, 0.5): the same inputs on every
/// run.
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Seconds per run of each of two variants: `run(i)` runs variant `i` once; each is
/// run `reps` times in a timing, the timings alternate, the fastest of 5 is kept (the
/// machine's neighbours only ever slow a run down).
fn race(reps: usize, mut run: impl FnMut(usize)) -> [f64; 2] {
    let mut best = [f64::INFINITY; 2];
    for _ in 0..5 {
        for (i, b) in best.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..reps {
                run(i);
            }
            *b = b.min(t.elapsed().as_secs_f64() / reps as f64);
        }
    }
    best
}

/// Chooses the tunables of table `k` on this CPU: each interleaved format's product is
/// timed in both tile shapes, and where `k` has a narrower twin, each product (one
/// token and many) and each attention kernel on both tables. Variants are timed
/// alternately, the fastest of 5 rounds of each kept. Takes well under a second on a
/// 2020s core; a table with nothing to choose returns the defaults and no trials.
pub fn measure(k: &Kernels) -> Measurement {
    let tiles_of = if k.tunes_tiles {
        Some(k)
    } else {
        k.narrower.filter(|n| n.tunes_tiles)
    };
    let (rows, cols, nt) = SHAPE;
    let x = inputs(nt * cols, 0);
    let w = inputs(rows * cols, 1);
    let mut acts = QuantActs::new();
    k.quantize_acts(&x, cols, &mut acts);
    let mut out = vec![0f32; nt * rows];
    let mut t = Tunables::default();
    let mut tiles = Vec::new();
    let mut tables = Vec::new();
    let macs = |n: usize| (rows * cols * n) as f64;
    for fmt in tunable() {
        let Ok(bytes) = quantize(fmt.ty(), &w) else {
            continue;
        };
        let packed = pack(fmt, &bytes, rows, cols);
        let mut product = |table: &Kernels, n: usize, half: bool| {
            // SAFETY: `out` holds `nt * rows` values, the product's whole output, and
            // nothing else writes it
            unsafe {
                let o = Out {
                    ptr: out.as_mut_ptr(),
                    ldo: rows,
                };
                table.interleaved_tiled(&packed, 0..rows, &acts, n, o, half);
            }
        };
        if let Some(tk) = tiles_of {
            let s = race(3, |i| product(tk, nt, i == 1));
            let half = s[0] > MARGIN * s[1];
            t = t.with_format(FormatChoice::HalfTiles, fmt, half);
            tiles.push(Trial {
                format: fmt.ty().name(),
                group_gmacs: macs(nt) / s[0] / 1e9,
                half_gmacs: macs(nt) / s[1] / 1e9,
                half,
            });
        }
        let Some(narrow) = k.narrower else {
            continue;
        };
        let half = t.half_tiles(fmt);
        for (n, which, reps) in [
            (nt, FormatChoice::NarrowMany, 3),
            (1, FormatChoice::NarrowOne, 60),
        ] {
            let s = race(reps, |i| product([k, narrow][i], n, half));
            let chose_narrow = s[0] > MARGIN * s[1];
            t = t.with_format(which, fmt, chose_narrow);
            tables.push(TableTrial {
                kernel: format!("{} x{n}", fmt.ty().name()),
                wide: macs(n) / s[0] / 1e9,
                narrow: macs(n) / s[1] / 1e9,
                chose_narrow,
            });
        }
    }
    if let Some(narrow) = k.narrower {
        tables.extend(measure_attention(k, narrow, &mut t));
    }
    Measurement {
        tunables: t,
        tiles_table: tiles_of.map(|k| k.name),
        tiles,
        tables,
    }
}

/// Times attention's scores and weighted sums on `k` and on `narrow` for a head of each
/// class (4 query heads, 256 positions of f16 rows, as a prefill's chunk reads them),
/// recording the choices in `t`.
fn measure_attention(k: &Kernels, narrow: &'static Kernels, t: &mut Tunables) -> Vec<TableTrial> {
    const G: usize = 4;
    const NP: usize = 256;
    let mut trials = Vec::new();
    for (c, &(hd, _)) in HEAD_CLASSES.iter().enumerate() {
        let q = inputs(G * hd, 2);
        let coef = inputs(G * NP, 3);
        let ty = KvType::F16;
        let mut base = vec![0u8; ty.bytes(NP * hd)];
        ty.encode(&inputs(NP * hd, 4), &mut base);
        let rows: Vec<usize> = (0..NP).map(|p| p * hd).collect();
        let (mut scores, mut mixed) = (vec![0f32; G * NP], vec![0f32; G * hd]);
        let flops = (2 * G * NP * hd) as f64;
        for kernel in [Attention::Scores, Attention::Mix] {
            let s = race(20, |i| {
                let table = [k, narrow][i];
                // SAFETY: the shapes agree (`G` heads of `hd`, `NP` whole rows inside
                // `base`), as `Kernels::scores_kv` / `mix_kv` check them, and both tables
                // run on this CPU
                unsafe {
                    match kernel {
                        Attention::Scores => (table.scores)(ty, &q, &base, &rows, &mut scores),
                        Attention::Mix => (table.mix)(ty, &coef, &base, &rows, &mut mixed),
                    }
                }
            });
            let chose_narrow = s[0] > MARGIN * s[1];
            t.narrow_attention =
                with_bit(t.narrow_attention, attention_bit(kernel, c), chose_narrow);
            trials.push(TableTrial {
                kernel: attention_name(kernel, c),
                wide: flops / s[0] / 1e9,
                narrow: flops / s[1] / 1e9,
                chose_narrow,
            });
        }
    }
    trials
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunables_name_their_formats_and_refuse_others() {
        let t = Tunables::default()
            .with_formats(FormatChoice::HalfTiles, &["Q5_0", "q6_k"])
            .unwrap();
        assert!(t.half_tiles(QFormat::Q5_0) && t.half_tiles(QFormat::Q6K));
        assert!(!t.half_tiles(QFormat::Q4_0) && !t.half_tiles(QFormat::Mxfp4));
        assert_eq!(t.formats(FormatChoice::HalfTiles), ["Q5_0", "Q6_K"]);
        let err = Tunables::default()
            .with_formats(FormatChoice::HalfTiles, &["Q5_0", "MXFP4"])
            .unwrap_err();
        assert!(err.contains("'MXFP4'") && err.contains("Q4_0"), "{err}");
        assert_eq!(
            Tunables::default().with_formats::<&str>(FormatChoice::HalfTiles, &[]),
            Ok(Tunables::default())
        );
    }

    #[test]
    fn narrow_choices_round_trip_by_name() {
        let t = Tunables::default()
            .with_formats(FormatChoice::NarrowMany, &["Q4_K"])
            .and_then(|t| t.with_formats(FormatChoice::NarrowOne, &["q8_0", "Q5_0"]))
            .and_then(|t| t.with_narrow_attention(&["scores/256", "mix/64"]))
            .unwrap();
        assert!(t.narrow_product(QFormat::Q4K, 64) && !t.narrow_product(QFormat::Q4K, 1));
        assert!(t.narrow_product(QFormat::Q8_0, 1) && !t.narrow_product(QFormat::Q8_0, 2));
        assert_eq!(t.formats(FormatChoice::NarrowOne), ["Q5_0", "Q8_0"]);
        assert!(t.narrow_attention(Attention::Scores, 256));
        assert!(t.narrow_attention(Attention::Scores, 192));
        assert!(!t.narrow_attention(Attention::Scores, 64));
        assert!(t.narrow_attention(Attention::Mix, 32) && !t.narrow_attention(Attention::Mix, 128));
        assert_eq!(t.narrow_attention_kernels(), ["scores/256", "mix/64"]);
        assert_eq!(Tunables::from_bits(t.to_bits()), t);
        let err = t.with_narrow_attention(&["scores/96"]).unwrap_err();
        assert!(
            err.contains("'scores/96'") && err.contains("mix/128"),
            "{err}"
        );
    }

    /// Every table measures: a table with tile shapes times every interleaved format in
    /// both, a table with a narrower twin times every product and attention kernel on
    /// both tables (positive, finite speeds, the choices following them); the others
    /// have nothing to choose.
    #[test]
    fn measuring_times_every_choice_of_a_table() {
        for k in crate::kernels::available() {
            let m = measure(k);
            let tiles_of = if k.tunes_tiles {
                Some(k)
            } else {
                k.narrower.filter(|n| n.tunes_tiles)
            };
            assert_eq!(m.tiles_table, tiles_of.map(|k| k.name()), "{}", k.name());
            if tiles_of.is_none() && k.narrower.is_none() {
                assert!(
                    m.tiles.is_empty() && m.tables.is_empty() && m.tunables == Tunables::default(),
                    "{}",
                    k.name()
                );
                continue;
            }
            let n = tunable().count();
            assert_eq!(m.tiles.len(), if tiles_of.is_some() { n } else { 0 });
            for tr in &m.tiles {
                assert!(tr.group_gmacs.is_finite() && tr.group_gmacs > 0.0, "{tr:?}");
                assert!(tr.half_gmacs.is_finite() && tr.half_gmacs > 0.0, "{tr:?}");
                assert_eq!(tr.half, tr.half_gmacs > MARGIN * tr.group_gmacs, "{tr:?}");
            }
            let chosen: Vec<&str> = m
                .tiles
                .iter()
                .filter(|t| t.half)
                .map(|t| t.format)
                .collect();
            assert_eq!(
                m.tunables.formats(FormatChoice::HalfTiles),
                chosen,
                "{}",
                k.name()
            );
            let want = if k.narrower.is_some() { 2 * n + 6 } else { 0 };
            assert_eq!(m.tables.len(), want, "{}", k.name());
            for tr in &m.tables {
                assert!(tr.wide.is_finite() && tr.wide > 0.0, "{tr:?}");
                assert!(tr.narrow.is_finite() && tr.narrow > 0.0, "{tr:?}");
                assert_eq!(tr.chose_narrow, tr.narrow > MARGIN * tr.wide, "{tr:?}");
            }
            let narrow: Vec<String> = m
                .tables
                .iter()
                .filter(|t| t.chose_narrow && t.kernel.contains('/'))
                .map(|t| t.kernel.clone())
                .collect();
            assert_eq!(m.tunables.narrow_attention_kernels(), narrow);
        }
    }

    /// Whatever the tunables choose, the results are the same bits: every product (one
    /// token, a few, many) and attention kernel of a table with a narrower twin, run
    /// through the tunables' dispatch with every choice narrow, equals the table's own.
    #[test]
    fn narrow_choices_keep_the_bits() {
        let all_narrow = Tunables {
            half_tiles: u16::MAX,
            narrow_many: u16::MAX,
            narrow_one: u16::MAX,
            narrow_attention: u8::MAX,
        };
        let (rows, cols) = (48, 512);
        let x = inputs(64 * cols, 5);
        let w = inputs(rows * cols, 6);
        for k in crate::kernels::available() {
            if k.narrower.is_none() {
                continue;
            }
            let mut acts = QuantActs::new();
            k.quantize_acts(&x, cols, &mut acts);
            let run = |t: Tunables, f: &mut dyn FnMut()| {
                set(t);
                f();
                set(Tunables::default());
            };
            for fmt in tunable() {
                let packed = pack(fmt, &quantize(fmt.ty(), &w).unwrap(), rows, cols);
                for nt in [1, 3, 64] {
                    let mut outs = [vec![0f32; nt * rows], vec![0f32; nt * rows]];
                    for (t, out) in [Tunables::default(), all_narrow].into_iter().zip(&mut outs) {
                        run(t, &mut || {
                            // SAFETY: `out` holds the whole output, written only here
                            unsafe {
                                let o = Out {
                                    ptr: out.as_mut_ptr(),
                                    ldo: rows,
                                };
                                k.interleaved(&packed, 0..rows, &acts, nt, o);
                            }
                        });
                    }
                    let same = outs[0]
                        .iter()
                        .zip(&outs[1])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} {fmt:?} x{nt}: narrow products differ", k.name());
                }
            }
            for hd in [32, 64, 96, 128, 256] {
                let (g, np) = (3, 37);
                let q = inputs(g * hd, 7);
                let coef = inputs(g * np, 8);
                let ty = KvType::F16;
                let mut base = vec![0u8; ty.bytes(np * hd)];
                ty.encode(&inputs(np * hd, 9), &mut base);
                let rows: Vec<usize> = (0..np).map(|p| p * hd).collect();
                let mut outs = [
                    (vec![0f32; g * np], vec![0f32; g * hd]),
                    (vec![0f32; g * np], vec![0f32; g * hd]),
                ];
                for (t, (sc, mx)) in [Tunables::default(), all_narrow].into_iter().zip(&mut outs) {
                    run(t, &mut || {
                        k.scores_kv(ty, &q, hd, &base, &rows, sc);
                        k.mix_kv(ty, &coef, &base, &rows, mx);
                    });
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&outs[0].0),
                    bits(&outs[1].0),
                    "{} scores hd {hd}",
                    k.name()
                );
                assert_eq!(
                    bits(&outs[0].1),
                    bits(&outs[1].1),
                    "{} mix hd {hd}",
                    k.name()
                );
            }
        }
    }
}
