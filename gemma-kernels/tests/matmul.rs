//! `cpu::matmul` on random matrices of every weight type against a float64 reference
//! built from the dequantized weights and the dequantized quantized activations; the
//! one-token path against the many-token path; thread counts; shape errors.

use gemma_gguf::GgmlType;
use gemma_kernels::cpu::matmul::{matmul, MatmulScratch, WeightMatrix};
use gemma_kernels::quant::{self, BlockVisitor, QuantBlock};
use gemma_kernels::KernelError;

/// Every weight type of a Gemma 3 GGUF the engine supports.
const WEIGHT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// A small deterministic generator (splitmix64) so the tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1), with an occasional outlier ×20.
    fn value(&mut self) -> f32 {
        let r = self.next_u64();
        let v = (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        if r & 0xff == 0 {
            v * 20.0
        } else {
            v
        }
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
}

/// Quantizes `x` (rows of `cols`) to the activation format of `ty` and dequantizes it
/// again: the activation values the integer dot products really multiply.
fn dequantized_activations(ty: GgmlType, x: &[f32], cols: usize) -> Vec<f32> {
    struct Roundtrip<'a>(&'a [f32], usize);
    impl BlockVisitor for Roundtrip<'_> {
        type Output = Vec<f32>;
        fn visit<B: QuantBlock>(self) -> Vec<f32> {
            let (x, cols) = (self.0, self.1);
            let mut out = vec![0.0f32; x.len()];
            let mut blocks = vec![
                <B::Act as bytemuck::Zeroable>::zeroed();
                cols / <B::Act as QuantBlock>::ELEMS
            ];
            for (row, dst) in x.chunks(cols).zip(out.chunks_mut(cols)) {
                <B::Act as QuantBlock>::quantize_act(row, &mut blocks);
                <B::Act as QuantBlock>::dequantize(&blocks, dst);
            }
            out
        }
    }
    quant::visit(ty, Roundtrip(x, cols)).expect("supported type")
}

/// Quantized weight bytes of `rows x cols` random values.
fn random_weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut data = vec![0u8; rows * ty.row_bytes(cols as u64).expect("whole blocks") as usize];
    quant::quantize(ty, &rng.vec(rows * cols), &mut data).expect("quantize");
    data
}

fn run(w: &WeightMatrix, x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * w.rows];
    matmul(w, x, n, &mut y, &mut MatmulScratch::default()).expect("matmul");
    y
}

/// Multiplies a random `rows x cols` matrix of type `ty` with a random token through
/// `product` and checks every output against the f64 sum of the dequantized weight row
/// times the dequantized activations.
fn check_one_token(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
    product: impl Fn(&WeightMatrix, &[f32]) -> Vec<f32>,
) {
    let data = random_weights(ty, rows, cols, rng);
    let w = WeightMatrix::new(ty, &data, rows, cols).expect("weight matrix");
    let mut wd = vec![0.0f32; rows * cols];
    quant::dequantize(ty, &data, &mut wd).expect("dequantize");
    let x = rng.vec(cols);
    let xd = dequantized_activations(ty, &x, cols);
    let y = product(&w, &x);
    for (r, (row, &got)) in wd.chunks(cols).zip(&y).enumerate() {
        let (mut want, mut scale) = (0.0f64, 0.0f64);
        for (&w, &x) in row.iter().zip(&xd) {
            let p = f64::from(w) * f64::from(x);
            want += p;
            scale += p.abs();
        }
        let got = f64::from(got);
        assert!(
            (got - want).abs() <= tolerance(ty) * scale.max(1e-30),
            "{ty:?} rows={rows} cols={cols} r={r}: {got} vs {want} (scale {scale})"
        );
    }
}

/// Q4_1 and Q5_1 use the F16-rounded block sum of their Q8_1 activations for the
/// minimum term (as ggml does), which the dequantized activations do not show.
fn tolerance(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => 2e-3,
        _ => 2e-6,
    }
}

