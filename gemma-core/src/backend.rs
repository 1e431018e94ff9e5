//! The interface between the forward pass and the hardware.
//!
//! The forward pass (`forward.rs`) is written once over [`Backend`]; a backend owns its buffers
//! (host vectors on the CPU, device memory on a GPU) and the storage of each layer's
//! KV cache, and reads the weights through the [`Weight`]/[`Norm`] records of the file.
//! Every buffer is allocated once per session at its largest size; the operations take
//! the number of rows or values to use.

pub mod cpu;
pub mod cuda;

use crate::attention::{visible_keys, SlotMap};
use crate::config::Rope;
use crate::kv_cache::KvType;
use crate::weights::{Norm, Weight};
use crate::CoreError;
use std::ops::Range;

/// The attention geometry of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Dimension of query and key heads.
    pub head_dim_k: usize,
    /// Dimension of value heads.
    pub head_dim_v: usize,
}

impl HeadShape {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.n_head / self.n_head_kv
    }
}

/// What one layer's KV storage holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    /// Number of slots (positions it can hold at once).
    pub slots: usize,
    /// Head geometry.
    pub heads: HeadShape,
    /// Element type.
    pub kv_type: KvType,
}

/// One attention call: the queries of batch rows `rows` attend to the keys of the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionJob {
    /// Batch rows (tokens) whose queries to process; their keys are already stored.
    pub rows: Range<usize>,
    /// Position of batch row 0.
    pub pos0: usize,
    /// The layer's sliding window, `None` for a global layer.
    pub window: Option<usize>,
    /// How positions map to the layer's slots.
    pub slot_map: SlotMap,
    /// Head geometry.
    pub heads: HeadShape,
    /// Positions of an image whose tokens see each other (bidirectional attention inside
    /// the span, causal elsewhere: see [`AttentionJob::visible_keys`]); `None` for text.
    pub image: Option<Range<usize>>,
    /// Rows of the whole batch this job is part of (llama.cpp's flash attention picks
    /// its kernel, and so its rounding, by it: see [`AttentionNumerics::for_batch`]).
    pub batch_rows: usize,
}

/// The rounding of attention's intermediate values, after the CPU kernels of llama.cpp,
/// which has two algorithms (flash attention on, its default, or off) and, with flash
/// attention, two kernels chosen by the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionNumerics {
    /// Flash attention off: all scores, then the softmax; with an F16 cache the query is
    /// rounded to F16 for `Q·K` and the probabilities to F16 for `P·V`.
    Standard,
    /// Flash attention on a batch of at least [`FLASH_TILED_MIN_ROWS`] rows with an F16
    /// or F32 cache (ggml's tiled kernel): the keys and values widened to f32, the
    /// query, probabilities and sums in f32.
    FlashTiled,
    /// Flash attention otherwise (ggml's one-chunk kernel): an online softmax over the
    /// keys in position order, the query in the keys' dot-product type and, with an F16
    /// cache, the weighted sum of values kept in F16 after every key. A one-token step
    /// over at least [`FLASH_SPLIT_MIN_CELLS`] cache cells splits the keys into one run
    /// per thread and merges the runs.
    FlashChunked,
}

/// Batch rows from which llama.cpp's flash attention takes its tiled kernel.
pub const FLASH_TILED_MIN_ROWS: usize = 64;

/// Cache cells (positions rounded up to [`FLASH_CELL_PADDING`]) from which a one-token
/// flash-attention step splits its keys over the threads.
pub const FLASH_SPLIT_MIN_CELLS: usize = 512;

/// llama.cpp pads the cache cells it attends over to a multiple of this with flash attention.
pub const FLASH_CELL_PADDING: usize = 256;

impl AttentionNumerics {
    /// The rounding llama.cpp uses for a batch of `rows` tokens with a `kv_type` cache,
    /// with or without flash attention.
    pub fn for_batch(flash: bool, rows: usize, kv_type: KvType) -> AttentionNumerics {
        let widened = matches!(kv_type, KvType::F16 | KvType::F32);
        match flash {
            false => AttentionNumerics::Standard,
            true if widened && rows >= FLASH_TILED_MIN_ROWS => AttentionNumerics::FlashTiled,
            true => AttentionNumerics::FlashChunked,
        }
    }
}

impl AttentionJob {
    /// Key positions the query at `pos` attends to: [`visible_keys`], extended to the end of
    /// the job's image when `pos` is one of its tokens.
    pub fn visible_keys(&self, pos: usize) -> Range<usize> {
        let keys = visible_keys(pos, self.window);
        match &self.image {
            Some(image) if image.contains(&pos) => keys.start..keys.end.max(image.end),
            _ => keys,
        }
    }
}

