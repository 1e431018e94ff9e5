//! Every tensor of `quant/manifest.json` of the formats F16, BF16, Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, IQ4_NL and IQ4_XS: the bytes llama.cpp wrote dequantize bit-exactly to
//! gguf-py's dequantization, and quantizing the F32 source tensor reproduces them byte
//! for byte (llama.cpp's `ggml_quantize_chunk`).

mod quant_common;

use gemma_gguf::{GgmlType, GgufFile};
use gemma_kernels::quant;
use quant_common::{block_mismatches, le_f32, read, read_f32, read_json, FIXTURES, TYPES};
use std::collections::BTreeSet;

#[test]
fn manifest_tensors_dequantize_and_quantize_exactly() {
    let manifest = read_json("quant/manifest.json");
    let entries = manifest["entries"].as_array().expect("manifest entries");
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for e in entries {
        let ty = GgmlType::from_name(e["type"].as_str().expect("type")).expect("known type");
        if !TYPES.contains(&ty) {
            continue;
        }
        let label = format!("{ty} {} {}", e["file"], e["tensor"]);
        let offset = e["data_offset"].as_u64().expect("data_offset") as usize;
        let n_bytes = e["n_bytes"].as_u64().expect("n_bytes") as usize;
        let file = read(e["file"].as_str().expect("file"));
        let bytes = &file[offset..offset + n_bytes];

        let want = read_f32(e["dequant"].as_str().expect("dequant"));
        let mut got = vec![0.0f32; want.len()];
        quant::dequantize(ty, bytes, &mut got).unwrap_or_else(|err| panic!("{label}: {err}"));
        let bad = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        if bad > 0 {
            failures.push(format!("{label}: {bad} dequantized values differ"));
        }

        let source = GgufFile::open(format!(
            "{FIXTURES}/{}",
            e["source_file"].as_str().expect("source")
        ))
        .expect("F32 source GGUF");
        let info = source
            .tensor(e["source_tensor"].as_str().expect("source_tensor"))
            .expect("source tensor");
        assert_eq!(info.ty, GgmlType::F32);
        let src = le_f32(source.tensor_data(info));
        let mut ours = vec![0u8; n_bytes];
        quant::quantize(ty, &src, &mut ours).unwrap_or_else(|err| panic!("{label}: {err}"));
        let (first, count) = block_mismatches(&ours, bytes, ty.block_bytes());
        if count > 0 {
            failures.push(format!(
                "{label}: {count} quantized blocks differ, first {first:?}"
            ));
        }
        covered.insert(ty);
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        covered,
        TYPES.into_iter().collect(),
        "manifest types covered"
    );
}
