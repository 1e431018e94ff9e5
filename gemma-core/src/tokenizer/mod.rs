//! The Gemma tokenizer, built from the GGUF vocabulary (SentencePiece-style, `tokenizer.ggml.model = "llama"`).
//!
//! Encoding: user-defined tokens (and control tokens when special parsing is on) are cut out
//! whole; the text between them has its spaces turned into `▁` and is merged by token
//! score (`bpe`), characters missing from the vocabulary falling back to `<0xNN>` byte
//! tokens. A literal `▁` in the input is read as a space, as the Hugging Face tokenizer does.
//! Decoding: `▁` becomes a space and byte tokens are reassembled into UTF-8
//! ([`StreamDecoder`] does it incrementally).

mod bpe;
mod encode;
mod error;
mod lookup;
mod special;
mod stream;
mod vocab;

#[cfg(test)]
mod tests;

pub use error::TokenizerError;
pub use stream::StreamDecoder;
pub use vocab::{TokenType, Vocab};

use gemma_gguf::GgufFile;

use lookup::{TokenLookup, TokenTexts};
use special::SpecialMatcher;

/// The SentencePiece meta-symbol that stands for a space (U+2581).
pub const SPACE_SYMBOL: char = '\u{2581}';

/// Options for [`Tokenizer::encode_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Prepend BOS when the vocabulary asks for it (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Match control tokens written in the text (`<start_of_turn>`, `<bos>`, ...) as tokens.
    pub parse_special: bool,
}

impl Default for EncodeOptions {
    /// No BOS, special tokens parsed (what chat templates and the reference fixtures use).
    fn default() -> Self {
        Self {
            add_bos: false,
            parse_special: true,
        }
    }
}

/// A tokenizer: text <-> token ids. Immutable, `Send + Sync`, cheap to share.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Vocabulary texts as stored (spaces as `▁`).
    texts: TokenTexts,
    /// Text -> id for the merge step.
    lookup: TokenLookup,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    /// Decoded bytes of each token.
    pieces: TokenTexts,
    /// Token for each byte value (a `<0xNN>` token, else UNK).
    byte_fallback: [u32; 256],
    special: SpecialMatcher,
    /// Tokens that contain a `▁` right after another character, written with spaces for
    /// `▁`, with the byte offset of each such space: a chunk boundary is never placed
    /// where one of them could match.
    bridges: Vec<(Vec<u8>, usize)>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    end_of_turn: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
}

impl Tokenizer {
    /// Builds a tokenizer from a vocabulary.
    pub fn new(vocab: Vocab) -> Result<Self, TokenizerError> {
        let n = vocab.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if vocab.scores.len() != n {
            let len = vocab.scores.len();
            return Err(TokenizerError::LengthMismatch {
                tokens: n,
                what: "scores",
                len,
            });
        }
        if vocab.types.len() != n {
            let len = vocab.types.len();
            return Err(TokenizerError::LengthMismatch {
                tokens: n,
                what: "types",
                len,
            });
        }
        for (what, id) in [
            ("bos", vocab.bos),
            ("eos", vocab.eos),
            ("unk", vocab.unk),
            ("pad", vocab.pad),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(TokenizerError::SpecialIdOutOfRange {
                    what,
                    id,
                    vocab_size: n,
                });
            }
        }
        let texts = TokenTexts::new(vocab.tokens.iter().map(|t| t.as_bytes()))
            .ok_or(TokenizerError::TooLarge)?;
        let lookup = TokenLookup::new(&texts);

        let mut byte_of_token = vec![None; n];
        let mut byte_fallback = [u32::MAX; 256];
        for (id, text) in vocab.tokens.iter().enumerate() {
            if vocab.types[id] == TokenType::Byte {
                if let Some(byte) = parse_byte_token(text) {
                    byte_of_token[id] = Some(byte);
                    byte_fallback[byte as usize] = id as u32;
                }
            }
        }
        for (byte, slot) in byte_fallback.iter_mut().enumerate() {
            if *slot == u32::MAX {
                *slot = vocab
                    .unk
                    .ok_or(TokenizerError::NoByteFallback { byte: byte as u8 })?;
            }
        }

