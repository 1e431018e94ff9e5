//! Where the unit tests find the tiny Gemma 3 fixtures: `$GEMMA_FIXTURES/tiny`, else
//! `../shared/fixtures/tiny` beside the repository.

use std::path::PathBuf;

/// The folder of the tiny fixtures.
pub(crate) fn tiny_fixtures() -> PathBuf {
    std::env::var_os("GEMMA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures"
            ))
        })
        .join("tiny")
}
