//! The memory planner against what exists: the quantization recipe against the real 270M
//! file and every tiny fixture written by llama.cpp's quantizer, the KV cache size against
//! the sessions the engine allocates, the released sizes against known figures; and the
//! `mem` example's table, JSON and plot.

#[allow(dead_code)]
#[path = "../examples/mem/main.rs"]
mod mem;

use clap::Parser;
use gemma::core::memory::{
    self, kv_plan, plan, ModelShape, ModelSize, PlanOptions, Quant, RecipeModel, VisionShape,
};
use gemma::core::{CoreError, KvType, Model, ModelOptions};
use gemma::gguf::{GgmlType, GgufFile};
use serde_json::Value as Json;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"));
    assert!(
        dir.is_dir(),
        "test fixtures missing: expected {}",
        dir.display()
    );
    dir
}

fn real_model() -> PathBuf {
    let path = match std::env::var_os("GEMMA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf"),
    };
    assert!(
        path.is_file(),
        "real test model missing at {} (run scripts/fetch-model.sh)",
        path.display()
    );
    path
}

const GIB: u64 = 1 << 30;

#[test]
fn recipe_reproduces_the_real_270m_file() {
    let file = GgufFile::open(real_model()).unwrap();
    let real = ModelShape::from_gguf(&file).unwrap();
    let predicted = ModelShape::official(ModelSize::S270M, Quant::Q4_K_M, false);
    assert_eq!(real.label, "Q4_K_M");
    assert_eq!(predicted.tensors.len(), real.tensors.len());
    for t in &real.tensors {
        let p = predicted
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} not predicted", t.name));
        assert_eq!(
            (p.ty, &p.dims, p.bytes),
            (t.ty, &t.dims, t.bytes),
            "{}",
            t.name
        );
    }
    assert_eq!(predicted.weight_bytes(), real.weight_bytes());
    let file_len = file.bytes().len() as u64;
    assert!(
        predicted.file_bytes().abs_diff(file_len) < 2048,
        "{} vs {file_len}",
        predicted.file_bytes()
    );
    let (r, p) = (&real.config, &predicted.config);
    assert_eq!(
        (
            r.n_embd,
            r.n_layer,
            r.n_head,
            r.n_head_kv,
            r.head_dim_k,
            r.n_ff
        ),
        (
            p.n_embd,
            p.n_layer,
            p.n_head,
            p.n_head_kv,
            p.head_dim_k,
            p.n_ff
        )
    );
    assert_eq!(
        (r.n_vocab, r.context_length, r.sliding_window),
        (p.n_vocab, p.context_length, p.sliding_window)
    );
    assert!(r
        .layers
        .iter()
        .zip(&p.layers)
        .all(|(a, b)| a.window == b.window));
}

#[test]
fn recipe_reproduces_every_tiny_fixture_file() {
    let dir = fixtures().join("tiny");
    let meta: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("t1_quantization.json")).unwrap())
            .unwrap();
    let source = GgufFile::open(dir.join("tiny-gemma3-t1-f32.gguf")).unwrap();
    let config = ModelShape::from_gguf(&source).unwrap().config;
    let recipe = RecipeModel {
        n_layer: config.n_layer,
        n_gqa: config.gqa_group(),
        has_output: false,
    };
    let mut checked = 0;
    for (name, entry) in meta["files"].as_object().unwrap() {
        let Some(ftype) = entry["llama_ftype"].as_u64() else {
            continue;
        };
        let quant = Quant::from_file_type(ftype as u32)
            .unwrap_or_else(|| panic!("{name}: unknown ftype {ftype}"));
        let pure = entry["pure"].as_bool().unwrap_or(false); // null for the F32 source
        let file = GgufFile::open(dir.join(name)).unwrap();
        for t in source.tensors() {
            let expected = entry["tensor_types"][&t.name].as_str().unwrap();
            let got = quant.tensor_type(&t.name, &t.dims, &recipe, pure);
            assert_eq!(
                got,
                GgmlType::from_name(expected).unwrap(),
                "{name} {}",
                t.name
            );
            assert_eq!(file.tensor(&t.name).unwrap().ty, got, "{name} {}", t.name);
        }
        if let Some(size) = entry["size_bytes"].as_u64() {
            assert_eq!(size, file.bytes().len() as u64, "{name}");
        }
        checked += 1;
    }
    assert_eq!(checked, 16, "the F32 source and its 15 variants");
}

