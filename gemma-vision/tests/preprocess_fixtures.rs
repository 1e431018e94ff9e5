//! Preprocessing against the references: the resized RGB8 images and the normalized
//! pixels of transformers (squash) and llama.cpp (letterbox), bit for bit.

mod common;

use common::{fixture_dir, read_bytes, read_f32, IMAGES, MMPROJ};
use gemma_vision::{preprocess, Fit, VisionModel};

fn check_fit(fit: Fit, tag: &str) {
    let model = VisionModel::load(fixture_dir().join(MMPROJ[0])).expect("tiny mmproj loads");
    for stem in IMAGES {
        let png = read_bytes(&format!("images/{stem}.png"));
        let pixels = preprocess(&png, model.config(), fit).expect("fixture image preprocesses");
        let rgb = read_bytes(&format!("ref/{stem}.{tag}.rgb8"));
        let differing = pixels
            .rgb8()
            .iter()
            .zip(&rgb)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(pixels.rgb8().len(), rgb.len(), "{stem} {tag}: rgb8 size");
        assert_eq!(
            differing,
            0,
            "{stem} {tag}: {differing} of {} rgb8 bytes differ",
            rgb.len()
        );
        let reference = read_f32(&format!("ref/{stem}.{tag}.pixels.f32"));
        assert_eq!(
            pixels.data().len(),
            reference.len(),
            "{stem} {tag}: pixel count"
        );
        let differing = pixels
            .data()
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differing, 0,
            "{stem} {tag}: {differing} normalized pixels differ in bits"
        );
    }
}

#[test]
fn squash_matches_transformers_bit_for_bit() {
    check_fit(Fit::Squash, "squash");
}

#[test]
fn letterbox_matches_llama_cpp_bit_for_bit() {
    check_fit(Fit::Letterbox, "letterbox");
}

#[test]
fn decoded_image_input_matches_bytes_input() {
    let model = VisionModel::load(fixture_dir().join(MMPROJ[0])).expect("tiny mmproj loads");
    let png = read_bytes("images/noise_300x200.png");
    let decoded = image::load_from_memory(&png).expect("png decodes");
    let from_image = model.preprocess(&decoded, Fit::Squash).expect("preprocess");
    let from_bytes = model.preprocess(&png, Fit::Squash).expect("preprocess");
    assert_eq!(from_image, from_bytes);
}
