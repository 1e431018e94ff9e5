//! Sixteen-row AVX2 GEMM of the 256-element formats with Q8_K activations (Q2_K, Q3_K,
//! Q4_K, Q5_K, Q6_K, IQ4_XS), over the layout of `kquant_packing`, eight rows at a time
//! (see `avx2_gemm`).
//!
//! Per token and sub-block, the `vpmaddubsw` sums of a few weight lines meet the
//! sub-block's scales (as i16 pairs) in `vpmaddwd`: ggml's integer sum per block, the
//! weights counted with their offset. Each activation block brings the sums of its
//! sub-blocks as i16 pairs, which meet pairs of row minimums (Q2_K, Q4_K, Q5_K) or pairs
//! of row scales (the offset of Q3_K and Q6_K, taken back as `offset · Σ scale · Σ x`)
//! in one more `vpmaddwd` per pair. IQ4_XS, stored as its levels + 128 (up to 241, which
//! would saturate `vpmaddubsw`), is turned back into signed bytes and takes `|q|` times
//! `x` with the sign of `q`, one line per `vpmaddwd`, with no correction.

use super::avx2_gemm::{half, half_ps, live_halves, maddubs_lines, store_half};
use super::avx512_gemm::{gemm_kernels, lengths_agree, Line, Outputs};
use super::kquant_packing::{pack_body, sum_pairs, Packed, WEIGHT_LINES};
use crate::quant::{BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use std::arch::x86_64::*;

/// Whether format `W` takes the signed path (stored weights up to 255).
const fn signed<W: Packed>() -> bool {
    W::OFFSET == 128
}

/// Values per activation block: the sub-block sums as i16 pairs (none on the signed
/// path).
const fn extra_per_block<W: Packed>() -> usize {
    if signed::<W>() {
        0
    } else {
        W::SUBS / 2
    }
}

/// Weight lines whose `vpmaddubsw` sums are added as i16 before `vpmaddwd`: each adds at
/// most `2 · MAX · 128` to a pair's sum, which must stay below 2^15; at most four (the
/// lines stay in registers for every token of a tile).
const fn chunk_lines<W: Packed>() -> usize {
    let fit = 127 / W::MAX as usize;
    if fit >= 4 {
        4
    } else {
        2
    }
}

/// A row's scale of one sub-block (i32 lanes) as the i16 pair `(scale, scale)`.
///
/// # Safety
/// AVX2 enabled by the caller.
#[inline(always)]
unsafe fn scale_pair(scales: __m256i) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_blend_epi16::<0xAA>(scales, _mm256_slli_epi32::<16>(scales)) }
}

/// The i16 pairs that meet the activation sum pairs: the packed minimum pairs, or for
/// formats with an offset the pairs of scales `(scale 2j, scale 2j + 1)` of half `h`.
///
/// # Safety
/// As [`tile`]; `lines` is a packed block.
#[inline(always)]
unsafe fn correction_pairs<W: Packed>(lines: *const Line, h: usize, j: usize) -> __m256i {
    // SAFETY: guaranteed by the caller; the lines read are the block's.
    unsafe {
        if W::MINS {
            half(lines.add(WEIGHT_LINES + W::SUBS + j), h)
        } else {
            let even = half(lines.add(WEIGHT_LINES + 2 * j), h);
            let odd = half(lines.add(WEIGHT_LINES + 2 * j + 1), h);
            _mm256_blend_epi16::<0xAA>(even, _mm256_slli_epi32::<16>(odd))
        }
    }
}

