//! From a parsed request to a plan: which model names it means, its privacy class and why,
//! and the upstreams to try in order (grouped by escalation level), or the error that says
//! why nothing may be tried. Nothing is sent here.

use std::time::Instant;

use serde_json::{Map, Value};

use crate::affinity::prefix_key;
use crate::config::{PolicyKind, Tier};
use crate::policy::{order, Candidate};
use crate::state::Table;
use crate::ApiError;

/// Which API a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/responses` (OpenAI's Responses API).
    Responses,
    /// `/v1/messages` (Anthropic's Messages API).
    Messages,
}

impl Api {
    /// The path after the API prefix.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Completions => "/completions",
            Api::Embeddings => "/embeddings",
            Api::Responses => "/responses",
            Api::Messages => "/messages",
        }
    }

    /// Whether answers carry token logprobs the router can judge (escalation).
    pub fn has_logprobs(self) -> bool {
        matches!(self, Api::Chat | Api::Completions)
    }

    /// The request fields that hold what the user sent.
    fn text_fields(self) -> &'static [&'static str] {
        match self {
            Api::Chat | Api::Messages => &["system", "messages"],
            Api::Completions => &["prompt"],
            Api::Embeddings => &["input"],
            Api::Responses => &["instructions", "input"],
        }
    }
}

/// What a request will do.
pub struct Plan {
    /// Candidate groups: one per escalation level (smallest model first), or one group
    /// when escalation is off.
    pub groups: Vec<Vec<Candidate>>,
    /// Escalation on for this request.
    pub escalate: bool,
    /// The privacy class and why.
    pub class: String,
    /// Why the request has that class.
    pub class_why: String,
    /// The policy used.
    pub policy: PolicyKind,
    /// Why the first candidate is first.
    pub why: String,
    /// Upstreams left out and why (for the decision log).
    pub excluded: Vec<String>,
    /// Prompt tokens, estimated as characters / 4 (costs before an upstream counts them).
    pub prompt_tokens: u64,
}

/// The text of a request that detectors read and affinity hashes: every string under the
/// API's input fields in order (message contents and their parts, tool results, tool-call
/// arguments, instructions, prompts), less the labels around them (roles, types, ids, names).
pub fn prompt_text(req: &Map<String, Value>, api: Api) -> String {
    const LABELS: &[&str] = &[
        "role",
        "type",
        "id",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "name",
        "cache_control",
        "status",
    ];
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| !LABELS.contains(&k.as_str()))
                .for_each(|(_, v)| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    for f in api.text_fields() {
        if let Some(v) = req.get(*f) {
            walk(v, &mut out);
        }
    }
    out
}

/// Request-level inputs from headers.
pub struct Hints<'a> {
    /// `x-tuili-privacy`.
    pub privacy: Option<&'a str>,
    /// `x-tuili-ttft-ms`.
    pub ttft_target_ms: Option<f64>,
    /// The one upstream that may answer: it stores the conversation the request continues
    /// (`previous_response_id`).
    pub pin: Option<&'a str>,
}

