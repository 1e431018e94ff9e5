//! AVX-512 (BW/VL, with VNNI where present) dot products of the K-quants with Q8_K.
//!
//! Same scheme as `avx2_kquants` on 512-bit vectors: each `maddubs` covers 64 weights
//! (two or four sub-blocks), the sub-block scales are applied to the i16 pair sums with
//! `madd` + `add`, or with one `vpdpwssd` on VNNI CPUs. The 64 weights of a vector are
//! chosen so that their activations are contiguous (Q2_K, Q3_K, Q6_K) or two 32-byte
//! halves put together with one shuffle (Q4_K, Q5_K). Minimum terms and constant
//! offsets come from the activation block sums, as in the AVX2 kernels.

use super::avx2_kquants::{
    f16_to_f32, hsum_ps128, load128, load256, pair, prefetch_ahead, q3_k_raw_scales,
};
use crate::cpu::isa::{has_avx512_vnni, Isa};
use crate::quant::{BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K, VecDot};
use std::arch::x86_64::*;

macro_rules! constructors {
    ($($name:ident: $block:ty => $kernel:ident, $kernel_vnni:ident;)*) => {$(
        #[doc = concat!("The AVX-512 `", stringify!($name), "` x Q8_K dot product (VNNI when present), if this CPU has AVX-512 F/BW/VL.")]
        pub(crate) fn $name() -> Option<VecDot<$block>> {
            fn checked(w: &[$block], x: &[BlockQ8_K]) -> f32 {
                // SAFETY: only handed out below after the CPU check.
                unsafe { $kernel(w, x) }
            }
            fn checked_vnni(w: &[$block], x: &[BlockQ8_K]) -> f32 {
                // SAFETY: only handed out below after the CPU check, VNNI included.
                unsafe { $kernel_vnni(w, x) }
            }
            if !Isa::Avx512.is_supported() {
                None
            } else if has_avx512_vnni() {
                Some(checked_vnni)
            } else {
                Some(checked)
            }
        }
    )*};
}

constructors! {
    q2_k: BlockQ2_K => dot_q2_k, dot_q2_k_vnni;
    q3_k: BlockQ3_K => dot_q3_k, dot_q3_k_vnni;
    q4_k: BlockQ4_K => dot_q4_k, dot_q4_k_vnni;
    q5_k: BlockQ5_K => dot_q5_k, dot_q5_k_vnni;
    q6_k: BlockQ6_K => dot_q6_k, dot_q6_k_vnni;
}

/// Each K-quant kernel in a plain AVX-512BW and a VNNI build of the same generic body.
macro_rules! kernels {
    ($($kernel:ident, $kernel_vnni:ident: $block:ty => $body:ident;)*) => {$(
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        fn $kernel(w: &[$block], x: &[BlockQ8_K]) -> f32 {
            $body::<false>(w, x)
        }
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        fn $kernel_vnni(w: &[$block], x: &[BlockQ8_K]) -> f32 {
            $body::<true>(w, x)
        }
    )*};
}

kernels! {
    dot_q2_k, dot_q2_k_vnni: BlockQ2_K => q2_k_body;
    dot_q3_k, dot_q3_k_vnni: BlockQ3_K => q3_k_body;
    dot_q4_k, dot_q4_k_vnni: BlockQ4_K => q4_k_body;
    dot_q5_k, dot_q5_k_vnni: BlockQ5_K => q5_k_body;
    dot_q6_k, dot_q6_k_vnni: BlockQ6_K => q6_k_body;
}

/// Loads 64 bytes of `data` starting at byte `at`.
///
/// # Safety
/// `at + 64 <= size_of_val(data)`.
#[inline(always)]
unsafe fn load512<T>(data: &[T], at: usize) -> __m512i {
    debug_assert!(at + 64 <= std::mem::size_of_val(data));
    // SAFETY: in bounds by the caller's contract; unaligned loads are allowed.
    unsafe { _mm512_loadu_si512(data.as_ptr().cast::<u8>().add(at).cast()) }
}

/// 32 bytes of `data` at byte `at`, repeated in both 256-bit halves.
///
/// # Safety
/// `at + 32 <= size_of_val(data)`.
#[inline(always)]
unsafe fn broadcast256<T>(data: &[T], at: usize) -> __m512i {
    // SAFETY: in bounds by the caller's contract; the callers enable AVX-512F.
    unsafe { _mm512_broadcast_i64x4(load256(data, at)) }
}

