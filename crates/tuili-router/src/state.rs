//! The router's shared state: the current table (config plus upstream handles) behind a
//! lock that is held only to clone an `Arc`, so a reload swaps tables while requests in
//! flight keep the one they started with; what is learned about each upstream (breaker,
//! latency, load) lives by name and survives reloads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::breaker::{Breaker, BreakerState, RetryBudget};
use crate::config::{self, Endpoint, RouteConfig, Upstream};
use crate::metrics::{Metrics, UpstreamGauge};
use crate::predict::Observed;
use crate::upstream::{http_client, HttpClient, Transport};
use crate::RouterError;

/// What the router has learned about one upstream.
#[derive(Debug)]
pub struct Live {
    /// Its circuit breaker.
    pub breaker: Breaker,
    /// Latency and load.
    pub obs: Observed,
    /// Whether the last health probe succeeded (true until a probe says otherwise).
    pub up: bool,
    /// Why the last probe or request failed.
    pub last_error: Option<String>,
}

/// One upstream in a table.
pub struct Slot {
    /// Its config.
    pub cfg: Upstream,
    /// How to reach it.
    pub transport: Transport,
    /// Its shared live state.
    pub live: Arc<Mutex<Live>>,
}

impl Slot {
    /// Locks the live state (a poisoned lock is still usable: it holds plain numbers).
    pub fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A config with its upstreams ready to call.
pub struct Table {
    /// The config.
    pub config: RouteConfig,
    /// Upstreams in config order.
    pub slots: Vec<Slot>,
}

/// What the command line sets over the config file, at launch and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Listen here instead of the config's `listen`.
    pub listen: Option<String>,
    /// The client key when the config names none (`tuili serve --route`'s `--api-key`).
    pub api_key: Option<String>,
}

impl Overrides {
    /// `config` with these applied.
    pub fn apply(&self, mut config: RouteConfig) -> RouteConfig {
        if let Some(l) = &self.listen {
            config.listen = l.clone();
        }
        if config.api_key.is_none() {
            config.api_key = self.api_key.clone();
        }
        config
    }
}

/// Which upstream stores each Responses-API response the router passed on, so that a
/// request continuing one (`previous_response_id`) goes where its conversation is. Bounded:
/// the oldest entries go first.
#[derive(Default)]
struct Owners {
    by_id: HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

/// Responses remembered for `previous_response_id`.
const MAX_OWNERS: usize = 1 << 16;

struct Inner {
    owners: Mutex<Owners>,
    table: RwLock<Arc<Table>>,
    lives: Mutex<HashMap<String, Arc<Mutex<Live>>>>,
    locals: HashMap<String, axum::Router>,
    http: HttpClient,
    budget: Mutex<RetryBudget>,
    metrics: Metrics,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    next_id: std::sync::atomic::AtomicU64,
}

/// A cheap handle on the router's state.
#[derive(Clone)]
pub struct RouterState(Arc<Inner>);

impl RouterState {
    /// State over `config`; `locals` holds the in-process app of each `url = "local"`
    /// upstream by name; `config_path` is what a reload reads again.
    pub fn new(
        config: RouteConfig,
        locals: HashMap<String, axum::Router>,
        config_path: Option<PathBuf>,
    ) -> Result<Self, RouterError> {
        Self::with_overrides(config, locals, config_path, Overrides::default())
    }

    /// [`RouterState::new`] with command-line `overrides` over the file, kept on reload.
    pub fn with_overrides(
        config: RouteConfig,
        locals: HashMap<String, axum::Router>,
        config_path: Option<PathBuf>,
        overrides: Overrides,
    ) -> Result<Self, RouterError> {
        let config = overrides.apply(config);
        let r = &config.resilience;
        let budget = RetryBudget::new(r.retry_ratio, r.retry_min_per_s, Instant::now());
        let st = RouterState(Arc::new(Inner {
            owners: Mutex::default(),
            table: RwLock::new(Arc::new(Table {
                config: config.clone(),
                slots: Vec::new(),
            })),
            lives: Mutex::new(HashMap::new()),
            locals,
            http: http_client(&[]).map_err(|why| RouterError::Config {
                key: "upstream".into(),
                why,
            })?,
            budget: Mutex::new(budget),
            metrics: Metrics::default(),
            config_path,
            overrides,
            next_id: Default::default(),
        }));
        let table = st.build(config)?;
        *st.0.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        Ok(st)
    }

