//! One-token steps of llama.cpp's one-chunk flash attention over an F16 cache (the
//! decode default), an F32 or a Q8_0 one, with the values of [`super::attention_flash`]
//! but without gathering (and dequantizing) the values into rows first.
//!
//! ggml's value sum treats every element on its own, so the sum of each dimension is a
//! recurrence over the keys, in position order. The cache keeps F16 and F32 values
//! transposed (`[kv head][d][slot]`), so a dimension's values are one contiguous row;
//! Q8_0 values stay in rows of blocks (`[kv head][slot][d]`), read a block at a time:
//! 1. per query head, the score of every visible key, then the online softmax over them,
//!    which fixes each key's rescale `ms` and weight `vs`, each run's merge factors and
//!    the final `1 / sum` (see [`Weigh::weigh_keys`]);
//! 2. per dimension, for every key: `acc = f16(acc * ms)` where `ms != 1`, then
//!    `acc = f16(v * vs + acc)` (fused in f32 over the first multiple of 64 dimensions,
//!    as ggml's AVX-512 loop does; the product rounded first after it); F32 and Q8_0
//!    caches sum in f32 (`acc *= ms`, then `acc += v * vs`, unfused); at the end of a run
//!    the run is merged in f32 and `acc` restarts at 0 (see [`sum_dim_scalar`]).
//!
//! The SIMD twin takes eight dimensions per vector and sixteen vectors (of up to four
//! query heads) per pass over the keys, so sixteen independent sums; it transposes the
//! values in registers eight keys at a time. Phase 1 splits the query heads over the
//! threads, phase 2 the dimensions, one piece per thread: even short steps, where this
//! gains little by itself, as it keeps the other threads awake for the products that
//! follow (the 270M decodes 1-2% faster than with short steps on one thread).

use super::attention::{Dots, Query};
use super::attention_flash::{key_weight, merge_factors, Runs};
use super::f16_accumulator::GGML_F16_STEP;
use super::kv_store::{CpuKvStore, KvData};
use crate::backend::AttentionJob;
use gemma_kernels::quant::{BlockQ8_0, QuantBlock};
use half::f16;
use rayon::prelude::*;
use std::ops::Range;

/// What the online softmax fixed for one key of one query head.
#[derive(Clone, Copy, Debug, Default)]
struct KeyWeight {
    /// Rescale of the value sum before this key (1: none).
    ms: f32,
    /// Weight of this key's value.
    vs: f32,
}

/// How one run of one query head merges into the result (ggml's `reduce_partials`).
#[derive(Clone, Copy, Debug, Default)]
struct RunMerge {
    /// Factor of the sum of the runs before.
    old: f32,
    /// Factor of this run.
    new: f32,
    /// The run is skipped (its softmax sum is 0).
    skip: bool,
}

/// Consecutive slots holding keys of one run.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// First slot.
    slot: usize,
    /// Number of keys.
    len: usize,
    /// Index of its first key among the visible keys.
    key: usize,
    /// Its run.
    run: usize,
    /// The run ends with this span.
    ends_run: bool,
}

/// Reusable buffers of [`attention`].
#[derive(Debug, Default)]
pub(crate) struct StepScratch {
    /// Per query head of the KV head, each visible key's weights.
    weights: Vec<KeyWeight>,
    /// Per query head, each run's merge.
    merges: Vec<RunMerge>,
    /// Per query head, `1 / sum` (0 without keys).
    inv: Vec<f32>,
    /// The spans of the visible keys.
    spans: Vec<Span>,
    /// The output of each pass of phase 2.
    passes: Vec<f32>,
}

/// Whether [`attention`] runs `job`: one query row.
pub(crate) fn applies(job: &AttentionJob) -> bool {
    job.rows.len() == 1
}

/// The values of a cache, or of one KV head: F16 and F32 transposed (`[kv head][d][slot]`),
/// Q8_0 in rows of blocks (`[kv head][slot][d]`).
#[derive(Clone, Copy, Debug)]
enum Values<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    Q8_0(&'a [BlockQ8_0]),
}

impl<'a> Values<'a> {
    /// Values `range` (those of one KV head, a whole number of blocks).
    fn part(self, range: Range<usize>) -> Values<'a> {
        let blocks = range.start / BlockQ8_0::ELEMS..range.end / BlockQ8_0::ELEMS;
        match self {
            Values::F16(v) => Values::F16(&v[range]),
            Values::F32(v) => Values::F32(&v[range]),
            Values::Q8_0(v) => Values::Q8_0(&v[blocks]),
        }
    }
}

