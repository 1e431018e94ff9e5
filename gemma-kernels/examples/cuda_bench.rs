//! Micro-benchmark of the CUDA kernels at Gemma 3 12B shapes (random weights): decode
//! matvec in weight GB/s against the HBM bandwidth and against a plain streaming read of the
//! same bytes (`ops::read_stream`: what a kernel of that size can reach), prefill matmul in
//! TOPS, attention, and a 12B Q4_K_M decode-step estimate from the matvec times alone; the
//! other layouts of the one-token product (`launch::MMVQ_EXPERIMENTS`) beside the engine's,
//! and the greedy pick over 262144 logits.
//!
//! `cargo run --release -p gemma-kernels --example cuda_bench [-- --quick] [--graph] [--launches N]`
//! With `--graph` every timing replays its runs from a CUDA graph captured once, so the
//! launch costs of the host drop out: where the eager time of a small kernel is the host's
//! launch rate, the graph time is the GPU's (the engine's decode graph runs them that way).
//! With `--launches N` every run is launched N times and nothing is timed: the kernels for a
//! profiler (`ncu --kernel-name ... cuda_bench --quick --launches 1`, as
//! scripts/gpu-decode-profile.sh does). Peak bandwidth: GEMMA_HBM_GBPS, else 3350 (H100 SXM) / 4800 (H200) by device name.
//! Each matrix is cycled through enough copies that the working set exceeds the L2 cache.

use cudarc::driver::sys::CUevent_flags;
use gemma_gguf::GgmlType;
use gemma_kernels::cuda::{
    self, graph, launch, ops, ActFormat, AttnShape, CudaDevice, CudaError, DecodeScratch,
    DeviceMatrix, Q8Activations,
};

/// Fills `n` bytes quickly with xorshift output; f16 scale fields get small sane values.
fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut data = vec![0u8; n_blocks * bb];
    let mut s = seed | 1;
    for chunk in data.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let bytes = s.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let scale = half::f16::from_f32(0.001).to_bits().to_le_bytes();
    let offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    if ty.is_quantized() {
        for block in data.chunks_exact_mut(bb) {
            for &o in offsets {
                block[o..o + 2].copy_from_slice(&scale);
            }
        }
    } else {
        for v in data.chunks_exact_mut(2) {
            v.copy_from_slice(&scale); // f16 / bf16 / f32 halves: finite values
        }
    }
    data
}

struct Timer {
    start: cudarc::driver::CudaEvent,
    end: cudarc::driver::CudaEvent,
    /// Replay the timed runs from a CUDA graph (`--graph`) instead of launching them.
    graph: bool,
    /// `--launches N`: launch every run N times and time nothing (for a profiler).
    launches_only: Option<usize>,
}

impl Timer {
    fn new(dev: &CudaDevice, graph: bool, launches_only: Option<usize>) -> Result<Self, CudaError> {
        let f = Some(CUevent_flags::CU_EVENT_DEFAULT);
        Ok(Timer {
            start: dev.context().new_event(f)?,
            end: dev.context().new_event(f)?,
            graph,
            launches_only,
        })
    }

    /// Median-free mean over `iters` runs after 3 warm-ups, in microseconds: launched one
    /// after the other, or with `graph` captured once and replayed (after one warm-up
    /// replay). A run that cannot be captured is timed launched, with a note on stderr.
    fn time(
        &self,
        dev: &CudaDevice,
        iters: usize,
        mut run: impl FnMut(usize) -> Result<(), CudaError>,
    ) -> Result<f64, CudaError> {
        if let Some(n) = self.launches_only {
            (0..n).try_for_each(&mut run)?;
            dev.synchronize()?;
            return Ok(f64::NAN);
        }
        for i in 0..3 {
            run(i)?;
        }
        let graph = match self.graph.then(|| Self::capture(dev, iters, &mut run)) {
            Some(Ok(Some(graph))) => {
                graph.launch()?; // warm-up replay
                Some(graph)
            }
            Some(Ok(None)) => {
                eprintln!("cuda_bench: nothing was captured; timed launched");
                None
            }
            Some(Err(e)) => {
                eprintln!("cuda_bench: not captured ({e}); timed launched");
                None
            }
            None => None,
        };
        self.start.record(dev.stream())?;
        match &graph {
            Some(graph) => graph.launch()?,
            None => (0..iters).try_for_each(&mut run)?,
        }
        self.end.record(dev.stream())?;
        Ok(f64::from(self.start.elapsed_ms(&self.end)?) * 1000.0 / iters as f64)
    }

