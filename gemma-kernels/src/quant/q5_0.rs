//! Q5_0: 5-bit symmetric blocks of 32.

use super::common::{f16_from, simd_kernel};
use super::{BlockQ8_0, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::f16;

/// Q5_0, 5.5 bits per weight: 32 weights as 5-bit unsigned quants `q` with one `f16`
/// scale. The low 4 bits are nibbles as in Q4_0 (`qs[j]`: element `j` low, `j + 16`
/// high); bit `i` of the little-endian `qh` is the fifth bit of element `i`.
/// `x = d * (q - 16)` (ggml's `block_q5_0`, 22 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits of the 32 quants (little-endian `u32`).
    pub qh: [u8; 4],
    /// Low 4 bits: low nibble = elements 0..16, high nibble = elements 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// The 5-bit quant of element `j` (0..32) of a Q5_0/Q5_1 block.
#[inline]
pub(crate) fn q5_quant(qs: &[u8; 16], qh: u32, j: usize) -> i32 {
    let low = if j < 16 {
        qs[j] & 0x0f
    } else {
        qs[j - 16] >> 4
    };
    (low as u32 | ((qh >> j) & 1) << 4) as i32
}

impl QuantBlock for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = 32;
    type Act = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            let qh = u32::from_le_bytes(b.qh);
            for (j, v) in y.iter_mut().enumerate() {
                *v = (q5_quant(&b.qs, qh, j) - 16) as f32 * d;
            }
        }
    }

    /// ggml's `quantize_row_q5_0_ref`: `d = max / -16` with `max` the value of largest
    /// magnitude, quants `min(31, trunc(x / d + 16.5))`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y.d = f16_from(d);
            let mut qh = 0u32;
            for j in 0..16 {
                let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
                let q1 = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
                y.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
                qh |= ((q0 as u32 & 0x10) >> 4) << j;
                qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
            }
            y.qh = qh.to_le_bytes();
        }
    }

    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let qh = u32::from_le_bytes(a.qh);
            let sumi: i32 = (0..32)
                .map(|j| (q5_quant(&a.qs, qh, j) - 16) * b.qs[j] as i32)
                .sum();
            sum += (a.d.to_f32() * b.d.to_f32()) * sumi as f32;
        }
        sum
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_legacy, q5_0)
    }
}
