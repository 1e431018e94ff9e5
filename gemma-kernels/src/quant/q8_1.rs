//! Q8_1: 8-bit blocks of 32 with their sum, the activation format of Q4_1 and Q5_1.

use super::common::{cvt_round_i32, f16_from, x86_quantizer};
use super::q8_0::abs_max;
use super::{QuantBlock, Quantizer};
use gemma_gguf::GgmlType;
use half::f16;

/// Q8_1, 9 bits per weight: 32 int8 quants with an `f16` scale `d` and `s = d * Σq`
/// rounded to `f16` (the Q4_1/Q5_1 dot products use it for their minimum term).
/// `x = d * q` (ggml's `block_q8_1`, 36 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * Σ qs`.
    pub s: f16,
    /// The 32 quants.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl QuantBlock for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const ELEMS: usize = 32;
    type Act = BlockQ8_1;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (v, &q) in y.iter_mut().zip(&b.qs) {
                *v = q as f32 * d;
            }
        }
    }

    /// ggml's `quantize_row_q8_1_ref`: `d = amax / 127`, quants `round(x / d)` (half
    /// away from zero), `s = d * Σq`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
            let d = abs_max(x) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y.d = f16_from(d);
            for (q, &v) in y.qs.iter_mut().zip(x) {
                *q = (v * id).round() as i8;
            }
            y.s = f16_from(quant_sum(&y.qs) as f32 * d);
        }
    }

    /// ggml's x86 `quantize_row_q8_1`: multiplier `127 / amax`, quants rounded half to
    /// even, `s = d * Σq`.
    fn quantize_act(src: &[f32], out: &mut [Self]) {
        let simd: Option<Quantizer<Self>> = x86_quantizer!(quantize_q8_1);
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
}

/// Scalar twin of the SIMD activation quantizer (see [`BlockQ8_1::quantize_act`]). The
/// sum is taken over the 32-bit conversions with wrapping adds, as ggml's AVX2 code does
/// (it differs from the sum of the stored quants only for non-finite products).
pub(crate) fn quantize_act_scalar(src: &[f32], out: &mut [BlockQ8_1]) {
    for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
        let amax = abs_max(x);
        let d = amax / 127.0;
        y.d = f16_from(d);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            let i = cvt_round_i32(v * id);
            sum = sum.wrapping_add(i);
            *q = i.clamp(-128, 127) as i8;
        }
        y.s = f16_from(d * sum as f32);
    }
}

fn quant_sum(qs: &[i8; 32]) -> i32 {
    qs.iter().map(|&q| q as i32).sum()
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn simd_quantizer_is_byte_identical_to_scalar() {
        let Some(simd) = crate::cpu::x86_64::avx2_legacy::quantize_q8_1() else {
            return;
        };
        for row in crate::quant::common::adversarial_rows(2048 + 256) {
            let mut want = vec![<BlockQ8_1 as bytemuck::Zeroable>::zeroed(); row.len() / 32];
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
