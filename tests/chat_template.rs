//! Chat templates: the Hugging Face Gemma 3 template stored in the vocab-only GGUF
//! (rendered with minijinja) against the fixture's rendered conversation and the built-in
//! format; no double BOS; typed errors, also for templates that would run endlessly.

use std::path::PathBuf;

use gemma_core::chat_template::encode_prompt;
use gemma_core::{ChatTemplate, GenerateError, Message, Role, Tokenizer};
use gemma_gguf::GgufFile;

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"));
    assert!(dir.is_dir(), "fixtures folder missing: {}", dir.display());
    dir
}

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

fn vocab_file() -> (GgufFile, Tokenizer) {
    let file = GgufFile::open(fixtures().join("tokenizer/gemma3-vocab.gguf")).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    (file, tokenizer)
}

/// The conversation of the fixture case `chat_rendered`.
fn poet() -> Vec<Message> {
    vec![
        Message::new(Role::System, "You are a poet."),
        Message::new(Role::User, "Write a haiku about rust."),
        Message::new(Role::Assistant, "Iron wakes in rain"),
        Message::new(Role::User, "Another one?"),
    ]
}

/// `chat_rendered` from gemma3_cases.jsonl: text and reference ids.
fn rendered_case() -> (String, Vec<u32>) {
    let cases = std::fs::read_to_string(fixtures().join("tokenizer/gemma3_cases.jsonl")).unwrap();
    let case: serde_json::Value = cases
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|c| c["name"] == "chat_rendered")
        .expect("case chat_rendered");
    let ids = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    (case["text"].as_str().unwrap().to_string(), ids)
}

#[test]
fn file_template_folds_the_system_prompt_into_the_first_turn() {
    let (file, tokenizer) = vocab_file();
    let template = ChatTemplate::from_gguf(&file, &tokenizer).unwrap();
    assert!(!template.is_builtin());
    let rendered = template.render(&poet(), true).unwrap();
    let (case_text, case_ids) = rendered_case();
    assert_eq!(rendered, format!("<bos>{case_text}"));
    // One BOS: the template renders it, so none is added.
    let ids = encode_prompt(&tokenizer, &rendered);
    assert_eq!(ids[0], 2);
    assert_eq!(ids[1..], case_ids[..]);
}

#[test]
fn builtin_format_equals_the_hugging_face_template() {
    let (file, tokenizer) = vocab_file();
    let jinja = ChatTemplate::from_gguf(&file, &tokenizer).unwrap();
    let builtin = ChatTemplate::gemma();
    let conversations = [
        poet(),
        vec![Message::new(Role::User, "  Hi!  \n")],
        vec![
            Message::new(Role::User, "a"),
            Message::new(Role::Assistant, "b\n"),
            Message::new(Role::User, "c <start_of_turn> d"),
        ],
        vec![
            Message::new(Role::System, "Be brief.\n"),
            Message::new(Role::User, "Why?"),
        ],
    ];
    for messages in &conversations {
        for generation_prompt in [true, false] {
            assert_eq!(
                builtin.render(messages, generation_prompt).unwrap(),
                jinja.render(messages, generation_prompt).unwrap(),
                "{messages:?}"
            );
        }
    }
}

#[test]
fn the_270m_file_has_no_template_and_gets_the_builtin_one() {
    let file = GgufFile::open(real_model()).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let template = ChatTemplate::from_gguf(&file, &tokenizer).unwrap();
    assert!(template.is_builtin());
    let rendered = template
        .render(&[Message::new(Role::User, "Hello")], true)
        .unwrap();
    assert_eq!(
        rendered,
        "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(
        encode_prompt(&tokenizer, &rendered),
        vec![2, 105, 2364, 107, 9259, 106, 107, 105, 4368, 107]
    );
    // Text without a rendered BOS gets one from the vocabulary's add_bos_token.
    assert_eq!(encode_prompt(&tokenizer, "Hello"), vec![2, 9259]);
}

#[test]
fn template_errors_are_typed() {
    let broken = ChatTemplate::from_source("{% for %}", "<bos>", "<eos>");
    assert!(matches!(broken, Err(GenerateError::Template(_))));
    let (file, tokenizer) = vocab_file();
    let jinja = ChatTemplate::from_gguf(&file, &tokenizer).unwrap();
    let twice = [Message::new(Role::User, "a"), Message::new(Role::User, "b")];
    match jinja.render(&twice, true) {
        Err(GenerateError::Template(message)) => {
            assert!(message.contains("alternate"), "{message}")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
    assert!(matches!(
        ChatTemplate::gemma().render(&twice, true),
        Err(GenerateError::Template(_))
    ));
}

#[test]
fn endless_templates_stop_with_a_typed_error() {
    // 10^10 iterations: a file's template must not hang the engine.
    let nested =
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    let endless = ChatTemplate::from_source(nested, "<bos>", "<eos>").unwrap();
    match endless.render(&poet(), true) {
        Err(GenerateError::Template(message)) => {
            assert!(message.contains("instructions"), "{message}")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn the_fuel_covers_more_messages_than_a_full_context() {
    // A 128K context holds at most ~26 000 messages (5+ tokens each with their markers).
    let (file, tokenizer) = vocab_file();
    let jinja = ChatTemplate::from_gguf(&file, &tokenizer).unwrap();
    let messages: Vec<Message> = (0..30_000)
        .map(|i| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            Message::new(role, format!("message {i}"))
        })
        .collect();
    let text = jinja
        .render(&messages, true)
        .expect("renders within the fuel");
    assert!(text.ends_with("message 29999<end_of_turn>\n<start_of_turn>model\n"));
}
