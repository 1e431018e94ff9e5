//! The CUDA backend: device buffers, weights uploaded to the GPU once in their GGUF blocks
//! (on first use), a KV cache in device memory (f16, f32 or Q8_0, as on the CPU), and the
//! kernels of
//! `gemma_kernels::cuda`. Products with quantized weights run on q8_1 activations (dp4a
//! for up to 8 tokens, int8 tensor cores above); norms, residuals and attention in f32.

use super::{AttentionJob, Backend, DeviceMemory, KvShape, QkNormRope};
use crate::attention::SlotMap;
use crate::config::Rope;
use crate::weights::{Norm, Weight};
use crate::CoreError;
use gemma_kernels::cuda::{
    self, ops, ActFormat, CudaDevice, CudaError, CudaSlice, DecodeScratch, DeviceMatrix, DevicePtr,
    Q8Activations,
};
use graph::{DecodeGraph, StepMode};
use std::collections::HashMap;
use std::ops::Range;

mod graph;
mod kv;
mod products;
mod row_ops;
mod step_timer;

pub use kv::CudaKvStore;
use kv::KvBuf;

/// Signature tags of the calls of a decode step (see [`graph`]).
mod tag {
    pub const EMBED: u64 = 1;
    pub const MATMUL: u64 = 2;
    pub const RMS_NORM: u64 = 3;
    pub const RMS_NORM_INPLACE: u64 = 4;
    pub const ROPE: u64 = 5;
    pub const SCALE: u64 = 6;
    pub const GEGLU: u64 = 7;
    pub const ADD: u64 = 8;
    pub const STORE_KV: u64 = 9;
    pub const ATTENTION: u64 = 10;
    pub const COPY_ROWS: u64 = 11;
    pub const QK_NORM_ROPE: u64 = 12;
    pub const RMS_NORM_ADD: u64 = 13;
    pub const MATMUL_MULTI: u64 = 14;
    pub const RMS_NORM_ADD_NORM: u64 = 15;
    pub const QK_NORM_ROPE_STORE: u64 = 16;
}

/// A CUDA error as a [`CoreError`] (the device name carries the message).
fn core_err(e: CudaError) -> CoreError {
    CoreError::DeviceUnavailable {
        device: format!("cuda ({e})"),
        reason: "a CUDA operation failed",
    }
}

/// Runs the model on one GPU with the bytes of the model file as the weight source.
pub struct CudaBackend<'m> {
    dev: CudaDevice,
    ordinal: usize,
    file: &'m [u8],
    /// Uploaded matrices and norm vectors, by their byte offset in the file.
    matrices: HashMap<usize, DeviceMatrix>,
    norms: HashMap<usize, CudaSlice<f32>>,
    /// Activation quantization buffer of the products (grown as needed), and which input
    /// (device address, rows, row length) it holds: Q, K, V (and gate, up) share one input,
    /// quantized once. Every other operation that writes a buffer forgets it.
    q8: Option<Q8Activations>,
    q8_of: Option<(u64, usize, usize, ActFormat)>,
    /// The activation format the last product with each input buffer took: the fused
    /// producers (norm, GeGLU) quantize their output in it.
    act_format_of: HashMap<u64, ActFormat>,
    /// Token ids of the last embedding.
    ids: Option<CudaSlice<i32>>,
    /// Positions pos0 .. pos0 + n of the current batch, and which (pos0, n) they hold.
    positions: Option<CudaSlice<i32>>,
    positions_for: (usize, usize),
    /// Decode-attention scratch per (slots, window).
    decode: HashMap<(usize, usize), DecodeScratch>,
    /// Bytes of the activation buffers and of the KV storage handed out (held by the
    /// engine for the whole session).
    buffer_bytes: usize,
    kv_bytes: usize,
    /// One-token steps captured as a CUDA graph and replayed (on unless `GEMMA_CUDA_GRAPH=0`).
    graph: DecodeGraph,
    /// Counts the buffer and KV allocations (a new session's): part of a step's signature.
    alloc_epoch: u64,
    /// GPU time per operation, with `GEMMA_CUDA_PROFILE=1`: printed to stderr when the
    /// backend is dropped; profiling runs every step eagerly (no decode graphs).
    profile: Option<cuda::profile::Profile>,
    /// Where replayed decode steps' time goes, with `GEMMA_CUDA_PROFILE=steps`.
    step_timer: Option<step_timer::StepTimer>,
    /// Round attention over an F16 cache as the CPU backend with llama.cpp's flash-attention
    /// numerics where they are the one-chunk kernel's (see [`Self::flash_attention`]).
    flash_attention: bool,
    /// The device memory of greedy picks ([`Backend::argmax`]).
    argmax: cuda::ArgmaxScratch,
}

