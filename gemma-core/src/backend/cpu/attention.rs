//! Softmax attention on the CPU for decode steps, short batches and very long global
//! contexts, reading the KV cache in place (prefill batches take the matrix products of
//! [`super::attention_tiles`], with the same numerics).
//!
//! One task per (token, query head), spread over the rayon pool. A task scores only its
//! visible keys (the live window of a local layer), takes the softmax and sums the
//! values; its memory is one score per visible key, never quadratic in the prompt.
//! The numerics are those of llama.cpp's CPU attention without flash attention:
//! - an F16 cache: the query is rounded to F16 for `Q·K` and the probabilities to F16
//!   for `P·V` (ggml converts a matmul's f32 operand to the F16 weight type), products
//!   summed in f32;
//! - softmax: `exp(s - max)` in f32, the sum in f64, probabilities scaled by `1/sum`;
//! - a Q8_0 cache: the query is quantized to Q8_0 for `Q·K` (as ggml would), the value
//!   rows are dequantized;
//! - an F32 cache: everything in f32.

use super::kv_store::{CpuKvStore, KvData, Row};
use crate::backend::{AttentionJob, KvShape};
use bytemuck::Zeroable;
use gemma_kernels::cpu::isa;
use gemma_kernels::quant::{BlockQ8_0, QuantBlock, VecDot};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// The dot-product kernels, chosen once per call.
pub(super) struct Dots {
    f16: VecDot<f16>,
    f32: VecDot<f32>,
    q8_0: VecDot<BlockQ8_0>,
}

impl Dots {
    pub(super) fn best() -> Dots {
        let isa = isa::current();
        Dots {
            f16: <f16 as QuantBlock>::vec_dot_for(isa).unwrap_or(<f16 as QuantBlock>::vec_dot),
            f32: <f32 as QuantBlock>::vec_dot_for(isa).unwrap_or(<f32 as QuantBlock>::vec_dot),
            q8_0: BlockQ8_0::vec_dot_for(isa).unwrap_or(BlockQ8_0::vec_dot),
        }
    }
}

/// A query converted to the dot-product format of the cached keys (ggml's
/// `vec_dot_type`): F16 keys take an F16 query, Q8_0 keys a Q8_0 one, F32 keys f32.
pub(super) enum Query<'a> {
    F32(&'a [f32]),
    F16(Vec<f16>),
    Q8_0(Vec<BlockQ8_0>),
}

impl<'a> Query<'a> {
    pub(super) fn new(keys: &KvData, q: &'a [f32]) -> Query<'a> {
        match keys {
            KvData::F32(_) => Query::F32(q),
            KvData::F16(_) => {
                let mut q16 = vec![f16::ZERO; q.len()];
                q16.convert_from_f32_slice(q);
                Query::F16(q16)
            }
            KvData::Q8_0(_) => {
                let mut q8 = vec![BlockQ8_0::zeroed(); q.len() / BlockQ8_0::ELEMS];
                BlockQ8_0::quantize_act(q, &mut q8);
                Query::Q8_0(q8)
            }
        }
    }

    /// `q · key` (the key has the cache's type).
    pub(super) fn dot(&self, key: Row<'_>, dots: &Dots) -> f32 {
        match (self, key) {
            (Query::F32(q), Row::F32(k)) => (dots.f32)(k, q),
            (Query::F16(q), Row::F16(k)) => (dots.f16)(k, q),
            (Query::Q8_0(q), Row::Q8_0(k)) => (dots.q8_0)(k, q),
            _ => unreachable!("a query is converted for its own cache's key type"),
        }
    }
}

/// One query head at one position, with what it needs to attend.
struct Head<'a> {
    store: &'a CpuKvStore,
    job: &'a AttentionJob,
    /// Its KV head.
    g: usize,
    /// Its position.
    pos: usize,
    dots: &'a Dots,
    /// Keep the query and the probabilities in f32 with an F16 cache (the values of
    /// llama.cpp's tiled flash attention) instead of rounding them to F16.
    widened: bool,
}

