//! AVX-512 four-token kernels of the 32-element formats with Q8_0 activations (Q4_0,
//! Q5_0, Q8_0), for prefill tiles (see `avx512_tiles`).
//!
//! Two blocks fill a 512-bit register. Their weights are unpacked once into 64 signed
//! bytes, split into magnitudes and a sign mask; for each token the activations take
//! the sign and one `vpdpbusd` (or `maddubs` + `madd`) gives the sixteen i32 sums, scaled
//! by `[d_w·d_x of block 0 ×8, of block 1 ×8]`, as in ggml's one-token kernels.

use super::avx512_tiles::reduce4;
use crate::quant::{BlockQ4_0, BlockQ5_0, BlockQ8_0, QuantBlock};
use half::f16;
use std::arch::x86_64::*;

/// A 32-element weight format whose blocks unpack to signed bytes.
trait SignedPair: QuantBlock<Act = BlockQ8_0> {
    /// The block scale.
    fn scale(&self) -> f16;
    /// The 64 weights of blocks `a` and `b` as signed bytes, in element order.
    ///
    /// # Safety
    /// Only for inlining into functions with AVX-512 F/BW enabled.
    unsafe fn signed_pair(a: &Self, b: &Self) -> __m512i;
}

/// `[a.qs | b.qs]` as one 256-bit vector.
#[inline(always)]
unsafe fn join_qs16(a: &[u8; 16], b: &[u8; 16]) -> __m256i {
    // SAFETY: 16-byte loads of 16-byte arrays; AVX enabled by the caller.
    unsafe {
        _mm256_set_m128i(
            _mm_loadu_si128(b.as_ptr().cast()),
            _mm_loadu_si128(a.as_ptr().cast()),
        )
    }
}

/// The 4-bit quants of two blocks (`q[l]` low nibble = weight `l`, high = `l + 16`) as 64
/// bytes in element order: `[a low, a high, b low, b high]`.
#[inline(always)]
unsafe fn nibbles_pair(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    // SAFETY: AVX-512F/BW enabled by the caller.
    unsafe {
        let v = join_qs16(a, b);
        let m4 = _mm256_set1_epi8(0xF);
        let lo = _mm256_and_si256(v, m4);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
        let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        // 128-bit lanes [a lo, b lo, a hi, b hi] -> [a lo, a hi, b lo, b hi].
        _mm512_shuffle_i64x2::<0xD8>(v, v)
    }
}

impl SignedPair for BlockQ4_0 {
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    unsafe fn signed_pair(a: &Self, b: &Self) -> __m512i {
        // SAFETY: AVX-512F/BW enabled by the caller.
        unsafe { _mm512_sub_epi8(nibbles_pair(&a.qs, &b.qs), _mm512_set1_epi8(8)) }
    }
}

impl SignedPair for BlockQ5_0 {
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    unsafe fn signed_pair(a: &Self, b: &Self) -> __m512i {
        // SAFETY: AVX-512F/BW enabled by the caller.
        unsafe {
            // Bit `k` of `qh` is the fifth bit of weight `k`.
            let bits =
                u64::from(u32::from_le_bytes(a.qh)) | u64::from(u32::from_le_bytes(b.qh)) << 32;
            let fifth = _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(16));
            let q = _mm512_or_si512(nibbles_pair(&a.qs, &b.qs), fifth);
            _mm512_sub_epi8(q, _mm512_set1_epi8(16))
        }
    }
}

impl SignedPair for BlockQ8_0 {
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    unsafe fn signed_pair(a: &Self, b: &Self) -> __m512i {
        // SAFETY: 32-byte loads of 32-byte arrays; AVX-512F enabled by the caller.
        unsafe { activation_pair(a, b) }
    }
}

/// The 64 quants of two Q8_0 blocks.
#[inline(always)]
unsafe fn activation_pair(a: &BlockQ8_0, b: &BlockQ8_0) -> __m512i {
    // SAFETY: 32-byte loads of 32-byte arrays; AVX-512F enabled by the caller.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(a.qs.as_ptr().cast())),
            _mm256_loadu_si256(b.qs.as_ptr().cast()),
        )
    }
}

