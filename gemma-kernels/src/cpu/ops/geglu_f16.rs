//! GeGLU as llama.cpp's CPU backend computes it, the language model's FFN activation in
//! both of our backends: GELU-tanh read from a table of all 65 536 F16 inputs (input
//! rounded to F16, output stored as F16), exact outside `(-10, 10)` (ggml's
//! `ggml_vec_geglu_f32` with `GGML_GELU_FP16`). Its two F16 roundings (2^-11 relative
//! each) are far below the 8-bit quantization of the next product's input, but they are a
//! systematic difference: the CUDA engine computing the exact GELU differed from the CPU
//! engine by a mean KL of 6.3e-3 on the tiny Q4_K_M model, 1.4e-3 with this rounding.

use half::f16;
use half::slice::HalfFloatSliceExt;
use std::sync::OnceLock;

/// Values converted to F16 at once (a stack buffer).
const CHUNK: usize = 256;

/// `sqrt(2/pi)` as ggml writes it.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_COEF_A: f32 = 0.044_715;

/// ggml's `ggml_gelu_f32`.
fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// `table[bits]` = the F16-rounded GELU of the F16 value `bits`, as f32.
fn table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())).to_f32())
            .collect()
    })
}

/// `gate[i] = gelu(gate[i]) * up[i]` with the table's GELU: 0 for `gate[i] <= -10`,
/// `gate[i] * up[i]` for `gate[i] >= 10`.
pub fn geglu_f16_inplace(gate: &mut [f32], up: &[f32]) {
    let table = table();
    let mut bits = [f16::ZERO; CHUNK];
    for (g, u) in gate.chunks_mut(CHUNK).zip(up.chunks(CHUNK)) {
        let bits = &mut bits[..g.len()];
        bits.convert_from_f32_slice(g);
        for ((x, &u), h) in g.iter_mut().zip(u).zip(bits.iter()) {
            *x = if *x <= -10.0 {
                0.0
            } else if *x >= 10.0 {
                *x * u
            } else {
                table[h.to_bits() as usize] * u
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table stays within F16 rounding of the exact GELU (the kernels' reference).
    #[test]
    fn table_matches_exact_gelu_to_f16_precision() {
        let xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.005).collect();
        let mut gate = xs.clone();
        geglu_f16_inplace(&mut gate, &vec![1.0; xs.len()]);
        for (&x, &y) in xs.iter().zip(&gate) {
            let exact = crate::cpu::ops::gelu_tanh(x);
            let tol = 2e-3 * exact.abs().max(x.abs()) + 1e-4;
            assert!((y - exact).abs() <= tol, "gelu({x}) = {y}, exact {exact}");
        }
    }

    /// Outside (-10, 10) GELU is exact: 0 below, identity above.
    #[test]
    fn saturated_inputs() {
        let mut gate = [-12.0, -10.0, 10.0, 15.5];
        geglu_f16_inplace(&mut gate, &[2.0; 4]);
        assert_eq!(gate, [0.0, 0.0, 20.0, 31.0]);
    }
}