#[test]
fn every_weight_type_is_supported() {
    let missing: Vec<_> = WEIGHT_TYPES
        .iter()
        .filter(|&&t| !quant::is_supported(t))
        .collect();
    assert!(missing.is_empty(), "no kernels for {missing:?}");
}

#[test]
fn matches_f64_reference_for_every_type_and_shape() {
    let mut rng = Rng(42);
    let cols = 512;
    for ty in WEIGHT_TYPES.into_iter().filter(|&t| quant::is_supported(t)) {
        for rows in [7usize, 33, 130] {
            let data = random_weights(ty, rows, cols, &mut rng);
            let w = WeightMatrix::new(ty, &data, rows, cols).expect("weight matrix");
            let mut wd = vec![0.0f32; rows * cols];
            quant::dequantize(ty, &data, &mut wd).expect("dequantize");
            for n in [1usize, 3, 17] {
                let x = rng.vec(n * cols);
                let xd = dequantized_activations(ty, &x, cols);
                let y = run(&w, &x, n);
                for t in 0..n {
                    for r in 0..rows {
                        let (mut want, mut scale) = (0.0f64, 0.0f64);
                        for k in 0..cols {
                            let p = f64::from(wd[r * cols + k]) * f64::from(xd[t * cols + k]);
                            want += p;
                            scale += p.abs();
                        }
                        let got = f64::from(y[t * rows + r]);
                        assert!(
                            (got - want).abs() <= tolerance(ty) * scale.max(1e-30),
                            "{ty:?} rows={rows} n={n} t={t} r={r}: {got} vs {want} (scale {scale})"
                        );
                    }
                }
            }
        }
    }
}