/// `acc + Σ pairs of p16 * scale16` as sixteen i32 (one `vpdpwssd` with VNNI).
#[inline(always)]
fn scale_acc<const VNNI: bool>(acc: __m512i, p16: __m512i, scale16: __m512i) -> __m512i {
    // SAFETY: only inlined into the `kernels!` functions, which enable AVX-512BW and,
    // for `VNNI == true`, AVX-512 VNNI.
    unsafe {
        if VNNI {
            _mm512_dpwssd_epi32(acc, p16, scale16)
        } else {
            _mm512_add_epi32(acc, _mm512_madd_epi16(p16, scale16))
        }
    }
}

/// Byte-shuffle control broadcasting i16 lane `lo` of each 128-bit lane into the low
/// 256 bits and lane `hi` into the high 256 bits.
#[inline(always)]
fn pair_halves(lo: i32, hi: i32) -> __m512i {
    // SAFETY: only inlined into AVX-512F functions.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi16(pair(lo))),
            _mm256_set1_epi16(pair(hi)),
        )
    }
}

/// Per-byte constant `lo` in the low 256 bits and `hi` in the high 256 bits.
#[inline(always)]
fn bytes_halves(lo: i8, hi: i8) -> __m512i {
    // SAFETY: only inlined into AVX-512F functions.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi8(lo)),
            _mm256_set1_epi8(hi),
        )
    }
}

/// For 16 sub-blocks of 16 weights with i16 scales `sc16`: the four scale vectors that
/// match `maddubs` results over weights 0..64, 64..128, 128..192, 192..256 (each 128-bit
/// lane holds one sub-block's scale eight times).
#[inline(always)]
fn scales_by_lane(sc16: __m256i) -> [__m512i; 4] {
    // SAFETY: only inlined into AVX-512BW functions.
    unsafe {
        let all = _mm512_castsi256_si512(sc16);
        let index = |first: i32| {
            let lane = |k: i32| _mm_set1_epi16((first + k) as i16);
            let low = _mm256_set_m128i(lane(1), lane(0));
            let high = _mm256_set_m128i(lane(3), lane(2));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
        };
        [
            _mm512_permutexvar_epi16(index(0), all),
            _mm512_permutexvar_epi16(index(4), all),
            _mm512_permutexvar_epi16(index(8), all),
            _mm512_permutexvar_epi16(index(12), all),
        ]
    }
}

/// Sum of the sixteen i32 lanes of `v` folded into eight.
#[inline(always)]
fn fold_i32(v: __m512i) -> __m256i {
    // SAFETY: only inlined into AVX-512F functions.
    unsafe { _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)) }
}

/// Sum of the 8 lanes.
#[inline(always)]
fn hsum_ps256(v: __m256) -> f32 {
    // SAFETY: only inlined into AVX-512F functions.
    unsafe {
        hsum_ps128(_mm_add_ps(
            _mm256_castps256_ps128(v),
            _mm256_extractf128_ps::<1>(v),
        ))
    }
}

/// `lo` in the low and `hi` in the high 256 bits (no dependency on any other register).
#[inline(always)]
fn join_halves(lo: __m256i, hi: __m256i) -> __m512i {
    // SAFETY: only inlined into AVX-512F functions.
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi) }
}

/// The 2-bit fields of the 32 bytes `q` for groups `0,1` and `2,3` (bits `0..2`, `2..4`
/// and `4..6`, `6..8`) as two vectors of 64 weights in activation order.
#[inline(always)]
fn two_bit_groups(q: __m256i) -> (__m512i, __m512i) {
    // SAFETY: only inlined into AVX-512BW functions.
    unsafe {
        let m3 = _mm512_set1_epi8(3);
        let q2 = join_halves(q, _mm256_srli_epi16::<2>(q));
        (
            _mm512_and_si512(q2, m3),
            _mm512_and_si512(_mm512_srli_epi16::<4>(q2), m3),
        )
    }
}

