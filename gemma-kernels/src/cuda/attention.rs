//! Typed launches of attention over the KV cache: decode (one token, split over keys,
//! then merged) and prefill (flash-style tiles over f16 caches, causal + sliding window;
//! one block per query row over f32 / Q8_0 caches). Prefill over the cache also takes the
//! positions of an image whose tokens see each other (Gemma 3's bidirectional attention
//! inside an image; causal elsewhere).
//!
//! Cache layout per layer: `n_slots x n_kv_heads x head_dim` values for K and for V, as f16
//! (`u16` buffers), f32, or Q8_0 blocks of 32 values (`u8` buffers of 34-byte blocks; see
//! [`KvElem`]).
//! Position p lives in slot p % n_slots: sliding-window layers keep a ring of `window`
//! slots, global layers one slot per context position.

use super::buffer::{zeros, ActFormat, Q8Activations};
use super::device::CudaDevice;
use super::error::{check_len, CudaError};
use super::launch::{grid_dim, int, launch, ptr, ptr_mut, Arg};
use super::modules::Kernel;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr};
use std::ops::Range;

/// Threads of a block of `attn_combine_<D>` (ATT_COMBINE_THREADS in attention.cu), every head size.
const COMBINE_THREADS: u32 = 256;

/// How a KV cache stores its values on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvKind {
    /// IEEE half values (`u16` bits).
    F16,
    /// f32 values.
    F32,
    /// ggml Q8_0 blocks (f16 scale, 32 int8 values: 34 bytes), as raw bytes.
    Q8_0,
}

impl KvKind {
    /// Buffer elements holding `values` cached values (a multiple of 32 for Q8_0).
    pub fn buffer_len(self, values: usize) -> usize {
        match self {
            KvKind::F16 | KvKind::F32 => values,
            KvKind::Q8_0 => values / 32 * 34,
        }
    }
}

/// A device buffer element type that holds a KV cache: `u16` (f16 bits), `f32`, or `u8`
/// (the raw bytes of Q8_0 blocks).
pub trait KvElem: DeviceRepr {
    /// The storage format.
    const KIND: KvKind;
}

impl KvElem for u16 {
    const KIND: KvKind = KvKind::F16;
}

impl KvElem for f32 {
    const KIND: KvKind = KvKind::F32;
}

impl KvElem for u8 {
    const KIND: KvKind = KvKind::Q8_0;
}

/// The shape of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (n_heads is a multiple of it, at most 8 times it).
    pub n_kv_heads: usize,
    /// Dimensions per head: 64, 128 or 256.
    pub head_dim: usize,
    /// Rows of the KV cache.
    pub n_slots: usize,
    /// Sliding window (a query at q sees keys k with q - k < window); 0 for global layers.
    pub window: usize,
    /// Score scale, 1 / sqrt(head_dim) (Gemma 3 27B: its query_pre_attn_scalar).
    pub scale: f32,
    /// Over an F16 cache, round as llama.cpp's one-chunk CPU flash attention (the CPU
    /// engine's `FlashChunked` numerics): the query rounded to F16, the keys in position
    /// order, the value sum rounded to F16 after every key. Decode does so for steps at
    /// positions up to 256 (longer ones the CPU splits over its threads): its splits only
    /// score the keys, and the combine kernel walks them in order, one thread per dimension;
    /// [`attention_prefill_cached`] with `attn_prefill_chunked_<D>` ([`attention_prefill`]
    /// ignores it). `false`: f32 sums throughout.
    pub one_chunk_f16: bool,
}

impl AttnShape {
    fn check(&self) -> Result<(), CudaError> {
        if !matches!(self.head_dim, 64 | 128 | 256) {
            return Err(CudaError::Unsupported {
                what: "head_dim",
                value: self.head_dim,
                rule: "64, 128 or 256",
            });
        }
        let ok = self.n_kv_heads > 0
            && self.n_heads.is_multiple_of(self.n_kv_heads)
            && self.n_heads / self.n_kv_heads <= 8;
        if !ok {
            return Err(CudaError::Unsupported {
                what: "n_heads / n_kv_heads",
                value: self.n_heads,
                rule: "a multiple of n_kv_heads, at most 8 times it",
            });
        }
        Ok(())
    }