#[test]
fn kv_plan_equals_the_cache_sessions_allocate() {
    let models = [
        fixtures().join("tiny/tiny-gemma3-t1-f32.gguf"),
        real_model(),
    ];
    for path in models {
        for ring_margin in [0, 3, 64] {
            let options = ModelOptions {
                ring_margin,
                threads: 1,
                ..ModelOptions::default()
            };
            let model = Model::load(&path, options.clone()).unwrap();
            let shape = ModelShape::from_gguf(model.gguf()).unwrap();
            for ctx in [1, 8, 9, 11, 64, 256, 600]
                .into_iter()
                .filter(|&c| c <= shape.config.context_length)
            {
                for kv in [KvType::F16, KvType::Q8_0, KvType::F32] {
                    let p =
                        kv_plan(&shape.config, &PlanOptions::for_model(&options, ctx, kv)).unwrap();
                    let session = model.session(ctx, kv).unwrap();
                    assert_eq!(
                        p.bytes(),
                        session.kv_bytes(),
                        "{} ctx {ctx} {kv} margin {ring_margin}",
                        path.display()
                    );
                    assert!(p.full_bytes >= p.bytes());
                }
            }
        }
    }
}

#[test]
fn released_sizes_match_published_figures() {
    // DESIGN.md: the 12B at 128K with an f16 cache needs about 8 GiB (global layers) instead
    // of about 48 GiB without the sliding window; llama.cpp's 12B Q4_K_M file is 7.30 GB.
    let shape = ModelShape::official(ModelSize::S12B, Quant::Q4_K_M, false);
    let p = plan(&shape, &PlanOptions::new(131_072, KvType::F16), None).unwrap();
    assert_eq!(p.kv.global_bytes, 8 * GIB);
    assert_eq!(p.kv.full_bytes, 48 * GIB);
    assert_eq!(p.kv.local_bytes, 40 * 1088 * 8 * 256 * 2 * 2);
    assert!(
        (7.25e9..7.35e9).contains(&(shape.file_bytes() as f64)),
        "{}",
        shape.file_bytes()
    );
    // Q8_0 KV: 34 bytes per 32 values.
    let q8 = plan(&shape, &PlanOptions::new(131_072, KvType::Q8_0), None).unwrap();
    assert_eq!(q8.kv.global_bytes * 32, 8 * GIB * 34 / 2);
    // Every recipe orders by size like llama.cpp's presets.
    let sizes: Vec<u64> = Quant::TABLE
        .iter()
        .map(|&q| ModelShape::official(ModelSize::S12B, q, false).weight_bytes())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] > w[1]), "{sizes:?}");
}

#[test]
fn plans_fail_like_sessions_do() {
    let shape = ModelShape::official(ModelSize::S270M, Quant::Q8_0, false);
    let too_long = plan(&shape, &PlanOptions::new(65_536, KvType::F16), None);
    assert!(matches!(
        too_long,
        Err(CoreError::ContextLength {
            requested: 65_536,
            max: 32_768
        })
    ));
    assert!(matches!(
        plan(&shape, &PlanOptions::new(0, KvType::F16), None),
        Err(CoreError::ContextLength { .. })
    ));
    let mut odd = shape.clone();
    odd.config.head_dim_k = 48;
    assert!(matches!(
        plan(&odd, &PlanOptions::new(512, KvType::Q8_0), None),
        Err(CoreError::KvTypeUnsupported { .. })
    ));
    // The CUDA backend keeps Q8_0 and F32 caches in the CPU's layout.
    for kv in [KvType::Q8_0, KvType::F32] {
        let cuda = PlanOptions {
            device: gemma::core::Device::Cuda(0),
            ..PlanOptions::new(512, kv)
        };
        let on_gpu = plan(&shape, &cuda, None).expect("a CUDA plan");
        let on_cpu = plan(&shape, &PlanOptions::new(512, kv), None).unwrap();
        assert_eq!(on_gpu.kv_bytes(), on_cpu.kv_bytes(), "{kv:?}");
    }
}

