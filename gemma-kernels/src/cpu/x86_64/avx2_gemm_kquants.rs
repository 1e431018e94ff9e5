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
//! `x` with the sign of `q`, one line per `vpmaddwd`, with no correction. With AVX-VNNI
//! (see `avx2_gemm::Products`) every line goes into `vpdpbusd`, a sub-block's i32 sum is
//! multiplied by its scales (`vpmulld`), and IQ4_XS takes its offset back as Q6_K does.

use super::avx2_gemm::{
    half, half_ps, has_avx_vnni, live_halves, maddubs_lines, path_runs, store_half, AvxVnni,
    Maddubs, Products,
};
use super::avx512_gemm::{gemm_kernels, lengths_agree, Line, Outputs};
use super::kquant_packing::{pack_body, sum_pairs, Packed, WEIGHT_LINES};
use crate::quant::{BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use std::arch::x86_64::*;

/// Whether format `W` takes the signed path on `P` (stored weights up to 255, no VNNI).
const fn signed<W: Packed, P: Products>() -> bool {
    W::OFFSET == 128 && !P::VNNI
}

/// Values per activation block: the sub-block sums as i16 pairs (none on the signed
/// path).
const fn extra_per_block<W: Packed, P: Products>() -> usize {
    if signed::<W, P>() {
        0
    } else {
        W::SUBS / 2
    }
}

/// Weight lines whose `vpmaddubsw` sums are added as i16 before `vpmaddwd`: each adds at
/// most `2 · MAX · 128` to a pair's sum, which must stay below 2^15; at most four (the
/// lines stay in registers for every token of a tile). Four with VNNI.
const fn chunk_lines<W: Packed, P: Products>() -> usize {
    let fit = 127 / W::MAX as usize;
    if fit >= 4 || P::VNNI {
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
unsafe fn block_sums<W: Packed, P: Products, const T: usize, const CHUNK: usize>(
    lines: *const Line,
    h: usize,
    x: &[*const BlockQ8_K; T],
    sumi: &mut [__m256i; T],
) {
    // SAFETY: guaranteed by the caller; line reads inside the block's weight and scale
    // lines, activation reads inside each token's 256-byte `qs`.
    unsafe {
        let sub_lines = W::SUB / 4;
        let xs = |t: usize, line: usize| (*x[t]).qs.as_ptr().add(4 * line).cast::<i32>();
        for s in 0..W::SUBS {
            let scales = half(lines.add(WEIGHT_LINES + s), h);
            let sc = scale_pair(scales);
            // With VNNI: the sub-block's i32 sums, scaled once at the end.
            let mut p = [_mm256_setzero_si256(); T];
            for c in (0..sub_lines).step_by(CHUNK) {
                let first = s * sub_lines + c;
                let w: [__m256i; CHUNK] = std::array::from_fn(|k| half(lines.add(first + k), h));
                if P::VNNI {
                    for (t, p) in p.iter_mut().enumerate() {
                        *p = P::dot_lines(*p, &w, xs(t, first));
                    }
                } else if signed::<W, P>() {
                    let q = w.map(|v| _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
                    let magnitude = q.map(|v| _mm256_sign_epi8(v, v));
                    for (t, sumi) in sumi.iter_mut().enumerate() {
                        for k in 0..CHUNK {
                            let x4 = _mm256_set1_epi32(xs(t, first + k).read_unaligned());
                            let p = _mm256_maddubs_epi16(magnitude[k], _mm256_sign_epi8(x4, q[k]));
                            *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(p, sc));
                        }
                    }
                } else {
                    for (t, sumi) in sumi.iter_mut().enumerate() {
                        let p = maddubs_lines(&w, xs(t, first));
                        *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(p, sc));
                    }
                }
            }
            if P::VNNI {
                for (sumi, p) in sumi.iter_mut().zip(p) {
                    *sumi = _mm256_add_epi32(*sumi, _mm256_mullo_epi32(p, scales));
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
unsafe fn tile<W: Packed, P: Products, const T: usize>(
    packed: *const Line,
    bpr: usize,
    act: *const BlockQ8_K,
    extra: *const i32,
    out: Outputs,
    t0: usize,
) {
    const {
        assert!(
            W::MINS == (W::OFFSET == 0) || (signed::<W, P>() && !W::MINS),
            "one correction per format, none on the signed path"
        )
    };
    let per_block = extra_per_block::<W, P>();
    // SAFETY: guaranteed by the caller; line reads inside the block's `W::LINES` lines,
    // extra reads inside the token's values of block `b`.
    unsafe {
        for h in 0..live_halves(&out) {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..bpr {
                let lines = packed.add(b * W::LINES);
                let x: [*const BlockQ8_K; T] = std::array::from_fn(|t| act.add(t * bpr + b));
                let mut sumi = [_mm256_setzero_si256(); T];
                if chunk_lines::<W, P>() == 4 {
                    block_sums::<W, P, T, 4>(lines, h, &x, &mut sumi);
                } else {
                    block_sums::<W, P, T, 2>(lines, h, &x, &mut sumi);
                }
                let corrections = per_block;
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
                    } else if !signed::<W, P>() {
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

/// Multiplies a packed group of `W` with every token on path `P` (see `Gemm::run`), four
/// at a time with [`tile`], then one.
///
/// # Safety
/// Only for inlining into functions with `P`'s features; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_body<W: Packed, P: Products>(
    packed: &[Line],
    bpr: usize,
    act: &[BlockQ8_K],
    extra: &[i32],
    tokens: usize,
    out: Outputs,
) {
    let per_block = extra_per_block::<W, P>();
    if !lengths_agree(packed, W::LINES, bpr, act, extra, per_block, tokens) {
        return;
    }
    let (p, a, e) = (packed.as_ptr(), act.as_ptr(), extra.as_ptr());
    let mut t = 0;
    // SAFETY: `out` is the caller's contract; the lengths were checked above, and each
    // call covers tokens `t..t + T <= tokens`.
    unsafe {
        while t + 4 <= tokens {
            tile::<W, P, 4>(p, bpr, a.add(t * bpr), e.add(per_block * t * bpr), out, t);
            t += 4;
        }
        while t < tokens {
            tile::<W, P, 1>(p, bpr, a.add(t * bpr), e.add(per_block * t * bpr), out, t);
            t += 1;
        }
    }
}

path_runs!(Packed, BlockQ8_K);

/// Defines module `$name` for format `$w`: its GEMMs through `gemm_kernels!` with
/// `vpmaddubsw` (`maddubs`, AVX2), AVX-VNNI (`avx_vnni`) and AVX-512 VNNI on 256 bits
/// (`avx512_vnni256`, for the tests), and `best()`, the fastest this CPU has of the first
/// two.
macro_rules! kquant_gemm {
    ($(#[$doc:meta])* $name:ident: $w:ty) => {
        $(#[$doc])*
        pub(crate) mod $name {
            use super::*;

            gemm_kernels!(
                /// With `vpmaddubsw`.
                maddubs: $w, BlockQ8_K, <$w as Packed>::LINES, extra_per_block::<$w, Maddubs>(), 8
                    => sum_pairs::<$w>, pack_group::<$w>, run_maddubs::<$w>;
                when $crate::cpu::isa::Isa::Avx2.is_supported()
            );
            gemm_kernels!(
                /// With AVX-VNNI.
                avx_vnni: $w, BlockQ8_K, <$w as Packed>::LINES, extra_per_block::<$w, AvxVnni>(), 8
                    => sum_pairs::<$w>, pack_group::<$w>, run_avx_vnni::<$w>;
                when has_avx_vnni()
            );
            #[cfg(test)]
            gemm_kernels!(
                /// With AVX-512 VNNI on 256-bit vectors (the AVX-VNNI kernels, for tests).
                avx512_vnni256: $w, BlockQ8_K, <$w as Packed>::LINES,
                    extra_per_block::<$w, crate::cpu::x86_64::avx2_gemm::Avx512Vnni256>(), 8
                    => sum_pairs::<$w>, pack_group::<$w>, run_avx512_vnni256::<$w>
            );

            /// The AVX-VNNI GEMM where the CPU has it, else the `vpmaddubsw` one.
            pub(crate) fn best() -> Option<$crate::cpu::x86_64::avx512_gemm::Gemm<$w, BlockQ8_K>> {
                avx_vnni().or_else(maddubs)
            }
        }
    };
}

kquant_gemm!(
    /// The Q2_K x Q8_K sixteen-row GEMMs on AVX2.
    q2_k: BlockQ2_K
);
kquant_gemm!(
    /// The Q3_K x Q8_K sixteen-row GEMMs on AVX2.
    q3_k: BlockQ3_K
);
kquant_gemm!(
    /// The Q4_K x Q8_K sixteen-row GEMMs on AVX2.
    q4_k: BlockQ4_K
);
kquant_gemm!(
    /// The Q5_K x Q8_K sixteen-row GEMMs on AVX2.
    q5_k: BlockQ5_K
);
kquant_gemm!(
    /// The Q6_K x Q8_K sixteen-row GEMMs on AVX2.
    q6_k: BlockQ6_K
);
kquant_gemm!(
    /// The IQ4_XS x Q8_K sixteen-row GEMMs on AVX2.
    iq4_xs: BlockIQ4_XS
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::{check, check_extremes, each_path};

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
        if q4_k::maddubs().is_none() {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        }
        each_path!(q2_k, |g| check::<BlockQ2_K>(g, &CASES));
        each_path!(q3_k, |g| check::<BlockQ3_K>(g, &CASES));
        each_path!(q4_k, |g| check::<BlockQ4_K>(g, &CASES));
        each_path!(q5_k, |g| check::<BlockQ5_K>(g, &CASES));
        each_path!(q6_k, |g| check::<BlockQ6_K>(g, &CASES));
        each_path!(iq4_xs, |g| check::<BlockIQ4_XS>(g, &CASES));
    }

    /// The largest stored weights times the largest activations of either sign: the
    /// 16-bit sums of `vpmaddubsw` must not saturate or wrap (they do with one more line
    /// per sum, checked), nor the i32 sums of the VNNI paths.
    #[test]
    fn extreme_values_do_not_overflow_16_bit_sums() {
        if q4_k::maddubs().is_none() {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        }
        each_path!(q2_k, check_extremes::<BlockQ2_K>);
        each_path!(q3_k, check_extremes::<BlockQ3_K>);
        each_path!(q4_k, check_extremes::<BlockQ4_K>);
        each_path!(q5_k, check_extremes::<BlockQ5_K>);
        each_path!(q6_k, check_extremes::<BlockQ6_K>);
        each_path!(iq4_xs, check_extremes::<BlockIQ4_XS>);
    }
}