/// The float formats' many-token path on rows whose length is no multiple of the SIMD
/// width (attention's key counts), against the f64 products of the same values.
#[test]
fn float_many_token_path_handles_odd_row_lengths() {
    let mut rng = Rng(11);
    for ty in [GgmlType::F32, GgmlType::F16] {
        for (rows, cols, n) in [(5usize, 37usize, 9usize), (17, 3, 4), (3, 129, 13)] {
            let data = random_weights(ty, rows, cols, &mut rng);
            let w = WeightMatrix::new(ty, &data, rows, cols).expect("weight matrix");
            let mut wd = vec![0.0f32; rows * cols];
            quant::dequantize(ty, &data, &mut wd).expect("dequantize");
            let x = rng.vec(n * cols);
            let xd = dequantized_activations(ty, &x, cols);
            let y = run(&w, &x, n);
            for t in 0..n {
                for r in 0..rows {
                    let (mut want, mut scale) = (0.0f64, 0.0f64);
                    for k in 0..cols {
                        let p = f64::from(wd[r * cols + k]) * f64::from(xd[t * cols + k]);
                        want += p;
                        scale += p.abs();
                    }
                    let got = f64::from(y[t * rows + r]);
                    assert!(
                        (got - want).abs() <= 1e-6 * scale.max(1e-30),
                        "{ty:?} rows={rows} cols={cols} t={t} r={r}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// The one-token path of the 32-value formats on rows of any number of blocks: the
/// AVX-512 kernels take four blocks per step (the last 1-3 blocks of a row go through
/// the format's dot product); rows of over 256 blocks are `long_rows_match_f64_reference`'s.
/// Against the f64 products of the same values.
#[test]
fn one_token_rows_of_any_block_count() {
    let mut rng = Rng(5);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
    ] {
        for (rows, blocks) in [(7usize, 1usize), (9, 2), (70, 3), (5, 5), (66, 7), (3, 20)] {
            check_one_token(ty, rows, 32 * blocks, &mut rng, |w, x| run(w, x, 1));
        }
    }
}

/// The one-token path of Q4_1 and Q5_1 on rows of any number of blocks (the AVX-512
/// kernels take four blocks per step, the last 1-3 go through the format's dot product)
/// against the scalar dot product of the same Q8_1 activations: ggml's minimum term uses
/// their F16-rounded sums, which an f64 reference of dequantized values does not have.
#[test]
fn one_token_rows_with_minimums_of_any_block_count() {
    fn check<B: QuantBlock>(rng: &mut Rng) {
        for (rows, blocks) in [
            (7usize, 1usize),
            (9, 2),
            (70, 3),
            (5, 5),
            (66, 7),
            (3, 20),
            (4, 64),
        ] {
            let cols = 32 * blocks;
            let mut w = vec![<B as bytemuck::Zeroable>::zeroed(); rows * blocks];
            B::quantize(&rng.vec(rows * cols), &mut w);
            let x = rng.vec(cols);
            let mut xq = vec![<B::Act as bytemuck::Zeroable>::zeroed(); blocks];
            <B::Act as QuantBlock>::quantize_act(&x, &mut xq);
            let matrix = WeightMatrix::new(B::TYPE, bytemuck::cast_slice(&w), rows, cols)
                .expect("weight matrix");
            let y = run(&matrix, &x, 1);
            for (r, (row, &got)) in w.chunks(blocks).zip(&y).enumerate() {
                let want = B::vec_dot(row, &xq);
                // Float summation order only: bounded by the sum of the blocks' magnitudes.
                let scale: f32 = row
                    .iter()
                    .zip(&xq)
                    .map(|(b, x)| {
                        B::vec_dot(std::slice::from_ref(b), std::slice::from_ref(x)).abs()
                    })
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-5 * (scale + 1.0),
                    "{:?} rows={rows} blocks={blocks} r={r}: {got} vs {want}",
                    B::TYPE
                );
            }
        }
    }
    let mut rng = Rng(11);
    check::<quant::BlockQ4_1>(&mut rng);
    check::<quant::BlockQ5_1>(&mut rng);
}

/// The many-token path (token tiles, four-token kernels where a format has one) against
/// the one-token path: the same integer sums, so equal up to float summation order.
#[test]
fn one_token_and_many_token_paths_agree() {
    let mut rng = Rng(7);
    let (rows, cols, n) = (161usize, 512usize, 19usize);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q6_K,
    ] {
        if !quant::is_supported(ty) {
            panic!("{ty:?} has no kernels");
        }
        let data = random_weights(ty, rows, cols, &mut rng);
        let w = WeightMatrix::new(ty, &data, rows, cols).expect("weight matrix");
        let x = rng.vec(n * cols);
        let batched = run(&w, &x, n);
        let mut scratch = MatmulScratch::default();
        for t in 0..n {
            let mut y = vec![f32::NAN; rows];
            matmul(&w, &x[t * cols..(t + 1) * cols], 1, &mut y, &mut scratch).expect("matvec");
            let max = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (r, (a, b)) in y.iter().zip(&batched[t * rows..(t + 1) * rows]).enumerate() {
                assert!(
                    (a - b).abs() <= 4e-6 * max,
                    "{ty:?} token {t} row {r}: {a} vs {b}"
                );
            }
        }
    }
}

/// Rows of more than 256 blocks (the 12B's `ffn_down`) take other one-token kernels for
/// Q4_0 and Q5_0 (four rows at a time, the rest one by one): row counts that leave every
/// remainder, cross the 64-row tasks, an odd number of blocks, two threads.
#[test]
fn long_rows_match_f64_reference() {
    let mut rng = Rng(7);
    let cols = 257 * 32;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        for rows in [1usize, 3, 6, 70, 131] {
            check_one_token(ty, rows, cols, &mut rng, |w, x| {
                pool.install(|| run(w, x, 1))
            });
        }
    }
}

#[test]
fn results_do_not_depend_on_thread_count_or_scratch_reuse() {
    let mut rng = Rng(9);
    let (rows, cols) = (200usize, 256usize);
    let data = random_weights(GgmlType::Q4_0, rows, cols, &mut rng);
    let w = WeightMatrix::new(GgmlType::Q4_0, &data, rows, cols).expect("weight matrix");
    let x = rng.vec(33 * cols);
    let mut scratch = MatmulScratch::default();
    for threads in [1usize, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        for n in [33usize, 2, 33, 1, 5] {
            let want = run(&w, &x[..n * cols], n);
            let mut y = vec![f32::NAN; n * rows];
            pool.install(|| matmul(&w, &x[..n * cols], n, &mut y, &mut scratch))
                .expect("matmul");
            assert_eq!(y, want, "threads={threads} n={n}");
        }
    }
}

#[test]
fn rejects_bad_shapes_and_types() {
    let data = vec![0u8; 3 * 18 * 2];
    assert!(WeightMatrix::new(GgmlType::Q4_0, &data, 3, 64).is_ok());
    assert!(matches!(
        WeightMatrix::new(GgmlType::Q4_0, &data, 4, 64),
        Err(KernelError::Length {
            expected: 144,
            found: 108,
            ..
        })
    ));
    assert!(matches!(
        WeightMatrix::new(GgmlType::Q4_0, &data, 3, 60),
        Err(KernelError::PartialBlock { .. })
    ));
    let w = WeightMatrix::new(GgmlType::Q4_0, &data, 3, 64).expect("weight matrix");
    let mut scratch = MatmulScratch::default();
    let mut y = vec![0.0f32; 3];
    assert!(matches!(
        matmul(&w, &[0.0; 63], 1, &mut y, &mut scratch),
        Err(KernelError::Length { .. })
    ));
    assert!(matches!(
        matmul(&w, &[0.0; 128], 2, &mut y, &mut scratch),
        Err(KernelError::Length { .. })
    ));
    // A type with no kernels: the shape is fine, the product is refused.
    let iq2 = vec![0u8; 2 * 66];
    let w = WeightMatrix::new(GgmlType::IQ2_XXS, &iq2, 2, 256).expect("shape is valid");
    let mut y = vec![0.0f32; 2];
    assert_eq!(
        matmul(&w, &[0.0; 256], 1, &mut y, &mut scratch),
        Err(KernelError::UnsupportedType(GgmlType::IQ2_XXS))
    );
    // F32 weights at an address that is not a multiple of 4.
    let words = [0u32; 9];
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let w = WeightMatrix::new(GgmlType::F32, &bytes[1..33], 4, 2).expect("shape is valid");
    let mut y = vec![0.0f32; 4];
    assert!(matmul(&w, &[1.0, 2.0], 1, &mut y, &mut scratch).is_err());
}

/// The one-token and many-token paths of every other SIMD level this CPU has (each picks
/// its kernels once per process from `GEMMA_ISA`; with AVX2, the AVX2 GEMMs): this test
/// binary's f64 checks run again in a child process per level.
#[test]
fn paths_of_every_isa_match_f64_reference() {
    use gemma_kernels::cpu::isa::{self, Isa};
    let checks = [
        "one_token_rows_of_any_block_count",
        "one_token_rows_with_minimums_of_any_block_count",
        "long_rows_match_f64_reference",
        "matches_f64_reference_for_every_type_and_shape",
        "float_many_token_path_handles_odd_row_lengths",
        "one_token_and_many_token_paths_agree",
    ];
    let exe = std::env::current_exe().expect("test binary path");
    for other in Isa::available()
        .into_iter()
        .filter(|&i| i != isa::current())
    {
        let out = std::process::Command::new(&exe)
            .args(checks)
            .args(["--exact", "--test-threads", "1"])
            .env("GEMMA_ISA", other.name())
            .output()
            .expect("run the test binary again");
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && log.contains(&format!("{} passed", checks.len())),
            "GEMMA_ISA={}: {log}{}",
            other.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("GEMMA_ISA={}: {} checks passed", other.name(), checks.len());
    }
}
