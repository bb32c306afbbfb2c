//! HTTP downloads for `tuili pull`: resumable (an `.incomplete` file next to the final
//! name, continued with a `Range` request), checked against the size and sha256 the hub
//! published, with a progress bar showing the rate and the time left. Nothing is ever
//! left under the final name unless it passed the checks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::progress::Bar;

/// An HTTP client: redirects followed (without the token), timeouts set.
pub fn agent(redirects: u32) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(redirects)
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .user_agent(concat!("tuili/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A request to send: the URL, an optional bearer token, extra headers.
pub struct Request<'a> {
    pub url: &'a str,
    pub token: Option<&'a str>,
    /// The environment variable a token for this server comes from, named when the
    /// server asks for one and none was sent.
    pub token_var: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
}

impl Request<'_> {
    /// Sends `method`; an HTTP error status becomes an error naming the URL and what to do.
    pub fn send(&self, agent: &ureq::Agent, method: &str) -> Result<ureq::Response> {
        let mut req = agent.request(method, self.url);
        if let Some(t) = self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in self.headers {
            req = req.set(k, v);
        }
        match req.call() {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                let hint = match (self.token, self.token_var) {
                    (Some(_), _) => "the token was refused".to_string(),
                    (None, Some(var)) => format!("it needs a token: set {var}"),
                    (None, None) => "it needs credentials tuili does not send".to_string(),
                };
                bail!("{}: HTTP {code}, access denied ({hint})", self.url)
            }
            Err(ureq::Error::Status(404, _)) => bail!("{}: not found (HTTP 404)", self.url),
            Err(ureq::Error::Status(code, r)) => {
                bail!("{}: HTTP {code} {}", self.url, r.status_text())
            }
            Err(ureq::Error::Transport(t)) => bail!("{}: {t}", self.url),
        }
    }
}

/// What the downloaded file must be.
pub struct Expect<'a> {
    /// Its size in bytes, when the server published it.
    pub size: Option<u64>,
    /// Its sha256 (lowercase hex), when the server published it.
    pub sha256: Option<&'a str>,
}

/// `path` with `.incomplete` appended: where a download grows until it is checked.
pub fn incomplete_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

/// The sha256 of a file, in lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hash_prefix(path, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Feeds the bytes of `path` to `hasher` (to continue hashing a resumed download); their count.
fn hash_prefix(path: &Path, hasher: &mut Sha256) -> Result<u64> {
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn range_start(resp: &ureq::Response) -> Option<u64> {
    let v = resp.header("Content-Range")?;
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Downloads `req` into `dest`, resuming a previous `.incomplete` file, and checks it
/// against `expect` before giving it its final name. A body cut short keeps the
/// `.incomplete` file (the next run resumes it); a wrong checksum deletes it.
pub fn fetch(agent: &ureq::Agent, req: &Request, dest: &Path, expect: &Expect) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = incomplete_path(dest);
    let mut hasher = Sha256::new();
    let mut have = if partial.exists() {
        hash_prefix(&partial, &mut hasher)?
    } else {
        0
    };
    if expect.size.is_some_and(|s| have > s) {
        // Longer than the file can be: not a prefix of it.
        std::fs::remove_file(&partial)?;
        hasher = Sha256::new();
        have = 0;
    }
    if expect.size != Some(have) || have == 0 {
        let range = format!("bytes={have}-");
        let mut headers: Vec<(&str, &str)> = req.headers.to_vec();
        if have > 0 {
            headers.push(("Range", &range));
            eprintln!("resuming {} at byte {have}", dest.display());
        }
        let resp = Request {
            headers: &headers,
            ..*req
        }
        .send(agent, "GET")?;
        let resumed = resp.status() == 206 && range_start(&resp) == Some(have);
        if !resumed && have > 0 {
            // The server sent the whole file: start over.
            hasher = Sha256::new();
            have = 0;
        }
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&partial)
            .with_context(|| format!("writing {}", partial.display()))?;
        let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
        let total = expect.size.or(length.map(|l| l + have)).unwrap_or(0);
        let bar = Bar::new("downloading", total);
        let mut body = resp.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) => {
                    out.flush()?;
                    bar.finish();
                    bail!(
                        "the download of {} stopped at {have} of {total} bytes ({e}); run the same command again to resume",
                        req.url
                    );
                }
            };
            out.write_all(&buf[..k])
                .with_context(|| format!("writing {}", partial.display()))?;
            hasher.update(&buf[..k]);
            have += k as u64;
            bar.set_bytes(have);
        }
        out.flush()?;
        bar.finish();
    }
    if let Some(size) = expect.size {
        if have != size {
            bail!(
                "the download of {} ended at {have} of {size} bytes; run the same command again to resume",
                req.url
            );
        }
    }
    if let Some(want) = expect.sha256 {
        let got = format!("{:x}", hasher.finalize());
        if got != want {
            std::fs::remove_file(&partial)?;
            bail!(
                "{}: sha256 {got} does not match the published {want}; the download was deleted",
                req.url
            );
        }
    }
    std::fs::rename(&partial, dest)
        .with_context(|| format!("moving the download to {}", dest.display()))?;
    Ok(())
}

/// A base URL from the environment variable `var`, else `default`; no trailing slash.
pub fn base_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.into())
        .trim_end_matches('/')
        .to_string()
}

/// Whether `s` is a lowercase hex sha256.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A path component from a server or a user: no separators, no `..`, nothing odd.
pub fn check_component(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!("{what} '{s}' may hold only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}
