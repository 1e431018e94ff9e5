//! The perplexity example on text with the real 270M model: a natural English paragraph is
//! far more predictable than the same words shuffled.

#[allow(dead_code)]
#[path = "../examples/perplexity.rs"]
mod perplexity;

use clap::Parser;
use std::path::PathBuf;

const TEXT: &str =
    "The history of the printing press begins in the fifteenth century, when Johannes \
Gutenberg developed a system of movable metal type in the German city of Mainz. Before his \
invention, books were copied by hand, usually by monks working in monasteries, and a single \
volume could take months to complete. Printing made books far cheaper and faster to produce, so \
ideas spread across Europe within a few decades. Scholars could compare the same text in \
different cities, scientists shared their observations more widely, and the number of people \
who could read grew steadily. Many historians consider the printing press one of the most \
important inventions of the second millennium, because it changed how knowledge was stored, \
copied and shared for centuries to come.";

fn real_model() -> PathBuf {
    let path = match std::env::var_os("GEMMA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/gemma-rs/gemma-3-270m-q4_k_m.gguf"),
    };
    assert!(
        path.is_file(),
        "real test model missing at {} (run scripts/fetch-model.sh)",
        path.display()
    );
    path
}

fn ppl_of(text: &str, name: &str) -> perplexity::Report {
    let path =
        std::env::temp_dir().join(format!("perplexity-real-{name}-{}.txt", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let model = real_model();
    let args = [
        "perplexity",
        "--model",
        model.to_str().unwrap(),
        "--text-file",
        path.to_str().unwrap(),
        "--ctx",
        "64",
    ];
    let report = perplexity::run(&perplexity::Args::parse_from(args)).unwrap();
    std::fs::remove_file(&path).unwrap();
    report
}

#[test]
fn natural_text_is_far_more_predictable_than_shuffled_words() {
    let natural = ppl_of(TEXT, "natural");
    // A fixed permutation of the same words (stride 7 through the word list).
    let words: Vec<&str> = TEXT.split_whitespace().collect();
    let shuffled: Vec<&str> = (0..words.len())
        .map(|i| words[i * 7 % words.len()])
        .collect();
    assert!(
        !words.len().is_multiple_of(7),
        "the stride must visit every word"
    );
    let shuffled = ppl_of(&shuffled.join(" "), "shuffled");
    let (p_nat, p_shuf) = (natural.ppl().0, shuffled.ppl().0);
    println!("PPL natural {p_nat:.2}, shuffled {p_shuf:.2}");
    assert!(natural.chunks >= 2 && natural.scores.len() == natural.chunks * 31);
    assert!(
        p_nat < 30.0,
        "a 270M model should predict plain English well: PPL {p_nat}"
    );
    assert!(
        p_shuf > 10.0 * p_nat,
        "shuffled {p_shuf} vs natural {p_nat}"
    );
}
