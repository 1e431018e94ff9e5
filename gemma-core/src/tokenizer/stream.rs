//! Incremental decoding: text pieces as tokens arrive, never splitting a UTF-8 character.

use super::{Tokenizer, TokenizerError};

/// Turns a stream of token ids into text. Bytes that end inside a UTF-8 sequence (a
/// character spread over several `<0xNN>` tokens) are held until the sequence completes;
/// bytes that can never become valid UTF-8 are emitted as U+FFFD.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    skip_special: bool,
}

impl StreamDecoder {
    /// A decoder; `skip_special` drops control tokens (for showing an answer).
    pub fn new(skip_special: bool) -> Self {
        Self {
            pending: Vec::new(),
            skip_special,
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        tokenizer.append_piece(id, self.skip_special, &mut self.pending)?;
        Ok(self.take_complete())
    }

    /// Returns whatever is still held (incomplete sequences as U+FFFD) and resets.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }

    /// Whether bytes are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn take_complete(&mut self) -> String {
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return text;
                }
                Err(e) => {
                    let valid_len = e.valid_up_to();
                    // The first `valid_len` bytes are valid UTF-8, so this copies them as they are.
                    text.push_str(&String::from_utf8_lossy(&self.pending[..valid_len]));
                    match e.error_len() {
                        // The tail may still complete: keep it.
                        None => {
                            self.pending.drain(..valid_len);
                            return text;
                        }
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid_len + bad);
                        }
                    }
                }
            }
        }
    }
}
