//! The CUDA image encoder against the transformers references and the CPU encoder: every
//! fixture image, both tiny mmproj files, every intermediate; plus random mmproj files
//! with the real head width (72), quantized / BF16 matrices and partial kernel tiles.
//!
//! Needs a GPU: where `CudaDevice::new(0)` fails, the GPU parts print "NOT RUN" with the
//! reason, and what can be checked without one is checked: choosing CUDA on such a machine
//! makes `encode` fail with the one-line CUDA error.
//!
//! Fixtures: `$GEMMA_FIXTURES/vision` when that variable is set (scripts/gpu-check.sh runs
//! this binary away from the repository's fixtures), else `../shared/fixtures/vision`.
//!
//! Tolerance 1e-4 (absolute, on values of magnitude up to ~10): the GPU computes in f32 like
//! the CPU but sums in other orders (32-deep product tiles, online softmax, block
//! reductions) and contracts multiply-adds to FMAs, which moves results by a few f32 ulps
//! per step (the CPU's own f32 path is within 1e-5 of the exact reference); any real
//! mistake (a wrong step, transpose or scale) moves them by 1e-2 or more.

mod common;
#[path = "support/synth_mmproj.rs"]
mod synth_mmproj;

use common::{max_abs_diff, IMAGES, MMPROJ};
use gemma_gguf::{GgmlType, GgufFile};
use gemma_kernels::cuda::{CudaDevice, CudaError};
use gemma_vision::image::{DynamicImage, Rgb, RgbImage};
use gemma_vision::{CudaEncoder, Fit, Stage, VisionError, VisionModel};
use std::collections::HashMap;
use std::path::PathBuf;
use synth_mmproj::{Mmproj, Spec};

/// GPU vs the exact reference and vs the CPU encoder (see the module docs).
const GPU_TOL: f32 = 1e-4;

/// The vision fixtures: `$GEMMA_FIXTURES/vision`, else the shared folder.
fn fixture_dir() -> PathBuf {
    let dir = match std::env::var_os("GEMMA_FIXTURES") {
        Some(root) => PathBuf::from(root).join("vision"),
        None => common::fixture_dir(),
    };
    assert!(
        dir.join(MMPROJ[0]).is_file(),
        "vision fixtures missing: expected {} in {}",
        MMPROJ[0],
        dir.display()
    );
    dir
}

fn read_bytes(rel: &str) -> Vec<u8> {
    let path = fixture_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

fn read_f32(rel: &str) -> Vec<f32> {
    let bytes = read_bytes(rel);
    assert_eq!(bytes.len() % 4, 0, "{rel}: not a whole number of f32");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Whether a GPU is usable; prints why the GPU half of a test does not run otherwise.
fn gpu_present(test: &str) -> bool {
    match CudaDevice::new(0) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("NOT RUN on a GPU ({test}): {e}");
            false
        }
    }
}

fn stage_file(stage: Stage) -> String {
    match stage {
        Stage::Embeddings => "embd".into(),
        Stage::Layer(i) => format!("layer{i}"),
        Stage::PostNorm => "vision_out".into(),
        Stage::Pooled => "pooled".into(),
        Stage::Normed => "normed".into(),
    }
}

