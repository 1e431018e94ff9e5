//! Images end to end: the fixtures' tiny mmproj (projecting to 640, the width of the real
//! Gemma 3 270M) feeding the real 270M model through `Chat` and the `generate`, `chat` and
//! `bench` examples.

mod parity_support;

use gemma_core::generate::GenerateOptions;
use gemma_core::image::{is_placeholder, END_OF_IMAGE, START_OF_IMAGE};
use gemma_core::{Chat, ChatOptions, Model, ModelOptions, SamplerConfig};
use gemma_vision::{Fit, VisionModel};
use parity_support::{example, fixtures, read_f32, real_model};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mmproj() -> PathBuf {
    fixtures().join("vision/mmproj-tiny-f32.gguf")
}

fn image(stem: &str) -> PathBuf {
    fixtures().join(format!("vision/images/{stem}.png"))
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name))
        .args(args)
        .output()
        .expect("running the example")
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn soft_tokens(stem: &str, fit: Fit) -> Vec<f32> {
    let vision = VisionModel::load(mmproj()).unwrap();
    let bytes = std::fs::read(image(stem)).unwrap();
    vision
        .encode(&vision.preprocess(&bytes, fit).unwrap())
        .unwrap()
}

/// `generate --dump-image-embeddings` writes exactly what `VisionModel::encode` gives,
/// which matches the fixtures' transformers reference; the model then generates.
#[test]
fn generate_dumps_the_image_embeddings_and_runs_the_image() {
    let dir = std::env::temp_dir().join(format!("vision_lm_e2e_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (stem, fit, fit_name) in [
        ("noise_300x200", Fit::Letterbox, "letterbox"),
        ("checker_320x320", Fit::Squash, "squash"),
    ] {
        let dump = dir.join(format!("{stem}.f32"));
        let out = run(
            "generate",
            &[
                "--model",
                arg(&real_model()),
                "--mmproj",
                arg(&mmproj()),
                "--image",
                arg(&image(stem)),
                "--image-fit",
                fit_name,
                "--dump-image-embeddings",
                arg(&dump),
                "--prompt",
                "Describe the image.",
                "--max-tokens",
                "4",
                "--json",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "generate failed: {stderr}");
        let dumped = read_f32(&dump);
        assert_eq!(dumped, soft_tokens(stem, fit), "{stem}");
        let reference =
            read_f32(&fixtures().join(format!("vision/ref/{stem}.{fit_name}.tokens.f32")));
        let worst = dumped
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{stem}: {worst} from the reference");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(report["image_tokens"], 16);
        assert_eq!(report["generated_ids"].as_array().unwrap().len(), 4);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bad inputs end with one line on stderr and a non-zero status.
#[test]
fn image_errors_are_one_line() {
    let tiny = fixtures().join("tiny/tiny-gemma3-t1-f32.gguf");
    let cases = [
        // The tiny model is 256 wide, the projector 640.
        (tiny.clone(), image("gradient_224x224"), "hidden size"),
        (
            real_model(),
            fixtures().join("vision/no-such-image.png"),
            "cannot read",
        ),
        // Not an image.
        (real_model(), fixtures().join("vision/README.md"), "README"),
    ];
    for (model, img, expected) in cases {
        let out = run(
            "generate",
            &[
                "--model",
                arg(&model),
                "--mmproj",
                arg(&mmproj()),
                "--image",
                arg(&img),
                "--tokens",
                "2",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{expected}: succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// A chat turn with an image: the conversation holds `<start_of_image>`, one placeholder
/// per soft token, `<end_of_image>`; the next turn reuses the image from the cache.
#[test]
fn chat_keeps_the_image_in_the_cache() {
    let options = ModelOptions {
        threads: 2,
        ring_margin: 64,
        ..ModelOptions::default()
    };
    let model = Model::load(real_model(), options).unwrap();
    let chat_options = ChatOptions {
        ctx_len: 256,
        generate: GenerateOptions {
            max_tokens: 6,
            sampler: SamplerConfig::greedy(),
            ..GenerateOptions::default()
        },
        ..ChatOptions::default()
    };
    let mut chat = Chat::new(&model, chat_options.clone()).unwrap();
    chat.attach_image(soft_tokens("checker_320x320", Fit::Squash))
        .unwrap();
    assert_eq!(chat.pending_images(), 1);
    let first = chat.send("What is this?", |_| {}).unwrap();
    assert_eq!(chat.pending_images(), 0);
    let tokens = chat.tokens().to_vec();
    let start = tokens.iter().position(|&t| t == START_OF_IMAGE).unwrap();
    assert!(tokens[start + 1..start + 17]
        .iter()
        .all(|&t| is_placeholder(t)));
    assert_eq!(tokens[start + 17], END_OF_IMAGE);
    assert_eq!(tokens.iter().filter(|&&t| is_placeholder(t)).count(), 16);

    let second = chat.send("And the colors?", |_| {}).unwrap();
    assert!(
        second.reused_tokens > start + 17,
        "the image was not reused: {} tokens",
        second.reused_tokens
    );

    // A fresh chat with the same image gives the same (greedy) first answer.
    let mut again = Chat::new(&model, chat_options).unwrap();
    again
        .attach_image(soft_tokens("checker_320x320", Fit::Squash))
        .unwrap();
    assert_eq!(
        again.send("What is this?", |_| {}).unwrap().text,
        first.text
    );
}

/// The `chat` example: `--image` for the first message, `/image PATH` lines later.
#[test]
fn chat_example_attaches_images() {
    let mut child = Command::new(example("chat"))
        .args([
            "--model",
            arg(&real_model()),
            "--mmproj",
            arg(&mmproj()),
            "--image",
            arg(&image("gradient_224x224")),
            "--max-tokens",
            "3",
            "--temperature",
            "0",
            "--ctx",
            "256",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        "What is this?\n/image {}\nAnd this?\n",
        arg(&image("noise_300x200"))
    );
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat failed: {stderr}");
    assert_eq!(stderr.matches("(image ").count(), 2, "{stderr}");
}

/// `bench --mmproj --image` reports the image encode time.
#[test]
fn bench_times_the_image_encoding() {
    let out = run(
        "bench",
        &[
            "--model",
            arg(&real_model()),
            "--mmproj",
            arg(&mmproj()),
            "--image",
            arg(&image("gradient_224x224")),
            "--prefill",
            "4",
            "--decode",
            "2",
            "--reps",
            "2",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let seconds = report["image_encode_seconds"].as_f64().unwrap();
    assert!(seconds > 0.0 && seconds < 10.0, "{seconds}");
    assert_eq!(report["image_encode_runs"].as_array().unwrap().len(), 2);
}
