//! The packed layout of the 32-element formats (Q4_0, Q5_0, Q8_0, IQ4_NL with Q8_0
//! activations, Q4_1 and Q5_1 with Q8_1 activations) for the sixteen-row GEMMs of
//! `avx512_gemm_legacy` and `avx2_gemm_legacy`; see `avx512_gemm` for the lines.
//!
//! A packed block is nine lines: eight of weights (`4k..4k+4` of each row, stored as
//! `q + offset`, unsigned) and one of the sixteen row scales as f32; Q4_1 and Q5_1 add a
//! line of the row minimums as f32. Packing needs AVX2 only.

use super::avx512_gemm::{prefetch_ahead_in_rows, transpose_rows, Line, GROUP_ROWS};
use crate::quant::common::KVALUES_IQ4NL_PLUS_128;
use crate::quant::{BlockIQ4_NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

/// Weight lines per packed block.
pub(super) const WEIGHT_LINES: usize = 8;

/// An activation block of 32 quants.
pub(super) trait Act32 {
    /// The 32 quants.
    fn quants(&self) -> &[i8; 32];
    /// Fills the values a GEMM takes per activation block (see [`Unsigned32::EXTRA`]) for
    /// weights stored `offset` above their signed values.
    fn prepare(&self, offset: i32, extra: &mut [i32]);
}

impl Act32 for BlockQ8_0 {
    #[inline(always)]
    fn quants(&self) -> &[i8; 32] {
        &self.qs
    }
    /// The seed `-offset · Σ x` and the scale as f32 bits.
    fn prepare(&self, offset: i32, extra: &mut [i32]) {
        let sum: i32 = self.qs.iter().map(|&q| i32::from(q)).sum();
        extra[0] = -offset * sum;
        extra[1] = self.d.to_f32().to_bits() as i32;
    }
}

impl Act32 for BlockQ8_1 {
    #[inline(always)]
    fn quants(&self) -> &[i8; 32] {
        &self.qs
    }
    /// The seed (zero: the formats with Q8_1 activations have no offset), the scale and
    /// `d · Σ x` as f32 bits.
    fn prepare(&self, _offset: i32, extra: &mut [i32]) {
        extra[0] = 0;
        extra[1] = self.d.to_f32().to_bits() as i32;
        extra[2] = self.s.to_f32().to_bits() as i32;
    }
}

/// A 32-element weight format as unsigned bytes.
pub(super) trait Unsigned32 {
    /// Its activation blocks.
    type Act: Act32;
    /// What the unsigned bytes exceed the signed weights by.
    const OFFSET: i32;
    /// Whether blocks have a minimum (`m · d_x · Σ x` added per block).
    const MIN: bool = false;
    /// Lines per packed block: weights, scales and (with minimums) minimums.
    const LINES: usize = WEIGHT_LINES + if Self::MIN { 2 } else { 1 };
    /// Values per activation block: the seed `-offset · Σ x`, the scale's f32 bits and
    /// (with minimums) the f32 bits of `d · Σ x`.
    const EXTRA: usize = if Self::MIN { 3 } else { 2 };
    /// The block scale as f32.
    fn scale(&self) -> f32;
    /// The block minimum as f32 (formats with minimums).
    fn min(&self) -> f32 {
        0.0
    }
    /// The 32 weights plus [`Self::OFFSET`], in element order.
    ///
    /// # Safety
    /// Only for inlining into functions with AVX2 enabled.
    unsafe fn unsigned(&self) -> __m256i;
}

/// The 4-bit quants of a block (`q[l]` low nibble = weight `l`, high = `l + 16`) in
/// element order.
#[inline(always)]
unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: a 16-byte load of a 16-byte array; AVX2 enabled by the caller.
    unsafe {
        let v = _mm_loadu_si128(qs.as_ptr().cast());
        let m4 = _mm_set1_epi8(0xF);
        _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(v), m4),
            _mm_and_si128(v, m4),
        )
    }
}

