//! The encoder against the transformers float32 references: every intermediate and the
//! soft tokens, for every fixture image, both fits and both mmproj files (which hold the
//! same values, so the same references apply).

mod common;

use common::{fixture_dir, max_abs_diff, read_bytes, read_f32, IMAGES, MMPROJ};
use gemma_vision::{Fit, Stage, VisionModel};
use std::collections::HashMap;

/// The README's tolerance for a float32 implementation (catches every listed mistake).
const TOKEN_TOL: f32 = 1e-5;
/// Intermediates have larger magnitudes than the tokens; the same 1e-5 still holds
/// for an exact implementation.
const INTERMEDIATE_TOL: f32 = 1e-5;
/// llama.cpp's tokens are 1.0e-3 .. 1.3e-3 from the exact reference (fixture README).
const LLAMA_CPP_TOL: f32 = 2e-3;

fn stage_file(stage: Stage) -> String {
    match stage {
        Stage::Embeddings => "embd".into(),
        Stage::Layer(i) => format!("layer{i}"),
        Stage::PostNorm => "vision_out".into(),
        Stage::Pooled => "pooled".into(),
        Stage::Normed => "normed".into(),
    }
}

fn encode_all(model: &VisionModel, file: &str) {
    for stem in IMAGES {
        let png = read_bytes(&format!("images/{stem}.png"));
        for (fit, tag) in [(Fit::Squash, "squash"), (Fit::Letterbox, "letterbox")] {
            let pixels = model.preprocess(&png, fit).expect("preprocess");
            let mut stages: HashMap<Stage, Vec<f32>> = HashMap::new();
            let tokens = model
                .encode_traced(&pixels, &mut |stage, values| {
                    stages.insert(stage, values.to_vec());
                })
                .expect("encode");
            assert_eq!(tokens.len(), model.n_image_tokens() * model.text_hidden());
            let reference = read_f32(&format!("ref/{stem}.{tag}.tokens.f32"));
            let err = max_abs_diff(&tokens, &reference, "tokens");
            println!(
                "{file} {stem} {tag} isa={:?}: tokens max |diff| {err:.3e}",
                model.isa()
            );
            assert!(
                err <= TOKEN_TOL,
                "{file} {stem} {tag}: tokens max |diff| {err:e} > {TOKEN_TOL:e}"
            );
            if fit == Fit::Letterbox {
                // llama.cpp's own output for the same pixels sits ~1e-3 away (ggml's f16
                // shortcuts, README); a gross error would be far outside this.
                let llama = read_f32(&format!(
                    "ref/{stem}.letterbox.llamacpp-f32-faoff.tokens.f32"
                ));
                let err = max_abs_diff(&tokens, &llama, "llama.cpp tokens");
                assert!(
                    err <= LLAMA_CPP_TOL,
                    "{file} {stem}: {err:e} from llama.cpp's tokens"
                );
            }
            if fit == Fit::Squash {
                // Intermediates exist for the squash (transformers) pixels.
                let mut order: Vec<Stage> = vec![Stage::Embeddings];
                order.extend((0..model.config().n_layers).map(Stage::Layer));
                order.extend([Stage::PostNorm, Stage::Pooled, Stage::Normed]);
                assert_eq!(stages.len(), order.len(), "every stage is traced once");
                for stage in order {
                    let name = stage_file(stage);
                    let reference = read_f32(&format!("ref/{stem}.squash.{name}.f32"));
                    let err = max_abs_diff(&stages[&stage], &reference, &name);
                    println!("{file} {stem} squash {name}: max |diff| {err:.3e}");
                    assert!(
                        err <= INTERMEDIATE_TOL,
                        "{file} {stem} {name}: max |diff| {err:e} > {INTERMEDIATE_TOL:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn f32_mmproj_matches_reference_tokens_and_intermediates() {
    let model = VisionModel::load(fixture_dir().join(MMPROJ[0])).expect("load f32 mmproj");
    encode_all(&model, MMPROJ[0]);
}

#[test]
fn f16_mmproj_matches_reference_tokens_and_intermediates() {
    let model = VisionModel::load(fixture_dir().join(MMPROJ[1])).expect("load f16 mmproj");
    encode_all(&model, MMPROJ[1]);
}

#[test]
fn every_isa_matches_reference_tokens() {
    for isa in gemma_kernels::cpu::isa::Isa::available() {
        let mut model = VisionModel::load(fixture_dir().join(MMPROJ[1])).expect("load");
        assert!(model.set_isa(isa));
        encode_all(&model, MMPROJ[1]);
    }
}

#[test]
fn model_is_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<VisionModel>();
}

#[test]
fn config_is_read_from_clip_keys() {
    let model = VisionModel::load(fixture_dir().join(MMPROJ[0])).expect("load");
    let c = model.config();
    assert_eq!(
        (
            c.image_size,
            c.patch_size,
            c.hidden,
            c.ffn_hidden,
            c.n_layers,
            c.n_heads,
            c.head_dim
        ),
        (224, 14, 64, 128, 2, 4, 16)
    );
    assert_eq!(
        (c.pool_kernel, c.text_hidden, model.n_image_tokens()),
        (4, 640, 16)
    );
    assert_eq!(
        (c.norm_eps, c.image_mean, c.image_std),
        (1e-6, [0.5; 3], [0.5; 3])
    );
}
