//! The IQ4_XS x Q8_K one-token kernel with AVX-512 VNNI.
//!
//! The sixteen levels plus 128 are unsigned bytes, so a table lookup goes straight into
//! `vpdpbusd` with the activations: no sign split, no 16-bit stage. Each 32-element
//! sub-block's sum is multiplied by its scale in i32 (the eight scales are unpacked once
//! per block, with vector shifts), and the 128 comes back out once per block as
//! `128 · Σ_s scale_s · Σ x_s` from the activation block's sums. Every sum is ggml's
//! integer sum exactly; only the block total is converted to f32.

use super::avx2_kquants::prefetch_far;
use crate::quant::common::KVALUES_IQ4NL_PLUS_128;
use crate::quant::{BlockIQ4_XS, BlockQ8_K};
use std::arch::x86_64::*;

/// IQ4_XS x Q8_K over `min(w.len(), x.len())` blocks.
///
/// # Safety
/// Only for inlining into functions with AVX-512 F/BW/VL, VNNI and F16C enabled.
#[inline(always)]
pub(crate) unsafe fn dot_iq4_xs_vnni(w: &[BlockIQ4_XS], x: &[BlockQ8_K]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY (all intrinsics, unchecked indexing and pointer offsets below): the caller
    // runs with the features above; block indices stay below `n`; the offsets stay inside
    // the 128-byte `qs` of the weight block (32 · pair + 32 <= 128), the 256-byte `qs`
    // (64 · pair + 64 <= 256) and the 32-byte `bsums` of the activation block.
    unsafe {
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL_PLUS_128.as_ptr().cast()));
        let m4 = _mm512_set1_epi8(0x0f);
        // Sub-block `s` (lane `s < 8`): its low scale bits are bits `4s..4s+4` of
        // `scales_l`, its high bits `2s..2s+2` of `scales_h`.
        let low_shifts = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
        let high_shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = _mm512_setzero_ps();
        for i in 0..n {
            let (wb, xb) = (w.get_unchecked(i), x.get_unchecked(i));
            prefetch_far(wb, 1);
            let low = _mm512_srlv_epi32(
                _mm512_set1_epi32(i32::from_le_bytes(wb.scales_l)),
                low_shifts,
            );
            let high = _mm512_srlv_epi32(_mm512_set1_epi32(i32::from(wb.scales_h)), high_shifts);
            let scales = _mm512_sub_epi32(
                _mm512_or_si512(
                    _mm512_and_si512(low, _mm512_set1_epi32(0xf)),
                    _mm512_slli_epi32(_mm512_and_si512(high, _mm512_set1_epi32(3)), 4),
                ),
                _mm512_set1_epi32(32),
            );
            let mut sums = _mm512_setzero_si512();
            for pair in 0..4 {
                // The 32 nibble bytes of sub-blocks 2 pair and 2 pair + 1 as 128-bit
                // lanes [first, first, second, second], lanes 1 and 3 shifted to their
                // high nibbles: the 64 weights in element order.
                let q = _mm256_loadu_si256(wb.qs.as_ptr().add(32 * pair).cast());
                let wide = _mm512_castsi256_si512(q);
                let lanes = _mm512_shuffle_i64x2::<0b01_01_00_00>(wide, wide);
                let nibbles =
                    _mm512_and_si512(_mm512_mask_srli_epi16::<4>(lanes, 0xff00_ff00, lanes), m4);
                let weights = _mm512_shuffle_epi8(table, nibbles);
                let y = _mm512_loadu_si512(xb.qs.as_ptr().add(64 * pair).cast());
                let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), weights, y);
                // Lanes 0..8 hold sub-block 2 pair, lanes 8..16 sub-block 2 pair + 1.
                let s = 2 * pair as i32;
                let index = _mm512_setr_epi32(
                    s,
                    s,
                    s,
                    s,
                    s,
                    s,
                    s,
                    s,
                    s + 1,
                    s + 1,
                    s + 1,
                    s + 1,
                    s + 1,
                    s + 1,
                    s + 1,
                    s + 1,
                );
                let sub_scales = _mm512_permutexvar_epi32(index, scales);
                sums = _mm512_add_epi32(sums, _mm512_mullo_epi32(p, sub_scales));
            }
            // Σ x of each sub-block (lane s < 8; lanes 8.. zero) times its scale, times 128.
            let bsums = _mm256_loadu_si256(xb.bsums.as_ptr().cast());
            let sub_sums = _mm256_madd_epi16(bsums, _mm256_set1_epi16(1));
            let offset = _mm512_mullo_epi32(scales, _mm512_zextsi256_si512(sub_sums));
            sums = _mm512_sub_epi32(sums, _mm512_slli_epi32(offset, 7));
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(wb.d.to_bits()))));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d * xb.d), _mm512_cvtepi32_ps(sums), acc);
        }
        _mm512_reduce_add_ps(acc)
    }
}
