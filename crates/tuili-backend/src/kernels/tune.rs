//! Tunables: choices a kernel table may make differently on each CPU model without
//! changing a bit of any result, only its speed. They are chosen by a short measurement
//! on the CPU at hand ([`measure`], well under a second), not by vendor string; the
//! caller caches the choice per CPU model (`tuili` under `$TUILI_HOME/tune`).
//!
//! One table of tunables for now, the AVX2 interleaved products': whether a batch of
//! many tokens runs in tiles of one register half (8 rows) times 8 tokens, or of the
//! whole 16-row group times 4 tokens. The first decodes each weight code once for
//! twice the tokens; the second reads each weight byte once per tile. Which is faster
//! depends on the format's decoding cost and on the core (on an AMD Zen 3 the half
//! tiles win for Q5_0, Q8_0 and Q6_K and lose for Q4_0 and Q4_K). Both sum every
//! output's blocks in order with the same integer and float steps: the tests check the
//! bits of both on every format.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

use super::{interleavable, pack, Kernels, Out, QFormat, QuantActs};
use crate::quant::quantize;

/// The tunables of the kernel tables: for each interleaved format, whether its
/// many-token products run in half-group tiles (where the table has them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunables {
    half_tiles: u16,
}

/// `fmt`'s bit in the tunables (its place in `QFormat::ALL`).
fn bit(fmt: QFormat) -> u16 {
    QFormat::ALL
        .iter()
        .position(|&f| f == fmt)
        .map_or(0, |i| 1 << i)
}

impl Tunables {
    /// Whether `fmt`'s many-token products run in half-group tiles.
    pub(crate) fn half_tiles(self, fmt: QFormat) -> bool {
        self.half_tiles & bit(fmt) != 0
    }

    fn with_half_tiles(self, fmt: QFormat, on: bool) -> Tunables {
        let b = bit(fmt);
        Tunables {
            half_tiles: if on {
                self.half_tiles | b
            } else {
                self.half_tiles & !b
            },
        }
    }

