//! `route.toml`: read with unknown keys refused, then checked into a [`RouteConfig`] whose
//! every error names the key (`upstream[1].price_in`, `policy.default`, ...). The keys are
//! documented in `docs/ROUTER.md`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::detect::Detectors;
use crate::RouterError;

/// Where an upstream runs. The order (device, edge, cloud) is the local-first order and the
/// "larger tier" order of escalation when models do not say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// On the user's machine.
    Device,
    /// Nearby, shared.
    Edge,
    /// A data center or a commercial API.
    Cloud,
}

impl Tier {
    /// The lowercase name, as in the config and the metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Device => "device",
            Tier::Edge => "edge",
            Tier::Cloud => "cloud",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How candidates are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// The lowest predicted time to first token.
    Latency,
    /// The cheapest that meets the TTFT target (else the fastest).
    Cost,
    /// The nearest tier first (device, edge, cloud), fastest within a tier.
    LocalFirst,
}

impl PolicyKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Latency => "latency",
            PolicyKind::Cost => "cost",
            PolicyKind::LocalFirst => "local-first",
        }
    }
}

/// An upstream's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://host:port/prefix` or `https://...` (the prefix is what comes before
    /// `/chat/completions`, usually `/v1`).
    Http {
        /// `host:port`.
        authority: String,
        /// Path prefix without a trailing slash, e.g. `/v1`.
        prefix: String,
        /// Over TLS (`https://`).
        tls: bool,
    },
    /// A model served in this process (`url = "local"`).
    Local,
}

/// One upstream, checked.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Unique name.
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// Where it is.
    pub endpoint: Endpoint,
    /// The value for `Authorization: Bearer`, read from `api_key_env` at load.
    pub api_key: Option<String>,
    /// The environment variable named by `api_key_env`, for the routing table.
    pub api_key_env: Option<String>,
    /// `ca_file`: a PEM file of certificates trusted for this upstream's TLS beside the
    /// public roots (a private CA, a self-signed server).
    pub ca_file: Option<String>,
    /// Its certificates, read at load.
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Model names it serves (the router's names).
    pub models: Vec<String>,
    /// The router's model name -> the name this upstream expects in the body.
    pub model_map: BTreeMap<String, String>,
    /// Dollars per million prompt tokens.
    pub price_in: f64,
    /// Dollars per million completion tokens.
    pub price_out: f64,
    /// Privacy classes it may receive.
    pub privacy: Vec<String>,
    /// Milliseconds to the response head (a stream's first byte follows the head).
    pub timeout_ms: u64,
    /// Scrape its `/metrics` for queue depth, running sequences and KV use.
    pub scrape_metrics: bool,
    /// A prior for its TTFT in ms until observations come.
    pub ttft_prior_ms: f64,
    /// For `url = "local"`: the `tuili serve` arguments of the in-process model; empty for
    /// the model of `tuili serve --route` itself (see [`RouteConfig::check_locals`]).
    pub local_args: Vec<String>,
    /// Path the health probe GETs (from the host root; `/health` unless set).
    pub health_path: String,
}

impl Upstream {
    /// The name this upstream expects for the router's model `m`.
    pub fn wire_model<'a>(&'a self, m: &'a str) -> &'a str {
        self.model_map.get(m).map(String::as_str).unwrap_or(m)
    }
}

/// A named model group clients can ask for (`model = "<route name>"`).
#[derive(Debug, Clone)]
pub struct Route {
    /// The name clients send as `model`.
    pub name: String,
    /// Models from the smallest to the largest; escalation goes rightwards.
    pub models: Vec<String>,
    /// Its policy (default: `policy.default`).
    pub policy: PolicyKind,
    /// Its detectors (default: `policy.private_detectors`).
    pub detectors: Detectors,
    /// Escalation on for this route (default: `escalation.enabled`).
    pub escalation: bool,
}

/// Retry, breaker, hedging and deadline settings.
#[derive(Debug, Clone)]
pub struct Resilience {
    /// Most upstreams one request is tried on (first try included).
    pub max_attempts: usize,
    /// Retries earned per request (0.2: one retry per five requests on average).
    pub retry_ratio: f64,
    /// Retries always allowed per second, however few requests came.
    pub retry_min_per_s: f64,
    /// Consecutive failures that open an upstream's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses before letting one trial request through.
    pub breaker_open_ms: u64,
    /// Send a non-streaming request to a second upstream when the first has not answered
    /// within this many ms (0: off).
    pub hedge_after_ms: u64,
    /// Default whole-request deadline in ms (0: none); `x-tuili-deadline-ms` overrides.
    pub deadline_ms: u64,
}

