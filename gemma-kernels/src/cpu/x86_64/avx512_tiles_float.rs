//! AVX-512 four-token kernels of the plain float formats (F32 with F32 activations, F16
//! with F16 activations), used by attention's `K · Q` and `V · P` products.
//!
//! Each 16-value chunk of the weight row is loaded (and for F16 widened) once and
//! multiplied into four tokens' accumulators, two per token so that eight independent
//! FMA chains hide the FMA latency; the tail chunk uses masked loads.

use super::avx512_tiles::{four_token_kernel, reduce4};
use half::f16;
use std::arch::x86_64::*;

/// Loads 16 values (masked to `mask`) of a row as f32.
trait WideLoad: Copy {
    /// The 16 values at `p` as f32, lanes outside `mask` zero.
    ///
    /// # Safety
    /// Lanes in `mask` must be readable; AVX-512F/BW/VL and F16C enabled by the caller.
    unsafe fn load16(p: *const Self, mask: __mmask16) -> __m512;
}

impl WideLoad for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const Self, mask: __mmask16) -> __m512 {
        // SAFETY: guaranteed by the caller; masked-off lanes are not accessed.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
}

impl WideLoad for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const Self, mask: __mmask16) -> __m512 {
        // SAFETY: guaranteed by the caller; masked-off lanes are not accessed.
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast())) }
    }
}

#[inline(always)]
fn float_x4_body<T: WideLoad>(w: &[T], x: [&[T]; 4]) -> [f32; 4] {
    // SAFETY: inlined into the `four_token_kernel!` instances (AVX-512F/BW/VL, F16C);
    // every load covers indices below `n`, the length of the shortest of the five rows.
    unsafe {
        let n = x.iter().fold(w.len(), |n, row| n.min(row.len()));
        let all = !0u16;
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        let mut i = 0;
        while i + 32 <= n {
            let w0 = T::load16(w.as_ptr().add(i), all);
            let w1 = T::load16(w.as_ptr().add(i + 16), all);
            for t in 0..4 {
                let p = x[t].as_ptr().add(i);
                acc[t][0] = _mm512_fmadd_ps(w0, T::load16(p, all), acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(w1, T::load16(p.add(16), all), acc[t][1]);
            }
            i += 32;
        }
        while i < n {
            let left = n - i;
            let mask = if left >= 16 {
                all
            } else {
                ((1u32 << left) - 1) as u16
            };
            let wv = T::load16(w.as_ptr().add(i), mask);
            for t in 0..4 {
                acc[t][0] = _mm512_fmadd_ps(wv, T::load16(x[t].as_ptr().add(i), mask), acc[t][0]);
            }
            i += 16;
        }
        reduce4(acc.map(|[a, b]| _mm512_add_ps(a, b)))
    }
}

#[inline(always)]
fn f32_body<const VNNI: bool>(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    float_x4_body(w, x)
}

#[inline(always)]
fn f16_body<const VNNI: bool>(w: &[f16], x: [&[f16]; 4]) -> [f32; 4] {
    float_x4_body(w, x)
}

four_token_kernel!(
    /// The F32 x F32 four-token kernel, if this CPU has AVX-512 F/BW/VL.
    f32_x4: f32, f32 => f32_body, f32_x4_vnni, f32_x4_bw
);
four_token_kernel!(
    /// The F16 x F16 four-token kernel, if this CPU has AVX-512 F/BW/VL.
    f16_x4: f16, f16 => f16_body, f16_x4_vnni, f16_x4_bw
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::isa::{has_avx512_vnni, Isa};
    use crate::cpu::x86_64::avx512_tiles::{tests::check, Dot4};

    /// Both instances against the scalar (f64-accumulated) dot product, on lengths
    /// around the 16- and 32-value chunks.
    #[test]
    fn four_token_kernels_match_scalar_dot() {
        if !Isa::Avx512.is_supported() {
            eprintln!("no AVX-512 on this CPU: the four-token kernels cannot run here");
            return;
        }
        let lengths = [1usize, 5, 15, 16, 17, 31, 32, 33, 47, 100, 257];
        // SAFETY (each closure): AVX-512 F/BW/VL, AVX2, FMA and F16C were checked above,
        // VNNI where it is used.
        let f32s: Dot4<f32, f32> = |w, x| unsafe { f32_x4_bw(w, x) };
        let f16s: Dot4<f16, f16> = |w, x| unsafe { f16_x4_bw(w, x) };
        let (mut f32s, mut f16s) = (vec![f32s], vec![f16s]);
        if has_avx512_vnni() {
            f32s.push(|w, x| unsafe { f32_x4_vnni(w, x) });
            f16s.push(|w, x| unsafe { f16_x4_vnni(w, x) });
        }
        check::<f32>(&f32s, &lengths);
        check::<f16>(&f16s, &lengths);
    }
}
