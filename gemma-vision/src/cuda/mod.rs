//! The image encoder on a CUDA GPU: the same steps as the CPU encoder, every activation
//! f32 in device memory, every product accumulated in f32 (no f16 activations).
//!
//! Kernels: `gemma_kernels::cuda::launch::matmul_float` for the products (tiled, F32 /
//! F16 / BF16 weights converted to f32 as they are read), `gemma_kernels::cuda::vision`
//! for LayerNorm, patches, bias / GELU / residual steps, attention and pooling, and
//! `gemma_kernels::cuda::ops::rms_norm_inplace` for the projector's RMSNorm. Weights are
//! uploaded once ([`CudaEncoder::new`]); the activation buffers are allocated once too.

mod weights;

use crate::config::VisionConfig;
use crate::error::VisionError;
use crate::model::{Stage, VisionModel};
use crate::preprocess::Pixels;
use gemma_kernels::cuda::launch::matmul_float;
use gemma_kernels::cuda::ops::rms_norm_inplace;
use gemma_kernels::cuda::vision::{self as kernels, BiasOp, Patches};
use gemma_kernels::cuda::{self, CudaDevice, CudaSlice};
use std::sync::Mutex;
use weights::DeviceWeights;

/// Receives each intermediate of a traced encode (downloaded to the host).
type Trace<'a> = &'a mut dyn FnMut(Stage, &[f32]);

/// Activation buffers of one encode, allocated once per encoder.
struct Scratch {
    /// `3 x image_size x image_size`.
    pixels: CudaSlice<f32>,
    /// `n_patches x patch_k_pad`.
    patches: CudaSlice<f32>,
    /// Residual stream, `n_patches x hidden`.
    h: CudaSlice<f32>,
    /// LayerNorm output, `n_patches x hidden`.
    normed: CudaSlice<f32>,
    /// Queries, keys, values and head outputs, `n_patches x attention_width` each.
    q: CudaSlice<f32>,
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    attn: CudaSlice<f32>,
    /// Linear outputs before the residual add, `n_patches x hidden`.
    y: CudaSlice<f32>,
    /// MLP hidden activations, `n_patches x ffn_hidden`.
    mlp: CudaSlice<f32>,
    /// Pooled and normed tokens, `n_image_tokens x hidden`.
    pooled: CudaSlice<f32>,
    /// Soft tokens, `n_image_tokens x text_hidden`.
    tokens: CudaSlice<f32>,
}

impl Scratch {
    /// The lengths of the buffers, in the order of the fields.
    fn lens(c: &VisionConfig, patch_k_pad: usize) -> [usize; 12] {
        let (n, t, aw) = (c.n_patches(), c.n_image_tokens(), c.attention_width());
        [
            3 * c.image_size * c.image_size,
            n * patch_k_pad,
            n * c.hidden,
            n * c.hidden,
            n * aw,
            n * aw,
            n * aw,
            n * aw,
            n * c.hidden,
            n * c.ffn_hidden,
            t * c.hidden,
            t * c.text_hidden,
        ]
    }

    /// Bytes of device memory [`Scratch::new`] allocates.
    fn planned_bytes(c: &VisionConfig, patch_k_pad: usize) -> usize {
        Self::lens(c, patch_k_pad).iter().sum::<usize>() * 4
    }

    fn new(dev: &CudaDevice, c: &VisionConfig, patch_k_pad: usize) -> Result<Scratch, VisionError> {
        let [pixels, patches, h, normed, q, k, v, attn, y, mlp, pooled, tokens] =
            Self::lens(c, patch_k_pad).map(|len| cuda::zeros::<f32>(dev, len));
        Ok(Scratch {
            pixels: pixels?,
            patches: patches?,
            h: h?,
            normed: normed?,
            q: q?,
            k: k?,
            v: v?,
            attn: attn?,
            y: y?,
            mlp: mlp?,
            pooled: pooled?,
            tokens: tokens?,
        })
    }

    fn bytes(&self) -> usize {
        [
            &self.pixels,
            &self.patches,
            &self.h,
            &self.normed,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.y,
            &self.mlp,
            &self.pooled,
            &self.tokens,
        ]
        .iter()
        .map(|s| s.len() * 4)
        .sum()
    }
}

/// A vision model's encoder on one GPU: its weights uploaded, its buffers allocated.
/// Produces the same soft tokens as [`VisionModel::encode`] (f32 throughout; the sums
/// run in another order, so results differ from the CPU's in the last bits).
pub struct CudaEncoder {
    dev: CudaDevice,
    config: VisionConfig,
    weights: DeviceWeights,
    scratch: Scratch,
}