/// Escalation settings.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// On for requests naming a route without its own setting.
    pub enabled: bool,
    /// Re-ask a larger model when the mean token logprob falls under this.
    pub min_mean_logprob: f64,
    /// Streaming: completion tokens held back (not sent) while deciding.
    pub stream_window: usize,
    /// A model that judges whole answers; escalation also when it doubts one.
    pub verifier: Option<Verifier>,
}

/// A verifier: a model asked whether an answer is right, its confidence read from the
/// probabilities of "yes" and "no" as its first token.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The model (or alias) asked; some upstream serves it.
    pub model: String,
    /// Escalate when `P(yes) / (P(yes) + P(no))` is under this.
    pub min_yes: f64,
    /// What the verifier is told before the question and the answer.
    pub instruction: String,
}

/// The verifier's instruction unless `escalation.verifier_prompt` sets one.
pub const DEFAULT_VERIFIER_PROMPT: &str = "You check answers. Read the question and the proposed answer, then reply with one word: yes if the answer is correct and complete, no otherwise.";

/// The whole checked config.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Bearer key clients must send, read from `api_key_env`.
    pub api_key: Option<String>,
    /// Upstreams in config order.
    pub upstreams: Vec<Upstream>,
    /// Alias -> model name.
    pub aliases: BTreeMap<String, String>,
    /// Routes by name.
    pub routes: Vec<Route>,
    /// Policy for requests naming a model directly.
    pub default_policy: PolicyKind,
    /// Detectors for requests naming a model directly.
    pub detectors: Detectors,
    /// Class of a request without header and without a detector match.
    pub default_class: String,
    /// Class given to a request that a detector matched.
    pub detected_class: String,
    /// TTFT target in ms for the cost policy when the request sets none (0: none).
    pub ttft_target_ms: f64,
    /// Retries, breaker, hedging, deadlines.
    pub resilience: Resilience,
    /// Escalation.
    pub escalation: Escalation,
    /// Prefix affinity: characters per block.
    pub affinity_block_chars: usize,
    /// Prefix affinity: blocks hashed (0: off).
    pub affinity_blocks: usize,
    /// Health/metrics probe period in ms.
    pub probe_interval_ms: u64,
    /// Dollars per million prompt/completion tokens the "all-cloud" comparison uses.
    pub reference_price: (f64, f64),
}

// ---- the file as written -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    api_key_env: Option<String>,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    breaker: RawBreaker,
    #[serde(default)]
    hedge: RawHedge,
    #[serde(default)]
    deadline: RawDeadline,
    #[serde(default)]
    escalation: RawEscalation,
    #[serde(default)]
    affinity: RawAffinity,
    #[serde(default)]
    probe: RawProbe,
    #[serde(default)]
    detector: Vec<RawDetector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    tier: Tier,
    url: String,
    api_key_env: Option<String>,
    ca_file: Option<String>,
    model: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    model_map: BTreeMap<String, String>,
    #[serde(default)]
    price_in: f64,
    #[serde(default)]
    price_out: f64,
    privacy: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    metrics: Option<bool>,
    ttft_ms: Option<f64>,
    #[serde(default)]
    local_args: Vec<String>,
    health_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    models: Vec<String>,
    policy: Option<PolicyKind>,
    detectors: Option<Vec<String>>,
    escalation: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<PolicyKind>,
    private_detectors: Option<Vec<String>>,
    default_class: Option<String>,
    detected_class: Option<String>,
    ttft_target_ms: Option<f64>,
    reference_price_in: Option<f64>,
    reference_price_out: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<usize>,
    budget_ratio: Option<f64>,
    min_per_second: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failures: Option<u32>,
    open_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHedge {
    after_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDeadline {
    default_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    enabled: Option<bool>,
    min_mean_logprob: Option<f64>,
    stream_window: Option<usize>,
    verifier: Option<String>,
    verifier_min: Option<f64>,
    verifier_prompt: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAffinity {
    block_chars: Option<usize>,
    blocks: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    interval_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    name: String,
    pattern: String,
}

fn bad(key: impl Into<String>, why: impl Into<String>) -> RouterError {
    RouterError::Config {
        key: key.into(),
        why: why.into(),
    }
}

fn non_negative(key: &str, v: f64) -> Result<f64, RouterError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(bad(key, format!("must be a number >= 0, got {v}")))
    }
}

