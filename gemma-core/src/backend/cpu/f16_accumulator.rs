//! The F16 accumulator of llama.cpp's one-chunk flash attention: ggml's `vec_mad_f16`
//! and `vec_scale_f16` widen each F16 value to f32, apply one multiply-add (or one
//! multiply) in f32 and round the result back to F16 (nearest, ties to even). Its
//! AVX-512 loop fuses the multiply-add over the first multiple of [`GGML_F16_STEP`]
//! elements of a row; its scalar leftovers loop rounds the product before the sum.
//! A scalar reference and an AVX2/F16C/FMA twin with identical results; [`mad_keys`]
//! runs the updates of a whole block of keys with the sum held in registers.

use half::f16;

/// Elements per iteration of ggml's AVX-512 F16 loops.
pub(super) const GGML_F16_STEP: usize = 64;

/// `acc[i] = f16(v[i] * w + acc[i])`: fused in f32 over the first multiple of
/// [`GGML_F16_STEP`] elements, product rounded before the sum for the rest.
fn mad(acc: &mut [f16], v: &[f16], w: f32) {
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
fn scale(acc: &mut [f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c_fma() {
        // SAFETY: AVX2, F16C and FMA were detected just above.
        unsafe { x86::scale(acc, s) };
        return;
    }
    scale_scalar(acc, s);
}

/// For each key `j` in order: [`scale`] by `weights[j].0` unless it is 1, then [`mad`] of
/// value row `j` (`values[j * dv..(j + 1) * dv]`, `dv = acc.len()`) times `weights[j].1`.
/// The same bits as those calls, which it replaces: each element's updates are a
/// recurrence over the keys, so the SIMD twin walks the keys with a block of the sum in
/// registers instead of loading and storing it for every key.
pub(super) fn mad_keys(acc: &mut [f16], values: &[f16], weights: &[(f32, f32)]) {
    assert!(
        values.len() >= weights.len() * acc.len(),
        "a value row per key"
    );
    #[cfg(target_arch = "x86_64")]
    if has_f16c_fma() {
        // SAFETY: AVX2, F16C and FMA were detected just above; `values` holds a row per
        // key (asserted).
        unsafe { x86::mad_keys(acc, values, weights) };
        return;
    }
    mad_keys_reference(acc, values, weights);
}

/// Reference of [`mad_keys`]: one [`scale`] and [`mad`] call per key.
fn mad_keys_reference(acc: &mut [f16], values: &[f16], weights: &[(f32, f32)]) {
    let dv = acc.len();
    for (row, &(ms, vs)) in values.chunks_exact(dv.max(1)).zip(weights) {
        if ms != 1.0 {
            scale(acc, ms);
        }
        mad(acc, row, vs);
    }
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
    use super::GGML_F16_STEP;
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

    /// [`super::mad_keys`]: each [`GGML_F16_STEP`] elements of the sum stay in eight
    /// registers (as the f32 values of their F16 roundings) while the keys go by; the
    /// leftover elements take the scalar operations of [`super::mad`] and
    /// [`super::scale`], key by key.
    ///
    /// # Safety
    /// The CPU must support AVX2, F16C and FMA; `values` must hold `weights.len()` rows of
    /// `acc.len()` values.
    #[target_feature(enable = "avx2,f16c,fma")]
    pub(super) unsafe fn mad_keys(acc: &mut [f16], values: &[f16], weights: &[(f32, f32)]) {
        const LANES: usize = 8;
        const REGS: usize = GGML_F16_STEP / LANES;
        let dv = acc.len();
        let body = dv - dv % GGML_F16_STEP;
        // SAFETY (intrinsics): features enabled above; loads and stores of `acc` cover
        // `c + 8 i + 8 <= body <= dv`, those of key `j`'s row `j * dv + c + 8 i + 8 <=
        // (j + 1) * dv <= values.len()` (the caller's contract).
        unsafe {
            let round =
                |x: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
            for c in (0..body).step_by(GGML_F16_STEP) {
                let at = acc.as_mut_ptr().add(c);
                let mut a: [__m256; REGS] = std::array::from_fn(|i| {
                    _mm256_cvtph_ps(_mm_loadu_si128(at.add(i * LANES).cast()))
                });
                for (j, &(ms, vs)) in weights.iter().enumerate() {
                    if ms != 1.0 {
                        let s = _mm256_set1_ps(ms);
                        for r in &mut a {
                            *r = round(_mm256_mul_ps(*r, s));
                        }
                    }
                    let row = values.as_ptr().add(j * dv + c);
                    let w = _mm256_set1_ps(vs);
                    for (i, r) in a.iter_mut().enumerate() {
                        let v = _mm256_cvtph_ps(_mm_loadu_si128(row.add(i * LANES).cast()));
                        *r = round(_mm256_fmadd_ps(v, w, *r));
                    }
                }
                for (i, r) in a.iter().enumerate() {
                    let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(*r);
                    _mm_storeu_si128(at.add(i * LANES).cast(), h);
                }
            }
        }
        if body < dv {
            for (j, &(ms, vs)) in weights.iter().enumerate() {
                if ms != 1.0 {
                    super::scale_scalar(&mut acc[body..], ms);
                }
                for (a, &x) in acc[body..]
                    .iter_mut()
                    .zip(&values[j * dv + body..(j + 1) * dv])
                {
                    *a = f16::from_f32(a.to_f32() + x.to_f32() * vs);
                }
            }
        }
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
    fn block_of_keys_matches_key_by_key_calls() {
        // Row widths with and without leftovers past the multiples of 64; weights with
        // and without rescales, some large enough to overflow F16.
        for dv in [0, 8, 64, 72, 128, 256, 263] {
            for keys in [0, 1, 5, 33] {
                let rows = values(dv * keys, 3 + dv as u32);
                let weights: Vec<(f32, f32)> = (0..keys)
                    .map(|j| match j % 5 {
                        0 => (0.37, 1.0),
                        1 => (1.0, 0.9999),
                        2 => (1.0, 1e-4),
                        3 => (2.5e-3, 1.0),
                        _ => (1.0, 700.0),
                    })
                    .collect();
                let start = values(dv, 50 + keys as u32);
                let (mut fast, mut slow) = (start.clone(), start);
                mad_keys(&mut fast, &rows, &weights);
                mad_keys_reference(&mut slow, &rows, &weights);
                assert_eq!(bits(&fast), bits(&slow), "dv={dv} keys={keys}");
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
