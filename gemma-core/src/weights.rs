//! The weights of the model, bound by name to the tensors of the memory-mapped file.
//!
//! Binding copies nothing: each [`Weight`] and [`Norm`] records where its bytes are in
//! the file, its ggml type and its shape (checked against the [`Config`]). Backends turn
//! these records into slices of the map (CPU) or device buffers (CUDA).

use crate::{Config, CoreError};
use gemma_gguf::{GgmlType, GgufFile, TensorInfo};
use std::ops::Range;

/// A 2-D weight matrix: `rows` outputs of `cols` inputs, ggml row-major blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weight {
    /// GGUF tensor name.
    pub name: String,
    /// Block type.
    pub ty: GgmlType,
    /// Output dimension (ggml `ne1`).
    pub rows: usize,
    /// Input dimension (ggml `ne0`).
    pub cols: usize,
    /// Where its bytes are in the file.
    pub bytes: Range<usize>,
}

/// A 1-D RMSNorm weight vector: F32 values, already holding Gemma's `+1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Norm {
    /// GGUF tensor name.
    pub name: String,
    /// Number of values.
    pub len: usize,
    /// Where its bytes are in the file.
    pub bytes: Range<usize>,
}

/// The weights of one transformer layer (`blk.N.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerWeights {
    /// `blk.N.attn_norm.weight` `[n_embd]`: RMSNorm before attention.
    pub attn_norm: Norm,
    /// `blk.N.attn_q.weight` `[n_embd -> n_head*head_dim_k]`.
    pub wq: Weight,
    /// `blk.N.attn_k.weight` `[n_embd -> n_head_kv*head_dim_k]`.
    pub wk: Weight,
    /// `blk.N.attn_v.weight` `[n_embd -> n_head_kv*head_dim_v]`.
    pub wv: Weight,
    /// `blk.N.attn_q_norm.weight` `[head_dim_k]`: RMSNorm of each query head (QK-norm).
    pub q_norm: Norm,
    /// `blk.N.attn_k_norm.weight` `[head_dim_k]`: RMSNorm of each key head.
    pub k_norm: Norm,
    /// `blk.N.attn_output.weight` `[n_head*head_dim_v -> n_embd]`.
    pub wo: Weight,
    /// `blk.N.post_attention_norm.weight` `[n_embd]`: RMSNorm of the attention output.
    pub post_attn_norm: Norm,
    /// `blk.N.ffn_norm.weight` `[n_embd]`: RMSNorm before the FFN.
    pub ffn_norm: Norm,
    /// `blk.N.ffn_gate.weight` `[n_embd -> n_ff]`: the GELU branch of GeGLU.
    pub ffn_gate: Weight,
    /// `blk.N.ffn_up.weight` `[n_embd -> n_ff]`: the linear branch of GeGLU.
    pub ffn_up: Weight,
    /// `blk.N.ffn_down.weight` `[n_ff -> n_embd]`.
    pub ffn_down: Weight,
    /// `blk.N.post_ffw_norm.weight` `[n_embd]`: RMSNorm of the FFN output.
    pub post_ffn_norm: Norm,
}

/// All weights of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weights {
    /// `token_embd.weight` `[n_vocab rows of n_embd]`: the embedding table.
    pub token_embd: Weight,
    /// The layers, in order.
    pub layers: Vec<LayerWeights>,
    /// `output_norm.weight` `[n_embd]`: the final RMSNorm.
    pub output_norm: Norm,
    /// `output.weight` `[n_embd -> n_vocab]` if the file has one, else `token_embd` (tied).
    pub output: Weight,
}

impl Weights {
    /// Binds every tensor the model needs, checking names, types and shapes.
    pub fn bind(file: &GgufFile, config: &Config) -> Result<Weights, CoreError> {
        let c = config;
        let binder = Binder { file };
        let token_embd = binder.matrix("token_embd.weight", c.n_vocab, c.n_embd)?;
        let output = match file.tensor("output.weight") {
            Some(_) => binder.matrix("output.weight", c.n_vocab, c.n_embd)?,
            None => token_embd.clone(),
        };
        let layers = (0..c.n_layer)
            .map(|il| {
                let name = |suffix: &str| format!("blk.{il}.{suffix}.weight");
                let matrix = |suffix: &str, rows, cols| binder.matrix(&name(suffix), rows, cols);
                let norm = |suffix: &str, len| binder.norm(&name(suffix), len);
                Ok(LayerWeights {
                    attn_norm: norm("attn_norm", c.n_embd)?,
                    wq: matrix("attn_q", c.q_dim(), c.n_embd)?,
                    wk: matrix("attn_k", c.k_dim(), c.n_embd)?,
                    wv: matrix("attn_v", c.v_dim(), c.n_embd)?,
                    q_norm: norm("attn_q_norm", c.head_dim_k)?,
                    k_norm: norm("attn_k_norm", c.head_dim_k)?,
                    wo: matrix("attn_output", c.n_embd, c.attn_out_dim())?,
                    post_attn_norm: norm("post_attention_norm", c.n_embd)?,
                    ffn_norm: norm("ffn_norm", c.n_embd)?,
                    ffn_gate: matrix("ffn_gate", c.n_ff, c.n_embd)?,
                    ffn_up: matrix("ffn_up", c.n_ff, c.n_embd)?,
                    ffn_down: matrix("ffn_down", c.n_embd, c.n_ff)?,
                    post_ffn_norm: norm("post_ffw_norm", c.n_embd)?,
                })
            })
            .collect::<Result<Vec<_>, CoreError>>()?;
        Ok(Weights {
            token_embd,
            layers,
            output_norm: binder.norm("output_norm.weight", c.n_embd)?,
            output,
        })
    }

