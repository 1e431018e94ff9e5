//! CPU kernels: ISA detection, SIMD dot products, matvec/matmul and elementwise ops.

pub mod isa;
