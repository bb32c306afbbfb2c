//! Choosing the order in which upstreams are tried: plain data in, plain data out, so the
//! policies are tested with numbers and no network.

use crate::affinity::rendezvous;
use crate::config::{PolicyKind, Tier};

/// One upstream able to take the request, with what the router predicts for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Index of the upstream in the table.
    pub slot: usize,
    /// Its name.
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// The router's model it would run.
    pub model: String,
    /// Predicted time to first token, ms.
    pub ttft_ms: f64,
    /// Predicted cost of this request there, dollars.
    pub cost: f64,
}

/// A replica chosen by affinity may be at most this much slower than its fastest sibling
/// (times, plus the constant below) before load wins over the cache.
const AFFINITY_SLACK: f64 = 2.0;
const AFFINITY_SLACK_MS: f64 = 50.0;

/// Orders `cands` by `policy`; `target_ms` is the TTFT target (0: none); `prefix` is the
/// prompt's affinity key. Returns the order and one line saying why the first is first.
pub fn order(
    policy: PolicyKind,
    mut cands: Vec<Candidate>,
    target_ms: f64,
    prefix: Option<u64>,
) -> (Vec<Candidate>, String) {
    if cands.is_empty() {
        return (cands, "no candidate".into());
    }
    let by_ttft = |a: &Candidate, b: &Candidate| {
        a.ttft_ms
            .total_cmp(&b.ttft_ms)
            .then(a.cost.total_cmp(&b.cost))
    };
    let meets = |c: &Candidate| target_ms <= 0.0 || c.ttft_ms <= target_ms;
    let mut why = match policy {
        PolicyKind::Latency => {
            cands.sort_by(by_ttft);
            format!("lowest predicted TTFT ({:.1} ms)", cands[0].ttft_ms)
        }
        PolicyKind::Cost => {
            cands.sort_by(|a, b| {
                meets(b).cmp(&meets(a)).then_with(|| {
                    if meets(a) {
                        a.cost
                            .total_cmp(&b.cost)
                            .then(a.ttft_ms.total_cmp(&b.ttft_ms))
                    } else {
                        by_ttft(a, b)
                    }
                })
            });
            if meets(&cands[0]) {
                format!(
                    "cheapest (${:.8}) meeting the TTFT target {} (predicted {:.1} ms)",
                    cands[0].cost,
                    target_desc(target_ms),
                    cands[0].ttft_ms
                )
            } else {
                format!(
                    "none meets the TTFT target {target_ms} ms; fastest (predicted {:.1} ms)",
                    cands[0].ttft_ms
                )
            }
        }
        PolicyKind::LocalFirst => {
            cands.sort_by(|a, b| a.tier.cmp(&b.tier).then_with(|| by_ttft(a, b)));
            format!(
                "nearest tier ({}), fastest there (predicted {:.1} ms)",
                cands[0].tier, cands[0].ttft_ms
            )
        }
    };
    // Affinity among the first choice's replicas (same tier, same model).
    if let Some(key) = prefix {
        let (tier, model) = (cands[0].tier, cands[0].model.clone());
        let group: Vec<usize> = (0..cands.len())
            .filter(|&i| cands[i].tier == tier && cands[i].model == model)
            .collect();
        if group.len() > 1 {
            let names: Vec<&str> = group.iter().map(|&i| cands[i].name.as_str()).collect();
            let best = group
                .iter()
                .map(|&i| cands[i].ttft_ms)
                .fold(f64::INFINITY, f64::min);
            if let Some(w) = rendezvous(key, &names) {
                let i = group[w];
                if cands[i].ttft_ms <= best * AFFINITY_SLACK + AFFINITY_SLACK_MS {
                    if i != 0 {
                        let c = cands.remove(i);
                        cands.insert(0, c);
                    }
                    why += &format!(
                        "; prefix affinity -> {} among {} replicas",
                        cands[0].name,
                        group.len()
                    );
                } else {
                    why += &format!(
                        "; prefix affinity's {} overloaded (predicted {:.1} ms), kept the fastest",
                        names[w], cands[i].ttft_ms
                    );
                }
            }
        }
    }
    (cands, why)
}

fn target_desc(t: f64) -> String {
    if t <= 0.0 {
        "(none)".into()
    } else {
        format!("{t} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(slot: usize, name: &str, tier: Tier, ttft_ms: f64, cost: f64) -> Candidate {
        Candidate {
            slot,
            name: name.into(),
            tier,
            model: "m".into(),
            ttft_ms,
            cost,
        }
    }

    fn names(v: &[Candidate]) -> Vec<&str> {
        v.iter().map(|c| c.name.as_str()).collect()
    }

    fn set() -> Vec<Candidate> {
        vec![
            c(0, "cloud", Tier::Cloud, 60.0, 0.003),
            c(1, "laptop", Tier::Device, 90.0, 0.0),
            c(2, "edge", Tier::Edge, 20.0, 0.001),
        ]
    }

    #[test]
    fn each_policy_orders_as_documented() {
        let (o, why) = order(PolicyKind::Latency, set(), 0.0, None);
        assert_eq!(names(&o), ["edge", "cloud", "laptop"]);
        assert!(why.contains("lowest predicted TTFT (20.0 ms)"), "{why}");
        let (o, _) = order(PolicyKind::Cost, set(), 0.0, None);
        assert_eq!(names(&o), ["laptop", "edge", "cloud"]);
        // The free device misses a 50 ms target: the cheapest that meets it wins.
        let (o, why) = order(PolicyKind::Cost, set(), 50.0, None);
        assert_eq!(
            names(&o),
            ["edge", "cloud", "laptop"],
            "the ones missing the target follow, fastest first"
        );
        assert!(why.contains("meeting the TTFT target 50 ms"), "{why}");
        let (o, why) = order(PolicyKind::Cost, set(), 5.0, None);
        assert_eq!(names(&o), ["edge", "cloud", "laptop"]);
        assert!(why.contains("none meets"), "{why}");
        let (o, _) = order(PolicyKind::LocalFirst, set(), 0.0, None);
        assert_eq!(names(&o), ["laptop", "edge", "cloud"]);
    }

    #[test]
    fn affinity_picks_a_stable_replica_unless_it_is_overloaded() {
        let reps = || {
            vec![
                c(0, "edge-a", Tier::Edge, 20.0, 0.0),
                c(1, "edge-b", Tier::Edge, 25.0, 0.0),
                c(2, "cloud", Tier::Cloud, 10.0, 1.0),
            ]
        };
        let mut seen = std::collections::BTreeSet::new();
        for key in 0..64u64 {
            let (o, _) = order(PolicyKind::Cost, reps(), 0.0, Some(key * 7919));
            let (o2, _) = order(PolicyKind::Cost, reps(), 0.0, Some(key * 7919));
            assert_eq!(o[0].name, o2[0].name, "same key, same replica");
            assert!(o[0].name.starts_with("edge"));
            seen.insert(o[0].name.clone());
        }
        assert_eq!(seen.len(), 2, "keys spread over both replicas");
        // A replica far slower than its sibling loses its keys to load.
        let slow = vec![
            c(0, "edge-a", Tier::Edge, 20.0, 0.0),
            c(1, "edge-b", Tier::Edge, 500.0, 0.0),
        ];
        for key in 0..32u64 {
            let (o, _) = order(PolicyKind::Latency, slow.clone(), 0.0, Some(key * 7919));
            assert_eq!(o[0].name, "edge-a");
        }
    }
}
