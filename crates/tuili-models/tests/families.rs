//! tuili against llama.cpp on tiny random-weight models, one per supported family.
//!
//! `scripts/families/tiny-gguf.py` writes a small F32 GGUF per family (the tensors and
//! metadata llama.cpp's loader for that architecture expects); `tests/llamacpp/families.py`
//! runs llama.cpp on it (llama-cpp-python 0.3.36 as `bench/vs-llamacpp.sh --install-only`
//! builds it: f32 K/V, no flash attention, 2 threads) and records, for three prompts of 5, 12
//! and 20 token ids, the logits of every prompt position, 48 greedy tokens and the logits of
//! each decode step. tuili then runs the same ids (`Model::forward` on the prompt as one
//! batch, then one token at a time) and must give the same logits, within float-order
//! rounding, and the same 48 greedy tokens.
//!
//! Both files are cached (`$TUILI_TEST_MODELS_DIR/tiny/`, else `target/tiny-gguf/`) under a
//! hash of the scripts, so editing either one regenerates them. The interpreter is
//! `TUILI_LLAMACPP_PYTHON`, else `~/.cache/tuili/llamacpp-venv/bin/python`; it needs
//! `llama_cpp`, `gguf` and numpy. Without them the tests say they skipped, or fail under
//! `TUILI_REQUIRE_LLAMACPP=1`. `TUILI_TEST_FAMILY=NAME` runs one family only.
//!
//! Each family prints one line (family, kernel table, greedy tokens identical, max logit
//! difference), for the table in docs/CORRECTNESS.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use tuili_gguf::GgufFile;
use tuili_models::{Model, ModelError};

/// The families tuili runs, as `scripts/families/tiny-gguf.py --list` names them. Adding a
/// family is adding its name here.
const FAMILIES: &[&str] = &[
    "llama",
    "llama-ropefreqs",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "gemma2",
    "gemma3",
    "phi3",
    "phi3-longrope",
    "phi3-longrope-short",
    "phi3-partial",
    "granite",
    "olmo2",
    "smollm3",
    "mistral3",
    "starcoder2",
    "gpt-oss",
    "gpt-oss-f32",
    "deci",
];

/// The largest |tuili − llama.cpp| accepted over every logit (prompt and decode positions),
/// relative to the largest |logit| of the prompt. Both engines multiply the same f32
/// weights and keep f32 K/V, so only the order of float operations differs (dot products
/// blocked differently, exp, rsqrt and RoPE angles computed by other routines).
///
/// Measured on the 2-core AMD EPYC VM (llama.cpp built with AVX-512), every kernel
/// table (scalar, avx2, avx512) giving the same bits, 144/144 greedy tokens identical:
///
/// | family | max abs diff | relative |
/// |---|---|---|
/// | llama | 5.2e-5 | 8.5e-7 |
/// | llama-ropefreqs | 3.8e-5 | 6.0e-7 |
/// | qwen2 | 2.5e-5 | 4.2e-7 |
/// | qwen3 | 5.7e-5 | 1.1e-6 |
/// | qwen3moe | 3.3e-5 | 5.5e-7 |
/// | gemma3 | 3.1e-2 | 5.1e-4 (see [`GEMMA3_MAX_REL_DIFF`]) |
/// | phi3 | 2.9e-5 | 4.7e-7 |
/// | granite | 1.9e-5 | 3.0e-7 |
/// | olmo2 | 4.0e-5 | 6.6e-7 |
/// | smollm3 | 5.2e-5 | 8.7e-7 |
/// | mistral3 | 3.4e-5 | 6.9e-7 |
/// | gpt-oss-f32 | 5.5e-5 | 9.9e-7 |
/// | gpt-oss (MXFP4) | 3.9e-3 | 6.8e-5 (see [`GPT_OSS_MXFP4_MAX_REL_DIFF`]) |
/// | deci (AMD EPYC Zen 3, avx2 and scalar) | 3.2e-5 | 5.8e-7 |
///
/// For scale, llama.cpp's own logits on `llama-ropefreqs` move by 1.6e-3 (relative) when
/// `rope_freqs.weight` is ignored and by 7.8e-6 when the RMS epsilon is 1e-6 instead of
/// 1e-5. The bound leaves ~5x headroom over the measured figures (other CPUs sum in
/// other orders) and still catches the epsilon mistake.
const MAX_REL_DIFF: f32 = 4e-6;

/// gemma2's, gemma3's and starcoder2's bound. llama.cpp's CPU GELU (`GGML_GELU_FP16`) rounds each input to f16 and
/// reads the result from an f16 table: every activation of the feed-forward block moves by
/// up to half an f16 step (2^-11 ≈ 4.9e-4 relative), and an input near a rounding boundary
/// jumps a whole step on a float-order difference. tuili computes GELU in f32. Measured
/// 5.1e-4; with tuili's GELU rounded the same way (an experiment, not kept) 2.4e-4, the rest
/// being inputs that round to neighbouring f16 values. 144/144 greedy tokens agree.
const GEMMA3_MAX_REL_DIFF: f32 = 1.5e-3;

