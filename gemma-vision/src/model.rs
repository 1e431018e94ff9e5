//! [`VisionModel`]: an mmproj file loaded and ready to turn pixels into soft tokens.

use crate::config::VisionConfig;
use crate::cuda::CudaSlot;
use crate::encoder::{Ctx, Scratch};
use crate::error::VisionError;
use crate::kernels::Kernels;
use crate::preprocess::{preprocess, Fit, ImageInput, Pixels};
use crate::weights::Weights;
use gemma_gguf::GgufFile;
use gemma_kernels::cpu::isa::Isa;
use std::path::Path;

/// A named intermediate of the encoder, reported by [`VisionModel::encode_traced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Patch embedding + position embedding, `[n_patches, hidden]`.
    Embeddings,
    /// Output of encoder block `i` (after its second residual add), `[n_patches, hidden]`.
    Layer(usize),
    /// After the post-LayerNorm, `[n_patches, hidden]`.
    PostNorm,
    /// After the average pool, `[n_image_tokens, hidden]`.
    Pooled,
    /// After the soft-embedding RMSNorm, `[n_image_tokens, hidden]`.
    Normed,
}

/// A Gemma 3 vision tower and projector read from an mmproj GGUF file. Weights stay in
/// the file's memory map; `Send + Sync`, so one model serves many threads.
pub struct VisionModel {
    gguf: GgufFile,
    config: VisionConfig,
    pub(crate) weights: Weights,
    kernels: Kernels,
    /// Set by [`VisionModel::set_cuda_device`]: [`VisionModel::encode`] runs there.
    cuda: Option<CudaSlot>,
}

impl VisionModel {
    /// Opens an mmproj file (projector type `gemma3`), reads its config from the `clip.*`
    /// keys and binds the `v.*` and `mm.*` tensors, checking every shape and type.
    pub fn load(path: impl AsRef<Path>) -> Result<VisionModel, VisionError> {
        VisionModel::from_gguf(GgufFile::open(path)?)
    }

    /// As [`VisionModel::load`], from an already opened file.
    pub fn from_gguf(gguf: GgufFile) -> Result<VisionModel, VisionError> {
        let config = VisionConfig::from_gguf(&gguf)?;
        let weights = Weights::bind(&gguf, &config)?;
        Ok(VisionModel {
            gguf,
            config,
            weights,
            kernels: *Kernels::current(),
            cuda: None,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// The underlying file.
    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    /// Soft tokens per image (256 for the real Gemma 3 models).
    pub fn n_image_tokens(&self) -> usize {
        self.config.n_image_tokens()
    }

    /// Width of each soft token: the language model's hidden size.
    pub fn text_hidden(&self) -> usize {
        self.config.text_hidden
    }

    /// The instruction set the encoder's kernels use.
    pub fn isa(&self) -> Isa {
        self.kernels.isa
    }

    /// Switches the kernels to `isa` (for comparisons); false, and nothing changes,
    /// when this CPU cannot run it.
    pub fn set_isa(&mut self, isa: Isa) -> bool {
        match Kernels::for_isa(isa) {
            Some(k) => {
                self.kernels = k;
                true
            }
            None => false,
        }
    }

    /// Runs [`VisionModel::encode`] on CUDA device `ordinal` from now on (`None`: on the
    /// CPU, the default). The weights are uploaded by the next encode, which is where a
    /// machine without a usable GPU, driver or NVRTC reports [`VisionError::Cuda`] (one
    /// line). [`VisionModel::encode_traced`] stays on the CPU; [`crate::CudaEncoder`]
    /// traces the GPU's intermediates.
    pub fn set_cuda_device(&mut self, ordinal: Option<usize>) {
        self.cuda = ordinal.map(CudaSlot::new);
    }

    /// The CUDA device [`VisionModel::encode`] runs on, if one was chosen.
    pub fn cuda_device(&self) -> Option<usize> {
        self.cuda.as_ref().map(CudaSlot::ordinal)
    }

    /// [`crate::preprocess`] with this model's config.
    pub fn preprocess<'a>(
        &self,
        image: impl Into<ImageInput<'a>>,
        fit: Fit,
    ) -> Result<Pixels, VisionError> {
        preprocess(image, &self.config, fit)
    }

    /// Encodes one image: `n_image_tokens() x text_hidden()` f32 values, row-major,
    /// tokens in raster order of the pooled grid. Runs in the current rayon pool, or on
    /// the GPU chosen with [`VisionModel::set_cuda_device`].
    pub fn encode(&self, pixels: &Pixels) -> Result<Vec<f32>, VisionError> {
        if let Some(slot) = &self.cuda {
            return slot.encode(self, pixels);
        }
        self.encode_traced(pixels, &mut |_, _| {})
    }

    /// [`VisionModel::encode`], handing every intermediate to `trace` as it is made.
    pub fn encode_traced(
        &self,
        pixels: &Pixels,
        trace: &mut dyn FnMut(Stage, &[f32]),
    ) -> Result<Vec<f32>, VisionError> {
        let c = &self.config;
        if pixels.size() != c.image_size {
            return Err(VisionError::PixelsSize {
                expected: c.image_size,
                found: pixels.size(),
            });
        }
        let ctx = Ctx {
            gguf: &self.gguf,
            config: c,
            weights: &self.weights,
            kernels: &self.kernels,
        };
        let mut scratch = Scratch::new(c);
        let mut h = vec![0f32; c.n_patches() * c.hidden];
        ctx.embed(pixels.data(), &mut h, &mut scratch)?;
        trace(Stage::Embeddings, &h);
        for (i, layer) in self.weights.layers.iter().enumerate() {
            ctx.layer(layer, &mut h, &mut scratch)?;
            trace(Stage::Layer(i), &h);
        }
        ctx.post_norm(&mut h, &mut scratch)?;
        trace(Stage::PostNorm, &h);
        drop(scratch);
        let mut pooled = ctx.pool(&h);
        trace(Stage::Pooled, &pooled);
        ctx.soft_emb_norm(&mut pooled)?;
        trace(Stage::Normed, &pooled);
        ctx.project(&pooled)
    }
}
