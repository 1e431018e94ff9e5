//! llama.cpp's one-chunk flash attention (`flash_attn_ext_f16_one_chunk`, its kernel for
//! batches under 64 rows and for one-token steps), reproduced value for value:
//! - the query converted to the keys' dot-product type (F16 for an F16 cache, Q8_0 for
//!   Q8_0, f32 for F32), one score per key;
//! - an online softmax over the keys in position order: a running maximum `m` and sum
//!   `s`; a new maximum rescales the value sum by `exp(m_old - m)`;
//! - with an F16 cache the value sum is F16, rounded after every key (see
//!   [`super::f16_accumulator`]); otherwise f32;
//! - a one-token step over at least 512 cache cells (positions rounded up to 256) splits
//!   the cells into one run per thread, each summed as above, and merges the runs
//!   (`ggml_flash_attn_ext_reduce_partials`).
//!
//! The values of a block of keys are gathered once per job and KV head into rows (the
//! cache keeps F16/F32 values transposed), so each key's values are contiguous.

use super::attention::{Dots, Query};
use super::f16_accumulator;
use super::kv_store::{CpuKvStore, KvData};
use crate::backend::{AttentionJob, FLASH_CELL_PADDING, FLASH_SPLIT_MIN_CELLS};
use gemma_kernels::cpu::ops;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::ops::Range;

/// Keys whose values are gathered into rows at a time.
const KEY_BLOCK: usize = 1024;

/// Value rows of one KV head for a block of positions, `[position][head_dim_v]`.
#[derive(Debug, Default)]
pub(crate) struct ValueRows {
    /// First position of the block.
    first: usize,
    /// Rows of an F16 cache.
    f16: Vec<f16>,
    /// Rows of an F32 or Q8_0 cache (Q8_0 dequantized).
    f32: Vec<f32>,
}

/// Runs `job` (see [`super::attention::attention`] for the layouts of `q` and `out`),
/// gathering at most [`KEY_BLOCK`] value rows at a time into `rows`.
pub(crate) fn attention(
    q: &[f32],
    store: &CpuKvStore,
    job: &AttentionJob,
    out: &mut [f32],
    rows: &mut ValueRows,
) {
    let heads = job.heads;
    let (dk, dv, group) = (heads.head_dim_k, heads.head_dim_v, heads.group());
    let q_width = heads.n_head * dk;
    let first = job.visible_keys(job.pos0 + job.rows.start).start;
    let end = job.visible_keys(job.pos0 + job.rows.end - 1).end;
    let runs = Runs::of(job, store);
    let dots = Dots::best();
    let out_rows = &mut out[job.rows.start * heads.n_head * dv..job.rows.end * heads.n_head * dv];
    for g in 0..heads.n_head_kv {
        // One online softmax per (row, query head of this KV head).
        let mut heads_of_g: Vec<(Online, &mut [f32])> = out_rows
            .chunks_mut(dv)
            .enumerate()
            .filter(|(i, _)| (i % heads.n_head) / group == g)
            .map(|(i, out)| {
                let t = job.rows.start + i / heads.n_head;
                let h = i % heads.n_head;
                let query = &q[t * q_width + h * dk..t * q_width + (h + 1) * dk];
                let online = Online::new(
                    Query::new(&store.keys, query),
                    job.visible_keys(job.pos0 + t),
                    store,
                );
                (online, out)
            })
            .collect();
        for block in (first..end).step_by(KEY_BLOCK) {
            let block = block..(block + KEY_BLOCK).min(end);
            rows.gather(store, job, g, block.clone());
            let rows = &*rows;
            heads_of_g.par_iter_mut().for_each(|(online, _)| {
                let keys = online.keys.start.max(block.start)..online.keys.end.min(block.end);
                online.add_keys(keys, store, job, g, rows, &runs, &dots);
            });
        }
        for (online, out) in heads_of_g {
            online.finish(out);
        }
    }
}

