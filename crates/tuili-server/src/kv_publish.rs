//! The KV-event publisher, as vLLM's `ZmqEventPublisher`: on its own thread, it reads the
//! engine's batches from a channel and sends each on a ZMQ PUB socket as the multipart
//! message `[topic, seq (8 bytes, big-endian), payload]` (payload: [`crate::kv_wire`]).
//! The last [`REPLAY_BATCHES`] batches are kept for an optional ROUTER socket: a request
//! `[identity, "", start_seq]` is answered with `[identity, "", seq, payload]` for every
//! kept batch from `start_seq` on, then `[identity, "", -1, ""]`.
//!
//! ZMQ is the pure-Rust `zeromq` crate (ZMTP 3, tested against pyzmq). A subscriber too slow
//! to keep up loses messages, as with libzmq's high-water mark; it can ask for them again.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tuili_engine::KvEventReceiver;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::kv_wire::{encode_batch, KvWireLayout};

/// Batches kept for replay (vLLM's `buffer_steps`).
pub const REPLAY_BATCHES: usize = 10_000;

/// Where to publish the KV events.
#[derive(Debug, Clone)]
pub struct KvEventsOptions {
    /// PUB endpoint, `tcp://HOST:PORT` (`*` for every interface); bound, never connected.
    pub endpoint: String,
    /// ROUTER endpoint for replay requests, if any.
    pub replay_endpoint: Option<String>,
    /// First frame of every message (subscribers filter on it).
    pub topic: String,
    /// How events are laid out in a batch.
    pub layout: KvWireLayout,
}

/// Binds the sockets, then publishes what arrives on `rx` from a thread of its own until
/// every sender is gone. Returns the bound addresses (PUB, then ROUTER) once listening, or
/// why the sockets could not be bound.
pub fn start_kv_publisher(
    opts: KvEventsOptions,
    rx: KvEventReceiver,
) -> Result<Vec<String>, String> {
    let endpoints: Vec<String> = std::iter::once(&opts.endpoint)
        .chain(opts.replay_endpoint.as_ref())
        .map(|e| bind_address(e))
        .collect::<Result<_, _>>()?;
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<Vec<String>, String>>();
    std::thread::Builder::new()
        .name("tuili-kv-events".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = bound_tx.send(Err(format!("starting its runtime: {e}")));
                    return;
                }
            };
            rt.block_on(publish(endpoints, opts.topic, opts.layout, rx, bound_tx));
        })
        .map_err(|e| format!("cannot start the KV-event thread: {e}"))?;
    match bound_rx.recv() {
        Ok(Ok(bound)) => Ok(bound),
        Ok(Err(e)) => Err(format!("KV events: {e}")),
        Err(_) => Err("KV events: the publisher thread ended before binding".to_string()),
    }
}

/// `tcp://HOST:PORT` with `*` (vLLM's "bind on every interface") spelled `0.0.0.0`.
fn bind_address(endpoint: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "KV-event endpoint '{endpoint}' {why} (expected tcp://HOST:PORT, e.g. tcp://*:5557)"
        )
    };
    let rest = endpoint
        .strip_prefix("tcp://")
        .ok_or_else(|| bad("is not a tcp:// address"))?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    port.parse::<u16>().map_err(|_| bad("has a bad port"))?;
    let host = if host == "*" { "0.0.0.0" } else { host };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(format!("tcp://{host}:{port}"))
}

