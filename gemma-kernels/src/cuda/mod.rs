//! CUDA kernels and their launch layer.
//!
//! The kernels are `.cu` files in `gemma-kernels/kernels/` (one per op family, all starting
//! with `common.cuh`, which mirrors the GGUF block layouts of [`crate::quant`]). They are
//! embedded in the binary and compiled at run time by NVRTC for the GPU found; the PTX is
//! cached on disk per architecture ([`modules`]). The driver and NVRTC are loaded with
//! `dlopen` (cudarc's dynamic loading), so this crate builds and its CPU paths run on
//! machines without CUDA; there [`CudaDevice::new`] returns a one-line [`CudaError`].
//!
//! Numbers: weights stay in their GGUF blocks on the device ([`DeviceMatrix`]); products
//! with quantized weights take activations quantized to q8_1 (per 32 values an f32 scale)
//! and use integer dot products: dp4a for up to 8 tokens ([`launch::matmul_q8`] -> mmvq),
//! int8 tensor cores above (mmq). Residuals and norms are f32, the KV cache f16 (or f32,
//! or Q8_0 blocks: [`KvElem`]). A sequence of launches can be captured once and replayed
//! as a CUDA graph ([`graph`]).
//!
//! Finding libnvrtc: cudarc looks for `libnvrtc.so`, `libnvrtc.so.12`, ... through the
//! dynamic loader, so its folder must be on `LD_LIBRARY_PATH` (`scripts/setup-nvrtc.sh`
//! installs NVRTC from PyPI and prints the folder).

mod argmax;
mod attention;
mod buffer;
mod device;
mod error;
pub mod graph;
pub mod launch;
pub mod modules;
pub mod ops;
pub mod profile;
pub mod vision;

pub use argmax::{argmax, ArgmaxScratch};
pub use attention::{
    attention_decode, attention_decode_q8, attention_prefill, attention_prefill_cached, AttnShape,
    DecodeKv, DecodeScratch, KvElem, KvKind,
};
pub use buffer::{
    download, is_supported, padded_len, upload, zeros, ActFormat, DeviceMatrix, Q8Activations,
    SUPPORTED_TYPES,
};
/// The cudarc buffer types and traits the launch functions take.
pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceSlice};
pub use device::{device_count, driver_available, is_available, CudaDevice};
pub use error::CudaError;
pub use modules::{ComputeArch, Kernel};
