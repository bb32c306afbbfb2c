//! Shared helpers: the real default model (from `TUILI_TEST_MODELS_DIR`), in-process calls
//! through `tower::ServiceExt::oneshot`, and a minimal HTTP/1.1 client for real sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tuili_engine::{start_engine, EngineConfig};
use tuili_gguf::GgufFile;
use tuili_models::Model;
use tuili_server::{app, AppState, ServerConfig};
use tuili_tokenizer::{ChatTemplate, Tokenizer};

/// `text` as a regex that matches only it (for `structured_outputs.regex`).
pub fn regex_of(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '|' | '.' | '{' | '}' | '\\' | '(' | ')' | '[' | ']' | '*' | '+' | '?' | '^' | '$' => {
                format!("\\{c}")
            }
            c => c.to_string(),
        })
        .collect()
}

/// A streamed chat answer's deltas joined as a client joins them (choice 0).
#[derive(Debug, Default)]
pub struct Streamed {
    pub reasoning: String,
    pub content: String,
    /// Each call's name, by index.
    pub names: Vec<String>,
    /// Each call's arguments, by index.
    pub args: Vec<String>,
    pub finish: Option<String>,
}

/// The deltas of a chat stream's events, joined; each call's first fragment names it and
/// carries its `call_` id, and no event holds `hidden` (a marker that must not leak).
pub fn streamed(r: &Reply, hidden: &str) -> Streamed {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut out = Streamed::default();
    for data in r.events().iter().filter(|d| *d != "[DONE]") {
        assert!(!data.contains(hidden), "a marker leaked: {data}");
        let v: Value = serde_json::from_str(data).unwrap();
        let Some(c) = v["choices"].get(0) else {
            continue;
        };
        let d = &c["delta"];
        out.reasoning += d["reasoning_content"].as_str().unwrap_or("");
        out.content += d["content"].as_str().unwrap_or("");
        for t in d["tool_calls"].as_array().into_iter().flatten() {
            let i = t["index"].as_u64().unwrap() as usize;
            if let Some(n) = t["function"]["name"].as_str() {
                assert!(t["id"].as_str().unwrap().starts_with("call_"), "{t}");
                assert_eq!(i, out.names.len(), "{t}");
                out.names.push(n.to_string());
                out.args.push(String::new());
            }
            out.args[i] += t["function"]["arguments"].as_str().unwrap_or("");
        }
        if let Some(f) = c["finish_reason"].as_str() {
            out.finish = Some(f.to_string());
        }
    }
    out
}

/// The name tests serve the model under.
pub const MODEL: &str = "smol-test";

/// A loaded test model (the default one, SmolLM2, or another), shared by all tests of one
/// binary.
pub struct Smol {
    pub file: Arc<GgufFile>,
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
}

/// The default model, or `None` after printing a visible skip line (a failure with
/// `TUILI_REQUIRE_MODELS=1`).
pub fn smol(test: &str) -> Option<&'static Smol> {
    static SMOL: OnceLock<Option<Smol>> = OnceLock::new();
    load_once(&SMOL, "smol.gguf", test)
}

/// Qwen2.5-Coder (the tool-calling model), or `None` after a visible skip line.
pub fn qwen(test: &str) -> Option<&'static Smol> {
    static QWEN: OnceLock<Option<Smol>> = OnceLock::new();
    load_once(&QWEN, "qwen.gguf", test)
}

fn load_once(
    slot: &'static OnceLock<Option<Smol>>,
    name: &str,
    test: &str,
) -> Option<&'static Smol> {
    let s = slot.get_or_init(|| {
        let path = tuili_testkit::model(name)?;
        let file = Arc::new(GgufFile::open(&path).expect("open the model"));
        let model = Arc::new(Model::load(&file).expect("load the model"));
        let tokenizer = Arc::new(Tokenizer::from_gguf(&file).expect("its tokenizer"));
        Some(Smol {
            file,
            model,
            tokenizer,
        })
    });
    if s.is_none() {
        tuili_testkit::skip(&format!("{test}: {name} not found"));
    }
    s.as_ref()
}

/// Engine settings small enough for a 2-core machine.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        n_ctx: 1024,
        max_num_seqs: 8,
        max_queue: 64,
        kv_memory_bytes: None,
        block_size: 16,
        max_batched_tokens: 256,
        ..EngineConfig::default()
    }
}

/// A ready state over the default model.
pub fn state(smol: &Smol, engine: EngineConfig, server: ServerConfig) -> AppState {
    let handle = start_engine(smol.model.clone(), smol.tokenizer.clone(), engine).expect("engine");
    let template = ChatTemplate::from_gguf(&smol.file).expect("template");
    AppState::with_engine(server, handle, template).expect("state")
}

/// Server settings used by most tests.
pub fn server_config() -> ServerConfig {
    let mut c = ServerConfig::new(MODEL);
    c.model_aliases.push("smol".to_string());
    c
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an SSE body, `[DONE]` included.
    pub fn events(&self) -> Vec<String> {
        sse_data(&self.body)
    }

    /// The OpenAI error object; panics when the body is not one.
    pub fn error(&self) -> Value {
        let v = self.json();
        let e = v["error"].clone();
        assert!(
            e["message"].is_string(),
            "not an OpenAI error: {}",
            self.body
        );
        assert!(e["type"].is_string(), "not an OpenAI error: {}", self.body);
        assert!(
            e.get("param").is_some() && e.get("code").is_some(),
            "{}",
            self.body
        );
        e
    }
}

/// The `data:` payloads of an SSE text.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// Calls the app in-process.
pub async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request");
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    }
}

/// POSTs JSON in-process.
pub async fn post(state: &AppState, path: &str, body: &Value) -> Reply {
    call(state, "POST", path, Some(&body.to_string()), &[]).await
}

/// A server on a real socket (127.0.0.1, free port), stopped by `stop`.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<Result<(), tuili_server::ServerError>>,
}

pub async fn spawn_server(state: AppState, grace: Duration) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(tuili_server::serve(
        listener,
        state,
        async move {
            let _ = rx.await;
        },
        grace,
    ));
    Running {
        addr,
        stop: Some(tx),
        done,
    }
}

/// The raw bytes of an HTTP/1.1 request with `Connection: close`.
pub fn raw_request(
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    r.push_str("\r\n");
    if let Some(b) = body {
        r.push_str(b);
    }
    r
}

/// One request over a real socket, read to the end.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw_request(method, path, body, &[]).as_bytes())
        .await
        .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    parse_response(&raw)
}

/// Parses a whole HTTP/1.1 response (chunked or not).
pub fn parse_response(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status: StatusCode::from_u16(code).expect("status"),
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until the engine has nothing running and no KV blocks held (or panics after `secs`).
pub async fn wait_drained(state: &AppState, secs: u64) -> tuili_engine::EngineMetrics {
    let engine = state.engine().expect("engine");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let m = engine.metrics();
        if m.running == 0 && m.kv_blocks_used == 0 && m.waiting == 0 && engine.is_idle() {
            return m;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("engine not drained after {secs}s: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
