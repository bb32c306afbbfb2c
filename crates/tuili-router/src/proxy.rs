//! Answering one completion request: plan it, try upstreams in order (retries within the
//! budget, a hedge when one is slow, escalation when an answer is unsure), answer once, and
//! log one decision line.
//!
//! A non-streaming request is answered only from a whole upstream body, so a failure at any
//! point moves it to the next upstream. A stream is committed at its first byte: before, it
//! moves like a non-streaming one; after, a break ends it with an SSE error event.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use crate::plan::{plan, Api, Hints, Plan};
use crate::policy::Candidate;
use crate::sse::{error_event, logprobs_of, strip_logprobs, usage_of, SseScan};
use crate::state::{Live, RouterState, Slot, Table};
use crate::upstream::{call, CallError};
use crate::ApiError;

/// Holds an upstream's in-flight count and settles its breaker exactly once: success,
/// failure, or (dropped unsettled, e.g. a hedge that lost) neither.
struct InFlight {
    live: Arc<Mutex<Live>>,
    settled: bool,
}

impl InFlight {
    fn new(live: &Arc<Mutex<Live>>) -> Self {
        live.lock().unwrap_or_else(|p| p.into_inner()).obs.in_flight += 1;
        InFlight {
            live: live.clone(),
            settled: false,
        }
    }

    fn settle(&mut self, ok: Option<bool>, why: Option<String>) {
        let mut l = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match ok {
            Some(true) => l.breaker.success(),
            Some(false) => l.breaker.failure(Instant::now()),
            None => l.breaker.release(),
        }
        if why.is_some() {
            l.last_error = why;
        }
        self.settled = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut l = self.live.lock().unwrap_or_else(|p| p.into_inner());
        l.obs.in_flight = l.obs.in_flight.saturating_sub(1);
        if !self.settled {
            l.breaker.release();
        }
    }
}

/// A failed attempt.
struct Fail {
    kind: &'static str,
    msg: String,
}

/// Everything one request carries through its attempts.
struct Ctx {
    st: RouterState,
    table: Arc<Table>,
    id: u64,
    t0: Instant,
    api: Api,
    model: String,
    req: Map<String, Value>,
    client_logprobs: bool,
    plan: Plan,
    /// (level, candidate) in the order they are tried.
    list: Vec<(usize, Candidate)>,
    log: Vec<String>,
    prompt_est: u64,
}

impl Ctx {
    fn slot(&self, c: &Candidate) -> &crate::state::Slot {
        &self.table.slots[c.slot]
    }

    /// The body for candidate `c`: its own model name, and logprobs asked for when this
    /// answer may be escalated.
    fn wire_body(&self, level: usize, c: &Candidate) -> Bytes {
        let mut req = self.req.clone();
        let slot = self.slot(c);
        req.insert(
            "model".into(),
            Value::String(slot.cfg.wire_model(&c.model).to_string()),
        );
        if self.may_escalate(level) && !self.client_logprobs {
            match self.api {
                Api::Chat => req.insert("logprobs".into(), Value::Bool(true)),
                Api::Completions => req.insert("logprobs".into(), Value::from(1)),
                // Never escalated: see `Api::has_logprobs`.
                Api::Embeddings | Api::Responses | Api::Messages => None,
            };
        }
        Bytes::from(serde_json::to_vec(&Value::Object(req)).unwrap_or_default())
    }

    fn may_escalate(&self, level: usize) -> bool {
        self.plan.escalate && self.list.iter().any(|(l, _)| *l > level)
    }

    fn unsure(&self, logprobs: &[f64]) -> Option<f64> {
        if logprobs.is_empty() {
            return None;
        }
        let mean = logprobs.iter().sum::<f64>() / logprobs.len() as f64;
        (mean < self.table.config.escalation.min_mean_logprob).then_some(mean)
    }

    fn failed(&mut self, c: &Candidate, f: &Fail) {
        let m = self.st.metrics();
        m.error(&c.name, c.tier.as_str(), f.kind);
        m.request(&c.name, c.tier.as_str(), "error");
        self.log
            .push(format!("{} failed ({}: {})", c.name, f.kind, f.msg));
    }

