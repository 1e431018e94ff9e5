//! Attention of many queries at once (prefill): per tile of query rows and KV head, two
//! matrix products run by the matmul kernels, with the numerics of the per-head path.
//!
//! The tile's visible keys are gathered into a contiguous matrix and the values into a
//! `[head_dim_v × keys]` matrix, F16 converted to f32 once (so the products need no
//! conversion); then `S = K · Q` and, after a masked softmax, `O = V · P`. With an F16
//! cache the queries and the probabilities are rounded to F16 first: products of F16
//! values are exact in f32, so this is llama.cpp's non-flash attention (an F16 matrix
//! times an operand rounded to F16, summed in f32) as in the per-head path. Q8_0 keys
//! stay blocks (the matmul quantizes the queries to Q8_0, as ggml does). Memory is one
//! score per visible key and query of the tile, bounded by [`SCORE_BUDGET`].

use super::kv_store::{CpuKvStore, KvData};
use crate::backend::AttentionJob;
use crate::CoreError;
use gemma_gguf::GgmlType;
use gemma_kernels::cpu::matmul::{matmul, MatmulScratch, WeightMatrix};
use gemma_kernels::quant::{BlockQ8_0, QuantBlock};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::ops::Range;

/// Jobs with fewer query rows take the per-head path (a matrix product would not pay).
const MIN_ROWS: usize = 8;

/// Key ranges longer than this take the per-head path, which reads the cache in place
/// (gathering them for every tile would copy too much).
const MAX_KEYS: usize = 8192;

/// Query rows per tile at most.
const MAX_TILE: usize = 64;

/// Scores per tile at most (f32 values).
const SCORE_BUDGET: usize = 1 << 21;

/// Reusable buffers of the tiled path.
#[derive(Debug, Default)]
pub(crate) struct TileScratch {
    /// The gathered keys (f32 rows or Q8_0 blocks; `u64` words keep them aligned).
    keys: Vec<u64>,
    /// The gathered values, f32 `[head_dim_v][keys]`.
    values: Vec<f32>,
    /// The tile's queries of one KV head, `[row][head][head_dim_k]`.
    queries: Vec<f32>,
    /// Scores, then probabilities, `[row * group + head][keys]`.
    scores: Vec<f32>,
    /// Outputs, `[row * group + head][head_dim_v]`.
    outputs: Vec<f32>,
    /// The matmul's activation buffers.
    matmul: MatmulScratch,
}

/// Whether `job` takes the tiled path.
pub(crate) fn applies(job: &AttentionJob) -> bool {
    let first = job.visible_keys(job.pos0 + job.rows.start).start;
    let end = job.visible_keys(job.pos0 + job.rows.end - 1).end;
    job.rows.len() >= MIN_ROWS && end - first <= MAX_KEYS
}

/// Runs `job` (see [`super::attention::attention`] for the layouts of `q` and `out`).
/// `widened`: an F16 cache is widened to f32 instead of the queries and probabilities
/// being rounded to F16 (llama.cpp's tiled flash attention).
pub(crate) fn attention(
    q: &[f32],
    store: &CpuKvStore,
    job: &AttentionJob,
    widened: bool,
    out: &mut [f32],
    scratch: &mut TileScratch,
) -> Result<(), CoreError> {
    let heads = job.heads;
    let widest = job.visible_keys(job.pos0 + job.rows.end - 1).end
        - job.visible_keys(job.pos0 + job.rows.start).start;
    let tile = (SCORE_BUDGET / (heads.group() * widest)).clamp(1, MAX_TILE);
    for first in job.rows.clone().step_by(tile) {
        let rows = first..(first + tile).min(job.rows.end);
        for g in 0..heads.n_head_kv {
            attend_tile(q, store, job, rows.clone(), g, widened, out, scratch)?;
        }
    }
    Ok(())
}

/// The queries of batch rows `rows` for the query heads of KV head `g`.
#[allow(clippy::too_many_arguments)]
fn attend_tile(
    q: &[f32],
    store: &CpuKvStore,
    job: &AttentionJob,
    rows: Range<usize>,
    g: usize,
    widened: bool,
    out: &mut [f32],
    s: &mut TileScratch,
) -> Result<(), CoreError> {
    let heads = job.heads;
    let (dk, dv, group) = (heads.head_dim_k, heads.head_dim_v, heads.group());
    // The visible ranges only move forward with the position (an image's tokens see up
    // to its end, the tokens after it further still).
    let lo = job.visible_keys(job.pos0 + rows.start).start;
    let keys = lo..job.visible_keys(job.pos0 + rows.end - 1).end;
    let (nk, nq) = (keys.len(), rows.len() * group);
    let round = !widened && matches!(store.keys, KvData::F16(_));

    // Gather the keys (rows) and the values (`[d][key]`).
    let (key_type, key_bytes) = gather_keys(store, job, g, keys.clone(), s);
    gather_values(store, job, g, keys, s);

    // Queries of the group's heads, one row per (token, head), F16-rounded for F16 keys.
    s.queries.clear();
    for t in rows.clone() {
        let row = &q[t * heads.n_head * dk..(t + 1) * heads.n_head * dk];
        s.queries
            .extend_from_slice(&row[g * group * dk..(g + 1) * group * dk]);
    }
    if round {
        round_to_f16(&mut s.queries);
    }

    // S = K · Q, then the masked softmax of each row (F16-rounded for F16 values).
    s.scores.resize(nq * nk, 0.0);
    let k = WeightMatrix::new(
        key_type,
        &bytemuck::cast_slice(&s.keys)[..key_bytes],
        nk,
        dk,
    )?;
    matmul(&k, &s.queries, nq, &mut s.scores, &mut s.matmul)?;
    s.scores
        .par_chunks_mut(nk)
        .enumerate()
        .for_each(|(i, row)| {
            let pos = job.pos0 + rows.start + i / group;
            let visible = job.visible_keys(pos);
            softmax_within(row, visible.start - lo..visible.end - lo);
            if round {
                round_to_f16(row);
            }
        });

    // O = V · P, scattered to the heads' places in `out`.
    s.outputs.resize(nq * dv, 0.0);
    let v = WeightMatrix::new(
        GgmlType::F32,
        bytemuck::cast_slice(&s.values[..dv * nk]),
        dv,
        nk,
    )?;
    matmul(&v, &s.scores, nq, &mut s.outputs, &mut s.matmul)?;
    for (i, o) in s.outputs.chunks_exact(dv).enumerate() {
        let (t, h) = (rows.start + i / group, g * group + i % group);
        let at = (t * heads.n_head + h) * dv;
        out[at..at + dv].copy_from_slice(o);
    }
    Ok(())
}

