//! The subcommands that load a model.

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use tuili_engine::{KvType, SamplingParams, DEFAULT_KV_TYPE};
use tuili_models::{SamplingDefaults, SEQ_BLOCK};
use tuili_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

use crate::device::{self, DeviceArgs};
use crate::generate::{self, Options};
use crate::load::{self, tracing_line, Loaded};
use crate::{ModelArgs, SamplingArgs};

/// Default context window for `run` and `chat`.
const DEFAULT_CTX: usize = 4096;

/// `tuili run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Context window in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = DEFAULT_CTX)]
    ctx: usize,
    /// Wrap the prompt as a user turn in the model's chat template.
    #[arg(long = "chat")]
    chat: bool,
    /// System message for --chat (default: the template's own).
    #[arg(long = "system")]
    system: Option<String>,
    /// End the output before this string (repeatable: the first one found ends it).
    #[arg(long = "stop", value_parser = non_empty)]
    stop: Vec<String>,
    /// Report each token's log-probability and the N most likely tokens at its step.
    #[arg(long = "logprobs", value_name = "N")]
    logprobs: Option<usize>,
    /// `text`: the completion as it streams; `json`: one JSON object at the end (text,
    /// tokens, logprobs if asked for, finish reason, usage, timings).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// How `tuili run` prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The prompt (unless --chat) and the completion as it streams.
    Text,
    /// One JSON object when generation ends.
    Json,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("a stop string must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// `tuili chat`.
#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Context window in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = DEFAULT_CTX)]
    ctx: usize,
    /// Tokens to generate at most per answer.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: usize,
    /// System message (default: the template's own).
    #[arg(long = "system")]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `tuili tokenize`.
#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text.
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Print only the list of ids.
    #[arg(long = "ids")]
    ids: bool,
    /// Do not add BOS/EOS even if the model's metadata asks for them.
    #[arg(long = "no-special")]
    no_special: bool,
}

/// `tuili perplexity`.
#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file.
    #[arg(short = 'f', long = "file")]
    file: std::path::PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Evaluate at most this many chunks (default: all).
    #[arg(long = "chunks")]
    chunks: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The sampling settings of a run: each flag given, else what the model file recommends
/// (`general.sampling.*`), else llama.cpp's command-line default.
fn sampling_params(s: &SamplingArgs, model: &SamplingDefaults) -> SamplingParams {
    let seed = s.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    if *model != SamplingDefaults::default() {
        tracing_line(&format!(
            "sampling defaults from the model file: {}",
            describe(model)
        ));
    }
    let base = SamplingParams::default().with_model_defaults(model);
    SamplingParams {
        temperature: s.temp.unwrap_or(base.temperature),
        top_k: s.top_k.unwrap_or(base.top_k),
        top_p: s.top_p.unwrap_or(base.top_p),
        min_p: s.min_p.unwrap_or(base.min_p),
        repeat_penalty: s.repeat_penalty.unwrap_or(base.repeat_penalty),
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed,
        ..base
    }
}

/// `temp 0.6, top_k 20`: the settings a model file recommends.
fn describe(m: &SamplingDefaults) -> String {
    let mut out = Vec::new();
    let mut f = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push(format!("{name} {v}"));
        }
    };
    f("temp", m.temperature.map(|v| v.to_string()));
    f("top_k", m.top_k.map(|v| v.to_string()));
    f("top_p", m.top_p.map(|v| v.to_string()));
    f("min_p", m.min_p.map(|v| v.to_string()));
    f("repeat_penalty", m.repeat_penalty.map(|v| v.to_string()));
    f("penalty_last_n", m.penalty_last_n.map(|v| v.to_string()));
    out.join(", ")
}

/// Renders `messages` through the model's template, ready for the assistant's turn.
fn render_chat(
    template: Option<&ChatTemplate>,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
) -> Result<Vec<u32>> {
    let template = template.context("this model has no chat template (tokenizer.chat_template)")?;
    let text = template.render(messages, true)?;
    // The template writes BOS itself where the model wants one.
    Ok(tokenizer.encode(&text, false, true))
}

/// `tuili run`: one prompt, streamed through an engine with one sequence slot.
pub fn run(a: RunArgs) -> Result<()> {
    a.device.device.check_early()?;
    let Loaded {
        model,
        tokenizer,
        template,
        ..
    } = load::load(&a.model)?;
    let ids = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", &a.prompt));
        render_chat(template.as_ref(), &tokenizer, &msgs)?
    } else {
        tokenizer.encode(&a.prompt, true, false)
    };
    let sampling = sampling_params(&a.sampling, &model.config().sampling);
    let engine = generate::start(model, tokenizer, &a.device, a.ctx)?;
    let opts = Options {
        max_tokens: a.n_predict,
        sampling,
        stop: a.stop,
        logprobs: a.logprobs,
    };
    let req = generate::request(&engine, ids, &opts)?;
    let text = a.output == Output::Text;
    let mut stdout = std::io::stdout().lock();
    if text && !a.chat {
        // Echo the prompt as llama.cpp does, so the output reads as one text.
        write!(stdout, "{}", a.prompt)?;
        stdout.flush()?;
    }
    let g = generate::stream(&engine, req, |t| {
        if text {
            let _ = stdout.write_all(t.as_bytes());
            let _ = stdout.flush();
        }
    })?;
    if text {
        writeln!(stdout)?;
        if a.logprobs.is_some() {
            writeln!(stdout, "\nlogprobs (token, logprob | most likely):")?;
            for line in g.logprob_lines() {
                writeln!(stdout, "{line}")?;
            }
        }
    } else {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&g.to_json(a.logprobs.is_some()))?
        )?;
    }
    tracing_line(&format!("\n{}", g.stats_line()));
    Ok(())
}

