//! The gguf-info example: its functions are compiled into this test (so most checks need no
//! process), and the built binary is run for the exit-code / one-line-error contract.

#[allow(dead_code)]
#[path = "../examples/gguf-info.rs"]
mod gguf_info;

use std::path::{Path, PathBuf};
use std::process::Command;

use gemma::gguf::{GgmlType, GgufFile};
use gguf_info::Args;
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"));
    assert!(
        dir.is_dir(),
        "test fixtures missing: expected {}",
        dir.display()
    );
    dir
}

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

fn args(file: &Path) -> Args {
    Args {
        file: file.to_owned(),
        json: false,
        dump_tensor: None,
        out: None,
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gguf-info-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn text_report_of_the_real_model() {
    let text = gguf_info::run(&args(&real_model())).expect("report");
    assert!(
        text.contains("GGUF v3, 33 metadata keys, 236 tensors"),
        "{text}"
    );
    assert!(text.contains("(262144 elements)"), "token array summarized");
    assert!(
        !text.contains("<unused100>"),
        "long arrays are not printed in full"
    );
    for (ty, count) in [
        ("F32", 109),
        ("Q5_0", 81),
        ("Q4_K", 27),
        ("Q8_0", 10),
        ("Q6_K", 9),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{ty} ")))
            .expect(ty);
        assert!(line.contains(&format!("{count} tensors")), "{line}");
    }
    assert!(text.contains("token_embd.weight"));
    assert!(text.contains("file size: 253113024 bytes"));
}

#[test]
fn json_report_of_the_real_model() {
    let mut a = args(&real_model());
    a.json = true;
    let json: Json = serde_json::from_str(&gguf_info::run(&a).unwrap()).expect("one JSON object");
    assert_eq!(json["version"], 3);
    assert_eq!(json["tensor_count"], 236);
    assert_eq!(json["metadata"]["general.architecture"], "gemma3");
    assert_eq!(json["metadata"]["gemma3.block_count"], 18);
    let tokens = &json["metadata"]["tokenizer.ggml.tokens"];
    assert_eq!(
        (tokens["type"].as_str(), tokens["len"].as_u64()),
        (Some("array"), Some(262_144))
    );
    assert_eq!(tokens["first"][2], "<bos>");
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 236);
    let embd = tensors
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap();
    assert_eq!(embd["type"], "Q8_0");
    assert_eq!(embd["shape"], serde_json::json!([640, 262144]));
    assert_eq!(
        (embd["offset"].as_u64(), embd["bytes"].as_u64()),
        (Some(6_527_680), Some(178_257_920))
    );
    assert_eq!(json["type_totals"]["Q4_K"]["count"], 27);
}

/// Every dequantization reference of the fixtures (gguf-py, bit-exact with ggml) is
/// reproduced by `--dump-tensor`.
#[test]
fn dump_tensor_matches_reference_dequantization() {
    let root = fixtures();
    let manifest: Json =
        serde_json::from_str(&std::fs::read_to_string(root.join("quant/manifest.json")).unwrap())
            .unwrap();
    let dir = temp_dir("dump");
    for entry in manifest["entries"].as_array().unwrap() {
        let mut a = args(&root.join(entry["file"].as_str().unwrap()));
        let out = dir.join("t.f32");
        a.dump_tensor = Some(entry["tensor"].as_str().unwrap().to_owned());
        a.out = Some(out.clone());
        let ty = entry["type"].as_str().unwrap();
        gguf_info::run(&a).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let ours = std::fs::read(&out).unwrap();
        let reference = std::fs::read(root.join(entry["dequant"].as_str().unwrap())).unwrap();
        assert!(
            ours == reference,
            "{ty}: dump differs from the reference dequantization"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dump_of_an_f32_tensor_is_its_bytes() {
    let path = fixtures().join("tiny/tiny-gemma3-t1-f32.gguf");
    let file = GgufFile::open(&path).unwrap();
    let t = file.tensor("blk.3.ffn_up.weight").unwrap();
    assert_eq!(t.ty, GgmlType::F32);
    let dir = temp_dir("f32");
    let out = dir.join("up.f32");
    let n = gguf_info::dump_tensor(&file, &t.name, &out).unwrap();
    assert_eq!(n, 256 * 256);
    assert_eq!(std::fs::read(&out).unwrap(), file.tensor_data(t));
    let missing = gguf_info::dump_tensor(&file, "nope", &out).unwrap_err();
    assert_eq!(missing, "no tensor named `nope`");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_file_is_one_line_error() {
    let dir = temp_dir("bad");
    let path = dir.join("bad.gguf");
    let mut bytes = std::fs::read(fixtures().join("tiny/tiny-gemma3-t1-q4_0.gguf")).unwrap();
    bytes.truncate(100_000);
    std::fs::write(&path, &bytes).unwrap();
    let message = gguf_info::run(&args(&path)).unwrap_err();
    assert!(!message.contains('\n'));
    assert!(
        message.contains("bad.gguf") && message.contains("lie outside the data section"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The binary itself: exit code 1 and exactly one line on stderr for a malformed file.
#[test]
fn binary_exit_code_and_stderr() {
    let binary = example_binary("gguf-info");
    let dir = temp_dir("bin");
    let cases: [(&str, &[u8]); 3] = [
        ("magic.gguf", b"PK\x03\x04 not a gguf file"),
        ("empty.gguf", b""),
        (
            "version.gguf",
            b"GGUF\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        ),
    ];
    for (name, content) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let out = Command::new(&binary).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(&binary)
        .arg(dir.join("missing.gguf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let ok = Command::new(&binary)
        .arg(fixtures().join("vision/mmproj-tiny-f16.gguf"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("39 tensors"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The example binary of this build (target/<profile>/examples/NAME), built on demand when
/// this test runs alone (`cargo test` builds examples, `cargo test --test X` does not).
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/test");
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        let target_dir = profile_dir.parent().expect("target dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--example",
                name,
                "--profile",
                if release { "release" } else { "test" },
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(status.success(), "building example {name} failed");
    }
    assert!(
        binary.is_file(),
        "example binary missing at {}",
        binary.display()
    );
    binary
}