#[inline(always)]
fn q2_k_body<const VNNI: bool>(w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    // SAFETY: inlined into the `kernels!` functions (AVX-512BW, AVX2, FMA, F16C); every
    // load is at a constant offset inside the fixed-size block arrays.
    unsafe {
        let m4 = _mm_set1_epi8(0xF);
        let mut acc = _mm256_setzero_ps();
        for (b, y) in w.iter().zip(x) {
            prefetch_ahead(b);
            let d = y.d * f16_to_f32(b.d);
            let dmin = -y.d * f16_to_f32(b.dmin);
            let (packed, bsums) = (load128(&b.scales, 0), load256(&y.bsums, 0));
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
            let prod = _mm256_madd_epi16(mins, bsums);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
            let scales = scales_by_lane(_mm256_cvtepu8_epi16(_mm_and_si128(packed, m4)));
            let mut sumi = [_mm512_setzero_si512(); 2];
            for n in 0..2 {
                let (g01, g23) = two_bit_groups(load256(&b.qs, 32 * n));
                let p01 = _mm512_maddubs_epi16(g01, load512(&y.qs, 128 * n));
                let p23 = _mm512_maddubs_epi16(g23, load512(&y.qs, 128 * n + 64));
                sumi[0] = scale_acc::<VNNI>(sumi[0], p01, scales[2 * n]);
                sumi[1] = scale_acc::<VNNI>(sumi[1], p23, scales[2 * n + 1]);
            }
            let sumi = fold_i32(_mm512_add_epi32(sumi[0], sumi[1]));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps256(acc)
    }
}

#[inline(always)]
fn q3_k_body<const VNNI: bool>(w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    // SAFETY: inlined into the `kernels!` functions (AVX-512BW, AVX2, FMA, F16C); every
    // load is at a constant offset inside the fixed-size block arrays.
    unsafe {
        let four = _mm512_set1_epi8(4);
        let mut acc = _mm256_setzero_ps();
        for (b, y) in w.iter().zip(x) {
            prefetch_ahead(b);
            let d = y.d * f16_to_f32(b.d);
            let (raw, bsums) = (q3_k_raw_scales(b), load256(&y.bsums, 0));
            let sc16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(raw, _mm_set1_epi8(32)));
            let offset = _mm256_slli_epi32::<2>(_mm256_madd_epi16(sc16, bsums));
            let scales = scales_by_lane(sc16);
            let hbits = broadcast256(&b.hmask, 0);
            let mut sumi = [_mm512_setzero_si512(); 2];
            for n in 0..2 {
                let (mut g01, mut g23) = two_bit_groups(load256(&b.qs, 32 * n));
                let bit = |g: usize| (1u8 << (4 * n + g)) as i8;
                let k01 = _mm512_test_epi8_mask(hbits, bytes_halves(bit(0), bit(1)));
                let k23 = _mm512_test_epi8_mask(hbits, bytes_halves(bit(2), bit(3)));
                g01 = _mm512_mask_add_epi8(g01, k01, g01, four);
                g23 = _mm512_mask_add_epi8(g23, k23, g23, four);
                let p01 = _mm512_maddubs_epi16(g01, load512(&y.qs, 128 * n));
                let p23 = _mm512_maddubs_epi16(g23, load512(&y.qs, 128 * n + 64));
                sumi[0] = scale_acc::<VNNI>(sumi[0], p01, scales[2 * n]);
                sumi[1] = scale_acc::<VNNI>(sumi[1], p23, scales[2 * n + 1]);
            }
            let sumi = _mm256_sub_epi32(fold_i32(_mm512_add_epi32(sumi[0], sumi[1])), offset);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps256(acc)
    }
}

/// Shared part of Q4_K / Q5_K: the low (`lo`) and high (`hi`) nibbles of 64 bytes of
/// `qs` (chunks `2h`, `2h+1`) cover sub-blocks `[4h | 4h+2]` and `[4h+1 | 4h+3]`; the
/// matching activations are gathered by 128-bit-lane shuffles.
#[inline(always)]
fn k4_activations(y: &BlockQ8_K, h: usize) -> (__m512i, __m512i) {
    // SAFETY: only inlined into AVX-512F functions; h < 2 keeps both loads inside the
    // 256 quants.
    unsafe {
        let a = load512(&y.qs, 128 * h);
        let b = load512(&y.qs, 128 * h + 64);
        (
            _mm512_shuffle_i64x2::<0x44>(a, b),
            _mm512_shuffle_i64x2::<0xEE>(a, b),
        )
    }
}

/// The Q4_K / Q5_K minimum term as four i32 (see `avx2_kquants`).
#[inline(always)]
fn k4_min_products(mins: [u8; 8], y: &BlockQ8_K) -> __m128i {
    // SAFETY: only inlined into AVX2+ functions; 32 bytes of `bsums`.
    unsafe {
        let bsums = load256(&y.bsums, 0);
        let q8s = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256::<1>(bsums),
        );
        _mm_madd_epi16(
            _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(mins))),
            q8s,
        )
    }
}

