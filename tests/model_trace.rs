//! The `Trace` hook: named activations of the forward pass, checked against the first
//! steps recomputed in f64 from the raw F32 weights of the tiny T1 file (embedding scale,
//! attention RMSNorm, Q projection), plus the names recorded and the filter.

mod parity_support;

use gemma_core::{KvType, Model, ModelOptions, Trace};
use gemma_gguf::GgufFile;
use parity_support::fixtures;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn trace_records_the_first_steps_exactly() {
    let path = fixtures().join("tiny/tiny-gemma3-t1-f32.gguf");
    let raw = GgufFile::open(&path).expect("T1");
    let tensor = |name: &str| f32s(raw.tensor_data(raw.tensor(name).expect(name)));
    let (embd, attn_norm, wq) = (
        tensor("token_embd.weight"),
        tensor("blk.0.attn_norm.weight"),
        tensor("blk.0.attn_q.weight"),
    );
    let model = Model::load(
        &path,
        ModelOptions {
            threads: 2,
            ..ModelOptions::default()
        },
    )
    .expect("T1");
    let mut session = model.session(64, KvType::F16).unwrap();
    session.set_trace(Some(Trace::only(["inp_scaled", "attn_norm-0", "Qcur-0"])));
    let tokens = [2u32, 300, 17];
    session.prefill(&tokens).unwrap();
    let trace = session.trace().expect("attached");
    assert_eq!(trace.entries().len(), 3, "only the three requested tensors");

    let inp = trace.get("inp_scaled").expect("inp_scaled");
    assert_eq!((inp.pos0, inp.rows, inp.width), (0, 3, 256));
    for (t, &id) in tokens.iter().enumerate() {
        let row = &embd[id as usize * 256..(id as usize + 1) * 256];
        let expected: Vec<f32> = row.iter().map(|v| v * 16.0).collect();
        assert_eq!(
            &inp.data[t * 256..(t + 1) * 256],
            &expected[..],
            "embedding row {t} * sqrt(256)"
        );
    }

    let norm = trace.get("attn_norm-0").expect("attn_norm-0");
    let q = trace.get("Qcur-0").expect("Qcur-0");
    for t in 0..3 {
        let x: Vec<f64> = inp.data[t * 256..(t + 1) * 256]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / 256.0 + 1e-6).sqrt();
        let h: Vec<f64> = x
            .iter()
            .zip(&attn_norm)
            .map(|(v, &w)| v / rms * w as f64)
            .collect();
        for (d, &ours) in norm.data[t * 256..(t + 1) * 256].iter().enumerate() {
            assert!(
                (ours as f64 - h[d]).abs() <= 1e-5 * h[d].abs().max(1.0),
                "attn_norm-0 row {t} [{d}]"
            );
        }
        // Qcur = Wq · h, Wq stored as 256 rows of 256 inputs.
        for r in 0..256 {
            let expected: f64 = wq[r * 256..(r + 1) * 256]
                .iter()
                .zip(&h)
                .map(|(&w, &v)| w as f64 * v)
                .sum();
            let ours = q.data[t * 256 + r] as f64;
            assert!(
                (ours - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                "Qcur-0 row {t} [{r}]: {ours} vs {expected}"
            );
        }
    }
}

#[test]
fn trace_names_every_step_and_is_off_by_default() {
    let model = Model::load(
        fixtures().join("tiny/tiny-gemma3-t1-q4_0.gguf"),
        ModelOptions::default(),
    )
    .unwrap();
    let mut session = model.session(64, KvType::F16).unwrap();
    session.prefill(&[2, 5]).unwrap();
    assert!(session.trace().is_none());
    session.set_trace(Some(Trace::all()));
    let logits = session.step(9).unwrap().to_vec();
    let trace = session.set_trace(None).expect("the trace comes back");
    for il in 0..7 {
        for step in [
            "attn_norm",
            "Qcur",
            "Kcur",
            "Vcur",
            "Qcur_normed",
            "Kcur_normed",
            "Qcur_rope",
            "Kcur_rope",
            "kqv_out",
            "attn_out",
            "attn_post_norm",
            "sa_out",
            "ffn_norm",
            "ffn_geglu",
            "ffn_out",
            "ffn_post_norm",
            "l_out",
        ] {
            let e = trace
                .get(&format!("{step}-{il}"))
                .unwrap_or_else(|| panic!("{step}-{il} missing"));
            assert_eq!((e.pos0, e.rows), (2, 1));
        }
    }
    let out = trace.get("result_output").expect("result_output");
    assert_eq!(out.data, logits);
    assert_eq!(trace.entries().len(), 1 + 7 * 17 + 2);
}
