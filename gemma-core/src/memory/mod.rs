//! The memory planner: how much RAM (or VRAM) a model, a context length and a KV cache
//! type take, before anything is allocated.
//!
//! ```no_run
//! use gemma_core::memory::{plan, ModelShape, ModelSize, PlanOptions, Quant};
//! use gemma_core::KvType;
//! // The official 12B as a Q4_K_M file, 32K context, f16 KV cache, on the CPU.
//! let shape = ModelShape::official(ModelSize::S12B, Quant::Q4_K_M, false);
//! let p = plan(&shape, &PlanOptions::new(32_768, KvType::F16), None)?;
//! println!("{} bytes ({} of them KV cache; {} without the sliding-window rings)",
//!          p.total_bytes(), p.kv_bytes(), p.kv.full_bytes);
//! // An actual file:
//! let file = gemma_gguf::GgufFile::open("model.gguf")?;
//! let p = plan(&ModelShape::from_gguf(&file)?, &PlanOptions::new(4096, KvType::Q8_0), None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The parts ([`MemoryPlan`]): the weights and the rest of the mapped file, the KV cache
//! (ring buffers for local layers, full length for global ones, and what a full-length
//! cache would take), the working buffers of the forward pass, the vision tower of an
//! mmproj file, and the process itself. Each mirrors an allocation of the engine (see
//! `plan.rs`); `mem --measure` checks the total against the resident memory of a real
//! session. [`check_session_fits`] refuses a session the machine cannot hold.

#[cfg(test)]
mod cuda_check;
mod plan;
mod process;
mod quant;
mod shape;
mod vision;

pub use plan::{
    kv_plan, plan, KvPlan, MemoryPlan, PlanOptions, CUDA_CONTEXT_BYTES, CUDA_POOL_SLACK_BYTES,
    LOGIT_ROWS, PROCESS_BASELINE_BYTES, PROCESS_BYTES, RUNTIME_GROWTH_BYTES,
    TOKENIZER_BYTES_PER_TOKEN,
};
pub use process::{
    available_bytes, peak_resident_bytes, resident_anon_bytes, resident_bytes, resident_file_bytes,
};
pub use quant::{ParseQuantError, Quant, RecipeModel};
pub use shape::{
    tensor_table, ModelShape, ModelSize, ParseModelSizeError, TensorSpec, GEMMA3_METADATA_BYTES,
    GEMMA3_VOCAB,
};
pub use vision::VisionShape;

use crate::kv_cache::KvType;
use crate::model::{Device, Model};
use crate::CoreError;

/// The plan of a session of `model`, checked against the memory the machine has left
/// (`MemAvailable` on Linux; no check where it is unknown): a session whose KV cache and
/// buffers do not fit fails here, before anything is allocated, with
/// [`CoreError::OutOfMemory`]. (On a GPU the session checks the plan's weights, cache and
/// buffers against the device's free memory when it opens the device.)
pub fn check_session_fits(
    model: &Model,
    ctx_len: usize,
    kv_type: KvType,
) -> Result<MemoryPlan, CoreError> {
    let shape = ModelShape::from_gguf(model.gguf())?;
    let p = plan(
        &shape,
        &PlanOptions::for_model(model.options(), ctx_len, kv_type),
        None,
    )?;
    if model.options().device == Device::Cpu {
        if let Some(available) = available_bytes() {
            if p.session_bytes() > available {
                return Err(CoreError::OutOfMemory {
                    what: "the session's KV cache and buffers (more than the memory available)",
                    bytes: p.session_bytes(),
                });
            }
        }
    }
    Ok(p)
}
