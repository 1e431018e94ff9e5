//! The SigLIP vision tower, top to bottom: patch embedding + position embedding, the
//! pre-norm encoder blocks, the post-LayerNorm. Activations stay f32 throughout.

use crate::attention::{attention, AttentionScratch, AttentionShape, VALUE_PADDING};
use crate::config::VisionConfig;
use crate::error::VisionError;
use crate::gemm::{gemm, MatRef, PackedB};
use crate::kernels::Kernels;
use crate::ops::{add_bias, add_residual, layer_norm};
use crate::weights::{LayerWeights, Linear, Matrix, Weights};
use gemma_gguf::GgufFile;
use rayon::prelude::*;

/// What every step needs to read weights and run kernels.
pub(crate) struct Ctx<'a> {
    pub gguf: &'a GgufFile,
    pub config: &'a VisionConfig,
    pub weights: &'a Weights,
    pub kernels: &'a Kernels,
}

/// Buffers of one encode, allocated once and reused by every layer.
pub(crate) struct Scratch {
    /// Normed activations, n x D.
    normed: Vec<f32>,
    /// Queries, keys, values and the concatenated head outputs, n x (heads * head_dim)
    /// (the values followed by attention's `VALUE_PADDING`).
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    /// Linear outputs before the residual add, n x D.
    y: Vec<f32>,
    /// MLP hidden activations, n x ffn.
    mlp: Vec<f32>,
    /// The weight matrix being multiplied, packed to f32 panels.
    packed: PackedB,
    attention: AttentionScratch,
}

impl Scratch {
    pub fn new(c: &VisionConfig) -> Scratch {
        let n = c.n_patches();
        let aw = c.attention_width();
        Scratch {
            normed: vec![0.0; n * c.hidden],
            q: vec![0.0; n * aw],
            k: vec![0.0; n * aw],
            v: vec![0.0; n * aw + VALUE_PADDING],
            attn: vec![0.0; n * aw],
            y: vec![0.0; n * c.hidden],
            mlp: vec![0.0; n * c.ffn_hidden],
            packed: PackedB::new(),
            attention: AttentionScratch::default(),
        }
    }
}

impl Ctx<'_> {
    /// `out = x W^T` for `x` of `x.len() / W.cols` rows (W's rows packed to f32 first).
    fn matmul(
        &self,
        w: &Matrix,
        x: &[f32],
        out: &mut [f32],
        packed: &mut PackedB,
    ) -> Result<(), VisionError> {
        packed.pack_rows(w.cols, w.rows, self.kernels.nr, |j, dst| {
            w.dequantize_row(self.gguf, j, dst)
        })?;
        let a = MatRef {
            data: x,
            rows: x.len() / w.cols,
            cols: w.cols,
            stride: w.cols,
        };
        gemm(self.kernels, a, packed, out, w.rows);
        Ok(())
    }

    /// `out = x W^T + b`.
    fn linear(
        &self,
        l: &Linear,
        x: &[f32],
        out: &mut [f32],
        packed: &mut PackedB,
    ) -> Result<(), VisionError> {
        self.matmul(&l.weight, x, out, packed)?;
        add_bias(out, &l.bias.to_f32(self.gguf)?);
        Ok(())
    }

    /// Patch embedding (Conv2d with kernel = stride = patch, as im2col + GEMM) plus the
    /// learned position embedding: `h[n] = W x_patch(n) + b + pos[n]`, patches row-major.
    pub fn embed(&self, pixels: &[f32], h: &mut [f32], s: &mut Scratch) -> Result<(), VisionError> {
        let c = self.config;
        let (size, p, side) = (c.image_size, c.patch_size, c.patches_per_side());
        let k = 3 * p * p;
        // Row n: channel-major, then ky, then kx: PyTorch's flattening of the kernel.
        let mut patches = vec![0f32; c.n_patches() * k];
        patches.par_chunks_mut(k).enumerate().for_each(|(n, row)| {
            let (r, col) = (n / side, n % side);
            for ch in 0..3 {
                for ky in 0..p {
                    let src = &pixels[ch * size * size + (r * p + ky) * size + col * p..][..p];
                    row[(ch * p + ky) * p..][..p].copy_from_slice(src);
                }
            }
        });
        self.matmul(&self.weights.patch_weight, &patches, h, &mut s.packed)?;
        add_bias(h, &self.weights.patch_bias.to_f32(self.gguf)?);
        let position = self.weights.position.to_f32(self.gguf)?;
        h.par_chunks_mut(c.hidden)
            .zip(position.par_chunks(c.hidden))
            .for_each(|(h, pos)| h.iter_mut().zip(pos).for_each(|(h, p)| *h += p));
        Ok(())
    }

    /// One pre-norm encoder block, in place on the residual stream `h`.
    pub fn layer(
        &self,
        lw: &LayerWeights,
        h: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), VisionError> {
        let c = self.config;
        let eps = c.norm_eps;
        // Attention: h += attn(LN1(h)) W_out^T + b_out
        layer_norm(
            h,
            &lw.ln1_weight.to_f32(self.gguf)?,
            &lw.ln1_bias.to_f32(self.gguf)?,
            eps,
            &mut s.normed,
        );
        self.linear(&lw.q, &s.normed, &mut s.q, &mut s.packed)?;
        self.linear(&lw.k, &s.normed, &mut s.k, &mut s.packed)?;
        let n_values = s.k.len();
        self.linear(&lw.v, &s.normed, &mut s.v[..n_values], &mut s.packed)?;
        let shape = AttentionShape {
            n: c.n_patches(),
            heads: c.n_heads,
            head_dim: c.head_dim,
        };
        attention(
            self.kernels,
            &shape,
            &s.q,
            &s.k,
            &s.v,
            &mut s.attn,
            &mut s.attention,
        );
        self.matmul(&lw.out.weight, &s.attn, &mut s.y, &mut s.packed)?;
        add_residual(h, &s.y, &lw.out.bias.to_f32(self.gguf)?);
        // MLP: h += gelu_tanh(LN2(h) W_up^T + b_up) W_down^T + b_down
        layer_norm(
            h,
            &lw.ln2_weight.to_f32(self.gguf)?,
            &lw.ln2_bias.to_f32(self.gguf)?,
            eps,
            &mut s.normed,
        );
        self.linear(&lw.up, &s.normed, &mut s.mlp, &mut s.packed)?;
        s.mlp
            .par_chunks_mut(c.ffn_hidden * 16)
            .for_each(|x| self.kernels.gelu(x));
        self.matmul(&lw.down.weight, &s.mlp, &mut s.y, &mut s.packed)?;
        add_residual(h, &s.y, &lw.down.bias.to_f32(self.gguf)?);
        Ok(())
    }

    /// The SigLIP post-LayerNorm, `h = LN(h) * w + b`.
    pub fn post_norm(&self, h: &mut [f32], s: &mut Scratch) -> Result<(), VisionError> {
        let w = &self.weights;
        layer_norm(
            h,
            &w.post_ln_weight.to_f32(self.gguf)?,
            &w.post_ln_bias.to_f32(self.gguf)?,
            self.config.norm_eps,
            &mut s.normed,
        );
        h.copy_from_slice(&s.normed);
        Ok(())
    }
}
