//! Unit tests of the encoder's shortcuts (chunking at spaces, the per-call chunk memory)
//! against the plain algorithm: special-token cut, then one merge over each whole fragment,
//! as llama.cpp does it.

use super::bpe::MergeScratch;
use super::special::Fragment;
use super::{EncodeOptions, TokenType, Tokenizer, Vocab, SPACE_SYMBOL};

fn vocab_gguf() -> Tokenizer {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/tokenizer/gemma3-vocab.gguf"
    );
    let file = gemma_gguf::GgufFile::open(path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    Tokenizer::from_gguf(&file).unwrap()
}

/// llama.cpp's procedure without shortcuts.
fn encode_plainly(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    let text = text.replace(SPACE_SYMBOL, " ");
    let mut out = Vec::new();
    let mut scratch = MergeScratch::default();
    for fragment in tokenizer.special.split(&text, true) {
        match fragment {
            Fragment::Token(id) => out.push(id),
            Fragment::Text(plain) => {
                tokenizer.merge_chunk(&plain.replace(' ', "\u{2581}"), &mut scratch, &mut out)
            }
        }
    }
    out
}

/// A deterministic mix of words, spaces, tags and rare characters.
fn sample_texts() -> Vec<String> {
    let parts = [
        "the",
        " ",
        "  ",
        "<b>",
        "</b>",
        ">",
        " </",
        "> </i>",
        "x> </y",
        "Hello",
        "\n",
        "world",
        "é",
        "東京",
        "🙂",
        "\t",
        "aaaa",
        "<start_of_turn>",
        ".",
        ",",
        "   ",
        "> ",
        "</",
        "▁",
        "12",
    ];
    let mut state = 12345u64;
    (0..400)
        .map(|_| {
            let mut text = String::new();
            for _ in 0..20 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(parts[(state >> 33) as usize % parts.len()]);
            }
            text
        })
        .collect()
}

#[test]
fn chunked_encoding_equals_whole_fragment_merging() {
    let tokenizer = vocab_gguf();
    assert!(
        !tokenizer.bridges.is_empty(),
        "the Gemma vocabulary has the token `>▁</`"
    );
    for text in sample_texts() {
        assert_eq!(
            tokenizer.encode(&text),
            encode_plainly(&tokenizer, &text),
            "text {text:?}"
        );
    }
    // Repeated chunks are copied from their first occurrence.
    let long = sample_texts().join(" ");
    assert_eq!(tokenizer.encode(&long), encode_plainly(&tokenizer, &long));
}

#[test]
fn a_token_spanning_a_space_is_found() {
    let tokenizer = vocab_gguf();
    let bridge = tokenizer.token_id(">\u{2581}</").unwrap();
    let ids = tokenizer.encode("<i>x> </i>");
    assert_eq!(ids, encode_plainly(&tokenizer, "<i>x> </i>"));
    let ids = tokenizer.encode("a> </b");
    assert_eq!(ids, encode_plainly(&tokenizer, "a> </b"));
    assert!(ids.contains(&bridge), "{ids:?}");
}

/// A hand-made vocabulary: characters, merges by score, byte tokens for `é`.
fn tiny() -> Tokenizer {
    let mut tokens: Vec<String> = [
        "<unk>", "<s>", "</s>", "a", "b", "▁", "ab", "▁a", "b▁", "▁ab",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut scores = vec![0.0, 0.0, 0.0, -1.0, -1.0, -1.0, -2.0, -3.0, -0.5, -4.0];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    types.extend([TokenType::Normal; 7]);
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        scores.push(0.0);
        types.push(TokenType::Byte);
    }
    let vocab = Vocab {
        tokens,
        scores,
        types,
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        add_bos: true,
        ..Vocab::default()
    };
    Tokenizer::new(vocab).unwrap()
}

#[test]
fn merges_follow_scores_and_fall_back_to_bytes() {
    let t = tiny();
    // "ab" (-2) beats nothing else; "b▁" (-0.5) beats "▁a" (-3): "ab b a" -> ab, b▁, a.
    assert_eq!(t.encode("ab"), vec![6]);
    assert_eq!(t.encode("b a"), vec![8, 3]);
    assert_eq!(t.encode("b a"), encode_plainly(&t, "b a"));
    // `é` is not a token: its two UTF-8 bytes.
    let e = t.encode("é");
    assert_eq!(e, vec![10 + 0xC3, 10 + 0xA9]);
    assert_eq!(t.decode(&e).unwrap(), "é");
    assert_eq!(
        t.encode_with(
            "a",
            EncodeOptions {
                add_bos: true,
                parse_special: true
            }
        ),
        vec![1, 3]
    );
    assert_eq!(t.decode(&[1, 6, 8, 3]).unwrap(), "<s>abb a");
    assert_eq!(t.decode_with(&[1, 6, 2], true).unwrap(), "ab");
}

#[test]
fn bad_vocabularies_are_typed_errors() {
    use super::TokenizerError as E;
    assert!(matches!(
        Tokenizer::new(Vocab::default()),
        Err(E::EmptyVocab)
    ));
    let v = Vocab {
        tokens: vec!["a".into()],
        scores: vec![],
        types: vec![TokenType::Normal],
        ..Vocab::default()
    };
    assert!(matches!(
        Tokenizer::new(v),
        Err(E::LengthMismatch { what: "scores", .. })
    ));
    let v = Vocab {
        tokens: vec!["a".into()],
        scores: vec![0.0],
        types: vec![TokenType::Normal],
        ..Vocab::default()
    };
    assert!(matches!(
        Tokenizer::new(v),
        Err(E::NoByteFallback { byte: 0 })
    ));
    let v = Vocab {
        tokens: vec!["a".into()],
        scores: vec![0.0],
        types: vec![TokenType::Normal],
        unk: Some(0),
        bos: Some(7),
        ..Vocab::default()
    };
    assert!(matches!(
        Tokenizer::new(v),
        Err(E::SpecialIdOutOfRange {
            what: "bos",
            id: 7,
            ..
        })
    ));
    assert!(matches!(
        tiny().decode(&[9999]),
        Err(E::IdOutOfRange { id: 9999, .. })
    ));
}

#[test]
fn stream_decoder_holds_incomplete_utf8() {
    let tokenizer = vocab_gguf();
    // U+10FFFD is four byte tokens (fixture case bytes_plane16).
    let ids = tokenizer.encode("a\u{10FFFD}b");
    assert_eq!(ids.len(), 6, "{ids:?}");
    let mut decoder = super::StreamDecoder::new(false);
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| decoder.push(&tokenizer, id).unwrap())
        .collect();
    assert_eq!(pieces, ["a", "", "", "", "\u{10FFFD}", "b"]);
    assert!(!decoder.has_pending());
    // A sequence that cannot complete becomes U+FFFD; an unfinished one is flushed by `finish`.
    let f4 = tokenizer.token_id("<0xF4>").unwrap();
    let x = tokenizer.token_id("x").unwrap();
    assert_eq!(decoder.push(&tokenizer, f4).unwrap(), "");
    assert_eq!(decoder.push(&tokenizer, x).unwrap(), "\u{FFFD}x");
    assert_eq!(decoder.push(&tokenizer, f4).unwrap(), "");
    assert_eq!(decoder.finish(), "\u{FFFD}");
    // Control tokens are dropped when asked.
    let mut skipping = super::StreamDecoder::new(true);
    assert_eq!(skipping.push(&tokenizer, 106).unwrap(), "");
    assert_eq!(decoder.push(&tokenizer, 106).unwrap(), "<end_of_turn>");
}
