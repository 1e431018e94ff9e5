//! The vision tower's memory, from a llama.cpp "mmproj" GGUF file (`clip.vision.*` keys):
//! the mapped file plus the buffers of one image encode in `gemma-vision` (activations of
//! every patch in f32, the largest weight matrix unpacked to f32 for its GEMM, the
//! attention scores of a block of queries per worker thread).

use crate::CoreError;
use gemma_gguf::{GgufError, GgufFile, Metadata};

/// Queries per attention task of the encoder (`gemma-vision` `attention.rs`).
const QUERY_BLOCK: u64 = 96;

/// Worker threads assumed for the per-thread attention scores.
const THREADS: u64 = 2;

/// What the planner needs to know about a vision tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisionShape {
    /// Bytes of the whole mmproj file (mapped, all of it read by an encode).
    pub file_bytes: u64,
    /// Patches per image.
    pub n_patches: u64,
    /// Encoder width.
    pub hidden: u64,
    /// MLP width.
    pub ffn_hidden: u64,
    /// Values per patch (`3 * patch_size^2`).
    pub patch_values: u64,
    /// Elements of the largest weight matrix.
    pub largest_matrix: u64,
}

impl VisionShape {
    /// Reads the shape of an mmproj file.
    pub fn from_gguf(file: &GgufFile) -> Result<VisionShape, CoreError> {
        let md = file.metadata();
        let image = md.u64("clip.vision.image_size")?;
        let patch = md.u64("clip.vision.patch_size")?.max(1);
        let hidden = md.u64("clip.vision.embedding_length")?;
        let heads = md.u64("clip.vision.attention.head_count")?;
        let head_dim =
            optional(md, "clip.vision.attention.head_dim")?.unwrap_or(hidden / heads.max(1));
        let largest_matrix = file
            .tensors()
            .iter()
            .map(|t| t.n_elements())
            .max()
            .unwrap_or(0);
        Ok(VisionShape {
            file_bytes: file.bytes().len() as u64,
            n_patches: (image / patch).pow(2),
            hidden: hidden.max(heads * head_dim),
            ffn_hidden: md.u64("clip.vision.feed_forward_length")?,
            patch_values: 3 * patch * patch,
            largest_matrix,
        })
    }

    /// The file plus the peak buffers of an encode.
    pub fn bytes(&self) -> u64 {
        let n = self.n_patches;
        // Residual stream, normed input and linear output, q/k/v/attention, MLP hidden.
        let activations = n * (3 * self.hidden + 4 * self.hidden + self.ffn_hidden);
        let scores = THREADS * QUERY_BLOCK * n;
        self.file_bytes + 4 * (activations + n * self.patch_values + self.largest_matrix + scores)
    }
}

fn optional(md: &Metadata, key: &str) -> Result<Option<u64>, CoreError> {
    match md.u64(key) {
        Ok(v) => Ok(Some(v)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