/// The eight 6-bit scales as i16 in every 128-bit lane.
#[inline(always)]
fn k4_scales(scales: [u8; 8]) -> __m512i {
    // SAFETY: only inlined into AVX-512F functions.
    unsafe {
        _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(
            scales,
        ))))
    }
}

#[inline(always)]
fn q4_k_body<const VNNI: bool>(w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    // SAFETY: inlined into the `kernels!` functions (AVX-512BW, AVX2, FMA, F16C); every
    // load is at a constant offset inside the fixed-size block arrays.
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let mut acc = _mm512_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (b, y) in w.iter().zip(x) {
            prefetch_ahead(b);
            let d = y.d * f16_to_f32(b.d);
            let dmin = -y.d * f16_to_f32(b.dmin);
            let (scales, mins) = b.scales_mins();
            acc_m = _mm_fmadd_ps(
                _mm_set1_ps(dmin),
                _mm_cvtepi32_ps(k4_min_products(mins, y)),
                acc_m,
            );
            let scales = k4_scales(scales);
            let mut sumi = [_mm512_setzero_si512(); 2];
            for h in 0..2 {
                let bits = load512(&b.qs, 64 * h);
                let lo = _mm512_and_si512(bits, m4);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(bits), m4);
                let (q8lo, q8hi) = k4_activations(y, h);
                let s = 4 * h as i32;
                let scale_lo = _mm512_shuffle_epi8(scales, pair_halves(s, s + 2));
                let scale_hi = _mm512_shuffle_epi8(scales, pair_halves(s + 1, s + 3));
                sumi[0] = scale_acc::<VNNI>(sumi[0], _mm512_maddubs_epi16(lo, q8lo), scale_lo);
                sumi[1] = scale_acc::<VNNI>(sumi[1], _mm512_maddubs_epi16(hi, q8hi), scale_hi);
            }
            let sumi = _mm512_add_epi32(sumi[0], sumi[1]);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
        }
        _mm512_reduce_add_ps(acc) + hsum_ps128(acc_m)
    }
}

#[inline(always)]
fn q5_k_body<const VNNI: bool>(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    // SAFETY: inlined into the `kernels!` functions (AVX-512BW, AVX2, FMA, F16C); every
    // load is at a constant offset inside the fixed-size block arrays.
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let sixteen = _mm512_set1_epi8(16);
        let mut acc = _mm512_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (b, y) in w.iter().zip(x) {
            prefetch_ahead(b);
            let d = y.d * f16_to_f32(b.d);
            let dmin = -y.d * f16_to_f32(b.dmin);
            let (scales, mins) = b.scales_mins();
            acc_m = _mm_fmadd_ps(
                _mm_set1_ps(dmin),
                _mm_cvtepi32_ps(k4_min_products(mins, y)),
                acc_m,
            );
            let scales = k4_scales(scales);
            let hbits = broadcast256(&b.qh, 0);
            let mut sumi = [_mm512_setzero_si512(); 2];
            for h in 0..2 {
                let bits = load512(&b.qs, 64 * h);
                let s = 4 * h as i32;
                let bit = |j: i32| (1u8 << j) as i8;
                let k_lo = _mm512_test_epi8_mask(hbits, bytes_halves(bit(s), bit(s + 2)));
                let k_hi = _mm512_test_epi8_mask(hbits, bytes_halves(bit(s + 1), bit(s + 3)));
                let lo = _mm512_and_si512(bits, m4);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(bits), m4);
                let lo = _mm512_mask_add_epi8(lo, k_lo, lo, sixteen);
                let hi = _mm512_mask_add_epi8(hi, k_hi, hi, sixteen);
                let (q8lo, q8hi) = k4_activations(y, h);
                let scale_lo = _mm512_shuffle_epi8(scales, pair_halves(s, s + 2));
                let scale_hi = _mm512_shuffle_epi8(scales, pair_halves(s + 1, s + 3));
                sumi[0] = scale_acc::<VNNI>(sumi[0], _mm512_maddubs_epi16(lo, q8lo), scale_lo);
                sumi[1] = scale_acc::<VNNI>(sumi[1], _mm512_maddubs_epi16(hi, q8hi), scale_hi);
            }
            let sumi = _mm512_add_epi32(sumi[0], sumi[1]);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
        }
        _mm512_reduce_add_ps(acc) + hsum_ps128(acc_m)
    }
}

