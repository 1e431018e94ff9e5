//! The prediction: bytes of weights, KV cache, working buffers and the rest for one
//! session of a model, on the CPU (resident memory) or a CUDA GPU (device memory).
//!
//! Every term mirrors an allocation of the engine:
//! - weights and metadata: the memory-mapped file, all of it read at load or by the first
//!   forward pass (the tied output matrix included), so all of it becomes resident;
//! - KV cache ([`crate::kv_cache::KvCache::new`]): per global layer `ctx_len` slots, per
//!   local layer a ring of `min(ctx_len, sliding_window + ring_margin)` slots, each slot
//!   `n_head_kv * (row(head_dim_k) + row(head_dim_v))` bytes of the KV type;
//! - working buffers (`state.rs`, `engine.rs`, `session.rs`): the activations of a batch of
//!   `min(max_batch, ctx_len)` tokens, the logits of 16 rows twice (device buffer and host
//!   copy) and once more for the session, and the matmul's quantized activations, which
//!   grow like a `Vec` to the largest product of a full batch;
//! - the tokenizer's tables ([`TOKENIZER_BYTES_PER_TOKEN`] per vocabulary entry), which
//!   chat and generate hold beside the model;
//! - the process: code, C library, allocator, worker threads ([`PROCESS_BYTES`]: a
//!   measured baseline and what running adds).
//!
//! On CUDA the weights, KV cache and buffers are device memory, plus the context
//! ([`CUDA_CONTEXT_BYTES`]) and the allocator's slack; the file and the tokenizer stay
//! in host memory and are not counted.

use super::shape::ModelShape;
use super::vision::VisionShape;
use crate::kv_cache::KvType;
use crate::model::{Device, ModelOptions};
use crate::{Config, CoreError};
use gemma_gguf::GgmlType;
use gemma_kernels::quant::{self, BlockVisitor, QuantBlock};

/// Rows of logits the engine computes per output projection (`engine.rs` `LOGIT_ROWS`).
pub const LOGIT_ROWS: usize = 16;

/// Resident memory of a process of this engine before it loads a model: the executable's
/// code and data, the C library, the allocator. Measured on x86-64 Linux (`mem --measure`
/// reports it as `baseline_bytes`: 3.0 to 3.9 MiB); `--measure` uses its own measured
/// baseline in place of this constant.
pub const PROCESS_BASELINE_BYTES: u64 = 13 << 18;

/// What the process adds while it runs a session, besides the planned buffers: the worker
/// threads' stacks and allocator arenas, blocks the allocator keeps after the first full
/// batch's temporaries, code paged in. Measured with `mem --measure` on x86-64 Linux: 2 MiB
/// (270M, 1B) to 11 MiB (12B) after a 512-token prefill.
pub const RUNTIME_GROWTH_BYTES: u64 = 2 << 20;

/// The process term of a CPU plan: [`PROCESS_BASELINE_BYTES`] + [`RUNTIME_GROWTH_BYTES`].
pub const PROCESS_BYTES: u64 = PROCESS_BASELINE_BYTES + RUNTIME_GROWTH_BYTES;

/// Heap of a [`crate::Tokenizer`] per vocabulary entry (texts, decoded pieces, scores,
/// types, the lookup table): 15.9 to 17.2 MiB measured for Gemma 3's 262 144 entries
/// (`mem --measure` with and without `MALLOC_PERTURB_`).
pub const TOKENIZER_BYTES_PER_TOKEN: u64 = 64;

/// Device memory in use once a CUDA context exists and this engine's kernels are loaded,
/// before any buffer: 526.8 MiB measured on an H200 (driver 580), rounded up.
pub const CUDA_CONTEXT_BYTES: u64 = 528 << 20;

/// Device memory the stream-ordered allocator holds beyond the buffers themselves (pool
/// granularity, blocks kept after the first batch's temporaries): 9 to 31 MiB measured on
/// an H200 for synth 1B and 4B Q4_K_M sessions of 4K to 128K tokens.
pub const CUDA_POOL_SLACK_BYTES: u64 = 20 << 20;

