//! The CUDA backend: device buffers, weights uploaded to the GPU once in their GGUF blocks
//! (on first use), a KV cache in device memory (f16, f32 or Q8_0, as on the CPU), and the
//! kernels of
//! `gemma_kernels::cuda`. Products with quantized weights run on q8_1 activations (dp4a
//! for up to 8 tokens, int8 tensor cores above); norms, residuals and attention in f32.

use super::{AttentionJob, Backend, DeviceMemory, KvShape, QkNormRope};
use crate::attention::SlotMap;
use crate::config::Rope;
use crate::kv_cache::KvType;
use crate::weights::{Norm, Weight};
use crate::CoreError;
use gemma_kernels::cuda::{
    self, launch, ops, ActFormat, AttnShape, CudaDevice, CudaError, CudaSlice, DecodeScratch,
    DeviceMatrix, DevicePtr, KvElem, KvKind, Q8Activations,
};
use graph::{DecodeGraph, StepMode};
use std::collections::HashMap;
use std::ops::Range;

mod graph;

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
}

/// A CUDA error as a [`CoreError`] (the device name carries the message).
fn core_err(e: CudaError) -> CoreError {
    CoreError::DeviceUnavailable {
        device: format!("cuda ({e})"),
        reason: "a CUDA operation failed",
    }
}

/// One layer's keys or values on the device: `slots x n_head_kv x head_dim` values.
enum KvBuf {
    /// f16 bits.
    F16(CudaSlice<u16>),
    /// f32 values.
    F32(CudaSlice<f32>),
    /// Q8_0 blocks (34 bytes per 32 values), quantized like the CPU cache.
    Q8_0(CudaSlice<u8>),
}

impl KvBuf {
    fn zeroed(dev: &CudaDevice, kv_type: KvType, values: usize) -> Result<KvBuf, CudaError> {
        Ok(match kv_type {
            KvType::F16 => KvBuf::F16(cuda::zeros(dev, KvKind::F16.buffer_len(values))?),
            KvType::F32 => KvBuf::F32(cuda::zeros(dev, KvKind::F32.buffer_len(values))?),
            KvType::Q8_0 => KvBuf::Q8_0(cuda::zeros(dev, KvKind::Q8_0.buffer_len(values))?),
        })
    }

    fn bytes(&self) -> usize {
        match self {
            KvBuf::F16(b) => b.len() * 2,
            KvBuf::F32(b) => b.len() * 4,
            KvBuf::Q8_0(b) => b.len(),
        }
    }
}

/// One layer's keys and values on the device.
pub struct CudaKvStore {
    shape: KvShape,
    k: KvBuf,
    v: KvBuf,
}

impl CudaKvStore {
    /// Bytes of device memory held.
    pub fn bytes(&self) -> usize {
        self.k.bytes() + self.v.bytes()
    }
}

/// Runs `$body` with `$k` / `$v` bound to the typed buffers of a store's K and V (both
/// always have the same type).
macro_rules! with_kv {
    ($store:expr, |$k:ident, $v:ident| $body:expr) => {
        match (&$store.k, &$store.v) {
            (KvBuf::F16($k), KvBuf::F16($v)) => $body,
            (KvBuf::F32($k), KvBuf::F32($v)) => $body,
            (KvBuf::Q8_0($k), KvBuf::Q8_0($v)) => $body,
            _ => Err(CoreError::DeviceUnavailable {
                device: "cuda".into(),
                reason: "a KV store's keys and values differ in type",
            }),
        }
    };
}

