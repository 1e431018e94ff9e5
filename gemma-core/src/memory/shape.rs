//! What the planner knows about a model: its [`Config`] and its tensor table (name, type,
//! shape, bytes), read from a GGUF file or built for an official Gemma 3 size and a
//! quantization recipe.

use super::quant::{Quant, RecipeModel};
use crate::config::{LayerConfig, Rope, DEFAULT_LOCAL_ROPE_BASE, DEFAULT_SLIDING_WINDOW_PERIOD};
use crate::{Config, CoreError};
use gemma_gguf::{keys, GgmlType, GgufFile};
use std::fmt;
use std::str::FromStr;

/// Vocabulary of every released Gemma 3 model.
pub const GEMMA3_VOCAB: usize = 262_144;

/// Bytes of a released Gemma 3 GGUF file before its tensor table: header and metadata,
/// almost all of it the tokenizer (262 144 pieces with scores and types). Measured on the
/// real 270M file (`data_offset` 6 525 120 minus its 236-entry tensor table of 13 945 bytes).
pub const GEMMA3_METADATA_BYTES: u64 = 6_511_175;

/// Alignment of tensor data in GGUF files (`general.alignment` default).
const ALIGNMENT: u64 = 32;

/// An official Gemma 3 size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelSize {
    /// Gemma 3 270M.
    S270M,
    /// Gemma 3 1B.
    S1B,
    /// Gemma 3 4B.
    S4B,
    /// Gemma 3 12B.
    S12B,
    /// Gemma 3 27B.
    S27B,
}

/// The shape of a released model.
struct Released {
    size: ModelSize,
    name: &'static str,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    n_ff: usize,
    sliding_window: usize,
    context_length: usize,
    /// Linear RoPE scaling factor of the global layers.
    rope_factor: f32,
}

#[rustfmt::skip]
const SIZES: [Released; 5] = [
    Released { size: ModelSize::S270M, name: "270m", n_embd: 640, n_layer: 18, n_head: 4, n_head_kv: 1, head_dim: 256, n_ff: 2048, sliding_window: 512, context_length: 32_768, rope_factor: 1.0 },
    Released { size: ModelSize::S1B, name: "1b", n_embd: 1152, n_layer: 26, n_head: 4, n_head_kv: 1, head_dim: 256, n_ff: 6912, sliding_window: 512, context_length: 32_768, rope_factor: 1.0 },
    Released { size: ModelSize::S4B, name: "4b", n_embd: 2560, n_layer: 34, n_head: 8, n_head_kv: 4, head_dim: 256, n_ff: 10_240, sliding_window: 1024, context_length: 131_072, rope_factor: 8.0 },
    Released { size: ModelSize::S12B, name: "12b", n_embd: 3840, n_layer: 48, n_head: 16, n_head_kv: 8, head_dim: 256, n_ff: 15_360, sliding_window: 1024, context_length: 131_072, rope_factor: 8.0 },
    Released { size: ModelSize::S27B, name: "27b", n_embd: 5376, n_layer: 62, n_head: 32, n_head_kv: 16, head_dim: 128, n_ff: 21_504, sliding_window: 1024, context_length: 131_072, rope_factor: 8.0 },
];

impl ModelSize {
    /// Every size, smallest first.
    pub fn all() -> impl Iterator<Item = ModelSize> {
        SIZES.iter().map(|r| r.size)
    }