    /// Counts tokens and money for an answer (or a discarded, escalated one).
    fn account(&self, c: &Candidate, usage: Option<(u64, u64)>, counted: u64) -> (u64, u64) {
        let (p, o) = usage.unwrap_or((self.prompt_est, counted));
        self.count(c, p, o, true);
        (p, o)
    }

    /// Counts tokens and money the router spent on its own behalf (a verifier's
    /// question): nothing of it would have gone to the cloud in the reference.
    fn account_extra(&self, c: &Candidate, usage: Option<(u64, u64)>) {
        let (p, o) = usage.unwrap_or((self.prompt_est, 1));
        self.count(c, p, o, false);
    }

    /// `p` prompt and `o` completion tokens on `c`, at its prices; with `reference`, also
    /// what the same tokens would have cost all-cloud.
    fn count(&self, c: &Candidate, p: u64, o: u64, reference: bool) {
        let slot = self.slot(c);
        let spent = (slot.cfg.price_in * p as f64 + slot.cfg.price_out * o as f64) / 1e6;
        let (ri, ro) = self.table.config.reference_price;
        let cloud = match reference {
            true => (ri * p as f64 + ro * o as f64) / 1e6,
            false => 0.0,
        };
        self.st
            .metrics()
            .tokens(&c.name, c.tier.as_str(), p, o, spent, cloud);
    }

    fn decision(&self, outcome: &str) {
        let excluded = if self.plan.excluded.is_empty() {
            String::new()
        } else {
            format!("; excluded: {}", self.plan.excluded.join("; "))
        };
        tracing::info!(
            "decision id={} model={} class={} ({}) policy={} -> {} | {}; attempts: {}{excluded}",
            self.id,
            self.model,
            self.plan.class,
            self.plan.class_why,
            self.plan.policy.as_str(),
            outcome,
            self.plan.why,
            self.log.join(", "),
        );
    }

    /// Whether another attempt may start (`first`: the first of a round is free).
    fn may_try(&mut self, attempts: usize, first: bool) -> bool {
        if attempts >= self.table.config.resilience.max_attempts {
            self.log.push(format!(
                "max_attempts {} reached",
                self.table.config.resilience.max_attempts
            ));
            return false;
        }
        if !first && !self.st.budget().withdraw(Instant::now()) {
            self.log.push("retry budget exhausted".into());
            return false;
        }
        true
    }
}

/// The header value of `name`, when it is text.
fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn header_ms(h: &HeaderMap, name: &str) -> Result<Option<f64>, ApiError> {
    match header_str(h, name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(Some(ms)),
            _ => Err(ApiError::invalid(format!(
                "header {name} must be a positive number of milliseconds, got '{v}'"
            ))),
        },
    }
}

/// Whether `headers` carry the router's key (or none is needed).
pub fn authorized(table: &Table, headers: &HeaderMap) -> bool {
    let Some(key) = &table.config.api_key else {
        return true;
    };
    // `Authorization: Bearer` (OpenAI's clients) or `x-api-key` (Anthropic's).
    let given = header_str(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| header_str(headers, "x-api-key"))
        .unwrap_or("");
    given.len() == key.len()
        && given
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

/// `POST` on any of the routed APIs (`/v1/chat/completions`, `/v1/completions`,
/// `/v1/embeddings`, `/v1/responses`, `/v1/messages`).
pub async fn handle(st: RouterState, headers: HeaderMap, body: Bytes, api: Api) -> Response {
    let t0 = Instant::now();
    let table = st.table();
    if !authorized(&table, &headers) {
        return ApiError::unauthorized().into_response();
    }
    match prepare(st.clone(), table, &headers, &body, api, t0) {
        Ok((ctx, stream, deadline)) => {
            let id = ctx.id;
            let fut = async move {
                if stream {
                    run_stream(ctx).await
                } else {
                    run_whole(ctx).await
                }
            };
            match deadline {
                None => fut.await,
                Some(d) => match tokio::time::timeout(d, fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        st.metrics().count("deadline_exceeded");
                        tracing::info!(
                            "decision id={id} -> deadline of {} ms passed",
                            d.as_millis()
                        );
                        ApiError::deadline(format!(
                            "the deadline of {} ms passed before an upstream answered",
                            d.as_millis()
                        ))
                        .into_response()
                    }
                },
            }
        }
        Err(e) => e.into_response(),
    }
}

