//! The session API on the tiny T1 model, against llama.cpp's logits: the last-token
//! prefill (which runs only the last row through the final layer's attention output and
//! FFN), chunked prefills, every KV type, and sessions of one shared model running on
//! several threads at once.

mod parity_support;

use gemma_core::{CoreError, KvType, Model, ModelOptions, Session, Trace};
use parity_support::{fixtures, ids, read_f32, read_json, Diff};
use std::sync::Arc;

const N_VOCAB: usize = 512;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

fn model(variant: &str, max_batch: usize) -> Model {
    let path = fixtures().join(format!("tiny/tiny-gemma3-t1-{variant}.gguf"));
    let options = ModelOptions {
        threads: 2,
        max_batch,
        ..ModelOptions::default()
    };
    Model::load(path, options).expect("tiny model")
}

fn sequence() -> Vec<u32> {
    ids(&read_json(&fixtures().join("tiny/t1_reference.json"))["sequence"])
}

/// llama.cpp's logits after token `i` of the sequence.
fn reference_row(variant: &str, i: usize) -> Vec<f32> {
    let all = read_f32(&fixtures().join(format!("tiny/tiny-gemma3-t1-{variant}.logits.f32")));
    all[i * N_VOCAB..(i + 1) * N_VOCAB].to_vec()
}

#[test]
fn model_is_shareable_and_sessions_are_movable() {
    assert_send_sync::<Model>();
    assert_send::<Session<'static>>();
}

/// `prefill` returns the logits after the last token, computed with the last layer on
/// that row only; for every prefix length they match llama.cpp's row for that position.
#[test]
fn last_token_prefill_matches_llama_cpp_at_every_length() {
    let seq = sequence();
    let m = model("f32", 512);
    for len in [1, 2, 7, 8, 9, 33, 64] {
        let mut session = m.session(64, KvType::F16).unwrap();
        let logits = session.prefill(&seq[..len]).unwrap();
        let d = Diff::of(logits, &reference_row("f32", len - 1), N_VOCAB);
        assert!(d.max_abs <= 0.05, "prefix {len}: {d}");
        assert_eq!(session.position(), len);
    }
}

/// A prompt longer than `max_batch` runs in several forward passes.
#[test]
fn chunked_prefill_gives_the_same_last_logits() {
    let seq = sequence();
    for max_batch in [1, 5, 16] {
        let m = model("q4_k_m", max_batch);
        let mut session = m.session(64, KvType::F16).unwrap();
        let logits = session.prefill(&seq).unwrap();
        let d = Diff::of(logits, &reference_row("q4_k_m", 63), N_VOCAB);
        assert!(
            d.mean_abs <= 0.25 && d.min_cos >= 0.98,
            "max_batch {max_batch}: {d}"
        );
    }
}

/// F32 caches stay within the F32 bounds of llama.cpp's F16-cache logits, Q8_0 caches
/// within the bounds of quantized models.
#[test]
fn every_kv_type_runs() {
    let seq = sequence();
    let m = model("f32", 512);
    for (kv, bytes_per_value) in [
        (KvType::F16, 2.0),
        (KvType::F32, 4.0),
        (KvType::Q8_0, 34.0 / 32.0),
    ] {
        let mut session = m.session(64, kv).unwrap();
        assert_eq!(session.kv_type(), kv);
        // 7 layers x 64 slots x (K + V) x 2 heads x 64 values.
        assert_eq!(
            session.kv_bytes() as f64,
            7.0 * 64.0 * 2.0 * 128.0 * bytes_per_value
        );
        let mut all = Vec::new();
        session
            .prefill_each(&seq, |_, row| all.extend_from_slice(row))
            .unwrap();
        let expected = read_f32(&fixtures().join("tiny/tiny-gemma3-t1-f32.logits.f32"));
        let d = Diff::of(&all, &expected, N_VOCAB);
        println!("{kv}: {d}");
        // Rounding K and V to 8 bits is noise of the size of quantized weights.
        let (mean, cos) = if kv == KvType::Q8_0 {
            (0.25, 0.98)
        } else {
            (0.01, 0.999)
        };
        assert!(d.mean_abs <= mean && d.min_cos >= cos, "{kv}: {d}");
    }
}

/// Two threads with their own sessions of one `Arc<Model>` get the same logits as one
/// session run alone.
#[test]
fn sessions_run_on_several_threads() {
    let seq = sequence();
    let m = Arc::new(model("q8_0", 512));
    // The same split as the threads (batches of 32 and 64 rows take different
    // flash-attention kernels, as in llama.cpp).
    let mut alone = m.session(64, KvType::F16).unwrap();
    alone.prefill(&seq[..32]).unwrap();
    let alone = alone.prefill(&seq[32..]).unwrap().to_vec();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (m, seq) = (Arc::clone(&m), seq.clone());
            std::thread::spawn(move || {
                let mut session = m.session(64, KvType::F16).unwrap();
                session.prefill(&seq[..32]).unwrap();
                session.prefill(&seq[32..]).unwrap().to_vec()
            })
        })
        .collect();
    for h in handles {
        let logits = h.join().expect("thread");
        let d = Diff::of(&logits, &alone, N_VOCAB);
        assert!(d.max_abs <= 1e-3, "threaded session: {d}");
    }
}

/// `step_greedy` returns llama.cpp's top-1 wherever its top-1/top-2 margin is clear, and at
/// every step the id `sampling::argmax` picks from `step`'s logits; it leaves no logits
/// behind, picks the same with a trace attached (which records the logits), and fails as
/// `step` does (a token outside the vocabulary, a full context).
#[test]
fn greedy_steps_pick_the_highest_logit() {
    let seq = sequence();
    let reference = read_json(&fixtures().join("tiny/t1_reference.json"));
    let per_file = &reference["models"]["tiny-gemma3-t1-q8_0.gguf"];
    let m = model("q8_0", 512);
    let mut greedy = m.session(64, KvType::F16).unwrap();
    let mut plain = m.session(64, KvType::F16).unwrap();
    greedy.prefill(&seq[..8]).unwrap();
    plain.prefill(&seq[..8]).unwrap();
    let mut clear = 0;
    for (i, &t) in seq.iter().enumerate().skip(8) {
        if i == 40 {
            greedy.set_trace(Some(Trace::only(["result_output"])));
        }
        let want = gemma_core::sampling::argmax(plain.step(t).unwrap());
        let got = greedy.step_greedy(t).unwrap();
        assert_eq!(got, want, "position {i}");
        assert!(greedy.logits().is_empty());
        if per_file["top1_top2_margin_per_position"][i]
            .as_f64()
            .unwrap()
            > 0.1
        {
            assert_eq!(
                got as u64,
                per_file["argmax_per_position"][i].as_u64().unwrap()
            );
            clear += 1;
        }
    }
    assert!(clear >= 40, "only {clear} positions with a clear top-1");
    let trace = greedy.set_trace(None).expect("trace");
    assert!(trace.get("result_output").is_some());
    assert!(matches!(
        greedy.step_greedy(N_VOCAB as u32),
        Err(CoreError::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        greedy.step_greedy(1),
        Err(CoreError::ContextFull { .. })
    ));
}
