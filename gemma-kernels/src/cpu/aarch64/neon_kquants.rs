//! NEON dot products of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) with Q8_K.
//!
//! Each 16-weight group is expanded to 16 signed bytes and multiplied with its 16
//! activation bytes by [`I8Dot`]; the four `i32` lanes are multiplied by the group's
//! integer scale and summed, so every super-block yields the same exact integer sums as
//! the scalar reference, which are then scaled in `f32` in the reference's formula.

use super::neon_dot::{chunk, f16_to_f32, load_i8, load_u8, neon_kernel, I8Dot};
use crate::quant::{BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use std::arch::aarch64::*;

neon_kernel!(
    /// Q2_K x Q8_K.
    q2_k, q2_k_kernel, BlockQ2_K, BlockQ8_K, dot_q2_k
);
neon_kernel!(
    /// Q3_K x Q8_K.
    q3_k, q3_k_kernel, BlockQ3_K, BlockQ8_K, dot_q3_k
);
neon_kernel!(
    /// Q4_K x Q8_K.
    q4_k, q4_k_kernel, BlockQ4_K, BlockQ8_K, dot_q4_k
);
neon_kernel!(
    /// Q5_K x Q8_K.
    q5_k, q5_k_kernel, BlockQ5_K, BlockQ8_K, dot_q5_k
);
neon_kernel!(
    /// Q6_K x Q8_K.
    q6_k, q6_k_kernel, BlockQ6_K, BlockQ8_K, dot_q6_k
);

/// `Σ bsums[j] * mins[j]` over the 16 groups, exact in `i32`.
#[target_feature(enable = "neon")]
#[inline]
fn bsums_dot(bsums: &[i16; 16], mins: uint8x16_t) -> i32 {
    // SAFETY: `bsums` is 16 readable `i16`.
    let (b0, b1) = unsafe { (vld1q_s16(bsums.as_ptr()), vld1q_s16(bsums.as_ptr().add(8))) };
    let m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
    let m1 = vreinterpretq_s16_u16(vmovl_high_u8(mins));
    let p = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
    let p = vmlal_high_s16(p, b0, m0);
    let p = vmlal_s16(p, vget_low_s16(b1), vget_low_s16(m1));
    vaddvq_s32(vmlal_high_s16(p, b1, m1))
}

/// The 16 group activations of group `s` (0..16).
#[target_feature(enable = "neon")]
#[inline]
fn group(y: &BlockQ8_K, s: usize) -> int8x16_t {
    load_i8(chunk(&y.qs, 16 * s))
}

/// `acc + scale * (quants · activations of group s)`, lane-wise (kernels keep two
/// accumulators, for the two halves `h` of each 32-group, to shorten the dependency chain).
#[target_feature(enable = "neon")]
#[inline]
fn scaled_group(
    d: impl I8Dot,
    acc: int32x4_t,
    quants: uint8x16_t,
    y: &BlockQ8_K,
    s: usize,
    scale: i32,
) -> int32x4_t {
    let p = d.dot(vdupq_n_s32(0), vreinterpretq_s8_u8(quants), group(y, s));
    vmlaq_n_s32(acc, p, scale)
}

/// The high (`upper`) or low nibble of every byte of `v`.
#[target_feature(enable = "neon")]
#[inline]
fn nibble(v: uint8x16_t, upper: bool) -> uint8x16_t {
    if upper {
        vshrq_n_u8::<4>(v)
    } else {
        vandq_u8(v, vdupq_n_u8(0xf))
    }
}

/// Bits `2g..2g + 2` of every byte of `v`.
#[target_feature(enable = "neon")]
#[inline]
fn crumb(v: uint8x16_t, g: usize) -> uint8x16_t {
    vandq_u8(vshlq_u8(v, vdupq_n_s8(-2 * g as i8)), vdupq_n_u8(3))
}

#[target_feature(enable = "neon")]
fn dot_q2_k(d: impl I8Dot, w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let summs = bsums_dot(&y.bsums, vshrq_n_u8::<4>(load_u8(&b.scales)));
        let mut acc = [vdupq_n_s32(0); 2];
        for n in 0..2 {
            let q = [
                load_u8(chunk(&b.qs, 32 * n)),
                load_u8(chunk(&b.qs, 32 * n + 16)),
            ];
            for g in 0..4 {
                for (h, &qh) in q.iter().enumerate() {
                    let s = 8 * n + 2 * g + h;
                    let scale = (b.scales[s] & 0xf) as i32;
                    acc[h] = scaled_group(d, acc[h], crumb(qh, g), y, s, scale);
                }
            }
        }
        let dall = y.d * f16_to_f32(b.d);
        let dmin = y.d * f16_to_f32(b.dmin);
        sum += dall * vaddvq_s32(vaddq_s32(acc[0], acc[1])) as f32 - dmin * summs as f32;
    }
    sum
}

#[target_feature(enable = "neon")]
fn dot_q3_k(d: impl I8Dot, w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    let four = vdupq_n_u8(4);
    let mut sum = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let scales = b.raw_scales();
        let hm = [load_u8(chunk(&b.hmask, 0)), load_u8(chunk(&b.hmask, 16))];
        let mut acc = [vdupq_n_s32(0); 2];
        for n in 0..2 {
            let q = [
                load_u8(chunk(&b.qs, 32 * n)),
                load_u8(chunk(&b.qs, 32 * n + 16)),
            ];
            for g in 0..4 {
                let bit = vdupq_n_u8(1 << (4 * n + g));
                for h in 0..2 {
                    // quant = low - 4 where the high bit is clear (two's complement bytes).
                    let clear = vbicq_u8(four, vtstq_u8(hm[h], bit));
                    let quants = vsubq_u8(crumb(q[h], g), clear);
                    let s = 8 * n + 2 * g + h;
                    acc[h] = scaled_group(d, acc[h], quants, y, s, scales[s] as i32 - 32);
                }
            }
        }
        sum += f16_to_f32(b.d) * y.d * vaddvq_s32(vaddq_s32(acc[0], acc[1])) as f32;
    }
    sum
}

