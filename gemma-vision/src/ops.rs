//! Row-wise elementwise steps of the encoder (cheap next to the GEMMs): LayerNorm,
//! bias and residual adds, the projector's average pool and RMSNorm.

use rayon::prelude::*;

/// Rows handed to one rayon task by the row-wise ops.
const ROWS_PER_TASK: usize = 64;

/// Sum of `f(x)` with 8 interleaved f32 accumulators (vectorizes; stays accurate for
/// the row lengths of the encoder).
fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| f(*v)).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += f(*v);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out = (x - mean) / sqrt(var + eps) * w + b` per row of width `w.len()`
/// (biased variance, as `torch.nn.LayerNorm`).
pub(crate) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            for (o, row) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                let mean = sum_map(row, |v| v) / d as f32;
                let var = sum_map(row, |v| (v - mean) * (v - mean)) / d as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                for (((o, v), w), b) in o.iter_mut().zip(row).zip(w).zip(b) {
                    *o = (v - mean) * rstd * w + b;
                }
            }
        });
}

/// `x[r] += bias` for every row of width `bias.len()`.
pub(crate) fn add_bias(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_mut(bias.len() * ROWS_PER_TASK).for_each(|x| {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    });
}

/// `h[r] += y[r] + bias` for every row: a residual add of a biased linear output.
pub(crate) fn add_residual(h: &mut [f32], y: &[f32], bias: &[f32]) {
    let d = bias.len();
    h.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(y.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(h, y)| {
            for (hr, yr) in h.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
                for ((h, y), b) in hr.iter_mut().zip(yr).zip(bias) {
                    *h += y + b;
                }
            }
        });
}

/// Mean of each `k x k` block of a `side x side` grid of rows of width `d`, output in
/// row-major block order (`torch.nn.AvgPool2d(k, k)` on the `[d, side, side]` view:
/// sums in (ky, kx) order, then one division).
pub(crate) fn avg_pool(h: &[f32], side: usize, d: usize, k: usize) -> Vec<f32> {
    let out_side = side / k;
    let mut out = vec![0f32; out_side * out_side * d];
    let divisor = (k * k) as f32;
    for (t, row) in out.chunks_exact_mut(d).enumerate() {
        let (ty, tx) = (t / out_side, t % out_side);
        for ky in 0..k {
            for kx in 0..k {
                let patch = (ty * k + ky) * side + tx * k + kx;
                for (o, v) in row.iter_mut().zip(&h[patch * d..][..d]) {
                    *o += v;
                }
            }
        }
        for o in row.iter_mut() {
            *o /= divisor;
        }
    }
    out
}

/// `x = x / sqrt(mean(x^2) + eps) * w` per row of width `w.len()` (Gemma's RMSNorm;
/// `w` as stored, already `1 + weight`).
pub(crate) fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let squares = row
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>();
        let rstd = 1.0 / ((squares / w.len() as f64) as f32 + eps).sqrt();
        for (v, w) in row.iter_mut().zip(w) {
            *v = *v * rstd * w;
        }
    }
}