async fn publish(
    endpoints: Vec<String>,
    topic: String,
    layout: KvWireLayout,
    mut rx: KvEventReceiver,
    bound_tx: std::sync::mpsc::Sender<Result<Vec<String>, String>>,
) {
    let mut pub_socket = zeromq::PubSocket::new();
    let mut replay = endpoints.get(1).map(|_| zeromq::RouterSocket::new());
    let mut bound = Vec::new();
    let pub_bound = pub_socket.bind(&endpoints[0]).await;
    let replay_bound = match (&mut replay, endpoints.get(1)) {
        (Some(r), Some(e)) => Some(r.bind(e).await),
        _ => None,
    };
    match (pub_bound, replay_bound) {
        (Err(e), _) => {
            let _ = bound_tx.send(Err(format!("binding {}: {e}", endpoints[0])));
            return;
        }
        (_, Some(Err(e))) => {
            let _ = bound_tx.send(Err(format!("binding {}: {e}", endpoints[1])));
            return;
        }
        (Ok(p), r) => {
            bound.push(p.to_string());
            bound.extend(r.and_then(Result::ok).map(|e| e.to_string()));
        }
    }
    tracing::info!("publishing KV events on {}", bound.join(", replay on "));
    let _ = bound_tx.send(Ok(bound));
    let topic = Bytes::from(topic.into_bytes());
    let mut kept: VecDeque<(u64, Bytes)> = VecDeque::new();
    let mut seq = 0u64;
    loop {
        let request = async {
            match &mut replay {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = rx.recv() => {
                let Some(events) = batch else { return };
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let payload = Bytes::from(encode_batch(ts, &events, 0, layout));
                let frames = vec![
                    topic.clone(),
                    Bytes::copy_from_slice(&seq.to_be_bytes()),
                    payload.clone(),
                ];
                if let Err(e) = send(&mut pub_socket, frames).await {
                    tracing::warn!("KV events: sending batch {seq}: {e}");
                }
                if kept.len() == REPLAY_BATCHES {
                    kept.pop_front();
                }
                kept.push_back((seq, payload));
                seq += 1;
            }
            msg = request => match (msg, &mut replay) {
                (Ok(m), Some(r)) => serve_replay(r, m.into_vec(), &kept).await,
                (Err(e), _) => tracing::warn!("KV events: a replay request failed: {e}"),
                _ => {}
            },
        }
    }
}

/// Answers `[identity, "", start_seq]` with the kept batches from `start_seq` on and the
/// end marker; anything else is logged and ignored, as vLLM does.
async fn serve_replay(
    r: &mut zeromq::RouterSocket,
    frames: Vec<Bytes>,
    kept: &VecDeque<(u64, Bytes)>,
) {
    let [id, _, start] = frames.as_slice() else {
        tracing::warn!(
            "KV events: a replay request of {} frames, not 3",
            frames.len()
        );
        return;
    };
    // vLLM reads the start as an unsigned big-endian integer of any length.
    let start = start
        .iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
    for (seq, payload) in kept.iter().filter(|(s, _)| u128::from(*s) >= start) {
        let frames = vec![
            id.clone(),
            Bytes::new(),
            Bytes::copy_from_slice(&seq.to_be_bytes()),
            payload.clone(),
        ];
        if let Err(e) = send(r, frames).await {
            tracing::warn!("KV events: replaying batch {seq}: {e}");
            return;
        }
    }
    let end = vec![
        id.clone(),
        Bytes::new(),
        Bytes::copy_from_slice(&(-1i64).to_be_bytes()),
        Bytes::new(),
    ];
    if let Err(e) = send(r, end).await {
        tracing::warn!("KV events: ending a replay: {e}");
    }
}

async fn send(socket: &mut impl SocketSend, frames: Vec<Bytes>) -> Result<(), String> {
    let msg = ZmqMessage::try_from(frames).map_err(|e| e.to_string())?;
    socket.send(msg).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::bind_address;

    #[test]
    fn endpoints() {
        assert_eq!(bind_address("tcp://*:5557").unwrap(), "tcp://0.0.0.0:5557");
        assert_eq!(
            bind_address("tcp://127.0.0.1:0").unwrap(),
            "tcp://127.0.0.1:0"
        );
        for bad in ["ipc:///tmp/x", "tcp://host", "tcp://h:99999", "tcp://:5"] {
            let e = bind_address(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("tcp://HOST:PORT"), "{e}");
        }
    }
}
