//! Random rows with outliers, wildly varying block scales and all-zero blocks:
//! quantize then dequantize stays within each format's error bound, all-zero blocks come
//! back as zeros, and every SIMD dot product of this CPU equals the scalar reference on
//! 1..=33 blocks (odd counts included), for quantizer output and for random raw bytes.

mod quant_common;

use bytemuck::Zeroable;
use gemma_gguf::GgmlType;
use gemma_kernels::cpu::isa::Isa;
use gemma_kernels::quant::{self, BlockVisitor, QuantBlock};
use quant_common::{Rng, TYPES};

/// Largest error allowed per block: `factor * amax + slack`, with `amax` the largest
/// magnitude of the block (of the 256-element super-block for IQ4_XS). `slack` covers
/// the rounding of an `f16` scale that falls in the subnormal range, times the largest
/// quant multiplier. The fixed-grid formats follow from their rounding (half a step,
/// a full step where ggml clamps the extreme quant: Q4_0, Q5_0); the IQ4 bounds are
/// the top level's gap (113 vs 127: 14/127 of `amax`) plus a margin.
fn error_bound(ty: GgmlType) -> (f32, f32) {
    let sub = (2.0f32).powi(-25);
    match ty {
        GgmlType::F32 => (0.0, 0.0),
        GgmlType::F16 => ((2.0f32).powi(-11), sub),
        GgmlType::BF16 => ((2.0f32).powi(-8), 0.0),
        GgmlType::Q4_0 => (0.1260, 8.0 * sub),
        GgmlType::Q4_1 => (0.0700, 15.0 * sub + sub),
        GgmlType::Q5_0 => (0.0630, 16.0 * sub),
        GgmlType::Q5_1 => (0.0340, 31.0 * sub + sub),
        GgmlType::Q8_0 => (0.0045, 127.0 * sub),
        GgmlType::IQ4_NL => (0.12, 127.0 * sub),
        GgmlType::IQ4_XS => (0.12, 32.0 * 127.0 * sub),
        _ => panic!("no bound for {ty}"),
    }
}

struct RoundTrip {
    seed: u64,
}

impl BlockVisitor for RoundTrip {
    type Output = ();

    fn visit<B: QuantBlock>(self) {
        let mut rng = Rng::new(self.seed);
        let group = if B::TYPE == GgmlType::IQ4_XS {
            256
        } else {
            B::ELEMS.max(32)
        };
        let n = 64 * 256;
        let x = rng.hard_row(n, group);
        let mut blocks = vec![B::zeroed(); n / B::ELEMS];
        B::quantize(&x, &mut blocks);
        let mut y = vec![0.0f32; n];
        B::dequantize(&blocks, &mut y);
        let (factor, slack) = error_bound(B::TYPE);
        let mut zero_groups = 0;
        for (g, (xs, ys)) in x.chunks(group).zip(y.chunks(group)).enumerate() {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                zero_groups += 1;
                assert!(
                    ys.iter().all(|&v| v == 0.0),
                    "{}: zero group {g} not zero",
                    B::TYPE
                );
                continue;
            }
            for (i, (&a, &b)) in xs.iter().zip(ys).enumerate() {
                let bound = if B::ELEMS == 1 {
                    factor * a.abs() + slack
                } else {
                    factor * amax + slack
                };
                assert!(
                    (a - b).abs() <= bound,
                    "{}: group {g} element {i}: {a} -> {b} (amax {amax}, bound {bound})",
                    B::TYPE
                );
            }
        }
        assert!(
            zero_groups > 0,
            "{}: the test row has no all-zero group",
            B::TYPE
        );
    }
}

#[test]
fn quantize_dequantize_stays_within_format_bounds() {
    for (k, ty) in TYPES.into_iter().chain([GgmlType::F32]).enumerate() {
        quant::visit(
            ty,
            RoundTrip {
                seed: 100 + k as u64,
            },
        )
        .expect("supported");
    }
}

