//! The tensors of an mmproj file bound to their roles, as views into the file: nothing
//! is copied or dequantized at load; rows are dequantized when a GEMM packs them.

use crate::config::{VisionConfig, INPUT_PROJECTION};
use crate::error::VisionError;
use gemma_gguf::{GgmlType, GgufFile, TensorInfo};
use gemma_kernels::quant;

/// A tensor viewed as a row-major matrix of `rows x cols` elements in its ggml type
/// (`cols` a whole number of blocks, so every row starts on a block).
#[derive(Clone, Debug)]
pub(crate) struct Matrix {
    info: TensorInfo,
    /// Number of rows.
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    row_bytes: usize,
}

impl Matrix {
    /// Dequantizes row `r` into `out` (`cols` values).
    pub fn dequantize_row(
        &self,
        gguf: &GgufFile,
        r: usize,
        out: &mut [f32],
    ) -> Result<(), VisionError> {
        let bytes = &gguf.tensor_data(&self.info)[r * self.row_bytes..][..self.row_bytes];
        quant::dequantize(self.info.ty, bytes, &mut out[..self.cols])?;
        Ok(())
    }

    /// The whole tensor dequantized (for vectors and the position table).
    pub fn to_f32(&self, gguf: &GgufFile) -> Result<Vec<f32>, VisionError> {
        let mut out = vec![0f32; self.rows * self.cols];
        quant::dequantize(self.info.ty, gguf.tensor_data(&self.info), &mut out)?;
        Ok(out)
    }

    /// The ggml type of the elements.
    pub fn ty(&self) -> GgmlType {
        self.info.ty
    }

    /// The raw bytes in the file: `rows` rows of whole blocks (uploaded as they are).
    pub fn bytes<'a>(&self, gguf: &'a GgufFile) -> &'a [u8] {
        gguf.tensor_data(&self.info)
    }
}

/// A linear layer `y = x W^T + b` with W stored as ggml ne `[in, out]`.
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    /// `out` rows of `in` elements.
    pub weight: Matrix,
    /// `out` values.
    pub bias: Matrix,
}

/// One SigLIP encoder block (GGUF `v.blk.N.*`).
#[derive(Clone, Debug)]
pub(crate) struct LayerWeights {
    pub ln1_weight: Matrix,
    pub ln1_bias: Matrix,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    pub ln2_weight: Matrix,
    pub ln2_bias: Matrix,
    pub up: Linear,
    pub down: Linear,
}

/// Every tensor of the vision tower and the Gemma 3 projector.
#[derive(Clone, Debug)]
pub(crate) struct Weights {
    /// `v.patch_embd.weight`, ne [p, p, 3, D]: D rows of (channel, ky, kx).
    pub patch_weight: Matrix,
    /// `v.patch_embd.bias`, [D].
    pub patch_bias: Matrix,
    /// `v.position_embd.weight`, ne [D, N]: row n for patch n.
    pub position: Matrix,
    /// `v.blk.N.*`.
    pub layers: Vec<LayerWeights>,
    /// `v.post_ln.weight`, [D].
    pub post_ln_weight: Matrix,
    /// `v.post_ln.bias`, [D].
    pub post_ln_bias: Matrix,
    /// `mm.soft_emb_norm.weight`, [D], already holding Gemma's `1 + w`.
    pub soft_emb_norm: Matrix,
    /// `mm.input_projection.weight`, ne [text, D]: D rows of `text` values
    /// (used as `tokens = normed @ W`, not transposed).
    pub input_projection: Matrix,
}

impl Weights {
    /// Finds and checks every tensor against `config`.
    pub fn bind(gguf: &GgufFile, c: &VisionConfig) -> Result<Weights, VisionError> {
        let d = c.hidden as u64;
        let a = c.attention_width() as u64;
        let f = c.ffn_hidden as u64;
        let p = c.patch_size as u64;
        let vector = |name: &str, len: u64| matrix(gguf, name, &[len], 1, len);
        let linear = |name: &str, inputs: u64, outputs: u64| -> Result<Linear, VisionError> {
            Ok(Linear {
                weight: matrix(
                    gguf,
                    &format!("{name}.weight"),
                    &[inputs, outputs],
                    outputs,
                    inputs,
                )?,
                bias: vector(&format!("{name}.bias"), outputs)?,
            })
        };
        let layers = (0..c.n_layers)
            .map(|i| {
                let blk = format!("v.blk.{i}");
                Ok(LayerWeights {
                    ln1_weight: vector(&format!("{blk}.ln1.weight"), d)?,
                    ln1_bias: vector(&format!("{blk}.ln1.bias"), d)?,
                    q: linear(&format!("{blk}.attn_q"), d, a)?,
                    k: linear(&format!("{blk}.attn_k"), d, a)?,
                    v: linear(&format!("{blk}.attn_v"), d, a)?,
                    out: linear(&format!("{blk}.attn_out"), a, d)?,
                    ln2_weight: vector(&format!("{blk}.ln2.weight"), d)?,
                    ln2_bias: vector(&format!("{blk}.ln2.bias"), d)?,
                    up: linear(&format!("{blk}.ffn_up"), d, f)?,
                    down: linear(&format!("{blk}.ffn_down"), f, d)?,
                })
            })
            .collect::<Result<Vec<_>, VisionError>>()?;
        Ok(Weights {
            patch_weight: matrix(gguf, "v.patch_embd.weight", &[p, p, 3, d], d, 3 * p * p)?,
            patch_bias: vector("v.patch_embd.bias", d)?,
            position: matrix(
                gguf,
                "v.position_embd.weight",
                &[d, c.n_patches() as u64],
                c.n_patches() as u64,
                d,
            )?,
            layers,
            post_ln_weight: vector("v.post_ln.weight", d)?,
            post_ln_bias: vector("v.post_ln.bias", d)?,
            soft_emb_norm: vector("mm.soft_emb_norm.weight", d)?,
            input_projection: matrix(
                gguf,
                INPUT_PROJECTION,
                &[c.text_hidden as u64, d],
                d,
                c.text_hidden as u64,
            )?,
        })
    }
}

/// Looks up `name`, checks its ggml dims against `expected` (trailing 1s ignored) and
/// its type, and views it as `rows x cols`.
fn matrix(
    gguf: &GgufFile,
    name: &str,
    expected: &[u64],
    rows: u64,
    cols: u64,
) -> Result<Matrix, VisionError> {
    let info = gguf
        .tensor(name)
        .ok_or_else(|| VisionError::MissingTensor {
            name: name.to_string(),
        })?;
    if trim_ones(&info.dims) != trim_ones(expected) {
        return Err(VisionError::TensorShape {
            name: name.to_string(),
            expected: expected.to_vec(),
            found: info.dims.clone(),
        });
    }
    let wrong_type = || VisionError::TensorType {
        name: name.to_string(),
        ty: info.ty,
    };
    if !quant::is_supported(info.ty) {
        return Err(wrong_type());
    }
    let row_bytes = info.ty.row_bytes(cols).ok_or_else(wrong_type)?;
    let (rows, cols, row_bytes) = match (
        usize::try_from(rows),
        usize::try_from(cols),
        usize::try_from(row_bytes),
    ) {
        (Ok(r), Ok(c), Ok(b)) if (r as u64).checked_mul(b as u64) == Some(info.n_bytes) => {
            (r, c, b)
        }
        _ => return Err(wrong_type()),
    };
    Ok(Matrix {
        info: info.clone(),
        rows,
        cols,
        row_bytes,
    })
}

fn trim_ones(dims: &[u64]) -> &[u64] {
    let len = dims.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    &dims[..len]
}
