//! Sixteen-row AVX-512 VNNI GEMM of the 256-element formats with Q8_K activations (Q2_K,
//! Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS), over the layout of `kquant_packing`.
//!
//! Per token, each sub-block's `vpdpbusd` sum starts at `-offset · Σ x` of its
//! activations (so it is ggml's `Σ value · x` exactly), is multiplied by its scales
//! (`vpmulld`) and added: ggml's integer sum per block; only the block's totals are
//! converted to f32. Minimums meet pairs of sub-block activation sums in `vpdpwssd`.

use super::avx512_gemm::{gemm_kernels, lengths_agree, Line, Outputs};
use super::kquant_packing::{pack_body, prepare, Packed, WEIGHT_LINES};
use crate::quant::{BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use std::arch::x86_64::*;

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

/// The `vpdpbusd` sums times scales of every sub-block of block `b` for token `t`'s
/// activations `x` (its seeds at `e`): for 32-element sub-blocks one sub-block per
/// eight weight lines, for 16-element ones two (lines `0..4` and `4..8`).
///
/// # Safety
/// As [`tile`]; `lines` is the packed block, `e` its token's extra values.
#[inline(always)]
unsafe fn block_sums<W: Packed, const T: usize>(
    lines: *const Line,
    x: [*const BlockQ8_K; T],
    e: [*const i32; T],
) -> [__m512i; T] {
    // SAFETY: guaranteed by the caller; line reads inside the first `WEIGHT_LINES +
    // SUBS` lines of the block, activation reads inside its 256-byte `qs`.
    unsafe {
        let seed = |t: usize, s: usize| {
            if W::OFFSET != 0 {
                _mm512_set1_epi32(*e[t].add(s))
            } else {
                _mm512_setzero_si512()
            }
        };
        let mut sumi = [_mm512_setzero_si512(); T];
        // Eight weight lines (32 weights) at a time.
        for group in 0..8 {
            let w: [__m512i; 8] =
                std::array::from_fn(|k| _mm512_load_si512(lines.add(8 * group + k).cast()));
            if W::SUB == 32 {
                let sc = _mm512_load_si512(lines.add(WEIGHT_LINES + group).cast());
                for t in 0..T {
                    let xs = (*x[t]).qs.as_ptr().add(32 * group).cast::<i32>();
                    let p = dot_lines::<8>(seed(t, group), &w, xs);
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(p, sc));
                }
            } else {
                let s = 2 * group;
                let w_hi: [__m512i; 8] = std::array::from_fn(|k| w[(k + 4) % 8]);
                let sc0 = _mm512_load_si512(lines.add(WEIGHT_LINES + s).cast());
                let sc1 = _mm512_load_si512(lines.add(WEIGHT_LINES + s + 1).cast());
                for t in 0..T {
                    let xs = (*x[t]).qs.as_ptr().add(16 * s).cast::<i32>();
                    let p0 = dot_lines::<4>(seed(t, s), &w, xs);
                    let p1 = dot_lines::<4>(seed(t, s + 1), &w_hi, xs.add(4));
                    let both =
                        _mm512_add_epi32(_mm512_mullo_epi32(p0, sc0), _mm512_mullo_epi32(p1, sc1));
                    sumi[t] = _mm512_add_epi32(sumi[t], both);
                }
            }
        }
        sumi
    }
}

/// Tokens `t0..t0 + T` of a packed group of `W` (`act` and `extra` start at token
/// `t0`), stored to `out`.
///
/// # Safety
/// Only for inlining into AVX-512F/BW/VL + VNNI functions; `packed` must hold `bpr`
/// packed blocks, `act` and `extra` `T` tokens of `bpr` blocks from their pointers,
/// `out` as for `Gemm::run` with tokens `t0..t0 + T`.
#[inline(always)]
unsafe fn tile<W: Packed, const T: usize>(
    packed: *const Line,
    bpr: usize,
    act: *const BlockQ8_K,
    extra: *const i32,
    out: Outputs,
    t0: usize,
) {
    // SAFETY: guaranteed by the caller; line reads inside the block's `W::LINES` lines,
    // extra reads inside the token's `W::EXTRA` values of block `b`.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..bpr {
            let lines = packed.add(b * W::LINES);
            let x: [*const BlockQ8_K; T] = std::array::from_fn(|t| act.add(t * bpr + b));
            let e: [*const i32; T] = std::array::from_fn(|t| extra.add(W::EXTRA * (t * bpr + b)));
            let sumi = block_sums::<W, T>(lines, x, e);
            let d = _mm512_load_ps(lines.add(W::D_LINE).cast());
            for t in 0..T {
                let dx = _mm512_set1_ps((*x[t]).d);
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, dx), _mm512_cvtepi32_ps(sumi[t]), acc[t]);
            }
            if W::MINS {
                let first_pair = if W::OFFSET != 0 { W::SUBS } else { 0 };
                let dmin = _mm512_load_ps(lines.add(W::D_LINE + 1).cast());
                for t in 0..T {
                    let mut m = _mm512_setzero_si512();
                    for j in 0..W::SUBS / 2 {
                        let mins = _mm512_load_si512(lines.add(WEIGHT_LINES + W::SUBS + j).cast());
                        let sums = _mm512_set1_epi32(*e[t].add(first_pair + j));
                        m = _mm512_dpwssd_epi32(m, mins, sums);
                    }
                    let dx = _mm512_set1_ps((*x[t]).d);
                    acc[t] =
                        _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(m), acc[t]);
                }
            }
        }
        for (t, a) in acc.into_iter().enumerate() {
            out.store(t0 + t, a);
        }
    }
}