fn prepare(
    st: RouterState,
    table: Arc<Table>,
    headers: &HeaderMap,
    body: &Bytes,
    api: Api,
    t0: Instant,
) -> Result<(Ctx, bool, Option<Duration>), ApiError> {
    let req: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => return Err(ApiError::invalid(format!("the body is not JSON: {e}"))),
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("model is required (a string)"))?
        .to_string();
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let client_logprobs = match api {
        Api::Chat => req
            .get("logprobs")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        Api::Completions => req.get("logprobs").is_some_and(|v| !v.is_null()),
        // Passed through untouched: the router adds and strips nothing.
        Api::Embeddings | Api::Responses | Api::Messages => true,
    };
    let owner = match (api, req.get("previous_response_id").and_then(Value::as_str)) {
        (Api::Responses, Some(id)) => st.response_owner(id),
        _ => None,
    };
    let hints = Hints {
        privacy: header_str(headers, "x-tuili-privacy"),
        ttft_target_ms: header_ms(headers, "x-tuili-ttft-ms")?,
        pin: owner.as_deref(),
    };
    let deadline = header_ms(headers, "x-tuili-deadline-ms")?
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .or_else(|| {
            let d = table.config.resilience.deadline_ms;
            (d > 0).then(|| Duration::from_millis(d))
        });
    let plan = match plan(&table, &model, &req, api, &hints) {
        Ok(p) => p,
        Err(e) => {
            if e.code == "privacy_no_allowed_upstream" {
                st.metrics()
                    .privacy_refusal(hints.privacy.unwrap_or(&table.config.detected_class));
            } else {
                st.metrics().count("unavailable");
            }
            tracing::info!(
                "decision id={} model={model} -> refused {}: {}",
                st.next_id(),
                e.status.as_u16(),
                e.message
            );
            return Err(e);
        }
    };
    st.budget().deposit(Instant::now());
    let list = plan
        .groups
        .iter()
        .enumerate()
        .flat_map(|(l, g)| g.iter().map(move |c| (l, c.clone())))
        .collect();
    let prompt_est = plan.prompt_tokens;
    let ctx = Ctx {
        id: st.next_id(),
        st,
        table,
        t0,
        api,
        model,
        req,
        client_logprobs,
        plan,
        list,
        log: Vec::new(),
        prompt_est,
    };
    Ok((ctx, stream, deadline))
}

/// A short body (an error, a refusal); empty when it broke.
async fn read_all(resp: Response) -> Bytes {
    resp.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// Sends `body` to `slot`. A transport failure, a 5xx or a 429 is a [`Fail`] and the
/// breaker is told (a 429 is load, not a fault, and leaves it alone); any other status comes
/// back with its body unread.
async fn open(
    slot: &Slot,
    guard: &mut InFlight,
    path: &str,
    body: Bytes,
) -> Result<Response, Fail> {
    let resp = match call(&slot.cfg, &slot.transport, Method::POST, path, true, body).await {
        Ok(r) => r,
        Err(e) => {
            let kind = if matches!(e, CallError::Timeout(_)) {
                "timeout"
            } else {
                "transport"
            };
            guard.settle(Some(false), Some(e.to_string()));
            return Err(Fail {
                kind,
                msg: e.to_string(),
            });
        }
    };
    let status = resp.status();
    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
        return Ok(resp);
    }
    let bytes = read_all(resp).await;
    let msg = format!(
        "HTTP {status}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
    );
    let fault = status != StatusCode::TOO_MANY_REQUESTS;
    guard.settle(fault.then_some(false), Some(msg.clone()));
    Err(Fail {
        kind: if fault { "status_5xx" } else { "status_429" },
        msg,
    })
}

/// One whole (non-streaming) attempt: the status and the whole body, or why not.
async fn attempt_whole(
    table: Arc<Table>,
    slot: usize,
    path: &'static str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), Fail> {
    let slot = &table.slots[slot];
    let mut guard = InFlight::new(&slot.live);
    let resp = open(slot, &mut guard, path, body).await?;
    let status = resp.status();
    match resp.into_body().collect().await {
        Ok(b) => {
            guard.settle(Some(true), None);
            Ok((status, b.to_bytes()))
        }
        Err(e) => {
            let msg = format!("the body broke: {e}");
            guard.settle(Some(false), Some(msg.clone()));
            Err(Fail { kind: "body", msg })
        }
    }
}

