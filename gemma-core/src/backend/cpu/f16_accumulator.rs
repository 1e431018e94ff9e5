//! The F16 accumulator of llama.cpp's one-chunk flash attention: ggml's `vec_mad_f16`
//! and `vec_scale_f16` widen each F16 value to f32, apply one multiply-add (or one
//! multiply) in f32 and round the result back to F16 (nearest, ties to even). Its
//! AVX-512 loop fuses the multiply-add over the first multiple of [`GGML_F16_STEP`]
//! elements of a row; its scalar leftovers loop rounds the product before the sum.
//! A scalar reference and an AVX2/F16C/FMA twin with identical results.

use half::f16;

/// Elements per iteration of ggml's AVX-512 F16 loops.
pub(super) const GGML_F16_STEP: usize = 64;

/// `acc[i] = f16(v[i] * w + acc[i])`: fused in f32 over the first multiple of
/// [`GGML_F16_STEP`] elements, product rounded before the sum for the rest.
pub(super) fn mad(acc: &mut [f16], v: &[f16], w: f32) {
    let n = acc.len().min(v.len());
    let body = n - n % GGML_F16_STEP;
    fused_mad(&mut acc[..body], &v[..body], w);
    for (a, &x) in acc[body..n].iter_mut().zip(&v[body..n]) {
        *a = f16::from_f32(a.to_f32() + x.to_f32() * w);
    }
}

/// `acc[i] = f16(v[i] * w + acc[i])`, the product and sum fused in f32.
fn fused_mad(acc: &mut [f16], v: &[f16], w: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c_fma() {
        // SAFETY: AVX2, F16C and FMA were detected just above.
        unsafe { x86::mad(acc, v, w) };
        return;
    }
    mad_scalar(acc, v, w);
}

/// `acc[i] = f16(acc[i] * s)`, the product in f32.
pub(super) fn scale(acc: &mut [f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c_fma() {
        // SAFETY: AVX2, F16C and FMA were detected just above.
        unsafe { x86::scale(acc, s) };
        return;
    }
    scale_scalar(acc, s);
}

/// Scalar reference of [`mad`].
fn mad_scalar(acc: &mut [f16], v: &[f16], w: f32) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = f16::from_f32(x.to_f32().mul_add(w, a.to_f32()));
    }
}

/// Scalar reference of [`scale`].
fn scale_scalar(acc: &mut [f16], s: f32) {
    for a in acc.iter_mut() {
        *a = f16::from_f32(a.to_f32() * s);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16c_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Eight lanes of [`super::mad`], the tail by the scalar reference.
    ///
    /// # Safety
    /// The CPU must support AVX2, F16C and FMA.
    #[target_feature(enable = "avx2,f16c,fma")]
    pub(super) unsafe fn mad(acc: &mut [f16], v: &[f16], w: f32) {
        let n = acc.len().min(v.len());
        let body = n - n % 8;
        // SAFETY (intrinsics): features enabled above; each load and store covers
        // eight f16 values at `i < body <= n`, inside both slices.
        unsafe {
            let wv = _mm256_set1_ps(w);
            for i in (0..body).step_by(8) {
                let a = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i).cast()));
                let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i).cast()));
                let r = _mm256_fmadd_ps(x, wv, a);
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(r);
                _mm_storeu_si128(acc.as_mut_ptr().add(i).cast(), h);
            }
        }
        super::mad_scalar(&mut acc[body..n], &v[body..n], w);
    }

    /// Eight lanes of [`super::scale`], the tail by the scalar reference.
    ///
    /// # Safety
    /// The CPU must support AVX2, F16C and FMA.
    #[target_feature(enable = "avx2,f16c,fma")]
    pub(super) unsafe fn scale(acc: &mut [f16], s: f32) {
        let n = acc.len();
        let body = n - n % 8;
        // SAFETY (intrinsics): features enabled above; each load and store covers
        // eight f16 values at `i < body <= n`.
        unsafe {
            let sv = _mm256_set1_ps(s);
            for i in (0..body).step_by(8) {
                let a = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i).cast()));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(a, sv));
                _mm_storeu_si128(acc.as_mut_ptr().add(i).cast(), h);
            }
        }
        super::scale_scalar(&mut acc[body..], s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values, some tiny (subnormal F16), some large.
    fn values(n: usize, seed: u32) -> Vec<f16> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let unit = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let magnitude = [1e-6, 1e-2, 1.0, 300.0][i % 4];
                f16::from_f32(unit * magnitude)
            })
            .collect()
    }

    #[test]
    fn simd_matches_scalar_bit_for_bit() {
        for n in [0, 1, 7, 8, 9, 64, 255, 256, 263] {
            for (k, w) in [0.0f32, 1.0, 0.37, 1e-4, 0.9999, 3.5]
                .into_iter()
                .enumerate()
            {
                let v = values(n, 7 + k as u32);
                let start = values(n, 100 + n as u32);
                let (mut fast, mut slow) = (start.clone(), start.clone());
                fused_mad(&mut fast, &v, w);
                mad_scalar(&mut slow, &v, w);
                assert_eq!(bits(&fast), bits(&slow), "mad n={n} w={w}");
                scale(&mut fast, w);
                scale_scalar(&mut slow, w);
                assert_eq!(bits(&fast), bits(&slow), "scale n={n} s={w}");
            }
        }
    }

    #[test]
    fn one_rounding_to_f16_after_a_fused_multiply_add() {
        // 1 + 2^-11 is halfway between two F16 values: ties to even gives 1.
        let mut acc = [f16::ONE];
        mad_scalar(&mut acc, &[f16::from_f32(2f32.powi(-11))], 1.0);
        assert_eq!(acc[0], f16::ONE);
        // Just above halfway rounds up to 1 + 2^-10.
        let mut acc = [f16::ONE];
        mad_scalar(&mut acc, &[f16::from_f32(2f32.powi(-11))], 1.01);
        assert_eq!(acc[0].to_f32(), 1.0 + 2f32.powi(-10));
    }

    #[test]
    fn leftovers_round_the_product_first() {
        // x * w = 2^-11 + 2^-24 + 7 * 2^-44 exactly. Fused, 1 + x * w rounds up to
        // 1 + 2^-11 + 2^-23 in f32, then to 1 + 2^-10 in F16; with the product rounded
        // first (to 2^-11 + 2^-24), the sum is a tie at each rounding and stays 1.
        let x = f16::from_f32(2f32.powi(-11) * (1.0 + 2f32.powi(-10)));
        let w = 1.0 - 2f32.powi(-10) + 2f32.powi(-13) + 7.0 * 2f32.powi(-23);
        let mut acc = vec![f16::ONE; GGML_F16_STEP + 1];
        let v = vec![x; GGML_F16_STEP + 1];
        mad(&mut acc, &v, w);
        assert_eq!(acc[0].to_f32(), 1.0 + 2f32.powi(-10), "fused");
        assert_eq!(acc[GGML_F16_STEP], f16::ONE, "leftover");
    }

    fn bits(x: &[f16]) -> Vec<u16> {
        x.iter().map(|h| h.to_bits()).collect()
    }
}