/// Every stage and the tokens of every fixture image against the references and the CPU.
fn check_fixtures(file: &str) {
    let model = VisionModel::load(fixture_dir().join(file)).expect("load mmproj");
    let mut gpu = CudaEncoder::new(&model, 0).expect("CUDA encoder");
    println!(
        "{file} on {}: {:.2} MiB of device memory",
        gpu.device_name(),
        gpu.device_bytes() as f64 / 1048576.0
    );
    assert_eq!(
        gpu.device_bytes(),
        CudaEncoder::planned_bytes(&model),
        "the plan the encoder checks free memory against"
    );
    for stem in IMAGES {
        let png = read_bytes(&format!("images/{stem}.png"));
        for (fit, tag) in [(Fit::Squash, "squash"), (Fit::Letterbox, "letterbox")] {
            let pixels = model.preprocess(&png, fit).expect("preprocess");
            let mut stages: HashMap<Stage, Vec<f32>> = HashMap::new();
            let tokens = gpu
                .encode_traced(&pixels, &mut |stage, values| {
                    stages.insert(stage, values.to_vec());
                })
                .expect("GPU encode");
            if fit == Fit::Squash {
                // Stage by stage, so that a wrong kernel is named by the first stage off.
                let mut order = vec![Stage::Embeddings];
                order.extend((0..model.config().n_layers).map(Stage::Layer));
                order.extend([Stage::PostNorm, Stage::Pooled, Stage::Normed]);
                assert_eq!(stages.len(), order.len(), "every stage traced once");
                for stage in order {
                    let name = stage_file(stage);
                    let reference = read_f32(&format!("ref/{stem}.squash.{name}.f32"));
                    let err = max_abs_diff(&stages[&stage], &reference, &name);
                    println!("{file} {stem} squash {name}: GPU max |diff| {err:.3e}");
                    assert!(err <= GPU_TOL, "{file} {stem} {name}: GPU off by {err:e}");
                }
            }
            let reference = read_f32(&format!("ref/{stem}.{tag}.tokens.f32"));
            let err = max_abs_diff(&tokens, &reference, "tokens");
            let cpu = model.encode(&pixels).expect("CPU encode");
            let err_cpu = max_abs_diff(&tokens, &cpu, "tokens vs CPU");
            println!(
                "{file} {stem} {tag}: GPU tokens max |diff| {err:.3e} vs reference, {err_cpu:.3e} vs CPU"
            );
            assert!(err <= GPU_TOL, "{file} {stem} {tag}: tokens off by {err:e}");
            assert!(
                err_cpu <= GPU_TOL,
                "{file} {stem} {tag}: {err_cpu:e} from the CPU"
            );
            // The untraced path gives the same numbers (same kernels, same order).
            assert_eq!(gpu.encode(&pixels).expect("GPU encode"), tokens);
        }
    }
}

#[test]
fn f32_mmproj_on_gpu_matches_reference_and_cpu() {
    if gpu_present("f32 mmproj") {
        check_fixtures(MMPROJ[0]);
    }
}

#[test]
fn f16_mmproj_on_gpu_matches_reference_and_cpu() {
    if gpu_present("f16 mmproj") {
        check_fixtures(MMPROJ[1]);
    }
}

#[test]
fn choosing_cuda_routes_encode_to_the_gpu_or_fails_with_one_line() {
    let mut model = VisionModel::load(fixture_dir().join(MMPROJ[1])).expect("load");
    let png = read_bytes(&format!("images/{}.png", IMAGES[0]));
    let pixels = model.preprocess(&png, Fit::Squash).expect("preprocess");
    assert_eq!(model.cuda_device(), None);
    model.set_cuda_device(Some(0));
    assert_eq!(model.cuda_device(), Some(0));
    match model.encode(&pixels) {
        Ok(tokens) => {
            let reference = read_f32(&format!("ref/{}.squash.tokens.f32", IMAGES[0]));
            let err = max_abs_diff(&tokens, &reference, "tokens");
            println!("VisionModel::encode on cuda:0: max |diff| {err:.3e}");
            assert!(err <= GPU_TOL, "{err:e}");
            // The second encode reuses the uploaded weights and gives the same numbers.
            assert_eq!(model.encode(&pixels).expect("second encode"), tokens);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(
                    e,
                    VisionError::Cuda(CudaError::Unavailable { .. } | CudaError::NvrtcMissing)
                ),
                "{e:?}"
            );
            assert!(!msg.contains('\n'), "not one line: {msg:?}");
            assert!(
                msg.starts_with("CUDA is not available: ") || msg.starts_with("NVRTC"),
                "{msg}"
            );
            eprintln!("NOT RUN on a GPU (encode through VisionModel): {msg}");
        }
    }
    // A device past the last one always fails, with or without a GPU.
    model.set_cuda_device(Some(1 << 20));
    let err = model
        .encode(&pixels)
        .expect_err("no machine has a million GPUs");
    assert!(
        matches!(err, VisionError::Cuda(CudaError::Unavailable { .. })),
        "{err:?}"
    );
    model.set_cuda_device(None);
    assert_eq!(model.cuda_device(), None);
    model.encode(&pixels).expect("back on the CPU");
}

