//! Sixteen-row AVX-512 VNNI GEMM of Q4_K and Q6_K with Q8_K activations; see
//! `avx512_gemm` for the layout.
//!
//! A packed block holds 64 weight lines (line `i`: weights `4i..4i+4` of every row,
//! unsigned), then per sub-block a line of the sixteen rows' integer scales as i32, then
//! the format's extra lines and f32 scales. Per token, the `vpdpbusd` sums of a
//! sub-block are multiplied by its scales (`vpmulld`) and added, which is ggml's
//! integer sum per block; only the block's total is converted to f32.
//!
//! - Q4_K: eight sub-blocks of 32; four lines of minimums as i16 pairs, multiplied with
//!   pairs of 32-element activation sums (`vpdpwssd`), then `d` and `dmin` lines.
//! - Q6_K: sixteen sub-blocks of 16; weights stored as `q` (0..64) with each sub-block
//!   sum seeded with `-32 · Σ x` of its activations, then the `d` line.

use super::avx512_gemm::{gemm_kernels, lengths_agree, transpose_rows, Line, Outputs, GROUP_ROWS};
use crate::quant::{BlockQ4_K, BlockQ6_K, BlockQ8_K};
use std::arch::x86_64::*;

/// Weight lines per 256-element block.
const WEIGHT_LINES: usize = 64;
/// Q4_K lines per block: weights, 8 scale lines, 4 minimum lines, `d`, `dmin`.
const Q4_K_LINES: usize = WEIGHT_LINES + 8 + 4 + 2;
/// Q4_K values per activation block: the four pairs of 32-element sums as i16 pairs.
const Q4_K_EXTRA: usize = 4;
/// Q6_K lines per block: weights, 16 scale lines, `d`.
const Q6_K_LINES: usize = WEIGHT_LINES + 16 + 1;
/// Q6_K values per activation block: `-32 · Σ x` of each 16-element sub-block.
const Q6_K_EXTRA: usize = 16;

/// The pairs `(s_{2j}, s_{2j+1})` of 32-element sums of a Q8_K block as i16 pairs (each
/// sum is at most 32 · 128 in magnitude).
fn prepare_q4_k(x: &BlockQ8_K, extra: &mut [i32]) {
    for (j, e) in extra[..Q4_K_EXTRA].iter_mut().enumerate() {
        let s = |i: usize| i32::from(x.bsums[2 * i]) + i32::from(x.bsums[2 * i + 1]);
        let (lo, hi) = (s(2 * j) as i16 as u16, s(2 * j + 1) as i16 as u16);
        *e = (u32::from(lo) | u32::from(hi) << 16) as i32;
    }
}

/// `-32 ·` each 16-element sum of a Q8_K block.
fn prepare_q6_k(x: &BlockQ8_K, extra: &mut [i32]) {
    for (e, &s) in extra[..Q6_K_EXTRA].iter_mut().zip(&x.bsums) {
        *e = -32 * i32::from(s);
    }
}

