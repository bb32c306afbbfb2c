//! `--device` and the device list on a machine without a GPU (CI's): clear errors with a
//! non-zero exit, never a panic; `auto` falls back to the CPU and says so.

use std::path::PathBuf;
use std::process::{Command, Output};

use tuili_gguf::GgmlType;
use tuili_models::synthetic::{write_synthetic, SyntheticSpec};
use tuili_models::Arch;

fn tuili(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tuili"))
        .args(args)
        .env(
            "TUILI_HOME",
            std::env::temp_dir().join("tuili-device-test-home"),
        )
        .output()
        .expect("run tuili")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Whether this machine has a GPU the backend can use (then the no-GPU checks skip).
fn has_gpu() -> bool {
    tuili_cuda::devices().is_ok()
}

#[test]
fn device_cuda_without_a_gpu_fails_with_the_reason() {
    if has_gpu() {
        tuili_testkit::skip("this machine has a CUDA device");
        return;
    }
    for cmd in [
        vec!["run", "--device", "cuda", "-p", "hello"],
        vec!["perplexity", "--device", "cuda:0", "-f", "/dev/null"],
        vec!["bench", "--device", "cuda", "-p", "8", "-n", "2"],
    ] {
        let out = tuili(&cmd);
        assert!(!out.status.success(), "{cmd:?} succeeded");
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{cmd:?}: {err}");
        if cfg!(feature = "cuda") {
            assert!(err.contains("no CUDA device: "), "{cmd:?}: {err}");
        } else {
            assert!(
                err.contains("rebuild with --features cuda"),
                "{cmd:?}: {err}"
            );
        }
    }
}

#[test]
fn a_bad_device_names_the_accepted_forms() {
    let out = tuili(&["run", "--device", "gpu", "-p", "hello"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("cpu, cuda, cuda:N"), "{err}");
    assert!(err.contains("auto"), "{err}");
}

#[test]
fn info_lists_the_cpu_and_the_gpus_or_why_there_are_none() {
    let out = tuili(&["info", "--devices"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("cpu: ") && first.contains("threads"),
        "{stdout}"
    );
    assert!(first.ends_with("GiB"), "{stdout}");
    if has_gpu() {
        assert!(stdout.contains("\ncuda:0: "), "{stdout}");
    } else {
        assert!(stdout.contains("\ncuda: none ("), "{stdout}");
        if cfg!(feature = "cuda") {
            assert!(stdout.contains("no CUDA device: "), "{stdout}");
        }
    }
}

#[test]
fn auto_without_a_gpu_runs_on_the_cpu_and_says_so() {
    if has_gpu() {
        tuili_testkit::skip("this machine has a CUDA device");
        return;
    }
    let dir = std::env::temp_dir();
    let path: PathBuf = dir.join(format!("tuili-device-tiny-{}.gguf", std::process::id()));
    let bytes = write_synthetic(&SyntheticSpec::tiny(Arch::Llama, GgmlType::Q8_0))
        .expect("write the tiny model");
    std::fs::write(&path, bytes).expect("save the tiny model");
    let m = path.to_str().expect("utf-8 path");
    let args = [
        "bench",
        "--device",
        "auto",
        "-m",
        m,
        "-p",
        "8",
        "-n",
        "3",
        "-r",
        "1",
        "-t",
        "1",
        "--streams",
        "4",
    ];
    let out = tuili(&args);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stderr.contains("device auto: cpu ("), "{stderr}");
    for test in ["pp8", "tg3", "tg3x4"] {
        assert!(
            stdout.contains(&format!(" {test} |")),
            "{test} missing: {stdout}"
        );
    }
    assert!(stdout.contains("| CPU "), "{stdout}");
}
