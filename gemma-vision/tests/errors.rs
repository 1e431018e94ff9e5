//! Bad input gives typed errors, never a panic: unreadable, truncated, empty and huge
//! images; pixels of the wrong size; broken or foreign mmproj files.

mod common;
#[path = "support/synth_mmproj.rs"]
mod synth_mmproj;

use common::{fixture_dir, read_bytes, MMPROJ};
use gemma_gguf::{GgmlType, GgufFile, Value};
use gemma_vision::image::{DynamicImage, RgbImage};
use gemma_vision::{preprocess, Fit, VisionError, VisionModel};
use synth_mmproj::{Mmproj, Spec};

/// The error of a call that must fail (without printing the pixels of a success).
fn error_of<T>(result: Result<T, VisionError>, what: &str) -> VisionError {
    match result {
        Ok(_) => panic!("{what}: expected an error, got a result"),
        Err(e) => e,
    }
}

fn tiny_model() -> VisionModel {
    VisionModel::load(fixture_dir().join(MMPROJ[0])).expect("tiny mmproj loads")
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header declares `width x height` RGB8 and whose data is one empty IDAT.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[]);
    chunk(b"IEND", &[]);
    png
}

#[test]
fn unreadable_bytes_are_an_unknown_format() {
    let model = tiny_model();
    for bytes in [&b""[..], b"not an image at all", &[0u8; 64]] {
        let err = error_of(model.preprocess(bytes, Fit::Squash), "garbage");
        assert!(matches!(err, VisionError::UnknownImageFormat), "{err:?}");
    }
}

#[test]
fn truncated_files_are_decode_errors() {
    let model = tiny_model();
    let png = read_bytes("images/noise_300x200.png");
    for len in [20, 60, png.len() / 2] {
        let err = error_of(model.preprocess(&png[..len], Fit::Squash), "truncated png");
        assert!(
            matches!(err, VisionError::ImageDecode(_)),
            "{len} bytes: {err:?}"
        );
    }
    // A JPEG cut inside its header (cuts anywhere else are covered by decode_pillow.rs).
    let jpeg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/photo_q90_420.jpg"
    ))
    .expect("jpeg");
    let err = error_of(
        model.preprocess(&jpeg[..120], Fit::Squash),
        "jpeg cut in its header",
    );
    assert!(matches!(err, VisionError::ImageDecode(_)), "{err:?}");
}

#[test]
fn huge_images_are_rejected_from_the_header() {
    let model = tiny_model();
    // A valid header alone: rejected before any pixel is decoded (the data is empty).
    for (w, h) in [(100_000, 100_000), (40_000, 10), (20_000, 20_000)] {
        let err = error_of(
            model.preprocess(&png_header_only(w, h), Fit::Letterbox),
            "too large",
        );
        match err {
            VisionError::ImageTooLarge { width, height, .. } => assert_eq!((width, height), (w, h)),
            other => panic!("{w}x{h}: expected ImageTooLarge, got {other:?}"),
        }
    }
    // Just within the limits the header passes and the missing data is the error.
    let err = error_of(
        model.preprocess(&png_header_only(9000, 9000), Fit::Squash),
        "no data",
    );
    assert!(matches!(err, VisionError::ImageDecode(_)), "{err:?}");
}

#[test]
fn empty_decoded_image_is_rejected() {
    let model = tiny_model();
    let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 5));
    let err = error_of(model.preprocess(&empty, Fit::Squash), "empty");
    assert!(
        matches!(
            err,
            VisionError::EmptyImage {
                width: 0,
                height: 5
            }
        ),
        "{err:?}"
    );
}

#[test]
fn pixels_of_another_size_are_rejected_by_encode() {
    let model = tiny_model();
    let mut config = model.config().clone();
    config.image_size = 28;
    let png = read_bytes("images/gradient_224x224.png");
    let pixels = preprocess(&png, &config, Fit::Squash).expect("preprocess");
    let err = error_of(model.encode(&pixels), "wrong size");
    assert!(
        matches!(
            err,
            VisionError::PixelsSize {
                expected: 224,
                found: 28
            }
        ),
        "{err:?}"
    );
}

fn tiny_spec() -> Spec {
    Spec {
        image_size: 56,
        patch_size: 14,
        hidden: 32,
        ffn_hidden: 64,
        layers: 1,
        heads: 2,
        text_hidden: 48,
    }
}

fn load(mmproj: &Mmproj) -> Result<VisionModel, VisionError> {
    VisionModel::from_gguf(GgufFile::from_bytes(mmproj.to_bytes()).expect("valid gguf"))
}

#[test]
fn broken_mmproj_files_give_typed_errors() {
    let good = Mmproj::random(&tiny_spec(), GgmlType::F16, 1);
    load(&good).expect("the unmodified synthetic file loads");

    let mut missing = good.clone();
    missing
        .tensors
        .retain(|t| t.name != "v.blk.0.attn_k.weight");
    let err = error_of(load(&missing), "missing tensor");
    assert!(
        matches!(&err, VisionError::MissingTensor { name } if name == "v.blk.0.attn_k.weight"),
        "{err:?}"
    );

    let mut reshaped = good.clone();
    let t = reshaped
        .tensors
        .iter_mut()
        .find(|t| t.name == "v.position_embd.weight")
        .expect("tensor");
    t.dims = vec![32, 15];
    t.values = synth_mmproj::Values::Data(vec![0.0; 32 * 15]);
    let err = error_of(load(&reshaped), "wrong shape");
    assert!(
        matches!(&err, VisionError::TensorShape { name, .. } if name == "v.position_embd.weight"),
        "{err:?}"
    );

    let mut foreign = good.clone();
    foreign
        .metadata
        .iter_mut()
        .find(|(k, _)| k == "clip.projector_type")
        .expect("key")
        .1 = Value::from("mlp");
    let err = error_of(load(&foreign), "other projector");
    assert!(
        matches!(&err, VisionError::UnsupportedProjector { found } if found == "mlp"),
        "{err:?}"
    );

    let mut no_size = good.clone();
    no_size
        .metadata
        .retain(|(k, _)| k != "clip.vision.image_size");
    let err = error_of(load(&no_size), "missing key");
    assert!(
        matches!(
            err,
            VisionError::Gguf(gemma_gguf::GgufError::MissingKey { .. })
        ),
        "{err:?}"
    );

    let mut odd = good.clone();
    odd.metadata
        .iter_mut()
        .find(|(k, _)| k == "clip.vision.image_size")
        .expect("key")
        .1 = Value::U32(57);
    let err = error_of(load(&odd), "size not a multiple of the patch");
    assert!(
        matches!(
            err,
            VisionError::BadConfig {
                key: "clip.vision.image_size",
                ..
            }
        ),
        "{err:?}"
    );

    let err = error_of(
        VisionModel::load(fixture_dir().join("does-not-exist.gguf")),
        "no file",
    );
    assert!(matches!(err, VisionError::Gguf(_)), "{err:?}");
}
