//! The hyper-parameters of a Gemma 3 model, read from the GGUF metadata (`gemma3.*` keys).
//!
//! The rules are llama.cpp's (`src/llama-model.cpp`, `src/models/gemma3.cpp`), checked
//! against the reference logits in `../shared/fixtures`:
//! - layer `il` is local (sliding window) iff `il % 6 < 5`, unless the file has
//!   `gemma3.attention.sliding_window_pattern` (an integer period or a per-layer bool array);
//!   without a `sliding_window` every layer is global;
//! - local layers use RoPE base `rope.freq_base_swa` (default 10 000) and no scaling, global
//!   layers `rope.freq_base` with linear scaling `1 / rope.scaling.factor`;
//! - queries are scaled by `1/sqrt(head_dim)`, except the 27B (62 layers), which uses
//!   `1/sqrt(n_embd / n_head)` (its `query_pre_attn_scalar`; the file has no key for it).

use crate::CoreError;
use gemma_gguf::keys::gemma3 as key;
use gemma_gguf::{GgufError, Metadata};

/// The architecture name this engine runs.
pub const ARCHITECTURE: &str = "gemma3";

/// Default RoPE base of local layers when the file has no `rope.freq_base_swa`.
pub const DEFAULT_LOCAL_ROPE_BASE: f32 = 10_000.0;

/// Default RoPE base of global layers when the file has no `rope.freq_base` (llama.cpp's).
pub const DEFAULT_ROPE_BASE: f32 = 10_000.0;

/// Period of the local/global pattern when the file does not give one.
pub const DEFAULT_SLIDING_WINDOW_PERIOD: usize = 6;

/// Layer count of the 27B model, the one size with another attention scale.
const LAYERS_27B: usize = 62;

/// RoPE parameters of one layer: `theta_i = pos * freq_scale * freq_base^(-2i/head_dim)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// The base (10 000 for local layers, 1 000 000 for global ones).
    pub freq_base: f32,
    /// Position multiplier: 1, or `1/factor` under linear scaling.
    pub freq_scale: f32,
}

/// What one layer attends to and how it rotates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerConfig {
    /// `Some(w)`: a local layer, a query at `p` sees keys `p-w+1 ..= p`; `None`: global.
    pub window: Option<usize>,
    /// Its RoPE parameters.
    pub rope: Rope,
}

impl LayerConfig {
    /// True for a sliding-window (local) layer.
    pub fn is_local(&self) -> bool {
        self.window.is_some()
    }
}

/// Every hyper-parameter of the model, in the order the forward pass uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Hidden size, the width of the residual stream (`gemma3.embedding_length`).
    pub n_embd: usize,
    /// Number of transformer layers (`gemma3.block_count`).
    pub n_layer: usize,
    /// Hidden size of the GeGLU feed-forward network (`gemma3.feed_forward_length`).
    pub n_ff: usize,
    /// Query heads (`gemma3.attention.head_count`).
    pub n_head: usize,
    /// Key/value heads, `n_head / n_head_kv` queries share one (`attention.head_count_kv`).
    pub n_head_kv: usize,
    /// Dimension of a query/key head (`attention.key_length`, default `n_embd / n_head`).
    pub head_dim_k: usize,
    /// Dimension of a value head (`attention.value_length`, default `head_dim_k`).
    pub head_dim_v: usize,
    /// Vocabulary size: the rows of `token_embd.weight`.
    pub n_vocab: usize,
    /// Longest context the model was trained for (`gemma3.context_length`).
    pub context_length: usize,
    /// Epsilon of every RMSNorm (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Window of the local layers (`attention.sliding_window`), `None` if all are global.
    pub sliding_window: Option<usize>,
    /// Per layer: local or global, and its RoPE parameters.
    pub layers: Vec<LayerConfig>,
    /// Factor applied to the queries before `Q·K` (see the module docs).
    pub attention_scale: f32,
    /// Factor applied to the token embeddings: `sqrt(n_embd)`.
    pub embedding_scale: f32,
    /// `final_logit_softcapping`: logits become `c * tanh(logits / c)` (absent in Gemma 3).
    pub final_logit_softcap: Option<f32>,
}