/// Packs up to sixteen Q4_K rows of `bpr` blocks.
#[inline(always)]
fn pack_q4_k_body(w: &[BlockQ4_K], bpr: usize, dst: &mut [Line]) {
    let rows = w.len().checked_div(bpr).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut weights = [[0u8; 256]; GROUP_ROWS];
    for b in 0..bpr {
        let lines = &mut dst[b * Q4_K_LINES..(b + 1) * Q4_K_LINES];
        if rows < GROUP_ROWS {
            lines[WEIGHT_LINES..].fill(Line::ZERO);
        }
        for (r, q) in weights[..rows].iter_mut().enumerate() {
            let block = &w[r * bpr + b];
            // SAFETY: inlined into the AVX-512F/BW/VL functions below; loads read the
            // 128 bytes of `qs`, stores write the 256 of `q`.
            unsafe {
                let m4 = _mm256_set1_epi8(0xF);
                for c in 0..4 {
                    let v = _mm256_loadu_si256(block.qs.as_ptr().add(32 * c).cast());
                    let lo = _mm256_and_si256(v, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                    _mm256_storeu_si256(q.as_mut_ptr().add(64 * c).cast(), lo);
                    _mm256_storeu_si256(q.as_mut_ptr().add(64 * c + 32).cast(), hi);
                }
            }
            let (scales, mins) = block.scales_mins();
            for s in 0..8 {
                lines[WEIGHT_LINES + s].set_lane(r, u32::from(scales[s]).to_le_bytes());
            }
            for j in 0..4 {
                let pair = u32::from(mins[2 * j]) | u32::from(mins[2 * j + 1]) << 16;
                lines[WEIGHT_LINES + 8 + j].set_lane(r, pair.to_le_bytes());
            }
            lines[Q4_K_LINES - 2].set_lane(r, block.d.to_f32().to_le_bytes());
            lines[Q4_K_LINES - 1].set_lane(r, block.dmin.to_f32().to_le_bytes());
        }
        // SAFETY: inlined into the AVX-512F functions below.
        unsafe { transpose_rows(&weights, &mut lines[..WEIGHT_LINES]) };
    }
}

/// Packs up to sixteen Q6_K rows of `bpr` blocks.
#[inline(always)]
fn pack_q6_k_body(w: &[BlockQ6_K], bpr: usize, dst: &mut [Line]) {
    let rows = w.len().checked_div(bpr).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut weights = [[0u8; 256]; GROUP_ROWS];
    for b in 0..bpr {
        let lines = &mut dst[b * Q6_K_LINES..(b + 1) * Q6_K_LINES];
        if rows < GROUP_ROWS {
            lines[WEIGHT_LINES..].fill(Line::ZERO);
        }
        for (r, q) in weights[..rows].iter_mut().enumerate() {
            let block = &w[r * bpr + b];
            // SAFETY: inlined into the AVX-512F/BW/VL functions below; loads read inside
            // `ql` (128 bytes) and `qh` (64), stores write the 256 bytes of `q`.
            unsafe {
                let m4 = _mm256_set1_epi8(0xF);
                let m3 = _mm256_set1_epi8(3);
                for half in 0..2 {
                    let a = _mm256_loadu_si256(block.ql.as_ptr().add(64 * half).cast());
                    let c = _mm256_loadu_si256(block.ql.as_ptr().add(64 * half + 32).cast());
                    let h = _mm256_loadu_si256(block.qh.as_ptr().add(32 * half).cast());
                    // Weight `128 half + 32 g + l`: low nibble from `a` (g = 0, 2) or `c`
                    // (g = 1, 3), low half of the byte for g < 2; bits 2g..2g+2 of `h`.
                    let lows = [
                        _mm256_and_si256(a, m4),
                        _mm256_and_si256(c, m4),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(a), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(c), m4),
                    ];
                    let highs = [
                        _mm256_and_si256(h, m3),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(h), m3),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(h), m3),
                        _mm256_and_si256(_mm256_srli_epi16::<6>(h), m3),
                    ];
                    for g in 0..4 {
                        let v = _mm256_or_si256(lows[g], _mm256_slli_epi16::<4>(highs[g]));
                        _mm256_storeu_si256(q.as_mut_ptr().add(128 * half + 32 * g).cast(), v);
                    }
                }
            }
            for (s, &sc) in block.scales.iter().enumerate() {
                lines[WEIGHT_LINES + s].set_lane(r, i32::from(sc).to_le_bytes());
            }
            lines[Q6_K_LINES - 1].set_lane(r, block.d.to_f32().to_le_bytes());
        }
        // SAFETY: inlined into the AVX-512F functions below.
        unsafe { transpose_rows(&weights, &mut lines[..WEIGHT_LINES]) };
    }
}

/// Sum of `acc` and the `vpdpbusd` products of `w[k]` with the activation bytes
/// `4k..4k+4` at `x`, for `k` in `0..N`.
///
/// # Safety
/// Only for inlining into AVX-512F + VNNI functions; `x` must point to `4N` readable bytes.
#[inline(always)]
unsafe fn dot_lines<const N: usize>(acc: __m512i, w: &[__m512i; 8], x: *const i32) -> __m512i {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let mut acc = acc;
        for (k, &wk) in w[..N].iter().enumerate() {
            acc = _mm512_dpbusd_epi32(acc, wk, _mm512_set1_epi32(x.add(k).read_unaligned()));
        }
        acc
    }
}

