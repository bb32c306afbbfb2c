//! The time of one engine step: a batch of prefill chunks and decoding sequences.
//!
//! Each op (a weight matrix over the step's tokens, attention of one sequence in one
//! layer, the output projection) costs its roofline term
//! `max(bytes / (η_mem · BW), flops / (η_comp · F(precision)))`; the step adds overheads
//! per layer, per step, per sequence and per token, which a roofline cannot see
//! (thread hand-offs, kernel launches, norms, sampling). The η's and overheads come from
//! [`crate::fit`]; a chip never measured borrows them.

use crate::chip::{ChipKind, ChipProfile, Precision, Sourced};
use serde::Serialize;
use tuili_gguf::GgmlType;

use tuili_models::ops::Glu;

use crate::cost::{attended_sum, KvFormat, ModelCost, WeightFormat};

/// Efficiencies and overheads of a chip, fitted to measured steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coeffs {
    /// Fraction of the memory bandwidth the weight and KV reads reach.
    pub eta_mem: f64,
    /// Fraction of the peak throughput the products reach.
    pub eta_comp: f64,
    /// Seconds per layer per step.
    pub layer_s: f64,
    /// Seconds per step.
    pub step_s: f64,
    /// Seconds per sequence per step.
    pub seq_s: f64,
    /// Seconds per token per step.
    pub token_s: f64,
}

impl Coeffs {
    /// What a CPU never measured, with no measured CPU to borrow from, assumes: the
    /// efficiencies that well-tuned kernels commonly reach, and no overheads.
    pub const DATASHEET: Coeffs = Coeffs {
        eta_mem: 0.75,
        eta_comp: 0.5,
        layer_s: 0.0,
        step_s: 0.0,
        seq_s: 0.0,
        token_s: 0.0,
    };

    /// The same for an accelerator, plus the launch overheads of a runtime without
    /// graph capture (a few kernels of about 5 µs per layer, and a host round trip per
    /// step): without them a small model's decode would be predicted many times too fast.
    pub const DATASHEET_ACCELERATOR: Coeffs = Coeffs {
        layer_s: 25e-6,
        step_s: 150e-6,
        ..Coeffs::DATASHEET
    };
}

/// What a server adds to each engine step beyond the engine's own work (`tuili bench`
/// runs none of it): per step, and per token sampled and streamed (sampling over the
/// vocabulary, detokenizing, an event written to the client). Fitted by
/// [`crate::fit::fit_serving`] to served runs; zero when simulating no server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServeCoeffs {
    /// Seconds per step.
    pub step_s: f64,
    /// Seconds per sampled token (one per decoding sequence, and one per prompt whose
    /// last chunk the step runs).
    pub token_s: f64,
    /// Seconds per request, paid once, in the step that runs its first prompt chunk: the
    /// engine thread's work to admit it and answer its first token (the HTTP side is
    /// under 2 ms; see docs/PLANNER.md). It stalls that step, so the sequences decoding
    /// beside it pay it too. Fitted by [`crate::fit::fit_request`] to served first tokens.
    pub request_s: f64,
    /// Seconds per prompt chunk run in a step beside decoding sequences (a mixed step),
    /// beyond what the step model costs it: the closed bursts, whose prompts start
    /// together, never run one. Fitted by [`crate::fit::fit_mixed`] to the TPOT of
    /// served traces whose prompts arrive while others decode.
    pub mixed_s: f64,
}

impl ServeCoeffs {
    /// Seconds a step adds that samples `sampled` tokens, starts `started` requests
    /// and runs `mixed` prompt chunks beside decodes.
    pub fn seconds(&self, sampled: usize, started: usize, mixed: usize) -> f64 {
        self.step_s
            + sampled as f64 * self.token_s
            + started as f64 * self.request_s
            + mixed as f64 * self.mixed_s
    }
}

/// The latency of one all-reduce of a step's hidden states between the chips of a
/// tensor-parallel group, paid on top of its bytes over the interconnect, for a chip
/// whose profile has no `interconnect.allreduce_latency_us`: a small message's
/// reduction inside one node costs several microseconds whatever its size (NCCL on 2
/// H100s under CUDA graphs: about 6 µs, NVIDIA/nccl issue 1259; more over 8 chips and
/// without graphs).
pub const ALLREDUCE_LATENCY_S: f64 = 10e-6;

