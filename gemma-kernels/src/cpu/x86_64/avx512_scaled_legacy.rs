//! One-token AVX-512 VNNI kernels of Q4_0 and Q5_0 with Q8_0 activations whose block
//! scales were widened to f32 once for the whole matrix-vector product.
//!
//! `avx512_legacy`'s kernels convert four F16 scales per block pair (two of them the
//! activations', the same for every row); with the activation scales given as f32 a
//! pair needs one two-lane conversion of the weight scales and one product, which frees
//! enough issue slots for these kernels to keep up with memory on two cores. The integer
//! sums are those of `avx512_legacy` (`vpdpbusd`, offset subtracted), scaled by
//! `[d_w·d_x ×8, ×8]` per pair; results agree with the scalar twin to float rounding.

use super::avx2_kquants::prefetch_far;
use crate::cpu::isa::{has_avx512_vnni, Isa};
use crate::quant::{BlockQ4_0, BlockQ5_0, BlockQ8_0};
use half::f16;
use std::arch::x86_64::*;

/// One weight row times one Q8_0 activation row, given every activation block's scale
/// as f32 (`scales[i] = x[i].d`).
pub(crate) type ScaledVecDot<W> = fn(&[W], &[BlockQ8_0], &[f32]) -> f32;

/// The Q4_0 kernel, if this CPU has AVX-512 F/BW/VL and VNNI.
pub(crate) fn q4_0() -> Option<ScaledVecDot<BlockQ4_0>> {
    available().then_some(|w: &[BlockQ4_0], x: &[BlockQ8_0], s: &[f32]| {
        // SAFETY: handed out only after AVX-512F/BW/VL, VNNI, FMA and F16C were found.
        unsafe { q4_0_kernel(w, x, s) }
    })
}

/// The Q5_0 kernel, if this CPU has AVX-512 F/BW/VL and VNNI.
pub(crate) fn q5_0() -> Option<ScaledVecDot<BlockQ5_0>> {
    available().then_some(|w: &[BlockQ5_0], x: &[BlockQ8_0], s: &[f32]| {
        // SAFETY: handed out only after AVX-512F/BW/VL, VNNI, FMA and F16C were found.
        unsafe { q5_0_kernel(w, x, s) }
    })
}

fn available() -> bool {
    Isa::Avx512.is_supported() && has_avx512_vnni()
}

/// The 64 nibbles of two blocks' 16-byte arrays in element order: block `a`'s low
/// nibbles, its high nibbles, then block `b`'s.
#[inline(always)]
unsafe fn nibble_pair(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    // SAFETY: two 16-byte arrays, unaligned loads; the caller runs with AVX-512F/BW.
    unsafe {
        let ab = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(a.as_ptr().cast())),
            _mm_loadu_si128(b.as_ptr().cast()),
            1,
        );
        let wide = _mm512_inserti64x4(_mm512_castsi256_si512(ab), _mm256_srli_epi16(ab, 4), 1);
        let ordered = _mm512_shuffle_i64x2(wide, wide, 0b11_01_10_00);
        _mm512_and_si512(ordered, _mm512_set1_epi8(0x0f))
    }
}

/// One block pair `(i, i + 1)` (or the last block `i` alone, paired with a zero scale):
/// `acc` plus its sixteen integer sums scaled by `[d_w·d_x ×8, ×8]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pair<W>(
    acc: __m512,
    w: &[W],
    x: &[BlockQ8_0],
    scales: &[f32],
    i: usize,
    last: bool,
    off: __m512i,
    d: &impl Fn(&W) -> f16,
    quants: &impl Fn(&W, &W) -> __m512i,
) -> __m512 {
    // SAFETY (all intrinsics and unchecked indexing): the caller runs with AVX-512F/BW/VL,
    // VNNI, FMA and F16C and passes `i + 1` (or `i` when `last`) below every length.
    unsafe {
        let j = if last { i } else { i + 1 };
        let (a, b) = (w.get_unchecked(i), w.get_unchecked(j));
        let (xa, xb) = (x.get_unchecked(i), x.get_unchecked(j));
        let (bits, xd) = if last {
            (
                i32::from(d(a).to_bits()),
                _mm_load_ss(scales.as_ptr().add(i)),
            )
        } else {
            (
                i32::from(d(a).to_bits()) | i32::from(d(b).to_bits()) << 16,
                _mm_castpd_ps(_mm_load_sd(scales.as_ptr().add(i).cast())),
            )
        };
        let wd = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
        let spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let s = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_mul_ps(wd, xd)));
        let y = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(xa.qs.as_ptr().cast())),
            _mm256_loadu_si256(xb.qs.as_ptr().cast()),
            1,
        );
        let sums = _mm512_sub_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), quants(a, b), y),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, y),
        );
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), s, acc)
    }
}

