//! Hugging Face model directories against their GGUF conversions.
//!
//! `scripts/families/tiny-hf.py` writes a tiny random HF directory per family (F32; BF16
//! and F16 for some). For each, `tuili convert` writes a GGUF, and:
//! - tuili's logits on the directory (converted in memory) and on the GGUF file must be
//!   bit-identical, prompt and greedy decode steps alike;
//! - llama.cpp must load the GGUF (`tests/llamacpp/families.py`), and on the F32 ones give
//!   the logits tuili gives on the same token ids, within the float-order bounds of
//!   `crates/tuili-models/tests/families.rs`;
//! - on the F32 ones tuili's logits must equal, within f32 rounding, those of
//!   `tests/hf/reference.py`: each family's forward pass written from transformers' modeling
//!   code over the HF layout in numpy f64, sharing nothing with the conversion. (llama.cpp
//!   reads the converted file, so it checks the GGUF's form; this checks its meaning.) The greedy continuations of these random
//!   weights are counted, not required equal (some of their margins are under float
//!   rounding); the decode steps feed llama.cpp's own greedy tokens to both.
//! - gpt-oss comes twice from one seed: `gpt-oss` with MXFP4 experts (blocks and scales) and
//!   `gpt-oss-dense` with the values they stand for, unquantized. The dense one is held to
//!   llama.cpp on its own conversion like the F32 families (the f64 reference does not cover
//!   gpt-oss); the MXFP4 one must load in llama.cpp, and its logits in tuili are held to
//!   llama.cpp on the dense twin (llama.cpp rounds activations to 8 bits for MXFP4 products,
//!   tuili to 16, as in crates/tuili-models/tests/families.rs), greedy tokens all equal.
//!
//! The interpreter is `TUILI_LLAMACPP_PYTHON`, else `~/.cache/tuili/llamacpp-venv/bin/python`,
//! with numpy, safetensors and llama_cpp; without them the test says it skipped, or fails under
//! `TUILI_REQUIRE_LLAMACPP=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use tuili_gguf::GgufFile;
use tuili_models::Model;

const F32_FAMILIES: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "gemma2",
    "gemma3",
    "phi3",
    "phi3-partial",
    "granite",
    "olmo2",
    "smollm3",
    "mistral3",
    "starcoder2",
    "deci",
    "gpt-oss-dense",
];
/// Families that tests/hf/reference.py does not compute.
const NO_REFERENCE: &[&str] = &["gpt-oss-dense"];
/// The MXFP4 gpt-oss directory, held to llama.cpp on its dense twin, and the bound:
/// crates/tuili-models/tests/families.rs's `GPT_OSS_MXFP4_MAX_REL_DIFF`.
const GPT_OSS_MXFP4: (&str, &str, f32) = ("gpt-oss", "gpt-oss-dense", 2e-4);
/// Half-precision checkpoints: both dtypes run without conversion (matmul reads them).
const HALF: &[(&str, &[&str])] = &[
    (
        "bf16",
        &["llama", "qwen2", "gemma3", "gpt-oss", "gpt-oss-dense"],
    ),
    ("f16", &["qwen3"]),
];

