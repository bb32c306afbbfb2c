//! `tuili serve`: the OpenAI-compatible HTTP server (crate `tuili-server`) over the
//! serving engine. Binds first and loads the model in the background, so `/health`
//! answers 503 until the model is ready.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tuili_engine::{kv_event_channel, start_engine_with, EngineConfig};
use tuili_server::{
    start_kv_publisher, AppState, KvEventsOptions, KvWireLayout, ServeOptions, ServerConfig,
};

use crate::device::{self, DeviceArgs};
use crate::{load, registry, route, ModelArgs};

/// `tuili serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on [default: 127.0.0.1, loopback unless told otherwise].
    #[arg(long = "host")]
    host: Option<String>,
    /// TCP port [default: 8080].
    #[arg(long = "port")]
    port: Option<u16>,
    /// Require `Authorization: Bearer KEY` on the API (default: $TUILI_API_KEY, else none).
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Most requests waiting to start; more are answered 429.
    #[arg(long = "max-queue", default_value_t = 64)]
    max_queue: usize,
    /// Most sequences decoding together.
    #[arg(long = "parallel", default_value_t = 8)]
    parallel: usize,
    /// Context length per sequence in tokens (capped at the model's).
    #[arg(
        short = 'c',
        long = "ctx",
        visible_alias = "ctx-size",
        default_value_t = 4096
    )]
    ctx: usize,
    /// Memory for the KV cache, e.g. 512M or 2G (default: room for --parallel full contexts,
    /// at most 2 GiB).
    #[arg(long = "kv-memory", value_parser = tuili_server::parse_size)]
    kv_memory: Option<usize>,
    /// Most tokens one engine step runs (prefill chunks plus decodes).
    #[arg(long = "max-batched-tokens", default_value_t = 512)]
    max_batched_tokens: usize,
    /// Write one JSON line per engine step to this file (what it ran, how long its
    /// forward pass and the whole step took): `tuili plan --steps` reads it.
    #[arg(long = "step-log")]
    step_log: Option<std::path::PathBuf>,
    /// Write one JSON line per request as it ends (arrival, prompt and generated
    /// tokens) to this file: the trace `tuili plan --simulate --trace` replays.
    #[arg(long = "trace")]
    trace: Option<std::path::PathBuf>,
    /// Name the model is served under (default: the known model's name or the file stem).
    #[arg(long = "model-name")]
    model_name: Option<String>,
    /// Largest request body, e.g. 4M.
    #[arg(long = "max-body", value_parser = tuili_server::parse_size, default_value = "4M")]
    max_body: usize,
    /// Seconds running requests get to finish after SIGINT/SIGTERM.
    #[arg(long = "grace", default_value_t = 30)]
    grace: u64,
    /// Publish prefix-cache events in vLLM's format on a ZMQ PUB socket bound here,
    /// e.g. tcp://*:5557 (default: none).
    #[arg(long = "kv-events-endpoint")]
    kv_events_endpoint: Option<String>,
    /// Answer replay requests (resend events after a sequence number) on a ZMQ ROUTER
    /// socket bound here, e.g. tcp://*:5558 (needs --kv-events-endpoint).
    #[arg(long = "kv-events-replay-endpoint", requires = "kv_events_endpoint")]
    kv_events_replay_endpoint: Option<String>,
    /// Topic, the first frame of every KV-event message.
    #[arg(
        long = "kv-events-topic",
        default_value = "",
        requires = "kv_events_endpoint"
    )]
    kv_events_topic: String,
    /// Events as tagged maps (map: vLLM now, vllm-router) or tagged arrays (array: vLLM's
    /// earlier layout, which older decoders read).
    #[arg(
        long = "kv-events-layout",
        default_value = "map",
        requires = "kv_events_endpoint"
    )]
    kv_events_layout: KvWireLayout,
    /// Serve behind the device/edge/cloud gateway of this routing config (route.toml, keys in
    /// docs/ROUTER.md), one process: this model is the config's `url = "local"` upstream
    /// without `local_args`. Listens on --host/--port when given, else on the config's
    /// `listen`; --api-key guards the gateway when the config names no key.
    #[arg(long = "route", value_name = "ROUTE_TOML")]
    route: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Served inside the router's process, behind its authentication.
    #[arg(skip)]
    in_process: bool,
}

impl ServeArgs {
    /// These arguments for an in-process upstream of `tuili route`: no `--route`, no key
    /// of its own (the gateway in front checks the client's), served under `model_name`
    /// unless a name was given. Errors when `--route` was given (a local upstream does
    /// not route again).
    pub fn in_process(mut self, model_name: &str) -> Result<Self, String> {
        if self.route.is_some() {
            return Err("--route cannot be given to a local upstream".into());
        }
        self.in_process = true;
        self.model_name
            .get_or_insert_with(|| model_name.to_string());
        Ok(self)
    }