/// How the keys of one query are split into runs.
pub(super) struct Runs {
    /// Cells per run (`None`: one run).
    cells: Option<usize>,
}

impl Runs {
    /// llama.cpp's split: a one-token step with an F16 or F32 cache over at least
    /// [`FLASH_SPLIT_MIN_CELLS`] padded cells takes one run of `ceil(cells / threads)`
    /// cells per thread.
    pub(super) fn of(job: &AttentionJob, store: &CpuKvStore) -> Runs {
        let widened = matches!(store.keys, KvData::F16(_) | KvData::F32(_));
        let cells = (job.pos0 + job.batch_rows).next_multiple_of(FLASH_CELL_PADDING);
        let split = job.batch_rows == 1 && widened && cells >= FLASH_SPLIT_MIN_CELLS;
        let threads = rayon::current_num_threads().max(1);
        Runs {
            cells: split.then(|| cells.div_ceil(threads)),
        }
    }

    /// The run holding position `pos`.
    fn of_position(&self, pos: usize) -> usize {
        self.cells.map_or(0, |cells| pos / cells)
    }

    /// The positions of `keys` in each run, in order.
    pub(super) fn split(&self, keys: Range<usize>) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = keys.start;
        std::iter::from_fn(move || {
            if start >= keys.end {
                return None;
            }
            let run = self.of_position(start);
            let end = self
                .cells
                .map_or(keys.end, |cells| ((run + 1) * cells).min(keys.end));
            let positions = start..end;
            start = end;
            Some(positions)
        })
    }
}

/// The attention of one query head in progress: the current run and the runs merged.
struct Online<'a> {
    query: Query<'a>,
    /// The keys it sees.
    keys: Range<usize>,
    /// Which run the current one is (see [`Runs`]).
    run_id: usize,
    /// The current run.
    run: Partial,
    /// Its F16 value sum (F16 cache only).
    acc16: Vec<f16>,
    /// The rescale and weight of each key of the block being added (see [`key_weight`]).
    weights: Vec<(f32, f32)>,
    /// The runs done.
    merged: Partial,
}

