//! The vocabulary as a GGUF file stores it (`tokenizer.ggml.*` keys).

use gemma_gguf::{GgufError, GgufFile, Metadata};

use super::TokenizerError;

/// Token kinds, with llama.cpp's numbering (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// 0: no type given; handled like `Normal`.
    Undefined,
    /// 1: an ordinary piece; `▁` in its text stands for a space.
    Normal,
    /// 2: the unknown token (`<unk>`).
    Unknown,
    /// 3: a control token (`<bos>`, `<start_of_turn>`, ...): matched whole only when special
    /// tokens are parsed.
    Control,
    /// 4: a user-defined token (whitespace runs, `<start_of_image>`, HTML tags): always
    /// matched whole on the raw text before merging.
    UserDefined,
    /// 5: an unused slot.
    Unused,
    /// 6: a byte-fallback token `<0xNN>`.
    Byte,
}

impl TokenType {
    /// The type for a `tokenizer.ggml.token_type` value, if it is one of the seven known.
    pub fn from_i32(value: i32) -> Option<Self> {
        Some(match value {
            0 => Self::Undefined,
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// Everything the tokenizer needs, independent of where it came from.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// Token texts, indexed by id.
    pub tokens: Vec<String>,
    /// Merge priority of each token (higher merges first); same length as `tokens`.
    pub scores: Vec<f32>,
    /// Kind of each token; same length as `tokens`.
    pub types: Vec<TokenType>,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Unknown-token id (byte fallback target when a `<0xNN>` token is missing).
    pub unk: Option<u32>,
    /// Padding id.
    pub pad: Option<u32>,
    /// Whether a prompt starts with BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Whether a space is prepended to the text (`tokenizer.ggml.add_space_prefix`; false for Gemma).
    pub add_space_prefix: bool,
}

/// GGUF keys read by [`Vocab::from_metadata`].
mod keys {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const BOS: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS: &str = "tokenizer.ggml.eos_token_id";
    pub const UNK: &str = "tokenizer.ggml.unknown_token_id";
    pub const PAD: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
}

impl Vocab {
    /// Reads the vocabulary of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        Self::from_metadata(file.metadata())
    }

    /// Reads the vocabulary from GGUF metadata. The tokenizer model must be `llama`
    /// (SentencePiece); scores default to 0 and types to `Normal` when absent, as in llama.cpp.
    pub fn from_metadata(meta: &Metadata) -> Result<Self, TokenizerError> {
        let model = meta.string(keys::MODEL)?;
        if model != "llama" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let tokens: Vec<String> = meta
            .string_array(keys::TOKENS)?
            .iter()
            .map(str::to_string)
            .collect();
        let n = tokens.len();
        let scores = match optional(meta.f32_array(keys::SCORES))? {
            Some(scores) => scores,
            None => vec![0.0; n],
        };
        let types = match optional(meta.i32_array(keys::TOKEN_TYPE))? {
            Some(raw) => raw
                .iter()
                .enumerate()
                .map(|(id, &value)| {
                    TokenType::from_i32(value).ok_or(TokenizerError::BadTokenType {
                        id: id as u32,
                        value,
                    })
                })
                .collect::<Result<_, _>>()?,
            None => vec![TokenType::Normal; n],
        };
        Ok(Self {
            tokens,
            scores,
            types,
            bos: optional(meta.u32(keys::BOS))?,
            eos: optional(meta.u32(keys::EOS))?,
            unk: optional(meta.u32(keys::UNK))?,
            pad: optional(meta.u32(keys::PAD))?,
            add_bos: optional(meta.bool(keys::ADD_BOS))?.unwrap_or(true),
            add_space_prefix: optional(meta.bool(keys::ADD_SPACE_PREFIX))?.unwrap_or(true),
        })
    }
}

/// A missing key becomes `None`; any other error stays an error.
fn optional<T>(result: Result<T, GgufError>) -> Result<Option<T>, TokenizerError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
