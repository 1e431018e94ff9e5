//! CPU kernels: ISA detection, SIMD dot products, matvec/matmul and elementwise ops.

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
pub mod isa;
pub mod matmul;
pub mod ops;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