/// Runs the one-row `job` (layouts as [`super::attention::attention`]); `applies` must hold.
pub(crate) fn attention(
    q: &[f32],
    store: &CpuKvStore,
    job: &AttentionJob,
    out: &mut [f32],
    scratch: &mut StepScratch,
) {
    attention_with(q, store, job, out, scratch, true);
}

/// [`attention`] with the SIMD sums (where `simd` and the CPU has them) or the scalar
/// reference.
pub(super) fn attention_with(
    q: &[f32],
    store: &CpuKvStore,
    job: &AttentionJob,
    out: &mut [f32],
    scratch: &mut StepScratch,
    simd: bool,
) {
    let value_cache = match &store.values {
        KvData::F16(v) => Values::F16(v),
        KvData::F32(v) => Values::F32(v),
        KvData::Q8_0(v) => Values::Q8_0(v),
    };
    let heads = job.heads;
    let (dk, dv, group) = (heads.head_dim_k, heads.head_dim_v, heads.group());
    let slots = store.shape.slots;
    let t = job.rows.start;
    let keys = job.visible_keys(job.pos0 + t);
    let q_row = &q[t * heads.n_head * dk..(t + 1) * heads.n_head * dk];
    let out_row = &mut out[t * heads.n_head * dv..(t + 1) * heads.n_head * dv];
    if keys.is_empty() {
        out_row.fill(0.0);
        return;
    }
    let runs: Vec<Range<usize>> = Runs::of(job, store).split(keys.clone()).collect();
    scratch.spans.clear();
    for (run, positions) in runs.iter().enumerate() {
        let first = scratch.spans.len();
        scratch
            .spans
            .extend(job.slot_map.segments(positions.clone()).map(|seg| Span {
                slot: seg.slot,
                len: seg.len,
                key: seg.pos - keys.start,
                run,
                ends_run: false,
            }));
        if let Some(last) = scratch.spans[first..].last_mut() {
            last.ends_run = true;
        }
    }
    let threads = rayon::current_num_threads().max(1);
    let dots = Dots::best();
    for g in 0..heads.n_head_kv {
        let values = value_cache.part(g * dv * slots..(g + 1) * dv * slots);
        let phase1 = Weigh {
            store,
            g,
            spans: &scratch.spans,
            dots: &dots,
        };
        let (n, n_runs) = (keys.len(), runs.len());
        scratch.weights.resize(group * n, KeyWeight::default());
        scratch.merges.resize(group * n_runs, RunMerge::default());
        scratch.inv.resize(group, 0.0);
        let min_len = group.div_ceil(threads);
        scratch
            .weights
            .par_chunks_mut(n)
            .zip(scratch.merges.par_chunks_mut(n_runs))
            .zip(scratch.inv.par_iter_mut())
            .enumerate()
            .with_min_len(min_len)
            .for_each(|(j, ((weights, merges), inv))| {
                let h = g * group + j;
                *inv = phase1.weigh_keys(&q_row[h * dk..(h + 1) * dk], weights, merges);
            });
        let sums = Sums {
            values,
            slots,
            dv,
            spans: &scratch.spans,
            n_keys: n,
            n_runs,
            weights: &scratch.weights,
            merges: &scratch.merges,
            inv: &scratch.inv,
            body: dv - dv % GGML_F16_STEP,
        };
        let plan = Plan::of(group, dv, simd);
        scratch.passes.resize(plan.tasks() * plan.task_len(), 0.0);
        let min_len = plan.tasks().div_ceil(threads);
        scratch
            .passes
            .par_chunks_mut(plan.task_len())
            .enumerate()
            .with_min_len(min_len)
            .for_each(|(task, out)| plan.run(task, &sums, out));
        plan.scatter(
            &scratch.passes,
            &mut out_row[g * group * dv..(g + 1) * group * dv],
        );
    }
}

/// Phase 1 for the query heads of one KV head.
struct Weigh<'a> {
    store: &'a CpuKvStore,
    g: usize,
    spans: &'a [Span],
    dots: &'a Dots,
}

