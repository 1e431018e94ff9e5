//! One-token AVX-512 VNNI kernels of Q4_0 and Q5_0 that multiply [`ROWS`] weight rows
//! with one Q8_0 activation row at once, for long rows.
//!
//! On long rows (15360 values: the 12B's `ffn_down`) the activations (16 KiB of Q8_0)
//! no longer stay in L1 beside the streaming weights, and a one-row kernel reads each
//! activation block again from L2 for every row. Here every activation block pair is
//! loaded once for [`ROWS`] rows, already rearranged into the order in which the weight
//! nibbles unpack without a cross-lane shuffle, and so is its weight-offset correction
//! (the integer sum of offset × activation, the same for every row); the weight scales
//! of the [`ROWS`] rows are converted together. The rows are [`ROWS`] separate streams,
//! too short for the hardware prefetchers, so the kernel requests the next group of rows
//! linearly into L2 as it goes (without that it streams at half the speed of the one-row
//! kernel; with it, faster). Results agree with the scalar twin to float rounding.

use crate::cpu::isa::{has_avx512_vnni, Isa};
use crate::quant::{BlockQ4_0, BlockQ5_0, BlockQ8_0};
use half::f16;
use std::arch::x86_64::*;

/// Weight rows multiplied together by one call.
pub(crate) const ROWS: usize = 4;

/// Cache lines of the next row group requested per block pair: they must cover the
/// `ROWS * 2` weight blocks (at most 176 bytes) that one step consumes.
const PREFETCH_LINES_PER_STEP: usize = 3;

/// The activation quants of one block pair `(a, b)` in the order the kernels unpack the
/// weight nibbles: `a[0..16]`, `b[0..16]`, `a[16..32]`, `b[16..32]`.
pub(crate) type ActPair = [i8; 64];

/// Rearranges Q8_0 activation blocks into [`ActPair`]s and their scales into `scales`
/// (two per pair); a last odd block is paired with zero quants and a zero scale.
pub(crate) fn interleave_pairs(x: &[BlockQ8_0], pairs: &mut Vec<ActPair>, scales: &mut Vec<f32>) {
    pairs.clear();
    scales.clear();
    for two in x.chunks(2) {
        let zero = [0i8; 32];
        let (a, b) = (&two[0].qs, two.get(1).map_or(&zero, |b| &b.qs));
        let mut pair = [0i8; 64];
        pair[..16].copy_from_slice(&a[..16]);
        pair[16..32].copy_from_slice(&b[..16]);
        pair[32..48].copy_from_slice(&a[16..]);
        pair[48..].copy_from_slice(&b[16..]);
        pairs.push(pair);
        scales.push(two[0].d.to_f32());
        scales.push(two.get(1).map_or(0.0, |b| b.d.to_f32()));
    }
}

/// [`ROWS`] consecutive weight rows (`w.len() / ROWS` blocks each) times one activation
/// row given as [`interleave_pairs`] made it: `out[r]` = row `r` · `x`.
pub(crate) type RowsVecDot<W> = fn(&[W], &[ActPair], &[f32], &mut [f32; ROWS]);

/// The Q4_0 kernel, if this CPU has AVX-512 F/BW/VL and VNNI.
pub(crate) fn q4_0() -> Option<RowsVecDot<BlockQ4_0>> {
    available().then_some(
        |w: &[BlockQ4_0], x: &[ActPair], s: &[f32], out: &mut [f32; ROWS]| {
            // SAFETY: handed out only after AVX-512F/BW/VL, VNNI, FMA and F16C were found.
            unsafe { q4_0_kernel(w, x, s, out) }
        },
    )
}

/// The Q5_0 kernel, if this CPU has AVX-512 F/BW/VL and VNNI.
pub(crate) fn q5_0() -> Option<RowsVecDot<BlockQ5_0>> {
    available().then_some(
        |w: &[BlockQ5_0], x: &[ActPair], s: &[f32], out: &mut [f32; ROWS]| {
            // SAFETY: handed out only after AVX-512F/BW/VL, VNNI, FMA and F16C were found.
            unsafe { q5_0_kernel(w, x, s, out) }
        },
    )
}

fn available() -> bool {
    Isa::Avx512.is_supported() && has_avx512_vnni()
}

/// The nibbles of two blocks' 16-byte arrays in [`ActPair`] order: `a`'s low nibbles,
/// `b`'s low nibbles, `a`'s high nibbles, `b`'s high nibbles.
#[inline(always)]
unsafe fn nibbles(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    // SAFETY: two 16-byte arrays, unaligned loads; the caller runs with AVX-512F/BW.
    unsafe {
        let ab = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(a.as_ptr().cast())),
            _mm_loadu_si128(b.as_ptr().cast()),
            1,
        );
        let twice = _mm512_inserti64x4(_mm512_castsi256_si512(ab), ab, 1);
        let shifted = _mm512_mask_srli_epi16(twice, 0xffff_0000, twice, 4);
        _mm512_and_si512(shifted, _mm512_set1_epi8(0x0f))
    }
}

