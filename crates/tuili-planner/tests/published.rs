//! The planner against published measurements of chips we cannot reach
//! (`data/published.toml`): the prediction of each figure from the chip's datasheet,
//! with the error bounds docs/PLANNER.md states. A change to the model that worsens a
//! prediction past its bound fails here.

use tuili_planner::chip;
use tuili_planner::published::{check, engine_of, parse, Checked, BUILTIN};
use tuili_planner::shape::Mix;

/// The bounds docs/PLANNER.md states, on |error|: of token generation (`tg`, one
/// sequence: memory-bound) from the datasheet, the median; with coefficients fitted to
/// the other figures, the median and the worst; of prompts (`pp`) held out, the median.
const TG_DATASHEET_MEDIAN: f64 = 0.25;
const TG_HELD_OUT_MEDIAN: f64 = 0.20;
const TG_HELD_OUT_WORST: f64 = 0.35;
const PP_HELD_OUT_MEDIAN: f64 = 0.50;
/// The same for whole runs of server engines (`e2e`): from the datasheet, the median;
/// held out within the engine (where it has enough other figures), median and worst.
const E2E_DATASHEET_MEDIAN: f64 = 0.40;
const E2E_HELD_OUT_MEDIAN: f64 = 0.10;
const E2E_HELD_OUT_WORST: f64 = 0.20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A held-out cell: a dash where the engine had too few other figures to fit.
fn held(cell: String) -> String {
    if cell.contains("NaN") {
        "—".into()
    } else {
        cell
    }
}

fn checked() -> Vec<Checked> {
    let (shapes, figures) = parse(BUILTIN, "published.toml").expect("the data parses");
    let all = chip::load_all(None).expect("built-in profiles");
    check(&shapes, &figures, &all).expect("every figure predicts")
}

#[test]
fn published_figures_are_predicted_within_the_documented_bounds() {
    let rows = checked();
    assert!(rows.len() >= 12, "at least 12 figures, got {}", rows.len());
    println!(
        "| chip | model | weights | test | published t/s | datasheet t/s | error | held out t/s | error |"
    );
    println!("| --- | --- | --- | --- | --: | --: | --: | --: | --: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:+.1}% | {} | {} |",
            r.chip,
            r.model,
            r.quant,
            r.test,
            r.published,
            r.predicted,
            100.0 * r.error,
            held(format!("{:.1}", r.held_out)),
            held(format!("{:+.1}%", 100.0 * r.held_out_error))
        );
    }
    let tg: Vec<&Checked> = rows.iter().filter(|r| r.test.starts_with("tg")).collect();
    let pp: Vec<&Checked> = rows.iter().filter(|r| r.test.starts_with("pp")).collect();
    let abs = |v: &[&Checked], f: fn(&Checked) -> f64| v.iter().map(|r| f(r).abs()).collect();
    let tg_sheet = median(abs(&tg, |r| r.error));
    let tg_held: Vec<f64> = abs(&tg, |r| r.held_out_error);
    let tg_worst = tg_held.iter().copied().fold(0.0, f64::max);
    let tg_held = median(tg_held);
    let pp_held = median(abs(&pp, |r| r.held_out_error));
    println!(
        "tg: datasheet median |error| {:.1}%; held out median {:.1}%, worst {:.1}%; \
         pp held out median {:.1}%",
        100.0 * tg_sheet,
        100.0 * tg_held,
        100.0 * tg_worst,
        100.0 * pp_held
    );
    assert!(
        tg_sheet < TG_DATASHEET_MEDIAN,
        "tg datasheet median {tg_sheet}"
    );
    assert!(tg_held < TG_HELD_OUT_MEDIAN, "tg held-out median {tg_held}");
    assert!(tg_worst < TG_HELD_OUT_WORST, "tg held-out worst {tg_worst}");
    assert!(pp_held < PP_HELD_OUT_MEDIAN, "pp held-out median {pp_held}");
    let e2e: Vec<&Checked> = rows.iter().filter(|r| r.test.starts_with("e2e")).collect();
    let e2e_sheet = median(abs(&e2e, |r| r.error));
    let e2e_held: Vec<f64> = e2e
        .iter()
        .map(|r| r.held_out_error.abs())
        .filter(|e| !e.is_nan())
        .collect();
    let e2e_worst = e2e_held.iter().copied().fold(0.0, f64::max);
    let e2e_held = median(e2e_held);
    println!(
        "e2e: datasheet median |error| {:.1}%; held out median {:.1}%, worst {:.1}%",
        100.0 * e2e_sheet,
        100.0 * e2e_held,
        100.0 * e2e_worst
    );
    assert!(
        e2e_sheet < E2E_DATASHEET_MEDIAN,
        "e2e datasheet median {e2e_sheet}"
    );
    assert!(
        e2e_held < E2E_HELD_OUT_MEDIAN,
        "e2e held-out median {e2e_held}"
    );
    assert!(
        e2e_worst < E2E_HELD_OUT_WORST,
        "e2e held-out worst {e2e_worst}"
    );
    for r in &rows {
        assert!(r.source.starts_with("https://"), "{r:?}");
    }
}

