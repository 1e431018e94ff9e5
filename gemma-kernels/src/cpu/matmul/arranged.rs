//! One-token products of the 32-element formats with Q8_0 activations whose kernels
//! take the activations rearranged once per product (Q4_0 and Q5_0 with AVX-512 VNNI or
//! AVX2, IQ4_NL with AVX-512 VNNI; Q8_0, and Q4_1 / Q5_1 with Q8_1 activations, with
//! AVX-512 VNNI in rows of at most [`MAX_BLOCKS_PER_QUAD_ROW`] blocks); every other case
//! takes the format's plain dot product.

use super::Rows;
#[cfg(target_arch = "x86_64")]
use super::DECODE_ROWS_PER_TASK;
use crate::quant::QuantBlock;
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// With AVX-512, rows of at most this many blocks take the one-row quad kernels; longer
/// rows (4096+ values, e.g. the 12B's `ffn_down`) take the kernels that multiply several
/// rows with each activation block while it is in registers.
#[cfg(target_arch = "x86_64")]
const MAX_BLOCKS_PER_QUAD_ROW: usize = 256;

/// The rearranged activations of the last product, kept to reuse their memory.
#[derive(Debug, Default)]
pub(super) struct ArrangedScratch {
    /// Activation block scales as f32 (two per pair) for the several-row kernels.
    #[cfg(target_arch = "x86_64")]
    scales: Vec<f32>,
    /// Activation quants of block pairs for the several-row kernels.
    #[cfg(target_arch = "x86_64")]
    pairs: Vec<crate::cpu::x86_64::avx512_rows_legacy::ActPair>,
    /// Activations in groups of four blocks for the one-row kernels.
    #[cfg(target_arch = "x86_64")]
    quads: Vec<crate::cpu::x86_64::act_quads::ActQuad>,
}

/// Runs the one-token product of `rows` with a rearranged-activation kernel when the
/// format has one on this CPU (and `GEMMA_ISA` allows it); returns false, having done
/// nothing, otherwise.
pub(super) fn matvec_with_arranged_kernel<B: QuantBlock>(
    rows: &Rows<B>,
    act: &[B::Act],
    y: &mut [f32],
    scratch: &mut ArrangedScratch,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::isa::{self, Isa};
        use crate::cpu::x86_64::act_quads::{arrange_quads, arrange_quads_q8_1};
        use crate::cpu::x86_64::{
            avx2_quads_legacy as quads256, avx512_quads_legacy as quads512,
            avx512_rows_legacy as many,
        };
        use crate::quant::{BlockIQ4_NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
        use gemma_gguf::GgmlType;

        let avx512 = isa::current() >= Isa::Avx512;
        let avx2 = isa::current() >= Isa::Avx2;
        let short_rows = rows.blocks_per_row <= MAX_BLOCKS_PER_QUAD_ROW;
        // Arranges Q8_0 activations for quants stored plus an offset.
        let plus =
            |offset| move |x: &[BlockQ8_0], quads: &mut Vec<_>| arrange_quads(x, offset, quads);
        match B::TYPE {
            GgmlType::Q4_0 => {
                let kernels = Kernels::pick(
                    (quads512::q4_0(), many::q4_0()),
                    quads256::q4_0(),
                    avx512,
                    avx2,
                );
                return run_as::<B, BlockQ4_0>(rows, act, y, scratch, plus(8), kernels);
            }
            GgmlType::Q5_0 => {
                let kernels = Kernels::pick(
                    (quads512::q5_0(), many::q5_0()),
                    quads256::q5_0(),
                    avx512,
                    avx2,
                );
                return run_as::<B, BlockQ5_0>(rows, act, y, scratch, plus(16), kernels);
            }
            GgmlType::IQ4_NL => {
                let kernels = quads512::iq4_nl().filter(|_| avx512).map(Kernels::one_row);
                return run_as::<B, BlockIQ4_NL>(rows, act, y, scratch, plus(128), kernels);
            }
            // Longer rows of these keep the plain kernels, which read the activations as
            // they are (their arranged copy is larger).
            GgmlType::Q8_0 if short_rows => {
                let kernels = quads512::q8_0().filter(|_| avx512).map(Kernels::one_row);
                return run_as::<B, BlockQ8_0>(rows, act, y, scratch, plus(128), kernels);
            }
            GgmlType::Q4_1 if short_rows => {
                let kernels = quads512::q4_1().filter(|_| avx512).map(Kernels::one_row);
                return run_as::<B, BlockQ4_1>(rows, act, y, scratch, arrange_quads_q8_1, kernels);
            }
            GgmlType::Q5_1 if short_rows => {
                let kernels = quads512::q5_1().filter(|_| avx512).map(Kernels::one_row);
                return run_as::<B, BlockQ5_1>(rows, act, y, scratch, arrange_quads_q8_1, kernels);
            }
            _ => {}
        }
    }
    let _ = (rows, act, y, scratch);
    false
}

