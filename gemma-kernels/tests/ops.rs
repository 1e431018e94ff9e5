//! The elementwise ops against float64 references, hand-computed values and llama.cpp's
//! formulas; every SIMD path against the scalar oracle.

use gemma_kernels::cpu::isa::Isa;
use gemma_kernels::cpu::ops::{self, reference};

/// A small deterministic generator (splitmix64) so the tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * amplitude).collect()
    }
}

const SIZES: [usize; 9] = [1, 3, 7, 8, 9, 31, 64, 257, 3840];

/// One implementation of the ops: the scalar oracle or a SIMD path.
struct Path {
    name: &'static str,
    rms_norm: fn(&[f32], &[f32], f32, &mut [f32]),
    rms_norm_inplace: fn(&mut [f32], &[f32], f32),
    softmax: fn(&mut [f32]),
    geglu: fn(&[f32], &[f32], &mut [f32]),
    add: fn(&mut [f32], &[f32]),
    add_scaled: fn(&mut [f32], &[f32], f32),
    scale: fn(&mut [f32], f32),
}

/// Every path this CPU can run, plus the public dispatching functions.
fn paths() -> Vec<Path> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut paths = vec![
        Path {
            name: "scalar",
            rms_norm: reference::rms_norm,
            rms_norm_inplace: reference::rms_norm_inplace,
            softmax: reference::softmax,
            geglu: reference::geglu,
            add: reference::add,
            add_scaled: reference::add_scaled,
            scale: reference::scale,
        },
        Path {
            name: "dispatch",
            rms_norm: ops::rms_norm,
            rms_norm_inplace: ops::rms_norm_inplace,
            softmax: ops::softmax,
            geglu: ops::geglu,
            add: ops::add,
            add_scaled: ops::add_scaled,
            scale: ops::scale,
        },
    ];
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.is_supported() {
        use gemma_kernels::cpu::x86_64::avx2_ops as avx2;
        // SAFETY (each closure): the CPU supports AVX2 and FMA, checked just above.
        paths.push(Path {
            name: "avx2",
            rms_norm: |x, w, e, o| unsafe { avx2::rms_norm(x, w, e, o) },
            rms_norm_inplace: |x, w, e| unsafe { avx2::rms_norm_inplace(x, w, e) },
            softmax: |x| unsafe { avx2::softmax(x) },
            geglu: |g, u, o| unsafe { avx2::geglu(g, u, o) },
            add: |a, b| unsafe { avx2::add(a, b) },
            add_scaled: |a, b, s| unsafe { avx2::add_scaled(a, b, s) },
            scale: |a, s| unsafe { avx2::scale(a, s) },
        });
    }
    assert!(
        !Isa::available().contains(&Isa::Avx2) || paths.iter().any(|p| p.name == "avx2"),
        "an available ISA has no path under test"
    );
    paths
}