/// Reads and checks a config; `env` looks up API-key variables (the process environment in
/// `tuili route`, a map in tests).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RouteConfig, RouterError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| RouterError::Toml(e.to_string()))?;
    let mut custom = Vec::new();
    for (i, d) in raw.detector.iter().enumerate() {
        custom.push((d.name.clone(), d.pattern.clone(), format!("detector[{i}]")));
    }
    let detectors = |key: &str, names: &[String]| Detectors::build(key, names, &custom);

    let mut upstreams: Vec<Upstream> = Vec::new();
    for (i, u) in raw.upstream.into_iter().enumerate() {
        let k = |f: &str| format!("upstream[{i}].{f}");
        if u.name.is_empty() {
            return Err(bad(k("name"), "must not be empty"));
        }
        if upstreams.iter().any(|o| o.name == u.name) {
            return Err(bad(k("name"), format!("'{}' is used twice", u.name)));
        }
        let endpoint = parse_url(&u.url).map_err(|why| bad(k("url"), why))?;
        let ca_certs = match &u.ca_file {
            None => Vec::new(),
            Some(_) if !matches!(endpoint, Endpoint::Http { tls: true, .. }) => {
                return Err(bad(k("ca_file"), "only an https:// upstream uses one"))
            }
            Some(path) => {
                crate::upstream::read_pem_certs(path).map_err(|why| bad(k("ca_file"), why))?
            }
        };
        if endpoint != Endpoint::Local && !u.local_args.is_empty() {
            return Err(bad(
                k("local_args"),
                "only an upstream with url = \"local\" takes local_args",
            ));
        }
        let mut models = u.models;
        if let Some(m) = u.model {
            models.insert(0, m);
        }
        if models.is_empty() || models.iter().any(String::is_empty) {
            return Err(bad(
                k("models"),
                "needs at least one non-empty model name (model or models)",
            ));
        }
        for from in u.model_map.keys() {
            if !models.contains(from) {
                return Err(bad(
                    k("model_map"),
                    format!("'{from}' is not one of its models {models:?}"),
                ));
            }
        }
        let api_key = match &u.api_key_env {
            Some(var) => match env(var) {
                Some(v) if !v.is_empty() => Some(v),
                _ => {
                    return Err(bad(
                        k("api_key_env"),
                        format!("environment variable {var} is not set"),
                    ))
                }
            },
            None => None,
        };
        let privacy = u.privacy.unwrap_or_else(|| vec!["public".to_string()]);
        if privacy.iter().any(String::is_empty) {
            return Err(bad(k("privacy"), "class names must not be empty"));
        }
        let timeout_ms = u.timeout_ms.unwrap_or(30_000);
        if timeout_ms == 0 {
            return Err(bad(k("timeout_ms"), "must be at least 1"));
        }
        upstreams.push(Upstream {
            name: u.name,
            tier: u.tier,
            scrape_metrics: u.metrics.unwrap_or(endpoint != Endpoint::Local),
            endpoint,
            api_key,
            api_key_env: u.api_key_env,
            ca_file: u.ca_file,
            ca_certs,
            models,
            model_map: u.model_map,
            price_in: non_negative(&k("price_in"), u.price_in)?,
            price_out: non_negative(&k("price_out"), u.price_out)?,
            privacy,
            timeout_ms,
            ttft_prior_ms: non_negative(&k("ttft_ms"), u.ttft_ms.unwrap_or(0.0))?,
            local_args: u.local_args,
            health_path: match u.health_path {
                Some(p) if !p.starts_with('/') => {
                    return Err(bad(
                        k("health_path"),
                        format!("must start with '/', got '{p}'"),
                    ))
                }
                Some(p) => p,
                None => "/health".to_string(),
            },
        });
    }
    if upstreams.is_empty() {
        return Err(bad("upstream", "at least one [[upstream]] is needed"));
    }
    let served = |m: &str| upstreams.iter().any(|u| u.models.iter().any(|x| x == m));

    for (alias, target) in &raw.aliases {
        if !served(target) {
            return Err(bad(
                format!("aliases.{alias}"),
                format!("'{target}' is served by no upstream"),
            ));
        }
    }
    let p = raw.policy;
    let default_policy = p.default.unwrap_or(PolicyKind::Latency);
    let default_names = p.private_detectors.unwrap_or_else(|| {
        ["email", "phone", "card", "id", "secret"]
            .map(String::from)
            .to_vec()
    });
    let default_detectors = detectors("policy.private_detectors", &default_names)?;
    let esc = raw.escalation;
    let verifier = match esc.verifier {
        None => {
            if esc.verifier_min.is_some() || esc.verifier_prompt.is_some() {
                return Err(bad(
                    "escalation.verifier",
                    "verifier_min and verifier_prompt need a verifier model",
                ));
            }
            None
        }
        Some(m) => {
            let target = raw.aliases.get(&m).unwrap_or(&m);
            if !served(target) {
                return Err(bad(
                    "escalation.verifier",
                    format!("'{m}' is served by no upstream"),
                ));
            }
            let min_yes = esc.verifier_min.unwrap_or(0.5);
            if !(min_yes > 0.0 && min_yes <= 1.0) {
                return Err(bad(
                    "escalation.verifier_min",
                    format!("must be in (0, 1] (a probability), got {min_yes}"),
                ));
            }
            Some(Verifier {
                model: target.clone(),
                min_yes,
                instruction: esc
                    .verifier_prompt
                    .unwrap_or_else(|| DEFAULT_VERIFIER_PROMPT.to_string()),
            })
        }
    };
    let escalation = Escalation {
        enabled: esc.enabled.unwrap_or(false),
        min_mean_logprob: esc.min_mean_logprob.unwrap_or(-1.0),
        stream_window: esc.stream_window.unwrap_or(16),
        verifier,
    };
    if !escalation.min_mean_logprob.is_finite() || escalation.min_mean_logprob > 0.0 {
        return Err(bad(
            "escalation.min_mean_logprob",
            format!(
                "must be <= 0 (a log probability), got {}",
                escalation.min_mean_logprob
            ),
        ));
    }
    if escalation.stream_window == 0 || escalation.stream_window > 4096 {
        return Err(bad(
            "escalation.stream_window",
            format!(
                "must be between 1 and 4096, got {}",
                escalation.stream_window
            ),
        ));
    }
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in raw.route.into_iter().enumerate() {
        let k = |f: &str| format!("route[{i}].{f}");
        if r.name.is_empty() || routes.iter().any(|o| o.name == r.name) {
            return Err(bad(
                k("name"),
                format!("'{}' is empty or used twice", r.name),
            ));
        }
        if served(&r.name) || raw.aliases.contains_key(&r.name) {
            return Err(bad(
                k("name"),
                format!("'{}' is already a model or an alias", r.name),
            ));
        }
        if r.models.is_empty() {
            return Err(bad(k("models"), "needs at least one model"));
        }
        for m in &r.models {
            if !served(m) {
                return Err(bad(k("models"), format!("'{m}' is served by no upstream")));
            }
        }
        let detectors = match &r.detectors {
            Some(names) => detectors(&k("detectors"), names)?,
            None => default_detectors.clone(),
        };
        routes.push(Route {
            name: r.name,
            models: r.models,
            policy: r.policy.unwrap_or(default_policy),
            detectors,
            escalation: r.escalation.unwrap_or(escalation.enabled),
        });
    }
    let rt = raw.retry;
    let resilience = Resilience {
        max_attempts: rt.max_attempts.unwrap_or(3),
        retry_ratio: non_negative("retry.budget_ratio", rt.budget_ratio.unwrap_or(0.2))?,
        retry_min_per_s: non_negative("retry.min_per_second", rt.min_per_second.unwrap_or(10.0))?,
        breaker_failures: raw.breaker.failures.unwrap_or(3),
        breaker_open_ms: raw.breaker.open_ms.unwrap_or(5_000),
        hedge_after_ms: raw.hedge.after_ms.unwrap_or(0),
        deadline_ms: raw.deadline.default_ms.unwrap_or(0),
    };
    if resilience.max_attempts == 0 || resilience.max_attempts > 16 {
        return Err(bad(
            "retry.max_attempts",
            format!("must be between 1 and 16, got {}", resilience.max_attempts),
        ));
    }
    if resilience.breaker_failures == 0 {
        return Err(bad("breaker.failures", "must be at least 1"));
    }
    let affinity_block_chars = raw.affinity.block_chars.unwrap_or(256);
    if affinity_block_chars == 0 {
        return Err(bad("affinity.block_chars", "must be at least 1"));
    }
    let probe_interval_ms = raw.probe.interval_ms.unwrap_or(1_000);
    if probe_interval_ms < 50 {
        return Err(bad(
            "probe.interval_ms",
            format!("must be at least 50, got {probe_interval_ms}"),
        ));
    }
    // All-cloud reference: the dearest cloud upstream unless the config names prices.
    let dearest = |f: fn(&Upstream) -> f64| {
        upstreams
            .iter()
            .filter(|u| u.tier == Tier::Cloud)
            .map(f)
            .fold(0.0, f64::max)
    };
    let reference_price = (
        non_negative(
            "policy.reference_price_in",
            p.reference_price_in
                .unwrap_or_else(|| dearest(|u| u.price_in)),
        )?,
        non_negative(
            "policy.reference_price_out",
            p.reference_price_out
                .unwrap_or_else(|| dearest(|u| u.price_out)),
        )?,
    );
    let api_key = match &raw.api_key_env {
        Some(var) => Some(env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            bad(
                "api_key_env",
                format!("environment variable {var} is not set"),
            )
        })?),
        None => None,
    };
    Ok(RouteConfig {
        listen: raw.listen.unwrap_or_else(|| "127.0.0.1:8090".to_string()),
        api_key,
        upstreams,
        aliases: raw.aliases,
        routes,
        default_policy,
        detectors: default_detectors,
        default_class: p.default_class.unwrap_or_else(|| "public".to_string()),
        detected_class: p.detected_class.unwrap_or_else(|| "private".to_string()),
        ttft_target_ms: non_negative("policy.ttft_target_ms", p.ttft_target_ms.unwrap_or(0.0))?,
        resilience,
        escalation,
        affinity_block_chars,
        affinity_blocks: raw.affinity.blocks.unwrap_or(4),
        probe_interval_ms,
        reference_price,
    })
}

