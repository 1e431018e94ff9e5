//! Text -> ids: special-token cut, whitespace escaping, chunking, merging.

use std::borrow::Cow;

use super::bpe::MergeScratch;
use super::special::Fragment;
use super::{EncodeOptions, Tokenizer, SPACE_SYMBOL};

/// UTF-8 bytes of `▁`.
const SPACE_SYMBOL_UTF8: &str = "\u{2581}";

/// Buffers reused across the fragments of one `encode` call.
#[derive(Debug, Default)]
struct EncodeScratch {
    /// The fragment with spaces escaped.
    escaped: String,
    /// Byte offsets in `escaped` where a `▁` follows another character: chunk candidates.
    boundaries: Vec<usize>,
    merge: MergeScratch,
}

impl Tokenizer {
    /// Tokenizes `text` with no BOS, special tokens parsed (the reference fixtures' mode).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, EncodeOptions::default())
    }

    /// Tokenizes `text` with the given options.
    pub fn encode_with(&self, text: &str, options: EncodeOptions) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_into(text, options, &mut out);
        out
    }

    /// Tokenizes `text`, appending the ids to `out`.
    pub fn encode_into(&self, text: &str, options: EncodeOptions, out: &mut Vec<u32>) {
        if options.add_bos && self.add_bos {
            out.extend(self.bos);
        }
        // A literal `▁` stands for a space (the Hugging Face tokenizer's reading: its
        // normalizer maps spaces to `▁` before matching added tokens such as `▁▁`).
        let text: Cow<str> = if text.contains(SPACE_SYMBOL) {
            Cow::Owned(text.replace(SPACE_SYMBOL, " "))
        } else {
            Cow::Borrowed(text)
        };
        let mut scratch = EncodeScratch::default();
        let mut previous_was_special = true;
        for fragment in self.special.split(&text, options.parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    previous_was_special = true;
                }
                Fragment::Text(plain) => {
                    let prefix = self.add_space_prefix && previous_was_special;
                    self.encode_plain(plain, prefix, &mut scratch, out);
                    previous_was_special = false;
                }
            }
        }
    }

    /// Escapes spaces, cuts the text into chunks that no token can span and merges each.
    fn encode_plain(
        &self,
        plain: &str,
        space_prefix: bool,
        scratch: &mut EncodeScratch,
        out: &mut Vec<u32>,
    ) {
        let escaped = &mut scratch.escaped;
        let boundaries = &mut scratch.boundaries;
        escaped.clear();
        boundaries.clear();
        let mut previous_was_space = true;
        if space_prefix {
            escaped.push_str(SPACE_SYMBOL_UTF8);
        }
        for (i, run) in plain.split(' ').enumerate() {
            if i > 0 {
                if !previous_was_space {
                    boundaries.push(escaped.len());
                }
                escaped.push_str(SPACE_SYMBOL_UTF8);
                previous_was_space = true;
            }
            if !run.is_empty() {
                escaped.push_str(run);
                previous_was_space = false;
            }
        }
        let mut start = 0;
        for &boundary in boundaries.iter() {
            if boundary > start && !self.bridge_spans(escaped, boundary) {
                self.merge_chunk(&escaped[start..boundary], &mut scratch.merge, out);
                start = boundary;
            }
        }
        self.merge_chunk(&escaped[start..], &mut scratch.merge, out);
    }

    /// Whether some token containing `X▁` could match across the `▁` at `boundary`.
    fn bridge_spans(&self, escaped: &str, boundary: usize) -> bool {
        self.bridges.iter().any(|(token, offset)| {
            boundary >= *offset && escaped.as_bytes()[boundary - offset..].starts_with(token)
        })
    }
}
