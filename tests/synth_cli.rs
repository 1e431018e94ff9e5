//! The synth example: its per-tensor recipe against files llama.cpp quantized (the real
//! 270M model and the fixtures' T1 variants), and small generated files read back by
//! gemma-gguf, dequantized by the kernels and read by gguf-py.

#[allow(dead_code)]
#[path = "../examples/synth/main.rs"]
mod synth;

#[allow(dead_code)]
#[path = "../gemma-gguf/tests/common/sha256.rs"]
mod sha256;

use std::path::{Path, PathBuf};
use std::process::Command;

use gemma::gguf::{keys, GgmlType, GgufFile};
use serde_json::Value as Json;
use synth::{Args, Quant, Shape};

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

fn tiny_vocab() -> PathBuf {
    fixtures().join("tiny/tiny-gemma3-t1-f32.gguf")
}

fn args(size: &str, quant: &str, out: &Path) -> Args {
    Args {
        size: size.into(),
        layers: None,
        hidden: None,
        ff: None,
        heads: None,
        kv_heads: None,
        head_dim: None,
        vocab: None,
        quant: Some(quant.into()),
        vocab_from: Some(tiny_vocab()),
        out: Some(out.to_owned()),
        seed: 7,
        mmproj: None,
        mmproj_quant: "F16".into(),
        vision_layers: None,
        vision_hidden: None,
        vision_ff: None,
        vision_heads: None,
        image_size: None,
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (name, type, dims) of every tensor, in file order.
fn table(file: &GgufFile) -> Vec<(String, GgmlType, Vec<u64>)> {
    file.tensors()
        .iter()
        .map(|t| (t.name.clone(), t.ty, t.dims.clone()))
        .collect()
}

fn planned(shape: &Shape, vocab: u64, quant: Quant) -> Vec<(String, GgmlType, Vec<u64>)> {
    let plan = synth::plan(shape, vocab, quant).unwrap();
    plan.into_iter().map(|t| (t.name, t.ty, t.dims)).collect()
}

/// llama.cpp's Q4_K_M of the real 270M (F32, Q8_0, Q5_0, Q4_K, Q6_K, with the fallbacks of
/// its 640-wide rows) is exactly what synth plans for that size.
#[test]
fn recipe_reproduces_the_real_270m_q4_k_m_file() {
    let real = GgufFile::open(real_model()).unwrap();
    let shape = Shape::preset("270m").unwrap();
    assert_eq!(planned(&shape, 262_144, Quant::Q4_K_M), table(&real));
    let md = real.metadata();
    use keys::gemma3::*;
    assert_eq!(u64::from(md.u32(EMBEDDING_LENGTH).unwrap()), shape.hidden);
    assert_eq!(u64::from(md.u32(FEED_FORWARD_LENGTH).unwrap()), shape.ff);
    assert_eq!(u64::from(md.u32(SLIDING_WINDOW).unwrap()), shape.window);
    assert_eq!(u64::from(md.u32(CONTEXT_LENGTH).unwrap()), shape.ctx);
}

/// Every non-`pure` T1 variant that llama.cpp's quantizer wrote (its mixing rules) matches
/// the plan for the `tiny` shape, tensor by tensor and in file order.
#[test]
fn recipe_reproduces_llama_cpp_mixes_of_the_tiny_model() {
    let root = fixtures();
    let record: Json = serde_json::from_str(
        &std::fs::read_to_string(root.join("tiny/t1_quantization.json")).unwrap(),
    )
    .unwrap();
    let shape = Shape::preset("tiny").unwrap();
    let mut checked = Vec::new();
    for (name, entry) in record["files"].as_object().unwrap() {
        if entry["pure"] != Json::Bool(false) {
            continue;
        }
        let file = GgufFile::open(root.join("tiny").join(name)).unwrap();
        let ftype = entry["llama_ftype"].as_u64().unwrap() as u32;
        let quant = ["F16", "BF16", "Q2_K", "Q3_K_M", "Q4_K_M"]
            .into_iter()
            .map(|q| Quant::parse(q).unwrap())
            .find(|q| q.ftype() == ftype)
            .unwrap_or_else(|| panic!("{name}: ftype {ftype} not covered"));
        assert_eq!(planned(&shape, 512, quant), table(&file), "{name}");
        checked.push(quant.name());
    }
    checked.sort();
    assert_eq!(checked, ["BF16", "F16", "Q2_K", "Q3_K_M", "Q4_K_M"]);
}

#[test]
fn presets_have_the_released_shapes() {
    let s = Shape::preset("12b").unwrap();
    assert_eq!(
        (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.ff),
        (3840, 48, 16, 8, 256, 15_360)
    );
    assert_eq!((s.window, s.ctx, s.rope_scale), (1024, 131_072, Some(8.0)));
    let s = Shape::preset("27b").unwrap();
    assert_eq!(
        (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.ff),
        (5376, 62, 32, 16, 128, 21_504)
    );
    let s = Shape::preset("1b").unwrap();
    assert_eq!(
        (s.hidden, s.layers, s.ff, s.rope_scale),
        (1152, 26, 6912, None)
    );
    // 12B Q4_K_M: every row is a multiple of 256, so no fallback; Q6_K where llama.cpp puts it.
    let plan = synth::plan(&Shape::preset("12b").unwrap(), 262_144, Quant::Q4_K_M).unwrap();
    let ty = |n: &str| plan.iter().find(|t| t.name == n).unwrap().ty;
    assert_eq!(ty("token_embd.weight"), GgmlType::Q6_K);
    // use_more_bits(i, 48): i < 6, i >= 42, or (i - 6) % 3 == 2.
    assert_eq!(
        (ty("blk.5.attn_v.weight"), ty("blk.6.attn_v.weight")),
        (GgmlType::Q6_K, GgmlType::Q4_K)
    );
    assert_eq!(
        (ty("blk.7.ffn_down.weight"), ty("blk.8.ffn_down.weight")),
        (GgmlType::Q4_K, GgmlType::Q6_K)
    );
    assert_eq!(
        (ty("blk.40.ffn_down.weight"), ty("blk.43.ffn_down.weight")),
        (GgmlType::Q4_K, GgmlType::Q6_K)
    );
    assert_eq!(ty("blk.8.ffn_up.weight"), GgmlType::Q4_K);
}

/// A whole tiny file: metadata, tokenizer copied, the llama.cpp tensor table, values with
/// the intended distribution after dequantization by the kernels, and gguf-py agreeing.
#[test]
fn tiny_q4_k_m_file_end_to_end() {
    let dir = temp_dir("tiny");
    let out = dir.join("tiny.gguf");
    let summary = synth::run(&args("tiny", "q4_k_m", &out), false).unwrap();
    assert!(summary.contains("93 tensors"), "{summary}");
    // Written as tiny.gguf.partial, renamed once complete.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["tiny.gguf"]);
    let file = GgufFile::open(&out).unwrap();
    let md = file.metadata();
    use keys::gemma3::*;
    assert_eq!(md.string(keys::GENERAL_ARCHITECTURE).unwrap(), "gemma3");
    assert_eq!(md.u32(BLOCK_COUNT).unwrap(), 7);
    assert_eq!(md.u32(HEAD_COUNT_KV).unwrap(), 2);
    assert_eq!(md.u32(KEY_LENGTH).unwrap(), 64);
    assert_eq!(md.string(ROPE_SCALING_TYPE).unwrap(), "linear");
    assert_eq!(md.f32(ROPE_SCALING_FACTOR).unwrap(), 8.0);
    assert_eq!(md.u32(keys::GENERAL_FILE_TYPE).unwrap(), 15);
    let source = GgufFile::open(tiny_vocab()).unwrap();
    for (key, value) in source
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
    {
        assert_eq!(md.get(key), Some(value), "{key}");
    }
    let reference = GgufFile::open(fixtures().join("tiny/tiny-gemma3-t1-q4_k_m.gguf")).unwrap();
    assert_eq!(table(&file), table(&reference));

    let stats = |name: &str| {
        let t = file.tensor(name).unwrap();
        let mut values = vec![0.0f32; t.n_elements() as usize];
        gemma::kernels::quant::dequantize(t.ty, file.tensor_data(t), &mut values).unwrap();
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / values.len() as f64;
        (mean, var.sqrt())
    };
    for (name, fan_in) in [
        ("blk.2.attn_v.weight", 256.0),
        ("blk.0.attn_q.weight", 256.0),
        ("token_embd.weight", 256.0),
    ] {
        let (mean, std) = stats(name);
        let expected = 1.0 / f64::sqrt(fan_in);
        assert!(
            mean.abs() < 0.1 * expected && (std / expected - 1.0).abs() < 0.1,
            "{name}: {mean} {std}"
        );
    }
    let (mean, std) = stats("blk.4.ffn_norm.weight");
    assert!(
        (mean - 1.0).abs() < 0.03 && (std - 0.1).abs() < 0.03,
        "norm: {mean} {std}"
    );

    let view = gguf_py_view(&out);
    let tensors = view["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), file.tensors().len());
    for (ours, theirs) in file.tensors().iter().zip(tensors) {
        assert_eq!(theirs["name"], ours.name.as_str());
        assert_eq!(theirs["type"], ours.ty.name());
        assert_eq!(theirs["offset"].as_u64(), Some(ours.offset));
        assert_eq!(
            theirs["sha256"].as_str(),
            Some(sha256::sha256_hex(file.tensor_data(ours)).as_str())
        );
    }
    assert_eq!(view["metadata"]["general.file_type"]["value"], 15);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn seeded_overridden_and_truncated_vocabulary() {
    let dir = temp_dir("seed");
    let path = |n: &str| dir.join(n);
    let small = |seed, out: &Path| {
        let mut a = args("tiny", "Q8_0", out);
        (a.layers, a.hidden, a.ff, a.vocab, a.seed) =
            (Some(2), Some(128), Some(384), Some(300), seed);
        synth::run(&a, false).unwrap();
    };
    small(1, &path("a.gguf"));
    small(1, &path("b.gguf"));
    small(2, &path("c.gguf"));
    let read = |n: &str| std::fs::read(path(n)).unwrap();
    assert!(read("a.gguf") == read("b.gguf"), "same seed, same bytes");
    let (a, c) = (
        GgufFile::open(path("a.gguf")).unwrap(),
        GgufFile::open(path("c.gguf")).unwrap(),
    );
    let q = |f: &GgufFile| {
        f.tensor_data(f.tensor("blk.1.attn_q.weight").unwrap())
            .to_vec()
    };
    assert_ne!(q(&a), q(&c), "another seed, other weights");
    assert_eq!(a.tensor("token_embd.weight").unwrap().dims, [128, 300]);
    assert_eq!(a.tensor("blk.1.ffn_down.weight").unwrap().dims, [384, 128]);
    assert_eq!(a.metadata().u32(keys::gemma3::BLOCK_COUNT).unwrap(), 2);
    let tokens = a.metadata().string_array(keys::TOKENIZER_TOKENS).unwrap();
    assert_eq!(
        (tokens.len(), tokens.get(4)),
        (300, Some("<start_of_turn>"))
    );
    assert_eq!(
        a.metadata()
            .f32_array(keys::TOKENIZER_SCORES)
            .unwrap()
            .len(),
        300
    );
    assert_eq!(
        a.metadata()
            .i32_array(keys::TOKENIZER_TOKEN_TYPE)
            .unwrap()
            .len(),
        300
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_reported() {
    let out = std::env::temp_dir().join(format!("synth-never-written-{}.gguf", std::process::id()));
    let err = |a: Args| synth::run(&a, false).unwrap_err();
    assert!(err(args("13b", "Q4_K_M", &out)).contains("unknown --size"));
    assert!(err(args("tiny", "Q7_K", &out)).contains("unknown --quant"));
    let mut a = args("tiny", "Q4_0", &out);
    a.kv_heads = Some(3);
    assert!(err(a).contains("cannot share"));
    let mut a = args("tiny", "Q4_0", &out);
    a.vocab = Some(100_000);
    assert!(err(a).contains("has 512 tokens"));
    let mut a = args("tiny", "Q4_0", &out);
    a.hidden = Some(48);
    assert!(err(a).contains("token_embd.weight: rows of 48 cannot be stored as Q8_0"));
    assert!(!out.exists());
}

/// What gguf-py sees in `path` (scripts/check_gguf_py.py with the project's venv python).
fn gguf_py_view(path: &Path) -> Json {
    let python = match std::env::var_os("GEMMA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/gemma-rs/venv/bin/python"),
    };
    assert!(
        python.is_file(),
        "python with gguf-py missing at {} (or set GEMMA_PYTHON)",
        python.display()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_gguf_py.py");
    let out = Command::new(python)
        .arg(script)
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "gguf-py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `args` for an mmproj only (no language model), projecting to the width of `size`,
/// with the fixtures' tiny vision shapes.
fn mmproj_args(size: &str, quant: &str, out: &Path) -> Args {
    Args {
        quant: None,
        vocab_from: None,
        out: None,
        mmproj: Some(out.to_owned()),
        mmproj_quant: quant.into(),
        vision_layers: Some(2),
        vision_hidden: Some(64),
        vision_ff: Some(128),
        vision_heads: Some(4),
        image_size: Some(224),
        ..args(size, "F16", out)
    }
}

/// (key, value type) of every metadata entry, in file order.
fn key_types(file: &GgufFile) -> Vec<(String, String)> {
    file.metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), format!("{:?}", v.value_type())))
        .collect()
}

fn vision_fixture(name: &str) -> PathBuf {
    fixtures().join("vision").join(name)
}

/// With the fixtures' tiny shapes, `--mmproj` writes exactly the metadata (keys, order,
/// types and values but the name) and tensor table (names, order, types, shapes) that
/// llama.cpp's converter wrote for the fixture files, F16 and F32; gemma-vision loads
/// it with the fixture's config and encodes an image; gguf-py reads it.
#[test]
fn mmproj_matches_the_converter_layout_of_the_fixtures() {
    let dir = temp_dir("mmproj");
    for (quant, fixture) in [
        ("F16", "mmproj-tiny-f16.gguf"),
        ("F32", "mmproj-tiny-f32.gguf"),
    ] {
        let out = dir.join(format!("tiny-{quant}.gguf"));
        let summary = synth::run(&mmproj_args("270m", quant, &out), false).unwrap();
        assert!(
            summary.contains("16 tokens of 640, 39 tensors"),
            "{summary}"
        );
        let ours = GgufFile::open(&out).unwrap();
        let reference = GgufFile::open(vision_fixture(fixture)).unwrap();
        assert_eq!(key_types(&ours), key_types(&reference), "{quant}");
        for (key, value) in reference.metadata().iter() {
            if key != keys::GENERAL_NAME {
                assert_eq!(ours.metadata().get(key), Some(value), "{quant} {key}");
            }
        }
        assert_eq!(table(&ours), table(&reference), "{quant}");
        assert_eq!(ours.alignment(), reference.alignment());

        let model = gemma_vision::VisionModel::load(&out).unwrap();
        let fixture_model = gemma_vision::VisionModel::load(vision_fixture(fixture)).unwrap();
        assert_eq!(model.config(), fixture_model.config());
        let image = gemma_vision::image::DynamicImage::new_rgb8(224, 224);
        let pixels = model.preprocess(&image, gemma_vision::Fit::Squash).unwrap();
        let tokens = model.encode(&pixels).unwrap();
        assert_eq!(tokens.len(), 16 * 640);
        assert!(tokens.iter().all(|v| v.is_finite()));
        let spread = tokens.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(
            spread > 0.1,
            "{quant}: soft tokens all near zero ({spread})"
        );

        let view = gguf_py_view(&out);
        assert_eq!(
            view["tensors"].as_array().unwrap().len(),
            ours.tensors().len()
        );
    }
    // Attention weights ~N(0, 1/fan_in), norms ~1 +- 0.1, as the module documents.
    let file = GgufFile::open(dir.join("tiny-F32.gguf")).unwrap();
    let values = |name: &str| {
        let t = file.tensor(name).unwrap();
        let mut v = vec![0.0f32; t.n_elements() as usize];
        gemma::kernels::quant::dequantize(t.ty, file.tensor_data(t), &mut v).unwrap();
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        (mean, var.sqrt())
    };
    let (mean, std) = values("v.blk.1.attn_q.weight");
    assert!(
        mean.abs() < 0.02 && (std * 8.0 - 1.0).abs() < 0.1,
        "{mean} {std}"
    );
    let (mean, std) = values("v.post_ln.weight");
    assert!(
        (mean - 1.0).abs() < 0.05 && (std - 0.1).abs() < 0.05,
        "{mean} {std}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The real SigLIP-So400m plan (what `--size 4b --mmproj` writes) without writing it:
/// 27 blocks in the converter's order, shapes, types and the 851 MB of tensor data.
#[test]
fn mmproj_real_shapes_plan() {
    use synth::mmproj::{plan, size_label, MmprojQuant, VisionShape};
    let text = Shape::preset("4b").unwrap();
    let a = Args {
        mmproj: Some(PathBuf::from("unused.gguf")),
        ..args("4b", "F16", Path::new("unused.gguf"))
    };
    let shape = VisionShape::from_args(&a, text.hidden).unwrap();
    assert_eq!(shape, VisionShape::gemma3(2560));
    assert_eq!((shape.n_patches(), shape.n_image_tokens()), (4096, 256));
    let tensors = plan(&shape, MmprojQuant::F16);
    assert_eq!(tensors.len(), 5 + 27 * 16 + 2);
    let find = |name: &str| tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(find("v.position_embd.weight").dims, [1152, 4096]);
    assert_eq!(find("v.patch_embd.weight").dims, [14, 14, 3, 1152]);
    assert_eq!(find("v.blk.26.ffn_down.weight").dims, [4304, 1152]);
    assert_eq!(find("mm.input_projection.weight").dims, [2560, 1152]);
    assert_eq!(find("v.blk.3.attn_q.weight").ty, GgmlType::F16);
    // Blocks in the text order of the Hugging Face names the converter walks.
    let order: Vec<&str> = tensors
        .iter()
        .filter(|t| t.name.ends_with("ln1.bias"))
        .map(|t| t.name.as_str())
        .take(3)
        .collect();
    assert_eq!(
        order,
        ["v.blk.0.ln1.bias", "v.blk.1.ln1.bias", "v.blk.10.ln1.bias"]
    );
    let bytes: u64 = tensors
        .iter()
        .map(|t| t.ty.row_bytes(t.dims[0]).unwrap() * t.dims[1..].iter().product::<u64>())
        .sum();
    // 2 709 504 + 4608 + 18 874 368 (patch, bias, position) + 27 x 30 508 352 (blocks)
    // + 9216 + 4608 + 5 898 240 (post-norm, soft-embedding norm, projection).
    assert_eq!(bytes, 851_226_048);
    let params: u64 = tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();
    assert_eq!(params, 419_816_304);
    // gguf-py's model_weight_count_rounded_notation of the same counts.
    assert_eq!(size_label(params), "420M");
    assert_eq!(size_label(162_176), "162K");
    assert_eq!(size_label(999), "1.0K");
    assert_eq!(size_label(1_250_000_000), "1.2B");
    // Q8_0: rows of 4304 are not whole blocks, so ffn_down falls back to F16.
    let q8 = plan(&shape, MmprojQuant::Q8_0);
    let ty = |name: &str| q8.iter().find(|t| t.name == name).unwrap().ty;
    assert_eq!(ty("v.blk.0.ffn_up.weight"), GgmlType::Q8_0);
    assert_eq!(ty("v.blk.0.ffn_down.weight"), GgmlType::F16);
    assert_eq!(ty("mm.input_projection.weight"), GgmlType::F16);
    assert_eq!(ty("v.patch_embd.weight"), GgmlType::F32);
}

/// Same seed, same bytes; a Q8_0/BF16 projector loads; bad vision arguments fail
/// before anything is written.
#[test]
fn mmproj_seeded_quantized_and_bad_arguments() {
    let dir = temp_dir("mmproj-args");
    let path = |n: &str| dir.join(n);
    for name in ["a.gguf", "b.gguf"] {
        synth::run(&mmproj_args("270m", "F16", &path(name)), false).unwrap();
    }
    assert_eq!(
        std::fs::read(path("a.gguf")).unwrap(),
        std::fs::read(path("b.gguf")).unwrap()
    );
    for quant in ["Q8_0", "bf16"] {
        let out = path(&format!("{quant}.gguf"));
        synth::run(&mmproj_args("270m", quant, &out), false).unwrap();
        let model = gemma_vision::VisionModel::load(&out).unwrap();
        assert_eq!(model.n_image_tokens(), 16);
    }
    let out = path("never.gguf");
    let err = |a: Args| synth::run(&a, false).unwrap_err();
    assert!(err(mmproj_args("270m", "Q4_K", &out)).contains("unknown --mmproj-quant"));
    let mut a = mmproj_args("270m", "F16", &out);
    a.image_size = Some(100);
    assert!(err(a).contains("not a multiple of 56"));
    let mut a = mmproj_args("270m", "F16", &out);
    a.vision_heads = Some(5);
    assert!(err(a).contains("do not divide"));
    let mut a = mmproj_args("270m", "F16", &out);
    a.quant = Some("Q4_0".into());
    assert!(err(a).contains("give --out too"));
    let mut a = mmproj_args("270m", "F16", &out);
    a.mmproj = None;
    assert!(err(a).contains("nothing to write"));
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