/// A prefill chunk: `n` tokens at positions `start..start + n` of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Positions already in the sequence's cache.
    pub start: usize,
    /// Tokens in the chunk.
    pub n: usize,
}

/// What one engine step runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StepShape {
    /// Prefill chunks (the last token of each gives logits).
    pub prefill: Vec<Chunk>,
    /// Decoding sequences: the position of each one's new token.
    pub decode: Vec<usize>,
}

impl StepShape {
    /// One prefill of `n` tokens from position `start`.
    pub fn prefill(start: usize, n: usize) -> StepShape {
        StepShape {
            prefill: vec![Chunk { start, n }],
            decode: Vec::new(),
        }
    }

    /// `seqs` sequences decoding one token each at position `pos`.
    pub fn decode(seqs: usize, pos: usize) -> StepShape {
        StepShape {
            prefill: Vec::new(),
            decode: vec![pos; seqs],
        }
    }

    /// Tokens in the step.
    pub fn tokens(&self) -> usize {
        self.prefill.iter().map(|c| c.n).sum::<usize>() + self.decode.len()
    }

    /// Sequences in the step.
    pub fn seqs(&self) -> usize {
        self.prefill.len() + self.decode.len()
    }

    /// All chunks, decoding tokens as chunks of one.
    fn chunks(&self) -> impl Iterator<Item = Chunk> + '_ {
        let decode = self.decode.iter().map(|&start| Chunk { start, n: 1 });
        self.prefill.iter().copied().chain(decode)
    }
}

/// The rates of one chip as one step sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Hardware {
    /// Memory bandwidth, bytes/s.
    pub bandwidth: f64,
    /// Operations per second per precision, in [`Precision::ALL`] order.
    pub ops: [f64; 5],
    /// Operations per second of products with weights of these GGUF types, where the
    /// chip's profile measured them (they replace the precision's rate).
    pub kernels: Vec<(GgmlType, f64)>,
    /// Operations per second of one-token products per GGUF type, where measured: the
    /// first token of a product pays this rate, the others the batched one.
    pub matvec: Vec<(GgmlType, f64)>,
    /// Bytes of an activation value (f32 on CPUs, 16-bit elsewhere).
    pub act_bytes: f64,
    /// The precision attention runs at.
    pub attention: Precision,
    /// How the KV cache stores keys and values.
    pub kv: KvFormat,
    /// Values per second of the vector ops (RMS norm, SwiGLU, GeGLU, RoPE) with the
    /// step's threads, where the profile measured them.
    pub vector: Option<[f64; 4]>,
    /// Attention's multiply-adds per second on one thread, where the profile measured
    /// them (else attention runs at the rate of [`Hardware::attention`]'s precision): a
    /// decoding token's (the cache streamed from memory), a prompt chunk's (in cache).
    pub attention_macs: Option<[f64; 2]>,
    /// Threads the step runs on (1 for an accelerator).
    pub threads: f64,
    /// Chips the model is split over by tensor parallelism (1: one chip).
    pub tp: usize,
    /// Chip-to-chip bandwidth in each direction, bytes/s.
    pub interconnect: f64,
    /// Seconds of one all-reduce beyond its bytes (see [`ALLREDUCE_LATENCY_S`]).
    pub allreduce_latency_s: f64,
    /// Whether the step's work is handed between threads or kernels layer by layer,
    /// which the per-layer overhead prices: not on a CPU running one thread.
    pub handoffs: bool,
}

