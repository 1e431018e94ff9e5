//! A loaded model: the memory-mapped file, its hyper-parameters and its bound weights.
//! Loading maps the file and binds tensors by name; nothing is copied or dequantized.
//! A [`Model`] is `Send + Sync`: share it (by reference or `Arc`) between sessions.

use crate::kv_cache::{KvType, DEFAULT_RING_MARGIN};
use crate::{Config, CoreError, Session, Tokenizer, TokenizerError, Weights};
use gemma_gguf::GgufFile;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

/// Tokens per forward pass of a prefill, by default (llama.cpp's `n_ubatch`).
pub const DEFAULT_MAX_BATCH: usize = 512;

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU kernels.
    #[default]
    Cpu,
    /// A CUDA GPU (by ordinal).
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The error of parsing a [`Device`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{0}` (expected cpu, cuda or cuda:N)")]
pub struct ParseDeviceError(pub String);

impl FromStr for Device {
    type Err = ParseDeviceError;

    /// `cpu`, `cuda` (GPU 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Device, ParseDeviceError> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| ParseDeviceError(s.to_owned())),
        }
    }
}

/// How to load and run a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// Worker threads of each session (0: one per core, or `RAYON_NUM_THREADS`).
    pub threads: usize,
    /// Where sessions run (a CUDA device is opened when a session is created).
    pub device: Device,
    /// Ring slots of each local layer beyond its sliding window: a session can always
    /// go back `ring_margin + 1` tokens, and a prefill stores and attends
    /// `ring_margin + 1` tokens at a time in local layers (at least 0).
    pub ring_margin: usize,
    /// Most tokens per forward pass of a prefill (longer prompts are split); the
    /// scratch memory of a session grows with it.
    pub max_batch: usize,
    /// Round attention as llama.cpp's CPU flash attention does (llama.cpp's default,
    /// `-fa on`); `false` as llama.cpp with `-fa off`. Both are exact softmax attention
    /// up to rounding (see `backend::AttentionNumerics`). The CUDA backend reproduces the
    /// flash rounding where it is the one-chunk kernel's over an F16 cache (batches under
    /// 64 rows, one-token steps up to position 256) and sums in f32 elsewhere.
    pub flash_attention: bool,
}

impl Default for ModelOptions {
    fn default() -> ModelOptions {
        ModelOptions {
            threads: 0,
            device: Device::Cpu,
            ring_margin: DEFAULT_RING_MARGIN,
            max_batch: DEFAULT_MAX_BATCH,
            flash_attention: true,
        }
    }
}

/// A Gemma 3 model ready to run.
pub struct Model {
    file: GgufFile,
    config: Config,
    weights: Weights,
    options: ModelOptions,
    /// Built on first use by [`Model::tokenizer`] (262144 pieces: not at load time).
    tokenizer: OnceLock<Tokenizer>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("file_bytes", &self.file.bytes().len())
            .field("config", &self.config)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Maps the GGUF file at `path` and binds its weights.
    pub fn load(path: impl AsRef<Path>, options: ModelOptions) -> Result<Model, CoreError> {
        Model::from_gguf(GgufFile::open(path)?, options)
    }

    /// Binds the weights of an opened GGUF file.
    pub fn from_gguf(file: GgufFile, options: ModelOptions) -> Result<Model, CoreError> {
        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| CoreError::MissingTensor {
                name: "token_embd.weight".to_owned(),
            })?;
        let n_vocab = usize::try_from(embd.n_rows()).unwrap_or(usize::MAX);
        let config = Config::from_metadata(file.metadata(), n_vocab)?;
        let weights = Weights::bind(&file, &config)?;
        Ok(Model {
            file,
            config,
            weights,
            options,
            tokenizer: OnceLock::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The weights, as ranges of the file.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The GGUF file (metadata, tokenizer, raw tensors).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The tokenizer of the file's vocabulary, built once on first use and shared by
    /// every caller.
    pub fn tokenizer(&self) -> Result<&Tokenizer, TokenizerError> {
        if let Some(tokenizer) = self.tokenizer.get() {
            return Ok(tokenizer);
        }
        let built = Tokenizer::from_gguf(&self.file)?;
        Ok(self.tokenizer.get_or_init(|| built))
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// A new session of `ctx_len` tokens (at most the model's `context_length`) whose KV
    /// cache stores `kv_type`; the cache is allocated now ([`Session::kv_bytes`]).
    /// A session whose cache and buffers would not fit in the memory available is
    /// refused before anything is allocated: with [`CoreError::OutOfMemory`] on the CPU,
    /// with [`CoreError::DeviceOutOfMemory`] on a GPU whose free memory is less than the
    /// planner's prediction of its weights, cache and buffers.
    pub fn session(&self, ctx_len: usize, kv_type: KvType) -> Result<Session<'_>, CoreError> {
        let plan = crate::memory::check_session_fits(self, ctx_len, kv_type)?;
        Session::new(
            self,
            ctx_len,
            kv_type,
            plan.weights_bytes + plan.session_bytes(),
        )
    }
}