impl<'m> CudaBackend<'m> {
    /// Opens CUDA device `ordinal` for a model whose GGUF bytes are `file`.
    pub fn new(file: &'m [u8], ordinal: usize) -> Result<CudaBackend<'m>, CoreError> {
        let dev = CudaDevice::new(ordinal).map_err(|e| CoreError::DeviceUnavailable {
            device: format!("cuda:{ordinal} ({e})"),
            reason: "see the message in parentheses",
        })?;
        let profile = cuda::profile::enabled_by_env().then(|| cuda::profile::Profile::new(&dev));
        let graphs = graph::enabled_by_env() && profile.is_none();
        let step_timer = step_timer::enabled_by_env().then(|| step_timer::StepTimer::new(&dev));
        let argmax = cuda::ArgmaxScratch::new(&dev).map_err(core_err)?;
        Ok(CudaBackend {
            dev,
            ordinal,
            file,
            matrices: HashMap::new(),
            norms: HashMap::new(),
            q8: None,
            q8_of: None,
            act_format_of: HashMap::new(),
            ids: None,
            positions: None,
            positions_for: (usize::MAX, 0),
            decode: HashMap::new(),
            buffer_bytes: 0,
            kv_bytes: 0,
            graph: DecodeGraph::new(graphs),
            alloc_epoch: 0,
            profile,
            step_timer,
            flash_attention: true,
            argmax,
        })
    }

    /// With `on` (the default), attention over an F16 cache rounds as the CPU backend's
    /// [`crate::backend::AttentionNumerics::FlashChunked`] wherever that backend uses it with
    /// `flash_attention(true)` and keeps its keys in one run: batches under 64 rows, and
    /// one-token steps at positions up to 256 (the CPU splits longer steps over its threads).
    /// Everything else sums in f32. `false` also for those (the CPU's `-fa off` rounding is
    /// not reproduced).
    pub fn flash_attention(mut self, on: bool) -> CudaBackend<'m> {
        self.flash_attention = on;
        self
    }

    /// Refuses, before anything is allocated, a session whose `needed` bytes (weights, KV
    /// cache and buffers: the memory planner's prediction) exceed the device's free memory.
    pub fn check_fits(&self, needed: u64) -> Result<(), CoreError> {
        let (free, total) = self.dev.mem_info().map_err(core_err)?;
        if needed > free as u64 {
            return Err(self.out_of_memory(
                "the weights, KV cache and buffers",
                needed,
                free,
                total,
            ));
        }
        Ok(())
    }

    fn out_of_memory(
        &self,
        what: &'static str,
        needed: u64,
        free: usize,
        total: usize,
    ) -> CoreError {
        CoreError::DeviceOutOfMemory {
            what,
            device: format!("cuda:{}", self.ordinal),
            needed,
            free: free as u64,
            total: total as u64,
        }
    }

    /// An allocation's error: [`CoreError::DeviceOutOfMemory`] when the driver ran out of
    /// memory (`what` of `bytes` bytes did not fit), else the CUDA error.
    fn alloc_err(&self, e: CudaError, what: &'static str, bytes: usize) -> CoreError {
        if !e.is_out_of_memory() {
            return core_err(e);
        }
        let (free, total) = self.dev.mem_info().unwrap_or((0, 0));
        self.out_of_memory(what, bytes as u64, free, total)
    }

    /// Turns decode-step graphs on or off (default: on unless `GEMMA_CUDA_GRAPH=0`); see
    /// the `graph` module. Ends a step in flight first.
    pub fn set_decode_graph(&mut self, enabled: bool) -> Result<(), CoreError> {
        self.end_step()?;
        self.graph = DecodeGraph::new(enabled);
        Ok(())
    }

    /// Ends a one-token step in flight (launches its graph) before a call outside steps.
    fn end_step(&mut self) -> Result<(), CoreError> {
        self.finish_step(false)
    }

    /// Times a call of operation `name` until the returned span drops (when profiling).
    fn span(&self, name: &'static str) -> Option<cuda::profile::Span> {
        self.profile.as_ref().map(|p| p.span(name))
    }

