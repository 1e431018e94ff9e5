//! `cpu::matmul` against ggml's own `vec_dot` outputs (`quant/kernels` fixtures): W is
//! 16 rows × 1024 quantized by llama.cpp, X is 4 rows chosen to be hard (huge dynamic
//! range, a zero block, small positive values).

use gemma_gguf::GgmlType;
use gemma_kernels::cpu::matmul::{matmul, MatmulScratch, WeightMatrix};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/quant/kernels"
);
const ROWS: usize = 16;
const COLS: usize = 1024;
const TOKENS: usize = 4;

/// The 14 types of the fixture set.
const TYPES: [GgmlType; 14] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

fn read(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("fixture {path} missing ({e}): see ../shared/fixtures"))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Our `y[t][r]` against llama.cpp's, within `1e-4` of the largest |y| of token `t`.
fn check(ty: GgmlType, ours: &[f32], theirs: &[f32], what: &str) {
    for t in 0..TOKENS {
        let row = &theirs[t * ROWS..(t + 1) * ROWS];
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for r in 0..ROWS {
            let (got, want) = (ours[t * ROWS + r], row[r]);
            assert!(
                (got - want).abs() <= 1e-4 * max,
                "{ty:?} {what}: token {t} row {r}: ours {got} vs llama.cpp {want} (row max {max})"
            );
        }
    }
}

#[test]
fn matmul_matches_llamacpp_vec_dot_for_every_fixture_type() {
    let x = read_f32("x_src.f32");
    assert_eq!(x.len(), TOKENS * COLS, "x_src.f32 shape");
    let mut scratch = MatmulScratch::default();
    for ty in TYPES {
        let prefix = ty.name().to_lowercase();
        let w_bytes = read(&format!("{prefix}.w.bin"));
        let want = read_f32(&format!("{prefix}.y_llamacpp.f32"));
        assert_eq!(want.len(), TOKENS * ROWS, "{prefix}.y_llamacpp.f32 shape");
        let w = WeightMatrix::new(ty, &w_bytes, ROWS, COLS).expect("fixture weight shape");

        let mut batched = vec![f32::NAN; TOKENS * ROWS];
        matmul(&w, &x, TOKENS, &mut batched, &mut scratch)
            .unwrap_or_else(|e| panic!("{ty:?}: {e}"));
        check(ty, &batched, &want, "4 tokens");

        let mut single = vec![f32::NAN; TOKENS * ROWS];
        for (xt, yt) in x.chunks(COLS).zip(single.chunks_mut(ROWS)) {
            matmul(&w, xt, 1, yt, &mut scratch).unwrap_or_else(|e| panic!("{ty:?}: {e}"));
        }
        check(ty, &single, &want, "one token at a time");
    }
}
