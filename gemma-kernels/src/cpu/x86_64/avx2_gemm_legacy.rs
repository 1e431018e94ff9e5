//! Sixteen-row AVX2 GEMM of the 32-element formats (Q4_0, Q5_0, Q8_0, IQ4_NL with Q8_0
//! activations, Q4_1 and Q5_1 with Q8_1 activations), over the layout of
//! `legacy_packing`, eight rows at a time (see `avx2_gemm`).
//!
//! Weights of at most five bits go into `vpmaddubsw` as stored (`q + offset`), four lines
//! summed as i16, and the sum starts at the activation block's `-offset · Σ x` as in the
//! AVX-512 kernel. Q8_0 and IQ4_NL, stored as `q + 128` up to 255, would saturate
//! `vpmaddubsw`: their lines are turned back into signed bytes, and each line meets the
//! activations as `|q|` times `x` with the sign of `q` (ggml's AVX2 dot product), the
//! seed zero. With AVX-VNNI (see `avx2_gemm::Products`) every line goes into `vpdpbusd`
//! as stored, each sum seeded with `-offset · Σ x` as in the AVX-512 kernel.

use super::avx2_gemm::{
    half, half_ps, has_avx_vnni, live_halves, path_runs, store_half, AvxVnni, Maddubs, Products,
};
use super::avx512_gemm::{gemm_kernels, lengths_agree, Line, Outputs};
use super::legacy_packing::{pack_body, Act32, Unsigned32, WEIGHT_LINES};
use crate::quant::{BlockIQ4_NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

/// Weight lines per `vpmaddubsw` sum (and per load of weights in registers): four lines of
/// weights up to 31 times activations up to 127 stay below 2^15.
const CHUNK: usize = 4;

/// Whether format `W` takes the signed path on `P` (stored weights up to 255, no VNNI).
const fn signed<W: Unsigned32, P: Products>() -> bool {
    W::OFFSET == 128 && !P::VNNI
}

/// The activation values of format `W` on path `P`: the seed `-offset · Σ x` (zero on the
/// signed path), the scale and, for Q8_1, `d · Σ x`.
fn prepare<W: Unsigned32, P: Products>(x: &W::Act, extra: &mut [i32]) {
    let offset = if signed::<W, P>() { 0 } else { W::OFFSET };
    x.prepare(offset, extra);
}

/// Adds the integer products of half `h` of one block's weight lines with the tokens'
/// activations `x` to `sum`.
///
/// # Safety
/// As [`tile`]; `lines` is a packed block.
#[inline(always)]
unsafe fn block_sums<W: Unsigned32, P: Products, const T: usize>(
    lines: *const Line,
    h: usize,
    x: &[*const i32; T],
    sum: &mut [__m256i; T],
) {
    // SAFETY: guaranteed by the caller; line reads inside the block's weight lines,
    // activation reads inside each token's 32 quants.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        for c in (0..WEIGHT_LINES).step_by(CHUNK) {
            let w: [__m256i; CHUNK] = std::array::from_fn(|k| half(lines.add(c + k), h));
            if signed::<W, P>() {
                let q = w.map(|v| _mm256_xor_si256(v, _mm256_set1_epi8(-128)));
                let magnitude = q.map(|v| _mm256_sign_epi8(v, v));
                for t in 0..T {
                    for k in 0..CHUNK {
                        let x4 = _mm256_set1_epi32(x[t].add(c + k).read_unaligned());
                        let p = _mm256_maddubs_epi16(magnitude[k], _mm256_sign_epi8(x4, q[k]));
                        sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, ones));
                    }
                }
            } else {
                for t in 0..T {
                    sum[t] = P::dot_lines(sum[t], &w, x[t].add(c));
                }
            }
        }
    }
}

