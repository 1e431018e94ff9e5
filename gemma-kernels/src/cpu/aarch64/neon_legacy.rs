//! NEON dot products of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL)
//! with their 8-bit activations, and of IQ4_XS with Q8_K.
//!
//! Each block's weights are expanded to two vectors of 16 signed bytes (elements 0..16
//! and 16..32), multiplied with the activation bytes by [`I8Dot`] into exact `i32` sums,
//! then scaled and accumulated in `f32` like the scalar reference.

use super::neon_dot::{chunk, f16_to_f32, load_i8, load_u8, neon_kernel, I8Dot};
use crate::quant::{
    BlockIQ4_NL, BlockIQ4_XS, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
    BlockQ8_K,
};
use half::f16;
use std::arch::aarch64::*;

neon_kernel!(
    /// Q4_0 x Q8_0.
    q4_0, q4_0_kernel, BlockQ4_0, BlockQ8_0, dot_q4_0
);
neon_kernel!(
    /// Q4_1 x Q8_1.
    q4_1, q4_1_kernel, BlockQ4_1, BlockQ8_1, dot_q4_1
);
neon_kernel!(
    /// Q5_0 x Q8_0.
    q5_0, q5_0_kernel, BlockQ5_0, BlockQ8_0, dot_q5_0
);
neon_kernel!(
    /// Q5_1 x Q8_1.
    q5_1, q5_1_kernel, BlockQ5_1, BlockQ8_1, dot_q5_1
);
neon_kernel!(
    /// Q8_0 x Q8_0.
    q8_0, q8_0_kernel, BlockQ8_0, BlockQ8_0, dot_q8_0
);
neon_kernel!(
    /// IQ4_NL x Q8_0.
    iq4_nl, iq4_nl_kernel, BlockIQ4_NL, BlockQ8_0, dot_iq4_nl
);
neon_kernel!(
    /// IQ4_XS x Q8_K.
    iq4_xs, iq4_xs_kernel, BlockIQ4_XS, BlockQ8_K, dot_iq4_xs
);

/// IQ4_NL's 16 levels (ggml's `kvalues_iq4nl`), for `tbl` lookups.
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The 32 nibbles of 16 bytes: low nibbles (elements 0..16), high nibbles (16..32).
#[target_feature(enable = "neon")]
#[inline]
fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    let v = load_u8(qs);
    (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
}

/// `0x10` in byte `j` where bit `j` of `qh` is set, for elements 0..16 and 16..32.
#[target_feature(enable = "neon")]
#[inline]
fn fifth_bits(qh: u32) -> (uint8x16_t, uint8x16_t) {
    const BYTE_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const BYTE_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bytes = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    let bit = load_u8(&BIT);
    let set = |index: &[u8; 16]| {
        let spread = vqtbl1q_u8(bytes, load_u8(index));
        vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(0x10))
    };
    (set(&BYTE_LO), set(&BYTE_HI))
}

/// The integer dot product of two weight vectors (elements 0..16, 16..32) with the 32
/// activation bytes `qs`, in the four lanes.
#[target_feature(enable = "neon")]
#[inline]
fn dot32(d: impl I8Dot, (q0, q1): (int8x16_t, int8x16_t), qs: &[i8; 32]) -> int32x4_t {
    let p = d.dot(vdupq_n_s32(0), q0, load_i8(chunk(qs, 0)));
    d.dot(p, q1, load_i8(chunk(qs, 16)))
}

/// `Σ sumi * (d_w * d_x)` over blocks of a format paired with Q8_0, `quants` giving a
/// block's two weight vectors.
#[target_feature(enable = "neon")]
#[inline]
fn dot_with_q8_0<W>(
    d: impl I8Dot,
    w: &[W],
    x: &[BlockQ8_0],
    scale: impl Fn(&W) -> f16,
    quants: impl Fn(&W) -> (int8x16_t, int8x16_t),
) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    for (a, b) in w.iter().zip(x) {
        let p = dot32(d, quants(a), &b.qs);
        acc = vmlaq_n_f32(
            acc,
            vcvtq_f32_s32(p),
            f16_to_f32(scale(a)) * f16_to_f32(b.d),
        );
    }
    vaddvq_f32(acc)
}

/// `Σ sumi * (d_w * d_x) + m_w * s_x` over blocks of a format paired with Q8_1.
#[target_feature(enable = "neon")]
#[inline]
fn dot_with_q8_1<W>(
    d: impl I8Dot,
    w: &[W],
    x: &[BlockQ8_1],
    scale_min: impl Fn(&W) -> (f16, f16),
    quants: impl Fn(&W) -> (int8x16_t, int8x16_t),
) -> f32 {
    let mut acc = vdupq_n_f32(0.0);
    let mut mins = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let (dw, m) = scale_min(a);
        let p = dot32(d, quants(a), &b.qs);
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), f16_to_f32(dw) * f16_to_f32(b.d));
        mins += f16_to_f32(m) * f16_to_f32(b.s);
    }
    vaddvq_f32(acc) + mins
}

