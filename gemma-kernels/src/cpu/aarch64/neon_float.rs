//! NEON dot products of the float types F32, F16 and BF16 (each with itself).
//!
//! Sixteen lanes per iteration in four `f32` accumulators, the tail in scalar code.
//! Products of two F16 or two BF16 values are exact in `f32`, so these differ from the
//! scalar `f64` sums only by the `f32` accumulation.

use super::neon_dot::f16_to_f32;
use crate::cpu::isa::Isa;
use crate::quant::VecDot;
use half::{bf16, f16};
use std::arch::aarch64::*;

/// F32 x F32.
pub(crate) fn f32() -> Option<VecDot<f32>> {
    Isa::Neon.is_supported().then_some(|w: &[f32], x: &[f32]| {
        // SAFETY: handed out only after NEON was detected; reads `min` of both lengths.
        unsafe { dot_f32(w, x) }
    })
}

/// F16 x F16 (products exact in `f32`).
pub(crate) fn f16() -> Option<VecDot<f16>> {
    Isa::Neon.is_supported().then_some(|w: &[f16], x: &[f16]| {
        // SAFETY: handed out only after NEON was detected; reads `min` of both lengths.
        unsafe { dot_f16(w, x) }
    })
}

/// BF16 x BF16 (products exact in `f32`).
pub(crate) fn bf16() -> Option<VecDot<bf16>> {
    Isa::Neon
        .is_supported()
        .then_some(|w: &[bf16], x: &[bf16]| {
            // SAFETY: handed out only after NEON was detected; reads `min` of both lengths.
            unsafe { dot_bf16(w, x) }
        })
}

/// `Σ w[i] * x[i]` over the common length, `widen` turning the 16 elements at a pointer
/// into `f32` lanes.
#[target_feature(enable = "neon")]
#[inline]
fn dot_lanes<T: Copy>(
    w: &[T],
    x: &[T],
    widen: impl Fn(*const T) -> [float32x4_t; 4],
    to_f32: impl Fn(T) -> f32,
) -> f32 {
    let n = w.len().min(x.len());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n <= both lengths, so 16 elements are readable at each.
        let (pw, px) = unsafe { (w.as_ptr().add(i), x.as_ptr().add(i)) };
        let (a, b) = (widen(pw), widen(px));
        for k in 0..4 {
            acc[k] = vfmaq_f32(acc[k], a[k], b[k]);
        }
        i += 16;
    }
    let mut sum = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    for j in i..n {
        sum += to_f32(w[j]) * to_f32(x[j]);
    }
    sum
}

#[target_feature(enable = "neon")]
fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    dot_lanes(
        w,
        x,
        |p| {
            // SAFETY: `dot_lanes` passes pointers to 16 readable values.
            unsafe {
                [
                    vld1q_f32(p),
                    vld1q_f32(p.add(4)),
                    vld1q_f32(p.add(8)),
                    vld1q_f32(p.add(12)),
                ]
            }
        },
        |v| v,
    )
}

#[target_feature(enable = "neon")]
fn dot_f16(w: &[f16], x: &[f16]) -> f32 {
    dot_lanes(
        w,
        x,
        |p| {
            // SAFETY: `dot_lanes` passes pointers to 16 readable halves.
            let (h0, h1) = unsafe { (vld1q_u16(p.cast()), vld1q_u16(p.cast::<u16>().add(8))) };
            let (a, b) = (f16x8_to_f32(h0), f16x8_to_f32(h1));
            [a.0, a.1, b.0, b.1]
        },
        |h| f16_to_f32(h),
    )
}

#[target_feature(enable = "neon")]
fn dot_bf16(w: &[bf16], x: &[bf16]) -> f32 {
    dot_lanes(
        w,
        x,
        |p| {
            // SAFETY: `dot_lanes` passes pointers to 16 readable halves; a BF16 value is
            // the top half of its `f32`, so a 16-bit left shift converts it exactly.
            unsafe {
                let (h0, h1) = (vld1q_u16(p.cast()), vld1q_u16(p.cast::<u16>().add(8)));
                [
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h0))),
                    vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h0)),
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h1))),
                    vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h1)),
                ]
            }
        },
        bf16::to_f32,
    )
}

/// Eight IEEE half-precision values (as bits) to `f32`, exactly (`fcvtl`/`fcvtl2`, part
/// of baseline AArch64 SIMD; the intrinsics need the unstable `f16` type).
#[target_feature(enable = "neon")]
#[inline]
fn f16x8_to_f32(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: register-only conversions, available on every AArch64 CPU with NEON.
    unsafe {
        std::arch::asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) h,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    (lo, hi)
}