/// Adds the integer sums (scales applied, offset included) of block `lines`, half `h`,
/// for tokens `x` to `sumi`, `CHUNK` weight lines at a time.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn block_sums<W: Packed, const T: usize, const CHUNK: usize>(
    lines: *const Line,
    h: usize,
    x: &[*const BlockQ8_K; T],
    sumi: &mut [__m256i; T],
) {
    // SAFETY: guaranteed by the caller; line reads inside the block's weight and scale
    // lines, activation reads inside each token's 256-byte `qs`.
    unsafe {
        let sub_lines = W::SUB / 4;
        for s in 0..W::SUBS {
            let sc = scale_pair(half(lines.add(WEIGHT_LINES + s), h));
            for c in (0..sub_lines).step_by(CHUNK) {
                let first = s * sub_lines + c;
                let w: [__m256i; CHUNK] = std::array::from_fn(|k| half(lines.add(first + k), h));
                if signed::<W>() {
                    let q = w.map(|v| _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
                    let magnitude = q.map(|v| _mm256_sign_epi8(v, v));
                    for t in 0..T {
                        let xs = (*x[t]).qs.as_ptr().add(4 * first).cast::<i32>();
                        for k in 0..CHUNK {
                            let x4 = _mm256_set1_epi32(xs.add(k).read_unaligned());
                            let p = _mm256_maddubs_epi16(magnitude[k], _mm256_sign_epi8(x4, q[k]));
                            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sc));
                        }
                    }
                } else {
                    for t in 0..T {
                        let xs = (*x[t]).qs.as_ptr().add(4 * first).cast::<i32>();
                        let p = maddubs_lines(&w, xs);
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sc));
                    }
                }
            }
        }
    }
}

/// Tokens `t0..t0 + T` of a packed group of `W` (`act` and `extra` start at token `t0`),
/// stored to `out`, one half of the rows after the other.
///
/// # Safety
/// Only for inlining into AVX2 + FMA functions; `packed` must hold `bpr` packed blocks,
/// `act` and `extra` `T` tokens of `bpr` blocks from their pointers, `out` as for
/// `Gemm::run` with tokens `t0..t0 + T`.
#[inline(always)]
unsafe fn tile<W: Packed, const T: usize>(
    packed: *const Line,
    bpr: usize,
    act: *const BlockQ8_K,
    extra: *const i32,
    out: Outputs,
    t0: usize,
) {
    const {
        assert!(
            W::MINS == (W::OFFSET == 0) || (signed::<W>() && !W::MINS),
            "one correction per format, none on the signed path"
        )
    };
    let per_block = extra_per_block::<W>();
    // SAFETY: guaranteed by the caller; line reads inside the block's `W::LINES` lines,
    // extra reads inside the token's values of block `b`.
    unsafe {
        for h in 0..live_halves(&out) {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..bpr {
                let lines = packed.add(b * W::LINES);
                let x: [*const BlockQ8_K; T] = std::array::from_fn(|t| act.add(t * bpr + b));
                let mut sumi = [_mm256_setzero_si256(); T];
                if chunk_lines::<W>() == 4 {
                    block_sums::<W, T, 4>(lines, h, &x, &mut sumi);
                } else {
                    block_sums::<W, T, 2>(lines, h, &x, &mut sumi);
                }
                let corrections = extra_per_block::<W>();
                let pairs: [__m256i; 8] = std::array::from_fn(|j| {
                    if j < corrections {
                        correction_pairs::<W>(lines, h, j)
                    } else {
                        _mm256_setzero_si256()
                    }
                });
                let d = half_ps(lines.add(W::D_LINE), h);
                for t in 0..T {
                    let e = extra.add(per_block * (t * bpr + b));
                    let mut corr = _mm256_setzero_si256();
                    for (j, &pair) in pairs[..corrections].iter().enumerate() {
                        let sums = _mm256_set1_epi32(*e.add(j));
                        corr = _mm256_add_epi32(corr, _mm256_madd_epi16(pair, sums));
                    }
                    let dx = _mm256_set1_ps((*x[t]).d);
                    if W::MINS {
                        let dmin = half_ps(lines.add(W::D_LINE + 1), h);
                        let m = _mm256_cvtepi32_ps(corr);
                        acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), m, acc[t]);
                    } else if !signed::<W>() {
                        let shift = _mm_cvtsi32_si128(W::OFFSET.trailing_zeros() as i32);
                        sumi[t] = _mm256_sub_epi32(sumi[t], _mm256_sll_epi32(corr, shift));
                    }
                    let s = _mm256_cvtepi32_ps(sumi[t]);
                    acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), s, acc[t]);
                }
            }
            for (t, a) in acc.into_iter().enumerate() {
                store_half(&out, t0 + t, h, a);
            }
        }
    }
}

/// Packs a group of `W` (see `Gemm::pack`).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_group<W: Packed>(w: &[W], bpr: usize, dst: &mut [Line]) {
    pack_body::<W>(w, bpr, dst)
}