/// gpt-oss's bound, against its F32 twin in llama.cpp (see [`oracle_of`]). tuili's integer
/// products round each 32-element block of activations to 16 bits (|q| ≤ 32767) before
/// multiplying the MXFP4 experts: measured 6.8e-5, 144/144 greedy tokens identical (the
/// twin itself: 9.9e-7). llama.cpp on the MXFP4 file itself: 9.9e-2, 125/144.
const GPT_OSS_MXFP4_MAX_REL_DIFF: f32 = 2e-4;

/// The bound of `family`.
fn max_rel_diff(family: &str) -> f32 {
    match family {
        "gemma2" | "gemma3" | "starcoder2" => GEMMA3_MAX_REL_DIFF,
        "gpt-oss" => GPT_OSS_MXFP4_MAX_REL_DIFF,
        _ => MAX_REL_DIFF,
    }
}

/// The context llama.cpp runs with in `tests/llamacpp/families.py`.
const LLAMACPP_CTX: usize = 256;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generator() -> PathBuf {
    repo().join("scripts/families/tiny-gguf.py")
}

fn runner() -> PathBuf {
    repo().join("tests/llamacpp/families.py")
}

/// FNV-1a, 64 bits: a cache key that changes with the bytes (no collision resistance needed).
fn fnv(chunks: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in chunks {
        for &b in *chunk {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The directory of this version of the generator's files, all families written (once per
/// process: the tests share it).
fn tiny_dir(python: &Path) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = match std::env::var_os(tuili_testkit::MODELS_DIR_VAR).filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d).join("tiny"),
            None => std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo().join("target"), PathBuf::from)
                .join("tiny-gguf"),
        };
        let dir = root.join(fnv(&[&read(&generator())]));
        let done = dir.join("complete");
        if !done.exists() {
            let out = Command::new(python)
                .arg(generator())
                .arg(&dir)
                .output()
                .expect("run tiny-gguf.py");
            assert!(
                out.status.success(),
                "tiny-gguf.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&done, b"").expect("mark the tiny models complete");
        }
        dir
    })
    .clone()
}

#[derive(Deserialize)]
struct Reference {
    n_vocab: usize,
    prompts: Vec<PromptRef>,
}

#[derive(Deserialize)]
struct PromptRef {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
    generated: Vec<u32>,
    decode_logits: Vec<Vec<f32>>,
    min_greedy_margin: f32,
}

