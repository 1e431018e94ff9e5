//! Images in the language model: the special tokens around an image's soft tokens, the
//! errors of running image embeddings, and the placeholder ids that stand for an image's
//! positions in token histories (for prefix reuse across chat turns).
//!
//! An image enters the sequence as llama.cpp's `mtmd` puts it: `<start_of_image>`, the
//! projected soft tokens (rows of the text hidden size, not scaled by `sqrt(n_embd)`),
//! `<end_of_image>`. (Hugging Face's processor also adds `"\n\n"` before and after; this
//! engine follows llama.cpp.) The tokens of one image attend to each other; everything
//! else stays causal.

use crate::{CoreError, Session};

/// `<start_of_image>`: the token before an image's soft tokens.
pub const START_OF_IMAGE: u32 = 255_999;
/// `<end_of_image>`: the token after an image's soft tokens.
pub const END_OF_IMAGE: u32 = 256_000;

/// Placeholder ids have this bit set (far above any vocabulary), so they never collide
/// with real tokens.
const PLACEHOLDER_BIT: u32 = 1 << 31;

/// Why image embeddings could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The model failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The embeddings are not whole rows of the model's hidden size.
    #[error(
        "image embeddings of {values} values are not rows of the model's hidden size {hidden}"
    )]
    Width {
        /// Values given.
        values: usize,
        /// The model's hidden size.
        hidden: usize,
    },
    /// No rows given.
    #[error("empty image embeddings")]
    Empty,
    /// The image must run as one batch within the sliding-window rings.
    #[error("an image of {tokens} tokens exceeds the {max} tokens a session runs at once (raise ring_margin / max_batch to at least the image's token count)")]
    TooLong {
        /// The image's tokens.
        tokens: usize,
        /// The most this session takes in one go: `min(max_batch, ring_margin + 1)`.
        max: usize,
    },
    /// Image placeholder ids in a token sequence that match no image of the conversation
    /// (or only part of one).
    #[error("image placeholder ids at token {index} match no whole image")]
    UnknownPlaceholder {
        /// Index of the first such id in the sequence.
        index: usize,
    },
    /// The backend cannot run images.
    #[error("the {backend} backend does not run images")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
    },
}

/// One image of a conversation: its soft-token rows and the placeholder ids that stand
/// for them in token sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTokens {
    /// The projected soft tokens, `ids.len() × hidden` values row-major.
    pub rows: Vec<f32>,
    /// One placeholder id per soft token (see [`placeholder_ids`]).
    pub ids: Vec<u32>,
}

impl ImageTokens {
    /// The image whose soft tokens are `rows`, rows of `hidden` values.
    pub fn new(rows: Vec<f32>, hidden: usize) -> Result<ImageTokens, ImageError> {
        if rows.is_empty() {
            return Err(ImageError::Empty);
        }
        if hidden == 0 || !rows.len().is_multiple_of(hidden) {
            return Err(ImageError::Width {
                values: rows.len(),
                hidden,
            });
        }
        let ids = placeholder_ids(&rows, rows.len() / hidden);
        Ok(ImageTokens { rows, ids })
    }
}

/// Expands `tokens[from..]`: after each [`START_OF_IMAGE`], the placeholder ids of the
/// next of `images` (in order) and [`END_OF_IMAGE`]. Stops expanding when the images run
/// out; returns how many were used.
pub fn expand_images(tokens: &mut Vec<u32>, from: usize, images: &[ImageTokens]) -> usize {
    let tail = tokens.split_off(from.min(tokens.len()));
    let mut used = 0;
    for token in tail {
        tokens.push(token);
        if token == START_OF_IMAGE {
            if let Some(image) = images.get(used) {
                tokens.extend_from_slice(&image.ids);
                tokens.push(END_OF_IMAGE);
                used += 1;
            }
        }
    }
    used
}

/// Runs `tokens` (vocabulary ids and the placeholder ids of `images`) in `session`: the
/// text between images with [`Session::prefill`], each image with
/// [`Session::prefill_image`].
pub fn prefill_with_images(
    session: &mut Session<'_>,
    tokens: &[u32],
    images: &[ImageTokens],
) -> Result<(), ImageError> {
    let mut i = 0;
    while i < tokens.len() {
        let placeholder = is_placeholder(tokens[i]);
        let run = tokens[i..]
            .iter()
            .take_while(|&&t| is_placeholder(t) == placeholder)
            .count();
        let part = &tokens[i..i + run];
        if placeholder {
            let image = images
                .iter()
                .find(|image| image.ids == part)
                .ok_or(ImageError::UnknownPlaceholder { index: i })?;
            session.prefill_image(&image.rows)?;
        } else {
            session.prefill(part)?;
        }
        i += run;
    }
    Ok(())
}

/// The placeholder ids of an image of `n` soft tokens whose embeddings are `rows`: a
/// sequence derived from a hash of the values, so the same image gets the same ids (and
/// is reused from the cache) and different images differ.
pub fn placeholder_ids(rows: &[f32], n: usize) -> Vec<u32> {
    // FNV-1a over the bytes of the values.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for v in rows {
        for byte in v.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let base = (hash ^ (hash >> 32)) as u32;
    (0..n as u32)
        .map(|i| PLACEHOLDER_BIT | (base.wrapping_add(i) & !PLACEHOLDER_BIT))
        .collect()
}

/// Whether `id` is an image placeholder (not a vocabulary token).
pub fn is_placeholder(id: u32) -> bool {
    id & PLACEHOLDER_BIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_depend_on_the_image_and_never_are_tokens() {
        let a = placeholder_ids(&[1.0, 2.0, 3.0, 4.0], 2);
        let b = placeholder_ids(&[1.0, 2.0, 3.0, 5.0], 2);
        assert_eq!(a, placeholder_ids(&[1.0, 2.0, 3.0, 4.0], 2));
        assert_ne!(a, b);
        assert_ne!(a[0], a[1]);
        assert!(a.iter().chain(&b).all(|&id| is_placeholder(id)));
        assert!(!is_placeholder(START_OF_IMAGE) && !is_placeholder(262_143));
    }
}
