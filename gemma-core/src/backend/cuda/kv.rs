//! The KV cache on the device (f16, f32 or Q8_0, as on the CPU) and the backend's K/V stores
//! and attention calls: decode attention split over keys (reading only the live window of
//! local layers), prefill attention tiled, image spans bidirectional.

use super::graph::StepMode;
use super::{core_err, device_addr, tag, CudaBackend};
use crate::attention::SlotMap;
use crate::backend::{AttentionJob, AttentionNumerics, KvShape, QkNormRope};
use crate::kv_cache::KvType;
use crate::CoreError;
use gemma_kernels::cuda::{
    self, ops, ActFormat, AttnShape, CudaDevice, CudaError, CudaSlice, DecodeScratch, DevicePtr,
    KvElem, KvKind, Q8Activations,
};
use std::ops::Range;

/// One layer's keys or values on the device: `slots x n_head_kv x head_dim` values.
pub(super) enum KvBuf {
    /// f16 bits.
    F16(CudaSlice<u16>),
    /// f32 values.
    F32(CudaSlice<f32>),
    /// Q8_0 blocks (34 bytes per 32 values), quantized like the CPU cache.
    Q8_0(CudaSlice<u8>),
}

impl KvBuf {
    /// A zeroed buffer of `values` keys or values of `kv_type`.
    pub(super) fn zeroed(
        dev: &CudaDevice,
        kv_type: KvType,
        values: usize,
    ) -> Result<KvBuf, CudaError> {
        Ok(match kv_type {
            KvType::F16 => KvBuf::F16(cuda::zeros(dev, KvKind::F16.buffer_len(values))?),
            KvType::F32 => KvBuf::F32(cuda::zeros(dev, KvKind::F32.buffer_len(values))?),
            KvType::Q8_0 => KvBuf::Q8_0(cuda::zeros(dev, KvKind::Q8_0.buffer_len(values))?),
        })
    }

    /// Bytes of device memory held.
    pub(super) fn bytes(&self) -> usize {
        match self {
            KvBuf::F16(b) => b.len() * 2,
            KvBuf::F32(b) => b.len() * 4,
            KvBuf::Q8_0(b) => b.len(),
        }
    }
}

/// One layer's keys and values on the device.
pub struct CudaKvStore {
    pub(super) shape: KvShape,
    pub(super) k: KvBuf,
    pub(super) v: KvBuf,
}

impl CudaKvStore {
    /// Bytes of device memory held.
    pub fn bytes(&self) -> usize {
        self.k.bytes() + self.v.bytes()
    }
}

