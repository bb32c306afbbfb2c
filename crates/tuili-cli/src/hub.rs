//! Pulling from the Hugging Face hub, with `huggingface_hub`'s conventions: `HF_ENDPOINT`,
//! `HF_TOKEN`, and its cache layout under `HF_HUB_CACHE` / `HF_HOME`
//! (`models--OWNER--REPO/{blobs/ETAG, snapshots/COMMIT/FILE -> ../../blobs/ETAG,
//! refs/REVISION}`), so files Python tools downloaded are found and reused.
//!
//! With `HF_HUB_OFFLINE=1` only the cache is read.
//!
//! The hub's routes: `GET /api/models/{repo}/revision/{rev}` lists the files
//! (`siblings[].rfilename`); `HEAD /{repo}/resolve/{rev}/{file}` answers, before any redirect
//! to a CDN, with `X-Repo-Commit`, `X-Linked-Etag` (an LFS file's sha256) and `X-Linked-Size`;
//! `GET` of the same URL gives the bytes, usually through redirects.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::download::{self, check_component, is_sha256, Expect, Request};

/// The files of a safetensors repository that loading a directory reads.
const HF_DIR_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
];

/// The quantization picked from a GGUF repository when none is named (llama.cpp's `-hf`
/// and Ollama pick it too).
const DEFAULT_QUANT: &str = "Q4_K_M";

/// A model on the hub: `OWNER/REPO`, and a file or a quantization in it.
#[derive(Debug, PartialEq, Eq)]
pub struct HubRef {
    pub repo: String,
    pub pick: Pick,
}

/// What to fetch from the repository.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    /// The GGUF of `DEFAULT_QUANT`, the only GGUF, or the safetensors directory.
    Auto,
    /// The GGUF whose name holds this quantization (`Q8_0`, `q4_k_m`).
    Quant(String),
    /// This file.
    File(String),
}

