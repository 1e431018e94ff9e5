//! Quantization recipes: the ggml type llama.cpp's quantizer (`llama-quantize`, no
//! importance matrix) gives each tensor of a Gemma 3 model for a file type such as
//! `Q4_K_M`, so that file sizes can be predicted without the file.
//!
//! The rules are those of llama.cpp's `src/llama-quant.cpp` (`llama_tensor_get_type`)
//! for a model without experts, restricted to the tensors Gemma 3 has; they are checked
//! against the real 270M file and every tiny fixture in `../shared/fixtures/tiny`:
//! - 1-D tensors (norm weights) stay F32; F32/F16/BF16 files store every matrix in that type;
//! - the output matrix (the tied `token_embd` in Gemma 3) becomes Q6_K, or Q8_0 in a Q8_0
//!   file or when its rows are not whole blocks of the file's base type;
//! - `attn_v`, `ffn_down` and `attn_output` get more bits in some layers (`use_more_bits`:
//!   the first and last eighth of the layers and every third layer between);
//! - a type whose block does not divide a row falls back: Q4_K -> Q5_0, Q5_K -> Q5_1,
//!   Q6_K -> Q8_0, Q2_K/Q3_K/IQ4_XS -> IQ4_NL, else F16 (rows of 640 or 1152 values in
//!   the 270M and 1B models are not whole 256-value super-blocks).

use gemma_gguf::GgmlType;
use std::fmt;
use std::str::FromStr;

/// A llama.cpp file type (`general.file_type`), named as `llama-quantize` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Quant {
    /// Every matrix F32.
    F32,
    /// Every matrix F16.
    F16,
    /// Every matrix BF16.
    BF16,
    /// Q8_0.
    Q8_0,
    /// Q6_K.
    Q6_K,
    /// Q5_K with Q6_K in some `attn_v`/`ffn_down`.
    Q5_K_M,
    /// Q5_K.
    Q5_K_S,
    /// Q5_1.
    Q5_1,
    /// Q5_0.
    Q5_0,
    /// Q4_K with Q6_K in some `attn_v`/`ffn_down`.
    Q4_K_M,
    /// Q4_K with Q5_K in the first layers' `attn_v`/`ffn_down`.
    Q4_K_S,
    /// Q4_1.
    Q4_1,
    /// Q4_0 (Google's QAT release uses it).
    Q4_0,
    /// IQ4_NL.
    IQ4_NL,
    /// IQ4_XS.
    IQ4_XS,
    /// Q3_K with Q5_K in `attn_v`, `ffn_down`, `attn_output`.
    Q3_K_L,
    /// Q3_K with Q4_K/Q5_K in `attn_v`, `ffn_down`, `attn_output`.
    Q3_K_M,
    /// Q3_K.
    Q3_K_S,
    /// Q2_K with Q3_K/Q4_K in `attn_v`, `ffn_down`, `attn_output`.
    Q2_K,
}

