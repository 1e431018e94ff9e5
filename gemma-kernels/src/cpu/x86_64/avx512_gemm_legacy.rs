//! Sixteen-row AVX-512 VNNI GEMM of the 32-element formats: Q4_0, Q5_0, Q8_0, IQ4_NL
//! with Q8_0 activations, Q4_1 and Q5_1 with Q8_1 activations; see `avx512_gemm` for the
//! layout.
//!
//! A packed block is nine lines: eight of weights (`4k..4k+4` of each row, stored as
//! `q + offset`, unsigned) and one of the sixteen row scales as f32; Q4_1 and Q5_1 add a
//! line of the row minimums as f32. Each activation block brings `-offset · Σ x`, the seed
//! of the integer sum (so the sum is ggml's `Σ (q - offset) x` exactly), its scale as
//! f32 and, for Q8_1, its `d · Σ x` as f32 (which the minimums multiply).

use super::avx512_gemm::{gemm_kernels, lengths_agree, transpose_rows, Line, Outputs, GROUP_ROWS};
use crate::quant::common::KVALUES_IQ4NL;
use crate::quant::{BlockIQ4_NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

/// Weight lines per packed block.
const WEIGHT_LINES: usize = 8;

/// An activation block of 32 quants.
trait Act32 {
    /// The 32 quants.
    fn quants(&self) -> &[i8; 32];
}

impl Act32 for BlockQ8_0 {
    #[inline(always)]
    fn quants(&self) -> &[i8; 32] {
        &self.qs
    }
}

impl Act32 for BlockQ8_1 {
    #[inline(always)]
    fn quants(&self) -> &[i8; 32] {
        &self.qs
    }
}

/// A 32-element weight format as unsigned bytes.
trait Unsigned32 {
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
    /// Only for inlining into functions with AVX-512 F/BW/VL enabled.
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
/// AVX-512BW/VL enabled by the caller.
#[inline(always)]
unsafe fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let fifth = _mm256_maskz_mov_epi8(u32::from_le_bytes(qh), _mm256_set1_epi8(16));
        _mm256_or_si256(nibbles(qs), fifth)
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
        // SAFETY: AVX-512BW/VL enabled by the caller.
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
            let levels = KVALUES_IQ4NL.map(|v| (i16::from(v) + 128) as u8);
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(levels.as_ptr().cast()));
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
        // SAFETY: AVX-512BW/VL enabled by the caller.
        unsafe { five_bits(&self.qs, self.qh) }
    }
}

/// The seed (zero: no offset), scale and `d · Σ x` of one Q8_1 activation block.
fn prepare_q8_1(x: &BlockQ8_1, extra: &mut [i32]) {
    extra[0] = 0;
    extra[1] = x.d.to_f32().to_bits() as i32;
    extra[2] = x.s.to_f32().to_bits() as i32;
}

/// The seed and scale of one Q8_0 activation block for weights of offset `OFFSET`.
fn prepare<const OFFSET: i32>(x: &BlockQ8_0, extra: &mut [i32]) {
    let sum: i32 = x.qs.iter().map(|&q| i32::from(q)).sum();
    extra[0] = -OFFSET * sum;
    extra[1] = x.d.to_f32().to_bits() as i32;
}

/// Packs up to sixteen rows of `bpr` blocks (see the module doc).
#[inline(always)]
fn pack_body<W: Unsigned32>(w: &[W], bpr: usize, dst: &mut [Line]) {
    let rows = w.len().checked_div(bpr).unwrap_or(0).min(GROUP_ROWS);
    // Rows past `rows` stay zero.
    let mut bytes = [[0u8; 32]; GROUP_ROWS];
    for b in 0..bpr {
        let lines = &mut dst[b * W::LINES..(b + 1) * W::LINES];
        lines[WEIGHT_LINES..].fill(Line::ZERO);
        for (r, row) in bytes[..rows].iter_mut().enumerate() {
            let block = &w[r * bpr + b];
            // SAFETY: inlined into the AVX-512F/BW/VL functions of `gemm_kernels!`; the
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
    q4_0: BlockQ4_0, BlockQ8_0, <BlockQ4_0 as Unsigned32>::LINES, <BlockQ4_0 as Unsigned32>::EXTRA, 8 => prepare::<{ BlockQ4_0::OFFSET }>, pack_q4_0, run_q4_0
);
gemm_kernels!(
    /// The Q5_0 x Q8_0 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q5_0: BlockQ5_0, BlockQ8_0, <BlockQ5_0 as Unsigned32>::LINES, <BlockQ5_0 as Unsigned32>::EXTRA, 8 => prepare::<{ BlockQ5_0::OFFSET }>, pack_q5_0, run_q5_0
);
gemm_kernels!(
    /// The Q8_0 x Q8_0 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q8_0: BlockQ8_0, BlockQ8_0, <BlockQ8_0 as Unsigned32>::LINES, <BlockQ8_0 as Unsigned32>::EXTRA, 8 => prepare::<{ BlockQ8_0::OFFSET }>, pack_q8_0, run_q8_0
);
gemm_kernels!(
    /// The IQ4_NL x Q8_0 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    iq4_nl: BlockIQ4_NL, BlockQ8_0, <BlockIQ4_NL as Unsigned32>::LINES, <BlockIQ4_NL as Unsigned32>::EXTRA, 8
        => prepare::<{ BlockIQ4_NL::OFFSET }>, pack_iq4_nl, run_iq4_nl
);
gemm_kernels!(
    /// The Q4_1 x Q8_1 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q4_1: BlockQ4_1, BlockQ8_1, <BlockQ4_1 as Unsigned32>::LINES, <BlockQ4_1 as Unsigned32>::EXTRA, 8
        => prepare_q8_1, pack_q4_1, run_q4_1
);
gemm_kernels!(
    /// The Q5_1 x Q8_1 sixteen-row GEMM, if this CPU has AVX-512 VNNI.
    q5_1: BlockQ5_1, BlockQ8_1, <BlockQ5_1 as Unsigned32>::LINES, <BlockQ5_1 as Unsigned32>::EXTRA, 8
        => prepare_q8_1, pack_q5_1, run_q5_1
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
