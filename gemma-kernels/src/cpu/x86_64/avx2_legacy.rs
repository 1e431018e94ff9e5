//! AVX2 + FMA + F16C dot products for the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, IQ4_NL), IQ4_XS and the float types.
//!
//! Integer dot products per block (`maddubs` with the sign trick for signed x signed),
//! scaled and accumulated in `f32`; two blocks per iteration into two accumulators.
//! Each public function returns the kernel only when the CPU has the features, so the
//! `unsafe` calls inside the returned closures are sound.

use super::avx2_kquants::prefetch_far;
use crate::cpu::isa::Isa;
use crate::quant::{
    BlockIQ4_NL, BlockIQ4_XS, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
    BlockQ8_K, Quantizer, VecDot,
};
use half::{bf16, f16};
use std::arch::x86_64::*;

/// IQ4_NL's levels as bytes, for `pshufb` lookups.
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

macro_rules! avx2_kernel {
    ($(#[$doc:meta])* $name:ident, $w:ty, $x:ty, $kernel:ident) => {
        $(#[$doc])*
        pub(crate) fn $name() -> Option<VecDot<$w>> {
            if !Isa::Avx2.is_supported() {
                return None;
            }
            Some(|w: &[$w], x: &[$x]| {
                // SAFETY: handed out only after the CPU was found to support AVX2, FMA
                // and F16C; the kernel reads only `min(w.len(), x.len())` blocks.
                unsafe { $kernel(w, x) }
            })
        }
    };
}

avx2_kernel!(
    /// F32 x F32.
    f32, f32, f32, dot_f32
);
avx2_kernel!(
    /// F16 x F16 (products exact in `f32`).
    f16, f16, f16, dot_f16
);
avx2_kernel!(
    /// BF16 x BF16 (products exact in `f32`).
    bf16, bf16, bf16, dot_bf16
);
avx2_kernel!(
    /// Q4_0 x Q8_0.
    q4_0, BlockQ4_0, BlockQ8_0, dot_q4_0
);
avx2_kernel!(
    /// Q4_1 x Q8_1.
    q4_1, BlockQ4_1, BlockQ8_1, dot_q4_1
);
avx2_kernel!(
    /// Q5_0 x Q8_0.
    q5_0, BlockQ5_0, BlockQ8_0, dot_q5_0
);
avx2_kernel!(
    /// Q5_1 x Q8_1.
    q5_1, BlockQ5_1, BlockQ8_1, dot_q5_1
);
avx2_kernel!(
    /// Q8_0 x Q8_0.
    q8_0, BlockQ8_0, BlockQ8_0, dot_q8_0
);
avx2_kernel!(
    /// IQ4_NL x Q8_0.
    iq4_nl, BlockIQ4_NL, BlockQ8_0, dot_iq4_nl
);
avx2_kernel!(
    /// IQ4_XS x Q8_K.
    iq4_xs, BlockIQ4_XS, BlockQ8_K, dot_iq4_xs
);

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// `(w0 * x0, w1 * x1)` of four `f16` scales, converted together.
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_pair(w0: f16, x0: f16, w1: f16, x1: f16) -> (f32, f32) {
    let pack = |a: f16, b: f16| (a.to_bits() as u32 | (b.to_bits() as u32) << 16) as i32;
    let f = _mm_cvtph_ps(_mm_set_epi32(0, 0, pack(w1, x1), pack(w0, x0)));
    let p = _mm_mul_ps(f, _mm_movehdup_ps(f));
    (_mm_cvtss_f32(p), _mm_cvtss_f32(_mm_movehl_ps(p, p)))
}

/// One `f16` scale product `w * x`.
#[target_feature(enable = "avx2,fma,f16c")]
fn scale(w: f16, x: f16) -> f32 {
    scale_pair(w, x, w, x).0
}

/// Sums of 4 adjacent signed-byte products `x * y`, as 8 `f32`.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8(x: __m256i, y: __m256i) -> __m256 {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// Sums of 4 adjacent products of unsigned bytes `u` (< 128) with signed bytes `y`.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8(u: __m256i, y: __m256i) -> __m256 {
    let p = _mm256_maddubs_epi16(u, y);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// The 32 nibbles of 16 bytes: low nibbles in the low lane, high nibbles in the high lane.
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes; unaligned load.
    let t = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Byte `i` = 0xFF where bit `i` of `bits` is set, else 0.
#[target_feature(enable = "avx2,fma,f16c")]
fn bytes_from_bits(bits: u32) -> __m256i {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let marked = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(marked, _mm256_set1_epi64x(-1))
}

/// The 32 activation quants of a block.
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(qs: &[i8; 32]) -> __m256i {
    // SAFETY: `qs` is 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

/// Shared loop of the Q8_0-activation formats: `signed(w)` gives a block's 32 signed
/// weight quants.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_blocks_q8_0<W>(
    w: &[W],
    x: &[BlockQ8_0],
    d: impl Fn(&W) -> f16,
    signed: impl Fn(&W) -> __m256i,
) -> f32 {
    let n = w.len().min(x.len());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 2 <= n {
        // SAFETY: i + 1 < n <= both lengths.
        let (w0, w1, x0, x1) = unsafe {
            (
                w.get_unchecked(i),
                w.get_unchecked(i + 1),
                x.get_unchecked(i),
                x.get_unchecked(i + 1),
            )
        };
        prefetch_far(w0, 2);
        let (d0, d1) = scale_pair(d(w0), x0.d, d(w1), x1.d);
        let p0 = dot_i8(signed(w0), load32(&x0.qs));
        let p1 = dot_i8(signed(w1), load32(&x1.qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), p0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), p1, acc1);
        i += 2;
    }
    if i < n {
        // SAFETY: i < n <= both lengths.
        let (w0, x0) = unsafe { (w.get_unchecked(i), x.get_unchecked(i)) };
        let p0 = dot_i8(signed(w0), load32(&x0.qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scale(d(w0), x0.d)), p0, acc0);
    }
    hsum(_mm256_add_ps(acc0, acc1))
}

/// Shared loop of the Q8_1-activation formats: `unsigned(w)` gives a block's 32
/// unsigned quants, `dm(w)` its scale and minimum.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_blocks_q8_1<W>(
    w: &[W],
    x: &[BlockQ8_1],
    dm: impl Fn(&W) -> (f16, f16),
    unsigned: impl Fn(&W) -> __m256i,
) -> f32 {
    let n = w.len().min(x.len());
    // acc + d * Σ q_w q_x of block i, and m * s of block i.
    let block = |acc: __m256, i: usize| {
        // SAFETY: callers pass i < n <= both lengths.
        let (w0, x0) = unsafe { (w.get_unchecked(i), x.get_unchecked(i)) };
        let (d, m) = dm(w0);
        let (dd, ms) = scale_pair(d, x0.d, m, x0.s);
        let p = dot_u8(unsigned(w0), load32(&x0.qs));
        (_mm256_fmadd_ps(_mm256_set1_ps(dd), p, acc), ms)
    };
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut mins = 0.0f32;
    let mut i = 0;
    while i + 2 <= n {
        // SAFETY: i < n <= w.len().
        prefetch_far(unsafe { w.get_unchecked(i) }, 2);
        let (a0, m0) = block(acc0, i);
        let (a1, m1) = block(acc1, i + 1);
        (acc0, acc1, mins) = (a0, a1, mins + m0 + m1);
        i += 2;
    }
    if i < n {
        let (a0, m0) = block(acc0, i);
        (acc0, mins) = (a0, mins + m0);
    }
    hsum(_mm256_add_ps(acc0, acc1)) + mins
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    dot_blocks_q8_0(w, x, |b| b.d, |b| load32(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    let eight = _mm256_set1_epi8(8);
    dot_blocks_q8_0(w, x, |b| b.d, |b| _mm256_sub_epi8(nibbles(&b.qs), eight))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5_0(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    // Without its fifth bit a quant is `nibble - 16`: OR in 0xF0 where the bit is clear.
    let high = _mm256_set1_epi8(0xf0u8 as i8);
    dot_blocks_q8_0(
        w,
        x,
        |b| b.d,
        |b| {
            let clear = _mm256_andnot_si256(bytes_from_bits(u32::from_le_bytes(b.qh)), high);
            _mm256_or_si256(nibbles(&b.qs), clear)
        },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_iq4_nl(w: &[BlockIQ4_NL], x: &[BlockQ8_0]) -> f32 {
    // SAFETY: IQ4_VALUES is 16 readable bytes.
    let table = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_VALUES.as_ptr().cast())) };
    dot_blocks_q8_0(
        w,
        x,
        |b| b.d,
        |b| _mm256_shuffle_epi8(table, nibbles(&b.qs)),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    dot_blocks_q8_1(w, x, |b| (b.d, b.m), |b| nibbles(&b.qs))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5_1(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    let bit4 = _mm256_set1_epi8(0x10);
    dot_blocks_q8_1(
        w,
        x,
        |b| (b.d, b.m),
        |b| {
            let high = _mm256_and_si256(bytes_from_bits(u32::from_le_bytes(b.qh)), bit4);
            _mm256_or_si256(nibbles(&b.qs), high)
        },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_iq4_xs(w: &[BlockIQ4_XS], x: &[BlockQ8_K]) -> f32 {
    // SAFETY: IQ4_VALUES is 16 readable bytes.
    let table = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_VALUES.as_ptr().cast())) };
    let n = w.len().min(x.len());
    let mut acc = _mm256_setzero_ps();
    for i in 0..n {
        // SAFETY: i < n <= both lengths.
        let (wb, xb) = unsafe { (w.get_unchecked(i), x.get_unchecked(i)) };
        let mut sum0 = _mm256_setzero_si256();
        let mut sum1 = _mm256_setzero_si256();
        for ib in (0..8).step_by(2) {
            // SAFETY: ib + 1 < 8: 16-byte chunks of the 128-byte `qs`, 32-byte chunks of
            // the 256-byte `qs`.
            let (q0, q1, y0, y1) = unsafe {
                let q = wb.qs.as_ptr().add(16 * ib);
                let y = xb.qs.as_ptr().add(32 * ib);
                (
                    &*q.cast::<[u8; 16]>(),
                    &*q.add(16).cast::<[u8; 16]>(),
                    &*y.cast::<[i8; 32]>(),
                    &*y.add(32).cast::<[i8; 32]>(),
                )
            };
            let v0 = _mm256_shuffle_epi8(table, nibbles(q0));
            let v1 = _mm256_shuffle_epi8(table, nibbles(q1));
            let y0 = load32(y0);
            let y1 = load32(y1);
            let p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(v0, v0), _mm256_sign_epi8(y0, v0));
            let p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(v1, v1), _mm256_sign_epi8(y1, v1));
            let s0 = _mm256_set1_epi16((wb.block_scale(ib) - 32) as i16);
            let s1 = _mm256_set1_epi16((wb.block_scale(ib + 1) - 32) as i16);
            sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(p0, s0));
            sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(p1, s1));
        }
        let d = _mm256_set1_ps(wb.d.to_f32() * xb.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_add_epi32(sum0, sum1)), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= n <= both lengths.
            let (a_w, a_x) = unsafe {
                (
                    _mm256_loadu_ps(w.as_ptr().add(i + 8 * k)),
                    _mm256_loadu_ps(x.as_ptr().add(i + 8 * k)),
                )
            };
            *a = _mm256_fmadd_ps(a_w, a_x, *a);
        }
        i += 32;
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for j in i..n {
        sum += w[j] * x[j];
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_f16(w: &[f16], x: &[f16]) -> f32 {
    let n = w.len().min(x.len());
    let load = |p: *const f16| {
        // SAFETY: callers pass pointers to 8 readable halves.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= n <= both lengths.
            let (pw, px) = unsafe { (w.as_ptr().add(i + 8 * k), x.as_ptr().add(i + 8 * k)) };
            *a = _mm256_fmadd_ps(load(pw), load(px), *a);
        }
        i += 32;
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for j in i..n {
        sum += w[j].to_f32() * x[j].to_f32();
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_bf16(w: &[bf16], x: &[bf16]) -> f32 {
    let n = w.len().min(x.len());
    let load = |p: *const bf16| {
        // SAFETY: callers pass pointers to 8 readable halves.
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= n <= both lengths.
            let (pw, px) = unsafe { (w.as_ptr().add(i + 8 * k), x.as_ptr().add(i + 8 * k)) };
            *a = _mm256_fmadd_ps(load(pw), load(px), *a);
        }
        i += 32;
    }
    let mut sum = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for j in i..n {
        sum += w[j].to_f32() * x[j].to_f32();
    }
    sum
}

macro_rules! avx2_quantizer {
    ($(#[$doc:meta])* $name:ident, $block:ty, $kernel:ident) => {
        $(#[$doc])*
        pub(crate) fn $name() -> Option<Quantizer<$block>> {
            if !Isa::Avx2.is_supported() {
                return None;
            }
            Some(|src: &[f32], out: &mut [$block]| {
                // SAFETY: handed out only after the CPU was found to support AVX2, FMA
                // and F16C; the kernel touches only whole blocks present in both slices.
                unsafe { $kernel(src, out) }
            })
        }
    };
}

avx2_quantizer!(
    /// Q8_0 activations, byte-identical to `BlockQ8_0::quantize_act`'s scalar path.
    quantize_q8_0, BlockQ8_0, quantize_q8_0_kernel
);
avx2_quantizer!(
    /// Q8_1 activations, byte-identical to `BlockQ8_1::quantize_act`'s scalar path.
    quantize_q8_1, BlockQ8_1, quantize_q8_1_kernel
);
avx2_quantizer!(
    /// Q8_K activations, byte-identical to `BlockQ8_K::quantize`.
    quantize_q8_k, BlockQ8_K, quantize_q8_k_kernel
);
avx2_quantizer!(
    /// F16 conversion with round to nearest even, identical to `half::f16::from_f32`.
    quantize_f16, f16, quantize_f16_kernel
);

/// Largest lane of `v`.
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// The 32 floats of `x` and their largest magnitude.
#[target_feature(enable = "avx2,fma,f16c")]
fn load_block(x: &[f32]) -> ([__m256; 4], f32) {
    debug_assert!(x.len() >= 32);
    // SAFETY: callers pass chunks of exactly 32 floats.
    let v = unsafe { [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.as_ptr().add(o))) };
    let abs = _mm256_set1_ps(-0.0);
    let m = v.iter().fold(_mm256_setzero_ps(), |m, &a| {
        _mm256_max_ps(m, _mm256_andnot_ps(abs, a))
    });
    (v, hmax(m))
}

/// `v * mul` rounded half to even to 8 x 4 `i32` (the rounding of `cvtps2dq` in the
/// default MXCSR mode).
#[target_feature(enable = "avx2,fma,f16c")]
fn round_block(v: [__m256; 4], mul: f32) -> [__m256i; 4] {
    let m = _mm256_set1_ps(mul);
    v.map(|a| _mm256_cvtps_epi32(_mm256_mul_ps(a, m)))
}

/// Packs 32 `i32` (saturating) into 32 bytes in order.
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_block(i: [__m256i; 4], out: &mut [i8; 32]) {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let bytes = _mm256_packs_epi16(a, b);
    let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: `out` is 32 writable bytes; unaligned store.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), ordered) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8_0_kernel(src: &[f32], out: &mut [BlockQ8_0]) {
    for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
        let (v, amax) = load_block(x);
        y.d = f16::from_f32(amax / 127.0);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        pack_block(round_block(v, id), &mut y.qs);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8_1_kernel(src: &[f32], out: &mut [BlockQ8_1]) {
    for (x, y) in src.chunks_exact(32).zip(out.iter_mut()) {
        let (v, amax) = load_block(x);
        let d = amax / 127.0;
        y.d = f16::from_f32(d);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let q = round_block(v, id);
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01)));
        y.s = f16::from_f32(d * sum as f32);
        pack_block(q, &mut y.qs);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8_k_kernel(src: &[f32], out: &mut [BlockQ8_K]) {
    for (x, y) in src.chunks_exact(256).zip(out.iter_mut()) {
        let mut blocks = [([_mm256_setzero_ps(); 4], 0.0f32); 8];
        for (b, chunk) in blocks.iter_mut().zip(x.chunks_exact(32)) {
            *b = load_block(chunk);
        }
        let amax = blocks.iter().fold(0.0f32, |m, b| m.max(b.1));
        if amax == 0.0 {
            *y = bytemuck::Zeroable::zeroed();
            continue;
        }
        // The reference keeps the first element of largest magnitude, with its sign.
        let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        if !iscale.is_finite() {
            // A subnormal maximum: ggml's bit trick, not `cvtps2dq`, defines the result.
            crate::quant::BlockQ8_K::quantize_block_scalar(x, y);
            continue;
        }
        let limit = _mm256_set1_epi32(127);
        for (ib, (v, _)) in blocks.iter().enumerate() {
            let q = round_block(*v, iscale).map(|i| _mm256_min_epi32(i, limit));
            // SAFETY: ib < 8, so the 32-byte window lies inside the 256-byte `qs`.
            let dst = unsafe { &mut *y.qs.as_mut_ptr().add(32 * ib).cast::<[i8; 32]>() };
            pack_block(q, dst);
        }
        for (sum, group) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *sum = group.iter().map(|&q| q as i16).sum();
        }
        y.d = 1.0 / iscale;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_f16_kernel(src: &[f32], out: &mut [f16]) {
    let n = src.len().min(out.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= both lengths; unaligned load and store.
        unsafe {
            let h =
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), h);
        }
        i += 8;
    }
    for j in i..n {
        out[j] = f16::from_f32(src[j]);
    }
}
