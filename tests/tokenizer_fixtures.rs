//! The tokenizer against the reference tokenizers (Hugging Face `tokenizers` and llama.cpp):
//! every case of `fixtures/tokenizer` with the vocab-only GGUF and with the real 270M file,
//! the disagreement cases (llama.cpp for `<image_soft_token>`, Hugging Face for a literal
//! `▁`), and the tiny model's vocabulary.

use std::path::{Path, PathBuf};

use gemma_core::{EncodeOptions, Tokenizer};
use gemma_gguf::GgufFile;
use serde_json::Value;

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"));
    assert!(dir.is_dir(), "fixtures folder missing: {}", dir.display());
    dir
}

fn real_model() -> PathBuf {
    let path = std::env::var_os("GEMMA_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "real model missing at {} (run scripts/fetch-model.sh)",
        path.display()
    );
    path
}

fn load(path: &Path) -> Tokenizer {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("tokenizer of {}: {e}", path.display()))
}

fn cases(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("fixture missing: {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Encodes and decodes every case; returns the names of the failures with details.
fn check_cases(tokenizer: &Tokenizer, cases: &[Value], decoded_key: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        let got = tokenizer.encode(text);
        if got != expected {
            failures.push(format!(
                "{name}: encode {text:?}\n  got      {got:?}\n  expected {expected:?}"
            ));
        }
        let decoded = tokenizer.decode(&expected).unwrap();
        if decoded != case[decoded_key].as_str().unwrap() {
            failures.push(format!("{name}: decode gave {decoded:?}"));
        }
        let with_bos = tokenizer.encode_with(
            text,
            EncodeOptions {
                add_bos: true,
                parse_special: true,
            },
        );
        if with_bos.first() != Some(&2) || with_bos[1..] != expected[..] {
            failures.push(format!("{name}: add_bos gave {with_bos:?}"));
        }
    }
    failures
}

#[test]
fn gemma3_cases_with_the_vocab_only_gguf() {
    let dir = fixtures().join("tokenizer");
    let tokenizer = load(&dir.join("gemma3-vocab.gguf"));
    let cases = cases(&dir.join("gemma3_cases.jsonl"));
    assert_eq!(cases.len(), 60);
    let failures = check_cases(&tokenizer, &cases, "decoded");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gemma3_cases_with_the_real_model() {
    let tokenizer = load(&real_model());
    let cases = cases(&fixtures().join("tokenizer/gemma3_cases.jsonl"));
    let failures = check_cases(&tokenizer, &cases, "decoded");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn disagreements_follow_llama_cpp_for_image_soft_token_and_hf_for_metaspace() {
    let dir = fixtures().join("tokenizer");
    let tokenizer = load(&dir.join("gemma3-vocab.gguf"));
    let cases = cases(&dir.join("gemma3_disagreements.jsonl"));
    let by_name = |name: &str| cases.iter().find(|c| c["name"] == name).unwrap();

    let soft = by_name("spec_image_soft");
    let text = soft["text"].as_str().unwrap();
    assert_eq!(
        tokenizer.encode(text),
        ids(&soft["llama_ids[gemma3-vocab.gguf]"])
    );
    assert_eq!(tokenizer.decode(&tokenizer.encode(text)).unwrap(), text);

    let meta = by_name("metaspace_literal");
    let text = meta["text"].as_str().unwrap();
    let hf = ids(&meta["hf_ids"]);
    assert_eq!(tokenizer.encode(text), hf);
    let decoded = tokenizer.decode(&hf).unwrap();
    assert_eq!(decoded, meta["hf_decoded"].as_str().unwrap());
    // Self-consistent: the decoded text encodes to the same ids.
    assert_eq!(tokenizer.encode(&decoded), hf);
}

#[test]
fn tiny_vocabulary_matches_llama_cpp() {
    let dir = fixtures().join("tiny");
    let tokenizer = load(&dir.join("tiny-gemma3-t1-f32.gguf"));
    assert_eq!(tokenizer.vocab_size(), 512);
    let cases = cases(&dir.join("tiny_vocab_tokenizer.jsonl"));
    assert_eq!(cases.len(), 10);
    let failures = check_cases(&tokenizer, &cases, "decoded");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn special_tokens_are_plain_text_when_special_parsing_is_off() {
    let tokenizer = load(&fixtures().join("tokenizer/gemma3-vocab.gguf"));
    let options = EncodeOptions {
        add_bos: false,
        parse_special: false,
    };
    let ids = tokenizer.encode_with("<start_of_turn>user", options);
    assert!(
        !ids.contains(&105),
        "control token matched with parsing off: {ids:?}"
    );
    assert_eq!(tokenizer.decode(&ids).unwrap(), "<start_of_turn>user");
    // User-defined tokens are matched whatever the setting.
    assert_eq!(
        tokenizer.encode_with("<start_of_image>", options),
        vec![255999]
    );
    assert_eq!(
        tokenizer.encode_with("a\n\nb", options),
        tokenizer.encode("a\n\nb")
    );
}
