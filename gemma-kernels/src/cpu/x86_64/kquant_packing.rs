//! The packed layout of the 256-element formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)
//! for the sixteen-row GEMMs of `avx512_gemm_kquants` and `avx2_gemm_kquants`; see
//! `avx512_gemm` for the lines.
//!
//! A packed block holds 64 weight lines (line `i`: weights `4i..4i+4` of every row,
//! stored as `value + offset`, unsigned), then per sub-block a line of the sixteen rows'
//! integer scales as i32, then (formats with minimums) the minimums as i16 pairs, then
//! the `d` line and (with minimums) the `dmin` line, as f32. Packing needs AVX2 only.
//!
//! | format | sub-block | offset | minimums |
//! |---|---|---|---|
//! | Q2_K | 16 | 0 | yes |
//! | Q3_K | 16 | 4 | no |
//! | Q4_K | 32 | 0 | yes |
//! | Q5_K | 32 | 0 | yes |
//! | Q6_K | 16 | 32 | no |
//! | IQ4_XS | 32 | 128 | no |
use super::avx512_gemm::{prefetch_ahead_in_rows, transpose_rows, Line, GROUP_ROWS};
use crate::quant::common::KVALUES_IQ4NL_PLUS_128;
use crate::quant::{
    BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K, QuantBlock,
};
use std::arch::x86_64::*;

/// Weight lines per 256-element block.
pub(super) const WEIGHT_LINES: usize = 64;

/// The integer scales and minimums of one block and its two f32 super-scales.
pub(super) struct Header {
    /// Scale of sub-block `s` (the first [`Packed::SUBS`] are used).
    pub(super) scales: [i32; 16],
    /// Minimum of sub-block `s` (formats with minimums).
    pub(super) mins: [i32; 16],
    /// Super-block scale of the scales.
    pub(super) d: f32,
    /// Super-block scale of the minimums (formats with minimums).
    pub(super) dmin: f32,
}

/// A 256-element format as the sixteen-row GEMM packs it.
pub(super) trait Packed: QuantBlock<Act = BlockQ8_K> {
    /// Elements per sub-block: 16 or 32.
    const SUB: usize;
    /// What the stored unsigned weights exceed the signed ones by.
    const OFFSET: i32;
    /// Whether each sub-block subtracts `dmin · min · Σ x`.
    const MINS: bool;
    /// The largest stored (unsigned) weight.
    const MAX: i32;
    /// Sub-blocks per block.
    const SUBS: usize = 256 / Self::SUB;
    /// Line of the `d` values (after the weights, scales and minimum pairs).
    const D_LINE: usize = WEIGHT_LINES + Self::SUBS + if Self::MINS { Self::SUBS / 2 } else { 0 };
    /// Lines per packed block.
    const LINES: usize = Self::D_LINE + if Self::MINS { 2 } else { 1 };
    /// Values per activation block: the seeds `-offset · Σ x` of the sub-blocks (when
    /// the offset is not zero), then the pairs of sub-block sums as i16 pairs (with
    /// minimums).
    const EXTRA: usize = if Self::OFFSET != 0 { Self::SUBS } else { 0 }
        + if Self::MINS { Self::SUBS / 2 } else { 0 };

    /// Writes the 256 weights plus [`Self::OFFSET`] in element order to `q`.
    ///
    /// # Safety
    /// Only for inlining into functions with AVX2 enabled.
    unsafe fn unsigned(&self, q: &mut [u8; 256]);

    /// The block's scales, minimums and super-scales.
    fn header(&self) -> Header;
}

/// Low and high nibbles of 32 bytes at `p`.
///
/// # Safety
/// `p` must point to 32 readable bytes; AVX2 enabled by the caller.
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> (__m256i, __m256i) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let v = _mm256_loadu_si256(p.cast());
        let m4 = _mm256_set1_epi8(0xF);
        (
            _mm256_and_si256(v, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4),
        )
    }
}

/// `add` where bit `bit` of the bytes of `mask` is set, else 0.
///
/// # Safety
/// AVX2 enabled by the caller.
#[inline(always)]
unsafe fn where_bit(mask: __m256i, bit: u8, add: i8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let bit = _mm256_set1_epi8(bit as i8);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(mask, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(add))
    }
}

