//! Quantized block formats: one file per format, one shared trait.
//!
//! Every format is a `#[repr(C)]` block struct viewed straight out of the mapped file
//! with `bytemuck`. The scalar methods of [`QuantBlock`] are the reference ("oracle")
//! that every SIMD kernel is tested against.

use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;

/// A dot-product kernel: one weight row (`w` blocks) with one activation row.
pub type VecDot<B> = fn(&[B], &[<B as QuantBlock>::Act]) -> f32;

/// A row quantizer: `f32` values in, blocks out (for run-time selected SIMD versions).
pub(crate) type Quantizer<B> = fn(&[f32], &mut [B]);

/// One block of a ggml tensor type.
pub trait QuantBlock: bytemuck::Pod + Send + Sync {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Elements per block (32 or 256; 1 for plain float types).
    const ELEMS: usize;
    /// The activation format the dot product expects (Q4_0 -> Q8_0, Q4_K -> Q8_K, F16 -> F16).
    type Act: QuantBlock;

    /// Dequantizes `blocks` into `out` (`out.len() == blocks.len() * ELEMS`), bit-exact
    /// with ggml's `to_float`.
    fn dequantize(blocks: &[Self], out: &mut [f32]);

    /// Quantizes `src` into `out` (`src.len() == out.len() * ELEMS`), byte-exact with
    /// ggml's reference quantizer (`quantize_row_*_ref`, no importance matrix).
    fn quantize(src: &[f32], out: &mut [Self]);

    /// Quantizes an activation row the way ggml's CPU backend does (`from_float`, which
    /// may round differently from the reference quantizer). Defaults to [`Self::quantize`].
    fn quantize_act(src: &[f32], out: &mut [Self]) {
        Self::quantize(src, out)
    }

    /// Scalar reference dot product of a weight row with an activation row.
    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32;

    /// The SIMD dot product for `isa`, when this format has one for it.
    fn vec_dot_for(_isa: Isa) -> Option<VecDot<Self>> {
        None
    }
}

pub(crate) mod common;
mod dispatch;
mod float;
mod iq4_nl;
mod iq4_xs;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;

pub use dispatch::{dequantize, is_supported, quantize, visit, BlockVisitor};
pub use iq4_nl::BlockIQ4_NL;
pub use iq4_xs::BlockIQ4_XS;
pub use q2_k::BlockQ2_K;
pub use q3_k::BlockQ3_K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4_K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5_K;
pub use q6_k::BlockQ6_K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8_K;
