//! Sixteen-row AVX2 GEMM of float weights (F32 with F32 activations: the attention
//! products of the CPU backend; F16 and BF16 with their activations widened to f32), the
//! layout of `avx512_gemm_float` (a line per column, the sixteen rows' values as f32)
//! read as two halves of eight rows (see `avx2_gemm`).
//!
//! Each token costs one FMA with its value broadcast per column of eight rows; every
//! product of two 16-bit floats is exact in f32, as in ggml's kernels.

use super::avx2_gemm::{half_ps, live_halves, store_half, HALF_ROWS};
use super::avx512_gemm::{gemm_kernels, lengths_agree, transpose_rows, Line, Outputs, GROUP_ROWS};
use super::avx512_gemm_float::{prepare_bf16, prepare_f16, prepare_f32, EXTRA, HALF_EXTRA, LINES};
use half::{bf16, f16};
use std::arch::x86_64::*;

/// Packs up to sixteen rows of `cols` values into lines of f32: per sixteen columns, each
/// row's values are widened eight at a time (`widen8`, from a pointer to eight values) and
/// the sixteen rows transposed into sixteen lines in registers (`transpose_rows`); the
/// last `cols % 16` columns are set lane by lane (`widen1`). Lanes of missing rows are
/// zero. (Masked gathers, one per half line, took 18% of a 270M F16 prefill.)
///
/// # Safety
/// Only for inlining into AVX2 functions; `dst` must hold `cols` lines.
#[inline(always)]
unsafe fn pack_body<T: Copy>(
    w: &[T],
    cols: usize,
    dst: &mut [Line],
    widen8: impl Fn(*const T) -> __m256,
    widen1: impl Fn(T) -> f32,
) {
    let rows = w.len().checked_div(cols).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut widened = [[0u8; 64]; GROUP_ROWS];
    let whole = cols - cols % 16;
    for c in (0..whole).step_by(16) {
        for (r, row) in widened[..rows].iter_mut().enumerate() {
            // SAFETY: AVX2 enabled by the caller; `widen8` reads the sixteen values
            // `r * cols + c..` of row `r < rows` (`c + 16 <= cols`), inside `w`; the
            // stores write the 64 bytes of `row`.
            unsafe {
                let at = w.as_ptr().add(r * cols + c);
                let out = row.as_mut_ptr().cast::<f32>();
                _mm256_storeu_ps(out, widen8(at));
                _mm256_storeu_ps(out.add(HALF_ROWS), widen8(at.add(HALF_ROWS)));
            }
        }
        // SAFETY: AVX2 enabled by the caller; sixteen lines from column `c < cols`.
        unsafe { transpose_rows(&widened, &mut dst[c..c + 16]) };
    }
    for (c, line) in dst[..cols].iter_mut().enumerate().skip(whole) {
        *line = Line::ZERO;
        for r in 0..rows {
            line.set_lane(r, widen1(w[r * cols + c]).to_le_bytes());
        }
    }
}

/// Tokens `t0..t0 + T` of a packed group (`x` starts at token `t0`), stored to `out`:
/// per token and row, the sum over even columns plus the sum over odd ones (two
/// accumulators hide the FMA latency; the AVX-512 tile sums in the same order, so both
/// paths give the same bits). With both halves of the rows live, each token's value is
/// broadcast once per column for the FMAs of both halves (four accumulators per token).
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
    let halves = live_halves(&out);
    // SAFETY: guaranteed by the caller, forwarded.
    let acc = unsafe {
        if halves == 2 {
            columns::<T, true>(packed, cols, x)
        } else {
            columns::<T, false>(packed, cols, x)
        }
    };
    for (t, a) in acc.into_iter().enumerate() {
        for h in 0..halves {
            // SAFETY: the caller's contract on `out`.
            unsafe { store_half(&out, t0 + t, h, _mm256_add_ps(a[2 * h], a[2 * h + 1])) };
        }
    }
}

