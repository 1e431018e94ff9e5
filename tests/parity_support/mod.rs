//! Shared helpers of the parity tests: fixture paths, raw f32 files and logit metrics.

#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};

/// `../shared/fixtures` of the repository (fails the test clearly when missing).
pub fn fixtures() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"));
    assert!(
        dir.is_dir(),
        "fixtures folder missing: {} (see DESIGN.md §5)",
        dir.display()
    );
    dir.to_path_buf()
}

/// The real Gemma 3 270M Q4_K_M model: `$GEMMA_TEST_MODEL` or the cache of
/// `scripts/fetch-model.sh`; fails the test clearly when absent.
pub fn real_model() -> PathBuf {
    let path = match std::env::var_os("GEMMA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf")
        }
    };
    assert!(
        path.is_file(),
        "test model missing: {} (run scripts/fetch-model.sh)",
        path.display()
    );
    path
}

/// A raw little-endian f32 file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(
        bytes.len() % 4,
        0,
        "{} is not a whole number of f32",
        path.display()
    );
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// A JSON array of integers as token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("integer id") as u32)
        .collect()
}

/// Index of the largest value (the smaller index on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Agreement of two `[rows, n]` logit arrays.
#[derive(Clone, Copy, Debug, Default)]
pub struct Diff {
    /// Largest |a - b|.
    pub max_abs: f32,
    /// Mean |a - b| over every value.
    pub mean_abs: f32,
    /// Smallest per-row cosine similarity.
    pub min_cos: f32,
}

impl Diff {
    /// Compares row by row (`n` values per row).
    pub fn of(a: &[f32], b: &[f32], n: usize) -> Diff {
        assert_eq!(a.len(), b.len(), "logit arrays of different sizes");
        let mut max_abs = 0.0f32;
        let mut sum_abs = 0.0f64;
        let mut min_cos = 1.0f32;
        for (ra, rb) in a.chunks_exact(n).zip(b.chunks_exact(n)) {
            let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in ra.iter().zip(rb) {
                let d = (x - y).abs();
                max_abs = max_abs.max(d);
                sum_abs += d as f64;
                dot += x as f64 * y as f64;
                na += x as f64 * x as f64;
                nb += y as f64 * y as f64;
            }
            min_cos = min_cos.min((dot / (na.sqrt() * nb.sqrt())) as f32);
        }
        Diff {
            max_abs,
            mean_abs: (sum_abs / a.len() as f64) as f32,
            min_cos,
        }
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max {:.4} mean {:.4} cos {:.5}",
            self.max_abs, self.mean_abs, self.min_cos
        )
    }
}

/// Builds example `name` with this test's profile (a no-op when it is up to date) and
/// returns its path.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    // `cargo test` builds into `debug` with the test profile; other folders are named
    // after their profile (`release`, custom ones).
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "test",
        Some(other) => other,
    };
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--profile", profile, "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .expect("running cargo");
    assert!(status.success(), "building example {name} failed");
    profile_dir.join("examples").join(name)
}

/// Runs this test binary's tests `names` again, in one child process per SIMD level the
/// CPU has besides the current one (each process picks its kernels once, from
/// `GEMMA_ISA`), the scalar level too when `with_scalar`; fails with the child's output
/// unless all of them pass.
pub fn rerun_on_other_simd_levels(names: &[&str], with_scalar: bool) {
    use gemma_kernels::cpu::isa::{self, Isa};
    let exe = std::env::current_exe().expect("test binary path");
    for other in Isa::available()
        .into_iter()
        .filter(|&i| i != isa::current() && (with_scalar || i != Isa::Scalar))
    {
        let out = std::process::Command::new(&exe)
            .args(names)
            .args(["--exact", "--nocapture", "--test-threads", "1"])
            .env("GEMMA_ISA", other.name())
            .output()
            .expect("run the test binary again");
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && log.contains(&format!("{} passed", names.len())),
            "GEMMA_ISA={}: {log}{}",
            other.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "GEMMA_ISA={}: {} passed\n{log}",
            other.name(),
            names.join(", ")
        );
    }
}