#[test]
fn check_session_fits_returns_the_plan_of_the_model() {
    let model = Model::load(
        fixtures().join("tiny/tiny-gemma3-t1-q4_k_m.gguf"),
        ModelOptions::default(),
    )
    .unwrap();
    let p = memory::check_session_fits(&model, 256, KvType::F16).unwrap();
    let session = model.session(256, KvType::F16).unwrap();
    assert_eq!(p.kv_bytes(), session.kv_bytes());
    assert_eq!(
        p.weights_bytes + p.metadata_bytes,
        model.gguf().bytes().len() as u64
    );
}

#[test]
fn vision_tower_of_the_tiny_mmproj() {
    let path = fixtures().join("vision/mmproj-tiny-f16.gguf");
    let file = GgufFile::open(&path).unwrap();
    let v = VisionShape::from_gguf(&file).unwrap();
    assert_eq!(v.file_bytes, std::fs::metadata(&path).unwrap().len());
    // The fixture README: 224 px / 14 = 16x16 patches, width 64, MLP 128, 4 heads of 16,
    // 4x4 pooling to 16 soft tokens of the 640-wide 270M.
    assert_eq!(
        (
            v.n_patches,
            v.hidden,
            v.ffn_hidden,
            v.head_dim,
            v.patch_values
        ),
        (256, 64, 128, 16, 3 * 14 * 14)
    );
    assert_eq!((v.image_tokens, v.text_hidden, v.images), (16, 640, 1));
    assert_eq!(v.soft_token_bytes(), 4 * 16 * 640);
    assert_eq!(
        v.context_tokens(),
        18,
        "16 soft tokens + <start_of_image> + <end_of_image>"
    );
    assert!(v.encoder_bytes() > v.file_bytes);
    assert_eq!(v.bytes(), v.encoder_bytes() + v.soft_token_bytes());
    let shape = ModelShape::official(ModelSize::S270M, Quant::Q8_0, false);
    let with = plan(&shape, &PlanOptions::new(512, KvType::F16), Some(&v)).unwrap();
    let without = plan(&shape, &PlanOptions::new(512, KvType::F16), None).unwrap();
    assert_eq!(with.total_bytes() - without.total_bytes(), v.bytes());
    assert_eq!((without.image_tokens, without.image_kv_bytes), (0, 0));
    // 18 positions in each of the 18 layers (all windows are wider), 1 KV head of
    // 256 + 256 f16 values: 18 * 18 * 1024 bytes.
    assert_eq!(with.image_tokens, 18);
    assert_eq!(with.image_kv_bytes, 18 * 18 * 1024);

    // Three images: three times the soft tokens and positions, the same encoder.
    let three = v.with_images(3);
    assert_eq!(three.bytes() - v.bytes(), 2 * 4 * 16 * 640);
    let p = plan(&shape, &PlanOptions::new(512, KvType::F16), Some(&three)).unwrap();
    assert_eq!((p.image_tokens, p.image_kv_bytes), (54, 54 * 18 * 1024));
    // A context too short for the images fails like a full session.
    let err = plan(&shape, &PlanOptions::new(40, KvType::F16), Some(&three)).unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::ContextFull {
                requested: 54,
                ctx_len: 40,
                ..
            }
        ),
        "{err}"
    );

    // The mem example: images in the text and JSON, too-short contexts left out.
    let args = mem::Args::parse_from([
        "mem",
        "--size",
        "270m",
        "--quant",
        "Q8_0",
        "--kv-type",
        "f16",
        "--ctx",
        "40,512",
        "--mmproj",
        path.to_str().unwrap(),
        "--images",
        "3",
    ]);
    let table = mem::Table::build(&args).unwrap();
    let text = table.text();
    assert!(text.contains("vision tower and 3 image(s)"), "{text}");
    assert!(text.contains("54 context positions"), "{text}");
    let rows = table.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        1,
        "only the 512 context holds 3 images: {rows:?}"
    );
    assert_eq!(rows[0]["image_tokens"].as_u64(), Some(54));
    assert_eq!(rows[0]["image_kv_bytes"].as_u64(), Some(p.image_kv_bytes));
    assert_eq!(rows[0]["vision_bytes"].as_u64(), Some(three.bytes()));
}

