//! Hyper-parameters and weight binding: the values read from the real 270M and the tiny
//! T1 files (checked against their fixture READMEs), and the typed errors for files that
//! are not Gemma 3 or whose metadata and tensors disagree (made by re-writing T1 with
//! one change each); the fuzzer's seed model loads and chats.

mod parity_support;

use gemma_core::{Chat, ChatOptions, Config, CoreError, GenerateOptions, Model, ModelOptions};
use gemma_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value};
use parity_support::{fixtures, real_model};
use std::io::Cursor;

fn tiny_path() -> std::path::PathBuf {
    fixtures().join("tiny/tiny-gemma3-t1-f32.gguf")
}

#[test]
fn real_270m_hyperparameters() {
    let model = Model::load(real_model(), ModelOptions::default()).expect("270M");
    let c = model.config();
    assert_eq!(
        (c.n_embd, c.n_layer, c.n_ff, c.n_vocab),
        (640, 18, 2048, 262_144)
    );
    assert_eq!(
        (c.n_head, c.n_head_kv, c.head_dim_k, c.head_dim_v),
        (4, 1, 256, 256)
    );
    assert_eq!((c.sliding_window, c.context_length), (Some(512), 32_768));
    assert_eq!(c.rms_eps, 1e-6);
    let globals: Vec<usize> = (0..18).filter(|&il| !c.layers[il].is_local()).collect();
    assert_eq!(globals, [5, 11, 17]);
    for layer in &c.layers {
        let (base, window) = if layer.is_local() {
            (10_000.0, Some(512))
        } else {
            (1e6, None)
        };
        assert_eq!(
            (layer.rope.freq_base, layer.rope.freq_scale, layer.window),
            (base, 1.0, window)
        );
    }
    assert_eq!(c.attention_scale, 1.0 / 16.0);
    assert_eq!(c.embedding_scale, 640f32.sqrt());
    assert_eq!(c.final_logit_softcap, None);
    // Tied output: the output projection is the embedding table.
    assert_eq!(model.weights().output, model.weights().token_embd);
    assert_eq!(model.weights().token_embd.ty, GgmlType::Q8_0);
}

#[test]
fn tiny_t1_hyperparameters() {
    let model = Model::load(tiny_path(), ModelOptions::default()).expect("T1");
    let c = model.config();
    assert_eq!((c.n_embd, c.n_layer, c.n_ff, c.n_vocab), (256, 7, 256, 512));
    assert_eq!((c.n_head, c.n_head_kv, c.head_dim_k), (4, 2, 64));
    let local: Vec<bool> = c.layers.iter().map(|l| l.is_local()).collect();
    assert_eq!(local, [true, true, true, true, true, false, true]);
    // Linear RoPE scaling x8 on the global layer only.
    assert_eq!(
        (c.layers[5].rope.freq_base, c.layers[5].rope.freq_scale),
        (1e6, 0.125)
    );
    assert_eq!(
        (c.layers[0].rope.freq_base, c.layers[0].rope.freq_scale),
        (10_000.0, 1.0)
    );
    assert_eq!(c.attention_scale, 0.125);
    assert_eq!(c.embedding_scale, 16.0);
}

/// T1 re-written with `meta` changes (`None` removes the key) and `tensor` changes
/// (`None` drops it; otherwise the new shape, data cut or zero-padded to fit).
fn rewritten(meta: &[(&str, Option<Value>)], tensors: &[(&str, Option<Vec<u64>>)]) -> GgufFile {
    let source = GgufFile::open(tiny_path()).expect("T1");
    let mut w = GgufWriter::new(Cursor::new(Vec::new()));
    for (key, value) in source.metadata().iter() {
        match meta.iter().find(|(k, _)| *k == key) {
            Some((_, Some(v))) => w.add_metadata(key, v.clone()).unwrap(),
            Some((_, None)) => {}
            None => w.add_metadata(key, value.clone()).unwrap(),
        }
    }
    for (key, value) in meta {
        if let Some(v) = value {
            if source.metadata().get(key).is_none() {
                w.add_metadata(*key, v.clone()).unwrap();
            }
        }
    }
    let mut kept = Vec::new();
    for t in source.tensors() {
        let dims = match tensors.iter().find(|(n, _)| *n == t.name) {
            Some((_, None)) => continue,
            Some((_, Some(dims))) => dims.clone(),
            None => t.dims.clone(),
        };
        w.add_tensor(t.name.clone(), t.ty, &dims).unwrap();
        let len = (dims.iter().product::<u64>() * 4) as usize;
        let mut data = source.tensor_data(t).to_vec();
        data.resize(len, 0);
        kept.push((t.name.clone(), data));
    }
    w.write_header().unwrap();
    for (name, data) in &kept {
        w.write_tensor_data(name, data).unwrap();
    }
    GgufFile::from_bytes(w.finish().unwrap().into_inner()).expect("re-written T1")
}

fn load(file: GgufFile) -> Result<Model, CoreError> {
    Model::from_gguf(file, ModelOptions::default())
}

