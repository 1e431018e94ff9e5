//! A backend with its KV cache and scratch buffers, driving the forward pass: the
//! backend-generic core of a [`crate::Session`], behind an object-safe trait so that a
//! session can hold any backend.

use crate::backend::{Backend, DeviceMemory, HeadShape, KvShape};
use crate::forward::{self, Input, ModelRef};
use crate::image::ImageError;
use crate::kv_cache::{KvCache, KvType};
use crate::state::State;
use crate::trace::Trace;
use crate::CoreError;

/// Which logits a run produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Only the last token's.
    Last,
    /// Every token's, in order.
    All,
}

/// Receives `(position, logits)` for each row a run produces.
pub(crate) type Sink<'a> = &'a mut (dyn FnMut(usize, &[f32]) + Send);

/// What a session needs from an engine, whatever its backend.
pub(crate) trait Runner: Send {
    /// Runs `tokens` at the current position, giving the wanted logits to `sink`.
    fn run(
        &mut self,
        tokens: &[u32],
        want: Want,
        sink: Sink<'_>,
        trace: Option<&mut Trace>,
    ) -> Result<(), CoreError>;
    /// Runs the embedding rows of one image at the current position as one batch in
    /// which the image's tokens attend to each other, giving the wanted logits to `sink`.
    fn run_image(
        &mut self,
        rows: &[f32],
        want: Want,
        sink: Sink<'_>,
        trace: Option<&mut Trace>,
    ) -> Result<(), ImageError>;
    /// Runs one token at the current position and returns the greedy pick after it (the
    /// index of its highest logit by [`crate::sampling::argmax`]'s rule), made by the
    /// backend where the logits are ([`Backend::argmax`]: a GPU reads back the index only).
    /// With a trace, which records the logits, or a final soft-cap, which the host applies,
    /// the logits are read and the host picks.
    fn step_greedy(&mut self, token: u32, trace: Option<&mut Trace>) -> Result<u32, CoreError>;
    /// The KV cache (positions, truncation, size).
    fn cache(&self) -> &dyn CacheInfo;
    /// [`KvCache::truncate`].
    fn truncate(&mut self, pos: usize) -> Result<(), CoreError>;
    /// [`Backend::device_memory`].
    fn device_memory(&self) -> Option<DeviceMemory>;
}

/// The backend-independent facts of a KV cache.
pub(crate) trait CacheInfo {
    /// Tokens in the cache.
    fn position(&self) -> usize;
    /// Context length.
    fn ctx_len(&self) -> usize;
    /// Bytes allocated.
    fn bytes(&self) -> u64;
    /// Element type.
    fn kv_type(&self) -> KvType;
    /// Whether truncating to `pos` would work.
    fn check_truncate(&self, pos: usize) -> Result<(), CoreError>;
}

impl<S> CacheInfo for KvCache<S> {
    fn position(&self) -> usize {
        KvCache::position(self)
    }
    fn ctx_len(&self) -> usize {
        KvCache::ctx_len(self)
    }
    fn bytes(&self) -> u64 {
        KvCache::bytes(self)
    }
    fn kv_type(&self) -> KvType {
        KvCache::kv_type(self)
    }
    fn check_truncate(&self, pos: usize) -> Result<(), CoreError> {
        KvCache::check_truncate(self, pos)
    }
}

/// Rows of logits computed per output projection when every position is wanted.
const LOGIT_ROWS: usize = 16;

/// The sizes of an engine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EngineSizes {
    /// Context length.
    pub ctx_len: usize,
    /// KV element type.
    pub kv_type: KvType,
    /// Extra ring slots of local layers.
    pub ring_margin: usize,
    /// Most tokens per forward pass.
    pub max_batch: usize,
}

/// A backend, its cache and its buffers.
pub(crate) struct Engine<'m, B: Backend> {
    backend: B,
    model: ModelRef<'m>,
    cache: KvCache<B::KvStore>,
    state: State<B::Buffer>,
    /// Host copy of up to `state.logit_rows` rows of logits.
    host_logits: Vec<f32>,
}

impl<'m, B: Backend> Engine<'m, B> {
    /// Allocates the cache and buffers of a session on `backend`.
    pub fn new(mut backend: B, model: ModelRef<'m>, sizes: EngineSizes) -> Result<Self, CoreError> {
        let c = model.config;
        let heads = HeadShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim_k: c.head_dim_k,
            head_dim_v: c.head_dim_v,
        };
        let cache = KvCache::new(
            c,
            sizes.ctx_len,
            sizes.kv_type,
            sizes.ring_margin,
            |slots| {
                backend.alloc_kv(KvShape {
                    slots,
                    heads,
                    kv_type: sizes.kv_type,
                })
            },
        )?;
        let max_tokens = sizes.max_batch.clamp(1, sizes.ctx_len);
        let logit_rows = LOGIT_ROWS.min(max_tokens);
        let state = State::new(&mut backend, c, max_tokens, logit_rows)?;
        let host_logits = vec![0.0; logit_rows * c.n_vocab];
        Ok(Engine {
            backend,
            model,
            cache,
            state,
            host_logits,
        })
    }
}

