//! perplexity: how well a model predicts a text, and how far a quantized model drifts
//! from a higher-precision one — the numbers llama.cpp's `llama-perplexity` reports.
//!
//! ```text
//! perplexity --model F (--text-file T | --tokens-file F) [--ctx 512] [--max-chunks N]
//!            [--save-logits BASE] [--kl-base BASE] [--kv-type f16] [--flash-attn on|off]
//!            [--device cpu|cuda[:N]] [--threads N] [--json]
//! ```
//! The convention is llama.cpp's: the text is tokenized with BOS (`--tokens-file` takes raw
//! ids: JSON array or numbers separated by commas/whitespace) and cut into
//! `floor(n_tokens / ctx)` chunks of `ctx` tokens; each chunk runs in a fresh context with
//! its first token replaced by BOS (when the vocabulary adds BOS), and only its second half
//! is scored: the logits at positions `ctx/2 .. ctx-2` predict the tokens at
//! `ctx/2+1 .. ctx-1`, so every scored token has at least `ctx/2` tokens of context.
//! PPL = exp(mean negative log-likelihood), its error from the standard error of the mean.
//!
//! `--save-logits BASE` writes the logits of every scored position to `BASE.f32`
//! (little-endian f32, one row of n_vocab per position, in order) and `BASE.json` (sizes
//! and the scored tokens). `--kl-base BASE` compares this model with those logits at the
//! same positions: KL(base || model) per position (mean ± error, maximum, percentiles),
//! Δp = p_model(token) - p_base(token) of the actual next token (mean ± error, RMS,
//! percentiles), the agreement of the top-1 tokens ("same top p"), and
//! ln(PPL(model)/PPL(base)). Unlike llama.cpp, the base logits are kept exactly (llama.cpp
//! stores them as 16-bit log-probabilities and skips probabilities below e^-16).

use clap::Parser;
use gemma::core::{Device, KvType, Model, ModelOptions, Tokenizer};
use serde_json::{json, Value as Json};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Command line of perplexity.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "perplexity",
    about = "Perplexity of a text, and KL divergence against a base model's logits"
)]
pub struct Args {
    /// The GGUF model.
    #[arg(long)]
    pub model: PathBuf,
    /// The text to score (tokenized with BOS).
    #[arg(
        long,
        required_unless_present = "tokens_file",
        conflicts_with = "tokens_file"
    )]
    pub text_file: Option<PathBuf>,
    /// Token ids to score instead of a text (JSON array, or numbers separated by commas or whitespace).
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// Tokens per chunk (the context of each evaluation).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks.
    #[arg(long)]
    pub max_chunks: Option<usize>,
    /// Save the scored logits to BASE.f32 and BASE.json.
    #[arg(long, value_name = "BASE")]
    pub save_logits: Option<PathBuf>,
    /// Compare with logits saved by --save-logits from a higher-precision model.
    #[arg(long, value_name = "BASE")]
    pub kl_base: Option<PathBuf>,
    /// KV cache type.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    /// Attention rounding of llama.cpp with flash attention on (its default) or off; on
    /// CUDA, `on` rounds small batches and early steps as the CPU does.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub flash_attn: String,
    /// Device: cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => print!(
            "{}",
            if args.json {
                format!("{:#}\n", report.json())
            } else {
                report.text()
            }
        ),
        Err(message) => {
            eprintln!("perplexity: {}", message.replace('\n', " "));
            std::process::exit(1);
        }
    }
}

/// The score of one predicted token.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TokenScore {
    /// -ln p_model(token).
    pub nll: f64,
    /// -ln p_base(token), with a base.
    pub base_nll: f64,
    /// KL(base || model) of the whole distribution, with a base.
    pub kld: f64,
    /// p_model(token) - p_base(token), with a base.
    pub dp: f64,
    /// Whether the model's and the base's most likely tokens agree, with a base.
    pub same_top: bool,
}

/// `ln softmax(logits)` in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|&x| x as f64 - log_sum).collect()
}

fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// Scores the prediction `logits` of `token`, against `base` logits when given.
pub fn score(logits: &[f32], token: u32, base: Option<&[f32]>) -> TokenScore {
    let lp = log_softmax(logits);
    let t = token as usize;
    let mut s = TokenScore {
        nll: -lp[t],
        ..TokenScore::default()
    };
    if let Some(base) = base {
        let bp = log_softmax(base);
        s.base_nll = -bp[t];
        s.kld = bp.iter().zip(&lp).map(|(&b, &m)| b.exp() * (b - m)).sum();
        s.dp = lp[t].exp() - bp[t].exp();
        s.same_top = argmax(&lp) == argmax(&bp);
    }
    s
}

/// Mean, standard error of the mean, and order statistics of a sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    sorted: Vec<f64>,
    /// Mean.
    pub mean: f64,
    /// Standard error of the mean (`sqrt(var / (n - 1))`, llama.cpp's).
    pub err: f64,
}

impl Stats {
    /// The statistics of `values`.
    pub fn new(values: impl Iterator<Item = f64>) -> Stats {
        let mut sorted: Vec<f64> = values.collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n.max(1.0);
        let var = sorted.iter().map(|v| v * v).sum::<f64>() / n.max(1.0) - mean * mean;
        let err = if n > 1.0 {
            (var.max(0.0) / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Stats { sorted, mean, err }
    }

    /// The `p`-quantile (0..=1), linearly interpolated.
    pub fn quantile(&self, p: f64) -> f64 {
        let Some(last) = self.sorted.len().checked_sub(1) else {
            return f64::NAN;
        };
        let x = p.clamp(0.0, 1.0) * last as f64;
        let (i, frac) = (x.floor() as usize, x.fract());
        let next = self.sorted[(i + 1).min(last)];
        self.sorted[i] + frac * (next - self.sorted[i])
    }

    /// Root mean square.
    pub fn rms(&self) -> f64 {
        (self.sorted.iter().map(|v| v * v).sum::<f64>() / self.sorted.len().max(1) as f64).sqrt()
    }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Every scored token, in order.
    pub scores: Vec<TokenScore>,
    /// Whether the scores include a base comparison.
    pub with_base: bool,
}

impl Report {
    /// exp(mean NLL) and its error.
    pub fn ppl(&self) -> (f64, f64) {
        let nll = Stats::new(self.scores.iter().map(|s| s.nll));
        (nll.mean.exp(), nll.mean.exp() * nll.err)
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Json {
        let (ppl, ppl_err) = self.ppl();
        let mut out = json!({ "ctx": self.ctx, "chunks": self.chunks, "scored": self.scores.len(), "ppl": ppl, "ppl_err": ppl_err });
        if self.with_base {
            let stats = |f: fn(&TokenScore) -> f64| Stats::new(self.scores.iter().map(f));
            let (kld, dp, ratio) = (
                stats(|s| s.kld),
                stats(|s| s.dp),
                stats(|s| s.nll - s.base_nll),
            );
            let same = stats(|s| f64::from(u8::from(s.same_top)));
            let base_ppl = stats(|s| s.base_nll).mean.exp();
            let extra = json!({
                "base_ppl": base_ppl,
                "ln_ppl_ratio": ratio.mean, "ln_ppl_ratio_err": ratio.err,
                "kld_mean": kld.mean, "kld_err": kld.err, "kld_max": kld.quantile(1.0), "kld_p99_9": kld.quantile(0.999),
                "kld_p99": kld.quantile(0.99), "kld_p95": kld.quantile(0.95), "kld_median": kld.quantile(0.5), "kld_min": kld.quantile(0.0),
                "dp_mean": dp.mean, "dp_err": dp.err, "dp_rms": dp.rms(), "dp_max": dp.quantile(1.0), "dp_p99": dp.quantile(0.99),
                "dp_p95": dp.quantile(0.95), "dp_median": dp.quantile(0.5), "dp_p5": dp.quantile(0.05), "dp_p1": dp.quantile(0.01),
                "dp_min": dp.quantile(0.0),
                "same_top_p": same.mean, "same_top_p_err": same.err,
            });
            if let (Json::Object(a), Json::Object(b)) = (&mut out, extra) {
                a.extend(b);
            }
        }
        out
    }

    /// The report as text, in llama.cpp's wording.
    pub fn text(&self) -> String {
        let j = self.json();
        let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} chunks of {} tokens, {} tokens scored",
            self.chunks,
            self.ctx,
            self.scores.len()
        );
        let _ = writeln!(
            out,
            "Final estimate: PPL = {:.4} +/- {:.5}",
            f("ppl"),
            f("ppl_err")
        );
        if self.with_base {
            let _ = writeln!(out, "Mean PPL(base)          : {:.6}", f("base_ppl"));
            let _ = writeln!(
                out,
                "Mean ln(PPL(Q)/PPL(base)): {:.6} ± {:.6}",
                f("ln_ppl_ratio"),
                f("ln_ppl_ratio_err")
            );
            let _ = writeln!(
                out,
                "Mean    KLD: {:.6} ± {:.6}",
                f("kld_mean"),
                f("kld_err")
            );
            for (name, key) in [
                ("Maximum KLD", "kld_max"),
                ("99.9%   KLD", "kld_p99_9"),
                ("99.0%   KLD", "kld_p99"),
                ("95.0%   KLD", "kld_p95"),
                ("Median  KLD", "kld_median"),
                ("Minimum KLD", "kld_min"),
            ] {
                let _ = writeln!(out, "{name}: {:.6}", f(key));
            }
            let _ = writeln!(
                out,
                "Mean    Δp: {:.3} ± {:.3} %",
                100.0 * f("dp_mean"),
                100.0 * f("dp_err")
            );
            for (name, key) in [
                ("Maximum Δp", "dp_max"),
                ("99.0%   Δp", "dp_p99"),
                ("95.0%   Δp", "dp_p95"),
                ("Median  Δp", "dp_median"),
                ("5.0%    Δp", "dp_p5"),
                ("1.0%    Δp", "dp_p1"),
                ("Minimum Δp", "dp_min"),
                ("RMS Δp    ", "dp_rms"),
            ] {
                let _ = writeln!(out, "{name}: {:.3} %", 100.0 * f(key));
            }
            let _ = writeln!(
                out,
                "Same top p: {:.3} ± {:.3} %",
                100.0 * f("same_top_p"),
                100.0 * f("same_top_p_err")
            );
        }
        out
    }
}

/// Runs the command.
pub fn run(args: &Args) -> Result<Report, String> {
    let options = ModelOptions {
        threads: args.threads,
        flash_attention: args.flash_attn == "on",
        device: args.device,
        ..ModelOptions::default()
    };
    let model =
        Model::load(&args.model, options).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let n_vocab = model.config().n_vocab;
    let tokenizer = Tokenizer::from_gguf(model.gguf()).map_err(|e| format!("tokenizer: {e}"))?;
    let tokens = match (&args.tokens_file, &args.text_file) {
        (Some(path), _) => read_tokens(path)?,
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            tokenizer.encode_with(
                &text,
                gemma::core::EncodeOptions {
                    add_bos: true,
                    parse_special: false,
                },
            )
        }
        (None, None) => return Err("give --text-file or --tokens-file".to_owned()),
    };
    let ctx = args.ctx;
    if ctx < 4 {
        return Err(format!("--ctx {ctx} is too small (at least 4 tokens)"));
    }
    let mut chunks = tokens.len() / ctx;
    if let Some(max) = args.max_chunks {
        chunks = chunks.min(max);
    }
    if chunks == 0 {
        return Err(format!(
            "{} tokens: need at least --ctx {ctx} tokens",
            tokens.len()
        ));
    }
    let bos = tokenizer.bos_id().filter(|_| tokenizer.adds_bos());
    let first = ctx / 2;
    let scored: Vec<u32> = (0..chunks)
        .flat_map(|c| tokens[c * ctx + first + 1..(c + 1) * ctx].iter().copied())
        .collect();
    let mut base = match &args.kl_base {
        Some(b) => Some(LogitsFile::open(b, n_vocab, ctx, &scored)?),
        None => None,
    };
    let mut saver = match &args.save_logits {
        Some(b) => Some(LogitsFile::create(b, n_vocab, ctx, chunks, &scored)?),
        None => None,
    };
    let mut session = model
        .session(ctx, args.kv_type)
        .map_err(|e| e.to_string())?;
    let mut scores = Vec::with_capacity(scored.len());
    let mut failure: Option<String> = None;
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        session.truncate(0).map_err(|e| e.to_string())?;
        let mut base_row = vec![0f32; n_vocab];
        session
            .prefill_each(&chunk, |pos, logits| {
                if pos < first || pos + 1 >= ctx || failure.is_some() {
                    return;
                }
                let result = (|| -> Result<(), String> {
                    if let Some(s) = saver.as_mut() {
                        s.write_row(logits)?;
                    }
                    let base_logits = match base.as_mut() {
                        Some(b) => Some(b.read_row(&mut base_row).map(|()| base_row.as_slice())?),
                        None => None,
                    };
                    scores.push(score(logits, chunk[pos + 1], base_logits));
                    Ok(())
                })();
                failure = result.err();
            })
            .map_err(|e| e.to_string())?;
        if let Some(message) = failure.take() {
            return Err(message);
        }
    }
    if let Some(s) = saver {
        s.finish()?;
    }
    Ok(Report {
        ctx,
        chunks,
        scores,
        with_base: args.kl_base.is_some(),
    })
}

