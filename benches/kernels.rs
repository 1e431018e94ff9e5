//! Quantized matrix products on the real Gemma 3 12B shapes (and the 270M's), with 2
//! threads.
//!
//! - `matvec/<type>/<rows>x<cols>`: one token (decode), in GB/s of weight bytes streamed
//!   (compare with `cargo bench --bench bandwidth`, threads_2).
//! - `prefill512/<type>/<rows>x<cols>`: 512 tokens at once, in FLOP/s (criterion prints
//!   "elem/s"; one element = one floating-point operation, 2 per multiply-add).
//!
//! Weights are real quantized rows (random values through the project's quantizers),
//! repeated to fill the matrix, so every byte streams from memory like a mapped model.
//! Types without a SIMD dot product on this CPU are skipped (the scalar ones would take
//! minutes). Run: `cargo bench --bench kernels` (filter, e.g. `-- matvec/Q4_K`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gemma_gguf::GgmlType;
use gemma_kernels::cpu::isa;
use gemma_kernels::cpu::matmul::{matmul, MatmulScratch, WeightMatrix};
use gemma_kernels::quant::{self, BlockVisitor, QuantBlock};
use std::time::Duration;

/// Threads of the goal (the machine has 2 cores).
const THREADS: usize = 2;
/// Distinct quantized rows generated; the matrix repeats them.
const POOL_ROWS: usize = 64;
/// Tokens of the prefill benchmark.
const PREFILL_TOKENS: usize = 512;
/// Bytes of weights a matvec benchmark cycles through: 8x the L3 cache of this kind of
/// machine (32 MiB), so each product streams its matrix from DRAM as a model's decode
/// does, instead of finding it in cache from the previous iteration.
const STREAM_BYTES: usize = 256 << 20;

/// `(rows, cols)` of the 12B tensors: ffn_up/gate, ffn_down, attn_q.
const SHAPES: [(usize, usize); 3] = [(15360, 3840), (3840, 15360), (4096, 3840)];
/// The tied output projection (token_embd): 262144 rows of 3840.
const OUTPUT_SHAPE: (usize, usize) = (262_144, 3840);

const MATVEC_TYPES: [GgmlType; 10] = [
    GgmlType::Q4_K,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q5_K,
    GgmlType::IQ4_XS,
    GgmlType::IQ4_NL,
];
const OUTPUT_TYPES: [GgmlType; 2] = [GgmlType::Q6_K, GgmlType::Q4_K];

/// Decode products of the real 270M Q4_K_M file (the default model): its Q5_0
/// projections (640 not being a multiple of 256), its Q4_K / Q6_K `ffn_down` and its
/// Q8_0 output matrix (262144 rows of 640, 72% of the bytes a token reads).
const MATVEC_MODEL_SHAPES: [(GgmlType, (usize, usize)); 6] = [
    (GgmlType::Q5_0, (1024, 640)),
    (GgmlType::Q5_0, (2048, 640)),
    (GgmlType::Q5_0, (640, 1024)),
    (GgmlType::Q4_K, (640, 2048)),
    (GgmlType::Q6_K, (640, 2048)),
    (GgmlType::Q8_0, (262_144, 640)),
];
const PREFILL_TYPES: [GgmlType; 14] = [
    GgmlType::Q4_K,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q5_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::F16,
    GgmlType::BF16,
];

/// Prefill shapes of the real models: the 270M feed-forward (Q5_0 in its Q4_K_M file,
/// 640 not being a multiple of 256) and the 12B feed-forward (Q4_K and Q6_K).
const PREFILL_MODEL_SHAPES: [(GgmlType, (usize, usize)); 6] = [
    (GgmlType::Q5_0, (2048, 640)),
    (GgmlType::Q5_0, (640, 2048)),
    (GgmlType::Q4_K, (15360, 3840)),
    (GgmlType::Q4_K, (3840, 15360)),
    (GgmlType::Q6_K, (15360, 3840)),
    (GgmlType::Q6_K, (3840, 15360)),
];

/// A deterministic pseudo-random value in [-1, 1) (splitmix64).
fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Whether `ty` is supported and has a SIMD dot product for the current ISA.
fn has_simd(ty: GgmlType) -> bool {
    struct Probe;
    impl BlockVisitor for Probe {
        type Output = bool;
        fn visit<B: QuantBlock>(self) -> bool {
            B::vec_dot_for(isa::current()).is_some()
        }
    }
    quant::visit(ty, Probe).unwrap_or(false)
}

