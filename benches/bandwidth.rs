//! Memory read bandwidth of this machine: the limit every matvec figure is compared with.
//!
//! Sums a 1 GiB buffer of `u64` with 1 thread and with 2 threads (a rayon pool of 2,
//! each thread streaming one contiguous half, as the matvec does with its rows).
//! Run: `cargo bench --bench bandwidth`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

/// Buffer size: far larger than any cache, so every byte comes from DRAM.
const BYTES: usize = 1 << 30;

/// Sums `words` with 16 independent accumulators (vectorised loads, no dependency chain).
fn sum(words: &[u64]) -> u64 {
    let mut lanes = [0u64; 16];
    let chunks = words.chunks_exact(16);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &w| a.wrapping_add(w));
    for chunk in chunks {
        for (lane, &w) in lanes.iter_mut().zip(chunk) {
            *lane = lane.wrapping_add(w);
        }
    }
    lanes.iter().fold(tail, |a, &l| a.wrapping_add(l))
}

fn bandwidth(c: &mut Criterion) {
    // Every page written, so the reads below hit real memory, not the shared zero page.
    let buffer: Vec<u64> = (0..BYTES / 8).map(|i| i as u64 | 1).collect();
    let mut group = c.benchmark_group("bandwidth");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(BYTES as u64));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool");
        let part = buffer.len().div_ceil(threads);
        group.bench_function(format!("read_1GiB/threads_{threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    buffer
                        .par_chunks(part)
                        .map(sum)
                        .reduce(|| 0, u64::wrapping_add)
                })
            });
        });
    }
    group.finish();
    black_box(&buffer);
}

criterion_group!(benches, bandwidth);
criterion_main!(benches);
