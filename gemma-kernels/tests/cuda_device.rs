//! Opening a CUDA device: works where a GPU, its driver and NVRTC are present; fails with
//! one clear line everywhere else (what `--device cuda` prints on such a machine).

use gemma_gguf::GgmlType;
use gemma_kernels::cuda::{self, CudaDevice, CudaError, DeviceMatrix};

#[test]
fn opening_a_device_succeeds_or_fails_with_one_line_naming_the_cause() {
    match CudaDevice::new(0) {
        Ok(dev) => {
            assert!(cuda::is_available());
            assert!(dev.arch().major >= 8, "{:?}", dev.arch());
            assert!(dev.sm_count() > 0);
            assert!(!dev.name().is_empty());
            eprintln!(
                "CUDA device 0: {} ({}), {} SMs",
                dev.name(),
                dev.arch().name(),
                dev.sm_count()
            );
        }
        Err(e) => {
            assert!(
                !cuda::is_available(),
                "is_available() says yes but opening failed: {e}"
            );
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
            match e {
                CudaError::Unavailable { .. } => {
                    assert!(msg.starts_with("CUDA is not available: "), "{msg}")
                }
                CudaError::NvrtcMissing => assert!(msg.contains("LD_LIBRARY_PATH"), "{msg}"),
                CudaError::UnsupportedArch { .. } => {}
                other => panic!("unexpected error opening a device: {other}"),
            }
            eprintln!("{msg}");
        }
    }
}

#[test]
fn a_device_ordinal_past_the_last_device_is_an_error() {
    let err = CudaDevice::new(1 << 20).expect_err("no machine has a million GPUs");
    assert!(matches!(err, CudaError::Unavailable { .. }), "{err}");
}

#[test]
fn unsupported_weight_types_are_rejected_before_touching_the_gpu() {
    assert!(!cuda::is_supported(GgmlType::IQ2_XXS));
    assert!(cuda::is_supported(GgmlType::Q4_K));
    assert!(cuda::is_supported(GgmlType::IQ4_XS));
    let Ok(dev) = CudaDevice::new(0) else {
        eprintln!("no CUDA device: the upload half of this test not run");
        return;
    };
    let err = DeviceMatrix::upload(&dev, GgmlType::IQ2_XXS, &[0u8; 66], 1, 256)
        .err()
        .expect("IQ2_XXS upload");
    assert!(
        matches!(err, CudaError::UnsupportedType(GgmlType::IQ2_XXS)),
        "{err}"
    );
    let err = DeviceMatrix::upload(&dev, GgmlType::Q4_K, &[0u8; 100], 1, 256)
        .err()
        .expect("short upload");
    assert!(matches!(err, CudaError::Shape { .. }), "{err}");
}

#[test]
fn activation_padding_is_a_whole_number_of_super_blocks() {
    assert_eq!(cuda::padded_len(1), 256);
    assert_eq!(cuda::padded_len(256), 256);
    assert_eq!(cuda::padded_len(640), 768);
    assert_eq!(cuda::padded_len(3840), 3840);
}
