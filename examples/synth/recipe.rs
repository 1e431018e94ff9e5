//! The language model's tensors for `synth`: the llama.cpp file types it writes and the
//! type, shape and value distribution of every tensor, as `llama_model_quantize` picks
//! them (no importance matrix, not `pure`), in llama.cpp's tensor order.

use gemma::gguf::GgmlType;

use super::Shape;

/// A llama.cpp file type (`llama_ftype`) this tool can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Quant {
    /// ALL_F32: every tensor F32.
    F32,
    /// MOSTLY_F16.
    F16,
    /// MOSTLY_BF16.
    BF16,
    /// MOSTLY_Q4_0.
    Q4_0,
    /// MOSTLY_Q4_1.
    Q4_1,
    /// MOSTLY_Q5_0.
    Q5_0,
    /// MOSTLY_Q5_1.
    Q5_1,
    /// MOSTLY_Q8_0.
    Q8_0,
    /// MOSTLY_Q2_K.
    Q2_K,
    /// MOSTLY_Q3_K_M.
    Q3_K_M,
    /// MOSTLY_Q4_K_M.
    Q4_K_M,
    /// MOSTLY_Q5_K_M.
    Q5_K_M,
    /// MOSTLY_Q6_K.
    Q6_K,
    /// MOSTLY_IQ4_NL.
    IQ4_NL,
    /// MOSTLY_IQ4_XS.
    IQ4_XS,
}

