//! Device memory of CUDA sessions against the plan. Runs where a CUDA device is present
//! and prints "no CUDA device: GPU test not run" elsewhere. The model: env
//! `GEMMA_MEM_CUDA_MODEL` (a synth 1B on the GPU machine), else the tiny Q8_0 fixture;
//! contexts: env `GEMMA_MEM_CUDA_CTX` (comma-separated), else 4096 and 32768 (at most the
//! model's). The session runs through the engine with the CUDA backend (what a CUDA
//! `Session` will hold): a full batch with logits at every position, then a decode step.

use super::{plan, ModelShape, PlanOptions};
use crate::backend::cuda::CudaBackend;
use crate::engine::{Engine, EngineSizes, Runner, Want};
use crate::forward::ModelRef;
use crate::{Device, KvType, Model, ModelOptions};
use std::path::PathBuf;

fn model_path() -> PathBuf {
    std::env::var_os("GEMMA_MEM_CUDA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let fixtures = std::env::var_os("GEMMA_FIXTURES")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../shared/fixtures"
                    ))
                });
            fixtures.join("tiny/tiny-gemma3-t1-q8_0.gguf")
        })
}

#[test]
fn cuda_session_memory_matches_the_plan() {
    let probe = match gemma_kernels::cuda::CudaDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no CUDA device: GPU test not run ({e})");
            return;
        }
    };
    let path = model_path();
    let model = Model::load(&path, ModelOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = ModelShape::from_gguf(model.gguf()).expect("shape");
    let max_ctx = model.config().context_length;
    let contexts: Vec<usize> = std::env::var("GEMMA_MEM_CUDA_CTX")
        .unwrap_or_else(|_| "4096,32768".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(|c: usize| c.min(max_ctx))
        .collect();
    let m = ModelRef {
        config: model.config(),
        weights: model.weights(),
    };
    let n_vocab = model.config().n_vocab as u64;
    let mut failures = Vec::new();
    for ctx in contexts {
        probe.synchronize().expect("sync");
        let (free_before, total) = probe.mem_info().expect("mem info");
        let options = PlanOptions {
            device: Device::Cuda(0),
            ..PlanOptions::for_model(model.options(), ctx, KvType::F16)
        };
        let p = plan(&shape, &options, None).expect("plan");
        let sizes = EngineSizes {
            ctx_len: ctx,
            kv_type: KvType::F16,
            ring_margin: options.ring_margin,
            max_batch: options.max_batch,
        };
        let backend = CudaBackend::new(model.gguf().bytes(), 0).expect("cuda backend");
        let mut engine = Engine::new(backend, m, sizes).expect("engine");
        let n = options.max_batch.min(ctx - 1) as u64;
        let tokens: Vec<u32> = (0..n)
            .map(|i| (2 + i * 7919 % (n_vocab - 2)) as u32)
            .collect();
        engine
            .run(&tokens, Want::All, &mut |_, _| {}, None)
            .expect("prefill");
        engine
            .run(&[5], Want::Last, &mut |_, _| {}, None)
            .expect("decode step");
        probe.synchronize().expect("sync");
        let (free_after, _) = probe.mem_info().expect("mem info");
        let used = (free_before - free_after) as u64;
        let predicted = p.total_bytes() - p.runtime_bytes;
        let error = (predicted as f64 - used as f64) / used as f64 * 100.0;
        eprintln!(
            "{} ctx {ctx}: in use before {:.1} MiB of {:.1} GiB; session predicted {:.1} MiB (weights {:.1}, KV {:.1}, buffers {:.1}), measured {:.1} MiB ({error:+.2}%)",
            path.display(),
            (total - free_before) as f64 / 1048576.0,
            total as f64 / 1073741824.0,
            predicted as f64 / 1048576.0,
            p.weights_bytes as f64 / 1048576.0,
            p.kv_bytes() as f64 / 1048576.0,
            p.scratch_bytes as f64 / 1048576.0,
            used as f64 / 1048576.0,
        );
        // 3%, or a few MiB for tiny sessions (allocations are rounded to the pool's pages).
        if error.abs() > 3.0 && used.abs_diff(predicted) > 8 << 20 {
            failures.push(format!("ctx {ctx}: {error:+.2}%"));
        }
        drop(engine);
    }
    assert!(
        failures.is_empty(),
        "device memory off the plan: {failures:?}"
    );
}
