//! The planner against measured resident memory: sessions of the real 270M model are
//! created and filled in fresh copies of this test process (with `MALLOC_PERTURB_` set,
//! as `mem --measure` does, so every allocation — the whole KV cache — is resident), and
//! their `VmRSS` must be within 3% of the prediction.

#[allow(dead_code)]
#[path = "../examples/mem/main.rs"]
mod mem;

use clap::Parser;
use serde_json::Value as Json;
use std::path::PathBuf;
use std::process::Command;

/// Set in the measuring copies: the `mem` arguments, separated by U+001F.
const CHILD_ARGS: &str = "GEMMA_MEM_MEASURE_ARGS";
/// This test's name, to run it alone in the copies.
const TEST_NAME: &str = "resident_memory_of_filled_sessions_is_within_3_percent_of_the_plan";

fn real_model() -> PathBuf {
    let path = match std::env::var_os("GEMMA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf"),
    };
    assert!(
        path.is_file(),
        "real test model missing at {} (run scripts/fetch-model.sh)",
        path.display()
    );
    path
}

#[test]
fn resident_memory_of_filled_sessions_is_within_3_percent_of_the_plan() {
    if let Ok(spec) = std::env::var(CHILD_ARGS) {
        // This process is a measuring copy started below: measure and report.
        let args = mem::Args::parse_from(std::iter::once("mem").chain(spec.split('\u{1f}')));
        let row = mem::measure::measure_here(&args).expect("measurement");
        println!("MEASURED {row}");
        return;
    }
    let model = real_model();
    for (ctx, kv) in [("4096", "f16"), ("32768", "q8_0")] {
        let spec = [
            "--model",
            model.to_str().expect("UTF-8 path"),
            "--ctx",
            ctx,
            "--kv-type",
            kv,
            "--fill-tokens",
            "64",
        ]
        .join("\u{1f}");
        let out = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ARGS, spec)
            .env("MALLOC_PERTURB_", "165")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "measuring copy failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("MEASURED ").map(|(_, json)| json))
            .unwrap_or_else(|| panic!("no measurement in:\n{stdout}"));
        let row: Json = serde_json::from_str(line).unwrap();
        let get = |k: &str| {
            row[k]
                .as_u64()
                .unwrap_or_else(|| panic!("missing {k} in {row}"))
        };
        let error = row["error_pct"].as_f64().unwrap();
        println!(
            "ctx {ctx} {kv}: predicted {} measured {} ({error:+.2}%)",
            get("predicted_bytes"),
            get("measured_bytes")
        );
        assert_eq!(row["malloc_perturb"], true);
        assert!(
            error.abs() <= 3.0,
            "ctx {ctx} {kv}: {error:+.2}% off: {row:#}"
        );
        assert!(
            get("measured_anon_bytes") >= get("kv_bytes") + get("scratch_bytes"),
            "{row:#}"
        );
        assert!(
            get("measured_file_bytes") >= get("weights_bytes"),
            "the whole model file is resident: {row:#}"
        );
    }
}
