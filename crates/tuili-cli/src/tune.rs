//! The kernels' tunables on this CPU (`tuili_backend::kernels::tune`): read from
//! `$TUILI_HOME/tune/<cpu>-<table>.json`, or measured once (under a second) and written
//! there. They change only speed, never a result, so a cache that cannot be read or
//! written costs a measurement and a warning, never a run.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tuili_backend::kernels::{self, tune, tune::FormatChoice};

use crate::{load, registry};

/// Bumped when the tunables or their measurement change meaning: older files are
/// measured again.
const VERSION: u64 = 2;

/// Applies this CPU's tunables once per process: from the cache, else measured and
/// cached.
pub fn ensure() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = cache_path(kernels::select().name());
        match read(&path, kernels::select().name()) {
            Ok(Some(t)) => return tune::set(t),
            Ok(None) => {}
            Err(e) => load::tracing_line(&format!(
                "warning: {} ignored ({e:#}); measuring again",
                path.display()
            )),
        }
        if let Err(e) = measure_and_write(&path) {
            load::tracing_line(&format!("warning: kernel tunables not cached: {e:#}"));
        }
    });
}

/// `tuili bench --tune`: measures the tunables again, caches them and prints what was
/// measured.
pub fn retune() -> Result<()> {
    let k = kernels::select();
    let path = cache_path(k.name());
    let m = measure_and_write(&path)?;
    println!("kernel tunables for {} ({} table)", cpu_ident().0, k.name());
    if m.tiles.is_empty() && m.tables.is_empty() {
        println!("this table has no tunables");
    }
    if let Some(table) = m.tiles_table {
        println!("\ntile shapes of the {table} products, 64 tokens:\n");
        println!("| format | whole-group tiles GMAC/s | half-group tiles GMAC/s | chosen |");
        println!("| --- | ---: | ---: | --- |");
        for t in &m.tiles {
            let chosen = if t.half { "half" } else { "whole" };
            println!(
                "| {} | {:.1} | {:.1} | {chosen} |",
                t.format, t.group_gmacs, t.half_gmacs
            );
        }
    }
    if let Some(narrow) = k.narrower_name() {
        println!(
            "\n{} against {narrow} (products: GMAC/s, a format times its tokens; attention: GFLOP/s, head size):\n",
            k.name()
        );
        println!("| kernel | {} | {narrow} | chosen |", k.name());
        println!("| --- | ---: | ---: | --- |");
        for t in &m.tables {
            let chosen = if t.chose_narrow { narrow } else { k.name() };
            println!(
                "| {} | {:.1} | {:.1} | {chosen} |",
                t.kernel, t.wide, t.narrow
            );
        }
    }
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Measures, applies and caches the tunables; returns the measurement.
fn measure_and_write(path: &PathBuf) -> Result<tune::Measurement> {
    let k = kernels::select();
    let m = tune::measure(k);
    let t = m.tunables;
    tune::set(t);
    let (cpu, _) = cpu_ident();
    let doc = json!({
        "version": VERSION,
        "cpu": cpu,
        "table": k.name(),
        "half_tiles": t.formats(FormatChoice::HalfTiles),
        "narrow_many": t.formats(FormatChoice::NarrowMany),
        "narrow_one": t.formats(FormatChoice::NarrowOne),
        "narrow_attention": t.narrow_attention_kernels(),
        "trials": m.tiles.iter().map(|t| json!({
            "format": t.format,
            "group_gmacs": round1(t.group_gmacs),
            "half_gmacs": round1(t.half_gmacs),
        })).collect::<Vec<_>>(),
        "table_trials": m.tables.iter().map(|t| json!({
            "kernel": t.kernel,
            "wide": round1(t.wide),
            "narrow": round1(t.narrow),
        })).collect::<Vec<_>>(),
    });
    let dir = path.parent().context("the cache path has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Written whole, then renamed: a process reading meanwhile sees the old file or the
    // new one, never half of one.
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(m)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The cached tunables for `table`, `None` when there is no cache or it is of another
/// version; an error names what is wrong with a file that cannot be used.
fn read(path: &PathBuf, table: &str) -> Result<Option<tune::Tunables>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("reading it"),
    };
    let doc: Value = serde_json::from_str(&text).context("not JSON")?;
    if doc.get("version").and_then(Value::as_u64) != Some(VERSION) {
        return Ok(None);
    }
    if doc.get("table").and_then(Value::as_str) != Some(table) {
        bail!("it is not for the {table} table");
    }
    let list = |key: &str| -> Result<Vec<&str>> {
        let Some(names) = doc.get(key).and_then(Value::as_array) else {
            bail!("no \"{key}\" list");
        };
        names
            .iter()
            .map(|v| {
                v.as_str()
                    .with_context(|| format!("\"{key}\" holds a non-string"))
            })
            .collect()
    };
    let (half, many) = (list("half_tiles")?, list("narrow_many")?);
    let (one, attention) = (list("narrow_one")?, list("narrow_attention")?);
    tune::Tunables::default()
        .with_formats(FormatChoice::HalfTiles, &half)
        .and_then(|t| t.with_formats(FormatChoice::NarrowMany, &many))
        .and_then(|t| t.with_formats(FormatChoice::NarrowOne, &one))
        .and_then(|t| t.with_narrow_attention(&attention))
        .map(Some)
        .map_err(anyhow::Error::msg)
}

/// `$TUILI_HOME/tune/<cpu key>-<table>.json`.
fn cache_path(table: &str) -> PathBuf {
    let (_, key) = cpu_ident();
    registry::home()
        .join("tune")
        .join(format!("{key}-{table}.json"))
}

/// The CPU's description (model name, vendor, family/model/stepping) and a file-name
/// key made of the identifying fields: machines of one name differ underneath, so the
/// key is the vendor with family, model and stepping, not the marketing name.
fn cpu_ident() -> (String, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let arch = std::env::consts::ARCH;
    let ids: Vec<String> = ["vendor_id", "cpu family", "model", "stepping"]
        .iter()
        .filter_map(|f| field(f))
        .collect();
    // aarch64 names the core by implementer and part.
    let ids = if ids.is_empty() {
        ["CPU implementer", "CPU part", "CPU variant"]
            .iter()
            .filter_map(|f| field(f))
            .collect()
    } else {
        ids
    };
    let name = crate::device::cpu_name();
    let key: String = std::iter::once(arch.to_string())
        .chain(ids.iter().cloned())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    (format!("{name} ({})", ids.join(" ")), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tuili-tune-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn cached_tunables_are_read_back_and_bad_files_named() {
        let ok = temp(
            "ok.json",
            r#"{"version": 2, "table": "avx2", "half_tiles": ["Q5_0", "Q6_K"],
                "narrow_many": ["Q4_K"], "narrow_one": [], "narrow_attention": ["scores/256"]}"#,
        );
        let t = read(&ok, "avx2").unwrap().unwrap();
        assert_eq!(t.formats(FormatChoice::HalfTiles), ["Q5_0", "Q6_K"]);
        assert_eq!(t.formats(FormatChoice::NarrowMany), ["Q4_K"]);
        assert!(t.formats(FormatChoice::NarrowOne).is_empty());
        assert_eq!(t.narrow_attention_kernels(), ["scores/256"]);
        let e = read(&ok, "neon").unwrap_err().to_string();
        assert!(e.contains("neon"), "{e}");
        let old = temp(
            "old.json",
            r#"{"version": 1, "table": "avx2", "half_tiles": ["Q5_0"]}"#,
        );
        assert!(read(&old, "avx2").unwrap().is_none());
        let missing = std::env::temp_dir().join("tuili-tune-test-none/x.json");
        assert!(read(&missing, "avx2").unwrap().is_none());
        for (name, text, want) in [
            ("bad.json", "{not json", "not JSON"),
            (
                "nolist.json",
                r#"{"version": 2, "table": "avx2"}"#,
                "half_tiles",
            ),
            (
                "nonarrow.json",
                r#"{"version": 2, "table": "avx2", "half_tiles": [], "narrow_many": []}"#,
                "narrow_one",
            ),
            (
                "fmt.json",
                r#"{"version": 2, "table": "avx2", "half_tiles": ["F16"],
                    "narrow_many": [], "narrow_one": [], "narrow_attention": []}"#,
                "'F16'",
            ),
            (
                "num.json",
                r#"{"version": 2, "table": "avx2", "half_tiles": [5]}"#,
                "non-string",
            ),
            (
                "attention.json",
                r#"{"version": 2, "table": "avx2", "half_tiles": [],
                    "narrow_many": [], "narrow_one": [], "narrow_attention": ["scores/99"]}"#,
                "'scores/99'",
            ),
        ] {
            let e = format!("{:#}", read(&temp(name, text), "avx2").unwrap_err());
            assert!(e.contains(want), "{name}: {e}");
        }
    }

    #[test]
    fn the_cpu_key_is_a_plain_file_name() {
        let (_, key) = cpu_ident();
        assert!(key.starts_with(std::env::consts::ARCH), "{key}");
        assert!(key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }
}