    /// The `iters` runs recorded into a graph (`None` if they queued nothing).
    fn capture(
        dev: &CudaDevice,
        iters: usize,
        run: &mut impl FnMut(usize) -> Result<(), CudaError>,
    ) -> Result<Option<graph::DeviceGraph>, CudaError> {
        graph::begin_capture(dev)?;
        let recorded = (0..iters).try_for_each(&mut *run);
        let graph = graph::end_capture(dev);
        recorded?;
        graph
    }
}

/// Copies of a rows x cols matrix: enough to exceed ~400 MB together.
fn matrices(
    dev: &CudaDevice,
    ty: GgmlType,
    rows: usize,
    cols: usize,
) -> Result<Vec<DeviceMatrix>, CudaError> {
    let bytes = rows * cols / ty.block_elems() * ty.block_bytes();
    let copies = (400_000_000 / bytes).clamp(2, 16);
    let data = random_blocks(
        ty,
        rows * cols / ty.block_elems(),
        0x9E37_79B9 ^ rows as u64,
    );
    (0..copies)
        .map(|_| DeviceMatrix::upload(dev, ty, &data, rows, cols))
        .collect()
}

fn peak_gbps(dev: &CudaDevice) -> f64 {
    if let Some(v) = std::env::var("GEMMA_HBM_GBPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    if dev.name().contains("H200") {
        4800.0
    } else {
        3350.0
    }
}

/// Decode matvec time of one matrix shape, in microseconds, printed with its bandwidth.
fn bench_matvec(
    dev: &CudaDevice,
    t: &Timer,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    peak: f64,
) -> Result<f64, CudaError> {
    let ws = matrices(dev, ty, rows, cols)?;
    let x = cuda::upload(dev, &vec![0.5f32; cols])?;
    let mut q = Q8Activations::new(dev, cols, 1)?;
    let mut y = cuda::zeros::<f32>(dev, rows)?;
    if launch::uses_q8_activations(ty) {
        launch::quantize_q8_1(dev, &x, 1, cols, ActFormat::for_weights(ty), &mut q)?;
    }
    let us = t.time(dev, 50, |i| {
        let w = &ws[i % ws.len()];
        if launch::uses_q8_activations(ty) {
            launch::matmul_q8(dev, w, &q, 1, &mut y)
        } else {
            launch::matmul_float(dev, w, &x, 1, &mut y)
        }
    })?;
    let gbps = ws[0].bytes() as f64 / us / 1000.0;
    // The same bytes read by a plain streaming kernel, launched the same way: what the
    // matvec could reach at this size.
    let mut sink = cuda::zeros::<i32>(dev, ops::read_stream_blocks(dev) * 8)?;
    let read_us = t.time(dev, 50, |i| {
        ops::read_stream(dev, ws[i % ws.len()].data(), &mut sink)
    })?;
    let read_gbps = ws[0].bytes() as f64 / read_us / 1000.0;
    println!(
        "matvec {:<5} {rows:>6}x{cols:<6} {us:8.1} us  {gbps:7.0} GB/s  {:5.1}% of {peak:.0} | \
         plain read {read_us:6.1} us {read_gbps:5.0} GB/s",
        ty.name(),
        100.0 * gbps / peak
    );
    Ok(us)
}