/// Stores `v` as bytes `at..at + 32` of `q`.
///
/// # Safety
/// AVX2 enabled by the caller; `at + 32 <= 256`.
#[inline(always)]
unsafe fn store32(q: &mut [u8; 256], at: usize, v: __m256i) {
    debug_assert!(at + 32 <= q.len());
    // SAFETY: guaranteed by the caller.
    unsafe { _mm256_storeu_si256(q.as_mut_ptr().add(at).cast(), v) }
}

/// Writes Q2_K / Q3_K weights: weight `32 k + l` (k = 4n + g) is bits `2g..2g+2` of
/// `qs[32 n + l]` plus `high(k)`'s byte `l`.
///
/// # Safety
/// AVX2 enabled by the caller.
#[inline(always)]
unsafe fn two_bit_weights(qs: &[u8; 64], q: &mut [u8; 256], high: impl Fn(usize) -> __m256i) {
    // SAFETY: loads inside `qs`; stores inside `q`.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        for n in 0..2 {
            let v = _mm256_loadu_si256(qs.as_ptr().add(32 * n).cast());
            let shifted = [
                v,
                _mm256_srli_epi16::<2>(v),
                _mm256_srli_epi16::<4>(v),
                _mm256_srli_epi16::<6>(v),
            ];
            for (g, s) in shifted.into_iter().enumerate() {
                let k = 4 * n + g;
                store32(q, 32 * k, _mm256_or_si256(_mm256_and_si256(s, m3), high(k)));
            }
        }
    }
}

/// Writes Q4_K / Q5_K weights: weights `64 c + l` / `64 c + 32 + l` are the low / high
/// nibble of `qs[32 c + l]`, plus byte `l` of `high(2c)` / `high(2c + 1)`.
///
/// # Safety
/// AVX2 enabled by the caller.
#[inline(always)]
unsafe fn nibble_weights(qs: &[u8; 128], q: &mut [u8; 256], high: impl Fn(usize) -> __m256i) {
    // SAFETY: loads inside `qs`; stores inside `q`.
    unsafe {
        for c in 0..4 {
            let (lo, hi) = nibbles32(qs.as_ptr().add(32 * c));
            store32(q, 64 * c, _mm256_or_si256(lo, high(2 * c)));
            store32(q, 64 * c + 32, _mm256_or_si256(hi, high(2 * c + 1)));
        }
    }
}

/// The eight 32-element scales and minimums of Q4_K / Q5_K.
#[inline(always)]
fn k4_header(scales_mins: ([u8; 8], [u8; 8]), d: half::f16, dmin: half::f16) -> Header {
    let (sc, m) = scales_mins;
    Header {
        scales: std::array::from_fn(|s| sc.get(s).map_or(0, |&v| i32::from(v))),
        mins: std::array::from_fn(|s| m.get(s).map_or(0, |&v| i32::from(v))),
        d: d.to_f32(),
        dmin: dmin.to_f32(),
    }
}

impl Packed for BlockQ2_K {
    const SUB: usize = 16;
    const OFFSET: i32 = 0;
    const MINS: bool = true;
    const MAX: i32 = 3;
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { two_bit_weights(&self.qs, q, |_| _mm256_setzero_si256()) }
    }
    #[inline(always)]
    fn header(&self) -> Header {
        Header {
            scales: self.scales.map(|b| i32::from(b & 0xF)),
            mins: self.scales.map(|b| i32::from(b >> 4)),
            d: self.d.to_f32(),
            dmin: self.dmin.to_f32(),
        }
    }
}

impl Packed for BlockQ3_K {
    const SUB: usize = 16;
    const OFFSET: i32 = 4;
    const MINS: bool = false;
    const MAX: i32 = 7;
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: the load reads the 32 bytes of `hmask`; AVX2 enabled by the
        // caller. Weight `32 k + l` (k = 4n + g) gets 4 where bit `k` of `hmask[l]` is
        // set (ggml subtracts 4 where it is clear).
        unsafe {
            let hmask = _mm256_loadu_si256(self.hmask.as_ptr().cast());
            two_bit_weights(&self.qs, q, |k| where_bit(hmask, 1 << k, 4))
        }
    }
    #[inline(always)]
    fn header(&self) -> Header {
        Header {
            scales: self.raw_scales().map(|s| i32::from(s) - 32),
            mins: [0; 16],
            d: self.d.to_f32(),
            dmin: 0.0,
        }
    }
}