    /// The name given with `--model-name`, if any.
    pub fn model_name(&self) -> Option<&str> {
        self.model_name.as_deref()
    }
}

/// Runs the server until SIGINT/SIGTERM.
pub fn serve(mut a: ServeArgs) -> Result<()> {
    tuili_server::init_logging();
    if let Some(config) = a.route.take() {
        let defaults = ServeOptions::default();
        let listen = (a.host.is_some() || a.port.is_some()).then(|| {
            let host = a.host.clone().unwrap_or(defaults.host);
            let port = a.port.unwrap_or(defaults.port);
            match host.contains(':') {
                true => format!("[{host}]:{port}"),
                false => format!("{host}:{port}"),
            }
        });
        let overrides = tuili_router::state::Overrides {
            listen,
            api_key: api_key(a.api_key.take()),
        };
        return route::serve_routed(&config, a, overrides);
    }
    let (opts, state, loader) = prepare(a)?;
    tuili_server::run_blocking(opts, state, loader).context("tuili serve")
}

/// The API key clients must send: `--api-key`, else `$TUILI_API_KEY`; none when empty.
fn api_key(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("TUILI_API_KEY").ok())
        .filter(|k| !k.is_empty())
}

/// Everything `tuili serve` runs, not yet running: where to listen, the app state, and the
/// model loader (`tuili route` serves a `url = "local"` upstream in-process from these).
pub fn prepare(
    a: ServeArgs,
) -> Result<(
    ServeOptions,
    AppState,
    impl FnOnce() -> Result<tuili_server::Loaded, String> + Send + 'static,
)> {
    let stem = |s: &str| {
        Path::new(s)
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
    };
    let known = registry::KNOWN_MODELS
        .iter()
        .find(|m| m.name == a.model.model);
    let default_name = match known {
        Some(m) => m.name.to_string(),
        None => stem(&a.model.model).unwrap_or_else(|| a.model.model.clone()),
    };
    let mut config = ServerConfig::new(a.model_name.clone().unwrap_or(default_name));
    config.model_aliases.push(a.model.model.clone());
    config.model_aliases.extend(stem(&a.model.model));
    if let Some(m) = known {
        config.model_aliases.extend(stem(m.file));
    }
    config.api_key = match a.in_process {
        true => None,
        false => api_key(a.api_key),
    };
    config.max_body_bytes = a.max_body;
    // Bound before the model loads, so that a bad endpoint fails at once.
    let kv_events = match a.kv_events_endpoint {
        Some(endpoint) => {
            let (tx, rx) = kv_event_channel();
            let opts = KvEventsOptions {
                endpoint,
                replay_endpoint: a.kv_events_replay_endpoint,
                topic: a.kv_events_topic,
                layout: a.kv_events_layout,
            };
            start_kv_publisher(opts, rx).map_err(anyhow::Error::msg)?;
            Some(tx)
        }
        None => None,
    };
    let engine_cfg = EngineConfig {
        kv_events,
        n_ctx: a.ctx,
        max_num_seqs: a.parallel,
        max_queue: a.max_queue,
        kv_memory_bytes: a.kv_memory,
        max_batched_tokens: a.max_batched_tokens,
        step_log: a.step_log,
        request_trace: a.trace,
        ..EngineConfig::default()
    };
    let model_args = a.model;
    let dargs = a.device.clone();
    let dev = a.device.device;
    dev.check_early()?;
    let loader = move || {
        let mut loaded = load::load(&model_args).map_err(|e| format!("{e:#}"))?;
        loaded.model.use_context(engine_cfg.n_ctx);
        let mcfg = loaded.model.config().clone();
        // The KV budget the engine will size its pool to (2 GiB unless --kv-memory).
        let kv_bytes = engine_cfg.kv_memory_bytes.unwrap_or(2 << 30);
        let dev = device::resolve(dev, &loaded.model, kv_bytes);
        let (k_type, v_type) = dargs.kv_types(dev);
        let engine_cfg = EngineConfig {
            k_type,
            v_type,
            ..engine_cfg
        };
        let make_runner = device::engine_runner(Arc::new(loaded.model), dev);
        let engine = start_engine_with(&mcfg, make_runner, Arc::new(loaded.tokenizer), engine_cfg)
            .map_err(|e| format!("starting the engine: {e}"))?;
        Ok((engine, loaded.template))
    };
    let defaults = ServeOptions::default();
    let opts = ServeOptions {
        host: a.host.unwrap_or(defaults.host),
        port: a.port.unwrap_or(defaults.port),
        grace: Duration::from_secs(a.grace),
    };
    Ok((opts, AppState::new(config), loader))
}