/// One attempt in flight: its index in `ctx.list` and what it came to.
type Attempt<T> = futures_util::future::BoxFuture<'static, (usize, Result<T, Fail>)>;

/// Builds the attempt on candidate `c` (at escalation `level`) from the request.
type Start<T> =
    fn(&Ctx, usize, &Candidate) -> futures_util::future::BoxFuture<'static, Result<T, Fail>>;

/// Starts the attempt at `ctx.list[*pos]` if the attempt limit and the budget allow.
fn launch<T: 'static>(
    ctx: &mut Ctx,
    pos: &mut usize,
    attempts: &mut usize,
    first: bool,
    start: Start<T>,
) -> Option<Attempt<T>> {
    if *pos >= ctx.list.len() || !ctx.may_try(*attempts, first) {
        return None;
    }
    let i = *pos;
    *pos += 1;
    *attempts += 1;
    let (level, c) = ctx.list[i].clone();
    let fut = start(ctx, level, &c);
    Some(Box::pin(async move { (i, fut.await) }))
}

/// Tries candidates from `pos` until one succeeds: failures move on (within the budget), a
/// slow attempt is hedged once. Returns the index in `ctx.list` that succeeded and what it
/// gave; the other attempt of a hedge is dropped, which cancels it.
async fn race<T: 'static>(
    ctx: &mut Ctx,
    pos: &mut usize,
    start: Start<T>,
) -> Result<(usize, T), ApiError> {
    let hedge = ctx.table.config.resilience.hedge_after_ms;
    let mut pending: FuturesUnordered<Attempt<T>> = FuturesUnordered::new();
    let mut attempts = 0usize;
    let mut hedged = false;
    pending.extend(launch(ctx, pos, &mut attempts, true, start));
    let result = loop {
        if pending.is_empty() {
            break None;
        }
        let can_hedge = hedge > 0 && !hedged && pending.len() == 1 && *pos < ctx.list.len();
        let timer = async move {
            if !can_hedge {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(hedge)).await;
        };
        tokio::select! {
            Some((i, r)) = pending.next() => match r {
                Ok(t) => break Some((i, t)),
                Err(f) => {
                    let c = ctx.list[i].1.clone();
                    ctx.failed(&c, &f);
                    if pending.is_empty() {
                        if let Some(a) = launch(ctx, pos, &mut attempts, false, start) {
                            ctx.st.metrics().count("failovers");
                            pending.push(a);
                        }
                    }
                }
            },
            _ = timer => {
                hedged = true;
                if let Some(a) = launch(ctx, pos, &mut attempts, false, start) {
                    ctx.st.metrics().count("hedges");
                    ctx.log.push(format!("hedged after {hedge} ms"));
                    pending.push(a);
                }
            }
        }
    };
    result.ok_or_else(|| {
        ctx.st.metrics().count("unavailable");
        ApiError::unavailable(format!(
            "every upstream tried failed: {}",
            ctx.log.join(", ")
        ))
    })
}

/// A whole (non-streaming) attempt from the request.
fn start_whole(
    ctx: &Ctx,
    level: usize,
    c: &Candidate,
) -> futures_util::future::BoxFuture<'static, Result<(StatusCode, Bytes), Fail>> {
    let body = ctx.wire_body(level, c);
    Box::pin(attempt_whole(
        ctx.table.clone(),
        c.slot,
        ctx.api.path(),
        body,
    ))
}

fn answer(
    status: StatusCode,
    body: Vec<u8>,
    c: &Candidate,
    escalated: bool,
    content_type: &'static str,
) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&c.name) {
        h.insert("x-tuili-upstream", v);
    }
    h.insert("x-tuili-tier", HeaderValue::from_static(c.tier.as_str()));
    h.insert(
        "x-tuili-escalated",
        HeaderValue::from_static(if escalated { "1" } else { "0" }),
    );
    r
}

