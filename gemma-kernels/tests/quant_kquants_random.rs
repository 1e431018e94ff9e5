//! The K-quants (Q2_K..Q6_K) on generated data:
//! - ggml's own quality test (`test-quantize-fns`: `0.1 + 2 cos(i + offset)` data,
//!   quantization RMSE and dot-product error thresholds per type) on every dot path;
//! - hard rows (scales over six decades, outliers 30-100x, all-zero super-blocks):
//!   zero super-blocks stay exactly zero, the error of every super-block stays within a
//!   per-type fraction of its largest value, and quantization is deterministic;
//! - every SIMD dot product of this CPU against the scalar oracle on random blocks
//!   (random bytes, so every bit pattern of scales and quants occurs) for 1..=9
//!   super-blocks, with random and with quantized activations.

mod quant_common;

use bytemuck::Zeroable;
use gemma_gguf::GgmlType;
use gemma_kernels::cpu::isa::Isa;
use gemma_kernels::quant::{
    BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K, QuantBlock, VecDot,
};
use half::f16;
use quant_common::Rng;

/// Every SIMD dot product of `B` this CPU runs, with its name; panics if an available
/// ISA has no kernel (each K-quant has one for every x86-64 level).
fn simd_paths<B: QuantBlock<Act = BlockQ8_K>>() -> Vec<(&'static str, VecDot<B>)> {
    Isa::available()
        .into_iter()
        .filter(|&isa| isa != Isa::Scalar)
        .map(|isa| {
            let kernel = B::vec_dot_for(isa)
                .unwrap_or_else(|| panic!("{}: no {} kernel", B::TYPE, isa.name()));
            (isa.name(), kernel)
        })
        .collect()
}

fn quantize<B: QuantBlock>(x: &[f32]) -> Vec<B> {
    let mut q = vec![B::zeroed(); x.len() / B::ELEMS];
    B::quantize(x, &mut q);
    q
}

fn dequantize<B: QuantBlock>(q: &[B]) -> Vec<f32> {
    let mut y = vec![0.0f32; q.len() * B::ELEMS];
    B::dequantize(q, &mut y);
    y
}

/// ggml's `test-quantize-fns` for one type: `array_rmse` (sqrt of the summed squared
/// error over n) of a quantize/dequantize round trip, and `|dot - float dot| / n` for the
/// scalar and every SIMD dot product.
fn ggml_quality_test<B: QuantBlock<Act = BlockQ8_K>>(max_rmse: f32, max_dot_error: f32) {
    const N: usize = 32 * 128;
    let data = |offset: f32| {
        (0..N)
            .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
            .collect::<Vec<f32>>()
    };
    let (x1, x2) = (data(0.0), data(1.0));
    let q1 = quantize::<B>(&x1);
    let sum: f64 = dequantize(&q1)
        .iter()
        .zip(&x1)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let rmse = sum.sqrt() as f32 / N as f32;
    assert!(
        rmse <= max_rmse,
        "{}: ggml total quantization error {rmse} > {max_rmse}",
        B::TYPE
    );

    let mut q2 = vec![BlockQ8_K::zeroed(); N / 256];
    BlockQ8_K::quantize_act(&x2, &mut q2);
    let exact: f32 = x1.iter().zip(&x2).map(|(a, b)| a * b).sum();
    let mut paths = simd_paths::<B>();
    paths.insert(0, ("scalar", B::vec_dot));
    for (name, dot) in paths {
        let err = (dot(&q1, &q2) - exact).abs() / N as f32;
        assert!(
            err <= max_dot_error,
            "{} {name}: ggml dot product error {err} > {max_dot_error}",
            B::TYPE
        );
    }
}

#[test]
fn ggml_quality_thresholds() {
    // ggml's MAX_QUANTIZATION_TOTAL_ERROR(_2BITS/_3BITS), MAX_DOT_PRODUCT_ERROR(_LOWBIT).
    ggml_quality_test::<BlockQ2_K>(0.0075, 0.04);
    ggml_quality_test::<BlockQ3_K>(0.0040, 0.04);
    ggml_quality_test::<BlockQ4_K>(0.002, 0.02);
    ggml_quality_test::<BlockQ5_K>(0.002, 0.02);
    ggml_quality_test::<BlockQ6_K>(0.002, 0.02);
}

/// Quantizes hard rows and checks each super-block: all-zero input gives all-zero bytes
/// and exact zeros, otherwise the RMS error is at most `bound` times the largest |x|.
/// Returns the worst ratio seen.
fn hard_rows<B: QuantBlock>(bound: f32) -> f32 {
    let mut rng = Rng::new(0x5eed_0000 + B::TYPE.id() as u64);
    let mut worst = 0.0f32;
    let mut zero_blocks = 0;
    for _ in 0..24 {
        let x = rng.hard_row(8 * 256, 256);
        let q = quantize::<B>(&x);
        assert!(
            bytemuck::cast_slice::<B, u8>(&q) == bytemuck::cast_slice::<B, u8>(&quantize::<B>(&x)),
            "{}: quantization is not deterministic",
            B::TYPE
        );
        let y = dequantize(&q);
        for (i, (xb, yb)) in x.chunks_exact(256).zip(y.chunks_exact(256)).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                zero_blocks += 1;
                assert!(
                    bytemuck::bytes_of(&q[i]).iter().all(|&b| b == 0),
                    "{}: zero block not all-zero bytes",
                    B::TYPE
                );
                assert!(
                    yb.iter().all(|&v| v == 0.0),
                    "{}: zero block does not dequantize to 0",
                    B::TYPE
                );
                continue;
            }
            let mse = xb
                .iter()
                .zip(yb)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                / 256.0;
            let ratio = mse.sqrt() / amax;
            worst = worst.max(ratio);
            assert!(
                ratio <= bound,
                "{} block {i}: rms error {} > {bound} x max |x| {amax}",
                B::TYPE,
                mse.sqrt()
            );
        }
    }
    assert!(zero_blocks > 0, "the hard rows contain zero super-blocks");
    worst
}

