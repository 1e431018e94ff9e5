//! The vision tower's memory, from a llama.cpp "mmproj" GGUF file (`clip.*` keys and the
//! `mm.input_projection.weight` shape): the mapped file, the buffers of one image encode
//! in `gemma-vision` (activations of every patch in f32, the largest weight matrix
//! unpacked to f32 for its GEMM, the attention buffers of a block of queries per worker
//! thread), and the images' soft tokens; plus the context positions the images take.

use crate::CoreError;
use gemma_gguf::{GgufError, GgufFile, Metadata};

/// Queries per attention task of the encoder (`gemma-vision` `attention.rs`).
const QUERY_BLOCK: u64 = 64;

/// Worker threads assumed for the per-thread attention buffers.
const THREADS: u64 = 2;

/// Pool kernel of the Gemma 3 projector when `clip.vision.projector.scale_factor` is
/// absent (llama.cpp's default, what every released model uses).
const DEFAULT_POOL_KERNEL: u64 = 4;

/// Text tokens around the soft tokens of one image: `<start_of_image>`, `<end_of_image>`.
const IMAGE_MARKERS: u64 = 2;

/// What the planner needs to know about a vision tower and the images of a session.
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
    /// Width of one attention head.
    pub head_dim: u64,
    /// Values per patch (`3 * patch_size^2`).
    pub patch_values: u64,
    /// Elements of the largest weight matrix.
    pub largest_matrix: u64,
    /// Soft tokens one image becomes (256 for the released models).
    pub image_tokens: u64,
    /// Width of the soft tokens (the language model's hidden size).
    pub text_hidden: u64,
    /// Images in the session's context (1 unless [`VisionShape::with_images`]).
    pub images: u64,
}

impl VisionShape {
    /// Reads the shape of an mmproj file (one image in the context).
    pub fn from_gguf(file: &GgufFile) -> Result<VisionShape, CoreError> {
        let md = file.metadata();
        let image = md.u64("clip.vision.image_size")?;
        let patch = md.u64("clip.vision.patch_size")?.max(1);
        let hidden = md.u64("clip.vision.embedding_length")?;
        let heads = md.u64("clip.vision.attention.head_count")?;
        let head_dim =
            optional(md, "clip.vision.attention.head_dim")?.unwrap_or(hidden / heads.max(1));
        let pool = optional(md, "clip.vision.projector.scale_factor")?
            .unwrap_or(DEFAULT_POOL_KERNEL)
            .max(1);
        let text_hidden = match file.tensor("mm.input_projection.weight") {
            Some(t) => t.dims.first().copied().unwrap_or(0),
            None => md.u64("clip.vision.projection_dim")?,
        };
        let largest_matrix = file
            .tensors()
            .iter()
            .map(|t| t.n_elements())
            .max()
            .unwrap_or(0);
        let per_side = image / patch;
        Ok(VisionShape {
            file_bytes: file.bytes().len() as u64,
            n_patches: per_side.pow(2),
            hidden: hidden.max(heads * head_dim),
            ffn_hidden: md.u64("clip.vision.feed_forward_length")?,
            head_dim,
            patch_values: 3 * patch * patch,
            largest_matrix,
            image_tokens: (per_side / pool).pow(2),
            text_hidden,
            images: 1,
        })
    }

    /// The same tower with `images` images in the context.
    pub fn with_images(self, images: u64) -> VisionShape {
        VisionShape { images, ..self }
    }

    /// Everything the vision side adds: [`VisionShape::encoder_bytes`] plus
    /// [`VisionShape::soft_token_bytes`].
    pub fn bytes(&self) -> u64 {
        self.encoder_bytes() + self.soft_token_bytes()
    }

    /// The file plus the peak buffers of one encode.
    pub fn encoder_bytes(&self) -> u64 {
        let n = self.n_patches;
        // Residual stream, normed input and linear output, q/k/v/attention, MLP hidden.
        let activations = n * (3 * self.hidden + 4 * self.hidden + self.ffn_hidden);
        // Per thread: the scores of a query block and its output transposed; K of one
        // head transposed.
        let attention =
            THREADS * QUERY_BLOCK * (n + self.head_dim) + self.head_dim * n.next_multiple_of(12);
        self.file_bytes
            + 4 * (activations + n * self.patch_values + self.largest_matrix + attention)
    }

    /// The soft tokens of every image (f32), kept until they are prefilled.
    pub fn soft_token_bytes(&self) -> u64 {
        4 * self.images * self.image_tokens * self.text_hidden
    }

    /// Context positions the images take: per image its soft tokens and the
    /// `<start_of_image>`/`<end_of_image>` markers around them.
    pub fn context_tokens(&self) -> u64 {
        self.images * (self.image_tokens + IMAGE_MARKERS)
    }
}

fn optional(md: &Metadata, key: &str) -> Result<Option<u64>, CoreError> {
    match md.u64(key) {
        Ok(v) => Ok(Some(v)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