    /// [`Self::end_step`]; `read`: the step ends because a buffer (its logits) is read.
    fn finish_step(&mut self, read: bool) -> Result<(), CoreError> {
        let timed = match (self.graph.mode, self.step_timer.as_mut()) {
            (StepMode::Replaying, Some(t)) => t.launching(),
            _ => None,
        };
        let r = self.graph.flush(&self.dev, read);
        if let (Some((span, since)), Some(t)) = (timed, self.step_timer.as_mut()) {
            drop(span);
            t.launched(since);
        }
        if r.is_err() {
            self.graph.abort(&self.dev);
        }
        r
    }

    /// Inside a graph step: folds the call into the step's signature and returns whether
    /// the step is being replayed (then the call launches nothing).
    fn replaying(&mut self, tag: u64, args: &[u64]) -> bool {
        if self.graph.mode == StepMode::Idle {
            return false;
        }
        self.graph.note(tag, args);
        self.graph.mode == StepMode::Replaying
    }

    /// In a captured step: notes `pos` and returns true (the kernels then read the
    /// position from the step buffer, [`Self::step_pos`]).
    fn capturing_at(&mut self, pos: usize) -> Result<bool, CoreError> {
        if self.graph.mode != StepMode::Capturing {
            return Ok(false);
        }
        self.graph.note_pos(pos)?;
        Ok(true)
    }

    /// The device position buffer of graph steps.
    fn step_pos(&self) -> Result<cuda::CudaView<'_, i32>, CoreError> {
        let inputs = self.graph.inputs.as_ref().ok_or(CoreError::EmptyInput)?;
        Ok(inputs.pos.slice(0..1))
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Bytes of device memory held by the uploaded weights.
    pub fn weight_bytes(&self) -> usize {
        self.matrices
            .values()
            .map(DeviceMatrix::bytes)
            .sum::<usize>()
            + self.norms.values().map(|n| n.len() * 4).sum::<usize>()
    }

    /// Bytes of device memory held: uploaded weights, activation buffers, KV storage and
    /// scratch (the CUDA context itself and allocator slack not included).
    pub fn allocated_bytes(&self) -> usize {
        self.weight_bytes()
            + self.buffer_bytes
            + self.kv_bytes
            + self.q8.as_ref().map_or(0, Q8Activations::bytes)
            + self
                .decode
                .values()
                .map(DecodeScratch::bytes)
                .sum::<usize>()
            + self.ids.as_ref().map_or(0, |i| i.len() * 4)
            + self.positions.as_ref().map_or(0, |p| p.len() * 4)
    }

    fn bytes(&self, name: &str, range: &Range<usize>) -> Result<&'m [u8], CoreError> {
        self.file
            .get(range.clone())
            .ok_or_else(|| CoreError::MissingTensor {
                name: name.to_owned(),
            })
    }

    /// Uploads `w` on first use.
    fn upload_matrix(&mut self, w: &Weight) -> Result<(), CoreError> {
        if !self.matrices.contains_key(&w.bytes.start) {
            if !cuda::is_supported(w.ty) {
                return Err(CoreError::UnsupportedTensorType {
                    name: w.name.clone(),
                    ty: w.ty,
                });
            }
            let data = self.bytes(&w.name, &w.bytes)?;
            let m = DeviceMatrix::upload(&self.dev, w.ty, data, w.rows, w.cols)
                .map_err(|e| self.alloc_err(e, "the model's weights", data.len()))?;
            self.matrices.insert(w.bytes.start, m);
        }
        Ok(())
    }

    fn norm(&mut self, n: &Norm) -> Result<&CudaSlice<f32>, CoreError> {
        if !self.norms.contains_key(&n.bytes.start) {
            let raw = self.bytes(&n.name, &n.bytes)?;
            let values: &[f32] =
                bytemuck::try_cast_slice(raw).map_err(|_| CoreError::MisalignedTensor {
                    name: n.name.clone(),
                })?;
            let d = cuda::upload(&self.dev, values)
                .map_err(|e| self.alloc_err(e, "the model's weights", raw.len()))?;
            self.norms.insert(n.bytes.start, d);
        }
        self.norms
            .get(&n.bytes.start)
            .ok_or_else(|| CoreError::MissingTensor {
                name: n.name.clone(),
            })
    }

    /// Device positions pos0 .. pos0 + n at least (re-uploaded only when they change).
    fn positions(&mut self, pos0: usize, n: usize) -> Result<&CudaSlice<i32>, CoreError> {
        let (have0, have_n) = self.positions_for;
        if have0 != pos0 || have_n < n {
            let host: Vec<i32> = (pos0..pos0 + n)
                .map(|p| i32::try_from(p).unwrap_or(i32::MAX))
                .collect();
            if let Some(buf) = self.positions.as_mut().filter(|p| p.len() >= n) {
                self.dev
                    .stream()
                    .memcpy_htod(&host, buf)
                    .map_err(|e| core_err(e.into()))?;
            } else {
                self.positions = Some(cuda::upload(&self.dev, &host).map_err(core_err)?);
            }
            self.positions_for = (pos0, n);
        }
        self.positions.as_ref().ok_or(CoreError::EmptyInput)
    }
}

