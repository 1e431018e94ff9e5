//! The Gemma 3 multimodal projector: k x k average pooling of the patch grid, the
//! soft-embedding RMSNorm, and the projection to the language model's width.

use crate::encoder::Ctx;
use crate::error::VisionError;
use crate::gemm::{gemm, MatRef, PackedB};
use crate::ops::{avg_pool, rms_norm};

impl Ctx<'_> {
    /// `[n_patches, D]` -> `[n_tokens, D]`: mean of each `k x k` block of patches.
    pub fn pool(&self, h: &[f32]) -> Vec<f32> {
        let c = self.config;
        avg_pool(h, c.patches_per_side(), c.hidden, c.pool_kernel)
    }

    /// RMSNorm with `mm.soft_emb_norm.weight` (which already holds `1 + w`), in place.
    pub fn soft_emb_norm(&self, pooled: &mut [f32]) -> Result<(), VisionError> {
        rms_norm(
            pooled,
            &self.weights.soft_emb_norm.to_f32(self.gguf)?,
            self.config.norm_eps,
        );
        Ok(())
    }

    /// `tokens = normed @ W` with `mm.input_projection.weight` used as a `[D, text]`
    /// matrix (row i = vision channel i), not as a transposed linear weight.
    pub fn project(&self, normed: &[f32]) -> Result<Vec<f32>, VisionError> {
        let w = &self.weights.input_projection;
        let mut packed = PackedB::new();
        packed.pack_k_rows(w.rows, w.cols, self.kernels.nr, |p, dst| {
            w.dequantize_row(self.gguf, p, dst)
        })?;
        let a = MatRef {
            data: normed,
            rows: normed.len() / w.rows,
            cols: w.rows,
            stride: w.rows,
        };
        let mut tokens = vec![0f32; a.rows * w.cols];
        gemm(self.kernels, a, &packed, &mut tokens, w.cols);
        Ok(tokens)
    }
}