/// Bounds as in crates/tuili-models/tests/families.rs (the GELU families: llama.cpp's f16
/// GELU table).
fn max_rel_diff(family: &str) -> f32 {
    if matches!(family, "gemma2" | "gemma3" | "starcoder2") {
        1.5e-3
    } else {
        4e-6
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Option<PathBuf> {
    tuili_testkit::llamacpp_python("numpy, safetensors, llama_cpp")
}

/// Runs `cmd`, which must succeed; returns its stdout.
fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Logits of `prompt` (every position) then of each of `decode` fed one at a time.
fn logits(model: &Model, prompt: &[u32], decode: &[u32]) -> Vec<Vec<f32>> {
    let vocab = model.config().vocab;
    let mut cache = model.new_cache(256);
    let p = model.forward(prompt, &mut cache, 0).expect("prompt");
    let mut rows: Vec<Vec<f32>> = p.chunks(vocab).map(<[f32]>::to_vec).collect();
    for &t in decode {
        rows.push(model.forward(&[t], &mut cache, 0).expect("decode"));
    }
    rows
}

fn load(file: GgufFile) -> Model {
    Model::load(&Arc::new(file)).expect("load")
}

/// The largest |a − b| over the largest |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit count");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Bound against tests/hf/reference.py, which computes in f64 what transformers computes:
/// tuili's f32 sums differ by rounding only, while a wrong layout (unpermuted Q/K, a norm
/// without its `+ 1`, swapped gate/up halves) moves logits by whole units.
const MAX_REL_DIFF_REFERENCE: f32 = 1e-5;

/// The differences of one F32 directory: from llama.cpp on the GGUF, and from the numpy
/// reference of the HF model on the directory itself (where it covers the family).
struct Diffs {
    llamacpp: Versus,
    reference: Option<f32>,
}

/// tuili against one llama.cpp run: the largest relative logit difference, and tuili's
/// greedy picks equal to llama.cpp's out of all.
struct Versus {
    rel: f32,
    greedy_same: usize,
    greedy_total: usize,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `model` on the prompts and greedy tokens of a llama.cpp run (tests/llamacpp/families.py's
/// JSON): logits of every prompt position and decode step, and the greedy picks.
fn versus(model: &Model, llamacpp: &Value) -> Versus {
    let mut v = Versus {
        rel: 0.0,
        greedy_same: 0,
        greedy_total: 0,
    };
    for p in llamacpp["prompts"].as_array().unwrap() {
        let (prompt, generated) = (ids(&p["tokens"]), ids(&p["generated"]));
        let ours = logits(model, &prompt, &generated[..generated.len() - 1]);
        let theirs: Vec<f32> = p["logits"]
            .as_array()
            .unwrap()
            .iter()
            .chain(p["decode_logits"].as_array().unwrap())
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        v.rel = v.rel.max(rel_diff(&ours.concat(), &theirs));
        // Row prompt.len() - 1 + k picks generated[k].
        for (row, &want) in ours[prompt.len() - 1..].iter().zip(&generated) {
            v.greedy_same += usize::from(tuili_testkit::argmax(row) == want);
            v.greedy_total += 1;
        }
    }
    v
}

/// Checks one directory; measures the differences for F32 ones.
fn check(python: &Path, dir: &Path, family: &str, against_llamacpp: bool) -> Option<Diffs> {
    let gguf = dir.with_extension("gguf");
    run(
        Command::new(env!("CARGO_BIN_EXE_tuili"))
            .arg("convert")
            .arg(dir)
            .arg(&gguf),
        "tuili convert",
    );
    let in_memory = tuili_models::hf::to_gguf(dir)
        .expect("convert in memory")
        .to_bytes();
    let from_dir = load(GgufFile::from_bytes(in_memory).unwrap());
    let from_file = load(GgufFile::open(&gguf).unwrap());

    let json = dir.with_extension("llamacpp.json");
    run(
        Command::new(python)
            .arg(repo().join("tests/llamacpp/families.py"))
            .arg(&gguf)
            .arg(&json),
        &format!("llama.cpp on {}", gguf.display()),
    );
    let reference: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for p in reference["prompts"].as_array().unwrap() {
        let (prompt, generated) = (ids(&p["tokens"]), ids(&p["generated"]));
        let decode = &generated[..generated.len() - 1];
        let a = logits(&from_dir, &prompt, decode);
        let b = logits(&from_file, &prompt, decode);
        let same = a
            .iter()
            .flatten()
            .map(|x| x.to_bits())
            .eq(b.iter().flatten().map(|x| x.to_bits()));
        assert!(
            same,
            "{family} ({}): directory and GGUF logits differ",
            dir.display()
        );
    }
    if !against_llamacpp {
        return None;
    }
    let first = &reference["prompts"][0];
    let (prompt, generated) = (ids(&first["tokens"]), ids(&first["generated"]));
    let decode = &generated[..generated.len() - 1];
    Some(Diffs {
        llamacpp: versus(&from_dir, &reference),
        reference: (!NO_REFERENCE.contains(&family)).then(|| {
            let ours = logits(&from_dir, &prompt, decode);
            against_reference(python, dir, &prompt, decode, &ours)
        }),
    })
}

/// tuili's logits `ours` (every position of `prompt` then `decode`) against
/// tests/hf/reference.py on the same ids as one sequence.
fn against_reference(
    python: &Path,
    dir: &Path,
    prompt: &[u32],
    decode: &[u32],
    ours: &[Vec<f32>],
) -> f32 {
    let ids: Vec<u32> = prompt.iter().chain(decode).copied().collect();
    let tokens = dir.with_extension("tokens.json");
    let out = dir.with_extension("reference.json");
    std::fs::write(&tokens, serde_json::to_vec(&ids).unwrap()).unwrap();
    run(
        Command::new(python)
            .arg(repo().join("tests/hf/reference.py"))
            .arg(dir)
            .arg(&tokens)
            .arg(&out),
        "reference.py",
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let theirs: Vec<f32> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    rel_diff(&ours.concat(), &theirs)
}

#[test]
fn hf_directories_match_their_gguf_conversion_and_llama_cpp() {
    let Some(python) = python() else {
        return;
    };
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), PathBuf::from)
        .join(format!("tiny-hf-{}", std::process::id()));
    let generate = |dtype: &str, families: &[&str]| {
        let out = root.join(dtype);
        run(
            Command::new(&python)
                .arg(repo().join("scripts/families/tiny-hf.py"))
                .arg(&out)
                .args(["--dtype", dtype])
                .args(families),
            "tiny-hf.py",
        );
        out
    };
    let mut failures = Vec::new();
    let f32_dir = generate("f32", F32_FAMILIES);
    for family in F32_FAMILIES {
        let d = check(&python, &f32_dir.join(family), family, true).unwrap();
        let l = &d.llamacpp;
        eprintln!(
            "hf {family:13} f32: tuili dir == tuili gguf (bits); max |Δlogit| / largest: {:.2e} \
             from llama.cpp on the GGUF ({}/{} greedy tokens equal), {} from the f64 HF \
             reference on the directory",
            l.rel,
            l.greedy_same,
            l.greedy_total,
            d.reference
                .map_or("not computed".into(), |r| format!("{r:.2e}"))
        );
        // Written so that NaN fails too.
        if l.rel.is_nan() || l.rel > max_rel_diff(family) {
            failures.push(format!("{family}: {:.2e} from llama.cpp", l.rel));
        }
        if let Some(r) = d
            .reference
            .filter(|r| r.is_nan() || *r > MAX_REL_DIFF_REFERENCE)
        {
            failures.push(format!("{family}: {r:.2e} from the HF reference"));
        }
    }
    // gpt-oss with MXFP4 experts: llama.cpp loads its conversion; tuili's logits are held
    // to llama.cpp on the dense twin.
    let (mxfp4, twin, bound) = GPT_OSS_MXFP4;
    let mxfp4_dir = generate("f32", &[mxfp4]).join(mxfp4);
    check(&python, &mxfp4_dir, mxfp4, false);
    let twin_json = f32_dir.join(twin).with_extension("llamacpp.json");
    let twin_run: Value = serde_json::from_slice(&std::fs::read(&twin_json).unwrap()).unwrap();
    let model = load(GgufFile::open(mxfp4_dir.with_extension("gguf")).unwrap());
    let v = versus(&model, &twin_run);
    eprintln!(
        "hf {mxfp4:13} f32+mxfp4: tuili dir == tuili gguf (bits); llama.cpp loads it; max \
         |Δlogit| / largest {:.2e} from llama.cpp on {twin}, {}/{} greedy tokens equal",
        v.rel, v.greedy_same, v.greedy_total
    );
    if v.rel.is_nan() || v.rel > bound || v.greedy_same != v.greedy_total {
        failures.push(format!(
            "{mxfp4}: {:.2e} from llama.cpp on {twin}, {}/{} greedy tokens",
            v.rel, v.greedy_same, v.greedy_total
        ));
    }
    for (dtype, families) in HALF {
        let dir = generate(dtype, families);
        for family in *families {
            check(&python, &dir.join(family), family, false);
            eprintln!("hf {family:10} {dtype}: tuili dir == tuili gguf (bits); llama.cpp loads it");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A directory with a real tokenizer (SmolLM2's, as `tests/hf/tokenizers_fixture.py` writes
/// it) and tiny BF16 weights: `tuili convert` keeps the tokenizer and template so that
/// llama.cpp tokenizes the fixture corpus as the `tokenizers` package does, and `tuili run`
/// gives the same text on the directory and on the GGUF.
#[test]
fn a_converted_tokenizer_works_in_llama_cpp_and_tuili_run() {
    let Some(python) =
        tuili_testkit::llamacpp_python("numpy, safetensors, llama_cpp, tokenizers, gguf")
    else {
        return;
    };
    let Some(smol) = tuili_testkit::model("smol.gguf") else {
        return;
    };
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("target"), PathBuf::from)
        .join(format!("tiny-hf-tok-{}", std::process::id()));
    let dir = root.join("llama");
    run(
        Command::new(&python)
            .arg(repo().join("tests/hf/tokenizers_fixture.py"))
            .arg(&smol)
            .arg(&dir),
        "tokenizers_fixture.py",
    );
    run(
        Command::new(&python)
            .arg(repo().join("scripts/families/tiny-hf.py"))
            .arg(&root)
            .args(["--dtype", "bf16", "--vocab", "49152", "llama"]),
        "tiny-hf.py",
    );
    let gguf = root.join("llama.gguf");
    run(
        Command::new(env!("CARGO_BIN_EXE_tuili"))
            .arg("convert")
            .arg(&dir)
            .arg(&gguf),
        "tuili convert",
    );
    let script = r#"
import json, sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
texts = json.load(open(sys.argv[2]))["texts"]
print(json.dumps({"ids": [m.tokenize(t.encode(), add_bos=False, special=True) for t in texts],
                  "template": m.metadata.get("tokenizer.chat_template")}))
"#;
    let out = run(
        Command::new(&python)
            .args(["-c", script])
            .arg(&gguf)
            .arg(dir.join("expected.json")),
        "llama.cpp on the converted tokenizer",
    );
    let got: Value = serde_json::from_slice(&out).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(
        got["ids"], expected["ids"],
        "llama.cpp's ids on the converted tokenizer"
    );
    let smol_file = GgufFile::open(&smol).unwrap();
    assert_eq!(
        got["template"].as_str(),
        smol_file
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str()),
        "the chat template survives the conversion"
    );

    let generate = |model: &Path| {
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_tuili"))
                .args(["run", "-p", "Hello, 世界", "-n", "8", "--temp", "0", "-m"])
                .arg(model)
                .env("TUILI_QUIET", "1"),
            "tuili run",
        );
        String::from_utf8(out).unwrap()
    };
    let text = generate(&dir);
    assert!(
        text.starts_with("Hello, 世界") && text.len() > "Hello, 世界".len(),
        "{text:?}"
    );
    assert_eq!(text, generate(&gguf));
    let _ = std::fs::remove_dir_all(&root);
}