#[test]
fn published_figures_cover_the_engines_and_models_asked_for() {
    let (_, figures) = parse(BUILTIN, "published.toml").expect("the data parses");
    let has = |f: &dyn Fn(&tuili_planner::published::Figure) -> bool| figures.iter().any(f);
    for engine in ["llama.cpp", "TensorRT-LLM", "vLLM"] {
        assert!(has(&|f| engine_of(f) == engine), "{engine}");
    }
    assert!(has(&|f| f.model.starts_with("qwen")), "a Qwen-class model");
    assert!(has(&|f| f.chip == "mi300x"), "an MI300X figure");
    assert!(has(&|f| f.chip == "l4"), "an L4 figure");
    assert!(
        has(&|f| f.model.ends_with("70b")
            && ["h100-sxm", "h200", "a100-80gb"].contains(&f.chip.as_str())),
        "a 70B model on a datacenter GPU"
    );
}

#[test]
fn model_shapes_weigh_what_their_files_weigh() {
    let (shapes, _) = parse(BUILTIN, "published.toml").expect("the data parses");
    let shape = |n: &str| shapes.iter().find(|s| s.name == n).expect(n);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    // File sizes as llama-bench prints them (GiB) and the README of the figures' source
    // lists them (Llama 3 Q4_K_M 8B 4.58, 70B 39.59; Llama 2 7B Q4_0 3.56 in
    // https://github.com/ggml-org/llama.cpp/pull/4812).
    for (name, mix, want) in [
        ("llama-3-8b", Mix::Q4KM, 4.58),
        ("llama-3-70b", Mix::Q4KM, 39.59),
        ("llama-2-7b", Mix::Q4_0, 3.56),
    ] {
        let got = gib(shape(name).cost(mix).weight_bytes());
        assert!(
            (got / want - 1.0).abs() < 0.01,
            "{name}: {got:.3} GiB, want {want}"
        );
    }
}

