//! Text -> ids: special-token cut, chunking at spaces, whitespace escaping, merging.
//!
//! Plain text is cut before every space that follows another character, unless a token
//! containing `X▁` could match across that point (`bridges`): no vocabulary token spans
//! such a cut, so merging each chunk alone gives exactly the ids of merging the whole
//! fragment. Chunks repeat (words), so the ids of each chunk are remembered for the rest
//! of the call.

use std::borrow::Cow;
use std::collections::HashMap;

use super::bpe::MergeScratch;
use super::lookup::BytesHasherBuilder;
use super::special::Fragment;
use super::{EncodeOptions, Tokenizer, SPACE_SYMBOL};

/// UTF-8 bytes of `▁`.
const SPACE_SYMBOL_UTF8: &str = "\u{2581}";

/// Chunks longer than this are not remembered (rarely repeated, costly to hash).
const MAX_CACHED_CHUNK: usize = 128;

/// State of one `encode` call.
struct EncodeState<'t> {
    /// The current chunk with spaces escaped.
    escaped: String,
    merge: MergeScratch,
    /// Chunk text -> `(start, len)` of its ids in the output.
    seen: HashMap<&'t str, (u32, u32), BytesHasherBuilder>,
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
        let mut state = EncodeState {
            escaped: String::new(),
            merge: MergeScratch::default(),
            seen: HashMap::with_hasher(BytesHasherBuilder),
        };
        let mut previous_was_special = true;
        for fragment in self.special.split(&text, options.parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    previous_was_special = true;
                }
                Fragment::Text(plain) => {
                    let prefix = self.add_space_prefix && previous_was_special;
                    self.encode_plain(plain, prefix, &mut state, out);
                    previous_was_special = false;
                }
            }
        }
    }

    /// Cuts plain text into chunks and merges each.
    fn encode_plain<'t>(
        &self,
        plain: &'t str,
        space_prefix: bool,
        state: &mut EncodeState<'t>,
        out: &mut Vec<u32>,
    ) {
        let bytes = plain.as_bytes();
        let mut start = 0;
        let mut first = true;
        for (at, _) in plain.match_indices(' ') {
            if at > start && bytes[at - 1] != b' ' && !self.bridge_spans(bytes, at) {
                self.encode_chunk(&plain[start..at], first && space_prefix, state, out);
                start = at;
                first = false;
            }
        }
        self.encode_chunk(&plain[start..], first && space_prefix, state, out);
    }

    /// Merges one chunk, or copies its ids from an earlier occurrence.
    fn encode_chunk<'t>(
        &self,
        chunk: &'t str,
        space_prefix: bool,
        state: &mut EncodeState<'t>,
        out: &mut Vec<u32>,
    ) {
        let cacheable = !space_prefix && chunk.len() <= MAX_CACHED_CHUNK;
        if cacheable {
            if let Some(&(start, len)) = state.seen.get(chunk) {
                let start = start as usize;
                out.extend_from_within(start..start + len as usize);
                return;
            }
        }
        let escaped = &mut state.escaped;
        escaped.clear();
        if space_prefix {
            escaped.push_str(SPACE_SYMBOL_UTF8);
        }
        for (i, run) in chunk.split(' ').enumerate() {
            if i > 0 {
                escaped.push_str(SPACE_SYMBOL_UTF8);
            }
            escaped.push_str(run);
        }
        let start = out.len();
        self.merge_chunk(escaped, &mut state.merge, out);
        if let (true, Ok(start), Ok(len)) = (
            cacheable,
            u32::try_from(start),
            u32::try_from(out.len() - start),
        ) {
            state.seen.insert(chunk, (start, len));
        }
    }

    /// Whether some token containing `X▁` could match across the space at `at` of the
    /// unescaped text (`bridges` hold those tokens with spaces for `▁`).
    fn bridge_spans(&self, plain: &[u8], at: usize) -> bool {
        self.bridges
            .iter()
            .any(|(token, offset)| at >= *offset && plain[at - offset..].starts_with(token))
    }
}
