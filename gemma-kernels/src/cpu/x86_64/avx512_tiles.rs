//! AVX-512 products of one weight row with four tokens at once, for prefill tiles.
//!
//! A one-token dot product redoes the weight side of every block (nibble unpacking,
//! scale and minimum decoding, shuffles) for each token. Here it is done once per block
//! and used for four activation rows, which roughly halves the instructions per
//! multiply-add. Same integer arithmetic as the one-token kernels (`maddubs` pair sums
//! scaled by `vpdpwssd` / `madd`), so results agree with them to float rounding.

use crate::quant::{BlockQ4_K, BlockQ6_K, BlockQ8_K};
use std::arch::x86_64::*;

/// Tokens per call.
pub(crate) const TILE_TOKENS: usize = 4;

/// One weight row times four activation rows (same number of blocks each).
pub(crate) type Dot4<W, A> = fn(&[W], [&[A]; TILE_TOKENS]) -> [f32; TILE_TOKENS];

/// Defines `$name()`, returning the four-token kernel `$body` for weight blocks `$w` and
/// activation blocks `$a` (VNNI instance when the CPU has VNNI, plain AVX-512BW
/// otherwise, `None` without AVX-512), and the two `#[target_feature]` instances `$vnni`
/// and `$bw`.
macro_rules! four_token_kernel {
    ($(#[$doc:meta])* $name:ident: $w:ty, $a:ty => $body:ident, $vnni:ident, $bw:ident) => {
        $(#[$doc])*
        pub(crate) fn $name() -> Option<$crate::cpu::x86_64::avx512_tiles::Dot4<$w, $a>> {
            use $crate::cpu::x86_64::avx512_tiles::TILE_TOKENS;
            fn vnni(w: &[$w], x: [&[$a]; TILE_TOKENS]) -> [f32; TILE_TOKENS] {
                // SAFETY: handed out below only after AVX-512F/BW/VL, VNNI, FMA and F16C
                // were found.
                unsafe { $vnni(w, x) }
            }
            fn bw(w: &[$w], x: [&[$a]; TILE_TOKENS]) -> [f32; TILE_TOKENS] {
                // SAFETY: handed out below only after AVX-512F/BW/VL, FMA and F16C were found.
                unsafe { $bw(w, x) }
            }
            if !$crate::cpu::isa::Isa::Avx512.is_supported() {
                None
            } else if $crate::cpu::isa::has_avx512_vnni() {
                Some(vnni)
            } else {
                Some(bw)
            }
        }

        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $vnni(w: &[$w], x: [&[$a]; 4]) -> [f32; 4] {
            $body::<true>(w, x)
        }

        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL, FMA and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn $bw(w: &[$w], x: [&[$a]; 4]) -> [f32; 4] {
            $body::<false>(w, x)
        }
    };
}
pub(crate) use four_token_kernel;

four_token_kernel!(
    /// The Q4_K x Q8_K four-token kernel, if this CPU has AVX-512 F/BW/VL.
    q4_k_x4: BlockQ4_K, BlockQ8_K => q4_k_x4_body, q4_k_x4_kernel_vnni, q4_k_x4_kernel_bw
);
four_token_kernel!(
    /// The Q6_K x Q8_K four-token kernel, if this CPU has AVX-512 F/BW/VL.
    q6_k_x4: BlockQ6_K, BlockQ8_K => q6_k_x4_body, q6_k_x4_kernel_vnni, q6_k_x4_kernel_bw
);

/// `acc + Σ pairs of p16 * s16` as sixteen i32 (one `vpdpwssd` with VNNI).
#[inline(always)]
fn scale_acc<const VNNI: bool>(acc: __m512i, p16: __m512i, s16: __m512i) -> __m512i {
    // SAFETY: only inlined into the kernels above, which enable AVX-512BW and, for
    // `VNNI == true`, AVX-512 VNNI.
    unsafe {
        if VNNI {
            _mm512_dpwssd_epi32(acc, p16, s16)
        } else {
            _mm512_add_epi32(acc, _mm512_madd_epi16(p16, s16))
        }
    }
}

/// Index vector for `vpermw` picking i16 lane `a` for the low 256 bits, `b` for the high.
#[inline(always)]
fn two_lanes(a: i16, b: i16) -> __m512i {
    // SAFETY: only inlined into AVX-512F functions.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi16(a)),
            _mm256_set1_epi16(b),
        )
    }
}