/// The arguments of [`Backend::qk_norm_rope`] besides the buffers.
#[derive(Clone, Copy, Debug)]
pub struct QkNormRope<'a> {
    /// Head geometry (query and key heads, head size).
    pub heads: HeadShape,
    /// The per-head norm of the queries and of the keys.
    pub q_norm: &'a Norm,
    /// See `q_norm`.
    pub k_norm: &'a Norm,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Position of row 0.
    pub pos0: usize,
    /// The layer's RoPE base and scaling.
    pub rope: Rope,
    /// Factor of the queries after RoPE.
    pub q_scale: f32,
}

/// Device memory of a GPU backend, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Held by the backend: the weights uploaded so far (all of them after the first
    /// run), the KV cache, activation buffers and scratch.
    pub allocated: u64,
    /// In use on the whole device now (total minus free), other processes included.
    pub device_used: u64,
    /// The device's memory.
    pub device_total: u64,
}

/// The operations of the forward pass. Rows are tokens; a buffer holds `rows × width`
/// f32 values row-major.
pub trait Backend: Send {
    /// A buffer of f32 activations.
    type Buffer: Send;
    /// One layer's keys and values.
    type KvStore: Send;

    /// Short name ("cpu").
    fn name(&self) -> &'static str;

    /// A zeroed buffer of `len` values.
    fn alloc(&mut self, len: usize) -> Result<Self::Buffer, CoreError>;

    /// Empty (zeroed) KV storage for one layer.
    fn alloc_kv(&mut self, shape: KvShape) -> Result<Self::KvStore, CoreError>;

    /// `out[t] = table[tokens[t]] * scale` (the embedding lookup, dequantized).
    fn embed(
        &mut self,
        table: &Weight,
        tokens: &[u32],
        scale: f32,
        out: &mut Self::Buffer,
    ) -> Result<(), CoreError>;

    /// `y[t] = W · x[t]` for `n` rows; `y` is `n × w.rows`.
    fn matmul(
        &mut self,
        w: &Weight,
        x: &Self::Buffer,
        n: usize,
        y: &mut Self::Buffer,
    ) -> Result<(), CoreError>;

    /// `out[r] = rms_norm(x[first + r]) * w` for `rows` rows of `w.len` values.
    fn rms_norm(
        &mut self,
        x: &Self::Buffer,
        first: usize,
        rows: usize,
        w: &Norm,
        eps: f32,
        out: &mut Self::Buffer,
    ) -> Result<(), CoreError>;

    /// [`Backend::rms_norm`] in place over `rows` rows of `w.len` values (the per-head QK-norm).
    fn rms_norm_inplace(
        &mut self,
        x: &mut Self::Buffer,
        rows: usize,
        w: &Norm,
        eps: f32,
    ) -> Result<(), CoreError>;

    /// NEOX RoPE over `n_tokens` rows of `n_heads` heads, row `t` at position `pos0 + t`.
    fn rope(
        &mut self,
        x: &mut Self::Buffer,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: Rope,
    ) -> Result<(), CoreError>;

    /// `x[i] *= s` for the first `len` values.
    fn scale(&mut self, x: &mut Self::Buffer, len: usize, s: f32) -> Result<(), CoreError>;

    /// `gate[i] = gelu_tanh(gate[i]) * up[i]` for the first `len` values.
    fn geglu(
        &mut self,
        gate: &mut Self::Buffer,
        up: &Self::Buffer,
        len: usize,
    ) -> Result<(), CoreError>;

    /// `x[i] += y[i]` for the first `len` values.
    fn add(&mut self, x: &mut Self::Buffer, y: &Self::Buffer, len: usize) -> Result<(), CoreError>;

