//! The KV cache: per layer a [`LayerCache`], `Global` (one slot per context position) or
//! `Sliding` (a [`Ring`] of `sliding_window + margin` slots).
//!
//! This module keeps the positions: which slot holds which position, what the rings
//! still hold, and whether the cache can be truncated back. The storage `S` of each
//! layer belongs to the backend (host memory on the CPU, device memory on a GPU).
//!
//! A batch of tokens is written tile by tile: the keys and values of a tile are stored,
//! then the tile's queries attend to the cache alone. For a ring of `slots` slots, a
//! tile of `t` tokens starting at `a` overwrites positions down to `a + t - slots`, while
//! its first query needs keys from `a - window + 1`: tiles of at most `margin + 1` tokens
//! ([`KvCache::max_tile`]) keep everything needed. The margin also lets the session go
//! back (truncate) by up to `margin + 1` tokens whatever the history.

use crate::attention::{visible_keys, SlotMap};
use crate::{Config, CoreError};
use gemma_gguf::GgmlType;
use std::fmt;
use std::str::FromStr;

/// Extra ring slots beyond the sliding window, by default.
pub const DEFAULT_RING_MARGIN: usize = 64;

/// Element type of the cached keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvType {
    /// IEEE half precision, llama.cpp's default (keys and values are rounded to it).
    #[default]
    F16,
    /// ggml Q8_0 blocks of 32 values (8.5 bits per value).
    Q8_0,
    /// Full f32 (twice the memory of F16).
    F32,
}

impl KvType {
    /// The name used on the command line (`f16`, `q8_0`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::F32 => "f32",
        }
    }

    /// The matching ggml type.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
            KvType::F32 => GgmlType::F32,
        }
    }

    /// Values per block (a cached row must be a whole number of blocks).
    pub fn block_elems(self) -> usize {
        self.ggml_type().block_elems()
    }

    /// Bytes of a row of `n` values (`n` a multiple of [`KvType::block_elems`]).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.ggml_type().block_bytes()
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`KvType`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown KV cache type `{0}` (expected f16, q8_0 or f32)")]
pub struct ParseKvTypeError(pub String);

impl FromStr for KvType {
    type Err = ParseKvTypeError;

    fn from_str(s: &str) -> Result<KvType, ParseKvTypeError> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            "f32" => Ok(KvType::F32),
            _ => Err(ParseKvTypeError(s.to_owned())),
        }
    }
}

/// A sliding-window layer's ring of slots.
#[derive(Debug)]
pub struct Ring<S> {
    /// The backend's storage of `slots` keys and values.
    pub store: S,
    /// Number of slots: `min(ctx_len, window + margin)`.
    slots: usize,
    /// The layer's sliding window.
    window: usize,
    /// Oldest position whose entry has not been overwritten.
    oldest: usize,
}

/// One layer's cache.
#[derive(Debug)]
pub enum LayerCache<S> {
    /// A global layer: slot `p` holds position `p`, for the whole context.
    Global {
        /// The backend's storage of `slots` keys and values.
        store: S,
        /// Number of slots (the session's context length).
        slots: usize,
    },
    /// A local layer: a ring holding the last positions.
    Sliding(Ring<S>),
}

impl<S> LayerCache<S> {
    /// The backend storage.
    pub fn store(&self) -> &S {
        match self {
            LayerCache::Global { store, .. } => store,
            LayerCache::Sliding(ring) => &ring.store,
        }
    }