#[test]
fn activation_formats_round_trip_and_keep_their_sums() {
    let mut rng = Rng::new(7);
    let x = rng.hard_row(32 * 256, 256);
    let mut q8_1 = vec![quant::BlockQ8_1::zeroed(); x.len() / 32];
    quant::BlockQ8_1::quantize_act(&x, &mut q8_1);
    let mut q8_k = vec![quant::BlockQ8_K::zeroed(); x.len() / 256];
    quant::BlockQ8_K::quantize_act(&x, &mut q8_k);
    for (b, xs) in q8_1.iter().zip(x.chunks(32)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        assert_eq!(b.s, half::f16::from_f32(amax / 127.0 * sum as f32));
        for (&q, &v) in b.qs.iter().zip(xs) {
            assert!((q as f32 * b.d.to_f32() - v).abs() <= 0.0045 * amax + 1e-6);
        }
    }
    for (b, xs) in q8_k.iter().zip(x.chunks(256)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (g, &s) in b.bsums.iter().enumerate() {
            assert_eq!(
                s as i32,
                b.qs[16 * g..16 * g + 16]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>()
            );
        }
        for (&q, &v) in b.qs.iter().zip(xs) {
            assert!((q as f32 * b.d - v).abs() <= (0.5 / 127.0) * amax * 1.0001);
        }
    }
}

/// Bytes at the start of a block that hold `f16` scales (kept finite when the rest of
/// the block is filled with random bytes).
fn scale_bytes(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            Some(2)
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => Some(4),
        _ => None,
    }
}

struct SimdVsScalar {
    seed: u64,
    raw: bool,
}

impl BlockVisitor for SimdVsScalar {
    type Output = usize;

    fn visit<B: QuantBlock>(self) -> usize {
        let mut rng = Rng::new(self.seed);
        let mut compared = 0;
        for blocks in 1..=33usize {
            let n = blocks * B::ELEMS.max(32);
            let mut w = vec![B::zeroed(); n / B::ELEMS];
            B::quantize(&rng.hard_row(n, 32), &mut w);
            if self.raw {
                let Some(keep) = scale_bytes(B::TYPE) else {
                    return 0;
                };
                let size = std::mem::size_of::<B>();
                for block in bytemuck::cast_slice_mut::<B, u8>(&mut w).chunks_mut(size) {
                    block[keep..]
                        .iter_mut()
                        .for_each(|b| *b = rng.next_u64() as u8);
                }
            }
            let mut x = vec![<B::Act as Zeroable>::zeroed(); n / <B::Act as QuantBlock>::ELEMS];
            <B::Act as QuantBlock>::quantize_act(&rng.hard_row(n, 32), &mut x);

            let (mut wf, mut xf) = (vec![0.0f32; n], vec![0.0f32; n]);
            B::dequantize(&w, &mut wf);
            <B::Act as QuantBlock>::dequantize(&x, &mut xf);
            let magnitude: f64 = wf.iter().zip(&xf).map(|(a, b)| (a * b).abs() as f64).sum();

            let want = B::vec_dot(&w, &x);
            for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
                let dot = B::vec_dot_for(isa)
                    .unwrap_or_else(|| panic!("{} has no {} kernel", B::TYPE, isa.name()));
                let got = dot(&w, &x);
                let tol = 1e-5 * magnitude + 1e-30;
                assert!(
                    ((got - want) as f64).abs() <= tol,
                    "{} {} raw={} {blocks} blocks: {got} vs scalar {want} (tol {tol})",
                    B::TYPE,
                    isa.name(),
                    self.raw
                );
                compared += 1;
            }
        }
        compared
    }
}

#[test]
fn every_simd_dot_product_matches_scalar() {
    let simd_levels = Isa::available().len() - 1;
    for (k, ty) in TYPES.into_iter().chain([GgmlType::F32]).enumerate() {
        let compared = quant::visit(
            ty,
            SimdVsScalar {
                seed: 500 + k as u64,
                raw: false,
            },
        )
        .expect("supported");
        assert_eq!(compared, 33 * simd_levels, "{ty}");
        let raw = quant::visit(
            ty,
            SimdVsScalar {
                seed: 900 + k as u64,
                raw: true,
            },
        )
        .expect("supported");
        assert!(raw == 0 || raw == 33 * simd_levels, "{ty}");
    }
}
