//! A session: one conversation's KV cache, scratch buffers and worker threads on top of
//! a shared [`Model`].
//!
//! ```no_run
//! use gemma_core::{KvType, Model, ModelOptions};
//! let model = Model::load("gemma-3-270m-q4_k_m.gguf", ModelOptions::default())?;
//! let mut session = model.session(4096, KvType::F16)?;
//! let logits = session.prefill(&[2, 818, 5279, 529, 7001, 563])?; // <bos>The capital of France is
//! let mut next = argmax(logits);
//! for _ in 0..8 {
//!     next = argmax(session.step(next)?);
//! }
//! # fn argmax(x: &[f32]) -> u32 { 0 }
//! # Ok::<(), gemma_core::CoreError>(())
//! ```
//! Sessions of one model may run on different threads at the same time (each has its own
//! thread pool).

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaBackend;
use crate::backend::DeviceMemory;
use crate::engine::{Engine, EngineSizes, Runner, Sink, Want};
use crate::forward::ModelRef;
use crate::image::ImageError;
use crate::kv_cache::KvType;
use crate::trace::Trace;
use crate::{CoreError, Device, Model};

/// A conversation with the model: tokens go in, logits come out, the KV cache remembers.
pub struct Session<'m> {
    model: &'m Model,
    runner: Box<dyn Runner + 'm>,
    pool: rayon::ThreadPool,
    /// Whether the runner drives a GPU: its steps run on the calling thread (the pool's
    /// hand-off to a worker and back would add two thread wake-ups to every decode step).
    on_gpu: bool,
    logits: Vec<f32>,
    trace: Option<Trace>,
}

impl<'m> Session<'m> {
    /// A session of `ctx_len` tokens with a `kv_type` cache on the model's device (see
    /// [`Model::session`]); a CUDA device that cannot be opened is a
    /// [`CoreError::DeviceUnavailable`], one with less free memory than the session's
    /// `device_bytes` (weights, KV cache and buffers) a [`CoreError::DeviceOutOfMemory`].
    pub(crate) fn new(
        model: &'m Model,
        ctx_len: usize,
        kv_type: KvType,
        device_bytes: u64,
    ) -> Result<Session<'m>, CoreError> {
        let options = model.options();
        let sizes = EngineSizes {
            ctx_len,
            kv_type,
            ring_margin: options.ring_margin,
            max_batch: options.max_batch,
        };
        let m = ModelRef {
            config: model.config(),
            weights: model.weights(),
        };
        let bytes = model.gguf().bytes();
        let runner: Box<dyn Runner + 'm> = match options.device {
            Device::Cpu => {
                let backend = CpuBackend::new(bytes).flash_attention(options.flash_attention);
                Box::new(Engine::new(backend, m, sizes)?)
            }
            Device::Cuda(ordinal) => {
                let backend =
                    CudaBackend::new(bytes, ordinal)?.flash_attention(options.flash_attention);
                backend.check_fits(device_bytes)?;
                Box::new(Engine::new(backend, m, sizes)?)
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .build()?;
        Ok(Session {
            model,
            runner,
            pool,
            on_gpu: matches!(options.device, Device::Cuda(_)),
            logits: Vec::new(),
            trace: None,
        })
    }

