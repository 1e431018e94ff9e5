//! Fuzz target: an mmproj GGUF with any metadata and tensors must load as a vision model
//! or give a typed error, never a panic. A model that loads (and is small enough to run
//! in milliseconds) encodes one small image into `n_image_tokens x text_hidden` values.

#![no_main]

use gemma_gguf::GgufFile;
use gemma_vision::image::{DynamicImage, Rgb, RgbImage};
use gemma_vision::{Fit, VisionModel};
use libfuzzer_sys::fuzz_target;

/// Most patches an image may have here (the tiny fixture has 256): the encoder's cost
/// grows with their square, legitimately.
const MAX_PATCHES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(model) = VisionModel::from_gguf(file) else {
        return;
    };
    if model.config().n_patches() > MAX_PATCHES {
        return;
    }
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(5, 3, |x, y| {
        Rgb([x as u8 * 40, y as u8 * 80, 7])
    }));
    for fit in [Fit::Squash, Fit::Letterbox] {
        let pixels = model.preprocess(&image, fit).expect("a small RGB image");
        if let Ok(tokens) = model.encode(&pixels) {
            assert_eq!(tokens.len(), model.n_image_tokens() * model.text_hidden());
        }
    }
});
