//! AVX-512 (F/BW/VL, with VNNI when present) dot products for the 32-element formats
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL), IQ4_XS and the float types.
//!
//! Two 32-element blocks fill one 512-bit register; their integer sums are scaled by
//! `[d0 x 8, d1 x 8]` and accumulated in `f32`. An odd last block is paired with itself
//! and a zero scale. Each kernel body is written once and instantiated twice, with the
//! integer primitives `D: Dot` being `vpdpbusd` (VNNI) or `vpmaddubsw` + `vpmaddwd`
//! (plain AVX-512BW). Each public
//! function returns the kernel only when the CPU has the features, so the `unsafe` calls
//! inside the returned closures are sound.

use super::avx2_kquants::prefetch_far;
use crate::cpu::isa::{has_avx512_vnni, Isa};
use crate::quant::{
    BlockIQ4_NL, BlockIQ4_XS, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
    BlockQ8_K, VecDot,
};
use half::{bf16, f16};
use std::arch::x86_64::*;

/// IQ4_NL's levels as bytes, for `vpshufb` lookups.
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Integer dot-product primitives over 512 bits; every method is `unsafe` because it
/// needs the CPU features of the kernel it is inlined into.
trait Dot {
    /// Whether the kernel runs with AVX-512 VNNI.
    const VNNI: bool;
    /// Per `i32` lane: the sum of 4 products of unsigned bytes `u` (< 128) with signed `y`.
    unsafe fn dot_u8(u: __m512i, y: __m512i) -> __m512i;
    /// Per `i32` lane: the sum of 4 products `(u - off) * y`, with `u, off < 128`.
    unsafe fn dot_u8_offset(u: __m512i, off: __m512i, y: __m512i) -> __m512i;
    /// Per `i32` lane: the sum of 4 products of signed bytes `w * y`.
    unsafe fn dot_i8(w: __m512i, y: __m512i) -> __m512i;
    /// `acc` plus, per `i32` lane, the sum of 2 products of `i16` lanes `a * b`.
    unsafe fn madd_i16(acc: __m512i, a: __m512i, b: __m512i) -> __m512i;
}

/// AVX-512 VNNI (`vpdpbusd`, `vpdpwssd`).
struct Vnni;
/// Plain AVX-512BW (`vpmaddubsw`, `vpmaddwd`).
struct Bw;

/// `|w|` as unsigned bytes and `y` carrying the sign of `w` (so `|w| * y' = w * y`).
#[inline(always)]
unsafe fn sign_split(w: __m512i, y: __m512i) -> (__m512i, __m512i) {
    // SAFETY (all intrinsics here): the caller runs with AVX-512F/BW.
    unsafe {
        let negative = _mm512_movepi8_mask(w);
        (
            _mm512_abs_epi8(w),
            _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y),
        )
    }
}

impl Dot for Vnni {
    const VNNI: bool = true;
    #[inline(always)]
    unsafe fn dot_u8(u: __m512i, y: __m512i) -> __m512i {
        // SAFETY: inlined into kernels compiled with AVX-512 VNNI.
        unsafe { _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, y) }
    }
    #[inline(always)]
    unsafe fn dot_u8_offset(u: __m512i, off: __m512i, y: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe { _mm512_sub_epi32(Self::dot_u8(u, y), Self::dot_u8(off, y)) }
    }
    #[inline(always)]
    unsafe fn dot_i8(w: __m512i, y: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe {
            let (a, s) = sign_split(w, y);
            Self::dot_u8(a, s)
        }
    }
    #[inline(always)]
    unsafe fn madd_i16(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe { _mm512_dpwssd_epi32(acc, a, b) }
    }
}

impl Dot for Bw {
    const VNNI: bool = false;
    #[inline(always)]
    unsafe fn dot_u8(u: __m512i, y: __m512i) -> __m512i {
        // SAFETY: inlined into kernels compiled with AVX-512F/BW.
        unsafe { _mm512_madd_epi16(_mm512_maddubs_epi16(u, y), _mm512_set1_epi16(1)) }
    }
    #[inline(always)]
    unsafe fn dot_u8_offset(u: __m512i, off: __m512i, y: __m512i) -> __m512i {
        // SAFETY: as above. Both 16-bit pair sums stay below 2 * 127 * 128.
        unsafe {
            let diff = _mm512_sub_epi16(_mm512_maddubs_epi16(u, y), _mm512_maddubs_epi16(off, y));
            _mm512_madd_epi16(diff, _mm512_set1_epi16(1))
        }
    }
    #[inline(always)]
    unsafe fn dot_i8(w: __m512i, y: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe {
            let (a, s) = sign_split(w, y);
            Self::dot_u8(a, s)
        }
    }
    #[inline(always)]
    unsafe fn madd_i16(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe { _mm512_add_epi32(acc, _mm512_madd_epi16(a, b)) }
    }
}