fn gelu_f64(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

#[test]
fn rms_norm_matches_f64_on_every_path() {
    let mut rng = Rng(1);
    for path in paths() {
        for &n in &SIZES {
            for amplitude in [1e-3f32, 1.0, 3e4] {
                let x = rng.vec(n, amplitude);
                let w: Vec<f32> = rng.vec(n, 2.0);
                let eps = 1e-6f32;
                let mean: f64 =
                    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64;
                let inv = 1.0 / (mean + f64::from(eps)).sqrt();
                let mut out = vec![0.0f32; n];
                (path.rms_norm)(&x, &w, eps, &mut out);
                let mut inplace = x.clone();
                (path.rms_norm_inplace)(&mut inplace, &w, eps);
                for i in 0..n {
                    let want = f64::from(x[i]) * inv * f64::from(w[i]);
                    let err = (f64::from(out[i]) - want).abs();
                    assert!(
                        err <= 2e-6 * want.abs().max(1e-3),
                        "{} n={n} amp={amplitude} i={i}: {} vs {want}",
                        path.name,
                        out[i]
                    );
                    assert_eq!(out[i], inplace[i], "{}: in-place differs", path.name);
                }
            }
        }
    }
}

#[test]
fn rms_norm_simd_equals_scalar_closely() {
    let mut rng = Rng(2);
    for path in paths() {
        for &n in &SIZES {
            let x = rng.vec(n, 100.0);
            let w = rng.vec(n, 1.5);
            let mut want = vec![0.0f32; n];
            reference::rms_norm(&x, &w, 1e-6, &mut want);
            let mut got = vec![0.0f32; n];
            (path.rms_norm)(&x, &w, 1e-6, &mut got);
            for i in 0..n {
                assert!(
                    (got[i] - want[i]).abs() <= 1e-6 * want[i].abs(),
                    "{} n={n}",
                    path.name
                );
            }
        }
    }
}

#[test]
fn rope_neox_hand_computed() {
    // head_dim 4, pos 1, base 10000: theta_0 = 1, theta_1 = 10000^(-1/2) = 0.01;
    // pairs (x0, x2) and (x1, x3).
    let mut x = [1.0f32, 2.0, 3.0, 4.0];
    ops::rope_neox(&mut x, 1, 4, 1, 10000.0, 1.0);
    let want = [-1.984_110_6f32, 1.959_900_7, 2.462_377_9, 4.019_799_7];
    for (g, w) in x.iter().zip(want) {
        assert!((g - w).abs() < 2e-6, "{x:?} vs {want:?}");
    }
    // pos 0 is the identity.
    let mut y = [0.5f32, -1.0, 2.0, 7.0, 1.0, 1.0, 1.0, 1.0];
    let before = y;
    ops::rope_neox(&mut y, 2, 4, 0, 1e6, 0.125);
    assert_eq!(y, before);
    // Linear scaling: pos 8 with freq_scale 1/8 equals pos 1 unscaled.
    let mut a = [1.0f32, 2.0, 3.0, 4.0];
    let mut b = a;
    ops::rope_neox(&mut a, 1, 4, 8, 10000.0, 0.125);
    ops::rope_neox(&mut b, 1, 4, 1, 10000.0, 1.0);
    for (p, q) in a.iter().zip(b) {
        assert!((p - q).abs() < 1e-6);
    }
}

/// The exact formula, in f64: `theta_i = pos * freq_scale * base^(-2i/d)`.
fn rope_f64(x: &[f32], n_heads: usize, d: usize, pos: usize, base: f64, scale: f64) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for h in 0..n_heads {
        for i in 0..d / 2 {
            let theta = pos as f64 * scale * base.powf(-2.0 * i as f64 / d as f64);
            let (x0, x1) = (out[h * d + i], out[h * d + i + d / 2]);
            out[h * d + i] = x0 * theta.cos() - x1 * theta.sin();
            out[h * d + i + d / 2] = x0 * theta.sin() + x1 * theta.cos();
        }
    }
    out
}

/// llama.cpp's computation (`ggml_rope_cache_init` + `rope_yarn` with ext_factor 0):
/// `theta_scale = powf(base, -2/d)`, `theta` advanced by f32 multiplication.
fn rope_llamacpp(
    x: &[f32],
    n_heads: usize,
    d: usize,
    pos: usize,
    base: f32,
    scale: f32,
) -> Vec<f32> {
    let theta_scale = base.powf(-2.0 / d as f32);
    let mut cache = Vec::new();
    let mut theta = pos as f32;
    for _ in 0..d / 2 {
        let t = scale * theta;
        cache.push((t.cos(), t.sin()));
        theta *= theta_scale;
    }
    let mut out = x.to_vec();
    for h in 0..n_heads {
        for (i, &(c, s)) in cache.iter().enumerate() {
            let (x0, x1) = (x[h * d + i], x[h * d + i + d / 2]);
            out[h * d + i] = x0 * c - x1 * s;
            out[h * d + i + d / 2] = x0 * s + x1 * c;
        }
    }
    out
}