/// Runs `job`: `q` holds rows of `n_head * head_dim_k` scaled queries, `out` receives
/// rows of `n_head * head_dim_v`. `widened`: an F16 cache is widened to f32 instead of
/// the query and probabilities being rounded to F16.
pub(crate) fn attention(
    q: &[f32],
    store: &CpuKvStore,
    job: &AttentionJob,
    widened: bool,
    out: &mut [f32],
) {
    let heads = job.heads;
    let (dk, dv) = (heads.head_dim_k, heads.head_dim_v);
    let q_width = heads.n_head * dk;
    let out_rows = &mut out[job.rows.start * heads.n_head * dv..job.rows.end * heads.n_head * dv];
    let dots = Dots::best();
    out_rows
        .par_chunks_mut(dv)
        .enumerate()
        .for_each(|(i, out)| {
            let t = job.rows.start + i / heads.n_head;
            let h = i % heads.n_head;
            let query = &q[t * q_width + h * dk..t * q_width + (h + 1) * dk];
            let head = Head {
                store,
                job,
                g: h / heads.group(),
                pos: job.pos0 + t,
                dots: &dots,
                widened,
            };
            head.attend(query, out);
        });
}

impl Head<'_> {
    /// Standard attention: all scores, softmax, then `P·V`.
    fn attend(&self, query: &[f32], out: &mut [f32]) {
        let keys = self.job.visible_keys(self.pos);
        let mut scores = vec![0.0f32; keys.len()];
        let widened = self.widened && matches!(self.store.keys, KvData::F16(_));
        let q = match widened {
            true => Query::F32(query),
            false => Query::new(&self.store.keys, query),
        };
        let mut key = vec![0.0f32; if widened { query.len() } else { 0 }];
        for seg in self.job.slot_map.segments(keys.clone()) {
            for (s, slot) in scores[seg.offsets(keys.start)].iter_mut().zip(seg.slots()) {
                let row = self.store.key(self.g, slot);
                *s = if widened {
                    row.to_f32(&mut key);
                    (self.dots.f32)(&key, query)
                } else {
                    q.dot(row, self.dots)
                };
            }
        }
        softmax(&mut scores);
        self.sum_values(&scores, keys.start, out);
    }

    /// `out = Σ_j p[j] · v(first + j)`.
    fn sum_values(&self, probs: &[f32], first: usize, out: &mut [f32]) {
        let KvShape { slots, heads, .. } = self.store.shape;
        let dv = heads.head_dim_v;
        out.fill(0.0);
        let segments = self.job.slot_map.segments(first..first + probs.len());
        match &self.store.values {
            KvData::F16(values) if self.widened => {
                let mut row = vec![0.0f32; probs.len()];
                for seg in segments {
                    let p = &probs[seg.offsets(first)];
                    let row = &mut row[..seg.len];
                    for (d, o) in out.iter_mut().enumerate() {
                        let at = (self.g * dv + d) * slots + seg.slot;
                        values[at..at + seg.len].convert_to_f32_slice(row);
                        *o += (self.dots.f32)(row, p);
                    }
                }
            }
            KvData::F16(values) => {
                let mut p16 = vec![f16::ZERO; probs.len()];
                p16.convert_from_f32_slice(probs);
                for seg in segments {
                    let p = &p16[seg.offsets(first)];
                    for (d, o) in out.iter_mut().enumerate() {
                        let row = (self.g * dv + d) * slots + seg.slot;
                        *o += (self.dots.f16)(&values[row..row + seg.len], p);
                    }
                }
            }
            KvData::F32(values) => {
                for seg in segments {
                    let p = &probs[seg.offsets(first)];
                    for (d, o) in out.iter_mut().enumerate() {
                        let row = (self.g * dv + d) * slots + seg.slot;
                        *o += (self.dots.f32)(&values[row..row + seg.len], p);
                    }
                }
            }
            KvData::Q8_0(_) => {
                let mut value = vec![0.0f32; dv];
                for seg in segments {
                    for (&p, slot) in probs[seg.offsets(first)].iter().zip(seg.slots()) {
                        self.store.value(self.g, slot).to_f32(&mut value);
                        for (o, &v) in out.iter_mut().zip(&value) {
                            *o += p * v;
                        }
                    }
                }
            }
        }
    }
}

/// ggml's `soft_max`: `exp(x - max)` in f32, summed in f64, scaled by `1/sum` in f32.
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
