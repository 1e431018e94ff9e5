//! End-to-end speed of a model, like llama-bench: prefill (pp) and decode (tg) tokens/s.
//!
//! ```text
//! cargo run --release --example bench -- --model gemma-3-270m-q4_k_m.gguf --threads 2
//! cargo run --release --example bench -- --model F --prefill 512 --decode 128 --reps 5 --json
//! ```
//! Each repetition starts from an empty cache: the prefill runs `--prefill` tokens in one call
//! (logits of the last one only); the decode starts from an empty cache and runs
//! `--decode` single-token steps (batch 1), each one's greedy pick the next one's token
//! (`Session::step_greedy`: on a GPU the pick is made there and only the id is read back;
//! llama-bench reads the logits back and feeds random tokens; `--read-logits` reads them
//! back and picks on the host). With `--depth N` (llama-bench's `-d`) both
//! start after N tokens already in the cache, prefilled untimed (once, then the session
//! is rewound to them where it can take the run back), so they measure speed at that
//! context length (`decode tg128 @ d4096`). Medians over `--reps` repetitions,
//! after one warm-up repetition (it pages the weights in). The decode bound is the machine's
//! memory bandwidth (the faster of a plain and a software-prefetching read of a 512 MiB
//! buffer by the same number of threads) divided by the bytes of weights one token
//! reads. `--json` prints one object with `prefill_tokens_per_s`, `decode_tokens_per_s`,
//! `peak_rss_bytes`, `decode_bound_tokens_per_s` and the details. With `--mmproj F --image IMG` it also
//! times the image's preprocessing and encoding to soft tokens (median over the same
//! repetitions, after a warm-up; `image_encode_seconds` in the JSON).

#[path = "vision_support/mod.rs"]
mod vision_support;

use clap::Parser;
use gemma_core::{Device, KvType, Model, ModelOptions};
use rayon::prelude::*;
use serde_json::json;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Measure prefill and decode speed of a Gemma 3 GGUF model.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Prompt tokens per prefill (0: skip).
    #[arg(long, default_value_t = 512)]
    prefill: usize,
    /// Decode steps (0: skip).
    #[arg(long, default_value_t = 128)]
    decode: usize,
    /// Tokens already in the cache (prefilled untimed) before each timed prefill and
    /// decode, like llama-bench's `-d`.
    #[arg(long, default_value_t = 0)]
    depth: usize,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Measured repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// KV cache type: f16, q8_0 or f32.
    #[arg(long, default_value = "f16")]
    kv_type: KvType,
    /// Attention rounding of llama.cpp with flash attention on (its default, llama-bench's
    /// `-fa`) or off; on CUDA, `on` rounds small batches and early steps as the CPU does.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    flash_attn: String,
    /// Device: cpu or cuda[:N]. On a GPU each session first runs one token (uploading
    /// the weights) and goes back to position 0 before it is timed; the host-memory
    /// bandwidth bound is not measured, `vram_bytes` is reported.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Decode steps read their logits back and the host picks the next token
    /// (`Session::step`, then `sampling::argmax`), as llama-bench reads them back, instead
    /// of picking where the logits are (`Session::step_greedy`).
    #[arg(long)]
    read_logits: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Vision projector (mmproj GGUF) to time `--image` with.
    #[arg(long, requires = "image")]
    mmproj: Option<PathBuf>,
    /// Image file (PNG, JPEG) whose encoding is timed.
    #[arg(long, requires = "mmproj")]
    image: Option<PathBuf>,
    /// How a non-square image becomes the encoder's square.
    #[arg(long, value_enum, default_value_t = vision_support::FitArg::Squash)]
    image_fit: vision_support::FitArg,
}

