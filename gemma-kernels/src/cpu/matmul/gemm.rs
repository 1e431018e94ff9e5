//! Prefill with the sixteen-row GEMM kernels (`x86_64::avx512_gemm*` with AVX-512 VNNI,
//! else `x86_64::avx2_gemm*`): each parallel task packs a group of sixteen weight rows
//! into a per-thread scratch once and multiplies it with every token of the call, writing
//! sixteen contiguous outputs per token. Formats or CPUs without such a kernel return
//! false, having done nothing.

use super::Rows;
use crate::quant::QuantBlock;

/// Fewest tokens any sixteen-row kernel is used for (each format sets its own).
const MIN_TOKENS: usize = 8;

/// Runs the many-token product of `rows` with a sixteen-row GEMM kernel when the format
/// has one on this CPU (and `GEMMA_ISA` allows its ISA); `extra` is a reusable buffer
/// for the per-activation-block values the kernels need.
pub(super) fn matmat_with_gemm_kernel<B: QuantBlock>(
    rows: &Rows<B>,
    act: &[B::Act],
    n: usize,
    y: &mut [f32],
    extra: &mut Vec<i32>,
) -> bool {
    if n < MIN_TOKENS {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::isa::{self, Isa};
        use crate::cpu::x86_64::{
            avx2_gemm_float as avx2_f, avx2_gemm_kquants as avx2_k, avx2_gemm_legacy as avx2_l,
            avx512_gemm_float as avx512_f, avx512_gemm_kquants as avx512_k,
            avx512_gemm_legacy as avx512_l,
        };
        use crate::quant::{
            BlockIQ4_NL, BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K,
            BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0,
        };
        use gemma_gguf::GgmlType;

        let isa = isa::current();
        // Runs the product as concrete format `$c` with the AVX-512 kernels `$wide` (if
        // `GEMMA_ISA` allows AVX-512 and the CPU has VNNI), else the AVX2 ones `$narrow`.
        macro_rules! run_as {
            ($c:ty, $wide:expr) => {
                run_as!($c, $wide, None)
            };
            ($c:ty, $wide:expr, $narrow:expr) => {{
                let wide = if isa >= Isa::Avx512 { $wide } else { None };
                let gemm = if isa >= Isa::Avx2 {
                    wide.or_else(|| $narrow)
                } else {
                    None
                };
                return x86::run_as::<B, $c>(rows, act, n, y, extra, gemm);
            }};
        }
        match B::TYPE {
            GgmlType::Q4_0 => run_as!(BlockQ4_0, avx512_l::q4_0(), avx2_l::q4_0::best()),
            GgmlType::Q5_0 => run_as!(BlockQ5_0, avx512_l::q5_0(), avx2_l::q5_0::best()),
            GgmlType::Q8_0 => run_as!(BlockQ8_0, avx512_l::q8_0(), avx2_l::q8_0::best()),
            GgmlType::IQ4_NL => run_as!(BlockIQ4_NL, avx512_l::iq4_nl(), avx2_l::iq4_nl::best()),
            GgmlType::Q4_1 => run_as!(BlockQ4_1, avx512_l::q4_1(), avx2_l::q4_1::best()),
            GgmlType::Q5_1 => run_as!(BlockQ5_1, avx512_l::q5_1(), avx2_l::q5_1::best()),
            GgmlType::Q2_K => run_as!(BlockQ2_K, avx512_k::q2_k(), avx2_k::q2_k::best()),
            GgmlType::Q3_K => run_as!(BlockQ3_K, avx512_k::q3_k(), avx2_k::q3_k::best()),
            GgmlType::Q4_K => run_as!(BlockQ4_K, avx512_k::q4_k(), avx2_k::q4_k::best()),
            GgmlType::Q5_K => run_as!(BlockQ5_K, avx512_k::q5_k(), avx2_k::q5_k::best()),
            GgmlType::Q6_K => run_as!(BlockQ6_K, avx512_k::q6_k(), avx2_k::q6_k::best()),
            GgmlType::IQ4_XS => run_as!(BlockIQ4_XS, avx512_k::iq4_xs(), avx2_k::iq4_xs::best()),
            GgmlType::F32 => run_as!(f32, avx512_f::f32_gemm(), avx2_f::f32_gemm()),
            GgmlType::F16 => run_as!(half::f16, avx512_f::f16_gemm(), avx2_f::f16_gemm()),
            GgmlType::BF16 => run_as!(half::bf16, avx512_f::bf16_gemm(), avx2_f::bf16_gemm()),
            _ => {}
        }
    }
    let _ = (rows, act, n, y, extra);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::cpu::matmul::{Rows, SharedOut};
    use crate::cpu::x86_64::avx512_gemm::{prefetch_to_l2, Gemm, Line, Outputs, GROUP_ROWS};
    use crate::quant::QuantBlock;
    use rayon::prelude::*;
    use std::cell::RefCell;

    thread_local! {
        /// A thread's packed weight group, kept between calls so that a prefill
        /// allocates only while the buffer grows.
        static PACKED: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs the product as format `C` (the same format as `B`, seen through its concrete
    /// type) with `gemm`, when there is one (for the CPU and `GEMMA_ISA`).
    pub(super) fn run_as<B: QuantBlock, C: QuantBlock>(
        rows: &Rows<B>,
        act: &[B::Act],
        n: usize,
        y: &mut [f32],
        extra: &mut Vec<i32>,
        gemm: Option<Gemm<C, C::Act>>,
    ) -> bool {
        if B::TYPE != C::TYPE {
            return false;
        }
        // Both casts are identities: `C` is `B` (same ggml type), so are their activations.
        let weights = bytemuck::try_cast_slice::<B, C>(rows.weights);
        let act = bytemuck::try_cast_slice::<B::Act, C::Act>(act);
        let (Ok(weights), Ok(act), Some(gemm)) = (weights, act, gemm) else {
            return false;
        };
        if n < gemm.min_tokens {
            return false;
        }
        let bpr = rows.blocks_per_row;
        if act.len() != n * bpr {
            return false;
        }
        let per_block = gemm.extra_per_block;
        extra.clear();
        extra.resize(act.len() * per_block, 0);
        if per_block > 0 {
            act.par_chunks(bpr)
                .zip(extra.par_chunks_mut(bpr * per_block))
                .for_each(|(blocks, values)| (gemm.prepare)(blocks, values));
        }
        let extra: &[i32] = extra;
        let n_rows = y.len() / n;
        let out = SharedOut(y.as_mut_ptr());
        let groups = n_rows.div_ceil(GROUP_ROWS);
        (0..groups).into_par_iter().for_each(|g| {
            let first = g * GROUP_ROWS;
            let count = GROUP_ROWS.min(n_rows - first);
            let group = &weights[first * bpr..(first + count) * bpr];
            let outputs = Outputs {
                // SAFETY: `first < n_rows <= y.len()`.
                ptr: unsafe { out.ptr().add(first) },
                stride: n_rows,
                rows: count,
            };
            let multiply = |packed: &mut Vec<Line>| {
                packed.resize(bpr * gemm.lines_per_block, Line::ZERO);
                (gemm.pack)(group, bpr, packed);
                let next = (first + count) * bpr;
                prefetch_to_l2(
                    &weights[next.min(weights.len())..(next + count * bpr).min(weights.len())],
                );
                // SAFETY: `t * n_rows + first + r` lies inside `y` for t < n and r <
                // count (first + count <= n_rows, y.len() == n * n_rows), and only this
                // task writes rows `first..first + count`.
                unsafe { (gemm.run)(packed, bpr, act, extra, n, outputs) };
            };
            // The closure above calls no rayon code, so a thread never re-enters it
            // while holding its buffer; a fresh one covers the case regardless.
            PACKED.with(|cell| match cell.try_borrow_mut() {
                Ok(mut packed) => multiply(&mut packed),
                Err(_) => multiply(&mut Vec::new()),
            });
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::matmul::{matmul, MatmulScratch, WeightMatrix};
    use crate::quant::{self, BlockVisitor, QuantBlock};
    use gemma_gguf::GgmlType;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// The scalar one-token dot product of every row with every token, `n × rows`.
    struct ScalarProduct<'a> {
        w: &'a [u8],
        x: &'a [f32],
        cols: usize,
    }

    impl BlockVisitor for ScalarProduct<'_> {
        type Output = Vec<f32>;
        fn visit<B: QuantBlock>(self) -> Vec<f32> {
            let w: &[B] = bytemuck::cast_slice(self.w);
            let bpr = self.cols / B::ELEMS;
            let mut out = Vec::new();
            for token in self.x.chunks(self.cols) {
                let mut act = vec![<B::Act as bytemuck::Zeroable>::zeroed(); bpr];
                B::Act::quantize_act(token, &mut act);
                out.extend(w.chunks(bpr).map(|row| B::vec_dot(row, &act)));
            }
            out
        }
    }

    /// `matmul` with many tokens (the sixteen-row kernels where this CPU has them, above
    /// every format's `min_tokens`; the four-token ones for 8)
    /// against the scalar dot product, on row counts that leave partial groups and
    /// token counts that leave partial tiles.
    #[test]
    fn many_token_matmul_matches_scalar_dot() {
        let types = [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::IQ4_NL,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_XS,
        ];
        let mut scratch = MatmulScratch::default();
        for ty in types {
            for (rows, cols, n) in [
                (17usize, 512usize, 8usize),
                (50, 768, 37),
                (5, 256, 33),
                (9, 512, 45),
            ] {
                let row_bytes = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
                let mut data = vec![0u8; rows * row_bytes];
                quant::quantize(ty, &values(rows * cols, rows as u32), &mut data)
                    .expect("quantize");
                let x = values(n * cols, 5 + n as u32);
                let w = WeightMatrix::new(ty, &data, rows, cols).expect("weight matrix");
                let mut y = vec![f32::NAN; n * rows];
                matmul(&w, &x, n, &mut y, &mut scratch).expect("matmul");
                let want = quant::visit(
                    ty,
                    ScalarProduct {
                        w: &data,
                        x: &x,
                        cols,
                    },
                )
                .expect("type");
                for (i, (&g, &e)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "{ty:?} rows={rows} cols={cols} n={n} token {} row {}: {g} vs {e}",
                        i / rows,
                        i % rows
                    );
                }
            }
        }
    }
}
