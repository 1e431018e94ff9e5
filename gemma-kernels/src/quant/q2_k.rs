//! Q2_K: 2-bit weights in 256-element super-blocks of sixteen 16-element sub-blocks, each
//! with a 4-bit scale and a 4-bit minimum.

use super::common::{f16_from, simd_kernel};
use super::q4_k::{make_qkx2_quants, nearest_int, Qkx2Search};
use super::{BlockQ8_K, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use bytemuck::{Pod, Zeroable};
use gemma_gguf::GgmlType;
use half::f16;

/// Q2_K super-block: 2.625 bits per weight, 256 weights in 16 sub-blocks of 16.
/// Layout: 16 bytes of (scale | min << 4), 64 bytes of 2-bit quants (weight
/// `128n + 32g + l` in bits `2g..2g+2` of `qs[32n + l]`), `d`, `dmin` (f16).
/// Weight = `d * scale[s] * q - dmin * min[s]`, `q` in 0..=3.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ2_K {
    /// Scale (low nibble) and minimum (high nibble) of each sub-block.
    pub scales: [u8; 16],
    /// 2-bit quants.
    pub qs: [u8; 64],
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2_K>() == 84);

impl BlockQ2_K {
    /// Quant `i` (0..256) of the super-block, in 0..=3.
    #[inline]
    fn quant(&self, i: usize) -> u8 {
        let (n, g, l) = (i / 128, (i % 128) / 32, i % 32);
        (self.qs[32 * n + l] >> (2 * g)) & 3
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        // Sub-block s covers weights 16s..16s+16 (ggml walks them in this order).
        for (i, v) in y.iter_mut().enumerate() {
            let sc = self.scales[i / 16];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            *v = dl * self.quant(i) as f32 - ml;
        }
    }

    /// ggml's `quantize_row_q2_K_ref` for one super-block.
    fn quantize_block(x: &[f32]) -> Self {
        const Q4SCALE: f32 = 15.0;
        let search = Qkx2Search {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let mut l = [0u8; 256];
        let mut scales = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let mut weights = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            (scales[j], mins[j]) =
                make_qkx2_quants(xs, &weights, &mut l[16 * j..16 * j + 16], &search);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut b = Self::zeroed();
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, &scale) in b.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * scale) as u8;
            }
            b.d = f16_from(max_scale / Q4SCALE);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, &min) in b.scales.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * min) << 4) as u8;
            }
            b.dmin = f16_from(max_min / Q4SCALE);
        }
        for j in 0..16 {
            let d = b.d.to_f32() * (b.scales[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = b.dmin.to_f32() * (b.scales[j] >> 4) as f32;
            for ii in 0..16 {
                let q = nearest_int((x[16 * j + ii] + dm) / d);
                l[16 * j + ii] = q.clamp(0, 3) as u8;
            }
        }
        for n in 0..2 {
            for i in 0..32 {
                let q = |g: usize| l[128 * n + 32 * g + i];
                b.qs[32 * n + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
        b
    }
}

/// `ggml_vec_dot_q2_K_q8_K_generic`: integer sums per super-block, minimum term from the
/// activation block sums.
fn vec_dot_scalar(w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    let mut sumf = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let mut summs = 0i32;
        for (&bsum, &sc) in y.bsums.iter().zip(&b.scales) {
            summs += bsum as i32 * (sc >> 4) as i32;
        }
        let dall = y.d * b.d.to_f32();
        let dmin = y.d * b.dmin.to_f32();
        let mut isum = 0i32;
        for (s, &sc) in b.scales.iter().enumerate() {
            let mut isuml = 0i32;
            for i in 16 * s..16 * s + 16 {
                isuml += y.qs[i] as i32 * b.quant(i) as i32;
            }
            isum += (sc & 0xF) as i32 * isuml;
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

impl QuantBlock for BlockQ2_K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = 256;
    type Act = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            b.dequantize_block(y);
        }
    }

    /// ggml's `quantize_row_q2_K_ref`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, b) in src.chunks_exact(256).zip(out.iter_mut()) {
            *b = Self::quantize_block(x);
        }
    }

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot_scalar(w, x)
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_kquants, avx512_kquants, neon_kquants, q2_k)
    }
}
