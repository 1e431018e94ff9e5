//! synth: a Gemma 3 GGUF of a real size with random weights, for speed and memory work at
//! full scale without downloading the model, and (with `--mmproj`) the matching vision
//! projector file.
//!
//! ```text
//! synth --size 270m|1b|4b|12b|27b|tiny [--layers N --hidden N --ff N --heads N --kv-heads N
//!       --head-dim N --vocab N] --quant Q4_K_M|Q5_K_M|Q3_K_M|Q2_K|Q6_K|Q8_0|Q4_0|Q4_1|Q5_0|Q5_1|
//!       IQ4_NL|IQ4_XS|F16|BF16|F32 --vocab-from FILE.gguf --out FILE [--seed S]
//!       [--mmproj FILE [--mmproj-quant F16|F32|BF16|Q8_0] [--vision-layers N --vision-hidden N
//!       --vision-ff N --vision-heads N --image-size N]]
//! ```
//! Shapes and `gemma3.*` metadata are those of the released models (`tiny` is the fixtures'
//! T1 model). Each tensor gets the type llama.cpp's `llama_model_quantize` (no importance
//! matrix, not `pure`) picks for that file type, including its fallbacks for rows that are
//! not a multiple of 256, and is written in llama.cpp's tensor order. Weights are seeded
//! random numbers (linear layers ~N(0, 1/fan_in), norms ~1 ± 0.1) quantized with the
//! project's quantizers, generated and written a few megabytes at a time in parallel, so
//! even the 27B needs little memory. The `tokenizer.*` keys are copied from `--vocab-from`.
//!
//! `--mmproj FILE` writes a Gemma 3 mmproj (SigLIP-So400m vision tower + projector to the
//! `--size` model's hidden width) as llama.cpp's converter does (see `mmproj.rs`); with
//! `--mmproj` alone, `--out`, `--quant` and `--vocab-from` are not needed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use gemma::gguf::{keys, Array, GgufFile, GgufWriter, Value, ValueType};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

#[path = "mmproj.rs"]
pub mod mmproj;
#[path = "recipe.rs"]
pub mod recipe;
pub use mmproj::{MmprojQuant, VisionShape};
pub use recipe::{plan, Init, Planned, Quant};

/// Elements generated and quantized per parallel task (bounds the memory per thread).
const TASK_ELEMS: u64 = 1 << 16;
/// Tasks per batch written at once (a batch is at most 64 Mi elements' worth of bytes).
const BATCH_TASKS: u64 = 64;

/// Command line of synth.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "synth",
    about = "Write a Gemma 3 GGUF of a real size with random weights"
)]
pub struct Args {
    /// Model size: 270m, 1b, 4b, 12b, 27b or tiny (the fixtures' T1 shapes).
    #[arg(long)]
    pub size: String,
    /// Override the number of layers.
    #[arg(long)]
    pub layers: Option<u64>,
    /// Override the hidden size.
    #[arg(long)]
    pub hidden: Option<u64>,
    /// Override the feed-forward size.
    #[arg(long)]
    pub ff: Option<u64>,
    /// Override the number of query heads.
    #[arg(long)]
    pub heads: Option<u64>,
    /// Override the number of key/value heads.
    #[arg(long)]
    pub kv_heads: Option<u64>,
    /// Override the head dimension.
    #[arg(long)]
    pub head_dim: Option<u64>,
    /// Use only the first N tokens of the vocabulary.
    #[arg(long)]
    pub vocab: Option<u64>,
    /// llama.cpp file type: Q4_K_M, Q5_K_M, Q3_K_M, Q2_K, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    /// IQ4_NL, IQ4_XS, F16, BF16 or F32 (needed with `--out`).
    #[arg(long)]
    pub quant: Option<String>,
    /// GGUF file whose `tokenizer.*` keys are copied (any Gemma 3 model or vocab file;
    /// needed with `--out`).
    #[arg(long)]
    pub vocab_from: Option<PathBuf>,
    /// Output file of the language model.
    #[arg(long, required_unless_present = "mmproj")]
    pub out: Option<PathBuf>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also (or only) write a Gemma 3 vision projector (mmproj GGUF) to this file; it
    /// projects to the hidden size of `--size` (after `--hidden`).
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// Type of the mmproj's attention and MLP matrices: F16 (as released files), F32,
    /// BF16 or Q8_0.
    #[arg(long, default_value = "F16")]
    pub mmproj_quant: String,
    /// Override the vision tower's number of layers (27).
    #[arg(long)]
    pub vision_layers: Option<u64>,
    /// Override the vision tower's width (1152).
    #[arg(long)]
    pub vision_hidden: Option<u64>,
    /// Override the vision tower's MLP width (4304).
    #[arg(long)]
    pub vision_ff: Option<u64>,
    /// Override the vision tower's attention heads (16).
    #[arg(long)]
    pub vision_heads: Option<u64>,
    /// Override the encoder's input image side in pixels (896; a multiple of 14 * 4).
    #[arg(long)]
    pub image_size: Option<u64>,
}

