//! Fixture access shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

/// `../shared/fixtures/vision` relative to the repository root.
pub fn fixture_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/vision"
    ));
    assert!(
        dir.join("manifest.json").is_file(),
        "vision fixtures missing: expected {} (the shared fixtures folder beside the repository)",
        dir.display()
    );
    dir
}

/// The three fixture images (file stems).
pub const IMAGES: [&str; 3] = ["gradient_224x224", "checker_320x320", "noise_300x200"];

/// The two mmproj files, which hold the same values (the f16 one with F16 matrices).
pub const MMPROJ: [&str; 2] = ["mmproj-tiny-f32.gguf", "mmproj-tiny-f16.gguf"];

pub fn read_bytes(rel: &str) -> Vec<u8> {
    let path = fixture_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

pub fn read_f32(rel: &str) -> Vec<f32> {
    let bytes = read_bytes(rel);
    assert_eq!(bytes.len() % 4, 0, "{rel}: not a whole number of f32");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Largest |a - b|, after checking the lengths agree.
pub fn max_abs_diff(a: &[f32], b: &[f32], what: &str) -> f32 {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: length {} vs reference {}",
        a.len(),
        b.len()
    );
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
