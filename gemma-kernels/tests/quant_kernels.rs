//! The kernel fixtures of `quant/kernels` (ggml's own CPU functions on a 16 x 1024
//! weight matrix with zero blocks, an outlier and an all-positive row, and 4 hard
//! activation rows), for F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and IQ4_XS:
//! dequantization bit-exact, weight and activation quantization byte-exact, and every
//! dot-product path (scalar and each SIMD level of this CPU) against ggml's `vec_dot`.

mod quant_common;

use bytemuck::Zeroable;
use gemma_gguf::GgmlType;
use gemma_kernels::cpu::isa::Isa;
use gemma_kernels::quant::{self, BlockVisitor, QuantBlock};
use quant_common::{block_mismatches, read, read_f32, read_json, TYPES};

const ROWS: usize = 16;
const COLS: usize = 1024;
const X_ROWS: usize = 4;

/// `bytes` copied into properly aligned blocks.
fn blocks<B: QuantBlock>(bytes: &[u8]) -> Vec<B> {
    let mut out = vec![B::zeroed(); bytes.len() / std::mem::size_of::<B>()];
    bytemuck::cast_slice_mut::<B, u8>(&mut out).copy_from_slice(bytes);
    out
}

/// Checks one type against its fixture files; returns the failures.
struct CheckType {
    files: serde_json::Value,
}

impl BlockVisitor for CheckType {
    type Output = Vec<String>;

    fn visit<B: QuantBlock>(self) -> Vec<String> {
        let file = |key: &str| {
            let rel = self.files[key].as_str().expect("fixture file name");
            rel.strip_prefix("quant/")
                .map(|r| format!("quant/{r}"))
                .expect("quant/ path")
        };
        let ty = B::TYPE;
        let mut failures = Vec::new();

        let w_bytes = read(&file("w_bytes"));
        let w = blocks::<B>(&w_bytes);
        let want = read_f32(&file("w_dequant"));
        let mut got = vec![0.0f32; ROWS * COLS];
        B::dequantize(&w, &mut got);
        let bad = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        if bad > 0 {
            failures.push(format!("{ty}: {bad} dequantized weights differ"));
        }

        let w_src = read_f32("quant/kernels/w_src.f32");
        let mut ours = vec![B::zeroed(); w.len()];
        B::quantize(&w_src, &mut ours);
        let (first, count) =
            block_mismatches(bytemuck::cast_slice(&ours), &w_bytes, ty.block_bytes());
        if count > 0 {
            failures.push(format!(
                "{ty}: {count} weight blocks differ, first {first:?}"
            ));
        }

        let x_bytes = read(&file("x_bytes"));
        let x = blocks::<B::Act>(&x_bytes);
        let x_src = read_f32("quant/kernels/x_src.f32");
        let mut ours = vec![B::Act::zeroed(); x.len()];
        <B::Act as QuantBlock>::quantize_act(&x_src, &mut ours);
        let block = std::mem::size_of::<B::Act>();
        let (first, count) = block_mismatches(bytemuck::cast_slice(&ours), &x_bytes, block);
        if count > 0 {
            failures.push(format!(
                "{ty}: {count} activation blocks differ, first {first:?}"
            ));
        }

        let y_ref = read_f32(&file("y_llamacpp"));
        let (w_row, x_row) = (w.len() / ROWS, x.len() / X_ROWS);
        for isa in Isa::available() {
            let dot = match isa {
                Isa::Scalar => B::vec_dot,
                _ => match B::vec_dot_for(isa) {
                    Some(f) => f,
                    None => {
                        failures.push(format!("{ty}: no {} kernel", isa.name()));
                        continue;
                    }
                },
            };
            for j in 0..X_ROWS {
                let want = &y_ref[j * ROWS..(j + 1) * ROWS];
                let max = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for r in 0..ROWS {
                    let got = dot(
                        &w[r * w_row..(r + 1) * w_row],
                        &x[j * x_row..(j + 1) * x_row],
                    );
                    if (got - want[r]).abs() > 1e-5 * max {
                        failures.push(format!(
                            "{ty} {}: x row {j} w row {r}: {got} vs ggml {} (row max {max})",
                            isa.name(),
                            want[r]
                        ));
                    }
                }
            }
        }
        failures
    }
}

#[test]
fn kernel_fixtures_match_ggml() {
    let manifest = read_json("quant/kernels/manifest.json");
    assert_eq!(
        manifest["w_shape_rows_cols"],
        serde_json::json!([ROWS, COLS])
    );
    assert_eq!(manifest["x_shape"], serde_json::json!([X_ROWS, COLS]));
    let types = manifest["types"].as_object().expect("types");
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, entry) in types {
        let ty = GgmlType::from_name(name).expect("known type");
        if !TYPES.contains(&ty) {
            continue;
        }
        let check = CheckType {
            files: entry["files"].clone(),
        };
        failures.extend(quant::visit(ty, check).expect("supported type"));
        checked += 1;
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(checked, TYPES.len());
}
