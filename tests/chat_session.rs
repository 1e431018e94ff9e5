//! `Chat` with the real 270M model: the KV cache follows the conversation, so a second
//! turn runs only its new tokens, and its answer equals the answer computed from scratch
//! over the same tokens. (The 270M test model is a base model: it does not end its turns
//! by itself, so answers here are cut by the token limit.)

use std::path::PathBuf;

use gemma_core::chat_template::encode_prompt;
use gemma_core::generate::{GenerateOptions, Generation, StopReason};
use gemma_core::{Chat, ChatOptions, KvType, Message, Model, ModelOptions, Role, SamplerConfig};

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

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ..GenerateOptions::default()
    }
}

#[test]
fn the_second_turn_prefills_only_its_new_tokens() {
    let model = Model::load(
        real_model(),
        ModelOptions {
            threads: 2,
            ..ModelOptions::default()
        },
    )
    .unwrap();
    let options = ChatOptions {
        ctx_len: 512,
        kv_type: KvType::F16,
        system: None,
        generate: greedy(12),
    };
    let mut chat = Chat::new(&model, options).unwrap();
    // A replayed exchange shows the model the answer format (a base model needs it).
    chat.push(Message::new(Role::User, "What is the capital of Germany?"));
    chat.push(Message::new(
        Role::Assistant,
        "The capital of Germany is Berlin.",
    ));

    let mut streamed = String::new();
    let first = chat
        .send("What is the capital of France?", |p| {
            streamed.push_str(&p.text)
        })
        .unwrap();
    assert!(first.text.contains("Paris"), "answer: {:?}", first.text);
    assert_eq!(streamed, first.text);
    assert_eq!(first.reused_tokens, 0);
    assert_eq!(first.stop, StopReason::MaxTokens);
    let first_prompt = first.stats.prefill_tokens;
    assert_eq!(first_prompt + 12, chat.tokens().len());

    let second = chat.send("And of Spain?", |_| {}).unwrap();
    assert!(second.text.contains("Madrid"), "answer: {:?}", second.text);
    // Kept: the whole first turn but at most its last answer token (never run when the
    // answer hit the token limit). When the answer ends in whitespace, which the template
    // trims, the conversation is re-encoded and the cache kept up to the first difference.
    assert!(second.reused_tokens >= first_prompt + 12 - 1, "{second:?}");
    // Run now: at most that token plus the new turn's markup and message.
    let new_text =
        "<end_of_turn>\n<start_of_turn>user\nAnd of Spain?<end_of_turn>\n<start_of_turn>model\n";
    let new_tokens = chat.tokenizer().encode(new_text).len();
    assert!(second.stats.prefill_tokens <= 1 + new_tokens, "{second:?}");
    let second_prompt = chat.tokens().len() - second.stats.generated_tokens;
    assert_eq!(
        second.reused_tokens + second.stats.prefill_tokens,
        second_prompt
    );
    assert_eq!(chat.messages().len(), 6);

    // The same tokens run from an empty cache give the same greedy answer.
    let tokens = chat.tokens().to_vec();
    let prompt_len = second_prompt;
    let tokenizer = chat.tokenizer().clone();
    let mut fresh = model.session(512, KvType::F16).unwrap();
    let mut generation =
        Generation::new(&mut fresh, &tokenizer, &tokens[..prompt_len], greedy(12)).unwrap();
    let again: String = (&mut generation).map(|p| p.unwrap().text).collect();
    assert_eq!(again, second.text);
    assert_eq!(generation.tokens(), &tokens[prompt_len..]);
}

#[test]
fn reset_and_system_prompt_reuse_the_common_prefix() {
    let model = Model::load(
        real_model(),
        ModelOptions {
            threads: 2,
            ..ModelOptions::default()
        },
    )
    .unwrap();
    let options = ChatOptions {
        ctx_len: 256,
        kv_type: KvType::F16,
        system: None,
        generate: greedy(4),
    };
    let mut chat = Chat::new(&model, options).unwrap();
    chat.send("Hello there, how are you today?", |_| {})
        .unwrap();
    chat.reset();
    assert!(chat.messages().is_empty());
    // After a reset the new conversation shares `<bos><start_of_turn>user\nHello` with the cache.
    let turn = chat.send("Hello again", |_| {}).unwrap();
    assert_eq!(turn.reused_tokens, 5);
    let rendered = chat.template().render(&chat.messages()[..1], true).unwrap();
    let prompt = encode_prompt(chat.tokenizer(), &rendered);
    assert_eq!(turn.stats.prefill_tokens, prompt.len() - 5);
    assert_eq!(chat.tokens()[..prompt.len()], prompt[..]);

    // A system prompt changes the first user turn: everything after `<start_of_turn>user\n` runs again.
    chat.set_system(Some("Answer briefly.".into()));
    let turn = chat.send("Why?", |_| {}).unwrap();
    assert_eq!(turn.reused_tokens, 4);
}

#[test]
fn a_message_longer_than_the_context_is_a_typed_error_and_the_chat_goes_on() {
    let model = Model::load(
        real_model(),
        ModelOptions {
            threads: 2,
            ..ModelOptions::default()
        },
    )
    .unwrap();
    let options = ChatOptions {
        ctx_len: 64,
        kv_type: KvType::F16,
        system: None,
        generate: greedy(2),
    };
    let mut chat = Chat::new(&model, options).unwrap();
    let error = chat.send(&"word ".repeat(100), |_| {}).unwrap_err();
    assert!(
        matches!(
            error,
            gemma_core::GenerateError::PromptTooLong { ctx_len: 64, .. }
        ),
        "{error}"
    );
    assert!(chat.messages().is_empty());
    let turn = chat.send("Hi", |_| {}).unwrap();
    assert_eq!(turn.stats.generated_tokens, 2);
}