/// Tokens `t0..t0 + T` of a packed Q4_K group (`act` and `extra` start at token `t0`),
/// stored to `out`.
///
/// # Safety
/// Only for inlining into AVX-512F/BW/VL + VNNI functions; `packed` must hold `bpr`
/// packed blocks, `act` and `extra` `T` tokens of `bpr` blocks from their pointers,
/// `out` as for `Gemm::run` with tokens `t0..t0 + T`.
#[inline(always)]
unsafe fn tile_q4_k<const T: usize>(
    packed: *const Line,
    bpr: usize,
    act: *const BlockQ8_K,
    extra: *const i32,
    out: Outputs,
    t0: usize,
) {
    // SAFETY: guaranteed by the caller; activation reads stay inside `qs` (256 bytes) of
    // block `t * bpr + b`, line reads inside the block's `Q4_K_LINES` lines.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..bpr {
            let lines = packed.add(b * Q4_K_LINES);
            let x: [*const BlockQ8_K; T] = std::array::from_fn(|t| act.add(t * bpr + b));
            let mut sumi = [_mm512_setzero_si512(); T];
            for s in 0..8 {
                let w: [__m512i; 8] =
                    std::array::from_fn(|k| _mm512_load_si512(lines.add(8 * s + k).cast()));
                let sc = _mm512_load_si512(lines.add(WEIGHT_LINES + s).cast());
                for t in 0..T {
                    let xs = (*x[t]).qs.as_ptr().add(32 * s).cast::<i32>();
                    let p = dot_lines::<8>(_mm512_setzero_si512(), &w, xs);
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(p, sc));
                }
            }
            let mins: [__m512i; 4] =
                std::array::from_fn(|j| _mm512_load_si512(lines.add(WEIGHT_LINES + 8 + j).cast()));
            let d = _mm512_load_ps(lines.add(Q4_K_LINES - 2).cast());
            let dmin = _mm512_load_ps(lines.add(Q4_K_LINES - 1).cast());
            for t in 0..T {
                let e = extra.add(Q4_K_EXTRA * (t * bpr + b));
                let mut m = _mm512_setzero_si512();
                for (j, &mj) in mins.iter().enumerate() {
                    m = _mm512_dpwssd_epi32(m, mj, _mm512_set1_epi32(*e.add(j)));
                }
                let dx = _mm512_set1_ps((*x[t]).d);
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
                acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(m), acc[t]);
            }
        }
        for (t, a) in acc.into_iter().enumerate() {
            out.store(t0 + t, a);
        }
    }
}

/// Tokens `t0..t0 + T` of a packed Q6_K group (see [`tile_q4_k`]).
///
/// # Safety
/// As [`tile_q4_k`], with `Q6_K_LINES` lines and `Q6_K_EXTRA` values per block.
#[inline(always)]
unsafe fn tile_q6_k<const T: usize>(
    packed: *const Line,
    bpr: usize,
    act: *const BlockQ8_K,
    extra: *const i32,
    out: Outputs,
    t0: usize,
) {
    // SAFETY: guaranteed by the caller; activation reads stay inside `qs` (256 bytes) of
    // block `t * bpr + b`, line reads inside the block's `Q6_K_LINES` lines.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..bpr {
            let lines = packed.add(b * Q6_K_LINES);
            let x: [*const BlockQ8_K; T] = std::array::from_fn(|t| act.add(t * bpr + b));
            let mut sumi = [_mm512_setzero_si512(); T];
            // Two 16-element sub-blocks (eight lines) at a time.
            for s in (0..16).step_by(2) {
                let w: [__m512i; 8] =
                    std::array::from_fn(|k| _mm512_load_si512(lines.add(4 * s + k).cast()));
                let w_hi: [__m512i; 8] = std::array::from_fn(|k| w[(k + 4) % 8]);
                let sc0 = _mm512_load_si512(lines.add(WEIGHT_LINES + s).cast());
                let sc1 = _mm512_load_si512(lines.add(WEIGHT_LINES + s + 1).cast());
                for t in 0..T {
                    let e = extra.add(Q6_K_EXTRA * (t * bpr + b) + s);
                    let xs = (*x[t]).qs.as_ptr().add(16 * s).cast::<i32>();
                    let p0 = dot_lines::<4>(_mm512_set1_epi32(*e), &w, xs);
                    let p1 = dot_lines::<4>(_mm512_set1_epi32(*e.add(1)), &w_hi, xs.add(4));
                    let both =
                        _mm512_add_epi32(_mm512_mullo_epi32(p0, sc0), _mm512_mullo_epi32(p1, sc1));
                    sumi[t] = _mm512_add_epi32(sumi[t], both);
                }
            }
            let d = _mm512_load_ps(lines.add(Q6_K_LINES - 1).cast());
            for t in 0..T {
                let dx = _mm512_set1_ps((*x[t]).d);
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
            }
        }
        for (t, a) in acc.into_iter().enumerate() {
            out.store(t0 + t, a);
        }
    }
}

