//! The SIMD twin of [`super::sum_dim_scalar`]: AVX2, F16C and FMA.

use super::{KeyWeight, Sums, Values};
use gemma_kernels::quant::{BlockQ8_0, QuantBlock};
use std::arch::x86_64::*;

/// Keys ahead of the current ones whose values a pass requests into L1 in every row
/// it reads, every 32 keys: its rows are many short streams, which the hardware
/// prefetchers do not follow (a 4692-key F16 step: 440 -> 196 us).
const PREFETCH_AHEAD: usize = 64;

/// How a pass adds a key to its sums.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// F16 sums, the multiply-add fused in f32.
    F16Fused,
    /// F16 sums, the product rounded to f32 first.
    F16,
    /// f32 sums (an F32 or Q8_0 cache), unfused.
    F32,
}

/// Whether the CPU has what [`pass`] needs.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("fma")
}

/// `f16(x)` widened back to f32, lane by lane (nearest, ties to even).
#[inline]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn round_f16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// One key's step of [`super::sum_dim_scalar`] on eight dimensions.
#[inline]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn add_key(acc: __m256, v: __m256, w: KeyWeight, step: Step) -> __m256 {
    // SAFETY: the features are enabled on this function.
    unsafe {
        let vs = _mm256_set1_ps(w.vs);
        if step == Step::F32 {
            let mut acc = acc;
            if w.ms != 1.0 {
                acc = _mm256_mul_ps(acc, _mm256_set1_ps(w.ms));
            }
            return _mm256_add_ps(acc, _mm256_mul_ps(v, vs));
        }
        let mut acc = acc;
        if w.ms != 1.0 {
            acc = round_f16(_mm256_mul_ps(acc, _mm256_set1_ps(w.ms)));
        }
        round_f16(match step {
            Step::F16Fused => _mm256_fmadd_ps(v, vs, acc),
            _ => _mm256_add_ps(acc, _mm256_mul_ps(v, vs)),
        })
    }
}

/// The values of dimensions `d0..d0 + 8` in slots `slot..slot + 8`, as f32, one
/// vector per slot (an 8 x 8 transpose).
#[inline]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn transposed(s: &Sums, d0: usize, slot: usize) -> [__m256; 8] {
    match s.values {
        Values::F16(_) => {
            let mut r = [_mm_setzero_si128(); 8];
            for (i, r) in r.iter_mut().enumerate() {
                let src = &s.row16(d0 + i)[slot..slot + 8];
                // SAFETY: `src` holds the eight F16 values (16 bytes) loaded.
                *r = unsafe { _mm_loadu_si128(src.as_ptr().cast()) };
            }
            transpose_f16(r)
        }
        Values::F32(_) => {
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, r) in r.iter_mut().enumerate() {
                let src = &s.row32(d0 + i)[slot..slot + 8];
                // SAFETY: `src` holds the eight f32 values (32 bytes) loaded.
                *r = unsafe { _mm256_loadu_ps(src.as_ptr()) };
            }
            transpose_f32(r)
        }
        Values::Q8_0(_) => {
            let mut out = [_mm256_setzero_ps(); 8];
            for (k, out) in out.iter_mut().enumerate() {
                // SAFETY: the features are enabled on this function.
                *out = unsafe { column(s, d0, slot + k) };
            }
            out
        }
    }
}

/// `r[i][k]` (eight F16 values per vector) as `out[k][i]`, widened to f32.
#[inline]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn transpose_f16(r: [__m128i; 8]) -> [__m256; 8] {
    let a0 = _mm_unpacklo_epi16(r[0], r[1]);
    let a1 = _mm_unpackhi_epi16(r[0], r[1]);
    let a2 = _mm_unpacklo_epi16(r[2], r[3]);
    let a3 = _mm_unpackhi_epi16(r[2], r[3]);
    let a4 = _mm_unpacklo_epi16(r[4], r[5]);
    let a5 = _mm_unpackhi_epi16(r[4], r[5]);
    let a6 = _mm_unpacklo_epi16(r[6], r[7]);
    let a7 = _mm_unpackhi_epi16(r[6], r[7]);
    let b0 = _mm_unpacklo_epi32(a0, a2);
    let b1 = _mm_unpackhi_epi32(a0, a2);
    let b2 = _mm_unpacklo_epi32(a1, a3);
    let b3 = _mm_unpackhi_epi32(a1, a3);
    let b4 = _mm_unpacklo_epi32(a4, a6);
    let b5 = _mm_unpackhi_epi32(a4, a6);
    let b6 = _mm_unpacklo_epi32(a5, a7);
    let b7 = _mm_unpackhi_epi32(a5, a7);
    [
        _mm256_cvtph_ps(_mm_unpacklo_epi64(b0, b4)),
        _mm256_cvtph_ps(_mm_unpackhi_epi64(b0, b4)),
        _mm256_cvtph_ps(_mm_unpacklo_epi64(b1, b5)),
        _mm256_cvtph_ps(_mm_unpackhi_epi64(b1, b5)),
        _mm256_cvtph_ps(_mm_unpacklo_epi64(b2, b6)),
        _mm256_cvtph_ps(_mm_unpackhi_epi64(b2, b6)),
        _mm256_cvtph_ps(_mm_unpacklo_epi64(b3, b7)),
        _mm256_cvtph_ps(_mm_unpackhi_epi64(b3, b7)),
    ]
}