/// Decode matvec times of one quantized shape at each rows-per-block layout the kernel
/// allows (1, 2, 4, ... and `launch::mmvq_row_limit`, the engine's), one line.
fn bench_matvec_layouts(
    dev: &CudaDevice,
    t: &Timer,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    peak: f64,
) -> Result<(), CudaError> {
    let ws = matrices(dev, ty, rows, cols)?;
    let x = cuda::upload(dev, &vec![0.5f32; cols])?;
    let mut q = Q8Activations::new(dev, cols, 1)?;
    let mut y = cuda::zeros::<f32>(dev, rows)?;
    launch::quantize_q8_1(dev, &x, 1, cols, ActFormat::for_weights(ty), &mut q)?;
    let mut line = format!("matvec {:<5} {rows:>6}x{cols:<6} rows/block:", ty.name());
    let limit = launch::mmvq_row_limit(ty, rows, cols, 1);
    let mut per_block = 1;
    loop {
        let us = t.time(dev, 50, |i| {
            launch::matvec_q8_with_rows(dev, &ws[i % ws.len()], &q, per_block, &mut y)
        })?;
        let gbps = ws[0].bytes() as f64 / us / 1000.0;
        line += &format!("  {per_block}: {us:6.1} us {:4.1}%", 100.0 * gbps / peak);
        if per_block == limit {
            break;
        }
        per_block = (2 * per_block).min(limit);
    }
    println!("{line}");
    Ok(())
}

/// The engine's one-token product against each of `launch::MMVQ_EXPERIMENTS` of the same
/// weight type on the 12B's shapes (the same matrices, alternately), one line per shape.
fn bench_mmvq_experiments(dev: &CudaDevice, t: &Timer, peak: f64) -> Result<(), CudaError> {
    for e in &launch::MMVQ_EXPERIMENTS {
        println!("mmvq experiment {}: {}", e.kernel, e.about);
        let shapes: &[(usize, usize)] = match e.ty {
            GgmlType::Q6_K => &[(15360, 3840), (3840, 15360), (262_144, 3840)],
            _ => &[(15360, 3840), (3840, 15360), (4096, 3840), (2048, 3840)],
        };
        for &(rows, cols) in shapes {
            let ws = matrices(dev, e.ty, rows, cols)?;
            let x = cuda::upload(dev, &vec![0.5f32; cols])?;
            let mut q = Q8Activations::new(dev, cols, 1)?;
            let mut y = cuda::zeros::<f32>(dev, rows)?;
            launch::quantize_q8_1(dev, &x, 1, cols, ActFormat::for_weights(e.ty), &mut q)?;
            let engine = t.time(dev, 50, |i| {
                launch::matmul_q8(dev, &ws[i % ws.len()], &q, 1, &mut y)
            })?;
            let other = t.time(dev, 50, |i| {
                launch::matvec_q8_experiment(dev, &ws[i % ws.len()], &q, e, &mut y)
            })?;
            let pct = |us: f64| 100.0 * ws[0].bytes() as f64 / us / 1000.0 / peak;
            println!(
                "matvec {:<5} {rows:>6}x{cols:<6} engine {engine:7.1} us {:4.1}% | experiment {other:7.1} us {:4.1}% | {:.2}x",
                e.ty.name(),
                pct(engine),
                pct(other),
                engine / other
            );
        }
    }
    Ok(())
}

/// The greedy pick over Gemma 3's 262144 logits on the device (`cuda::argmax`), in
/// microseconds.
fn bench_argmax(dev: &CudaDevice, t: &Timer) -> Result<(), CudaError> {
    let n = 262_144;
    let logits: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 10007) as f32 / 100.0)
        .collect();
    let x = cuda::upload(dev, &logits)?;
    let mut scratch = cuda::ArgmaxScratch::new(dev)?;
    let us = t.time(dev, 50, |_| cuda::argmax(dev, &x, n, &mut scratch))?;
    println!("argmax over {n} logits (greedy pick on the device): {us:.1} us");
    Ok(())
}