/// Plans `req` (whose `model` is `model`) against `table`.
pub fn plan(
    table: &Table,
    model: &str,
    req: &Map<String, Value>,
    api: Api,
    hints: &Hints,
) -> Result<Plan, ApiError> {
    let cfg = &table.config;
    let (levels, policy, detectors, escalate) = match cfg.route(model) {
        Some(r) => (
            r.models.clone(),
            r.policy,
            &r.detectors,
            r.escalation && r.models.len() > 1 && api.has_logprobs(),
        ),
        None => {
            let m = cfg.resolve(model);
            if !table
                .slots
                .iter()
                .any(|s| s.cfg.models.iter().any(|x| x == m))
            {
                let names: Vec<String> = cfg.model_names().into_iter().map(|(n, _)| n).collect();
                return Err(ApiError::model_not_found(format!(
                    "model '{model}' is not served here; models: {}",
                    names.join(", ")
                )));
            }
            (
                vec![m.to_string()],
                cfg.default_policy,
                &cfg.detectors,
                false,
            )
        }
    };
    let text = prompt_text(req, api);
    let (class, class_why) = match hints.privacy {
        Some(c) => (c.to_string(), "x-tuili-privacy header".to_string()),
        None => {
            let hits = detectors.scan(&text);
            if hits.is_empty() {
                (cfg.default_class.clone(), "no detector matched".to_string())
            } else {
                (
                    cfg.detected_class.clone(),
                    format!("detected {}", hits.join("+")),
                )
            }
        }
    };
    let max_tokens = req
        .get("max_completion_tokens")
        .or(req.get("max_tokens"))
        .or(req.get("max_output_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(256) as f64;
    // About four characters a token: only the cost estimate uses it.
    let prompt_tokens = (text.len() / 4) as u64;
    let target = hints.ttft_target_ms.unwrap_or(cfg.ttft_target_ms);
    let now = Instant::now();
    let mut excluded = Vec::new();
    let mut allowed_tiers: Vec<Tier> = Vec::new();
    let mut serving_available = 0usize;
    let mut groups: Vec<Vec<Candidate>> = vec![Vec::new(); if escalate { levels.len() } else { 1 }];
    for (i, s) in table.slots.iter().enumerate() {
        let Some((level, m)) = levels
            .iter()
            .enumerate()
            .find(|(_, m)| s.cfg.models.contains(m))
        else {
            continue;
        };
        if let Some(pin) = hints.pin.filter(|p| *p != s.cfg.name) {
            excluded.push(format!(
                "{}: the conversation continued is stored on {pin}",
                s.cfg.name
            ));
            continue;
        }
        let live = s.live();
        let available = live.up && live.breaker.allows(now);
        if available {
            serving_available += 1;
        }
        if !s.cfg.privacy.contains(&class) {
            excluded.push(format!(
                "{}: privacy class '{class}' not allowed",
                s.cfg.name
            ));
            continue;
        }
        if !allowed_tiers.contains(&s.cfg.tier) {
            allowed_tiers.push(s.cfg.tier);
        }
        if !available {
            let why = if live.up { "breaker open" } else { "down" };
            let last = live
                .last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            excluded.push(format!("{}: {why}{last}", s.cfg.name));
            continue;
        }
        let cost = (s.cfg.price_in * prompt_tokens as f64 + s.cfg.price_out * max_tokens) / 1e6;
        groups[if escalate { level } else { 0 }].push(Candidate {
            slot: i,
            name: s.cfg.name.clone(),
            tier: s.cfg.tier,
            model: m.clone(),
            ttft_ms: live.obs.predict_ttft(s.cfg.ttft_prior_ms),
            cost,
        });
    }
    if groups.iter().all(Vec::is_empty) {
        allowed_tiers.sort();
        let tiers: Vec<&str> = allowed_tiers.iter().map(|t| t.as_str()).collect();
        let detail = excluded.join("; ");
        // Refused for privacy when upstreams for the model are up but none may take it.
        if serving_available > 0 || allowed_tiers.is_empty() {
            return Err(ApiError::privacy(format!(
                "request is privacy class '{class}' ({class_why}); it may go only to tiers [{}] and none of those is available for model '{model}'; nothing was sent ({detail})",
                tiers.join(", ")
            )));
        }
        return Err(ApiError::unavailable(format!(
            "no upstream for model '{model}' is available ({detail})"
        )));
    }
    let key = prefix_key(&text, cfg.affinity_block_chars, cfg.affinity_blocks);
    let mut why = String::new();
    for g in groups.iter_mut() {
        let (o, w) = order(policy, std::mem::take(g), target, key);
        if why.is_empty() && !o.is_empty() {
            why = w;
        }
        *g = o;
    }
    Ok(Plan {
        groups,
        escalate,
        class,
        class_why,
        policy,
        why,
        excluded,
        prompt_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::RouterState;

    const CFG: &str = r#"
[[upstream]]
name = "phone"
tier = "device"
url = "http://127.0.0.1:1/v1"
models = ["small"]
privacy = ["private", "public"]
[[upstream]]
name = "edge"
tier = "edge"
url = "http://127.0.0.1:2/v1"
models = ["small"]
price_out = 0.1
[[upstream]]
name = "cloud"
tier = "cloud"
url = "http://127.0.0.1:3/v1"
models = ["large"]
price_out = 1.0
[[route]]
name = "auto"
models = ["small", "large"]
escalation = true
[aliases]
tiny = "small"
"#;

    fn state() -> RouterState {
        RouterState::new(parse(CFG, &|_| None).unwrap(), Default::default(), None).unwrap()
    }

    fn req(text: &str) -> Map<String, Value> {
        serde_json::from_value(serde_json::json!({"messages": [{"role": "user", "content": text}]}))
            .unwrap()
    }

    fn names(p: &Plan) -> Vec<Vec<&str>> {
        p.groups
            .iter()
            .map(|g| g.iter().map(|c| c.name.as_str()).collect())
            .collect()
    }

    const NO_HINTS: Hints = Hints {
        privacy: None,
        ttft_target_ms: None,
        pin: None,
    };

    #[test]
    fn private_prompts_keep_to_their_tiers_and_are_refused_when_those_are_down() {
        let st = state();
        let p = plan(
            &st.table(),
            "auto",
            &req("mail me at a@b.org"),
            Api::Chat,
            &NO_HINTS,
        )
        .unwrap();
        assert_eq!(
            (p.class.as_str(), p.class_why.as_str()),
            ("private", "detected email")
        );
        assert_eq!(names(&p), [vec!["phone"], vec![]]);
        let p = plan(&st.table(), "tiny", &req("hello"), Api::Chat, &NO_HINTS).unwrap();
        assert_eq!(p.groups.len(), 1, "no escalation outside routes");
        assert_eq!(p.groups[0].len(), 2);
        st.table().slots[0].live().up = false;
        let e = plan(
            &st.table(),
            "auto",
            &req("hello"),
            Api::Chat,
            &Hints {
                privacy: Some("private"),
                ttft_target_ms: None,
                pin: None,
            },
        )
        .err()
        .unwrap();
        assert_eq!(e.status.as_u16(), 403);
        assert!(
            e.message
                .contains("class 'private' (x-tuili-privacy header)")
                && e.message.contains("tiers [device]")
                && e.message.contains("phone: down"),
            "{}",
            e.message
        );
        // Public traffic still flows.
        assert!(plan(&st.table(), "auto", &req("hello"), Api::Chat, &NO_HINTS).is_ok());
    }

    #[test]
    fn a_continued_conversation_goes_only_where_it_is_stored() {
        let st = state();
        let pinned = |pin| Hints {
            privacy: None,
            ttft_target_ms: None,
            pin,
        };
        let p = plan(
            &st.table(),
            "tiny",
            &req("hi"),
            Api::Responses,
            &pinned(Some("edge")),
        )
        .unwrap();
        assert_eq!(names(&p), [vec!["edge"]]);
        st.table().slots[1].live().up = false;
        let e = plan(
            &st.table(),
            "tiny",
            &req("hi"),
            Api::Responses,
            &pinned(Some("edge")),
        )
        .err()
        .unwrap();
        assert!(
            e.message.contains("edge: down") && e.message.contains("stored on edge"),
            "{}",
            e.message
        );
        st.remember_response("resp_1", "edge");
        assert_eq!(st.response_owner("resp_1").as_deref(), Some("edge"));
        assert_eq!(st.response_owner("resp_2"), None);
    }

    #[test]
    fn responses_and_messages_text_includes_nested_parts_but_not_labels() {
        let r: Map<String, Value> = serde_json::from_str(
            r#"{"instructions":"be brief","input":[{"role":"user","type":"message","content":[{"type":"input_text","text":"mail a@b.org"}]},{"type":"function_call_output","call_id":"c1","output":"42"}]}"#,
        )
        .unwrap();
        let t = prompt_text(&r, Api::Responses);
        assert!(
            t.contains("be brief") && t.contains("mail a@b.org") && t.contains("42"),
            "{t}"
        );
        assert!(
            !t.contains("user") && !t.contains("input_text") && !t.contains("c1"),
            "{t}"
        );
        let m: Map<String, Value> = serde_json::from_str(
            r#"{"system":[{"type":"text","text":"sys"}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"card 4111"}]}]}"#,
        )
        .unwrap();
        let t = prompt_text(&m, Api::Messages);
        assert!(
            t.contains("sys") && t.contains("card 4111") && !t.contains("t1"),
            "{t}"
        );
    }

    #[test]
    fn routes_group_by_escalation_level_and_unknown_models_are_named() {
        let st = state();
        let p = plan(&st.table(), "auto", &req("hello"), Api::Chat, &NO_HINTS).unwrap();
        assert!(p.escalate);
        assert_eq!(p.groups.len(), 2);
        assert_eq!(
            p.groups[1]
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["cloud"]
        );
        let e = plan(&st.table(), "gpt-9", &req("x"), Api::Chat, &NO_HINTS)
            .err()
            .unwrap();
        assert_eq!(e.status.as_u16(), 404);
        assert!(
            e.message.contains("auto, large, small, tiny"),
            "{}",
            e.message
        );
    }
}
