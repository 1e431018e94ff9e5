//! Every NEON kernel against its scalar twin, in both integer forms (baseline NEON and
//! `dotprod`, the latter where the CPU has it), on many row lengths (odd block counts
//! included) of two kinds of data:
//! - rows quantized from random values (scales over six decades, outliers, zero blocks);
//! - random bytes (every bit pattern of quants, block scales and bit planes, and
//!   activations of -128), with only the float scale fields kept finite.
//!
//! Results must agree up to float summation order: within `1e-5` of the sum of the
//! magnitudes of the products and of the per-block results.

use crate::cpu::isa::{has_neon_dotprod, Isa};
use crate::quant::{QuantBlock, VecDot};
use bytemuck::Zeroable;
use gemma_gguf::GgmlType;
use half::{bf16, f16};

/// A xorshift64* stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values of scales over six decades, an outlier and an all-zero stretch.
    fn row(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n)
            .map(|i| self.unit() * 10f32.powi((i / 64 % 7) as i32 - 3))
            .collect();
        v[n / 3] *= 60.0;
        let zeros = n / 4;
        v[n - zeros..].fill(0.0);
        v
    }
}

/// Byte offsets of the float scale fields of a block (`true` for `f32`, else `f16`).
fn float_fields(ty: GgmlType) -> &'static [(usize, bool)] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[(0, false)],
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[(0, false)],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => &[(0, false), (2, false)],
        GgmlType::Q4_K | GgmlType::Q5_K => &[(0, false), (2, false)],
        GgmlType::Q2_K => &[(80, false), (82, false)],
        GgmlType::Q3_K => &[(108, false)],
        GgmlType::Q6_K => &[(208, false)],
        GgmlType::Q8_K => &[(0, true)],
        other => panic!("no float field table for {other}"),
    }
}

/// `n` blocks of random bytes, float scale fields set to finite random values.
fn random_blocks<B: QuantBlock>(rng: &mut Rng, n: usize) -> Vec<B> {
    let mut blocks = vec![B::zeroed(); n];
    let size = std::mem::size_of::<B>();
    for block in bytemuck::cast_slice_mut::<B, u8>(&mut blocks).chunks_mut(size) {
        block.iter_mut().for_each(|b| *b = rng.next() as u8);
        for &(at, is_f32) in float_fields(B::TYPE) {
            if is_f32 {
                let v = rng.unit() * 1e-2;
                block[at..at + 4].copy_from_slice(&v.to_le_bytes());
            } else {
                let v = f16::from_f32(rng.unit() * 2.0);
                block[at..at + 2].copy_from_slice(&v.to_bits().to_le_bytes());
            }
        }
    }
    blocks
}

/// Asserts `got` equals the scalar dot of `w` and `x` up to float summation order.
fn assert_close<B: QuantBlock>(what: &str, got: f32, w: &[B], x: &[B::Act]) {
    let want = B::vec_dot(w, x);
    let n = w.len().min(x.len());
    let (mut wf, mut xf) = (vec![0.0f32; n * B::ELEMS], vec![0.0f32; n * B::ELEMS]);
    B::dequantize(&w[..n], &mut wf);
    let act_blocks = n * B::ELEMS / <B::Act as QuantBlock>::ELEMS;
    <B::Act as QuantBlock>::dequantize(&x[..act_blocks], &mut xf);
    let products: f64 = wf.iter().zip(&xf).map(|(a, b)| (a * b).abs() as f64).sum();
    let per_act = B::ELEMS / <B::Act as QuantBlock>::ELEMS;
    let blocks: f64 = (0..n)
        .map(|i| {
            let xs = &x[i * per_act..(i + 1) * per_act];
            B::vec_dot(&w[i..i + 1], xs).abs() as f64
        })
        .sum();
    let tol = 1e-5 * (products + blocks) + 1e-30;
    assert!(
        got.is_finite() && ((got - want) as f64).abs() <= tol,
        "{} {what}, {n} blocks: {got} vs scalar {want} (tol {tol})",
        B::TYPE
    );
}