impl Hardware {
    /// `chip` with `threads` threads (CPUs; `None`: all), caching KV as `kv`.
    pub fn of(chip: &ChipProfile, threads: Option<usize>, kv: KvFormat) -> Hardware {
        let cpu = chip.kind == ChipKind::Cpu;
        Hardware {
            bandwidth: chip.bandwidth(threads),
            ops: Precision::ALL.map(|p| chip.ops_per_s(p, threads)),
            kernels: chip
                .kernels
                .iter()
                .map(|(t, _)| (*t, chip.kernel_ops_per_s(*t, Precision::Bf16, threads)))
                .collect(),
            matvec: chip
                .matvec
                .iter()
                .filter_map(|(t, _)| Some((*t, chip.matvec_ops_per_s(*t, threads)?)))
                .collect(),
            act_bytes: if cpu { 4.0 } else { 2.0 },
            attention: if cpu {
                Precision::Fp32
            } else {
                Precision::Bf16
            },
            kv,
            vector: chip.elementwise.as_ref().map(|e| {
                let t = chip.threads_used(threads);
                [&e.rms_norm, &e.silu_mul, &e.gelu_tanh_mul, &e.rope].map(|r| r.value * 1e9 * t)
            }),
            attention_macs: chip.elementwise.as_ref().and_then(|e| {
                let (stream, cached) = (e.attention.as_ref(), e.attention_cached.as_ref());
                let rate = |s: &Sourced| s.value * 1e9;
                let decode = stream.or(cached)?;
                Some([rate(decode), rate(cached.unwrap_or(decode))])
            }),
            threads: chip.threads_used(threads),
            tp: 1,
            // Vendors quote both directions together.
            interconnect: chip.interconnect_gbs.value * 1e9 / 2.0,
            allreduce_latency_s: chip
                .allreduce_latency_us
                .as_ref()
                .map_or(ALLREDUCE_LATENCY_S, |l| l.value * 1e-6),
            handoffs: !cpu || chip.threads_used(threads) > 1.0,
        }
    }

    fn ops_at(&self, p: Precision) -> f64 {
        let i = Precision::ALL.iter().position(|&q| q == p).unwrap_or(1);
        self.ops[i]
    }

    /// Seconds of the products of `macs` multiply-adds per token over `n` tokens with
    /// weights stored as `f`: the first token at the one-token rate where measured.
    fn product_s(&self, f: WeightFormat, macs: f64, n: f64) -> f64 {
        let batched = self.weight_ops(f);
        let first = match f {
            WeightFormat::Ggml(ty) => self.matvec.iter().find(|(t, _)| *t == ty),
            _ => None,
        };
        match first {
            Some(&(_, one)) if n >= 1.0 => 2.0 * macs * (1.0 / one + (n - 1.0) / batched),
            _ => 2.0 * macs * n / batched,
        }
    }

    /// The rate of products with weights stored as `f`.
    fn weight_ops(&self, f: WeightFormat) -> f64 {
        let measured = match f {
            WeightFormat::Ggml(ty) => self.kernels.iter().find(|(t, _)| *t == ty),
            _ => None,
        };
        measured.map_or_else(|| self.ops_at(f.precision()), |&(_, r)| r)
    }
}

/// One op's seconds at full efficiency: memory and compute, before the roofline's max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpTime {
    /// Bytes moved ÷ bandwidth.
    pub mem_s: f64,
    /// FLOPs ÷ peak rate.
    pub comp_s: f64,
}

/// The ops of one step and the counts its overheads scale with.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOps {
    /// Roofline inputs of each op.
    pub ops: Vec<OpTime>,
    /// Layers.
    pub layers: f64,
    /// Sequences.
    pub seqs: f64,
    /// Tokens.
    pub tokens: f64,
    /// Engine steps (1 for one step; more where a whole run is summed, see
    /// [`StepOps::then`]).
    pub steps: f64,
    /// Seconds outside the efficiencies: the vector ops at their measured rates (0 where
    /// not measured) and tensor-parallel all-reduces at the interconnect's rate.
    pub fixed_s: f64,
}

impl StepOps {
    /// Seconds of the step under `c`.
    pub fn seconds(&self, c: &Coeffs) -> f64 {
        self.roofline(c) + self.overhead(c) + self.fixed_s
    }

    /// Seconds of the step run by a server in which each sequence samples a token (a
    /// decode step; see [`ServeCoeffs`]).
    pub fn served_seconds(&self, c: &Coeffs, s: &ServeCoeffs) -> f64 {
        self.seconds(c) + self.steps * s.step_s + self.seqs * s.token_s
    }

    /// The roofline part: `Σ max(mem / η_mem, comp / η_comp)`.
    pub fn roofline(&self, c: &Coeffs) -> f64 {
        self.ops
            .iter()
            .map(|o| (o.mem_s / c.eta_mem).max(o.comp_s / c.eta_comp))
            .sum()
    }

