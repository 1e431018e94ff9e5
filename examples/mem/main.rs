//! mem: how much memory a Gemma 3 model takes, per quantization, context length and KV
//! cache type — predicted by `gemma_core::memory`, and measured with `--measure`.
//!
//! ```text
//! mem [--size 12b] [--model FILE] [--device cpu|cuda] [--ctx 4K,8K,32K,128K]
//!     [--kv-type f16,q8_0] [--quant Q4_K_M,...] [--json] [--plot FILE.svg]
//!     [--measure] [--fill-tokens N] [--no-tokenizer] [--mmproj FILE [--images N]]
//! ```
//! The table: one row per quantization (or the file of `--model`), one column per context,
//! one block per KV type; each cell is the total, then the KV cache and, after the slash,
//! what a full-length cache (no sliding-window rings) would take. `--json` prints an
//! array of rows `{quant, ctx, kv_type, weights_bytes, kv_bytes, kv_full_bytes,
//! scratch_bytes, total_bytes, ...}`. `--plot` writes an SVG of memory against context.
//!
//! `--mmproj FILE` adds the vision tower (the mapped file and the buffers of an image
//! encode) and `--images N` images (default 1): their soft tokens (f32, `image_tokens x
//! text hidden` each) count in `vision_bytes`; the context positions they take (256 soft
//! tokens + 2 markers each for the released models) are `image_tokens` and the KV cache
//! they fill `image_kv_bytes` (inside the cache, which is sized by the context); contexts
//! too short for the images show "-".
//!
//! `--measure` (with `--model`) runs, per context and KV type, a fresh copy of this
//! program that loads the model and its tokenizer (unless `--no-tokenizer`), creates the
//! session, fills it and reads its resident memory (`VmRSS`; device memory with
//! `--device cuda` once CUDA sessions exist). Filling: the copy runs with
//! glibc's `MALLOC_PERTURB_` set, so every allocation — the whole KV cache included — is
//! written when it is made, as a session filled to its context would be; then a prefill
//! of `--fill-tokens` tokens (default: one full batch) with logits at every position
//! reads every weight and uses every buffer. The prediction it is compared with is the
//! planner's total with its process baseline (a documented constant) replaced by the
//! resident memory measured in that copy before loading (code, C library, allocator).

#[path = "measure.rs"]
pub mod measure;
#[path = "plot.rs"]
pub mod plot;

use clap::Parser;
use gemma::core::kv_cache::DEFAULT_RING_MARGIN;
use gemma::core::memory::{
    self, MemoryPlan, ModelShape, ModelSize, PlanOptions, Quant, VisionShape,
};
use gemma::core::{Device, KvType, DEFAULT_MAX_BATCH};
use gemma::gguf::GgufFile;
use serde_json::{json, Value as Json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Command line of mem.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "mem",
    about = "Memory of Gemma 3 per quantization, context and KV cache type"
)]
pub struct Args {
    /// Official size to tabulate (270m, 1b, 4b, 12b, 27b) when no --model is given.
    #[arg(long, default_value = "12b")]
    pub size: ModelSize,
    /// A GGUF file to plan (and measure) instead of an official size.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Context lengths (plain numbers or with K = 1024).
    #[arg(long, value_delimiter = ',', value_parser = parse_ctx, default_value = "4K,8K,32K,128K")]
    pub ctx: Vec<usize>,
    /// KV cache types.
    #[arg(long = "kv-type", value_delimiter = ',', default_value = "f16,q8_0")]
    pub kv_type: Vec<KvType>,
    /// Quantizations of the official size (default: the table's nine rows).
    #[arg(long, value_delimiter = ',')]
    pub quant: Vec<Quant>,
    /// Print a JSON array of rows.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of memory against context.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Measure the resident memory of real sessions (needs --model).
    #[arg(long, requires = "model")]
    pub measure: bool,
    /// Tokens prefilled by --measure (default: one full batch, at most the context).
    #[arg(long)]
    pub fill_tokens: Option<usize>,
    /// A vision tower (mmproj GGUF) to add.
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// Images in the context (with --mmproj).
    #[arg(long, default_value_t = 1, requires = "mmproj")]
    pub images: u64,
    /// Most tokens per forward pass (the engine's default 512).
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Extra ring slots of local layers (the engine's default 64).
    #[arg(long, default_value_t = DEFAULT_RING_MARGIN)]
    pub ring_margin: usize,
    /// Worker threads of the measured session (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Leave the tokenizer out (of the plan and of the measured process).
    #[arg(long)]
    pub no_tokenizer: bool,
    /// Internal: measure the first context and KV type in this process.
    #[arg(long, hide = true)]
    pub measure_one: bool,
}

/// A context length: `4096`, `4K` or `4k`.
pub fn parse_ctx(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 1024),
        None => (s, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid context length `{s}`"))
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(text) => print!("{text}"),
        Err(message) => {
            eprintln!("mem: {}", message.replace('\n', " "));
            std::process::exit(1);
        }
    }
}