/// Gathers the keys of `keys` for KV head `g` as rows in `s.keys`: f32 for an F16 or
/// F32 cache, the raw blocks for Q8_0. Returns their type and byte length.
fn gather_keys(
    store: &CpuKvStore,
    job: &AttentionJob,
    g: usize,
    keys: Range<usize>,
    s: &mut TileScratch,
) -> (GgmlType, usize) {
    let (slots, dk, nk, lo) = (
        store.shape.slots,
        store.shape.heads.head_dim_k,
        keys.len(),
        keys.start,
    );
    if let KvData::Q8_0(blocks) = &store.keys {
        let row = dk / BlockQ8_0::ELEMS * std::mem::size_of::<BlockQ8_0>();
        let dst = words(&mut s.keys, nk * row);
        for seg in job.slot_map.segments(keys) {
            let at = (g * slots + seg.slot) * dk / BlockQ8_0::ELEMS;
            let src: &[u8] =
                bytemuck::cast_slice(&blocks[at..at + seg.len * dk / BlockQ8_0::ELEMS]);
            let to = (seg.pos - lo) * row;
            dst[to..to + src.len()].copy_from_slice(src);
        }
        return (GgmlType::Q8_0, nk * row);
    }
    let dst: &mut [f32] = bytemuck::cast_slice_mut(words(&mut s.keys, nk * dk * 4));
    for seg in job.slot_map.segments(keys) {
        for (j, slot) in seg.slots().enumerate() {
            let at = (seg.pos - lo + j) * dk;
            store.key(g, slot).to_f32(&mut dst[at..at + dk]);
        }
    }
    (GgmlType::F32, nk * dk * 4)
}

/// Gathers the values of `keys` for KV head `g` as an f32 `[head_dim_v][keys]` matrix
/// in `s.values` (exact for F16/F32, dequantized for Q8_0).
fn gather_values(
    store: &CpuKvStore,
    job: &AttentionJob,
    g: usize,
    keys: Range<usize>,
    s: &mut TileScratch,
) {
    let (slots, dv, nk, lo) = (
        store.shape.slots,
        store.shape.heads.head_dim_v,
        keys.len(),
        keys.start,
    );
    s.values.resize(dv * nk, 0.0);
    let dst = &mut s.values[..dv * nk];
    if let KvData::Q8_0(_) = &store.values {
        let mut row = vec![0.0f32; dv];
        for seg in job.slot_map.segments(keys) {
            for (j, slot) in seg.slots().enumerate() {
                store.value(g, slot).to_f32(&mut row);
                for (d, &v) in row.iter().enumerate() {
                    dst[d * nk + seg.pos - lo + j] = v;
                }
            }
        }
        return;
    }
    for d in 0..dv {
        for seg in job.slot_map.segments(keys.clone()) {
            let at = d * nk + seg.pos - lo;
            let src = store.values.row((g * dv + d) * slots + seg.slot, seg.len);
            src.to_f32(&mut dst[at..at + seg.len]);
        }
    }
}

/// `exp(x - max)` over `visible` (f32, summed in f64), scaled by `1/sum`; 0 elsewhere.
fn softmax_within(row: &mut [f32], visible: Range<usize>) {
    let max = row[visible.clone()]
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in &mut row[visible.clone()] {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in &mut row[visible.clone()] {
        *v *= inv;
    }
    row[..visible.start].fill(0.0);
    row[visible.end..].fill(0.0);
}

/// Rounds every value to the nearest F16 (ggml's conversion of a matmul operand).
fn round_to_f16(x: &mut [f32]) {
    let mut halves = [f16::ZERO; 256];
    for chunk in x.chunks_mut(256) {
        let h = &mut halves[..chunk.len()];
        h.convert_from_f32_slice(chunk);
        h.convert_to_f32_slice(chunk);
    }
}

/// The first `len` bytes of `buf`, grown as needed (`u64` words keep any block aligned).
fn words(buf: &mut Vec<u64>, len: usize) -> &mut [u8] {
    let n = len.div_ceil(8);
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut bytemuck::cast_slice_mut(&mut buf[..n])[..len]
}
