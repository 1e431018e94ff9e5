//! The error type of the model, its cache and its sessions.

use gemma_gguf::{GgmlType, GgufError};
use gemma_kernels::KernelError;

/// Everything loading a model or running it can reject.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The file could not be read or is not a valid GGUF file (this includes a missing
    /// metadata key, `GgufError::MissingKey`, and a key of the wrong type).
    #[error(transparent)]
    Gguf(#[from] GgufError),

    /// A kernel rejected its input (an unsupported tensor type, a size that does not fit).
    #[error(transparent)]
    Kernel(#[from] KernelError),

    /// `general.architecture` is not `gemma3`.
    #[error("unsupported architecture `{found}`: this engine runs `gemma3` models")]
    WrongArchitecture {
        /// The architecture the file names.
        found: String,
    },

    /// A hyper-parameter is present but unusable (zero, inconsistent with another one).
    #[error("invalid hyper-parameter `{key}` = {value}: {reason}")]
    InvalidHyperparameter {
        /// The metadata key (or the name of the derived quantity).
        key: String,
        /// The value found, as text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A tensor the model needs is not in the file.
    #[error("tensor `{name}` is missing from the file")]
    MissingTensor {
        /// Its GGUF name.
        name: String,
    },

    /// A tensor's shape disagrees with the metadata.
    #[error("tensor `{name}` has shape {found:?}, the metadata implies {expected:?}")]
    TensorShape {
        /// Its GGUF name.
        name: String,
        /// The `ne` dimensions the hyper-parameters imply.
        expected: Vec<u64>,
        /// The `ne` dimensions in the file.
        found: Vec<u64>,
    },

    /// A tensor has a type this role cannot use (norm vectors must be F32; matrices
    /// must have a kernel).
    #[error("tensor `{name}` has type {ty}, which is not supported for this tensor")]
    UnsupportedTensorType {
        /// Its GGUF name.
        name: String,
        /// Its ggml type.
        ty: GgmlType,
    },

    /// A tensor's data is not aligned for zero-copy use as `f32`.
    #[error("tensor `{name}` is not 4-byte aligned in memory")]
    MisalignedTensor {
        /// Its GGUF name.
        name: String,
    },

    /// A token id is not in the vocabulary.
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    TokenOutOfRange {
        /// The id given.
        token: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },

    /// An empty token list was given where tokens are needed.
    #[error("no tokens given")]
    EmptyInput,

    /// The tokens do not fit into the session's context.
    #[error("context full: {requested} more token(s) at position {position} exceed the context of {ctx_len}")]
    ContextFull {
        /// Tokens already in the cache.
        position: usize,
        /// Tokens asked to add.
        requested: usize,
        /// The session's context length.
        ctx_len: usize,
    },

    /// A session context length that is zero or larger than the model's.
    #[error("context length {requested} is not in 1..={max} (the model's context length)")]
    ContextLength {
        /// The length asked for.
        requested: usize,
        /// The model's `context_length`.
        max: usize,
    },

    /// A truncation point after the current position.
    #[error("cannot truncate to position {requested}: the cache only holds {position} token(s)")]
    TruncateBeyondEnd {
        /// The position asked for.
        requested: usize,
        /// The current position.
        position: usize,
    },

    /// A truncation point so far back that a sliding-window ring no longer holds the
    /// keys the next token would need.
    #[error(
        "cannot truncate to position {requested}: layer {layer}'s sliding-window ring only \
         holds positions from {oldest_kept} on, and position {requested} needs them from \
         {needed_from} (increase the ring margin or re-process the prompt)"
    )]
    TruncateTooFar {
        /// The position asked for.
        requested: usize,
        /// The first local layer that cannot follow.
        layer: usize,
        /// The oldest position still in its ring.
        oldest_kept: usize,
        /// The oldest position the next token would attend to.
        needed_from: usize,
    },

    /// A sliding-window ring lost keys the next token needs (a call failed half-way
    /// through writing); only going back far enough, e.g. to 0, recovers.
    #[error("layer {layer}'s sliding-window cache no longer holds the keys position {position} needs; truncate and re-process the tokens")]
    KvCacheLost {
        /// The local layer.
        layer: usize,
        /// The current position.
        position: usize,
    },

    /// A buffer could not be allocated.
    #[error("cannot allocate {bytes} bytes for {what}")]
    OutOfMemory {
        /// What the buffer is for.
        what: &'static str,
        /// Its size.
        bytes: u64,
    },

    /// The GPU has too little free memory for what a session puts on it.
    #[error(
        "{what} on {device}: {:.1} MiB needed, the device has {:.1} MiB free of {:.1} MiB \
         (a shorter context or a smaller quantization needs less)",
        mib(*.needed),
        mib(*.free),
        mib(*.total)
    )]
    DeviceOutOfMemory {
        /// What did not fit.
        what: &'static str,
        /// The device, e.g. `cuda:0`.
        device: String,
        /// Bytes it needs.
        needed: u64,
        /// Free device memory at the time.
        free: u64,
        /// The device's memory.
        total: u64,
    },

    /// The KV cache type cannot store this model's heads.
    #[error("KV cache type {kv_type} needs head dimensions divisible by {block}, the model has {head_dim}")]
    KvTypeUnsupported {
        /// The cache type asked for.
        kv_type: &'static str,
        /// Its block size.
        block: usize,
        /// The model's key or value head dimension.
        head_dim: usize,
    },

    /// The requested device is not available in this build or on this machine.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// The worker thread pool could not be created.
    #[error("cannot create the thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}

/// Bytes in MiB, for messages.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