async fn run_whole(mut ctx: Ctx) -> Response {
    let mut pos = 0usize;
    let mut escalated = false;
    // The unsure answer, kept in case no larger model answers.
    let mut fallback: Option<(Candidate, Value)> = None;
    loop {
        let (i, (status, bytes)) = match race(&mut ctx, &mut pos, start_whole).await {
            Ok(r) => r,
            Err(e) => {
                if let Some((c, mut v)) = fallback.take() {
                    if !ctx.client_logprobs {
                        strip_logprobs(&mut v);
                    }
                    ctx.log.push(format!(
                        "no larger model answered; kept {}'s answer",
                        c.name
                    ));
                    ctx.decision(&format!(
                        "{} ({}) after a failed escalation",
                        c.name, c.tier
                    ));
                    return answer(
                        StatusCode::OK,
                        v.to_string().into_bytes(),
                        &c,
                        false,
                        "application/json",
                    );
                }
                ctx.decision(&format!("failed {}", e.status.as_u16()));
                return e.into_response();
            }
        };
        let (level, c) = ctx.list[i].clone();
        let tier = c.tier.as_str();
        let e2e = ctx.t0.elapsed().as_secs_f64();
        if !status.is_success() {
            // The upstream's own 4xx: the request is at fault, not the upstream.
            ctx.st.metrics().request(&c.name, tier, "ok");
            ctx.log.push(format!("{} answered {status}", c.name));
            ctx.decision(&format!("{} ({tier}) client error {status}", c.name));
            return answer(status, bytes.to_vec(), &c, escalated, "application/json");
        }
        let mut v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                ctx.log
                    .push(format!("{} answered a body that is not JSON: {e}", c.name));
                ctx.decision("failed 502");
                return ApiError {
                    status: StatusCode::BAD_GATEWAY,
                    kind: "server_error",
                    code: "bad_upstream_body",
                    message: format!("upstream {} answered a body that is not JSON: {e}", c.name),
                }
                .into_response();
            }
        };
        let (_, out_tokens) = ctx.account(&c, usage_of(&v), 0);
        let m = ctx.st.metrics();
        m.request(&c.name, tier, "ok");
        m.e2e(tier, e2e);
        {
            let mut l = ctx.slot(&c).live();
            // The non-streaming TTFT is the whole time less the decode, when TPOT is known.
            if let Some(tpot) = l.obs.tpot_ms {
                l.obs.observe_ttft(
                    (e2e * 1e3 - tpot * out_tokens.saturating_sub(1) as f64).max(0.0),
                );
            }
        }
        if ctx.may_escalate(level) {
            let lp = logprobs_of(&v["choices"][0]);
            let doubt = match ctx.unsure(&lp) {
                Some(mean) => Some(format!(
                    "mean logprob {mean:.3} < {}",
                    ctx.table.config.escalation.min_mean_logprob
                )),
                None => verify(&mut ctx, &v).await,
            };
            if let Some(doubt) = doubt {
                ctx.st.metrics().count("escalations");
                ctx.log
                    .push(format!("{} answered with {doubt}: escalating", c.name));
                escalated = true;
                pos = ctx
                    .list
                    .iter()
                    .position(|(l, _)| *l > level)
                    .unwrap_or(ctx.list.len());
                fallback = Some((c, v));
                continue;
            }
        }
        if !ctx.client_logprobs {
            strip_logprobs(&mut v);
        }
        if let (Api::Responses, Some(id)) = (ctx.api, v["id"].as_str()) {
            ctx.st.remember_response(id, &c.name);
        }
        ctx.log
            .push(format!("{} ok in {:.1} ms", c.name, e2e * 1e3));
        ctx.decision(&format!(
            "{} ({tier}){}",
            c.name,
            if escalated { " after escalation" } else { "" }
        ));
        return answer(
            status,
            v.to_string().into_bytes(),
            &c,
            escalated,
            "application/json",
        );
    }
}

