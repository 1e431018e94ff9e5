//! mem: how much memory a Gemma 3 model takes, per quantization, context length and KV
//! cache type — predicted by `gemma_core::memory`, and measured with `--measure`.
//!
//! ```text
//! mem [--size 12b] [--model FILE] [--device cpu|cuda] [--ctx 4K,8K,32K,128K]
//!     [--kv-type f16,q8_0] [--quant Q4_K_M,...] [--json] [--plot FILE.svg]
//!     [--measure] [--fill-tokens N] [--mmproj FILE]
//! ```
//! The table: one row per quantization (or the file of `--model`), one column per context,
//! one block per KV type; each cell is the total, then the KV cache and, after the slash,
//! what a full-length cache (no sliding-window rings) would take. `--json` prints an
//! array of rows `{quant, ctx, kv_type, weights_bytes, kv_bytes, kv_full_bytes,
//! scratch_bytes, total_bytes, ...}`. `--plot` writes an SVG of memory against context.
//!
//! `--measure` (with `--model`) runs, per context and KV type, a fresh copy of this
//! program that loads the model, creates the session, fills it and reads its resident
//! memory (`VmRSS`; device memory with `--device cuda`). Filling: the copy runs with
//! glibc's `MALLOC_PERTURB_` set, so every allocation — the whole KV cache included — is
//! written when it is made, as a session filled to its context would be; then a prefill
//! of `--fill-tokens` tokens (default: one full batch) with logits at every position
//! reads every weight and uses every buffer. The prediction it is compared with is the
//! planner's total with the process term replaced by the resident memory measured in
//! that copy before loading (a measured baseline: code, C library, allocator).

