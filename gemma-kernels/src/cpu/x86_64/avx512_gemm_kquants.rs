//! Sixteen-row AVX-512 VNNI GEMM of the 256-element formats with Q8_K activations (Q2_K,
//! Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS); see `avx512_gemm` for the layout.
//!
//! A packed block holds 64 weight lines (line `i`: weights `4i..4i+4` of every row,
//! stored as `value + offset`, unsigned), then per sub-block a line of the sixteen rows'
//! integer scales as i32, then (formats with minimums) the minimums as i16 pairs, then
//! the `d` line and (with minimums) the `dmin` line, as f32. Per token, each sub-block's
//! `vpdpbusd` sum starts at `-offset · Σ x` of its activations (so it is ggml's
//! `Σ value · x` exactly), is multiplied by its scales (`vpmulld`) and added: ggml's
//! integer sum per block; only the block's totals are converted to f32. Minimums meet
//! pairs of sub-block activation sums in `vpdpwssd`.
//!
//! | format | sub-block | offset | minimums |
//! |---|---|---|---|
//! | Q2_K | 16 | 0 | yes |
//! | Q3_K | 16 | 4 | no |
//! | Q4_K | 32 | 0 | yes |
//! | Q5_K | 32 | 0 | yes |
//! | Q6_K | 16 | 32 | no |
//! | IQ4_XS | 32 | 128 | no |

use super::avx512_gemm::{gemm_kernels, lengths_agree, transpose_rows, Line, Outputs, GROUP_ROWS};
use crate::quant::common::KVALUES_IQ4NL;
use crate::quant::{
    BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K, QuantBlock,
};
use std::arch::x86_64::*;

/// Weight lines per 256-element block.
const WEIGHT_LINES: usize = 64;

/// The integer scales and minimums of one block and its two f32 super-scales.
struct Header {
    /// Scale of sub-block `s` (the first [`Packed::SUBS`] are used).
    scales: [i32; 16],
    /// Minimum of sub-block `s` (formats with minimums).
    mins: [i32; 16],
    /// Super-block scale of the scales.
    d: f32,
    /// Super-block scale of the minimums (formats with minimums).
    dmin: f32,
}

/// A 256-element format as the sixteen-row GEMM packs it.
trait Packed: QuantBlock<Act = BlockQ8_K> {
    /// Elements per sub-block: 16 or 32.
    const SUB: usize;
    /// What the stored unsigned weights exceed the signed ones by.
    const OFFSET: i32;
    /// Whether each sub-block subtracts `dmin · min · Σ x`.
    const MINS: bool;
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
    /// Only for inlining into functions with AVX-512 F/BW/VL enabled.
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
/// AVX-512BW/VL enabled by the caller.
#[inline(always)]
unsafe fn where_bit(mask: __m256i, bit: u8, add: i8) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let set = _mm256_test_epi8_mask(mask, _mm256_set1_epi8(bit as i8));
        _mm256_maskz_mov_epi8(set, _mm256_set1_epi8(add))
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
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { two_bit_weights(&self.qs, q, |_| _mm256_setzero_si256()) }
    }
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
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: the load reads the 32 bytes of `hmask`; AVX-512BW/VL enabled by the
        // caller. Weight `32 k + l` (k = 4n + g) gets 4 where bit `k` of `hmask[l]` is
        // set (ggml subtracts 4 where it is clear).
        unsafe {
            let hmask = _mm256_loadu_si256(self.hmask.as_ptr().cast());
            two_bit_weights(&self.qs, q, |k| where_bit(hmask, 1 << k, 4))
        }
    }
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
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: AVX2 enabled by the caller.
        unsafe { nibble_weights(&self.qs, q, |_| _mm256_setzero_si256()) }
    }
    fn header(&self) -> Header {
        k4_header(self.scales_mins(), self.d, self.dmin)
    }
}

impl Packed for BlockQ5_K {
    const SUB: usize = 32;
    const OFFSET: i32 = 0;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: the load reads the 32 bytes of `qh`; AVX-512BW/VL enabled by the
        // caller. As Q4_K, plus 16 where bit `j` of `qh[l]` is set (weight `32 j + l`).
        unsafe {
            let qh = _mm256_loadu_si256(self.qh.as_ptr().cast());
            nibble_weights(&self.qs, q, |j| where_bit(qh, 1 << j, 16))
        }
    }
    fn header(&self) -> Header {
        k4_header(self.scales_mins(), self.d, self.dmin)
    }
}

