//! AVX2 dot products of the K-quants (Q2_K..Q6_K) with Q8_K activations.
//!
//! The structure follows ggml's x86 kernels: per 32 weights one `maddubs` (u8 weight x
//! i8 activation -> i16 pairs) and one `madd` with the sub-block scale broadcast by a byte
//! shuffle; the integer sums of a super-block are converted to float once. Minimum
//! terms (Q2_K, Q4_K, Q5_K) and the constant offsets of the symmetric formats (Q3_K's
//! `-4`, Q6_K's `-32`) come from the activation block sums `bsums`, so the weights stay
//! unsigned. Integer arithmetic is exact; only the float accumulation order differs from
//! the scalar twins. Each kernel prefetches the weight blocks it will need 16 KiB ahead
//! (`prefetch_ahead`), which matvec needs to approach the memory bandwidth.
//!
//! Only `q2_k`..`q6_k` are visible: they return the kernel when the CPU supports
//! AVX2, FMA and F16C (checked once per call of the constructor).

use crate::cpu::isa::Isa;
use crate::quant::{BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K, VecDot};
use half::f16;
use std::arch::x86_64::*;

macro_rules! constructors {
    ($($name:ident: $block:ty => $kernel:ident;)*) => {$(
        #[doc = concat!("The AVX2 `", stringify!($name), "` x Q8_K dot product, if this CPU has AVX2, FMA and F16C.")]
        pub(crate) fn $name() -> Option<VecDot<$block>> {
            fn checked(w: &[$block], x: &[BlockQ8_K]) -> f32 {
                // SAFETY: `checked` is only handed out below after the CPU check.
                unsafe { $kernel(w, x) }
            }
            Isa::Avx2.is_supported().then_some(checked as VecDot<$block>)
        }
    )*};
}

constructors! {
    q2_k: BlockQ2_K => dot_q2_k;
    q3_k: BlockQ3_K => dot_q3_k;
    q4_k: BlockQ4_K => dot_q4_k;
    q5_k: BlockQ5_K => dot_q5_k;
    q6_k: BlockQ6_K => dot_q6_k;
}

/// How far ahead of the weight block being multiplied the kernels prefetch (into L2),
/// in bytes. The hardware prefetchers alone leave a matvec short of the memory bandwidth
/// (measured on a Xeon: Q4_K with 2 threads 11 -> 15 GB/s of 16-18 GB/s read bandwidth);
/// on this EPYC 16 KiB into L2 beat the earlier 1.5 KiB into L1 by 5-30% per shape (two
/// threads, Q4_K/Q6_K on the 12B shapes) and the 12B decode by 7%.
const PREFETCH_BYTES: usize = 16384;

/// Prefetches into L2 the cache lines of the weight block `PREFETCH_BYTES` after `block`.
#[inline(always)]
pub(super) fn prefetch_ahead<B>(block: &B) {
    prefetch_far(block, 1);
}

/// Prefetches into L2 the cache lines of the `blocks` weight blocks that start
/// `PREFETCH_BYTES` after `block` (a loop step's worth of blocks).
#[inline(always)]
pub(super) fn prefetch_far<B>(block: &B, blocks: usize) {
    let ahead = (block as *const B)
        .cast::<i8>()
        .wrapping_add(PREFETCH_BYTES);
    for line in 0..(blocks * std::mem::size_of::<B>()).div_ceil(64) {
        // SAFETY: a prefetch is only a hint: it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line)) };
    }
}

/// Loads 32 bytes of `data` starting at byte `at`.
///
/// # Safety
/// `at + 32 <= size_of_val(data)`.
#[inline(always)]
pub(super) unsafe fn load256<T>(data: &[T], at: usize) -> __m256i {
    debug_assert!(at + 32 <= std::mem::size_of_val(data));
    // SAFETY: in bounds by the caller's contract; unaligned loads are allowed.
    unsafe { _mm256_loadu_si256(data.as_ptr().cast::<u8>().add(at).cast()) }
}