/// `(recipe, name, llama_ftype id, base type)`, one row per [`Quant`].
const QUANTS: [(Quant, &str, u32, GgmlType); 19] = [
    (Quant::F32, "F32", 0, GgmlType::F32),
    (Quant::F16, "F16", 1, GgmlType::F16),
    (Quant::BF16, "BF16", 32, GgmlType::BF16),
    (Quant::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (Quant::Q6_K, "Q6_K", 18, GgmlType::Q6_K),
    (Quant::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5_K),
    (Quant::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5_K),
    (Quant::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (Quant::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (Quant::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4_K),
    (Quant::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4_K),
    (Quant::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (Quant::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (Quant::IQ4_NL, "IQ4_NL", 25, GgmlType::IQ4_NL),
    (Quant::IQ4_XS, "IQ4_XS", 30, GgmlType::IQ4_XS),
    (Quant::Q3_K_L, "Q3_K_L", 13, GgmlType::Q3_K),
    (Quant::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3_K),
    (Quant::Q3_K_S, "Q3_K_S", 11, GgmlType::Q3_K),
    (Quant::Q2_K, "Q2_K", 10, GgmlType::Q2_K),
];

impl Quant {
    /// The rows of the `mem` table, largest first (F16 stands for BF16 too: same size).
    pub const TABLE: [Quant; 9] = [
        Quant::F16,
        Quant::Q8_0,
        Quant::Q6_K,
        Quant::Q5_K_M,
        Quant::Q4_K_M,
        Quant::Q4_0,
        Quant::IQ4_XS,
        Quant::Q3_K_M,
        Quant::Q2_K,
    ];

    /// Every recipe, largest first.
    pub fn all() -> impl Iterator<Item = Quant> {
        QUANTS.iter().map(|row| row.0)
    }

    fn row(self) -> &'static (Quant, &'static str, u32, GgmlType) {
        // QUANTS holds every variant (checked by a test); F32's row is a harmless default.
        &QUANTS[QUANTS.iter().position(|row| row.0 == self).unwrap_or(0)]
    }

    /// The name `llama-quantize` uses ("Q4_K_M").
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The `general.file_type` value (llama.cpp's `llama_ftype`) of such a file.
    pub fn file_type(self) -> u32 {
        self.row().2
    }

    /// The recipe of a `general.file_type` value, if it is one of these.
    pub fn from_file_type(id: u32) -> Option<Quant> {
        QUANTS.iter().find(|row| row.2 == id).map(|row| row.0)
    }

    /// The type of the matrices that no rule changes.
    pub fn base_type(self) -> GgmlType {
        self.row().3
    }

    /// The type of tensor `name` with ggml dimensions `dims` (`dims[0]` = row length) in
    /// a file of this type. `pure` is llama.cpp's `--pure`: every matrix in the base type.
    pub fn tensor_type(
        self,
        name: &str,
        dims: &[u64],
        model: &RecipeModel,
        pure: bool,
    ) -> GgmlType {
        let base = self.base_type();
        if dims.len() < 2 {
            return GgmlType::F32;
        }
        if !base.is_quantized() {
            return base;
        }
        let chosen = if pure {
            base
        } else {
            self.mixed_type(name, dims[0], model)
        };
        fallback(chosen, dims[0])
    }

    /// llama.cpp's per-tensor rules (before the shape fallback).
    fn mixed_type(self, name: &str, row_len: u64, model: &RecipeModel) -> GgmlType {
        use GgmlType as T;
        use Quant as Q;
        let base = self.base_type();
        let (layer, n) = (layer_index(name).unwrap_or(0), model.n_layer);
        let more_bits = use_more_bits(layer, n);
        let is_output =
            name == "output.weight" || (!model.has_output && name == "token_embd.weight");
        if is_output {
            let whole_blocks = row_len.is_multiple_of(base.block_elems() as u64);
            return if !whole_blocks || base == T::Q8_0 {
                T::Q8_0
            } else {
                T::Q6_K
            };
        }
        if name.contains("attn_v.weight") {
            return match self {
                Q::Q2_K if model.n_gqa >= 4 => T::Q4_K,
                Q::Q2_K => T::Q3_K,
                Q::Q3_K_M if layer < 2 => T::Q5_K,
                Q::Q3_K_M => T::Q4_K,
                Q::Q3_K_L => T::Q5_K,
                Q::IQ4_NL | Q::IQ4_XS if model.n_gqa >= 4 => T::Q5_K,
                Q::Q4_K_M | Q::Q5_K_M if more_bits => T::Q6_K,
                Q::Q4_K_S if layer < 4 => T::Q5_K,
                _ => base,
            };
        }
        if name.contains("ffn_down") {
            return match self {
                Q::Q2_K => T::Q3_K,
                Q::Q3_K_M if layer < n / 16 => T::Q5_K,
                Q::Q3_K_M => T::Q4_K,
                Q::Q3_K_L => T::Q5_K,
                Q::Q4_K_M | Q::Q5_K_M if more_bits => T::Q6_K,
                Q::IQ4_NL | Q::IQ4_XS | Q::Q4_K_S if layer < n / 8 => T::Q5_K,
                _ => base,
            };
        }
        if name.contains("attn_output.weight") {
            return match self {
                Q::Q2_K => T::Q3_K,
                Q::Q3_K_M => T::Q4_K,
                Q::Q3_K_L => T::Q5_K,
                _ => base,
            };
        }
        base
    }
}

/// What the recipe rules need to know about the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecipeModel {
    /// Number of layers (of `attn_v` and `ffn_down` tensors).
    pub n_layer: usize,
    /// Query heads per KV head (`n_head / n_head_kv`).
    pub n_gqa: usize,
    /// Whether the model has its own `output.weight` (Gemma 3 ties it to `token_embd`).
    pub has_output: bool,
}

/// llama.cpp's `use_more_bits(i_layer, n_layers)`.
fn use_more_bits(layer: usize, n: usize) -> bool {
    layer < n / 8 || layer >= 7 * n / 8 || (layer as i64 - (n / 8) as i64).rem_euclid(3) == 2
}

/// The layer of a `blk.N.` tensor.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's fallback for a type whose blocks do not divide the row length.
fn fallback(ty: GgmlType, row_len: u64) -> GgmlType {
    use GgmlType as T;
    let fits = |t: GgmlType| row_len.is_multiple_of(t.block_elems() as u64);
    if fits(ty) {
        return ty;
    }
    let next = match ty {
        T::Q2_K | T::Q3_K | T::IQ4_XS => T::IQ4_NL,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        _ => T::F16,
    };
    if fits(next) {
        next
    } else {
        T::F16
    }
}

impl fmt::Display for Quant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`Quant`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown quantization `{0}` (expected one of F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q5_1, Q5_0, Q4_K_M, Q4_K_S, Q4_1, Q4_0, IQ4_NL, IQ4_XS, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K)")]
pub struct ParseQuantError(pub String);

impl FromStr for Quant {
    type Err = ParseQuantError;

    /// A recipe by name, case-insensitive ("q4_k_m").
    fn from_str(s: &str) -> Result<Quant, ParseQuantError> {
        QUANTS
            .iter()
            .find(|row| row.1.eq_ignore_ascii_case(s))
            .map(|row| row.0)
            .ok_or_else(|| ParseQuantError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipe_has_one_row() {
        for (i, row) in QUANTS.iter().enumerate() {
            assert_eq!(row.0.name(), row.1);
            assert_eq!(Quant::from_file_type(row.2), Some(row.0));
            assert_eq!(row.1.to_lowercase().parse::<Quant>(), Ok(row.0));
            assert!(QUANTS[..i]
                .iter()
                .all(|other| other.0 != row.0 && other.2 != row.2));
        }
        assert!("Q4_K_X".parse::<Quant>().is_err());
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_18_layers() {
        // The real 270M Q4_K_M file has Q6_K ffn_down exactly in these layers.
        let layers: Vec<usize> = (0..18).filter(|&i| use_more_bits(i, 18)).collect();
        assert_eq!(layers, [0, 1, 4, 7, 10, 13, 15, 16, 17]);
    }

    #[test]
    fn fallback_follows_llama_cpp() {
        assert_eq!(fallback(GgmlType::Q4_K, 640), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q6_K, 1152), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::IQ4_XS, 640), GgmlType::IQ4_NL);
        assert_eq!(fallback(GgmlType::Q4_K, 2560), GgmlType::Q4_K);
        assert_eq!(fallback(GgmlType::Q4_0, 48), GgmlType::F16);
    }
}