/// Runs the command; returns what to print, or the error message.
pub fn run(args: &Args) -> Result<String, String> {
    if args.measure_one {
        let row = measure::measure_here(args)?;
        return Ok(format!("{row}\n"));
    }
    let table = Table::build(args)?;
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::plot_svg(&table))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.measure {
        let rows = measure::measure_all(args)?;
        return Ok(if args.json {
            format!("{:#}\n", Json::Array(rows))
        } else {
            measure::measured_text(&rows)
        });
    }
    Ok(if args.json {
        format!("{:#}\n", table.json())
    } else {
        table.text()
    })
}

/// One row of the table: a quantization (or the file) and its plans.
pub struct Row {
    /// The row's name ("Q4_K_M", "F16/BF16").
    pub name: String,
    /// The model it plans.
    pub shape: ModelShape,
    /// Plans per KV type, then per context (`None` beyond the model's context).
    pub plans: Vec<Vec<Option<MemoryPlan>>>,
}

/// The predictions: one plan per (model, kv type, context), `None` where the context
/// is beyond the model's.
pub struct Table {
    /// What is tabulated ("Gemma 3 12b" or the file name).
    pub title: String,
    /// Device of the plans.
    pub device: Device,
    /// Context columns.
    pub ctx: Vec<usize>,
    /// KV cache types (one block each).
    pub kv_types: Vec<KvType>,
    /// Rows: the row name, its model shape and its plans `[kv type][ctx]`.
    pub rows: Vec<Row>,
    vision: Option<VisionShape>,
    options: (usize, usize, bool),
}