/// Defines the `#[target_feature]` pack and run functions of format `$w`: `$run` covers
/// every token with [`tile`], eight at a time, then four, then one.
macro_rules! kquant_instances {
    ($w:ty => $pack:ident, $run:ident) => {
        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $pack(w: &[$w], bpr: usize, dst: &mut [Line]) {
            pack_body::<$w>(w, bpr, dst)
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
            const EXTRA: usize = <$w as Packed>::EXTRA;
            if !lengths_agree(
                packed,
                <$w as Packed>::LINES,
                bpr,
                act,
                extra,
                EXTRA,
                tokens,
            ) {
                return;
            }
            let (p, a, e) = (packed.as_ptr(), act.as_ptr(), extra.as_ptr());
            let mut t = 0;
            // SAFETY: `out` is the caller's contract; the lengths were checked above,
            // and each call covers tokens `t..t + T <= tokens`.
            unsafe {
                while t + 8 <= tokens {
                    tile::<$w, 8>(p, bpr, a.add(t * bpr), e.add(EXTRA * t * bpr), out, t);
                    t += 8;
                }
                while t + 4 <= tokens {
                    tile::<$w, 4>(p, bpr, a.add(t * bpr), e.add(EXTRA * t * bpr), out, t);
                    t += 4;
                }
                while t < tokens {
                    tile::<$w, 1>(p, bpr, a.add(t * bpr), e.add(EXTRA * t * bpr), out, t);
                    t += 1;
                }
            }
        }
    };
}

kquant_instances!(BlockQ2_K => pack_q2_k, run_q2_k);
kquant_instances!(BlockQ3_K => pack_q3_k, run_q3_k);
kquant_instances!(BlockQ4_K => pack_q4_k, run_q4_k);
kquant_instances!(BlockQ5_K => pack_q5_k, run_q5_k);
kquant_instances!(BlockQ6_K => pack_q6_k, run_q6_k);
kquant_instances!(BlockIQ4_XS => pack_iq4_xs, run_iq4_xs);

/// Defines `$name()` for format `$w` through `gemm_kernels!` with its packed layout.
macro_rules! kquant_gemm {
    ($(#[$doc:meta])* $name:ident: $w:ty, $min_tokens:expr => $pack:ident, $run:ident) => {
        gemm_kernels!(
            $(#[$doc])*
            $name: $w, BlockQ8_K, <$w as Packed>::LINES, <$w as Packed>::EXTRA, $min_tokens
                => prepare::<$w>, $pack, $run
        );
    };
}

kquant_gemm!(
    /// The Q2_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q2_k: BlockQ2_K, 8 => pack_q2_k, run_q2_k
);
kquant_gemm!(
    /// The Q3_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q3_k: BlockQ3_K, 8 => pack_q3_k, run_q3_k
);
kquant_gemm!(
    /// The Q4_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q4_k: BlockQ4_K, 8 => pack_q4_k, run_q4_k
);
kquant_gemm!(
    /// The Q5_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q5_k: BlockQ5_K, 8 => pack_q5_k, run_q5_k
);
kquant_gemm!(
    /// The Q6_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q6_k: BlockQ6_K, 8 => pack_q6_k, run_q6_k
);
kquant_gemm!(
    /// The IQ4_XS x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    iq4_xs: BlockIQ4_XS, 8 => pack_iq4_xs, run_iq4_xs
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
        let (Some(q2), Some(q3), Some(q4), Some(q5), Some(q6), Some(iq4)) =
            (q2_k(), q3_k(), q4_k(), q5_k(), q6_k(), iq4_xs())
        else {
            eprintln!("no AVX-512 VNNI on this CPU: the sixteen-row GEMM cannot run here");
            return;
        };
        check::<BlockQ2_K>(&q2, &CASES);
        check::<BlockQ3_K>(&q3, &CASES);
        check::<BlockQ4_K>(&q4, &CASES);
        check::<BlockQ5_K>(&q5, &CASES);
        check::<BlockQ6_K>(&q6, &CASES);
        check::<BlockIQ4_XS>(&iq4, &CASES);
    }
}