/// Token ids from a JSON array or numbers separated by commas or whitespace.
pub fn read_tokens(path: &Path) -> Result<Vec<u32>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.split(|c: char| c == ',' || c == '[' || c == ']' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| format!("{}: `{s}` is not a token id", path.display()))
        })
        .collect()
}

/// Saved logits: `BASE.f32` rows and `BASE.json` sizes.
pub struct LogitsFile<F> {
    file: F,
    path: PathBuf,
    n_vocab: usize,
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(ext);
    PathBuf::from(name)
}

impl LogitsFile<BufWriter<File>> {
    /// Starts writing logits of `n_vocab` values for the `scored` tokens.
    pub fn create(
        base: &Path,
        n_vocab: usize,
        ctx: usize,
        chunks: usize,
        scored: &[u32],
    ) -> Result<Self, String> {
        let meta = json!({ "n_vocab": n_vocab, "ctx": ctx, "chunks": chunks, "rows": scored.len(), "tokens": scored });
        let meta_path = with_ext(base, ".json");
        std::fs::write(&meta_path, format!("{meta}\n"))
            .map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let path = with_ext(base, ".f32");
        let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(LogitsFile {
            file: BufWriter::new(file),
            path,
            n_vocab,
        })
    }

    fn write_row(&mut self, logits: &[f32]) -> Result<(), String> {
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.file
            .write_all(&bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    fn finish(mut self) -> Result<(), String> {
        self.file
            .flush()
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

impl LogitsFile<BufReader<File>> {
    /// Opens saved logits, checking that they are for the same vocabulary, context and tokens.
    pub fn open(base: &Path, n_vocab: usize, ctx: usize, scored: &[u32]) -> Result<Self, String> {
        let meta_path = with_ext(base, ".json");
        let text = std::fs::read_to_string(&meta_path)
            .map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let meta: Json =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let tokens: Vec<u32> = meta["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_u64())
            .map(|t| t as u32)
            .collect();
        if meta["n_vocab"].as_u64() != Some(n_vocab as u64)
            || meta["ctx"].as_u64() != Some(ctx as u64)
        {
            return Err(format!(
                "{}: saved for n_vocab {} and ctx {}, this run has {n_vocab} and {ctx}",
                meta_path.display(),
                meta["n_vocab"],
                meta["ctx"]
            ));
        }
        if !tokens.starts_with(scored) {
            return Err(format!(
                "{}: saved for other tokens than this run scores",
                meta_path.display()
            ));
        }
        let path = with_ext(base, ".f32");
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(LogitsFile {
            file: BufReader::new(file),
            path,
            n_vocab,
        })
    }

    fn read_row(&mut self, row: &mut [f32]) -> Result<(), String> {
        let mut bytes = vec![0u8; 4 * self.n_vocab];
        self.file
            .read_exact(&mut bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        for (v, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}