/// Defines `$name()`, returning the VNNI or the BW instance of the kernel `$body` (or
/// `None` without AVX-512), and `mod $module` with both instances. The body is pasted
/// into each `#[target_feature]` function with `D` naming its [`Dot`], so that the
/// closures it defines inherit the features.
macro_rules! avx512_kernel {
    ($(#[$doc:meta])* $name:ident, $module:ident, |$w:ident: $wt:ty, $x:ident: $xt:ty| $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name() -> Option<VecDot<$wt>> {
            if !Isa::Avx512.is_supported() {
                return None;
            }
            if has_avx512_vnni() {
                Some(|w: &[$wt], x: &[$xt]| {
                    // SAFETY: handed out only after AVX-512F/BW/VL, VNNI, AVX2, FMA and
                    // F16C were detected; reads only `min(w.len(), x.len())` blocks.
                    unsafe { $module::vnni(w, x) }
                })
            } else {
                Some(|w: &[$wt], x: &[$xt]| {
                    // SAFETY: handed out only after AVX-512F/BW/VL, AVX2, FMA and F16C
                    // were detected; reads only `min(w.len(), x.len())` blocks.
                    unsafe { $module::bw(w, x) }
                })
            }
        }

        mod $module {
            use super::*;

            /// The kernel with AVX-512 VNNI.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            pub(super) unsafe fn vnni($w: &[$wt], $x: &[$xt]) -> f32 {
                #[allow(dead_code)]
                type D = Vnni;
                // SAFETY: the features the body needs are enabled here; it reads only
                // `min(w.len(), x.len())` blocks.
                unsafe { $body }
            }

            /// The kernel without VNNI.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            pub(super) unsafe fn bw($w: &[$wt], $x: &[$xt]) -> f32 {
                #[allow(dead_code)]
                type D = Bw;
                // SAFETY: as above.
                unsafe { $body }
            }
        }
    };
}

