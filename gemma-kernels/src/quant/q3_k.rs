//! Q3_K: 3-bit symmetric weights in 256-element super-blocks of sixteen 16-element
//! sub-blocks with 6-bit signed scales.

use super::common::{f16_from, simd_kernel, GROUP_MAX_EPS};
use super::q4_k::nearest_int;
use super::{BlockQ8_K, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use bytemuck::{Pod, Zeroable};
use gemma_gguf::GgmlType;
use half::f16;

/// Q3_K super-block: 3.4375 bits per weight, 256 weights in 16 sub-blocks of 16.
/// Layout: 32 bytes of high bits (bit `m` of `hmask[l]` for weight `32m + l`), 64 bytes
/// of 2-bit low parts (as Q2_K), 12 bytes of 6-bit scales (stored `+32`), `d` (f16).
/// Weight = `d * (scale[s] - 32) * (q - 4)`, `q` in 0..=7 (high bit set means `+4`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ3_K {
    /// High bit of each quant.
    pub hmask: [u8; 32],
    /// Low 2 bits of each quant.
    pub qs: [u8; 64],
    /// Sixteen 6-bit scales: low nibbles in bytes 0..8, high bit pairs in bytes 8..12.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3_K>() == 110);

/// ggml's `make_q3_quants(n, nmax, x, L, true)`: a symmetric fit weighted by `x²` with a
/// few rounds of coordinate descent on the quants. Writes `l` (in `0..2*nmax`, or all
/// zero for an all-zero group) and returns the scale, in ggml's float order.
fn make_q3_quants(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
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
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let old = *li as f32;
            let mut slx = sumlx - w * v * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

impl BlockQ3_K {
    /// The sixteen sub-block scales as stored (0..=63, subtract 32 for the signed value),
    /// unpacked with ggml's `kmask` shuffle.
    #[inline]
    pub(crate) fn raw_scales(&self) -> [u8; 16] {
        const KMASK1: u32 = 0x0303_0303;
        const KMASK2: u32 = 0x0f0f_0f0f;
        let s = &self.scales;
        let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
        let tmp = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
        let words = [
            (a0 & KMASK2) | ((tmp & KMASK1) << 4),
            (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
            ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
            ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
        ];
        let mut out = [0u8; 16];
        for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Quant `i` (0..256) of the super-block, in -4..=3.
    #[inline]
    fn quant(&self, i: usize) -> i32 {
        let (n, g, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = ((self.qs[32 * n + l] >> (2 * g)) & 3) as i32;
        let high = (self.hmask[l] >> (4 * n + g)) & 1;
        low - if high != 0 { 0 } else { 4 }
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d_all = self.d.to_f32();
        let scales = self.raw_scales();
        for (i, v) in y.iter_mut().enumerate() {
            let dl = d_all * (scales[i / 16] as i32 - 32) as f32;
            *v = dl * self.quant(i) as f32;
        }
    }

    /// ggml's `quantize_row_q3_K_ref` for one super-block.
    fn quantize_block(x: &[f32]) -> Self {
        let mut l = [0i8; 256];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for (j, scale) in scales.iter_mut().enumerate() {
            *scale = make_q3_quants(&x[16 * j..16 * j + 16], 4, &mut l[16 * j..16 * j + 16]);
            if scale.abs() > amax {
                amax = scale.abs();
                max_scale = *scale;
            }
        }
        let mut b = Self::zeroed();
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &scale) in scales.iter().enumerate() {
                // ggml stores the rounded value in an int8_t before clamping.
                let q = (nearest_int(iscale * scale) as i8 as i32).clamp(-32, 31) + 32;
                if j < 8 {
                    b.scales[j] = (q & 0xF) as u8;
                } else {
                    b.scales[j - 8] |= ((q & 0xF) << 4) as u8;
                }
                b.scales[j % 4 + 8] |= ((q >> 4) << (2 * (j / 4))) as u8;
            }
            b.d = f16_from(1.0 / iscale);
        }
        let stored = b.raw_scales();
        for j in 0..16 {
            let d = b.d.to_f32() * (stored[j] as i8 - 32) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                l[16 * j + ii] = (q + 4) as i8;
            }
        }
        for (j, q) in l.iter_mut().enumerate() {
            if *q > 3 {
                b.hmask[j % 32] |= 1 << (j / 32);
                *q -= 4;
            }
        }
        for n in 0..2 {
            for i in 0..32 {
                let q = |g: usize| l[128 * n + 32 * g + i] as u8;
                b.qs[32 * n + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
        b
    }
}

/// `ggml_vec_dot_q3_K_q8_K_generic`: integer products per sub-block, scaled per
/// super-block into eight float lanes, summed in ggml's order.
fn vec_dot_scalar(w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (b, y) in w.iter().zip(x) {
        let scales = b.raw_scales();
        let mut aux32 = [0i32; 8];
        for i in 0..256 {
            let scale = scales[i / 16] as i32 - 32;
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

impl QuantBlock for BlockQ3_K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = 256;
    type Act = BlockQ8_K;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            b.dequantize_block(y);
        }
    }

    /// ggml's `quantize_row_q3_K_ref`.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, b) in src.chunks_exact(256).zip(out.iter_mut()) {
            *b = Self::quantize_block(x);
        }
    }

    fn vec_dot(w: &[Self], x: &[BlockQ8_K]) -> f32 {
        vec_dot_scalar(w, x)
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_kquants, avx512_kquants, neon_kquants, q3_k)
    }
}
