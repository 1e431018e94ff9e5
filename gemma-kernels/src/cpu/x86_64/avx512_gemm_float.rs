//! Sixteen-row AVX-512 GEMM of float weights: F32 with F32 activations (the attention
//! products of the CPU backend, keys and values taken as weight rows), F16 and BF16 with
//! activations rounded to their type (ggml's); see `avx512_gemm`.
//!
//! A packed "block" is one column: a line of the sixteen rows' values at that column, as
//! f32 (F16 and BF16 widened while packing). Each token then costs one FMA with its value
//! broadcast per column of sixteen rows, and no horizontal sums. F16 and BF16 activations
//! are widened to f32 once per call (their `extra` value); every product of two 16-bit
//! floats is exact in f32, as in ggml's kernels. BF16 rows of an even length take
//! `vdpbf16ps` on CPUs with AVX-512 BF16 instead (`avx512_gemm_bf16`).

use super::avx512_gemm::{gemm_kernels, lengths_agree, transpose_rows, Line, Outputs, GROUP_ROWS};
use super::avx512_gemm_bf16;
use half::{bf16, f16};
use std::arch::x86_64::*;

/// Lines per column.
pub(super) const LINES: usize = 1;
/// No per-activation values are needed for f32 activations.
pub(super) const EXTRA: usize = 0;
/// F16 / BF16 activations bring their value as f32 bits.
pub(super) const HALF_EXTRA: usize = 1;

/// Nothing to prepare for f32 activations.
pub(super) fn prepare_f32(_x: &f32, _extra: &mut [i32]) {}

/// An F16 activation as f32 bits ([`f16_to_f32_bits`]: no branch and no CPU check, so
/// the loop over a token's activations inlines and vectorizes it).
#[inline(always)]
pub(super) fn prepare_f16(x: &f16, extra: &mut [i32]) {
    extra[0] = f16_to_f32_bits(x.to_bits()) as i32;
}

/// The f32 bits of the F16 value `h`, exact (F16C's conversion) with selects in place of
/// branches: the exponent rebiased, infinities and NaNs moved to the f32 maximum
/// exponent, subnormals normalized by one exact float subtraction. (`half`'s
/// `to_f32_const`, branching per value, took 5.6% of a 270M F16 prefill on AVX2.)
#[inline(always)]
pub(super) fn f16_to_f32_bits(h: u16) -> u32 {
    const EXP: u32 = 0x7C00 << 13;
    // 2^-14, the smallest normal F16 value, as f32.
    let magic = f32::from_bits(113 << 23);
    let mut o = (u32::from(h) & 0x7FFF) << 13;
    let exp = o & EXP;
    o += (127 - 15) << 23;
    let inf_nan = o + ((128 - 16) << 23);
    let subnormal = (f32::from_bits(o + (1 << 23)) - magic).to_bits();
    o = if exp == EXP { inf_nan } else { o };
    o = if exp == 0 { subnormal } else { o };
    o | (u32::from(h) & 0x8000) << 16
}

/// A BF16 activation as f32 bits.
#[inline(always)]
pub(super) fn prepare_bf16(x: &bf16, extra: &mut [i32]) {
    extra[0] = x.to_f32_const().to_bits() as i32;
}

/// Packs up to sixteen rows of `cols` values: line `c` holds column `c` of each row
/// (one masked gather per line, zero lanes for missing rows).
#[inline(always)]
fn pack_body(w: &[f32], cols: usize, dst: &mut [Line]) {
    let rows = w.len().checked_div(cols).unwrap_or(0).min(GROUP_ROWS);
    // The gather takes i32 offsets (up to 16 · cols); longer rows, far beyond any model's,
    // take lane-by-lane copies.
    let stride = match i32::try_from(cols * GROUP_ROWS) {
        Ok(_) => cols as i32,
        Err(_) => {
            dst[..cols].fill(Line::ZERO);
            for (r, row) in w.chunks_exact(cols).take(rows).enumerate() {
                for (line, v) in dst.iter_mut().zip(row) {
                    line.set_lane(r, v.to_le_bytes());
                }
            }
            return;
        }
    };
    let mask = ((1u32 << rows) - 1) as u16;
    // SAFETY: inlined into the AVX-512F function below; the gather reads, for lanes
    // `r < rows`, element `r * cols + c < rows * cols <= w.len()`; each store writes one
    // whole line of `dst[..cols]`.
    unsafe {
        let first = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(stride),
        );
        for (c, line) in dst[..cols].iter_mut().enumerate() {
            let at = _mm512_add_epi32(first, _mm512_set1_epi32(c as i32));
            let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, at, w.as_ptr().cast());
            _mm512_store_ps(line.0.as_mut_ptr().cast(), v);
        }
    }
}