    /// Products of several weights with one input (Q, K and V; gate and up):
    /// `ys[i] = x W_i^T`, as [`Backend::matmul`] each (the default); a backend may run them
    /// together (same values).
    fn matmul_many(
        &mut self,
        ws: &[&Weight],
        x: &Self::Buffer,
        n: usize,
        ys: &mut [&mut Self::Buffer],
    ) -> Result<(), CoreError> {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            self.matmul(w, x, n, y)?;
        }
        Ok(())
    }

    /// One layer's QK-norm, RoPE and query scale: [`Backend::rms_norm_inplace`] over every
    /// query and key head, [`Backend::rope`] on both, then [`Backend::scale`] of the
    /// queries. The default makes exactly those calls; a backend may fuse them (same values).
    fn qk_norm_rope(
        &mut self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        n_tokens: usize,
        p: &QkNormRope,
    ) -> Result<(), CoreError> {
        let h = p.heads;
        self.rms_norm_inplace(q, n_tokens * h.n_head, p.q_norm, p.eps)?;
        self.rms_norm_inplace(k, n_tokens * h.n_head_kv, p.k_norm, p.eps)?;
        self.rope(q, n_tokens, h.n_head, h.head_dim_k, p.pos0, p.rope)?;
        self.rope(k, n_tokens, h.n_head_kv, h.head_dim_k, p.pos0, p.rope)?;
        self.scale(q, n_tokens * h.n_head * h.head_dim_k, p.q_scale)
    }

    /// [`Backend::qk_norm_rope`] of `n_tokens` rows, then [`Backend::store_kv`] of all of
    /// them (the keys after the norm and RoPE, and `v`) at `p.pos0`. The default makes those
    /// two calls; a backend may fuse them (same values).
    #[allow(clippy::too_many_arguments)] // both calls' arguments
    fn qk_norm_rope_store(
        &mut self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        v: &Self::Buffer,
        n_tokens: usize,
        p: &QkNormRope,
        store: &mut Self::KvStore,
        slot_map: SlotMap,
    ) -> Result<(), CoreError> {
        self.qk_norm_rope(q, k, n_tokens, p)?;
        self.store_kv(store, k, v, 0..n_tokens, p.pos0, slot_map)
    }

    /// A post-norm and its residual: `o = rms_norm(o) * w` over `rows` rows, then
    /// `x += o`. The default makes those two calls; a backend may fuse them (same values).
    fn rms_norm_add(
        &mut self,
        o: &mut Self::Buffer,
        rows: usize,
        w: &Norm,
        eps: f32,
        x: &mut Self::Buffer,
    ) -> Result<(), CoreError> {
        self.rms_norm_inplace(o, rows, w, eps)?;
        self.add(x, o, rows * w.len)
    }

    /// A post-norm, its residual and the next pre-norm: [`Backend::rms_norm_add`] of `o`
    /// into `x` with `w`, then `out = rms_norm(x) * next` over the same `rows` rows. The
    /// default makes those two calls; a backend may fuse them (same values).
    #[allow(clippy::too_many_arguments)] // both norms' arguments
    fn rms_norm_add_norm(
        &mut self,
        o: &mut Self::Buffer,
        rows: usize,
        w: &Norm,
        x: &mut Self::Buffer,
        next: &Norm,
        eps: f32,
        out: &mut Self::Buffer,
    ) -> Result<(), CoreError> {
        self.rms_norm_add(o, rows, w, eps, x)?;
        self.rms_norm(x, 0, rows, next, eps, out)
    }

    /// Stores the keys and values of batch rows `rows` (row `t` is position `pos0 + t`)
    /// into their slots.
    fn store_kv(
        &mut self,
        store: &mut Self::KvStore,
        k: &Self::Buffer,
        v: &Self::Buffer,
        rows: Range<usize>,
        pos0: usize,
        slot_map: SlotMap,
    ) -> Result<(), CoreError>;

    /// Softmax attention of the queries `q` (already scaled) over the visible keys in
    /// `store`; writes `out[t] = concat over heads of Σ p·v` for `t` in `job.rows`.
    fn attention(
        &mut self,
        q: &Self::Buffer,
        store: &Self::KvStore,
        job: &AttentionJob,
        out: &mut Self::Buffer,
    ) -> Result<(), CoreError>;

    /// Moves rows `from .. from + rows` (of `width` values) to rows `0 .. rows` and
    /// returns true; a backend without this returns false (the default), and the
    /// forward pass then runs every row through the last layer.
    fn copy_rows(
        &mut self,
        _buf: &mut Self::Buffer,
        _from: usize,
        _rows: usize,
        _width: usize,
    ) -> Result<bool, CoreError> {
        Ok(false)
    }

    /// Told before a forward pass that records a trace: its buffers are read mid-pass and
    /// its steps run unfused, so a backend that replays recorded steps stops doing so.
    /// Nothing by default.
    fn tracing(&mut self) -> Result<(), CoreError> {
        Ok(())
    }

    /// The device memory this backend holds; `None` for a backend on host memory (the default).
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }

    /// Whether the backend runs images: [`Backend::load_rows`] works and
    /// [`Backend::attention`] honours [`AttentionJob::image`]. False by default.
    fn supports_images(&self) -> bool {
        false
    }

    /// Copies `rows` (host values, e.g. image embeddings) into the front of `out`. The
    /// default (a backend without images) fails with [`CoreError::DeviceUnavailable`].
    fn load_rows(&mut self, rows: &[f32], out: &mut Self::Buffer) -> Result<(), CoreError> {
        let _ = (rows, out);
        Err(CoreError::DeviceUnavailable {
            device: self.name().to_owned(),
            reason: "this backend cannot run image embeddings",
        })
    }

    /// Copies `range` of `buf` to the host.
    fn read(
        &mut self,
        buf: &Self::Buffer,
        range: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), CoreError>;

    /// The index of the highest of the first `len` values of `buf` by
    /// [`crate::sampling::argmax`]'s rule (the first one on ties, NaN never wins, 0 when no
    /// value is above -inf): a greedy pick that reads back one index instead of the values.
    fn argmax(&mut self, buf: &Self::Buffer, len: usize) -> Result<u32, CoreError>;
}
