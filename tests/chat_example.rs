//! The `chat` example driven through stdin with the real 270M model (scripted mode),
//! `--list-models` on a fake home folder, and its one-line errors.
//!
//! The 270M test model is a base model: it does not end its turns by itself (llama.cpp's
//! greedy answer to a chat turn repeats the question, `fixtures/gemma3-270m/chat.json`).
//! The conversation therefore replays one exchange to show the answer format and cuts the
//! answers at "." with `--stop`; stopping at `<eos>`/`<end_of_turn>` is tested on the
//! generator (`generate_stream.rs`).

mod parity_support;

use parity_support::{example, fixtures, real_model};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn chat(args: &[&str], stdin: &str, env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(example("chat"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("starting chat");
    let write = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    // A child that rejects its arguments exits before reading stdin: the pipe then breaks,
    // which is not the test's concern (its exit status and stderr are).
    if let Err(e) = write {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    child.wait_with_output().unwrap()
}

#[test]
fn answers_a_scripted_conversation_and_keeps_the_cache() {
    let model = real_model();
    let script = concat!(
        "{\"role\": \"user\", \"content\": \"What is the capital of Germany?\"}\n",
        "{\"role\": \"assistant\", \"content\": \"The capital of Germany is Berlin.\"}\n",
        "What is the capital of France?\n",
        "\n",
        "And of Spain?\n",
    );
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--stop",
        ".",
        "--stop",
        "\n",
    ];
    let out = chat(&args, script, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<&str> = stdout.lines().collect();
    assert_eq!(answers.len(), 2, "{stdout}");
    assert_eq!(
        answers[0], "The capital of France is Paris",
        "stderr: {stderr}"
    );
    // The second answer imitates the first, which ended without a period; the model then
    // emits a stray token where a chat model would end its turn.
    assert!(
        answers[1].starts_with("The capital of Spain is Madrid"),
        "{stdout}"
    );
    // One speed line per answer; the second turn reuses the first one's cache.
    let stats: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[prefill"))
        .collect();
    assert_eq!(stats.len(), 2, "{stderr}");
    assert!(
        stats
            .iter()
            .all(|l| l.contains("tok/s") && l.contains("stop string")),
        "{stderr}"
    );
    assert!(
        stats[0].contains(", 0 reused") && !stats[1].contains(", 0 reused"),
        "{stderr}"
    );
}

#[test]
fn single_message_mode_reads_all_of_stdin() {
    let model = real_model();
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--temperature",
        "0",
        "--max-tokens",
        "3",
        "--single-message",
    ];
    let out = chat(&args, "Line one\nLine two\n", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("[prefill")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("decode 3 tok"), "{stderr}");
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let model = real_model();
    let model = model.to_str().unwrap();
    let vocab_only = fixtures().join("tokenizer/gemma3-vocab.gguf");
    let cases: [(Vec<&str>, &str, &str); 5] = [
        (
            vec!["--model", "/nonexistent.gguf"],
            "hi\n",
            "/nonexistent.gguf",
        ),
        (
            vec!["--model", vocab_only.to_str().unwrap()],
            "hi\n",
            "token_embd.weight",
        ),
        (
            vec!["--model", model, "--ctx", "32"],
            &"word ".repeat(60),
            "does not fit a context of 32",
        ),
        (
            vec!["--model", model],
            "{\"role\": \"robot\", \"content\": \"x\"}\n",
            "stdin line 1",
        ),
        (
            vec!["--model", model, "--temperature", "hot"],
            "",
            "--temperature",
        ),
    ];
    for (args, stdin, expected) in cases {
        let out = chat(&args, stdin, &[]);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn list_models_finds_files_in_the_usual_places() {
    let home = std::env::temp_dir().join(format!("gemma-chat-list-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let tiny = fixtures().join("tiny/tiny-gemma3-t1-q2_k.gguf");
    let hf = home.join(".cache/huggingface/hub/models--org--tiny-GGUF/snapshots/abc");
    let ollama = home.join(".ollama/models/blobs");
    let lmstudio = home.join(".lmstudio/models/org/tiny");
    let project = home.join("project-cache");
    for dir in [&hf, &ollama, &lmstudio, &project] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::os::unix::fs::symlink(&tiny, hf.join("tiny-q2_k.gguf")).unwrap();
    std::fs::copy(&tiny, ollama.join("sha256-0123")).unwrap();
    std::fs::write(ollama.join("sha256-4567"), b"not a model").unwrap();
    std::fs::copy(&tiny, lmstudio.join("tiny.gguf")).unwrap();
    std::fs::copy(&tiny, project.join("cached.gguf")).unwrap();

    let out = chat(
        &["--list-models"],
        "",
        &[("HOME", &home), ("GEMMA_CACHE", &project)],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for (source, file) in [
        ("project", "cached.gguf"),
        ("huggingface", "tiny-q2_k.gguf"),
        ("ollama", "sha256-0123"),
        ("lmstudio", "tiny.gguf"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(source) && l.ends_with(file) && l.contains("gemma3")),
            "{source}: {stdout}"
        );
    }
    std::fs::remove_dir_all(&home).unwrap();
}