#[test]
fn hard_rows_stay_within_error_bounds() {
    // Bounds are 1.5x the worst block seen over these rows (an outlier sets each
    // super-block's range): about 1/(2^bits + 1) of the largest value.
    let worst = [
        ("Q2_K", hard_rows::<BlockQ2_K>(0.15)),
        ("Q3_K", hard_rows::<BlockQ3_K>(0.06)),
        ("Q4_K", hard_rows::<BlockQ4_K>(0.03)),
        ("Q5_K", hard_rows::<BlockQ5_K>(0.015)),
        ("Q6_K", hard_rows::<BlockQ6_K>(0.009)),
    ];
    eprintln!("worst rms error / max |x| per super-block: {worst:?}");
}

/// Byte offsets of the `f16` super-block scales inside a block of `ty`.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => unreachable!(),
    }
}

/// `n` blocks of random bytes with finite random super-block scales.
fn random_blocks<B: QuantBlock>(rng: &mut Rng, n: usize) -> Vec<B> {
    let mut blocks = vec![B::zeroed(); n];
    for b in blocks.iter_mut() {
        let bytes = bytemuck::bytes_of_mut(b);
        bytes.iter_mut().for_each(|v| *v = rng.next_u64() as u8);
        for &at in scale_offsets(B::TYPE) {
            let d = f16::from_f32((rng.uniform() - 0.3) * 0.01).to_le_bytes();
            bytes[at..at + 2].copy_from_slice(&d);
        }
    }
    blocks
}

/// `n` Q8_K blocks with random quants in -127..=127, consistent sums, random scale.
fn random_q8k(rng: &mut Rng, n: usize) -> Vec<BlockQ8_K> {
    (0..n)
        .map(|_| {
            let mut b = BlockQ8_K::zeroed();
            b.qs.iter_mut()
                .for_each(|q| *q = ((rng.next_u64() % 255) as i32 - 127) as i8);
            for (s, group) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = group.iter().map(|&q| q as i16).sum();
            }
            b.d = rng.uniform() * 0.05 + 1e-4;
            b
        })
        .collect()
}

/// Byte range of the quant bits (everything but the scales) inside a block of `ty`.
fn quant_bytes(ty: GgmlType) -> std::ops::Range<usize> {
    match ty {
        GgmlType::Q2_K => 16..80,
        GgmlType::Q3_K => 0..96,
        GgmlType::Q4_K => 16..144,
        GgmlType::Q5_K => 16..176,
        GgmlType::Q6_K => 0..192,
        _ => unreachable!(),
    }
}

/// The scale float rounding is relative to, in f64: each weight is `c + (w - c)` with
/// `c` its value at quant 0 (the minimum or constant-offset term every kernel computes
/// separately, from the activation sums), so `Σ (|w - c| + |c|) |x|`.
fn magnitude<B: QuantBlock>(w: &[B], x: &[BlockQ8_K]) -> f64 {
    let mut offsets = w.to_vec();
    for b in offsets.iter_mut() {
        bytemuck::bytes_of_mut(b)[quant_bytes(B::TYPE)].fill(0);
    }
    let (wd, cd, xd) = (dequantize(w), dequantize(&offsets), dequantize(x));
    let terms = wd.iter().zip(&cd).zip(&xd);
    terms
        .map(|((w, c), x)| ((*w as f64 - *c as f64).abs() + (*c as f64).abs()) * (*x as f64).abs())
        .sum()
}

fn simd_matches_scalar<B: QuantBlock<Act = BlockQ8_K>>() {
    let mut rng = Rng::new(0xd07 + B::TYPE.id() as u64);
    let paths = simd_paths::<B>();
    for nb in 1..=9 {
        for round in 0..6 {
            let w = if round % 2 == 0 {
                random_blocks::<B>(&mut rng, nb)
            } else {
                quantize::<B>(&rng.hard_row(nb * 256, 256))
            };
            let x = if round < 3 {
                random_q8k(&mut rng, nb)
            } else {
                let mut x = vec![BlockQ8_K::zeroed(); nb];
                BlockQ8_K::quantize_act(&rng.hard_row(nb * 256, 256), &mut x);
                x
            };
            let want = B::vec_dot(&w, &x);
            let tol = 1e-5 * magnitude(&w, &x) + f64::MIN_POSITIVE;
            for (name, dot) in &paths {
                let got = dot(&w, &x);
                assert!(
                    ((got - want) as f64).abs() <= tol,
                    "{} {name}: {nb} blocks round {round}: {got} vs scalar {want} (tolerance {tol})",
                    B::TYPE
                );
            }
        }
    }
}

#[test]
fn simd_dot_products_match_scalar() {
    simd_matches_scalar::<BlockQ2_K>();
    simd_matches_scalar::<BlockQ3_K>();
    simd_matches_scalar::<BlockQ4_K>();
    simd_matches_scalar::<BlockQ5_K>();
    simd_matches_scalar::<BlockQ6_K>();
}