impl CudaEncoder {
    /// Opens CUDA device `ordinal` and uploads `model`'s weights. Fails with a one-line
    /// [`VisionError::Cuda`] where there is no usable driver, GPU or NVRTC, and when the
    /// shapes do not fit the kernels (head width, row lengths not a multiple of 8); with
    /// [`VisionError::DeviceOutOfMemory`] when the weights and buffers do not fit in the
    /// device's free memory (checked before anything is allocated).
    pub fn new(model: &VisionModel, ordinal: usize) -> Result<CudaEncoder, VisionError> {
        let c = model.config().clone();
        if !kernels::ATTENTION_HEAD_DIMS.contains(&c.head_dim) {
            return Err(gemma_kernels::cuda::CudaError::Unsupported {
                what: "vision head_dim",
                value: c.head_dim,
                rule: "16, 32, 64, 72 or 80",
            }
            .into());
        }
        let dev = CudaDevice::new(ordinal)?;
        let needed = Self::planned_bytes(model);
        let out_of_memory = |dev: &CudaDevice| -> Result<VisionError, VisionError> {
            let (free, total) = dev.mem_info()?;
            Ok(VisionError::DeviceOutOfMemory {
                device: ordinal,
                needed: needed as u64,
                free: free as u64,
                total: total as u64,
            })
        };
        if needed > dev.mem_info()?.0 {
            return Err(out_of_memory(&dev)?);
        }
        // An allocation the driver refuses all the same (other users of the GPU) gives the
        // same error.
        let refused = |e: VisionError| match e {
            VisionError::Cuda(ref ce) if ce.is_out_of_memory() => out_of_memory(&dev).unwrap_or(e),
            e => e,
        };
        let weights =
            DeviceWeights::upload(&dev, model.gguf(), &c, &model.weights).map_err(refused)?;
        let scratch = Scratch::new(&dev, &c, weights.patch_k_pad).map_err(refused)?;
        Ok(CudaEncoder {
            dev,
            config: c,
            weights,
            scratch,
        })
    }

    /// Bytes of device memory an encoder of `model` holds ([`CudaEncoder::device_bytes`]),
    /// computed without a device.
    pub fn planned_bytes(model: &VisionModel) -> usize {
        let c = model.config();
        DeviceWeights::planned_bytes(model.gguf(), c, &model.weights)
            + Scratch::planned_bytes(c, weights::patch_k_pad(c))
    }