/// Streaming multiprocessors assumed when sizing the CUDA decode-attention splits (H100).
const CUDA_SM_COUNT: usize = 132;

/// What the prediction depends on besides the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Context length of the session.
    pub ctx_len: usize,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// Where the model runs.
    pub device: Device,
    /// Extra ring slots of each local layer ([`ModelOptions::ring_margin`]).
    pub ring_margin: usize,
    /// Most tokens per forward pass ([`ModelOptions::max_batch`]).
    pub max_batch: usize,
    /// Whether the process also holds the model's tokenizer (as chat and generate do).
    pub tokenizer: bool,
}

impl PlanOptions {
    /// A session of `ctx_len` tokens with a `kv_type` cache, default model options.
    pub fn new(ctx_len: usize, kv_type: KvType) -> PlanOptions {
        PlanOptions::for_model(&ModelOptions::default(), ctx_len, kv_type)
    }

    /// A session of `ctx_len` tokens of a model loaded with `options`.
    pub fn for_model(options: &ModelOptions, ctx_len: usize, kv_type: KvType) -> PlanOptions {
        PlanOptions {
            ctx_len,
            kv_type,
            device: options.device,
            ring_margin: options.ring_margin,
            max_batch: options.max_batch,
            tokenizer: true,
        }
    }
}

/// The KV cache of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvPlan {
    /// Bytes of the rings of the local (sliding-window) layers.
    pub local_bytes: u64,
    /// Bytes of the global layers (`ctx_len` slots each).
    pub global_bytes: u64,
    /// What the cache would take with `ctx_len` slots in every layer (no ring buffers).
    pub full_bytes: u64,
}

impl KvPlan {
    /// Bytes of the whole cache.
    pub fn bytes(&self) -> u64 {
        self.local_bytes + self.global_bytes
    }
}

/// Predicted memory of one session, by part.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// The model ([`ModelShape::label`]).
    pub label: String,
    /// The options it was computed for.
    pub options: PlanOptions,
    /// Tensor data: the mapped file's tensors (CPU) or the uploaded ones (CUDA).
    pub weights_bytes: u64,
    /// The rest of the mapped file (header, tokenizer metadata); 0 on CUDA.
    pub metadata_bytes: u64,
    /// The KV cache.
    pub kv: KvPlan,
    /// Working buffers of the forward pass.
    pub scratch_bytes: u64,
    /// The tokenizer's tables (host memory), when [`PlanOptions::tokenizer`] is set.
    pub tokenizer_bytes: u64,
    /// The vision tower and the images' soft tokens, when an mmproj file is given
    /// ([`VisionShape::bytes`]).
    pub vision_bytes: u64,
    /// Context positions the images take ([`VisionShape::context_tokens`]); part of
    /// `ctx_len`.
    pub image_tokens: u64,
    /// Bytes of the KV cache those positions fill (already inside [`MemoryPlan::kv`]).
    pub image_kv_bytes: u64,
    /// The process ([`PROCESS_BYTES`]) on the CPU, the context ([`CUDA_CONTEXT_BYTES`]) on CUDA.
    pub runtime_bytes: u64,
}

impl MemoryPlan {
    /// Bytes of the KV cache.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.bytes()
    }

    /// What creating the session allocates: KV cache and working buffers.
    pub fn session_bytes(&self) -> u64 {
        self.kv.bytes() + self.scratch_bytes
    }

    /// Everything: resident memory of the process (CPU) or device memory (CUDA; the
    /// tokenizer and the mapped file stay in host memory).
    pub fn total_bytes(&self) -> u64 {
        let model =
            self.weights_bytes + self.metadata_bytes + self.tokenizer_bytes + self.vision_bytes;
        model + self.session_bytes() + self.runtime_bytes
    }

    /// [`MemoryPlan::total_bytes`] with a non-ring (full-length) KV cache.
    pub fn total_full_kv_bytes(&self) -> u64 {
        self.total_bytes() - self.kv.bytes() + self.kv.full_bytes
    }
}

