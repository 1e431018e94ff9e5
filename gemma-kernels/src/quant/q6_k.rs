//! Q6_K: 6-bit symmetric weights in 256-element super-blocks of sixteen 16-element
//! sub-blocks with 8-bit signed scales.

use super::common::{f16_from, simd_kernel, GROUP_MAX_EPS};
use super::q4_k::nearest_int;
use super::{BlockQ8_K, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use bytemuck::{Pod, Zeroable};
use gemma_gguf::GgmlType;
use half::f16;

/// Q6_K super-block: 6.5625 bits per weight, 256 weights in 16 sub-blocks of 16.
/// Layout: 128 bytes of low nibbles, 64 bytes of high bit pairs, 16 signed 8-bit scales,
/// `d` (f16). In each 128-weight half `n`, weight `32g + l` takes nibble `g / 2` of
/// `ql[64n + 32(g % 2) + l]` and bits `2g..2g+2` of `qh[32n + l]`. Weight = `d * scale[s] * (q - 32)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6_K {
    /// Low 4 bits of the quants.
    pub ql: [u8; 128],
    /// High 2 bits of the quants.
    pub qh: [u8; 64],
    /// Signed scale of each 16-weight sub-block.
    pub scales: [i8; 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);

/// ggml's `make_qx_quants(n, nmax, x, L, 1, NULL)`: a symmetric fit `x ≈ scale * (L - nmax)`
/// weighted by `x²`, searching 19 inverse scales around `-nmax / max`. Writes `l` (in
/// `0..2*nmax`, or all zero for an all-zero group) and returns the scale. Float
/// operations follow ggml's order exactly.
fn make_qx_quants(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let fit = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = (quant(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = fit(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

impl BlockQ6_K {
    /// Quant `i` (0..256) of the super-block, in -32..=31.
    #[inline]
    fn quant(&self, i: usize) -> i32 {
        let (n, g, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = (self.ql[64 * n + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0xF;
        let high = (self.qh[32 * n + l] >> (2 * g)) & 3;
        (low | (high << 4)) as i32 - 32
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, v) in y.iter_mut().enumerate() {
            *v = d * self.scales[i / 16] as f32 * self.quant(i) as f32;
        }
    }

    /// ggml's `quantize_row_q6_K_ref` for one super-block.
    fn quantize_block(x: &[f32]) -> Self {
        let mut l = [0i8; 256];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for (ib, scale) in scales.iter_mut().enumerate() {
            *scale = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16]);
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = *scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return Self::zeroed();
        }
        let iscale = -128.0 / max_scale;
        let mut b = Self::zeroed();
        b.d = f16_from(1.0 / iscale);
        for (s, &scale) in b.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * scale).min(127) as i8;
        }
        for j in 0..16 {
            let d = b.d.to_f32() * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        for n in 0..2 {
            let (ql, qh) = (
                &mut b.ql[64 * n..64 * n + 64],
                &mut b.qh[32 * n..32 * n + 32],
            );
            let q = |k: usize| l[128 * n + k] as u8;
            for i in 0..32 {
                ql[i] = (q(i) & 0xF) | ((q(i + 64) & 0xF) << 4);
                ql[i + 32] = (q(i + 32) & 0xF) | ((q(i + 96) & 0xF) << 4);
                qh[i] = (q(i) >> 4)
                    | ((q(i + 32) >> 4) << 2)
                    | ((q(i + 64) >> 4) << 4)
                    | ((q(i + 96) >> 4) << 6);
            }
        }
        b
    }
}

/// `ggml_vec_dot_q6_K_q8_K_generic`: integer products per sub-block, scaled per
/// super-block into eight float lanes, summed in ggml's order.
fn vec_dot_scalar(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (b, y) in w.iter().zip(x) {
        let mut aux32 = [0i32; 8];
        for i in 0..256 {
            let scale = b.scales[i / 16] as i32;
            aux32[i % 8] += scale * (y.qs[i] as i32 * b.quant(i));
        }
        let d = b.d.to_f32() * y.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

impl QuantBlock for BlockQ6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = 256;
    type Act = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            b.dequantize_block(y);
        }
    }

    /// ggml's `quantize_row_q6_K_ref`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, b) in src.chunks_exact(256).zip(out.iter_mut()) {
            *b = Self::quantize_block(x);
        }
    }

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot_scalar(w, x)
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_kquants, avx512_kquants, neon_kquants, q6_k)
    }
}
