//! The plain float types F32, F16 and BF16 as one-element "blocks".
//!
//! Their activation format is themselves (ggml's `vec_dot_type`): an F16 weight row is
//! multiplied with an activation row rounded to F16, a BF16 row with one rounded to BF16.

use super::common::{bf16_from, f16_from, simd_kernel, x86_quantizer};
use super::{QuantBlock, Quantizer};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::{bf16, f16};

impl QuantBlock for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
    type Act = f32;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        out.copy_from_slice(&blocks[..out.len()]);
    }

    fn quantize(src: &[f32], out: &mut [Self]) {
        let n = out.len();
        out.copy_from_slice(&src[..n]);
    }

    /// Accumulated in `f64`, like ggml's scalar `ggml_vec_dot_f32`.
    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>() as f32
    }

    fn vec_dot_for(isa: Isa) -> Option<super::VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_float, f32)
    }
}

impl QuantBlock for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
    type Act = f16;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (y, &h) in out.iter_mut().zip(blocks) {
            *y = h.to_f32();
        }
    }

    /// ggml's `ggml_fp32_to_fp16_row`: round to nearest even.
    fn quantize(src: &[f32], out: &mut [Self]) {
        let simd: Option<Quantizer<Self>> = x86_quantizer!(quantize_f16);
        simd.unwrap_or(quantize_f16_scalar)(src, out)
    }

    /// Products of the exact F16 values, accumulated in `f64` (ggml's scalar
    /// `ggml_vec_dot_f16`).
    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(&a, &b)| a.to_f32() as f64 * b.to_f32() as f64)
            .sum::<f64>() as f32
    }

    fn vec_dot_for(isa: Isa) -> Option<super::VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_float, f16)
    }
}

impl QuantBlock for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
    type Act = bf16;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (y, &h) in out.iter_mut().zip(blocks) {
            *y = h.to_f32();
        }
    }

    /// ggml's `ggml_fp32_to_bf16_row_ref`: round to nearest even, NaNs made quiet.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (h, &x) in out.iter_mut().zip(src) {
            *h = bf16_from(x);
        }
    }

    /// Products of the exact BF16 values, accumulated in `f64` (ggml's scalar
    /// `ggml_vec_dot_bf16`).
    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(&a, &b)| a.to_f32() as f64 * b.to_f32() as f64)
            .sum::<f64>() as f32
    }

    fn vec_dot_for(isa: Isa) -> Option<super::VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_float, bf16)
    }
}

/// Scalar twin of the SIMD F16 conversion (see `<f16 as QuantBlock>::quantize`).
pub(crate) fn quantize_f16_scalar(src: &[f32], out: &mut [f16]) {
    for (h, &x) in out.iter_mut().zip(src) {
        *h = f16_from(x);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn simd_quantizer_is_byte_identical_to_scalar() {
        let Some(simd) = crate::cpu::x86_64::avx2_legacy::quantize_f16() else {
            return;
        };
        for row in crate::quant::common::adversarial_rows(2048 + 256) {
            let mut want = vec![<f16 as bytemuck::Zeroable>::zeroed(); row.len()];
            let mut got = want.clone();
            quantize_f16_scalar(&row, &mut want);
            simd(&row, &mut got);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                bytemuck::cast_slice::<_, u8>(&want)
            );
        }
    }
}