/// `http[s]://host[:port][/prefix]` or `local`.
fn parse_url(url: &str) -> Result<Endpoint, String> {
    if url == "local" {
        return Ok(Endpoint::Local);
    }
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => {
            return Err(format!(
                "'{url}' must start with http:// or https://, or be \"local\""
            ))
        }
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("'{url}' has no host:port"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Ok(Endpoint::Http {
        authority,
        prefix: prefix.to_string(),
        tls,
    })
}

impl RouteConfig {
    /// The model a client's name means: an alias resolved, else the name itself.
    pub fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.get(name).map(String::as_str).unwrap_or(name)
    }

    /// Every model name clients may send, with what it means, sorted.
    pub fn model_names(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for u in &self.upstreams {
            for m in &u.models {
                out.push((m.clone(), m.clone()));
            }
        }
        for (a, t) in &self.aliases {
            out.push((a.clone(), t.clone()));
        }
        for r in &self.routes {
            out.push((r.name.clone(), format!("route: {}", r.models.join(" -> "))));
        }
        out.sort();
        out.dedup();
        out
    }

    /// Checks the `url = "local"` upstreams against how the router was started: under
    /// `tuili route` (`host_model` false) each needs `local_args`; under
    /// `tuili serve --route` exactly one has none, and it serves that command's model.
    /// Returns the index of that one.
    pub fn check_locals(&self, host_model: bool) -> Result<Option<usize>, RouterError> {
        let mut own = None;
        for (i, u) in self.upstreams.iter().enumerate() {
            if u.endpoint != Endpoint::Local || !u.local_args.is_empty() {
                continue;
            }
            let key = format!("upstream[{i}].local_args");
            if !host_model {
                return Err(bad(
                    key,
                    "url = \"local\" needs local_args, the `tuili serve` arguments (e.g. [\"-m\", \"model.gguf\"]), unless the config is run by `tuili serve -m MODEL --route FILE`, whose model it then serves",
                ));
            }
            if let Some(j) = own {
                return Err(bad(
                    key,
                    format!("upstream[{j}] already serves the model of `tuili serve --route`; give '{}' local_args of its own", u.name),
                ));
            }
            own = Some(i);
        }
        if host_model && own.is_none() {
            return Err(bad(
                "upstream",
                "`tuili serve --route` needs one upstream with url = \"local\" and no local_args to serve its model; add one, or run the config with `tuili route`",
            ));
        }
        Ok(own)
    }

    /// The resolved routing table `--check` prints.
    pub fn table(&self) -> String {
        let mut s = format!("listen {}\n\nupstreams:\n", self.listen);
        s += &format!(
            "  {:<12} {:<6} {:<32} {:<26} {:>8} {:>8}  {}\n",
            "name", "tier", "url", "models", "$/M in", "$/M out", "privacy"
        );
        for u in &self.upstreams {
            let url = match &u.endpoint {
                Endpoint::Local if u.local_args.is_empty() => "local (serve's own model)".into(),
                Endpoint::Local => format!("local ({})", u.local_args.join(" ")),
                Endpoint::Http {
                    authority,
                    prefix,
                    tls,
                } => format!(
                    "{}://{authority}{prefix}",
                    if *tls { "https" } else { "http" }
                ),
            };
            let key = u
                .api_key_env
                .as_ref()
                .map(|v| format!("  key ${v}"))
                .unwrap_or_default();
            s += &format!(
                "  {:<12} {:<6} {:<32} {:<26} {:>8} {:>8}  {}{key}\n",
                u.name,
                u.tier,
                url,
                u.models.join(","),
                u.price_in,
                u.price_out,
                u.privacy.join(",")
            );
        }
        s += "\nmodels (what a client may send -> upstreams):\n";
        for (name, target) in self.model_names() {
            let ups: Vec<&str> = self
                .upstreams
                .iter()
                .filter(|u| {
                    self.route(&name)
                        .map_or(u.models.iter().any(|m| m == self.resolve(&name)), |r| {
                            r.models.iter().any(|m| u.models.contains(m))
                        })
                })
                .map(|u| u.name.as_str())
                .collect();
            let what = if target == name {
                String::new()
            } else {
                format!(" ({target})")
            };
            s += &format!("  {name}{what} -> {}\n", ups.join(", "));
        }
        s += &format!(
            "\npolicy {} (routes may override); detectors [{}]; unmarked class '{}', detected class '{}'\n",
            self.default_policy.as_str(),
            self.detectors.names().join(", "),
            self.default_class,
            self.detected_class
        );
        for r in &self.routes {
            s += &format!(
                "route {}: policy {}, detectors [{}], escalation {}\n",
                r.name,
                r.policy.as_str(),
                r.detectors.names().join(", "),
                if r.escalation {
                    let by = match &self.escalation.verifier {
                        Some(v) => format!(", or P(yes) < {} from verifier {}", v.min_yes, v.model),
                        None => String::new(),
                    };
                    format!(
                        "on (mean logprob < {}{by})",
                        self.escalation.min_mean_logprob
                    )
                } else {
                    "off".into()
                }
            );
        }
        let r = &self.resilience;
        s += &format!(
            "attempts {} (budget {}/request, {}/s floor); breaker {} failures, {} ms open; hedge {}; deadline {}\n",
            r.max_attempts,
            r.retry_ratio,
            r.retry_min_per_s,
            r.breaker_failures,
            r.breaker_open_ms,
            if r.hedge_after_ms == 0 { "off".to_string() } else { format!("after {} ms", r.hedge_after_ms) },
            if r.deadline_ms == 0 { "none".to_string() } else { format!("{} ms", r.deadline_ms) },
        );
        s += &format!(
            "affinity {} blocks of {} chars; all-cloud reference ${}/M in, ${}/M out\n",
            self.affinity_blocks,
            self.affinity_block_chars,
            self.reference_price.0,
            self.reference_price.1
        );
        s
    }

    /// The route named `name`, if any.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &str) -> Option<String> {
        (v == "CLOUD_KEY").then(|| "sk-test".to_string())
    }

    const ISSUE: &str = r#"
