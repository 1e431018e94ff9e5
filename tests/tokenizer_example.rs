//! The `tokenize` example: JSON lines in and out, a round trip through `--decode`, and one
//! clear error line for bad input.

mod parity_support;

use parity_support::{example, fixtures};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(example("tokenize"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tokenize");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn encodes_every_fixture_case_and_decodes_back() {
    let vocab = fixtures().join("tokenizer/gemma3-vocab.gguf");
    let vocab = vocab.to_str().unwrap();
    let cases = std::fs::read_to_string(fixtures().join("tokenizer/gemma3_cases.jsonl")).unwrap();
    let cases: Vec<serde_json::Value> = cases
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let input: String = cases
        .iter()
        .map(|c| format!("{}\n", serde_json::json!({ "text": c["text"] })))
        .collect();

    let encoded = run(&["--model", vocab], &input);
    assert!(
        encoded.status.success(),
        "{}",
        String::from_utf8_lossy(&encoded.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(encoded.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), cases.len());
    for (case, line) in cases.iter().zip(&lines) {
        assert_eq!(line["ids"], case["ids"], "case {}", case["name"]);
    }

    let ids_input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let decoded = run(&["--model", vocab, "--decode"], &ids_input);
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    let texts: Vec<serde_json::Value> = String::from_utf8(decoded.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (case, text) in cases.iter().zip(&texts) {
        assert_eq!(text["text"], case["decoded"], "case {}", case["name"]);
    }
}

#[test]
fn bos_flag_and_errors() {
    let vocab = fixtures().join("tokenizer/gemma3-vocab.gguf");
    let vocab = vocab.to_str().unwrap();
    let out = run(
        &["--model", vocab, "--bos"],
        "{\"text\": \"Hello world\"}\n",
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"ids":[2,9259,1902]}"#
    );

    let out = run(&["--model", vocab], "{\"text\": \"ok\"}\nnot json\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: line 2: invalid JSON"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);

    let out = run(
        &["--model", vocab, "--decode"],
        "{\"ids\": [1, 99999999]}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("outside the vocabulary"));

    let out = run(&["--model", "/nonexistent.gguf"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .starts_with("error: /nonexistent.gguf"));
}