impl Weigh<'_> {
    /// Scores every visible key against `query` and runs the online softmax over them
    /// (ggml's order and operations): fills `weights` (one per key) and `merges` (one
    /// per run) and returns `1 / sum` (0 without keys).
    fn weigh_keys(&self, query: &[f32], weights: &mut [KeyWeight], merges: &mut [RunMerge]) -> f32 {
        let query = Query::new(&self.store.keys, query);
        let (mut total_m, mut total_sum) = (f32::NEG_INFINITY, 0.0f32);
        let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
        for span in self.spans {
            for (i, slot) in (span.slot..span.slot + span.len).enumerate() {
                let s = query.dot(self.store.key(self.g, slot), self.dots);
                let (ms, vs) = key_weight(&mut m, s);
                sum = sum * ms + vs;
                weights[span.key + i] = KeyWeight { ms, vs };
            }
            if span.ends_run {
                merges[span.run] = if sum == 0.0 {
                    RunMerge {
                        old: 1.0,
                        new: 0.0,
                        skip: true,
                    }
                } else {
                    let (old, new) = merge_factors(&mut total_m, m);
                    total_sum = total_sum * old + sum * new;
                    RunMerge {
                        old,
                        new,
                        skip: false,
                    }
                };
                (m, sum) = (f32::NEG_INFINITY, 0.0);
            }
        }
        if total_sum == 0.0 {
            0.0
        } else {
            1.0 / total_sum
        }
    }
}

/// Phase 2's inputs for one KV head.
struct Sums<'a> {
    /// The KV head's values.
    values: Values<'a>,
    slots: usize,
    /// Values per slot.
    dv: usize,
    spans: &'a [Span],
    n_keys: usize,
    n_runs: usize,
    /// `[query head][key]`.
    weights: &'a [KeyWeight],
    /// `[query head][run]`.
    merges: &'a [RunMerge],
    /// `[query head]`.
    inv: &'a [f32],
    /// Dimensions below this take the fused multiply-add (F16 values).
    body: usize,
}

impl Sums<'_> {
    /// The F16 values of dimension `d` by slot (empty for another cache type).
    fn row16(&self, d: usize) -> &[f16] {
        match self.values {
            Values::F16(v) => &v[d * self.slots..(d + 1) * self.slots],
            _ => &[],
        }
    }

    /// The F32 values of dimension `d` by slot (empty for another cache type).
    fn row32(&self, d: usize) -> &[f32] {
        match self.values {
            Values::F32(v) => &v[d * self.slots..(d + 1) * self.slots],
            _ => &[],
        }
    }

    /// The Q8_0 block holding dimension `d` in `slot` (a Q8_0 cache).
    fn block(&self, blocks: &'_ [BlockQ8_0], slot: usize, d: usize) -> BlockQ8_0 {
        blocks[(slot * self.dv + d) / BlockQ8_0::ELEMS]
    }

    /// Query head `j`'s key weights.
    fn weights(&self, j: usize) -> &[KeyWeight] {
        &self.weights[j * self.n_keys..(j + 1) * self.n_keys]
    }

    /// Query head `j`'s run merges.
    fn merges(&self, j: usize) -> &[RunMerge] {
        &self.merges[j * self.n_runs..(j + 1) * self.n_runs]
    }
}

/// The scalar reference of phase 2: the attention output of query head `j` (of the KV
/// head) in dimension `d`.
fn sum_dim_scalar(s: &Sums, j: usize, d: usize) -> f32 {
    let round = |x: f32| f16::from_f32(x).to_f32();
    let f32_step = |acc: f32, v: f32, w: KeyWeight| {
        let acc = if w.ms != 1.0 { acc * w.ms } else { acc };
        acc + v * w.vs
    };
    match s.values {
        Values::F16(_) => {
            let (row, fused) = (s.row16(d), d < s.body);
            recurrence(
                s,
                j,
                |slot| row[slot],
                |acc, v, w| {
                    let acc = if w.ms != 1.0 { round(acc * w.ms) } else { acc };
                    round(match fused {
                        true => v.to_f32().mul_add(w.vs, acc),
                        false => acc + v.to_f32() * w.vs,
                    })
                },
            )
        }
        Values::F32(_) => {
            let row = s.row32(d);
            recurrence(s, j, |slot| row[slot], f32_step)
        }
        Values::Q8_0(blocks) => {
            let value = |slot| {
                let b = s.block(blocks, slot, d);
                b.qs[d % BlockQ8_0::ELEMS] as f32 * b.d.to_f32()
            };
            recurrence(s, j, value, f32_step)
        }
    }
}