/// Two f16 scales as the low two lanes of an f32 vector.
#[inline(always)]
unsafe fn two_scales(a: f16, b: f16) -> __m128 {
    // SAFETY: F16C enabled by the caller.
    unsafe {
        let bits = i32::from(a.to_bits()) | (i32::from(b.to_bits()) << 16);
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
    }
}

/// One weight row times four Q8_0 activation rows, given every activation block's
/// scale already widened to f32 (`scales[t][i]` = `x[t][i].d`), so the per-token work of
/// a block pair is the signed `vpdpbusd`, one scale product and one FMA.
pub(crate) type ScaledDot4<W> = fn(&[W], [&[BlockQ8_0]; 4], [&[f32]; 4]) -> [f32; 4];

/// Defines `$name()`, returning the scaled four-token kernel `$body` for weight blocks
/// `$w` (VNNI instance when the CPU has VNNI, plain AVX-512BW otherwise, `None` without
/// AVX-512), and the two `#[target_feature]` instances `$vnni` and `$bw`.
macro_rules! scaled_four_token_kernel {
    ($(#[$doc:meta])* $name:ident: $w:ty => $vnni:ident, $bw:ident) => {
        $(#[$doc])*
        pub(crate) fn $name() -> Option<ScaledDot4<$w>> {
            fn vnni(w: &[$w], x: [&[BlockQ8_0]; 4], s: [&[f32]; 4]) -> [f32; 4] {
                // SAFETY: handed out below only after AVX-512F/BW/VL, VNNI, FMA and F16C
                // were found.
                unsafe { $vnni(w, x, s) }
            }
            fn bw(w: &[$w], x: [&[BlockQ8_0]; 4], s: [&[f32]; 4]) -> [f32; 4] {
                // SAFETY: handed out below only after AVX-512F/BW/VL, FMA and F16C were found.
                unsafe { $bw(w, x, s) }
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
        unsafe fn $vnni(w: &[$w], x: [&[BlockQ8_0]; 4], s: [&[f32]; 4]) -> [f32; 4] {
            legacy_x4_body::<$w, true>(w, x, s)
        }

        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL, FMA and F16C.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn $bw(w: &[$w], x: [&[BlockQ8_0]; 4], s: [&[f32]; 4]) -> [f32; 4] {
            legacy_x4_body::<$w, false>(w, x, s)
        }
    };
}

#[inline(always)]
fn legacy_x4_body<W: SignedPair, const VNNI: bool>(
    w: &[W],
    x: [&[BlockQ8_0]; 4],
    scales: [&[f32]; 4],
) -> [f32; 4] {
    // SAFETY: inlined into the `scaled_four_token_kernel!` instances (AVX-512F/BW/VL,
    // FMA, F16C, VNNI for `VNNI == true`); block and scale indices stay below `n`, the
    // length of the shortest of the nine slices.
    unsafe {
        let n = x
            .iter()
            .zip(&scales)
            .fold(w.len(), |n, (row, s)| n.min(row.len()).min(s.len()));
        // Lanes 0..8 take scale 0 (block a), lanes 8..16 scale 1 (block b).
        let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); 4];
        // Raw row pointers keep the token loop free of bounds checks and spills.
        let xs = x.map(|row| row.as_ptr());
        let ss = scales.map(|row| row.as_ptr());
        for p in 0..n / 2 {
            let (a, b) = (&w[2 * p], &w[2 * p + 1]);
            let q = W::signed_pair(a, b);
            let negative = _mm512_movepi8_mask(q);
            let magnitude = _mm512_abs_epi8(q);
            let dw = two_scales(a.scale(), b.scale());
            for t in 0..4 {
                let y = activation_pair(&*xs[t].add(2 * p), &*xs[t].add(2 * p + 1));
                let y = _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y);
                let sumi = if VNNI {
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), magnitude, y)
                } else {
                    _mm512_madd_epi16(_mm512_maddubs_epi16(magnitude, y), _mm512_set1_epi16(1))
                };
                // The two f32 scales of blocks 2p and 2p + 1 of token t.
                let dx = _mm_castpd_ps(_mm_load_sd(ss[t].add(2 * p).cast()));
                let d = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_mul_ps(dw, dx)));
                acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[t]);
            }
        }
        let mut out = reduce4(acc);
        if n % 2 == 1 {
            for t in 0..4 {
                out[t] += W::vec_dot(&w[n - 1..n], &x[t][n - 1..n]);
            }
        }
        out
    }
}