/// Runs the model on one GPU with the bytes of the model file as the weight source.
pub struct CudaBackend<'m> {
    dev: CudaDevice,
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
        Ok(CudaBackend {
            dev,
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
        })
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
        let r = self.graph.flush(&self.dev, read);
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
            let m =
                DeviceMatrix::upload(&self.dev, w.ty, data, w.rows, w.cols).map_err(core_err)?;
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
            let d = cuda::upload(&self.dev, values).map_err(core_err)?;
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

    /// The q8_1 buffer, large enough for n rows of k values.
    fn q8(&mut self, k: usize, n: usize) -> Result<&mut Q8Activations, CoreError> {
        let big_enough = self
            .q8
            .as_ref()
            .is_some_and(|q| q.capacity() >= cuda::padded_len(k) * n);
        if !big_enough {
            self.q8 = Some(Q8Activations::new(&self.dev, k, n).map_err(core_err)?);
        }
        self.q8.as_mut().ok_or(CoreError::EmptyInput)
    }
}

/// The device address of a store's keys (identifies the layer in step signatures).
fn store_addr(dev: &CudaDevice, store: &CudaKvStore) -> u64 {
    let (addr, _sync) = match &store.k {
        KvBuf::F16(b) => b.device_ptr(dev.stream()),
        KvBuf::F32(b) => b.device_ptr(dev.stream()),
        KvBuf::Q8_0(b) => b.device_ptr(dev.stream()),
    };
    addr
}

/// Decode attention over a cache of any element type.
#[allow(clippy::too_many_arguments)] // forwards attention_decode's arguments
fn decode<E: KvElem>(
    dev: &CudaDevice,
    q: &cuda::CudaView<f32>,
    k: &CudaSlice<E>,
    v: &CudaSlice<E>,
    pos: &cuda::CudaView<i32>,
    shape: &AttnShape,
    scratch: &mut DecodeScratch,
    out: &mut cuda::CudaViewMut<f32>,
) -> Result<(), CoreError> {
    cuda::attention_decode(dev, q, k, v, pos, shape, scratch, out).map_err(core_err)
}

/// The device address of a buffer.
fn device_addr(dev: &CudaDevice, buf: &CudaSlice<f32>) -> u64 {
    let (addr, _sync) = buf.device_ptr(dev.stream());
    addr
}