/// One launch of the multi-matrix matvec over matrices of `rows_each` rows (one token), in
/// microseconds, printed with its bandwidth.
fn bench_matvec_multi(
    dev: &CudaDevice,
    t: &Timer,
    mats: &[(GgmlType, usize)],
    cols: usize,
    peak: f64,
) -> Result<f64, CudaError> {
    let ty = mats[0].0;
    let rows_each: Vec<usize> = mats.iter().map(|m| m.1).collect();
    let sets: Vec<Vec<DeviceMatrix>> = mats
        .iter()
        .map(|&(t, r)| matrices(dev, t, r, cols))
        .collect::<Result<_, _>>()?;
    let copies = sets.iter().map(Vec::len).min().unwrap_or(1);
    let x = cuda::upload(dev, &vec![0.5f32; cols])?;
    let mut q = Q8Activations::new(dev, cols, 1)?;
    launch::quantize_q8_1(dev, &x, 1, cols, ActFormat::for_weights(ty), &mut q)?;
    let mut ys: Vec<cuda::CudaSlice<f32>> = rows_each
        .iter()
        .map(|&r| cuda::zeros::<f32>(dev, r))
        .collect::<Result<_, _>>()?;
    let us = t.time(dev, 50, |i| {
        let ws: Vec<&DeviceMatrix> = sets.iter().map(|s| &s[i % copies]).collect();
        let mut outs: Vec<&mut cuda::CudaSlice<f32>> = ys.iter_mut().collect();
        launch::matvec_q8_multi(dev, &ws, &q, &mut outs)
    })?;
    let bytes: usize = sets.iter().map(|s| s[0].bytes()).sum();
    let gbps = bytes as f64 / us / 1000.0;
    let shape: Vec<String> = mats
        .iter()
        .map(|&(t, r)| {
            if t == ty {
                r.to_string()
            } else {
                format!("{r} {}", t.name())
            }
        })
        .collect();
    println!(
        "matvec {:<5} ({})x{cols:<6} one launch {us:8.1} us  {gbps:7.0} GB/s  {:5.1}% of {peak:.0}",
        ty.name(),
        shape.join("+"),
        100.0 * gbps / peak
    );
    Ok(us)
}

fn bench_matmul(
    dev: &CudaDevice,
    t: &Timer,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    n: usize,
) -> Result<(), CudaError> {
    let ws = matrices(dev, ty, rows, cols)?;
    let x = cuda::upload(dev, &vec![0.5f32; n * cols])?;
    let mut q = Q8Activations::new(dev, cols, n)?;
    let mut y = cuda::zeros::<f32>(dev, n * rows)?;
    let us = t.time(dev, 10, |i| {
        launch::matmul(dev, &ws[i % ws.len()], &x, n, &mut q, &mut y)
    })?;
    let tops = 2.0 * (rows * cols * n) as f64 / us / 1e6;
    println!("matmul {:<5} {rows:>6}x{cols:<6} n={n:<4} {us:8.1} us  {tops:6.1} TOPS (incl. quantization)", ty.name());
    Ok(())
}