    /// Most keys a decoding query can see.
    fn max_live(&self) -> usize {
        if self.window > 0 {
            self.window.min(self.n_slots)
        } else {
            self.n_slots
        }
    }

    /// Buffer elements of one cache (K or V) of format `kind`.
    fn cache_len(&self, kind: KvKind) -> usize {
        kind.buffer_len(self.n_slots * self.n_kv_heads * self.head_dim)
    }
}

/// Positions of a one-token step that the CPU's one-chunk kernel sums in one run
/// (ATT_ONE_RUN in attention.cu); such a step leaves the raw scores, ONE_RUN_KEYS per head,
/// in the scratch's partial results.
const ONE_RUN_KEYS: usize = 256;

/// Floats of the decode scratch's partial results per query head: the splits' value sums,
/// or a one-run step's scores.
fn part_o_per_head(n_splits: usize, shape: &AttnShape) -> usize {
    (n_splits * shape.head_dim).max(ONE_RUN_KEYS)
}

/// Per-layer scratch of decode attention: the partial results of the key splits. The split
/// count depends only on the shape, so a captured decode graph stays valid for every step.
pub struct DecodeScratch {
    n_splits: usize,
    part_o: CudaSlice<f32>,
    part_ml: CudaSlice<f32>,
}

impl DecodeScratch {
    /// Allocates the splits: enough that every live key fits (256 per split at most), about
    /// 8 blocks per multiprocessor, and no more than one per 32 keys. Each step spreads its
    /// live keys over them (on the device, from the position).
    pub fn new(dev: &CudaDevice, shape: &AttnShape) -> Result<Self, CudaError> {
        shape.check()?;
        let max_live = shape.max_live().max(1);
        let n_splits = (8 * dev.sm_count())
            .div_ceil(shape.n_kv_heads)
            .max(max_live.div_ceil(256))
            .min(max_live.div_ceil(32))
            .max(1);
        let part_o = zeros::<f32>(dev, shape.n_heads * part_o_per_head(n_splits, shape))?;
        let part_ml = zeros::<f32>(dev, shape.n_heads * n_splits * 2)?;
        Ok(DecodeScratch {
            n_splits,
            part_o,
            part_ml,
        })
    }

    /// Number of splits.
    pub fn n_splits(&self) -> usize {
        self.n_splits
    }

    /// Bytes of device memory held.
    pub fn bytes(&self) -> usize {
        (self.part_o.len() + self.part_ml.len()) * 4
    }
}

/// The decode and combine kernels for a head size and cache format.
fn decode_names(head_dim: usize, kind: KvKind) -> (&'static str, &'static str) {
    let combine = match head_dim {
        64 => "attn_combine_64",
        128 => "attn_combine_128",
        _ => "attn_combine_256",
    };
    let decode = match (kind, head_dim) {
        (KvKind::F16, 64) => "attn_decode_64",
        (KvKind::F16, 128) => "attn_decode_128",
        (KvKind::F16, _) => "attn_decode_256",
        (KvKind::F32, 64) => "attn_decode_f32_64",
        (KvKind::F32, 128) => "attn_decode_f32_128",
        (KvKind::F32, _) => "attn_decode_f32_256",
        (KvKind::Q8_0, 64) => "attn_decode_q8_0_64",
        (KvKind::Q8_0, 128) => "attn_decode_q8_0_128",
        (KvKind::Q8_0, _) => "attn_decode_q8_0_256",
    };
    (decode, combine)
}