/// Tokens `t0..t0 + T` of a packed group (`x` starts at token `t0`), stored to `out`;
/// two accumulators per token (even and odd columns) to hide the FMA latency.
///
/// # Safety
/// Only for inlining into AVX-512F functions; `packed` must hold `cols` lines, `x` `T`
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
        let mut acc = [[_mm512_setzero_ps(); 2]; T];
        let mut c = 0;
        while c + 2 <= cols {
            let w0 = _mm512_load_ps(packed.add(c).cast());
            let w1 = _mm512_load_ps(packed.add(c + 1).cast());
            for (t, acc) in acc.iter_mut().enumerate() {
                let xt = x.add(t * cols + c);
                acc[0] = _mm512_fmadd_ps(w0, _mm512_set1_ps(*xt), acc[0]);
                acc[1] = _mm512_fmadd_ps(w1, _mm512_set1_ps(*xt.add(1)), acc[1]);
            }
            c += 2;
        }
        if c < cols {
            let w0 = _mm512_load_ps(packed.add(c).cast());
            for (t, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm512_fmadd_ps(w0, _mm512_set1_ps(*x.add(t * cols + c)), acc[0]);
            }
        }
        for (t, [a, b]) in acc.into_iter().enumerate() {
            out.store(t0 + t, _mm512_add_ps(a, b));
        }
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL and VNNI (the features `gemm_kernels!` checks).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_f32(w: &[f32], cols: usize, dst: &mut [Line]) {
    pack_body(w, cols, dst)
}

/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn run_f32(
    packed: &[Line],
    cols: usize,
    x: &[f32],
    extra: &[i32],
    tokens: usize,
    out: Outputs,
) {
    if !lengths_agree(packed, LINES, cols, x, extra, EXTRA, tokens) {
        return;
    }
    // SAFETY: forwarded; the lengths were checked above.
    unsafe { run_body(packed.as_ptr(), cols, x.as_ptr(), tokens, out) }
}

/// Every token of `x` (`tokens` rows of `cols` f32 values) times a packed group, eight
/// at a time, then four, then one.
///
/// # Safety
/// Only for inlining into AVX-512F functions; `p` must point to `cols` packed lines,
/// `a` to `tokens * cols` values; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_body(p: *const Line, cols: usize, a: *const f32, tokens: usize, out: Outputs) {
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

/// Packs up to sixteen rows of `cols` 16-bit floats (`bits`: F16 or BF16 bit patterns)
/// as f32 lines, `widen` turning 16 lanes of bit patterns (in the low halves of 32-bit
/// lanes) into f32. Per sixteen columns, each row's values are widened in registers and
/// the sixteen rows transposed into lines; the last `cols % 16` columns are copied lane
/// by lane.
#[inline(always)]
fn pack_half_body(bits: &[u16], cols: usize, dst: &mut [Line], widen: impl Fn(__m512i) -> __m512) {
    let rows = bits.len().checked_div(cols).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut widened = [[0u8; 64]; GROUP_ROWS];
    let whole = cols - cols % 16;
    for c in (0..whole).step_by(16) {
        for (r, row) in widened[..rows].iter_mut().enumerate() {
            let values = &bits[r * cols + c..r * cols + c + 16];
            // SAFETY: inlined into the AVX-512F/BW functions below; the load reads the
            // 16 values of `values`, the store the 64 bytes of `row`.
            unsafe {
                let v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(values.as_ptr().cast()));
                _mm512_storeu_ps(row.as_mut_ptr().cast(), widen(v));
            }
        }
        // SAFETY: as above; 16 lines from column `c`.
        unsafe { transpose_rows(&widened, &mut dst[c..c + 16]) };
    }
    let mut lane_bits = [0u32; GROUP_ROWS];
    for (c, line) in dst[..cols].iter_mut().enumerate().skip(whole) {
        for (r, b) in lane_bits[..rows].iter_mut().enumerate() {
            *b = u32::from(bits[r * cols + c]);
        }
        // SAFETY: as above; the load reads the 16 values of `lane_bits`.
        let v = unsafe { widen(_mm512_loadu_si512(lane_bits.as_ptr().cast())) };
        // SAFETY: as above; the store writes one whole line.
        unsafe { _mm512_store_ps(line.0.as_mut_ptr().cast(), v) };
    }
}

/// # Safety
/// As [`pack_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_f16(w: &[f16], cols: usize, dst: &mut [Line]) {
    // The closure inherits this function's features.
    pack_half_body(bytemuck::cast_slice(w), cols, dst, |v| {
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v))
    })
}