/// The loop of both formats over block pairs: `quants(a, b)` gives the unsigned quants
/// (offset still in) of weight blocks `a` and `b` in [`ActPair`] order, `d` a block's
/// scale, `offset` the weight offset.
#[inline(always)]
unsafe fn rows_pairs<W>(
    w: &[W],
    x: &[ActPair],
    scales: &[f32],
    out: &mut [f32; ROWS],
    offset: i8,
    d: impl Fn(&W) -> f16,
    quants: impl Fn(&W, &W) -> __m512i,
) {
    let bpr = w.len() / ROWS;
    let n = bpr.min(2 * x.len()).min(scales.len());
    let group_bytes = std::mem::size_of_val(w);
    // SAFETY (all intrinsics and unchecked indexing): the caller runs with AVX-512F/BW/VL,
    // VNNI, FMA and F16C; every weight index is `r * bpr + j` with `r < ROWS` and
    // `j < n <= bpr` (so below `w.len()`); pair `i / 2` and scales `i, i + 1` exist
    // because `i < n <= min(2 * x.len(), scales.len())` with `i` even, and `scales` holds
    // two values per pair.
    unsafe {
        let off = _mm512_set1_epi8(offset);
        let lanes = |r: i32| {
            let (a, b) = (2 * r, 2 * r + 1);
            _mm512_set_epi32(b, b, b, b, a, a, a, a, b, b, b, b, a, a, a, a)
        };
        let spread = [lanes(0), lanes(1), lanes(2), lanes(3)];
        let mut acc = [_mm512_setzero_ps(); ROWS];
        let mut i = 0;
        while i < n {
            let j = if i + 1 == n { i } else { i + 1 };
            let y = _mm512_loadu_si512(x.get_unchecked(i / 2).as_ptr().cast());
            let offsets = _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, y);
            let xd = _mm256_castpd_ps(_mm256_broadcast_sd(&*scales.as_ptr().add(i).cast()));
            let bits = |r: usize| {
                let (a, b) = (w.get_unchecked(r * bpr + i), w.get_unchecked(r * bpr + j));
                u64::from(d(a).to_bits()) | u64::from(d(b).to_bits()) << 16
            };
            let wd = _mm_set_epi64x(
                (bits(2) | bits(3) << 32) as i64,
                (bits(0) | bits(1) << 32) as i64,
            );
            // The next group of rows, read linearly into L2 over this group's steps: the
            // ROWS streams of this group are too short for the hardware prefetchers.
            let next = w
                .as_ptr()
                .cast::<i8>()
                .wrapping_add(group_bytes + i * ROWS * std::mem::size_of::<W>());
            for line in 0..PREFETCH_LINES_PER_STEP {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(64 * line));
            }
            let products = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_cvtph_ps(wd), xd));
            for (r, acc) in acc.iter_mut().enumerate() {
                let (a, b) = (w.get_unchecked(r * bpr + i), w.get_unchecked(r * bpr + j));
                let s = _mm512_permutexvar_ps(spread[r], products);
                let sums = _mm512_sub_epi32(
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), quants(a, b), y),
                    offsets,
                );
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), s, *acc);
            }
            i += 2;
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(acc);
        }
    }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_kernel(w: &[BlockQ4_0], x: &[ActPair], scales: &[f32], out: &mut [f32; ROWS]) {
    // SAFETY: features enabled above.
    unsafe { rows_pairs(w, x, scales, out, 8, |b| b.d, |a, b| nibbles(&a.qs, &b.qs)) }
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL, VNNI, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_0_kernel(w: &[BlockQ5_0], x: &[ActPair], scales: &[f32], out: &mut [f32; ROWS]) {
    // SAFETY: features enabled above.
    unsafe {
        rows_pairs(
            w,
            x,
            scales,
            out,
            16,
            |b| b.d,
            |a, b| {
                // The fifth bits in ActPair order: a's 0..16, b's 0..16, a's 16..32, b's.
                let (qa, qb) = (u32::from_le_bytes(a.qh), u32::from_le_bytes(b.qh));
                let bits = u64::from(qa & 0xffff)
                    | u64::from(qb & 0xffff) << 16
                    | u64::from(qa >> 16) << 32
                    | u64::from(qb >> 16) << 48;
                _mm512_or_si512(nibbles(&a.qs, &b.qs), _mm512_maskz_set1_epi8(bits, 0x10))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::x86_64::avx512_gemm::tests::values;
    use crate::quant::QuantBlock;

    fn check<B: QuantBlock<Act = BlockQ8_0>>(kernel: RowsVecDot<B>) {
        for blocks in (1..=9).chain([31, 32, 33, 480, 481]) {
            let mut w = vec![<B as bytemuck::Zeroable>::zeroed(); ROWS * blocks];
            B::quantize(&values(ROWS * blocks * 32, blocks as u32), &mut w);
            let mut x = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); blocks];
            BlockQ8_0::quantize_act(&values(blocks * 32, 7 + blocks as u32), &mut x);
            let (mut pairs, mut scales) = (Vec::new(), Vec::new());
            interleave_pairs(&x, &mut pairs, &mut scales);
            let mut got = [f32::NAN; ROWS];
            kernel(&w, &pairs, &scales, &mut got);
            for (r, got) in got.into_iter().enumerate() {
                let want = B::vec_dot(&w[r * blocks..(r + 1) * blocks], &x);
                let tol = 1e-5 * (want.abs() + 1.0);
                assert!(
                    (got - want).abs() <= tol,
                    "{:?} {blocks} blocks, row {r}: {got} vs {want}",
                    B::TYPE
                );
            }
        }
    }

    #[test]
    fn rows_kernels_match_scalar() {
        let (Some(q4), Some(q5)) = (q4_0(), q5_0()) else {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to check");
            return;
        };
        check(q4);
        check(q5);
    }
}
