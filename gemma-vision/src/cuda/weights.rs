//! The encoder's weights on the GPU, uploaded once. Linear weights in F32, F16 or BF16
//! travel as they are in the file (the float kernels convert each element to f32 as they
//! read it); any other type is dequantized to f32 here first, so the products see the
//! same f32 weights as the CPU encoder's. Vectors and the position table become f32.

use crate::config::VisionConfig;
use crate::error::VisionError;
use crate::weights::{LayerWeights, Linear, Matrix, Weights};
use gemma_gguf::{GgmlType, GgufFile};
use gemma_kernels::cuda::{self, CudaDevice, CudaSlice, DeviceMatrix};

/// A linear layer on the device: `out x in` weight, `out` bias.
pub(crate) struct DeviceLinear {
    pub weight: DeviceMatrix,
    pub bias: CudaSlice<f32>,
}

/// One encoder block on the device.
pub(crate) struct DeviceLayer {
    pub ln1_weight: CudaSlice<f32>,
    pub ln1_bias: CudaSlice<f32>,
    pub q: DeviceLinear,
    pub k: DeviceLinear,
    pub v: DeviceLinear,
    pub out: DeviceLinear,
    pub ln2_weight: CudaSlice<f32>,
    pub ln2_bias: CudaSlice<f32>,
    pub up: DeviceLinear,
    pub down: DeviceLinear,
}

/// Every tensor of the tower and the projector on the device.
pub(crate) struct DeviceWeights {
    /// `v.patch_embd.weight` as f32, `hidden x patch_k_pad` (rows zero-padded).
    pub patch_weight: DeviceMatrix,
    /// Row length of `patch_weight`: `3 * patch * patch` rounded up to a multiple of 8
    /// (the float kernels' row granularity).
    pub patch_k_pad: usize,
    pub patch_bias: CudaSlice<f32>,
    /// `n_patches x hidden`.
    pub position: CudaSlice<f32>,
    pub layers: Vec<DeviceLayer>,
    pub post_ln_weight: CudaSlice<f32>,
    pub post_ln_bias: CudaSlice<f32>,
    pub soft_emb_norm: CudaSlice<f32>,
    /// `mm.input_projection.weight` transposed to `text_hidden x hidden`, so that
    /// `tokens = normed @ W` is the kernels' `x W^T`.
    pub projection_t: DeviceMatrix,
}

impl DeviceWeights {
    /// Uploads every tensor of `w` (read from `gguf`, shaped by `c`).
    pub fn upload(
        dev: &CudaDevice,
        gguf: &GgufFile,
        c: &VisionConfig,
        w: &Weights,
    ) -> Result<DeviceWeights, VisionError> {
        let vector = |m: &Matrix| -> Result<CudaSlice<f32>, VisionError> {
            Ok(cuda::upload(dev, &m.to_f32(gguf)?)?)
        };
        let linear = |l: &Linear| -> Result<DeviceLinear, VisionError> {
            Ok(DeviceLinear {
                weight: upload_matrix(dev, gguf, &l.weight)?,
                bias: vector(&l.bias)?,
            })
        };
        let layer = |l: &LayerWeights| -> Result<DeviceLayer, VisionError> {
            Ok(DeviceLayer {
                ln1_weight: vector(&l.ln1_weight)?,
                ln1_bias: vector(&l.ln1_bias)?,
                q: linear(&l.q)?,
                k: linear(&l.k)?,
                v: linear(&l.v)?,
                out: linear(&l.out)?,
                ln2_weight: vector(&l.ln2_weight)?,
                ln2_bias: vector(&l.ln2_bias)?,
                up: linear(&l.up)?,
                down: linear(&l.down)?,
            })
        };
        let patch_k = 3 * c.patch_size * c.patch_size;
        let patch_k_pad = patch_k_pad(c);
        let patch = w.patch_weight.to_f32(gguf)?;
        let mut padded = vec![0f32; c.hidden * patch_k_pad];
        for (dst, src) in padded
            .chunks_exact_mut(patch_k_pad)
            .zip(patch.chunks_exact(patch_k))
        {
            dst[..patch_k].copy_from_slice(src);
        }
        Ok(DeviceWeights {
            patch_weight: DeviceMatrix::upload(
                dev,
                GgmlType::F32,
                &f32_bytes(&padded),
                c.hidden,
                patch_k_pad,
            )?,
            patch_k_pad,
            patch_bias: vector(&w.patch_bias)?,
            position: vector(&w.position)?,
            layers: w.layers.iter().map(layer).collect::<Result<_, _>>()?,
            post_ln_weight: vector(&w.post_ln_weight)?,
            post_ln_bias: vector(&w.post_ln_bias)?,
            soft_emb_norm: vector(&w.soft_emb_norm)?,
            projection_t: upload_transposed(dev, gguf, &w.input_projection)?,
        })
    }