    /// Bytes of weights one decoded token reads: every layer matrix and the output
    /// matrix, plus one embedding row (what bounds decode speed by memory bandwidth).
    pub fn bytes_per_token(&self) -> u64 {
        let matrices = self.layers.iter().flat_map(|l| {
            [
                &l.wq,
                &l.wk,
                &l.wv,
                &l.wo,
                &l.ffn_gate,
                &l.ffn_up,
                &l.ffn_down,
            ]
        });
        let norms = self.layers.iter().flat_map(|l| {
            [
                &l.attn_norm,
                &l.q_norm,
                &l.k_norm,
                &l.post_attn_norm,
                &l.ffn_norm,
                &l.post_ffn_norm,
            ]
        });
        let embd_row = self.token_embd.bytes.len() / self.token_embd.rows.max(1);
        let total = matrices
            .chain([&self.output])
            .map(|w| w.bytes.len())
            .sum::<usize>()
            + norms
                .chain([&self.output_norm])
                .map(|n| n.bytes.len())
                .sum::<usize>()
            + embd_row;
        total as u64
    }
}

/// Looks tensors up by name and checks them.
struct Binder<'f> {
    file: &'f GgufFile,
}

impl Binder<'_> {
    fn tensor(&self, name: &str) -> Result<&TensorInfo, CoreError> {
        self.file
            .tensor(name)
            .ok_or_else(|| CoreError::MissingTensor {
                name: name.to_owned(),
            })
    }

    /// A `[cols, rows]` (ggml `ne`) matrix of a type the kernels support.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, CoreError> {
        let t = self.tensor(name)?;
        check_shape(t, &[cols as u64, rows as u64])?;
        if !gemma_kernels::quant::is_supported(t.ty) {
            return Err(CoreError::UnsupportedTensorType {
                name: name.to_owned(),
                ty: t.ty,
            });
        }
        Ok(Weight {
            name: name.to_owned(),
            ty: t.ty,
            rows,
            cols,
            bytes: byte_range(t)?,
        })
    }

    /// A `[len]` F32 vector, 4-byte aligned in memory so it can be read in place.
    fn norm(&self, name: &str, len: usize) -> Result<Norm, CoreError> {
        let t = self.tensor(name)?;
        check_shape(t, &[len as u64])?;
        if t.ty != GgmlType::F32 {
            return Err(CoreError::UnsupportedTensorType {
                name: name.to_owned(),
                ty: t.ty,
            });
        }
        let bytes = byte_range(t)?;
        if bytemuck::try_cast_slice::<u8, f32>(&self.file.bytes()[bytes.clone()]).is_err() {
            return Err(CoreError::MisalignedTensor {
                name: name.to_owned(),
            });
        }
        Ok(Norm {
            name: name.to_owned(),
            len,
            bytes,
        })
    }
}

/// The tensor's shape must be exactly `expected` (trailing 1-dimensions ignored).
fn check_shape(t: &TensorInfo, expected: &[u64]) -> Result<(), CoreError> {
    let mut found: &[u64] = &t.dims;
    while found.len() > expected.len() && found.last() == Some(&1) {
        found = &found[..found.len() - 1];
    }
    if found == expected {
        Ok(())
    } else {
        Err(CoreError::TensorShape {
            name: t.name.clone(),
            expected: expected.to_vec(),
            found: t.dims.clone(),
        })
    }
}

/// The tensor's bytes as a range of the file (the reader checked they are inside it).
fn byte_range(t: &TensorInfo) -> Result<Range<usize>, CoreError> {
    let start = usize::try_from(t.offset);
    let len = usize::try_from(t.n_bytes);
    match (start, len) {
        (Ok(start), Ok(len)) if start.checked_add(len).is_some() => Ok(start..start + len),
        _ => Err(CoreError::TensorShape {
            name: t.name.clone(),
            expected: Vec::new(),
            found: t.dims.clone(),
        }),
    }
}