/// The row-per-block prefill kernel: over an f32 / Q8_0 cache, or over an f16 one with
/// `one_chunk_f16` (`None`: f16 without it, which uses the flash kernel).
fn prefill_rows_name(head_dim: usize, kind: KvKind, one_chunk_f16: bool) -> Option<&'static str> {
    Some(match (kind, head_dim) {
        (KvKind::F16, 64) if one_chunk_f16 => "attn_prefill_chunked_64",
        (KvKind::F16, 128) if one_chunk_f16 => "attn_prefill_chunked_128",
        (KvKind::F16, _) if one_chunk_f16 => "attn_prefill_chunked_256",
        (KvKind::F16, _) => return None,
        (KvKind::F32, 64) => "attn_prefill_f32_64",
        (KvKind::F32, 128) => "attn_prefill_f32_128",
        (KvKind::F32, _) => "attn_prefill_f32_256",
        (KvKind::Q8_0, 64) => "attn_prefill_q8_0_64",
        (KvKind::Q8_0, 128) => "attn_prefill_q8_0_128",
        (KvKind::Q8_0, _) => "attn_prefill_q8_0_256",
    })
}

/// Attention of one token at position `*pos` (a device int, so graphs can replay it) over
/// the last min(pos + 1, window) positions of the cache, which must already hold this
/// token's K and V (see [`super::ops::kv_store`]). q, out: n_heads x head_dim. The cache
/// format follows the buffers' element type ([`KvElem`]).
/// The caller keeps pos + 1 <= n_slots on global layers.
#[allow(clippy::too_many_arguments)] // mirrors the kernel: query, cache, position, shape, scratch, output
pub fn attention_decode<E, Q, K, V, P, O>(
    dev: &CudaDevice,
    q: &Q,
    k_cache: &K,
    v_cache: &V,
    pos: &P,
    shape: &AttnShape,
    scratch: &mut DecodeScratch,
    out: &mut O,
) -> Result<(), CudaError>
where
    E: KvElem,
    Q: DevicePtr<f32>,
    K: DevicePtr<E>,
    V: DevicePtr<E>,
    P: DevicePtr<i32>,
    O: DevicePtrMut<f32>,
{
    let kv = DecodeKv {
        k: k_cache,
        v: v_cache,
        pos,
    };
    attention_decode_q8(dev, q, &kv, shape, scratch, out, None)
}

/// The cache of one layer and the position of the decoding token, for
/// [`attention_decode_q8`].
pub struct DecodeKv<'a, K, V, P> {
    /// Keys.
    pub k: &'a K,
    /// Values.
    pub v: &'a V,
    /// The token's position (one device int).
    pub pos: &'a P,
}