/// The eight sub-block minimums of Q4_K/Q5_K, each repeated for its two 16-groups.
#[target_feature(enable = "neon")]
#[inline]
fn mins_per_group(mins: [u8; 8]) -> uint8x16_t {
    let m = vcreate_u8(u64::from_le_bytes(mins));
    vcombine_u8(vzip1_u8(m, m), vzip2_u8(m, m))
}

/// One Q4_K/Q5_K super-block: `d * Σ scale_j (quants_j · y_j) - dmin * Σ bsum * min`,
/// `quants(j, h)` giving the 16 unsigned quants of half `h` of sub-block `j`.
#[target_feature(enable = "neon")]
#[inline]
fn k4_super_block(
    d: impl I8Dot,
    (scales, mins): ([u8; 8], [u8; 8]),
    (dw, dmin): (half::f16, half::f16),
    y: &BlockQ8_K,
    quants: impl Fn(usize, usize) -> uint8x16_t,
) -> f32 {
    let summ = bsums_dot(&y.bsums, mins_per_group(mins));
    let mut acc = [vdupq_n_s32(0); 2];
    for (j, &scale) in scales.iter().enumerate() {
        for (h, acc) in acc.iter_mut().enumerate() {
            *acc = scaled_group(d, *acc, quants(j, h), y, 2 * j + h, scale as i32);
        }
    }
    f16_to_f32(dw) * y.d * vaddvq_s32(vaddq_s32(acc[0], acc[1])) as f32
        - f16_to_f32(dmin) * y.d * summ as f32
}

#[target_feature(enable = "neon")]
fn dot_q4_k(d: impl I8Dot, w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let quants =
            |j: usize, h: usize| nibble(load_u8(chunk(&b.qs, 32 * (j / 2) + 16 * h)), j % 2 == 1);
        sum += k4_super_block(d, b.scales_mins(), (b.d, b.dmin), y, quants);
    }
    sum
}

#[target_feature(enable = "neon")]
fn dot_q5_k(d: impl I8Dot, w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let hm = [load_u8(chunk(&b.qh, 0)), load_u8(chunk(&b.qh, 16))];
        let quants = |j: usize, h: usize| {
            let low = nibble(load_u8(chunk(&b.qs, 32 * (j / 2) + 16 * h)), j % 2 == 1);
            let high = vtstq_u8(hm[h], vdupq_n_u8(1 << j));
            vorrq_u8(low, vandq_u8(high, vdupq_n_u8(0x10)))
        };
        sum += k4_super_block(d, b.scales_mins(), (b.d, b.dmin), y, quants);
    }
    sum
}

#[target_feature(enable = "neon")]
fn dot_q6_k(d: impl I8Dot, w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, y) in w.iter().zip(x) {
        let mut acc = [vdupq_n_s32(0); 2];
        for n in 0..2 {
            let ql = [
                load_u8(chunk(&b.ql, 64 * n)),
                load_u8(chunk(&b.ql, 64 * n + 16)),
                load_u8(chunk(&b.ql, 64 * n + 32)),
                load_u8(chunk(&b.ql, 64 * n + 48)),
            ];
            let qh = [
                load_u8(chunk(&b.qh, 32 * n)),
                load_u8(chunk(&b.qh, 32 * n + 16)),
            ];
            for g in 0..4 {
                for h in 0..2 {
                    let low = nibble(ql[2 * (g % 2) + h], g >= 2);
                    let q6 = vorrq_u8(low, vshlq_n_u8::<4>(crumb(qh[h], g)));
                    // quant - 32 in two's complement bytes.
                    let quants = vsubq_u8(q6, vdupq_n_u8(32));
                    let s = 8 * n + 2 * g + h;
                    acc[h] = scaled_group(d, acc[h], quants, y, s, b.scales[s] as i32);
                }
            }
        }
        sum += f16_to_f32(b.d) * y.d * vaddvq_s32(vaddq_s32(acc[0], acc[1])) as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_both;
    use super::*;

    #[test]
    fn k_quant_kernels_match_scalar_in_both_forms() {
        // SAFETY (every closure): NEON is baseline on AArch64; `check_both` calls the
        // `sdot` form only after detecting `dotprod`.
        check_both::<BlockQ2_K>(
            |w, x| unsafe { q2_k_kernel::widening(w, x) },
            |w, x| unsafe { q2_k_kernel::sdot(w, x) },
        );
        check_both::<BlockQ3_K>(
            |w, x| unsafe { q3_k_kernel::widening(w, x) },
            |w, x| unsafe { q3_k_kernel::sdot(w, x) },
        );
        check_both::<BlockQ4_K>(
            |w, x| unsafe { q4_k_kernel::widening(w, x) },
            |w, x| unsafe { q4_k_kernel::sdot(w, x) },
        );
        check_both::<BlockQ5_K>(
            |w, x| unsafe { q5_k_kernel::widening(w, x) },
            |w, x| unsafe { q5_k_kernel::sdot(w, x) },
        );
        check_both::<BlockQ6_K>(
            |w, x| unsafe { q6_k_kernel::widening(w, x) },
            |w, x| unsafe { q6_k_kernel::sdot(w, x) },
        );
    }
}
