//! Q4_1: 4-bit blocks of 32 with a scale and a minimum.

use super::common::{f16_from, simd_kernel};
use super::{BlockQ8_1, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::f16;

/// Q4_1, 5 bits per weight: 32 weights as 4-bit unsigned quants `q` with an `f16`
/// scale `d` and an `f16` minimum `m`. `qs[j]` holds element `j` in its low nibble and
/// element `j + 16` in its high nibble. `x = d * q + m` (ggml's `block_q4_1`, 20 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of quant 0).
    pub m: f16,
    /// Nibbles: low = elements 0..16, high = elements 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl QuantBlock for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = 32;
    type Act = BlockQ8_1;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let (d, m) = (b.d.to_f32(), b.m.to_f32());
            for (j, &q) in b.qs.iter().enumerate() {
                y[j] = (q & 0x0f) as f32 * d + m;
                y[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
    }

    /// ggml's `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`, quants
    /// `min(15, trunc((x - min) / d + 0.5))`.
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
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y.d = f16_from(d);
            y.m = f16_from(min);
            for j in 0..16 {
                let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
                let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
                y.qs[j] = q0 | (q1 << 4);
            }
        }
    }

    /// `Σ d_w d_x Σ q_w q_x + m_w s_x`, with the activation block sum `s` as stored (F16).
    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let mut sumi = 0i32;
            for j in 0..16 {
                sumi += (a.qs[j] & 0x0f) as i32 * b.qs[j] as i32;
                sumi += (a.qs[j] >> 4) as i32 * b.qs[j + 16] as i32;
            }
            sum += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
        }
        sum
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_legacy, q4_1)
    }
}