#[test]
fn mem_table_json_and_plot() {
    let args = mem::Args::parse_from(["mem", "--size", "12b"]);
    let table = mem::Table::build(&args).unwrap();
    let text = table.text();
    for needle in [
        "F16/BF16",
        "Q8_0",
        "Q6_K",
        "Q5_K_M",
        "Q4_K_M",
        "Q4_0",
        "IQ4_XS",
        "Q3_K_M",
        "Q2_K",
        "4K",
        "128K",
        "KV cache q8_0",
    ] {
        assert!(text.contains(needle), "table lacks {needle}:\n{text}");
    }
    let rows = table.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        10 * 4 * 2,
        "F16 and BF16 rows, 4 contexts, 2 KV types"
    );
    for r in rows {
        let get = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("missing {k}"));
        let parts = [
            "weights_bytes",
            "metadata_bytes",
            "kv_bytes",
            "scratch_bytes",
            "tokenizer_bytes",
            "vision_bytes",
            "runtime_bytes",
        ];
        assert_eq!(
            parts.iter().map(|k| get(k)).sum::<u64>(),
            get("total_bytes")
        );
        assert!(get("kv_full_bytes") >= get("kv_bytes"));
        assert!(r["quant"].is_string() && r["kv_type"].is_string() && get("ctx") >= 4096);
    }
    let q4 = rows
        .iter()
        .find(|r| r["quant"] == "Q4_K_M" && r["ctx"] == 131_072 && r["kv_type"] == "f16")
        .unwrap();
    assert_eq!(q4["kv_full_bytes"].as_u64(), Some(48 * GIB));

    // A small model: contexts beyond its 32K are left out of the JSON and shown as "-".
    let small = mem::Table::build(&mem::Args::parse_from([
        "mem",
        "--size",
        "1b",
        "--ctx",
        "4096,128K",
        "--kv-type",
        "f16",
    ]))
    .unwrap();
    assert_eq!(small.json().as_array().unwrap().len(), 10);
    assert!(small.text().contains(" -\n"));

    let svg = mem::plot::plot_svg(&table);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<polyline").count(),
        10,
        "nine quantizations and one dashed full-length line"
    );
    for label in [
        "1K",
        "128K",
        "context length",
        "total memory (GiB)",
        "Q2_K",
        "without rings",
    ] {
        assert!(svg.contains(label), "plot lacks {label}");
    }
}

#[test]
fn mem_parses_contexts_and_files() {
    assert_eq!(mem::parse_ctx("4K"), Ok(4096));
    assert_eq!(mem::parse_ctx("128k"), Ok(131_072));
    assert_eq!(mem::parse_ctx("1000"), Ok(1000));
    assert!(mem::parse_ctx("0").is_err() && mem::parse_ctx("4M").is_err());
    let args = mem::Args::parse_from([
        "mem",
        "--model",
        real_model().to_str().unwrap(),
        "--ctx",
        "4K,32K,128K",
    ]);
    let table = mem::Table::build(&args).unwrap();
    let rows = table.json();
    assert_eq!(
        rows.as_array().unwrap().len(),
        4,
        "128K is beyond the 270M's context"
    );
    assert_eq!(rows[0]["quant"], "Q4_K_M");
    assert_eq!(
        rows[0]["weights_bytes"].as_u64().unwrap() + rows[0]["metadata_bytes"].as_u64().unwrap(),
        std::fs::metadata(real_model()).unwrap().len()
    );
    let missing = mem::Args::parse_from(["mem", "--model", "/nonexistent.gguf"]);
    assert!(mem::Table::build(&missing).is_err());
}

#[test]
fn mem_cuda_table_has_device_memory_of_both_caches() {
    let args = mem::Args::parse_from([
        "mem", "--size", "4b", "--device", "cuda", "--ctx", "4K,128K",
    ]);
    let table = mem::Table::build(&args).unwrap();
    let rows = table.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        10 * 2 * 2,
        "10 quants x 2 contexts x f16 and q8_0 caches"
    );
    for r in rows {
        assert!(r["kv_type"] == "f16" || r["kv_type"] == "q8_0");
        assert_eq!(
            (r["metadata_bytes"].as_u64(), r["tokenizer_bytes"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(
            r["runtime_bytes"].as_u64(),
            Some(memory::CUDA_CONTEXT_BYTES)
        );
    }
    assert!(table.text().contains("device memory"));
}
