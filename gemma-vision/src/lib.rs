//! The Gemma 3 vision tower (SigLIP) and multimodal projector, read from a llama.cpp
//! "mmproj" GGUF file (projector type `gemma3`), and the image preprocessing they expect.
//!
//! ```no_run
//! use gemma_vision::{Fit, VisionModel};
//! let model = VisionModel::load("mmproj-model-f16.gguf")?;
//! let bytes = std::fs::read("photo.jpg").expect("readable file");
//! let pixels = model.preprocess(&bytes, Fit::Squash)?;      // or gemma_vision::preprocess(.., model.config(), ..)
//! let tokens = model.encode(&pixels)?;                       // n_image_tokens() x text_hidden(), row-major
//! assert_eq!(tokens.len(), model.n_image_tokens() * model.text_hidden());
//! # Ok::<(), gemma_vision::VisionError>(())
//! ```
//!
//! # Pipeline
//! 1. [`preprocess`]: decode PNG/JPEG to RGB8 (size checked from the header first:
//!    [`MAX_IMAGE_SIDE`], [`MAX_IMAGE_PIXELS`]), resize to `image_size` squared with
//!    Pillow's fixed-point bilinear filter (bit-exact), `(u8/255 - mean) / std`, CHW.
//!    [`Fit::Squash`] (default) stretches like the model's own processor (transformers);
//!    [`Fit::Letterbox`] pads to square with black like llama.cpp's mtmd.
//! 2. [`VisionModel::encode`]: patch embedding (conv as im2col + GEMM) + position
//!    embedding; `block_count` pre-norm blocks (LayerNorm, bidirectional multi-head
//!    attention, LayerNorm, GELU-tanh MLP); post-LayerNorm; `k x k` average pool to
//!    [`VisionModel::n_image_tokens`] tokens; RMSNorm (`mm.soft_emb_norm`); projection
//!    with `mm.input_projection.weight` to the language model's width.
//!    [`VisionModel::encode_traced`] reports each [`Stage`].
//!
//! All arithmetic is f32 whatever the weight type: weights (F32, F16, BF16 or any type
//! `gemma_kernels::quant::dequantize` reads) are converted to f32 while a cache-blocked
//! GEMM packs them, and activations are never rounded to f16. The GEMM, softmax and
//! GELU have Scalar, AVX2 and AVX-512 versions chosen at run time (`GEMMA_ISA` forces one).
//! [`VisionModel::set_cuda_device`] (or a [`CudaEncoder`]) runs the same steps on a CUDA
//! GPU, f32 throughout, with the kernels of `gemma_kernels::cuda`.
//!
//! # Feeding the language model
//! The soft tokens replace the image in the prompt: `<start_of_image>` (id 255999), then
//! the `n_image_tokens()` rows of [`VisionModel::encode`] as input embeddings (one
//! position each, used as they are: no `sqrt(hidden)` scaling, which applies to token
//! embeddings only), then `<end_of_image>` (256000). Attention among the tokens of one
//! image is bidirectional; everything else stays causal.

mod attention;
mod config;
mod cuda;
mod decode;
mod encoder;
mod error;
mod gemm;
mod jpeg;
mod kernels;
mod model;
mod ops;
mod preprocess;
mod projector;
mod resample;
mod simd;
mod weights;

/// The `image` crate this one decodes with, for building [`ImageInput::Image`] values.
pub use image;

pub use config::VisionConfig;
pub use cuda::CudaEncoder;
pub use decode::{decode_rgb8, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE};
pub use error::VisionError;
pub use jpeg::JpegError;
pub use model::{Stage, VisionModel};
pub use preprocess::{preprocess, Fit, ImageInput, Pixels};
