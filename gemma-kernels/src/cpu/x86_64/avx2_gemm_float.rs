//! Sixteen-row AVX2 GEMM of float weights (F32 with F32 activations: the attention
//! products of the CPU backend; F16 and BF16 with their activations widened to f32), the
//! layout of `avx512_gemm_float` (a line per column, the sixteen rows' values as f32)
//! read as two halves of eight rows (see `avx2_gemm`).
//!
//! Each token costs one FMA with its value broadcast per column of eight rows; every
//! product of two 16-bit floats is exact in f32, as in ggml's kernels.

use super::avx2_gemm::{half_ps, live_halves, store_half, HALF_ROWS};
use super::avx512_gemm::{gemm_kernels, lengths_agree, Line, Outputs, GROUP_ROWS};
use super::avx512_gemm_float::{prepare_bf16, prepare_f16, prepare_f32, EXTRA, HALF_EXTRA, LINES};
use half::{bf16, f16};
use std::arch::x86_64::*;

/// Packs up to sixteen rows of `cols` values of `bits` (4-byte F32 words or 2-byte F16 /
/// BF16 ones, `size` bytes each) into lines of f32: two masked eight-lane gathers of 32-bit
/// words per line, `widen` turning a gathered word (for 16-bit floats the value in its
/// low half, the next one in the high half) into f32. Columns a gather could read past
/// the slice in (the last of 16-bit rows) or whose offsets leave i32 are copied lane by
/// lane.
///
/// # Safety
/// Only for inlining into AVX2 functions; `bits` must hold `rows * cols * size` bytes
/// for the group's `rows` (at most sixteen).
#[inline(always)]
unsafe fn pack_body(
    bits: &[u8],
    size: usize,
    cols: usize,
    dst: &mut [Line],
    widen: impl Fn(__m256i) -> __m256,
) {
    let rows = (bits.len() / size)
        .checked_div(cols)
        .unwrap_or(0)
        .min(GROUP_ROWS);
    let gathered = match i32::try_from(cols * GROUP_ROWS * size) {
        Ok(_) if size == 4 => cols,
        Ok(_) => cols.saturating_sub(1),
        Err(_) => 0,
    };
    let word = |r: usize, c: usize| -> i32 {
        let at = (r * cols + c) * size;
        let mut w = [0u8; 4];
        w[..size].copy_from_slice(&bits[at..at + size]);
        i32::from_le_bytes(w)
    };
    // SAFETY: AVX2 enabled by the caller; the gathers read, for lanes `r < rows`, the
    // four bytes at `(r * cols + c) * size`, inside `bits` for `c < gathered`; each store
    // writes one half of a line.
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let first = _mm256_mullo_epi32(lanes, _mm256_set1_epi32((cols * size) as i32));
        for (h, base) in [0, HALF_ROWS].into_iter().enumerate() {
            let live = rows.saturating_sub(base).min(HALF_ROWS) as i32;
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(live), lanes);
            let rows_at = bits
                .as_ptr()
                .add((base * cols * size).min(bits.len()))
                .cast::<i32>();
            for (c, line) in dst[..gathered].iter_mut().enumerate() {
                let at = _mm256_add_epi32(first, _mm256_set1_epi32((c * size) as i32));
                let v = _mm256_mask_i32gather_epi32::<1>(_mm256_setzero_si256(), rows_at, at, mask);
                _mm256_store_ps(
                    line.0.as_mut_ptr().cast::<f32>().add(HALF_ROWS * h),
                    widen(v),
                );
            }
            for (c, line) in dst[..cols].iter_mut().enumerate().skip(gathered) {
                let words: [i32; HALF_ROWS] = std::array::from_fn(|r| {
                    if (r as i32) < live {
                        word(base + r, c)
                    } else {
                        0
                    }
                });
                let v = widen(_mm256_loadu_si256(words.as_ptr().cast()));
                _mm256_store_ps(line.0.as_mut_ptr().cast::<f32>().add(HALF_ROWS * h), v);
            }
        }
    }
}

/// Tokens `t0..t0 + T` of a packed group (`x` starts at token `t0`), stored to `out`,
/// one half of the rows after the other; two accumulators per token (even and odd
/// columns) to hide the FMA latency.
///
/// # Safety
/// Only for inlining into AVX2 + FMA functions; `packed` must hold `cols` lines, `x` `T`
/// rows of `cols` values from its pointer, `out` as for `Gemm::run` with tokens
/// `t0..t0 + T`.
#[inline(always)]
unsafe fn tile<const T: usize>(
    packed: *const Line,
    cols: usize,
    x: *const f32,
    out: Outputs,
    t0: usize,
) {
    // SAFETY: guaranteed by the caller; reads stay below column `cols` of `T` rows.
    unsafe {
        for h in 0..live_halves(&out) {
            let mut acc = [[_mm256_setzero_ps(); 2]; T];
            let mut c = 0;
            while c + 2 <= cols {
                let w0 = half_ps(packed.add(c), h);
                let w1 = half_ps(packed.add(c + 1), h);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let xt = x.add(t * cols + c);
                    acc[0] = _mm256_fmadd_ps(w0, _mm256_set1_ps(*xt), acc[0]);
                    acc[1] = _mm256_fmadd_ps(w1, _mm256_set1_ps(*xt.add(1)), acc[1]);
                }
                c += 2;
            }
            if c < cols {
                let w0 = half_ps(packed.add(c), h);
                for (t, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm256_fmadd_ps(w0, _mm256_set1_ps(*x.add(t * cols + c)), acc[0]);
                }
            }
            for (t, [a, b]) in acc.into_iter().enumerate() {
                store_half(&out, t0 + t, h, _mm256_add_ps(a, b));
            }
        }
    }
}

