//! One-shot generation from a prompt, with the options checks and scripts rely on.
//!
//! ```text
//! cargo run --release --example generate -- --model gemma-3-270m-q4_k_m.gguf \
//!     --prompt "The capital of France is" --max-tokens 16
//! cargo run --release --example generate -- --model F --tokens 2,818,5279 --json \
//!     --dump-logits logits.f32
//! ```
//! `--tokens` are raw ids (nothing added); `--prompt`/`--prompt-file` add BOS as the
//! file says. Temperature 0 (the default) is greedy. Generation stops at an
//! end-of-generation token (`<eos>`, `<end_of_turn>`; not with `--ignore-eos`), after
//! `--max-tokens`, or when the context is full. `--dump-logits FILE` writes little-endian
//! f32, one row of n_vocab per prompt position (row i = logits after token i). `--json`
//! prints one JSON object as the last line (and no streamed text). Errors print one
//! line and exit with status 1.
//!
//! With `--mmproj F --image IMG` the image's soft tokens go after the prompt's BOS (or
//! first), as llama.cpp lays them out: `<start_of_image>`, the soft tokens,
//! `<end_of_image>`, then the prompt text. `--image-fit squash|letterbox` picks the
//! preprocessing; `--dump-image-embeddings FILE` writes the soft tokens (little-endian
//! f32, image tokens × hidden, row-major).
//!
//! `--dump-trace DIR` records the prompt's named activations (`gemma_core::Trace`: the
//! names llama.cpp gives its tensors, `attn_norm-0` .. `l_out-17`, `result_output`) and
//! writes each to `DIR/NAME.f32` (little-endian f32, prompt positions × width, row-major)
//! with `DIR/index.json` listing `name`, `rows` and `width` in the order they were made.
//! It holds them all in memory first. `scripts/trace-compare.py A B` compares two such
//! folders (another device, `GEMMA_ISA` or engine) tensor by tensor.

#[path = "vision_support/mod.rs"]
mod vision_support;

use clap::Parser;
use gemma_core::image::{END_OF_IMAGE, START_OF_IMAGE};
use gemma_core::memory;
use gemma_core::{
    Device, EncodeOptions, KvType, Model, ModelOptions, Sampler, SamplerConfig, StreamDecoder,
    Tokenizer, Trace,
};
use serde_json::json;
use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Generate text with a Gemma 3 GGUF model.
#[derive(Parser)]
#[command(about, allow_negative_numbers = true)]
struct Args {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (BOS added as the file says).
    #[arg(long, conflicts_with_all = ["prompt_file", "tokens"])]
    prompt: Option<String>,
    /// File holding the prompt text.
    #[arg(long, conflicts_with = "tokens")]
    prompt_file: Option<PathBuf>,
    /// Raw prompt token ids, comma-separated (nothing added).
    #[arg(long, value_delimiter = ',')]
    tokens: Option<Vec<u32>>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature; 0 (or below, as in llama.cpp) is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 64)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens below min_p times the best one's probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Random seed of the sampler.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Context length (default: prompt + max tokens, at most the model's).
    #[arg(long)]
    ctx: Option<usize>,
    /// KV cache type: f16, q8_0 or f32.
    #[arg(long, default_value = "f16")]
    kv_type: KvType,
    /// Attention rounding of llama.cpp with flash attention on (its default) or off
    /// (`-fa off`); on CUDA, `on` rounds small batches and early steps as the CPU does.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    flash_attn: OnOff,
    /// Device: cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Keep generating after end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object (last line) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Write the prompt positions' logits to this file (little-endian f32 rows).
    #[arg(long)]
    dump_logits: Option<PathBuf>,
    /// Write the prompt's named activations to this folder (one f32 file per name and
    /// index.json).
    #[arg(long)]
    dump_trace: Option<PathBuf>,
    /// Vision projector (mmproj GGUF) for `--image`.
    #[arg(long, requires = "image")]
    mmproj: Option<PathBuf>,
    /// Image file (PNG, JPEG) placed before the prompt text.
    #[arg(long, requires = "mmproj")]
    image: Option<PathBuf>,
    /// How a non-square image becomes the encoder's square.
    #[arg(long, value_enum, default_value_t = vision_support::FitArg::Squash)]
    image_fit: vision_support::FitArg,
    /// Write the image's soft tokens to this file (little-endian f32, tokens × hidden).
    #[arg(long, requires = "image")]
    dump_image_embeddings: Option<PathBuf>,
}

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

