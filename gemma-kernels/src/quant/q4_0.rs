//! Q4_0: 4-bit symmetric blocks of 32.

use super::common::{f16_from, simd_kernel};
use super::{BlockQ8_0, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::f16;

/// Q4_0, 4.5 bits per weight: 32 weights as 4-bit unsigned quants `q` with one `f16`
/// scale. `qs[j]` holds element `j` in its low nibble and element `j + 16` in its high
/// nibble. `x = d * (q - 8)` (ggml's `block_q4_0`, 18 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: low = elements 0..16, high = elements 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl QuantBlock for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = 32;
    type Act = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (j, &q) in b.qs.iter().enumerate() {
                y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
    }

    /// ggml's `quantize_row_q4_0_ref`: `d = max / -8` with `max` the value of largest
    /// magnitude, quants `min(15, trunc(x / d + 8.5))`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            y.d = f16_from(d);
            for j in 0..16 {
                let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
                let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
                y.qs[j] = q0 | (q1 << 4);
            }
        }
    }

    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let mut sumi = 0i32;
            for j in 0..16 {
                sumi += ((a.qs[j] & 0x0f) as i32 - 8) * b.qs[j] as i32;
                sumi += ((a.qs[j] >> 4) as i32 - 8) * b.qs[j + 16] as i32;
            }
            sum += sumi as f32 * a.d.to_f32() * b.d.to_f32();
        }
        sum
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_legacy, q4_0)
    }
}