    /// The overhead part.
    pub fn overhead(&self, c: &Coeffs) -> f64 {
        self.layers * c.layer_s
            + self.steps * c.step_s
            + self.seqs * c.seq_s
            + self.tokens * c.token_s
    }

    /// These ops run `k` times (the same step repeated).
    pub fn times(mut self, k: f64) -> StepOps {
        for o in &mut self.ops {
            o.mem_s *= k;
            o.comp_s *= k;
        }
        self.layers *= k;
        self.seqs *= k;
        self.tokens *= k;
        self.steps *= k;
        self.fixed_s *= k;
        self
    }

    /// The same seconds under any coefficients, in fewer ops: equal ops summed into one
    /// (`max(k·m/η_m, k·c/η_c) = k·max(m/η_m, c/η_c)`), so that a run of many
    /// identical sequences is as cheap to evaluate as one.
    pub fn merged(mut self) -> StepOps {
        let key = |o: &OpTime| (o.mem_s.to_bits(), o.comp_s.to_bits());
        self.ops.sort_by_key(key);
        let mut out: Vec<OpTime> = Vec::new();
        let mut last = None;
        let mut count = 0.0;
        for o in self.ops {
            if last == Some(key(&o)) {
                count += 1.0;
                continue;
            }
            if let Some(p) = out.last_mut() {
                p.mem_s *= count;
                p.comp_s *= count;
            }
            out.push(o);
            last = Some(key(&o));
            count = 1.0;
        }
        if let Some(p) = out.last_mut() {
            p.mem_s *= count;
            p.comp_s *= count;
        }
        self.ops = out;
        self
    }

    /// These steps followed by `next`: a run's ops, whose seconds are the sum of its
    /// steps'.
    pub fn then(mut self, next: StepOps) -> StepOps {
        self.ops.extend(next.ops);
        self.layers += next.layers;
        self.seqs += next.seqs;
        self.tokens += next.tokens;
        self.steps += next.steps;
        self.fixed_s += next.fixed_s;
        self
    }

    /// How busy the chip is: the share of the step its bottleneck resource works at
    /// full rate (1 = at the datasheet's peak the whole step).
    pub fn utilization(&self, c: &Coeffs) -> f64 {
        (self.peak_seconds() / self.seconds(c).max(f64::MIN_POSITIVE)).min(1.0)
    }

    /// Seconds the step would take at the datasheet's peak rates, without overheads.
    pub fn peak_seconds(&self) -> f64 {
        self.ops.iter().map(|o| o.mem_s.max(o.comp_s)).sum()
    }
}