    /// The formats (GGUF type names, e.g. `Q5_0`) whose products run in half tiles.
    pub fn half_tile_formats(self) -> Vec<&'static str> {
        QFormat::ALL
            .into_iter()
            .filter(|&f| self.half_tiles(f))
            .map(|f| f.ty().name())
            .collect()
    }

    /// The tunables with half tiles for exactly the formats `names` (GGUF type names);
    /// a name that is not an interleaved format is an error that names it.
    pub fn from_half_tile_formats<S: AsRef<str>>(names: &[S]) -> Result<Tunables, String> {
        names.iter().try_fold(Tunables::default(), |t, n| {
            let n = n.as_ref();
            tunable()
                .find(|f| f.ty().name().eq_ignore_ascii_case(n))
                .map(|f| t.with_half_tiles(f, true))
                .ok_or_else(|| {
                    format!(
                        "'{n}' is not a format with tunable tiles (one of {})",
                        tunable()
                            .map(|f| f.ty().name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
    }
}

/// The formats with tunable tiles: the interleaved ones.
fn tunable() -> impl Iterator<Item = QFormat> {
    QFormat::ALL.into_iter().filter(|&f| interleavable(f))
}

static CURRENT: AtomicU16 = AtomicU16::new(0);

/// The tunables the kernels run with now (all off until [`set`]).
pub fn current() -> Tunables {
    Tunables {
        half_tiles: CURRENT.load(Ordering::Relaxed),
    }
}

/// Makes the kernels run with `t` from the next product on. Results do not change.
pub fn set(t: Tunables) {
    CURRENT.store(t.half_tiles, Ordering::Relaxed);
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
/// Half tiles are chosen only when this much faster: a tie keeps the whole-group tiles,
/// which read each weight byte once.
const MARGIN: f64 = 1.03;

/// Chooses the tunables of table `k` on this CPU: each interleaved format's product is
/// timed in both tile shapes, alternately, the fastest of 5 rounds of each kept. Takes
/// about a quarter of a second on a 2020s core; a table without tunables returns the
/// defaults and no trials.
pub fn measure(k: &Kernels) -> (Tunables, Vec<Trial>) {
    if !k.tunes_tiles {
        return (Tunables::default(), Vec::new());
    }
    let (rows, cols, nt) = SHAPE;
    // A fixed pseudo-random sequence (xorshift): the same inputs on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let x: Vec<f32> = (0..nt * cols).map(|_| next()).collect();
    let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
    let mut acts = QuantActs::new();
    k.quantize_acts(&x, cols, &mut acts);
    let mut out = vec![0f32; nt * rows];
    let mut tunables = Tunables::default();
    let mut trials = Vec::new();
    for fmt in tunable() {
        let Ok(bytes) = quantize(fmt.ty(), &w) else {
            continue;
        };
        let packed = pack(fmt, &bytes, rows, cols);
        let mut best = [f64::INFINITY; 2];
        for _ in 0..5 {
            for (i, half) in [false, true].into_iter().enumerate() {
                let t = Instant::now();
                for _ in 0..3 {
                    // SAFETY: `out` holds `nt * rows` values, the product's whole output,
                    // and nothing else writes it
                    unsafe {
                        let o = Out {
                            ptr: out.as_mut_ptr(),
                            ldo: rows,
                        };
                        k.interleaved_tiled(&packed, 0..rows, &acts, nt, o, half);
                    }
                }
                best[i] = best[i].min(t.elapsed().as_secs_f64() / 3.0);
            }
        }
        let macs = (rows * cols * nt) as f64;
        let half = best[0] > MARGIN * best[1];
        tunables = tunables.with_half_tiles(fmt, half);
        trials.push(Trial {
            format: fmt.ty().name(),
            group_gmacs: macs / best[0] / 1e9,
            half_gmacs: macs / best[1] / 1e9,
            half,
        });
    }
    (tunables, trials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunables_name_their_formats_and_refuse_others() {
        let t = Tunables::from_half_tile_formats(&["Q5_0", "q6_k"]).unwrap();
        assert!(t.half_tiles(QFormat::Q5_0) && t.half_tiles(QFormat::Q6K));
        assert!(!t.half_tiles(QFormat::Q4_0) && !t.half_tiles(QFormat::Mxfp4));
        assert_eq!(t.half_tile_formats(), ["Q5_0", "Q6_K"]);
        let err = Tunables::from_half_tile_formats(&["Q5_0", "MXFP4"]).unwrap_err();
        assert!(err.contains("'MXFP4'") && err.contains("Q4_0"), "{err}");
        assert_eq!(
            Tunables::from_half_tile_formats::<&str>(&[]),
            Ok(Tunables::default())
        );
    }

    /// Every table measures: a table with tunables times every interleaved format in
    /// both shapes (positive, finite speeds, the choice following them); the others
    /// have nothing to choose.
    #[test]
    fn measuring_times_every_format_of_a_tunable_table() {
        for k in crate::kernels::available() {
            let (t, trials) = measure(k);
            if !k.tunes_tiles {
                assert!(
                    trials.is_empty() && t == Tunables::default(),
                    "{}",
                    k.name()
                );
                continue;
            }
            assert_eq!(trials.len(), tunable().count(), "{}", k.name());
            for tr in &trials {
                assert!(tr.group_gmacs.is_finite() && tr.group_gmacs > 0.0, "{tr:?}");
                assert!(tr.half_gmacs.is_finite() && tr.half_gmacs > 0.0, "{tr:?}");
                assert_eq!(tr.half, tr.half_gmacs > MARGIN * tr.group_gmacs, "{tr:?}");
            }
            let chosen: Vec<&str> = trials.iter().filter(|t| t.half).map(|t| t.format).collect();
            assert_eq!(t.half_tile_formats(), chosen, "{}", k.name());
        }
    }
}