/// [`attention_decode`] that also quantizes its output row in `format` into `q8` when given
/// (head_dim 256 only; the values `quantize_q8_1` gives), for the output projection.
pub fn attention_decode_q8<E, Q, K, V, P, O>(
    dev: &CudaDevice,
    q: &Q,
    kv: &DecodeKv<'_, K, V, P>,
    shape: &AttnShape,
    scratch: &mut DecodeScratch,
    out: &mut O,
    q8: Option<(&mut Q8Activations, ActFormat)>,
) -> Result<(), CudaError>
where
    E: KvElem,
    Q: DevicePtr<f32>,
    K: DevicePtr<E>,
    V: DevicePtr<E>,
    P: DevicePtr<i32>,
    O: DevicePtrMut<f32>,
{
    let (k_cache, v_cache, pos) = (kv.k, kv.v, kv.pos);
    shape.check()?;
    let width = shape.n_heads * shape.head_dim;
    check_len("attention query", width, q.len())?;
    check_len("attention output", width, out.len())?;
    check_len("K cache", shape.cache_len(E::KIND), k_cache.len())?;
    check_len("V cache", shape.cache_len(E::KIND), v_cache.len())?;
    check_len("position", 1, pos.len())?;
    check_len(
        "decode scratch",
        shape.n_heads * part_o_per_head(scratch.n_splits, shape),
        scratch.part_o.len(),
    )?;
    let (decode, combine) = decode_names(shape.head_dim, E::KIND);
    // A one-run step (F16 cache): the decode kernel scores the keys, the combine kernel
    // walks them (it reads V).
    let chunked = shape.one_chunk_f16 && E::KIND == KvKind::F16;
    let (po, pml) = (
        ptr_mut(dev, &mut scratch.part_o),
        ptr_mut(dev, &mut scratch.part_ml),
    );
    let args = [
        Arg::P(ptr(dev, q)),
        Arg::P(ptr(dev, k_cache)),
        Arg::P(ptr(dev, v_cache)),
        Arg::I(int("n_heads", shape.n_heads)?),
        Arg::I(int("n_kv_heads", shape.n_kv_heads)?),
        Arg::I(int("n_slots", shape.n_slots)?),
        Arg::P(ptr(dev, pos)),
        Arg::I(int("window", shape.window)?),
        Arg::F(shape.scale),
        Arg::I(i32::from(chunked)),
        Arg::P(po),
        Arg::P(pml),
    ];
    let grid = (
        grid_dim("kv heads", shape.n_kv_heads)?,
        grid_dim("splits", scratch.n_splits)?,
        1,
    );
    launch(dev, Kernel::Attention, decode, grid, 128, &args)?;
    let (fmt, qs, ds) = match q8 {
        Some((q8, format)) => {
            if shape.head_dim != 256 {
                return Err(CudaError::Unsupported {
                    what: "head_dim of a decode attention that quantizes its output",
                    value: shape.head_dim,
                    rule: "256",
                });
            }
            q8.set_shape(1, width, format)?;
            let (qs, ds) = (ptr_mut(dev, &mut q8.qs), ptr_mut(dev, &mut q8.ds));
            (format as i32, qs, ds)
        }
        None => (-1, 0, 0),
    };
    let args = [
        Arg::P(po),
        Arg::P(pml),
        Arg::I(int("splits", scratch.n_splits)?),
        Arg::P(ptr_mut(dev, out)),
        Arg::I(fmt),
        Arg::P(qs),
        Arg::P(ds),
        Arg::P(ptr(dev, v_cache)),
        Arg::I(int("n_kv_heads", shape.n_kv_heads)?),
        Arg::I(int("n_slots", shape.n_slots)?),
        Arg::P(ptr(dev, pos)),
        Arg::I(int("window", shape.window)?),
        Arg::I(i32::from(chunked)),
    ];
    launch(
        dev,
        Kernel::Attention,
        combine,
        (grid_dim("heads", shape.n_heads)?, 1, 1),
        COMBINE_THREADS,
        &args,
    )
}

/// Attention of n new tokens at positions p0 .. p0 + n - 1 (causal, sliding window when
/// shape.window > 0). Keys before p0 come from the cache, the new tokens' own keys and
/// values from k_new / v_new (n x n_kv_heads x head_dim halves), so a ring of `window` slots
/// suffices; store the new K/V into the cache afterwards. q, out: n x n_heads x head_dim.
#[allow(clippy::too_many_arguments)] // mirrors the kernel: query, new K/V, cache, positions, shape, output
pub fn attention_prefill<Q, KN, VN, K, V, O>(
    dev: &CudaDevice,
    q: &Q,
    k_new: &KN,
    v_new: &VN,
    k_cache: &K,
    v_cache: &V,
    n: usize,
    p0: usize,
    shape: &AttnShape,
    out: &mut O,
) -> Result<(), CudaError>
where
    Q: DevicePtr<f32>,
    KN: DevicePtr<u16>,
    VN: DevicePtr<u16>,
    K: DevicePtr<u16>,
    V: DevicePtr<u16>,
    O: DevicePtrMut<f32>,
{
    shape.check()?;
    let fits = p0 + n <= shape.n_slots || (shape.window > 0 && shape.n_slots >= shape.window);
    if !fits {
        return Err(CudaError::Shape {
            what: "KV cache slots for the context",
            needed: p0 + n,
            actual: shape.n_slots,
        });
    }
    let kv_width = n * shape.n_kv_heads * shape.head_dim;
    check_len("new keys", kv_width, k_new.len())?;
    check_len("new values", kv_width, v_new.len())?;
    let new_kv = (ptr(dev, k_new), ptr(dev, v_new));
    prefill(
        dev,
        q,
        new_kv,
        k_cache,
        v_cache,
        n,
        (p0, p0),
        (0, 0),
        shape,
        out,
    )
}