fn main() {
    let args = Args::parse();
    match run(&args, true) {
        Ok(summary) => println!("{summary}"),
        Err(message) => {
            eprintln!("synth: {}", message.replace('\n', " "));
            std::process::exit(1);
        }
    }
}

/// Hyper-parameters of one Gemma 3 size.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// `general.size_label`.
    pub label: &'static str,
    /// Hidden size (embedding_length).
    pub hidden: u64,
    /// Number of layers.
    pub layers: u64,
    /// Query heads.
    pub heads: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// Head dimension (key_length = value_length).
    pub head_dim: u64,
    /// Feed-forward size.
    pub ff: u64,
    /// Sliding window of local layers.
    pub window: u64,
    /// Training context length.
    pub ctx: u64,
    /// Linear RoPE scaling factor of global layers, if any.
    pub rope_scale: Option<f32>,
}

/// `(size, label, [hidden, layers, heads, kv_heads, head_dim, ff, window, ctx], linear RoPE
/// scaling)` of the released models (their Hugging Face configs), and the fixtures' T1.
#[rustfmt::skip]
const PRESETS: [(&str, &str, [u64; 8], Option<f32>); 6] = [
    ("270m", "270M", [640, 18, 4, 1, 256, 2048, 512, 32_768], None),
    ("1b", "1B", [1152, 26, 4, 1, 256, 6912, 512, 32_768], None),
    ("4b", "4B", [2560, 34, 8, 4, 256, 10_240, 1024, 131_072], Some(8.0)),
    ("12b", "12B", [3840, 48, 16, 8, 256, 15_360, 1024, 131_072], Some(8.0)),
    ("27b", "27B", [5376, 62, 32, 16, 128, 21_504, 1024, 131_072], Some(8.0)),
    ("tiny", "tiny", [256, 7, 4, 2, 64, 256, 8, 256], Some(8.0)),
];

impl Shape {
    /// The shape of a released size ("12b") or "tiny".
    pub fn preset(size: &str) -> Option<Shape> {
        let &(_, label, dims, rope_scale) =
            PRESETS.iter().find(|p| p.0.eq_ignore_ascii_case(size))?;
        let [hidden, layers, heads, kv_heads, head_dim, ff, window, ctx] = dims;
        Some(Shape {
            label,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ff,
            window,
            ctx,
            rope_scale,
        })
    }

