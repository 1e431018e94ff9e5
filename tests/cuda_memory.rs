//! A CUDA session that does not fit in the device's free memory is refused before anything
//! is allocated, with the sizes in one line ([`CoreError::DeviceOutOfMemory`]), and a
//! session that fits still runs on the same device.
//!
//! The device memory is made small with the emulated driver's `GEMMA_EMU_MEM_MIB`
//! (scripts/emu-cuda.sh; scripts/test-emulated-gpu.sh runs this test on it). A GPU ignores
//! that variable and a machine without CUDA cannot open the device: both print clearly
//! that the test did not run. This file holds one test, so no other test of the process
//! opens the device before the variable is set.

use gemma_core::{CoreError, Device, KvType, Model, ModelOptions};
use std::path::PathBuf;

/// The tiny Q4_K_M model of the fixtures (1.7 MiB of weights on the device).
fn tiny_model() -> Model {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/tiny/tiny-gemma3-t1-q4_k_m.gguf");
    let options = ModelOptions {
        threads: 1,
        device: Device::Cuda(0),
        ..ModelOptions::default()
    };
    Model::load(&path, options).expect("tiny model (../shared/fixtures)")
}

#[test]
fn a_session_larger_than_the_free_device_memory_is_refused_with_the_sizes() {
    // The planner's prediction for this model: 21.9 MiB with 16 positions of F16 cache,
    // 24.5 MiB with 256 of F32 (weights, cache, and the buffers of 512-token batches).
    std::env::set_var("GEMMA_EMU_MEM_MIB", "23");
    let model = tiny_model();
    match model.session(256, KvType::F32) {
        Err(CoreError::DeviceOutOfMemory {
            what,
            device,
            needed,
            free,
            total,
        }) => {
            let message = CoreError::DeviceOutOfMemory {
                what,
                device: device.clone(),
                needed,
                free,
                total,
            }
            .to_string();
            eprintln!("refused: {message}");
            assert_eq!(device, "cuda:0");
            assert_eq!(total, 23 << 20, "the emulated device's memory");
            assert!(needed > free, "{needed} <= {free}");
            assert!(
                !message.contains('\n') && message.contains("MiB"),
                "{message}"
            );
        }
        Err(CoreError::DeviceUnavailable { device, reason }) => {
            eprintln!("NOT RUN on a GPU (no CUDA device: {device}: {reason})");
            return;
        }
        Err(e) => panic!("expected DeviceOutOfMemory, got: {e}"),
        Ok(_) => {
            eprintln!(
                "NOT RUN: the device has the memory GEMMA_EMU_MEM_MIB denies (a GPU, not the \
                 emulated driver)"
            );
            return;
        }
    }
    // Nothing was allocated: a session of 16 positions fits in the same 23 MiB and runs.
    let mut session = model.session(16, KvType::F16).expect("a session that fits");
    let logits = session.prefill(&[2, 10, 20]).expect("prefill");
    assert!(logits.iter().all(|v| v.is_finite()));
}
