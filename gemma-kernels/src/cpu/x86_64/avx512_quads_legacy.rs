//! One-token AVX-512 VNNI kernels of Q4_0, Q5_0, IQ4_NL and Q8_0 (and, with Q8_1
//! activations, Q4_1 and Q5_1) that take four weight blocks per step, with the
//! activations rearranged once per product into [`ActQuad`]s. Q4_1 and Q5_1 add their
//! minimums times the activation sums, four blocks per multiply-add. IQ4_NL's nibbles
//! index a table of its levels plus 128, unsigned bytes for `vpdpbusd` with an offset of
//! 128; Q8_0's signed quants become unsigned by flipping their top bit (plus 128), so they
//! need no sign trick either.
//!
//! A step loads the four blocks' 16-byte nibble arrays into one register, one per
//! 128-bit lane, and splits it into the low nibbles (elements 0..16 of each block) and
//! the high nibbles (elements 16..32) without any cross-lane shuffle: the activations
//! were put in that order beforehand, so two `vpdpbusd` leave each block's integer sum
//! in its own four lanes. The weight offset (8 or 16 times the activations' sum) is the
//! accumulator the sums start from, also computed once per product. The four weight
//! scales are converted with one instruction and multiplied with the activation scales
//! before a single spread to the sixteen lanes.
//!
//! This is about half the instructions per weight byte of taking two blocks per step
//! (each pair needing three cross-lane shuffles, a second `vpdpbusd` for the offset and
//! its own scale conversion); on cores that split 512-bit operations in two (Zen 4) the
//! two-block kernel could not keep up with memory. Results agree with the scalar twin to
//! float rounding (the per-block integer sums are exact).

use super::act_quads::{packed_scales, ActQuad, QuadVecDot, QUAD};
use super::avx2_kquants::prefetch_far;
use crate::cpu::isa::{has_avx512_vnni, Isa};
use crate::quant::common::KVALUES_IQ4NL_PLUS_128;
use crate::quant::{BlockIQ4_NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use half::f16;
use std::arch::x86_64::*;

/// Defines `$name()`: the kernel `$kernel` of `$block` (its note in `$doc`), if this CPU
/// has AVX-512 F/BW/VL and VNNI.
macro_rules! constructors {
    ($($name:ident: $block:ty => $kernel:ident, $doc:literal;)*) => {$(
        #[doc = concat!("The ", stringify!($block), " kernel", $doc, ", if this CPU has AVX-512 F/BW/VL and VNNI.")]
        pub(crate) fn $name() -> Option<QuadVecDot<$block>> {
            available().then_some(|w: &[$block], x: &[ActQuad]| {
                // SAFETY: handed out only after AVX-512F/BW/VL, VNNI, FMA and F16C were
                // found.
                unsafe { $kernel(w, x) }
            })
        }
    )*};
}

constructors! {
    q4_0: BlockQ4_0 => q4_0_kernel, "";
    q5_0: BlockQ5_0 => q5_0_kernel, "";
    iq4_nl: BlockIQ4_NL => iq4_nl_kernel, "";
    q8_0: BlockQ8_0 => q8_0_kernel, "";
    q4_1: BlockQ4_1 => q4_1_kernel, " (activations from `arrange_quads_q8_1`)";
    q5_1: BlockQ5_1 => q5_1_kernel, " (activations from `arrange_quads_q8_1`)";
}

fn available() -> bool {
    Isa::Avx512.is_supported() && has_avx512_vnni()
}

/// The 16-byte nibble arrays of four blocks, block `k` in 128-bit lane `k`.
#[inline(always)]
unsafe fn four_arrays(qs: [&[u8; 16]; QUAD]) -> __m512i {
    // SAFETY: four 16-byte arrays, unaligned loads; the caller runs with AVX-512F.
    unsafe {
        let load = |k: usize| _mm_loadu_si128(qs[k].as_ptr().cast());
        let v = _mm512_castsi128_si512(load(0));
        let v = _mm512_inserti32x4(v, load(1), 1);
        let v = _mm512_inserti32x4(v, load(2), 2);
        _mm512_inserti32x4(v, load(3), 3)
    }
}

/// One quad step: `acc` plus the products of weight blocks `4 i .. 4 i + 4` with quad
/// `i` of `x`, by lane.
#[inline(always)]
unsafe fn step<W>(
    acc: __m512,
    w: &[W],
    x: &[ActQuad],
    i: usize,
    d: &impl Fn(&W) -> f16,
    quants: &impl Fn(&[W]) -> (__m512i, __m512i),
) -> __m512 {
    // SAFETY (all intrinsics and unchecked indexing): the caller runs with AVX-512F/BW/VL,
    // VNNI, FMA and F16C and passes `i < x.len()` with `4 i + 4 <= w.len()`.
    unsafe {
        let blocks = w.get_unchecked(QUAD * i..QUAD * i + QUAD);
        prefetch_far(blocks.get_unchecked(0), QUAD);
        let xq = x.get_unchecked(i);
        let (lo, hi) = quants(blocks);
        let sums = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(
                _mm512_load_si512(xq.offset_sums.as_ptr().cast()),
                lo,
                _mm512_load_si512(xq.lo.as_ptr().cast()),
            ),
            hi,
            _mm512_load_si512(xq.hi.as_ptr().cast()),
        );
        let wd = _mm_cvtph_ps(_mm_cvtsi64_si128(packed_scales(blocks, d)));
        let scales = _mm_mul_ps(wd, _mm_load_ps(xq.d.as_ptr()));
        let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let s = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(scales));
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), s, acc)
    }
}

