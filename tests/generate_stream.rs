//! The streaming generator with the real 270M model: greedy continuations against
//! llama.cpp's (`fixtures/gemma3-270m`), the stop at `<eos>`, pieces that add up to the
//! decoded tokens, stop strings, the token limit, cancellation from another thread, seeded
//! reproducibility and the prompt-length error.

use std::path::PathBuf;
use std::sync::OnceLock;

use gemma_core::chat_template::encode_prompt;
use gemma_core::generate::{CancelToken, GenerateError, GenerateOptions, Generation, StopReason};
use gemma_core::{KvType, Model, ModelOptions, SamplerConfig, Tokenizer};

fn real_model() -> PathBuf {
    let path = std::env::var_os("GEMMA_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "real model missing at {} (run scripts/fetch-model.sh)",
        path.display()
    );
    path
}

fn model() -> &'static (Model, Tokenizer) {
    static MODEL: OnceLock<(Model, Tokenizer)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let model = Model::load(
            real_model(),
            ModelOptions {
                threads: 2,
                ..ModelOptions::default()
            },
        )
        .unwrap();
        let tokenizer = Tokenizer::from_gguf(model.gguf()).unwrap();
        (model, tokenizer)
    })
}

fn chat_prompt(tokenizer: &Tokenizer, question: &str) -> Vec<u32> {
    let text = format!("<bos><start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n");
    encode_prompt(tokenizer, &text)
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ..GenerateOptions::default()
    }
}

/// A prompt of `fixtures/gemma3-270m`: its token ids and llama.cpp's greedy continuation ids.
fn reference(name: &str) -> (Vec<u32>, Vec<u32>) {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/gemma3-270m"
    ))
    .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    (ids(&json["token_ids"]), ids(&json["greedy"]["ids"]))
}

#[test]
fn greedy_continuation_matches_llama_cpp_and_stops_at_eos() {
    let (model, tokenizer) = model();
    // llama.cpp's greedy path ends the program and emits <eos> at step 8 (top-1/top-2
    // margins along the way >= 0.29).
    let (prompt, expected) = reference("code_python");
    assert_eq!(expected[8], 1);
    let mut session = model.session(256, KvType::F16).unwrap();
    let mut generation = Generation::new(&mut session, tokenizer, &prompt, greedy(32)).unwrap();
    let mut text = String::new();
    for piece in &mut generation {
        text.push_str(&piece.unwrap().text);
    }
    assert_eq!(
        generation.stop_reason(),
        Some(&StopReason::EndOfGeneration(1))
    );
    let tokens = generation.tokens().to_vec();
    assert_eq!(tokens, expected[..8]);
    assert_eq!(text, " \"__main__\":\n    main()\n");
    assert_eq!(text, tokenizer.decode_with(&tokens, true).unwrap());
    let stats = generation.stats();
    assert_eq!(stats.prefill_tokens, prompt.len());
    assert_eq!(stats.generated_tokens, 8);
    assert!(stats.decode_tokens_per_s() > 0.0 && stats.prefill_tokens_per_s() > 0.0);
    // The last token was run to predict <eos>: the cache holds every generated token.
    assert_eq!(generation.unfed_token(), None);
    drop(generation);
    assert_eq!(session.position(), prompt.len() + 8);
}

