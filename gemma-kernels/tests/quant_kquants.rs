//! The K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) against llama.cpp's own data:
//! - every K-quant tensor of `quant/manifest.json`: the bytes llama.cpp wrote dequantize
//!   bit-exactly to gguf-py's (= ggml's `to_float`) values, and quantizing the F32 source
//!   tensor reproduces them byte for byte (ggml's `quantize_row_q*_K_ref`);
//! - `quant/kernels`: the same two checks on a 16 x 1024 matrix with zero blocks, an
//!   outlier and an all-positive row, and every dot-product path (scalar and each SIMD
//!   level of this CPU) of each weight row with ggml's Q8_K activation rows against
//!   ggml's `vec_dot` results.

mod quant_common;

use gemma_gguf::{GgmlType, GgufFile};
use gemma_kernels::cpu::isa::Isa;
use gemma_kernels::quant::{
    BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K, QuantBlock, VecDot,
};
use quant_common::{block_mismatches, le_f32, read, read_f32, read_json, FIXTURES};

/// `bytes` copied into properly aligned blocks.
fn blocks<B: QuantBlock>(bytes: &[u8]) -> Vec<B> {
    let mut out = vec![B::zeroed(); bytes.len() / std::mem::size_of::<B>()];
    bytemuck::cast_slice_mut::<B, u8>(&mut out).copy_from_slice(bytes);
    out
}

/// Dequantizes `bytes` as `B` and compares bit for bit with `want`; quantizes `src` and
/// compares byte for byte with `bytes`. Returns the failures.
fn check_round_trip<B: QuantBlock>(
    label: &str,
    bytes: &[u8],
    want: &[f32],
    src: &[f32],
) -> Vec<String> {
    let mut failures = Vec::new();
    let w = blocks::<B>(bytes);
    let mut got = vec![0.0f32; want.len()];
    B::dequantize(&w, &mut got);
    let bad = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    if bad > 0 || got.len() != w.len() * B::ELEMS {
        failures.push(format!("{label}: {bad} dequantized values differ"));
    }
    let mut ours = vec![B::zeroed(); w.len()];
    B::quantize(src, &mut ours);
    let (first, count) =
        block_mismatches(bytemuck::cast_slice(&ours), bytes, std::mem::size_of::<B>());
    if count > 0 {
        failures.push(format!(
            "{label}: {count} of {} quantized blocks differ, first {first:?}",
            w.len()
        ));
    }
    failures
}

fn round_trip_for(
    ty: GgmlType,
    label: &str,
    bytes: &[u8],
    want: &[f32],
    src: &[f32],
) -> Vec<String> {
    match ty {
        GgmlType::Q2_K => check_round_trip::<BlockQ2_K>(label, bytes, want, src),
        GgmlType::Q3_K => check_round_trip::<BlockQ3_K>(label, bytes, want, src),
        GgmlType::Q4_K => check_round_trip::<BlockQ4_K>(label, bytes, want, src),
        GgmlType::Q5_K => check_round_trip::<BlockQ5_K>(label, bytes, want, src),
        GgmlType::Q6_K => check_round_trip::<BlockQ6_K>(label, bytes, want, src),
        _ => unreachable!("not a K-quant: {ty}"),
    }
}

const K_TYPES: [GgmlType; 5] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn manifest_tensors_dequantize_and_quantize_exactly() {
    let manifest = read_json("quant/manifest.json");
    let entries = manifest["entries"].as_array().expect("manifest entries");
    let mut covered = Vec::new();
    let mut failures = Vec::new();
    for e in entries {
        let ty = GgmlType::from_name(e["type"].as_str().expect("type")).expect("known type");
        if !K_TYPES.contains(&ty) {
            continue;
        }
        let label = format!("{ty} {} {}", e["file"], e["tensor"]);
        let offset = e["data_offset"].as_u64().expect("data_offset") as usize;
        let n_bytes = e["n_bytes"].as_u64().expect("n_bytes") as usize;
        let file = read(e["file"].as_str().expect("file"));
        let bytes = &file[offset..offset + n_bytes];
        let want = read_f32(e["dequant"].as_str().expect("dequant"));

        let source_path = format!(
            "{FIXTURES}/{}",
            e["source_file"].as_str().expect("source_file")
        );
        let source =
            GgufFile::open(&source_path).unwrap_or_else(|err| panic!("{source_path}: {err}"));
        let info = source
            .tensor(e["source_tensor"].as_str().expect("source_tensor"))
            .expect("source tensor");
        assert_eq!(info.ty, GgmlType::F32, "{label}: source is not F32");
        let src = le_f32(source.tensor_data(info));
        assert_eq!(src.len(), want.len(), "{label}: source and dequant sizes");

        failures.extend(round_trip_for(ty, &label, bytes, &want, &src));
        covered.push(ty);
    }
    assert!(failures.is_empty(), "{failures:#?}");
    for ty in K_TYPES {
        assert_eq!(
            covered.iter().filter(|&&t| t == ty).count(),
            2,
            "{ty}: manifest entries covered"
        );
    }
}

