//! Hyperparameters of the vision tower and projector, read from the `clip.*` keys.

use crate::error::VisionError;
use gemma_gguf::{GgufError, GgufFile, Metadata};

/// Metadata keys written by llama.cpp's `convert_hf_to_gguf.py --mmproj`.
mod keys {
    pub const PROJECTOR_TYPE: &str = "clip.projector_type";
    pub const HAS_VISION_ENCODER: &str = "clip.has_vision_encoder";
    pub const USE_GELU: &str = "clip.use_gelu";
    pub const IMAGE_SIZE: &str = "clip.vision.image_size";
    pub const PATCH_SIZE: &str = "clip.vision.patch_size";
    pub const EMBEDDING_LENGTH: &str = "clip.vision.embedding_length";
    pub const FEED_FORWARD_LENGTH: &str = "clip.vision.feed_forward_length";
    pub const BLOCK_COUNT: &str = "clip.vision.block_count";
    pub const HEAD_COUNT: &str = "clip.vision.attention.head_count";
    pub const HEAD_COUNT_KV: &str = "clip.vision.attention.head_count_kv";
    pub const HEAD_DIM: &str = "clip.vision.attention.head_dim";
    pub const LAYER_NORM_EPS: &str = "clip.vision.attention.layer_norm_epsilon";
    pub const IMAGE_MEAN: &str = "clip.vision.image_mean";
    pub const IMAGE_STD: &str = "clip.vision.image_std";
    pub const SCALE_FACTOR: &str = "clip.vision.projector.scale_factor";
    pub const PROJECTION_DIM: &str = "clip.vision.projection_dim";
}

/// The GGUF name of the projection into the language model (ne = [text hidden, vision hidden]).
pub(crate) const INPUT_PROJECTION: &str = "mm.input_projection.weight";

/// The only projector this crate implements (Gemma 3).
const GEMMA3_PROJECTOR: &str = "gemma3";

/// Pool kernel llama.cpp assumes for `gemma3` when `clip.vision.projector.scale_factor`
/// is absent ("used by all model sizes in gemma 3 family").
const DEFAULT_POOL_KERNEL: u32 = 4;

/// Largest accepted model image side: far above any released encoder, it keeps a
/// corrupt file from asking for absurd scratch buffers.
const MAX_IMAGE_SIZE: u32 = 8192;

/// Hyperparameters of a Gemma 3 vision tower (SigLIP) and its projector.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    /// Side of the square model input in pixels (`clip.vision.image_size`; 896 for real models).
    pub image_size: usize,
    /// Side of one patch in pixels (`clip.vision.patch_size`; 14).
    pub patch_size: usize,
    /// Encoder width D (`clip.vision.embedding_length`; 1152).
    pub hidden: usize,
    /// MLP width (`clip.vision.feed_forward_length`; 4304).
    pub ffn_hidden: usize,
    /// Number of encoder blocks (`clip.vision.block_count`; 27).
    pub n_layers: usize,
    /// Attention heads (`clip.vision.attention.head_count`; 16).
    pub n_heads: usize,
    /// Width of one head (`clip.vision.attention.head_dim`, default hidden / heads; 72).
    pub head_dim: usize,
    /// Epsilon of every LayerNorm and of the projector's RMSNorm (1e-6).
    pub norm_eps: f32,
    /// Per-channel mean subtracted after scaling pixels to [0, 1] (`clip.vision.image_mean`).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation divided by (`clip.vision.image_std`).
    pub image_std: [f32; 3],
    /// Side of the average-pooling window (`clip.vision.projector.scale_factor`, default 4).
    pub pool_kernel: usize,
    /// Width of the language model the soft tokens are projected to
    /// (`mm.input_projection.weight` ne\[0\], as llama.cpp reads it).
    pub text_hidden: usize,
}

impl VisionConfig {
    /// Reads and validates the config of a `gemma3` mmproj file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<VisionConfig, VisionError> {
        let md = gguf.metadata();
        let projector = md.string(keys::PROJECTOR_TYPE)?;
        if projector != GEMMA3_PROJECTOR {
            return Err(VisionError::UnsupportedProjector {
                found: projector.to_string(),
            });
        }
        if !optional(md.bool(keys::HAS_VISION_ENCODER))?.unwrap_or(true) {
            return Err(bad(
                keys::HAS_VISION_ENCODER,
                0.0,
                "the file has no vision encoder",
            ));
        }
        // `use_gelu` selects the tanh GELU; llama.cpp would fall back to quick GELU
        // without it, which no Gemma 3 file uses.
        if !md.bool(keys::USE_GELU)? {
            return Err(bad(
                keys::USE_GELU,
                0.0,
                "only the GELU (tanh) MLP of Gemma 3 is implemented",
            ));
        }
        let image_size = md.u32(keys::IMAGE_SIZE)?;
        let patch_size = md.u32(keys::PATCH_SIZE)?;
        let hidden = md.u32(keys::EMBEDDING_LENGTH)?;
        let ffn_hidden = md.u32(keys::FEED_FORWARD_LENGTH)?;
        let n_layers = md.u32(keys::BLOCK_COUNT)?;
        let n_heads = md.u32(keys::HEAD_COUNT)?;
        let norm_eps = md.f32(keys::LAYER_NORM_EPS)?;
        let pool_kernel = optional(md.u32(keys::SCALE_FACTOR))?.unwrap_or(DEFAULT_POOL_KERNEL);