    /// The backend storage, mutably.
    pub fn store_mut(&mut self) -> &mut S {
        match self {
            LayerCache::Global { store, .. } => store,
            LayerCache::Sliding(ring) => &mut ring.store,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        match self {
            LayerCache::Global { slots, .. } => *slots,
            LayerCache::Sliding(ring) => ring.slots,
        }
    }

    /// The sliding window, `None` for a global layer.
    pub fn window(&self) -> Option<usize> {
        match self {
            LayerCache::Global { .. } => None,
            LayerCache::Sliding(ring) => Some(ring.window),
        }
    }

    /// How positions map to slots.
    pub fn slot_map(&self) -> SlotMap {
        match self {
            LayerCache::Global { .. } => SlotMap::Linear,
            LayerCache::Sliding(ring) => SlotMap::Ring { slots: ring.slots },
        }
    }

    /// Oldest position still stored (0 for a global layer).
    pub fn oldest(&self) -> usize {
        match self {
            LayerCache::Global { .. } => 0,
            LayerCache::Sliding(ring) => ring.oldest,
        }
    }

    /// The positions a new token at `pos` reads from the cache: its visible keys minus itself.
    fn needed_for(&self, pos: usize) -> std::ops::Range<usize> {
        visible_keys(pos, self.window()).start..pos
    }

    /// Whether the cache still holds everything a token at `pos` needs.
    fn holds_history_of(&self, pos: usize) -> bool {
        let needed = self.needed_for(pos);
        needed.is_empty() || needed.start >= self.oldest()
    }
}

/// The cache of a whole session.
#[derive(Debug)]
pub struct KvCache<S> {
    layers: Vec<LayerCache<S>>,
    kv_type: KvType,
    ctx_len: usize,
    position: usize,
    bytes: u64,
}

impl<S> KvCache<S> {
    /// Lays out the cache of a `ctx_len`-token session: global layers get `ctx_len`
    /// slots, local ones `min(ctx_len, window + margin)`; `alloc(slots)` creates the
    /// storage of one layer.
    pub fn new(
        config: &Config,
        ctx_len: usize,
        kv_type: KvType,
        margin: usize,
        mut alloc: impl FnMut(usize) -> Result<S, CoreError>,
    ) -> Result<KvCache<S>, CoreError> {
        if ctx_len == 0 || ctx_len > config.context_length {
            return Err(CoreError::ContextLength {
                requested: ctx_len,
                max: config.context_length,
            });
        }
        for head_dim in [config.head_dim_k, config.head_dim_v] {
            if head_dim % kv_type.block_elems() != 0 {
                return Err(CoreError::KvTypeUnsupported {
                    kv_type: kv_type.name(),
                    block: kv_type.block_elems(),
                    head_dim,
                });
            }
        }
        let row_bytes = config.n_head_kv
            * (kv_type.row_bytes(config.head_dim_k) + kv_type.row_bytes(config.head_dim_v));
        let mut bytes = 0u64;
        let mut layers = Vec::with_capacity(config.layers.len());
        for layer in &config.layers {
            let cache = match layer.window {
                None => LayerCache::Global {
                    store: alloc(ctx_len)?,
                    slots: ctx_len,
                },
                Some(window) => {
                    let slots = ctx_len.min(window.saturating_add(margin));
                    LayerCache::Sliding(Ring {
                        store: alloc(slots)?,
                        slots,
                        window,
                        oldest: 0,
                    })
                }
            };
            bytes += (cache.slots() * row_bytes) as u64;
            layers.push(cache);
        }
        Ok(KvCache {
            layers,
            kv_type,
            ctx_len,
            position: 0,
            bytes,
        })
    }

    /// Tokens in the cache; the next token goes to this position.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The session's context length.
    pub fn ctx_len(&self) -> usize {
        self.ctx_len
    }

    /// The element type of the keys and values.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Bytes of keys and values allocated for the whole session.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The layers' caches.
    pub fn layers(&self) -> &[LayerCache<S>] {
        &self.layers
    }

    /// One layer's cache, mutably.
    pub fn layer_mut(&mut self, il: usize) -> &mut LayerCache<S> {
        &mut self.layers[il]
    }

    /// Most tokens that may be stored before their queries attend (see the module docs).
    pub fn max_tile(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|layer| match layer {
                LayerCache::Sliding(ring) if ring.slots < self.ctx_len => {
                    Some(ring.slots + 1 - ring.window)
                }
                _ => None,
            })
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Starts writing `n` tokens at the current position: checks that they fit and that
    /// every ring still holds the history they need, then marks the ring entries they
    /// will overwrite as gone (before writing, so that a failure half-way never leaves a
    /// ring claiming entries it lost).
    pub fn begin(&mut self, n: usize) -> Result<(), CoreError> {
        let end = self
            .position
            .checked_add(n)
            .filter(|&end| end <= self.ctx_len);
        let Some(end) = end else {
            return Err(CoreError::ContextFull {
                position: self.position,
                requested: n,
                ctx_len: self.ctx_len,
            });
        };
        if let Some(il) = self
            .layers
            .iter()
            .position(|l| !l.holds_history_of(self.position))
        {
            return Err(CoreError::KvCacheLost {
                layer: il,
                position: self.position,
            });
        }
        for layer in &mut self.layers {
            if let LayerCache::Sliding(ring) = layer {
                ring.oldest = ring.oldest.max(end.saturating_sub(ring.slots));
            }
        }
        Ok(())
    }

    /// Ends a write begun with [`KvCache::begin`]: the `n` tokens are now in the cache.
    pub fn commit(&mut self, n: usize) {
        self.position += n;
    }

    /// Whether [`KvCache::truncate`] to `pos` would succeed.
    pub fn check_truncate(&self, pos: usize) -> Result<(), CoreError> {
        if pos > self.position {
            return Err(CoreError::TruncateBeyondEnd {
                requested: pos,
                position: self.position,
            });
        }
        for (il, layer) in self.layers.iter().enumerate() {
            if !layer.holds_history_of(pos) {
                return Err(CoreError::TruncateTooFar {
                    requested: pos,
                    layer: il,
                    oldest_kept: layer.oldest(),
                    needed_from: layer.needed_for(pos).start,
                });
            }
        }
        Ok(())
    }

    /// Forgets the tokens from `pos` on, so that the next token goes to `pos`; fails if a
    /// ring has already overwritten keys that position needs.
    pub fn truncate(&mut self, pos: usize) -> Result<(), CoreError> {
        self.check_truncate(pos)?;
        self.position = pos;
        Ok(())
    }
}