#[inline(always)]
fn q6_k_body<const VNNI: bool>(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    // SAFETY: inlined into the `kernels!` functions (AVX-512BW, AVX2, FMA, F16C); every
    // load is at a constant offset inside the fixed-size block arrays.
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let m30 = _mm512_set1_epi8(0x30);
        let mut acc = _mm256_setzero_ps();
        for (b, y) in w.iter().zip(x) {
            prefetch_ahead(b);
            let d = y.d * f16_to_f32(b.d);
            let (scales8, bsums) = (load128(&b.scales, 0), load256(&y.bsums, 0));
            let sc16 = _mm256_cvtepi8_epi16(scales8);
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bsums));
            let scales = scales_by_lane(sc16);
            let mut sumi = [_mm512_setzero_si512(); 2];
            for n in 0..2 {
                let bits = load512(&b.ql, 64 * n);
                let hb = load256(&b.qh, 32 * n);
                let hb = join_halves(hb, _mm256_srli_epi16::<2>(hb));
                let lo = _mm512_or_si512(
                    _mm512_and_si512(bits, m4),
                    _mm512_and_si512(_mm512_slli_epi16::<4>(hb), m30),
                );
                let hi = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(bits), m4),
                    _mm512_and_si512(hb, m30),
                );
                let p_lo = _mm512_maddubs_epi16(lo, load512(&y.qs, 128 * n));
                let p_hi = _mm512_maddubs_epi16(hi, load512(&y.qs, 128 * n + 64));
                sumi[0] = scale_acc::<VNNI>(sumi[0], p_lo, scales[2 * n]);
                sumi[1] = scale_acc::<VNNI>(sumi[1], p_hi, scales[2 * n + 1]);
            }
            let sumi = _mm256_sub_epi32(fold_i32(_mm512_add_epi32(sumi[0], sumi[1])), offset);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum_ps256(acc)
    }
}

#[cfg(test)]
mod tests {
    //! The plain AVX-512BW kernels are only handed out on CPUs without VNNI, so the
    //! integration tests (which go through `vec_dot_for`) never see them on a VNNI CPU:
    //! here they are compared with the VNNI build (same integer sums and float order,
    //! so bit-identical) and with the scalar oracle.

    use super::*;
    use crate::quant::QuantBlock;
    use bytemuck::Zeroable;

    /// A deterministic row with a spread of magnitudes, an outlier and a zero block.
    fn row(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * (1 + s % 7) as f32
            })
            .collect();
        v[n / 3] *= 40.0;
        v[..256].fill(0.0);
        v
    }

    fn check<B: QuantBlock<Act = BlockQ8_K>>(
        plain: fn(&[B], &[BlockQ8_K]) -> f32,
        vnni: fn(&[B], &[BlockQ8_K]) -> f32,
    ) {
        for nb in 1..=5 {
            let mut w = vec![B::zeroed(); nb];
            B::quantize(&row(nb * 256, nb as u32), &mut w);
            let mut x = vec![BlockQ8_K::zeroed(); nb];
            BlockQ8_K::quantize_act(&row(nb * 256, 100 + nb as u32), &mut x);
            let want = B::vec_dot(&w, &x);
            let got = plain(&w, &x);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{}: {got} vs scalar {want}",
                B::TYPE
            );
            if has_avx512_vnni() {
                assert_eq!(
                    got.to_bits(),
                    vnni(&w, &x).to_bits(),
                    "{}: plain vs VNNI",
                    B::TYPE
                );
            }
        }
    }

    #[test]
    fn plain_avx512_kernels_match_vnni_and_scalar() {
        if !Isa::Avx512.is_supported() {
            eprintln!("no AVX-512 on this CPU: the AVX-512 K-quant kernels cannot run here");
            return;
        }
        // SAFETY (all closures): AVX-512 F/BW/VL checked above, VNNI checked in `check`
        // before the VNNI kernel is called.
        check::<BlockQ2_K>(
            |w, x| unsafe { dot_q2_k(w, x) },
            |w, x| unsafe { dot_q2_k_vnni(w, x) },
        );
        check::<BlockQ3_K>(
            |w, x| unsafe { dot_q3_k(w, x) },
            |w, x| unsafe { dot_q3_k_vnni(w, x) },
        );
        check::<BlockQ4_K>(
            |w, x| unsafe { dot_q4_k(w, x) },
            |w, x| unsafe { dot_q4_k_vnni(w, x) },
        );
        check::<BlockQ5_K>(
            |w, x| unsafe { dot_q5_k(w, x) },
            |w, x| unsafe { dot_q5_k_vnni(w, x) },
        );
        check::<BlockQ6_K>(
            |w, x| unsafe { dot_q6_k(w, x) },
            |w, x| unsafe { dot_q6_k_vnni(w, x) },
        );
    }
}
