//! One-token products of the 32-element formats with Q8_0 activations whose kernels
//! take the activation block scales widened to f32 once per product (Q4_0 and Q5_0 with
//! AVX-512 VNNI); every other case takes the format's plain dot product.

use super::Rows;
#[cfg(target_arch = "x86_64")]
use super::DECODE_ROWS_PER_TASK;
use crate::quant::QuantBlock;
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// Rows of at most this many blocks take the one-row scaled kernels; longer rows (4096+
/// values, e.g. the 12B's `ffn_down`) take the kernels that multiply several rows with
/// each activation block while it is in registers.
#[cfg(target_arch = "x86_64")]
const MAX_BLOCKS_PER_ROW: usize = 256;

/// Runs the one-token product of `rows` with a scaled kernel when the format has one on
/// this CPU (and `GEMMA_ISA` allows it), the activation scales widened into `scales`;
/// returns false, having done nothing, otherwise.
pub(super) fn matvec_with_scaled_kernel<B: QuantBlock>(
    rows: &Rows<B>,
    act: &[B::Act],
    y: &mut [f32],
    scales: &mut Vec<f32>,
    pairs: &mut Vec<[i8; 64]>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::x86_64::{avx512_rows_legacy as many, avx512_scaled_legacy as one};
        use crate::quant::{BlockQ4_0, BlockQ5_0};
        use gemma_gguf::GgmlType;

        match B::TYPE {
            GgmlType::Q4_0 => {
                return run_as::<B, BlockQ4_0>(
                    rows,
                    act,
                    y,
                    scales,
                    pairs,
                    one::q4_0(),
                    many::q4_0(),
                )
            }
            GgmlType::Q5_0 => {
                return run_as::<B, BlockQ5_0>(
                    rows,
                    act,
                    y,
                    scales,
                    pairs,
                    one::q5_0(),
                    many::q5_0(),
                )
            }
            _ => {}
        }
    }
    let _ = (rows, act, y, scales, pairs);
    false
}

/// Runs the product as format `C` (the same format as `B`, seen through its concrete
/// type) with `one` (and `many` on long rows), when they exist and `GEMMA_ISA` allows
/// AVX-512.
#[cfg(target_arch = "x86_64")]
fn run_as<B: QuantBlock, C: QuantBlock<Act = crate::quant::BlockQ8_0>>(
    rows: &Rows<B>,
    act: &[B::Act],
    y: &mut [f32],
    scales: &mut Vec<f32>,
    pairs: &mut Vec<[i8; 64]>,
    one: Option<crate::cpu::x86_64::avx512_scaled_legacy::ScaledVecDot<C>>,
    many: Option<crate::cpu::x86_64::avx512_rows_legacy::RowsVecDot<C>>,
) -> bool {
    use crate::cpu::isa::{self, Isa};
    use crate::cpu::x86_64::avx512_rows_legacy::{interleave_pairs, ROWS};

    if isa::current() < Isa::Avx512 || B::TYPE != C::TYPE {
        return false;
    }
    // Both casts are identities: `C` is `B` (same ggml type), so are their activations.
    let weights = bytemuck::try_cast_slice::<B, C>(rows.weights);
    let act = bytemuck::try_cast_slice::<B::Act, C::Act>(act);
    let (Ok(weights), Ok(act), Some(one), Some(many)) = (weights, act, one, many) else {
        return false;
    };
    let bpr = rows.blocks_per_row;
    let long = bpr > MAX_BLOCKS_PER_ROW;
    if long {
        interleave_pairs(act, pairs, scales);
    } else {
        scales.clear();
        scales.extend(act.iter().map(|b| b.d.to_f32()));
    }
    let (scales, pairs) = (&scales[..], &pairs[..]);
    y.par_chunks_mut(DECODE_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(chunk, ys)| {
            let first = chunk * DECODE_ROWS_PER_TASK;
            let mut done = 0;
            if long {
                let (groups, _) = ys.as_chunks_mut::<ROWS>();
                for (g, out) in groups.iter_mut().enumerate() {
                    let r = first + g * ROWS;
                    many(&weights[r * bpr..(r + ROWS) * bpr], pairs, scales, out);
                }
                done = groups.len() * ROWS;
            }
            for (i, out) in ys.iter_mut().enumerate().skip(done) {
                let r = first + i;
                *out = one(&weights[r * bpr..(r + 1) * bpr], act, scales);
            }
        });
    true
}