impl<B: Backend> Engine<'_, B> {
    /// Fails for an empty run, a token outside the vocabulary or more tokens than the
    /// cache has room for.
    fn check_tokens(&self, tokens: &[u32]) -> Result<(), CoreError> {
        let n_vocab = self.model.config.n_vocab;
        if tokens.is_empty() {
            return Err(CoreError::EmptyInput);
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(CoreError::TokenOutOfRange { token, n_vocab });
        }
        let (position, ctx_len) = (self.cache.position(), self.cache.ctx_len());
        if tokens.len() > ctx_len - position {
            return Err(CoreError::ContextFull {
                position,
                requested: tokens.len(),
                ctx_len,
            });
        }
        Ok(())
    }

    /// Runs one batch (at most `state.max_tokens` rows), giving the wanted logits to
    /// `sink` (with [`Want::Last`], only if this is the `last` batch of the run).
    fn run_chunk(
        &mut self,
        input: Input<'_>,
        want: Want,
        last: bool,
        sink: Sink<'_>,
        mut trace: Option<&mut Trace>,
    ) -> Result<(), CoreError> {
        let n_vocab = self.model.config.n_vocab;
        let n = input.len(self.model.config.n_embd);
        let pos0 = self.cache.position();
        let keep = match want {
            Want::All => 0..n,
            Want::Last if last => n - 1..n,
            Want::Last => 0..0,
        };
        let (b, m, st) = (&mut self.backend, self.model, &mut self.state);
        let row0 = forward::forward(
            b,
            m,
            &mut self.cache,
            st,
            input,
            keep.clone(),
            trace.as_deref_mut(),
        )?;
        // The kept rows' final states start at row `row0` of the buffers.
        for first in (0..keep.len()).step_by(st.logit_rows) {
            let count = st.logit_rows.min(keep.len() - first);
            let pos = pos0 + keep.start + first;
            let out = &mut self.host_logits[..count * n_vocab];
            forward::logits(
                b,
                m,
                st,
                row0 + first,
                count,
                pos,
                out,
                trace.as_deref_mut(),
            )?;
            for (r, row) in out.chunks_exact(n_vocab).enumerate() {
                sink(pos + r, row);
            }
        }
        Ok(())
    }
}

impl<B: Backend> Runner for Engine<'_, B> {
    fn run(
        &mut self,
        tokens: &[u32],
        want: Want,
        sink: Sink<'_>,
        mut trace: Option<&mut Trace>,
    ) -> Result<(), CoreError> {
        self.check_tokens(tokens)?;
        let n_chunks = tokens.len().div_ceil(self.state.max_tokens);
        for (i, chunk) in tokens.chunks(self.state.max_tokens).enumerate() {
            let last = i + 1 == n_chunks;
            self.run_chunk(Input::Tokens(chunk), want, last, sink, trace.as_deref_mut())?;
        }
        Ok(())
    }

    fn run_image(
        &mut self,
        rows: &[f32],
        want: Want,
        sink: Sink<'_>,
        trace: Option<&mut Trace>,
    ) -> Result<(), ImageError> {
        let hidden = self.model.config.n_embd;
        if rows.is_empty() {
            return Err(ImageError::Empty);
        }
        if !rows.len().is_multiple_of(hidden) {
            return Err(ImageError::Width {
                values: rows.len(),
                hidden,
            });
        }
        if !self.backend.supports_images() {
            return Err(ImageError::Unsupported {
                backend: self.backend.name(),
            });
        }
        let n = rows.len() / hidden;
        let (position, ctx_len) = (self.cache.position(), self.cache.ctx_len());
        if n > ctx_len - position {
            return Err(CoreError::ContextFull {
                position,
                requested: n,
                ctx_len,
            }
            .into());
        }
        // All the image's keys must be stored before its first query attends: one batch,
        // one tile of the rings.
        let max = self.state.max_tokens.min(self.cache.max_tile());
        if n > max {
            return Err(ImageError::TooLong { tokens: n, max });
        }
        self.run_chunk(Input::Image(rows), want, true, sink, trace)?;
        Ok(())
    }

    fn step_greedy(&mut self, token: u32, trace: Option<&mut Trace>) -> Result<u32, CoreError> {
        if trace.is_some() || self.model.config.final_logit_softcap.is_some() {
            let mut pick = 0;
            let sink: Sink<'_> = &mut |_, row| pick = crate::sampling::argmax(row);
            self.run(&[token], Want::Last, sink, trace)?;
            return Ok(pick);
        }
        self.check_tokens(&[token])?;
        let pos = self.cache.position();
        let (b, m, st) = (&mut self.backend, self.model, &mut self.state);
        let row = forward::forward(
            b,
            m,
            &mut self.cache,
            st,
            Input::Tokens(&[token]),
            0..1,
            None,
        )?;
        forward::greedy_pick(b, m, st, row, pos)
    }

    fn cache(&self) -> &dyn CacheInfo {
        &self.cache
    }

    fn truncate(&mut self, pos: usize) -> Result<(), CoreError> {
        self.cache.truncate(pos)
    }

    fn device_memory(&self) -> Option<DeviceMemory> {
        self.backend.device_memory()
    }
}