impl Packed for BlockQ6_K {
    const SUB: usize = 16;
    const OFFSET: i32 = 32;
    const MINS: bool = false;
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
    #[inline(always)]
    unsafe fn unsigned(&self, q: &mut [u8; 256]) {
        // SAFETY: loads inside `qs` (128 bytes); AVX2 enabled by the caller. Weights
        // `32 ib + l` / `32 ib + 16 + l`: table entries of the low / high nibble of
        // `qs[16 ib + l]`; the table holds each level plus 128.
        unsafe {
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                KVALUES_IQ4NL
                    .map(|v| (i16::from(v) + 128) as u8)
                    .as_ptr()
                    .cast(),
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
    fn header(&self) -> Header {
        Header {
            scales: std::array::from_fn(|ib| if ib < 8 { self.block_scale(ib) - 32 } else { 0 }),
            mins: [0; 16],
            d: self.d.to_f32(),
            dmin: 0.0,
        }
    }
}

/// The seeds and minimum-pair sums of one Q8_K activation block for format `W`.
fn prepare<W: Packed>(x: &BlockQ8_K, extra: &mut [i32]) {
    // Sum of the activations of sub-block `s`.
    let sum = |s: usize| -> i32 {
        let per = W::SUB / 16;
        x.bsums[per * s..per * (s + 1)]
            .iter()
            .map(|&b| i32::from(b))
            .sum()
    };
    let mut at = 0;
    if W::OFFSET != 0 {
        for s in 0..W::SUBS {
            extra[at] = -W::OFFSET * sum(s);
            at += 1;
        }
    }
    if W::MINS {
        // Each sum is at most 32 · 128 in magnitude: an i16.
        for j in 0..W::SUBS / 2 {
            let (lo, hi) = (sum(2 * j) as i16 as u16, sum(2 * j + 1) as i16 as u16);
            extra[at] = (u32::from(lo) | u32::from(hi) << 16) as i32;
            at += 1;
        }
    }
}

/// Packs up to sixteen rows of `bpr` blocks of `W`.
#[inline(always)]
fn pack_body<W: Packed>(w: &[W], bpr: usize, dst: &mut [Line]) {
    let rows = w.len().checked_div(bpr).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut weights = [[0u8; 256]; GROUP_ROWS];
    for b in 0..bpr {
        let lines = &mut dst[b * W::LINES..(b + 1) * W::LINES];
        if rows < GROUP_ROWS {
            lines[WEIGHT_LINES..].fill(Line::ZERO);
        }
        for (r, q) in weights[..rows].iter_mut().enumerate() {
            let block = &w[r * bpr + b];
            // SAFETY: inlined into the AVX-512F/BW/VL functions of `kquant_instances!`.
            unsafe { block.unsigned(q) };
            let h = block.header();
            for s in 0..W::SUBS {
                lines[WEIGHT_LINES + s].set_lane(r, h.scales[s].to_le_bytes());
            }
            if W::MINS {
                for j in 0..W::SUBS / 2 {
                    let pair = (h.mins[2 * j] as u32 & 0xffff) | (h.mins[2 * j + 1] as u32) << 16;
                    lines[WEIGHT_LINES + W::SUBS + j].set_lane(r, pair.to_le_bytes());
                }
                lines[W::D_LINE + 1].set_lane(r, h.dmin.to_le_bytes());
            }
            lines[W::D_LINE].set_lane(r, h.d.to_le_bytes());
        }
        // SAFETY: inlined into the AVX-512F functions of `kquant_instances!`.
        unsafe { transpose_rows(&weights, &mut lines[..WEIGHT_LINES]) };
    }
}

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
    q4_k: BlockQ4_K, 16 => pack_q4_k, run_q4_k
);
kquant_gemm!(
    /// The Q5_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q5_k: BlockQ5_K, 8 => pack_q5_k, run_q5_k
);
kquant_gemm!(
    /// The Q6_K x Q8_K sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q6_k: BlockQ6_K, 16 => pack_q6_k, run_q6_k
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