/// `tuili chat`: an interactive conversation on stdin/stdout. Each turn submits the whole
/// conversation; the engine's prefix cache runs only what the turn adds.
pub fn chat(a: ChatArgs) -> Result<()> {
    a.device.device.check_early()?;
    let Loaded {
        model,
        tokenizer,
        template,
        ..
    } = load::load(&a.model)?;
    if template.is_none() {
        bail!("this model has no chat template (tokenizer.chat_template)");
    }
    let sampling = sampling_params(&a.sampling, &model.config().sampling);
    let engine = generate::start(model, tokenizer, &a.device, a.ctx)?;
    let tokenizer = engine.tokenizer().clone();
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::new("system", s));
    }
    eprintln!("chat with the model; an empty line or Ctrl-D ends, /reset starts over");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    for turn in 0u64.. {
        eprint!("> ");
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        if line == "/reset" {
            messages.retain(|m: &ChatMessage| m.role == "system");
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let ids = render_chat(template.as_ref(), &tokenizer, &messages)?;
        let opts = Options {
            max_tokens: a.n_predict,
            // A fresh draw each turn, reproducible from --seed.
            sampling: SamplingParams {
                seed: sampling.seed.wrapping_add(turn),
                ..sampling.clone()
            },
            stop: Vec::new(),
            logprobs: None,
        };
        let mut stdout = std::io::stdout().lock();
        let result = generate::request(&engine, ids, &opts).and_then(|req| {
            generate::stream(&engine, req, |t| {
                let _ = stdout.write_all(t.as_bytes());
                let _ = stdout.flush();
            })
        });
        writeln!(stdout)?;
        match result {
            Ok(g) => {
                tracing_line(&format!("\n{}", g.stats_line()));
                messages.push(ChatMessage::new("assistant", &g.text));
            }
            Err(e) => {
                // The conversation no longer fits: say so and keep the chat usable.
                eprintln!("error: {e:#}");
                messages.pop();
            }
        }
    }
    Ok(())
}