/// `r[i][k]` (eight f32 per vector) as `out[k][i]`.
#[inline]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn transpose_f32(r: [__m256; 8]) -> [__m256; 8] {
    let a0 = _mm256_unpacklo_ps(r[0], r[1]);
    let a1 = _mm256_unpackhi_ps(r[0], r[1]);
    let a2 = _mm256_unpacklo_ps(r[2], r[3]);
    let a3 = _mm256_unpackhi_ps(r[2], r[3]);
    let a4 = _mm256_unpacklo_ps(r[4], r[5]);
    let a5 = _mm256_unpackhi_ps(r[4], r[5]);
    let a6 = _mm256_unpacklo_ps(r[6], r[7]);
    let a7 = _mm256_unpackhi_ps(r[6], r[7]);
    let b0 = _mm256_shuffle_ps::<0x44>(a0, a2);
    let b1 = _mm256_shuffle_ps::<0xEE>(a0, a2);
    let b2 = _mm256_shuffle_ps::<0x44>(a1, a3);
    let b3 = _mm256_shuffle_ps::<0xEE>(a1, a3);
    let b4 = _mm256_shuffle_ps::<0x44>(a4, a6);
    let b5 = _mm256_shuffle_ps::<0xEE>(a4, a6);
    let b6 = _mm256_shuffle_ps::<0x44>(a5, a7);
    let b7 = _mm256_shuffle_ps::<0xEE>(a5, a7);
    [
        _mm256_permute2f128_ps::<0x20>(b0, b4),
        _mm256_permute2f128_ps::<0x20>(b1, b5),
        _mm256_permute2f128_ps::<0x20>(b2, b6),
        _mm256_permute2f128_ps::<0x20>(b3, b7),
        _mm256_permute2f128_ps::<0x31>(b0, b4),
        _mm256_permute2f128_ps::<0x31>(b1, b5),
        _mm256_permute2f128_ps::<0x31>(b2, b6),
        _mm256_permute2f128_ps::<0x31>(b3, b7),
    ]
}

/// The values of dimensions `d0..d0 + 8` in one slot, as f32.
#[inline]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn column(s: &Sums, d0: usize, slot: usize) -> __m256 {
    match s.values {
        Values::F16(_) => {
            let mut bits = [0u16; 8];
            for (i, b) in bits.iter_mut().enumerate() {
                *b = s.row16(d0 + i)[slot].to_bits();
            }
            // SAFETY: `bits` holds the eight u16 (16 bytes) loaded.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(bits.as_ptr().cast()) })
        }
        Values::F32(_) => {
            let mut values = [0f32; 8];
            for (i, v) in values.iter_mut().enumerate() {
                *v = s.row32(d0 + i)[slot];
            }
            // SAFETY: `values` holds the eight f32 loaded.
            unsafe { _mm256_loadu_ps(values.as_ptr()) }
        }
        Values::Q8_0(blocks) => {
            // `d0` is a multiple of 8: the eight values lie in one block.
            let b = s.block(blocks, slot, d0);
            let at = d0 % BlockQ8_0::ELEMS;
            let quants = &b.qs[at..at + 8];
            // SAFETY: `quants` holds the eight bytes loaded.
            let q = unsafe { _mm_loadl_epi64(quants.as_ptr().cast()) };
            let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_mul_ps(q, _mm256_set1_ps(b.d.to_f32()))
        }
    }
}