avx512_kernel!(
    /// F32 x F32.
    f32, f32_kernel, |w: f32, x: f32| { dot_floats(w, x, |p, m| _mm512_maskz_loadu_ps(m, p)) }
);
avx512_kernel!(
    /// F16 x F16 (products exact in `f32`).
    f16, f16_kernel, |w: f16, x: f16| {
        dot_floats(w, x, |p, m| _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.cast())))
    }
);
avx512_kernel!(
    /// BF16 x BF16 (products exact in `f32`).
    bf16, bf16_kernel, |w: bf16, x: bf16| {
        dot_floats(w, x, |p, m| {
            let h = _mm256_maskz_loadu_epi16(m, p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        })
    }
);
avx512_kernel!(
    /// Q8_0 x Q8_0.
    q8_0, q8_0_kernel, |w: BlockQ8_0, x: BlockQ8_0| {
        pairs_q8_0(w, x, |b| b.d, |a, b, y| D::dot_i8(load_pair(&a.qs, &b.qs), y))
    }
);
avx512_kernel!(
    /// Q4_0 x Q8_0.
    q4_0, q4_0_kernel, |w: BlockQ4_0, x: BlockQ8_0| {
        let eight = _mm512_set1_epi8(8);
        pairs_q8_0(w, x, |b| b.d, |a, b, y| {
            D::dot_u8_offset(nibble_pair(&a.qs, &b.qs), eight, y)
        })
    }
);
avx512_kernel!(
    /// Q5_0 x Q8_0.
    q5_0, q5_0_kernel, |w: BlockQ5_0, x: BlockQ8_0| {
        let sixteen = _mm512_set1_epi8(16);
        pairs_q8_0(w, x, |b| b.d, |a, b, y| {
            let u = _mm512_or_si512(nibble_pair(&a.qs, &b.qs), fifth_bits(a.qh, b.qh));
            D::dot_u8_offset(u, sixteen, y)
        })
    }
);
avx512_kernel!(
    /// IQ4_NL x Q8_0.
    iq4_nl, iq4_nl_kernel, |w: BlockIQ4_NL, x: BlockQ8_0| {
        let table = iq4_table();
        pairs_q8_0(w, x, |b| b.d, |a, b, y| {
            D::dot_i8(_mm512_shuffle_epi8(table, nibble_pair(&a.qs, &b.qs)), y)
        })
    }
);
avx512_kernel!(
    /// Q4_1 x Q8_1.
    q4_1, q4_1_kernel, |w: BlockQ4_1, x: BlockQ8_1| {
        pairs_q8_1(w, x, |b| (b.d, b.m), |a, b, y| D::dot_u8(nibble_pair(&a.qs, &b.qs), y))
    }
);
avx512_kernel!(
    /// Q5_1 x Q8_1.
    q5_1, q5_1_kernel, |w: BlockQ5_1, x: BlockQ8_1| {
        pairs_q8_1(w, x, |b| (b.d, b.m), |a, b, y| {
            D::dot_u8(_mm512_or_si512(nibble_pair(&a.qs, &b.qs), fifth_bits(a.qh, b.qh)), y)
        })
    }
);
avx512_kernel!(
    /// IQ4_XS x Q8_K (with VNNI: `avx512_iq4_xs`).
    iq4_xs, iq4_xs_kernel, |w: BlockIQ4_XS, x: BlockQ8_K| {
        if D::VNNI {
            crate::cpu::x86_64::avx512_iq4_xs::dot_iq4_xs_vnni(w, x)
        } else {
            dot_iq4_xs(w, x, |sums, products, scales| D::madd_i16(sums, products, scales))
        }
    }
);

/// Two `f16` bit patterns in one `i32` (`a` low).
#[inline(always)]
fn pack(a: f16, b: f16) -> i32 {
    (a.to_bits() as u32 | (b.to_bits() as u32) << 16) as i32
}

/// The scale vector `[w0 * x0 x 8, w1 * x1 x 8]` of two block pairs.
#[inline(always)]
unsafe fn scales(w0: f16, x0: f16, w1: f16, x1: f16) -> __m512 {
    // SAFETY (all intrinsics): the caller runs with AVX-512F and F16C.
    unsafe {
        let f = _mm_cvtph_ps(_mm_set_epi32(0, 0, pack(w1, x1), pack(w0, x0)));
        let p = _mm_mul_ps(f, _mm_movehdup_ps(f));
        let idx = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(p))
    }
}

/// The 64 quant bytes of two blocks' `[i8; 32]` arrays, side by side.
#[inline(always)]
unsafe fn load_pair(a: &[i8; 32], b: &[i8; 32]) -> __m512i {
    // SAFETY: two 32-byte arrays, unaligned loads; the caller runs with AVX-512F.
    unsafe {
        let lo = _mm256_loadu_si256(a.as_ptr().cast());
        _mm512_inserti64x4(
            _mm512_castsi256_si512(lo),
            _mm256_loadu_si256(b.as_ptr().cast()),
            1,
        )
    }
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

/// Byte `i` of the result is 0x10 where bit `i` of `qa | qb << 32` is set.
#[inline(always)]
unsafe fn fifth_bits(qa: [u8; 4], qb: [u8; 4]) -> __m512i {
    let bits = u32::from_le_bytes(qa) as u64 | (u32::from_le_bytes(qb) as u64) << 32;
    // SAFETY: the caller runs with AVX-512F/BW.
    unsafe { _mm512_maskz_set1_epi8(bits, 0x10) }
}

/// The 16-entry IQ4_NL table in every 128-bit lane.
#[inline(always)]
unsafe fn iq4_table() -> __m512i {
    // SAFETY: IQ4_VALUES is 16 readable bytes; the caller runs with AVX-512F.
    unsafe { _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_VALUES.as_ptr().cast())) }
}

/// One pair of Q8_0-activation blocks: `acc + dot(w0, w1, y) * [d0 x 8, d1 x 8]`, with
/// `d1 = 0` when `last` (an odd final block paired with itself).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pair_q8_0<W>(
    acc: __m512,
    (w0, w1): (&W, &W),
    (x0, x1): (&BlockQ8_0, &BlockQ8_0),
    last: bool,
    d: &impl Fn(&W) -> f16,
    dot: &impl Fn(&W, &W, __m512i) -> __m512i,
) -> __m512 {
    // SAFETY (all intrinsics): the caller runs with AVX-512F/BW and F16C.
    unsafe {
        let s = if last {
            scales(d(w0), x0.d, f16::ZERO, f16::ZERO)
        } else {
            scales(d(w0), x0.d, d(w1), x1.d)
        };
        let sums = dot(w0, w1, load_pair(&x0.qs, &x1.qs));
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), s, acc)
    }
}

