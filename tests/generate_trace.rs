//! `generate --dump-trace`: the prompt's named activations in files, checked against the
//! logits `--dump-logits` writes through the other path (every position's output row as
//! the session hands it out), on a prompt of several batches (token ids, an image's soft
//! tokens, text) so that the entries of one name are joined in position order.

mod parity_support;

use parity_support::{example, fixtures, read_f32, real_model};
use serde_json::Value;
use std::process::Command;

#[test]
fn dump_trace_writes_every_named_activation_of_the_prompt() {
    let dir = std::env::temp_dir().join(format!("generate_trace_{}", std::process::id()));
    let trace = dir.join("trace");
    let logits = dir.join("logits.f32");
    std::fs::create_dir_all(&dir).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = Command::new(example("generate"))
        .args(["--model", &path(&real_model())])
        .args([
            "--mmproj",
            &path(&fixtures().join("vision/mmproj-tiny-f32.gguf")),
        ])
        .args([
            "--image",
            &path(&fixtures().join("vision/images/checker_320x320.png")),
        ])
        .args([
            "--prompt",
            "Describe the image.",
            "--max-tokens",
            "2",
            "--json",
        ])
        .args([
            "--dump-logits",
            &path(&logits),
            "--dump-trace",
            &path(&trace),
        ])
        .output()
        .expect("running generate");
    assert!(
        out.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    // BOS, <start_of_image>, the soft tokens, <end_of_image>, the text.
    let positions = report["prompt_ids"].as_array().unwrap().len()
        + report["image_tokens"].as_u64().unwrap() as usize
        + 2;

    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(trace.join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"inp_scaled"));
    assert_eq!(names.last(), Some(&"result_output"));
    for layer in 0..18 {
        for name in ["attn_norm", "Qcur", "kqv_out", "ffn_geglu", "l_out"] {
            let name = format!("{name}-{layer}");
            assert!(names.contains(&name.as_str()), "{name} missing");
        }
    }
    for entry in entries {
        let name = entry["name"].as_str().unwrap();
        let (rows, width) = (
            entry["rows"].as_u64().unwrap(),
            entry["width"].as_u64().unwrap(),
        );
        let values = read_f32(&trace.join(format!("{name}.f32")));
        assert_eq!(values.len() as u64, rows * width, "{name}: file size");
        assert!(values.iter().all(|v| v.is_finite()), "{name}: not finite");
        if name.starts_with("l_out-") || name == "result_output" {
            assert_eq!(
                rows as usize, positions,
                "{name}: a row per prompt position"
            );
        }
    }
    let width = |name: &str| {
        entries.iter().find(|e| e["name"] == name).unwrap()["width"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(width("l_out-0"), 640);
    assert_eq!(width("result_output"), 262_144);
    assert_eq!(
        read_f32(&trace.join("result_output.f32")),
        read_f32(&logits),
        "the traced output rows are the dumped logits"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
