//! Errors of the tokenizer.

use gemma_gguf::GgufError;

/// What can go wrong building a tokenizer or decoding ids.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Reading the GGUF metadata failed (missing or mistyped `tokenizer.*` key).
    #[error("tokenizer metadata: {0}")]
    Gguf(#[from] GgufError),
    /// `tokenizer.ggml.model` names a tokenizer other than SentencePiece (`llama`).
    #[error("unsupported tokenizer model {0:?} (only \"llama\" / SentencePiece is supported)")]
    UnsupportedModel(String),
    /// The vocabulary has no tokens.
    #[error("the vocabulary is empty")]
    EmptyVocab,
    /// `scores` or `types` do not have one entry per token.
    #[error("vocabulary has {tokens} tokens but {what} has {len} entries")]
    LengthMismatch {
        /// Number of tokens.
        tokens: usize,
        /// `"scores"` or `"types"`.
        what: &'static str,
        /// Number of entries found.
        len: usize,
    },
    /// A `tokenizer.ggml.token_type` value outside 0..=6.
    #[error("token {id} has unknown token type {value}")]
    BadTokenType {
        /// Token id.
        id: u32,
        /// The value found.
        value: i32,
    },
    /// A special-token id (BOS, EOS, UNK, PAD) outside the vocabulary.
    #[error("{what} token id {id} is outside the vocabulary of {vocab_size} tokens")]
    SpecialIdOutOfRange {
        /// `"bos"`, `"eos"`, `"unk"` or `"pad"`.
        what: &'static str,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// Some byte has no `<0xNN>` token and there is no unknown token to fall back to.
    #[error(
        "byte 0x{byte:02X} has no <0x{byte:02X}> token and the vocabulary has no unknown token"
    )]
    NoByteFallback {
        /// The byte.
        byte: u8,
    },
    /// A token id given to `decode` is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// The vocabulary text is larger than 4 GiB.
    #[error("the vocabulary text is too large")]
    TooLarge,
}
