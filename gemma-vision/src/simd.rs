//! A small SIMD vocabulary shared by the GEMM tile, the softmax and the GELU, written
//! once generically and instantiated per instruction set: `Scalar` (the reference),
//! `Avx2` (8 lanes, FMA) and `Avx512` (16 lanes).
//!
//! Every method is `#[inline(always)]` and only ever called from functions compiled
//! with the matching `#[target_feature]` (see `kernels.rs`), where the intrinsics inline.

/// A vector of `LANES` f32 values and the operations the vision kernels need.
pub(crate) trait Simd: Copy {
    /// The register type.
    type V: Copy;
    /// f32 values per register.
    const LANES: usize;
    /// All zeros.
    unsafe fn zero() -> Self::V;
    /// All lanes set to `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Loads `LANES` values from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` values to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `e^x` per lane (within 2 ulp for the SIMD versions; libm for `Scalar`).
    unsafe fn exp(x: Self::V) -> Self::V;
}

/// One lane of plain Rust: the reference every SIMD path is tested against.
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` points to LANES (= 1) readable values.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` points to LANES (= 1) writable values.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn exp(x: f32) -> f32 {
        x.exp()
    }
}

/// Constants of the Cephes `expf` used by the SIMD exponentials: range reduction
/// `x = n ln2 + r` with ln2 split in two, then a degree-6 polynomial for `e^r`.
#[cfg(target_arch = "x86_64")]
mod expf {
    pub const HI: f32 = 88.376_26;
    pub const LO: f32 = -88.376_26;
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{expf, Simd};
    use std::arch::x86_64::*;

    /// 8 lanes with AVX2 + FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    /// 16 lanes with AVX-512F.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    // SAFETY (whole impl): every method is only called from `#[target_feature(enable =
    // "avx2,fma")]` functions on CPUs that have them (checked by `kernels::select`);
    // pointers are valid for LANES values by the callers' contracts.
    impl Simd for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn exp(x: __m256) -> __m256 {
            unsafe {
                let x = _mm256_min_ps(
                    _mm256_max_ps(x, Self::splat(expf::LO)),
                    Self::splat(expf::HI),
                );
                let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(x, Self::splat(expf::LOG2E)),
                );
                let r = _mm256_fnmadd_ps(n, Self::splat(expf::LN2_HI), x);
                let r = _mm256_fnmadd_ps(n, Self::splat(expf::LN2_LO), r);
                let mut p = Self::splat(expf::P[0]);
                for c in &expf::P[1..] {
                    p = _mm256_fmadd_ps(p, r, Self::splat(*c));
                }
                let r2 = _mm256_mul_ps(r, r);
                let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), Self::splat(1.0));
                let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                    _mm256_cvtps_epi32(n),
                    _mm256_set1_epi32(127),
                ));
                _mm256_mul_ps(y, _mm256_castsi256_ps(bits))
            }
        }
    }

    // SAFETY (whole impl): every method is only called from `#[target_feature(enable =
    // "avx512f,avx2,fma")]` functions on CPUs that have them (checked by
    // `kernels::select`); pointers are valid for LANES values by the callers' contracts.
    impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn exp(x: __m512) -> __m512 {
            unsafe {
                let x = _mm512_min_ps(
                    _mm512_max_ps(x, Self::splat(expf::LO)),
                    Self::splat(expf::HI),
                );
                let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_mul_ps(x, Self::splat(expf::LOG2E)),
                );
                let r = _mm512_fnmadd_ps(n, Self::splat(expf::LN2_HI), x);
                let r = _mm512_fnmadd_ps(n, Self::splat(expf::LN2_LO), r);
                let mut p = Self::splat(expf::P[0]);
                for c in &expf::P[1..] {
                    p = _mm512_fmadd_ps(p, r, Self::splat(*c));
                }
                let r2 = _mm512_mul_ps(r, r);
                let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), Self::splat(1.0));
                _mm512_scalef_ps(y, n)
            }
        }
    }
}
