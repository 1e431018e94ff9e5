//! Sixteen-row AVX-512 VNNI GEMM of the 32-element formats (Q4_0, Q5_0, Q8_0, IQ4_NL with
//! Q8_0 activations, Q4_1 and Q5_1 with Q8_1 activations), over the layout of
//! `legacy_packing`.
//!
//! Each activation block brings `-offset · Σ x`, the seed of the integer sum (so the sum
//! is ggml's `Σ (q - offset) x` exactly), its scale as f32 and, for Q8_1, its `d · Σ x` as
//! f32 (which the minimums multiply).

use super::avx512_gemm::{gemm_kernels, lengths_agree, Line, Outputs};
use super::legacy_packing::{pack_body, prepare, Act32, Unsigned32, WEIGHT_LINES};
use crate::quant::{BlockIQ4_NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

/// Tokens `t0..t0 + T` of a packed group (`act` and `extra` start at token `t0`): lane
/// `r` of `acc[t]` is row `r` times token `t0 + t`, stored to `out`.
///
/// # Safety
/// Only for inlining into AVX-512F/BW/VL + VNNI functions; `packed` must hold `bpr`
/// packed blocks, `act` and `extra` `T` tokens of `bpr` blocks from their pointers,
/// `out` as for `Gemm::run` with tokens `t0..t0 + T`.
#[inline(always)]
unsafe fn tile<W: Unsigned32, const T: usize>(
    packed: *const Line,
    bpr: usize,
    act: *const W::Act,
    extra: *const i32,
    out: Outputs,
    t0: usize,
) {
    // SAFETY: guaranteed by the caller; every activation read stays inside the 32 bytes
    // of `qs` of block `t * bpr + b < T * bpr`.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..bpr {
            let lines = packed.add(b * W::LINES);
            let w: [__m512i; 8] = std::array::from_fn(|k| _mm512_load_si512(lines.add(k).cast()));
            let dw = _mm512_load_ps(lines.add(WEIGHT_LINES).cast());
            for (t, acc) in acc.iter_mut().enumerate() {
                let i = t * bpr + b;
                let qs = (*act.add(i)).quants().as_ptr().cast::<i32>();
                let e = extra.add(W::EXTRA * i);
                let mut sum = _mm512_set1_epi32(*e);
                for (k, &wk) in w.iter().enumerate() {
                    let x4 = _mm512_set1_epi32(qs.add(k).read_unaligned());
                    sum = _mm512_dpbusd_epi32(sum, wk, x4);
                }
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(f32::from_bits(*e.add(1) as u32)));
                *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sum), *acc);
                if W::MIN {
                    let m = _mm512_load_ps(lines.add(WEIGHT_LINES + 1).cast());
                    let sx = _mm512_set1_ps(f32::from_bits(*e.add(2) as u32));
                    *acc = _mm512_fmadd_ps(m, sx, *acc);
                }
            }
        }
        for (t, a) in acc.into_iter().enumerate() {
            out.store(t0 + t, a);
        }
    }
}

/// Multiplies a packed group with `tokens` tokens, eight at a time, then four, then one.
///
/// # Safety
/// Only for inlining into AVX-512F/BW/VL + VNNI functions; `out` as for `Gemm::run`.
#[inline(always)]
unsafe fn run_body<W: Unsigned32>(
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
    // SAFETY: guaranteed by the caller for the CPU and `out`; the lengths were checked
    // above, and each call covers tokens `t..t + T <= tokens`.
    unsafe {
        while t + 8 <= tokens {
            tile::<W, 8>(p, bpr, a.add(t * bpr), e.add(W::EXTRA * t * bpr), out, t);
            t += 8;
        }
        while t + 4 <= tokens {
            tile::<W, 4>(p, bpr, a.add(t * bpr), e.add(W::EXTRA * t * bpr), out, t);
            t += 4;
        }
        while t < tokens {
            tile::<W, 1>(p, bpr, a.add(t * bpr), e.add(W::EXTRA * t * bpr), out, t);
            t += 1;
        }
    }
}