/// The 5-bit quants of a Q5_0 / Q5_1 block in element order: the nibbles plus 16 where
/// bit `k` of `qh` (the fifth bit of weight `k`) is set.
///
/// # Safety
/// AVX2 enabled by the caller.
#[inline(always)]
unsafe fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe {
        // Byte k gets byte k / 8 of `qh` (each 128-bit lane holds all four), then keeps
        // bit k % 8 of it.
        let all = _mm256_set1_epi32(u32::from_le_bytes(qh) as i32);
        let spread = _mm256_shuffle_epi8(
            all,
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        _mm256_or_si256(nibbles(qs), _mm256_and_si256(set, _mm256_set1_epi8(16)))
    }
}

impl Unsigned32 for BlockQ4_0 {
    type Act = BlockQ8_0;
    const OFFSET: i32 = 8;
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    #[inline(always)]
    unsafe fn unsigned(&self) -> __m256i {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { nibbles(&self.qs) }
    }
}

impl Unsigned32 for BlockQ5_0 {
    type Act = BlockQ8_0;
    const OFFSET: i32 = 16;
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    #[inline(always)]
    unsafe fn unsigned(&self) -> __m256i {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { five_bits(&self.qs, self.qh) }
    }
}

impl Unsigned32 for BlockQ8_0 {
    type Act = BlockQ8_0;
    const OFFSET: i32 = 128;
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    #[inline(always)]
    unsafe fn unsigned(&self) -> __m256i {
        // SAFETY: a 32-byte load of a 32-byte array; AVX2 enabled by the caller.
        unsafe {
            let q = _mm256_loadu_si256(self.qs.as_ptr().cast());
            _mm256_xor_si256(q, _mm256_set1_epi8(-128))
        }
    }
}

impl Unsigned32 for BlockIQ4_NL {
    type Act = BlockQ8_0;
    const OFFSET: i32 = 128;
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    #[inline(always)]
    unsafe fn unsigned(&self) -> __m256i {
        // SAFETY: a 16-byte load of the 16-entry table; AVX2 enabled by the caller.
        unsafe {
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                KVALUES_IQ4NL_PLUS_128.as_ptr().cast(),
            ));
            _mm256_shuffle_epi8(table, nibbles(&self.qs))
        }
    }
}

impl Unsigned32 for BlockQ4_1 {
    type Act = BlockQ8_1;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    #[inline(always)]
    fn min(&self) -> f32 {
        self.m.to_f32()
    }
    #[inline(always)]
    unsafe fn unsigned(&self) -> __m256i {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { nibbles(&self.qs) }
    }
}

impl Unsigned32 for BlockQ5_1 {
    type Act = BlockQ8_1;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    #[inline(always)]
    fn min(&self) -> f32 {
        self.m.to_f32()
    }
    #[inline(always)]
    unsafe fn unsigned(&self) -> __m256i {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { five_bits(&self.qs, self.qh) }
    }
}

/// The activation values of format `W` (its weights stored `W::OFFSET` above their
/// signed values).
pub(super) fn prepare<W: Unsigned32>(x: &W::Act, extra: &mut [i32]) {
    x.prepare(W::OFFSET, extra);
}

/// Packs up to sixteen rows of `bpr` blocks (see the module doc).
#[inline(always)]
pub(super) fn pack_body<W: Unsigned32>(w: &[W], bpr: usize, dst: &mut [Line]) {
    let rows = w.len().checked_div(bpr).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut bytes = [[0u8; 32]; GROUP_ROWS];
    for b in 0..bpr {
        prefetch_ahead_in_rows(w, bpr, rows, b);
        let lines = &mut dst[b * W::LINES..(b + 1) * W::LINES];
        lines[WEIGHT_LINES..].fill(Line::ZERO);
        for (r, row) in bytes[..rows].iter_mut().enumerate() {
            let block = &w[r * bpr + b];
            // SAFETY: inlined into the pack functions (AVX2 at least) of the GEMMs; the
            // store writes the 32 bytes of `row`.
            unsafe { _mm256_storeu_si256(row.as_mut_ptr().cast(), block.unsigned()) };
            lines[WEIGHT_LINES].set_lane(r, block.scale().to_le_bytes());
            if W::MIN {
                lines[WEIGHT_LINES + 1].set_lane(r, block.min().to_le_bytes());
            }
        }
        // SAFETY: as above.
        unsafe { transpose_rows(&bytes, &mut lines[..WEIGHT_LINES]) };
    }
}