#[test]
fn an_unchanged_rewrite_loads() {
    let model = load(rewritten(&[], &[])).expect("T1 rewritten");
    assert_eq!(model.config().n_layer, 7);
}

#[test]
fn another_architecture_is_rejected() {
    let file = rewritten(&[("general.architecture", Some(Value::from("llama")))], &[]);
    match load(file) {
        Err(CoreError::WrongArchitecture { found }) => assert_eq!(found, "llama"),
        other => panic!("expected WrongArchitecture, got {other:?}"),
    }
}

#[test]
fn a_missing_key_is_named() {
    let file = rewritten(&[("gemma3.block_count", None)], &[]);
    match load(file) {
        Err(CoreError::Gguf(GgufError::MissingKey { key })) => {
            assert_eq!(key, "gemma3.block_count")
        }
        other => panic!("expected MissingKey, got {other:?}"),
    }
}

#[test]
fn inconsistent_hyperparameters_are_rejected() {
    let file = rewritten(
        &[("gemma3.attention.head_count_kv", Some(Value::U32(3)))],
        &[],
    );
    assert!(matches!(
        load(file),
        Err(CoreError::InvalidHyperparameter { .. })
    ));
    let file = rewritten(
        &[("gemma3.rope.scaling.type", Some(Value::from("yarn")))],
        &[],
    );
    assert!(matches!(
        load(file),
        Err(CoreError::InvalidHyperparameter { .. })
    ));
}

#[test]
fn shapes_must_match_the_metadata() {
    let file = rewritten(
        &[("gemma3.feed_forward_length", Some(Value::U32(512)))],
        &[],
    );
    match load(file) {
        Err(CoreError::TensorShape {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "blk.0.ffn_gate.weight");
            assert_eq!((expected, found), (vec![256, 512], vec![256, 256]));
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    let file = rewritten(&[], &[("blk.3.attn_k_norm.weight", Some(vec![32]))]);
    assert!(
        matches!(load(file), Err(CoreError::TensorShape { name, .. }) if name == "blk.3.attn_k_norm.weight")
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let file = rewritten(&[], &[("blk.6.ffn_up.weight", None)]);
    assert!(
        matches!(load(file), Err(CoreError::MissingTensor { name }) if name == "blk.6.ffn_up.weight")
    );
}

/// A pattern key overrides the default layer pattern (here: every 3rd layer global), and
/// without a sliding window every layer is global.
#[test]
fn layer_pattern_keys() {
    let file = rewritten(
        &[(
            "gemma3.attention.sliding_window_pattern",
            Some(Value::U32(3)),
        )],
        &[],
    );
    let local: Vec<bool> = load(file)
        .unwrap()
        .config()
        .layers
        .iter()
        .map(|l| l.is_local())
        .collect();
    assert_eq!(local, [true, true, false, true, true, false, true]);
    let file = rewritten(&[("gemma3.attention.sliding_window", None)], &[]);
    let model = load(file).unwrap();
    assert!(model.config().layers.iter().all(|l| !l.is_local()));
    assert_eq!(model.config().sliding_window, None);
}

/// The 27B (62 layers) scales queries by 1/sqrt(n_embd / n_head), every other size by
/// 1/sqrt(head_dim).
#[test]
fn attention_scale_of_the_27b() {
    let file = GgufFile::open(tiny_path()).unwrap();
    let mut c = Config::from_metadata(file.metadata(), 512).unwrap();
    assert_eq!(c.attention_scale, 1.0 / 8.0);
    let file = rewritten(&[("gemma3.block_count", Some(Value::U32(62)))], &[]);
    c = Config::from_metadata(file.metadata(), 512).unwrap();
    assert_eq!(c.attention_scale, 1.0 / (256f32 / 4.0).sqrt());
    let file = rewritten(
        &[
            ("gemma3.block_count", Some(Value::U32(62))),
            ("gemma3.attention.head_count", Some(Value::U32(2))),
        ],
        &[],
    );
    c = Config::from_metadata(file.metadata(), 512).unwrap();
    assert_eq!(c.attention_scale, 1.0 / 128f32.sqrt());
}

/// The seed of the `model` fuzz target (`fuzz/seeds/tiny_model.gguf`, written by
/// `fuzz/make_seeds.py`) must stay a model this engine loads and runs, or the fuzzer would
/// only explore the loader's errors.
#[test]
fn the_fuzz_seed_is_a_whole_model() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/tiny_model.gguf");
    let options = ModelOptions {
        threads: 1,
        ..ModelOptions::default()
    };
    let model = Model::load(path, options).expect("the seed loads");
    let c = model.config();
    assert_eq!((c.n_layer, c.n_embd, c.n_vocab), (2, 32, 275));
    let chat_options = ChatOptions {
        ctx_len: 40,
        generate: GenerateOptions {
            max_tokens: 3,
            ..GenerateOptions::default()
        },
        ..ChatOptions::default()
    };
    let mut chat = Chat::new(&model, chat_options).expect("its tokenizer and template");
    let turn = chat.send("Hi", |_| {}).expect("a sampled turn");
    assert!(chat.tokens().len() > 5, "{turn:?}");
}
