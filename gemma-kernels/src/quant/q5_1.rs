//! Q5_1: 5-bit blocks of 32 with a scale and a minimum.

use super::common::{f16_from, simd_kernel};
use super::q5_0::q5_quant;
use super::{BlockQ8_1, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::f16;

/// Q5_1, 6 bits per weight: 32 weights as 5-bit unsigned quants `q` with an `f16`
/// scale `d` and an `f16` minimum `m`; bits laid out as in Q5_0 (nibbles in `qs`,
/// fifth bits in the little-endian `qh`). `x = d * q + m` (ggml's `block_q5_1`,
/// 24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of quant 0).
    pub m: f16,
    /// Fifth bits of the 32 quants (little-endian `u32`).
    pub qh: [u8; 4],
    /// Low 4 bits: low nibble = elements 0..16, high nibble = elements 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl QuantBlock for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = 32;
    type Act = BlockQ8_1;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let (d, m) = (b.d.to_f32(), b.m.to_f32());
            let qh = u32::from_le_bytes(b.qh);
            for (j, v) in y.iter_mut().enumerate() {
                *v = q5_quant(&b.qs, qh, j) as f32 * d + m;
            }
        }
    }

    /// ggml's `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`, quants
    /// `trunc((x - min) / d + 0.5)`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
            let (mut min, mut max) = (f32::MAX, -f32::MAX);
            for &v in x {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y.d = f16_from(d);
            y.m = f16_from(min);
            let mut qh = 0u32;
            for j in 0..16 {
                let q0 = ((x[j] - min) * id + 0.5) as u8;
                let q1 = ((x[j + 16] - min) * id + 0.5) as u8;
                y.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
                qh |= ((q0 as u32 & 0x10) >> 4) << j;
                qh |= ((q1 as u32 & 0x10) >> 4) << (j + 16);
            }
            y.qh = qh.to_le_bytes();
        }
    }

    /// `Σ d_w d_x Σ q_w q_x + m_w s_x`, with the activation block sum `s` as stored (F16).
    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let qh = u32::from_le_bytes(a.qh);
            let sumi: i32 = (0..32)
                .map(|j| q5_quant(&a.qs, qh, j) * b.qs[j] as i32)
                .sum();
            sum += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
        }
        sum
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_legacy, q5_1)
    }
}