#[test]
fn stop_strings_and_token_limit() {
    let (model, tokenizer) = model();
    // " the capital of the country of France. It is ..." (margins >= 0.17 for 11 steps).
    let (prompt, expected) = reference("english");
    let mut session = model.session(128, KvType::F16).unwrap();
    let full: Vec<_> = Generation::new(&mut session, tokenizer, &prompt, greedy(10))
        .unwrap()
        .map(|p| p.unwrap())
        .collect();
    assert_eq!(
        full.iter().map(|p| p.token).collect::<Vec<_>>(),
        expected[..10]
    );
    let full_text: String = full.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(full_text, tokenizer.decode(&expected[..10]).unwrap());

    let mut session = model.session(128, KvType::F16).unwrap();
    let options = GenerateOptions {
        stop_strings: vec!["France".into(), "zzz".into()],
        ..greedy(10)
    };
    let mut generation = Generation::new(&mut session, tokenizer, &prompt, options).unwrap();
    let cut: String = (&mut generation).map(|p| p.unwrap().text).collect();
    assert_eq!(cut, " the capital of the country of ");
    assert_eq!(
        generation.stop_reason(),
        Some(&StopReason::StopString("France".into()))
    );

    let mut session = model.session(128, KvType::F16).unwrap();
    let mut generation = Generation::new(&mut session, tokenizer, &prompt, greedy(3)).unwrap();
    let pieces: Vec<_> = (&mut generation).map(|p| p.unwrap()).collect();
    assert_eq!(pieces.len(), 3);
    assert_eq!(generation.stop_reason(), Some(&StopReason::MaxTokens));
    assert_eq!(
        pieces.iter().map(|p| p.token).collect::<Vec<_>>(),
        expected[..3]
    );
    // Nothing needed the last token's logits: it is not run.
    assert_eq!(generation.unfed_token(), Some(expected[2]));
    drop(generation);
    assert_eq!(session.position(), prompt.len() + 2);
}

#[test]
fn cancellation_from_another_thread_stops_the_generation() {
    let (model, tokenizer) = model();
    let prompt = chat_prompt(tokenizer, "Write a long story about a dragon.");
    let mut session = model.session(512, KvType::F16).unwrap();
    let cancel = CancelToken::new();
    let options = GenerateOptions {
        cancel: Some(cancel.clone()),
        ..greedy(400)
    };
    let mut generation = Generation::new(&mut session, tokenizer, &prompt, options).unwrap();
    let (first_piece_tx, first_piece_rx) = std::sync::mpsc::channel::<()>();
    let canceller = std::thread::spawn(move || {
        first_piece_rx.recv().unwrap();
        cancel.cancel();
    });
    let mut count = 0;
    for piece in &mut generation {
        piece.unwrap();
        count += 1;
        if count == 1 {
            first_piece_tx.send(()).unwrap();
            canceller_wait();
        }
    }
    canceller.join().unwrap();
    assert_eq!(generation.stop_reason(), Some(&StopReason::Cancelled));
    assert!(count < 5, "{count} pieces after cancelling");
}

/// Gives the canceller thread time to run (it only sets a flag).
fn canceller_wait() {
    std::thread::sleep(std::time::Duration::from_millis(100));
}

#[test]
fn a_seed_reproduces_a_sampled_answer() {
    let (model, tokenizer) = model();
    let prompt = chat_prompt(tokenizer, "Tell me a fact about cats.");
    let run = |seed: u64| {
        let mut session = model.session(256, KvType::F16).unwrap();
        let sampler = SamplerConfig {
            seed,
            temperature: 1.0,
            ..SamplerConfig::default()
        };
        let options = GenerateOptions {
            max_tokens: 24,
            sampler,
            ..GenerateOptions::default()
        };
        let mut generation = Generation::new(&mut session, tokenizer, &prompt, options).unwrap();
        (&mut generation).for_each(|p| drop(p.unwrap()));
        generation.tokens().to_vec()
    };
    let first = run(7);
    assert_eq!(first, run(7));
    assert!(
        [8, 9, 10].iter().any(|&seed| run(seed) != first),
        "every seed gave {first:?}"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_a_typed_error() {
    let (model, tokenizer) = model();
    let mut session = model.session(16, KvType::F16).unwrap();
    let prompt = tokenizer.encode(&"word ".repeat(40));
    match Generation::new(&mut session, tokenizer, &prompt, greedy(4)) {
        Err(GenerateError::PromptTooLong {
            prompt_tokens,
            position: 0,
            ctx_len: 16,
        }) => {
            assert_eq!(prompt_tokens, prompt.len())
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a 40-token prompt fit a 16-token context"),
    }
    assert!(matches!(
        Generation::new(&mut session, tokenizer, &[], greedy(4)),
        Err(GenerateError::EmptyPrompt)
    ));
}
