//! What a machine without a GPU (or a build without the backend) sees: clear errors,
//! never a panic; and the kernel sources compile wherever NVRTC is installed, GPU or not.

use tuili_cuda::{compile_kernels, devices, is_compiled, CudaError, CudaModel, CudaOps, KvLayout};

#[test]
fn devices_answer_with_a_reason_not_a_panic() {
    match devices() {
        Ok(d) => assert!(!d.is_empty(), "Ok with no device"),
        Err(CudaError::NotCompiled) => assert!(!is_compiled()),
        Err(CudaError::NoDevice(why)) => {
            assert!(
                std::env::var_os("TUILI_REQUIRE_GPU").is_none(),
                "TUILI_REQUIRE_GPU is set but there is no CUDA device: {why}"
            );
            assert!(is_compiled());
            assert!(!why.is_empty());
            eprintln!("no CUDA device: {why}");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn opening_a_missing_device_is_an_error() {
    // Device 4096 exists nowhere; without a driver the answer is NoDevice instead.
    match CudaOps::new(4096) {
        Ok(_) => panic!("opened cuda:4096"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("no CUDA device") || matches!(e, CudaError::NotCompiled),
                "{msg}"
            );
        }
    }
    let spec = tuili_models::synthetic::SyntheticSpec::tiny(
        tuili_models::Arch::Llama,
        tuili_gguf::GgmlType::Q8_0,
    );
    let bytes = tuili_models::synthetic::write_synthetic(&spec).expect("write");
    let file = std::sync::Arc::new(tuili_gguf::GgufFile::from_bytes(bytes).expect("read"));
    let model = tuili_models::Model::load(&file).expect("load");
    let kv = KvLayout::f32(4, 16);
    assert!(CudaModel::new(&model, 4096, kv, &mut |_, _| {}).is_err());
    // A KV type other than f32 is refused with a message naming it (before any device is
    // looked for), never a panic.
    let f16 = KvLayout {
        k_type: tuili_models::KvType::F16,
        ..kv
    };
    let err = CudaModel::new(&model, 0, f16, &mut |_, _| {})
        .err()
        .expect("must fail");
    if tuili_cuda::is_compiled() {
        assert!(matches!(err, CudaError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("f16"), "{err}");
    }
}

#[test]
fn not_compiled_says_how_to_rebuild() {
    if !is_compiled() {
        let msg = devices().expect_err("no backend").to_string();
        assert!(msg.contains("--features cuda"), "{msg}");
    }
}

#[test]
fn kernels_compile_with_nvrtc_for_ampere_and_hopper() {
    for arch in ["compute_80", "compute_90"] {
        match compile_kernels(arch) {
            Ok(ptx_bytes) => {
                assert!(ptx_bytes > 10_000, "{arch}: {ptx_bytes} bytes of PTX");
                eprintln!("{arch}: {ptx_bytes} bytes of PTX");
            }
            Err(CudaError::NotCompiled) => {
                tuili_testkit::skip("no CUDA backend in this build");
                return;
            }
            Err(CudaError::Library(why)) => {
                // scripts/gpu-check.sh sets this on a GPU machine, where NVRTC must be found.
                if std::env::var_os("TUILI_REQUIRE_GPU").is_some() {
                    panic!("TUILI_REQUIRE_GPU is set but NVRTC cannot be used: {why}");
                }
                tuili_testkit::skip(&format!("NVRTC not found ({why})"));
                return;
            }
            Err(e) => panic!("{arch}: {e}"),
        }
    }
}