/// The ops of `step` on `hw`.
pub fn step_ops(m: &ModelCost, hw: &Hardware, step: &StepShape) -> StepOps {
    let t = step.tokens() as f64;
    let logits = step.seqs() as f64;
    let mut ops = Vec::with_capacity(m.n_layer() * 10 + 2);
    // Tensor parallelism splits every matrix, and attention by heads, over `tp` chips.
    let tp = hw.tp.max(1) as f64;
    let mat = |bytes: f64, macs: f64, rows_in_out: f64, n: f64, f: WeightFormat| OpTime {
        mem_s: (bytes / tp + n * rows_in_out * hw.act_bytes) / hw.bandwidth,
        comp_s: hw.product_s(f, macs / tp, n),
    };
    for l in &m.layers {
        let kv_pos = m.kv_bytes_per_layer_position(l, hw.kv) as f64;
        // A layer without K/V heads attends to nothing.
        let per_pos_flops = if l.kv_heads > 0 {
            4.0 * (m.n_head * m.head_dim) as f64
        } else {
            0.0
        };
        for w in &l.dense {
            let io = (w.rows + w.cols) as f64;
            ops.push(mat(w.bytes as f64, w.macs() as f64, io, t, w.format));
        }
        if let Some(e) = &l.moe {
            // Experts a step touches: each token picks top_k of n_expert; the expected
            // number of distinct ones is read once each.
            let n = e.n_expert as f64;
            let touched = n * (1.0 - (1.0 - e.top_k as f64 / n).powf(t));
            let io: f64 = e.expert.iter().map(|w| (w.rows + w.cols) as f64).sum();
            let f = e
                .expert
                .first()
                .map_or(WeightFormat::Ggml(GgmlType::BF16), |w| w.format);
            let macs = e.expert_macs() as f64 * e.top_k as f64;
            ops.push(mat(
                touched * e.expert_bytes() as f64,
                macs,
                io * e.top_k as f64,
                t,
                f,
            ));
        }
        // At a measured rate, attention's units (a token and a K/V head) are shared out
        // whole among the threads: 3 units on 2 threads take as long as 4.
        let units = (t * l.kv_heads as f64).max(1.0);
        let threads = hw.threads.max(1.0);
        let shared = threads * units / ((units / threads).ceil() * threads);
        for c in step.chunks() {
            // A chunk reads the cache its tokens see once and writes its own K/V.
            let end = c.start + c.n;
            let seen = l.window.map_or(end, |w| w.min(end)) as f64;
            let bytes = (seen + c.n as f64) * kv_pos;
            let flops = attended_sum(c.start, c.n, l.window) as f64 * per_pos_flops;
            ops.push(OpTime {
                mem_s: bytes / tp / hw.bandwidth,
                comp_s: match hw.attention_macs {
                    Some([decode, chunk]) => {
                        let per_thread = if c.n == 1 { decode } else { chunk };
                        flops / 2.0 / tp / (per_thread * shared)
                    }
                    None => flops / tp / hw.ops_at(hw.attention),
                },
            });
        }
    }
    let o = &m.output;
    let io = (o.rows + o.cols) as f64;
    ops.push(mat(o.bytes as f64, o.macs() as f64, io, logits, o.format));
    // Embedding lookups: one row per token.
    let row = m.embed.bytes as f64 / m.embed.rows.max(1) as f64;
    ops.push(OpTime {
        mem_s: t * row / hw.bandwidth,
        comp_s: 0.0,
    });
    // Two all-reduces of the step's hidden states per layer (after attention and after
    // the feed-forward block), each moving 2 (tp - 1) / tp of them per chip (a ring) and
    // paying its latency.
    let comm_s = if hw.tp > 1 {
        let bytes = t * m.dim as f64 * hw.act_bytes * 2.0 * (tp - 1.0) / tp;
        2.0 * m.n_layer() as f64 * (bytes / hw.interconnect + hw.allreduce_latency_s)
    } else {
        0.0
    };
    let vector_s = hw.vector.map_or(0.0, |[norm, silu, gelu, rope]| {
        let per_token: f64 = m
            .layers
            .iter()
            .map(|l| {
                let v = &l.vector;
                let act = match v.act {
                    // gpt-oss's clamped SwiGLU: one exponential per element, as SiLU
                    // (not measured on its own).
                    Glu::Silu | Glu::SwigluOai => silu,
                    Glu::GeluTanh => gelu,
                };
                v.norm as f64 / norm + v.glu as f64 / act + v.rope as f64 / rope
            })
            .sum();
        per_token * t
    });
    StepOps {
        ops,
        // One CPU thread hands nothing off between layers (see the 1-thread decodes in
        // docs/PLANNER.md, predicted 21-29% slow while this overhead was paid).
        layers: if hw.handoffs { m.n_layer() as f64 } else { 0.0 },
        seqs: step.seqs() as f64,
        tokens: t,
        steps: 1.0,
        fixed_s: vector_s + comm_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{LayerCost, MatCost, VectorOps, WeightFormat};
    use tuili_gguf::GgmlType;
    use tuili_models::KvType;

    #[test]
    fn runs_cost_the_sum_of_their_steps() {
        let op = |m: f64, c: f64| OpTime {
            mem_s: m,
            comp_s: c,
        };
        let step = |ops: Vec<OpTime>| StepOps {
            ops,
            layers: 4.0,
            seqs: 2.0,
            tokens: 3.0,
            steps: 1.0,
            fixed_s: 1e-6,
        };
        let a = step(vec![op(1e-3, 2e-4), op(1e-4, 3e-3)]);
        let b = step(vec![op(2e-4, 1e-4), op(2e-4, 1e-4), op(5e-5, 1e-3)]);
        let run = a.clone().then(b.clone().times(3.0));
        for c in [
            Coeffs::DATASHEET_ACCELERATOR,
            Coeffs {
                eta_mem: 0.3,
                eta_comp: 0.9,
                seq_s: 1e-5,
                token_s: 2e-6,
                ..Coeffs::DATASHEET
            },
        ] {
            let want = a.seconds(&c) + 3.0 * b.seconds(&c);
            assert!((run.seconds(&c) / want - 1.0).abs() < 1e-12);
            let merged = run.clone().merged();
            assert!((merged.seconds(&c) / want - 1.0).abs() < 1e-12);
            assert_eq!(merged.ops.len(), 4, "the two equal ops of b are one");
        }
    }

    fn mat(rows: usize, cols: usize) -> MatCost {
        let format = WeightFormat::Ggml(GgmlType::F16);
        MatCost {
            rows,
            cols,
            format,
            bytes: format.bytes(rows, cols),
        }
    }

    /// The datasheet's rates reached, no overheads.
    const FULL_RATE: Coeffs = Coeffs {
        eta_mem: 1.0,
        eta_comp: 1.0,
        layer_s: 0.0,
        step_s: 0.0,
        seq_s: 0.0,
        token_s: 0.0,
    };

    /// A 2-layer model of 1M-parameter matrices.
    fn tiny() -> ModelCost {
        let layer = LayerCost {
            dense: vec![mat(1024, 1024); 7],
            moe: None,
            window: None,
            kv_heads: 8,
            vector: VectorOps {
                norm: 2048,
                glu: 1024,
                act: Glu::Silu,
                rope: 2048,
            },
        };
        ModelCost {
            arch: "llama".into(),
            n_head: 8,
            n_kv_head: 8,
            head_dim: 128,
            dim: 1024,
            ctx_len: 4096,
            layers: vec![layer; 2],
            embed: mat(1000, 1024),
            output: mat(1000, 1024),
            tied: true,
            vector_bytes: 0,
            vector_params: 0,
        }
    }

    fn hw(bw: f64, flops: f64) -> Hardware {
        Hardware {
            bandwidth: bw,
            ops: [flops; 5],
            kernels: Vec::new(),
            matvec: Vec::new(),
            vector: None,
            attention_macs: None,
            threads: 1.0,
            tp: 1,
            interconnect: 1e11,
            allreduce_latency_s: 1e-6,
            handoffs: true,
            act_bytes: 2.0,
            attention: Precision::Bf16,
            kv: KvFormat {
                k: KvType::F16,
                v: KvType::F16,
            },
        }
    }

    #[test]
    fn one_cpu_thread_hands_nothing_off() {
        let chips = crate::chip::load_all(None).expect("profiles");
        let kv = KvFormat {
            k: KvType::F16,
            v: KvType::F16,
        };
        let m = tiny();
        let layers = |chip: &str, threads: Option<usize>| {
            let c = crate::chip::find(&chips, chip).expect("a profile");
            step_ops(&m, &Hardware::of(c, threads, kv), &StepShape::decode(1, 8)).layers
        };
        assert_eq!(layers("ryzen-7840u", Some(1)), 0.0);
        assert_eq!(layers("ryzen-7840u", Some(2)), m.n_layer() as f64);
        assert_eq!(layers("l4", None), m.n_layer() as f64);
    }

    #[test]
    fn decode_is_bound_by_bytes_and_prefill_by_flops() {
        let m = tiny();
        let c = FULL_RATE;
        let h = hw(1e12, 1e15);
        let decode = step_ops(&m, &h, &StepShape::decode(1, 0)).seconds(&c);
        // 14 matrices of 2 MiB + the output's 2 MB, at 1 TB/s: about 31 µs.
        let weights = 14.0 * 1024.0 * 1024.0 * 2.0 + 1000.0 * 1024.0 * 2.0;
        assert!((decode - weights / 1e12).abs() / decode < 0.01, "{decode}");
        // 4096 tokens: 2 · 14M · 4096 FLOPs at 100 TFLOPS ≈ 1.2 ms, above the 14 × 18 MB
        // of weights and activations (0.25 ms).
        let h = hw(1e12, 1e14);
        let prefill = step_ops(&m, &h, &StepShape::prefill(0, 4096)).seconds(&c);
        // Attention: 4 FLOPs per head dimension per attended position, 2 layers.
        let attention = 2.0 * 4.0 * 1024.0 * (4096.0 * 4097.0 / 2.0);
        let flops = 2.0 * 14.0 * 1024.0 * 1024.0 * 4096.0 + attention;
        assert!(
            prefill > flops / 1e14 && prefill < 1.2 * flops / 1e14,
            "{prefill}"
        );
        // Halving η_comp slows the compute-bound step, not the memory-bound one.
        let half = Coeffs { eta_comp: 0.5, ..c };
        let d2 = step_ops(&m, &h, &StepShape::decode(1, 0)).seconds(&half);
        assert!((d2 - decode).abs() / decode < 0.01);
        let p2 = step_ops(&m, &h, &StepShape::prefill(0, 4096)).seconds(&half);
        assert!(p2 > 1.8 * prefill, "{p2} vs {prefill}");
    }

    #[test]
    fn overheads_scale_with_their_counts() {
        let m = tiny();
        let c = Coeffs {
            layer_s: 1.0,
            step_s: 10.0,
            seq_s: 100.0,
            token_s: 1000.0,
            ..FULL_RATE
        };
        let ops = step_ops(&m, &hw(1e12, 1e15), &StepShape::decode(3, 5));
        assert_eq!(ops.overhead(&c), 2.0 + 10.0 + 300.0 + 3000.0);
    }

    #[test]
    fn tensor_parallelism_splits_the_weights_and_pays_the_all_reduces() {
        let m = tiny();
        let c = FULL_RATE;
        let one = hw(1e12, 1e15);
        let two = Hardware {
            tp: 2,
            ..one.clone()
        };
        let step = StepShape::decode(1, 0);
        let (a, b) = (step_ops(&m, &one, &step), step_ops(&m, &two, &step));
        assert_eq!(a.fixed_s, 0.0);
        // 2 layers × 2 all-reduces, each 1 token × 1024 × 2 bytes × 2·(1/2) at 100 GB/s
        // plus 1 µs of latency.
        let want = 4.0 * (2048.0 / 1e11 + 1e-6);
        assert!((b.fixed_s - want).abs() < 1e-15, "{}", b.fixed_s);
        // Over 8 chips a ring moves 2·7/8 of the states; the latency is per all-reduce.
        let eight = Hardware { tp: 8, ..one };
        let want = 4.0 * (2048.0 * 2.0 * 7.0 / 8.0 / 1e11 + 1e-6);
        let got = step_ops(&m, &eight, &step).fixed_s;
        assert!((got - want).abs() < 1e-15, "{got}");
        assert!(b.roofline(&c) < 0.6 * a.roofline(&c));
    }

    #[test]
    fn sliding_windows_cap_attention_reads() {
        let mut m = tiny();
        let h = hw(1e12, 1e15);
        let long = StepShape::decode(1, 100_000);
        let global = step_ops(&m, &h, &long);
        for l in &mut m.layers {
            l.window = Some(512);
        }
        let local = step_ops(&m, &h, &long);
        let mem = |s: &StepOps| s.ops.iter().map(|o| o.mem_s).sum::<f64>();
        assert!(mem(&local) < 0.2 * mem(&global));
    }

    /// At a measured rate, attention costs its multiply-adds at that rate per thread (a
    /// decoding token's here), its units (a token and a K/V head) shared out whole: 3
    /// units on 2 threads take 2 units' time.
    #[test]
    fn attention_at_its_measured_rate_shares_whole_units() {
        let mut m = tiny();
        let (rate, threads) = (2e9, 2.0);
        let h = Hardware {
            attention_macs: Some([rate, 3.0 * rate]),
            threads,
            ..hw(1e15, 1e15)
        };
        for kv_heads in [3, 8] {
            for l in &mut m.layers {
                l.kv_heads = kv_heads;
            }
            // The same step 1000 positions further on: the difference is attention alone.
            let c = |pos| step_ops(&m, &h, &StepShape::decode(1, pos)).seconds(&FULL_RATE);
            let extra = c(2000) - c(1000);
            let macs = 2.0 * 1000.0 * (m.n_head * m.head_dim * m.layers.len()) as f64;
            let share = kv_heads as f64 / ((kv_heads as f64 / threads).ceil() * threads);
            let want = macs / (rate * threads * share);
            assert!(
                (extra / want - 1.0).abs() < 1e-6,
                "{kv_heads}: {extra} {want}"
            );
        }
    }
}