/// The loop of both formats over quads: `quants(blocks)` gives the unsigned low and high
/// quants (offset still in) of four weight blocks in [`ActQuad`] order.
#[inline(always)]
unsafe fn quads<W>(
    w: &[W],
    x: &[ActQuad],
    d: impl Fn(&W) -> f16,
    quants: impl Fn(&[W]) -> (__m512i, __m512i),
) -> f32 {
    let n = x.len().min(w.len() / QUAD);
    // SAFETY (all intrinsics): the caller runs with AVX-512F/BW/VL, VNNI, FMA and F16C;
    // every step's `i` is below `n`.
    unsafe {
        // Two accumulators, so that consecutive steps do not wait for each other.
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 2 <= n {
            acc0 = step(acc0, w, x, i, &d, &quants);
            acc1 = step(acc1, w, x, i + 1, &d, &quants);
            i += 2;
        }
        if i < n {
            acc0 = step(acc0, w, x, i, &d, &quants);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }
}

/// [`quads`] plus the weights' minimums `m(block)` times the activation sums, four
/// blocks per multiply-add into their own accumulator.
#[inline(always)]
unsafe fn quads_with_mins<W>(
    w: &[W],
    x: &[ActQuad],
    d: impl Fn(&W) -> f16,
    m: impl Fn(&W) -> f16,
    quants: impl Fn(&[W]) -> (__m512i, __m512i),
) -> f32 {
    let n = x.len().min(w.len() / QUAD);
    // SAFETY (all intrinsics and unchecked indexing): the caller runs with AVX-512F/BW/VL,
    // VNNI, FMA and F16C; every step's `i` is below `n`, so `4 i + 4 <= w.len()`.
    unsafe {
        let min_step = |mins: __m128, i: usize| {
            let blocks = w.get_unchecked(QUAD * i..QUAD * i + QUAD);
            let wm = _mm_cvtph_ps(_mm_cvtsi64_si128(packed_scales(blocks, &m)));
            _mm_fmadd_ps(wm, _mm_load_ps(x.get_unchecked(i).s.as_ptr()), mins)
        };
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut mins = _mm_setzero_ps();
        let mut i = 0;
        while i + 2 <= n {
            acc0 = step(acc0, w, x, i, &d, &quants);
            acc1 = step(acc1, w, x, i + 1, &d, &quants);
            mins = min_step(min_step(mins, i), i + 1);
            i += 2;
        }
        if i < n {
            acc0 = step(acc0, w, x, i, &d, &quants);
            mins = min_step(mins, i);
        }
        let mins = _mm_add_ps(mins, _mm_movehl_ps(mins, mins));
        let mins = _mm_add_ss(mins, _mm_movehdup_ps(mins));
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + _mm_cvtss_f32(mins)
    }
}

/// Low and high nibbles of four blocks' arrays, as unsigned bytes.
#[inline(always)]
unsafe fn nibbles(qs: [&[u8; 16]; QUAD]) -> (__m512i, __m512i) {
    // SAFETY: the caller runs with AVX-512F/BW.
    unsafe {
        let v = four_arrays(qs);
        let mask = _mm512_set1_epi8(0x0f);
        (
            _mm512_and_si512(v, mask),
            _mm512_and_si512(_mm512_srli_epi16(v, 4), mask),
        )
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_kernel(w: &[BlockQ4_0], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above.
    unsafe {
        quads(
            w,
            x,
            |b| b.d,
            |b| nibbles([&b[0].qs, &b[1].qs, &b[2].qs, &b[3].qs]),
        )
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_0_kernel(w: &[BlockQ5_0], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above.
    unsafe {
        quads(
            w,
            x,
            |b| b.d,
            |b| {
                five_bits(
                    [&b[0].qs, &b[1].qs, &b[2].qs, &b[3].qs],
                    [b[0].qh, b[1].qh, b[2].qh, b[3].qh],
                )
            },
        )
    }
}

/// Low and high quants of four 5-bit blocks: nibbles from `qs`, fifth bits from `qh`.
#[inline(always)]
unsafe fn five_bits(qs: [&[u8; 16]; QUAD], qh: [[u8; 4]; QUAD]) -> (__m512i, __m512i) {
    // SAFETY: the caller runs with AVX-512F/BW.
    unsafe {
        let (lo, hi) = nibbles(qs);
        // Fifth bits: element j of block k is bit j of its qh; in the low register at
        // byte 16 k + j (j < 16), in the high one at 16 k + j - 16.
        let qh = |k: usize| u64::from(u32::from_le_bytes(qh[k]));
        let low_bits = |k: usize| (qh(k) & 0xffff) << (16 * k);
        let high_bits = |k: usize| (qh(k) >> 16) << (16 * k);
        let fifth = _mm512_set1_epi8(0x10);
        (
            with_bit(
                lo,
                low_bits(0) | low_bits(1) | low_bits(2) | low_bits(3),
                fifth,
            ),
            with_bit(
                hi,
                high_bits(0) | high_bits(1) | high_bits(2) | high_bits(3),
                fifth,
            ),
        )
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_1_kernel(w: &[BlockQ4_1], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above.
    unsafe {
        quads_with_mins(
            w,
            x,
            |b| b.d,
            |b| b.m,
            |b| nibbles([&b[0].qs, &b[1].qs, &b[2].qs, &b[3].qs]),
        )
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_1_kernel(w: &[BlockQ5_1], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above.
    unsafe {
        quads_with_mins(
            w,
            x,
            |b| b.d,
            |b| b.m,
            |b| {
                five_bits(
                    [&b[0].qs, &b[1].qs, &b[2].qs, &b[3].qs],
                    [b[0].qh, b[1].qh, b[2].qh, b[3].qh],
                )
            },
        )
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn iq4_nl_kernel(w: &[BlockIQ4_NL], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above; the load reads the 16 table bytes.
    unsafe {
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL_PLUS_128.as_ptr().cast()));
        quads(
            w,
            x,
            |b| b.d,
            |b| {
                let (lo, hi) = nibbles([&b[0].qs, &b[1].qs, &b[2].qs, &b[3].qs]);
                (
                    _mm512_shuffle_epi8(table, lo),
                    _mm512_shuffle_epi8(table, hi),
                )
            },
        )
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0_kernel(w: &[BlockQ8_0], x: &[ActQuad]) -> f32 {
    // SAFETY: features enabled above; each load reads one block's 32 quants.
    unsafe {
        let flip = _mm512_set1_epi8(i8::MIN);
        quads(
            w,
            x,
            |b| b.d,
            |b| {
                // Blocks 0 and 1, 2 and 3 in one register each ([low 16, high 16] per
                // block), then the low halves of all four in one register, the high
                // halves in the other: one block per 128-bit lane, as `ActQuad` has them.
                let load = |k: usize| _mm256_loadu_si256(b[k].qs.as_ptr().cast());
                let pair =
                    |k: usize| _mm512_inserti64x4(_mm512_castsi256_si512(load(k)), load(k + 1), 1);
                let (ab, cd) = (pair(0), pair(2));
                (
                    _mm512_xor_si512(_mm512_shuffle_i64x2::<0b10_00_10_00>(ab, cd), flip),
                    _mm512_xor_si512(_mm512_shuffle_i64x2::<0b11_01_11_01>(ab, cd), flip),
                )
            },
        )
    }
}

/// `v` with `bit` added to the bytes whose bit is set in `mask` (their bit is clear).
#[inline(always)]
unsafe fn with_bit(v: __m512i, mask: u64, bit: __m512i) -> __m512i {
    // SAFETY: the caller runs with AVX-512BW.
    unsafe { _mm512_mask_add_epi8(v, mask, v, bit) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::act_quads::arrange_quads_q8_1;
    use crate::cpu::x86_64::act_quads::tests::{check_q8_0_quad_kernel, check_quad_kernel};

    #[test]
    fn quad_kernels_match_scalar() {
        let (Some(q4), Some(q5), Some(iq4), Some(q8), Some(q41), Some(q51)) =
            (q4_0(), q5_0(), iq4_nl(), q8_0(), q4_1(), q5_1())
        else {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to check");
            return;
        };
        check_q8_0_quad_kernel(q4, 8);
        check_q8_0_quad_kernel(q5, 16);
        check_q8_0_quad_kernel(iq4, 128);
        check_q8_0_quad_kernel(q8, 128);
        check_quad_kernel(q41, arrange_quads_q8_1);
        check_quad_kernel(q51, arrange_quads_q8_1);
    }
}
