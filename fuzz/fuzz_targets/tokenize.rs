//! Fuzz target: the real Gemma 3 vocabulary (`../shared/fixtures/tokenizer/gemma3-vocab.gguf`,
//! or the file in `GEMMA_FUZZ_VOCAB`) must encode any text without a panic, and decoding
//! the ids must give the text back (a literal `▁` reads as a space, as in the Hugging Face
//! tokenizer). With special tokens parsed, decoding still gives the text back. Any bytes
//! decode as ids of the vocabulary or give a typed error.

#![no_main]

use std::sync::OnceLock;

use gemma_core::{EncodeOptions, Tokenizer};
use gemma_gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = std::env::var("GEMMA_FUZZ_VOCAB").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures/tokenizer/gemma3-vocab.gguf"
            )
            .to_owned()
        });
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Tokenizer::from_gguf(&file).expect("the vocabulary loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let tokenizer = tokenizer();
    let text = String::from_utf8_lossy(data);
    let expected = text.replace('\u{2581}', " ");
    for parse_special in [false, true] {
        let options = EncodeOptions {
            add_bos: false,
            parse_special,
        };
        let ids = tokenizer.encode_with(&text, options);
        let decoded = tokenizer
            .decode(&ids)
            .expect("ids of the vocabulary decode");
        assert_eq!(decoded, expected, "parse_special {parse_special}: {ids:?}");
    }
    let ids: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % 300_000)
        .collect();
    let _ = tokenizer.decode_with(&ids, true);
});
