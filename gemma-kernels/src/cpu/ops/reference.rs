//! Scalar reference versions of the elementwise ops: the oracle the SIMD paths are tested
//! against, and the path taken when `GEMMA_ISA=scalar` or the CPU has no AVX2.
//!
//! Each follows the order of operations of ggml's CPU backend where it matters for
//! closeness to llama.cpp (sums of squares and softmax sums in f64, normalise then scale).

/// `out = x / sqrt(mean(x²) + eps) * w`, the sum of squares accumulated in f64 as ggml does.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let inv = inv_rms(x, eps);
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = (xi * inv) * wi;
    }
}

/// [`rms_norm`] writing back into `x`.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let inv = inv_rms(x, eps);
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi = (*xi * inv) * wi;
    }
}

/// `1 / sqrt(mean(x²) + eps)`, with each square rounded to f32 and summed in f64.
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len().max(1) as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Softmax in place: `exp(x - max) / Σ`, the sum in f64, then a multiply by `1/Σ`.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// GELU with the tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// `out[i] = gelu_tanh(gate[i]) * up[i]`.
pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = gelu_tanh(g) * u;
    }
}

/// `a[i] += b[i]`.
pub fn add(a: &mut [f32], b: &[f32]) {
    for (ai, &bi) in a.iter_mut().zip(b) {
        *ai += bi;
    }
}

/// `a[i] += b[i] * s`, the product rounded before the sum (not fused).
pub fn add_scaled(a: &mut [f32], b: &[f32], s: f32) {
    for (ai, &bi) in a.iter_mut().zip(b) {
        *ai += bi * s;
    }
}

/// `a[i] *= s`.
pub fn scale(a: &mut [f32], s: f32) {
    for ai in a.iter_mut() {
        *ai *= s;
    }
}
