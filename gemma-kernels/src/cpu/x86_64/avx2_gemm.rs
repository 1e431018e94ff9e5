//! The common pieces of the AVX2 twins of the sixteen-row GEMMs (`avx2_gemm_kquants`,
//! `avx2_gemm_legacy`, `avx2_gemm_float`), for CPUs without AVX-512 VNNI: the packed
//! lines of `avx512_gemm`, each read as two halves of eight rows (one 32-bit lane of a
//! 256-bit vector per row).
//!
//! Without `vpdpbusd`, four weights of eight rows times four activation bytes take
//! `vpmaddubsw` (unsigned weight times signed activation, pairs summed into i16), and
//! `vpmaddwd` sums the pairs into the i32 lane of each row, multiplied by ones or by the
//! sub-block scale. The i16 sums of a few lines are added before that where they cannot
//! overflow, so each line of eight rows costs a broadcast, a `vpmaddubsw` and an add per
//! token ([`Maddubs`]). CPUs with AVX-VNNI (the 256-bit `vpdpbusd` of Intel's cores since
//! Alder Lake, which lack AVX-512) sum each line straight into i32 lanes instead
//! ([`AvxVnni`]), with no 16-bit bound; [`Avx512Vnni256`] is the same instruction in its
//! AVX-512 encoding, so that the tests run those kernels on AVX-512 VNNI CPUs.

use super::avx512_gemm::{Line, Outputs};
use std::arch::x86_64::*;

/// Rows per half line (one 32-bit lane of a 256-bit vector each).
pub(crate) const HALF_ROWS: usize = 8;

/// Half `h` (rows `8h..8h + 8`) of the line at `p` as integers.
///
/// # Safety
/// Only for inlining into AVX2 functions; `p` must point to a readable line, `h < 2`.
#[inline(always)]
pub(crate) unsafe fn half(p: *const Line, h: usize) -> __m256i {
    // SAFETY: guaranteed by the caller; a line is 64-byte aligned.
    unsafe { _mm256_load_si256(p.cast::<__m256i>().add(h)) }
}

/// Half `h` of the line at `p` as f32.
///
/// # Safety
/// As [`half`].
#[inline(always)]
pub(crate) unsafe fn half_ps(p: *const Line, h: usize) -> __m256 {
    // SAFETY: guaranteed by the caller; a line is 64-byte aligned.
    unsafe { _mm256_load_ps(p.cast::<f32>().add(HALF_ROWS * h)) }
}

/// The i16 sum of `vpmaddubsw(w[k], x[k])` for `k < N`, where `x[k]` is the 32-bit word
/// `k` at `x` (four activation bytes) broadcast; the caller keeps the sums below 2^15.
///
/// # Safety
/// Only for inlining into AVX2 functions; `x` must point to `4N` readable bytes.
#[inline(always)]
pub(crate) unsafe fn maddubs_lines<const N: usize>(w: &[__m256i; N], x: *const i32) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let mut sum = _mm256_setzero_si256();
        for (k, &wk) in w.iter().enumerate() {
            let x4 = _mm256_set1_epi32(x.add(k).read_unaligned());
            sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(wk, x4));
        }
        sum
    }
}

/// How a tile multiplies weight lines with broadcast activation words.
pub(crate) trait Products {
    /// Whether `vpdpbusd` sums the products straight into i32 lanes: no 16-bit bound, so
    /// no format needs the signed path.
    const VNNI: bool;

    /// `acc` plus the products of the unsigned bytes of `w` with the signed ones of `x`,
    /// four by four into i32 lanes (`vpdpbusd`; without VNNI only while each pair of
    /// products stays below 2^15).
    ///
    /// # Safety
    /// Only for inlining into functions with the path's features (AVX2, plus AVX-VNNI or
    /// AVX-512 VNNI / VL).
    unsafe fn dpbusd(acc: __m256i, w: __m256i, x: __m256i) -> __m256i;

    /// `acc` plus the products of `w[k]` with the 32-bit word `k` at `x` broadcast, for
    /// `k < N`, in i32 lanes (without VNNI through one i16 sum, which the caller keeps
    /// below 2^15).
    ///
    /// # Safety
    /// As [`Products::dpbusd`]; `x` must point to `4N` readable bytes.
    #[inline(always)]
    unsafe fn dot_lines<const N: usize>(acc: __m256i, w: &[__m256i; N], x: *const i32) -> __m256i {
        // SAFETY: guaranteed by the caller.
        unsafe {
            let mut acc = acc;
            for (k, &wk) in w.iter().enumerate() {
                acc = Self::dpbusd(acc, wk, _mm256_set1_epi32(x.add(k).read_unaligned()));
            }
            acc
        }
    }
}