/// Q4_K layout: bytes `32c..32c+32` of `qs` hold sub-block `2c` in their low nibbles and
/// `2c+1` in their high ones. The weights are rearranged once per block into four
/// vectors `[sub-block 2h | 2h+1]` whose activations are the contiguous bytes
/// `64h..64h+64` of a Q8_K block, so every token's activations load without shuffles.
#[inline(always)]
fn q4_k_x4_body<const VNNI: bool>(w: &[BlockQ4_K], x: [&[BlockQ8_K]; 4]) -> [f32; 4] {
    // SAFETY: inlined into the kernels above (AVX-512F/BW/VL, FMA, F16C); every load
    // reads whole fixed-size arrays of the blocks; `zip` bounds each index by the
    // shortest of the five rows.
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let lanes = [
            two_lanes(0, 1),
            two_lanes(2, 3),
            two_lanes(4, 5),
            two_lanes(6, 7),
        ];
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut acc_m = [_mm256_setzero_ps(); 4];
        let n = x.iter().fold(w.len(), |n, row| n.min(row.len()));
        for (i, b) in w[..n].iter().enumerate() {
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(b.d.to_bits()))));
            let dmin = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(b.dmin.to_bits()))));
            let (scales, mins) = b.scales_mins();
            let scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(
                i64::from_le_bytes(scales),
            )));
            let s16 = [
                _mm512_permutexvar_epi16(lanes[0], scales),
                _mm512_permutexvar_epi16(lanes[1], scales),
                _mm512_permutexvar_epi16(lanes[2], scales),
                _mm512_permutexvar_epi16(lanes[3], scales),
            ];
            let mins = _mm_cvtsi64_si128(i64::from_le_bytes(mins));
            let mins_dup = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
            let bits0 = _mm512_loadu_si512(b.qs.as_ptr().cast());
            let bits1 = _mm512_loadu_si512(b.qs.as_ptr().add(64).cast());
            let (lo0, hi0) = (
                _mm512_and_si512(bits0, m4),
                _mm512_and_si512(_mm512_srli_epi16::<4>(bits0), m4),
            );
            let (lo1, hi1) = (
                _mm512_and_si512(bits1, m4),
                _mm512_and_si512(_mm512_srli_epi16::<4>(bits1), m4),
            );
            let q = [
                _mm512_shuffle_i64x2::<0x44>(lo0, hi0),
                _mm512_shuffle_i64x2::<0xEE>(lo0, hi0),
                _mm512_shuffle_i64x2::<0x44>(lo1, hi1),
                _mm512_shuffle_i64x2::<0xEE>(lo1, hi1),
            ];
            for t in 0..4 {
                let y = &x[t][i];
                let mut sumi = _mm512_setzero_si512();
                for h in 0..4 {
                    let a = _mm512_loadu_si512(y.qs.as_ptr().add(64 * h).cast());
                    sumi = scale_acc::<VNNI>(sumi, _mm512_maddubs_epi16(q[h], a), s16[h]);
                }
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(d * y.d), _mm512_cvtepi32_ps(sumi), acc[t]);
                let bsums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
                let min_products = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins_dup));
                acc_m[t] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * y.d), min_products, acc_m[t]);
            }
        }
        let mut out = [0.0f32; 4];
        for t in 0..4 {
            out[t] = _mm512_reduce_add_ps(acc[t]) + hsum256(acc_m[t]);
        }
        out
    }
}

