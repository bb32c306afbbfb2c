//! `tuili bench`: the command line of the benchmark harness (`tuili-bench`), and what
//! only this binary knows (model names, devices, status lines).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use tuili_bench::{membw, ChildKind, Format, Host, Options};
use tuili_engine::{Device, KvLayout, Runner};
use tuili_gguf::GgufFile;
use tuili_models::Model;

use crate::device::{self, DeviceArgs};
use crate::{load, registry, QuantArgs};

/// `tuili bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF files or known model names, comma-separated (default: the default model,
    /// unless --synthetic or --membw alone is given).
    #[arg(short = 'm', long = "model", value_delimiter = ',')]
    models: Vec<String>,
    /// Prompt lengths, comma-separated; each is one `ppN` test (0 = none).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Generation lengths, comma-separated; each is one `tgN` test (0 = none).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    n_gen: Vec<usize>,
    /// Sequences decoding side by side, comma-separated: each `-n` length also runs as
    /// one `tgNxS` test per count above 1.
    #[arg(long = "streams", value_delimiter = ',')]
    streams: Vec<usize>,
    /// Context depth: each sequence's cache holds this many positions before the timed
    /// runs, which start from there (llama-bench's `-d`). On the CPU they are filled
    /// with pseudo-random K/V written straight into the cache, not by a prefill: decode
    /// speed does not depend on the values, and a prefill of 16k tokens takes minutes.
    #[arg(short = 'd', long = "depth", default_value_t = 0)]
    depth: usize,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    quant: QuantArgs,
    /// Thread counts, comma-separated (default: all cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Timed repetitions of each test, after one warm-up run.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Md)]
    output: Format,
    /// Also measure sustained read bandwidth per thread count, and show each tg result
    /// as a percentage of the bound it sets (weight bytes per token ÷ seconds per token).
    #[arg(long = "membw")]
    membw: bool,
    /// Buffer size of --membw in MiB.
    #[arg(long = "membw-mib", default_value_t = membw::DEFAULT_BYTES >> 20)]
    membw_mib: usize,
    /// Also bench SmolLM2-135M-shaped random models of these weight types
    /// (e.g. q8_0,q4_0,q4_k,f16), written once into --synthetic-dir.
    #[arg(long = "synthetic", value_delimiter = ',')]
    synthetic: Vec<String>,
    /// Where --synthetic models are written (default: $TUILI_HOME/bench).
    #[arg(long = "synthetic-dir")]
    synthetic_dir: Option<PathBuf>,
    /// Only write the --synthetic models and print their paths.
    #[arg(long = "write-only")]
    write_only: bool,
    /// Measure the kernels' tunables on this CPU again (under a second), cache them
    /// under $TUILI_HOME/tune, print what was measured, and exit.
    #[arg(long = "tune")]
    tune: bool,
    /// Internal: measure in this process (one model, one thread count).
    #[arg(long = "child", hide = true, value_enum)]
    child: Option<ChildKind>,
}

/// What `tuili bench` takes from this binary.
struct Tuili;

impl Host for Tuili {
    fn model_path(&self, name: &str) -> Result<PathBuf> {
        registry::resolve(name)
    }

    fn open(&self, path: &Path, quant: Option<&str>) -> Result<Arc<GgufFile>> {
        let quant = QuantArgs {
            quant: quant.map(str::to_string),
        };
        load::open_path(path, &quant)
    }

    fn runner<'m>(
        &self,
        model: &'m Model,
        device: Device,
        kv: KvLayout,
    ) -> Result<Box<dyn Runner + 'm>> {
        device::runner(model, device, kv)
    }

    fn status(&self, msg: &str) {
        load::tracing_line(msg);
    }
}

/// `tuili bench`.
pub fn bench(a: BenchArgs) -> Result<()> {
    if a.tune {
        return crate::tune::retune();
    }
    let options = Options {
        models: a.models,
        default_model: registry::DEFAULT_MODEL.to_string(),
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        streams: a.streams,
        device: a.device.device,
        cache_types: (a.device.cache_type_k, a.device.cache_type_v),
        depth: a.depth,
        threads: a.threads,
        reps: a.reps,
        output: a.output,
        membw: a.membw,
        membw_mib: a.membw_mib,
        synthetic: a.synthetic,
        synthetic_dir: a
            .synthetic_dir
            .unwrap_or_else(|| registry::home().join("bench")),
        write_only: a.write_only,
        quant: a.quant.quant,
        child: a.child,
    };
    tuili_bench::bench(&options, &Tuili)
}