impl<'a> Online<'a> {
    fn new(query: Query<'a>, keys: Range<usize>, store: &CpuKvStore) -> Online<'a> {
        let dv = store.shape.heads.head_dim_v;
        let f16_values = matches!(store.values, KvData::F16(_));
        Online {
            query,
            keys,
            run_id: usize::MAX,
            run: Partial::empty(dv),
            acc16: vec![f16::ZERO; if f16_values { dv } else { 0 }],
            weights: Vec::new(),
            merged: Partial::empty(dv),
        }
    }

    /// Adds the keys at `positions` (after those added before), whose values are in
    /// `rows`: per run, every score and weight first, then the value sums.
    #[allow(clippy::too_many_arguments)]
    fn add_keys(
        &mut self,
        positions: Range<usize>,
        store: &CpuKvStore,
        job: &AttentionJob,
        g: usize,
        rows: &ValueRows,
        runs: &Runs,
        dots: &Dots,
    ) {
        let dv = store.shape.heads.head_dim_v;
        for part in runs.split(positions) {
            let run_id = runs.of_position(part.start);
            if run_id != self.run_id {
                self.close_run();
                self.run_id = run_id;
            }
            let run = &mut self.run;
            self.weights.clear();
            for pos in part.clone() {
                let s = self.query.dot(store.key(g, job.slot_map.slot(pos)), dots);
                let (ms, vs) = key_weight(&mut run.m, s);
                run.sum = run.sum * ms + vs;
                self.weights.push((ms, vs));
            }
            let values = (part.start - rows.first) * dv..(part.end - rows.first) * dv;
            if self.acc16.is_empty() {
                // ggml fuses these multiply-adds; in f32 that changes only the last bit.
                for (row, &(ms, vs)) in rows.f32[values].chunks_exact(dv).zip(&self.weights) {
                    if ms != 1.0 {
                        ops::scale(&mut run.acc, ms);
                    }
                    ops::add_scaled(&mut run.acc, row, vs);
                }
            } else {
                f16_accumulator::mad_keys(&mut self.acc16, &rows.f16[values], &self.weights);
            }
        }
    }

    /// Merges the current run (its F16 sum widened) and starts an empty one.
    fn close_run(&mut self) {
        if !self.acc16.is_empty() {
            self.acc16.convert_to_f32_slice(&mut self.run.acc);
            self.acc16.fill(f16::ZERO);
        }
        self.merged.merge(&self.run);
        self.run.reset();
    }

    /// Writes the attention output.
    fn finish(mut self, out: &mut [f32]) {
        self.close_run();
        self.merged.finish(out);
    }
}

/// ggml's online softmax at a key of score `s`, `m` the running maximum (raised to `s`
/// when above it): the rescale `ms` of the sums so far and the key's weight `vs`, one of
/// them 1.
pub(super) fn key_weight(m: &mut f32, s: f32) -> (f32, f32) {
    if s > *m {
        let ms = (*m - s).exp();
        *m = s;
        (ms, 1.0)
    } else {
        (1.0, (s - *m).exp())
    }
}

/// ggml's `reduce_partials` of a run of maximum `run_m` into the runs so far, of maximum
/// `m` (raised to the larger): the factors of the sums so far and of the run.
pub(super) fn merge_factors(m: &mut f32, run_m: f32) -> (f32, f32) {
    let max = m.max(run_m);
    let factors = ((*m - max).exp(), (run_m - max).exp());
    *m = max;
    factors
}

/// The running maximum, sum and value sum of a run (ggml's partials).
struct Partial {
    m: f32,
    sum: f32,
    acc: Vec<f32>,
}

impl Partial {
    fn empty(dv: usize) -> Partial {
        Partial {
            m: f32::NEG_INFINITY,
            sum: 0.0,
            acc: vec![0.0; dv],
        }
    }

    /// Back to no keys.
    fn reset(&mut self) {
        self.m = f32::NEG_INFINITY;
        self.sum = 0.0;
        self.acc.fill(0.0);
    }

    /// Adds the run `p` (ggml's `reduce_partials`; a run without keys is skipped).
    fn merge(&mut self, p: &Partial) {
        if p.sum == 0.0 {
            return;
        }
        let (old, new) = merge_factors(&mut self.m, p.m);
        for (a, &b) in self.acc.iter_mut().zip(&p.acc) {
            *a = *a * old + b * new;
        }
        self.sum = self.sum * old + p.sum * new;
    }

