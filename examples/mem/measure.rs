//! `mem --measure`: sessions created, filled and measured in fresh copies of the program.

use super::{ctx_label, plan_json, Args, MIB};
use gemma::core::memory::{self, ModelShape, PlanOptions};
use gemma::core::{Device, Model, ModelOptions, Tokenizer};
use serde_json::{json, Value as Json};
use std::fmt::Write as _;
use std::process::Command;

/// Environment variable that makes glibc's allocator write every allocation.
const PERTURB_VAR: &str = "MALLOC_PERTURB_";
/// Its value (any non-zero byte).
const PERTURB_VALUE: &str = "165";

/// Runs one fresh copy of this program per (context, KV type) with `MALLOC_PERTURB_`
/// set and collects their JSON rows.
pub fn measure_all(args: &Args) -> Result<Vec<Json>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let model = args.model.as_ref().ok_or("--measure needs --model")?;
    let mut rows = Vec::new();
    for &kv in &args.kv_type {
        for &ctx in &args.ctx {
            let mut cmd = Command::new(&exe);
            cmd.arg("--measure-one").arg("--model").arg(model);
            cmd.args([
                "--device",
                &args.device.to_string(),
                "--ctx",
                &ctx.to_string(),
                "--kv-type",
                kv.name(),
            ]);
            cmd.args([
                "--max-batch",
                &args.max_batch.to_string(),
                "--ring-margin",
                &args.ring_margin.to_string(),
            ]);
            cmd.args(["--threads", &args.threads.to_string()]);
            if args.no_tokenizer {
                cmd.arg("--no-tokenizer");
            }
            if let Some(n) = args.fill_tokens {
                cmd.args(["--fill-tokens", &n.to_string()]);
            }
            let out = cmd
                .env(PERTURB_VAR, PERTURB_VALUE)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "measuring ctx {ctx} kv {kv} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            rows.push(
                serde_json::from_str(text.trim())
                    .map_err(|e| format!("bad measurement output `{text}`: {e}"))?,
            );
        }
    }
    Ok(rows)
}

/// Measures one session in this process (the first `--ctx` and `--kv-type`): its JSON row.
pub fn measure_here(args: &Args) -> Result<Json, String> {
    let baseline = memory::resident_bytes()
        .ok_or("cannot read this process's resident memory (/proc/self/status)")?;
    let perturbed = std::env::var_os(PERTURB_VAR).is_some();
    let path = args.model.as_ref().ok_or("--measure needs --model")?;
    let (&ctx, &kv) = args
        .ctx
        .first()
        .zip(args.kv_type.first())
        .ok_or("no context or KV type given")?;
    let cuda_before = cuda_used_bytes(args.device)?;
    let options = ModelOptions {
        threads: args.threads,
        device: args.device,
        ring_margin: args.ring_margin,
        max_batch: args.max_batch,
        ..ModelOptions::default()
    };
    let model = Model::load(path, options).map_err(|e| format!("{}: {e}", path.display()))?;
    let before_tokenizer = memory::resident_bytes().unwrap_or(0);
    let tokenizer = if !args.no_tokenizer {
        Some(Tokenizer::from_gguf(model.gguf()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let tokenizer_measured = memory::resident_bytes()
        .unwrap_or(0)
        .saturating_sub(before_tokenizer);
    let shape = ModelShape::from_gguf(model.gguf()).map_err(|e| e.to_string())?;
    let options = PlanOptions {
        tokenizer: !args.no_tokenizer,
        ..PlanOptions::for_model(model.options(), ctx, kv)
    };
    let plan = memory::plan(&shape, &options, None).map_err(|e| e.to_string())?;
    let mut session = model.session(ctx, kv).map_err(|e| e.to_string())?;
    let fill = args.fill_tokens.unwrap_or(args.max_batch).clamp(1, ctx);
    let tokens = fill_tokens(fill, model.config().n_vocab);
    session
        .prefill_each(&tokens, |_, _| {})
        .map_err(|e| e.to_string())?;
    let resident = memory::resident_bytes().ok_or("cannot read resident memory")?;
    let mut row = plan_json(&shape.label, &plan);
    // CPU: the planned process baseline replaced by the one measured before loading (the
    // growth stays planned). CUDA: the device memory in use before loading (the context)
    // in place of the planned context.
    let (predicted, measured) = match (cuda_before, cuda_used_bytes(args.device)?) {
        (Some(before), Some(after)) => (plan.total_bytes() - plan.runtime_bytes + before, after),
        _ => (
            plan.total_bytes() - memory::PROCESS_BASELINE_BYTES + baseline,
            resident,
        ),
    };
    let extra = json!({
        "model": path.display().to_string(),
        "fill_tokens": fill,
        "malloc_perturb": perturbed,
        "baseline_bytes": cuda_before.unwrap_or(baseline),
        "predicted_bytes": predicted,
        "measured_bytes": measured,
        "error_pct": error_pct(predicted, measured),
        "resident_bytes": resident,
        "measured_anon_bytes": memory::resident_anon_bytes(),
        "measured_file_bytes": memory::resident_file_bytes(),
        "peak_bytes": memory::peak_resident_bytes(),
        "tokenizer_loaded": tokenizer.is_some(),
        "tokenizer_measured_bytes": tokenizer_measured,
        "session_vram_allocated_bytes": session.device_memory().map(|m| m.allocated),
    });
    merge(&mut row, extra);
    drop(session);
    Ok(row)
}

/// Device memory in use on the GPU (`total - free`), `None` on the CPU.
fn cuda_used_bytes(device: Device) -> Result<Option<u64>, String> {
    let Device::Cuda(ordinal) = device else {
        return Ok(None);
    };
    let dev = gemma::kernels::cuda::CudaDevice::new(ordinal)
        .map_err(|e| format!("cuda:{ordinal}: {e}"))?;
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
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
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
pub fn measured_text(rows: &[Json]) -> String {
    let what = match rows.first().and_then(|r| r["device"].as_str()) {
        Some(d) if d.starts_with("cuda") => "device memory (VRAM in use)",
        _ => "resident memory (VmRSS)",
    };
    let mut out = format!(
        "{what} of a filled session: predicted (planner + measured baseline) vs measured\n"
    );
    let _ = writeln!(
        out,
        "{:>7} {:>5} {:>9} {:>11} {:>11} {:>8} {:>10}",
        "ctx", "kv", "baseline", "predicted", "measured", "error", "KV cache"
    );
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
    }
    out
}