/// Defines the `#[target_feature]` pack and run functions of one format.
macro_rules! legacy_instances {
    ($w:ty => $pack:ident, $run:ident) => {
        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL and VNNI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $pack(w: &[$w], bpr: usize, dst: &mut [Line]) {
            pack_body(w, bpr, dst)
        }

        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL and VNNI; `out` as for `Gemm::run`.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $run(
            p: &[Line],
            bpr: usize,
            x: &[<$w as Unsigned32>::Act],
            e: &[i32],
            tokens: usize,
            out: Outputs,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { run_body::<$w>(p, bpr, x, e, tokens, out) }
        }
    };
}

legacy_instances!(BlockQ4_0 => pack_q4_0, run_q4_0);
legacy_instances!(BlockQ5_0 => pack_q5_0, run_q5_0);
legacy_instances!(BlockQ8_0 => pack_q8_0, run_q8_0);
legacy_instances!(BlockIQ4_NL => pack_iq4_nl, run_iq4_nl);
legacy_instances!(BlockQ4_1 => pack_q4_1, run_q4_1);
legacy_instances!(BlockQ5_1 => pack_q5_1, run_q5_1);

gemm_kernels!(
    /// The Q4_0 x Q8_0 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q4_0: BlockQ4_0, BlockQ8_0, <BlockQ4_0 as Unsigned32>::LINES, <BlockQ4_0 as Unsigned32>::EXTRA, 8 => prepare::<BlockQ4_0>, pack_q4_0, run_q4_0
);
gemm_kernels!(
    /// The Q5_0 x Q8_0 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q5_0: BlockQ5_0, BlockQ8_0, <BlockQ5_0 as Unsigned32>::LINES, <BlockQ5_0 as Unsigned32>::EXTRA, 8 => prepare::<BlockQ5_0>, pack_q5_0, run_q5_0
);
gemm_kernels!(
    /// The Q8_0 x Q8_0 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q8_0: BlockQ8_0, BlockQ8_0, <BlockQ8_0 as Unsigned32>::LINES, <BlockQ8_0 as Unsigned32>::EXTRA, 8 => prepare::<BlockQ8_0>, pack_q8_0, run_q8_0
);
gemm_kernels!(
    /// The IQ4_NL x Q8_0 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    iq4_nl: BlockIQ4_NL, BlockQ8_0, <BlockIQ4_NL as Unsigned32>::LINES, <BlockIQ4_NL as Unsigned32>::EXTRA, 8
        => prepare::<BlockIQ4_NL>, pack_iq4_nl, run_iq4_nl
);
gemm_kernels!(
    /// The Q4_1 x Q8_1 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q4_1: BlockQ4_1, BlockQ8_1, <BlockQ4_1 as Unsigned32>::LINES, <BlockQ4_1 as Unsigned32>::EXTRA, 8
        => prepare::<BlockQ4_1>, pack_q4_1, run_q4_1
);
gemm_kernels!(
    /// The Q5_1 x Q8_1 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q5_1: BlockQ5_1, BlockQ8_1, <BlockQ5_1 as Unsigned32>::LINES, <BlockQ5_1 as Unsigned32>::EXTRA, 8
        => prepare::<BlockQ5_1>, pack_q5_1, run_q5_1
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::check;

    /// Row counts around the group size, odd block counts, token counts that exercise
    /// the eight-, four- and one-token tiles.
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
        let kernels = (q4_0(), q5_0(), q8_0(), iq4_nl(), q4_1(), q5_1());
        let (Some(q4), Some(q5), Some(q8), Some(iq4), Some(q41), Some(q51)) = kernels else {
            eprintln!("no AVX-512 VNNI on this CPU: the sixteen-row GEMM cannot run here");
            return;
        };
        check::<BlockQ4_0>(&q4, &CASES);
        check::<BlockQ5_0>(&q5, &CASES);
        check::<BlockQ8_0>(&q8, &CASES);
        check::<BlockIQ4_NL>(&iq4, &CASES);
        check::<BlockQ4_1>(&q41, &CASES);
        check::<BlockQ5_1>(&q51, &CASES);
    }
}