/// Loads 16 bytes of `data` starting at byte `at`.
///
/// # Safety
/// `at + 16 <= size_of_val(data)`.
#[inline(always)]
pub(super) unsafe fn load128<T>(data: &[T], at: usize) -> __m128i {
    debug_assert!(at + 16 <= std::mem::size_of_val(data));
    // SAFETY: in bounds by the caller's contract; unaligned loads are allowed.
    unsafe { _mm_loadu_si128(data.as_ptr().cast::<u8>().add(at).cast()) }
}

/// The sixteen stored Q3_K scales of `b` (0..=63, [`BlockQ3_K::raw_scales`]) in vector
/// registers: low / high nibbles of bytes `0..8` with bits `2q..2q + 2` of bytes
/// `8..12` above them (quarter `q`), instead of ggml's scalar `kmask` arithmetic.
#[inline(always)]
pub(super) fn q3_k_raw_scales(b: &BlockQ3_K) -> __m128i {
    // SAFETY: only inlined into AVX2 functions; the two loads read the 12 scale bytes.
    unsafe {
        let s = &b.scales;
        let low = _mm_loadl_epi64(s.as_ptr().cast());
        let high = _mm_cvtsi32_si128(i32::from_le_bytes([s[8], s[9], s[10], s[11]]));
        let m4 = _mm_set1_epi8(0x0F);
        let nibbles = _mm_unpacklo_epi64(
            _mm_and_si128(low, m4),
            _mm_and_si128(_mm_srli_epi16::<4>(low), m4),
        );
        let quarters = _mm_srlv_epi32(_mm_shuffle_epi32::<0>(high), _mm_setr_epi32(0, 2, 4, 6));
        let two_bits = _mm_and_si128(quarters, _mm_set1_epi8(3));
        _mm_or_si128(nibbles, _mm_slli_epi16::<4>(two_bits))
    }
}

/// `f16` to `f32` with F16C (exact, like ggml's `GGML_CPU_FP16_TO_FP32`).
#[inline(always)]
pub(super) fn f16_to_f32(h: f16) -> f32 {
    // SAFETY: only inlined into functions compiled with F16C enabled.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32))) }
}

/// Byte-shuffle control that broadcasts the i16 lane `k` of a 128-bit lane.
#[inline(always)]
pub(super) fn pair(k: i32) -> i16 {
    (((2 * k + 1) << 8) | (2 * k)) as i16
}

/// Shuffle control picking i16 lane `lo` in the low and `hi` in the high 128-bit half.
#[inline(always)]
fn pair2(lo: i32, hi: i32) -> __m256i {
    // SAFETY: only inlined into functions compiled with AVX2 enabled.
    unsafe { _mm256_set_m128i(_mm_set1_epi16(pair(hi)), _mm_set1_epi16(pair(lo))) }
}

/// Sum of the 8 lanes.
#[inline(always)]
fn hsum_ps(v: __m256) -> f32 {
    // SAFETY: only inlined into functions compiled with AVX2 enabled.
    unsafe {
        hsum_ps128(_mm_add_ps(
            _mm256_castps256_ps128(v),
            _mm256_extractf128_ps::<1>(v),
        ))
    }
}

/// Sum of the 4 lanes.
#[inline(always)]
pub(super) fn hsum_ps128(v: __m128) -> f32 {
    // SAFETY: only inlined into functions compiled with SSE3 or later enabled.
    unsafe {
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
    }
}

/// Sixteen signed 8-bit sub-block scales as two vectors of i16 with the first (second)
/// eight scales in both 128-bit halves, ready for [`pair2`] shuffles.
#[inline(always)]
fn split_scales16(scales8: __m128i) -> [__m256i; 2] {
    // SAFETY: only inlined into functions compiled with AVX2 enabled.
    unsafe {
        let all = _mm256_cvtepi8_epi16(scales8);
        [
            _mm256_broadcastsi128_si256(_mm256_castsi256_si128(all)),
            _mm256_broadcastsi128_si256(_mm256_extracti128_si256::<1>(all)),
        ]
    }
}

