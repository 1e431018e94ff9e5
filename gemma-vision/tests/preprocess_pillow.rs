//! Preprocessing against held-out Pillow 13 references (`tests/data/pillow_refs.json`,
//! made by `tests/data/make_pillow_refs.py`): upscales, extreme aspect ratios, identity
//! and single-axis resizes, a 1x1 image, and encoded files (baseline 4:2:0 and
//! progressive 4:4:4 JPEG, gray, RGBA and palette PNG). Each result is compared through
//! an FNV-1a 64-bit hash of the 224x224 RGB8 image, for both fits (JPEG files included:
//! our decoder reproduces libjpeg-turbo's, which Pillow uses).

use gemma_vision::image::{DynamicImage, RgbImage};
use gemma_vision::{preprocess, Fit, VisionConfig};

fn data_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data"))
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    format!("{h:016x}")
}

/// The synthetic pattern of `make_pillow_refs.py`.
fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (u64::from(x), u64::from(y));
        let v =
            |c: u64| ((x * 7 + y * 13 + c * 29 + ((x * y) % 17) * 11 + ((x ^ y) & 31)) % 256) as u8;
        gemma_vision::image::Rgb([v(0), v(1), v(2)])
    })
}

fn config_224() -> VisionConfig {
    VisionConfig {
        image_size: 224,
        patch_size: 14,
        hidden: 64,
        ffn_hidden: 128,
        n_layers: 2,
        n_heads: 4,
        head_dim: 16,
        norm_eps: 1e-6,
        image_mean: [0.5; 3],
        image_std: [0.5; 3],
        pool_kernel: 4,
        text_hidden: 640,
    }
}

#[test]
fn pillow_held_out_cases_match_bit_for_bit() {
    let refs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data_dir().join("pillow_refs.json"))
            .expect("tests/data/pillow_refs.json is readable"),
    )
    .expect("valid json");
    let config = config_224();
    let cases = refs["cases"].as_array().expect("cases array");
    assert!(cases.len() >= 10, "expected the full case list");
    let mut failures = Vec::new();
    for case in cases {
        let source = case["source"].as_str().expect("source");
        let bytes;
        let image;
        let input: gemma_vision::ImageInput = if let Some(size) = source.strip_prefix("gen:") {
            let (w, h) = size.split_once('x').expect("WxH");
            image = DynamicImage::ImageRgb8(pattern(w.parse().expect("w"), h.parse().expect("h")));
            (&image).into()
        } else {
            let name = source.strip_prefix("file:").expect("file: or gen: source");
            bytes = std::fs::read(data_dir().join(name)).expect("reference image file");
            (&bytes).into()
        };
        for (fit, key) in [(Fit::Squash, "squash"), (Fit::Letterbox, "letterbox")] {
            let pixels = preprocess(input, &config, fit).expect("preprocess");
            let got = fnv1a64(pixels.rgb8());
            let want = case[key].as_str().expect("hash");
            if got != want {
                failures.push(format!("{source} {key}: {got} != pillow {want}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "mismatches against Pillow:\n{}",
        failures.join("\n")
    );
}