    /// The preset of `args.size` with the command-line overrides applied and checked.
    pub fn from_args(args: &Args) -> Result<Shape, String> {
        let mut shape = Shape::preset(&args.size).ok_or_else(|| {
            format!(
                "unknown --size {:?} (270m, 1b, 4b, 12b, 27b, tiny)",
                args.size
            )
        })?;
        let overrides = [
            (&mut shape.layers, args.layers),
            (&mut shape.hidden, args.hidden),
            (&mut shape.ff, args.ff),
            (&mut shape.heads, args.heads),
            (&mut shape.kv_heads, args.kv_heads),
            (&mut shape.head_dim, args.head_dim),
        ];
        for (field, value) in overrides {
            if let Some(v) = value {
                *field = v;
            }
        }
        let dims = [
            shape.layers,
            shape.hidden,
            shape.ff,
            shape.heads,
            shape.kv_heads,
            shape.head_dim,
        ];
        if dims.contains(&0) {
            return Err("layers, hidden, ff, heads, kv-heads and head-dim must be positive".into());
        }
        if shape.heads % shape.kv_heads != 0 {
            return Err(format!(
                "{} heads cannot share {} key/value heads",
                shape.heads, shape.kv_heads
            ));
        }
        Ok(shape)
    }
}

/// The `tokenizer.*` keys of `vocab_file`, with arrays cut to the first `vocab` tokens
/// when that is fewer than the file has; returns them with the vocabulary size.
pub fn tokenizer_keys(
    vocab_file: &GgufFile,
    vocab: Option<u64>,
) -> Result<(Vec<(String, Value)>, u64), String> {
    let md = vocab_file.metadata();
    let n_tokens = md
        .string_array(keys::TOKENIZER_TOKENS)
        .map_err(|e| e.to_string())?
        .len() as u64;
    let n = vocab.unwrap_or(n_tokens);
    if n == 0 || n > n_tokens {
        return Err(format!(
            "--vocab {n}: the vocabulary file has {n_tokens} tokens"
        ));
    }
    let mut out = Vec::new();
    for (key, value) in md.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        let value = match value {
            Value::Array(a) if a.len() as u64 == n_tokens && n < n_tokens => {
                Value::Array(truncate(a, n as usize, key)?)
            }
            other => other.clone(),
        };
        out.push((key.to_owned(), value));
    }
    Ok((out, n))
}

/// The first `n` elements of a per-token array.
fn truncate(array: &Array, n: usize, key: &str) -> Result<Array, String> {
    let values = || array.iter().take(n);
    Ok(match array.elem_type() {
        ValueType::String => {
            Array::from_strings(array.strings().into_iter().flat_map(|s| s.iter()).take(n))
        }
        ValueType::F32 => Array::from_slice(
            &values()
                .filter_map(|v| v.as_f64())
                .map(|v| v as f32)
                .collect::<Vec<_>>(),
        ),
        ValueType::I32 => Array::from_slice(
            &values()
                .filter_map(|v| v.as_integer())
                .map(|v| v as i32)
                .collect::<Vec<_>>(),
        ),
        other => {
            return Err(format!(
                "cannot cut {key} (array of {}) to --vocab",
                other.name()
            ))
        }
    })
}

/// All metadata of the file, in the order llama.cpp's converter writes it.
pub fn metadata(
    shape: &Shape,
    quant: Quant,
    tokenizer: Vec<(String, Value)>,
    seed: u64,
) -> Vec<(String, Value)> {
    use keys::gemma3::*;
    let u32v = |v: u64| Value::U32(v as u32);
    let mut md: Vec<(String, Value)> = vec![
        (keys::GENERAL_ARCHITECTURE.into(), ARCH.into()),
        (keys::GENERAL_TYPE.into(), "model".into()),
        (
            keys::GENERAL_NAME.into(),
            format!("Gemma 3 {} synthetic", shape.label).into(),
        ),
        (
            "general.description".into(),
            format!("random weights written by gemma-rs synth, seed {seed}").into(),
        ),
        (keys::GENERAL_SIZE_LABEL.into(), shape.label.into()),
        (CONTEXT_LENGTH.into(), u32v(shape.ctx)),
        (EMBEDDING_LENGTH.into(), u32v(shape.hidden)),
        (BLOCK_COUNT.into(), u32v(shape.layers)),
        (FEED_FORWARD_LENGTH.into(), u32v(shape.ff)),
        (HEAD_COUNT.into(), u32v(shape.heads)),
        (RMS_EPSILON.into(), Value::F32(1e-6)),
        (KEY_LENGTH.into(), u32v(shape.head_dim)),
        (VALUE_LENGTH.into(), u32v(shape.head_dim)),
        (ROPE_FREQ_BASE.into(), Value::F32(1e6)),
        (SLIDING_WINDOW.into(), u32v(shape.window)),
        (HEAD_COUNT_KV.into(), u32v(shape.kv_heads)),
    ];
    if let Some(factor) = shape.rope_scale {
        md.push((ROPE_SCALING_TYPE.into(), "linear".into()));
        md.push((ROPE_SCALING_FACTOR.into(), Value::F32(factor)));
    }
    md.extend(tokenizer);
    md.push((keys::GENERAL_QUANTIZATION_VERSION.into(), Value::U32(2)));
    md.push((keys::GENERAL_FILE_TYPE.into(), Value::U32(quant.ftype())));
    md
}