listen = "127.0.0.1:8090"
[[upstream]]
name = "laptop"
tier = "device"
url = "local"
local_args = ["-m", "smol.gguf"]
model = "smollm2-135m"
privacy = ["private", "public"]
[[upstream]]
name = "edge-a"
tier = "edge"
url = "http://127.0.0.1:8081/v1"
models = ["smollm2-135m"]
privacy = ["public"]
price_in = 0.02
price_out = 0.05
[[upstream]]
name = "cloud"
tier = "cloud"
url = "http://127.0.0.1:8082/v1"
api_key_env = "CLOUD_KEY"
models = ["qwen2.5-coder-0.5b"]
price_in = 0.5
price_out = 1.5
[aliases]
smol = "smollm2-135m"
[[route]]
name = "auto"
models = ["smollm2-135m", "qwen2.5-coder-0.5b"]
escalation = true
[policy]
default = "latency"
private_detectors = ["email", "phone", "card", "secret"]
"#;

    #[test]
    fn the_issue_shape_parses() {
        let c = parse(ISSUE, &env).unwrap();
        assert_eq!(c.upstreams.len(), 3);
        assert_eq!(c.upstreams[0].endpoint, Endpoint::Local);
        assert_eq!(
            c.upstreams[1].endpoint,
            Endpoint::Http {
                authority: "127.0.0.1:8081".into(),
                prefix: "/v1".into(),
                tls: false,
            }
        );
        assert_eq!(c.upstreams[2].api_key.as_deref(), Some("sk-test"));
        assert_eq!(c.resolve("smol"), "smollm2-135m");
        assert_eq!(c.reference_price, (0.5, 1.5));
        assert!(c.route("auto").unwrap().escalation);
        let t = c.table();
        assert!(
            t.contains("  edge-a       edge   http://127.0.0.1:8081/v1"),
            "columns align: {t}"
        );
        assert!(
            t.contains("auto (route: smollm2-135m -> qwen2.5-coder-0.5b) -> laptop, edge-a, cloud"),
            "{t}"
        );
    }

    fn err(text: &str) -> String {
        parse(text, &env).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(&ISSUE.replace("price_in = 0.02", "price_in = -1.0"));
        assert_eq!(
            e,
            "config key upstream[1].price_in: must be a number >= 0, got -1"
        );
        let e = err(&ISSUE.replace("CLOUD_KEY", "NOPE_KEY"));
        assert!(
            e.contains("upstream[2].api_key_env") && e.contains("NOPE_KEY"),
            "{e}"
        );
        let e = err(&ISSUE.replace("default = \"latency\"", "default = \"fastest\""));
        assert!(e.contains("default") && e.contains("fastest"), "{e}");
        let e = err(&ISSUE.replace("\"secret\"]", "\"secrets\"]"));
        assert!(
            e.contains("policy.private_detectors") && e.contains("secrets"),
            "{e}"
        );
        let e = err(&ISSUE.replace("url = \"http://127.0.0.1:8081/v1\"", "url = \"ftp://x\""));
        assert!(e.contains("upstream[1].url"), "{e}");
        let e = err(&ISSUE.replace("smol = \"smollm2-135m\"", "smol = \"llama\""));
        assert!(e.contains("aliases.smol"), "{e}");
        let e = err(&format!("{ISSUE}\nfoo = 1"));
        assert!(e.contains("foo"), "{e}");
        assert!(err("listen = \"x\"").contains("config key upstream"));
        let e = err(&format!("{ISSUE}\n[escalation]\nverifier = \"gpt-9\""));
        assert!(
            e.contains("escalation.verifier") && e.contains("gpt-9"),
            "{e}"
        );
        let e = err(&format!(
            "{ISSUE}\n[escalation]\nverifier = \"smol\"\nverifier_min = 1.5"
        ));
        assert!(e.contains("escalation.verifier_min"), "{e}");
        let v = parse(&format!("{ISSUE}\n[escalation]\nverifier = \"smol\""), &env)
            .unwrap()
            .escalation
            .verifier
            .unwrap();
        assert_eq!((v.model.as_str(), v.min_yes), ("smollm2-135m", 0.5));
        // A local upstream without local_args is the model of `tuili serve --route`.
        let own = parse(
            &ISSUE.replace("local_args = [\"-m\", \"smol.gguf\"]", ""),
            &env,
        )
        .unwrap();
        let e = own.check_locals(false).unwrap_err().to_string();
        assert!(e.contains("upstream[0].local_args"), "{e}");
        assert_eq!(own.check_locals(true).unwrap(), Some(0));
        let both = parse(ISSUE, &env).unwrap();
        assert_eq!(both.check_locals(false).unwrap(), None);
        let e = both.check_locals(true).unwrap_err().to_string();
        assert!(
            e.contains("config key upstream:") && e.contains("no local_args"),
            "{e}"
        );
    }
}
