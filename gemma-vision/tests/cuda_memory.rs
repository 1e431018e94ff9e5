//! A CUDA image encoder that does not fit in the device's free memory is refused before
//! anything is allocated, with the sizes in one line ([`VisionError::DeviceOutOfMemory`]).
//!
//! The device memory is made small with the emulated driver's `GEMMA_EMU_MEM_MIB`
//! (scripts/emu-cuda.sh; scripts/test-emulated-gpu.sh runs this test on it). A GPU ignores
//! that variable and a machine without CUDA cannot open the device: both print clearly
//! that the test did not run. This file holds one test, so no other test of the process
//! opens the device before the variable is set.

mod common;

use gemma_vision::{CudaEncoder, VisionError, VisionModel};

#[test]
fn an_encoder_larger_than_the_free_device_memory_is_refused_with_the_sizes() {
    // The f32 tiny mmproj holds 2.3 MiB on the device.
    std::env::set_var("GEMMA_EMU_MEM_MIB", "2");
    let model =
        VisionModel::load(common::fixture_dir().join("mmproj-tiny-f32.gguf")).expect("load mmproj");
    let planned = CudaEncoder::planned_bytes(&model) as u64;
    match CudaEncoder::new(&model, 0) {
        Err(e @ VisionError::DeviceOutOfMemory { .. }) => {
            let message = e.to_string();
            eprintln!("refused: {message}");
            let VisionError::DeviceOutOfMemory {
                device,
                needed,
                free,
                total,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(device, 0);
            assert_eq!(needed, planned, "the encoder's plan");
            assert_eq!(total, 2 << 20, "the emulated device's memory");
            assert!(needed > free, "{needed} <= {free}");
            assert!(
                !message.contains('\n') && message.contains("MiB"),
                "{message}"
            );
        }
        Err(VisionError::Cuda(e)) => eprintln!("NOT RUN: no CUDA device ({e})"),
        Err(e) => panic!("expected DeviceOutOfMemory, got: {e}"),
        Ok(_) => eprintln!(
            "NOT RUN: the device has the memory GEMMA_EMU_MEM_MIB denies (a GPU, not the \
             emulated driver)"
        ),
    }
}
