//! Numbers for Gemma 3: quantized block formats, (de)quantization, dot products,
//! matrix products and the elementwise ops of the model, on the CPU (scalar reference
//! + SIMD) and on CUDA.

pub mod cpu;
pub mod cuda;
mod error;
pub mod quant;

pub use error::KernelError;
