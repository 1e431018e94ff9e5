//! synth: a Gemma 3 GGUF of a real size with random weights, for speed and memory work at
//! full scale without downloading the model.
//!
//! ```text
//! synth --size 270m|1b|4b|12b|27b|tiny [--layers N --hidden N --ff N --heads N --kv-heads N
//!       --head-dim N --vocab N] --quant Q4_K_M|Q5_K_M|Q3_K_M|Q2_K|Q6_K|Q8_0|Q4_0|Q4_1|Q5_0|Q5_1|
//!       IQ4_NL|IQ4_XS|F16|BF16|F32 --vocab-from FILE.gguf --out FILE [--seed S]
//! ```
//! Shapes and `gemma3.*` metadata are those of the released models (`tiny` is the fixtures'
//! T1 model). Each tensor gets the type llama.cpp's `llama_model_quantize` (no importance
//! matrix, not `pure`) picks for that file type, including its fallbacks for rows that are
//! not a multiple of 256, and is written in llama.cpp's tensor order. Weights are seeded
//! random numbers (linear layers ~N(0, 1/fan_in), norms ~1 ± 0.1) quantized with the
//! project's quantizers, generated and written a few megabytes at a time in parallel, so
//! even the 27B needs little memory. The `tokenizer.*` keys are copied from `--vocab-from`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use gemma::gguf::{keys, Array, GgmlType, GgufFile, GgufWriter, Value, ValueType};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

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
    /// IQ4_NL, IQ4_XS, F16, BF16 or F32.
    #[arg(long)]
    pub quant: String,
    /// GGUF file whose `tokenizer.*` keys are copied (any Gemma 3 model or vocab file).
    #[arg(long)]
    pub vocab_from: PathBuf,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
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

/// A llama.cpp file type (`llama_ftype`) this tool can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Quant {
    /// ALL_F32: every tensor F32.
    F32,
    /// MOSTLY_F16.
    F16,
    /// MOSTLY_BF16.
    BF16,
    /// MOSTLY_Q4_0.
    Q4_0,
    /// MOSTLY_Q4_1.
    Q4_1,
    /// MOSTLY_Q5_0.
    Q5_0,
    /// MOSTLY_Q5_1.
    Q5_1,
    /// MOSTLY_Q8_0.
    Q8_0,
    /// MOSTLY_Q2_K.
    Q2_K,
    /// MOSTLY_Q3_K_M.
    Q3_K_M,
    /// MOSTLY_Q4_K_M.
    Q4_K_M,
    /// MOSTLY_Q5_K_M.
    Q5_K_M,
    /// MOSTLY_Q6_K.
    Q6_K,
    /// MOSTLY_IQ4_NL.
    IQ4_NL,
    /// MOSTLY_IQ4_XS.
    IQ4_XS,
}

