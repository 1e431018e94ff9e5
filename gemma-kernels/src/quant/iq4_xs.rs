//! IQ4_XS: 4-bit non-linear super-blocks of 256 with 6-bit block scales.

use super::common::{simd_kernel, KVALUES_IQ4NL};
use super::iq4_nl::{pack_nibbles, quantize_iq4_impl};
use super::{BlockQ8_K, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::f16;

/// IQ4_XS, 4.25 bits per weight: 256 weights in 8 blocks of 32, each weight a 4-bit
/// index into `KVALUES_IQ4NL`, each block a 6-bit scale `ls` (low 4 bits in `scales_l`,
/// two per byte; high 2 bits in `scales_h`, two per block), one `f16` super-scale.
/// Nibbles per block as in IQ4_NL. `x = d * (ls - 32) * kvalues[q]` (ggml's
/// `block_iq4_xs`, 136 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ4_XS {
    /// Super-block scale.
    pub d: f16,
    /// High 2 bits of the 8 block scales (block `ib` at bits `2 ib`).
    pub scales_h: u16,
    /// Low 4 bits of the 8 block scales (block `ib` in byte `ib / 2`, low nibble first).
    pub scales_l: [u8; 4],
    /// Table indices, 16 bytes per block of 32.
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4_XS>() == 136);

impl BlockIQ4_XS {
    /// The 6-bit scale `ls` of block `ib` (0..8); the block's scale is `d * (ls - 32)`.
    #[inline]
    pub fn block_scale(&self, ib: usize) -> i32 {
        let low = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let high = (self.scales_h >> (2 * ib)) & 3;
        (low as u16 | high << 4) as i32
    }
}

impl QuantBlock for BlockIQ4_XS {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const ELEMS: usize = 256;
    type Act = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            let d = b.d.to_f32();
            for (ib, (yb, qs)) in y
                .chunks_exact_mut(32)
                .zip(b.qs.chunks_exact(16))
                .enumerate()
            {
                let dl = d * (b.block_scale(ib) - 32) as f32;
                for j in 0..16 {
                    yb[j] = dl * KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as f32;
                    yb[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
                }
            }
        }
    }

    /// ggml's `quantize_iq4_xs` without importance matrix: a scale search per block of
    /// 32, block scales quantized to 6 bits against the super-scale, then nearest levels.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, y) in src.chunks_exact(256).zip(out.iter_mut()) {
            let q = quantize_iq4_impl::<256>(x);
            y.d = q.d;
            y.scales_h = 0;
            y.scales_l = [0; 4];
            for (ib, &l) in q.block_scales.iter().enumerate() {
                y.scales_l[ib / 2] |= (l & 0x0f) << (4 * (ib % 2));
                y.scales_h |= ((l >> 4) as u16) << (2 * ib);
            }
            pack_nibbles(&q.indices, &mut y.qs);
        }
    }

    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let d4d8 = a.d.to_f32() * b.d;
            for ib in 0..8 {
                let qs = &a.qs[16 * ib..16 * ib + 16];
                let q8 = &b.qs[32 * ib..32 * ib + 32];
                let mut sumi = 0i32;
                for j in 0..16 {
                    sumi += q8[j] as i32 * KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as i32;
                    sumi += q8[j + 16] as i32 * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32;
                }
                sum += d4d8 * (a.block_scale(ib) - 32) as f32 * sumi as f32;
            }
        }
        sum
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_legacy, iq4_xs)
    }
}
