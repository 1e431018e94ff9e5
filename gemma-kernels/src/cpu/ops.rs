//! The elementwise ops of the model: RMSNorm, NEOX RoPE, softmax, GELU-tanh / GeGLU,
//! add and scale.
//!
//! Each public function dispatches once per call on [`crate::cpu::isa::current`]: AVX2
//! (also used on AVX-512 machines) or the scalar oracle in [`reference`](mod@reference),
//! which the tests compare the fast path against. [`geglu_f16_inplace`] is the language
//! model's GeGLU, rounded as llama.cpp's CPU backend rounds it.
//!
//! # Panics
//! Every function with several slices requires them to have the same length (and
//! `rope_neox` requires `x.len() == n_heads * head_dim` with an even `head_dim`); a
//! mismatch is a programming error and panics.

mod geglu_f16;
pub mod reference;

pub use geglu_f16::geglu_f16_inplace;

/// True when the AVX2 fast path may run on this CPU for this process.
#[cfg(target_arch = "x86_64")]
fn use_avx2() -> bool {
    crate::cpu::isa::current() >= crate::cpu::isa::Isa::Avx2
}

/// `out = x / sqrt(mean(x²) + eps) * w` (Gemma's `+1` is already inside the stored `w`).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), w.len(), "rms_norm: x and w lengths differ");
    assert_eq!(x.len(), out.len(), "rms_norm: x and out lengths differ");
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` checked that the CPU supports AVX2 and FMA.
        unsafe { crate::cpu::x86_64::avx2_ops::rms_norm(x, w, eps, out) };
        return;
    }
    reference::rms_norm(x, w, eps, out)
}

/// [`rms_norm`] writing its result back into `x`.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    assert_eq!(x.len(), w.len(), "rms_norm_inplace: x and w lengths differ");
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` checked that the CPU supports AVX2 and FMA.
        unsafe { crate::cpu::x86_64::avx2_ops::rms_norm_inplace(x, w, eps) };
        return;
    }
    reference::rms_norm_inplace(x, w, eps)
}

/// Rotary position embedding, NEOX layout (llama.cpp's `GGML_ROPE_TYPE_NEOX`, used by
/// Gemma), applied to `n_heads` heads of `head_dim` values each, stored one after the other.
///
/// Pair `i` of a head is `(x[i], x[i + head_dim/2])`, rotated by
/// `theta_i = pos · freq_scale · freq_base^(-2i/head_dim)`. As in ggml, `freq_base^(-2/d)`
/// ([`rope_theta_scale`]) is computed once and `theta` advanced by repeated f32
/// multiplication.
pub fn rope_neox(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    pos: usize,
    freq_base: f32,
    freq_scale: f32,
) {
    assert!(
        head_dim.is_multiple_of(2),
        "rope_neox: head_dim must be even"
    );
    assert_eq!(
        x.len(),
        n_heads * head_dim,
        "rope_neox: x.len() != n_heads * head_dim"
    );
    const CHUNK: usize = 64;
    let half = head_dim / 2;
    let theta_scale = rope_theta_scale(freq_base, head_dim);
    let mut theta = pos as f32;
    let mut cos = [0.0f32; CHUNK];
    let mut sin = [0.0f32; CHUNK];
    let mut start = 0;
    while start < half {
        let len = CHUNK.min(half - start);
        for (c, s) in cos[..len].iter_mut().zip(&mut sin[..len]) {
            let angle = freq_scale * theta;
            *c = angle.cos();
            *s = angle.sin();
            theta *= theta_scale;
        }
        for head in x.chunks_exact_mut(head_dim) {
            let (lo, hi) = head.split_at_mut(half);
            let lo = &mut lo[start..start + len];
            let hi = &mut hi[start..start + len];
            for i in 0..len {
                let (x0, x1) = (lo[i], hi[i]);
                lo[i] = x0 * cos[i] - x1 * sin[i];
                hi[i] = x0 * sin[i] + x1 * cos[i];
            }
        }
        start += len;
    }
}

/// The factor between the RoPE angles of consecutive pairs, `freq_base^(-2/head_dim)` in
/// f32: the one value both backends derive their angles from (the CUDA kernels take it
/// from the host, so that they rotate by exactly the CPU's angles).
pub fn rope_theta_scale(freq_base: f32, head_dim: usize) -> f32 {
    freq_base.powf(-2.0 / head_dim as f32)
}

/// Softmax in place over the whole slice (`-inf` entries become 0).
pub fn softmax(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` checked that the CPU supports AVX2 and FMA.
        unsafe { crate::cpu::x86_64::avx2_ops::softmax(x) };
        return;
    }
    reference::softmax(x)
}

/// GELU, tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    reference::gelu_tanh(x)
}

/// GeGLU: `out[i] = gelu_tanh(gate[i]) * up[i]`.
pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: gate and up lengths differ");
    assert_eq!(gate.len(), out.len(), "geglu: gate and out lengths differ");
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` checked that the CPU supports AVX2 and FMA.
        unsafe { crate::cpu::x86_64::avx2_ops::geglu(gate, up, out) };
        return;
    }
    reference::geglu(gate, up, out)
}

/// `a[i] += b[i]` (the residual add).
pub fn add(a: &mut [f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "add: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` checked that the CPU supports AVX2 and FMA.
        unsafe { crate::cpu::x86_64::avx2_ops::add(a, b) };
        return;
    }
    reference::add(a, b)
}

/// `a[i] += b[i] * s`, the product rounded before the sum (not fused: the same bits on
/// every path).
pub fn add_scaled(a: &mut [f32], b: &[f32], s: f32) {
    assert_eq!(a.len(), b.len(), "add_scaled: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` checked that the CPU supports AVX2 and FMA.
        unsafe { crate::cpu::x86_64::avx2_ops::add_scaled(a, b, s) };
        return;
    }
    reference::add_scaled(a, b, s)
}

/// `a[i] *= s`.
pub fn scale(a: &mut [f32], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` checked that the CPU supports AVX2 and FMA.
        unsafe { crate::cpu::x86_64::avx2_ops::scale(a, s) };
        return;
    }
    reference::scale(a, s)
}
