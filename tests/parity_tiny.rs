//! The tiny T1 Gemma 3 models (`../shared/fixtures/tiny`, every quantization) against
//! llama.cpp's logits: all 64 positions of the fixed sequence in one prefill, the
//! teacher-forced greedy path, the exact greedy continuation (F32/F16), and the sequence
//! fed one token at a time (F32 and two quantized files).
//!
//! Bounds from the fixtures' README: F32/F16 max abs <= 0.05 and mean abs <= 0.01;
//! BF16 max abs <= 0.3 and mean <= 0.05; quantized mean abs <= 0.25, per-position cosine
//! >= 0.98, max abs <= 1.5. Run with `--nocapture` to see the measured numbers.
//!
//! The fixtures were made with flash attention off, so that is checked first; the
//! engine's default, llama.cpp's flash-attention rounding (llama.cpp's own default),
//! must stay within the same bounds (llama.cpp itself, flash on against these files:
//! F32 max 0.026 mean 0.0031, F16 0.031 / 0.0048, Q4_K_M 0.90 / 0.12).

mod parity_support;

use gemma_core::{KvType, Model, ModelOptions};
use parity_support::{argmax, fixtures, ids, read_f32, read_json, Diff};

const N_VOCAB: usize = 512;

/// Every T1 variant, with its class of tolerance.
const VARIANTS: [(&str, Class); 16] = [
    ("f32", Class::Float),
    ("f16", Class::Float),
    ("bf16", Class::Bf16),
    ("q8_0", Class::Quantized),
    ("q4_0", Class::Quantized),
    ("q4_1", Class::Quantized),
    ("q5_0", Class::Quantized),
    ("q5_1", Class::Quantized),
    ("q2_k", Class::Quantized),
    ("q3_k_m", Class::Quantized),
    ("q4_k", Class::Quantized),
    ("q5_k", Class::Quantized),
    ("q6_k", Class::Quantized),
    ("iq4_nl", Class::Quantized),
    ("iq4_xs", Class::Quantized),
    ("q4_k_m", Class::Quantized),
];

/// Variants also checked token by token (decode path against the batch reference).
const ONE_BY_ONE: [&str; 3] = ["f32", "q4_k_m", "q8_0"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Float,
    Bf16,
    Quantized,
}

impl Class {
    /// (max abs, mean abs, min cosine)
    fn bounds(self) -> (f32, f32, f32) {
        match self {
            Class::Float => (0.05, 0.01, 0.999),
            Class::Bf16 => (0.3, 0.05, 0.99),
            Class::Quantized => (1.5, 0.25, 0.98),
        }
    }

    fn check(self, what: &str, d: Diff, failures: &mut Vec<String>) {
        let (max, mean, cos) = self.bounds();
        if !(d.max_abs <= max && d.mean_abs <= mean && d.min_cos >= cos) {
            failures.push(format!(
                "{what}: {d} (bounds max {max} mean {mean} cos {cos})"
            ));
        }
    }
}

fn load(variant: &str, flash_attention: bool) -> Model {
    let path = fixtures().join(format!("tiny/tiny-gemma3-t1-{variant}.gguf"));
    let options = ModelOptions {
        threads: 2,
        flash_attention,
        ..ModelOptions::default()
    };
    Model::load(&path, options).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Logits after every token of `tokens`, run as one prefill.
fn batch_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut session = model.session(256, KvType::F16).expect("session");
    let mut all = Vec::new();
    session
        .prefill_each(tokens, |_, row| all.extend_from_slice(row))
        .expect("prefill");
    all
}

/// Logits after every token of `tokens`, fed one decode step at a time.
fn step_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut session = model.session(256, KvType::F16).expect("session");
    let mut all = Vec::new();
    for &t in tokens {
        all.extend_from_slice(session.step(t).expect("step"));
    }
    all
}

/// `n` greedy tokens after `prompt`.
fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut session = model.session(256, KvType::F16).expect("session");
    let mut next = argmax(session.prefill(prompt).expect("prefill")) as u32;
    let mut out = vec![next];
    while out.len() < n {
        next = argmax(session.step(next).expect("step")) as u32;
        out.push(next);
    }
    out
}

#[test]
fn tiny_models_match_llama_cpp_logits_flash_attention_off() {
    check_every_variant(false);
}

#[test]
fn tiny_models_match_llama_cpp_logits_flash_attention_on() {
    check_every_variant(true);
}

/// Both checks again on every other SIMD level this CPU has, the scalar one included
/// (with AVX2 on an AVX-512 CPU, the GEMMs and one-token kernels of AVX2-only CPUs).
#[test]
fn tiny_models_match_llama_cpp_logits_on_every_simd_level() {
    parity_support::rerun_on_other_simd_levels(
        &[
            "tiny_models_match_llama_cpp_logits_flash_attention_off",
            "tiny_models_match_llama_cpp_logits_flash_attention_on",
        ],
        true,
    );
}

fn check_every_variant(flash_attention: bool) {
    let dir = fixtures().join("tiny");
    let sequence = ids(&read_json(&dir.join("t1_reference.json"))["sequence"]);
    assert_eq!(sequence.len(), 64);
    let mut failures = Vec::new();
    println!(
        "flash attention {}",
        if flash_attention { "on" } else { "off" }
    );
    println!("variant   | 64-token prefill                  | teacher-forced greedy (24)        | one token at a time");
    for (variant, class) in VARIANTS {
        let model = load(variant, flash_attention);
        let base = format!("tiny-gemma3-t1-{variant}");

        let expected = read_f32(&dir.join(format!("{base}.logits.f32")));
        let batch = Diff::of(&batch_logits(&model, &sequence), &expected, N_VOCAB);
        class.check(&format!("{variant} prefill"), batch, &mut failures);

        let greedy_ref = read_json(&dir.join(format!("{base}.greedy.json")));
        let (prompt, generated) = (ids(&greedy_ref["prompt"]), ids(&greedy_ref["generated"]));
        let forced: Vec<u32> = prompt
            .iter()
            .chain(&generated[..generated.len() - 1])
            .copied()
            .collect();
        let forced_logits = batch_logits(&model, &forced);
        let expected_forced = read_f32(&dir.join(format!("{base}.greedy_logits.f32")));
        let tf = Diff::of(
            &forced_logits[(prompt.len() - 1) * N_VOCAB..],
            &expected_forced,
            N_VOCAB,
        );
        class.check(
            &format!("{variant} teacher-forced greedy"),
            tf,
            &mut failures,
        );

        let mut stepped = String::from("-");
        if ONE_BY_ONE.contains(&variant) {
            let d = Diff::of(&step_logits(&model, &sequence), &expected, N_VOCAB);
            class.check(&format!("{variant} one token at a time"), d, &mut failures);
            stepped = d.to_string();
        }
        if class == Class::Float {
            let ours = greedy(&model, &prompt, generated.len());
            if ours != generated {
                failures.push(format!(
                    "{variant} greedy: {ours:?} != llama.cpp {generated:?}"
                ));
            }
        }
        println!("{variant:9} | {batch} | {tf} | {stepped}");
    }
    assert!(
        failures.is_empty(),
        "outside the bounds:\n{}",
        failures.join("\n")
    );
}
