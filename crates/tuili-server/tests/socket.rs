//! End to end over real sockets with the real default model: overload (429), disconnects
//! that free the engine, batch invariance, graceful shutdown.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tuili_engine::{EngineConfig, Sampler, SamplingParams, Session};

/// Opens a streaming request and reads until `frames` SSE frames arrived; the socket is
/// returned still open.
async fn open_stream(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    frames: usize,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = raw_request("POST", path, Some(&body.to_string()), &[]);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("data: ").count() < frames {
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
            .await
            .expect("no frame within 60 s")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    (s, String::from_utf8_lossy(&seen).into_owned())
}

fn small_engine(max_num_seqs: usize, max_queue: usize) -> EngineConfig {
    EngineConfig {
        max_num_seqs,
        max_queue,
        ..engine_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_and_nothing_hangs() {
    let Some(sm) = smol("full_queue_answers_429_and_nothing_hangs") else {
        return;
    };
    let st = state(sm, small_engine(1, 1), server_config());
    let srv = spawn_server(st.clone(), Duration::from_secs(5)).await;
    let body =
        json!({"prompt": "Tell me a story", "max_tokens": 24, "ignore_eos": true, "stream": true})
            .to_string();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(
                async move { http(srv.addr, "POST", "/v1/completions", Some(&body)).await },
            )
        })
        .collect();
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("request hung")
            .expect("task");
        match r.status {
            StatusCode::OK => {
                assert_eq!(
                    r.events().last().map(String::as_str),
                    Some("[DONE]"),
                    "{}",
                    r.body
                );
                ok += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(r.header("retry-after"), Some("1"));
                let e = r.error();
                assert_eq!(e["type"], "rate_limit_error");
                assert!(e["message"].as_str().unwrap().contains("limit 1"), "{e}");
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok {ok}, 429 {busy}");
    wait_drained(&st, 10).await;
    // Serves normally afterwards.
    let r = http(
        srv.addr,
        "POST",
        "/v1/completions",
        Some(&json!({"prompt": "Hi", "max_tokens": 4}).to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let text = http(srv.addr, "GET", "/metrics", None).await.body;
    assert!(
        text.contains(&format!("tuili_requests_total{{status=\"429\"}} {busy}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_free_sequences_and_blocks() {
    let Some(sm) = smol("disconnects_free_sequences_and_blocks") else {
        return;
    };
    let st = state(sm, small_engine(4, 8), server_config());
    let srv = spawn_server(st.clone(), Duration::from_secs(5)).await;
    let engine = st.engine().unwrap().clone();
    // The engine publishes its gauges after a step: run one request first.
    let warm = json!({"prompt": "Hi", "max_tokens": 2}).to_string();
    assert_eq!(
        http(srv.addr, "POST", "/v1/completions", Some(&warm))
            .await
            .status,
        StatusCode::OK
    );
    let total_blocks = {
        let m = engine.metrics();
        m.kv_blocks_used + m.kv_blocks_free
    };
    let before = engine.metrics().generated_tokens_total;
    let mut socks = Vec::new();
    for i in 0..4 {
        let body = json!({"messages": [{"role": "user", "content": format!("Write a long essay about topic {i}.")}],
                          "max_tokens": 400, "ignore_eos": true, "stream": true});
        socks.push(
            open_stream(srv.addr, "/v1/chat/completions", &body, 4)
                .await
                .0,
        );
    }
    assert!(engine.metrics().running >= 1);
    drop(socks);
    let m = wait_drained(&st, 10).await;
    assert!(total_blocks > 0);
    assert_eq!(m.kv_blocks_free, total_blocks);
    assert!(
        m.generated_tokens_total - before < 4 * 400,
        "requests ran to the end: {m:?}"
    );

    // A non-streaming request whose client leaves is cancelled too.
    let before = engine.metrics().generated_tokens_total;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 600, "ignore_eos": true}).to_string();
    s.write_all(raw_request("POST", "/v1/completions", Some(&body), &[]).as_bytes())
        .await
        .unwrap();
    let t0 = Instant::now();
    while engine.metrics().generated_tokens_total == before
        && t0.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(s);
    let m = wait_drained(&st, 10).await;
    assert!(
        m.generated_tokens_total - before < 600,
        "non-streaming request ran to the end"
    );

    // A request still waiting in the queue when its client leaves is dropped from it.
    let st1 = state(sm, small_engine(1, 4), server_config());
    let srv1 = spawn_server(st1.clone(), Duration::from_secs(5)).await;
    let long =
        json!({"prompt": "The history of", "max_tokens": 300, "ignore_eos": true, "stream": true});
    let (first, _) = open_stream(srv1.addr, "/v1/completions", &long, 2).await;
    let mut queued = TcpStream::connect(srv1.addr).await.unwrap();
    queued
        .write_all(raw_request("POST", "/v1/completions", Some(&long.to_string()), &[]).as_bytes())
        .await
        .unwrap();
    let e1 = st1.engine().unwrap().clone();
    let t0 = Instant::now();
    while e1.metrics().waiting == 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(e1.metrics().waiting, 1);
    drop(queued);
    let t0 = Instant::now();
    while e1.metrics().waiting > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "queued request not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e1.metrics().running, 1, "the first request keeps running");
    drop(first);
    wait_drained(&st1, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_output_is_the_same_alone_in_a_batch_and_in_a_session() {
    let Some(sm) = smol("greedy_output_is_the_same_alone_in_a_batch_and_in_a_session") else {
        return;
    };
    let st = state(sm, small_engine(8, 16), server_config());
    let srv = spawn_server(st.clone(), Duration::from_secs(5)).await;
    let prompt = "The three primary colors are";
    let req =
        |p: &str, max: usize| json!({"prompt": p, "max_tokens": max, "temperature": 0}).to_string();
    let alone = http(srv.addr, "POST", "/v1/completions", Some(&req(prompt, 24)))
        .await
        .json();
    let alone = alone["choices"][0]["text"].as_str().unwrap().to_string();

    // The same request among others that started before it and run longer.
    let mut others = Vec::new();
    for p in [
        "In 1492,",
        "def fibonacci(n):",
        "A recipe for bread:",
        "Dear Sir or Madam,",
        "The mitochondria",
    ] {
        let body = req(p, 48);
        others.push(tokio::spawn(async move {
            http(srv.addr, "POST", "/v1/completions", Some(&body)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let batched = http(srv.addr, "POST", "/v1/completions", Some(&req(prompt, 24)))
        .await
        .json();
    for o in others {
        assert_eq!(o.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(batched["choices"][0]["text"].as_str().unwrap(), alone);

    // And what `tuili run` computes: one sequence, its own KV cache.
    let ids = sm.tokenizer.encode(prompt, true, false);
    let mut session = Session::new(&sm.model, &sm.tokenizer, 1024).unwrap();
    let mut sampler = Sampler::new(SamplingParams::greedy());
    let mut text = String::new();
    session
        .generate(&ids, 24, &mut sampler, |t| {
            text.push_str(t);
            true
        })
        .unwrap();
    assert_eq!(text, alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_requests_finish() {
    let Some(sm) = smol("shutdown_lets_running_requests_finish") else {
        return;
    };
    let st = state(sm, small_engine(4, 8), server_config());
    let mut srv = spawn_server(st.clone(), Duration::from_secs(60)).await;
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 30, "ignore_eos": true, "stream": true});
    let (mut sock, mut seen) = open_stream(srv.addr, "/v1/completions", &body, 2).await;
    srv.stop.take().unwrap().send(()).unwrap();
    // The running stream goes on to its end.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), sock.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&rest));
    let r = parse_response(seen.as_bytes());
    let ev = r.events();
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{seen}");
    assert!(
        ev.iter()
            .any(|e| e.contains("\"finish_reason\":\"length\"")),
        "{seen}"
    );
    let res = tokio::time::timeout(Duration::from_secs(10), srv.done)
        .await
        .expect("server did not stop");
    assert!(res.unwrap().is_ok());
    // No longer accepting: new connections are refused, the engine refuses new work.
    assert!(TcpStream::connect(srv.addr).await.is_err());
    assert!(st.is_shutting_down());
    assert_eq!(
        call(&st, "GET", "/health", None, &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_after_the_grace_period() {
    let Some(sm) = smol("shutdown_gives_up_after_the_grace_period") else {
        return;
    };
    let st = state(sm, small_engine(2, 8), server_config());
    let mut srv = spawn_server(st.clone(), Duration::from_millis(500)).await;
    let body = json!({"prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": true, "stream": true});
    let (_sock, _) = open_stream(srv.addr, "/v1/completions", &body, 2).await;
    let t0 = Instant::now();
    srv.stop.take().unwrap().send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), srv.done)
        .await
        .expect("server did not stop");
    assert!(res.unwrap().is_ok());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
}