impl Table {
    /// Plans every cell of the table `args` asks for.
    pub fn build(args: &Args) -> Result<Table, String> {
        let vision = match &args.mmproj {
            Some(path) => Some(
                VisionShape::from_gguf(&open(path)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .with_images(args.images),
            ),
            None => None,
        };
        let shapes: Vec<(String, ModelShape)> = match &args.model {
            Some(path) => {
                let shape = ModelShape::from_gguf(&open(path)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                vec![(shape.label.clone(), shape)]
            }
            None => {
                let quants = if args.quant.is_empty() {
                    Quant::TABLE.to_vec()
                } else {
                    args.quant.clone()
                };
                quants
                    .into_iter()
                    .map(|q| {
                        let name = if q == Quant::F16 && args.quant.is_empty() {
                            "F16/BF16".to_owned()
                        } else {
                            q.name().to_owned()
                        };
                        (name, ModelShape::official(args.size, q, false))
                    })
                    .collect()
            }
        };
        let mut table = Table {
            title: match &args.model {
                Some(path) => path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                None => format!("Gemma 3 {}", args.size),
            },
            device: args.device,
            ctx: args.ctx.clone(),
            kv_types: args.kv_type.clone(),
            rows: Vec::new(),
            vision,
            options: (args.ring_margin, args.max_batch, !args.no_tokenizer),
        };
        for (name, shape) in shapes {
            let mut blocks = Vec::new();
            for &kv in &args.kv_type {
                let cells = args
                    .ctx
                    .iter()
                    .map(|&ctx| table.plan(&shape, ctx, kv))
                    .collect::<Result<Vec<_>, _>>()?;
                blocks.push(cells);
            }
            table.rows.push(Row {
                name,
                shape,
                plans: blocks,
            });
        }
        Ok(table)
    }

    /// The plan of one cell, `None` where such a session cannot exist.
    pub fn plan(
        &self,
        shape: &ModelShape,
        ctx: usize,
        kv_type: KvType,
    ) -> Result<Option<MemoryPlan>, String> {
        // Beyond the model's context, or too short for the images.
        let images = self.vision.map_or(0, |v| v.context_tokens());
        if ctx > shape.config.context_length || images > ctx as u64 {
            return Ok(None);
        }
        let (ring_margin, max_batch, tokenizer) = self.options;
        let options = PlanOptions {
            ctx_len: ctx,
            kv_type,
            device: self.device,
            ring_margin,
            max_batch,
            tokenizer,
        };
        memory::plan(shape, &options, self.vision.as_ref())
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The human-readable table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let what = if matches!(self.device, Device::Cpu) {
            "resident memory"
        } else {
            "device memory"
        };
        let unit = Unit::for_bytes(self.largest_total());
        let _ = writeln!(out, "{} on {}: predicted {what} in {} (model file + tokenizer + KV cache + buffers + process)", self.title, self.device, unit.name);
        for (b, kv) in self.kv_types.iter().enumerate() {
            let _ = writeln!(out, "\nKV cache {kv}; each cell: total (KV cache / KV cache without sliding-window rings)");
            let _ = write!(out, "{:<10} {:>8}", "quant", "file");
            for &ctx in &self.ctx {
                let _ = write!(out, " {:>21}", ctx_label(ctx));
            }
            out.push('\n');
            for Row { name, shape, plans } in &self.rows {
                let _ = write!(out, "{name:<10} {:>8}", unit.show(shape.file_bytes()));
                for cell in &plans[b] {
                    let text = match cell {
                        Some(p) => format!(
                            "{} ({}/{})",
                            unit.show(p.total_bytes()),
                            unit.show(p.kv_bytes()),
                            unit.show(p.kv.full_bytes)
                        ),
                        None => "-".to_owned(),
                    };
                    let _ = write!(out, " {text:>21}");
                }
                out.push('\n');
            }
        }
        if let Some(v) = &self.vision {
            let _ = writeln!(
                out,
                "\nincludes the vision tower and {} image(s): {} {} (encoder {}, soft tokens {}); the images take {} context positions",
                v.images,
                unit.show(v.bytes()),
                unit.name,
                unit.show(v.encoder_bytes()),
                unit.show(v.soft_token_bytes()),
                v.context_tokens(),
            );
            let first = self
                .rows
                .first()
                .and_then(|r| r.plans.first()?.iter().flatten().next());
            if let Some(p) = first {
                let _ = writeln!(
                    out,
                    "(their KV entries, inside the KV cache: {} {} with {} for {})",
                    unit.show(p.image_kv_bytes),
                    unit.name,
                    p.options.kv_type,
                    self.rows[0].name
                );
            }
        }
        out
    }

    /// The largest total of the table.
    pub fn largest_total(&self) -> u64 {
        let cells = self
            .rows
            .iter()
            .flat_map(|r| r.plans.iter().flatten().flatten());
        cells.map(MemoryPlan::total_bytes).max().unwrap_or(0)
    }

    /// The JSON array of rows (F16 stands for BF16 too and is listed under both names).
    pub fn json(&self) -> Json {
        let mut rows = Vec::new();
        for Row { name, plans, .. } in &self.rows {
            let names: Vec<&str> = match name.as_str() {
                "F16/BF16" => vec!["F16", "BF16"],
                other => vec![other],
            };
            for quant in names {
                for cells in plans {
                    rows.extend(cells.iter().flatten().map(|p| plan_json(quant, p)));
                }
            }
        }
        Json::Array(rows)
    }
}

/// One JSON row of a plan.
pub fn plan_json(quant: &str, p: &MemoryPlan) -> Json {
    json!({
        "quant": quant,
        "ctx": p.options.ctx_len,
        "kv_type": p.options.kv_type.name(),
        "device": p.options.device.to_string(),
        "weights_bytes": p.weights_bytes,
        "metadata_bytes": p.metadata_bytes,
        "kv_bytes": p.kv_bytes(),
        "kv_full_bytes": p.kv.full_bytes,
        "scratch_bytes": p.scratch_bytes,
        "tokenizer_bytes": p.tokenizer_bytes,
        "vision_bytes": p.vision_bytes,
        "image_tokens": p.image_tokens,
        "image_kv_bytes": p.image_kv_bytes,
        "runtime_bytes": p.runtime_bytes,
        "total_bytes": p.total_bytes(),
        "total_full_kv_bytes": p.total_full_kv_bytes(),
    })
}

/// GiB for tables of large models, MiB for small ones.
#[derive(Clone, Copy, Debug)]
pub struct Unit {
    /// "GiB" or "MiB".
    pub name: &'static str,
    bytes: f64,
    decimals: usize,
}

impl Unit {
    /// The unit for a table whose largest value is `largest` bytes.
    pub fn for_bytes(largest: u64) -> Unit {
        if largest as f64 >= 2.0 * GIB {
            Unit {
                name: "GiB",
                bytes: GIB,
                decimals: 2,
            }
        } else {
            Unit {
                name: "MiB",
                bytes: MIB,
                decimals: 0,
            }
        }
    }

    /// `bytes` in this unit.
    pub fn value(self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes
    }

    /// `bytes` in this unit, rounded for the table.
    pub fn show(self, bytes: u64) -> String {
        format!("{:.*}", self.decimals, self.value(bytes))
    }
}

/// "4K", "128K", or the plain number.
pub fn ctx_label(ctx: usize) -> String {
    if ctx.is_multiple_of(1024) {
        format!("{}K", ctx / 1024)
    } else {
        ctx.to_string()
    }
}

fn open(path: &Path) -> Result<GgufFile, String> {
    GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))
}
