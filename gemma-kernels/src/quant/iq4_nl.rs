//! IQ4_NL: 4-bit non-linear blocks of 32, and the quantizer shared with IQ4_XS.

use super::common::{best_index_int8, f16_from, nearest_int, simd_kernel};
use super::common::{GROUP_MAX_EPS, KVALUES_IQ4NL};
use super::{BlockQ8_0, QuantBlock, VecDot};
use crate::cpu::isa::Isa;
use gemma_gguf::GgmlType;
use half::f16;

/// IQ4_NL, 4.5 bits per weight: 32 weights as 4-bit indices into the fixed non-linear
/// table `KVALUES_IQ4NL` (-127..113) with one `f16` scale; nibbles laid out as in Q4_0
/// (`qs[j]`: element `j` low, `j + 16` high). `x = d * kvalues[q]` (ggml's
/// `block_iq4_nl`, 18 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ4_NL {
    /// Scale.
    pub d: f16,
    /// Table indices: low nibble = elements 0..16, high nibble = elements 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4_NL>() == 18);

/// Number of scale refinements tried on each side (ggml's `ntry = 7` used by
/// `quantize_iq4_nl` / `quantize_iq4_xs`).
const NTRY: i32 = 7;

/// The outputs of [`quantize_iq4_impl`] for one super-block: the `f16` scale, the
/// 6-bit block scales (IQ4_XS only) and the table index of every element.
pub(crate) struct Iq4Quants<const N: usize> {
    /// Super-block scale.
    pub d: f16,
    /// `l + 32` for each block of 32 (meaningful only when `N > 32`).
    pub block_scales: [u8; 8],
    /// Index into `KVALUES_IQ4NL` per element.
    pub indices: [u8; N],
}

/// The scale of one block of 32 that minimises the weighted squared error, found the way
/// ggml's `quantize_row_iq4_nl_impl` does: a first guess from the largest value, then
/// `2 * NTRY + 1` alternatives; weights are `x²` (no importance matrix).
fn best_block_scale(xb: &[f32]) -> f32 {
    let values = &KVALUES_IQ4NL;
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let sums = |id: f32| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for &x in xb {
            let q = values[best_index_int8(values, id * x)] as f32;
            let w = x * x;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / values[0] as f32;
    let (sumqx, sumq2) = sums(1.0 / d);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + values[0] as i32) as f32 / max;
        let (sumqx, sumq2) = sums(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// ggml's `quantize_row_iq4_nl_impl` without importance matrix, for one super-block of
/// `N` elements (32 for IQ4_NL, 256 for IQ4_XS) in blocks of 32.
pub(crate) fn quantize_iq4_impl<const N: usize>(x: &[f32]) -> Iq4Quants<N> {
    let values = &KVALUES_IQ4NL;
    let mut out = Iq4Quants {
        d: f16::ZERO,
        block_scales: [0; 8],
        indices: [0; N],
    };
    let mut scales = [0.0f32; 8];
    let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
    for (scale, xb) in scales.iter_mut().zip(x.chunks_exact(32)) {
        *scale = best_block_scale(xb);
        if scale.abs() > amax_scale {
            amax_scale = scale.abs();
            max_scale = *scale;
        }
    }
    if N > 32 {
        let d = -max_scale / 32.0;
        out.d = f16_from(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let blocks = x.chunks_exact(32).zip(out.indices.chunks_exact_mut(32));
        for (ib, (xb, lb)) in blocks.enumerate() {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for (q, &v) in lb.iter_mut().zip(xb) {
                *q = best_index_int8(values, idl * v) as u8;
            }
            out.block_scales[ib] = (l + 32) as u8;
        }
    } else {
        out.d = f16_from(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for (q, &v) in out.indices.iter_mut().zip(x) {
            *q = best_index_int8(values, id * v) as u8;
        }
    }
    out
}

/// Packs 32 indices per block into nibbles: `qs[j] = L[j] | L[j + 16] << 4`.
pub(crate) fn pack_nibbles(indices: &[u8], qs: &mut [u8]) {
    for (l, q) in indices.chunks_exact(32).zip(qs.chunks_exact_mut(16)) {
        for j in 0..16 {
            q[j] = l[j] | (l[j + 16] << 4);
        }
    }
}

impl QuantBlock for BlockIQ4_NL {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const ELEMS: usize = 32;
    type Act = BlockQ8_0;

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (j, &q) in b.qs.iter().enumerate() {
                y[j] = d * KVALUES_IQ4NL[(q & 0x0f) as usize] as f32;
                y[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }

    /// ggml's `quantize_iq4_nl` without importance matrix (what `ggml_quantize_chunk`
    /// calls): a scale search per block, then nearest table levels.
    fn quantize(src: &[f32], out: &mut [Self]) {
        for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
            let q = quantize_iq4_impl::<32>(x);
            y.d = q.d;
            pack_nibbles(&q.indices, &mut y.qs);
        }
    }

    fn vec_dot(w: &[Self], x: &[Self::Act]) -> f32 {
        let mut sum = 0.0f32;
        for (a, b) in w.iter().zip(x) {
            let d = b.d.to_f32() * a.d.to_f32();
            let mut sumi = 0i32;
            for j in 0..16 {
                sumi += b.qs[j] as i32 * KVALUES_IQ4NL[(a.qs[j] & 0x0f) as usize] as i32;
                sumi += b.qs[j + 16] as i32 * KVALUES_IQ4NL[(a.qs[j] >> 4) as usize] as i32;
            }
            sum += d * sumi as f32;
        }
        sum
    }

    fn vec_dot_for(isa: Isa) -> Option<VecDot<Self>> {
        simd_kernel!(isa, avx2_legacy, avx512_legacy, neon_legacy, iq4_nl)
    }
}