    /// Runs `tokens` at the current position and returns the logits after the last one
    /// (`n_vocab` values: the prediction for the next position).
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32], CoreError> {
        self.run(tokens, Want::Last, &mut |_, _| {})?;
        Ok(&self.logits)
    }

    /// Like [`Session::prefill`], and also gives the logits after every token to `each`
    /// as `(position, logits)`, in order (row `i` of a prompt's logits = after token `i`).
    pub fn prefill_each(
        &mut self,
        tokens: &[u32],
        mut each: impl FnMut(usize, &[f32]) + Send,
    ) -> Result<&[f32], CoreError> {
        self.run(tokens, Want::All, &mut each)?;
        Ok(&self.logits)
    }

    /// Runs the soft tokens of one image (`rows × n_embd` values, row-major: the output of
    /// the vision projector, not scaled) at the current position and returns the logits
    /// after the last one. The image's tokens attend to each other (bidirectionally) and
    /// to everything before; the tokens after see the whole image. The image runs as one
    /// batch: it must fit `max_batch` and the local layers' rings (`ring_margin + 1`),
    /// else [`ImageError::TooLong`]. Wrap it in [`crate::image::START_OF_IMAGE`] and
    /// [`crate::image::END_OF_IMAGE`] tokens.
    pub fn prefill_image(&mut self, rows: &[f32]) -> Result<&[f32], ImageError> {
        self.run_image(rows, Want::Last, &mut |_, _| {})?;
        Ok(&self.logits)
    }

    /// Like [`Session::prefill_image`], and also gives the logits after every soft token
    /// to `each` as `(position, logits)`, in order.
    pub fn prefill_image_each(
        &mut self,
        rows: &[f32],
        mut each: impl FnMut(usize, &[f32]) + Send,
    ) -> Result<&[f32], ImageError> {
        self.run_image(rows, Want::All, &mut each)?;
        Ok(&self.logits)
    }

    /// Runs one token (a decode step) and returns the logits after it.
    pub fn step(&mut self, token: u32) -> Result<&[f32], CoreError> {
        self.prefill(&[token])
    }

    /// Runs one token (a decode step) and returns the greedy pick after it: the id that
    /// [`crate::sampling::argmax`] picks from the logits [`Session::step`] would return. On a
    /// GPU the pick is made on the device and only the id is read back (the logits, 1 MiB
    /// for Gemma 3's vocabulary, stay there). [`Session::logits`] is empty afterwards.
    pub fn step_greedy(&mut self, token: u32) -> Result<u32, CoreError> {
        self.logits.clear();
        let (runner, trace) = (&mut self.runner, &mut self.trace);
        on_session_threads(&self.pool, self.on_gpu, || {
            runner.step_greedy(token, trace.as_mut())
        })
    }

    /// The logits of the last token run (empty before the first run and after a truncation).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Tokens in the cache; the next token goes to this position.
    pub fn position(&self) -> usize {
        self.runner.cache().position()
    }

    /// The context length: the most tokens the session holds.
    pub fn ctx_len(&self) -> usize {
        self.runner.cache().ctx_len()
    }

    /// Goes back to position `pos` (forgets the tokens from there on), e.g. to edit a
    /// chat turn or reuse a prompt prefix. Always works for the last `ring_margin + 1`
    /// tokens and, on a model without local layers or before the rings wrap, for any
    /// `pos`; otherwise fails with [`CoreError::TruncateTooFar`] and changes nothing.
    pub fn truncate(&mut self, pos: usize) -> Result<(), CoreError> {
        self.runner.truncate(pos)?;
        self.logits.clear();
        Ok(())
    }

    /// Whether [`Session::truncate`] to `pos` would succeed.
    pub fn can_truncate(&self, pos: usize) -> bool {
        self.runner.cache().check_truncate(pos).is_ok()
    }

    /// Bytes allocated for the KV cache.
    pub fn kv_bytes(&self) -> u64 {
        self.runner.cache().bytes()
    }

    /// Device memory held by the session's GPU backend (weights uploaded so far — all of
    /// them after the first run —, KV cache, buffers) and in use on the device; `None` on
    /// the CPU.
    pub fn device_memory(&self) -> Option<DeviceMemory> {
        self.runner.device_memory()
    }

    /// Bytes of device memory the session's GPU backend holds (see
    /// [`Session::device_memory`]); `None` on the CPU.
    pub fn vram_bytes(&self) -> Option<u64> {
        self.device_memory().map(|m| m.allocated)
    }

    /// Element type of the KV cache.
    pub fn kv_type(&self) -> KvType {
        self.runner.cache().kv_type()
    }

    /// Worker threads of this session.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Attaches a trace that records named activations of the following runs (or
    /// detaches it with `None`); returns the previous one.
    pub fn set_trace(&mut self, trace: Option<Trace>) -> Option<Trace> {
        std::mem::replace(&mut self.trace, trace)
    }

    /// The attached trace.
    pub fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }

    fn run(
        &mut self,
        tokens: &[u32],
        want: Want,
        each: &mut (dyn FnMut(usize, &[f32]) + Send),
    ) -> Result<(), CoreError> {
        self.run_with(tokens.len(), each, |runner, sink, trace| {
            runner.run(tokens, want, sink, trace)
        })
    }

    fn run_image(
        &mut self,
        rows: &[f32],
        want: Want,
        each: &mut (dyn FnMut(usize, &[f32]) + Send),
    ) -> Result<(), ImageError> {
        let n = rows.len() / self.model.config().n_embd.max(1);
        self.run_with(n, each, |runner, sink, trace| {
            runner.run_image(rows, want, sink, trace)
        })
    }

    /// Runs `go` (which runs `n` rows) in the session's pool, keeping the logits of the
    /// last row and giving every row's to `each`.
    fn run_with<E>(
        &mut self,
        n: usize,
        each: &mut (dyn FnMut(usize, &[f32]) + Send),
        go: impl FnOnce(&mut (dyn Runner + 'm), Sink<'_>, Option<&mut Trace>) -> Result<(), E> + Send,
    ) -> Result<(), E>
    where
        E: Send,
    {
        let Session {
            runner,
            pool,
            on_gpu,
            logits,
            trace,
            ..
        } = self;
        let last = n.checked_sub(1).map(|i| runner.cache().position() + i);
        logits.clear();
        on_session_threads(pool, *on_gpu, || {
            go(
                runner.as_mut(),
                &mut |pos, row| {
                    if Some(pos) == last {
                        logits.clear();
                        logits.extend_from_slice(row);
                    }
                    each(pos, row);
                },
                trace.as_mut(),
            )
        })
    }
}

/// Runs `go` in `pool` for a CPU session (its kernels split their work over the pool's
/// threads), on the calling thread for a GPU one (the GPU does the work: a hand-off to the
/// pool and back would only add two thread wake-ups to every step).
fn on_session_threads<R: Send>(
    pool: &rayon::ThreadPool,
    on_gpu: bool,
    go: impl FnOnce() -> R + Send,
) -> R {
    if on_gpu {
        go()
    } else {
        pool.install(go)
    }
}
