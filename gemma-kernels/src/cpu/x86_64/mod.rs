//! x86-64 SIMD kernels, one file per ISA and format family, each behind `#[target_feature]`.

pub(crate) mod act_quads;
pub(crate) mod avx2_gemm;
pub(crate) mod avx2_gemm_float;
pub(crate) mod avx2_gemm_kquants;
pub(crate) mod avx2_gemm_legacy;
pub mod avx2_kquants;
pub mod avx2_legacy;
pub mod avx2_ops;
pub(crate) mod avx2_quads_legacy;
pub(crate) mod avx512_gemm;
mod avx512_gemm_bf16;
pub(crate) mod avx512_gemm_float;
pub(crate) mod avx512_gemm_kquants;
pub(crate) mod avx512_gemm_legacy;
pub(crate) mod avx512_iq4_xs;
pub mod avx512_kquants;
pub mod avx512_legacy;
pub(crate) mod avx512_quads_legacy;
pub(crate) mod avx512_rows_legacy;
pub(crate) mod avx512_tiles;
pub(crate) mod avx512_tiles_float;
pub(crate) mod avx512_tiles_legacy;
mod kquant_packing;
mod legacy_packing;