fn n_slots(map: SlotMap, store: &CudaKvStore) -> usize {
    match map {
        SlotMap::Linear => store.shape.slots,
        SlotMap::Ring { slots } => slots,
    }
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
        let buf = cuda::zeros::<f32>(&self.dev, len).map_err(core_err)?;
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
        let k = KvBuf::zeroed(&self.dev, shape.kv_type, len).map_err(core_err)?;
        let v = KvBuf::zeroed(&self.dev, shape.kv_type, len).map_err(core_err)?;
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
            if self.replaying(tag::EMBED, &args) {
                return Ok(());
            }
            if mode == StepMode::Capturing {
                let inputs = self.graph.inputs.as_ref().ok_or(CoreError::EmptyInput)?;
                let m = &self.matrices[&table.bytes.start];
                return ops::get_rows(&self.dev, m, &inputs.ids, 1, scale, out).map_err(core_err);
            }
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
        let _span = self.span(if n <= launch::MMVQ_MAX_TOKENS {
            "matmul (mmvq)"
        } else {
            "matmul (mmq)"
        });
        let args = [
            w.bytes.start as u64,
            device_addr(&self.dev, x),
            n as u64,
            device_addr(&self.dev, y),
        ];
        if self.replaying(tag::MATMUL, &args) {
            return Ok(());
        }
        self.upload_matrix(w)?;
        if !launch::uses_q8_activations(w.ty) {
            self.q8_of = None;
            let m = &self.matrices[&w.bytes.start];
            return launch::matmul_float(&self.dev, m, x, n, y).map_err(core_err);
        }
        let format = ActFormat::for_weights(w.ty);
        let key = (device_addr(&self.dev, x), n, w.cols, format);
        self.act_format_of.insert(key.0, format);
        if n > 1 && self.q8_of == Some((key.0, 1, n * w.cols, format)) {
            // Quantized as one row by geglu: the same bytes as n rows when cols % 256 == 0.
            let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
            if q8.split_rows(n, w.cols).is_ok() {
                self.q8_of = Some(key);
            }
        }
        if self.q8_of != Some(key) {
            self.q8(w.cols, n)?;
            let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
            launch::quantize_q8_1(&self.dev, x, n, w.cols, format, q8).map_err(core_err)?;
            self.q8_of = Some(key);
        }
        let (dev, m) = (&self.dev, &self.matrices[&w.bytes.start]);
        let q8 = self.q8.as_ref().ok_or(CoreError::EmptyInput)?;
        launch::matmul_q8(dev, m, q8, n, y).map_err(core_err)?;
        if device_addr(&self.dev, y) == key.0 {
            self.q8_of = None;
        }
        Ok(())
    }

    fn matmul_many(
        &mut self,
        ws: &[&Weight],
        x: &CudaSlice<f32>,
        n: usize,
        ys: &mut [&mut CudaSlice<f32>],
    ) -> Result<(), CoreError> {
        let _span = self.span(if n <= launch::MMVQ_MAX_TOKENS {
            "matmul_many (mmvq)"
        } else {
            "matmul_many (mmq)"
        });
        // One token: consecutive weights of one quantized type and row length run in one
        // launch (each call notes its own step signature, as matmul does).
        let mut i = 0;
        while i < ws.len().min(ys.len()) {
            let (w0, ty) = (ws[i], ws[i].ty);
            let run = ws[i..ys.len().min(ws.len())]
                .iter()
                .take(3)
                .take_while(|w| w.ty == ty && w.cols == w0.cols)
                .count();
            if n != 1 || run < 2 || !launch::uses_q8_activations(ty) || !cuda::is_supported(ty) {
                self.matmul(w0, x, n, ys[i])?;
                i += 1;
                continue;
            }
            let group = &ws[i..i + run];
            let mut args = vec![device_addr(&self.dev, x), w0.cols as u64];
            for (w, y) in group.iter().zip(ys[i..i + run].iter()) {
                args.extend([w.bytes.start as u64, device_addr(&self.dev, y)]);
            }
            if !self.replaying(tag::MATMUL_MULTI, &args) {
                for w in group {
                    self.upload_matrix(w)?;
                }
                let format = ActFormat::for_weights(ty);
                let key = (device_addr(&self.dev, x), 1, w0.cols, format);
                self.act_format_of.insert(key.0, format);
                if self.q8_of != Some(key) {
                    self.q8(w0.cols, 1)?;
                    let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
                    launch::quantize_q8_1(&self.dev, x, 1, w0.cols, format, q8)
                        .map_err(core_err)?;
                    self.q8_of = Some(key);
                }
                let mats: Vec<&DeviceMatrix> = group
                    .iter()
                    .map(|w| &self.matrices[&w.bytes.start])
                    .collect();
                let q8 = self.q8.as_ref().ok_or(CoreError::EmptyInput)?;
                launch::matvec_q8_multi(&self.dev, &mats, q8, &mut ys[i..i + run])
                    .map_err(core_err)?;
            }
            i += run;
        }
        Ok(())
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
        let _span = self.span("rms_norm (+ q8)");
        let args = [
            device_addr(&self.dev, x),
            first as u64,
            rows as u64,
            w.bytes.start as u64,
            device_addr(&self.dev, out),
        ];
        if self.replaying(tag::RMS_NORM, &args) {
            return Ok(());
        }
        // The normed rows are also quantized for the products that usually follow.
        self.q8_of = None;
        let len = w.len;
        self.norm(w)?;
        self.q8(len, rows)?;
        let (wd, xv) = (
            &self.norms[&w.bytes.start],
            x.slice(first * len..(first + rows) * len),
        );
        let out_addr = device_addr(&self.dev, out);
        let format = self.act_format_of.get(&out_addr).copied();
        let format = format.unwrap_or(ActFormat::Q8_0);
        let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
        ops::rms_norm_q8_1(&self.dev, &xv, wd, out, rows, len, eps, format, q8)
            .map_err(core_err)?;
        self.q8_of = Some((out_addr, rows, len, format));
        Ok(())
    }

    fn rms_norm_inplace(
        &mut self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        w: &Norm,
        eps: f32,
    ) -> Result<(), CoreError> {
        let _span = self.span("rms_norm_inplace");
        let args = [device_addr(&self.dev, x), rows as u64, w.bytes.start as u64];
        if self.replaying(tag::RMS_NORM_INPLACE, &args) {
            return Ok(());
        }
        self.q8_of = None;
        self.norm(w)?;
        let wd = &self.norms[&w.bytes.start];
        ops::rms_norm_inplace(&self.dev, x, wd, rows, w.len, eps).map_err(core_err)
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
        let _span = self.span("rope");
        let args = [
            device_addr(&self.dev, x),
            n_tokens as u64,
            n_heads as u64,
            head_dim as u64,
            u64::from(rope.freq_base.to_bits()),
            u64::from(rope.freq_scale.to_bits()),
        ];
        if self.replaying(tag::ROPE, &args) {
            return self.graph.note_pos(pos0);
        }
        self.q8_of = None;
        let r = ops::Rope {
            n_heads,
            head_dim,
            freq_base: rope.freq_base,
            freq_scale: rope.freq_scale,
        };
        if self.capturing_at(pos0)? {
            let pos = self.step_pos()?;
            return ops::rope_neox(&self.dev, x, &pos, n_tokens, r).map_err(core_err);
        }
        self.positions(pos0, n_tokens)?;
        let pos = self.positions.as_ref().ok_or(CoreError::EmptyInput)?;
        ops::rope_neox(&self.dev, x, pos, n_tokens, r).map_err(core_err)
    }

    fn scale(&mut self, x: &mut CudaSlice<f32>, len: usize, s: f32) -> Result<(), CoreError> {
        let _span = self.span("scale");
        let args = [
            device_addr(&self.dev, x),
            len as u64,
            u64::from(s.to_bits()),
        ];
        if self.replaying(tag::SCALE, &args) {
            return Ok(());
        }
        self.q8_of = None;
        ops::scale(&self.dev, x, s, len).map_err(core_err)
    }

    fn geglu(
        &mut self,
        gate: &mut CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
    ) -> Result<(), CoreError> {
        let _span = self.span("geglu (+ q8)");
        let args = [
            device_addr(&self.dev, gate),
            device_addr(&self.dev, up),
            len as u64,
        ];
        if self.replaying(tag::GEGLU, &args) {
            return Ok(());
        }
        // The result is also quantized (as one row) for the down projection that follows.
        self.q8_of = None;
        self.q8(len, 1)?;
        let gate_addr = device_addr(&self.dev, gate);
        let format = self.act_format_of.get(&gate_addr).copied();
        let format = format.unwrap_or(ActFormat::Q8_0);
        let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
        ops::geglu_q8_1(&self.dev, gate, up, len, format, q8).map_err(core_err)?;
        self.q8_of = Some((gate_addr, 1, len, format));
        Ok(())
    }

    fn add(
        &mut self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        len: usize,
    ) -> Result<(), CoreError> {
        let _span = self.span("add");
        let args = [
            device_addr(&self.dev, x),
            device_addr(&self.dev, y),
            len as u64,
        ];
        if self.replaying(tag::ADD, &args) {
            return Ok(());
        }
        self.q8_of = None;
        ops::add(&self.dev, x, y, len).map_err(core_err)
    }

    fn qk_norm_rope(
        &mut self,
        q: &mut CudaSlice<f32>,
        k: &mut CudaSlice<f32>,
        n_tokens: usize,
        p: &QkNormRope,
    ) -> Result<(), CoreError> {
        let _span = self.span("qk_norm_rope");
        let h = p.heads;
        let args = [
            device_addr(&self.dev, q),
            device_addr(&self.dev, k),
            n_tokens as u64,
            p.q_norm.bytes.start as u64,
            p.k_norm.bytes.start as u64,
            u64::from(p.rope.freq_base.to_bits()),
            u64::from(p.rope.freq_scale.to_bits()),
            u64::from(p.q_scale.to_bits()),
        ];
        if self.replaying(tag::QK_NORM_ROPE, &args) {
            return self.graph.note_pos(p.pos0);
        }
        self.q8_of = None;
        self.norm(p.q_norm)?;
        self.norm(p.k_norm)?;
        let shape = ops::QkNormRope {
            n_q_heads: h.n_head,
            n_k_heads: h.n_head_kv,
            head_dim: h.head_dim_k,
            freq_base: p.rope.freq_base,
            freq_scale: p.rope.freq_scale,
            q_scale: p.q_scale,
            eps: p.eps,
        };
        let pos = if self.capturing_at(p.pos0)? {
            self.step_pos()?
        } else {
            self.positions(p.pos0, n_tokens)?;
            self.positions
                .as_ref()
                .ok_or(CoreError::EmptyInput)?
                .slice(0..n_tokens)
        };
        let (wq, wk) = (
            &self.norms[&p.q_norm.bytes.start],
            &self.norms[&p.k_norm.bytes.start],
        );
        ops::qk_norm_rope(&self.dev, q, k, wq, wk, &pos, n_tokens, shape).map_err(core_err)
    }

    fn rms_norm_add(
        &mut self,
        o: &mut CudaSlice<f32>,
        rows: usize,
        w: &Norm,
        eps: f32,
        x: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let _span = self.span("rms_norm_add");
        let args = [
            device_addr(&self.dev, o),
            rows as u64,
            w.bytes.start as u64,
            device_addr(&self.dev, x),
        ];
        if self.replaying(tag::RMS_NORM_ADD, &args) {
            return Ok(());
        }
        self.q8_of = None;
        self.norm(w)?;
        let wd = &self.norms[&w.bytes.start];
        ops::rms_norm_add(&self.dev, o, wd, x, rows, w.len, eps).map_err(core_err)
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
        let _span = self.span("store_kv");
        let heads = store.shape.heads;
        let width = heads.n_head_kv * heads.head_dim_k;
        let slots = n_slots(slot_map, store);
        let args = [
            device_addr(&self.dev, k),
            device_addr(&self.dev, v),
            rows.start as u64,
            rows.end as u64,
            slots as u64,
            store_addr(&self.dev, store),
        ];
        if self.replaying(tag::STORE_KV, &args) {
            return self.graph.note_pos(pos0 + rows.start);
        }
        let pos = if self.capturing_at(pos0 + rows.start)? {
            self.step_pos()?
        } else {
            self.positions(pos0, rows.end)?;
            self.positions
                .as_ref()
                .ok_or(CoreError::EmptyInput)?
                .slice(rows.clone())
        };
        let n = rows.len();
        let kv = k.slice(rows.start * width..rows.end * width);
        let vv = v.slice(rows.start * width..rows.end * width);
        let dev = &self.dev;
        match (&mut store.k, &mut store.v) {
            (KvBuf::F16(k), KvBuf::F16(v)) => {
                ops::kv_store_pair(dev, &kv, &vv, n, width, &pos, slots, k, v)
            }
            (KvBuf::F32(k), KvBuf::F32(v)) => {
                ops::kv_store_pair(dev, &kv, &vv, n, width, &pos, slots, k, v)
            }
            (KvBuf::Q8_0(k), KvBuf::Q8_0(v)) => {
                ops::kv_store_pair(dev, &kv, &vv, n, width, &pos, slots, k, v)
            }
            // alloc_kv gives keys and values one type.
            _ => {
                return Err(CoreError::DeviceUnavailable {
                    device: "cuda".into(),
                    reason: "the keys and values of a KV store differ in type",
                })
            }
        }
        .map_err(core_err)
    }

    fn attention(
        &mut self,
        q: &CudaSlice<f32>,
        store: &CudaKvStore,
        job: &AttentionJob,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let _span = self.span(if job.rows.len() == 1 {
            "attention (decode)"
        } else {
            "attention (prefill)"
        });
        self.q8_of = None;
        if job.image.is_some() && self.graph.mode != StepMode::Idle {
            // Image batches start with load_rows, which ends any step: never in a graph.
            return Err(CoreError::DeviceUnavailable {
                device: "cuda (decode graph; GEMMA_CUDA_GRAPH=0 turns it off)".into(),
                reason: "image attention inside a captured decode step",
            });
        }
        // The image's positions (its tokens see each other), empty for text.
        let image = job.image.clone().unwrap_or(0..0);
        let h = job.heads;
        let shape = AttnShape {
            n_heads: h.n_head,
            n_kv_heads: h.n_head_kv,
            head_dim: h.head_dim_k,
            n_slots: n_slots(job.slot_map, store),
            window: job.window.unwrap_or(0),
            scale: 1.0, // the forward pass scales the queries
        };
        let width = h.n_head * h.head_dim_k;
        let rows = job.rows.clone();
        let args = [
            device_addr(&self.dev, q),
            store_addr(&self.dev, store),
            rows.start as u64,
            rows.end as u64,
            shape.n_slots as u64,
            shape.window as u64,
            image.start as u64,
            image.end as u64,
            device_addr(&self.dev, out),
        ];
        if self.replaying(tag::ATTENTION, &args) {
            return self.graph.note_pos(job.pos0 + rows.start);
        }
        let qv = q.slice(rows.start * width..rows.end * width);
        let mut ov = out.slice_mut(rows.start * width..rows.end * width);
        let p0 = job.pos0 + rows.start;
        // Decode attention is causal: one token that sees image keys after it (a token of
        // an image but its last) takes the prefill kernels, which honour the image.
        if rows.len() == 1 && job.visible_keys(p0).end == p0 + 1 {
            let key = (shape.n_slots, shape.window);
            let captured = self.capturing_at(job.pos0 + rows.start)?;
            if !self.decode.contains_key(&key) {
                if captured {
                    // Allocating inside a capture would put the buffer's lifetime in the graph.
                    return Err(CoreError::DeviceUnavailable {
                        device: "cuda (decode graph; GEMMA_CUDA_GRAPH=0 turns it off)".into(),
                        reason: "decode attention scratch missing while capturing a step",
                    });
                }
                let s = DecodeScratch::new(&self.dev, &shape).map_err(core_err)?;
                self.decode.insert(key, s);
            }
            let pos = if captured {
                self.graph
                    .inputs
                    .as_ref()
                    .ok_or(CoreError::EmptyInput)?
                    .pos
                    .slice(0..1)
            } else {
                self.positions(job.pos0, rows.end)?;
                self.positions
                    .as_ref()
                    .ok_or(CoreError::EmptyInput)?
                    .slice(rows.start..rows.end)
            };
            let scratch = self.decode.get_mut(&key).ok_or(CoreError::EmptyInput)?;
            let dev = &self.dev;
            return with_kv!(store, |k, v| decode(
                dev, &qv, k, v, &pos, &shape, scratch, &mut ov
            ));
        }
        let (dev, n) = (&self.dev, rows.len());
        with_kv!(store, |k, v| {
            cuda::attention_prefill_cached(dev, &qv, k, v, n, p0, image.clone(), &shape, &mut ov)
                .map_err(core_err)
        })
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
        self.dev.synchronize().map_err(core_err)?;
        if let Some(p) = self.profile.as_mut() {
            p.collect();
        }
        Ok(())
    }
}

impl Drop for CudaBackend<'_> {
    /// Prints the profile (with `GEMMA_CUDA_PROFILE=1`) once the stream has finished.
    fn drop(&mut self) {
        if let Some(p) = self.profile.as_mut() {
            if self.dev.synchronize().is_ok() {
                p.collect();
            }
            eprint!("{}", p.report());
        }
    }
}

#[cfg(test)]
mod tests;