impl Config {
    /// Reads and validates the hyper-parameters; `n_vocab` comes from the embedding
    /// table's shape (checked again when the weights are bound).
    pub fn from_metadata(meta: &Metadata, n_vocab: usize) -> Result<Config, CoreError> {
        let arch = meta.string(gemma_gguf::keys::GENERAL_ARCHITECTURE)?;
        if arch != ARCHITECTURE {
            return Err(CoreError::WrongArchitecture {
                found: arch.to_owned(),
            });
        }
        let n_embd = positive(meta, key::EMBEDDING_LENGTH)?;
        let n_layer = positive(meta, key::BLOCK_COUNT)?;
        let n_ff = positive(meta, key::FEED_FORWARD_LENGTH)?;
        let n_head = positive(meta, key::HEAD_COUNT)?;
        let n_head_kv = optional_positive(meta, key::HEAD_COUNT_KV)?.unwrap_or(n_head);
        let head_dim_k = optional_positive(meta, key::KEY_LENGTH)?.unwrap_or(n_embd / n_head);
        let head_dim_v = optional_positive(meta, key::VALUE_LENGTH)?.unwrap_or(head_dim_k);
        let context_length = positive(meta, key::CONTEXT_LENGTH)?;
        let rms_eps = meta.f32(key::RMS_EPSILON)?;
        let sliding_window = optional_positive(meta, key::SLIDING_WINDOW)?;

        check(
            n_head % n_head_kv == 0,
            key::HEAD_COUNT_KV,
            n_head_kv,
            "must divide head_count",
        )?;
        check(
            head_dim_k > 0 && head_dim_v > 0,
            key::KEY_LENGTH,
            head_dim_k.min(head_dim_v),
            "head dimensions must be positive",
        )?;
        check(
            head_dim_k % 2 == 0,
            key::KEY_LENGTH,
            head_dim_k,
            "RoPE needs an even head dimension",
        )?;
        check(
            rms_eps.is_finite() && rms_eps > 0.0,
            key::RMS_EPSILON,
            rms_eps,
            "must be a positive number",
        )?;
        check(
            n_vocab > 0,
            "n_vocab",
            n_vocab,
            "token_embd.weight has no rows",
        )?;

        let global_rope = Rope {
            freq_base: optional_f32(meta, key::ROPE_FREQ_BASE)?.unwrap_or(DEFAULT_ROPE_BASE),
            freq_scale: rope_freq_scale(meta)?,
        };
        let local_rope = Rope {
            freq_base: optional_f32(meta, key::ROPE_FREQ_BASE_SWA)?
                .unwrap_or(DEFAULT_LOCAL_ROPE_BASE),
            freq_scale: 1.0,
        };
        for (name, base) in [
            (key::ROPE_FREQ_BASE, global_rope.freq_base),
            (key::ROPE_FREQ_BASE_SWA, local_rope.freq_base),
        ] {
            check(
                base.is_finite() && base > 0.0,
                name,
                base,
                "must be a positive number",
            )?;
        }

        let local = local_layers(meta, n_layer, sliding_window.is_some())?;
        let layers = local
            .iter()
            .map(|&is_local| match (is_local, sliding_window) {
                (true, Some(w)) => LayerConfig {
                    window: Some(w),
                    rope: local_rope,
                },
                _ => LayerConfig {
                    window: None,
                    rope: global_rope,
                },
            })
            .collect();

        let attention_scale = if n_layer == LAYERS_27B {
            1.0 / ((n_embd / n_head) as f32).sqrt()
        } else {
            1.0 / (head_dim_k as f32).sqrt()
        };
        let final_logit_softcap =
            optional_f32(meta, key::FINAL_LOGIT_SOFTCAPPING)?.filter(|&c| c != 0.0);
        if let Some(c) = final_logit_softcap {
            check(
                c.is_finite() && c > 0.0,
                key::FINAL_LOGIT_SOFTCAPPING,
                c,
                "must be a positive number",
            )?;
        }

        Ok(Config {
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_vocab,
            context_length,
            rms_eps,
            sliding_window,
            layers,
            attention_scale,
            embedding_scale: (n_embd as f32).sqrt(),
            final_logit_softcap,
        })
    }

