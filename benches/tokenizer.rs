//! Tokenizer throughput (MB/s of input text) at 10 KB, 1 MB and 10 MB of mixed text: the
//! strings of `fixtures/tokenizer/gemma3_cases.jsonl` (English, code, CJK, emoji, byte
//! fallback, whitespace runs, special tokens) repeated. Equal MB/s across the three sizes
//! means linear time. One thread.
//!
//! Run: `cargo bench --bench tokenizer`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gemma_core::Tokenizer;
use gemma_gguf::GgufFile;

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/tokenizer"
    ));
    assert!(dir.is_dir(), "fixtures folder missing: {}", dir.display());
    dir
}

/// The fixture strings joined by newlines, repeated up to `size` bytes (cut at a char boundary).
fn mixed_text(size: usize) -> String {
    let lines =
        std::fs::read_to_string(fixtures().join("gemma3_cases.jsonl")).expect("fixture missing");
    let samples: Vec<String> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let case: serde_json::Value = serde_json::from_str(l).expect("bad fixture line");
            case["text"].as_str().expect("no text").to_string()
        })
        .collect();
    let mut text = String::with_capacity(size + 4096);
    'fill: loop {
        for sample in &samples {
            if text.len() >= size {
                break 'fill;
            }
            text.push_str(sample);
            text.push('\n');
        }
    }
    let mut cut = size.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}

fn bench_encode(c: &mut Criterion) {
    let file = GgufFile::open(fixtures().join("gemma3-vocab.gguf")).expect("vocab GGUF");
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    let mut group = c.benchmark_group("tokenizer_encode");
    for (label, size) in [("10KB", 10_000), ("1MB", 1_000_000), ("10MB", 10_000_000)] {
        let text = mixed_text(size);
        group.throughput(Throughput::Bytes(text.len() as u64));
        if size >= 1_000_000 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::from_parameter(label), &text, |b, text| {
            b.iter(|| tokenizer.encode(text))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