/// Runs `$body` with `$k` / `$v` bound to the typed buffers of a store's K and V (both
/// always have the same type); `with_kv!(mut store, ...)` binds them mutably.
macro_rules! with_kv {
    (mut $store:expr, |$k:ident, $v:ident| $body:expr) => {
        match (&mut $store.k, &mut $store.v) {
            (KvBuf::F16($k), KvBuf::F16($v)) => $body,
            (KvBuf::F32($k), KvBuf::F32($v)) => $body,
            (KvBuf::Q8_0($k), KvBuf::Q8_0($v)) => $body,
            _ => Err(CoreError::DeviceUnavailable {
                device: "cuda".into(),
                reason: "a KV store's keys and values differ in type",
            }),
        }
    };
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

/// The device address of a store's keys (identifies the layer in step signatures).
fn store_addr(dev: &CudaDevice, store: &CudaKvStore) -> u64 {
    let (addr, _sync) = match &store.k {
        KvBuf::F16(b) => b.device_ptr(dev.stream()),
        KvBuf::F32(b) => b.device_ptr(dev.stream()),
        KvBuf::Q8_0(b) => b.device_ptr(dev.stream()),
    };
    addr
}

/// Decode attention over a cache of any element type, its output also quantized for the
/// output projection when `q8` is given.
#[allow(clippy::too_many_arguments)] // forwards attention_decode_q8's arguments
fn decode<E: KvElem>(
    dev: &CudaDevice,
    q: &cuda::CudaView<f32>,
    k: &CudaSlice<E>,
    v: &CudaSlice<E>,
    pos: &cuda::CudaView<i32>,
    shape: &AttnShape,
    scratch: &mut DecodeScratch,
    out: &mut cuda::CudaViewMut<f32>,
    q8: Option<(&mut Q8Activations, ActFormat)>,
) -> Result<(), CoreError> {
    let kv = cuda::DecodeKv { k, v, pos };
    cuda::attention_decode_q8(dev, q, &kv, shape, scratch, out, q8).map_err(core_err)
}

fn n_slots(map: SlotMap, store: &CudaKvStore) -> usize {
    match map {
        SlotMap::Linear => store.shape.slots,
        SlotMap::Ring { slots } => slots,
    }
}

impl CudaBackend<'_> {
    /// [`crate::backend::Backend::store_kv`].
    pub(super) fn store_kv_rows(
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
        with_kv!(mut store, |k, v| {
            ops::kv_store_pair(dev, &kv, &vv, n, width, &pos, slots, k, v).map_err(core_err)
        })
    }

    /// [`crate::backend::Backend::qk_norm_rope_store`]: one launch, unless a Q8_0 cache's
    /// blocks straddle a warp (head_dim / 2 not a multiple of 32) or keys and values differ
    /// in width.
    #[allow(clippy::too_many_arguments)] // the trait method's arguments
    pub(super) fn norm_rope_store(
        &mut self,
        q: &mut CudaSlice<f32>,
        k: &mut CudaSlice<f32>,
        v: &CudaSlice<f32>,
        n: usize,
        p: &QkNormRope,
        store: &mut CudaKvStore,
        slot_map: SlotMap,
    ) -> Result<(), CoreError> {
        let h = p.heads;
        let q8_cache = matches!(store.k, KvBuf::Q8_0(_));
        if h.head_dim_v != h.head_dim_k || (q8_cache && !(h.head_dim_k / 2).is_multiple_of(32)) {
            self.norm_rope_heads(q, k, n, p)?;
            return self.store_kv_rows(store, k, v, 0..n, p.pos0, slot_map);
        }
        let _span = self.span("qk_norm_rope + store_kv");
        let slots = n_slots(slot_map, store);
        let args = [
            device_addr(&self.dev, q),
            device_addr(&self.dev, k),
            device_addr(&self.dev, v),
            n as u64,
            p.q_norm.bytes.start as u64,
            p.k_norm.bytes.start as u64,
            u64::from(p.rope.freq_base.to_bits()),
            u64::from(p.rope.freq_scale.to_bits()),
            u64::from(p.q_scale.to_bits()),
            slots as u64,
            store_addr(&self.dev, store),
        ];
        if self.replaying(tag::QK_NORM_ROPE_STORE, &args) {
            return self.graph.note_pos(p.pos0);
        }
        let captured = self.prepare_qk_rope(p, n)?;
        let r = self.qk_rope_inputs(p, n, captured)?;
        let dev = &self.dev;
        with_kv!(mut store, |k_cache, v_cache| {
            let kv = ops::KvTarget {
                v,
                n_slots: slots,
                k_cache,
                v_cache,
            };
            ops::qk_norm_rope_store(dev, q, k, r.wq, r.wk, &r.pos, n, r.shape, kv).map_err(core_err)
        })
    }

    /// [`crate::backend::Backend::attention`].
    pub(super) fn attend(
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
            one_chunk_f16: store.shape.kv_type == KvType::F16
                && AttentionNumerics::for_batch(self.flash_attention, job.batch_rows, KvType::F16)
                    == AttentionNumerics::FlashChunked,
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
        let out_addr = device_addr(&self.dev, out);
        let qv = q.slice(rows.start * width..rows.end * width);
        let mut ov = out.slice_mut(rows.start * width..rows.end * width);
        let p0 = job.pos0 + rows.start;
        // Decode attention is causal: one token that sees image keys after it (a token of
        // an image but its last) takes the prefill kernels, which honour the image. So does
        // the one row left of a smaller batch in the last layer when it rounds as the CPU's
        // one-chunk kernel, which sums a batch's keys in one run however many.
        let one_run_batch = shape.one_chunk_f16 && job.batch_rows > 1;
        if rows.len() == 1 && job.visible_keys(p0).end == p0 + 1 && !one_run_batch {
            let key = (shape.n_slots, shape.window);
            let captured = self.capturing_at(job.pos0 + rows.start)?;
            // The output projection's activations, quantized here when its format is known
            // (from an earlier step) and the row is the buffer's first.
            let format = self.act_format_of.get(&out_addr).copied();
            let fused = format.filter(|_| shape.head_dim == 256 && rows.start == 0);
            if fused.is_some() {
                self.q8(width, 1)?;
            }
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
            let q8 = match (fused, self.q8.as_mut()) {
                (Some(format), Some(q8)) => Some((q8, format)),
                _ => None,
            };
            let dev = &self.dev;
            with_kv!(store, |k, v| decode(
                dev, &qv, k, v, &pos, &shape, scratch, &mut ov, q8
            ))?;
            if let Some(format) = fused {
                self.q8_of = Some((out_addr, 1, width, format));
            }
            return Ok(());
        }
        let (dev, n) = (&self.dev, rows.len());
        with_kv!(store, |k, v| {
            cuda::attention_prefill_cached(dev, &qv, k, v, n, p0, image.clone(), &shape, &mut ov)
                .map_err(core_err)
        })
    }
}