/// Defines the `#[target_feature]` pack and run functions of one format: `$run` covers
/// every token with `$tile`, eight at a time, then four, then one.
macro_rules! kquant_instances {
    ($w:ty, $lines:expr, $extra:expr => $pack_body:ident, $tile:ident => $pack:ident, $run:ident) => {
        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $pack(w: &[$w], bpr: usize, dst: &mut [Line]) {
            $pack_body(w, bpr, dst)
        }

        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL and VNNI; `out` as for `Gemm::run`.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $run(
            packed: &[Line],
            bpr: usize,
            act: &[BlockQ8_K],
            extra: &[i32],
            tokens: usize,
            out: Outputs,
        ) {
            if !lengths_agree(packed, $lines, bpr, act, extra, $extra, tokens) {
                return;
            }
            let (p, a, e) = (packed.as_ptr(), act.as_ptr(), extra.as_ptr());
            let mut t = 0;
            // SAFETY: `out` is the caller's contract; the lengths were checked above,
            // and each call covers tokens `t..t + T <= tokens`.
            unsafe {
                while t + 8 <= tokens {
                    $tile::<8>(p, bpr, a.add(t * bpr), e.add($extra * t * bpr), out, t);
                    t += 8;
                }
                while t + 4 <= tokens {
                    $tile::<4>(p, bpr, a.add(t * bpr), e.add($extra * t * bpr), out, t);
                    t += 4;
                }
                while t < tokens {
                    $tile::<1>(p, bpr, a.add(t * bpr), e.add($extra * t * bpr), out, t);
                    t += 1;
                }
            }
        }
    };
}

kquant_instances!(BlockQ4_K, Q4_K_LINES, Q4_K_EXTRA => pack_q4_k_body, tile_q4_k => pack_q4_k, run_q4_k);
kquant_instances!(BlockQ6_K, Q6_K_LINES, Q6_K_EXTRA => pack_q6_k_body, tile_q6_k => pack_q6_k, run_q6_k);

gemm_kernels!(
    /// The Q4_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q4_k: BlockQ4_K, BlockQ8_K, Q4_K_LINES, Q4_K_EXTRA, 16 => prepare_q4_k, pack_q4_k, run_q4_k
);
gemm_kernels!(
    /// The Q6_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q6_k: BlockQ6_K, BlockQ8_K, Q6_K_LINES, Q6_K_EXTRA, 16 => prepare_q6_k, pack_q6_k, run_q6_k
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::check;

    /// Row counts around the group size, several blocks per row, token counts that
    /// exercise the eight-, four- and one-token tiles.
    const CASES: [(usize, usize, usize); 5] =
        [(1, 1, 1), (16, 2, 8), (17, 3, 13), (35, 1, 5), (5, 4, 21)];

    #[test]
    fn sixteen_row_gemm_matches_scalar_dot() {
        let (Some(q4), Some(q6)) = (q4_k(), q6_k()) else {
            eprintln!("no AVX-512 VNNI on this CPU: the sixteen-row GEMM cannot run here");
            return;
        };
        check::<BlockQ4_K>(&q4, &CASES);
        check::<BlockQ6_K>(&q6, &CASES);
    }
}