/// Query head `j`'s sum over the keys of one dimension (`value(slot)`), `step(acc, value,
/// weight)` adding one key, each run merged at its end; times `1 / sum`.
fn recurrence<T>(
    s: &Sums,
    j: usize,
    value: impl Fn(usize) -> T,
    step: impl Fn(f32, T, KeyWeight) -> f32,
) -> f32 {
    let (weights, merges) = (s.weights(j), s.merges(j));
    let (mut acc, mut merged) = (0.0f32, 0.0f32);
    for span in s.spans {
        let keys = &weights[span.key..span.key + span.len];
        for (slot, &w) in (span.slot..span.slot + span.len).zip(keys) {
            acc = step(acc, value(slot), w);
        }
        if span.ends_run {
            let m = merges[span.run];
            if !m.skip {
                merged = merged * m.old + acc * m.new;
            }
            acc = 0.0;
        }
    }
    merged * s.inv[j]
}

/// How phase 2 splits one KV head's `group` query heads and `dv` dimensions into tasks:
/// `heads` query heads times `width` dimensions each, every task writing `task_len`
/// values (`[head][dimension]`); the dimensions past the last whole pass form one more
/// task per set of heads.
#[derive(Clone, Copy, Debug)]
struct Plan {
    group: usize,
    dv: usize,
    /// Query heads per task (4, 2 or 1, dividing `group`).
    heads: usize,
    /// Dimensions per whole pass: 8 per vector, sixteen vectors per pass. A whole pass
    /// is all below `body` or all above it: `body` is a multiple of 64, the dimensions
    /// after it fewer than 64.
    width: usize,
    /// Whole passes take the SIMD sums where the CPU has them.
    simd: bool,
}

impl Plan {
    fn of(group: usize, dv: usize, simd: bool) -> Plan {
        let heads = [4, 2, 1]
            .into_iter()
            .find(|h| group.is_multiple_of(*h))
            .unwrap_or(1);
        Plan {
            group,
            dv,
            heads,
            width: 128 / heads,
            simd,
        }
    }

    /// Whole passes per set of heads, plus one for the leftover dimensions.
    fn passes(&self) -> usize {
        self.dv.div_ceil(self.width)
    }

    fn tasks(&self) -> usize {
        self.group / self.heads * self.passes()
    }

    fn task_len(&self) -> usize {
        self.heads * self.width
    }

    /// The first query head and the dimensions of task `task`.
    fn task(&self, task: usize) -> (usize, Range<usize>) {
        let (set, pass) = (task / self.passes(), task % self.passes());
        let d0 = pass * self.width;
        (set * self.heads, d0..(d0 + self.width).min(self.dv))
    }

    /// Computes task `task` into `out` (`[head][dimension - d0]`, `width` per head).
    fn run(&self, task: usize, s: &Sums, out: &mut [f32]) {
        let (j0, dims) = self.task(task);
        if self.simd && dims.len() == self.width && simd_pass(self.heads, s, j0, dims.start, out) {
            return;
        }
        for j in 0..self.heads {
            for d in dims.clone() {
                out[j * self.width + d - dims.start] = sum_dim_scalar(s, j0 + j, d);
            }
        }
    }

    /// Copies the tasks' outputs to `out` (`[query head][dv]` of the KV head).
    fn scatter(&self, passes: &[f32], out: &mut [f32]) {
        for (task, values) in passes.chunks(self.task_len()).enumerate() {
            let (j0, dims) = self.task(task);
            for j in 0..self.heads {
                let src = &values[j * self.width..j * self.width + dims.len()];
                out[(j0 + j) * self.dv + dims.start..][..dims.len()].copy_from_slice(src);
            }
        }
    }
}

/// Runs a whole pass of `heads` query heads from `j0` and dimensions from `d0` with the
/// SIMD sums; false (nothing done) on CPUs without them.
fn simd_pass(heads: usize, s: &Sums, j0: usize, d0: usize, out: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !x86::available() {
            return false;
        }
        // SAFETY: AVX2, F16C and FMA were detected just above.
        unsafe {
            match heads {
                4 => x86::pass::<4, 4>(s, j0, d0, out),
                2 => x86::pass::<2, 8>(s, j0, d0, out),
                _ => x86::pass::<1, 16>(s, j0, d0, out),
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (heads, s, j0, d0, out);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;
