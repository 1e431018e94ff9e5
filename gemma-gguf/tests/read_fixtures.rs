//! Reading every GGUF of the shared fixtures and the real 270M model, checked against the
//! values the fixtures' README, manifests and gguf-py 0.19 report.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::sha256::sha256_hex;
use gemma_gguf::{keys, GgmlType, GgufError, GgufFile, Value};

fn gguf_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    files
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// Every tensor's bytes are inside the file, aligned, and in order without overlap.
fn check_layout(file: &GgufFile) {
    let mut spans: Vec<_> = file
        .tensors()
        .iter()
        .map(|t| (t.offset, t.offset + t.n_bytes))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlap {pair:?}");
    }
    for t in file.tensors() {
        assert_eq!(
            t.offset % file.alignment(),
            file.data_offset() % file.alignment()
        );
        assert!(t.offset >= file.data_offset());
        assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(file.tensor(&t.name), Some(t));
        assert_eq!(
            Some(t.n_bytes),
            t.ty.row_bytes(t.row_len()).map(|r| r * t.n_rows())
        );
    }
}

#[test]
fn gguf_file_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<GgufFile>();
}

#[test]
fn every_fixture_gguf_parses() {
    let root = common::fixtures();
    let mut count = 0;
    for dir in ["tiny", "tokenizer", "vision"] {
        for path in gguf_files(&root.join(dir)) {
            let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(file.version(), 3, "{}", path.display());
            check_layout(&file);
            count += 1;
        }
    }
    assert_eq!(
        count,
        16 + 1 + 2,
        "expected 16 tiny models, the vocab file and 2 mmproj files"
    );
}

#[test]
fn tiny_t1_metadata_matches_readme() {
    let file =
        GgufFile::open(common::fixtures().join("tiny/tiny-gemma3-t1-f32.gguf")).expect("open");
    let md = file.metadata();
    use keys::gemma3::*;
    assert_eq!(md.string(keys::GENERAL_ARCHITECTURE).unwrap(), "gemma3");
    assert_eq!(md.u32(EMBEDDING_LENGTH).unwrap(), 256);
    assert_eq!(md.u32(BLOCK_COUNT).unwrap(), 7);
    assert_eq!(md.u32(HEAD_COUNT).unwrap(), 4);
    assert_eq!(md.u32(HEAD_COUNT_KV).unwrap(), 2);
    assert_eq!(md.u32(KEY_LENGTH).unwrap(), 64);
    assert_eq!(md.u32(VALUE_LENGTH).unwrap(), 64);
    assert_eq!(md.u32(FEED_FORWARD_LENGTH).unwrap(), 256);
    assert_eq!(md.u32(SLIDING_WINDOW).unwrap(), 8);
    assert_eq!(md.u32(CONTEXT_LENGTH).unwrap(), 256);
    assert_eq!(md.f32(ROPE_FREQ_BASE).unwrap(), 1e6);
    assert_eq!(md.string(ROPE_SCALING_TYPE).unwrap(), "linear");
    assert_eq!(md.f32(ROPE_SCALING_FACTOR).unwrap(), 8.0);
    assert_eq!(md.f32(RMS_EPSILON).unwrap(), 1e-6);
    assert_eq!(md.u32(keys::GENERAL_FILE_TYPE).unwrap(), 0);

    let tokens = md.string_array(keys::TOKENIZER_TOKENS).unwrap();
    assert_eq!(tokens.len(), 512);
    let expected = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<0x00>",
    ];
    assert_eq!(tokens.iter().take(7).collect::<Vec<_>>(), expected);
    assert_eq!(tokens.get(261), Some("<0xFF>"));
    assert_eq!(tokens.get(512), None);
    let types = md.i32_array(keys::TOKENIZER_TOKEN_TYPE).unwrap();
    assert_eq!(
        (types[4], types[6], types[300]),
        (3, 6, 1),
        "CONTROL, BYTE, NORMAL"
    );
    let scores = md.f32_array(keys::TOKENIZER_SCORES).unwrap();
    assert_eq!(scores.len(), 512);
    assert_eq!(md.u32(keys::TOKENIZER_BOS_ID).unwrap(), 2);
    assert!(md.bool(keys::TOKENIZER_ADD_BOS).unwrap());
    assert!(!md.bool(keys::TOKENIZER_ADD_SPACE_PREFIX).unwrap());

    assert_eq!(file.tensors().len(), 93);
    let shape = |n: &str| {
        file.tensor(n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .dims
            .clone()
    };
    assert_eq!(shape("token_embd.weight"), [256, 512]);
    assert_eq!(shape("blk.0.attn_k.weight"), [256, 128]);
    assert_eq!(shape("blk.6.attn_q_norm.weight"), [64]);
    assert!(file.tensor("output.weight").is_none());
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.row_len(), embd.n_rows(), embd.n_elements()),
        (256, 512, 256 * 512)
    );
}

