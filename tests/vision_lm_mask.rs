//! Images in the language model, on the tiny T1 model (7 layers, hidden 256, sliding
//! window 8) with random soft-token rows: the tokens of an image attend to each other,
//! text stays causal. Every layer's attention output is checked against a naive f64
//! attention computed from the traced queries, keys and values with the mask written out
//! here; then the effects on logits: the first image token changes when a later one does,
//! the text before the image does not, and a causal run of the same rows differs.

mod parity_support;

use gemma_core::trace::Trace;
use gemma_core::{ImageError, KvType, Model, ModelOptions, Session};
use parity_support::{fixtures, ids, read_json};
use std::collections::HashMap;

const PREFIX: usize = 5;
const IMAGE: usize = 16;
const SUFFIX: usize = 4;

fn model(ring_margin: usize) -> Model {
    let path = fixtures().join("tiny/tiny-gemma3-t1-f32.gguf");
    let options = ModelOptions {
        threads: 2,
        ring_margin,
        ..ModelOptions::default()
    };
    Model::load(path, options).expect("tiny model")
}

fn sequence() -> Vec<u32> {
    ids(&read_json(&fixtures().join("tiny/t1_reference.json"))["sequence"])
}

/// Deterministic pseudo-random rows in about [-1, 1).
fn random_rows(n: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n * width)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The logits after every position of: prefix text, one image, suffix text.
fn run(m: &Model, image: &[f32], trace: Option<Trace>) -> (Vec<Vec<f32>>, Option<Trace>) {
    let n_image = image.len() / m.config().n_embd;
    let seq = sequence();
    let mut session = m.session(64, KvType::F32).unwrap();
    session.set_trace(trace);
    let mut rows = Vec::new();
    session
        .prefill_each(&seq[..PREFIX], |_, l| rows.push(l.to_vec()))
        .unwrap();
    session
        .prefill_image_each(image, |_, l| rows.push(l.to_vec()))
        .unwrap();
    session
        .prefill_each(&seq[PREFIX..PREFIX + SUFFIX], |_, l| rows.push(l.to_vec()))
        .unwrap();
    assert_eq!(session.position(), PREFIX + n_image + SUFFIX);
    (rows, session.set_trace(None))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The rows of a traced activation by position, over all the runs of a session.
fn by_position(trace: &Trace, name: &str) -> HashMap<usize, Vec<f32>> {
    let mut rows = HashMap::new();
    for e in trace.entries().iter().filter(|e| e.name == name) {
        for (r, row) in e.data.chunks_exact(e.width).enumerate() {
            rows.insert(e.pos0 + r, row.to_vec());
        }
    }
    rows
}

/// Keys visible to a query at `pos`, written out independently of the engine: causal
/// within the window, and the whole image for the image's tokens.
fn visible(pos: usize, window: Option<usize>, n_image: usize) -> std::ops::Range<usize> {
    let start = window.map_or(0, |w| (pos + 1).saturating_sub(w));
    let image = PREFIX..PREFIX + n_image;
    let end = if image.contains(&pos) {
        image.end
    } else {
        pos + 1
    };
    start..end
}

/// Both CPU attention paths: per-query (short batches) and tiled (8 rows and more).
#[test]
fn every_layer_attends_with_the_image_mask() {
    for n_image in [3, IMAGE] {
        check_attention(n_image);
    }
}

fn check_attention(n_image: usize) {
    let m = model(64);
    let c = m.config().clone();
    let image = random_rows(n_image, c.n_embd, 1);
    let names = (0..c.n_layer)
        .flat_map(|il| ["Qcur_rope", "Kcur_rope", "Vcur", "kqv_out"].map(|n| format!("{n}-{il}")));
    let (_, trace) = run(&m, &image, Some(Trace::only(names)));
    let trace = trace.unwrap();
    let (dk, dv, group) = (c.head_dim_k, c.head_dim_v, c.n_head / c.n_head_kv);
    let mut worst = 0.0f64;
    for il in 0..c.n_layer {
        let q = by_position(&trace, &format!("Qcur_rope-{il}"));
        let k = by_position(&trace, &format!("Kcur_rope-{il}"));
        let v = by_position(&trace, &format!("Vcur-{il}"));
        let out = by_position(&trace, &format!("kqv_out-{il}"));
        assert_eq!(out.len(), PREFIX + n_image + SUFFIX, "layer {il}");
        for pos in 0..PREFIX + n_image + SUFFIX {
            let keys = visible(pos, c.layers[il].window, n_image);
            for h in 0..c.n_head {
                let g = h / group;
                let qh = &q[&pos][h * dk..(h + 1) * dk];
                let scores: Vec<f64> = keys
                    .clone()
                    .map(|j| {
                        let kh = &k[&j][g * dk..(g + 1) * dk];
                        qh.iter().zip(kh).map(|(&a, &b)| a as f64 * b as f64).sum()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for d in 0..dv {
                    let expected: f64 = keys
                        .clone()
                        .zip(&exps)
                        .map(|(j, p)| p / sum * v[&j][g * dv + d] as f64)
                        .sum();
                    let got = out[&pos][h * dv + d] as f64;
                    worst = worst.max((got - expected).abs());
                }
            }
        }
    }
    assert!(
        worst < 1e-4,
        "image of {n_image}: attention differs from the naive image mask by {worst}"
    );
}

#[test]
fn image_tokens_see_each_other_and_text_before_does_not_see_the_image() {
    let m = model(64);
    let n_embd = m.config().n_embd;
    let image = random_rows(IMAGE, n_embd, 2);
    let (a, _) = run(&m, &image, None);

    // Only the last image row changes.
    let mut changed = image.clone();
    changed[(IMAGE - 1) * n_embd..].copy_from_slice(&random_rows(1, n_embd, 3));
    let (b, _) = run(&m, &changed, None);
    for (pos, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = max_diff(x, y);
        if pos < PREFIX {
            assert_eq!(d, 0.0, "text before the image (position {pos}) saw it");
        } else {
            assert!(
                d > 1e-3,
                "position {pos} did not see the last image token ({d})"
            );
        }
    }

    // The prefix's logits are those of the text alone.
    let seq = sequence();
    let mut alone = m.session(64, KvType::F32).unwrap();
    let mut text_only = Vec::new();
    alone
        .prefill_each(&seq[..PREFIX], |_, l| text_only.push(l.to_vec()))
        .unwrap();
    for (pos, row) in text_only.iter().enumerate() {
        assert_eq!(max_diff(row, &a[pos]), 0.0, "position {pos}");
    }
}

/// The same rows run causally (each row its own one-token image) give different logits
/// for the image and the text after it.
#[test]
fn a_causal_run_of_the_same_rows_differs() {
    let m = model(64);
    let n_embd = m.config().n_embd;
    let image = random_rows(IMAGE, n_embd, 4);
    let (a, _) = run(&m, &image, None);
    let seq = sequence();
    let mut session: Session<'_> = m.session(64, KvType::F32).unwrap();
    let mut causal = Vec::new();
    session
        .prefill_each(&seq[..PREFIX], |_, l| causal.push(l.to_vec()))
        .unwrap();
    for row in image.chunks_exact(n_embd) {
        causal.push(session.prefill_image(row).unwrap().to_vec());
    }
    session
        .prefill_each(&seq[PREFIX..PREFIX + SUFFIX], |_, l| {
            causal.push(l.to_vec())
        })
        .unwrap();
    assert_eq!(max_diff(&a[PREFIX - 1], &causal[PREFIX - 1]), 0.0);
    assert!(
        max_diff(&a[PREFIX], &causal[PREFIX]) > 1e-3,
        "first image token"
    );
    let last = PREFIX + IMAGE + SUFFIX - 1;
    assert!(
        max_diff(&a[last], &causal[last]) > 1e-3,
        "text after the image"
    );
}

#[test]
fn bad_images_are_typed_errors() {
    let m = model(3);
    let n_embd = m.config().n_embd;
    let mut session = m.session(64, KvType::F16).unwrap();
    session.prefill(&[2]).unwrap();
    match session.prefill_image(&random_rows(5, n_embd, 5)) {
        Err(ImageError::TooLong { tokens: 5, max: 4 }) => {}
        other => panic!("expected TooLong, got {other:?}"),
    }
    assert!(matches!(
        session.prefill_image(&[0.5; 7]),
        Err(ImageError::Width { values: 7, .. })
    ));
    assert!(matches!(session.prefill_image(&[]), Err(ImageError::Empty)));
    assert_eq!(
        session.position(),
        1,
        "failed images leave the cache as it was"
    );
    session.prefill_image(&random_rows(4, n_embd, 6)).unwrap();
    assert_eq!(session.position(), 5);
}
