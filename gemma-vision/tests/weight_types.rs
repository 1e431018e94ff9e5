//! Weight types beyond the fixtures' F32/F16: an mmproj with quantized (Q8_0, Q4_0) or
//! BF16 matrices must encode exactly like an F32 file holding the values those blocks
//! dequantize to (the encoder works in f32 either way).

mod common;
#[path = "support/synth_mmproj.rs"]
mod synth_mmproj;

use common::max_abs_diff;
use gemma_gguf::{GgmlType, GgufFile};
use gemma_vision::image::{DynamicImage, RgbImage};
use gemma_vision::{Fit, VisionModel};
use synth_mmproj::{Mmproj, Spec};

#[test]
fn quantized_and_bf16_matrices_encode_like_their_f32_twin() {
    let spec = Spec {
        image_size: 112,
        patch_size: 14,
        hidden: 64,
        ffn_hidden: 128,
        layers: 2,
        heads: 4,
        text_hidden: 96,
    };
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(150, 90, |x, y| {
        gemma_vision::image::Rgb([
            (x * 3 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    }));
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::BF16] {
        let typed = Mmproj::random(&spec, ty, 7);
        let load = |m: &Mmproj| {
            VisionModel::from_gguf(GgufFile::from_bytes(m.to_bytes()).expect("gguf"))
                .expect("loads")
        };
        let (typed_model, twin_model) = (load(&typed), load(&typed.f32_twin()));
        let pixels = typed_model
            .preprocess(&image, Fit::Letterbox)
            .expect("preprocess");
        let a = typed_model.encode(&pixels).expect("encode typed");
        let b = twin_model.encode(&pixels).expect("encode twin");
        assert_eq!(a.len(), 4 * 96);
        let err = max_abs_diff(&a, &b, "tokens");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!("{ty:?}: max |diff| {err:e} (values up to {scale})");
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "{ty:?}: {err} vs its F32 twin"
        );
    }
}