/// Decode attention over a `ctx`-slot cache, full and at 600 live keys; then, unless
/// n_prefill is 0, the prefill of n_prefill tokens at its end. Returns the 600-key decode
/// time in microseconds.
fn bench_attention(
    dev: &CudaDevice,
    t: &Timer,
    ctx: usize,
    n_prefill: usize,
) -> Result<f64, CudaError> {
    let shape = AttnShape {
        n_heads: 16,
        n_kv_heads: 8,
        head_dim: 256,
        n_slots: ctx,
        window: 0,
        scale: 0.0625,
        one_chunk_f16: false,
    };
    let kv = vec![0x3C00u16; ctx * 8 * 256]; // 1.0 in f16
    let (kc, vc) = (cuda::upload(dev, &kv)?, cuda::upload(dev, &kv)?);
    let q = cuda::upload(dev, &vec![0.01f32; n_prefill.max(1) * 16 * 256])?;
    let pos = cuda::upload(dev, &[(ctx - 1) as i32])?;
    let mut scratch = DecodeScratch::new(dev, &shape)?;
    let mut out = cuda::zeros::<f32>(dev, n_prefill.max(1) * 16 * 256)?;
    let us = t.time(dev, 50, |_| {
        cuda::attention_decode(dev, &q, &kc, &vc, &pos, &shape, &mut scratch, &mut out)
    })?;
    let gbps = (2 * ctx * 8 * 256 * 2) as f64 / us / 1000.0;
    println!("attention decode  ctx {ctx:>6} (16 q / 8 kv heads x 256) {us:8.1} us  {gbps:7.0} GB/s of K+V");
    // A short context in the same cache (the splits the live keys fill).
    let live: i32 = 600;
    let pos = cuda::upload(dev, &[live - 1])?;
    let short_us = t.time(dev, 50, |_| {
        cuda::attention_decode(dev, &q, &kc, &vc, &pos, &shape, &mut scratch, &mut out)
    })?;
    println!("attention decode  pos {live:>6} of a {ctx}-slot cache          {short_us:8.1} us");
    // Steps at positions up to 256, the default numerics (the CPU's one-chunk rounding: the
    // decode kernel scores, the combine kernel walks the keys) against f32 splits.
    for live in [80i32, 256] {
        let pos = cuda::upload(dev, &[live - 1])?;
        for (one_chunk_f16, how) in [(false, "f32 splits"), (true, "one-chunk rounding")] {
            let shape = AttnShape {
                one_chunk_f16,
                ..shape
            };
            let mut scratch = DecodeScratch::new(dev, &shape)?;
            let us = t.time(dev, 50, |_| {
                cuda::attention_decode(dev, &q, &kc, &vc, &pos, &shape, &mut scratch, &mut out)
            })?;
            println!("attention decode  pos {live:>6}, {how:<18}               {us:8.1} us");
        }
    }
    if n_prefill == 0 {
        return Ok(short_us);
    }
    let p0 = ctx - n_prefill;
    let us = t.time(dev, 5, |_| {
        cuda::attention_prefill(dev, &q, &kc, &vc, &kc, &vc, n_prefill, p0, &shape, &mut out)
    })?;
    let flops = 4.0 * (n_prefill * 16 * 256) as f64 * (p0 as f64 + n_prefill as f64 / 2.0);
    println!(
        "attention prefill {n_prefill} tokens after {p0}: {us:8.1} us  {:6.1} TFLOP/s",
        flops / us / 1e6
    );
    // A chat turn's batch (under 64 rows): the CPU's one-chunk rounding (every key walked in
    // order per token and KV head) against the tiled kernel.
    let n_turn = 32;
    let p0 = ctx - n_turn;
    for (one_chunk_f16, how) in [(false, "tiled"), (true, "one-chunk rounding")] {
        let shape = AttnShape {
            one_chunk_f16,
            ..shape
        };
        let us = t.time(dev, 5, |_| {
            cuda::attention_prefill_cached(dev, &q, &kc, &vc, n_turn, p0, 0..0, &shape, &mut out)
        })?;
        println!("attention prefill {n_turn} tokens after {p0}, {how:<18} {us:8.1} us");
    }
    Ok(short_us)
}