/// The sums of [`tile`] over every column: `acc[t][2 h + p]` for token `t`, half `h` (only
/// half 0 unless `BOTH`), columns of parity `p`.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn columns<const T: usize, const BOTH: bool>(
    packed: *const Line,
    cols: usize,
    x: *const f32,
) -> [[__m256; 4]; T] {
    let mut acc = [[_mm256_setzero_ps(); 4]; T];
    let mut c = 0;
    // SAFETY: guaranteed by the caller; every column is below `cols`.
    unsafe {
        while c + 2 <= cols {
            column::<T, BOTH, 0>(&mut acc, packed, cols, x, c);
            column::<T, BOTH, 1>(&mut acc, packed, cols, x, c + 1);
            c += 2;
        }
        if c < cols {
            column::<T, BOTH, 0>(&mut acc, packed, cols, x, c);
        }
    }
    acc
}

/// Adds column `c` to the accumulators of parity `P` (a constant, so that `acc` stays in
/// registers).
///
/// # Safety
/// As [`tile`], with `c < cols`.
#[inline(always)]
unsafe fn column<const T: usize, const BOTH: bool, const P: usize>(
    acc: &mut [[__m256; 4]; T],
    packed: *const Line,
    cols: usize,
    x: *const f32,
    c: usize,
) {
    // SAFETY: guaranteed by the caller; reads line `c` and column `c` of `T` rows.
    unsafe {
        let w0 = half_ps(packed.add(c), 0);
        let w1 = if BOTH { half_ps(packed.add(c), 1) } else { w0 };
        for (t, acc) in acc.iter_mut().enumerate() {
            let xt = _mm256_set1_ps(*x.add(t * cols + c));
            acc[P] = _mm256_fmadd_ps(w0, xt, acc[P]);
            if BOTH {
                acc[2 + P] = _mm256_fmadd_ps(w1, xt, acc[2 + P]);
            }
        }
    }
}

/// Every token of `a` (`tokens` rows of `cols` f32 values) times a packed group, three at
/// a time (twelve accumulators, a weight pair and a broadcast fill the sixteen
/// registers), then the rest in one tile.
///
/// # Safety
/// Only for inlining into AVX2 + FMA functions; `p` must point to `cols` packed lines, `a`
/// to `tokens * cols` values; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_body(p: *const Line, cols: usize, a: *const f32, tokens: usize, out: Outputs) {
    let mut t = 0;
    // SAFETY: guaranteed by the caller; each call covers tokens `t..t + T <= tokens`.
    unsafe {
        while t + 3 <= tokens {
            tile::<3>(p, cols, a.add(t * cols), out, t);
            t += 3;
        }
        let rest = a.add(t * cols);
        match tokens - t {
            2 => tile::<2>(p, cols, rest, out, t),
            1 => tile::<1>(p, cols, rest, out, t),
            _ => {}
        }
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_f32(w: &[f32], cols: usize, dst: &mut [Line]) {
    // SAFETY: AVX2 enabled; `pack_body` passes pointers to eight readable values. The
    // closures inherit this function's features.
    unsafe { pack_body(w, cols, dst, |p| _mm256_loadu_ps(p), |v| v) }
}

/// # Safety
/// As [`pack_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_f16(w: &[f16], cols: usize, dst: &mut [Line]) {
    // SAFETY: as in `pack_f32`; F16C converts exactly, as `f16::to_f32`.
    unsafe {
        pack_body(
            w,
            cols,
            dst,
            |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            f16::to_f32,
        )
    }
}