/// Multiplies a packed group of `W` with every token (see `Gemm::run`), four at a time
/// with [`tile`], then one.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `out` as for `Gemm::run`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_group<W: Packed>(
    packed: &[Line],
    bpr: usize,
    act: &[BlockQ8_K],
    extra: &[i32],
    tokens: usize,
    out: Outputs,
) {
    let per_block = extra_per_block::<W>();
    if !lengths_agree(packed, W::LINES, bpr, act, extra, per_block, tokens) {
        return;
    }
    let (p, a, e) = (packed.as_ptr(), act.as_ptr(), extra.as_ptr());
    let mut t = 0;
    // SAFETY: `out` is the caller's contract; the lengths were checked above, and each
    // call covers tokens `t..t + T <= tokens`.
    unsafe {
        while t + 4 <= tokens {
            tile::<W, 4>(p, bpr, a.add(t * bpr), e.add(per_block * t * bpr), out, t);
            t += 4;
        }
        while t < tokens {
            tile::<W, 1>(p, bpr, a.add(t * bpr), e.add(per_block * t * bpr), out, t);
            t += 1;
        }
    }
}

/// Defines `$name()` for format `$w` through `gemm_kernels!`, available with AVX2.
macro_rules! kquant_gemm {
    ($(#[$doc:meta])* $name:ident: $w:ty) => {
        gemm_kernels!(
            $(#[$doc])*
            $name: $w, BlockQ8_K, <$w as Packed>::LINES, extra_per_block::<$w>(), 8
                => sum_pairs::<$w>, pack_group::<$w>, run_group::<$w>;
            when $crate::cpu::isa::Isa::Avx2.is_supported()
        );
    };
}

kquant_gemm!(
    /// The Q2_K x Q8_K sixteen-row GEMM on AVX2.
    q2_k: BlockQ2_K
);
kquant_gemm!(
    /// The Q3_K x Q8_K sixteen-row GEMM on AVX2.
    q3_k: BlockQ3_K
);
kquant_gemm!(
    /// The Q4_K x Q8_K sixteen-row GEMM on AVX2.
    q4_k: BlockQ4_K
);
kquant_gemm!(
    /// The Q5_K x Q8_K sixteen-row GEMM on AVX2.
    q5_k: BlockQ5_K
);
kquant_gemm!(
    /// The Q6_K x Q8_K sixteen-row GEMM on AVX2.
    q6_k: BlockQ6_K
);
kquant_gemm!(
    /// The IQ4_XS x Q8_K sixteen-row GEMM on AVX2.
    iq4_xs: BlockIQ4_XS
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::{check, check_extremes};

    /// Row counts around the group and half sizes, several blocks per row, token counts
    /// that exercise the four- and one-token tiles.
    const CASES: [(usize, usize, usize); 6] = [
        (1, 1, 1),
        (16, 2, 8),
        (17, 3, 13),
        (35, 1, 5),
        (5, 4, 21),
        (9, 2, 4),
    ];

    #[test]
    fn sixteen_row_gemm_matches_scalar_dot() {
        let (Some(q2), Some(q3), Some(q4), Some(q5), Some(q6), Some(iq4)) =
            (q2_k(), q3_k(), q4_k(), q5_k(), q6_k(), iq4_xs())
        else {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        };
        check::<BlockQ2_K>(&q2, &CASES);
        check::<BlockQ3_K>(&q3, &CASES);
        check::<BlockQ4_K>(&q4, &CASES);
        check::<BlockQ5_K>(&q5, &CASES);
        check::<BlockQ6_K>(&q6, &CASES);
        check::<BlockIQ4_XS>(&iq4, &CASES);
    }

    /// The largest stored weights times the largest activations of either sign: the
    /// 16-bit sums of `vpmaddubsw` must not saturate or wrap (they do with one more line
    /// per sum, checked).
    #[test]
    fn extreme_values_do_not_overflow_16_bit_sums() {
        let (Some(q2), Some(q3), Some(q4), Some(q5), Some(q6), Some(iq4)) =
            (q2_k(), q3_k(), q4_k(), q5_k(), q6_k(), iq4_xs())
        else {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        };
        check_extremes::<BlockQ2_K>(&q2);
        check_extremes::<BlockQ3_K>(&q3);
        check_extremes::<BlockQ4_K>(&q4);
        check_extremes::<BlockQ5_K>(&q5);
        check_extremes::<BlockQ6_K>(&q6);
        check_extremes::<BlockIQ4_XS>(&iq4);
    }
}
