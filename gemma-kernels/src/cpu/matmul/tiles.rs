//! Prefill with kernels that multiply one weight row with four tokens at once, for the
//! formats and CPUs that have one (Q4_K, Q6_K, Q4_0, Q5_0, Q8_0, F32 and F16 on
//! AVX-512); every other case takes the one-token dot product of the format.

use super::Rows;
use crate::quant::QuantBlock;

/// Tokens per call of a [`Dot4`] kernel.
pub(super) const TILE_TOKENS: usize = 4;

/// One weight row times four activation rows.
pub(super) type Dot4<B> = fn(&[B], [&[<B as QuantBlock>::Act]; TILE_TOKENS]) -> [f32; TILE_TOKENS];

/// One weight row times four activation rows, given each activation block's scale as f32
/// (the 32-element formats with Q8_0 activations).
pub(super) type ScaledDot4<B> =
    fn(&[B], [&[<B as QuantBlock>::Act]; TILE_TOKENS], [&[f32]; TILE_TOKENS]) -> [f32; TILE_TOKENS];

/// Runs the many-token product of `rows` with a four-token kernel when the format has
/// one on this CPU (and `GEMMA_ISA` allows it); returns false, having done nothing,
/// otherwise.
pub(super) fn matmat_with_tile_kernel<B: QuantBlock>(
    rows: &Rows<B>,
    act: &[B::Act],
    n: usize,
    y: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::x86_64::{avx512_tiles, avx512_tiles_float, avx512_tiles_legacy};
        use crate::quant::{BlockQ4_0, BlockQ4_K, BlockQ5_0, BlockQ6_K, BlockQ8_0};
        use gemma_gguf::GgmlType;

        match B::TYPE {
            GgmlType::Q4_K => {
                return run_as::<B, BlockQ4_K>(rows, act, n, y, avx512_tiles::q4_k_x4());
            }
            GgmlType::Q6_K => {
                return run_as::<B, BlockQ6_K>(rows, act, n, y, avx512_tiles::q6_k_x4());
            }
            GgmlType::Q4_0 => {
                return run_scaled::<B, BlockQ4_0>(rows, act, n, y, avx512_tiles_legacy::q4_0_x4());
            }
            GgmlType::Q5_0 => {
                return run_scaled::<B, BlockQ5_0>(rows, act, n, y, avx512_tiles_legacy::q5_0_x4());
            }
            GgmlType::Q8_0 => {
                return run_scaled::<B, BlockQ8_0>(rows, act, n, y, avx512_tiles_legacy::q8_0_x4());
            }
            GgmlType::F32 => {
                return run_as::<B, f32>(rows, act, n, y, avx512_tiles_float::f32_x4());
            }
            GgmlType::F16 => {
                return run_as::<B, half::f16>(rows, act, n, y, avx512_tiles_float::f16_x4());
            }
            _ => {}
        }
    }
    let _ = (rows, act, n, y);
    false
}

/// Runs the product as format `C` (the same format as `B`, seen through its concrete
/// type) with `dot4`, when the kernel exists and `GEMMA_ISA` allows AVX-512.
#[cfg(target_arch = "x86_64")]
fn run_as<B: QuantBlock, C: QuantBlock>(
    rows: &Rows<B>,
    act: &[B::Act],
    n: usize,
    y: &mut [f32],
    dot4: Option<Dot4<C>>,
) -> bool {
    use crate::cpu::isa::{self, Isa};

    if isa::current() < Isa::Avx512 || B::TYPE != C::TYPE {
        return false;
    }
    // Both casts are identities: `C` is `B` (same ggml type), so are their activations.
    let weights = bytemuck::try_cast_slice::<B, C>(rows.weights);
    let act = bytemuck::try_cast_slice::<B::Act, C::Act>(act);
    let (Ok(weights), Ok(act), Some(dot4)) = (weights, act, dot4) else {
        return false;
    };
    let concrete = Rows {
        weights,
        blocks_per_row: rows.blocks_per_row,
        dot: C::vec_dot_for(isa::current()).unwrap_or(C::vec_dot),
        dot4: Some(dot4),
        scaled4: None,
    };
    concrete.matmat(act, n, y);
    true
}

/// Runs the product as format `C` (a 32-element format with Q8_0 activations, the same
/// as `B`) with the scaled kernel `dot4`, after widening every activation block scale to
/// f32 once, when the kernel exists and `GEMMA_ISA` allows AVX-512.
#[cfg(target_arch = "x86_64")]
fn run_scaled<B: QuantBlock, C: QuantBlock<Act = crate::quant::BlockQ8_0>>(
    rows: &Rows<B>,
    act: &[B::Act],
    n: usize,
    y: &mut [f32],
    dot4: Option<ScaledDot4<C>>,
) -> bool {
    use crate::cpu::isa::{self, Isa};

    if isa::current() < Isa::Avx512 || B::TYPE != C::TYPE {
        return false;
    }
    // Both casts are identities: `C` is `B` (same ggml type), so are their activations.
    let weights = bytemuck::try_cast_slice::<B, C>(rows.weights);
    let act = bytemuck::try_cast_slice::<B::Act, C::Act>(act);
    let (Ok(weights), Ok(act), Some(dot4)) = (weights, act, dot4) else {
        return false;
    };
    let scales: Vec<f32> = act.iter().map(|b| b.d.to_f32()).collect();
    let concrete = Rows {
        weights,
        blocks_per_row: rows.blocks_per_row,
        dot: C::vec_dot_for(isa::current()).unwrap_or(C::vec_dot),
        dot4: None,
        scaled4: Some((dot4, &scales)),
    };
    concrete.matmat(act, n, y);
    true
}
