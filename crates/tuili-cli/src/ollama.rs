//! Pulling from an Ollama registry (an OCI distribution registry): the manifest
//! `GET /v2/{ns}/{name}/manifests/{tag}`, then each blob `GET /v2/{ns}/{name}/blobs/{digest}`,
//! checked against its digest. The model layer
//! (`application/vnd.ollama.image.model`) is a GGUF file. The registry is
//! `TUILI_OLLAMA_REGISTRY`, default `https://registry.ollama.ai`; blobs and manifests are kept
//! as Ollama keeps them, under `$TUILI_HOME/ollama/{blobs/sha256-HEX, manifests/HOST/NS/NAME/TAG}`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::download::{self, check_component, is_sha256, Expect, Request};

/// The media type of the GGUF layer.
const MODEL_LAYER: &str = "application/vnd.ollama.image.model";
const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// `NS/NAME:TAG` in a registry.
#[derive(Debug, PartialEq, Eq)]
pub struct OllamaRef {
    pub namespace: String,
    pub name: String,
    pub tag: String,
}

impl OllamaRef {
    /// Parses `ollama.com/[NS/]NAME[:TAG]`, `ollama://[NS/]NAME[:TAG]` and
    /// `ollama:[NS/]NAME[:TAG]` (namespace `library`, tag `latest` by default). `None` when
    /// `s` has none of these prefixes.
    pub fn parse(s: &str) -> Option<Result<OllamaRef>> {
        let rest = ["ollama.com/", "ollama://", "ollama:"]
            .iter()
            .find_map(|p| s.strip_prefix(p))?;
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<OllamaRef> {
        let (path, tag) = rest.split_once(':').unwrap_or((rest, "latest"));
        let (namespace, name) = path.split_once('/').unwrap_or(("library", path));
        check_component("the Ollama namespace", namespace)?;
        check_component("the Ollama model name", name)?;
        check_component("the Ollama tag", tag)?;
        Ok(OllamaRef {
            namespace: namespace.into(),
            name: name.into(),
            tag: tag.into(),
        })
    }

    /// The spelling `tuili list` prints.
    pub fn display(&self) -> String {
        format!("ollama:{}/{}:{}", self.namespace, self.name, self.tag)
    }
}

/// The registry's host (and port): the directory its manifests are kept under.
fn registry_host(base: &str) -> String {
    let host = base.split("://").nth(1).unwrap_or(base);
    host.split('/').next().unwrap_or(host).replace(':', "_")
}

/// `$TUILI_HOME/ollama`.
pub fn store() -> PathBuf {
    crate::registry::home().join("ollama")
}

/// Where the blob of `digest` (`sha256:HEX`, checked) is kept.
pub fn blob_path(digest: &str) -> Result<PathBuf> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if is_sha256(hex) => Ok(store().join("blobs").join(format!("sha256-{hex}"))),
        _ => bail!("digest '{digest}' is not sha256:<64 lowercase hex digits>"),
    }
}

/// The layers of a manifest: (media type, digest, size).
pub fn layers(manifest: &serde_json::Value) -> Result<Vec<(String, String, u64)>> {
    let list = manifest["layers"]
        .as_array()
        .context("the manifest has no 'layers' list")?;
    let mut out = Vec::new();
    for l in list.iter().chain(std::iter::once(&manifest["config"])) {
        if l.is_null() {
            continue;
        }
        let media = l["mediaType"]
            .as_str()
            .context("a layer has no mediaType")?;
        let digest = l["digest"].as_str().context("a layer has no digest")?;
        let size = l["size"].as_u64().context("a layer has no size")?;
        blob_path(digest)?;
        out.push((media.to_string(), digest.to_string(), size));
    }
    Ok(out)
}

/// Pulls `r`: its manifest and its model layer; returns the GGUF's path.
pub fn pull(r: &OllamaRef) -> Result<PathBuf> {
    let base = download::base_url("TUILI_OLLAMA_REGISTRY", "https://registry.ollama.ai");
    let agent = download::agent(10);
    let repo = format!("{}/{}", r.namespace, r.name);
    let url = format!("{base}/v2/{repo}/manifests/{}", r.tag);
    let headers = [("Accept", MANIFEST_V2)];
    let req = Request {
        url: &url,
        token: None,
        token_var: None,
        headers: &headers,
    };
    let body = req.send(&agent, "GET")?.into_string()?;
    let manifest: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{url}: the manifest is not JSON"))?;
    let layers = layers(&manifest).with_context(|| url.clone())?;
    let (_, digest, size) = layers
        .iter()
        .find(|(m, _, _)| m == MODEL_LAYER)
        .with_context(|| format!("{url}: no {MODEL_LAYER} layer"))?;
    let path = blob_path(digest)?;
    if !path.exists() {
        eprintln!(
            "pulling {} ({size} bytes) into {}",
            r.display(),
            path.display()
        );
        let blob_url = format!("{base}/v2/{repo}/blobs/{digest}");
        let hex = digest.trim_start_matches("sha256:");
        let expect = Expect {
            size: Some(*size),
            sha256: Some(hex),
        };
        let req = Request {
            url: &blob_url,
            token: None,
            token_var: None,
            headers: &[],
        };
        download::fetch(&agent, &req, &path, &expect)?;
    }
    let mdir = store()
        .join("manifests")
        .join(registry_host(&base))
        .join(&r.namespace)
        .join(&r.name);
    std::fs::create_dir_all(&mdir)?;
    std::fs::write(mdir.join(&r.tag), body)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let r = OllamaRef::parse("ollama.com/library/qwen2.5:0.5b")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str(), r.tag.as_str()),
            ("library", "qwen2.5", "0.5b")
        );
        let r = OllamaRef::parse("ollama:smollm2").unwrap().unwrap();
        assert_eq!(r.display(), "ollama:library/smollm2:latest");
        let r = OllamaRef::parse("ollama://me/m:q8").unwrap().unwrap();
        assert_eq!(r.display(), "ollama:me/m:q8");
        assert!(OllamaRef::parse("ollama:../x").unwrap().is_err());
        assert!(OllamaRef::parse("hf.co/x/y").is_none());
        assert!(blob_path("sha256:../../etc").is_err());
        assert_eq!(registry_host("http://127.0.0.1:8080/"), "127.0.0.1_8080");
    }
}