/// Predicts the memory of a session of `model` (and of the vision tower `vision` with
/// its images).
///
/// Fails like session creation would: a context of 0 or beyond the model's, a KV type
/// whose blocks do not divide the head size, a type the CUDA backend cannot hold; and
/// when the images do not fit in the context.
pub fn plan(
    model: &ModelShape,
    options: &PlanOptions,
    vision: Option<&VisionShape>,
) -> Result<MemoryPlan, CoreError> {
    let c = &model.config;
    let kv = kv_plan(c, options)?;
    let image_tokens = vision.map_or(0, VisionShape::context_tokens);
    if image_tokens > options.ctx_len as u64 {
        return Err(CoreError::ContextFull {
            position: 0,
            requested: usize::try_from(image_tokens).unwrap_or(usize::MAX),
            ctx_len: options.ctx_len,
        });
    }
    // The cache of a session holding just the images' positions.
    let image_kv_bytes = match image_tokens {
        0 => 0,
        t => kv_plan(
            c,
            &PlanOptions {
                ctx_len: t as usize,
                ..*options
            },
        )?
        .bytes(),
    };
    // The CUDA backend lays out every KV type as the CPU does.
    let cuda = matches!(options.device, Device::Cuda(_));
    let scratch_bytes = if cuda {
        cuda_scratch_bytes(model, options)
    } else {
        cpu_scratch_bytes(model, options)?
    };
    Ok(MemoryPlan {
        label: model.label.clone(),
        options: *options,
        weights_bytes: model.weight_bytes(),
        metadata_bytes: if cuda { 0 } else { model.metadata_bytes },
        kv,
        scratch_bytes,
        tokenizer_bytes: match options.tokenizer && !cuda {
            true => TOKENIZER_BYTES_PER_TOKEN * model.config.n_vocab as u64,
            false => 0,
        },
        vision_bytes: vision.map_or(0, VisionShape::bytes),
        image_tokens,
        image_kv_bytes,
        runtime_bytes: if cuda {
            CUDA_CONTEXT_BYTES
        } else {
            PROCESS_BYTES
        },
    })
}

/// The KV cache as [`crate::kv_cache::KvCache::new`] lays it out.
pub fn kv_plan(c: &Config, options: &PlanOptions) -> Result<KvPlan, CoreError> {
    let (ctx, ty) = (options.ctx_len, options.kv_type);
    if ctx == 0 || ctx > c.context_length {
        return Err(CoreError::ContextLength {
            requested: ctx,
            max: c.context_length,
        });
    }
    for head_dim in [c.head_dim_k, c.head_dim_v] {
        if head_dim % ty.block_elems() != 0 {
            return Err(CoreError::KvTypeUnsupported {
                kv_type: ty.name(),
                block: ty.block_elems(),
                head_dim,
            });
        }
    }
    let slot = (c.n_head_kv * (ty.row_bytes(c.head_dim_k) + ty.row_bytes(c.head_dim_v))) as u64;
    let mut kv = KvPlan {
        full_bytes: c.layers.len() as u64 * ctx as u64 * slot,
        ..KvPlan::default()
    };
    for layer in &c.layers {
        match layer.window {
            None => kv.global_bytes += ctx as u64 * slot,
            Some(w) => {
                kv.local_bytes += ctx.min(w.saturating_add(options.ring_margin)) as u64 * slot
            }
        }
    }
    Ok(kv)
}

/// Tokens per forward pass and rows of logits per output projection (`engine.rs`).
fn batch_sizes(options: &PlanOptions) -> (u64, u64) {
    let tokens = options.max_batch.clamp(1, options.ctx_len.max(1));
    (tokens as u64, LOGIT_ROWS.min(tokens) as u64)
}

/// f32 values of the activation buffers of `state.rs` (the same on every backend).
fn state_floats(c: &Config, tokens: u64, logit_rows: u64) -> u64 {
    let per_token =
        3 * c.n_embd + c.q_dim() + c.k_dim() + c.v_dim() + c.attn_out_dim() + 2 * c.n_ff;
    tokens * per_token as u64 + logit_rows * (c.n_embd + c.n_vocab) as u64
}