const ROWS: usize = 16;
const COLS: usize = 1024;
const X_ROWS: usize = 4;

/// Every dot-product path of `B` (scalar first) with its name.
fn dot_paths<B: QuantBlock<Act = BlockQ8_K>>() -> Vec<(&'static str, VecDot<B>)> {
    let mut paths: Vec<(&'static str, VecDot<B>)> = vec![("scalar", B::vec_dot)];
    for isa in Isa::available()
        .into_iter()
        .filter(|&isa| isa != Isa::Scalar)
    {
        let kernel =
            B::vec_dot_for(isa).unwrap_or_else(|| panic!("{}: no {} kernel", B::TYPE, isa.name()));
        paths.push((isa.name(), kernel));
    }
    paths
}

/// The `quant/kernels` checks for one K-quant type; returns the failures.
fn check_kernel_fixture<B: QuantBlock<Act = BlockQ8_K>>(files: &serde_json::Value) -> Vec<String> {
    let file = |key: &str| files[key].as_str().expect("fixture file name").to_string();
    let ty = B::TYPE;
    let w_bytes = read(&file("w_bytes"));
    let want = read_f32(&file("w_dequant"));
    let w_src = read_f32("quant/kernels/w_src.f32");
    let mut failures = check_round_trip::<B>(&format!("{ty} kernels W"), &w_bytes, &want, &w_src);

    let w = blocks::<B>(&w_bytes);
    let x = blocks::<BlockQ8_K>(&read(&file("x_bytes")));
    let y = read_f32(&file("y_llamacpp"));
    let per_row = COLS / B::ELEMS;
    assert_eq!(
        (w.len(), x.len(), y.len()),
        (ROWS * per_row, X_ROWS * per_row, X_ROWS * ROWS)
    );
    for (name, dot) in dot_paths::<B>() {
        for j in 0..X_ROWS {
            let want_row = &y[j * ROWS..(j + 1) * ROWS];
            let max = want_row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let xr = &x[j * per_row..(j + 1) * per_row];
            for r in 0..ROWS {
                let got = dot(&w[r * per_row..(r + 1) * per_row], xr);
                let want = want_row[r];
                if (got - want).abs() > 1e-5 * max {
                    failures.push(format!(
                        "{ty} {name}: x row {j}, w row {r}: {got} vs ggml {want} (row max {max})"
                    ));
                }
            }
        }
    }
    failures
}

#[test]
fn kernel_fixtures_match_ggml() {
    let manifest = read_json("quant/kernels/manifest.json");
    let mut failures = Vec::new();
    for ty in K_TYPES {
        let entry = &manifest["types"][ty.name()];
        assert_eq!(entry["activation_type"], "Q8_K", "{ty}: activation type");
        let files = &entry["files"];
        failures.extend(match ty {
            GgmlType::Q2_K => check_kernel_fixture::<BlockQ2_K>(files),
            GgmlType::Q3_K => check_kernel_fixture::<BlockQ3_K>(files),
            GgmlType::Q4_K => check_kernel_fixture::<BlockQ4_K>(files),
            GgmlType::Q5_K => check_kernel_fixture::<BlockQ5_K>(files),
            GgmlType::Q6_K => check_kernel_fixture::<BlockQ6_K>(files),
            _ => unreachable!(),
        });
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
