//! Fuzz target: a GGUF file with any metadata and tensors must load as a model or give a
//! typed error, never a panic or an allocation its header merely claims. A model that
//! loads runs: its tokenizer and chat template, a two-turn chat of a few sampled tokens,
//! and a session fed token ids in and out of range.

#![no_main]

use gemma_core::{Chat, ChatOptions, GenerateOptions, KvType, Model, ModelOptions, SamplerConfig};
use gemma_gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

/// Context of the fuzzed sessions: small, so that a run takes milliseconds.
const CTX: usize = 40;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let options = ModelOptions {
        threads: 1,
        max_batch: 16,
        ..ModelOptions::default()
    };
    let Ok(model) = Model::from_gguf(file, options) else {
        return;
    };
    let n_vocab = model.config().n_vocab as u32;
    if let Ok(mut session) = model.session(CTX, KvType::F16) {
        let ids = [2, 0, n_vocab.saturating_sub(1), 1];
        if session.prefill(&ids).is_ok() {
            let _ = session.step(n_vocab.saturating_sub(1));
        }
        assert!(
            session.step(n_vocab).is_err(),
            "token id {n_vocab} is out of range"
        );
    }
    if let Ok(tokenizer) = model.tokenizer() {
        let ids = tokenizer.encode("Hello <start_of_turn>user\n wörld 😀");
        let _ = tokenizer.decode(&ids);
    }
    let chat_options = ChatOptions {
        ctx_len: CTX,
        kv_type: KvType::F16,
        system: Some("Be brief.".into()),
        generate: GenerateOptions {
            max_tokens: 3,
            sampler: SamplerConfig::default(),
            ..GenerateOptions::default()
        },
    };
    let Ok(mut chat) = Chat::new(&model, chat_options) else {
        return;
    };
    if chat.send("Hi", |_| {}).is_ok() {
        let _ = chat.send("And?", |_| {});
    }
});
