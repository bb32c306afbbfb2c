//! `tuili route`: the device/edge/cloud gateway (crate `tuili-router`). An upstream with
//! `url = "local"` is a `tuili serve` app built from its `local_args` and called in this
//! process, so a laptop runs the gateway and its own model as one process;
//! `tuili serve -m MODEL --route route.toml` is the same with MODEL as the local upstream
//! that has no `local_args`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use tuili_router::config::{self, Endpoint, RouteConfig};
use tuili_router::state::Overrides;
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

/// The `tuili serve` arguments of a local upstream with `local_args`, served under its
/// first model name unless `--model-name` is given.
fn parse_local(u: &config::Upstream) -> Result<ServeArgs> {
    let named = |e: String| anyhow::anyhow!("upstream '{}': local_args: {e}", u.name);
    let args = LocalServe::try_parse_from(&u.local_args)
        .map_err(|e| named(e.render().to_string().trim().to_string()))?
        .serve;
    args.in_process(u.wire_model(&u.models[0])).map_err(named)
}

/// The in-process arguments of every local upstream, by name: from its `local_args`, or
/// for the one without (`tuili serve --route`), the command's own (`own`).
fn local_serve_args(
    cfg: &RouteConfig,
    mut own: Option<ServeArgs>,
) -> Result<Vec<(String, ServeArgs)>> {
    let own_at = cfg.check_locals(own.is_some())?;
    let mut out = Vec::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        if u.endpoint != Endpoint::Local {
            continue;
        }
        let args = match own.take_if(|_| own_at == Some(i)) {
            Some(a) => own_model(u, a)?,
            None => parse_local(u)?,
        };
        out.push((u.name.clone(), args));
    }
    Ok(out)
}

/// `tuili serve --route`'s own arguments as upstream `u`: its model name is one `u` offers.
fn own_model(u: &config::Upstream, a: ServeArgs) -> Result<ServeArgs> {
    if let Some(n) = a.model_name() {
        if !u.models.iter().any(|m| u.wire_model(m) == n) {
            bail!(
                "--model-name {n} is not a model of upstream '{}' (its models: {}); name it there or drop --model-name",
                u.name,
                u.models.join(", ")
            );
        }
    }
    a.in_process(u.wire_model(&u.models[0]))
        .map_err(anyhow::Error::msg)
}

/// Starts the in-process app of every local upstream; the models load in the background
/// (their `/health` answers 503 meanwhile, so the probe keeps them out until ready).
fn start_locals(locals: Vec<(String, ServeArgs)>) -> Result<HashMap<String, axum::Router>> {
    let mut apps = HashMap::new();
    for (name, args) in locals {
        let (_, state, loader) = serve::prepare(args)?;
        apps.insert(name.clone(), tuili_server::app(state.clone()));
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

fn read_config(path: &Path) -> Result<RouteConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    config::parse(&text, &|v| std::env::var(v).ok()).with_context(|| format!("{}", path.display()))
}

/// Runs the gateway until SIGINT/SIGTERM (SIGHUP reloads the config).
pub fn route(a: RouteArgs) -> Result<()> {
    tuili_server::init_logging();
    let cfg = read_config(&a.config)?;
    let locals = local_serve_args(&cfg, None).with_context(|| format!("{}", a.config.display()))?;
    if a.check {
        print!("{}", cfg.table());
        return Ok(());
    }
    let overrides = Overrides {
        listen: a.listen,
        api_key: None,
    };
    gateway(cfg, &a.config, locals, overrides)
}

/// `tuili serve --route`: the gateway of `config` with `own` (the command's model) as its
/// local upstream without `local_args`, in one process.
pub fn serve_routed(config: &Path, own: ServeArgs, overrides: Overrides) -> Result<()> {
    let cfg = read_config(config)?;
    let locals =
        local_serve_args(&cfg, Some(own)).with_context(|| format!("{}", config.display()))?;
    gateway(cfg, config, locals, overrides)
}

fn gateway(
    cfg: RouteConfig,
    path: &Path,
    locals: Vec<(String, ServeArgs)>,
    overrides: Overrides,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let path = path.to_path_buf();
    rt.block_on(async move {
        let locals = start_locals(locals)?;
        let state = RouterState::with_overrides(cfg, locals, Some(path), overrides)?;
        let listen = state.table().config.listen.clone();
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
