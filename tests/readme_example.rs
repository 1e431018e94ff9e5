//! The README's library example, run on the real Gemma 3 270M model.

use gemma_core::sampling::{Sampler, SamplerConfig};
use gemma_core::{EncodeOptions, KvType, Model, ModelOptions};

fn real_model() -> std::path::PathBuf {
    let path = std::env::var_os("GEMMA_TEST_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            std::path::Path::new(&home).join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.exists(),
        "real model missing at {}: run scripts/fetch-model.sh",
        path.display()
    );
    path
}

#[test]
fn readme_example_continues_the_prompt_about_france() -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::load(real_model(), ModelOptions::default())?;
    let tokenizer = model.tokenizer()?;
    let options = EncodeOptions {
        add_bos: true,
        parse_special: true,
    };
    let prompt = tokenizer.encode_with("The capital of France is", options);
    assert_eq!(prompt, [2, 818, 5279, 529, 7001, 563]);
    let mut session = model.session(4096, KvType::F16)?;
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    let mut next = sampler.sample(session.prefill(&prompt)?, &prompt)?;
    let mut text = String::new();
    for _ in 0..16 {
        text.push_str(&tokenizer.decode(&[next])?);
        next = sampler.sample(session.step(next)?, &[])?;
    }
    // llama.cpp's greedy continuation of the same prompt starts the same way.
    assert!(
        text.starts_with(" the capital of the country of France"),
        "{text:?}"
    );
    Ok(())
}