/// A random mmproj of `spec` with `ty` matrices, encoded on the GPU and the CPU.
fn gpu_matches_cpu_on_random_mmproj(spec: &Spec, ty: GgmlType) {
    let model = VisionModel::from_gguf(
        GgufFile::from_bytes(Mmproj::random(spec, ty, 11).to_bytes()).expect("gguf"),
    )
    .expect("loads");
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(170, 120, |x, y| {
        Rgb([
            (x * 7 % 256) as u8,
            (y * 3 % 256) as u8,
            ((x * y) % 256) as u8,
        ])
    }));
    let pixels = model.preprocess(&image, Fit::Squash).expect("preprocess");
    let cpu = model.encode(&pixels).expect("CPU encode");
    let mut gpu = CudaEncoder::new(&model, 0).expect("CUDA encoder");
    assert_eq!(
        gpu.device_bytes(),
        CudaEncoder::planned_bytes(&model),
        "the plan the encoder checks free memory against ({ty:?})"
    );
    let tokens = gpu.encode(&pixels).expect("GPU encode");
    let err = max_abs_diff(&tokens, &cpu, "tokens");
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    let c = model.config();
    println!(
        "random {ty:?} head_dim {} patches {} tokens {}: GPU vs CPU max |diff| {err:.3e} (values up to {scale:.2})",
        c.head_dim,
        c.n_patches(),
        c.n_image_tokens()
    );
    assert!(err <= GPU_TOL * scale.max(1.0), "{ty:?}: {err:e}");
}

#[test]
fn real_head_width_and_partial_tiles_on_gpu_match_cpu() {
    if !gpu_present("random mmproj files") {
        return;
    }
    // head_dim 72 as in SigLIP-So400m (widths multiples of 32 for Q8_0); 12 x 12 = 144
    // patches: a partial 32-key tile and a partial block of 128 queries; 3 x 3 = 9 tokens
    // (the tiled product).
    let real_heads = Spec {
        image_size: 168,
        patch_size: 14,
        hidden: 288,
        ffn_hidden: 320,
        layers: 2,
        heads: 4,
        text_hidden: 96,
    };
    for ty in [GgmlType::F16, GgmlType::Q8_0, GgmlType::BF16] {
        gpu_matches_cpu_on_random_mmproj(&real_heads, ty);
    }
    // 8 x 8 patches -> 2 x 2 = 4 tokens: the projection runs as matrix x vectors.
    let few_tokens = Spec {
        image_size: 112,
        patch_size: 14,
        hidden: 64,
        ffn_hidden: 128,
        layers: 1,
        heads: 4,
        text_hidden: 96,
    };
    gpu_matches_cpu_on_random_mmproj(&few_tokens, GgmlType::F32);
}

#[test]
fn an_unsupported_head_width_is_refused_before_touching_the_gpu() {
    let spec = Spec {
        image_size: 56,
        patch_size: 14,
        hidden: 48,
        ffn_hidden: 64,
        layers: 1,
        heads: 2,
        text_hidden: 32,
    };
    let model = VisionModel::from_gguf(
        GgufFile::from_bytes(Mmproj::random(&spec, GgmlType::F32, 3).to_bytes()).expect("gguf"),
    )
    .expect("loads");
    assert_eq!(model.config().head_dim, 24);
    let err = CudaEncoder::new(&model, 0).err().expect("head_dim 24");
    assert!(
        matches!(
            err,
            VisionError::Cuda(CudaError::Unsupported { value: 24, .. })
        ),
        "{err:?}"
    );
}