scaled_four_token_kernel!(
    /// The Q4_0 x Q8_0 four-token kernel, if this CPU has AVX-512 F/BW/VL.
    q4_0_x4: BlockQ4_0 => q4_0_x4_vnni, q4_0_x4_bw
);
scaled_four_token_kernel!(
    /// The Q5_0 x Q8_0 four-token kernel, if this CPU has AVX-512 F/BW/VL.
    q5_0_x4: BlockQ5_0 => q5_0_x4_vnni, q5_0_x4_bw
);
scaled_four_token_kernel!(
    /// The Q8_0 x Q8_0 four-token kernel, if this CPU has AVX-512 F/BW/VL.
    q8_0_x4: BlockQ8_0 => q8_0_x4_vnni, q8_0_x4_bw
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::isa::{has_avx512_vnni, Isa};
    use crate::cpu::x86_64::avx512_tiles::{tests::check, Dot4};

    /// A scaled kernel instance, `unsafe` because of its target features.
    type UnsafeScaledDot4<W> = unsafe fn(&[W], [&[BlockQ8_0]; 4], [&[f32]; 4]) -> [f32; 4];

    /// Calls `kernel` with the activation scales widened to f32, as `matmul` does.
    fn with_scales<W>(kernel: UnsafeScaledDot4<W>, w: &[W], x: [&[BlockQ8_0]; 4]) -> [f32; 4] {
        let s: Vec<Vec<f32>> = x
            .iter()
            .map(|row| row.iter().map(|b| b.d.to_f32()).collect())
            .collect();
        // SAFETY: only called from the test below after the CPU features were checked.
        unsafe { kernel(w, x, [&s[0], &s[1], &s[2], &s[3]]) }
    }

    /// The plain AVX-512BW instances, and the VNNI ones where the CPU has VNNI, on even
    /// and odd block counts.
    #[test]
    fn four_token_kernels_match_scalar_dot() {
        if !Isa::Avx512.is_supported() {
            eprintln!("no AVX-512 on this CPU: the four-token kernels cannot run here");
            return;
        }
        let counts = [1usize, 2, 3, 7, 20, 120];
        // AVX-512 F/BW/VL, AVX2, FMA and F16C were checked above, VNNI where it is used.
        let q4: Dot4<BlockQ4_0, BlockQ8_0> = |w, x| with_scales(q4_0_x4_bw, w, x);
        let q5: Dot4<BlockQ5_0, BlockQ8_0> = |w, x| with_scales(q5_0_x4_bw, w, x);
        let q8: Dot4<BlockQ8_0, BlockQ8_0> = |w, x| with_scales(q8_0_x4_bw, w, x);
        let (mut q4s, mut q5s, mut q8s) = (vec![q4], vec![q5], vec![q8]);
        if has_avx512_vnni() {
            q4s.push(|w, x| with_scales(q4_0_x4_vnni, w, x));
            q5s.push(|w, x| with_scales(q5_0_x4_vnni, w, x));
            q8s.push(|w, x| with_scales(q8_0_x4_vnni, w, x));
        }
        check::<BlockQ4_0>(&q4s, &counts);
        check::<BlockQ5_0>(&q5s, &counts);
        check::<BlockQ8_0>(&q8s, &counts);
    }
}