/// llama.cpp's results for `model`, cached next to it under a hash of the file and the
/// runner script.
fn llamacpp(python: &Path, model: &Path) -> Reference {
    let key = fnv(&[&read(model), &read(&runner())]);
    let json = model.with_extension(format!("llamacpp-{key}.json"));
    if !json.exists() {
        let out = Command::new(python)
            .arg(runner())
            .arg(model)
            .arg(&json)
            .output()
            .expect("run families.py");
        assert!(
            out.status.success(),
            "families.py on {} failed: {}",
            model.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&read(&json)).expect("parse llama.cpp's results")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// What one family's comparison measured.
struct Outcome {
    /// Greedy tokens equal to llama.cpp's before the first difference, summed over prompts.
    identical: usize,
    /// Greedy tokens asked for, summed over prompts.
    total: usize,
    max_abs: f32,
    max_rel: f32,
    /// llama.cpp's least top-1 − top-2 margin at its greedy picks.
    min_margin: f32,
}

/// The family whose llama.cpp results `family` is held to: itself, or for gpt-oss (MXFP4
/// experts) its twin with the same weights in F32, which llama.cpp multiplies in f32.
/// On the MXFP4 file llama.cpp rounds the experts' activations to Q8_0 (8 bits per value),
/// which moves its logits by about 1e-2 of their range and changes 19 of 144 greedy tokens;
/// tuili's products keep 16 bits and stay within the f32 bound of the twin.
fn oracle_of(family: &str) -> &str {
    match family {
        "gpt-oss" => "gpt-oss-f32",
        f => f,
    }
}

fn compare(family: &str, python: &Path) -> Outcome {
    let dir = tiny_dir(python);
    let path = dir.join(format!("{family}.gguf"));
    let reference = llamacpp(python, &dir.join(format!("{}.gguf", oracle_of(family))));
    let file = Arc::new(GgufFile::open(&path).expect("open tiny model"));
    let mut model = Model::load(&file).unwrap_or_else(|e| panic!("{family}: load: {e}"));
    // llama.cpp's context in families.py (LongRoPE's factors depend on it).
    model.use_context(LLAMACPP_CTX);
    let vocab = model.config().vocab;
    assert_eq!(reference.n_vocab, vocab, "{family}: llama.cpp's vocabulary");

    let mut o = Outcome {
        identical: 0,
        total: 0,
        max_abs: 0.0,
        max_rel: 0.0,
        min_margin: f32::INFINITY,
    };
    for (i, p) in reference.prompts.iter().enumerate() {
        let mut cache = model.new_cache(LLAMACPP_CTX);
        let prompt = model
            .forward(&p.tokens, &mut cache, 0)
            .unwrap_or_else(|e| panic!("{family}: prompt {i}: {e}"));
        assert_eq!(prompt.len(), p.tokens.len() * vocab);
        let theirs: Vec<f32> = p.logits.concat();
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut prompt_abs = max_abs_diff(&prompt, &theirs);

        // Greedy decoding, one token at a time; decode logits are compared while the two
        // continuations agree (after a difference they condition on different tokens).
        let mut row = prompt[prompt.len() - vocab..].to_vec();
        let mut same = true;
        for (step, &want) in p.generated.iter().enumerate() {
            let got = tuili_testkit::argmax(&row);
            same &= got == want;
            if !same {
                break;
            }
            o.identical += 1;
            if let Some(theirs) = p.decode_logits.get(step) {
                row = model
                    .forward(&[got], &mut cache, 0)
                    .unwrap_or_else(|e| panic!("{family}: prompt {i} step {step}: {e}"));
                prompt_abs = prompt_abs.max(max_abs_diff(&row, theirs));
            }
        }
        o.total += p.generated.len();
        o.max_abs = o.max_abs.max(prompt_abs);
        o.max_rel = o.max_rel.max(prompt_abs / scale);
        o.min_margin = o.min_margin.min(p.min_greedy_margin);
    }
    o
}

/// The families to run: `FAMILIES`, or the one `TUILI_TEST_FAMILY` names.
fn selected() -> Vec<&'static str> {
    match std::env::var("TUILI_TEST_FAMILY") {
        Ok(f) if !f.is_empty() => FAMILIES.iter().copied().filter(|n| *n == f).collect(),
        _ => FAMILIES.to_vec(),
    }
}

#[test]
fn families_match_llama_cpp() {
    let Some(python) = tuili_testkit::llamacpp_python("llama_cpp, gguf, numpy") else {
        return;
    };
    let table = tuili_backend::kernels::select().name();
    let mut failures = Vec::new();
    for family in selected() {
        let o = compare(family, &python);
        // On the real stderr, which the harness does not capture: the figures are the point.
        let _ = writeln!(
            std::io::stderr(),
            "family {family:16} kernels {table:7} greedy tokens identical {:3}/{} \
             max |Δlogit| {:.3e} ({:.2e} of the largest logit), llama.cpp's least greedy margin {:.3}",
            o.identical, o.total, o.max_abs, o.max_rel, o.min_margin
        );
        if o.identical != o.total {
            failures.push(format!(
                "{family}: greedy tokens identical {}/{}",
                o.identical, o.total
            ));
        }
        // Written so that NaN fails too.
        let bound = max_rel_diff(family);
        if o.max_rel.is_nan() || o.max_rel > bound {
            failures.push(format!(
                "{family}: max |Δlogit| {:.3e} is {:.2e} of the largest logit (bound {bound:e})",
                o.max_abs, o.max_rel
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}

/// Every family the generator writes and `FAMILIES` leaves out must still be refused by
/// `Model::load`: one that loads belongs in `FAMILIES`, so that it is checked.
#[test]
fn unlisted_families_are_refused() {
    let Some(python) = tuili_testkit::llamacpp_python("gguf, numpy") else {
        return;
    };
    let dir = tiny_dir(&python);
    let out = Command::new(&python)
        .arg(generator())
        .arg("--list")
        .output()
        .expect("tiny-gguf.py --list");
    assert!(out.status.success());
    let all = String::from_utf8(out.stdout).expect("family names");
    for family in all.lines().filter(|f| !FAMILIES.contains(f)) {
        // A file whose tensor types tuili does not read (gpt-oss's MXFP4) is refused too.
        let Ok(file) = GgufFile::open(dir.join(format!("{family}.gguf"))) else {
            continue;
        };
        match Model::load(&Arc::new(file)) {
            Err(ModelError::UnsupportedArch(_) | ModelError::Unimplemented(_)) => {}
            Err(e) => panic!("{family}: refused, but not as unsupported: {e}"),
            Ok(_) => panic!("{family} loads: add it to FAMILIES in {}", file!()),
        }
    }
}
