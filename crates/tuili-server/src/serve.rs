//! Running the server: bind, load the model in the background (so `/health` answers 503
//! meanwhile), serve, and on SIGINT/SIGTERM stop accepting, let running requests finish
//! within a grace period, then return.

use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use tokio::net::TcpListener;
use tuili_engine::EngineHandle;
use tuili_tokenizer::ChatTemplate;

use crate::{app, AppState, ServerError};

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to bind (`127.0.0.1` unless told otherwise).
    pub host: String,
    /// TCP port (0: any free one).
    pub port: u16,
    /// How long running requests may take to finish after a shutdown signal.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".to_string(),
            port: 8080,
            grace: Duration::from_secs(30),
        }
    }
}

/// What the model loader returns: the started engine and the chat template, if any.
pub type Loaded = (EngineHandle, Option<ChatTemplate>);

/// Logs to stderr through `tracing` (info and above); a second call does nothing.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// Serves on `listener` until `shutdown` completes, then stops accepting connections and
/// waits up to `grace` for running requests before returning.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServerError> {
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests; waiting up to {grace:?} for running ones");
        st.begin_shutdown();
        let _ = began_tx.send(());
    });
    let deadline = async move {
        // Without a shutdown signal this never completes.
        if began_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server.into_future() => r.map_err(|source| ServerError::Io {
            context: "serving HTTP".to_string(),
            source,
        }),
        _ = deadline => {
            let running = state.engine().map(|e| e.metrics().running).unwrap_or(0);
            tracing::warn!("grace period over with {running} sequences still running; exiting");
            Ok(())
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The whole life of `tuili serve`: binds first, then runs `load` on a blocking thread while
/// `/health` answers 503, serves until SIGINT/SIGTERM and drains within the grace period.
pub fn run_blocking(
    opts: ServeOptions,
    state: AppState,
    load: impl FnOnce() -> Result<Loaded, String> + Send + 'static,
) -> Result<(), ServerError> {
    let io = |context: String| move |source| ServerError::Io { context, source };
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The model runs on the engine's own threads; HTTP needs little.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting the async runtime".to_string()))?;
    let result = rt.block_on(async move {
        let listener = TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .map_err(io(format!("binding {}:{}", opts.host, opts.port)))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address".to_string()))?;
        tracing::info!("listening on http://{addr} (model loading)");
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            // A panicking loader is a failed load, never a server stuck "loading".
            let loaded = catch_unwind(AssertUnwindSafe(load)).unwrap_or_else(|p| {
                Err(format!(
                    "the model loader panicked: {}",
                    tuili_engine::panic_message(p.as_ref())
                ))
            });
            let failure = match loaded {
                Ok((engine, template)) => match st.set_ready(engine, template) {
                    Ok(()) => {
                        tracing::info!("model loaded; serving {}", st.config().model_name);
                        return;
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => e,
            };
            tracing::error!("loading the model failed: {failure}");
            st.set_load_failed(failure.clone());
            let _ = failed_tx.send(failure);
        });
        let (load_err_tx, mut load_err_rx) = tokio::sync::oneshot::channel::<String>();
        let stop = async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                msg = failed_rx => match msg {
                    Ok(msg) => { let _ = load_err_tx.send(msg); }
                    // The loader finished fine: wait for a signal.
                    Err(_) => shutdown_signal().await,
                },
            }
        };
        serve(listener, state, stop, opts.grace).await?;
        match load_err_rx.try_recv() {
            Ok(msg) => Err(ServerError::Load(msg)),
            Err(_) => Ok(()),
        }
    });
    // A loader still running (a model still downloading) must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}