/// The kernels of format `C` on this CPU.
#[cfg(target_arch = "x86_64")]
struct Kernels<C> {
    /// One row times activations in quads.
    quad: crate::cpu::x86_64::act_quads::QuadVecDot<C>,
    /// Several rows at once, for rows of over [`MAX_BLOCKS_PER_QUAD_ROW`] blocks (Q4_0
    /// and Q5_0 with AVX-512; otherwise every row takes `quad`).
    long_rows: Option<crate::cpu::x86_64::avx512_rows_legacy::RowsVecDot<C>>,
}

#[cfg(target_arch = "x86_64")]
impl<C> Kernels<C> {
    /// The AVX-512 one-row and several-row kernels when `avx512` is allowed and both
    /// exist, else the AVX2 one-row kernel when `avx2` is allowed.
    fn pick(
        wide: (
            Option<crate::cpu::x86_64::act_quads::QuadVecDot<C>>,
            Option<crate::cpu::x86_64::avx512_rows_legacy::RowsVecDot<C>>,
        ),
        narrow: Option<crate::cpu::x86_64::act_quads::QuadVecDot<C>>,
        avx512: bool,
        avx2: bool,
    ) -> Option<Self> {
        match wide {
            (Some(quad), Some(long_rows)) if avx512 => Some(Kernels {
                quad,
                long_rows: Some(long_rows),
            }),
            _ => narrow.filter(|_| avx2).map(Kernels::one_row),
        }
    }

    /// Kernels that take every row with `quad`.
    fn one_row(quad: crate::cpu::x86_64::act_quads::QuadVecDot<C>) -> Self {
        Kernels {
            quad,
            long_rows: None,
        }
    }
}

/// Runs the product as format `C` (the same format as `B`, seen through its concrete
/// type) with `kernels`, when there are any; `arrange` lays out the activations for the
/// one-row kernels (the several-row ones take Q8_0 activations only).
#[cfg(target_arch = "x86_64")]
fn run_as<B: QuantBlock, C: QuantBlock>(
    rows: &Rows<B>,
    act: &[B::Act],
    y: &mut [f32],
    scratch: &mut ArrangedScratch,
    arrange: impl FnOnce(&[C::Act], &mut Vec<crate::cpu::x86_64::act_quads::ActQuad>),
    kernels: Option<Kernels<C>>,
) -> bool {
    use crate::cpu::x86_64::act_quads::QUAD;
    use crate::cpu::x86_64::avx512_rows_legacy::{interleave_pairs, ROWS};

    if B::TYPE != C::TYPE {
        return false;
    }
    // Both casts are identities: `C` is `B` (same ggml type), so are their activations.
    let weights = bytemuck::try_cast_slice::<B, C>(rows.weights);
    let act_c = bytemuck::try_cast_slice::<B::Act, C::Act>(act);
    let (Ok(weights), Ok(act_c), Some(kernels)) = (weights, act_c, kernels) else {
        return false;
    };
    let bpr = rows.blocks_per_row;
    let long_rows = kernels.long_rows.filter(|_| bpr > MAX_BLOCKS_PER_QUAD_ROW);
    let quad = kernels.quad;
    let ArrangedScratch {
        scales,
        pairs,
        quads,
    } = scratch;
    if long_rows.is_some() {
        let Ok(act_q8_0) = bytemuck::try_cast_slice::<C::Act, crate::quant::BlockQ8_0>(act_c)
        else {
            return false;
        };
        interleave_pairs(act_q8_0, pairs, scales);
    } else {
        arrange(act_c, quads);
    }
    let (scales, pairs, quads) = (&scales[..], &pairs[..], &quads[..]);
    // Blocks the quad kernel takes; the last `bpr % QUAD` take the format's dot product.
    let whole = QUAD * (bpr / QUAD);
    y.par_chunks_mut(DECODE_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(chunk, ys)| {
            let first = chunk * DECODE_ROWS_PER_TASK;
            let mut done = 0;
            if let Some(many) = long_rows {
                let (groups, _) = ys.as_chunks_mut::<ROWS>();
                for (g, out) in groups.iter_mut().enumerate() {
                    let r = first + g * ROWS;
                    many(&weights[r * bpr..(r + ROWS) * bpr], pairs, scales, out);
                }
                done = groups.len() * ROWS;
            }
            for (i, out) in ys.iter_mut().enumerate().skip(done) {
                let r = first + i;
                *out = if long_rows.is_some() {
                    (rows.dot)(rows.row(r), act)
                } else {
                    let tail = (whole < bpr).then(|| {
                        (rows.dot)(&rows.weights[r * bpr + whole..(r + 1) * bpr], &act[whole..])
                    });
                    quad(&weights[r * bpr..r * bpr + whole], quads) + tail.unwrap_or(0.0)
                };
            }
        });
    true
}