/// The device address of a buffer.
fn device_addr(dev: &CudaDevice, buf: &CudaSlice<f32>) -> u64 {
    let (addr, _sync) = buf.device_ptr(dev.stream());
    addr
}

impl Backend for CudaBackend<'_> {
    type Buffer = CudaSlice<f32>;
    type KvStore = CudaKvStore;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn alloc(&mut self, len: usize) -> Result<CudaSlice<f32>, CoreError> {
        self.end_step()?;
        self.alloc_epoch += 1;
        let buf = cuda::zeros::<f32>(&self.dev, len)
            .map_err(|e| self.alloc_err(e, "the working buffers", len * 4))?;
        self.buffer_bytes += len * 4;
        Ok(buf)
    }

    fn alloc_kv(&mut self, shape: KvShape) -> Result<CudaKvStore, CoreError> {
        self.end_step()?;
        self.alloc_epoch += 1;
        let heads = shape.heads;
        if heads.head_dim_k != heads.head_dim_v {
            return Err(CoreError::DeviceUnavailable {
                device: "cuda".into(),
                reason: "the CUDA backend needs equal key and value head sizes",
            });
        }
        let len = shape.slots * heads.n_head_kv * heads.head_dim_k;
        if !len.is_multiple_of(shape.kv_type.block_elems()) {
            return Err(CoreError::DeviceUnavailable {
                device: format!("cuda (with a {} KV cache)", shape.kv_type.name()),
                reason: "the KV row width is not a whole number of blocks",
            });
        }
        let oom = |e| self.alloc_err(e, "the KV cache", shape.kv_type.row_bytes(len));
        let k = KvBuf::zeroed(&self.dev, shape.kv_type, len).map_err(oom)?;
        let v = KvBuf::zeroed(&self.dev, shape.kv_type, len).map_err(oom)?;
        let store = CudaKvStore { shape, k, v };
        self.kv_bytes += store.bytes();
        Ok(store)
    }

    fn embed(
        &mut self,
        table: &Weight,
        tokens: &[u32],
        scale: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let _span = self.span("embed");
        self.end_step()?;
        self.q8_of = None;
        let mut ids = Vec::with_capacity(tokens.len());
        for &token in tokens {
            if token as usize >= table.rows {
                return Err(CoreError::TokenOutOfRange {
                    token,
                    n_vocab: table.rows,
                });
            }
            ids.push(token as i32);
        }
        self.upload_matrix(table)?;
        if self.graph.enabled && tokens.len() == 1 {
            // The allocation epoch tells a new session's steps (new buffers) from the
            // captured one's at this first call, before anything is skipped.
            let args = [
                table.bytes.start as u64,
                u64::from(scale.to_bits()),
                device_addr(&self.dev, out),
                self.alloc_epoch,
            ];
            let mode = self
                .graph
                .begin_step(&self.dev, tokens[0], tag::EMBED, &args)?;
            if let Some(t) = self.step_timer.as_mut() {
                t.embed(mode == StepMode::Replaying);
            }
            if self.replaying(tag::EMBED, &args) {
                return Ok(());
            }
            if mode == StepMode::Capturing {
                let inputs = self.graph.inputs.as_ref().ok_or(CoreError::EmptyInput)?;
                let m = &self.matrices[&table.bytes.start];
                return ops::get_rows(&self.dev, m, &inputs.ids, 1, scale, out).map_err(core_err);
            }
        }
        if let Some(t) = self.step_timer.as_mut() {
            t.embed(false);
        }
        let ids_d = cuda::upload(&self.dev, &ids).map_err(core_err)?;
        let m = &self.matrices[&table.bytes.start];
        ops::get_rows(&self.dev, m, &ids_d, ids.len(), scale, out).map_err(core_err)?;
        self.ids = Some(ids_d); // kept until the next embedding (frees are stream-ordered anyway)
        Ok(())
    }

    fn matmul(
        &mut self,
        w: &Weight,
        x: &CudaSlice<f32>,
        n: usize,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        self.product(w, x, n, y)
    }

    fn matmul_many(
        &mut self,
        ws: &[&Weight],
        x: &CudaSlice<f32>,
        n: usize,
        ys: &mut [&mut CudaSlice<f32>],
    ) -> Result<(), CoreError> {
        self.products(ws, x, n, ys)
    }

    fn rms_norm(
        &mut self,
        x: &CudaSlice<f32>,
        first: usize,
        rows: usize,
        w: &Norm,
        eps: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        self.norm_rows(x, first, rows, w, eps, out)
    }

    fn rms_norm_inplace(
        &mut self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        w: &Norm,
        eps: f32,
    ) -> Result<(), CoreError> {
        self.norm_rows_inplace(x, rows, w, eps)
    }

    fn rope(
        &mut self,
        x: &mut CudaSlice<f32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: Rope,
    ) -> Result<(), CoreError> {
        self.rotate(x, n_tokens, n_heads, head_dim, pos0, rope)
    }

    fn scale(&mut self, x: &mut CudaSlice<f32>, len: usize, s: f32) -> Result<(), CoreError> {
        self.scale_values(x, len, s)
    }

    fn geglu(
        &mut self,
        gate: &mut CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
    ) -> Result<(), CoreError> {
        self.gated_gelu(gate, up, len)
    }

    fn add(
        &mut self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        len: usize,
    ) -> Result<(), CoreError> {
        self.add_values(x, y, len)
    }

    fn qk_norm_rope(
        &mut self,
        q: &mut CudaSlice<f32>,
        k: &mut CudaSlice<f32>,
        n_tokens: usize,
        p: &QkNormRope,
    ) -> Result<(), CoreError> {
        self.norm_rope_heads(q, k, n_tokens, p)
    }

    fn rms_norm_add(
        &mut self,
        o: &mut CudaSlice<f32>,
        rows: usize,
        w: &Norm,
        eps: f32,
        x: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        self.post_norm_add(o, rows, w, eps, x)
    }

    fn rms_norm_add_norm(
        &mut self,
        o: &mut CudaSlice<f32>,
        rows: usize,
        w: &Norm,
        x: &mut CudaSlice<f32>,
        next: &Norm,
        eps: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let norms = row_ops::NormPair { post: w, next };
        self.post_norm_add_norm(o, rows, &norms, x, eps, out)
    }

    fn qk_norm_rope_store(
        &mut self,
        q: &mut CudaSlice<f32>,
        k: &mut CudaSlice<f32>,
        v: &CudaSlice<f32>,
        n_tokens: usize,
        p: &QkNormRope,
        store: &mut CudaKvStore,
        slot_map: SlotMap,
    ) -> Result<(), CoreError> {
        self.norm_rope_store(q, k, v, n_tokens, p, store, slot_map)
    }

    fn store_kv(
        &mut self,
        store: &mut CudaKvStore,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        rows: Range<usize>,
        pos0: usize,
        slot_map: SlotMap,
    ) -> Result<(), CoreError> {
        self.store_kv_rows(store, k, v, rows, pos0, slot_map)
    }

    fn attention(
        &mut self,
        q: &CudaSlice<f32>,
        store: &CudaKvStore,
        job: &AttentionJob,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        self.attend(q, store, job, out)
    }

    fn copy_rows(
        &mut self,
        buf: &mut CudaSlice<f32>,
        from: usize,
        rows: usize,
        width: usize,
    ) -> Result<bool, CoreError> {
        let _span = self.span("copy_rows");
        let args = [
            device_addr(&self.dev, buf),
            from as u64,
            rows as u64,
            width as u64,
        ];
        if self.replaying(tag::COPY_ROWS, &args) {
            return Ok(true);
        }
        self.q8_of = None;
        if (from + rows) * width > buf.len() {
            return Err(core_err(CudaError::Shape {
                what: "copy_rows source rows",
                needed: (from + rows) * width,
                actual: buf.len(),
            }));
        }
        if from == 0 || rows == 0 {
            return Ok(true);
        }
        // Forward in chunks of at most `from` rows: each chunk's destination ends where its
        // source begins, and it only overwrites rows that earlier chunks already read (the
        // copies are ordered on the one stream), so overlapping moves are exact.
        let mut done = 0;
        while done < rows {
            let n = (rows - done).min(from);
            let (mut head, tail) = buf.split_at_mut((from + done) * width);
            let src = tail.slice(..n * width);
            let mut dst = head.slice_mut(done * width..(done + n) * width);
            self.dev
                .stream()
                .memcpy_dtod(&src, &mut dst)
                .map_err(|e| core_err(e.into()))?;
            done += n;
        }
        Ok(true)
    }

    fn supports_images(&self) -> bool {
        true
    }

    fn load_rows(&mut self, rows: &[f32], out: &mut CudaSlice<f32>) -> Result<(), CoreError> {
        self.end_step()?;
        self.q8_of = None;
        if rows.len() > out.len() {
            return Err(core_err(CudaError::Shape {
                what: "image embedding rows",
                needed: rows.len(),
                actual: out.len(),
            }));
        }
        let mut dst = out.slice_mut(..rows.len());
        self.dev
            .stream()
            .memcpy_htod(rows, &mut dst)
            .map_err(|e| core_err(e.into()))
    }

    fn tracing(&mut self) -> Result<(), CoreError> {
        // A traced step reads buffers mid-step and runs unfused: no graphs from here on.
        self.set_decode_graph(false)
    }

    fn device_memory(&self) -> Option<DeviceMemory> {
        let (free, total) = self.dev.mem_info().ok()?;
        Some(DeviceMemory {
            allocated: self.allocated_bytes() as u64,
            device_used: total.saturating_sub(free) as u64,
            device_total: total as u64,
        })
    }

    fn read(
        &mut self,
        buf: &CudaSlice<f32>,
        range: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), CoreError> {
        self.finish_step(true)?;
        let started = std::time::Instant::now();
        if out.len() != range.len() || range.end > buf.len() {
            return Err(core_err(CudaError::Shape {
                what: "read range",
                needed: range.len(),
                actual: out.len(),
            }));
        }
        let view = buf.slice(range);
        self.dev
            .stream()
            .memcpy_dtoh(&view, out)
            .map_err(|e| core_err(e.into()))?;
        self.finish_read(started)
    }

    /// The pick runs after the step's graph (the same graph whether the step's logits are
    /// read or picked from), as two eager launches; then only the index is read.
    fn argmax(&mut self, buf: &CudaSlice<f32>, len: usize) -> Result<u32, CoreError> {
        self.finish_step(true)?;
        let started = std::time::Instant::now();
        {
            let _span = self.span("argmax");
            cuda::argmax(&self.dev, buf, len, &mut self.argmax).map_err(core_err)?;
        }
        let mut index = [0i32];
        self.dev
            .stream()
            .memcpy_dtoh(self.argmax.index(), &mut index)
            .map_err(|e| core_err(e.into()))?;
        self.finish_read(started)?;
        // argmax_final writes an index below `len`.
        Ok(index[0] as u32)
    }
}

impl CudaBackend<'_> {
    /// Waits for a read that began at `started` (the end of a step when it reads the
    /// step's result) and collects the profiles.
    fn finish_read(&mut self, started: std::time::Instant) -> Result<(), CoreError> {
        self.dev.synchronize().map_err(core_err)?;
        if let Some(p) = self.profile.as_mut() {
            p.collect();
        }
        if let Some(t) = self.step_timer.as_mut() {
            t.read(started.elapsed());
            t.collect();
        }
        Ok(())
    }
}

impl Drop for CudaBackend<'_> {
    /// Prints the profile (`GEMMA_CUDA_PROFILE=1`) or the step times (`=steps`) once the
    /// stream has finished.
    fn drop(&mut self) {
        if let Some(p) = self.profile.as_mut() {
            if self.dev.synchronize().is_ok() {
                p.collect();
            }
            eprint!("{}", p.report());
        }
        if let Some(t) = self.step_timer.as_mut() {
            if self.dev.synchronize().is_ok() {
                t.collect();
            }
            eprint!("{}", t.report());
        }
    }
}

#[cfg(test)]
mod tests;
