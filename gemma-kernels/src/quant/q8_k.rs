//! Q8_K: the 8-bit activation format of the K-quants and IQ4_XS.

use super::common::{nearest_int, x86_quantizer};
use super::{QuantBlock, Quantizer};
use gemma_gguf::GgmlType;

/// Q8_K, 9.125 bits per weight: one super-block of 256 int8 values with an `f32` scale
/// `d` and the sums of each group of 16 quants (`bsums`, used by the K-quant dot
/// products for their minimum terms). `x[i] = d * qs[i]`. Only used for activations
/// (ggml's `block_q8_K`, 292 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_K {
    /// Scale: `x = d * q`.
    pub d: f32,
    /// The 256 quants.
    pub qs: [i8; 256],
    /// Sum of `qs[16 * j .. 16 * j + 16]` for each of the 16 groups.
    pub bsums: [i16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 292);

impl QuantBlock for BlockQ8_K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const ELEMS: usize = 256;
    type Act = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            for (v, &q) in y.iter_mut().zip(&b.qs) {
                *v = b.d * q as f32;
            }
        }
    }

    /// ggml's `quantize_row_q8_K_ref`, which is also what the x86 CPU backend uses for
    /// activations: `d = 1 / (-127 / max)` with `max` the value of largest magnitude,
    /// quants `min(127, nearest_int(-127 / max * x))`. An all-zero block gets `d = 0` and
    /// zero quants and sums.
    fn quantize(src: &[f32], out: &mut [Self]) {
        let simd: Option<Quantizer<Self>> = x86_quantizer!(quantize_q8_k);
        simd.unwrap_or(quantize_scalar)(src, out)
    }

    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let dot: i32 =
                a.qs.iter()
                    .zip(&b.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            sum += a.d * b.d * dot as f32;
        }
        sum
    }
}

/// Scalar twin of the SIMD quantizer (see [`BlockQ8_K::quantize`]).
pub(crate) fn quantize_scalar(src: &[f32], out: &mut [BlockQ8_K]) {
    for (x, y) in src.chunks_exact(256).zip(out.iter_mut()) {
        BlockQ8_K::quantize_block_scalar(x, y);
    }
}

impl BlockQ8_K {
    /// `quantize_row_q8_K_ref` for one block of 256 values.
    pub(crate) fn quantize_block_scalar(x: &[f32], y: &mut BlockQ8_K) {
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *y = bytemuck::Zeroable::zeroed();
            return;
        }
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            // `as i8` keeps the low byte, like C's conversion to `int8_t`.
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, group) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *sum = group.iter().map(|&q| q as i16).sum();
        }
        y.d = 1.0 / iscale;
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn simd_quantizer_is_byte_identical_to_scalar() {
        let Some(simd) = crate::cpu::x86_64::avx2_legacy::quantize_q8_k() else {
            return;
        };
        for row in crate::quant::common::adversarial_rows(2048 + 256) {
            let mut want = vec![<BlockQ8_K as bytemuck::Zeroable>::zeroed(); row.len() / 256];
            let mut got = want.clone();
            quantize_scalar(&row, &mut want);
            simd(&row, &mut got);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                bytemuck::cast_slice::<_, u8>(&want)
            );
        }
    }
}