    fn released(self) -> &'static Released {
        // SIZES holds every variant (checked by a test); the first row is a harmless default.
        &SIZES[SIZES.iter().position(|r| r.size == self).unwrap_or(0)]
    }

    /// Lower-case name ("12b").
    pub fn name(self) -> &'static str {
        self.released().name
    }

    /// The hyper-parameters of the released model (GGUF conventions, as llama.cpp's
    /// converter writes them).
    pub fn config(self) -> Config {
        let r = self.released();
        let (n_embd, n_head, head_dim, window) = (r.n_embd, r.n_head, r.head_dim, r.sliding_window);
        let global = Rope {
            freq_base: 1_000_000.0,
            freq_scale: 1.0 / r.rope_factor,
        };
        let local = Rope {
            freq_base: DEFAULT_LOCAL_ROPE_BASE,
            freq_scale: 1.0,
        };
        let period = DEFAULT_SLIDING_WINDOW_PERIOD;
        let layers = (0..r.n_layer)
            .map(|il| match il % period < period - 1 {
                true => LayerConfig {
                    window: Some(window),
                    rope: local,
                },
                false => LayerConfig {
                    window: None,
                    rope: global,
                },
            })
            .collect();
        let query_scale_dim = if self == ModelSize::S27B {
            n_embd / n_head
        } else {
            head_dim
        };
        Config {
            n_embd,
            n_layer: r.n_layer,
            n_ff: r.n_ff,
            n_head,
            n_head_kv: r.n_head_kv,
            head_dim_k: head_dim,
            head_dim_v: head_dim,
            n_vocab: GEMMA3_VOCAB,
            context_length: r.context_length,
            rms_eps: 1e-6,
            sliding_window: Some(window),
            layers,
            attention_scale: 1.0 / (query_scale_dim as f32).sqrt(),
            embedding_scale: (n_embd as f32).sqrt(),
            final_logit_softcap: None,
        }
    }
}

impl fmt::Display for ModelSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`ModelSize`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown model size `{0}` (expected 270m, 1b, 4b, 12b or 27b)")]
pub struct ParseModelSizeError(pub String);

impl FromStr for ModelSize {
    type Err = ParseModelSizeError;

    /// "270m", "1b", ... (case-insensitive).
    fn from_str(s: &str) -> Result<ModelSize, ParseModelSizeError> {
        SIZES
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(s))
            .map(|r| r.size)
            .ok_or_else(|| ParseModelSizeError(s.to_owned()))
    }
}

/// One tensor as a file stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// GGUF name.
    pub name: String,
    /// ggml type.
    pub ty: GgmlType,
    /// ggml dimensions (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// Bytes of its data.
    pub bytes: u64,
}

impl TensorSpec {
    /// A tensor of type `ty` and shape `dims`; `None` if its rows are not whole blocks.
    pub fn new(name: String, ty: GgmlType, dims: Vec<u64>) -> Option<TensorSpec> {
        let rows = dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        let bytes = ty.row_bytes(*dims.first()?)?.checked_mul(rows)?;
        Some(TensorSpec {
            name,
            ty,
            dims,
            bytes,
        })
    }
}

/// A model as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    /// Short description ("12b Q4_K_M", or the file's name and type).
    pub label: String,
    /// The hyper-parameters.
    pub config: Config,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorSpec>,
    /// The rest of the file: header, metadata (mostly the tokenizer), tensor table, padding.
    pub metadata_bytes: u64,
}