impl HubRef {
    /// Parses `hf.co/OWNER/REPO[:QUANT]`, `hf.co/OWNER/REPO/FILE.gguf`,
    /// `hf://OWNER/REPO[:FILE_OR_QUANT]`, `huggingface.co/...` and a bare `OWNER/REPO`.
    /// `None` when `s` is none of these.
    pub fn parse(s: &str) -> Option<Result<HubRef>> {
        let rest = [
            "hf://",
            "hf.co/",
            "huggingface.co/",
            "https://huggingface.co/",
        ]
        .iter()
        .find_map(|p| s.strip_prefix(p));
        let bare = rest.is_none();
        let rest = rest.unwrap_or(s);
        if bare && (s.matches('/').count() != 1 || s.contains(':') || s.ends_with(".gguf")) {
            return None;
        }
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<HubRef> {
        let (path, tail) = match rest.split_once(':') {
            Some((p, t)) => (p, Some(t)),
            None => (rest, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 2 {
            bail!("'{rest}' is not OWNER/REPO");
        }
        check_component("the hub owner", parts[0])?;
        check_component("the hub repository", parts[1])?;
        let repo = format!("{}/{}", parts[0], parts[1]);
        let pick = if parts.len() > 2 {
            Pick::File(parts[2..].join("/"))
        } else {
            match tail {
                Some(t) if t.ends_with(".gguf") || t.contains('.') => Pick::File(t.to_string()),
                Some(t) => Pick::Quant(t.to_string()),
                None => Pick::Auto,
            }
        };
        if let Pick::File(f) | Pick::Quant(f) = &pick {
            f.split('/')
                .try_for_each(|c| check_component("the file name", c))?;
        }
        Ok(HubRef { repo, pick })
    }
}

/// `HF_TOKEN`, if set.
fn token() -> Option<String> {
    std::env::var("HF_TOKEN").ok().filter(|s| !s.is_empty())
}

/// The hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
    home.join("hub")
}

/// `models--OWNER--REPO` in the cache.
pub fn repo_dir(repo: &str) -> PathBuf {
    cache_dir().join(format!("models--{}", repo.replace('/', "--")))
}

/// One file's hub metadata, from the HEAD of its resolve URL.
struct FileMeta {
    commit: String,
    etag: String,
    size: Option<u64>,
}

/// The bare value of an ETag header (`W/"x"` and `"x"` are `x`).
fn etag_value(v: &str) -> String {
    v.trim_start_matches("W/").trim_matches('"').to_string()
}

struct Hub {
    /// `HF_HUB_OFFLINE`: answer from the cache only, as `huggingface_hub` does.
    offline: bool,
    endpoint: String,
    token: Option<String>,
    /// Follows redirects (downloads) and does not (metadata, as `huggingface_hub`).
    follow: ureq::Agent,
    stay: ureq::Agent,
}

impl Hub {
    fn new() -> Hub {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Hub {
            offline,
            endpoint: download::base_url("HF_ENDPOINT", "https://huggingface.co"),
            token: token(),
            follow: download::agent(10),
            stay: download::agent(0),
        }
    }

    fn req<'a>(&'a self, url: &'a str) -> Request<'a> {
        Request {
            url,
            token: self.token.as_deref(),
            token_var: Some("HF_TOKEN"),
            headers: &[],
        }
    }

    /// The cached snapshot of `repo` at `rev` (offline only).
    fn cached_snapshot(&self, repo: &str, rev: &str) -> Result<PathBuf> {
        let dir = repo_dir(repo);
        let commit = std::fs::read_to_string(dir.join("refs").join(rev)).with_context(|| {
            format!(
                "{repo} is not in the hub cache {} and HF_HUB_OFFLINE is set",
                cache_dir().display()
            )
        })?;
        check_component("the cached commit", commit.trim())?;
        Ok(dir.join("snapshots").join(commit.trim()))
    }

    /// The files of `repo` at `rev` (offline: those of the cached snapshot).
    fn list_files(&self, repo: &str, rev: &str) -> Result<Vec<String>> {
        if self.offline {
            let snap = self.cached_snapshot(repo, rev)?;
            let rd =
                std::fs::read_dir(&snap).with_context(|| format!("reading {}", snap.display()))?;
            return Ok(rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect());
        }
        let url = format!("{}/api/models/{repo}/revision/{rev}", self.endpoint);
        let body = self.req(&url).send(&self.follow, "GET")?.into_string()?;
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{url}: not JSON"))?;
        let siblings = v["siblings"]
            .as_array()
            .with_context(|| format!("{url}: no 'siblings' list in the answer"))?;
        Ok(siblings
            .iter()
            .filter_map(|s| s["rfilename"].as_str().map(str::to_string))
            .collect())
    }

    /// HEAD of the resolve URL, following only same-host (relative) redirects, as a
    /// renamed repository answers.
    fn file_meta(&self, repo: &str, rev: &str, file: &str) -> Result<FileMeta> {
        let mut url = format!("{}/{repo}/resolve/{rev}/{file}", self.endpoint);
        for _ in 0..5 {
            let resp = self.req(&url).send(&self.stay, "HEAD")?;
            let header = |k: &str| resp.header(k).map(str::to_string);
            if let Some(commit) = header("X-Repo-Commit") {
                let etag = header("X-Linked-Etag")
                    .or_else(|| header("ETag"))
                    .map(|e| etag_value(&e))
                    .with_context(|| format!("{url}: the hub sent no ETag"))?;
                let size = header("X-Linked-Size")
                    .or_else(|| header("Content-Length"))
                    .and_then(|s| s.parse().ok());
                check_component("the hub's commit", &commit)?;
                check_component("the hub's ETag", &etag)?;
                return Ok(FileMeta { commit, etag, size });
            }
            match header("Location") {
                Some(loc) if loc.starts_with('/') => url = format!("{}{loc}", self.endpoint),
                _ => bail!("{url}: the hub sent no X-Repo-Commit header (is HF_ENDPOINT a hub?)"),
            }
        }
        bail!("{url}: more than 5 redirects")
    }

    /// Fetches `file` into the cache (reusing it when there) and returns its snapshot path.
    fn fetch_file(&self, repo: &str, rev: &str, file: &str) -> Result<PathBuf> {
        if self.offline {
            let p = self.cached_snapshot(repo, rev)?.join(file);
            if !p.exists() {
                bail!("{repo}/{file} is not in the hub cache and HF_HUB_OFFLINE is set");
            }
            return Ok(p);
        }
        let meta = self.file_meta(repo, rev, file)?;
        let dir = repo_dir(repo);
        let snapshot = dir.join("snapshots").join(&meta.commit).join(file);
        std::fs::create_dir_all(dir.join("refs"))?;
        std::fs::write(dir.join("refs").join(rev), &meta.commit)?;
        if snapshot.exists() {
            return Ok(snapshot);
        }
        let blob = dir.join("blobs").join(&meta.etag);
        if !blob.exists() {
            let url = format!("{}/{repo}/resolve/{}/{file}", self.endpoint, meta.commit);
            eprintln!("pulling {repo}/{file} into {}", dir.display());
            // An LFS file's ETag is its sha256; other files' is a git hash, not checked.
            let sha = is_sha256(&meta.etag).then_some(meta.etag.as_str());
            let expect = Expect {
                size: meta.size,
                sha256: sha,
            };
            download::fetch(&self.follow, &self.req(&url), &blob, &expect)?;
        }
        link(&blob, &snapshot)?;
        Ok(snapshot)
    }
}

/// Points `snapshot` at `blob` with a relative symlink, as `huggingface_hub` does (a copy
/// where links are not possible).
fn link(blob: &Path, snapshot: &Path) -> Result<()> {
    let parent = snapshot.parent().context("a snapshot path has a parent")?;
    std::fs::create_dir_all(parent)?;
    #[cfg(unix)]
    {
        // snapshots/COMMIT/a/b -> ../../../blobs/ETAG: one `..` per directory below the repo.
        let depth = snapshot
            .strip_prefix(blob.parent().and_then(Path::parent).unwrap_or(parent))
            .map(|p| p.components().count() - 1)
            .unwrap_or(2);
        let name = blob.file_name().context("a blob has a name")?;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(name);
        std::os::unix::fs::symlink(&target, snapshot)
            .with_context(|| format!("linking {}", snapshot.display()))
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(blob, snapshot).map(|_| ())?;
        Ok(())
    }
}

/// Whether a file name holds the quantization `q` as a whole word (`Q4_K` is not in
/// `Q4_K_M`).
fn names_quant(file: &str, q: &str) -> bool {
    let (f, q) = (file.to_ascii_uppercase(), q.to_ascii_uppercase());
    let word = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
    f.match_indices(&q)
        .any(|(i, _)| word(f[..i].chars().next_back()) && word(f[i + q.len()..].chars().next()))
}

/// Pulls `r` and returns the path to load: a GGUF file, or a snapshot directory of a
/// safetensors repository.
pub fn pull(r: &HubRef) -> Result<PathBuf> {
    let hub = Hub::new();
    let rev = "main";
    if let Pick::File(f) = &r.pick {
        return hub.fetch_file(&r.repo, rev, f);
    }
    let files = hub.list_files(&r.repo, rev)?;
    let ggufs: Vec<&String> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
    let wanted = match &r.pick {
        Pick::Quant(q) => Some(q.as_str()),
        _ if ggufs.is_empty() => None,
        _ if ggufs.len() == 1 => return hub.fetch_file(&r.repo, rev, ggufs[0]),
        _ => Some(DEFAULT_QUANT),
    };
    if let Some(q) = wanted {
        let hits: Vec<&&String> = ggufs.iter().filter(|f| names_quant(f, q)).collect();
        return match hits.as_slice() {
            [one] => hub.fetch_file(&r.repo, rev, one),
            [] => bail!(
                "{}: no GGUF file for {q} (files: {})",
                r.repo,
                ggufs
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            many => bail!(
                "{}: several GGUF files for {q} ({}); name one as hf.co/{}/FILE.gguf",
                r.repo,
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                r.repo
            ),
        };
    }
    // A safetensors repository: the files loading a directory reads.
    let weights = files
        .iter()
        .filter(|f| f.ends_with(".safetensors") && !f.contains('/'));
    let wanted: Vec<&String> = files
        .iter()
        .filter(|f| HF_DIR_FILES.contains(&f.as_str()))
        .chain(weights)
        .collect();
    if !wanted.iter().any(|f| *f == "config.json")
        || !wanted.iter().any(|f| f.ends_with(".safetensors"))
    {
        bail!(
            "{}: neither GGUF files nor config.json with *.safetensors (files: {})",
            r.repo,
            files.join(", ")
        );
    }
    let mut dir = None;
    for f in wanted {
        let p = hub.fetch_file(&r.repo, rev, f)?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.context("no file was fetched")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<HubRef> {
        HubRef::parse(s).map(|r| r.unwrap())
    }

    #[test]
    fn spellings() {
        let r = parse("hf.co/bartowski/Qwen2.5-0.5B-GGUF:Q4_K_M").unwrap();
        assert_eq!(r.repo, "bartowski/Qwen2.5-0.5B-GGUF");
        assert_eq!(r.pick, Pick::Quant("Q4_K_M".into()));
        let r = parse("hf.co/o/r/sub/m.gguf").unwrap();
        assert_eq!(r.pick, Pick::File("sub/m.gguf".into()));
        assert_eq!(
            parse("hf://o/r:m-q8_0.gguf").unwrap().pick,
            Pick::File("m-q8_0.gguf".into())
        );
        assert_eq!(
            parse("HuggingFaceTB/SmolLM2-135M").unwrap().pick,
            Pick::Auto
        );
        // Paths and other names are not hub references.
        assert!(parse("model.gguf").is_none());
        assert!(parse("dir/model.gguf").is_none());
        assert!(parse("a/b/c").is_none());
        assert!(parse("smollm2-135m").is_none());
        assert!(HubRef::parse("hf.co/o/../x").unwrap().is_err());
        assert!(HubRef::parse("hf.co/o").unwrap().is_err());
    }

    #[test]
    fn quant_names_match_whole_words() {
        assert!(names_quant("Qwen-0.5B-Q4_K_M.gguf", "q4_k_m"));
        assert!(!names_quant("Qwen-0.5B-Q4_K_M.gguf", "Q4_K"));
        assert!(names_quant("qwen.Q8_0.gguf", "Q8_0"));
        assert!(!names_quant("qwen.Q8_0.gguf", "Q8"));
    }
}