/// Asks the configured verifier whether `answer` (a whole chat or completions answer)
/// answers the request; `Some(why)` when its confidence is under `verifier_min`. The
/// verifier sees the prompt, so it is planned with the request's privacy class: only
/// upstreams allowed for it are asked. A verifier that cannot be reached, or whose first
/// token is neither yes nor no, leaves the answer standing (the log says so).
async fn verify(ctx: &mut Ctx, answer: &Value) -> Option<String> {
    let vf = ctx.table.config.escalation.verifier.clone()?;
    let c0 = &answer["choices"][0];
    let text = c0["message"]["content"]
        .as_str()
        .or(c0["text"].as_str())
        .unwrap_or("");
    let question = crate::plan::prompt_text(&ctx.req, ctx.api);
    let content = format!(
        "{}\n\nQuestion:\n{}\n\nProposed answer:\n{}\n\nIs the proposed answer correct? Reply yes or no.",
        vf.instruction,
        question.trim_end(),
        text.trim()
    );
    let mut req = serde_json::Map::new();
    req.insert("model".into(), Value::String(vf.model.clone()));
    req.insert(
        "messages".into(),
        serde_json::json!([{"role": "user", "content": content}]),
    );
    for (k, v) in [
        ("max_tokens", Value::from(1)),
        ("temperature", Value::from(0)),
        ("logprobs", Value::Bool(true)),
        ("top_logprobs", Value::from(10)),
    ] {
        req.insert(k.into(), v);
    }
    let hints = Hints {
        privacy: Some(&ctx.plan.class),
        ttft_target_ms: None,
        pin: None,
    };
    let vplan = match plan(&ctx.table, &vf.model, &req, Api::Chat, &hints) {
        Ok(p) => p,
        Err(e) => {
            ctx.log.push(format!("verifier not asked: {}", e.message));
            return None;
        }
    };
    ctx.st.metrics().count("verifications");
    let max = ctx.table.config.resilience.max_attempts;
    for c in vplan.groups.into_iter().flatten().take(max) {
        let slot = &ctx.table.slots[c.slot];
        req.insert(
            "model".into(),
            Value::String(slot.cfg.wire_model(&c.model).to_string()),
        );
        let body = Bytes::from(serde_json::to_vec(&Value::Object(req.clone())).unwrap_or_default());
        let (status, bytes) =
            match attempt_whole(ctx.table.clone(), c.slot, Api::Chat.path(), body).await {
                Ok(r) => r,
                Err(f) => {
                    ctx.failed(&c, &f);
                    continue;
                }
            };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            ctx.log
                .push(format!("verifier {} answered no JSON", c.name));
            return None;
        };
        if !status.is_success() {
            ctx.log
                .push(format!("verifier {} refused with {status}", c.name));
            return None;
        }
        ctx.account_extra(&c, usage_of(&v));
        let Some(yes) = yes_share(&v) else {
            ctx.log
                .push(format!("verifier {} said neither yes nor no", c.name));
            return None;
        };
        ctx.log
            .push(format!("verifier {}: P(yes) {yes:.2}", c.name));
        return (yes < vf.min_yes)
            .then(|| format!("verifier {} P(yes) {yes:.2} < {}", c.name, vf.min_yes));
    }
    ctx.log.push("verifier unreachable".into());
    None
}

