//! CPU kernels: ISA detection, SIMD dot products, matvec/matmul and elementwise ops.

pub mod isa;
pub mod matmul;
pub mod ops;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
