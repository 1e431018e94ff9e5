//! Q8_0 (or Q8_1) activations rearranged once per one-token product for the quad kernels
//! (`avx512_quads_legacy`, `avx2_quads_legacy`), which take four weight blocks per step.
//!
//! A block's 16 nibble bytes hold its elements `0..16` (low nibbles) and `16..32` (high
//! nibbles), so the activations go in that order: the low halves of four blocks
//! together, then the high halves. A SIMD register of weight bytes, one block per
//! 128-bit lane, then meets its activations without a cross-lane shuffle.

use crate::quant::{BlockQ8_0, BlockQ8_1};

/// Blocks taken per step.
pub(crate) const QUAD: usize = 4;

/// Four Q8_0 activation blocks `k = 0..4` arranged for the quad kernels.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct ActQuad {
    /// Quants `0..16` of block `k` at `16 k ..`.
    pub(super) lo: [i8; 64],
    /// Quants `16..32` of block `k` at `16 k ..`.
    pub(super) hi: [i8; 64],
    /// Minus the weight offset times the sum of the activations in bytes `4 l .. 4 l + 4`
    /// of `lo` and of `hi` (the bytes an integer dot product sums into 32-bit lane `l`).
    pub(super) offset_sums: [i32; 16],
    /// The scales of blocks `0..4`.
    pub(super) d: [f32; QUAD],
    /// Q8_1 activations: `d · Σ quants` of blocks `0..4` (for the weights' minimums).
    pub(super) s: [f32; QUAD],
}

/// Rearranges the first whole quads of `x` (`x.len() / 4` of them) into `quads` for
/// weights whose stored quants are `value + offset`.
pub(crate) fn arrange_quads(x: &[BlockQ8_0], offset: i32, quads: &mut Vec<ActQuad>) {
    quads.clear();
    quads.extend(x.chunks_exact(QUAD).map(|four| {
        arrange(
            offset,
            std::array::from_fn(|k| (&four[k].qs, four[k].d.to_f32(), 0.0)),
        )
    }));
}

/// [`arrange_quads`] for Q8_1 activations (weights with a minimum, no offset): their sums
/// `s` come along.
pub(crate) fn arrange_quads_q8_1(x: &[BlockQ8_1], quads: &mut Vec<ActQuad>) {
    quads.clear();
    quads.extend(x.chunks_exact(QUAD).map(|four| {
        arrange(
            0,
            std::array::from_fn(|k| (&four[k].qs, four[k].d.to_f32(), four[k].s.to_f32())),
        )
    }));
}

/// One quad from four blocks' quants, scale and sum.
fn arrange(offset: i32, blocks: [(&[i8; 32], f32, f32); QUAD]) -> ActQuad {
    let mut quad = ActQuad {
        lo: [0; 64],
        hi: [0; 64],
        offset_sums: [0; 16],
        d: [0.0; QUAD],
        s: [0.0; QUAD],
    };
    for (k, (qs, d, s)) in blocks.into_iter().enumerate() {
        quad.lo[16 * k..16 * k + 16].copy_from_slice(&qs[..16]);
        quad.hi[16 * k..16 * k + 16].copy_from_slice(&qs[16..]);
        quad.d[k] = d;
        quad.s[k] = s;
    }
    for (lane, sum) in quad.offset_sums.iter_mut().enumerate() {
        let bytes = quad.lo[4 * lane..4 * lane + 4]
            .iter()
            .chain(&quad.hi[4 * lane..4 * lane + 4]);
        *sum = -offset * bytes.map(|&q| i32::from(q)).sum::<i32>();
    }
    quad
}

/// One weight row of `4 · quads.len()` blocks (or more: the rest is not read) times the
/// activations [`arrange_quads`] made.
pub(crate) type QuadVecDot<W> = fn(&[W], &[ActQuad]) -> f32;

/// The f16 bits of four blocks' scales `d(block)` packed into one 64-bit word, block
/// `k` in bits `16 k ..`, for one F16C conversion.
///
/// # Safety
/// `blocks` must hold at least four blocks.
#[inline(always)]
pub(super) unsafe fn packed_scales<W>(blocks: &[W], d: impl Fn(&W) -> half::f16) -> i64 {
    // SAFETY: k < 4 <= blocks.len() (the caller's contract).
    let bits = |k: usize| u64::from(d(unsafe { blocks.get_unchecked(k) }).to_bits()) << (16 * k);
    (bits(0) | bits(1) | bits(2) | bits(3)) as i64
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::values;
    use crate::quant::QuantBlock;

    /// Checks a quad kernel against the format's scalar `vec_dot` for 1-9, 31, 32, 64 and
    /// 120 quads of random blocks, the activations arranged by `arrange`.
    pub(crate) fn check_quad_kernel<B: QuantBlock>(
        kernel: QuadVecDot<B>,
        arrange: impl Fn(&[B::Act], &mut Vec<ActQuad>),
    ) {
        for quads in (1..=9).chain([31, 32, 64, 120]) {
            let blocks = QUAD * quads;
            let mut w = vec![<B as bytemuck::Zeroable>::zeroed(); blocks];
            B::quantize(&values(blocks * 32, blocks as u32), &mut w);
            let mut x = vec![<B::Act as bytemuck::Zeroable>::zeroed(); blocks];
            B::Act::quantize_act(&values(blocks * 32, 7 + blocks as u32), &mut x);
            let mut arranged = Vec::new();
            arrange(&x, &mut arranged);
            let want = B::vec_dot(&w, &x);
            let got = kernel(&w, &arranged);
            let tol = 1e-5 * (want.abs() + 1.0);
            assert!(
                (got - want).abs() <= tol,
                "{:?} {blocks} blocks: {got} vs {want}",
                B::TYPE
            );
        }
    }

    /// [`check_quad_kernel`] for a Q8_0-activation format whose quants are stored plus
    /// `offset`.
    pub(crate) fn check_q8_0_quad_kernel<B: QuantBlock<Act = BlockQ8_0>>(
        kernel: QuadVecDot<B>,
        offset: i32,
    ) {
        check_quad_kernel(kernel, |x, quads| arrange_quads(x, offset, quads));
    }
}
