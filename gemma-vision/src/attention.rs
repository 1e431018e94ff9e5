//! Bidirectional multi-head self-attention over all patches of one image, as blocked
//! GEMMs that never pack a big operand. Per head, and per block of query rows:
//! `S^T = K Q^T` (keys x queries; K given by its transpose, which the micro-tile reads as
//! is), an unnormalized softmax down the columns of `S^T` (vectorized across queries),
//! `O^T = V^T P^T` (V read in place as the transpose of `V^T`, `P^T` = `S^T` read in
//! place as B), then each output row scaled by the reciprocal of its softmax sum while
//! `O^T` is transposed into the output. No mask: every patch sees every patch.

use crate::gemm::{gemm_transposed_a, BRef, PackedB, TransposedRef};
use crate::kernels::{Kernels, COLUMN_MULTIPLE};
use rayon::prelude::*;
use std::convert::Infallible;

/// Query rows per task: a multiple of every kernel's NR (16, 32) and of
/// `COLUMN_MULTIPLE`, so `S^T` is whole B panels; the `n x 64` score block is 1 MiB for
/// 4096 patches.
const QUERY_BLOCK: usize = 64;

/// Shapes of one attention call.
pub(crate) struct AttentionShape {
    /// Patches (= queries = keys).
    pub n: usize,
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// K of one head transposed, reused across heads and layers.
#[derive(Default)]
pub(crate) struct AttentionScratch {
    keys_t: Vec<f32>,
}

/// Values `attention` needs after the `n x (heads * head_dim)` of `v`: partial
/// micro-tiles of the last head read up to MR - 1 values past its last row
/// (at least every kernel's MR).
pub(crate) const VALUE_PADDING: usize = 16;

/// `out[:, h] = softmax(q_h k_h^T / sqrt(head_dim)) v_h` for every head h; `q`, `k`,
/// `v` and `out` are `n x (heads * head_dim)` row-major with head h in columns
/// `h * head_dim ..`; `v` has [`VALUE_PADDING`] more values after those.
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
    debug_assert_eq!(QUERY_BLOCK % COLUMN_MULTIPLE, 0);
    let width = heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    // Rows of K^T padded so that every micro-tile of keys reads inside the buffer.
    let key_stride = n.div_ceil(kernels.mr) * kernels.mr;
    scratch.keys_t.clear();
    scratch.keys_t.resize(hd * key_stride, 0.0);
    assert!(
        kernels.mr <= VALUE_PADDING && v.len() >= n * width + VALUE_PADDING,
        "attention: v holds {} values, needs {} + padding",
        v.len(),
        n * width
    );
    for h in 0..heads {
        let col = h * hd;
        // K_h^T: row d holds feature d of every key.
        scratch
            .keys_t
            .par_chunks_mut(key_stride)
            .enumerate()
            .for_each(|(d, row)| {
                for (j, x) in row[..n].iter_mut().enumerate() {
                    *x = k[j * width + col + d];
                }
            });
        let keys = TransposedRef {
            data: &scratch.keys_t,
            rows: n,
            depth: hd,
            stride: key_stride,
        };
        // A = V_h^T given by its transpose V_h, read in place (rows past head_dim in a
        // partial micro-tile read the next head's values, or the padding).
        let values_t = TransposedRef {
            data: &v[col..],
            rows: hd,
            depth: n,
            stride: width,
        };
        out.par_chunks_mut(QUERY_BLOCK * width)
            .enumerate()
            .for_each_init(
                || BlockScratch::new(n, hd),
                |s, (block, out)| {
                    let rows = out.len().div_ceil(width);
                    let q0 = block * QUERY_BLOCK;
                    // B = Q_block^T: column i of B is query i.
                    let Ok(()) = s.queries.pack_rows(hd, rows, kernels.nr, |i, dst| {
                        dst.copy_from_slice(&q[(q0 + i) * width + col..][..hd]);
                        Ok::<(), Infallible>(())
                    });
                    gemm_transposed_a(
                        kernels,
                        keys,
                        BRef::Packed(&s.queries),
                        &mut s.scores,
                        QUERY_BLOCK,
                    );
                    kernels.softmax_columns(&mut s.scores, QUERY_BLOCK, scale, &mut s.inv_sums);
                    let probs_t = BRef::RowMajor {
                        data: &s.scores,
                        k: n,
                        n: QUERY_BLOCK,
                        stride: QUERY_BLOCK,
                    };
                    gemm_transposed_a(kernels, values_t, probs_t, &mut s.out_t, QUERY_BLOCK);
                    for (i, (row, inv)) in out.chunks_mut(width).zip(&s.inv_sums).enumerate() {
                        for (d, x) in row[col..col + hd].iter_mut().enumerate() {
                            *x = s.out_t[d * QUERY_BLOCK + i] * inv;
                        }
                    }
                },
            );
    }
}

/// Buffers of one query-block task.
struct BlockScratch {
    /// The block's queries packed as B (`head_dim x QUERY_BLOCK`).
    queries: PackedB,
    /// `S^T`: `n x QUERY_BLOCK`, key-major; becomes the unnormalized probabilities.
    scores: Vec<f32>,
    /// Reciprocal softmax sum per query.
    inv_sums: Vec<f32>,
    /// `O^T`: `head_dim x QUERY_BLOCK`, unnormalized.
    out_t: Vec<f32>,
}

impl BlockScratch {
    fn new(n: usize, hd: usize) -> BlockScratch {
        BlockScratch {
            queries: PackedB::new(),
            scores: vec![0.0; n * QUERY_BLOCK],
            inv_sums: vec![0.0; QUERY_BLOCK],
            out_t: vec![0.0; hd * QUERY_BLOCK],
        }
    }
}
