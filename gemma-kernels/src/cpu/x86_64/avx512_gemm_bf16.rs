//! BF16 weights times BF16 activations with AVX-512 BF16 (`vdpbf16ps`) for the
//! sixteen-row GEMM of `avx512_gemm_float`, on CPUs that have it and rows of an even
//! length: line `p` of a packed group holds, per row, columns `2p` and `2p + 1` as one
//! pair of BF16 values, and one `vdpbf16ps` with the token's pair broadcast adds both
//! products (exact in f32) to the row sums: half the instructions of widening to f32.

use super::avx512_gemm::{Line, Outputs, GROUP_ROWS};
use half::bf16;
use std::arch::x86_64::*;

/// Whether this CPU has AVX-512 BF16.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512bf16")
}

/// 32 BF16 values as the pair vector `vdpbf16ps` takes.
#[inline(always)]
fn as_pairs(v: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte vectors of plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// Packs up to sixteen rows of `cols` (even) BF16 values as `cols / 2` lines of pairs.
///
/// # Safety
/// The CPU must support AVX-512F and BF16; `cols` must be even and `dst` hold at least
/// `cols / 2` lines.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn pack_pairs(w: &[bf16], cols: usize, dst: &mut [Line]) {
    let rows = w.len().checked_div(cols).unwrap_or(0).min(GROUP_ROWS);
    let mask = ((1u32 << rows) - 1) as u16;
    let pairs = cols / 2;
    // SAFETY: the gather reads, for lanes `r < rows`, elements `r * cols + 2p` and
    // `+ 1 < rows * cols <= w.len()` (`cols` even); each store writes one whole line;
    // the byte offsets fit i32 (checked by the caller).
    unsafe {
        let first = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(cols as i32),
        );
        for (p, line) in dst[..pairs].iter_mut().enumerate() {
            let at = _mm512_add_epi32(first, _mm512_set1_epi32(2 * p as i32));
            let v = _mm512_mask_i32gather_epi32::<2>(
                _mm512_setzero_si512(),
                mask,
                at,
                w.as_ptr().cast(),
            );
            _mm512_store_si512(line.0.as_mut_ptr().cast(), v);
        }
    }
}

/// Tokens `t0..t0 + T` of a packed group (`x` starts at token `t0`), stored to `out`.
///
/// # Safety
/// Only for inlining into AVX-512F + BF16 functions; `packed` must hold `cols / 2`
/// lines, `x` `T` rows of `cols` (even) values from its pointer, `out` as for
/// `Gemm::run` with tokens `t0..t0 + T`.
#[inline(always)]
unsafe fn tile<const T: usize>(
    packed: *const Line,
    cols: usize,
    x: *const bf16,
    out: Outputs,
    t0: usize,
) {
    // SAFETY: guaranteed by the caller; each pair read stays inside its token's row.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; T];
        let pairs = cols / 2;
        let pair = |t: usize, p: usize| {
            let bits = x.add(t * cols + 2 * p).cast::<i32>().read_unaligned();
            as_pairs(_mm512_set1_epi32(bits))
        };
        let mut p = 0;
        while p + 2 <= pairs {
            let w0 = as_pairs(_mm512_load_si512(packed.add(p).cast()));
            let w1 = as_pairs(_mm512_load_si512(packed.add(p + 1).cast()));
            for (t, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm512_dpbf16_ps(acc[0], w0, pair(t, p));
                acc[1] = _mm512_dpbf16_ps(acc[1], w1, pair(t, p + 1));
            }
            p += 2;
        }
        if p < pairs {
            let w0 = as_pairs(_mm512_load_si512(packed.add(p).cast()));
            for (t, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm512_dpbf16_ps(acc[0], w0, pair(t, p));
            }
        }
        for (t, [a, b]) in acc.into_iter().enumerate() {
            out.store(t0 + t, _mm512_add_ps(a, b));
        }
    }
}

/// Every token of `x` (`tokens` rows of `cols` values, `cols` even) times a group packed
/// by [`pack_pairs`], eight at a time, then four, then one.
///
/// # Safety
/// The CPU must support AVX-512F and BF16; `packed` must hold `cols / 2` lines and `x`
/// `tokens * cols` values; `out` as for `Gemm::run`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn run_pairs(
    packed: &[Line],
    cols: usize,
    x: &[bf16],
    tokens: usize,
    out: Outputs,
) {
    let (p, a) = (packed.as_ptr(), x.as_ptr());
    let mut t = 0;
    // SAFETY: guaranteed by the caller; each call covers tokens `t..t + T <= tokens`.
    unsafe {
        while t + 8 <= tokens {
            tile::<8>(p, cols, a.add(t * cols), out, t);
            t += 8;
        }
        while t + 4 <= tokens {
            tile::<4>(p, cols, a.add(t * cols), out, t);
            t += 4;
        }
        while t < tokens {
            tile::<1>(p, cols, a.add(t * cols), out, t);
            t += 1;
        }
    }
}
