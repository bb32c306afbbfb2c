//! `tuili pull`, `tuili list` and `tuili rm`: the spellings of a model to fetch (a known
//! name, a Hugging Face hub reference, an Ollama tag) and the local caches they land in.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::hub::{self, HubRef};
use crate::ollama::{self, OllamaRef};
use crate::registry;

/// What a model argument names, when it is not a path.
pub enum Source {
    Known(&'static registry::KnownModel),
    Hub(HubRef),
    Ollama(OllamaRef),
}

/// Parses a model spelling; `None` when it is none of the forms `pull` knows.
pub fn source(s: &str) -> Option<Result<Source>> {
    if let Some(m) = registry::find(s) {
        return Some(Ok(Source::Known(m)));
    }
    if let Some(r) = OllamaRef::parse(s) {
        return Some(r.map(Source::Ollama));
    }
    HubRef::parse(s).map(|r| r.map(Source::Hub))
}

/// Fetches `s` (cached after the first time) and returns the path to load.
pub fn pull(s: &str) -> Result<PathBuf> {
    match source(s) {
        Some(src) => match src? {
            Source::Known(m) => registry::pull(m),
            Source::Hub(r) => hub::pull(&r),
            Source::Ollama(r) => ollama::pull(&r),
        },
        None => bail!(
            "'{s}' is not a model name tuili can fetch: use a known name ({}), \
             hf.co/OWNER/REPO[:QUANT], hf.co/OWNER/REPO/FILE.gguf, OWNER/REPO, \
             or ollama:NAME[:TAG]",
            registry::known_names()
        ),
    }
}

/// Total bytes of the files under `p` (symlinks not followed).
fn size_of(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

/// Names of the entries of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every Ollama manifest kept: (reference, manifest path).
fn ollama_manifests() -> Vec<(OllamaRef, PathBuf)> {
    let root = ollama::store().join("manifests");
    let mut out = Vec::new();
    for host in entries(&root) {
        for ns in entries(&root.join(&host)) {
            for name in entries(&root.join(&host).join(&ns)) {
                for tag in entries(&root.join(&host).join(&ns).join(&name)) {
                    let r = OllamaRef {
                        namespace: ns.clone(),
                        name: name.clone(),
                        tag: tag.clone(),
                    };
                    out.push((r, root.join(&host).join(&ns).join(&name).join(&tag)));
                }
            }
        }
    }
    out
}

/// The blob digests a manifest file names.
fn manifest_digests(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|m| ollama::layers(&m).ok())
        .map(|ls| ls.into_iter().map(|(_, d, _)| d).collect())
        .unwrap_or_default()
}

/// `tuili list`: the models in the caches, with their sizes.
pub fn list() -> Result<()> {
    let mb = |b: u64| format!("{:>10.1} MB", b as f64 / 1e6);
    let models = registry::home().join("models");
    for f in entries(&models) {
        let p = models.join(&f);
        if f.ends_with(".gguf") {
            let name = registry::KNOWN_MODELS
                .iter()
                .find(|m| m.file == f)
                .map_or(f.as_str(), |m| m.name);
            println!("{name:<48} {}  {}", mb(size_of(&p)), p.display());
        }
    }
    for (r, path) in ollama_manifests() {
        let size: u64 = manifest_digests(&path)
            .iter()
            .filter_map(|d| ollama::blob_path(d).ok())
            .map(|b| size_of(&b))
            .sum();
        println!("{:<48} {}  {}", r.display(), mb(size), path.display());
    }
    let cache = hub::cache_dir();
    for d in entries(&cache) {
        if let Some(repo) = d.strip_prefix("models--") {
            let p = cache.join(&d);
            let name = format!("hf.co/{}", repo.replacen("--", "/", 1));
            println!(
                "{name:<48} {}  {}",
                mb(size_of(&p.join("blobs"))),
                p.display()
            );
        }
    }
    Ok(())
}

/// `tuili rm NAME`: removes a pulled model from its cache.
pub fn rm(s: &str) -> Result<()> {
    let src =
        source(s).with_context(|| format!("'{s}' is not a model name (see tuili list)"))??;
    let removed = match src {
        Source::Known(m) => {
            let p = registry::home().join("models").join(m.file);
            remove(&p)?.then(|| p.display().to_string())
        }
        Source::Hub(r) => {
            let p = hub::repo_dir(&r.repo);
            remove(&p)?.then(|| p.display().to_string())
        }
        Source::Ollama(r) => rm_ollama(&r)?,
    };
    match removed {
        Some(what) => {
            eprintln!("removed {what}");
            Ok(())
        }
        None => bail!("'{s}' is not in the cache (see tuili list)"),
    }
}

/// Removes a file or a directory tree; false when there is none.
fn remove(p: &Path) -> Result<bool> {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return Ok(false);
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
    .with_context(|| format!("removing {}", p.display()))?;
    Ok(true)
}

/// Removes an Ollama tag's manifest and the blobs no other manifest names.
fn rm_ollama(r: &OllamaRef) -> Result<Option<String>> {
    let all = ollama_manifests();
    let Some((_, path)) = all.iter().find(|(m, _)| m == r) else {
        return Ok(None);
    };
    let digests = manifest_digests(path);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    let kept: Vec<String> = all
        .iter()
        .filter(|(m, _)| m != r)
        .flat_map(|(_, p)| manifest_digests(p))
        .collect();
    for d in digests.iter().filter(|d| !kept.contains(d)) {
        remove(&ollama::blob_path(d)?)?;
    }
    Ok(Some(format!("{} ({})", r.display(), path.display())))
}
