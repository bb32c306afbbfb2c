//! `tuili route`: the device/edge/cloud gateway (crate `tuili-router`). An upstream with
//! `url = "local"` is a `tuili serve` app built from its `local_args` and called in this
//! process, so a laptop runs the gateway and its own model as one process.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use tuili_router::config::{self, Endpoint, RouteConfig};
use tuili_router::RouterState;
use tuili_server::AppState;

use crate::serve::{self, ServeArgs};

/// `tuili route`.
#[derive(Args)]
pub struct RouteArgs {
    /// The routing config (route.toml; keys in docs/ROUTER.md).
    #[arg(long = "config")]
    config: PathBuf,
    /// Check the config, print the resolved routing table and exit.
    #[arg(long = "check")]
    check: bool,
    /// Listen here instead of the config's `listen` (host:port).
    #[arg(long = "listen")]
    listen: Option<String>,
}

/// `local_args` read as `tuili serve` arguments.
#[derive(Parser)]
#[command(name = "local_args", no_binary_name = true)]
struct LocalServe {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The `tuili serve` arguments of a local upstream, serving under its first model name
/// unless `--model-name` is given.
fn local_args(u: &config::Upstream) -> Vec<String> {
    let mut args = u.local_args.clone();
    if !args
        .iter()
        .any(|a| a == "--model-name" || a.starts_with("--model-name="))
    {
        args.extend([
            "--model-name".to_string(),
            u.wire_model(&u.models[0]).to_string(),
        ]);
    }
    args
}

fn parse_local(u: &config::Upstream) -> Result<ServeArgs> {
    LocalServe::try_parse_from(local_args(u))
        .map(|l| l.serve)
        .map_err(|e| {
            anyhow::anyhow!(
                "upstream '{}': local_args: {}",
                u.name,
                e.render().to_string().trim()
            )
        })
}

/// Starts the in-process app of every local upstream; the models load in the background
/// (their `/health` answers 503 meanwhile, so the probe keeps them out until ready).
fn start_locals(cfg: &RouteConfig) -> Result<HashMap<String, axum::Router>> {
    let mut apps = HashMap::new();
    for u in cfg
        .upstreams
        .iter()
        .filter(|u| u.endpoint == Endpoint::Local)
    {
        let (_, state, loader) = serve::prepare(parse_local(u)?)?;
        apps.insert(u.name.clone(), tuili_server::app(state.clone()));
        let name = u.name.clone();
        tokio::task::spawn_blocking(move || load_local(&name, state, loader));
    }
    Ok(apps)
}

fn load_local(
    name: &str,
    state: AppState,
    loader: impl FnOnce() -> Result<tuili_server::Loaded, String>,
) {
    let failure = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(loader)) {
        Ok(Ok((engine, template))) => match state.set_ready(engine, template) {
            Ok(()) => {
                tracing::info!("local upstream {name}: model loaded");
                return;
            }
            Err(e) => e.to_string(),
        },
        Ok(Err(e)) => e,
        Err(p) => format!(
            "the model loader panicked: {}",
            tuili_engine::panic_message(p.as_ref())
        ),
    };
    tracing::error!("local upstream {name}: loading failed: {failure}");
    state.set_load_failed(failure);
}

/// Runs the gateway until SIGINT/SIGTERM (SIGHUP reloads the config).
pub fn route(a: RouteArgs) -> Result<()> {
    tuili_server::init_logging();
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let mut cfg = config::parse(&text, &|v| std::env::var(v).ok())
        .with_context(|| format!("{}", a.config.display()))?;
    for u in cfg
        .upstreams
        .iter()
        .filter(|u| u.endpoint == Endpoint::Local)
    {
        parse_local(u)?;
    }
    if a.check {
        print!("{}", cfg.table());
        return Ok(());
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let path = a.config.clone();
    rt.block_on(async move {
        let locals = start_locals(&cfg)?;
        let listen = cfg.listen.clone();
        let state = RouterState::new(cfg, locals, Some(path))?;
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!("tuili route listening on http://{addr}");
        if let Err(e) = tuili_router::serve(listener, state, tuili_server::shutdown_signal()).await
        {
            bail!("tuili route: {e}");
        }
        Ok(())
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