/// Writes the files of `args` (the model with `--out`, the projector with `--mmproj`);
/// returns a one-line summary per file. `progress` shows a progress bar (on a terminal).
pub fn run(args: &Args, progress: bool) -> Result<String, String> {
    let shape = Shape::from_args(args)?;
    // Check the projector's arguments before spending minutes on the model.
    let vision = match &args.mmproj {
        Some(_) => Some((
            VisionShape::from_args(args, shape.hidden)?,
            MmprojQuant::parse(&args.mmproj_quant)?,
        )),
        None => None,
    };
    if args.out.is_none() && args.mmproj.is_none() {
        return Err("nothing to write: give --out and/or --mmproj".into());
    }
    let mut summaries = Vec::new();
    if let Some(out) = &args.out {
        summaries.push(run_model(args, &shape, out, progress)?);
    } else if args.quant.is_some() || args.vocab_from.is_some() {
        return Err("--quant and --vocab-from describe the model: give --out too".into());
    }
    if let (Some(path), Some((vision, quant))) = (&args.mmproj, vision) {
        summaries.push(mmproj::run(
            &vision, quant, &shape, path, args.seed, progress,
        )?);
    }
    Ok(summaries.join("\n"))
}

/// Writes the language model to `out`.
fn run_model(args: &Args, shape: &Shape, out: &Path, progress: bool) -> Result<String, String> {
    let start = Instant::now();
    let quant = Quant::parse(args.quant.as_deref().ok_or("--out needs --quant")?)?;
    let vocab_from = args.vocab_from.as_ref().ok_or("--out needs --vocab-from")?;
    let vocab_file = GgufFile::open(vocab_from)
        .map_err(|e| format!("--vocab-from {}: {e}", vocab_from.display()))?;
    let (tokenizer, vocab) = tokenizer_keys(&vocab_file, args.vocab)?;
    let tensors = plan(shape, vocab, quant)?;
    for ty in tensors.iter().map(|t| t.ty) {
        if !gemma::kernels::quant::is_supported(ty) {
            return Err(format!("no quantizer for {ty} yet"));
        }
    }
    let metadata = metadata(shape, quant, tokenizer, args.seed);
    let bytes = write_file(out, metadata, &tensors, args.seed, progress)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "wrote {}: Gemma 3 {} {}, {} tensors, {bytes} bytes in {secs:.1} s ({:.0} MB/s)",
        out.display(),
        shape.label,
        quant.name(),
        tensors.len(),
        bytes as f64 / secs / 1e6
    ))
}