/// Attention of n tokens at positions p0 .. p0 + n - 1 whose keys and values are all in
/// the cache already (stored before, as the forward pass of gemma-core does): the cache
/// must hold every key a query sees, i.e. a ring needs window + n - 1 slots. Any cache
/// format ([`KvElem`]): f16 runs the flash kernel, f32 / Q8_0 one block per query row.
///
/// `image` (positions; empty for text) is an image whose tokens see each other: a query
/// at a position inside it sees the keys of its window and every key up to `image.end`
/// (which the cache must hold too); queries outside it are causal.
#[allow(clippy::too_many_arguments)] // mirrors the kernel: query, cache, positions, image, shape, output
pub fn attention_prefill_cached<E, Q, K, V, O>(
    dev: &CudaDevice,
    q: &Q,
    k_cache: &K,
    v_cache: &V,
    n: usize,
    p0: usize,
    image: Range<usize>,
    shape: &AttnShape,
    out: &mut O,
) -> Result<(), CudaError>
where
    E: KvElem,
    Q: DevicePtr<f32>,
    K: DevicePtr<E>,
    V: DevicePtr<E>,
    O: DevicePtrMut<f32>,
{
    shape.check()?;
    // The exclusive end of the keys any query sees: past the queries when the image
    // covers one of them.
    let sees_image = !image.is_empty() && image.start < p0 + n && p0 < image.end;
    let k_end = if sees_image {
        (p0 + n).max(image.end)
    } else {
        p0 + n
    };
    let needed = if shape.window > 0 {
        (shape.window + k_end - p0 - 1).min(k_end)
    } else {
        k_end
    };
    check_len("KV cache slots for the visible keys", needed, shape.n_slots)?;
    let image = if sees_image {
        (
            int("image start", image.start)?,
            int("image end", image.end)?,
        )
    } else {
        (0, 0)
    };
    if let Some(name) = prefill_rows_name(shape.head_dim, E::KIND, shape.one_chunk_f16) {
        return prefill_rows(dev, q, k_cache, v_cache, n, p0, image, shape, name, out);
    }
    let cache = (ptr(dev, k_cache), ptr(dev, v_cache));
    prefill(
        dev,
        q,
        cache,
        k_cache,
        v_cache,
        n,
        (p0, i32::MAX as usize),
        image,
        shape,
        out,
    )
}

/// Launches attn_prefill_<kv>_<D> (`name`): one block per (token, head), or per (token, KV
/// head) for attn_prefill_chunked_<D> (F16 with `one_chunk_f16`); `image` = (start, end)
/// positions of the image span, (0, 0) for none.
#[allow(clippy::too_many_arguments)] // the kernel's parameter list
fn prefill_rows<E, Q, K, V, O>(
    dev: &CudaDevice,
    q: &Q,
    k_cache: &K,
    v_cache: &V,
    n: usize,
    p0: usize,
    image: (i32, i32),
    shape: &AttnShape,
    name: &'static str,
    out: &mut O,
) -> Result<(), CudaError>
where
    E: KvElem,
    Q: DevicePtr<f32>,
    K: DevicePtr<E>,
    V: DevicePtr<E>,
    O: DevicePtrMut<f32>,
{
    let width = n * shape.n_heads * shape.head_dim;
    check_len("attention query", width, q.len())?;
    check_len("attention output", width, out.len())?;
    check_len("K cache", shape.cache_len(E::KIND), k_cache.len())?;
    check_len("V cache", shape.cache_len(E::KIND), v_cache.len())?;
    let args = [
        Arg::P(ptr(dev, q)),
        Arg::P(ptr(dev, k_cache)),
        Arg::P(ptr(dev, v_cache)),
        Arg::I(int("n_heads", shape.n_heads)?),
        Arg::I(int("n_kv_heads", shape.n_kv_heads)?),
        Arg::I(int("n_slots", shape.n_slots)?),
        Arg::I(int("p0", p0)?),
        Arg::I(int("window", shape.window)?),
        Arg::I(image.0),
        Arg::I(image.1),
        Arg::F(shape.scale),
        Arg::P(ptr_mut(dev, out)),
    ];
    let heads = if E::KIND == KvKind::F16 && shape.one_chunk_f16 {
        shape.n_kv_heads
    } else {
        shape.n_heads
    };
    let grid = (grid_dim("tokens", n)?, grid_dim("heads", heads)?, 1);
    launch(dev, Kernel::Attention, name, grid, 128, &args)
}

