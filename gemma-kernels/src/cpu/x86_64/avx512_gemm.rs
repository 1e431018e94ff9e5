//! AVX-512 VNNI matrix-matrix kernels over sixteen weight rows at once, the layout of
//! ggml's repacked x86 GEMMs, built per call in a small scratch instead of a second
//! copy of the weights.
//!
//! A group of up to [`GROUP_ROWS`] rows is unpacked once into "lines" of 64 bytes: line
//! `k` of a block holds, for each of the sixteen rows, the four unsigned weights
//! `4k..4k+4` of that block as one 32-bit lane. One `vpdpbusd` with four activation
//! bytes broadcast to every lane then advances all sixteen row sums, so each token costs
//! a broadcast and one multiply-add instruction per four weights of sixteen rows, and
//! the unpacking is shared by every token of the call. Weights are stored unsigned
//! (ggml's `q - offset` is applied through the activation sums), so the integer dot of
//! every block is exactly ggml's.
//!
//! This file holds the common pieces, shared with the AVX2 kernels (`avx2_gemm`, which
//! read each line as two halves of eight rows); the layouts of the formats are in
//! `legacy_packing` and `kquant_packing`, the kernels in `avx512_gemm_legacy`,
//! `avx512_gemm_kquants` and `avx512_gemm_float`.

/// Weight rows packed and multiplied together (one 32-bit lane of a 512-bit vector each).
pub(crate) const GROUP_ROWS: usize = 16;

/// One 64-byte vector of packed weights, scales or sums, aligned for whole-line loads.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [u8; 64]);

impl Line {
    /// All zero bytes.
    pub(crate) const ZERO: Line = Line([0; 64]);

    /// Writes `v` as 32-bit lane `lane` (`lane < 16`).
    #[inline(always)]
    pub(crate) fn set_lane(&mut self, lane: usize, v: [u8; 4]) {
        self.0[4 * lane..4 * lane + 4].copy_from_slice(&v);
    }
}

/// How many blocks ahead of the one being packed [`prefetch_ahead_in_rows`] fetches.
const PACK_PREFETCH_BLOCKS: usize = 2;

/// Prefetches block `b + PACK_PREFETCH_BLOCKS` of each of the first `rows` rows of `w`
/// (rows of `bpr` blocks) into L2: the packers read a group's rows side by side, one
/// block of each in turn, sixteen streams that the hardware prefetchers do not follow.
/// (Into L1, the prefetches stalled on the full miss buffers.)
#[inline(always)]
pub(crate) fn prefetch_ahead_in_rows<W>(w: &[W], bpr: usize, rows: usize, b: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    let ahead = b + PACK_PREFETCH_BLOCKS;
    if ahead >= bpr {
        return;
    }
    let size = std::mem::size_of::<W>();
    for r in 0..rows {
        let start = w.as_ptr().wrapping_add(r * bpr + ahead).cast::<i8>();
        for line in 0..=size.div_ceil(64) {
            // SAFETY: a prefetch is only a hint: it never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add((64 * line).min(size - 1))) };
        }
    }
}

/// Prefetches `data` into L2, one request per 64 bytes: the GEMMs ask for the next
/// group's weights before multiplying the group they have packed, so that the memory
/// reads overlap the arithmetic instead of stalling the next packing.
#[inline(always)]
pub(crate) fn prefetch_to_l2<T>(data: &[T]) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    let start = data.as_ptr().cast::<i8>();
    for at in (0..std::mem::size_of_val(data)).step_by(64) {
        // SAFETY: a prefetch is only a hint; the address lies inside `data`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(at)) };
    }
}