impl Packed for BlockQ4_K {
    const SUB: usize = 32;
    const OFFSET: i32 = 0;
    const MINS: bool = true;
    const MAX: i32 = 15;
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { nibble_weights(&self.qs, q, |_| _mm256_setzero_si256()) }
    }
    #[inline(always)]
    fn header(&self) -> Header {
        k4_header(self.scales_mins(), self.d, self.dmin)
    }
}

impl Packed for BlockQ5_K {
    const SUB: usize = 32;
    const OFFSET: i32 = 0;
    const MINS: bool = true;
    const MAX: i32 = 31;
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: the load reads the 32 bytes of `qh`; AVX2 enabled by the
        // caller. As Q4_K, plus 16 where bit `j` of `qh[l]` is set (weight `32 j + l`).
        unsafe {
            let qh = _mm256_loadu_si256(self.qh.as_ptr().cast());
            nibble_weights(&self.qs, q, |j| where_bit(qh, 1 << j, 16))
        }
    }
    #[inline(always)]
    fn header(&self) -> Header {
        k4_header(self.scales_mins(), self.d, self.dmin)
    }
}

impl Packed for BlockQ6_K {
    const SUB: usize = 16;
    const OFFSET: i32 = 32;
    const MINS: bool = false;
    const MAX: i32 = 63;
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: loads inside `ql` (128 bytes) and `qh` (64); AVX2 enabled by the
        // caller.
        unsafe {
            let m3 = _mm256_set1_epi8(3);
            for half in 0..2 {
                let (a_lo, a_hi) = nibbles32(self.ql.as_ptr().add(64 * half));
                let (c_lo, c_hi) = nibbles32(self.ql.as_ptr().add(64 * half + 32));
                let h = _mm256_loadu_si256(self.qh.as_ptr().add(32 * half).cast());
                // Weight `128 half + 32 g + l`: low nibble from `a` (g = 0, 2) or `c`
                // (g = 1, 3), low half of the byte for g < 2; bits 2g..2g+2 of `h`.
                let lows = [a_lo, c_lo, a_hi, c_hi];
                let highs = [
                    _mm256_and_si256(h, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(h), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(h), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(h), m3),
                ];
                for g in 0..4 {
                    let v = _mm256_or_si256(lows[g], _mm256_slli_epi16::<4>(highs[g]));
                    store32(q, 128 * half + 32 * g, v);
                }
            }
        }
    }
    #[inline(always)]
    fn header(&self) -> Header {
        Header {
            scales: self.scales.map(i32::from),
            mins: [0; 16],
            d: self.d.to_f32(),
            dmin: 0.0,
        }
    }
}

impl Packed for BlockIQ4_XS {
    const SUB: usize = 32;
    const OFFSET: i32 = 128;
    const MINS: bool = false;
    const MAX: i32 = 241;
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: loads inside `qs` (128 bytes); AVX2 enabled by the caller. Weights
        // `32 ib + l` / `32 ib + 16 + l`: table entries of the low / high nibble of
        // `qs[16 ib + l]`; the table holds each level plus 128.
        unsafe {
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                KVALUES_IQ4NL_PLUS_128.as_ptr().cast(),
            ));
            for pair in 0..4 {
                let (lo, hi) = nibbles32(self.qs.as_ptr().add(32 * pair));
                // 128-bit lane k of `lo` / `hi` belongs to block 2 pair + k.
                let lo = _mm256_shuffle_epi8(table, lo);
                let hi = _mm256_shuffle_epi8(table, hi);
                let first = _mm256_permute2x128_si256::<0x20>(lo, hi);
                let second = _mm256_permute2x128_si256::<0x31>(lo, hi);
                store32(q, 64 * pair, first);
                store32(q, 64 * pair + 32, second);
            }
        }
    }
    #[inline(always)]
    fn header(&self) -> Header {
        Header {
            scales: std::array::from_fn(|ib| if ib < 8 { self.block_scale(ib) - 32 } else { 0 }),
            mins: [0; 16],
            d: self.d.to_f32(),
            dmin: 0.0,
        }
    }
}