/// Q2_K x Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q2_k(w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        prefetch_ahead(b);
        let d = y.d * f16_to_f32(b.d);
        let dmin = -y.d * f16_to_f32(b.dmin);
        // SAFETY: 16 bytes of `scales`, 32 bytes of `bsums`.
        let (packed, bsums) = unsafe { (load128(&b.scales, 0), load256(&y.bsums, 0)) };
        let mins = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let prod = _mm256_madd_epi16(mins, bsums);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        let scales = split_scales16(_mm_and_si128(packed, m4));
        let mut sumi = _mm256_setzero_si256();
        for (n, &sc) in scales.iter().enumerate() {
            // SAFETY: n < 2: 32 bytes at 32n inside the 64-byte `qs`.
            let mut bits = unsafe { load256(&b.qs, 32 * n) };
            for g in 0..4 {
                // SAFETY: 32 bytes at 128n + 32g inside the 256 activation quants.
                let q8 = unsafe { load256(&y.qs, 128 * n + 32 * g) };
                let p = _mm256_maddubs_epi16(_mm256_and_si256(bits, m3), q8);
                let s = _mm256_shuffle_epi8(sc, pair2(2 * g as i32, 2 * g as i32 + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, p));
                bits = _mm256_srli_epi16::<2>(bits);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// Q3_K x Q8_K: quants taken as `q + 4` in 0..=7, the `-4` offset from `bsums`.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q3_k(w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        prefetch_ahead(b);
        let d = y.d * f16_to_f32(b.d);
        let raw = q3_k_raw_scales(b);
        // SAFETY: 32 bytes of `bsums` and of `hmask`.
        let (bsums, hbits) = unsafe { (load256(&y.bsums, 0), load256(&b.hmask, 0)) };
        let scales8 = _mm_sub_epi8(raw, _mm_set1_epi8(32));
        let offset = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales8), bsums);
        let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<2>(offset));
        let scales = split_scales16(scales8);
        for (n, &sc) in scales.iter().enumerate() {
            // SAFETY: n < 2: 32 bytes at 32n inside the 64-byte `qs`.
            let mut bits = unsafe { load256(&b.qs, 32 * n) };
            for g in 0..4 {
                let hmask = _mm256_set1_epi8(1 << (4 * n + g));
                let high = _mm256_and_si256(
                    _mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask),
                    four,
                );
                let q = _mm256_or_si256(_mm256_and_si256(bits, m3), high);
                // SAFETY: 32 bytes at 128n + 32g inside the 256 activation quants.
                let q8 = unsafe { load256(&y.qs, 128 * n + 32 * g) };
                let p = _mm256_maddubs_epi16(q, q8);
                let s = _mm256_shuffle_epi8(sc, pair2(2 * g as i32, 2 * g as i32 + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, p));
                bits = _mm256_srli_epi16::<2>(bits);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// The minimum term of Q4_K / Q5_K: `mins · (pairwise sums of bsums)` as four i32.
#[inline(always)]
fn min_products(mins: [u8; 8], y: &BlockQ8_K) -> __m128i {
    // SAFETY: only inlined into functions compiled with AVX2 enabled; 32 bytes of `bsums`.
    unsafe {
        let bsums = load256(&y.bsums, 0);
        let q8s = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256::<1>(bsums),
        );
        let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(mins)));
        _mm_madd_epi16(mins, q8s)
    }
}

/// Eight unsigned 6-bit scales as i16 in both 128-bit halves.
#[inline(always)]
fn broadcast_scales8(scales: [u8; 8]) -> __m256i {
    // SAFETY: only inlined into functions compiled with AVX2 enabled.
    unsafe {
        _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(
            scales,
        ))))
    }
}