/// Block counts: every count up to 17, then odd and even ones around powers of two.
fn block_counts(elems: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = (1..=17).collect();
    if elems < 256 {
        counts.extend([31, 32, 33, 63, 65, 127]);
    }
    counts
}

/// Checks one integer kernel in both forms against the scalar oracle.
pub(super) fn check_both<B: QuantBlock>(widening: VecDot<B>, sdot: VecDot<B>) {
    assert!(Isa::Neon.is_supported(), "AArch64 without NEON");
    let mut forms = vec![("neon", widening)];
    if has_neon_dotprod() {
        forms.push(("neon+dotprod", sdot));
    } else {
        eprintln!(
            "no dotprod on this CPU: only the baseline NEON form of {}",
            B::TYPE
        );
    }
    let act_elems = <B::Act as QuantBlock>::ELEMS;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ B::TYPE.id() as u64);
    for blocks in block_counts(B::ELEMS) {
        let n = blocks * B::ELEMS;
        let mut w = vec![B::zeroed(); blocks];
        B::quantize(&rng.row(n), &mut w);
        let mut x = vec![<B::Act as Zeroable>::zeroed(); n / act_elems];
        <B::Act as QuantBlock>::quantize_act(&rng.row(n), &mut x);
        let (w_raw, x_raw) = (
            random_blocks::<B>(&mut rng, blocks),
            random_blocks(&mut rng, n / act_elems),
        );
        for (name, dot) in &forms {
            assert_close(&format!("{name} quantized"), dot(&w, &x), &w, &x);
            assert_close(
                &format!("{name} random bytes"),
                dot(&w_raw, &x_raw),
                &w_raw,
                &x_raw,
            );
            // A longer weight row reads only the blocks the activation row has.
            let short = &x[..x.len() - B::ELEMS / act_elems];
            assert_close(&format!("{name} short x"), dot(&w, short), &w, short);
        }
    }
}

/// One float kernel against the scalar oracle on lengths 0..=70 and a few long ones.
fn check_float<T: QuantBlock<Act = T>>(dot: VecDot<T>, from_f32: fn(f32) -> T) {
    let mut rng = Rng(0x51_7cc1_b727_220a ^ T::TYPE.id() as u64);
    for n in (0..=70).chain([255, 256, 1001, 4099]) {
        let w: Vec<T> = rng.row(n.max(4))[..n]
            .iter()
            .map(|&v| from_f32(v))
            .collect();
        let x: Vec<T> = rng.row(n.max(4))[..n]
            .iter()
            .map(|&v| from_f32(v))
            .collect();
        if n == 0 {
            assert_eq!(dot(&w, &x), 0.0, "{} empty", T::TYPE);
            continue;
        }
        assert_close("neon", dot(&w, &x), &w, &x);
    }
}

#[test]
fn float_kernels_match_scalar() {
    use super::neon_float;
    check_float::<f32>(neon_float::f32().expect("NEON"), |v| v);
    check_float::<f16>(neon_float::f16().expect("NEON"), f16::from_f32);
    // Subnormal halves (below 6.1e-5) convert exactly too.
    check_float::<f16>(neon_float::f16().expect("NEON"), |v| {
        f16::from_f32(v * 1e-4)
    });
    check_float::<bf16>(neon_float::bf16().expect("NEON"), bf16::from_f32);
}

#[test]
fn neon_is_selected_for_every_format() {
    use crate::quant::*;
    assert!(Isa::available().contains(&Isa::Neon));
    assert!(BlockQ4_0::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ4_1::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ5_0::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ5_1::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ8_0::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockIQ4_NL::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockIQ4_XS::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ2_K::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ3_K::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ4_K::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ5_K::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ6_K::vec_dot_for(Isa::Neon).is_some());
    assert!(<f32 as QuantBlock>::vec_dot_for(Isa::Neon).is_some());
    assert!(<f16 as QuantBlock>::vec_dot_for(Isa::Neon).is_some());
    assert!(<bf16 as QuantBlock>::vec_dot_for(Isa::Neon).is_some());
    assert!(BlockQ4_0::vec_dot_for(Isa::Avx2).is_none());
}