/// Sum of the activations of sub-block `s` of `W` in `x`.
fn sub_sum<W: Packed>(x: &BlockQ8_K, s: usize) -> i32 {
    let per = W::SUB / 16;
    x.bsums[per * s..per * (s + 1)]
        .iter()
        .map(|&b| i32::from(b))
        .sum()
}

/// Writes the activation sums of sub-blocks `2j` and `2j + 1` of `x` as the i16 pair
/// `pairs[j]`, for `j < W::SUBS / 2` (each sum is at most 32 · 128 in magnitude).
pub(super) fn sum_pairs<W: Packed>(x: &BlockQ8_K, pairs: &mut [i32]) {
    for (j, pair) in pairs.iter_mut().take(W::SUBS / 2).enumerate() {
        let lo = sub_sum::<W>(x, 2 * j) as i16 as u16;
        let hi = sub_sum::<W>(x, 2 * j + 1) as i16 as u16;
        *pair = (u32::from(lo) | u32::from(hi) << 16) as i32;
    }
}

/// The seeds and minimum-pair sums of one Q8_K activation block for format `W`.
pub(super) fn prepare<W: Packed>(x: &BlockQ8_K, extra: &mut [i32]) {
    let mut at = 0;
    if W::OFFSET != 0 {
        for s in 0..W::SUBS {
            extra[at] = -W::OFFSET * sub_sum::<W>(x, s);
            at += 1;
        }
    }
    if W::MINS {
        sum_pairs::<W>(x, &mut extra[at..]);
    }
}

/// Dwords of the largest header row (Q2_K: 16 scales, 8 minimum pairs, `d`, `dmin`),
/// rounded up to the 32 bytes a transpose step takes.
const HEADER_DWORDS: usize = 32;

/// The header lines of one row of `W` as dwords in line order: the scales, the minimum
/// pairs (low half sub-block `2j`, high half `2j + 1`), `d`, then `dmin` (f32 bits).
#[inline(always)]
fn header_row<W: Packed>(h: &Header, row: &mut [u32; HEADER_DWORDS]) {
    for (dword, &scale) in row.iter_mut().zip(&h.scales).take(W::SUBS) {
        *dword = scale as u32;
    }
    let d_at = W::D_LINE - WEIGHT_LINES;
    if W::MINS {
        for j in 0..W::SUBS / 2 {
            row[W::SUBS + j] = (h.mins[2 * j] as u32 & 0xffff) | (h.mins[2 * j + 1] as u32) << 16;
        }
        row[d_at + 1] = h.dmin.to_bits();
    }
    row[d_at] = h.d.to_bits();
}

/// Packs up to sixteen rows of `bpr` blocks of `W`: each row's weights and header values
/// are laid out in row order first, then both are transposed into lines.
#[inline(always)]
pub(super) fn pack_body<W: Packed>(w: &[W], bpr: usize, dst: &mut [Line]) {
    const { assert!(W::LINES - WEIGHT_LINES <= HEADER_DWORDS) };
    let rows = w.len().checked_div(bpr).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut weights = [[0u8; 256]; GROUP_ROWS];
    let mut headers = [[0u32; HEADER_DWORDS]; GROUP_ROWS];
    for b in 0..bpr {
        prefetch_ahead_in_rows(w, bpr, rows, b);
        let lines = &mut dst[b * W::LINES..(b + 1) * W::LINES];
        for r in 0..rows {
            let block = &w[r * bpr + b];
            // SAFETY: inlined into the pack functions (AVX2 at least) of the GEMMs.
            unsafe { block.unsigned(&mut weights[r]) };
            header_row::<W>(&block.header(), &mut headers[r]);
        }
        let header_bytes: &[[u8; 4 * HEADER_DWORDS]; GROUP_ROWS] = bytemuck::cast_ref(&headers);
        let (weight_lines, header_lines) = lines.split_at_mut(WEIGHT_LINES);
        // SAFETY: as above. The header transpose writes the block's `LINES -
        // WEIGHT_LINES <= HEADER_DWORDS` header lines.
        unsafe {
            transpose_rows(&weights, weight_lines);
            transpose_rows(header_bytes, header_lines);
        }
    }
}
