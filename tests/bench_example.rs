//! The `bench` example's `--depth` (llama-bench's `-d`): prefill and decode timed after
//! that many tokens already in the cache, and one clear error when they do not fit.

mod parity_support;

use parity_support::{example, fixtures};
use std::process::{Command, Output};

/// `bench --depth DEPTH --prefill 16 --decode 8 --reps 1 EXTRA...` on the tiny Q4_K_M
/// model (a context of 256 tokens).
fn bench(depth: &str, extra: &[&str]) -> Output {
    let model = fixtures().join("tiny/tiny-gemma3-t1-q4_k_m.gguf");
    Command::new(example("bench"))
        .arg("--model")
        .arg(model)
        .args([
            "--depth",
            depth,
            "--prefill",
            "16",
            "--decode",
            "8",
            "--reps",
            "1",
        ])
        .args(extra)
        .output()
        .expect("running bench")
}

#[test]
fn depth_times_prefill_and_decode_after_a_filled_cache() {
    let out = bench("200", &["--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(report["depth"], 200);
    assert_eq!(report["decode_reads_logits"], false);
    for key in ["prefill_tokens_per_s", "decode_tokens_per_s"] {
        let rate = report[key].as_f64().expect(key);
        assert!(rate.is_finite() && rate > 0.0, "{key} = {rate}");
    }
    // llama-bench's way: every step's logits read back, the host picks.
    let out = bench("200", &["--json", "--read-logits"]);
    assert!(out.status.success(), "bench --read-logits failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(report["decode_reads_logits"], true);
    assert!(report["decode_tokens_per_s"].as_f64().expect("rate") > 0.0);

    let text = bench("200", &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("prefill pp16 @ d200:"), "{stdout}");
    assert!(stdout.contains("decode tg8 @ d200:"), "{stdout}");
}

#[test]
fn a_depth_past_the_context_is_one_error_line() {
    let out = bench("250", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--depth 250"), "{stderr}");
}
