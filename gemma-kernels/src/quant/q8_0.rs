//! Q8_0: 8-bit symmetric blocks of 32, a weight format and the activation format of
//! Q4_0, Q5_0, Q8_0 and IQ4_NL.

use super::common::{cvt_round_i8, f16_from, simd_kernel, x86_quantizer};
use super::{QuantBlock, Quantizer, VecDot};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::f16;

/// Q8_0, 8.5 bits per weight: 32 int8 quants with one `f16` scale. `x = d * q`
/// (ggml's `block_q8_0`, 34 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// The 32 quants.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// The largest magnitude in `x`.
#[inline]
pub(crate) fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, &v| m.max(v.abs()))
}

impl QuantBlock for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = 32;
    type Act = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (v, &q) in y.iter_mut().zip(&b.qs) {
                *v = q as f32 * d;
            }
        }
    }

    /// ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, quants `round(x / d)` (half
    /// away from zero).
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
            let d = abs_max(x) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y.d = f16_from(d);
            for (q, &v) in y.qs.iter_mut().zip(x) {
                *q = (v * id).round() as i8;
            }
        }
    }

    /// ggml's x86 `quantize_row_q8_0` (the CPU backend's `from_float`): the multiplier
    /// is `127 / amax` rather than `1 / d`, and quants round half to even (as `cvtps2dq`).
    fn quantize_act(src: &[f32], out: &mut [Self]) {
        let simd: Option<Quantizer<Self>> = x86_quantizer!(quantize_q8_0);
        simd.unwrap_or(quantize_act_scalar)(src, out)
    }

    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let sumi: i32 =
                a.qs.iter()
                    .zip(&b.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
        }
        sum
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_legacy, q8_0)
    }
}

/// Scalar twin of the SIMD activation quantizer (see [`BlockQ8_0::quantize_act`]).
pub(crate) fn quantize_act_scalar(src: &[f32], out: &mut [BlockQ8_0]) {
    for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
        let amax = abs_max(x);
        y.d = f16_from(amax / 127.0);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = cvt_round_i8(v * id);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn simd_quantizer_is_byte_identical_to_scalar() {
        let Some(simd) = crate::cpu::x86_64::avx2_legacy::quantize_q8_0() else {
            return;
        };
        for row in crate::quant::common::adversarial_rows(2048 + 256) {
            let mut want = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); row.len() / 32];
            let mut got = want.clone();
            quantize_act_scalar(&row, &mut want);
            simd(&row, &mut got);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                bytemuck::cast_slice::<_, u8>(&want)
            );
        }
    }
}