        let decoded: Vec<Vec<u8>> = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(id, text)| match (vocab.types[id], byte_of_token[id]) {
                (TokenType::Byte, Some(byte)) => vec![byte],
                (TokenType::Control | TokenType::Unknown | TokenType::UserDefined, _) => {
                    text.as_bytes().to_vec()
                }
                _ => text.replace(SPACE_SYMBOL, " ").into_bytes(),
            })
            .collect();
        let pieces =
            TokenTexts::new(decoded.iter().map(Vec::as_slice)).ok_or(TokenizerError::TooLarge)?;

        let special =
            SpecialMatcher::new(vocab.tokens.iter().enumerate().filter_map(|(id, text)| {
                match vocab.types[id] {
                    TokenType::UserDefined => Some((id as u32, text.as_bytes(), true)),
                    TokenType::Control | TokenType::Unknown => {
                        Some((id as u32, text.as_bytes(), false))
                    }
                    _ => None,
                }
            }));
        let bridges = vocab
            .tokens
            .iter()
            .flat_map(|text| {
                let unescaped = text.replace(SPACE_SYMBOL, " ").into_bytes();
                let spaced =
                    |offset: usize| offset - 2 * text[..offset].matches(SPACE_SYMBOL).count();
                bridge_offsets(text).map(move |offset| (unescaped.clone(), spaced(offset)))
            })
            .collect();
        let end_of_turn = lookup.get(&texts, b"<end_of_turn>");
        Ok(Self {
            texts,
            lookup,
            scores: vocab.scores,
            types: vocab.types,
            pieces,
            byte_fallback,
            special,
            bridges,
            bos: vocab.bos,
            eos: vocab.eos,
            unk: vocab.unk,
            pad: vocab.pad,
            end_of_turn,
            add_bos: vocab.add_bos,
            add_space_prefix: vocab.add_space_prefix,
        })
    }

    /// Builds the tokenizer of a GGUF file (its `tokenizer.ggml.*` keys).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        Self::new(Vocab::from_gguf(file)?)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id (`<eos>`, 1 for Gemma).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Unknown-token id.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// Padding id.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// `<end_of_turn>` (106 for Gemma 3), if the vocabulary has it.
    pub fn end_of_turn_id(&self) -> Option<u32> {
        self.end_of_turn
    }

    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `id` ends a generation: `<eos>` or `<end_of_turn>`.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        Some(id) == self.eos || Some(id) == self.end_of_turn
    }

    /// The vocabulary text of a token as stored (spaces as `▁`), if it is valid UTF-8.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.token_bytes(id)
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The id whose vocabulary text is exactly `text` (e.g. `"<end_of_turn>"`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.lookup.get(&self.texts, text.as_bytes())
    }

    /// Kind of a token.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Merge score of a token.
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The bytes a token decodes to (`▁` as a space, `<0xNN>` as one byte, special tokens
    /// as their text).
    pub fn piece_bytes(&self, id: u32) -> Option<&[u8]> {
        ((id as usize) < self.pieces.len()).then(|| self.pieces.get(id as usize))
    }

    /// Whether a token is a control or unknown token (not text of the answer).
    pub fn is_control(&self, id: u32) -> bool {
        matches!(
            self.token_type(id),
            Some(TokenType::Control | TokenType::Unknown)
        )
    }

    fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        ((id as usize) < self.texts.len()).then(|| self.texts.get(id as usize))
    }

    /// Appends the decoded bytes of `ids` to `out`; control tokens are skipped when
    /// `skip_special` is set.
    pub fn decode_bytes_into(
        &self,
        ids: &[u32],
        skip_special: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        for (i, &id) in ids.iter().enumerate() {
            let start = out.len();
            self.append_piece(id, skip_special, out)?;
            // With a space prefix added at encoding, the first piece's space is not text.
            let prefixed = i == 0 && self.add_space_prefix && out.get(start) == Some(&b' ');
            if prefixed && self.token_type(id) == Some(TokenType::Normal) {
                out.remove(start);
            }
        }
        Ok(())
    }

    /// Appends the decoded bytes of one token (nothing for a skipped control token).
    pub(crate) fn append_piece(
        &self,
        id: u32,
        skip_special: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        let bytes = self.piece_bytes(id).ok_or(TokenizerError::IdOutOfRange {
            id,
            vocab_size: self.vocab_size(),
        })?;
        if !(skip_special && self.is_control(id)) {
            out.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Decodes ids to text, special tokens rendered as their text; invalid UTF-8 (an
    /// incomplete byte sequence) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false)
    }

    /// Decodes ids to text, skipping control tokens when `skip_special` is set.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        self.decode_bytes_into(ids, skip_special, &mut bytes)?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// Byte offsets of each `▁` in `text` that follows a character other than `▁`.
fn bridge_offsets(text: &str) -> impl Iterator<Item = usize> + '_ {
    let mut previous: Option<char> = None;
    text.char_indices().filter_map(move |(offset, c)| {
        let bridge = c == SPACE_SYMBOL && previous.is_some_and(|p| p != SPACE_SYMBOL);
        previous = Some(c);
        bridge.then_some(offset)
    })
}

/// The byte of a `<0xNN>` token text.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
