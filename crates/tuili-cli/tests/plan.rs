//! `tuili plan` end to end on SmolLM2: the stable JSON's fields, their consistency with
//! each other and with the model file, errors that name the limit, and the time a query
//! takes.

use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;
use tuili_gguf::GgmlType;
use tuili_models::synthetic::{write_synthetic, SyntheticSpec};
use tuili_models::Arch;

fn tuili(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tuili"))
        .arg("plan")
        .args(args)
        // A fresh home: no probed or calibrated profile, so datasheet coefficients.
        .env(
            "TUILI_HOME",
            std::env::temp_dir().join(format!("tuili-plan-test-home-{}", std::process::id())),
        )
        .output()
        .expect("run tuili")
}

fn json(args: &[&str]) -> Value {
    let out = tuili(args);
    assert!(
        out.status.success(),
        "tuili plan {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The error of a command that must fail.
fn err(args: &[&str]) -> String {
    let out = tuili(args);
    assert!(!out.status.success(), "tuili plan {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

#[test]
fn json_fields_are_present_and_consistent() {
    let Some(path) = tuili_testkit::model("smol.gguf") else {
        return;
    };
    let m = path.to_str().expect("utf-8 path");
    let t0 = Instant::now();
    let p = json(&[
        "-m", m, "--chip", "h100-sxm", "--batch", "8", "--ctx", "2048", "-o", "json",
    ]);
    // The query must answer in under 2 s on 2 cores (process start and model mapping
    // included).
    let secs = t0.elapsed().as_secs_f64();
    assert!(secs < 2.0, "tuili plan took {secs:.2} s");

    for key in [
        "decode_tokens_per_s",
        "decode_tokens_per_s_batch",
        "prefill_tokens_per_s",
        "ttft_ms",
        "max_sequences",
        "joules_per_token",
        "usd_per_million_tokens",
        "error_band",
    ] {
        assert!(num(&p, key) > 0.0, "{key} in {p}");
    }
    assert_eq!(p["fits"], Value::Bool(true), "{p}");
    assert_eq!(p["batch"], 8);
    assert_eq!(p["chip"], "h100-sxm");
    // Never measured, no H100 calibration: datasheet coefficients and the widest band.
    assert_eq!(p["calibration"]["kind"], "datasheet");

    // Eight sequences together beat one, but not eight times over.
    let one = num(&p, "decode_tokens_per_s");
    let batch = num(&p, "decode_tokens_per_s_batch");
    assert!(batch > one && batch <= 8.0 * one, "{one} vs {batch}");
    // TTFT is the time of the 512-token prefill.
    assert!(close(
        num(&p, "ttft_ms"),
        512.0 / num(&p, "prefill_tokens_per_s") * 1e3
    ));
    // Cost follows the price and the batched speed.
    let usd = num(&p, "usd_per_hour") / 3600.0 / batch * 1e6;
    assert!(close(num(&p, "usd_per_million_tokens"), usd));
    // Energy per token lies between idle and TDP (700 W) for the batch's time per token.
    let j = num(&p, "joules_per_token");
    assert!(j > 70.0 / batch && j < 700.0 / batch, "{j}");
    // Every byte of the file is a weight byte.
    let file = tuili_gguf::GgufFile::open(&path).expect("opens");
    let bytes: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    assert_eq!(p["weight_bytes"].as_u64(), Some(bytes));
    // KV: 30 layers × (K + V) × 192 × 2 bytes per position.
    assert_eq!(p["kv_bytes_per_token"].as_u64(), Some(23_040));
    assert_eq!(p["kv_bytes_per_sequence"].as_u64(), Some(23_040 * 2048));
    let usable = num(&p, "memory_usable_bytes");
    let max = ((usable - bytes as f64) / (23_040.0 * 2048.0)).floor();
    assert_eq!(num(&p, "max_sequences"), max);

    // Twice the context: twice the KV per sequence; 8-bit weights: more bytes, slower
    // single-sequence decode on a memory-bound chip.
    let q8 = json(&[
        "-m", m, "--chip", "h100-sxm", "--quant", "q8_0", "-o", "json",
    ]);
    assert!(q8["weight_bytes"].as_u64() > Some(bytes));
    // Split over two chips: twice the memory, twice the price per hour, an all-reduce.
    let one = json(&["-m", m, "--chip", "h100-sxm", "--ctx", "2048", "-o", "json"]);
    let two = json(&[
        "-m", m, "--chip", "h100-sxm", "--ctx", "2048", "--tp", "2", "-o", "json",
    ]);
    assert_eq!(two["tp"], 2);
    assert_eq!(
        num(&two, "memory_usable_bytes"),
        2.0 * num(&one, "memory_usable_bytes")
    );
    assert_eq!(num(&two, "usd_per_hour"), 2.0 * num(&one, "usd_per_hour"));
    assert!(num(&two, "max_sequences") > 2.0 * num(&one, "max_sequences"));
    let l4 = json(&["-m", m, "--chip", "l4", "-o", "json"]);
    let h100 = json(&["-m", m, "--chip", "h100-sxm", "-o", "json"]);
    assert!(num(&l4, "decode_tokens_per_s") < num(&h100, "decode_tokens_per_s"));
}

#[test]
fn bad_options_name_the_limit() {
    let Some(path) = tuili_testkit::model("smol.gguf") else {
        return;
    };
    let m = path.to_str().expect("utf-8 path");
    let e = err(&["-m", m, "--chip", "h100-sxm", "--batch", "0"]);
    assert!(e.contains("--batch must be between 1 and"), "{e}");
    let e = err(&["-m", m, "--chip", "h100-sxm", "--ctx", "100000"]);
    assert!(e.contains("trained context 8192, got 100000"), "{e}");
    let e = err(&["-m", m, "--chip", "nope"]);
    assert!(
        e.contains("no chip named 'nope'") && e.contains("mi300x"),
        "{e}"
    );
    let e = err(&["-m", m, "--chip", "h100-sxm", "--quant", "q9"]);
    assert!(e.contains("--quant 'q9'"), "{e}");
    let e = err(&["-m", m, "--chip", "l4", "--tp", "0"]);
    assert!(e.contains("--tp must be between 1 and 64"), "{e}");
    let e = err(&["-m", m, "--chip", "l4", "-t", "4"]);
    assert!(e.contains("--threads applies to CPU chips"), "{e}");
    let e = err(&["-m", m, "--chip", "ryzen-7840u", "-t", "9"]);
    assert!(e.contains("--threads must be between 1 and 8"), "{e}");
    let e = err(&["-m", m]);
    assert!(e.contains("--probe"), "no local profile yet: {e}");
}

#[test]
fn every_chip_is_listed() {
    let out = tuili(&["--list-chips"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for chip in [
        "h100-sxm",
        "h200",
        "b200",
        "a100-80gb",
        "l4",
        "rtx-4090",
        "mi300x",
        "gaudi3",
        "tpu-v5e",
        "inferentia2",
        "groq-lpu",
        "m4-max",
        "m3-max",
        "h100-pcie",
        "jetson-agx-orin",
        "raspberry-pi-5",
        "ryzen-7840u",
    ] {
        assert!(text.contains(chip), "{chip} missing from {text}");
    }
}

#[test]
fn simulation_and_slo_search_answer_in_json() {
    let Some(path) = tuili_testkit::model("smol.gguf") else {
        return;
    };
    let m = path.to_str().expect("utf-8 path");
    // 50 requests of 128 + 16 tokens on an L4.
    let load = [
        "--chip",
        "l4",
        "--requests",
        "50",
        "--prompt-len",
        "128",
        "--output-len",
        "16",
    ];
    let with = |extra: &[&str]| {
        let mut args = vec!["-m", m, "-o", "json"];
        args.extend(load);
        args.extend(extra);
        json(&args)
    };
    let sim = with(&["--simulate", "--rate", "1,1000"]);
    let runs = sim["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    let ttft_p99 = |r: &Value| r["ttft_ms"][2].as_f64().expect("ttft");
    // A thousand requests a second queue; one a second does not.
    assert!(ttft_p99(&runs[1]) > 2.0 * ttft_p99(&runs[0]), "{sim}");
    let slo = with(&["--slo", "ttft_p99<500ms", "--target-rate", "10000"]);
    let rate = num(&slo, "max_rate");
    assert!(rate >= 1.0, "{slo}");
    assert!(ttft_p99(&slo["at_max_rate"]) <= 500.0, "{slo}");
    let chips = slo["chips_for_target"].as_u64().expect("chips");
    assert_eq!(chips, (10_000.0 / rate).ceil() as u64);
    // A full-size SLO search (200 requests of 512 + 128 tokens per simulated rate)
    // answers in under 2 s on 2 cores, process start included.
    let t0 = Instant::now();
    let full = json(&[
        "-m",
        m,
        "--chip",
        "h100-sxm",
        "--slo",
        "ttft_p99<2s,tpot_p99<100ms",
        "-o",
        "json",
    ]);
    let secs = t0.elapsed().as_secs_f64();
    assert!(num(&full, "max_rate") > 0.0, "{full}");
    assert!(secs < 2.0, "the SLO search took {secs:.2} s");
    // A recorded load replays as recorded: two requests together, then one alone.
    let trace = std::env::temp_dir().join(format!("tuili-plan-trace-{}.json", std::process::id()));
    std::fs::write(
        &trace,
        r#"[{"arrival_s": 0, "prompt_tokens": 64, "output_tokens": 8},
            {"arrival_s": 0, "prompt_tokens": 64, "output_tokens": 8},
            {"arrival_s": 100, "prompt_tokens": 32, "output_tokens": 4}]"#,
    )
    .expect("trace");
    let t = trace.to_str().expect("utf-8");
    let replay = with(&["--simulate", "--trace", t]);
    let run = &replay["runs"][0];
    assert_eq!(run["requests"].as_u64(), Some(3), "{replay}");
    assert!((num(run, "rate") - 0.02).abs() < 1e-9, "{replay}");
    // Lengths drawn from the trace's prompts and a uniform range of outputs.
    let prompts = format!("trace:{t}");
    let drawn = json(&[
        "-m",
        m,
        "-o",
        "json",
        "--chip",
        "l4",
        "--requests",
        "50",
        "--simulate",
        "--prompt-len",
        &prompts,
        "--output-len",
        "4..12",
    ]);
    assert_eq!(
        drawn["prompt_lengths"].as_str(),
        Some(prompts.as_str()),
        "{drawn}"
    );
    assert!(close(num(&drawn, "prompt_len"), 160.0 / 3.0), "{drawn}");
    assert_eq!(num(&drawn, "output_len"), 8.0, "{drawn}");
    let e = err(&[
        "-m",
        m,
        "--chip",
        "l4",
        "--simulate",
        "--output-len",
        "9..3",
    ]);
    assert!(
        e.contains("--output-len") && e.contains("9 is above 3"),
        "{e}"
    );
    let bursty = with(&["--simulate", "--rate", "50", "--burstiness", "0.1"]);
    let even = with(&["--simulate", "--rate", "50", "--burstiness", "10"]);
    assert!(
        ttft_p99(&bursty["runs"][0]) > ttft_p99(&even["runs"][0]),
        "bursts queue: {bursty} vs {even}"
    );
    std::fs::write(
        &trace,
        r#"[{"arrival_s": -1, "prompt_tokens": 1, "output_tokens": 1}]"#,
    )
    .expect("trace");
    let e = err(&["-m", m, "--chip", "l4", "--simulate", "--trace", t]);
    assert!(
        e.contains("trace") && e.contains("request 0: arrival_s -1"),
        "{e}"
    );
    let e = err(&["-m", m, "--chip", "l4", "--simulate", "--burstiness", "0"]);
    assert!(e.contains("--burstiness must be positive"), "{e}");
    // A chip at half its predicted speed takes twice as long per token.
    let half = with(&["--simulate", "--rate", "0.01", "--speed", "0.5"]);
    let tpot = |v: &Value| v["runs"][0]["tpot_ms"][0].as_f64().expect("tpot");
    let full = with(&["--simulate", "--rate", "0.01"]);
    assert!(
        (tpot(&half) / tpot(&full) - 2.0).abs() < 1e-6,
        "{half} {full}"
    );
    let e = err(&["-m", m, "--chip", "l4", "--simulate", "--speed=-1"]);
    assert!(e.contains("--speed must be positive"), "{e}");
    std::fs::remove_file(&trace).ok();
}

/// A CPU profile written by hand, as a user may.
const TEST_CPU: &str = r#"
name = "test-cpu"
title = "a CPU for the tests"
kind = "cpu"
[memory]
capacity_gb = { value = 8, source = "test" }
bandwidth_gbs = { value = 20, source = "test" }
[compute]
fp32 = { value = 0.1, source = "test" }
bf16 = { value = 0.1, source = "test" }
fp8 = { value = 0, source = "test" }
int8 = { value = 0.2, source = "test" }
int4 = { value = 0.2, source = "test" }
[power]
tdp_w = { value = 65, source = "test" }
idle_w = { value = 10, source = "test" }
[interconnect]
bandwidth_gbs = { value = 1, source = "test" }
[price]
usd_per_hour = { value = 0.01, source = "test" }
[cpu]
threads = { value = 2, source = "test" }
bandwidth_per_thread_gbs = { value = 12, source = "test" }
"#;

#[test]
fn bench_results_calibrate_a_profile_that_plans_and_lends() {
    let dir = std::env::temp_dir().join(format!("tuili-plan-cal-{}", std::process::id()));
    let chips = dir.join("planner").join("chips");
    std::fs::create_dir_all(&chips).expect("home");
    std::fs::write(chips.join("test-cpu.toml"), TEST_CPU).expect("profile");
    let model = dir.join("tiny.gguf");
    let spec = SyntheticSpec::tiny(Arch::Llama, GgmlType::Q8_0);
    std::fs::write(&model, write_synthetic(&spec).expect("model")).expect("write");
    let m = model.to_str().expect("utf-8");
    let run = |sub: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tuili"))
            .arg(sub)
            .args(args)
            .env("TUILI_HOME", &dir)
            .output()
            .expect("run tuili");
        assert!(
            out.status.success(),
            "tuili {sub} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let bench = run(
        "bench",
        &[
            "-m",
            m,
            "-t",
            "1",
            "-p",
            "8,32,128",
            "-n",
            "4,8",
            "--streams",
            "2,4",
            "-r",
            "1",
            "-o",
            "json",
        ],
    );
    let file = dir.join("bench.json");
    std::fs::write(&file, bench).expect("bench json");
    let f = file.to_str().expect("utf-8");
    let out = run("plan", &["--calibrate", f, "--chip", "test-cpu"]);
    assert!(out.contains("saved"), "{out}");
    let saved = std::fs::read_to_string(chips.join("test-cpu.toml")).expect("saved profile");
    assert!(
        saved.contains("[calibration]") && saved.contains("bench.json"),
        "{saved}"
    );
    let p: Value = serde_json::from_str(&run(
        "plan",
        &["-m", m, "--chip", "test-cpu", "-t", "1", "-o", "json"],
    ))
    .expect("json");
    assert_eq!(p["calibration"]["kind"], "measured", "{p}");
    // The fit is close on the runs it was fitted to.
    let check = run("plan", &["--check", f, "--chip", "test-cpu"]);
    assert!(check.contains("median |error|"), "{check}");
    // Another CPU borrows the coefficients, with a wider band.
    let lent: Value = serde_json::from_str(&run(
        "plan",
        &["-m", m, "--chip", "ryzen-7840u", "-o", "json"],
    ))
    .expect("json");
    assert_eq!(lent["calibration"]["kind"], "borrowed", "{lent}");
    assert_eq!(lent["calibration"]["from"], "test-cpu");
    assert!(num(&lent, "error_band") >= 0.25);

    // Served runs: the decode rows again, each step longer by a known server's work of
    // 0.5 ms per step and 2 ms per sampled token (one per stream).
    let (step_s, token_s) = (0.5e-3, 2e-3);
    let rows: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("bench rows");
    let served: Vec<Value> = rows
        .into_iter()
        .filter(|r| r["n_gen"].as_u64().unwrap_or(0) > 0 && r["n_prompt"] == 0)
        .map(|mut r| {
            let steps = num(&r, "n_gen");
            let extra = steps * (step_s + num(&r, "n_streams") * token_s) * 1e9;
            r["avg_ns"] = (num(&r, "avg_ns") + extra).into();
            r["served"] = true.into();
            r
        })
        .collect();
    assert!(served.len() >= 2, "decode rows at several stream counts");
    // A burst of 4 sent together whose first tokens came 1 s late each: the request
    // term takes it (each waits for 4 admissions), no prompt arrived during decodes.
    let mut served = served;
    let model_path = served[0]["model_filename"].clone();
    let one = serde_json::json!({"arrival_s": 0.0, "prompt_tokens": 16, "output_tokens": 8});
    served.push(serde_json::json!({
        "test": "trace", "served": true, "model_filename": model_path, "n_threads": 1,
        "max_num_seqs": 4, "n_ctx": 256, "requests": [one, one, one, one],
        "ttft_s": [1.0, 1.0, 1.0, 1.0], "tpot_s": [0.01, 0.01, 0.01, 0.01]
    }));
    let served_file = dir.join("served.json");
    std::fs::write(&served_file, Value::from(served).to_string()).expect("served json");
    let sf = served_file.to_str().expect("utf-8");
    let tpot = || {
        let v: Value = serde_json::from_str(&run(
            "plan",
            &[
                "-m",
                m,
                "--chip",
                "test-cpu",
                "-t",
                "1",
                "--simulate",
                "--rate",
                "0.01",
                "--requests",
                "5",
                "--prompt-len",
                "16",
                "--output-len",
                "8",
                "-o",
                "json",
            ],
        ))
        .expect("json");
        (v["runs"][0]["tpot_ms"][0].as_f64().expect("tpot"), v)
    };
    let (engine_only, _) = tpot();
    let out = run("plan", &["--calibrate", sf, "--chip", "test-cpu"]);
    assert!(out.contains("serving: per step"), "{out}");
    assert!(out.contains("serving: per request"), "{out}");
    assert!(out.contains("no mixed-step term"), "{out}");
    let (with_server, v) = tpot();
    // 1 s of TTFT over 4 admissions: about 250 ms each, less the predicted prefill.
    let request_s = v["serving"]["request_s"].as_f64().expect("request_s");
    assert!(request_s > 0.2 && request_s < 0.25, "{v}");
    assert_eq!(v["serving"]["mixed_s"], 0.0, "{v}");
    // The fitted terms come back within the engine fit's error, and a lone request's
    // decode step pays them once per token.
    let fitted = v["serving"]["token_s"].as_f64().expect("token_s");
    assert!((fitted / token_s - 1.0).abs() < 0.1, "{v}");
    let extra_ms = with_server - engine_only;
    assert!((extra_ms / 2.5 - 1.0).abs() < 0.15, "{extra_ms} ms");
    // A plan (an engine run) does not pay them.
    let p2: Value = serde_json::from_str(&run(
        "plan",
        &["-m", m, "--chip", "test-cpu", "-t", "1", "-o", "json"],
    ))
    .expect("json");
    assert_eq!(p2["decode_tokens_per_s"], p["decode_tokens_per_s"]);
    // A recalibration from bench files alone drops them (fitted on other coefficients).
    let out = run("plan", &["--calibrate", f, "--chip", "test-cpu"]);
    assert!(out.contains("serving terms"), "{out}");
    let saved = std::fs::read_to_string(chips.join("test-cpu.toml")).expect("saved profile");
    assert!(!saved.contains("[serving]"), "{saved}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn html_report_is_one_self_contained_page_per_chip_list() {
    let Some(path) = tuili_testkit::model("smol.gguf") else {
        return;
    };
    let m = path.to_str().expect("utf-8 path");
    let args = [
        "-m",
        m,
        "--chip",
        "h100-sxm,l4",
        "--requests",
        "40",
        "--prompt-len",
        "128",
        "--output-len",
        "16",
        "-o",
        "html",
    ];
    let t = Instant::now();
    let out = tuili(&args);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = String::from_utf8(out.stdout).expect("utf-8");
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..100]);
    assert!(page.trim_end().ends_with("</html>"));
    // Four charts, each with both chips' lines.
    assert_eq!(page.matches("<svg").count(), 4, "{page}");
    assert_eq!(page.matches("<polyline").count(), 8, "{page}");
    for title in ["NVIDIA H100 SXM5 80 GB", "NVIDIA L4 24 GB"] {
        assert!(page.contains(title), "{title}");
    }
    // Self-contained: nothing fetched, no script; every number finite.
    for bad in ["<script", "src=", "href=", "NaN", "inf"] {
        assert!(!page.contains(bad), "{bad} in the page");
    }
    assert!(took.as_secs_f64() < 10.0, "{took:?}");
    let e = err(&["-m", m, "--chip", "h100-sxm,l4"]);
    assert!(e.contains("only with -o html"), "{e}");
    let e = err(&["-m", m, "--chip", "h100-sxm,nope", "-o", "html"]);
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn a_hugging_face_directory_plans_as_its_conversion() {
    let Some(python) = tuili_testkit::llamacpp_python("numpy, safetensors") else {
        eprintln!("skipped: no Python with numpy and safetensors");
        return;
    };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::temp_dir().join(format!("tuili-plan-hf-{}", std::process::id()));
    let made = Command::new(python)
        .arg(repo.join("scripts/families/tiny-hf.py"))
        .arg(&dir)
        .arg("qwen2")
        .output()
        .expect("tiny-hf.py");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let hf = dir.join("qwen2");
    let gguf = dir.join("qwen2.gguf");
    let conv = Command::new(env!("CARGO_BIN_EXE_tuili"))
        .arg("convert")
        .arg(&hf)
        .arg(&gguf)
        .output()
        .expect("tuili convert");
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let plan = |m: &std::path::Path| {
        let mut v = json(&[
            "-m",
            m.to_str().expect("utf-8"),
            "--chip",
            "l4",
            "-o",
            "json",
        ]);
        v.as_object_mut().expect("object").remove("model");
        v
    };
    let (a, b) = (plan(&hf), plan(&gguf));
    assert!(num(&a, "weight_bytes") > 0.0, "{a}");
    assert_eq!(a, b, "the directory and its conversion plan alike");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_step_log_is_compared_with_the_step_model_by_kind() {
    let Some(path) = tuili_testkit::model("smol.gguf") else {
        return;
    };
    let m = path.to_str().expect("utf-8 path");
    let log = std::env::temp_dir().join(format!("tuili-plan-steps-{}.jsonl", std::process::id()));
    std::fs::write(
        &log,
        concat!(
            r#"{"at_s":0.0,"idle_s":0.0,"forward_s":0.05,"step_s":0.051,"chunks":[[0,32,true]]}"#,
            "\n",
            r#"{"at_s":0.06,"idle_s":0.001,"forward_s":0.004,"step_s":0.0045,"chunks":[[32,1,true],[40,1,true]]}"#,
            "\n",
            r#"{"at_s":0.07,"idle_s":0.0,"forward_s":0.06,"step_s":0.061,"chunks":[[33,1,true],[0,32,true]]}"#,
            "\n",
        ),
    )
    .unwrap();
    let l = log.to_str().unwrap();
    let out = tuili(&["-m", m, "--chip", "h100-sxm", "--steps", l]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in ["decode ×2", "prompt chunks", "chunks + decodes"] {
        assert!(text.contains(row), "no row '{row}' in:\n{text}");
    }
    assert!(
        text.contains("3 steps: 0.116 s in steps, 0.001 s between them"),
        "{text}"
    );
    std::fs::write(&log, "{\"at_s\":0,\"chunks\":[[0,1,true]]}\n").unwrap();
    let e = err(&["-m", m, "--chip", "h100-sxm", "--steps", l]);
    assert!(e.contains("line 1") && e.contains("'idle_s'"), "{e}");
    let _ = std::fs::remove_file(&log);
}
