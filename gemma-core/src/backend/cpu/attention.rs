//! Softmax attention on the CPU, reading the KV cache in place.
//!
//! One task per (token, query head), spread over the rayon pool. A task scores its
//! visible keys (only the live window of a local layer), takes the softmax and sums the
//! values; its memory is one score per visible key, so nothing is quadratic in the
//! prompt. The numerics follow llama.cpp's CPU attention without flash attention:
//! - an F16 cache: the query is rounded to F16 for `Q·K` and the probabilities are
//!   rounded to F16 for `P·V` (ggml converts a matmul's f32 operand to the F16 weight
//!   type), products accumulated in f32;
//! - softmax: `exp(s - max)` in f32, the sum in f64, probabilities scaled by `1/sum`;
//! - a Q8_0 cache: the query is quantized to Q8_0 for `Q·K` (as ggml would), the values
//!   are dequantized row by row;
//! - an F32 cache: everything in f32.

use super::kv_store::{CpuKvStore, KvData};
use crate::attention::visible_keys;
use crate::backend::{AttentionJob, KvShape};
use bytemuck::Zeroable;
use gemma_kernels::cpu::isa;
use gemma_kernels::quant::{BlockQ8_0, QuantBlock, VecDot};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// The dot-product kernels for one cache type, chosen once per call.
struct Dots {
    f16: VecDot<f16>,
    f32: VecDot<f32>,
    q8_0: VecDot<BlockQ8_0>,
}

impl Dots {
    fn best() -> Dots {
        let isa = isa::current();
        Dots {
            f16: <f16 as QuantBlock>::vec_dot_for(isa).unwrap_or(<f16 as QuantBlock>::vec_dot),
            f32: <f32 as QuantBlock>::vec_dot_for(isa).unwrap_or(<f32 as QuantBlock>::vec_dot),
            q8_0: BlockQ8_0::vec_dot_for(isa).unwrap_or(BlockQ8_0::vec_dot),
        }
    }
}

/// Runs `job`: `q` holds rows of `n_head * head_dim_k` scaled queries, `out` receives
/// rows of `n_head * head_dim_v`.
pub(crate) fn attention(q: &[f32], store: &CpuKvStore, job: &AttentionJob, out: &mut [f32]) {
    let heads = job.heads;
    let (dk, dv) = (heads.head_dim_k, heads.head_dim_v);
    let q_width = heads.n_head * dk;
    let out_rows = &mut out[job.rows.start * heads.n_head * dv..job.rows.end * heads.n_head * dv];
    let dots = Dots::best();
    out_rows.par_chunks_mut(dv).enumerate().for_each(|(i, out)| {
        let t = job.rows.start + i / heads.n_head;
        let h = i % heads.n_head;
        let query = &q[t * q_width + h * dk..t * q_width + (h + 1) * dk];
        let head = Head { store, job, g: h / heads.group(), pos: job.pos0 + t, dots: &dots };
        head.attend(query, out);
    });
}

/// One query head at one position.
struct Head<'a> {
    store: &'a CpuKvStore,
    job: &'a AttentionJob,
    /// Its KV head.
    g: usize,
    /// Its position.
    pos: usize,
    dots: &'a Dots,
}

impl Head<'_> {
    fn attend(&self, query: &[f32], out: &mut [f32]) {
        let keys = visible_keys(self.pos, self.job.window);
        let mut scores = vec![0.0f32; keys.len()];
        self.score(query, keys.start, &mut scores);
        softmax(&mut scores);
        self.sum_values(&mut scores, keys.start, out);
    }

    /// `scores[j] = q · k(first + j)`.
    fn score(&self, query: &[f32], first: usize, scores: &mut [f32]) {
        let KvShape { slots, heads, .. } = self.store.shape;
        let dk = heads.head_dim_k;
        let base = self.g * slots;
        let segments = self.job.slot_map.segments(first..first + scores.len());
        match &self.store.keys {
            KvData::F16(keys) => {
                let mut q16 = vec![f16::ZERO; dk];
                q16.convert_from_f32_slice(query);
                for seg in segments {
                    for (s, slot) in scores[seg.offsets(first)].iter_mut().zip(seg.slots()) {
                        let row = (base + slot) * dk;
                        *s = (self.dots.f16)(&keys[row..row + dk], &q16);
                    }
                }
            }
            KvData::F32(keys) => {
                for seg in segments {
                    for (s, slot) in scores[seg.offsets(first)].iter_mut().zip(seg.slots()) {
                        let row = (base + slot) * dk;
                        *s = (self.dots.f32)(&keys[row..row + dk], query);
                    }
                }
            }
            KvData::Q8_0(keys) => {
                let blocks = dk / BlockQ8_0::ELEMS;
                let mut q8 = vec![BlockQ8_0::zeroed(); blocks];
                BlockQ8_0::quantize_act(query, &mut q8);
                for seg in segments {
                    for (s, slot) in scores[seg.offsets(first)].iter_mut().zip(seg.slots()) {
                        let row = (base + slot) * blocks;
                        *s = (self.dots.q8_0)(&keys[row..row + blocks], &q8);
                    }
                }
            }
        }
    }

    /// `out = Σ_j p[j] · v(first + j)`.
    fn sum_values(&self, probs: &mut [f32], first: usize, out: &mut [f32]) {
        let KvShape { slots, heads, .. } = self.store.shape;
        let dv = heads.head_dim_v;
        let segments = self.job.slot_map.segments(first..first + probs.len());
        match &self.store.values {
            KvData::F16(values) => {
                let mut p16 = vec![f16::ZERO; probs.len()];
                p16.convert_from_f32_slice(probs);
                out.fill(0.0);
                for seg in segments {
                    let p = &p16[seg.offsets(first)];
                    for (d, o) in out.iter_mut().enumerate() {
                        let row = (self.g * dv + d) * slots;
                        *o += (self.dots.f16)(&values[row + seg.slot..row + seg.slot + seg.len], p);
                    }
                }
            }
            KvData::F32(values) => {
                out.fill(0.0);
                for seg in segments {
                    let p = &probs[seg.offsets(first)];
                    for (d, o) in out.iter_mut().enumerate() {
                        let row = (self.g * dv + d) * slots;
                        *o += (self.dots.f32)(&values[row + seg.slot..row + seg.slot + seg.len], p);
                    }
                }
            }
            KvData::Q8_0(values) => {
                let blocks = dv / BlockQ8_0::ELEMS;
                let mut row_values = vec![0.0f32; dv];
                out.fill(0.0);
                for seg in segments {
                    for (&p, slot) in probs[seg.offsets(first)].iter().zip(seg.slots()) {
                        let row = (self.g * slots + slot) * blocks;
                        BlockQ8_0::dequantize(&values[row..row + blocks], &mut row_values);
                        for (o, &v) in out.iter_mut().zip(&row_values) {
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