/// `(file type, name, llama_ftype id, base tensor type)`.
const QUANTS: [(Quant, &str, u32, GgmlType); 15] = [
    (Quant::F32, "F32", 0, GgmlType::F32),
    (Quant::F16, "F16", 1, GgmlType::F16),
    (Quant::BF16, "BF16", 32, GgmlType::BF16),
    (Quant::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (Quant::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (Quant::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (Quant::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (Quant::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (Quant::Q2_K, "Q2_K", 10, GgmlType::Q2_K),
    (Quant::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3_K),
    (Quant::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4_K),
    (Quant::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5_K),
    (Quant::Q6_K, "Q6_K", 18, GgmlType::Q6_K),
    (Quant::IQ4_NL, "IQ4_NL", 25, GgmlType::IQ4_NL),
    (Quant::IQ4_XS, "IQ4_XS", 30, GgmlType::IQ4_XS),
];

impl Quant {
    /// Parses a name such as "Q4_K_M" (case-insensitive).
    pub fn parse(name: &str) -> Result<Quant, String> {
        QUANTS
            .iter()
            .find(|q| q.1.eq_ignore_ascii_case(name))
            .map(|q| q.0)
            .ok_or_else(|| {
                let names: Vec<&str> = QUANTS.iter().map(|q| q.1).collect();
                format!("unknown --quant {name:?} (one of {})", names.join(", "))
            })
    }

    fn row(self) -> &'static (Quant, &'static str, u32, GgmlType) {
        // QUANTS has a row for every variant.
        QUANTS.iter().find(|q| q.0 == self).unwrap_or(&QUANTS[0])
    }

    /// The name ("Q4_K_M").
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// llama.cpp's `llama_ftype` (`general.file_type`).
    pub fn ftype(self) -> u32 {
        self.row().2
    }

    /// The type most 2-D tensors get.
    pub fn base(self) -> GgmlType {
        self.row().3
    }
}

/// How a tensor's random values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    /// Norm weights: 1 + N(0, 0.1²).
    Norm,
}

/// One tensor of the file to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// GGUF tensor name.
    pub name: String,
    /// Its type.
    pub ty: GgmlType,
    /// Its shape, ggml `ne` order.
    pub dims: Vec<u64>,
    /// How its values are drawn.
    pub init: Init,
}

/// llama.cpp's `use_more_bits`: the layers that get more bits in `_M` mixes.
fn use_more_bits(layer: u64, n_layers: u64) -> bool {
    layer < n_layers / 8
        || layer >= 7 * n_layers / 8
        || (layer as i64 - (n_layers / 8) as i64) % 3 == 2
}

/// The type llama.cpp's `llama_tensor_get_type` gives a 2-D tensor of `quant` (no
/// importance matrix, not `pure`, a model without `output.weight`), with its fallbacks.
pub fn tensor_type(
    quant: Quant,
    name: &str,
    layer: u64,
    shape: &Shape,
) -> Result<GgmlType, String> {
    use GgmlType as T;
    let base = quant.base();
    if !base.is_quantized() {
        return Ok(base);
    }
    let n = shape.layers;
    let gqa = shape.heads / shape.kv_heads;
    let ne0 = if name.ends_with("ffn_down.weight") {
        shape.ff
    } else if name.ends_with("attn_output.weight") {
        shape.heads * shape.head_dim
    } else {
        shape.hidden
    };
    let ty = if name == "token_embd.weight" {
        // Tied output: the token embedding follows the output tensor's rule.
        if ne0 % base.block_elems() as u64 != 0 {
            T::Q8_0
        } else if base != T::Q8_0 {
            T::Q6_K
        } else {
            base
        }
    } else if name.ends_with("attn_v.weight") {
        match quant {
            Quant::Q2_K if gqa >= 4 => T::Q4_K,
            Quant::Q2_K => T::Q3_K,
            Quant::Q3_K_M if layer < 2 => T::Q5_K,
            Quant::Q3_K_M => T::Q4_K,
            Quant::IQ4_NL | Quant::IQ4_XS if gqa >= 4 => T::Q5_K,
            Quant::Q4_K_M | Quant::Q5_K_M if use_more_bits(layer, n) => T::Q6_K,
            _ => base,
        }
    } else if name.ends_with("ffn_down.weight") {
        match quant {
            Quant::Q2_K => T::Q3_K,
            Quant::Q3_K_M if layer < n / 16 => T::Q5_K,
            Quant::Q3_K_M => T::Q4_K,
            Quant::Q4_K_M | Quant::Q5_K_M if use_more_bits(layer, n) => T::Q6_K,
            Quant::IQ4_NL | Quant::IQ4_XS if layer < n / 8 => T::Q5_K,
            _ => base,
        }
    } else if name.ends_with("attn_output.weight") {
        match quant {
            Quant::Q2_K => T::Q3_K,
            Quant::Q3_K_M => T::Q4_K,
            _ => base,
        }
    } else {
        base
    };
    if ne0 % ty.block_elems() as u64 == 0 {
        return Ok(ty);
    }
    let fallback = match ty {
        T::Q2_K | T::Q3_K | T::IQ4_XS => T::IQ4_NL,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        _ => return Err(format!("{name}: rows of {ne0} cannot be stored as {ty}")),
    };
    Ok(if ne0 % fallback.block_elems() as u64 == 0 {
        fallback
    } else {
        T::F16
    })
}

/// Every tensor of the file, in llama.cpp's order (non-layer tensors by name, then each
/// layer's tensors by name), with its type and shape.
pub fn plan(shape: &Shape, vocab: u64, quant: Quant) -> Result<Vec<Planned>, String> {
    let (h, q, kv, ff) = (
        shape.hidden,
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
        shape.ff,
    );
    let linear = |name: String, layer: u64, dims: [u64; 2]| -> Result<Planned, String> {
        let ty = tensor_type(quant, &name, layer, shape)?;
        Ok(Planned {
            init: Init::Normal(1.0 / (dims[0] as f32).sqrt()),
            name,
            ty,
            dims: dims.to_vec(),
        })
    };
    let norm = |name: String, len: u64| Planned {
        name,
        ty: GgmlType::F32,
        dims: vec![len],
        init: Init::Norm,
    };
    let mut tensors = vec![
        norm("output_norm.weight".into(), h),
        linear("token_embd.weight".into(), 0, [h, vocab])?,
    ];
    for l in 0..shape.layers {
        let name = |suffix: &str| format!("blk.{l}.{suffix}.weight");
        tensors.push(linear(name("attn_k"), l, [h, kv])?);
        tensors.push(norm(name("attn_k_norm"), shape.head_dim));
        tensors.push(norm(name("attn_norm"), h));
        tensors.push(linear(name("attn_output"), l, [q, h])?);
        tensors.push(linear(name("attn_q"), l, [h, q])?);
        tensors.push(norm(name("attn_q_norm"), shape.head_dim));
        tensors.push(linear(name("attn_v"), l, [h, kv])?);
        tensors.push(linear(name("ffn_down"), l, [ff, h])?);
        tensors.push(linear(name("ffn_gate"), l, [h, ff])?);
        tensors.push(norm(name("ffn_norm"), h));
        tensors.push(linear(name("ffn_up"), l, [h, ff])?);
        tensors.push(norm(name("post_attention_norm"), h));
        tensors.push(norm(name("post_ffw_norm"), h));
    }
    Ok(tensors)
}
