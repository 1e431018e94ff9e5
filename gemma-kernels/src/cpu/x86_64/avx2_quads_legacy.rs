//! One-token AVX2 kernels of Q4_0 and Q5_0 that take four weight blocks per step, with
//! the Q8_0 activations rearranged once per product into [`ActQuad`]s: the AVX2 twin of
//! `avx512_quads_legacy` for CPUs without AVX-512 (and without VNNI).
//!
//! A step loads the four blocks' 16-byte nibble arrays into two registers, one block
//! per 128-bit lane, and splits each into low nibbles (elements 0..16) and high nibbles
//! (elements 16..32) without a cross-lane shuffle. The weights stay unsigned (the
//! stored `value + offset`), so `maddubs` takes them as they are, with no sign trick;
//! the low and high products meet in 16 bits (at most 4 · 31 · 127, no saturation), one
//! `madd` with ones widens them, and the offset comes out as the per-lane sums the
//! activations carry. The four weight scales take one F16C conversion.
//!
//! The per-block kernel in `avx2_legacy` spends about half again as many instructions
//! per weight byte (sign trick, a conversion and a broadcast per block). Results agree
//! with the scalar twin to float rounding (the per-block integer sums are exact).

use super::act_quads::{packed_scales, ActQuad, QuadVecDot, QUAD};
use super::avx2_kquants::prefetch_far;
use super::avx2_legacy::hsum;
use crate::cpu::isa::Isa;
use crate::quant::{BlockQ4_0, BlockQ5_0};
use half::f16;
use std::arch::x86_64::*;

/// The Q4_0 kernel, if this CPU has AVX2, FMA and F16C.
pub(crate) fn q4_0() -> Option<QuadVecDot<BlockQ4_0>> {
    Isa::Avx2
        .is_supported()
        .then_some(|w: &[BlockQ4_0], x: &[ActQuad]| {
            // SAFETY: handed out only after AVX2, FMA and F16C were found.
            unsafe { q4_0_kernel(w, x) }
        })
}

/// The Q5_0 kernel, if this CPU has AVX2, FMA and F16C.
pub(crate) fn q5_0() -> Option<QuadVecDot<BlockQ5_0>> {
    Isa::Avx2
        .is_supported()
        .then_some(|w: &[BlockQ5_0], x: &[ActQuad]| {
            // SAFETY: handed out only after AVX2, FMA and F16C were found.
            unsafe { q5_0_kernel(w, x) }
        })
}

/// Unsigned quants of a quad (offset still in), in [`ActQuad`] order: `lo[h]` and
/// `hi[h]` hold blocks `2 h` and `2 h + 1`, one per 128-bit lane.
struct QuadQuants {
    lo: [__m256i; 2],
    hi: [__m256i; 2],
}

/// One quad step: `acc[h]` plus the products of weight blocks `4 i + 2 h`, `4 i + 2 h + 1`
/// with quad `i` of `x`, by lane.
#[inline(always)]
unsafe fn step<W>(
    acc: [__m256; 2],
    w: &[W],
    x: &[ActQuad],
    i: usize,
    d: &impl Fn(&W) -> f16,
    quants: &impl Fn(&[W]) -> QuadQuants,
) -> [__m256; 2] {
    // SAFETY (all intrinsics and unchecked indexing): the caller runs with AVX2, FMA and
    // F16C and passes `i < x.len()` with `4 i + 4 <= w.len()`; `ActQuad` is 64-byte
    // aligned, so its 32-byte halves are aligned.
    unsafe {
        let blocks = w.get_unchecked(QUAD * i..QUAD * i + QUAD);
        prefetch_far(blocks.get_unchecked(0), QUAD);
        let xq = x.get_unchecked(i);
        let q = quants(blocks);
        let wd = _mm_cvtph_ps(_mm_cvtsi64_si128(packed_scales(blocks, d)));
        let scales = _mm256_castps128_ps256(_mm_mul_ps(wd, _mm_load_ps(xq.d.as_ptr())));
        [
            half_step::<0>(acc[0], xq, q.lo[0], q.hi[0], scales),
            half_step::<1>(acc[1], xq, q.lo[1], q.hi[1], scales),
        ]
    }
}