/// Tokens `t0..t0 + T` of a packed group (`act` and `extra` start at token `t0`), stored
/// to `out`, one half of the rows after the other.
///
/// # Safety
/// Only for inlining into AVX2 + FMA functions; `packed` must hold `bpr` packed blocks,
/// `act` and `extra` `T` tokens of `bpr` blocks from their pointers, `out` as for
/// `Gemm::run` with tokens `t0..t0 + T`.
#[inline(always)]
unsafe fn tile<W: Unsigned32, P: Products, const T: usize>(
    packed: *const Line,
    bpr: usize,
    act: *const W::Act,
    extra: *const i32,
    out: Outputs,
    t0: usize,
) {
    // SAFETY: guaranteed by the caller; every activation read stays inside the 32 quants
    // of block `t * bpr + b < T * bpr`, every extra read inside its `W::EXTRA` values.
    unsafe {
        for h in 0..live_halves(&out) {
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..bpr {
                let lines = packed.add(b * W::LINES);
                let e: [*const i32; T] =
                    std::array::from_fn(|t| extra.add(W::EXTRA * (t * bpr + b)));
                let x: [*const i32; T] =
                    std::array::from_fn(|t| (*act.add(t * bpr + b)).quants().as_ptr().cast());
                let mut sum: [__m256i; T] = std::array::from_fn(|t| _mm256_set1_epi32(*e[t]));
                block_sums::<W, P, T>(lines, h, &x, &mut sum);
                let dw = half_ps(lines.add(WEIGHT_LINES), h);
                for t in 0..T {
                    let dx = _mm256_set1_ps(f32::from_bits(*e[t].add(1) as u32));
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(sum[t]), acc[t]);
                    if W::MIN {
                        let m = half_ps(lines.add(WEIGHT_LINES + 1), h);
                        let sx = _mm256_set1_ps(f32::from_bits(*e[t].add(2) as u32));
                        acc[t] = _mm256_fmadd_ps(m, sx, acc[t]);
                    }
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
unsafe fn pack_group<W: Unsigned32>(w: &[W], bpr: usize, dst: &mut [Line]) {
    pack_body(w, bpr, dst)
}

/// Multiplies a packed group of `W` with every token on path `P` (see `Gemm::run`), four
/// at a time with [`tile`], then one.
///
/// # Safety
/// Only for inlining into functions with `P`'s features; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_body<W: Unsigned32, P: Products>(
    packed: &[Line],
    bpr: usize,
    act: &[W::Act],
    extra: &[i32],
    tokens: usize,
    out: Outputs,
) {
    if !lengths_agree(packed, W::LINES, bpr, act, extra, W::EXTRA, tokens) {
        return;
    }
    let (p, a, e) = (packed.as_ptr(), act.as_ptr(), extra.as_ptr());
    let mut t = 0;
    // SAFETY: `out` is the caller's contract; the lengths were checked above, and each
    // call covers tokens `t..t + T <= tokens`.
    unsafe {
        while t + 4 <= tokens {
            tile::<W, P, 4>(p, bpr, a.add(t * bpr), e.add(W::EXTRA * t * bpr), out, t);
            t += 4;
        }
        while t < tokens {
            tile::<W, P, 1>(p, bpr, a.add(t * bpr), e.add(W::EXTRA * t * bpr), out, t);
            t += 1;
        }
    }
}

path_runs!(Unsigned32, W::Act);

/// Defines module `$name` for format `$w` with activations `$a`: its GEMMs through
/// `gemm_kernels!` with `vpmaddubsw` (`maddubs`, AVX2), AVX-VNNI (`avx_vnni`) and AVX-512
/// VNNI on 256 bits (`avx512_vnni256`, for the tests), and `best()`, the fastest this CPU
/// has of the first two.
macro_rules! legacy_gemm {
    ($(#[$doc:meta])* $name:ident: $w:ty, $a:ty) => {
        $(#[$doc])*
        pub(crate) mod $name {
            use super::*;

            gemm_kernels!(
                /// With `vpmaddubsw`.
                maddubs: $w, $a, <$w as Unsigned32>::LINES, <$w as Unsigned32>::EXTRA, 8
                    => prepare::<$w, Maddubs>, pack_group::<$w>, run_maddubs::<$w>;
                when $crate::cpu::isa::Isa::Avx2.is_supported()
            );
            gemm_kernels!(
                /// With AVX-VNNI.
                avx_vnni: $w, $a, <$w as Unsigned32>::LINES, <$w as Unsigned32>::EXTRA, 8
                    => prepare::<$w, AvxVnni>, pack_group::<$w>, run_avx_vnni::<$w>;
                when has_avx_vnni()
            );
            #[cfg(test)]
            gemm_kernels!(
                /// With AVX-512 VNNI on 256-bit vectors (the AVX-VNNI kernels, for tests).
                avx512_vnni256: $w, $a, <$w as Unsigned32>::LINES, <$w as Unsigned32>::EXTRA, 8
                    => prepare::<$w, crate::cpu::x86_64::avx2_gemm::Avx512Vnni256>, pack_group::<$w>, run_avx512_vnni256::<$w>
            );

            /// The AVX-VNNI GEMM where the CPU has it, else the `vpmaddubsw` one.
            pub(crate) fn best() -> Option<$crate::cpu::x86_64::avx512_gemm::Gemm<$w, $a>> {
                avx_vnni().or_else(maddubs)
            }
        }
    };
}

legacy_gemm!(
    /// The Q4_0 x Q8_0 sixteen-row GEMMs on AVX2.
    q4_0: BlockQ4_0, BlockQ8_0
);
legacy_gemm!(
    /// The Q5_0 x Q8_0 sixteen-row GEMMs on AVX2.
    q5_0: BlockQ5_0, BlockQ8_0
);
legacy_gemm!(
    /// The Q8_0 x Q8_0 sixteen-row GEMMs on AVX2.
    q8_0: BlockQ8_0, BlockQ8_0
);
legacy_gemm!(
    /// The IQ4_NL x Q8_0 sixteen-row GEMMs on AVX2.
    iq4_nl: BlockIQ4_NL, BlockQ8_0
);
legacy_gemm!(
    /// The Q4_1 x Q8_1 sixteen-row GEMMs on AVX2.
    q4_1: BlockQ4_1, BlockQ8_1
);
legacy_gemm!(
    /// The Q5_1 x Q8_1 sixteen-row GEMMs on AVX2.
    q5_1: BlockQ5_1, BlockQ8_1
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::{check, check_extremes, each_path};

    /// Row counts around the group and half sizes, odd block counts, token counts that
    /// exercise the four- and one-token tiles.
    const CASES: [(usize, usize, usize); 6] = [
        (1, 1, 1),
        (16, 2, 8),
        (17, 3, 13),
        (33, 20, 5),
        (7, 5, 29),
        (40, 1, 4),
    ];

    #[test]
    fn sixteen_row_gemm_matches_scalar_dot() {
        if q4_0::maddubs().is_none() {
            eprintln!("no AVX2 on this CPU: the AVX2 sixteen-row GEMM cannot run here");
            return;
        }
        each_path!(q4_0, |g| check::<BlockQ4_0>(g, &CASES));
        each_path!(q5_0, |g| check::<BlockQ5_0>(g, &CASES));
        each_path!(q8_0, |g| check::<BlockQ8_0>(g, &CASES));
        each_path!(iq4_nl, |g| check::<BlockIQ4_NL>(g, &CASES));
        each_path!(q4_1, |g| check::<BlockQ4_1>(g, &CASES));
        each_path!(q5_1, |g| check::<BlockQ5_1>(g, &CASES));
        // The largest stored weights times the largest activations of either sign: the
        // 16-bit sums must not saturate or wrap.
        each_path!(q4_0, check_extremes::<BlockQ4_0>);
        each_path!(q5_0, check_extremes::<BlockQ5_0>);
        each_path!(q8_0, check_extremes::<BlockQ8_0>);
        each_path!(iq4_nl, check_extremes::<BlockIQ4_NL>);
        each_path!(q4_1, check_extremes::<BlockQ4_1>);
        each_path!(q5_1, check_extremes::<BlockQ5_1>);
    }
}