    /// The GPU's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        self.dev.name()
    }

    /// Bytes of device memory held: weights plus activation buffers.
    pub fn device_bytes(&self) -> usize {
        self.weights.bytes() + self.scratch.bytes()
    }

    /// Encodes one image: `n_image_tokens x text_hidden` f32 values, row-major, as
    /// [`VisionModel::encode`].
    pub fn encode(&mut self, pixels: &Pixels) -> Result<Vec<f32>, VisionError> {
        self.run(pixels, None)
    }

    /// [`CudaEncoder::encode`], copying every intermediate back to the host and handing it
    /// to `trace` (the stages of [`VisionModel::encode_traced`]).
    pub fn encode_traced(
        &mut self,
        pixels: &Pixels,
        trace: &mut dyn FnMut(Stage, &[f32]),
    ) -> Result<Vec<f32>, VisionError> {
        self.run(pixels, Some(trace))
    }

    fn run(
        &mut self,
        pixels: &Pixels,
        mut trace: Option<Trace<'_>>,
    ) -> Result<Vec<f32>, VisionError> {
        let c = &self.config;
        if pixels.size() != c.image_size {
            return Err(VisionError::PixelsSize {
                expected: c.image_size,
                found: pixels.size(),
            });
        }
        let (dev, w, s) = (&self.dev, &self.weights, &mut self.scratch);
        let (n, d, eps) = (c.n_patches(), c.hidden, c.norm_eps);
        let mut emit = |stage: Stage, buf: &CudaSlice<f32>| -> Result<(), VisionError> {
            if let Some(trace) = trace.as_mut() {
                trace(stage, &cuda::download(dev, buf)?);
            }
            Ok(())
        };
        dev.stream()
            .memcpy_htod(pixels.data(), &mut s.pixels)
            .map_err(cuda::CudaError::from)?;
        // Patch embedding (im2col + product) + bias + position embedding.
        let patches = Patches {
            image_size: c.image_size,
            patch: c.patch_size,
            k_pad: w.patch_k_pad,
        };
        kernels::im2col(dev, &s.pixels, patches, &mut s.patches)?;
        matmul_float(dev, &w.patch_weight, &s.patches, n, &mut s.h)?;
        kernels::add_bias_position(dev, &mut s.h, &w.patch_bias, &w.position, n, d)?;
        emit(Stage::Embeddings, &s.h)?;
        for (i, l) in w.layers.iter().enumerate() {
            // Attention: h += attn(LN1(h)) W_out^T + b_out.
            kernels::layer_norm(
                dev,
                &s.h,
                &l.ln1_weight,
                &l.ln1_bias,
                &mut s.normed,
                n,
                d,
                eps,
            )?;
            for (lin, out) in [(&l.q, &mut s.q), (&l.k, &mut s.k), (&l.v, &mut s.v)] {
                matmul_float(dev, &lin.weight, &s.normed, n, out)?;
                kernels::bias(dev, BiasOp::Add, out, &lin.bias, n, lin.weight.rows())?;
            }
            kernels::attention(dev, &s.q, &s.k, &s.v, &mut s.attn, n, c.n_heads, c.head_dim)?;
            matmul_float(dev, &l.out.weight, &s.attn, n, &mut s.y)?;
            kernels::add_bias_residual(dev, &mut s.h, &s.y, &l.out.bias, n, d)?;
            // MLP: h += gelu_tanh(LN2(h) W_up^T + b_up) W_down^T + b_down.
            kernels::layer_norm(
                dev,
                &s.h,
                &l.ln2_weight,
                &l.ln2_bias,
                &mut s.normed,
                n,
                d,
                eps,
            )?;
            matmul_float(dev, &l.up.weight, &s.normed, n, &mut s.mlp)?;
            kernels::bias(dev, BiasOp::Gelu, &mut s.mlp, &l.up.bias, n, c.ffn_hidden)?;
            matmul_float(dev, &l.down.weight, &s.mlp, n, &mut s.y)?;
            kernels::add_bias_residual(dev, &mut s.h, &s.y, &l.down.bias, n, d)?;
            emit(Stage::Layer(i), &s.h)?;
        }
        kernels::layer_norm_inplace(dev, &mut s.h, &w.post_ln_weight, &w.post_ln_bias, n, d, eps)?;
        emit(Stage::PostNorm, &s.h)?;
        // Projector: k x k average pool, RMSNorm, tokens = normed @ W (W uploaded transposed).
        let t = c.n_image_tokens();
        kernels::avg_pool(
            dev,
            &s.h,
            &mut s.pooled,
            c.patches_per_side(),
            d,
            c.pool_kernel,
        )?;
        emit(Stage::Pooled, &s.pooled)?;
        rms_norm_inplace(dev, &mut s.pooled, &w.soft_emb_norm, t, d, eps)?;
        emit(Stage::Normed, &s.pooled)?;
        matmul_float(dev, &w.projection_t, &s.pooled, t, &mut s.tokens)?;
        Ok(cuda::download(dev, &s.tokens)?)
    }
}

/// Where [`VisionModel::encode`] runs when a CUDA device was chosen: the device ordinal
/// and the encoder, built by the first encode (so that a machine without CUDA fails
/// there, with the one-line error, and loading stays cheap).
pub(crate) struct CudaSlot {
    ordinal: usize,
    encoder: Mutex<Option<CudaEncoder>>,
}

impl CudaSlot {
    /// A slot for device `ordinal`, nothing uploaded yet.
    pub fn new(ordinal: usize) -> CudaSlot {
        CudaSlot {
            ordinal,
            encoder: Mutex::new(None),
        }
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Encodes on the GPU, uploading `model`'s weights first if this is the first call.
    /// One encode at a time (the buffers are shared).
    pub fn encode(&self, model: &VisionModel, pixels: &Pixels) -> Result<Vec<f32>, VisionError> {
        let mut guard = self.encoder.lock().map_err(|_| poisoned())?;
        let encoder = match guard.as_mut() {
            Some(e) => e,
            None => guard.insert(CudaEncoder::new(model, self.ordinal)?),
        };
        encoder.encode(pixels)
    }
}

fn poisoned() -> VisionError {
    gemma_kernels::cuda::CudaError::Unavailable {
        reason: "the CUDA image encoder's lock was poisoned by a panic in another thread".into(),
    }
    .into()
}