/// `tuili info`: the devices, then the model (unless `devices_only`).
pub fn info(a: ModelArgs, devices_only: bool) -> Result<()> {
    for line in device::device_lines() {
        println!("{line}");
    }
    if devices_only {
        return Ok(());
    }
    println!();
    let l = load::load(&a)?;
    let cfg = l.model.config();
    let n_params: u64 = l.file.tensors().iter().map(|t| t.n_elements()).sum();
    let bytes: u64 = l.file.tensors().iter().map(|t| t.n_bytes).sum();
    let name = l
        .file
        .get("general.name")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    println!("name:          {name}");
    println!("architecture:  {}", cfg.arch.name());
    println!("parameters:    {:.1} M", n_params as f64 / 1e6);
    if cfg.uniform_layers() {
        println!(
            "layers:        {} (dim {}, heads {} / kv {} of {}, ffn {})",
            cfg.n_layer, cfg.dim, cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.ffn_dim
        );
    } else {
        // One "heads/kv:ffn" per layer (deci); 0/0 is a layer without attention.
        let shapes: Vec<String> = (cfg.layers.iter())
            .map(|s| format!("{}/{}:{}", s.n_head, s.n_kv_head, s.ffn_dim))
            .collect();
        println!(
            "layers:        {} (dim {}, heads of {}; per layer heads/kv:ffn {})",
            cfg.n_layer,
            cfg.dim,
            cfg.head_dim,
            shapes.join(" ")
        );
    }
    println!("vocabulary:    {} tokens", cfg.vocab);
    println!(
        "context:       {} tokens (rope base {})",
        cfg.ctx_len, cfg.rope_base
    );
    let mut types: Vec<(String, usize, u64)> = Vec::new();
    for t in l.file.tensors() {
        match types.iter_mut().find(|(n, _, _)| *n == t.ty.name()) {
            Some((_, c, b)) => {
                *c += 1;
                *b += t.n_bytes;
            }
            None => types.push((t.ty.name().to_string(), 1, t.n_bytes)),
        }
    }
    let types: Vec<String> = types
        .iter()
        .map(|(n, c, b)| format!("{n} x{c} ({:.1} MiB)", *b as f64 / (1 << 20) as f64))
        .collect();
    println!("tensor types:  {}", types.join(", "));
    println!("weights:       {:.1} MiB", bytes as f64 / (1 << 20) as f64);
    let t = DEFAULT_KV_TYPE;
    // As the engine sizes one sequence: local layers hold their window plus one step.
    let engine = tuili_engine::EngineConfig::default();
    let (step, bs) = (engine.max_batched_tokens, engine.block_size);
    let kv_bytes = |ctx: usize, t: KvType| match cfg.max_window() {
        Some(_) => cfg.kv_cache_bytes_windowed(ctx, step, bs, t, t),
        None => cfg.kv_cache_bytes(ctx, t, t),
    };
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    for ctx in [DEFAULT_CTX, cfg.ctx_len] {
        let kv = kv_bytes(ctx, t);
        println!(
            "memory @ {ctx:>6} ctx: {:.1} MiB (weights {:.1} + {t} KV cache {:.1})",
            mib(bytes as usize + kv),
            mib(bytes as usize),
            mib(kv)
        );
    }
    if let Some(w) = cfg.max_window() {
        let local = cfg.n_local_layers();
        let held = tuili_models::local_blocks_needed(w, step, bs) * bs;
        println!(
            "sliding window: {local} of {} layers local (window {w}); their KV holds {held} \
             positions (the window plus a step of {step}) at any context",
            cfg.n_layer
        );
        println!(
            "  (every layer at every position: {:.1} MiB @ {DEFAULT_CTX}, {:.1} MiB @ {})",
            mib(cfg.kv_cache_bytes(DEFAULT_CTX, t, t)),
            mib(cfg.kv_cache_bytes(cfg.ctx_len, t, t)),
            cfg.ctx_len
        );
    }
    let mib = |t: KvType| mib(kv_bytes(DEFAULT_CTX, t));
    let each: Vec<String> = KvType::ALL
        .iter()
        .filter(|t| t.check_head_dim(cfg.head_dim).is_ok())
        .map(|&t| format!("{t} {:.1} MiB", mib(t)))
        .collect();
    println!(
        "KV @ {DEFAULT_CTX:>6} ctx: {} (--cache-type-k/-v)",
        each.join(", ")
    );
    println!(
        "chat template: {}",
        if l.template.is_some() { "yes" } else { "no" }
    );
    Ok(())
}

/// `tuili tokenize`.
pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let file = load::open(&a.model)?;
    let tok = tuili_tokenizer::Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&a.prompt, !a.no_special, true);
    let mut out = std::io::stdout().lock();
    if a.ids {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else {
        for id in ids {
            let piece = String::from_utf8_lossy(tok.token_bytes(id));
            writeln!(out, "{id:6} -> '{piece}'")?;
        }
    }
    Ok(())
}

/// `tuili perplexity`.
pub fn perplexity(a: PerplexityArgs) -> Result<()> {
    a.device.device.check_early()?;
    let mut l = load::load(&a.model)?;
    l.model.use_context(a.ctx);
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut tokens = l.tokenizer.encode(&text, true, false);
    tracing_line(&format!("tokenized {} tokens", tokens.len()));
    if let Some(n) = a.chunks {
        tokens.truncate(n * a.ctx);
    }
    let bos = if l.tokenizer.add_bos() {
        l.tokenizer.bos()
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    let n_chunk = tokens.len() / a.ctx;
    tracing_line(&format!(
        "calculating perplexity over {n_chunk} chunks, n_ctx={}",
        a.ctx
    ));
    let dev = a.device.resolve(&l.model, a.ctx);
    let (k_type, v_type) = a.device.kv_types(dev);
    let kv = tuili_engine::runner::seq_layout(
        l.model.config(),
        a.ctx,
        tuili_engine::PPL_STEP,
        SEQ_BLOCK,
        k_type,
        v_type,
    );
    tracing_line(&format!(
        "KV cache: K {}, V {} on {dev}{}",
        kv.k_type,
        kv.v_type,
        match kv.n_local_blocks {
            0 => String::new(),
            n => format!(
                ", sliding-window layers in {n} blocks of {} (their window)",
                kv.block_size
            ),
        }
    ));
    let mut runner = device::runner(&l.model, dev, kv)?;
    let res = tuili_engine::perplexity_with(runner.as_mut(), &tokens, a.ctx, bos, |i, ppl| {
        eprint!("[{}]{ppl:.4},", i + 1);
    })?;
    eprintln!();
    tracing_line(&format!(
        "{} tokens scored in {:.1}s ({:.1} t/s evaluated)",
        res.scored,
        t0.elapsed().as_secs_f64(),
        (res.chunks * a.ctx) as f64 / t0.elapsed().as_secs_f64()
    ));
    println!("Final estimate: PPL = {:.4} +/- {:.5}", res.ppl, res.stderr);
    Ok(())
}