/// `P(yes) / (P(yes) + P(no))` from the first token's top logprobs of a chat answer
/// (tokens compared trimmed and lowercased: "Yes", " yes", "YES" count); `None` when
/// neither appears.
pub fn yes_share(v: &Value) -> Option<f64> {
    let first = &v["choices"][0]["logprobs"]["content"][0];
    let mut top: Vec<&Value> = first["top_logprobs"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if top.is_empty() {
        top.push(first);
    }
    let (mut yes, mut no) = (0.0, 0.0);
    for t in top {
        let (Some(tok), Some(lp)) = (t["token"].as_str(), t["logprob"].as_f64()) else {
            continue;
        };
        match tok.trim().to_lowercase().as_str() {
            w if w.starts_with("yes") => yes += lp.exp(),
            w if w.starts_with("no") => no += lp.exp(),
            _ => {}
        }
    }
    (yes + no > 0.0).then(|| yes / (yes + no))
}

type DataStream = futures_util::stream::BoxStream<'static, Result<Bytes, axum::Error>>;

/// Reads the next chunk within `limit`.
async fn next_chunk(s: &mut DataStream, limit: Duration) -> Result<Option<Bytes>, String> {
    match tokio::time::timeout(limit, s.next()).await {
        Err(_) => Err(format!("no data within {} ms", limit.as_millis())),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(format!("the stream broke: {e}")),
        Ok(Some(Ok(b))) => Ok(Some(b)),
    }
}

/// A stream attempt that got as far as it must before anything may leave: the first chunk,
/// or, when the answer may be escalated, the judging window.
enum Opened {
    /// The upstream's own 4xx: the request is at fault, not the upstream; answered as is.
    Refused(StatusCode, Bytes),
    /// The stream, with what was read of it.
    Stream(Box<Started>),
}

struct Started {
    guard: InFlight,
    data: DataStream,
    scan: SseScan,
    held: Vec<u8>,
    ttft: Duration,
    limit: Duration,
}

/// A streaming attempt from the request.
fn start_stream(
    ctx: &Ctx,
    level: usize,
    c: &Candidate,
) -> futures_util::future::BoxFuture<'static, Result<Opened, Fail>> {
    let body = ctx.wire_body(level, c);
    let (table, slot, path, t0) = (ctx.table.clone(), c.slot, ctx.api.path(), ctx.t0);
    let escalating = ctx.may_escalate(level);
    let strip = escalating && !ctx.client_logprobs;
    let window = ctx.table.config.escalation.stream_window as u64;
    Box::pin(async move {
        let slot = &table.slots[slot];
        let mut guard = InFlight::new(&slot.live);
        let resp = open(slot, &mut guard, path, body).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = read_all(resp).await;
            guard.settle(Some(true), None);
            return Ok(Opened::Refused(status, bytes));
        }
        let mut data: DataStream = StreamExt::boxed(resp.into_body().into_data_stream());
        let limit = Duration::from_millis(slot.cfg.timeout_ms);
        let mut scan = SseScan::new(strip);
        // Nothing leaves before the first chunk (and, when escalating, the window).
        let mut held: Vec<u8> = Vec::new();
        let mut ttft = None;
        let broke = loop {
            match next_chunk(&mut data, limit).await {
                Ok(Some(b)) => {
                    ttft.get_or_insert_with(|| t0.elapsed());
                    held.extend(scan.feed(&b));
                    if !escalating || scan.done || scan.errored || scan.tokens >= window {
                        break None;
                    }
                }
                Ok(None) if ttft.is_some() && (scan.done || scan.errored) => break None,
                Ok(None) => break Some("the stream ended before its end marker".to_string()),
                Err(e) => break Some(e),
            }
        };
        if let Some(msg) = broke {
            guard.settle(Some(false), Some(msg.clone()));
            return Err(Fail {
                kind: "stream_before_first_byte",
                msg,
            });
        }
        Ok(Opened::Stream(Box::new(Started {
            guard,
            data,
            scan,
            held,
            ttft: ttft.unwrap_or_default(),
            limit,
        })))
    })
}

async fn run_stream(mut ctx: Ctx) -> Response {
    let mut pos = 0usize;
    let mut escalated = false;
    loop {
        let (i, opened) = match race(&mut ctx, &mut pos, start_stream).await {
            Ok(r) => r,
            Err(e) => {
                ctx.decision("failed 503");
                return e.into_response();
            }
        };
        let (level, c) = ctx.list[i].clone();
        let mut s = match opened {
            Opened::Refused(status, bytes) => {
                ctx.st.metrics().request(&c.name, c.tier.as_str(), "ok");
                ctx.decision(&format!("{} ({}) client error {status}", c.name, c.tier));
                return answer(status, bytes.to_vec(), &c, escalated, "application/json");
            }
            Opened::Stream(s) => s,
        };
        if ctx.may_escalate(level) {
            if let Some(mean) = ctx.unsure(&s.scan.logprobs) {
                s.guard.settle(Some(true), None);
                ctx.account(&c, s.scan.usage, s.scan.tokens);
                ctx.st.metrics().count("escalations");
                ctx.log.push(format!("{} streamed mean logprob {mean:.3} over {} tokens < {}: escalating before the first byte", c.name, s.scan.tokens, ctx.table.config.escalation.min_mean_logprob));
                escalated = true;
                pos = ctx
                    .list
                    .iter()
                    .position(|(l, _)| *l > level)
                    .unwrap_or(ctx.list.len());
                continue;
            }
        }
        let Started {
            guard,
            data,
            scan,
            held,
            ttft,
            limit,
        } = *s;
        ctx.st.metrics().ttft(c.tier.as_str(), ttft.as_secs_f64());
        ctx.slot(&c)
            .live()
            .obs
            .observe_ttft(ttft.as_secs_f64() * 1e3);
        let resp_c = c.clone();
        let fwd = Forward {
            ctx: Some(ctx),
            c,
            guard,
            data: Some(data),
            scan,
            first: Some(Bytes::from(held)),
            ttft,
            escalated,
            limit,
            broke: None,
            complete: false,
        };
        // The body is read from the upstream as the client reads: no task, no channel, and
        // the first chunk goes out with the head.
        let body = Body::from_stream(futures_util::stream::unfold(fwd, |mut f| async move {
            f.next().await.map(|b| (Ok::<_, Infallible>(b), f))
        }));
        let mut r = answer(
            StatusCode::OK,
            Vec::new(),
            &resp_c,
            escalated,
            "text/event-stream",
        );
        *r.body_mut() = body;
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return r;
    }
}