#[test]
fn rope_neox_matches_exact_formula_at_small_positions() {
    let mut rng = Rng(3);
    for (n_heads, d) in [(1, 2), (3, 16), (4, 256), (2, 130)] {
        for (base, scale) in [(10000.0f32, 1.0f32), (1e6, 0.125)] {
            for pos in [0usize, 1, 2, 17, 100] {
                let x = rng.vec(n_heads * d, 3.0);
                let mut got = x.clone();
                ops::rope_neox(&mut got, n_heads, d, pos, base, scale);
                let want = rope_f64(&x, n_heads, d, pos, f64::from(base), f64::from(scale));
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-4,
                        "d={d} pos={pos}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn rope_neox_matches_llamacpp_formula_at_large_positions() {
    let mut rng = Rng(4);
    for pos in [1000usize, 8191, 131_071] {
        for (base, scale) in [(10000.0f32, 1.0f32), (1e6, 0.125)] {
            let x = rng.vec(8 * 256, 2.0);
            let mut got = x.clone();
            ops::rope_neox(&mut got, 8, 256, pos, base, scale);
            let want = rope_llamacpp(&x, 8, 256, pos, base, scale);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "pos={pos}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn softmax_matches_f64_on_every_path() {
    let mut rng = Rng(5);
    for path in paths() {
        for &n in &SIZES {
            for amplitude in [0.1f32, 10.0, 80.0] {
                let mut x = rng.vec(n, amplitude);
                if n > 4 {
                    x[1] = f32::NEG_INFINITY; // a masked position
                    x[3] = -1e30;
                }
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f64> = x
                    .iter()
                    .map(|&v| (f64::from(v) - f64::from(max)).exp())
                    .collect();
                let sum: f64 = exps.iter().sum();
                let mut got = x.clone();
                (path.softmax)(&mut got);
                let total: f64 = got.iter().map(|&v| f64::from(v)).sum();
                assert!(
                    (total - 1.0).abs() < 1e-5,
                    "{} n={n}: sum {total}",
                    path.name
                );
                for i in 0..n {
                    let want = exps[i] / sum;
                    assert!(
                        (f64::from(got[i]) - want).abs() <= 1e-7 + 2e-6 * want,
                        "{} n={n} amp={amplitude} i={i}: {} vs {want}",
                        path.name,
                        got[i]
                    );
                }
                if n > 4 {
                    assert_eq!(got[1], 0.0, "{}: masked entry not 0", path.name);
                    assert_eq!(got[3], 0.0, "{}: -1e30 entry not 0", path.name);
                }
            }
        }
    }
}

#[test]
fn gelu_tanh_hand_values_and_f64_formula() {
    for (x, want) in [
        (0.0f32, 0.0f32),
        (1.0, 0.841_192),
        (-1.0, -0.158_808),
        (3.0, 2.996_363),
    ] {
        assert!(
            (ops::gelu_tanh(x) - want).abs() < 2e-6,
            "gelu({x}) = {}",
            ops::gelu_tanh(x)
        );
    }
    for i in -4000..=4000 {
        let x = i as f32 * 0.0025 * (1.0 + (i as f32).abs() * 0.001);
        let want = gelu_f64(f64::from(x));
        let got = f64::from(ops::gelu_tanh(x));
        assert!(
            (got - want).abs() <= 1e-7 + 2e-6 * want.abs(),
            "gelu({x}) = {got} vs {want}"
        );
    }
    assert_eq!(ops::gelu_tanh(-100.0), 0.0);
    assert_eq!(ops::gelu_tanh(100.0), 100.0);
}

#[test]
fn geglu_matches_f64_on_every_path() {
    let mut rng = Rng(6);
    for path in paths() {
        for &n in &SIZES {
            let mut gate = rng.vec(n, 6.0);
            gate[0] = if n > 1 { -60.0 } else { 60.0 }; // saturated ends
            let up = rng.vec(n, 4.0);
            let mut out = vec![0.0f32; n];
            (path.geglu)(&gate, &up, &mut out);
            for i in 0..n {
                let want = gelu_f64(f64::from(gate[i])) * f64::from(up[i]);
                let err = (f64::from(out[i]) - want).abs();
                assert!(
                    err <= 1e-6 * f64::from(up[i]).abs() + 2e-6 * want.abs(),
                    "{} n={n} i={i}: gate {} -> {} vs {want}",
                    path.name,
                    gate[i],
                    out[i]
                );
            }
        }
    }
}

#[test]
fn add_scale_and_add_scaled_are_exact_on_every_path() {
    let mut rng = Rng(7);
    for path in paths() {
        for &n in &SIZES {
            let a = rng.vec(n, 1e3);
            let b = rng.vec(n, 1e3);
            let mut sum = a.clone();
            (path.add)(&mut sum, &b);
            let mut scaled = a.clone();
            (path.scale)(&mut scaled, 0.0625_f32.sqrt() * 3.0);
            // A factor whose products round, so that a fused multiply-add would differ.
            let s = 0.1f32;
            let mut added = a.clone();
            (path.add_scaled)(&mut added, &b, s);
            for i in 0..n {
                assert_eq!(sum[i], a[i] + b[i], "{} add n={n} i={i}", path.name);
                assert_eq!(scaled[i], a[i] * 0.75, "{} scale n={n} i={i}", path.name);
                let product = f64::from(b[i]) * f64::from(s);
                let want = (f64::from(a[i]) + f64::from(product as f32)) as f32;
                assert_eq!(added[i], want, "{} add_scaled n={n} i={i}", path.name);
            }
        }
    }
}
