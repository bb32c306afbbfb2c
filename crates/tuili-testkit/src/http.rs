//! A loopback HTTP/1.1 server for tests of clients (`tuili pull` against hubs, registries
//! and package indexes): 127.0.0.1 only, one thread and one request per connection, every
//! request recorded, `Range` answered on any 200 body as a CDN does, and a body that can be
//! cut short as a dropped connection leaves it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
}

/// An answer: status, headers, body; `cut` sends only that many bytes of the body (with
/// the full Content-Length) and closes, as a dropped connection does.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Headers besides `Connection` and `Content-Length` (sent unless given here).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Send only this many bytes of the body, then close.
    pub cut: Option<usize>,
}

/// An answer with the whole body.
pub fn answer(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    Answer {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
        cut: None,
    }
}

/// Answers a request; the second argument is the server's base URL (`http://127.0.0.1:PORT`).
pub type Handler = dyn Fn(&Seen, &str) -> Answer + Send + Sync;

/// A loopback HTTP/1.1 server: one thread per connection, one request per connection.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Starts serving on a free port; the threads end with the test process.
    pub fn start(handler: Arc<Handler>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (b, s) = (base.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (h, b, s) = (handler.clone(), b.clone(), s.clone());
                std::thread::spawn(move || serve(conn, &*h, &b, &s));
            }
        });
        Server { base, seen }
    }

    /// The requests so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, handler: &Handler, base: &str, seen: &Mutex<Vec<Seen>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Seen {
        method,
        path,
        headers,
    };
    seen.lock().unwrap().push(req.clone());
    let mut a = handler(&req, base);
    // Range requests on a 200 body, as a CDN answers them.
    if a.status == 200 && req.method == "GET" {
        if let Some(start) = req
            .headers
            .get("range")
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok())
        {
            let total = a.body.len();
            a.status = 206;
            a.headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{total}", total - 1),
            ));
            a.body = a.body[start.min(total)..].to_vec();
        }
    }
    let mut out = conn;
    let reason = match a.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", a.status);
    if !a
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head += &format!("Content-Length: {}\r\n", a.body.len());
    }
    for (k, v) in &a.headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let _ = out.write_all(head.as_bytes());
    if req.method != "HEAD" {
        let n = a.cut.unwrap_or(a.body.len());
        let _ = out.write_all(&a.body[..n]);
    }
    let _ = out.flush();
}