    /// `out = acc / sum` (0 without keys).
    fn finish(&self, out: &mut [f32]) {
        let inv = if self.sum == 0.0 { 0.0 } else { 1.0 / self.sum };
        for (o, &a) in out.iter_mut().zip(&self.acc) {
            *o = a * inv;
        }
    }
}

impl ValueRows {
    /// Gathers the values of KV head `g` at `positions` as rows.
    fn gather(
        &mut self,
        store: &CpuKvStore,
        job: &AttentionJob,
        g: usize,
        positions: Range<usize>,
    ) {
        let (slots, dv) = (store.shape.slots, store.shape.heads.head_dim_v);
        let (n, lo) = (positions.len(), positions.start);
        self.first = lo;
        match &store.values {
            KvData::F16(values) => {
                self.f16.resize(n * dv, f16::ZERO);
                transpose_into(&mut self.f16, values, job, g, slots, dv, positions.clone());
            }
            KvData::F32(values) => {
                self.f32.resize(n * dv, 0.0);
                transpose_into(&mut self.f32, values, job, g, slots, dv, positions.clone());
            }
            KvData::Q8_0(_) => {
                self.f32.resize(n * dv, 0.0);
                for seg in job.slot_map.segments(positions) {
                    for (j, slot) in seg.slots().enumerate() {
                        let at = (seg.pos - lo + j) * dv;
                        store.value(g, slot).to_f32(&mut self.f32[at..at + dv]);
                    }
                }
            }
        }
    }
}

/// Keys per block of [`transpose_into`] (its rows of output stay in L1).
const TRANSPOSE_KEYS: usize = 16;

/// Copies the values of KV head `g` at `positions` from the transposed cache
/// (`[g][d][slot]`) into rows `dst[position - positions.start][d]`, a block of keys at a time.
fn transpose_into<T: Copy>(
    dst: &mut [T],
    values: &[T],
    job: &AttentionJob,
    g: usize,
    slots: usize,
    dv: usize,
    positions: Range<usize>,
) {
    let lo = positions.start;
    for seg in job.slot_map.segments(positions) {
        for k0 in (0..seg.len).step_by(TRANSPOSE_KEYS) {
            let kn = TRANSPOSE_KEYS.min(seg.len - k0);
            let rows = &mut dst[(seg.pos - lo + k0) * dv..(seg.pos - lo + k0 + kn) * dv];
            for d in 0..dv {
                let src = &values[(g * dv + d) * slots + seg.slot + k0..][..kn];
                for (j, &v) in src.iter().enumerate() {
                    rows[j * dv + d] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The kernel against ggml's loop written out plainly, on data whose scores are
    //! exact in f32 whatever the summation order (multiples of 1/4), so the two must
    //! agree bit for bit: key order, run split, merge and F16 rounding included.

    use super::*;
    use crate::attention::SlotMap;
    use crate::backend::{HeadShape, KvShape};
    use crate::kv_cache::KvType;

    const HEADS: HeadShape = HeadShape {
        n_head: 4,
        n_head_kv: 2,
        head_dim_k: 64,
        head_dim_v: 64,
    };

    /// Query heads, KV heads and head size.
    const fn shape(n_head: usize, n_head_kv: usize, dim: usize) -> HeadShape {
        HeadShape {
            n_head,
            n_head_kv,
            head_dim_k: dim,
            head_dim_v: dim,
        }
    }

    /// Deterministic pseudo-random numbers in [0, 1).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }

        /// One of -1, -0.5, 0, 0.5, 1.
        fn coarse(&mut self) -> f32 {
            (self.next() * 5.0).floor() * 0.5 - 1.0
        }
    }

    /// Keys (coarse) and values (fine) of every position and KV head,
    /// `[pos][g * dim + d]`, rounded to `kv_type`'s precision.
    fn cache_rows(
        heads: HeadShape,
        n: usize,
        kv_type: KvType,
        rng: &mut Rng,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let width = heads.n_head_kv * heads.head_dim_k;
        let round = |x: f32| match kv_type {
            KvType::F16 => f16::from_f32(x).to_f32(),
            _ => x,
        };
        let keys = (0..n)
            .map(|_| (0..width).map(|_| rng.coarse()).collect())
            .collect();
        let values = (0..n)
            .map(|_| (0..width).map(|_| round(rng.next() * 4.0 - 2.0)).collect())
            .collect();
        (keys, values)
    }

    /// ggml's one-chunk loop (plus its split and merge) for one query head; its F16
    /// value sum fuses the multiply-add over the first multiple of 64 dimensions.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        heads: HeadShape,
        q: &[f32],
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        g: usize,
        visible: Range<usize>,
        run_cells: Option<usize>,
        f16_cache: bool,
    ) -> Vec<f32> {
        let (dk, dv) = (heads.head_dim_k, heads.head_dim_v);
        let body = dv - dv % 64;
        let q: Vec<f32> = match f16_cache {
            true => q.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
            false => q.to_vec(),
        };
        let (mut m_all, mut s_all, mut acc_all) = (f32::NEG_INFINITY, 0.0f32, vec![0.0f32; dv]);
        let cells = run_cells.unwrap_or(usize::MAX);
        let mut start = visible.start;
        while start < visible.end {
            let end = (start / cells + 1).saturating_mul(cells).min(visible.end);
            let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
            let mut acc16 = vec![f16::ZERO; dv];
            let mut acc32 = vec![0.0f32; dv];
            for p in start..end {
                let k = &keys[p][g * dk..(g + 1) * dk];
                let v = &values[p][g * dv..(g + 1) * dv];
                let score: f32 = k.iter().zip(&q).map(|(a, b)| a * b).sum();
                let (mut ms, mut vs) = (1.0f32, 1.0f32);
                if score > m {
                    ms = (m - score).exp();
                    m = score;
                    for a in acc16.iter_mut() {
                        *a = f16::from_f32(a.to_f32() * ms);
                    }
                    for a in acc32.iter_mut() {
                        *a *= ms;
                    }
                } else {
                    vs = (score - m).exp();
                }
                for d in 0..dv {
                    acc16[d] = f16::from_f32(match d < body {
                        true => v[d].mul_add(vs, acc16[d].to_f32()),
                        false => acc16[d].to_f32() + v[d] * vs,
                    });
                    acc32[d] += v[d] * vs;
                }
                s = s * ms + vs;
            }
            let acc: Vec<f32> = match f16_cache {
                true => acc16.iter().map(|a| a.to_f32()).collect(),
                false => acc32,
            };
            if s != 0.0 {
                let mn = m_all.max(m);
                let (old, new) = ((m_all - mn).exp(), (m - mn).exp());
                for d in 0..dv {
                    acc_all[d] = acc_all[d] * old + acc[d] * new;
                }
                s_all = s_all * old + s * new;
                m_all = mn;
            }
            start = end;
        }
        let inv = if s_all == 0.0 { 0.0 } else { 1.0 / s_all };
        acc_all.iter().map(|a| a * inv).collect()
    }

    /// Runs `rows` queries at `pos0..` against positions `0..pos0 + rows.len()` stored
    /// in `slot_map`, in a pool of two threads, and compares every head with
    /// [`reference`]: this kernel, and for one row also [`super::super::attention_step`]
    /// with its SIMD and its scalar sums (over a Q8_0 cache, the step against this kernel).
    fn check(kv_type: KvType, slot_map: SlotMap, window: Option<usize>, pos0: usize, rows: usize) {
        check_heads(HEADS, kv_type, slot_map, window, pos0, rows);
    }

    /// [`check`] with the head shape `heads`.
    fn check_heads(
        heads: HeadShape,
        kv_type: KvType,
        slot_map: SlotMap,
        window: Option<usize>,
        pos0: usize,
        rows: usize,
    ) {
        use super::super::attention_step as step;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (pos0 as u64) << 3);
        let n = pos0 + rows;
        let (keys, values) = cache_rows(heads, n, kv_type, &mut rng);
        let slots = match slot_map {
            SlotMap::Linear => n,
            SlotMap::Ring { slots } => slots,
        };
        let mut store = CpuKvStore::new(KvShape {
            slots,
            heads,
            kv_type,
        })
        .unwrap();
        for p in 0..n {
            store.write(slot_map.slot(p), &keys[p], &values[p]);
        }
        let q_width = heads.n_head * heads.head_dim_k;
        let q: Vec<f32> = (0..rows * q_width).map(|_| rng.coarse()).collect();
        let job = AttentionJob {
            rows: 0..rows,
            pos0,
            window,
            slot_map,
            heads,
            image: None,
            batch_rows: rows,
        };
        let dv = heads.head_dim_v;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut outs = vec![("gathered rows", vec![0.0f32; rows * heads.n_head * dv])];
        let mut scratch = ValueRows::default();
        pool.install(|| attention(&q, &store, &job, &mut outs[0].1, &mut scratch));
        if step::applies(&job) {
            for (name, simd) in [("step, SIMD sums", true), ("step, scalar sums", false)] {
                let mut out = vec![0.0f32; rows * heads.n_head * dv];
                let mut scratch = step::StepScratch::default();
                pool.install(|| {
                    step::attention_with(&q, &store, &job, &mut out, &mut scratch, simd)
                });
                outs.push((name, out));
            }
        } else {
            assert!(rows > 1, "one row takes the step kernel");
        }
        let cells = (n.next_multiple_of(FLASH_CELL_PADDING) >= FLASH_SPLIT_MIN_CELLS && rows == 1)
            .then(|| n.next_multiple_of(FLASH_CELL_PADDING).div_ceil(2));
        for t in 0..rows {
            for h in 0..heads.n_head {
                let query = &q[t * q_width + h * heads.head_dim_k..][..heads.head_dim_k];
                let g = h / heads.group();
                let visible = job.visible_keys(pos0 + t);
                // A Q8_0 cache quantizes what the reference reads; its step kernel is
                // held to the gathering kernel instead, bit for bit.
                let gathered = &outs[0].1[(t * heads.n_head + h) * dv..][..dv];
                let want = match kv_type {
                    KvType::Q8_0 => gathered.to_vec(),
                    _ => reference(
                        heads,
                        query,
                        &keys,
                        &values,
                        g,
                        visible,
                        cells,
                        kv_type == KvType::F16,
                    ),
                };
                for (name, out) in &outs {
                    let got = &out[(t * heads.n_head + h) * dv..][..dv];
                    assert_eq!(
                        got,
                        &want[..],
                        "{name}: {kv_type:?} {heads:?} row {t} head {h}"
                    );
                }
            }
        }
    }

    #[test]
    fn decode_split_over_a_wrapped_ring_matches_ggml() {
        // 701 positions: 768 padded cells, two runs of 384; the window (400) starts
        // at 301 and the ring of 464 slots has wrapped.
        check(KvType::F16, SlotMap::Ring { slots: 464 }, Some(400), 700, 1);
        check(KvType::F32, SlotMap::Ring { slots: 464 }, Some(400), 700, 1);
    }

    #[test]
    fn decode_under_512_cells_is_one_run() {
        check(KvType::F16, SlotMap::Linear, None, 200, 1);
    }

    #[test]
    fn decode_steps_of_every_group_size_and_head_width_match_ggml() {
        // Group sizes 1 to 4 and 8 (4: the 270M and 1B, 2: the larger models); 256-wide
        // heads (all fused); 72 and 136 (a fused block, then a tail rounded per product in
        // dimensions past the last whole SIMD pass); 8 (no fused block, no SIMD pass).
        let shapes = [
            shape(4, 1, 256),
            shape(4, 2, 72),
            shape(2, 2, 136),
            shape(3, 1, 8),
            shape(8, 1, 64),
        ];
        // Q8_0 rows are whole blocks of 32: 160 leaves dimensions past the last whole
        // pass of two query heads, 96 has no whole pass of one.
        let q8_shapes = [
            shape(4, 1, 256),
            shape(4, 2, 160),
            shape(2, 2, 96),
            shape(8, 1, 64),
        ];
        for (kv_type, shapes) in [
            (KvType::F16, &shapes[..]),
            (KvType::F32, &shapes[..]),
            (KvType::Q8_0, &q8_shapes[..]),
        ] {
            for &heads in shapes {
                check_heads(heads, kv_type, SlotMap::Linear, None, 37, 1);
                let ring = SlotMap::Ring { slots: 464 };
                check_heads(heads, kv_type, ring, Some(400), 700, 1);
            }
            // A long step: 8192 keys, one run per thread (F16, F32).
            check_heads(shape(4, 1, 256), kv_type, SlotMap::Linear, None, 8191, 1);
        }
    }

    #[test]
    fn small_batches_match_ggml() {
        check(KvType::F16, SlotMap::Linear, None, 30, 9);
        check(KvType::F32, SlotMap::Ring { slots: 20 }, Some(12), 40, 7);
    }
}