/// A switch given as `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let vision = match &args.mmproj {
        Some(path) => Some(vision_support::load_vision(path, args.device)?),
        None => None,
    };
    let image_tokens = vision.as_ref().map_or(0, |v| v.n_image_tokens());
    let mut options = ModelOptions {
        threads: args.threads,
        device: args.device,
        flash_attention: args.flash_attn == OnOff::On,
        ..ModelOptions::default()
    };
    // An image runs as one batch within the local layers' rings.
    options.ring_margin = options.ring_margin.max(image_tokens);
    options.max_batch = options.max_batch.max(image_tokens);
    let model = Model::load(&args.model, options)?;
    let tokenizer = Tokenizer::from_gguf(model.gguf());
    let prompt = prompt_ids(&args, tokenizer.as_ref().ok())?;
    if prompt.is_empty() {
        return Err("the prompt has no tokens".into());
    }
    let image = match (&vision, &args.mmproj, &args.image) {
        (Some(vision), Some(mmproj), Some(path)) => {
            vision_support::check_hidden(vision, mmproj, model.config().n_embd)?;
            let (rows, _) = vision_support::encode_image(vision, path, args.image_fit.into())?;
            if let Some(out) = &args.dump_image_embeddings {
                write_f32(out, &rows)?;
            }
            Some(rows)
        }
        _ => None,
    };
    // The image goes after a leading BOS: [BOS] <start_of_image> image <end_of_image> text.
    let split = usize::from(image.is_some() && prompt.first() == Some(&2));
    let (head, text) = prompt.split_at(split);
    let mut segments = vec![Segment::Tokens(head.to_vec())];
    if let Some(rows) = &image {
        segments.push(Segment::Tokens(vec![START_OF_IMAGE]));
        segments.push(Segment::Image(rows));
        segments.push(Segment::Tokens(vec![END_OF_IMAGE]));
    }
    segments.push(Segment::Tokens(text.to_vec()));
    let prompt_len = prompt.len() + image.as_ref().map_or(0, |_| image_tokens + 2);

    let max_ctx = model.config().context_length;
    let ctx = args
        .ctx
        .unwrap_or_else(|| (prompt_len + args.max_tokens).min(max_ctx));
    let mut session = model.session(ctx, args.kv_type)?;

    // Prefill (every position's logits if they are dumped).
    if args.dump_trace.is_some() {
        session.set_trace(Some(Trace::all()));
    }
    let start = Instant::now();
    let mut logits = match &args.dump_logits {
        Some(path) => {
            let mut out = BufWriter::new(
                File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?,
            );
            let mut write_error = None;
            let mut write = |_: usize, row: &[f32]| {
                for v in row {
                    if let Err(e) = out.write_all(&v.to_le_bytes()) {
                        write_error.get_or_insert(e);
                    }
                }
            };
            let last = prefill(&mut session, &segments, Some(&mut write))?;
            if let Some(e) = write_error {
                return Err(format!("cannot write {}: {e}", path.display()).into());
            }
            out.flush()?;
            last
        }
        None => prefill(&mut session, &segments, None)?,
    };
    let prefill_time = start.elapsed();
    if let (Some(dir), Some(trace)) = (&args.dump_trace, session.set_trace(None)) {
        write_trace(dir, &trace)?;
    }

    // Decode: sample, stream, feed back.
    let config = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        seed: args.seed,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(config);
    let mut history = prompt.clone();
    let mut generated = Vec::new();
    let mut text = String::new();
    let mut decoder = StreamDecoder::new(true);
    let mut stdout = std::io::stdout().lock();
    let decode_start = Instant::now();
    let mut stop = "max_tokens";
    // A plain greedy choice comes from the step itself (on a GPU, without reading the logits).
    let greedy = config.is_plain_greedy();
    let mut picked = None;
    while generated.len() < args.max_tokens {
        let token = match picked.take() {
            Some(token) => token,
            None => sampler.sample(&logits, &history)?,
        };
        if !args.ignore_eos
            && tokenizer
                .as_ref()
                .is_ok_and(|t| t.is_end_of_generation(token))
        {
            stop = "end_of_generation";
            break;
        }
        generated.push(token);
        history.push(token);
        if let Ok(t) = &tokenizer {
            let piece = decoder.push(t, token)?;
            if !args.json {
                write!(stdout, "{piece}")?;
                stdout.flush()?;
            }
            text.push_str(&piece);
        }
        if generated.len() == args.max_tokens {
            break;
        }
        if session.position() >= session.ctx_len() {
            stop = "context_full";
            break;
        }
        if greedy {
            picked = Some(session.step_greedy(token)?);
        } else {
            logits.clear();
            logits.extend_from_slice(session.step(token)?);
        }
    }
    let decode_time = decode_start.elapsed();
    let tail = decoder.finish();
    if !args.json {
        writeln!(stdout, "{tail}")?;
    }
    text.push_str(&tail);

    let prefill_tps = prompt_len as f64 / prefill_time.as_secs_f64();
    let decode_tps = match generated.len() {
        0 | 1 => 0.0,
        n => (n - 1) as f64 / decode_time.as_secs_f64(),
    };
    let peak_rss = peak_rss_bytes();
    if args.json {
        let report = json!({
            "prompt_ids": prompt,
            "image_tokens": image.as_ref().map_or(0, |_| image_tokens),
            "generated_ids": generated,
            "text": text,
            "stop_reason": stop,
            "prefill_tokens_per_s": prefill_tps,
            "decode_tokens_per_s": decode_tps,
            "peak_rss_bytes": peak_rss,
            "kv_bytes": session.kv_bytes(),
            "vram_bytes": session.vram_bytes(),
            "vram_predicted_bytes": predicted_vram(&model, &session)?,
            "vram_device_used_bytes": session.device_memory().map(|m| m.device_used),
            "ctx": session.ctx_len(),
            "threads": session.threads(),
            "device": args.device.to_string(),
        });
        writeln!(stdout, "{report}")?;
    } else {
        eprintln!(
            "prompt {} tokens, {prefill_tps:.1} tok/s | generated {} tokens, {decode_tps:.1} tok/s ({stop}) | KV cache {:.1} MiB | peak RSS {:.1} MiB",
            prompt_len,
            generated.len(),
            session.kv_bytes() as f64 / 1048576.0,
            peak_rss as f64 / 1048576.0,
        );
    }
    Ok(())
}