/// # Safety
/// As [`pack_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_bf16(w: &[bf16], cols: usize, dst: &mut [Line]) {
    // SAFETY: as in `pack_f32`; a BF16 value is the top half of its f32.
    unsafe {
        pack_body(
            w,
            cols,
            dst,
            |p| {
                let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
            },
            bf16::to_f32,
        )
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
    use crate::cpu::x86_64::avx512_gemm::tests::{check, values};
    use crate::cpu::x86_64::avx512_gemm::Gemm;
    use crate::cpu::x86_64::avx512_gemm_float;
    use crate::quant::QuantBlock;

    /// Every output of `gemm` for `rows` x `cols` weights and `tokens` tokens of
    /// deterministic values, group after group.
    fn outputs<W: QuantBlock<Act = W>>(
        gemm: &Gemm<W, W>,
        rows: usize,
        cols: usize,
        tokens: usize,
    ) -> Vec<f32> {
        let mut w = vec![<W as bytemuck::Zeroable>::zeroed(); rows * cols];
        W::quantize(&values(rows * cols, 3), &mut w);
        let mut x = vec![<W as bytemuck::Zeroable>::zeroed(); tokens * cols];
        W::quantize_act(&values(tokens * cols, 5), &mut x);
        let mut extra = vec![0i32; tokens * cols * gemm.extra_per_block];
        (gemm.prepare)(&x, &mut extra);
        let mut packed = vec![Line([0; 64]); cols * gemm.lines_per_block];
        let mut all = Vec::new();
        for first in (0..rows).step_by(GROUP_ROWS) {
            let n_rows = GROUP_ROWS.min(rows - first);
            (gemm.pack)(&w[first * cols..(first + n_rows) * cols], cols, &mut packed);
            let mut out = vec![0.0f32; tokens * GROUP_ROWS];
            let outputs = Outputs {
                ptr: out.as_mut_ptr(),
                stride: GROUP_ROWS,
                rows: n_rows,
            };
            // SAFETY: `out` holds `tokens` rows of `GROUP_ROWS` floats.
            unsafe { (gemm.run)(&packed, cols, &x, &extra, tokens, outputs) };
            all.extend_from_slice(&out);
        }
        all
    }

    /// The AVX2 and AVX-512 float GEMMs sum each product in the same order (even columns,
    /// odd columns, then the two), so a model gives the same bits on both paths; the real
    /// 270M turns any other order into visible logit differences (README, Correctness).
    #[test]
    fn same_bits_as_the_avx512_gemm() {
        let (Some(f32s), Some(f16s)) = (f32_gemm(), f16_gemm()) else {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        };
        let (Some(f32_512), Some(f16_512)) =
            (avx512_gemm_float::f32_gemm(), avx512_gemm_float::f16_gemm())
        else {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to compare the AVX2 GEMM with");
            return;
        };
        for (rows, cols, tokens) in [(33, 257, 29), (16, 64, 6), (7, 33, 5), (20, 2, 3)] {
            let shape = (rows, cols, tokens);
            assert_same_bits(&f32s, &f32_512, shape);
            assert_same_bits(&f16s, &f16_512, shape);
        }
    }

    /// Panics unless `a` and `b` give the same bits for `rows x cols` weights and `tokens`.
    fn assert_same_bits<W: QuantBlock<Act = W>>(
        a: &Gemm<W, W>,
        b: &Gemm<W, W>,
        (rows, cols, tokens): (usize, usize, usize),
    ) {
        let (a, b) = (
            outputs(a, rows, cols, tokens),
            outputs(b, rows, cols, tokens),
        );
        assert!(
            a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{:?} {rows}x{cols}x{tokens}",
            W::TYPE
        );
    }

    #[test]
    fn sixteen_row_gemm_matches_scalar_dot() {
        let (Some(f32s), Some(f16s), Some(bf16s)) = (f32_gemm(), f16_gemm(), bf16_gemm()) else {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        };
        // Row counts around the group and half sizes, column counts around the sixteen
        // that are transposed together (the rest set lane by lane), token counts that
        // take the six-token tiles and every remainder.
        let cases = [
            (1, 1, 1),
            (16, 2, 8),
            (17, 3, 13),
            (33, 64, 5),
            (7, 257, 29),
            (9, 5, 4),
            (16, 33, 3),
            (12, 16, 6),
        ];
        check::<f32>(&f32s, &cases);
        check::<f16>(&f16s, &cases);
        check::<bf16>(&bf16s, &cases);
    }
}