/// Transposes sixteen rows of `N` bytes (`N` a multiple of 32) into the first `N / 4`
/// lines of `dst` (fewer when `dst` is shorter): lane `r` of line `i` gets bytes
/// `4i..4i + 4` of row `r`. AVX2 only, so that the AVX-512 and the AVX2 packers share
/// it (a 512-bit version took the same time on Zen 4): per 32 bytes of eight rows, an
/// 8 x 8 transpose of dwords (unpacks, then 128-bit lane permutes) makes one half of
/// eight lines.
///
/// # Safety
/// Only for inlining into functions with AVX2 enabled.
#[inline(always)]
pub(crate) unsafe fn transpose_rows<const N: usize>(
    rows: &[[u8; N]; GROUP_ROWS],
    dst: &mut [Line],
) {
    use std::arch::x86_64::*;
    debug_assert!(N.is_multiple_of(32));
    let count = dst.len().min(N / 4);
    // SAFETY: AVX2 enabled by the caller; the loads read bytes `32c..32c + 32` of each
    // row (`32c + 32 <= N`), each store one half of a line `8c + k < count`.
    unsafe {
        for c in 0..count.div_ceil(8) {
            for half in 0..2 {
                let row =
                    |r: usize| _mm256_loadu_si256(rows[8 * half + r].as_ptr().add(32 * c).cast());
                // For rows `4q..4q + 4` and element `e`: the low 128 bits hold those
                // rows' dword `e`, the high ones their dword `4 + e`.
                let mut quads = [[_mm256_setzero_si256(); 4]; 2];
                for (q, quad) in quads.iter_mut().enumerate() {
                    let [a, b, c2, d] =
                        [row(4 * q), row(4 * q + 1), row(4 * q + 2), row(4 * q + 3)];
                    let (ab_lo, ab_hi) = (_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
                    let (cd_lo, cd_hi) =
                        (_mm256_unpacklo_epi32(c2, d), _mm256_unpackhi_epi32(c2, d));
                    *quad = [
                        _mm256_unpacklo_epi64(ab_lo, cd_lo),
                        _mm256_unpackhi_epi64(ab_lo, cd_lo),
                        _mm256_unpacklo_epi64(ab_hi, cd_hi),
                        _mm256_unpackhi_epi64(ab_hi, cd_hi),
                    ];
                }
                let lines = &mut dst[8 * c..count.min(8 * c + 8)];
                for (e, (low, high)) in quads[0].into_iter().zip(quads[1]).enumerate() {
                    let first = _mm256_permute2x128_si256::<0x20>(low, high);
                    let second = _mm256_permute2x128_si256::<0x31>(low, high);
                    for (k, v) in [(e, first), (4 + e, second)] {
                        if let Some(line) = lines.get_mut(k) {
                            let at = line.0.as_mut_ptr().cast::<__m256i>().add(half);
                            _mm256_store_si256(at, v);
                        }
                    }
                }
            }
        }
    }
}

/// Where a kernel writes its results: token `t`, row `r` of the group goes to
/// `ptr + t * stride + r`, for `r < rows`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outputs {
    /// Output of token 0, row 0 of the group.
    pub(crate) ptr: *mut f32,
    /// Distance between the outputs of consecutive tokens.
    pub(crate) stride: usize,
    /// Rows of the group (at most [`GROUP_ROWS`]); lanes beyond are not written.
    pub(crate) rows: usize,
}

impl Outputs {
    /// Stores the first `rows` lanes of `v` as the outputs of token `t`.
    ///
    /// # Safety
    /// Only for inlining into AVX-512F functions; the outputs of token `t` must be
    /// writable (see [`Gemm::run`]).
    #[inline(always)]
    pub(crate) unsafe fn store(&self, t: usize, v: std::arch::x86_64::__m512) {
        use std::arch::x86_64::_mm512_mask_storeu_ps;
        let mask = ((1u32 << self.rows.min(GROUP_ROWS)) - 1) as u16;
        // SAFETY: guaranteed by the caller; the mask keeps lanes `rows..` unwritten.
        unsafe { _mm512_mask_storeu_ps(self.ptr.add(t * self.stride), mask, v) }
    }
}

/// The `run` kernel of a [`Gemm`] (see there).
pub(crate) type RunGemm<A> = unsafe fn(&[Line], usize, &[A], &[i32], usize, Outputs);