impl ModelShape {
    /// The shape of an opened GGUF file (its config validated as [`crate::Model`] does).
    pub fn from_gguf(file: &GgufFile) -> Result<ModelShape, CoreError> {
        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| CoreError::MissingTensor {
                name: "token_embd.weight".to_owned(),
            })?;
        let n_vocab = usize::try_from(embd.n_rows()).unwrap_or(usize::MAX);
        let config = Config::from_metadata(file.metadata(), n_vocab)?;
        let tensors: Vec<TensorSpec> = file
            .tensors()
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                ty: t.ty,
                dims: t.dims.clone(),
                bytes: t.n_bytes,
            })
            .collect();
        let weights: u64 = tensors.iter().map(|t| t.bytes).sum();
        let file_bytes = file.bytes().len() as u64;
        let meta = file.metadata();
        let label = match meta
            .u32(keys::GENERAL_FILE_TYPE)
            .ok()
            .and_then(Quant::from_file_type)
        {
            Some(q) => q.name().to_owned(),
            None => meta.string(keys::GENERAL_NAME).unwrap_or("file").to_owned(),
        };
        Ok(ModelShape {
            label,
            config,
            tensors,
            metadata_bytes: file_bytes.saturating_sub(weights),
        })
    }

    /// The file `llama-quantize` would make of the official `size` with recipe `quant`
    /// (`pure`: every matrix in the base type), with released Gemma 3 metadata.
    pub fn official(size: ModelSize, quant: Quant, pure: bool) -> ModelShape {
        let config = size.config();
        let recipe = RecipeModel {
            n_layer: config.n_layer,
            n_gqa: config.gqa_group(),
            has_output: false,
        };
        let mut tensors = Vec::new();
        for (name, dims) in tensor_table(&config) {
            let ty = quant.tensor_type(&name, &dims, &recipe, pure);
            // Released shapes are whole blocks of the type the fallback picks (F16 at worst).
            if let Some(t) = TensorSpec::new(name, ty, dims) {
                tensors.push(t);
            }
        }
        let table: u64 = tensors
            .iter()
            .map(|t| 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 12)
            .sum();
        let padding: u64 = tensors
            .iter()
            .map(|t| t.bytes.next_multiple_of(ALIGNMENT) - t.bytes)
            .sum();
        ModelShape {
            label: format!("{} {}", size.name(), quant.name()),
            config,
            tensors,
            metadata_bytes: GEMMA3_METADATA_BYTES + table + padding,
        }
    }

    /// Bytes of tensor data.
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// Size of the whole file.
    pub fn file_bytes(&self) -> u64 {
        self.weight_bytes() + self.metadata_bytes
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Names and ggml dimensions of a Gemma 3 GGUF's tensors, in the converter's order
/// (tied output: no `output.weight`).
pub fn tensor_table(c: &Config) -> Vec<(String, Vec<u64>)> {
    let (e, ff) = (c.n_embd as u64, c.n_ff as u64);
    let mut out = vec![
        ("output_norm.weight".to_owned(), vec![e]),
        ("token_embd.weight".to_owned(), vec![e, c.n_vocab as u64]),
    ];
    for il in 0..c.n_layer {
        let layer: [(&str, Vec<u64>); 13] = [
            ("attn_k", vec![e, c.k_dim() as u64]),
            ("attn_k_norm", vec![c.head_dim_k as u64]),
            ("attn_norm", vec![e]),
            ("attn_output", vec![c.attn_out_dim() as u64, e]),
            ("attn_q", vec![e, c.q_dim() as u64]),
            ("attn_q_norm", vec![c.head_dim_k as u64]),
            ("attn_v", vec![e, c.v_dim() as u64]),
            ("ffn_down", vec![ff, e]),
            ("ffn_gate", vec![e, ff]),
            ("ffn_norm", vec![e]),
            ("ffn_up", vec![e, ff]),
            ("post_attention_norm", vec![e]),
            ("post_ffw_norm", vec![e]),
        ];
        out.extend(
            layer
                .into_iter()
                .map(|(name, dims)| (format!("blk.{il}.{name}.weight"), dims)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_have_the_released_shapes() {
        for size in ModelSize::all() {
            assert_eq!(size.name().to_uppercase().parse::<ModelSize>(), Ok(size));
        }
        let c = ModelSize::S12B.config();
        assert_eq!(
            (c.n_embd, c.n_layer, c.n_head, c.n_head_kv, c.n_ff),
            (3840, 48, 16, 8, 15_360)
        );
        assert_eq!(c.layers.iter().filter(|l| !l.is_local()).count(), 8);
        assert!(!c.layers[5].is_local() && c.layers[4].is_local());
        let c27 = ModelSize::S27B.config();
        assert_eq!(c27.attention_scale, 1.0 / 168f32.sqrt());
        assert!("13b".parse::<ModelSize>().is_err());
    }

    #[test]
    fn official_sizes_have_the_parameter_counts_of_the_releases() {
        // Parameter counts (tied embeddings counted once), in millions, of the released models.
        for (size, millions) in [
            (ModelSize::S270M, 268),
            (ModelSize::S1B, 1000),
            (ModelSize::S4B, 3880),
            (ModelSize::S12B, 11766),
            (ModelSize::S27B, 27009),
        ] {
            let shape = ModelShape::official(size, Quant::F16, false);
            let params: u64 = shape
                .tensors
                .iter()
                .map(|t| t.dims.iter().product::<u64>())
                .sum();
            let got = params / 1_000_000;
            assert!(
                got.abs_diff(millions) * 100 <= millions,
                "{size}: {got}M parameters, expected about {millions}M"
            );
        }
    }
}