    /// Bytes of device memory [`DeviceWeights::upload`] allocates for `w`, computed without
    /// allocating (to refuse an encoder that does not fit before uploading anything).
    pub fn planned_bytes(gguf: &GgufFile, c: &VisionConfig, w: &Weights) -> usize {
        let vector = |m: &Matrix| m.rows * m.cols * 4;
        let matrix = |m: &Matrix| {
            if is_float(m.ty()) {
                m.bytes(gguf).len()
            } else {
                m.rows * m.cols * 4
            }
        };
        let linear = |l: &Linear| matrix(&l.weight) + vector(&l.bias);
        let layers: usize = w
            .layers
            .iter()
            .map(|l| {
                [&l.ln1_weight, &l.ln1_bias, &l.ln2_weight, &l.ln2_bias]
                    .into_iter()
                    .map(vector)
                    .sum::<usize>()
                    + [&l.q, &l.k, &l.v, &l.out, &l.up, &l.down]
                        .into_iter()
                        .map(linear)
                        .sum::<usize>()
            })
            .sum();
        layers
            + c.hidden * patch_k_pad(c) * 4
            + matrix(&w.input_projection)
            + [
                &w.patch_bias,
                &w.position,
                &w.post_ln_weight,
                &w.post_ln_bias,
                &w.soft_emb_norm,
            ]
            .into_iter()
            .map(vector)
            .sum::<usize>()
    }

    /// Bytes of device memory the weights hold.
    pub fn bytes(&self) -> usize {
        let f32s = |s: &CudaSlice<f32>| s.len() * 4;
        let linear = |l: &DeviceLinear| l.weight.bytes() + f32s(&l.bias);
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.ln1_weight, &l.ln1_bias, &l.ln2_weight, &l.ln2_bias]
                    .into_iter()
                    .map(f32s)
                    .sum::<usize>()
                    + [&l.q, &l.k, &l.v, &l.out, &l.up, &l.down]
                        .into_iter()
                        .map(linear)
                        .sum::<usize>()
            })
            .sum();
        layers
            + self.patch_weight.bytes()
            + self.projection_t.bytes()
            + [
                &self.patch_bias,
                &self.position,
                &self.post_ln_weight,
                &self.post_ln_bias,
                &self.soft_emb_norm,
            ]
            .into_iter()
            .map(f32s)
            .sum::<usize>()
    }
}

/// Row length of the patch embedding on the device: `3 * patch * patch` rounded up to a
/// multiple of 8 (the float kernels' row granularity).
pub(crate) fn patch_k_pad(c: &VisionConfig) -> usize {
    (3 * c.patch_size * c.patch_size).div_ceil(8) * 8
}

/// Whether the float kernels read `ty` directly.
fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Little-endian bytes of f32 values (the layout of a GGUF F32 tensor).
fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A `rows x cols` weight as the float kernels read it: the file's bytes for float
/// types, f32 values otherwise.
fn upload_matrix(
    dev: &CudaDevice,
    gguf: &GgufFile,
    m: &Matrix,
) -> Result<DeviceMatrix, VisionError> {
    if is_float(m.ty()) {
        return Ok(DeviceMatrix::upload(
            dev,
            m.ty(),
            m.bytes(gguf),
            m.rows,
            m.cols,
        )?);
    }
    let values = m.to_f32(gguf)?;
    Ok(DeviceMatrix::upload(
        dev,
        GgmlType::F32,
        &f32_bytes(&values),
        m.rows,
        m.cols,
    )?)
}

/// The transpose of a `rows x cols` weight, `cols x rows`, element by element (float
/// types keep their type, others become f32).
fn upload_transposed(
    dev: &CudaDevice,
    gguf: &GgufFile,
    m: &Matrix,
) -> Result<DeviceMatrix, VisionError> {
    let (rows, cols) = (m.rows, m.cols);
    let (ty, bytes) = if is_float(m.ty()) {
        (
            m.ty(),
            transpose_elements(m.bytes(gguf), rows, cols, m.ty().block_bytes()),
        )
    } else {
        let values = f32_bytes(&m.to_f32(gguf)?);
        (GgmlType::F32, transpose_elements(&values, rows, cols, 4))
    };
    Ok(DeviceMatrix::upload(dev, ty, &bytes, cols, rows)?)
}

/// Transposes a row-major `rows x cols` matrix of `size`-byte elements.
fn transpose_elements(src: &[u8], rows: usize, cols: usize, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; rows * cols * size];
    for r in 0..rows {
        for c in 0..cols {
            let (from, to) = ((r * cols + c) * size, (c * rows + r) * size);
            out[to..to + size].copy_from_slice(&src[from..from + size]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_whole_elements() {
        // 2 x 3 matrix of 2-byte elements: [[a b c] [d e f]] -> [[a d] [b e] [c f]].
        let src: Vec<u8> = (0u8..12).collect();
        let t = transpose_elements(&src, 2, 3, 2);
        assert_eq!(t, [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
        assert_eq!(transpose_elements(&t, 3, 2, 2), src);
    }

    #[test]
    fn f32_bytes_are_little_endian() {
        assert_eq!(f32_bytes(&[1.0, -2.5]), [0, 0, 128, 63, 0, 0, 32, 192]);
    }
}
