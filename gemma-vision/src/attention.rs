//! Bidirectional multi-head self-attention over all patches of one image, as batched
//! GEMMs: per head and per block of query rows, `S = Q K^T`, a row softmax with the
//! 1/sqrt(head_dim) scale, then `O = S V`. No mask (every patch sees every patch).

use crate::gemm::{gemm, MatRef, PackedB};
use crate::kernels::Kernels;
use rayon::prelude::*;
use std::convert::Infallible;

/// Query rows per task: a multiple of every kernel's MR (4, 6, 12); the score block
/// (96 x 4096 floats for real models) stays in L2/L3.
const QUERY_BLOCK: usize = 96;

/// Shapes of one attention call.
pub(crate) struct AttentionShape {
    /// Patches (= queries = keys).
    pub n: usize,
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Packed K and V of one head, reused across layers.
#[derive(Default)]
pub(crate) struct AttentionScratch {
    keys: Option<PackedB>,
    values: Option<PackedB>,
}

/// `out[:, h] = softmax(q_h k_h^T / sqrt(head_dim)) v_h` for every head h; `q`, `k`,
/// `v` and `out` are `n x (heads * head_dim)` row-major with head h in columns
/// `h * head_dim ..`.
pub(crate) fn attention(
    kernels: &Kernels,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    scratch: &mut AttentionScratch,
) {
    let AttentionShape {
        n,
        heads,
        head_dim: hd,
    } = *shape;
    let width = heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let keys = scratch.keys.get_or_insert_with(PackedB::new);
    let values = scratch.values.get_or_insert_with(PackedB::new);
    for h in 0..heads {
        let col = h * hd;
        // B = K_h^T: column j of B is key j.
        let packed = keys.pack_rows(hd, n, kernels.nr, |j, dst| {
            dst.copy_from_slice(&k[j * width + col..][..hd]);
            Ok::<(), Infallible>(())
        });
        // B = V_h: row p of B is value p.
        let packed = packed.and_then(|()| {
            values.pack_k_rows(n, hd, kernels.nr, |p, dst| {
                dst.copy_from_slice(&v[p * width + col..][..hd]);
                Ok::<(), Infallible>(())
            })
        });
        let Ok(()) = packed;
        let (keys, values) = (&*keys, &*values);
        out.par_chunks_mut(QUERY_BLOCK * width)
            .enumerate()
            .for_each_init(
                || vec![0f32; QUERY_BLOCK * n],
                |scores, (block, out)| {
                    let rows = out.len().div_ceil(width);
                    let queries = MatRef {
                        data: &q[block * QUERY_BLOCK * width + col..],
                        rows,
                        cols: hd,
                        stride: width,
                    };
                    gemm(kernels, queries, keys, scores, n);
                    for row in scores.chunks_exact_mut(n).take(rows) {
                        kernels.softmax(row, scale);
                    }
                    let probs = MatRef {
                        data: scores,
                        rows,
                        cols: n,
                        stride: n,
                    };
                    gemm(kernels, probs, values, &mut out[col..], width);
                },
            );
    }
}