/// Requests the values of dimensions `dims` at slot `slot` into L1: one line for
/// F16 values (32 keys), two for f32 ones, none for Q8_0 rows.
#[inline]
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn prefetch(s: &Sums, dims: std::ops::Range<usize>, slot: usize) {
    // A prefetch is only a hint: it never faults, whatever the address.
    for d in dims {
        match s.values {
            Values::F16(_) => {
                let line = s.row16(d).as_ptr().wrapping_add(slot);
                _mm_prefetch::<_MM_HINT_T0>(line.cast());
            }
            Values::F32(_) => {
                let line = s.row32(d).as_ptr().wrapping_add(slot);
                _mm_prefetch::<_MM_HINT_T0>(line.cast());
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(16).cast());
            }
            // Rows of blocks: strided reads that the hardware prefetchers follow.
            Values::Q8_0(_) => {}
        }
    }
}

/// Phase 2 for query heads `j0..j0 + H` and dimensions `d0..d0 + 8 * C` (a whole
/// pass of [`super::Plan`], all fused or all not), written to `out` as
/// `[head][8 * C]`: `H * C` independent sums per key.
///
/// # Safety
/// The CPU must support AVX2, F16C and FMA.
#[target_feature(enable = "avx2,f16c,fma")]
pub(super) unsafe fn pass<const H: usize, const C: usize>(
    s: &Sums,
    j0: usize,
    d0: usize,
    out: &mut [f32],
) {
    let step = match s.values {
        Values::F32(_) | Values::Q8_0(_) => Step::F32,
        Values::F16(_) if d0 < s.body => Step::F16Fused,
        Values::F16(_) => Step::F16,
    };
    let mut acc = [[_mm256_setzero_ps(); C]; H];
    let mut merged = [[_mm256_setzero_ps(); C]; H];
    // The values of eight keys: `x[key][block of eight dimensions]`.
    let mut x = [[_mm256_setzero_ps(); C]; 8];
    for span in s.spans {
        let mut i = 0;
        while i + 8 <= span.len {
            if i % 32 == 0 {
                // SAFETY: the features are enabled on this function.
                unsafe { prefetch(s, d0..d0 + 8 * C, span.slot + i + PREFETCH_AHEAD) };
            }
            for c in 0..C {
                // SAFETY: as above.
                let keys = unsafe { transposed(s, d0 + 8 * c, span.slot + i) };
                for (x, v) in x.iter_mut().zip(keys) {
                    x[c] = v;
                }
            }
            for (k, x) in x.iter().enumerate() {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let w = s.weights(j0 + j)[span.key + i + k];
                    for (acc, &x) in acc.iter_mut().zip(x) {
                        // SAFETY: as above.
                        *acc = unsafe { add_key(*acc, x, w, step) };
                    }
                }
            }
            i += 8;
        }
        for k in i..span.len {
            for (c, x) in x[0].iter_mut().enumerate() {
                // SAFETY: as above.
                *x = unsafe { column(s, d0 + 8 * c, span.slot + k) };
            }
            for (j, acc) in acc.iter_mut().enumerate() {
                let w = s.weights(j0 + j)[span.key + k];
                for (acc, &x) in acc.iter_mut().zip(&x[0]) {
                    // SAFETY: as above.
                    *acc = unsafe { add_key(*acc, x, w, step) };
                }
            }
        }
        if span.ends_run {
            for (j, (acc, merged)) in acc.iter_mut().zip(&mut merged).enumerate() {
                let m = s.merges(j0 + j)[span.run];
                for (acc, merged) in acc.iter_mut().zip(merged.iter_mut()) {
                    if !m.skip {
                        let kept = _mm256_mul_ps(*merged, _mm256_set1_ps(m.old));
                        let run = _mm256_mul_ps(*acc, _mm256_set1_ps(m.new));
                        *merged = _mm256_add_ps(kept, run);
                    }
                    *acc = _mm256_setzero_ps();
                }
            }
        }
    }
    for (j, merged) in merged.iter().enumerate() {
        let inv = _mm256_set1_ps(s.inv[j0 + j]);
        for (c, merged) in merged.iter().enumerate() {
            let dst = &mut out[j * 8 * C + 8 * c..j * 8 * C + 8 * c + 8];
            // SAFETY: `dst` holds the eight f32 stored.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), _mm256_mul_ps(*merged, inv)) };
        }
    }
}