/// `copies` matrices of `rows x cols` values of type `ty`, one after the other: the
/// same `POOL_ROWS` quantized random rows, repeated.
fn weights(ty: GgmlType, rows: usize, cols: usize, copies: usize) -> Vec<u8> {
    let row_bytes = ty.row_bytes(cols as u64).expect("whole blocks") as usize;
    let mut pool = vec![0u8; POOL_ROWS * row_bytes];
    quant::quantize(ty, &random_values(POOL_ROWS * cols, 7), &mut pool).expect("quantize");
    let total = copies * rows * row_bytes;
    let mut data = Vec::with_capacity(total);
    while data.len() < total {
        let take = (total - data.len()).min(pool.len());
        data.extend_from_slice(&pool[..take]);
    }
    data
}

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("a rayon pool")
}

/// A weight matrix and the buffers of one benchmark, built only when the benchmark runs
/// (criterion's filter skips the closure, and the big matrices take seconds to build).
struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// `copies` matrices back to back; each run uses the next one.
    data: Vec<u8>,
    copies: usize,
    next: usize,
    x: Vec<f32>,
    y: Vec<f32>,
    scratch: MatmulScratch,
}

impl Case {
    fn new(ty: GgmlType, (rows, cols): (usize, usize), tokens: usize, copies: usize) -> Case {
        Case {
            ty,
            rows,
            cols,
            data: weights(ty, rows, cols, copies),
            copies,
            next: 0,
            x: random_values(tokens * cols, 11),
            y: vec![0.0f32; tokens * rows],
            scratch: MatmulScratch::default(),
        }
    }

    fn run(&mut self, tokens: usize) {
        let bytes = self.data.len() / self.copies;
        let data = &self.data[self.next * bytes..(self.next + 1) * bytes];
        self.next = (self.next + 1) % self.copies;
        let w = WeightMatrix::new(self.ty, data, self.rows, self.cols).expect("weights");
        matmul(&w, &self.x, tokens, &mut self.y, &mut self.scratch).expect("matmul");
    }
}

fn bench_matvec(c: &mut Criterion, ty: GgmlType, shape: (usize, usize), pool: &rayon::ThreadPool) {
    let bytes = shape.0 as u64 * ty.row_bytes(shape.1 as u64).expect("whole blocks");
    let mut case = None;
    let mut group = c.benchmark_group("matvec");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("{}/{}x{}", ty.name(), shape.0, shape.1), |b| {
        let copies = STREAM_BYTES.div_ceil(bytes as usize);
        let case = case.get_or_insert_with(|| Case::new(ty, shape, 1, copies));
        b.iter(|| pool.install(|| case.run(1)))
    });
    group.finish();
}

fn bench_prefill(c: &mut Criterion, ty: GgmlType, shape: (usize, usize), pool: &rayon::ThreadPool) {
    let flops = 2 * shape.0 * shape.1 * PREFILL_TOKENS;
    let mut case = None;
    let mut group = c.benchmark_group("prefill512");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(flops as u64));
    group.bench_function(format!("{}/{}x{}", ty.name(), shape.0, shape.1), |b| {
        let case = case.get_or_insert_with(|| Case::new(ty, shape, PREFILL_TOKENS, 1));
        b.iter(|| pool.install(|| case.run(PREFILL_TOKENS)))
    });
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let pool = pool();
    eprintln!("ISA: {:?}, {THREADS} threads", isa::current());
    for ty in MATVEC_TYPES {
        if !has_simd(ty) {
            eprintln!("skipping {}: no SIMD dot product on this CPU", ty.name());
            continue;
        }
        for shape in SHAPES {
            bench_matvec(c, ty, shape, &pool);
        }
        if OUTPUT_TYPES.contains(&ty) {
            bench_matvec(c, ty, OUTPUT_SHAPE, &pool);
        }
    }
    for (ty, shape) in MATVEC_MODEL_SHAPES {
        if has_simd(ty) {
            bench_matvec(c, ty, shape, &pool);
        }
    }
    for ty in PREFILL_TYPES {
        if has_simd(ty) {
            bench_prefill(c, ty, (4096, 3840), &pool);
        }
    }
    for (ty, shape) in PREFILL_MODEL_SHAPES {
        if has_simd(ty) {
            bench_prefill(c, ty, shape, &pool);
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