/// Size of the buffer read to measure memory bandwidth.
const BANDWIDTH_BYTES: usize = 512 << 20;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    if args.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    let options = ModelOptions {
        threads: args.threads,
        device: args.device,
        flash_attention: args.flash_attn == "on",
        ..ModelOptions::default()
    };
    let load_start = Instant::now();
    let model = Model::load(&args.model, options)?;
    let load_seconds = load_start.elapsed().as_secs_f64();
    let n_vocab = model.config().n_vocab as u64;
    // Deterministic pseudo-random prompt ids (like llama-bench's random tokens): the
    // depth's, then the timed prefill's.
    let random_ids = |range: std::ops::Range<usize>| -> Vec<u32> {
        range
            .map(|i| ((i as u64).wrapping_mul(2_654_435_761).wrapping_add(12_345) % n_vocab) as u32)
            .collect()
    };
    let depth_tokens = random_ids(0..args.depth);
    let tokens = random_ids(args.depth..args.depth + args.prefill);
    let ctx = args.depth + args.prefill.max(args.decode).max(1);
    if ctx > model.config().context_length {
        return Err(format!(
            "--depth {} plus {} tokens exceed the model's context of {}",
            args.depth,
            args.prefill.max(args.decode),
            model.config().context_length
        )
        .into());
    }

    let mut prefill_runs = Vec::new();
    let mut decode_runs = Vec::new();
    let mut threads = 0;
    let on_gpu = args.device != Device::Cpu;
    // A session holding the depth's tokens (on a GPU with its weights uploaded by one
    // token first). Each timed run starts from it: rewound to the depth when the run fits
    // in what a session can take back (`Session::can_truncate`), else made afresh.
    let fresh = || -> Result<gemma_core::Session<'_>, Box<dyn Error>> {
        let mut session = model.session(ctx, args.kv_type)?;
        if on_gpu {
            session.prefill(&[2u32.min(n_vocab as u32 - 1)])?;
            session.truncate(0)?;
        }
        if !depth_tokens.is_empty() {
            session.prefill(&depth_tokens)?;
        }
        Ok(session)
    };
    let mut held = None;
    let (mut vram, mut vram_device_used) = (None, None);
    for rep in 0..=args.reps {
        if args.prefill > 0 {
            let mut session = at_depth(held.take(), args.depth, &fresh)?;
            threads = session.threads();
            let start = Instant::now();
            session.prefill(&tokens)?;
            let rate = args.prefill as f64 / start.elapsed().as_secs_f64();
            if rep > 0 {
                prefill_runs.push(rate);
            }
            vram = session.vram_bytes();
            vram_device_used = session.device_memory().map(|m| m.device_used);
            held = Some(session);
        }
        if args.decode > 0 {
            let mut session = at_depth(held.take(), args.depth, &fresh)?;
            threads = session.threads();
            let mut token = 2u32.min(n_vocab as u32 - 1);
            let start = Instant::now();
            for _ in 0..args.decode {
                token = if args.read_logits {
                    gemma_core::sampling::argmax(session.step(token)?)
                } else {
                    session.step_greedy(token)?
                };
            }
            let rate = args.decode as f64 / start.elapsed().as_secs_f64();
            if rep > 0 {
                decode_runs.push(rate);
            }
            vram = vram.max(session.vram_bytes());
            vram_device_used = vram_device_used.max(session.device_memory().map(|m| m.device_used));
            held = Some(session);
        }
    }

    let image_runs = match (&args.mmproj, &args.image) {
        (Some(mmproj), Some(image)) => time_image(&args, mmproj, image, model.config().n_embd)?,
        _ => Vec::new(),
    };
    let image_encode = (!image_runs.is_empty()).then(|| median(&image_runs));

    // Before the bandwidth buffer is allocated.
    let peak_rss = peak_rss_bytes();
    let bytes_per_token = model.weights().bytes_per_token();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    // The host-memory bound means nothing for a GPU run (its weights are in VRAM).
    let bandwidth = if on_gpu {
        f64::NAN
    } else {
        pool.install(memory_bandwidth)
    };
    let bound = bandwidth / bytes_per_token as f64;
    let (prefill, decode) = (median(&prefill_runs), median(&decode_runs));
    if args.json {
        let report = json!({
            "model": args.model.display().to_string(),
            "load_seconds": load_seconds,
            "threads": threads,
            "prefill_tokens": args.prefill,
            "decode_tokens": args.decode,
            "depth": args.depth,
            "flash_attn": args.flash_attn,
            "decode_reads_logits": args.read_logits,
            "reps": args.reps,
            "prefill_tokens_per_s": prefill,
            "decode_tokens_per_s": decode,
            "prefill_runs": prefill_runs,
            "decode_runs": decode_runs,
            "peak_rss_bytes": peak_rss,
            "weight_bytes_per_token": bytes_per_token,
            "memory_bandwidth_bytes_per_s": bandwidth,
            "decode_bound_tokens_per_s": bound,
            "device": args.device.to_string(),
            "decode_weight_bytes_per_s": decode * bytes_per_token as f64,
            "vram_bytes": vram,
            "vram_device_used_bytes": vram_device_used,
            "image_encode_seconds": image_encode,
            "image_encode_runs": image_runs,
        });
        println!("{report}");
    } else {
        println!(
            "model {} | {threads} threads | {} reps (medians)",
            args.model.display(),
            args.reps
        );
        let at = match args.depth {
            0 => String::new(),
            d => format!(" @ d{d}"),
        };
        println!("prefill pp{}{at}: {prefill:.1} tok/s", args.prefill);
        if on_gpu {
            // No host-memory bound: the VRAM line below gives the bytes read per second.
            println!("decode tg{}{at}: {decode:.2} tok/s", args.decode);
        } else {
            println!(
                "decode tg{}{at}: {decode:.2} tok/s (bound {bound:.2} tok/s = {:.1} GB/s / {:.1} MB per token of weights; {:.0}% of it)",
                args.decode,
                bandwidth / 1e9,
                bytes_per_token as f64 / 1e6,
                100.0 * decode / bound
            );
        }
        println!(
            "load {:.3} s | peak RSS {:.1} MiB",
            load_seconds,
            peak_rss as f64 / 1048576.0
        );
        if let Some(seconds) = image_encode {
            println!("image encode: {seconds:.3} s");
        }
        if let Some(v) = vram {
            println!(
                "{}: {:.1} MiB of VRAM held | weights read at {:.1} GB/s in decode",
                args.device,
                v as f64 / 1048576.0,
                decode * bytes_per_token as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// Seconds to preprocess and encode `image` with `mmproj`, per repetition after a
/// warm-up, in a pool of `--threads` threads.
fn time_image(
    args: &Args,
    mmproj: &std::path::Path,
    image: &std::path::Path,
    hidden: usize,
) -> Result<Vec<f64>, Box<dyn Error>> {
    let vision = vision_support::load_vision(mmproj, args.device)?;
    vision_support::check_hidden(&vision, mmproj, hidden)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let mut runs = Vec::new();
    for rep in 0..=args.reps {
        let (_, took) =
            pool.install(|| vision_support::encode_image(&vision, image, args.image_fit.into()))?;
        if rep > 0 {
            runs.push(took.as_secs_f64());
        }
    }
    Ok(runs)
}

/// `held` rewound to `depth` tokens where it can take back what followed them, else a
/// `fresh` session.
fn at_depth<'m>(
    held: Option<gemma_core::Session<'m>>,
    depth: usize,
    fresh: &dyn Fn() -> Result<gemma_core::Session<'m>, Box<dyn Error>>,
) -> Result<gemma_core::Session<'m>, Box<dyn Error>> {
    match held {
        Some(mut session) if session.can_truncate(depth) => {
            session.truncate(depth)?;
            Ok(session)
        }
        _ => fresh(),
    }
}

fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Bytes per second the current rayon pool reads from memory: the best of 3 sums of a
/// 512 MiB buffer written beforehand (so that its pages are real, not the zero page), each
/// with the hardware prefetchers alone and with software prefetches 16 KiB ahead into L2
/// as the matvec kernels issue them.
fn memory_bandwidth() -> f64 {
    let mut buf = vec![0u64; BANDWIDTH_BYTES / 8];
    buf.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(i, c)| c.fill(i as u64));
    let mut best = 0.0f64;
    for _ in 0..3 {
        for sum_chunk in [sum_words as fn(&[u64]) -> u64, sum_words_prefetching] {
            let start = Instant::now();
            let sum: u64 = buf.par_chunks(1 << 16).map(sum_chunk).sum();
            let rate = BANDWIDTH_BYTES as f64 / start.elapsed().as_secs_f64();
            std::hint::black_box(sum);
            best = best.max(rate);
        }
    }
    best
}

/// The wrapping sum of `words`.
fn sum_words(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}

/// [`sum_words`], requesting the memory 16 KiB ahead of every 128 bytes into L2.
fn sum_words_prefetching(words: &[u64]) -> u64 {
    words
        .chunks(16)
        .map(|c| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                let ahead = c.as_ptr().cast::<i8>().wrapping_add(16 << 10);
                // SAFETY: a prefetch is only a hint: it never faults, whatever the address.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T1>(ahead);
                    _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
                }
            }
            sum_words(c)
        })
        .fold(0u64, u64::wrapping_add)
}

/// Peak resident memory of this process (`VmHWM` in `/proc/self/status`), 0 if unknown.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