#[test]
fn tiny_tensor_types_match_quantization_record() {
    let root = common::fixtures();
    let record = json(&root.join("tiny/t1_quantization.json"));
    let files = record["files"].as_object().expect("files");
    assert_eq!(files.len(), 16);
    for (name, entry) in files {
        let file = GgufFile::open(root.join("tiny").join(name)).expect("open");
        if let Some(size) = entry.get("size_bytes") {
            assert_eq!(file.bytes().len() as u64, size.as_u64().unwrap(), "{name}");
        }
        assert_eq!(
            u64::from(file.metadata().u32(keys::GENERAL_FILE_TYPE).unwrap()),
            entry["llama_ftype"].as_u64().unwrap(),
            "{name}"
        );
        // The F32 source records only per-type counts; the quantized files every tensor.
        let mut counts = BTreeMap::new();
        for t in file.tensors() {
            *counts.entry(t.ty.name().to_owned()).or_insert(0u64) += 1;
        }
        if let Some(expected) = entry.get("type_counts").and_then(|c| c.as_object()) {
            let expected: BTreeMap<_, _> = expected
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect();
            assert_eq!(counts, expected, "{name}");
        }
        match entry.get("tensor_types").and_then(|t| t.as_object()) {
            Some(types) => {
                assert_eq!(types.len(), file.tensors().len(), "{name}");
                for (tensor, ty) in types {
                    let info = file
                        .tensor(tensor)
                        .unwrap_or_else(|| panic!("{name}: {tensor} missing"));
                    assert_eq!(info.ty.name(), ty.as_str().unwrap(), "{name}: {tensor}");
                }
            }
            None => assert_eq!(counts.get("F32"), Some(&93), "{name}"),
        }
    }
}