/// Shared loop of the Q8_0-activation formats: `dot(w0, w1, y)` gives the 16 `i32`
/// partial sums of two weight blocks with their 64 activation quants `y`.
#[inline(always)]
unsafe fn pairs_q8_0<W>(
    w: &[W],
    x: &[BlockQ8_0],
    d: impl Fn(&W) -> f16,
    dot: impl Fn(&W, &W, __m512i) -> __m512i,
) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY (all intrinsics and unchecked indexing below): the caller runs with
    // AVX-512F/BW and F16C; every block index is below `n`, at most both lengths.
    unsafe {
        let wb = |i: usize| w.get_unchecked(i);
        let xb = |i: usize| x.get_unchecked(i);
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 4 <= n {
            prefetch_far(wb(i), 4);
            acc0 = pair_q8_0(
                acc0,
                (wb(i), wb(i + 1)),
                (xb(i), xb(i + 1)),
                false,
                &d,
                &dot,
            );
            acc1 = pair_q8_0(
                acc1,
                (wb(i + 2), wb(i + 3)),
                (xb(i + 2), xb(i + 3)),
                false,
                &d,
                &dot,
            );
            i += 4;
        }
        if i + 2 <= n {
            acc0 = pair_q8_0(
                acc0,
                (wb(i), wb(i + 1)),
                (xb(i), xb(i + 1)),
                false,
                &d,
                &dot,
            );
            i += 2;
        }
        if i < n {
            acc1 = pair_q8_0(acc1, (wb(i), wb(i)), (xb(i), xb(i)), true, &d, &dot);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }
}

/// Shared loop of the Q8_1-activation formats: `dot(w0, w1, y)` gives the 16 `i32`
/// partial sums of two weight blocks with their 64 activation quants `y`, `dm(w)` a
/// block's scale and minimum.
#[inline(always)]
unsafe fn pairs_q8_1<W>(
    w: &[W],
    x: &[BlockQ8_1],
    dm: impl Fn(&W) -> (f16, f16),
    dot: impl Fn(&W, &W, __m512i) -> __m512i,
) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY (all intrinsics and unchecked indexing below): the caller runs with
    // AVX-512F/BW and F16C; every block index is below `n`, at most both lengths.
    unsafe {
        let idx = _mm512_set_epi32(4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = _mm512_setzero_ps();
        let mut mins = _mm256_setzero_ps();
        let mut i = 0;
        while i < n {
            let j = if i + 1 < n { i + 1 } else { i };
            prefetch_far(w.get_unchecked(i), 2);
            let (w0, w1) = (w.get_unchecked(i), w.get_unchecked(j));
            let (x0, x1) = (x.get_unchecked(i), x.get_unchecked(j));
            let (d0, m0) = dm(w0);
            let (d1, m1) = if j > i {
                dm(w1)
            } else {
                (f16::ZERO, f16::ZERO)
            };
            // [d0, m0, xd0, xs0, d1, m1, xd1, xs1] -> d * xd in lanes 0 and 4, m * s in 1 and 5.
            let halves = _mm_set_epi32(
                pack(x1.d, x1.s),
                pack(d1, m1),
                pack(x0.d, x0.s),
                pack(d0, m0),
            );
            let f = _mm256_cvtph_ps(halves);
            let p = _mm256_mul_ps(f, _mm256_permute_ps(f, 0b11_10_11_10));
            mins = _mm256_add_ps(mins, p);
            let s = _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(p));
            let sums = dot(w0, w1, load_pair(&x0.qs, &x1.qs));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), s, acc);
            i += 2;
        }
        let m = _mm_add_ps(_mm256_castps256_ps128(mins), _mm256_extractf128_ps(mins, 1));
        _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(_mm_movehdup_ps(m))
    }
}