/// Index vectors for `vpermw`: vector `v` gets, in each 128-bit lane `k`, the i16 scale
/// of 16-weight sub-block `4v + k` (the lane of a `maddubs` result over weights
/// `64v..64v+64` that covers that sub-block).
const SUB_BLOCK_LANES: [[i16; 32]; 4] = {
    let mut idx = [[0i16; 32]; 4];
    let mut v = 0;
    while v < 4 {
        let mut i = 0;
        while i < 32 {
            idx[v][i] = (4 * v + i / 8) as i16;
            i += 1;
        }
        v += 1;
    }
    idx
};

/// Q6_K layout: in each 128-weight half `n`, weight `32g + l` has its low nibble in
/// `ql[64n + 32(g % 2) + l]` (low half of the byte for `g < 2`) and its high bits in bits
/// `2g..2g+2` of `qh[32n + l]`. The four weight vectors of 64 (values 0..64, offset 32
/// subtracted through the activation block sums) are built once per block.
#[inline(always)]
fn q6_k_x4_body<const VNNI: bool>(w: &[BlockQ6_K], x: [&[BlockQ8_K]; 4]) -> [f32; 4] {
    // SAFETY: inlined into the kernels above (AVX-512F/BW/VL, FMA, F16C); every load
    // reads inside the fixed-size arrays of the blocks; indices stop at the shortest row.
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let m30 = _mm512_set1_epi8(0x30);
        let lanes = [
            _mm512_loadu_si512(SUB_BLOCK_LANES[0].as_ptr().cast()),
            _mm512_loadu_si512(SUB_BLOCK_LANES[1].as_ptr().cast()),
            _mm512_loadu_si512(SUB_BLOCK_LANES[2].as_ptr().cast()),
            _mm512_loadu_si512(SUB_BLOCK_LANES[3].as_ptr().cast()),
        ];
        let mut acc = [_mm256_setzero_ps(); 4];
        let n = x.iter().fold(w.len(), |n, row| n.min(row.len()));
        for (i, b) in w[..n].iter().enumerate() {
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(b.d.to_bits()))));
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.scales.as_ptr().cast()));
            let all = _mm512_castsi256_si512(sc16);
            let s16 = [
                _mm512_permutexvar_epi16(lanes[0], all),
                _mm512_permutexvar_epi16(lanes[1], all),
                _mm512_permutexvar_epi16(lanes[2], all),
                _mm512_permutexvar_epi16(lanes[3], all),
            ];
            let mut q = [_mm512_setzero_si512(); 4];
            for half in 0..2 {
                let bits = _mm512_loadu_si512(b.ql.as_ptr().add(64 * half).cast());
                let hb = _mm256_loadu_si256(b.qh.as_ptr().add(32 * half).cast());
                let hb =
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(hb), _mm256_srli_epi16::<2>(hb));
                q[2 * half] = _mm512_or_si512(
                    _mm512_and_si512(bits, m4),
                    _mm512_and_si512(_mm512_slli_epi16::<4>(hb), m30),
                );
                q[2 * half + 1] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(bits), m4),
                    _mm512_and_si512(hb, m30),
                );
            }
            for t in 0..4 {
                let y = &x[t][i];
                let mut sumi = _mm512_setzero_si512();
                for (v, (&qv, &sv)) in q.iter().zip(&s16).enumerate() {
                    let a = _mm512_loadu_si512(y.qs.as_ptr().add(64 * v).cast());
                    sumi = scale_acc::<VNNI>(sumi, _mm512_maddubs_epi16(qv, a), sv);
                }
                let bsums = _mm256_loadu_si256(y.bsums.as_ptr().cast());
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bsums));
                let folded = _mm256_add_epi32(
                    _mm512_castsi512_si256(sumi),
                    _mm512_extracti64x4_epi64::<1>(sumi),
                );
                let sumi = _mm256_sub_epi32(folded, offset);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), _mm256_cvtepi32_ps(sumi), acc[t]);
            }
        }
        let mut out = [0.0f32; 4];
        for t in 0..4 {
            out[t] = hsum256(acc[t]);
        }
        out
    }
}