#[test]
fn quant_manifest_offsets_sizes_and_hashes() {
    let root = common::fixtures();
    let manifest = json(&root.join("quant/manifest.json"));
    let entries = manifest["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 28);
    for e in entries {
        let file = GgufFile::open(root.join(e["file"].as_str().unwrap())).expect("open");
        let name = e["tensor"].as_str().unwrap();
        let t = file.tensor(name).expect("tensor");
        assert_eq!(t.ty.name(), e["type"].as_str().unwrap());
        let ne: Vec<u64> = e["gguf_ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, ne);
        assert_eq!(
            t.offset,
            e["data_offset"].as_u64().unwrap(),
            "{name} offset"
        );
        assert_eq!(t.n_bytes, e["n_bytes"].as_u64().unwrap(), "{name} size");
        assert_eq!(
            sha256_hex(file.tensor_data(t)),
            e["raw_sha256"].as_str().unwrap(),
            "{name} bytes"
        );
    }
}

#[test]
fn vocab_gguf_has_the_gemma3_vocabulary() {
    let file =
        GgufFile::open(common::fixtures().join("tokenizer/gemma3-vocab.gguf")).expect("open");
    assert!(file.tensors().is_empty());
    let md = file.metadata();
    let tokens = md.string_array(keys::TOKENIZER_TOKENS).unwrap();
    assert_eq!(tokens.len(), 262_144);
    assert_eq!(tokens.get(2), Some("<bos>"));
    assert_eq!(tokens.get(105), Some("<start_of_turn>"));
    assert_eq!(tokens.get(106), Some("<end_of_turn>"));
    assert_eq!(tokens.get(138), Some("  "));
    assert_eq!(tokens.get(238), Some("<0x00>"));
    assert_eq!(tokens.get(255_999), Some("<start_of_image>"));
    assert_eq!(tokens.iter().count(), 262_144);
    assert_eq!(md.f32_array(keys::TOKENIZER_SCORES).unwrap().len(), 262_144);
    assert_eq!(md.i32_array(keys::TOKENIZER_TOKEN_TYPE).unwrap()[105], 3);
    assert!(md
        .string(keys::TOKENIZER_CHAT_TEMPLATE)
        .unwrap()
        .starts_with("{{ bos_token }}"));
}

#[test]
fn vision_mmproj_metadata() {
    let file =
        GgufFile::open(common::fixtures().join("vision/mmproj-tiny-f16.gguf")).expect("open");
    let md = file.metadata();
    assert_eq!(md.string(keys::GENERAL_ARCHITECTURE).unwrap(), "clip");
    assert_eq!(md.u32("clip.vision.image_size").unwrap(), 224);
    assert_eq!(md.f32_array("clip.vision.image_mean").unwrap().len(), 3);
    assert_eq!(file.tensors().len(), 39);
    let patch = file.tensor("v.patch_embd.weight").unwrap();
    assert_eq!(patch.dims, [14, 14, 3, 64]);
    assert_eq!(patch.offset, 85440);
    let proj = file.tensor("mm.input_projection.weight").unwrap();
    assert_eq!(
        (proj.ty, proj.offset, proj.n_bytes),
        (GgmlType::F16, 3008, 81920)
    );
}

#[test]
fn real_270m_model() {
    let file = GgufFile::open(common::real_model()).expect("open real model");
    // Values as gguf-py 0.19's GGUFReader reports them for this file.
    assert_eq!(file.version(), 3);
    assert_eq!(file.metadata().len(), 33);
    assert_eq!(file.tensors().len(), 236);
    let mut per_type = BTreeMap::new();
    for t in file.tensors() {
        *per_type.entry(t.ty.name()).or_insert(0) += 1;
    }
    let expected = BTreeMap::from([
        ("F32", 109),
        ("Q5_0", 81),
        ("Q4_K", 27),
        ("Q8_0", 10),
        ("Q6_K", 9),
    ]);
    assert_eq!(per_type, expected);
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.ty, embd.dims.as_slice()),
        (GgmlType::Q8_0, &[640u64, 262_144][..])
    );
    assert_eq!((embd.offset, embd.n_bytes), (6_527_680, 178_257_920));
    let norm = &file.tensors()[0];
    assert_eq!(
        (norm.name.as_str(), norm.offset, norm.n_bytes),
        ("output_norm.weight", 6_525_120, 2560)
    );
    let k = file.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(
        (k.ty, k.offset, k.n_bytes),
        (GgmlType::Q5_0, 184_785_600, 112_640)
    );
    check_layout(&file);

    let md = file.metadata();
    use keys::gemma3::*;
    assert_eq!(md.u32(EMBEDDING_LENGTH).unwrap(), 640);
    assert_eq!(md.u32(BLOCK_COUNT).unwrap(), 18);
    assert_eq!(md.u32(HEAD_COUNT_KV).unwrap(), 1);
    assert_eq!(md.u32(SLIDING_WINDOW).unwrap(), 512);
    assert_eq!(md.u64(CONTEXT_LENGTH).unwrap(), 32768);
    assert_eq!(md.string(keys::GENERAL_NAME).unwrap(), "Gemma 3 270m");
    assert_eq!(md.u32(keys::GENERAL_FILE_TYPE).unwrap(), 15);
    let tags = md.string_array("general.tags").unwrap();
    assert_eq!(tags.len(), 4);
    assert_eq!(
        md.string_array(keys::TOKENIZER_TOKENS).unwrap().get(106),
        Some("<end_of_turn>")
    );
    let first_keys: Vec<&str> = md.iter().take(3).map(|(k, _)| k).collect();
    assert_eq!(
        first_keys,
        ["general.architecture", "general.type", "general.name"]
    );
}

#[test]
fn typed_getters_report_key_and_types() {
    let file =
        GgufFile::open(common::fixtures().join("tiny/tiny-gemma3-t1-q8_0.gguf")).expect("open");
    let md = file.metadata();
    match md.u32("gemma3.no_such_key") {
        Err(GgufError::MissingKey { key }) => assert_eq!(key, "gemma3.no_such_key"),
        other => panic!("{other:?}"),
    }
    match md.u32(keys::GENERAL_ARCHITECTURE) {
        Err(GgufError::WrongType {
            key,
            expected,
            found,
        }) => {
            assert_eq!(
                (key.as_str(), expected, found),
                ("general.architecture", "u32", "string")
            );
        }
        other => panic!("{other:?}"),
    }
    match md.string(keys::TOKENIZER_SCORES) {
        Err(GgufError::WrongType {
            expected, found, ..
        }) => assert_eq!((expected, found), ("string", "array<f32>")),
        other => panic!("{other:?}"),
    }
    match md.string_array(keys::TOKENIZER_TOKEN_TYPE) {
        Err(GgufError::WrongType { found, .. }) => assert_eq!(found, "array<i32>"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        md.bool(keys::gemma3::BLOCK_COUNT),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        md.f32_array(keys::TOKENIZER_TOKENS),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        md.get(keys::gemma3::BLOCK_COUNT),
        Some(Value::U32(7))
    ));
    assert!(md.contains(keys::gemma3::BLOCK_COUNT));
}