/// IQ4_XS x Q8_K without VNNI; `madd(acc, products, scales)` adds the pairwise sums of the 16-bit
/// products weighted by the 16-bit block scales.
#[inline(always)]
unsafe fn dot_iq4_xs(
    w: &[BlockIQ4_XS],
    x: &[BlockQ8_K],
    madd: impl Fn(__m512i, __m512i, __m512i) -> __m512i,
) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY (all intrinsics, unchecked indexing and pointer offsets below): the caller
    // runs with AVX-512F/BW and F16C; block indices stay below `n`; the offsets stay
    // inside the 128-byte `qs` of the weight block (16 * (ib + 2) <= 128) and the
    // 256-byte `qs` of the activation block (32 * (ib + 2) <= 256).
    unsafe {
        let table = iq4_table();
        let mut acc = _mm512_setzero_ps();
        for i in 0..n {
            let (wb, xb) = (w.get_unchecked(i), x.get_unchecked(i));
            prefetch_far(wb, 1);
            let mut sums = _mm512_setzero_si512();
            for ib in (0..8).step_by(2) {
                let q = wb.qs.as_ptr().add(16 * ib);
                let nib = nibble_pair(&*q.cast::<[u8; 16]>(), &*q.add(16).cast::<[u8; 16]>());
                let v = _mm512_shuffle_epi8(table, nib);
                let y = _mm512_loadu_si512(xb.qs.as_ptr().add(32 * ib).cast());
                let (a, s) = sign_split(v, y);
                let products = _mm512_maddubs_epi16(a, s);
                let lo = (wb.block_scale(ib) - 32) as i16;
                let hi = (wb.block_scale(ib + 1) - 32) as i16;
                let block_scales = _mm512_mask_set1_epi16(_mm512_set1_epi16(lo), 0xffff_0000, hi);
                sums = madd(sums, products, block_scales);
            }
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(wb.d.to_bits() as i32))) * xb.d;
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sums), acc);
        }
        _mm512_reduce_add_ps(acc)
    }
}

/// Shared loop of the float formats: `load(p, mask)` converts 16 elements at `p` (only
/// the lanes in `mask`) to `f32`.
#[inline(always)]
unsafe fn dot_floats<T>(w: &[T], x: &[T], load: impl Fn(*const T, u16) -> __m512) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY (all intrinsics below): the caller runs with AVX-512F/BW/VL and F16C; full
    // loads cover `i..i + 16 <= n`, the last one is masked to the remaining lanes.
    unsafe {
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            prefetch_far(w.get_unchecked(i), 64);
            for (k, a) in acc.iter_mut().enumerate() {
                let o = i + 16 * k;
                *a = _mm512_fmadd_ps(load(pw.add(o), 0xffff), load(px.add(o), 0xffff), *a);
            }
            i += 64;
        }
        while i < n {
            let mask = if n - i >= 16 {
                0xffff
            } else {
                (1u16 << (n - i)) - 1
            };
            acc[0] = _mm512_fmadd_ps(load(pw.add(i), mask), load(px.add(i), mask), acc[0]);
            i += 16;
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(test)]
mod tests {
    //! The BW instances against the scalar references (the public selector returns the
    //! VNNI instance on CPUs that have it, so the integration tests never reach these).

    use super::*;
    use crate::quant::QuantBlock;

    fn rows(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                if i % 97 == 0 {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }

    fn check<B: QuantBlock>(bw: unsafe fn(&[B], &[B::Act]) -> f32) {
        for blocks in [1usize, 2, 3, 5, 8, 13] {
            let n = blocks * 256;
            let mut w = vec![B::zeroed(); n / B::ELEMS];
            let mut x =
                vec![<B::Act as bytemuck::Zeroable>::zeroed(); n / <B::Act as QuantBlock>::ELEMS];
            B::quantize(&rows(n, 1), &mut w);
            <B::Act as QuantBlock>::quantize_act(&rows(n, 2), &mut x);
            let want = B::vec_dot(&w, &x);
            // SAFETY: the test runs only where the CPU has AVX-512 (checked by the caller).
            let got = unsafe { bw(&w, &x) };
            let tol = 1e-5 * (want.abs() + 1.0);
            assert!(
                (got - want).abs() <= tol,
                "{:?} {blocks}: {got} vs {want}",
                B::TYPE
            );
        }
    }

    #[test]
    fn bw_kernels_match_scalar() {
        if !Isa::Avx512.is_supported() {
            return;
        }
        check::<f32>(f32_kernel::bw);
        check::<f16>(f16_kernel::bw);
        check::<bf16>(bf16_kernel::bw);
        check::<BlockQ4_0>(q4_0_kernel::bw);
        check::<BlockQ4_1>(q4_1_kernel::bw);
        check::<BlockQ5_0>(q5_0_kernel::bw);
        check::<BlockQ5_1>(q5_1_kernel::bw);
        check::<BlockQ8_0>(q8_0_kernel::bw);
        check::<BlockIQ4_NL>(iq4_nl_kernel::bw);
        check::<BlockIQ4_XS>(iq4_xs_kernel::bw);
    }
}