/// `acc` plus the products of blocks `2 H` and `2 H + 1` of a quad (unsigned quants `lo`,
/// `hi`, one block per 128-bit lane) with their activations in `xq`; `scales` holds the
/// four blocks' combined scales in its low 128 bits.
#[inline(always)]
unsafe fn half_step<const H: usize>(
    acc: __m256,
    xq: &ActQuad,
    lo: __m256i,
    hi: __m256i,
    scales: __m256,
) -> __m256 {
    // SAFETY: the caller runs with AVX2 and FMA; `ActQuad` is 64-byte aligned, so its
    // 32-byte halves are aligned.
    unsafe {
        let x_lo = _mm256_load_si256(xq.lo.as_ptr().add(32 * H).cast());
        let x_hi = _mm256_load_si256(xq.hi.as_ptr().add(32 * H).cast());
        let offset = _mm256_load_si256(xq.offset_sums.as_ptr().add(8 * H).cast());
        let pairs = _mm256_add_epi16(
            _mm256_maddubs_epi16(lo, x_lo),
            _mm256_maddubs_epi16(hi, x_hi),
        );
        let sums = _mm256_add_epi32(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)), offset);
        let k = 2 * H as i32;
        let spread = _mm256_set_epi32(k + 1, k + 1, k + 1, k + 1, k, k, k, k);
        let s = _mm256_permutevar8x32_ps(scales, spread);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), s, acc)
    }
}

/// The loop of both formats over quads.
#[inline(always)]
unsafe fn quads<W>(
    w: &[W],
    x: &[ActQuad],
    d: impl Fn(&W) -> f16,
    quants: impl Fn(&[W]) -> QuadQuants,
) -> f32 {
    let n = x.len().min(w.len() / QUAD);
    // SAFETY (all intrinsics): the caller runs with AVX2, FMA and F16C; every step's `i`
    // is below `n`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 2];
        for i in 0..n {
            acc = step(acc, w, x, i, &d, &quants);
        }
        hsum(_mm256_add_ps(acc[0], acc[1]))
    }
}

/// The 16-byte nibble arrays of two blocks, one per 128-bit lane, split into low and
/// high nibbles.
#[inline(always)]
unsafe fn nibbles(a: &[u8; 16], b: &[u8; 16]) -> (__m256i, __m256i) {
    // SAFETY: two 16-byte arrays, unaligned loads; the caller runs with AVX2.
    unsafe {
        let v = _mm256_set_m128i(
            _mm_loadu_si128(b.as_ptr().cast()),
            _mm_loadu_si128(a.as_ptr().cast()),
        );
        let mask = _mm256_set1_epi8(0x0f);
        (
            _mm256_and_si256(v, mask),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), mask),
        )
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_kernel(w: &[BlockQ4_0], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above.
    unsafe {
        quads(
            w,
            x,
            |b| b.d,
            |b| {
                let (lo0, hi0) = nibbles(&b[0].qs, &b[1].qs);
                let (lo1, hi1) = nibbles(&b[2].qs, &b[3].qs);
                QuadQuants {
                    lo: [lo0, lo1],
                    hi: [hi0, hi1],
                }
            },
        )
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_kernel(w: &[BlockQ5_0], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above.
    unsafe {
        quads(
            w,
            x,
            |b| b.d,
            |b| {
                // Element j of block k is bit j of its qh. Both blocks' qh words go to
                // every 64-bit lane; byte j of 128-bit lane l of the low register then
                // takes bit j % 8 of byte 4 l + j / 8 (bits 0..16 of block k + l), the
                // high register bytes 4 l + 2 + j / 8 (bits 16..32).
                let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                let fifth = _mm256_set1_epi8(0x10);
                let lo_bytes = _mm256_set_epi64x(
                    0x0505_0505_0505_0505,
                    0x0404_0404_0404_0404,
                    0x0101_0101_0101_0101,
                    0,
                );
                let hi_bytes = _mm256_add_epi8(lo_bytes, _mm256_set1_epi8(2));
                let with_bits = |v: __m256i, both: __m256i, bytes: __m256i| {
                    let bit = _mm256_and_si256(_mm256_shuffle_epi8(both, bytes), select);
                    let clear = _mm256_cmpeq_epi8(bit, _mm256_setzero_si256());
                    _mm256_or_si256(v, _mm256_andnot_si256(clear, fifth))
                };
                let pair = |k: usize| {
                    let (lo, hi) = nibbles(&b[k].qs, &b[k + 1].qs);
                    let qh = |k: usize| u64::from(u32::from_le_bytes(b[k].qh));
                    let both = _mm256_set1_epi64x((qh(k) | qh(k + 1) << 32) as i64);
                    (with_bits(lo, both, lo_bytes), with_bits(hi, both, hi_bytes))
                };
                let ((lo0, hi0), (lo1, hi1)) = (pair(0), pair(2));
                QuadQuants {
                    lo: [lo0, lo1],
                    hi: [hi0, hi1],
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::act_quads::tests::check_q8_0_quad_kernel;

    #[test]
    fn quad_kernels_match_scalar() {
        let (Some(q4), Some(q5)) = (q4_0(), q5_0()) else {
            eprintln!("no AVX2 on this CPU: nothing to check");
            return;
        };
        check_q8_0_quad_kernel(q4, 8);
        check_q8_0_quad_kernel(q5, 16);
    }
}
