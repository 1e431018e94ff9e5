//! Memory read bandwidth of this machine: the limit every matvec figure is compared with.
//!
//! Sums a 1 GiB buffer of `u64` with 1 thread and with 2 threads (a rayon pool of 2,
//! each thread streaming one contiguous half, as the matvec does with its rows), with
//! the hardware prefetchers alone and with software prefetches 16 KiB ahead into L2 as
//! the K-quant and long-row matvec kernels issue them (the larger figure is the limit).
//! Run: `cargo bench --bench bandwidth`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

/// Buffer size: far larger than any cache, so every byte comes from DRAM.
const BYTES: usize = 1 << 30;

/// Bytes ahead of the current line that [`sum_prefetching`] requests.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 16 << 10;

/// Sums `words` with 16 independent accumulators (vectorised loads, no dependency chain).
fn sum(words: &[u64]) -> u64 {
    sum_with(words, |_| {})
}

/// [`sum`], requesting the line [`PREFETCH_BYTES`] ahead of each 128-byte step into L2.
fn sum_prefetching(words: &[u64]) -> u64 {
    sum_with(words, |chunk| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            let ahead = chunk.as_ptr().cast::<i8>().wrapping_add(PREFETCH_BYTES);
            // SAFETY: a prefetch is only a hint: it never faults, whatever the address.
            unsafe {
                _mm_prefetch::<_MM_HINT_T1>(ahead);
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = chunk;
    })
}

/// Sums `words` 16 at a time, calling `before` with each group of 16 first.
#[inline(always)]
fn sum_with(words: &[u64], before: impl Fn(&[u64])) -> u64 {
    let mut lanes = [0u64; 16];
    let chunks = words.chunks_exact(16);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &w| a.wrapping_add(w));
    for chunk in chunks {
        before(chunk);
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
        for (suffix, sum) in [
            ("", sum as fn(&[u64]) -> u64),
            ("_prefetch", sum_prefetching),
        ] {
            group.bench_function(format!("read_1GiB/threads_{threads}{suffix}"), |b| {
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
    }
    group.finish();
    black_box(&buffer);
}

criterion_group!(benches, bandwidth);
criterion_main!(benches);