/// `(file type, name, llama_ftype id, base tensor type)`.
const QUANTS: [(Quant, &str, u32, GgmlType); 15] = [
    (Quant::F32, "F32", 0, GgmlType::F32),
    (Quant::F16, "F16", 1, GgmlType::F16),
    (Quant::BF16, "BF16", 32, GgmlType::BF16),
    (Quant::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (Quant::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (Quant::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (Quant::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (Quant::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (Quant::Q2_K, "Q2_K", 10, GgmlType::Q2_K),
    (Quant::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3_K),
    (Quant::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4_K),
    (Quant::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5_K),
    (Quant::Q6_K, "Q6_K", 18, GgmlType::Q6_K),
    (Quant::IQ4_NL, "IQ4_NL", 25, GgmlType::IQ4_NL),
    (Quant::IQ4_XS, "IQ4_XS", 30, GgmlType::IQ4_XS),
];

impl Quant {
    /// Parses a name such as "Q4_K_M" (case-insensitive).
    pub fn parse(name: &str) -> Result<Quant, String> {
        QUANTS
            .iter()
            .find(|q| q.1.eq_ignore_ascii_case(name))
            .map(|q| q.0)
            .ok_or_else(|| {
                let names: Vec<&str> = QUANTS.iter().map(|q| q.1).collect();
                format!("unknown --quant {name:?} (one of {})", names.join(", "))
            })
    }

    fn row(self) -> &'static (Quant, &'static str, u32, GgmlType) {
        // QUANTS has a row for every variant.
        QUANTS.iter().find(|q| q.0 == self).unwrap_or(&QUANTS[0])
    }

    /// The name ("Q4_K_M").
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// llama.cpp's `llama_ftype` (`general.file_type`).
    pub fn ftype(self) -> u32 {
        self.row().2
    }

    /// The type most 2-D tensors get.
    pub fn base(self) -> GgmlType {
        self.row().3
    }
}

/// How a tensor's random values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    /// Norm weights: 1 + N(0, 0.1²).
    Norm,
}

/// One tensor of the file to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// GGUF tensor name.
    pub name: String,
    /// Its type.
    pub ty: GgmlType,
    /// Its shape, ggml `ne` order.
    pub dims: Vec<u64>,
    /// How its values are drawn.
    pub init: Init,
}

/// llama.cpp's `use_more_bits`: the layers that get more bits in `_M` mixes.
fn use_more_bits(layer: u64, n_layers: u64) -> bool {
    layer < n_layers / 8
        || layer >= 7 * n_layers / 8
        || (layer as i64 - (n_layers / 8) as i64) % 3 == 2
}

/// The type llama.cpp's `llama_tensor_get_type` gives a 2-D tensor of `quant` (no
/// importance matrix, not `pure`, a model without `output.weight`), with its fallbacks.
pub fn tensor_type(
    quant: Quant,
    name: &str,
    layer: u64,
    shape: &Shape,
) -> Result<GgmlType, String> {
    use GgmlType as T;
    let base = quant.base();
    if !base.is_quantized() {
        return Ok(base);
    }
    let n = shape.layers;
    let gqa = shape.heads / shape.kv_heads;
    let ne0 = if name.ends_with("ffn_down.weight") {
        shape.ff
    } else if name.ends_with("attn_output.weight") {
        shape.heads * shape.head_dim
    } else {
        shape.hidden
    };
    let ty = if name == "token_embd.weight" {
        // Tied output: the token embedding follows the output tensor's rule.
        if ne0 % base.block_elems() as u64 != 0 {
            T::Q8_0
        } else if base != T::Q8_0 {
            T::Q6_K
        } else {
            base
        }
    } else if name.ends_with("attn_v.weight") {
        match quant {
            Quant::Q2_K if gqa >= 4 => T::Q4_K,
            Quant::Q2_K => T::Q3_K,
            Quant::Q3_K_M if layer < 2 => T::Q5_K,
            Quant::Q3_K_M => T::Q4_K,
            Quant::IQ4_NL | Quant::IQ4_XS if gqa >= 4 => T::Q5_K,
            Quant::Q4_K_M | Quant::Q5_K_M if use_more_bits(layer, n) => T::Q6_K,
            _ => base,
        }
    } else if name.ends_with("ffn_down.weight") {
        match quant {
            Quant::Q2_K => T::Q3_K,
            Quant::Q3_K_M if layer < n / 16 => T::Q5_K,
            Quant::Q3_K_M => T::Q4_K,
            Quant::Q4_K_M | Quant::Q5_K_M if use_more_bits(layer, n) => T::Q6_K,
            Quant::IQ4_NL | Quant::IQ4_XS if layer < n / 8 => T::Q5_K,
            _ => base,
        }
    } else if name.ends_with("attn_output.weight") {
        match quant {
            Quant::Q2_K => T::Q3_K,
            Quant::Q3_K_M => T::Q4_K,
            _ => base,
        }
    } else {
        base
    };
    if ne0 % ty.block_elems() as u64 == 0 {
        return Ok(ty);
    }
    let fallback = match ty {
        T::Q2_K | T::Q3_K | T::IQ4_XS => T::IQ4_NL,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        _ => return Err(format!("{name}: rows of {ne0} cannot be stored as {ty}")),
    };
    Ok(if ne0 % fallback.block_elems() as u64 == 0 {
        fallback
    } else {
        T::F16
    })
}

/// Every tensor of the file, in llama.cpp's order (non-layer tensors by name, then each
/// layer's tensors by name), with its type and shape.
pub fn plan(shape: &Shape, vocab: u64, quant: Quant) -> Result<Vec<Planned>, String> {
    let (h, q, kv, ff) = (
        shape.hidden,
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
        shape.ff,
    );
    let linear = |name: String, layer: u64, dims: [u64; 2]| -> Result<Planned, String> {
        let ty = tensor_type(quant, &name, layer, shape)?;
        Ok(Planned {
            init: Init::Normal(1.0 / (dims[0] as f32).sqrt()),
            name,
            ty,
            dims: dims.to_vec(),
        })
    };
    let norm = |name: String, len: u64| Planned {
        name,
        ty: GgmlType::F32,
        dims: vec![len],
        init: Init::Norm,
    };
    let mut tensors = vec![
        norm("output_norm.weight".into(), h),
        linear("token_embd.weight".into(), 0, [h, vocab])?,
    ];
    for l in 0..shape.layers {
        let name = |suffix: &str| format!("blk.{l}.{suffix}.weight");
        tensors.push(linear(name("attn_k"), l, [h, kv])?);
        tensors.push(norm(name("attn_k_norm"), shape.head_dim));
        tensors.push(norm(name("attn_norm"), h));
        tensors.push(linear(name("attn_output"), l, [q, h])?);
        tensors.push(linear(name("attn_q"), l, [h, q])?);
        tensors.push(norm(name("attn_q_norm"), shape.head_dim));
        tensors.push(linear(name("attn_v"), l, [h, kv])?);
        tensors.push(linear(name("ffn_down"), l, [ff, h])?);
        tensors.push(linear(name("ffn_gate"), l, [h, ff])?);
        tensors.push(norm(name("ffn_norm"), h));
        tensors.push(linear(name("ffn_up"), l, [h, ff])?);
        tensors.push(norm(name("post_attention_norm"), h));
        tensors.push(norm(name("post_ffw_norm"), h));
    }
    Ok(tensors)
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

/// Writes the file of `args`; returns a one-line summary. `progress` shows a progress bar
/// (on a terminal).
pub fn run(args: &Args, progress: bool) -> Result<String, String> {
    let start = Instant::now();
    let shape = Shape::from_args(args)?;
    let quant = Quant::parse(&args.quant)?;
    let vocab_file = GgufFile::open(&args.vocab_from)
        .map_err(|e| format!("--vocab-from {}: {e}", args.vocab_from.display()))?;
    let (tokenizer, vocab) = tokenizer_keys(&vocab_file, args.vocab)?;
    let tensors = plan(&shape, vocab, quant)?;
    for ty in tensors.iter().map(|t| t.ty) {
        if !gemma::kernels::quant::is_supported(ty) {
            return Err(format!("no quantizer for {ty} yet"));
        }
    }
    let result = write_file(
        &args.out, &shape, quant, tokenizer, &tensors, args.seed, progress,
    );
    if result.is_err() {
        // A partial file is useless and may be large.
        let _ = std::fs::remove_file(&args.out);
    }
    let bytes = result?;
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "wrote {}: Gemma 3 {} {}, {} tensors, {bytes} bytes in {secs:.1} s ({:.0} MB/s)",
        args.out.display(),
        shape.label,
        quant.name(),
        tensors.len(),
        bytes as f64 / secs / 1e6
    ))
}

fn write_file(
    out: &Path,
    shape: &Shape,
    quant: Quant,
    tokenizer: Vec<(String, Value)>,
    tensors: &[Planned],
    seed: u64,
    progress: bool,
) -> Result<u64, String> {
    let err = |e: gemma::gguf::GgufError| format!("{}: {e}", out.display());
    let mut w = GgufWriter::create(out).map_err(err)?;
    for (key, value) in metadata(shape, quant, tokenizer, seed) {
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