/// Q4_K x Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_k(w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        prefetch_ahead(b);
        let d = y.d * f16_to_f32(b.d);
        let dmin = -y.d * f16_to_f32(b.dmin);
        let (scales, mins) = b.scales_mins();
        acc_m = _mm_fmadd_ps(
            _mm_set1_ps(dmin),
            _mm_cvtepi32_ps(min_products(mins, y)),
            acc_m,
        );
        let scales = broadcast_scales8(scales);
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let scale_l = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(pair(2 * c as i32)));
            let scale_h = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(pair(2 * c as i32 + 1)));
            // SAFETY: c < 4: 32 bytes at 32c of the 128-byte `qs`, 64 at 64c of the 256 quants.
            let (bits, q8l, q8h) = unsafe {
                (
                    load256(&b.qs, 32 * c),
                    load256(&y.qs, 64 * c),
                    load256(&y.qs, 64 * c + 32),
                )
            };
            let q4l = _mm256_and_si256(bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            let pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            let ph = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

/// Q5_K x Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5_k(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        prefetch_ahead(b);
        let d = y.d * f16_to_f32(b.d);
        let dmin = -y.d * f16_to_f32(b.dmin);
        let (scales, mins) = b.scales_mins();
        acc_m = _mm_fmadd_ps(
            _mm_set1_ps(dmin),
            _mm_cvtepi32_ps(min_products(mins, y)),
            acc_m,
        );
        let scales = broadcast_scales8(scales);
        // SAFETY: the 32 bytes of `qh`.
        let hbits = unsafe { load256(&b.qh, 0) };
        let high = |bit: i32| {
            let m = _mm256_set1_epi8(1 << bit);
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, m), m), sixteen)
        };
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let scale_l = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(pair(2 * c as i32)));
            let scale_h = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(pair(2 * c as i32 + 1)));
            // SAFETY: c < 4: 32 bytes at 32c of the 128-byte `qs`, 64 at 64c of the 256 quants.
            let (bits, q8l, q8h) = unsafe {
                (
                    load256(&b.qs, 32 * c),
                    load256(&y.qs, 64 * c),
                    load256(&y.qs, 64 * c + 32),
                )
            };
            let q5l = _mm256_or_si256(_mm256_and_si256(bits, m4), high(2 * c as i32));
            let q5h = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
                high(2 * c as i32 + 1),
            );
            let pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q5l, q8l));
            let ph = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q5h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

/// Q6_K x Q8_K: quants taken unsigned in 0..=63, the `-32` offset from `bsums`.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q6_k(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    let m4 = _mm256_set1_epi8(0xF);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in w.iter().zip(x) {
        prefetch_ahead(b);
        let d = y.d * f16_to_f32(b.d);
        // SAFETY: the 16 scale bytes and the 32 bytes of `bsums`.
        let (scales8, bsums) = unsafe { (load128(&b.scales, 0), load256(&y.bsums, 0)) };
        let offset = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales8), bsums);
        let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset));
        let scales = split_scales16(scales8);
        for (n, &sc) in scales.iter().enumerate() {
            // SAFETY: n < 2: 64 bytes at 64n of the 128-byte `ql`, 32 at 32n of the 64-byte `qh`.
            let (bits1, bits2, hb) = unsafe {
                (
                    load256(&b.ql, 64 * n),
                    load256(&b.ql, 64 * n + 32),
                    load256(&b.qh, 32 * n),
                )
            };
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(bits1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(hb), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(bits2, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(hb), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits1), m4),
                    _mm256_and_si256(hb, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits2), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(hb), m30),
                ),
            ];
            for (g, &q) in q.iter().enumerate() {
                // SAFETY: 32 bytes at 128n + 32g inside the 256 activation quants.
                let q8 = unsafe { load256(&y.qs, 128 * n + 32 * g) };
                let p = _mm256_maddubs_epi16(q, q8);
                let s = _mm256_shuffle_epi8(sc, pair2(2 * g as i32, 2 * g as i32 + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[target_feature(enable = "avx2")]
    fn vector_scales(b: &BlockQ3_K) -> [u8; 16] {
        let mut out = [0u8; 16];
        // SAFETY: 16 bytes stored into `out`.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), q3_k_raw_scales(b)) };
        out
    }

    #[test]
    fn q3_k_vector_scales_match_ggml_kmask_unpacking() {
        if !Isa::Avx2.is_supported() {
            eprintln!("no AVX2 on this CPU: the vector Q3_K scales cannot run here");
            return;
        }
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..1000 {
            let mut b = BlockQ3_K::zeroed();
            for byte in &mut b.scales {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *byte = state as u8;
            }
            // SAFETY: AVX2 checked above.
            assert_eq!(
                unsafe { vector_scales(&b) },
                b.raw_scales(),
                "{:?}",
                b.scales
            );
        }
    }
}