/// Every token of `a` (`tokens` rows of `cols` f32 values) times a packed group, four at
/// a time, then one.
///
/// # Safety
/// Only for inlining into AVX2 + FMA functions; `p` must point to `cols` packed lines, `a`
/// to `tokens * cols` values; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_body(p: *const Line, cols: usize, a: *const f32, tokens: usize, out: Outputs) {
    let mut t = 0;
    // SAFETY: guaranteed by the caller; each call covers tokens `t..t + T <= tokens`.
    unsafe {
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

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_f32(w: &[f32], cols: usize, dst: &mut [Line]) {
    // SAFETY: AVX2 enabled; the bytes are the rows' values. The closure inherits this
    // function's features.
    unsafe {
        pack_body(bytemuck::cast_slice(w), 4, cols, dst, |v| {
            _mm256_castsi256_ps(v)
        })
    }
}

/// # Safety
/// As [`pack_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_f16(w: &[f16], cols: usize, dst: &mut [Line]) {
    // SAFETY: as in `pack_f32`; the low halves of the words are the values.
    unsafe {
        pack_body(bytemuck::cast_slice(w), 2, cols, dst, |v| {
            let low = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
            let packed = _mm_packus_epi32(
                _mm256_castsi256_si128(low),
                _mm256_extracti128_si256::<1>(low),
            );
            _mm256_cvtph_ps(packed)
        })
    }
}

/// # Safety
/// As [`pack_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_bf16(w: &[bf16], cols: usize, dst: &mut [Line]) {
    // SAFETY: as in `pack_f32`; the low halves of the words are the values.
    unsafe {
        pack_body(bytemuck::cast_slice(w), 2, cols, dst, |v| {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v))
        })
    }
}

/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_f32(p: &[Line], cols: usize, x: &[f32], e: &[i32], n: usize, out: Outputs) {
    if lengths_agree(p, LINES, cols, x, e, EXTRA, n) {
        // SAFETY: forwarded; the lengths were checked.
        unsafe { run_body(p.as_ptr(), cols, x.as_ptr(), n, out) }
    }
}

/// The tiles over activations widened to f32 in `extra` (F16 and BF16 weights).
///
/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_half<A>(p: &[Line], cols: usize, x: &[A], e: &[i32], n: usize, out: Outputs) {
    if lengths_agree(p, LINES, cols, x, e, HALF_EXTRA, n) {
        // SAFETY: forwarded; `e` holds the `n * cols` activations as f32 bits.
        unsafe { run_body(p.as_ptr(), cols, e.as_ptr().cast(), n, out) }
    }
}

/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_f16(p: &[Line], cols: usize, x: &[f16], e: &[i32], n: usize, out: Outputs) {
    // SAFETY: forwarded from the caller.
    unsafe { run_half(p, cols, x, e, n, out) }
}

/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_bf16(p: &[Line], cols: usize, x: &[bf16], e: &[i32], n: usize, out: Outputs) {
    // SAFETY: forwarded from the caller.
    unsafe { run_half(p, cols, x, e, n, out) }
}

gemm_kernels!(
    /// The F32 x F32 sixteen-row GEMM on AVX2.
    f32_gemm: f32, f32, LINES, EXTRA, 8 => prepare_f32, pack_f32, run_f32;
    when crate::cpu::isa::Isa::Avx2.is_supported()
);
gemm_kernels!(
    /// The F16 x F16 sixteen-row GEMM on AVX2.
    f16_gemm: f16, f16, LINES, HALF_EXTRA, 8 => prepare_f16, pack_f16, run_f16;
    when crate::cpu::isa::Isa::Avx2.is_supported()
);
gemm_kernels!(
    /// The BF16 x BF16 sixteen-row GEMM on AVX2.
    bf16_gemm: bf16, bf16, LINES, HALF_EXTRA, 8 => prepare_bf16, pack_bf16, run_bf16;
    when crate::cpu::isa::Isa::Avx2.is_supported()
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::check;

    #[test]
    fn sixteen_row_gemm_matches_scalar_dot() {
        let (Some(f32s), Some(f16s), Some(bf16s)) = (f32_gemm(), f16_gemm(), bf16_gemm()) else {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        };
        // Row counts around the group and half sizes, odd column counts (the last
        // column of 16-bit rows is copied, not gathered).
        let cases = [
            (1, 1, 1),
            (16, 2, 8),
            (17, 3, 13),
            (33, 64, 5),
            (7, 257, 29),
            (9, 5, 4),
        ];
        check::<f32>(&f32s, &cases);
        check::<f16>(&f16s, &cases);
        check::<bf16>(&bf16s, &cases);
    }
}