/// The lane sums of four vectors, `[Σ a[0], Σ a[1], Σ a[2], Σ a[3]]`, with shared
/// horizontal adds (about half the instructions of four separate reductions).
#[inline(always)]
pub(crate) fn reduce4(a: [__m512; 4]) -> [f32; 4] {
    // SAFETY: only inlined into AVX-512F (hence AVX) functions; the store writes the
    // four floats of `out`.
    unsafe {
        let half = |v: __m512| {
            let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v));
            _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(hi))
        };
        let s01 = _mm256_hadd_ps(half(a[0]), half(a[1]));
        let s23 = _mm256_hadd_ps(half(a[2]), half(a[3]));
        // Each 128-bit lane: [a0, a1, a2, a3] partial sums.
        let s = _mm256_hadd_ps(s01, s23);
        let r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let mut out = [0.0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), r);
        out
    }
}

/// Sum of the eight lanes.
#[inline(always)]
fn hsum256(v: __m256) -> f32 {
    // SAFETY: only inlined into AVX-512F (hence AVX) functions.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cpu::isa::{has_avx512_vnni, Isa};
    use crate::quant::QuantBlock;

    /// Deterministic values in [-1, 1) with a few outliers.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
                if i % 97 == 0 {
                    v * 30.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// `blocks` random weight blocks of `W` and four rows of matching activations.
    fn operands<W: QuantBlock>(blocks: usize) -> (Vec<W>, Vec<Vec<W::Act>>) {
        let elems = blocks * W::ELEMS;
        let mut w = vec![<W as bytemuck::Zeroable>::zeroed(); blocks];
        W::quantize(&values(elems, 1 + blocks as u32), &mut w);
        let x = (0..4)
            .map(|t| {
                let mut a = vec![<W::Act as bytemuck::Zeroable>::zeroed(); elems / W::Act::ELEMS];
                W::Act::quantize_act(&values(elems, 100 + t), &mut a);
                a
            })
            .collect();
        (w, x)
    }

    /// Every instance of a four-token kernel against the scalar one-token dot product,
    /// on rows of each of `block_counts` blocks.
    pub(crate) fn check<W: QuantBlock>(instances: &[Dot4<W, W::Act>], block_counts: &[usize]) {
        assert!(!instances.is_empty());
        for &blocks in block_counts {
            let (w, x) = operands::<W>(blocks);
            let rows = [&x[0][..], &x[1][..], &x[2][..], &x[3][..]];
            let want: Vec<f32> = rows.iter().map(|a| W::vec_dot(&w, a)).collect();
            for kernel in instances {
                let got = kernel(&w, rows);
                for t in 0..4 {
                    let tol = 1e-5 * want[t].abs().max(1.0);
                    assert!(
                        (got[t] - want[t]).abs() <= tol,
                        "{:?} blocks={blocks} t={t}: {} vs {}",
                        W::TYPE,
                        got[t],
                        want[t]
                    );
                }
            }
        }
    }

    /// The plain AVX-512BW instances, and the VNNI ones where the CPU has VNNI.
    #[test]
    fn four_token_kernels_match_scalar_dot() {
        if !Isa::Avx512.is_supported() {
            eprintln!("no AVX-512 on this CPU: the four-token kernels cannot run here");
            return;
        }
        // SAFETY (each closure): AVX-512 F/BW/VL, AVX2, FMA and F16C were checked above,
        // VNNI where it is used.
        let q4_bw: Dot4<BlockQ4_K, BlockQ8_K> = |w, x| unsafe { q4_k_x4_kernel_bw(w, x) };
        let q6_bw: Dot4<BlockQ6_K, BlockQ8_K> = |w, x| unsafe { q6_k_x4_kernel_bw(w, x) };
        let mut q4 = vec![q4_bw];
        let mut q6 = vec![q6_bw];
        if has_avx512_vnni() {
            q4.push(|w, x| unsafe { q4_k_x4_kernel_vnni(w, x) });
            q6.push(|w, x| unsafe { q6_k_x4_kernel_vnni(w, x) });
        }
        check::<BlockQ4_K>(&q4, &[1, 3, 15]);
        check::<BlockQ6_K>(&q6, &[1, 3, 15]);
    }
}