#[test]
fn bad_figures_are_refused_by_name() {
    let all = chip::load_all(None).unwrap();
    let run = |chip: &str, model: &str, quant: &str, test: &str, value: &str| {
        let text = one_figure(&format!(
            "chip = \"{chip}\"\nmodel = \"{model}\"\nquant = \"{quant}\"\ntest = \"{test}\"\nvalue = {value}"
        ));
        let (s, f) = parse(&text, "t.toml")?;
        check(&s, &f, &all)
    };
    assert!(run("l4", "m", "q4_0", "tg128", "10").is_ok());
    for (args, says) in [
        (("nope", "m", "q4_0", "tg128", "10"), "nope"),
        (("l4", "x", "q4_0", "tg128", "10"), "no model named 'x'"),
        (("l4", "m", "q3", "tg128", "10"), "'q3'"),
        (("l4", "m", "q4_0", "tg0", "10"), "not ppN, tgN or e2e"),
        (("l4", "m", "q4_0", "tg8", "-1"), "positive"),
    ] {
        let e = run(args.0, args.1, args.2, args.3, args.4)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{args:?}: {e}");
    }
    let e = parse("[[figure]]\nchip = 1", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.toml"), "{e}");
}

/// A file of one small model and one figure of `fields` (TOML lines) beside its engine
/// and source.
fn one_figure(fields: &str) -> String {
    format!(
        r#"
[[model]]
name = "m"
source = "https://example.org/config.json"
layers = 2
dim = 64
ffn = 128
heads = 4
kv_heads = 2
vocab = 100
ctx = 256
tied = true

[[figure]]
engine = "e"
source = "https://example.org"
{fields}
"#
    )
}

fn run_one(fields: &str) -> Result<Vec<Checked>, String> {
    let all = chip::load_all(None).unwrap();
    let fields = format!("chip = \"h100-sxm\"\nmodel = \"m\"\nvalue = 100.0\n{fields}");
    let (s, f) = parse(&one_figure(&fields), "t.toml").map_err(|e| e.to_string())?;
    check(&s, &f, &all).map_err(|e| e.to_string())
}

#[test]
fn e2e_figures_read_their_batch_and_lengths() {
    let ok = |fields: &str| run_one(fields).unwrap_or_else(|e| panic!("{fields}: {e}"));
    let one = ok("quant = \"bf16\"\ntest = \"e2e\"\ninput = 16\noutput = 64");
    let eight = ok("quant = \"bf16\"\ntest = \"e2e\"\nbatch = 8\ninput = 16\noutput = 64");
    let fill = ok("quant = \"fp8\"\ntest = \"e2e\"\nbatch = \"fill\"\ninput = 16\noutput = 64");
    assert_eq!(one[0].test, "e2e 16/64 x1");
    assert_eq!(eight[0].test, "e2e 16/64 x8");
    // Eight sequences share each weight read: more tokens/s than one, less than 8x.
    let (p1, p8) = (one[0].predicted, eight[0].predicted);
    assert!(p8 > 2.0 * p1 && p8 < 8.0 * p1, "{p1} {p8}");
    // A model this small leaves room for the most sequences a figure may run.
    assert!(fill[0]
        .test
        .ends_with(&format!("x{}", tuili_planner::published::MAX_BATCH)));
}

#[test]
fn bad_e2e_fields_are_refused_by_name() {
    for (fields, says) in [
        (
            "quant = \"bf16\"\ntest = \"e2e\"\noutput = 8",
            "needs input and output",
        ),
        (
            "quant = \"bf16\"\ntest = \"e2e\"\ninput = 0\noutput = 8",
            "needs input and output",
        ),
        (
            "quant = \"bf16\"\ntest = \"e2e\"\nbatch = 0\ninput = 8\noutput = 8",
            "batch must be between 1 and",
        ),
        (
            "quant = \"bf16\"\ntest = \"e2e\"\nbatch = \"full\"\ninput = 8\noutput = 8",
            "count or \"fill\", got \"full\"",
        ),
        (
            "quant = \"bf16\"\ntest = \"e2e\"\ninput = 200\noutput = 100",
            "over the model's context of 256",
        ),
        (
            "quant = \"bf16\"\ntest = \"tg128\"\nbatch = 4",
            "apply to test e2e only",
        ),
        ("quant = \"fp4\"\ntest = \"tg128\"", "'fp4'"),
        (
            "quant = \"bf16\"\ntest = \"tg128\"\ntp = 0",
            "tp must be between 1 and 64 chips, got 0",
        ),
        (
            "quant = \"bf16\"\ntest = \"tg128\"\nkv = \"fp4\"",
            "kv 'fp4' is not one of",
        ),
        (
            "quant = \"bf16\"\ntest = \"e2e\"\nconcurrency = 4",
            "concurrency",
        ),
    ] {
        let e = run_one(fields).unwrap_err();
        assert!(e.contains(says), "{fields}: {e}");
    }
}
