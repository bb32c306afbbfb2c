//! `tuili`: run, chat with, inspect and measure GGUF models.
#![forbid(unsafe_code)]

mod bench;
mod commands;
mod convert;
mod device;
mod download;
mod generate;
mod hub;
mod load;
mod ollama;
mod plan;
mod progress;
mod pull;
mod pypi;
mod quant_mix;
mod quantize;
mod registry;
mod route;
mod serve;
mod tune;

use clap::{Args, Parser, Subcommand};

/// An inference-first LLM runtime.
#[derive(Parser)]
#[command(name = "tuili", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that load a model.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face model directory, or a known model name (pulled on
    /// first use).
    #[arg(short = 'm', long = "model", default_value = registry::DEFAULT_MODEL)]
    pub model: String,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub quant: QuantArgs,
}

/// Quantize-on-load, shared by every command that loads a model (`bench` included).
#[derive(Args, Clone, Debug)]
pub struct QuantArgs {
    /// Quantize the weights while loading, to llama.cpp's type `QUANT` (Q8_0, Q6_K,
    /// Q4_K_M, ...): for Hugging Face directories and F32/F16/BF16 GGUF files.
    #[arg(long = "quant", value_name = "QUANT")]
    pub quant: Option<String>,
}

/// Sampling options. A flag left out takes the model file's recommendation
/// (`general.sampling.*`, from `generation_config.json` for a Hugging Face directory),
/// else the default shown.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy [default: the model's, else 0.8].
    #[arg(long = "temp")]
    pub temp: Option<f32>,
    /// Top-k (0 = off) [default: the model's, else 40].
    #[arg(long = "top-k")]
    pub top_k: Option<usize>,
    /// Top-p (1 = off) [default: the model's, else 0.95].
    #[arg(long = "top-p")]
    pub top_p: Option<f32>,
    /// Min-p (0 = off) [default: the model's, else 0.05].
    #[arg(long = "min-p")]
    pub min_p: Option<f32>,
    /// Repetition penalty over recent tokens (1 = off) [default: the model's, else 1].
    #[arg(long = "repeat-penalty")]
    pub repeat_penalty: Option<f32>,
    /// Presence penalty (0 = off).
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Frequency penalty (0 = off).
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed (default: from the clock).
    #[arg(long = "seed")]
    pub seed: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch a model into the cache: a known name (into $TUILI_HOME, default
    /// ~/.cache/tuili), a Hugging Face hub model (into the hub's cache, $HF_HOME) or an
    /// Ollama tag; prints the path to load.
    Pull {
        /// smollm2-135m, hf.co/OWNER/REPO[:QUANT], hf.co/OWNER/REPO/FILE.gguf,
        /// OWNER/REPO (safetensors), ollama:NAME[:TAG], ollama.com/library/NAME:TAG.
        #[arg(default_value = registry::DEFAULT_MODEL)]
        name: String,
    },
    /// List the pulled models with their sizes.
    List,
    /// Remove a pulled model from its cache.
    Rm {
        /// The name it was pulled by.
        name: String,
    },
    /// Generate text from a prompt, streaming it to stdout.
    Run(commands::RunArgs),
    /// Interactive multi-turn chat using the model's chat template.
    Chat(commands::ChatArgs),
    /// Print the devices tuili sees, then the model's architecture, parameters, tensor
    /// types, context and memory needed.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        /// List the devices only (no model is loaded).
        #[arg(long = "devices")]
        devices: bool,
    },
    /// Convert a Hugging Face model directory to a GGUF file.
    Convert(convert::ConvertArgs),
    /// Quantize a GGUF file or a Hugging Face directory to a GGUF of llama.cpp's type
    /// (Q8_0, Q4_K_M, ...), with llama.cpp's per-tensor mixture rules.
    Quantize(quantize::QuantizeArgs),
    /// Print the tokens of a text.
    Tokenize(commands::TokenizeArgs),
    /// Perplexity of a text file, computed as llama.cpp's llama-perplexity does.
    Perplexity(commands::PerplexityArgs),
    /// List the models tuili knows how to fetch.
    Models,
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Prompt and generation speed (llama-bench's pp/tg), and memory bandwidth.
    Bench(bench::BenchArgs),
    /// What a model will do on a chip: tokens/s, time to first token, memory fit,
    /// energy and cost, predicted from the chip's datasheet and calibrated runs.
    Plan(plan::PlanArgs),
    /// One OpenAI endpoint over device, edge and cloud upstreams (route.toml).
    Route(route::RouteArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pull { name } => pull::pull(&name).map(|p| println!("{}", p.display())),
        Command::List => pull::list(),
        Command::Rm { name } => pull::rm(&name),
        Command::Run(a) => commands::run(a),
        Command::Chat(a) => commands::chat(a),
        Command::Info { model, devices } => commands::info(model, devices),
        Command::Tokenize(a) => commands::tokenize(a),
        Command::Convert(a) => convert::convert(a),
        Command::Quantize(a) => quantize::quantize(a),
        Command::Perplexity(a) => commands::perplexity(a),
        Command::Serve(a) => serve::serve(a),
        Command::Bench(a) => bench::bench(a),
        Command::Plan(a) => plan::plan(a),
        Command::Route(a) => route::route(a),
        Command::Models => {
            for m in registry::KNOWN_MODELS {
                println!("{:<22} {:>12} bytes  {}", m.name, m.size, m.file);
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