/// `vpmaddubsw` + `vpmaddwd`: AVX2 alone.
pub(crate) struct Maddubs;

impl Products for Maddubs {
    const VNNI: bool = false;
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: guaranteed by the caller.
        unsafe {
            let pairs = _mm256_maddubs_epi16(w, x);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    unsafe fn dot_lines<const N: usize>(acc: __m256i, w: &[__m256i; N], x: *const i32) -> __m256i {
        // SAFETY: guaranteed by the caller.
        unsafe {
            let pairs = maddubs_lines(w, x);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

/// The VEX `vpdpbusd` of AVX-VNNI.
pub(crate) struct AvxVnni;

impl Products for AvxVnni {
    const VNNI: bool = true;
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: AVX-VNNI enabled by the caller.
        unsafe { _mm256_dpbusd_avx_epi32(acc, w, x) }
    }
}

/// The EVEX `vpdpbusd` of AVX-512 VNNI on 256-bit vectors: the AVX-VNNI kernels on
/// CPUs that have AVX-512 VNNI (for the tests; such CPUs take the AVX-512 kernels).
#[cfg(test)]
pub(crate) struct Avx512Vnni256;

#[cfg(test)]
impl Products for Avx512Vnni256 {
    const VNNI: bool = true;
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: AVX-512 VNNI and VL enabled by the caller.
        unsafe { _mm256_dpbusd_epi32(acc, w, x) }
    }
}

/// Defines, in a file with a generic `run_body::<W, P>` (see `Gemm::run`), the
/// `#[target_feature]` entry points of its three paths: `run_maddubs`, `run_avx_vnni` and
/// (for the tests) `run_avx512_vnni256`, each `run_body` with that path's `Products`, for
/// formats `W: $bound` with activation blocks `$act`.
macro_rules! path_runs {
    ($bound:path, $act:ty) => {
        /// [`run_body`] with `vpmaddubsw`.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C; `out` as for `Gemm::run`.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn run_maddubs<W: $bound>(
            p: &[Line],
            bpr: usize,
            x: &[$act],
            e: &[i32],
            n: usize,
            out: Outputs,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { run_body::<W, $crate::cpu::x86_64::avx2_gemm::Maddubs>(p, bpr, x, e, n, out) }
        }

        /// [`run_body`] with AVX-VNNI.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C and AVX-VNNI; `out` as for `Gemm::run`.
        #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
        unsafe fn run_avx_vnni<W: $bound>(
            p: &[Line],
            bpr: usize,
            x: &[$act],
            e: &[i32],
            n: usize,
            out: Outputs,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { run_body::<W, $crate::cpu::x86_64::avx2_gemm::AvxVnni>(p, bpr, x, e, n, out) }
        }

        /// [`run_body`] with the AVX-512 encoding of the AVX-VNNI instruction.
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C and AVX-512 VNNI / VL; `out` as for
        /// `Gemm::run`.
        #[cfg(test)]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
        unsafe fn run_avx512_vnni256<W: $bound>(
            p: &[Line],
            bpr: usize,
            x: &[$act],
            e: &[i32],
            n: usize,
            out: Outputs,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe {
                run_body::<W, $crate::cpu::x86_64::avx2_gemm::Avx512Vnni256>(p, bpr, x, e, n, out)
            }
        }
    };
}
pub(crate) use path_runs;

/// Whether this CPU has AVX-VNNI (and AVX2).
pub(crate) fn has_avx_vnni() -> bool {
    crate::cpu::isa::Isa::Avx2.is_supported() && is_x86_feature_detected!("avxvnni")
}

/// Stores `v` as the outputs of token `t` for rows `8h..8h + 8` of the group, those
/// below `out.rows` only.
///
/// # Safety
/// Only for inlining into AVX2 functions; the outputs of token `t` must be writable (see
/// `Gemm::run`).
#[inline(always)]
pub(crate) unsafe fn store_half(out: &Outputs, t: usize, h: usize, v: __m256) {
    let first = HALF_ROWS * h;
    // SAFETY: guaranteed by the caller; the mask keeps rows `out.rows..` unwritten.
    unsafe {
        let dst = out.ptr.add(t * out.stride + first);
        if out.rows >= first + HALF_ROWS {
            _mm256_storeu_ps(dst, v);
        } else {
            let live = out.rows.saturating_sub(first) as i32;
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(live), lanes);
            _mm256_maskstore_ps(dst, mask, v);
        }
    }
}

/// The halves of a group with rows in them: 1 for up to eight rows, else 2.
#[inline(always)]
pub(crate) fn live_halves(out: &Outputs) -> usize {
    out.rows.div_ceil(HALF_ROWS).min(2)
}