use clap::Parser;
use gemma::core::kv_cache::DEFAULT_RING_MARGIN;
use gemma::core::memory::{self, MemoryPlan, ModelShape, ModelSize, PlanOptions, Quant, VisionShape};
use gemma::core::{Device, KvType, Model, ModelOptions, Tokenizer, DEFAULT_MAX_BATCH};
use gemma::gguf::GgufFile;
use serde_json::{json, Value as Json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable that makes glibc's allocator write every allocation.
const PERTURB_VAR: &str = "MALLOC_PERTURB_";
/// Its value (any non-zero byte).
const PERTURB_VALUE: &str = "165";

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Command line of mem.
#[derive(Parser, Debug, Clone)]
#[command(name = "mem", about = "Memory of Gemma 3 per quantization, context and KV cache type")]
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
        let row = measure_here(args)?;
        return Ok(format!("{row}\n"));
    }
    let table = Table::build(args)?;
    if let Some(path) = &args.plot {
        std::fs::write(path, plot_svg(&table)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.measure {
        let rows = measure_all(args)?;
        return Ok(if args.json { format!("{:#}\n", Json::Array(rows)) } else { measured_text(&rows) });
    }
    Ok(if args.json { format!("{:#}\n", table.json()) } else { table.text() })
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
    pub rows: Vec<(String, ModelShape, Vec<Vec<Option<MemoryPlan>>>)>,
    vision: Option<VisionShape>,
    options: (usize, usize, bool),
}

impl Table {
    /// Plans every cell of the table `args` asks for.
    pub fn build(args: &Args) -> Result<Table, String> {
        let vision = match &args.mmproj {
            Some(path) => Some(VisionShape::from_gguf(&open(path)?).map_err(|e| format!("{}: {e}", path.display()))?),
            None => None,
        };
        let shapes: Vec<(String, ModelShape)> = match &args.model {
            Some(path) => {
                let shape = ModelShape::from_gguf(&open(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
                vec![(shape.label.clone(), shape)]
            }
            None => {
                let quants = if args.quant.is_empty() { Quant::TABLE.to_vec() } else { args.quant.clone() };
                quants
                    .into_iter()
                    .map(|q| {
                        let name = if q == Quant::F16 && args.quant.is_empty() { "F16/BF16".to_owned() } else { q.name().to_owned() };
                        (name, ModelShape::official(args.size, q, false))
                    })
                    .collect()
            }
        };
        let mut table = Table {
            title: match &args.model {
                Some(path) => path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned()),
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
                let cells = args.ctx.iter().map(|&ctx| table.plan(&shape, ctx, kv)).collect::<Result<Vec<_>, _>>()?;
                blocks.push(cells);
            }
            table.rows.push((name, shape, blocks));
        }
        Ok(table)
    }

    /// The plan of one cell, `None` beyond the model's context.
    pub fn plan(&self, shape: &ModelShape, ctx: usize, kv_type: KvType) -> Result<Option<MemoryPlan>, String> {
        if ctx > shape.config.context_length {
            return Ok(None);
        }
        let (ring_margin, max_batch, tokenizer) = self.options;
        let options = PlanOptions { ctx_len: ctx, kv_type, device: self.device, ring_margin, max_batch, tokenizer };
        memory::plan(shape, &options, self.vision.as_ref()).map(Some).map_err(|e| e.to_string())
    }

    /// The human-readable table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let what = if matches!(self.device, Device::Cpu) { "resident memory" } else { "device memory" };
        let unit = Unit::for_bytes(self.largest_total());
        let _ = writeln!(out, "{} on {}: predicted {what} in {} (model file + tokenizer + KV cache + buffers + process)", self.title, self.device, unit.name);
        for (b, kv) in self.kv_types.iter().enumerate() {
            let _ = writeln!(out, "\nKV cache {kv}; each cell: total (KV cache / KV cache without sliding-window rings)");
            let _ = write!(out, "{:<10} {:>8}", "quant", "file");
            for &ctx in &self.ctx {
                let _ = write!(out, " {:>21}", ctx_label(ctx));
            }
            out.push('\n');
            for (name, shape, blocks) in &self.rows {
                let _ = write!(out, "{name:<10} {:>8}", unit.show(shape.file_bytes()));
                for cell in &blocks[b] {
                    let text = match cell {
                        Some(p) => format!("{} ({}/{})", unit.show(p.total_bytes()), unit.show(p.kv_bytes()), unit.show(p.kv.full_bytes)),
                        None => "-".to_owned(),
                    };
                    let _ = write!(out, " {text:>21}");
                }
                out.push('\n');
            }
        }
        if let Some(v) = &self.vision {
            let _ = writeln!(out, "\nincludes the vision tower: {} {}", unit.show(v.bytes()), unit.name);
        }
        out
    }

    /// The largest total of the table.
    fn largest_total(&self) -> u64 {
        let cells = self.rows.iter().flat_map(|r| r.2.iter().flatten().flatten());
        cells.map(MemoryPlan::total_bytes).max().unwrap_or(0)
    }

    /// The JSON array of rows (F16 stands for BF16 too and is listed under both names).
    pub fn json(&self) -> Json {
        let mut rows = Vec::new();
        for (name, _, blocks) in &self.rows {
            let names: Vec<&str> = match name.as_str() {
                "F16/BF16" => vec!["F16", "BF16"],
                other => vec![other],
            };
            for quant in names {
                for cells in blocks {
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
        "runtime_bytes": p.runtime_bytes,
        "total_bytes": p.total_bytes(),
        "total_full_kv_bytes": p.total_full_kv_bytes(),
    })
}

/// GiB for tables of large models, MiB for small ones.
#[derive(Clone, Copy, Debug)]
struct Unit {
    name: &'static str,
    bytes: f64,
    decimals: usize,
}

impl Unit {
    fn for_bytes(largest: u64) -> Unit {
        if largest as f64 >= 2.0 * GIB {
            Unit { name: "GiB", bytes: GIB, decimals: 2 }
        } else {
            Unit { name: "MiB", bytes: MIB, decimals: 0 }
        }
    }

    fn value(self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes
    }

    fn show(self, bytes: u64) -> String {
        format!("{:.*}", self.decimals, self.value(bytes))
    }
}

/// "4K", "128K", or the plain number.
pub fn ctx_label(ctx: usize) -> String {
    if ctx % 1024 == 0 {
        format!("{}K", ctx / 1024)
    } else {
        ctx.to_string()
    }
}

fn open(path: &Path) -> Result<GgufFile, String> {
    GgufFile::open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs one fresh copy of this program per (context, KV type) with `MALLOC_PERTURB_`
/// set and collects their JSON rows.
fn measure_all(args: &Args) -> Result<Vec<Json>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let model = args.model.as_ref().ok_or("--measure needs --model")?;
    let mut rows = Vec::new();
    for &kv in &args.kv_type {
        for &ctx in &args.ctx {
            let mut cmd = Command::new(&exe);
            cmd.arg("--measure-one").arg("--model").arg(model);
            cmd.args(["--device", &args.device.to_string(), "--ctx", &ctx.to_string(), "--kv-type", kv.name()]);
            cmd.args(["--max-batch", &args.max_batch.to_string(), "--ring-margin", &args.ring_margin.to_string()]);
            cmd.args(["--threads", &args.threads.to_string()]);
            if args.no_tokenizer {
                cmd.arg("--no-tokenizer");
            }
            if let Some(n) = args.fill_tokens {
                cmd.args(["--fill-tokens", &n.to_string()]);
            }
            let out = cmd.env(PERTURB_VAR, PERTURB_VALUE).output().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
            if !out.status.success() {
                return Err(format!("measuring ctx {ctx} kv {kv} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            rows.push(serde_json::from_str(text.trim()).map_err(|e| format!("bad measurement output `{text}`: {e}"))?);
        }
    }
    Ok(rows)
}

/// Measures one session in this process (the first `--ctx` and `--kv-type`): its JSON row.
pub fn measure_here(args: &Args) -> Result<Json, String> {
    let baseline = memory::resident_bytes().ok_or("cannot read this process's resident memory (/proc/self/status)")?;
    let perturbed = std::env::var_os(PERTURB_VAR).is_some();
    let path = args.model.as_ref().ok_or("--measure needs --model")?;
    let (&ctx, &kv) = args.ctx.first().zip(args.kv_type.first()).ok_or("no context or KV type given")?;
    let cuda_before = cuda_used_bytes(args.device)?;
    let options = ModelOptions { threads: args.threads, device: args.device, ring_margin: args.ring_margin, max_batch: args.max_batch };
    let model = Model::load(path, options).map_err(|e| format!("{}: {e}", path.display()))?;
    let before_tokenizer = memory::resident_bytes().unwrap_or(0);
    let tokenizer = if !args.no_tokenizer { Some(Tokenizer::from_gguf(model.gguf()).map_err(|e| e.to_string())?) } else { None };
    let tokenizer_measured = memory::resident_bytes().unwrap_or(0).saturating_sub(before_tokenizer);
    let shape = ModelShape::from_gguf(model.gguf()).map_err(|e| e.to_string())?;
    let options = PlanOptions { tokenizer: !args.no_tokenizer, ..PlanOptions::for_model(model.options(), ctx, kv) };
    let plan = memory::plan(&shape, &options, None).map_err(|e| e.to_string())?;
    let mut session = model.session(ctx, kv).map_err(|e| e.to_string())?;
    let fill = args.fill_tokens.unwrap_or(args.max_batch).clamp(1, ctx);
    let tokens = fill_tokens(fill, model.config().n_vocab);
    session.prefill_each(&tokens, |_, _| {}).map_err(|e| e.to_string())?;
    let measured = memory::resident_bytes().ok_or("cannot read resident memory")?;
    let mut row = plan_json(&shape.label, &plan);
    let predicted = plan.total_bytes() - plan.runtime_bytes + baseline;
    let extra = json!({
        "model": path.display().to_string(),
        "fill_tokens": fill,
        "malloc_perturb": perturbed,
        "baseline_bytes": baseline,
        "predicted_bytes": predicted,
        "measured_bytes": measured,
        "error_pct": error_pct(predicted, measured),
        "measured_anon_bytes": memory::resident_anon_bytes(),
        "measured_file_bytes": memory::resident_file_bytes(),
        "peak_bytes": memory::peak_resident_bytes(),
        "tokenizer_loaded": tokenizer.is_some(),
        "tokenizer_measured_bytes": tokenizer_measured,
    });
    merge(&mut row, extra);
    if let (Some(before), Some(after)) = (cuda_before, cuda_used_bytes(args.device)?) {
        let predicted_vram = plan.total_bytes() - plan.runtime_bytes + before;
        let vram = json!({
            "predicted_vram_bytes": predicted_vram,
            "vram_bytes": after,
            "vram_error_pct": error_pct(predicted_vram, after),
            "vram_baseline_bytes": before,
        });
        merge(&mut row, vram);
    }
    drop(session);
    Ok(row)
}

/// Device memory in use on the GPU (`total - free`), `None` on the CPU.
fn cuda_used_bytes(device: Device) -> Result<Option<u64>, String> {
    let Device::Cuda(ordinal) = device else { return Ok(None) };
    let dev = gemma::kernels::cuda::CudaDevice::new(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let (free, total) = dev.mem_info().map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    Ok(Some((total - free) as u64))
}

/// BOS, then a deterministic spread of ordinary ids.
pub fn fill_tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut state = 0x2545_f491_u64;
    (0..n)
        .map(|i| {
            if i == 0 {
                return 2.min(n_vocab as u32 - 1);
            }
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let span = n_vocab.saturating_sub(4).max(1) as u64;
            (4 + (state >> 33) % span) as u32
        })
        .map(|t| t.min(n_vocab as u32 - 1))
        .collect()
}

/// `(predicted - measured) / measured` in percent.
pub fn error_pct(predicted: u64, measured: u64) -> f64 {
    (predicted as f64 - measured as f64) / measured.max(1) as f64 * 100.0
}

fn merge(row: &mut Json, extra: Json) {
    if let (Json::Object(a), Json::Object(b)) = (row, extra) {
        a.extend(b);
    }
}

/// The measured rows as a table.
fn measured_text(rows: &[Json]) -> String {
    let mut out = String::from("resident memory of a filled session: predicted (planner + measured baseline) vs measured\n");
    let _ = writeln!(out, "{:>7} {:>5} {:>9} {:>11} {:>11} {:>8} {:>10}", "ctx", "kv", "baseline", "predicted", "measured", "error", "KV cache");
    for r in rows {
        let mib = |k: &str| r[k].as_u64().unwrap_or(0) as f64 / MIB;
        let _ = writeln!(
            out,
            "{:>7} {:>5} {:>6.1} MiB {:>7.1} MiB {:>7.1} MiB {:>+7.2}% {:>6.1} MiB",
            ctx_label(r["ctx"].as_u64().unwrap_or(0) as usize),
            r["kv_type"].as_str().unwrap_or("?"),
            mib("baseline_bytes"),
            mib("predicted_bytes"),
            mib("measured_bytes"),
            r["error_pct"].as_f64().unwrap_or(f64::NAN),
            mib("kv_bytes"),
        );
        if let Some(v) = r["vram_bytes"].as_u64() {
            let p = r["predicted_vram_bytes"].as_u64().unwrap_or(0);
            let _ = writeln!(out, "        VRAM: predicted {:.1} MiB, measured {:.1} MiB ({:+.2}%)", p as f64 / MIB, v as f64 / MIB, error_pct(p, v));
        }
    }
    out
}

/// An SVG line plot of the table's first KV type: total memory against context (log
/// scale), one line per row, and the first row's total with a full-length cache dashed.
pub fn plot_svg(table: &Table) -> String {
    const COLORS: [&str; 10] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
    let (w, h, left, right, top, bottom) = (900.0, 560.0, 80.0, 230.0, 50.0, 60.0);
    let kv = table.kv_types.first().copied().unwrap_or_default();
    let max_ctx = table.rows.iter().map(|r| r.1.config.context_length).max().unwrap_or(1).max(1024);
    let contexts: Vec<usize> = (10..=max_ctx.ilog2()).map(|p| 1usize << p).collect();
    let unit = Unit::for_bytes(table.largest_total());
    let lines: Vec<(String, Vec<(usize, f64, f64)>)> = table
        .rows
        .iter()
        .map(|(name, shape, _)| {
            let points = contexts
                .iter()
                .filter_map(|&c| table.plan(shape, c, kv).ok().flatten())
                .map(|p| (p.options.ctx_len, unit.value(p.total_bytes()), unit.value(p.total_full_kv_bytes())))
                .collect();
            (name.clone(), points)
        })
        .collect();
    let y_max = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(0.0f64, f64::max).max(0.1);
    let y_step = nice_step(y_max / 6.0);
    let y_top = (y_max / y_step).ceil() * y_step;
    let (x0, x1) = ((1024f64).log2(), (max_ctx as f64).log2().max(11.0));
    let px = |ctx: usize| left + ((ctx as f64).log2() - x0) / (x1 - x0) * (w - left - right);
    let py = |g: f64| h - bottom - g.min(y_top) / y_top * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{} on {}: memory against context (KV cache {kv})</text>"#, (w - right + left) / 2.0, xml(&table.title), table.device);
    let mut g = 0.0;
    while g <= y_top + 1e-9 {
        let y = py(g);
        let _ = writeln!(s, r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##, w - right, left - 6.0, y + 4.0, axis_label(g, y_step));
        g += y_step;
    }
    for &c in &contexts {
        let x = px(c);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##, h - bottom, h - bottom + 18.0, ctx_label(c));
    }
    let _ = writeln!(s, r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="black"/>"#, h - bottom, w - right, h - bottom, h - bottom);
    let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">context length (tokens, log scale)</text>"#, (w - right + left) / 2.0, h - 15.0);
    let _ = writeln!(s, r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">total memory ({})</text>"#, (h - bottom + top) / 2.0, (h - bottom + top) / 2.0, unit.name);
    let polyline = |points: &[(usize, f64)], color: &str, dash: &str| {
        let coords: Vec<String> = points.iter().map(|&(c, g)| format!("{:.1},{:.1}", px(c), py(g))).collect();
        format!(r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#, coords.join(" "))
    };
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let totals: Vec<(usize, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
        let _ = writeln!(s, "{}", polyline(&totals, color, ""));
        let ly = top + 20.0 * i as f64;
        let _ = writeln!(s, r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#, w - right + 15.0, w - right + 40.0, w - right + 46.0, ly + 4.0, xml(name));
    }
    if let Some((name, points)) = lines.first() {
        let full: Vec<(usize, f64)> = points.iter().map(|p| (p.0, p.2)).collect();
        let _ = writeln!(s, "{}", polyline(&full, COLORS[0], r#" stroke-dasharray="6 4""#));
        let ly = top + 20.0 * lines.len() as f64 + 10.0;
        let _ = writeln!(s, r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">{} without rings</text>"#, w - right + 15.0, w - right + 40.0, COLORS[0], w - right + 46.0, ly + 4.0, xml(name));
    }
    s.push_str("</svg>\n");
    s
}

/// A round axis step (1, 2 or 5 times a power of ten) near `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(10.0 * magnitude)
}

/// An axis value with as many decimals as its step needs.
fn axis_label(value: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
