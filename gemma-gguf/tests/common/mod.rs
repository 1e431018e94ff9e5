//! Shared helpers for the gemma-gguf integration tests: fixture paths, a raw byte builder
//! for hand-made (and deliberately broken) files, and SHA-256.

#![allow(dead_code)] // each test binary uses a different subset

pub mod raw;
pub mod sha256;
pub mod values;

use std::path::PathBuf;

/// `../shared/fixtures` relative to the repository root; panics with a clear message if absent.
pub fn fixtures() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ));
    assert!(
        dir.is_dir(),
        "test fixtures missing: expected {} (the shared fixtures folder next to the repository)",
        dir.display()
    );
    dir
}

/// The real Gemma 3 270M Q4_K_M file: $GEMMA_TEST_MODEL or ~/.cache/gemma-rs/...; panics if absent.
pub fn real_model() -> PathBuf {
    let path = match std::env::var_os("GEMMA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf")
        }
    };
    assert!(
        path.is_file(),
        "real test model missing at {} (run scripts/fetch-model.sh or set GEMMA_TEST_MODEL)",
        path.display()
    );
    path
}