    /// Width of all query heads together (`n_head * head_dim_k`).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim_k
    }

    /// Width of all key heads together (`n_head_kv * head_dim_k`).
    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    /// Width of all value heads together (`n_head_kv * head_dim_v`).
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// Width of the attention output before `attn_output` (`n_head * head_dim_v`).
    pub fn attn_out_dim(&self) -> usize {
        self.n_head * self.head_dim_v
    }

    /// Query heads per key/value head.
    pub fn gqa_group(&self) -> usize {
        self.n_head / self.n_head_kv
    }
}

/// Which layers are local: llama.cpp's `set_swa_pattern(n)` (`il % n < n - 1`), with the
/// period or the per-layer flags from `sliding_window_pattern` when the file has it.
fn local_layers(meta: &Metadata, n_layer: usize, has_window: bool) -> Result<Vec<bool>, CoreError> {
    if !has_window {
        return Ok(vec![false; n_layer]);
    }
    let pattern = key::SLIDING_WINDOW_PATTERN;
    let period = match meta.get(pattern) {
        None => DEFAULT_SLIDING_WINDOW_PERIOD,
        Some(value) if value.as_array().is_some() => {
            let flags = meta.bool_array(pattern)?;
            check(
                flags.len() == n_layer,
                pattern,
                flags.len(),
                "needs one flag per layer",
            )?;
            return Ok(flags);
        }
        Some(_) => meta.u32(pattern)? as usize,
    };
    Ok((0..n_layer)
        .map(|il| period == 0 || il % period < period - 1)
        .collect())
}

/// `1 / rope.scaling.factor` for linear scaling (or a factor without a type, as llama.cpp
/// reads it), 1 for `none` or no factor; other scaling types are rejected.
fn rope_freq_scale(meta: &Metadata) -> Result<f32, CoreError> {
    let kind = match meta.get(key::ROPE_SCALING_TYPE) {
        Some(_) => Some(meta.string(key::ROPE_SCALING_TYPE)?),
        None => None,
    };
    let factor = optional_f32(meta, key::ROPE_SCALING_FACTOR)?;
    match (kind, factor) {
        (Some("none"), _) | (_, None) | (Some("linear") | None, Some(0.0)) => Ok(1.0),
        (Some("linear") | None, Some(f)) => {
            check(
                f.is_finite() && f > 0.0,
                key::ROPE_SCALING_FACTOR,
                f,
                "must be a positive number",
            )?;
            Ok(1.0 / f)
        }
        (Some(other), Some(_)) => Err(CoreError::InvalidHyperparameter {
            key: key::ROPE_SCALING_TYPE.to_owned(),
            value: other.to_owned(),
            reason: "only linear RoPE scaling is supported for Gemma 3",
        }),
    }
}

/// A required integer key that must be > 0.
fn positive(meta: &Metadata, name: &str) -> Result<usize, CoreError> {
    let v = meta.u64(name)?;
    check(v > 0, name, v, "must be positive")?;
    usize::try_from(v).map_err(|_| invalid(name, v, "does not fit this machine's address size"))
}

/// An optional integer key that must be > 0 when present (0 reads as absent, as in llama.cpp).
fn optional_positive(meta: &Metadata, name: &str) -> Result<Option<usize>, CoreError> {
    match meta.u64(name) {
        Ok(0) => Ok(None),
        Ok(v) => usize::try_from(v)
            .map(Some)
            .map_err(|_| invalid(name, v, "does not fit this machine's address size")),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An optional float key.
fn optional_f32(meta: &Metadata, name: &str) -> Result<Option<f32>, CoreError> {
    match meta.f32(name) {
        Ok(v) => Ok(Some(v)),
        Err(GgufError::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn check(
    ok: bool,
    name: &str,
    value: impl ToString,
    reason: &'static str,
) -> Result<(), CoreError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(name, value, reason))
    }
}

fn invalid(name: &str, value: impl ToString, reason: &'static str) -> CoreError {
    CoreError::InvalidHyperparameter {
        key: name.to_owned(),
        value: value.to_string(),
        reason,
    }
}