/// The kernels of one weight format `W` with activation blocks `A`.
pub(crate) struct Gemm<W, A> {
    /// Fewest tokens for which packing a group pays for itself (measured on AVX-512
    /// Zen 5); fewer take the one-row kernels.
    pub(crate) min_tokens: usize,
    /// Lines per weight block of a packed group.
    pub(crate) lines_per_block: usize,
    /// i32 values per activation block that `prepare` derives (sums, scales).
    pub(crate) extra_per_block: usize,
    /// Fills the `extra_per_block` values of each activation block of a slice (one
    /// call per token row, so the per-block work inlines into one loop).
    pub(crate) prepare: fn(&[A], &mut [i32]),
    /// Packs `weights` (the group's rows, `blocks_per_row` blocks each, at most
    /// [`GROUP_ROWS`] rows) into `dst` (`blocks_per_row * lines_per_block` lines); lanes
    /// of missing rows are zero.
    pub(crate) pack: fn(&[W], usize, &mut [Line]),
    /// `run(packed, blocks_per_row, act, extra, tokens, out)`: `packed` is a group packed
    /// by `pack`, `act` holds `tokens` activation rows of `blocks_per_row` blocks, `extra`
    /// their `extra_per_block` values per block from `prepare`; the dot product of row
    /// `r` of the group with token `t` goes to `out` (see [`Outputs`]). Does nothing if
    /// the slices are shorter than that.
    ///
    /// # Safety
    /// `out.ptr + t * out.stride + r` must be valid for writes, and not accessed by
    /// anyone else meanwhile, for every `t < tokens` and `r < out.rows`.
    pub(crate) run: RunGemm<A>,
}

