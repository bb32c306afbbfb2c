//! The background probe: every `probe.interval_ms`, each upstream's health path (up or
//! down, and the round trip) and, where it has one, its `/metrics` (queue, running, KV).

use std::time::{Duration, Instant};

use axum::http::Method;
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::state::{RouterState, Slot};
use crate::upstream::call;

async fn probe_one(slot: &Slot) {
    let t0 = Instant::now();
    let health = call(
        &slot.cfg,
        &slot.transport,
        Method::GET,
        &slot.cfg.health_path,
        false,
        Bytes::new(),
    )
    .await;
    let (up, why) = match health {
        Ok(r) if r.status().is_success() => {
            let _ = r.into_body().collect().await;
            (true, None)
        }
        Ok(r) => (false, Some(format!("health probe answered {}", r.status()))),
        Err(e) => (false, Some(format!("health probe: {e}"))),
    };
    let rtt = t0.elapsed().as_secs_f64() * 1e3;
    let metrics = if up && slot.cfg.scrape_metrics {
        match call(
            &slot.cfg,
            &slot.transport,
            Method::GET,
            "/metrics",
            false,
            Bytes::new(),
        )
        .await
        {
            Ok(r) if r.status().is_success() => r
                .into_body()
                .collect()
                .await
                .ok()
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()),
            _ => None,
        }
    } else {
        None
    };
    let mut l = slot.live();
    if up != l.up {
        tracing::info!(
            "upstream {} is {}{}",
            slot.cfg.name,
            if up { "up" } else { "down" },
            why.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
        );
    }
    l.up = up;
    if up {
        l.obs.observe_rtt(rtt);
    } else {
        l.last_error = why;
    }
    if let Some(text) = metrics {
        l.obs.take_scrape(&text);
    }
}

/// Probes every upstream of the current table once, concurrently.
pub async fn probe_all(st: &RouterState) {
    let table = st.table();
    futures_util::future::join_all(table.slots.iter().map(probe_one)).await;
}

/// Probes forever at the configured period (a reload's new period applies next round).
pub async fn probe_loop(st: RouterState) {
    loop {
        let period = st.table().config.probe_interval_ms;
        probe_all(&st).await;
        tokio::time::sleep(Duration::from_millis(period)).await;
    }
}
