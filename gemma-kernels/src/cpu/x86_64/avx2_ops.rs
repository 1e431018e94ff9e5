//! AVX2 + FMA versions of the elementwise ops in `cpu::ops` (also used on AVX-512 CPUs:
//! these ops are bound by memory or by `exp`, not by vector width).
//!
//! Callers must have checked that the CPU supports AVX2 and FMA (`isa::current()`).

use std::arch::x86_64::*;

/// Lanes per `__m256`.
const LANES: usize = 8;

/// `out = x / sqrt(mean(x²) + eps) * w`, squares rounded to f32 and summed in f64.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let inv = _mm256_set1_ps(inv_rms(x, eps));
    let n = x.len().min(w.len()).min(out.len());
    let body = n - n % LANES;
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= len` of each of the three slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), inv);
            let v = _mm256_mul_ps(v, _mm256_loadu_ps(w.as_ptr().add(i)));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), v);
        }
    }
    let inv = _mm256_cvtss_f32(inv);
    for i in body..n {
        out[i] = (x[i] * inv) * w[i];
    }
}

/// [`rms_norm`] writing back into `x`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let inv = _mm256_set1_ps(inv_rms(x, eps));
    let n = x.len().min(w.len());
    let body = n - n % LANES;
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= len` of both slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), inv);
            let v = _mm256_mul_ps(v, _mm256_loadu_ps(w.as_ptr().add(i)));
            _mm256_storeu_ps(x.as_mut_ptr().add(i), v);
        }
    }
    let inv = _mm256_cvtss_f32(inv);
    for i in body..n {
        x[i] = (x[i] * inv) * w[i];
    }
}

/// `1 / sqrt(mean(x²) + eps)` with the squares summed in f64.
#[target_feature(enable = "avx2,fma")]
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut acc_lo = _mm256_setzero_pd();
    let mut acc_hi = _mm256_setzero_pd();
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        // SAFETY: `c` holds exactly LANES floats.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        let sq = _mm256_mul_ps(v, v);
        acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(sq)));
    }
    let mut sum = hsum_pd(_mm256_add_pd(acc_lo, acc_hi));
    for &v in tail {
        sum += f64::from(v * v);
    }
    let mean = (sum / x.len().max(1) as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Softmax in place; the sum in f64, `-inf` entries become exactly 0.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn softmax(x: &mut [f32]) {
    let body = x.len() - x.len() % LANES;
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= x.len()`.
        vmax = _mm256_max_ps(vmax, unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) });
    }
    let mut max = hmax_ps(vmax);
    for &v in &x[body..] {
        max = max.max(v);
    }
    let vmax = _mm256_set1_ps(max);
    let mut acc_lo = _mm256_setzero_pd();
    let mut acc_hi = _mm256_setzero_pd();
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= x.len()`.
        unsafe {
            let e = exp(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), vmax));
            _mm256_storeu_ps(x.as_mut_ptr().add(i), e);
            acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        }
    }
    let mut sum = hsum_pd(_mm256_add_pd(acc_lo, acc_hi));
    for v in &mut x[body..] {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    scale(x, (1.0 / sum) as f32);
}

/// `out[i] = gelu_tanh(gate[i]) * up[i]`, using `gelu_tanh(x) = x / (1 + exp(-2u))` with
/// `u = √(2/π)·(x + 0.044715·x³)` (the same function as `0.5·x·(1 + tanh(u))`).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let n = gate.len().min(up.len()).min(out.len());
    let body = n - n % LANES;
    let c0 = _mm256_set1_ps(-2.0 * SQRT_2_OVER_PI);
    let c1 = _mm256_set1_ps(-2.0 * SQRT_2_OVER_PI * 0.044_715);
    let one = _mm256_set1_ps(1.0);
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= len` of each of the three slices.
        unsafe {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let minus_2u = _mm256_mul_ps(g, _mm256_fmadd_ps(c1, _mm256_mul_ps(g, g), c0));
            let gelu = _mm256_div_ps(g, _mm256_add_ps(one, exp(minus_2u)));
            let v = _mm256_mul_ps(gelu, _mm256_loadu_ps(up.as_ptr().add(i)));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), v);
        }
    }
    for i in body..n {
        out[i] = crate::cpu::ops::reference::gelu_tanh(gate[i]) * up[i];
    }
}

/// `a[i] += b[i]`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn add(a: &mut [f32], b: &[f32]) {
    let n = a.len().min(b.len());
    let body = n - n % LANES;
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= len` of both slices.
        unsafe {
            let v = _mm256_add_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            );
            _mm256_storeu_ps(a.as_mut_ptr().add(i), v);
        }
    }
    for i in body..n {
        a[i] += b[i];
    }
}

/// `a[i] += b[i] * s`, the product rounded before the sum (not fused).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn add_scaled(a: &mut [f32], b: &[f32], s: f32) {
    let n = a.len().min(b.len());
    let body = n - n % LANES;
    let vs = _mm256_set1_ps(s);
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= len` of both slices.
        unsafe {
            let product = _mm256_mul_ps(_mm256_loadu_ps(b.as_ptr().add(i)), vs);
            let v = _mm256_add_ps(_mm256_loadu_ps(a.as_ptr().add(i)), product);
            _mm256_storeu_ps(a.as_mut_ptr().add(i), v);
        }
    }
    for i in body..n {
        a[i] += b[i] * s;
    }
}

/// `a[i] *= s`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub fn scale(a: &mut [f32], s: f32) {
    let vs = _mm256_set1_ps(s);
    let body = a.len() - a.len() % LANES;
    for i in (0..body).step_by(LANES) {
        // SAFETY: `i + LANES <= body <= a.len()`.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(a.as_ptr().add(i)), vs);
            _mm256_storeu_ps(a.as_mut_ptr().add(i), v);
        }
    }
    for v in &mut a[body..] {
        *v *= s;
    }
}

/// `e^x` per lane (Cephes `expf`: ln 2 range reduction and a degree-6 polynomial, within
/// 2 ulp); inputs below ln(f32::MIN_POSITIVE) give 0, inputs above 88 are clamped to 88.
#[target_feature(enable = "avx2,fma")]
fn exp(x: __m256) -> __m256 {
    const LOW: f32 = -87.336_55;
    let low = _mm256_set1_ps(LOW);
    let xc = _mm256_min_ps(_mm256_max_ps(x, low), _mm256_set1_ps(88.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_add_ps(
        _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
        _mm256_set1_ps(1.0),
    );
    let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased));
    let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, low);
    _mm256_andnot_ps(below, _mm256_mul_ps(y, pow2n))
}

/// Sum of the four lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum_pd(v: __m256d) -> f64 {
    let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
}

/// Maximum of the eight lanes.
#[target_feature(enable = "avx2,fma")]
fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
    _mm_cvtss_f32(m)
}