/// Streams `metadata` and `tensors` (random values of each one's [`Init`]) to
/// `OUT.partial`, renamed to `out` once complete, so that a run stopped on the way (an
/// error, a kill, a timeout) never leaves a truncated file under the name asked for;
/// returns the bytes written. The partial file is removed on error.
fn write_file(
    out: &Path,
    metadata: Vec<(String, Value)>,
    tensors: &[Planned],
    seed: u64,
    progress: bool,
) -> Result<u64, String> {
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let result = write_gguf(&partial, metadata, tensors, seed, progress).and_then(|bytes| {
        std::fs::rename(&partial, out).map(|()| bytes).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                out.display()
            )
        })
    });
    if result.is_err() {
        // A partial file is useless and may be large.
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn write_gguf(
    out: &Path,
    metadata: Vec<(String, Value)>,
    tensors: &[Planned],
    seed: u64,
    progress: bool,
) -> Result<u64, String> {
    let err = |e: gemma::gguf::GgufError| format!("{}: {e}", out.display());
    let mut w = GgufWriter::create(out).map_err(err)?;
    for (key, value) in metadata {
        w.add_metadata(key, value).map_err(err)?;
    }
    for t in tensors {
        w.add_tensor(t.name.clone(), t.ty, &t.dims).map_err(err)?;
    }
    let bar = if progress {
        ProgressBar::new(w.planned_size())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    w.write_header().map_err(err)?;
    for (index, t) in tensors.iter().enumerate() {
        bar.set_message(t.name.clone());
        write_tensor(
            &mut w,
            t,
            seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            &bar,
        )?;
    }
    bar.finish_and_clear();
    let written = w.bytes_written();
    w.finish().map_err(err)?;
    Ok(written)
}

/// Generates, quantizes (in parallel, a task of about [`TASK_ELEMS`] elements at a time)
/// and writes one tensor, batch by batch.
fn write_tensor<W: std::io::Write>(
    w: &mut GgufWriter<W>,
    t: &Planned,
    seed: u64,
    bar: &ProgressBar,
) -> Result<(), String> {
    let row_len = t.dims[0];
    let n_rows: u64 = t.dims[1..].iter().product();
    // The plan only holds shapes whose rows are whole blocks of their type.
    let row_bytes = t.ty.row_bytes(row_len).unwrap_or(0) as usize;
    let rows_per_task = (TASK_ELEMS / row_len).max(1);
    let n_tasks = n_rows.div_ceil(rows_per_task);
    let mut buffer = Vec::new();
    for first_task in (0..n_tasks).step_by(BATCH_TASKS as usize) {
        let last_task = (first_task + BATCH_TASKS).min(n_tasks);
        let rows = (last_task * rows_per_task).min(n_rows) - first_task * rows_per_task;
        buffer.resize(rows as usize * row_bytes, 0u8);
        buffer
            .par_chunks_mut(rows_per_task as usize * row_bytes)
            .enumerate()
            .try_for_each(|(i, out)| {
                let task = first_task + i as u64;
                let mut values = vec![0.0f32; out.len() / row_bytes * row_len as usize];
                fill(
                    &mut values,
                    t.init,
                    seed ^ task.wrapping_mul(0xd1b5_4a32_d192_ed03),
                );
                gemma::kernels::quant::quantize(t.ty, &values, out)
            })
            .map_err(|e| format!("quantizing {}: {e}", t.name))?;
        w.write_tensor_data(&t.name, &buffer)
            .map_err(|e| e.to_string())?;
        bar.inc(buffer.len() as u64);
    }
    Ok(())
}

/// Fills `values` with seeded random numbers of distribution `init` (wyrand generator;
/// normals approximated by the Irwin-Hall sum of four uniforms).
fn fill(values: &mut [f32], init: Init, seed: u64) {
    let mut state = seed;
    let (scale, offset) = match init {
        Init::Normal(std) => (std, 0.0),
        Init::Norm => (0.1, 1.0),
    };
    // Four 16-bit uniforms summed have mean 2 and variance 1/3.
    let k = scale * 3.0f32.sqrt() / 65536.0;
    for v in values {
        state = state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        let r = (t >> 64) as u64 ^ t as u64;
        let sum = (r & 0xffff) + (r >> 16 & 0xffff) + (r >> 32 & 0xffff) + (r >> 48);
        *v = offset + (sum as f32 - 131_072.0) * k;
    }
}