/// The loop of both formats over block pairs, two pairs per step into two
/// accumulators: `quants(a, b)` gives the unsigned quants (offset still in) of weight
/// blocks `a` and `b`, `d` a block's scale, `offset` the weight offset.
#[inline(always)]
unsafe fn pairs<W>(
    w: &[W],
    x: &[BlockQ8_0],
    scales: &[f32],
    offset: i8,
    d: impl Fn(&W) -> f16,
    quants: impl Fn(&W, &W) -> __m512i,
) -> f32 {
    let n = w.len().min(x.len()).min(scales.len());
    // SAFETY (all intrinsics): the caller runs with AVX-512F/BW/VL, VNNI, FMA and F16C;
    // every pair passed to `pair` lies below `n`.
    unsafe {
        let off = _mm512_set1_epi8(offset);
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 4 <= n {
            prefetch_far(w.get_unchecked(i), 4);
            acc0 = pair(acc0, w, x, scales, i, false, off, &d, &quants);
            acc1 = pair(acc1, w, x, scales, i + 2, false, off, &d, &quants);
            i += 4;
        }
        if i + 2 <= n {
            acc0 = pair(acc0, w, x, scales, i, false, off, &d, &quants);
            i += 2;
        }
        if i < n {
            acc1 = pair(acc1, w, x, scales, i, true, off, &d, &quants);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_kernel(w: &[BlockQ4_0], x: &[BlockQ8_0], scales: &[f32]) -> f32 {
    // SAFETY: features enabled above.
    unsafe { pairs(w, x, scales, 8, |b| b.d, |a, b| nibble_pair(&a.qs, &b.qs)) }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_0_kernel(w: &[BlockQ5_0], x: &[BlockQ8_0], scales: &[f32]) -> f32 {
    // SAFETY: features enabled above.
    unsafe {
        pairs(
            w,
            x,
            scales,
            16,
            |b| b.d,
            |a, b| {
                let bits =
                    u32::from_le_bytes(a.qh) as u64 | (u32::from_le_bytes(b.qh) as u64) << 32;
                _mm512_or_si512(
                    nibble_pair(&a.qs, &b.qs),
                    _mm512_maskz_set1_epi8(bits, 0x10),
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::values;
    use crate::quant::QuantBlock;

    fn check<B: QuantBlock<Act = BlockQ8_0>>(kernel: ScaledVecDot<B>) {
        for blocks in (1..=17).chain([31, 32, 33, 120, 121, 480]) {
            let mut w = vec![<B as bytemuck::Zeroable>::zeroed(); blocks];
            B::quantize(&values(blocks * 32, blocks as u32), &mut w);
            let mut x = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); blocks];
            BlockQ8_0::quantize_act(&values(blocks * 32, 7 + blocks as u32), &mut x);
            let scales: Vec<f32> = x.iter().map(|b| b.d.to_f32()).collect();
            let want = B::vec_dot(&w, &x);
            let got = kernel(&w, &x, &scales);
            let tol = 1e-5 * (want.abs() + 1.0);
            assert!(
                (got - want).abs() <= tol,
                "{:?} {blocks} blocks: {got} vs {want}",
                B::TYPE
            );
        }
    }

    #[test]
    fn scaled_kernels_match_scalar() {
        let (Some(q4), Some(q5)) = (q4_0(), q5_0()) else {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to check");
            return;
        };
        check(q4);
        check(q5);
    }
}