        positive(keys::IMAGE_SIZE, image_size)?;
        positive(keys::PATCH_SIZE, patch_size)?;
        positive(keys::EMBEDDING_LENGTH, hidden)?;
        positive(keys::FEED_FORWARD_LENGTH, ffn_hidden)?;
        positive(keys::HEAD_COUNT, n_heads)?;
        positive(keys::SCALE_FACTOR, pool_kernel)?;
        if image_size > MAX_IMAGE_SIZE {
            return Err(bad(keys::IMAGE_SIZE, image_size.into(), "larger than 8192"));
        }
        if image_size % patch_size != 0 {
            return Err(bad(
                keys::IMAGE_SIZE,
                image_size.into(),
                "not a multiple of the patch size",
            ));
        }
        if (image_size / patch_size) % pool_kernel != 0 {
            return Err(bad(
                keys::SCALE_FACTOR,
                pool_kernel.into(),
                "does not divide the patches per side",
            ));
        }
        if let Some(kv) = optional(md.u32(keys::HEAD_COUNT_KV))? {
            if kv != n_heads {
                return Err(bad(
                    keys::HEAD_COUNT_KV,
                    kv.into(),
                    "differs from the head count",
                ));
            }
        }
        let head_dim = match optional(md.u32(keys::HEAD_DIM))? {
            Some(d) => d,
            None if hidden % n_heads == 0 => hidden / n_heads,
            None => {
                return Err(bad(
                    keys::HEAD_COUNT,
                    n_heads.into(),
                    "does not divide the embedding length",
                ))
            }
        };
        positive(keys::HEAD_DIM, head_dim)?;
        if !(norm_eps.is_finite() && norm_eps >= 0.0) {
            return Err(bad(
                keys::LAYER_NORM_EPS,
                norm_eps.into(),
                "not a finite non-negative number",
            ));
        }
        let image_mean = rgb_triple(md, keys::IMAGE_MEAN)?;
        let image_std = rgb_triple(md, keys::IMAGE_STD)?;
        if let Some(s) = image_std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
            return Err(bad(
                keys::IMAGE_STD,
                (*s).into(),
                "not a finite non-zero number",
            ));
        }

        let projection =
            gguf.tensor(INPUT_PROJECTION)
                .ok_or_else(|| VisionError::MissingTensor {
                    name: INPUT_PROJECTION.to_string(),
                })?;
        let text_hidden = projection.dims.first().copied().unwrap_or(0);
        if let Some(dim) = optional(md.u32(keys::PROJECTION_DIM))? {
            if u64::from(dim) != text_hidden {
                return Err(bad(
                    keys::PROJECTION_DIM,
                    dim.into(),
                    "differs from mm.input_projection.weight ne[0]",
                ));
            }
        }
        let text_hidden = usize::try_from(text_hidden)
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| {
                bad(
                    "mm.input_projection.weight ne[0]",
                    text_hidden as f64,
                    "not a usable width",
                )
            })?;

        Ok(VisionConfig {
            image_size: image_size as usize,
            patch_size: patch_size as usize,
            hidden: hidden as usize,
            ffn_hidden: ffn_hidden as usize,
            n_layers: n_layers as usize,
            n_heads: n_heads as usize,
            head_dim: head_dim as usize,
            norm_eps,
            image_mean,
            image_std,
            pool_kernel: pool_kernel as usize,
            text_hidden,
        })
    }

    /// Patches per image side (64 for real models).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image (4096 for real models).
    pub fn n_patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }

    /// Soft tokens per image side after pooling (16 for real models).
    pub fn tokens_per_side(&self) -> usize {
        self.patches_per_side() / self.pool_kernel
    }

    /// Soft tokens one image becomes in the language model (256 for real models).
    pub fn n_image_tokens(&self) -> usize {
        self.tokens_per_side() * self.tokens_per_side()
    }

    /// Width of the concatenated attention heads (= hidden for SigLIP).
    pub fn attention_width(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

/// Turns a missing key into `None`, keeping every other error.
fn optional<T>(value: Result<T, GgufError>) -> Result<Option<T>, VisionError> {
    match value {
        Ok(v) => Ok(Some(v)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn bad(key: &'static str, value: f64, reason: &'static str) -> VisionError {
    VisionError::BadConfig { key, value, reason }
}

fn positive(key: &'static str, value: u32) -> Result<(), VisionError> {
    if value == 0 {
        return Err(bad(key, 0.0, "must be positive"));
    }
    Ok(())
}

fn rgb_triple(md: &Metadata, key: &'static str) -> Result<[f32; 3], VisionError> {
    let values = md.f32_array(key)?;
    match values[..] {
        [r, g, b] => Ok([r, g, b]),
        _ => Err(bad(
            key,
            values.len() as f64,
            "must hold 3 values (R, G, B)",
        )),
    }
}