/// The row kernels of one 12B decode layer, each launched back to back (so a time below
/// the launch rate shows the launch rate): the post-norm + residual + next pre-norm with
/// its Q8_K quantization (twice per layer), GeGLU with its quantization, QK-norm + RoPE +
/// KV store into an f16 cache. Returns their time per layer in microseconds.
fn bench_row_kernels(dev: &CudaDevice, t: &Timer) -> Result<f64, CudaError> {
    let (h, ff, hd, nq, nk) = (3840, 15360, 256, 16, 8);
    let w = cuda::upload(dev, &vec![1.0f32; h])?;
    let mut o = cuda::upload(dev, &vec![0.5f32; h])?;
    let mut r = cuda::upload(dev, &vec![0.25f32; h])?;
    let mut out = cuda::zeros::<f32>(dev, h)?;
    let mut q8 = Q8Activations::new(dev, ff, 1)?;
    let norm = t.time(dev, 50, |_| {
        ops::rms_norm_add_norm_q8_1(
            dev,
            &mut o,
            &w,
            &mut r,
            &w,
            &mut out,
            1,
            h,
            1e-6,
            ActFormat::Q8K,
            &mut q8,
        )
    })?;
    println!("row kernel  norm + residual + norm + Q8_K  1x{h}      {norm:8.1} us");
    let mut gate = cuda::upload(dev, &vec![0.5f32; ff])?;
    let up = cuda::upload(dev, &vec![0.5f32; ff])?;
    let geglu = t.time(dev, 50, |_| {
        ops::geglu_q8_1(dev, &mut gate, &up, ff, ActFormat::Q8K, &mut q8)
    })?;
    println!("row kernel  GeGLU + Q8_K  {ff}                    {geglu:8.1} us");
    let mut qv = cuda::upload(dev, &vec![0.5f32; nq * hd])?;
    let mut kv = cuda::upload(dev, &vec![0.5f32; nk * hd])?;
    let v = cuda::upload(dev, &vec![0.5f32; nk * hd])?;
    let (wq, wk) = (
        cuda::upload(dev, &vec![1.0f32; hd])?,
        cuda::upload(dev, &vec![1.0f32; hd])?,
    );
    let pos = cuda::upload(dev, &[600i32])?;
    let n_slots = 4096;
    let mut k_cache = cuda::zeros::<u16>(dev, n_slots * nk * hd)?;
    let mut v_cache = cuda::zeros::<u16>(dev, n_slots * nk * hd)?;
    let p = ops::QkNormRope {
        n_q_heads: nq,
        n_k_heads: nk,
        head_dim: hd,
        freq_base: 1e6,
        freq_scale: 1.0,
        q_scale: 0.0625,
        eps: 1e-6,
    };
    let qk = t.time(dev, 50, |_| {
        let target = ops::KvTarget {
            v: &v,
            n_slots,
            k_cache: &mut k_cache,
            v_cache: &mut v_cache,
        };
        ops::qk_norm_rope_store(dev, &mut qv, &mut kv, &wq, &wk, &pos, 1, p, target)
    })?;
    println!("row kernel  QK-norm + RoPE + KV store  {nq}+{nk} heads x {hd} {qk:8.1} us");
    Ok(2.0 * norm + geglu + qk)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cuda_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), CudaError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let in_graph = std::env::args().any(|a| a == "--graph");
    let args: Vec<String> = std::env::args().collect();
    let launches_only = args
        .iter()
        .position(|a| a == "--launches")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let dev = CudaDevice::new(0)?;
    let started = std::time::Instant::now();
    dev.warm_up()?;
    println!(
        "device: {} ({}, {} SMs); kernels compiled/loaded in {:.1} s",
        dev.name(),
        dev.arch().name(),
        dev.sm_count(),
        started.elapsed().as_secs_f64()
    );
    let peak = peak_gbps(&dev);
    let t = Timer::new(&dev, in_graph, launches_only)?;
    if let Some(n) = launches_only {
        println!("timings: none (--launches {n}: every run launched {n} times, for a profiler)");
    } else if in_graph {
        println!("timings: runs replayed from a CUDA graph (host launch costs excluded)");
    }
    // Gemma 3 12B: hidden 3840, FFN 15360, 16 q heads / 8 kv heads x 256, vocab 262144.
    let (h, ff, q, kvd) = (3840, 15360, 4096, 2048);
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
    ] {
        bench_matvec(&dev, &t, ty, ff, h, peak)?;
        if !quick {
            bench_matvec(&dev, &t, ty, h, ff, peak)?;
        }
    }
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q5_1,
        GgmlType::IQ4_NL,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::IQ4_XS,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        bench_matvec(&dev, &t, ty, ff, h, peak)?;
    }
    // The mmvq layouts side by side (the engine uses the largest).
    for (ty, rows, cols) in [
        (GgmlType::Q4_K, ff, h),
        (GgmlType::Q4_K, kvd, h),
        (GgmlType::Q6_K, ff, h),
        (GgmlType::Q6_K, 262_144, h),
        (GgmlType::Q8_0, ff, h),
        (GgmlType::Q4_0, ff, h),
        // The 270M's output matrix (tied embeddings): short rows, 20 tasks each.
        (GgmlType::Q8_0, 262_144, 640),
    ] {
        bench_matvec_layouts(&dev, &t, ty, rows, cols, peak)?;
    }
    bench_mmvq_experiments(&dev, &t, peak)?;
    // A 12B Q4_K_M decode step from matvec times: Q4_K projections and FFN, Q6_K V and
    // FFN-down (llama.cpp's Q4_K_M mix uses Q6_K for about half of them; all are counted
    // Q6_K here, a pessimistic bound), Q6_K output over the 262144-token vocabulary.
    let per_layer = bench_matvec(&dev, &t, GgmlType::Q4_K, q, h, peak)?
        + bench_matvec(&dev, &t, GgmlType::Q4_K, kvd, h, peak)?
        + bench_matvec(&dev, &t, GgmlType::Q6_K, kvd, h, peak)?
        + bench_matvec(&dev, &t, GgmlType::Q4_K, h, q, peak)?
        + 2.0 * bench_matvec(&dev, &t, GgmlType::Q4_K, ff, h, peak)?
        + bench_matvec(&dev, &t, GgmlType::Q6_K, h, ff, peak)?;
    let output = bench_matvec(&dev, &t, GgmlType::Q6_K, 262_144, h, peak)?;
    let step_us = 48.0 * per_layer + output;
    println!(
        "12B Q4_K_M decode estimate (matvecs only, one launch each): {step_us:.0} us/token = {:.0} tokens/s",
        1e6 / step_us
    );
    // The same step as the engine runs it: Q, K and the Q6_K V in one launch, gate and up in
    // one launch.
    let k4 = GgmlType::Q4_K;
    let per_layer = bench_matvec_multi(
        &dev,
        &t,
        &[(k4, q), (k4, kvd), (GgmlType::Q6_K, kvd)],
        h,
        peak,
    )? + bench_matvec(&dev, &t, GgmlType::Q4_K, h, q, peak)?
        + bench_matvec_multi(&dev, &t, &[(k4, ff), (k4, ff)], h, peak)?
        + bench_matvec(&dev, &t, GgmlType::Q6_K, h, ff, peak)?;
    bench_matvec_multi(&dev, &t, &[(k4, q), (k4, kvd), (k4, kvd)], h, peak)?;
    let fused_step_us = 48.0 * per_layer + output;
    println!(
        "12B Q4_K_M decode estimate (matvecs only, Q+K+V and gate+up fused): {fused_step_us:.0} us/token = {:.0} tokens/s",
        1e6 / fused_step_us
    );
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0] {
        bench_matmul(&dev, &t, ty, ff, h, 512)?;
    }
    if !quick {
        bench_matmul(&dev, &t, GgmlType::Q4_0, ff, h, 512)?;
        bench_matmul(&dev, &t, GgmlType::F16, ff, h, 512)?;
        bench_matmul(&dev, &t, GgmlType::BF16, ff, h, 512)?;
        for ty in [
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::IQ4_XS,
            GgmlType::Q4_1,
        ] {
            bench_matmul(&dev, &t, ty, ff, h, 512)?;
        }
    }
    let attention = bench_attention(&dev, &t, 4096, 512)?;
    if !quick {
        // A global layer of the 12B at 32K context: decode only.
        bench_attention(&dev, &t, 32768, 0)?;
    }
    let rows = bench_row_kernels(&dev, &t)?;
    bench_argmax(&dev, &t)?;
    let full_us = fused_step_us + 48.0 * (rows + attention);
    println!(
        "12B Q4_K_M decode estimate (fused matvecs + row kernels + attention at 600 keys): {full_us:.0} us/token = {:.0} tokens/s",
        1e6 / full_us
    );
    println!(
        "cuda_bench done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