/// # Safety
/// As [`pack_f32`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_bf16(w: &[bf16], cols: usize, dst: &mut [Line]) {
    if bf16_pairs(cols) {
        // SAFETY: AVX-512 BF16 found; `cols` even; `dst` holds `cols` lines.
        return unsafe { avx512_gemm_bf16::pack_pairs(w, cols, dst) };
    }
    // The closure inherits this function's features.
    pack_half_body(bytemuck::cast_slice(w), cols, dst, |v| {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v))
    })
}

/// The tiles over activations widened to f32 in `extra` (F16 and BF16 weights).
///
/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_half<A>(
    packed: &[Line],
    cols: usize,
    x: &[A],
    extra: &[i32],
    tokens: usize,
    out: Outputs,
) {
    if !lengths_agree(packed, LINES, cols, x, extra, HALF_EXTRA, tokens) {
        return;
    }
    // SAFETY: forwarded; `extra` holds the `tokens * cols` activations as f32 bits.
    unsafe { run_body(packed.as_ptr(), cols, extra.as_ptr().cast(), tokens, out) }
}

/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn run_f16(p: &[Line], cols: usize, x: &[f16], e: &[i32], n: usize, out: Outputs) {
    // SAFETY: forwarded from the caller.
    unsafe { run_half(p, cols, x, e, n, out) }
}

/// # Safety
/// As [`pack_f32`]; `out` as for `Gemm::run`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn run_bf16(p: &[Line], cols: usize, x: &[bf16], e: &[i32], n: usize, out: Outputs) {
    if bf16_pairs(cols) {
        if lengths_agree(p, LINES, cols, x, e, HALF_EXTRA, n) {
            // SAFETY: AVX-512 BF16 found, `cols` even, lengths checked; `out` forwarded.
            unsafe { avx512_gemm_bf16::run_pairs(p, cols, x, n, out) }
        }
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { run_half(p, cols, x, e, n, out) }
}

/// Whether BF16 rows of `cols` values take `vdpbf16ps` pairs (AVX-512 BF16, an even
/// length, gather offsets within i32) instead of widening to f32.
fn bf16_pairs(cols: usize) -> bool {
    cols.is_multiple_of(2)
        && i32::try_from(cols * GROUP_ROWS * 2).is_ok()
        && avx512_gemm_bf16::available()
}

gemm_kernels!(
    /// The F32 x F32 sixteen-row GEMM, if this CPU has AVX-512 (with VNNI, like the
    /// other sixteen-row kernels).
    f32_gemm: f32, f32, LINES, EXTRA, 32 => prepare_f32, pack_f32, run_f32
);
gemm_kernels!(
    /// The F16 x F16 sixteen-row GEMM, if this CPU has AVX-512 (with VNNI); from 40
    /// tokens (fewer take the four-token tiles: 270M-shaped pp32 320 against 299 tok/s,
    /// pp48 380 against 430, Zen 4).
    f16_gemm: f16, f16, LINES, HALF_EXTRA, 40 => prepare_f16, pack_f16, run_f16
);
gemm_kernels!(
    /// The BF16 x BF16 sixteen-row GEMM, if this CPU has AVX-512 (with VNNI); from 16
    /// tokens with AVX-512 BF16 (270M-shaped pp8 186 tok/s one token at a time against 149
    /// here, pp16 248 against 294), else from 24 (pp12 199 against 147, pp24 237 against
    /// 253), Zen 4.
    bf16_gemm: bf16, bf16, LINES, HALF_EXTRA, if avx512_gemm_bf16::available() { 16 } else { 24 }
        => prepare_bf16, pack_bf16, run_bf16
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::check;

    #[test]
    fn f16_widening_matches_half_for_every_value() {
        for h in 0..=u16::MAX {
            let expected = f16::from_bits(h).to_f32();
            let got = f32::from_bits(f16_to_f32_bits(h));
            if expected.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), expected.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn sixteen_row_gemm_matches_scalar_dot() {
        let Some(gemm) = f32_gemm() else {
            eprintln!("no AVX-512 VNNI on this CPU: the sixteen-row GEMM cannot run here");
            return;
        };
        let cases = [
            (1, 1, 1),
            (16, 2, 8),
            (17, 3, 13),
            (33, 64, 5),
            (7, 257, 29),
        ];
        check::<f32>(&gemm, &cases);
        let (Some(f16s), Some(bf16s)) = (f16_gemm(), bf16_gemm()) else {
            panic!("F32 GEMM without the F16 / BF16 ones");
        };
        check::<f16>(&f16s, &cases);
        check::<bf16>(&bf16s, &cases);
    }
}