/// Launches flash_prefill_<D>; `new_kv` holds the device addresses of the new tokens' K
/// and V (read for positions >= positions.1), `positions` = (p0, p_new), `image` =
/// (start, end) positions of the image span, (0, 0) for none.
#[allow(clippy::too_many_arguments)] // the kernel's parameter list
fn prefill<E, Q, K, V, O>(
    dev: &CudaDevice,
    q: &Q,
    new_kv: (u64, u64),
    k_cache: &K,
    v_cache: &V,
    n: usize,
    (p0, p_new): (usize, usize),
    image: (i32, i32),
    shape: &AttnShape,
    out: &mut O,
) -> Result<(), CudaError>
where
    E: KvElem,
    Q: DevicePtr<f32>,
    K: DevicePtr<E>,
    V: DevicePtr<E>,
    O: DevicePtrMut<f32>,
{
    let width = n * shape.n_heads * shape.head_dim;
    check_len("attention query", width, q.len())?;
    check_len("attention output", width, out.len())?;
    if E::KIND != KvKind::F16 {
        return Err(CudaError::Unsupported {
            what: "flash prefill over a cache of element bytes",
            value: std::mem::size_of::<E>(),
            rule: "an f16 cache (2-byte elements)",
        });
    }
    check_len("K cache", shape.cache_len(KvKind::F16), k_cache.len())?;
    check_len("V cache", shape.cache_len(KvKind::F16), v_cache.len())?;
    let name = match shape.head_dim {
        64 => "flash_prefill_64",
        128 => "flash_prefill_128",
        _ => "flash_prefill_256",
    };
    let queries_per_block = 2048 / shape.head_dim;
    let args = [
        Arg::P(ptr(dev, q)),
        Arg::P(new_kv.0),
        Arg::P(new_kv.1),
        Arg::P(ptr(dev, k_cache)),
        Arg::P(ptr(dev, v_cache)),
        Arg::I(int("n", n)?),
        Arg::I(int("n_heads", shape.n_heads)?),
        Arg::I(int("n_kv_heads", shape.n_kv_heads)?),
        Arg::I(int("p0", p0)?),
        Arg::I(int("p_new", p_new)?),
        Arg::I(int("n_slots", shape.n_slots)?),
        Arg::I(int("window", shape.window)?),
        Arg::I(image.0),
        Arg::I(image.1),
        Arg::F(shape.scale),
        Arg::P(ptr_mut(dev, out)),
    ];
    let grid = (
        grid_dim("query tiles", n.div_ceil(queries_per_block))?,
        grid_dim("heads", shape.n_heads)?,
        1,
    );
    launch(dev, Kernel::FlashAttn, name, grid, 128, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attention_kernel_name_is_a_listed_function() {
        let listed = Kernel::Attention.functions();
        for kind in [KvKind::F16, KvKind::F32, KvKind::Q8_0] {
            for hd in [64, 128, 256] {
                let (d, c) = decode_names(hd, kind);
                assert!(listed.contains(&d) && listed.contains(&c), "{d} {c}");
                for one_chunk in [false, true] {
                    if let Some(p) = prefill_rows_name(hd, kind, one_chunk) {
                        assert!(listed.contains(&p), "{p}");
                        assert!(p.ends_with(&hd.to_string()), "{p}");
                    }
                }
                assert!(d.ends_with(&hd.to_string()), "{d}");
            }
        }
        assert_eq!(prefill_rows_name(128, KvKind::F16, false), None);
        assert_eq!(
            prefill_rows_name(128, KvKind::F16, true),
            Some("attn_prefill_chunked_128")
        );
    }

    #[test]
    fn q8_0_caches_take_34_bytes_per_32_values() {
        assert_eq!(KvKind::Q8_0.buffer_len(256), 272);
        assert_eq!(KvKind::F16.buffer_len(256), 256);
        assert_eq!(KvKind::F32.buffer_len(256), 256);
    }
}