/// Defines `$name()`, returning the [`Gemm`] of `$w` x `$a` when `$supported` holds (by
/// default: the CPU has AVX-512 F/BW/VL and VNNI, for the kernels built on `vpdpbusd`),
/// `None` otherwise; `$pack` and `$run` are the `#[target_feature]` functions, `$prepare` a
/// safe function of one activation block, `$min_tokens` the smallest batch it is used for.
macro_rules! gemm_kernels {
    ($(#[$doc:meta])* $name:ident: $w:ty, $a:ty, $lines:expr, $extra:expr, $min_tokens:expr
        => $prepare:expr, $pack:expr, $run:expr) => {
        gemm_kernels!(
            $(#[$doc])*
            $name: $w, $a, $lines, $extra, $min_tokens => $prepare, $pack, $run;
            when $crate::cpu::isa::Isa::Avx512.is_supported() && $crate::cpu::isa::has_avx512_vnni()
        );
    };
    ($(#[$doc:meta])* $name:ident: $w:ty, $a:ty, $lines:expr, $extra:expr, $min_tokens:expr
        => $prepare:expr, $pack:expr, $run:expr; when $supported:expr) => {
        $(#[$doc])*
        pub(crate) fn $name() -> Option<$crate::cpu::x86_64::avx512_gemm::Gemm<$w, $a>> {
            use $crate::cpu::x86_64::avx512_gemm::{Gemm, Line, Outputs};
            fn pack(w: &[$w], bpr: usize, dst: &mut [Line]) {
                // SAFETY: handed out below only after the CPU features of `$pack` were
                // found.
                unsafe { $pack(w, bpr, dst) }
            }
            /// # Safety
            /// As `Gemm::run`.
            unsafe fn run(p: &[Line], bpr: usize, x: &[$a], e: &[i32], n: usize, out: Outputs) {
                // SAFETY: as above for the CPU; the outputs are the caller's contract.
                unsafe { $run(p, bpr, x, e, n, out) }
            }
            fn prepare_blocks(x: &[$a], e: &mut [i32]) {
                let extra: usize = $extra;
                if extra > 0 {
                    for (a, e) in x.iter().zip(e.chunks_exact_mut(extra)) {
                        $prepare(a, e);
                    }
                }
            }
            if $supported {
                Some(Gemm {
                    min_tokens: $min_tokens,
                    lines_per_block: $lines,
                    extra_per_block: $extra,
                    prepare: prepare_blocks,
                    pack,
                    run,
                })
            } else {
                None
            }
        }
    };
}
pub(crate) use gemm_kernels;

/// Checks the slice lengths every `run` relies on; false (and nothing to do) when they
/// disagree, which the callers rule out.
#[inline(always)]
pub(crate) fn lengths_agree<A>(
    packed: &[Line],
    lines_per_block: usize,
    bpr: usize,
    act: &[A],
    extra: &[i32],
    extra_per_block: usize,
    tokens: usize,
) -> bool {
    packed.len() >= bpr * lines_per_block
        && act.len() >= tokens * bpr
        && extra.len() >= tokens * bpr * extra_per_block
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::QuantBlock;

    /// Every path this CPU has for one format, by name: `vpmaddubsw`, AVX-VNNI, AVX-512
    /// VNNI on 256 bits (the AVX2 GEMMs' paths); says which of the last two cannot run here.
    pub(crate) fn paths<W, A>(
        maddubs: Option<Gemm<W, A>>,
        avx_vnni: Option<Gemm<W, A>>,
        avx512_vnni256: Option<Gemm<W, A>>,
    ) -> Vec<(&'static str, Gemm<W, A>)> {
        let all = [
            ("maddubs", maddubs),
            ("avx_vnni", avx_vnni),
            ("avx512_vnni256", avx512_vnni256),
        ];
        all.into_iter()
            .filter_map(|(name, gemm)| {
                if gemm.is_none() {
                    eprintln!("{name}: not on this CPU, not run");
                }
                Some(name).zip(gemm)
            })
            .collect()
    }

    /// Runs `$check(&gemm)` for every path of AVX2 format module `$m` this CPU has.
    macro_rules! each_path {
        ($m:ident, $check:expr) => {
            let all = ($m::maddubs(), $m::avx_vnni(), $m::avx512_vnni256());
            for (name, gemm) in $crate::cpu::x86_64::avx512_gemm::tests::paths(all.0, all.1, all.2)
            {
                eprintln!("{} {name}", stringify!($m));
                $check(&gemm);
            }
        };
    }
    pub(crate) use each_path;

    /// Deterministic values in [-1, 1) with a few outliers.
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
                if i % 89 == 0 {
                    v * 25.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// `norm` of each dequantized row of `blocks_per_row` blocks.
    fn row_norms<B: QuantBlock>(
        blocks: &[B],
        blocks_per_row: usize,
        norm: impl Fn(&[f32]) -> f32,
    ) -> Vec<f32> {
        let mut values = vec![0.0f32; blocks_per_row * B::ELEMS];
        blocks
            .chunks(blocks_per_row)
            .map(|row| {
                B::dequantize(row, &mut values);
                norm(&values)
            })
            .collect()
    }

    /// Every `(rows, blocks per row, tokens)` case through `gemm` against the scalar
    /// one-token dot product of the format, row by row and token by token.
    pub(crate) fn check<W: QuantBlock>(gemm: &Gemm<W, W::Act>, cases: &[(usize, usize, usize)]) {
        check_values(gemm, cases, values, values);
    }

    /// Weights of sign `sign` at the largest magnitude of their blocks, but one value in
    /// 16 of the other sign and larger: the largest stored weights of most formats (those
    /// that map the largest value to the lowest level), the worst case for 16-bit sums.
    pub(crate) fn extreme_weights(n: usize, sign: f32) -> Vec<f32> {
        (0..n)
            .map(|i| if i % 16 == 0 { -sign } else { 0.99 * sign })
            .collect()
    }

    /// [`check_values`] with every pair of signs of [`extreme_weights`] and activations
    /// all of one sign (quantized to 127, or -127 and -128).
    pub(crate) fn check_extremes<W: QuantBlock>(gemm: &Gemm<W, W::Act>) {
        for (w_sign, x_sign) in [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)] {
            check_values(
                gemm,
                &[(16, 1, 4), (17, 2, 5)],
                |n, _| extreme_weights(n, w_sign),
                |n, _| vec![x_sign; n],
            );
        }
    }

    /// [`check`] with the weights and activations made by `weights` and `acts` from a
    /// count and a seed.
    pub(crate) fn check_values<W: QuantBlock>(
        gemm: &Gemm<W, W::Act>,
        cases: &[(usize, usize, usize)],
        weights: impl Fn(usize, u32) -> Vec<f32>,
        acts: impl Fn(usize, u32) -> Vec<f32>,
    ) {
        for &(rows, bpr, tokens) in cases {
            let seed = (rows * 1000 + bpr * 10 + tokens) as u32;
            let mut w = vec![<W as bytemuck::Zeroable>::zeroed(); rows * bpr];
            W::quantize(&weights(rows * bpr * W::ELEMS, seed), &mut w);
            let act_per_row = bpr * W::ELEMS / W::Act::ELEMS;
            assert_eq!(act_per_row, bpr, "one activation block per weight block");
            let mut x = vec![<W::Act as bytemuck::Zeroable>::zeroed(); tokens * bpr];
            W::Act::quantize_act(&acts(tokens * bpr * W::ELEMS, seed + 7), &mut x);
            let w_max = row_norms::<W>(&w, bpr, |v| v.iter().fold(0.0f32, |m, x| m.max(x.abs())));
            let x_abs = row_norms::<W::Act>(&x, bpr, |v| v.iter().map(|x| x.abs()).sum());
            let mut extra = vec![0i32; tokens * bpr * gemm.extra_per_block];
            (gemm.prepare)(&x, &mut extra);
            // Garbage in the scratch must not leak into missing rows.
            let mut packed = vec![Line([0x5A; 64]); bpr * gemm.lines_per_block];
            let mut out = vec![[f32::NAN; GROUP_ROWS]; tokens];
            let stride = GROUP_ROWS;
            for first in (0..rows).step_by(GROUP_ROWS) {
                let n_rows = GROUP_ROWS.min(rows - first);
                (gemm.pack)(&w[first * bpr..(first + n_rows) * bpr], bpr, &mut packed);
                out.fill([f32::NAN; GROUP_ROWS]);
                let outputs = Outputs {
                    ptr: out.as_mut_ptr().cast(),
                    stride,
                    rows: n_rows,
                };
                // SAFETY: `out` holds `tokens` rows of `stride` floats.
                unsafe { (gemm.run)(&packed, bpr, &x, &extra, tokens, outputs) };
                for (t, got) in out.iter().enumerate() {
                    for (r, &g) in got.iter().enumerate() {
                        if r >= n_rows {
                            assert!(g.is_nan(), "{:?} missing row {r} written", W::TYPE);
                            continue;
                        }
                        let row = &w[(first + r) * bpr..(first + r + 1) * bpr];
                        let want = W::vec_dot(row, &x[t * bpr..(t + 1) * bpr]);
                        // Float rounding of the per-block terms, which can cancel (Q4_K's
                        // scale and minimum parts): relative to the terms' magnitude.
                        let magnitude = w_max[first + r] * x_abs[t];
                        let tol = 1e-5 * want.abs().max(1.0) + 1e-6 * magnitude;
                        assert!(
                            (g - want).abs() <= tol,
                            "{:?} rows={rows} bpr={bpr} tokens={tokens} row={} t={t}: {g} vs {want}",
                            W::TYPE,
                            first + r
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod transpose_tests {
    use super::*;

    /// Sixteen rows of `N` bytes, no two dwords alike.
    fn rows<const N: usize>() -> [[u8; N]; GROUP_ROWS] {
        std::array::from_fn(|r| std::array::from_fn(|i| (i * 7 + r * 31 + i / 4 * 13) as u8))
    }

    /// Lane `r` of line `i` must be bytes `4i..4i + 4` of row `r`.
    fn assert_transposed<const N: usize>(rows: &[[u8; N]; GROUP_ROWS], lines: &[Line]) {
        for (i, line) in lines.iter().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                assert_eq!(
                    line.0[4 * r..4 * r + 4],
                    row[4 * i..4 * i + 4],
                    "line {i} row {r}"
                );
            }
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn transpose_avx2<const N: usize>(rows: &[[u8; N]; GROUP_ROWS], dst: &mut [Line]) {
        // SAFETY: AVX2 enabled here.
        unsafe { transpose_rows(rows, dst) }
    }

    fn check<const N: usize>(line_count: usize) {
        let rows = rows::<N>();
        let mut lines = vec![Line::ZERO; line_count];
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 detected.
            unsafe { transpose_avx2(&rows, &mut lines) };
            assert_transposed(&rows, &lines);
        } else {
            eprintln!("no AVX2: the AVX2 transpose cannot run here");
        }
    }

    #[test]
    fn transpose_puts_row_r_dword_i_in_lane_r_of_line_i() {
        check::<32>(8);
        check::<64>(16);
        check::<256>(64);
        // Fewer lines than the rows hold (the header lines of a packed block).
        check::<128>(14);
        check::<128>(17);
    }
}