/// A part of the prompt: token ids or one image's soft tokens.
enum Segment<'a> {
    Tokens(Vec<u32>),
    Image(&'a [f32]),
}

/// A receiver of every prompt position's logits (position, row).
type EachRow<'a> = dyn FnMut(usize, &[f32]) + Send + 'a;

/// Runs the prompt's segments and returns the last position's logits; with `each`, also
/// gives it every position's logits (without, the output matrix runs for the last
/// position only: on a 262144-token vocabulary it is most of a long prompt's work).
fn prefill(
    session: &mut gemma_core::Session<'_>,
    segments: &[Segment<'_>],
    mut each: Option<&mut EachRow<'_>>,
) -> Result<Vec<f32>, Box<dyn Error>> {
    let mut last = Vec::new();
    for segment in segments {
        last = match (segment, each.as_mut()) {
            (Segment::Tokens(ids), _) if ids.is_empty() => continue,
            (Segment::Tokens(ids), Some(each)) => session.prefill_each(ids, each)?.to_vec(),
            (Segment::Tokens(ids), None) => session.prefill(ids)?.to_vec(),
            (Segment::Image(rows), Some(each)) => session.prefill_image_each(rows, each)?.to_vec(),
            (Segment::Image(rows), None) => session.prefill_image(rows)?.to_vec(),
        };
    }
    Ok(last)
}

/// Writes `values` as little-endian f32 to `path`.
fn write_f32(path: &std::path::Path, values: &[f32]) -> Result<(), String> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes `trace` to `dir` (see the module docs): the entries of one name, made by
/// successive batches, joined in position order.
fn write_trace(dir: &std::path::Path, trace: &Trace) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut names: Vec<&str> = Vec::new();
    for entry in trace.entries() {
        if !names.contains(&entry.name.as_str()) {
            names.push(&entry.name);
        }
    }
    let mut index = Vec::new();
    for name in names {
        let entries: Vec<_> = trace.entries().iter().filter(|e| e.name == name).collect();
        let width = entries[0].width;
        if entries.iter().any(|e| e.width != width) {
            return Err(format!("trace tensor {name} changes width between batches").into());
        }
        let values: Vec<f32> = entries
            .iter()
            .flat_map(|e| e.data.iter().copied())
            .collect();
        write_f32(&dir.join(format!("{name}.f32")), &values)?;
        let rows: usize = entries.iter().map(|e| e.rows).sum();
        index.push(json!({ "name": name, "rows": rows, "width": width }));
    }
    let path = dir.join("index.json");
    std::fs::write(&path, serde_json::to_string_pretty(&index)?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// The prompt as token ids: raw `--tokens`, or the text encoded with BOS as the file says.
fn prompt_ids(args: &Args, tokenizer: Option<&Tokenizer>) -> Result<Vec<u32>, Box<dyn Error>> {
    if let Some(ids) = &args.tokens {
        return Ok(ids.clone());
    }
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        (None, None) => return Err("give a prompt with --prompt, --prompt-file or --tokens".into()),
    };
    let tokenizer = tokenizer.ok_or("the model file has no usable tokenizer; use --tokens")?;
    Ok(tokenizer.encode_with(
        &text,
        EncodeOptions {
            add_bos: true,
            parse_special: true,
        },
    ))
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

/// The memory planner's prediction of what the session's backend holds on the GPU
/// (weights, KV cache and working buffers; the CUDA context is not counted), to print
/// next to the measured `vram_bytes`; `None` on the CPU.
fn predicted_vram(
    model: &Model,
    session: &gemma_core::Session<'_>,
) -> Result<Option<u64>, Box<dyn Error>> {
    if !matches!(model.options().device, Device::Cuda(_)) {
        return Ok(None);
    }
    let shape = memory::ModelShape::from_gguf(model.gguf())?;
    let options = memory::PlanOptions {
        tokenizer: false,
        ..memory::PlanOptions::for_model(model.options(), session.ctx_len(), session.kv_type())
    };
    let plan = memory::plan(&shape, &options, None)?;
    Ok(Some(plan.total_bytes() - plan.runtime_bytes))
}