#[target_feature(enable = "neon")]
fn dot_q4_0(d: impl I8Dot, w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    let eight = vdupq_n_s8(8);
    dot_with_q8_0(
        d,
        w,
        x,
        |b| b.d,
        |b| {
            let (lo, hi) = nibbles(&b.qs);
            (
                vsubq_s8(vreinterpretq_s8_u8(lo), eight),
                vsubq_s8(vreinterpretq_s8_u8(hi), eight),
            )
        },
    )
}

#[target_feature(enable = "neon")]
fn dot_q4_1(d: impl I8Dot, w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    dot_with_q8_1(
        d,
        w,
        x,
        |b| (b.d, b.m),
        |b| {
            let (lo, hi) = nibbles(&b.qs);
            (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
        },
    )
}

/// The two vectors of 5-bit quants (0..32) of a Q5_0/Q5_1 block.
#[target_feature(enable = "neon")]
#[inline]
fn quants5(qs: &[u8; 16], qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    let (lo, hi) = nibbles(qs);
    let (h0, h1) = fifth_bits(u32::from_le_bytes(qh));
    (vorrq_u8(lo, h0), vorrq_u8(hi, h1))
}

#[target_feature(enable = "neon")]
fn dot_q5_0(d: impl I8Dot, w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    let sixteen = vdupq_n_s8(16);
    dot_with_q8_0(
        d,
        w,
        x,
        |b| b.d,
        |b| {
            let (q0, q1) = quants5(&b.qs, b.qh);
            (
                vsubq_s8(vreinterpretq_s8_u8(q0), sixteen),
                vsubq_s8(vreinterpretq_s8_u8(q1), sixteen),
            )
        },
    )
}

#[target_feature(enable = "neon")]
fn dot_q5_1(d: impl I8Dot, w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    dot_with_q8_1(
        d,
        w,
        x,
        |b| (b.d, b.m),
        |b| {
            let (q0, q1) = quants5(&b.qs, b.qh);
            (vreinterpretq_s8_u8(q0), vreinterpretq_s8_u8(q1))
        },
    )
}

#[target_feature(enable = "neon")]
fn dot_q8_0(d: impl I8Dot, w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    dot_with_q8_0(
        d,
        w,
        x,
        |b| b.d,
        |b| (load_i8(chunk(&b.qs, 0)), load_i8(chunk(&b.qs, 16))),
    )
}

/// The IQ4 levels of the 32 table indices in `qs`.
#[target_feature(enable = "neon")]
#[inline]
fn iq4_levels(table: int8x16_t, qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(qs);
    (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
}

#[target_feature(enable = "neon")]
fn dot_iq4_nl(d: impl I8Dot, w: &[BlockIQ4_NL], x: &[BlockQ8_0]) -> f32 {
    let table = load_i8(&IQ4_VALUES);
    dot_with_q8_0(d, w, x, |b| b.d, |b| iq4_levels(table, &b.qs))
}

#[target_feature(enable = "neon")]
fn dot_iq4_xs(d: impl I8Dot, w: &[BlockIQ4_XS], x: &[BlockQ8_K]) -> f32 {
    let table = load_i8(&IQ4_VALUES);
    let mut sum = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        // Per-block sums times the signed 6-bit block scales, exact in `i32`.
        let mut acc = vdupq_n_s32(0);
        for ib in 0..8 {
            let q = iq4_levels(table, chunk(&a.qs, 16 * ib));
            let p = dot32(d, q, chunk(&b.qs, 32 * ib));
            acc = vmlaq_n_s32(acc, p, a.block_scale(ib) - 32);
        }
        sum += f16_to_f32(a.d) * b.d * vaddvq_s32(acc) as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_both;
    use super::*;

    #[test]
    fn legacy_kernels_match_scalar_in_both_forms() {
        // SAFETY (every closure): NEON is baseline on AArch64; `check_both` calls the
        // `sdot` form only after detecting `dotprod`.
        check_both::<BlockQ4_0>(
            |w, x| unsafe { q4_0_kernel::widening(w, x) },
            |w, x| unsafe { q4_0_kernel::sdot(w, x) },
        );
        check_both::<BlockQ4_1>(
            |w, x| unsafe { q4_1_kernel::widening(w, x) },
            |w, x| unsafe { q4_1_kernel::sdot(w, x) },
        );
        check_both::<BlockQ5_0>(
            |w, x| unsafe { q5_0_kernel::widening(w, x) },
            |w, x| unsafe { q5_0_kernel::sdot(w, x) },
        );
        check_both::<BlockQ5_1>(
            |w, x| unsafe { q5_1_kernel::widening(w, x) },
            |w, x| unsafe { q5_1_kernel::sdot(w, x) },
        );
        check_both::<BlockQ8_0>(
            |w, x| unsafe { q8_0_kernel::widening(w, x) },
            |w, x| unsafe { q8_0_kernel::sdot(w, x) },
        );
        check_both::<BlockIQ4_NL>(
            |w, x| unsafe { iq4_nl_kernel::widening(w, x) },
            |w, x| unsafe { iq4_nl_kernel::sdot(w, x) },
        );
        check_both::<BlockIQ4_XS>(
            |w, x| unsafe { iq4_xs_kernel::widening(w, x) },
            |w, x| unsafe { iq4_xs_kernel::sdot(w, x) },
        );
    }
}