    fn build(&self, config: RouteConfig) -> Result<Table, RouterError> {
        let mut lives = self.0.lives.lock().unwrap_or_else(|p| p.into_inner());
        let r = &config.resilience;
        let open = Duration::from_millis(r.breaker_open_ms);
        let mut slots = Vec::new();
        for (i, u) in config.upstreams.iter().enumerate() {
            let transport = match u.endpoint {
                // An upstream with its own trust roots gets a client (and pool) of its own.
                Endpoint::Http { .. } if !u.ca_certs.is_empty() => {
                    Transport::Http(http_client(&u.ca_certs).map_err(|why| {
                        RouterError::Config {
                            key: format!("upstream[{i}].ca_file"),
                            why,
                        }
                    })?)
                }
                Endpoint::Http { .. } => Transport::Http(self.0.http.clone()),
                Endpoint::Local => Transport::Local(self.0.locals.get(&u.name).cloned().ok_or_else(|| RouterError::Config {
                    key: format!("upstream[{i}].url"),
                    why: format!("'{}' is a local upstream that was not started at launch; restart the router to add one", u.name),
                })?),
            };
            let live = lives
                .entry(u.name.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Live {
                        breaker: Breaker::new(r.breaker_failures, open),
                        obs: Observed::default(),
                        up: true,
                        last_error: None,
                    }))
                })
                .clone();
            live.lock()
                .unwrap_or_else(|p| p.into_inner())
                .breaker
                .retune(r.breaker_failures, open);
            slots.push(Slot {
                cfg: u.clone(),
                transport,
                live,
            });
        }
        self.0
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retune(r.retry_ratio, r.retry_min_per_s);
        Ok(Table { config, slots })
    }

    /// The current table; requests keep theirs for their whole life.
    pub fn table(&self) -> Arc<Table> {
        self.0
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the config file again and swaps it in; on error the old one stays.
    pub fn reload(&self) -> Result<(), RouterError> {
        let result = (|| {
            let path = self
                .0
                .config_path
                .as_ref()
                .ok_or_else(|| RouterError::Config {
                    key: "reload".into(),
                    why: "the router was started without a config file".into(),
                })?;
            let text = std::fs::read_to_string(path).map_err(|source| RouterError::Io {
                context: format!("reading {}", path.display()),
                source,
            })?;
            let config = self
                .0
                .overrides
                .apply(config::parse(&text, &|v| std::env::var(v).ok())?);
            let old = self.table();
            if config.listen != old.config.listen {
                tracing::warn!(
                    "reload: listen changed to {} but the socket stays on {} until a restart",
                    config.listen,
                    old.config.listen
                );
            }
            let table = self.build(config)?;
            *self.0.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
            Ok(())
        })();
        match &result {
            Ok(()) => {
                self.0.metrics.count("reloads");
                tracing::info!("config reloaded");
            }
            Err(e) => {
                self.0.metrics.count("reload_failures");
                tracing::error!("reload refused, the old config stays: {e}");
            }
        }
        result
    }

    /// Remembers that `upstream` stores the response `id`.
    pub fn remember_response(&self, id: &str, upstream: &str) {
        let mut o = self.0.owners.lock().unwrap_or_else(|p| p.into_inner());
        if o.by_id
            .insert(id.to_string(), upstream.to_string())
            .is_none()
        {
            o.order.push_back(id.to_string());
        }
        while o.order.len() > MAX_OWNERS {
            if let Some(old) = o.order.pop_front() {
                o.by_id.remove(&old);
            }
        }
    }

    /// The upstream that stores the response `id`, if the router passed it on.
    pub fn response_owner(&self, id: &str) -> Option<String> {
        let o = self.0.owners.lock().unwrap_or_else(|p| p.into_inner());
        o.by_id.get(id).cloned()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The retry budget.
    pub fn budget(&self) -> MutexGuard<'_, RetryBudget> {
        self.0.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new request id for the decision log.
    pub fn next_id(&self) -> u64 {
        self.0
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// The `/metrics` text, upstream gauges included.
    pub fn render_metrics(&self) -> String {
        let table = self.table();
        let now = Instant::now();
        let gauges: Vec<UpstreamGauge> = table
            .slots
            .iter()
            .map(|s| {
                let l = s.live();
                UpstreamGauge {
                    name: s.cfg.name.clone(),
                    tier: s.cfg.tier.as_str(),
                    in_flight: l.obs.in_flight,
                    breaker: match l.breaker.state(now) {
                        BreakerState::Closed => 0,
                        BreakerState::HalfOpen => 1,
                        BreakerState::Open => 2,
                    },
                    up: l.up,
                    ttft_ms: l.obs.predict_ttft(s.cfg.ttft_prior_ms),
                }
            })
            .collect();
        self.0.metrics.render(&gauges)
    }
}
