//! gemma-rs: a from-scratch inference engine for Google's Gemma 3 models in GGUF files.
//!
//! This facade re-exports the workspace crates:
//! - [`gguf`]: the memory-mapped GGUF reader and writer,
//! - [`kernels`]: quantized block formats and CPU/CUDA kernels,
//! - [`core`]: the Gemma 3 model, KV cache, tokenizer, sampler and generation API,
//! - [`vision`]: the SigLIP image encoder and Gemma 3 projector.

pub use gemma_core as core;
pub use gemma_gguf as gguf;
pub use gemma_kernels as kernels;
pub use gemma_vision as vision;