/// Working buffers on the CPU: the state, the host copy of the logits rows, the session's
/// last logits, and the matmul's activation scratch.
fn cpu_scratch_bytes(model: &ModelShape, options: &PlanOptions) -> Result<u64, CoreError> {
    let c = &model.config;
    let (tokens, logit_rows) = batch_sizes(options);
    let floats =
        state_floats(c, tokens, logit_rows) + logit_rows * c.n_vocab as u64 + c.n_vocab as u64;
    Ok(4 * floats + matmul_scratch_bytes(model, tokens, logit_rows)?)
}

/// The matmul scratch (`Vec<u64>` of activation blocks) after the first full batch: it is
/// resized to each larger product, its capacity growing like a `Vec`'s (to at least twice
/// the old one), through the products of every layer, then the output projection.
fn matmul_scratch_bytes(
    model: &ModelShape,
    tokens: u64,
    logit_rows: u64,
) -> Result<u64, CoreError> {
    const LAYER_PRODUCTS: [&str; 7] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let mut products = Vec::new();
    for il in 0..model.config.n_layer {
        for name in LAYER_PRODUCTS {
            if let Some(t) = model.tensor(&format!("blk.{il}.{name}.weight")) {
                products.push((t, tokens));
            }
        }
    }
    if let Some(out) = model
        .tensor("output.weight")
        .or_else(|| model.tensor("token_embd.weight"))
    {
        products.push((out, logit_rows));
    }
    let (mut len, mut capacity) = (0u64, 0u64);
    for (t, n) in products {
        let row_len = t.dims.first().copied().unwrap_or(0);
        let words = (n * activation_bytes(t.ty, row_len)?).div_ceil(8);
        if words > len {
            if words > capacity {
                capacity = words.max(2 * capacity).max(4);
            }
            len = words;
        }
    }
    Ok(8 * capacity)
}

/// Bytes of one row of `row_len` activations quantized for a weight of type `ty`.
fn activation_bytes(ty: GgmlType, row_len: u64) -> Result<u64, CoreError> {
    struct ActBytes(u64);
    impl BlockVisitor for ActBytes {
        type Output = u64;
        fn visit<B: QuantBlock>(self) -> u64 {
            self.0 / B::ELEMS as u64 * std::mem::size_of::<B::Act>() as u64
        }
    }
    Ok(quant::visit(ty, ActBytes(row_len))?)
}

/// Working buffers on a CUDA GPU: the state, the q8_1 activations of the widest product
/// (padded to 256 values, 1 byte plus an f32 pair per 32), the decode-attention splits,
/// and the allocator's slack ([`CUDA_POOL_SLACK_BYTES`]).
fn cuda_scratch_bytes(model: &ModelShape, options: &PlanOptions) -> u64 {
    let c = &model.config;
    let (tokens, logit_rows) = batch_sizes(options);
    let widest = [c.n_embd, c.attn_out_dim(), c.n_ff]
        .into_iter()
        .max()
        .unwrap_or(0);
    let q8 = tokens * widest.next_multiple_of(256) as u64 * 5 / 4;
    let mut decode_kinds: Vec<(usize, Option<usize>)> = c
        .layers
        .iter()
        .map(|l| match l.window {
            None => (options.ctx_len, None),
            Some(w) => (
                options.ctx_len.min(w.saturating_add(options.ring_margin)),
                Some(w),
            ),
        })
        .collect();
    decode_kinds.sort_unstable();
    decode_kinds.dedup();
    let decode: u64 = decode_kinds
        .iter()
        .map(|&(slots, window)| {
            // gemma_kernels::cuda::DecodeScratch::new
            let live = window.map_or(slots, |w| w.min(slots)).max(1);
            let splits = (8 * CUDA_SM_COUNT)
                .div_ceil(c.n_head_kv.max(1))
                .max(live.div_ceil(256))
                .min(live.div_ceil(32))
                .max(1);
            // Per head: the splits' value sums (or a one-run step's 256 scores) and {m, l}.
            let part_o = (splits * c.head_dim_v).max(256);
            (c.n_head * (part_o + 2 * splits) * 4) as u64
        })
        .sum();
    4 * state_floats(c, tokens, logit_rows) + q8 + decode + CUDA_POOL_SLACK_BYTES
}
