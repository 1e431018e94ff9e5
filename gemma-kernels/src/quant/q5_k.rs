//! Q5_K: 5-bit weights in 256-element super-blocks of eight 32-element sub-blocks, each
//! with a 6-bit scale and a 6-bit minimum (Q4_K plus one high bit per weight).

use super::common::simd_kernel;
use super::q4_k::{
    dot_k4_super_block, finish_k4_super_block, fit_k4_sub_blocks, unpack_scales_mins_k4, Qkx2Search,
};
use super::{BlockQ8_K, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use bytemuck::{Pod, Zeroable};
use gemma_gguf::GgmlType;
use half::f16;

/// Q5_K super-block: 5.5 bits per weight, 256 weights in 8 sub-blocks of 32.
/// Layout: `d`, `dmin` (f16), 12 bytes of 6-bit scales/mins (as Q4_K), 32 bytes of high
/// bits (bit `2c` / `2c+1` of `qh[l]` for weights `64c + l` / `64c + 32 + l`), 128 bytes of
/// low nibbles (as Q4_K). Weight = `d * scale[s] * q - dmin * min[s]`, `q` in 0..=31.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed as in Q4_K.
    pub scales: [u8; 12],
    /// Fifth bits of the quants.
    pub qh: [u8; 32],
    /// Low 4 bits of the quants.
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == 176);

impl BlockQ5_K {
    /// The eight sub-block scales and the eight sub-block minimums, unpacked.
    #[inline]
    pub(crate) fn scales_mins(&self) -> ([u8; 8], [u8; 8]) {
        unpack_scales_mins_k4(&self.scales)
    }

    /// Quant `k` (0..32) of sub-block `j` (0..8), in 0..=31.
    #[inline]
    fn quant(&self, j: usize, k: usize) -> u8 {
        let low = (self.qs[32 * (j / 2) + k] >> (4 * (j % 2))) & 0xF;
        let high = (self.qh[k] >> j) & 1;
        low | (high << 4)
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let (scales, mins) = self.scales_mins();
        for j in 0..8 {
            let dj = d * scales[j] as f32;
            let mj = min * mins[j] as f32;
            for k in 0..32 {
                y[32 * j + k] = dj * self.quant(j, k) as f32 - mj;
            }
        }
    }

    fn quantize_block(x: &[f32]) -> Self {
        let search = Qkx2Search {
            nmax: 31,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let mut l = [0u8; 256];
        let fits = fit_k4_sub_blocks(x, &mut l, &search);
        let (d, dmin, scales) = finish_k4_super_block(x, &fits, &mut l, 31);
        let mut qh = [0u8; 32];
        let mut qs = [0u8; 128];
        for c in 0..4 {
            let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for j in 0..32 {
                let mut l1 = l[64 * c + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[64 * c + 32 + j];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * c + j] = l1 | (l2 << 4);
            }
        }
        BlockQ5_K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }
}

/// `ggml_vec_dot_q5_K_q8_K_generic`: integer products per sub-block, scaled per
/// super-block into eight float lanes, summed in ggml's order.
fn vec_dot_scalar(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let quant = |j: usize, k: usize| b.quant(j, k);
        sumf -= dot_k4_super_block(b.scales_mins(), quant, (b.d, b.dmin), y, &mut sums);
    }
    sums.iter().fold(sumf, |acc, s| acc + s)
}

impl QuantBlock for BlockQ5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = 256;
    type Act = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            b.dequantize_block(y);
        }
    }

    /// ggml's `quantize_row_q5_K_ref`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, b) in src.chunks_exact(256).zip(out.iter_mut()) {
            *b = Self::quantize_block(x);
        }
    }

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot_scalar(w, x)
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_kquants, avx512_kquants, neon_kquants, q5_k)
    }
}