/// A committed stream on its way to the client: a break ends it with an error event; its
/// accounting and decision line happen when it is dropped (ended, or the client left).
struct Forward {
    ctx: Option<Ctx>,
    c: Candidate,
    guard: InFlight,
    data: Option<DataStream>,
    scan: SseScan,
    first: Option<Bytes>,
    ttft: Duration,
    escalated: bool,
    limit: Duration,
    broke: Option<String>,
    complete: bool,
}

impl Forward {
    /// The next bytes for the client, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.complete || self.broke.is_some() {
            return None;
        }
        let data = self.data.as_mut()?;
        loop {
            match next_chunk(data, self.limit).await {
                Ok(Some(b)) => {
                    let out = self.scan.feed(&b);
                    self.complete = self.scan.done || self.scan.errored;
                    if !out.is_empty() {
                        return Some(Bytes::from(out));
                    }
                    if self.complete {
                        return None;
                    }
                }
                Ok(None) if self.scan.done || self.scan.errored => {
                    self.complete = true;
                    return None;
                }
                Ok(None) => {
                    return Some(self.broken("the stream ended before its end marker".into()))
                }
                Err(e) => return Some(self.broken(e)),
            }
        }
    }

    fn broken(&mut self, msg: String) -> Bytes {
        let e = ApiError {
            status: StatusCode::BAD_GATEWAY,
            kind: "server_error",
            code: "upstream_stream_broken",
            message: format!(
                "upstream {} broke the stream after {} chunks: {msg}",
                self.c.name, self.scan.tokens
            ),
        };
        self.broke = Some(msg);
        let api = self.ctx.as_ref().map_or(Api::Chat, |c| c.api);
        Bytes::from(error_event(api, &e))
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let Some(mut ctx) = self.ctx.take() else {
            return;
        };
        let c = &self.c;
        let tier = c.tier.as_str();
        let e2e = ctx.t0.elapsed();
        if let Some(id) = &self.scan.response_id {
            ctx.st.remember_response(id, &c.name);
        }
        let (_, out) = ctx.account(c, self.scan.usage, self.scan.tokens);
        let m = ctx.st.metrics();
        m.e2e(tier, e2e.as_secs_f64());
        let outcome = if let Some(msg) = self.broke.take() {
            self.guard.settle(Some(false), Some(msg.clone()));
            m.error(&c.name, tier, "stream");
            m.request(&c.name, tier, "error");
            m.count("stream_breaks");
            ctx.log.push(format!(
                "{} broke mid-stream ({msg}); error event sent",
                c.name
            ));
            "stream broken"
        } else if !self.complete {
            self.guard.settle(None, None);
            m.request(&c.name, tier, "ok");
            ctx.log
                .push(format!("{} streaming; the client left", c.name));
            "client left"
        } else {
            self.guard.settle(Some(true), None);
            m.request(&c.name, tier, "ok");
            if out > 1 {
                let tpot = (e2e - self.ttft).as_secs_f64() * 1e3 / (out - 1) as f64;
                ctx.slot(c).live().obs.observe_tpot(tpot);
            }
            ctx.log.push(format!(
                "{} streamed, TTFT {:.1} ms, {:.1} ms in all",
                c.name,
                self.ttft.as_secs_f64() * 1e3,
                e2e.as_secs_f64() * 1e3
            ));
            // Reading the upstream body to its end returns the connection to the pool.
            if let (Some(mut data), Ok(rt)) =
                (self.data.take(), tokio::runtime::Handle::try_current())
            {
                rt.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = data.next().await {}
                    })
                    .await;
                });
            }
            "ok"
        };
        ctx.decision(&format!(
            "{} ({tier}){} stream {outcome}",
            c.name,
            if self.escalated {
                " after escalation"
            } else {
                ""
            }
        ));
    }
}
