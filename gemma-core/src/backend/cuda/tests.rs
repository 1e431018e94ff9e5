//! The CUDA engine against the CPU session and llama.cpp on the tiny T1 fixtures (all
//! 64 positions in one prefill, then one token at a time). Runs where a CUDA device is
//! present; elsewhere prints "no CUDA device: GPU tests not run". Fixtures: env
//! GEMMA_FIXTURES, else ../shared/fixtures beside the repository.

use super::CudaBackend;
use crate::engine::{Engine, EngineSizes, Runner, Want};
use crate::forward::ModelRef;
use crate::tiny_fixtures::tiny_fixtures;
use crate::{CoreError, KvType, Model, ModelOptions};
use std::path::PathBuf;

const N_VOCAB: usize = 512;

fn sequence() -> Vec<u32> {
    let path = tiny_fixtures().join("t1_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text.find("\"sequence\"").expect("sequence key") + "\"sequence\"".len();
    let open = start + text[start..].find('[').expect("[");
    let close = open + text[open..].find(']').expect("]");
    text[open + 1..close]
        .split(',')
        .map(|s| s.trim().parse().expect("token id"))
        .collect()
}

/// The CPU engine's logits for `prefix` in one prefill, then one row per token of `steps`,
/// each in its own step.
fn cpu_logits(model: &Model, prefix: &[u32], steps: &[u32]) -> Result<Vec<f32>, CoreError> {
    let mut session = model.session(256, KvType::F16)?;
    let mut rows = Vec::new();
    session.prefill_each(prefix, |_, row| rows.extend_from_slice(row))?;
    for &t in steps {
        session.prefill_each(&[t], |_, row| rows.extend_from_slice(row))?;
    }
    Ok(rows)
}

fn read_f32(path: PathBuf) -> Vec<f32> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The tiny T1 model of `variant` (the fixture `tiny-gemma3-t1-{variant}.gguf`).
fn tiny_model(variant: &str) -> Model {
    let path = tiny_fixtures().join(format!("tiny-gemma3-t1-{variant}.gguf"));
    Model::load(&path, ModelOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `model`'s configuration and weights.
fn model_ref(model: &Model) -> ModelRef<'_> {
    ModelRef {
        config: model.config(),
        weights: model.weights(),
    }
}

/// A CUDA engine of `model` with a 256-token cache of `kv_type`.
fn cuda_engine(model: &Model, kv_type: KvType) -> Engine<'_, CudaBackend<'_>> {
    let backend = CudaBackend::new(model.gguf().bytes(), 0).expect("cuda backend");
    engine_on(model, kv_type, backend)
}

/// An engine of `model` on `backend` with a 256-token cache of `kv_type`.
fn engine_on<'m>(
    model: &'m Model,
    kv_type: KvType,
    backend: CudaBackend<'m>,
) -> Engine<'m, CudaBackend<'m>> {
    let o = model.options();
    let sizes = EngineSizes {
        ctx_len: 256,
        kv_type,
        ring_margin: o.ring_margin,
        max_batch: o.max_batch,
    };
    Engine::new(backend, model_ref(model), sizes).expect("engine")
}

fn run(engine: &mut dyn Runner, tokens: &[u32]) -> Vec<f32> {
    let mut out = Vec::new();
    engine
        .run(
            tokens,
            Want::All,
            &mut |_, row: &[f32]| out.extend_from_slice(row),
            None,
        )
        .expect("run");
    out
}

/// (max abs, mean abs, top-1 agreement) of two [rows, N_VOCAB] logit arrays.
fn diff(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let (mut max, mut sum) = (0f32, 0f64);
    for (x, y) in a.iter().zip(b) {
        max = max.max((x - y).abs());
        sum += f64::from((x - y).abs());
    }
    let argmax = |r: &[f32]| {
        r.iter()
            .enumerate()
            .fold(0, |m, (i, v)| if *v > r[m] { i } else { m })
    };
    let rows = a.len() / N_VOCAB;
    let agree = (0..rows)
        .filter(|&r| {
            argmax(&a[r * N_VOCAB..(r + 1) * N_VOCAB]) == argmax(&b[r * N_VOCAB..(r + 1) * N_VOCAB])
        })
        .count();
    (
        max,
        (sum / a.len() as f64) as f32,
        agree as f32 / rows as f32,
    )
}

#[test]
fn copy_rows_moves_overlapping_rows_and_every_kv_type_allocates() {
    use crate::backend::{Backend, HeadShape, KvShape};
    let mut b = match CudaBackend::new(&[], 0) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("no CUDA device: GPU tests not run ({e})");
            return;
        }
    };
    let width = 3;
    // (from, rows): disjoint, overlapping by a lot, one row.
    for (from, rows) in [(5, 3), (2, 6), (7, 1)] {
        let host: Vec<f32> = (0..(from + rows + 1) * width).map(|i| i as f32).collect();
        let mut buf = gemma_kernels::cuda::upload(b.device(), &host).expect("upload");
        assert!(b.copy_rows(&mut buf, from, rows, width).expect("copy_rows"));
        let mut got = vec![0f32; host.len()];
        b.read(&buf, 0..host.len(), &mut got).expect("read");
        let mut want = host.clone();
        want.copy_within(from * width..(from + rows) * width, 0);
        assert_eq!(got, want, "copy_rows({from}, {rows})");
    }
    let heads = HeadShape {
        n_head: 4,
        n_head_kv: 1,
        head_dim_k: 64,
        head_dim_v: 64,
    };
    // (type, bytes of K + V for 16 slots x 64 values)
    for (kv_type, bytes) in [
        (KvType::F16, 2 * 16 * 64 * 2),
        (KvType::F32, 2 * 16 * 64 * 4),
        (KvType::Q8_0, 2 * 16 * 2 * 34),
    ] {
        let store = b
            .alloc_kv(KvShape {
                slots: 16,
                heads,
                kv_type,
            })
            .expect("every KV type on CUDA");
        assert_eq!(store.bytes(), bytes, "{}", kv_type.name());
    }
    let mem = b.device_memory().expect("device memory");
    assert!(mem.device_total > 0 && mem.device_used <= mem.device_total);
}

#[test]
fn cuda_engine_matches_cpu_engine_and_llama_cpp_on_tiny_models() {
    if let Err(e) = gemma_kernels::cuda::CudaDevice::new(0) {
        eprintln!("no CUDA device: GPU tests not run ({e})");
        return;
    }
    let seq = sequence();
    // (variant, max abs, mean abs) against llama.cpp, the bounds of tests/parity_tiny.rs.
    let variants = [
        ("f32", 0.05, 0.01),
        ("f16", 0.05, 0.01),
        ("bf16", 0.3, 0.05),
        ("q8_0", 1.5, 0.25),
        ("q4_0", 1.5, 0.25),
        ("q5_0", 1.5, 0.25),
        ("q4_k", 1.5, 0.25),
        ("q5_k", 1.5, 0.25),
        ("q6_k", 1.5, 0.25),
        ("q4_k_m", 1.5, 0.25),
        ("q4_1", 1.5, 0.25),
        ("q5_1", 1.5, 0.25),
        ("q2_k", 1.5, 0.25),
        ("q3_k_m", 1.5, 0.25),
        ("iq4_nl", 1.5, 0.25),
        ("iq4_xs", 1.5, 0.25),
    ];
    // GEMMA_TINY_VARIANTS: the subset carried to a GPU machine (scripts/gpu-prepare.sh).
    let only = std::env::var("GEMMA_TINY_VARIANTS")
        .ok()
        .filter(|s| !s.is_empty());
    let mut failures = Vec::new();
    for (v, max_bound, mean_bound) in variants {
        if only
            .as_deref()
            .is_some_and(|list| !list.split(',').any(|x| x == v))
        {
            continue;
        }
        let model = tiny_model(v);
        let mut gpu = cuda_engine(&model, KvType::F16);
        let g = run(&mut gpu, &seq);
        // The CPU engine: the whole sequence in one prefill, and its first 16 tokens in one
        // prefill then one token per step.
        let (c, cpu_steps) = match (
            cpu_logits(&model, &seq, &[]),
            cpu_logits(&model, &seq[..16], &seq[16..32]),
        ) {
            (Ok(c), Ok(steps)) => (c, steps),
            (Err(e), _) | (_, Err(e)) => {
                failures.push(format!("{v}: CPU engine: {e}"));
                continue;
            }
        };
        let reference = read_f32(tiny_fixtures().join(format!("tiny-gemma3-t1-{v}.logits.f32")));
        let (gm, ga, gt) = diff(&g, &reference);
        let (cm, ca, ct) = diff(&g, &c);
        // Decode path: the first 16 tokens in one prefill, then one token per step.
        let mut step = cuda_engine(&model, KvType::F16);
        let mut steps = run(&mut step, &seq[..16]);
        for &t in &seq[16..32] {
            steps.extend(run(&mut step, &[t]));
        }
        // Against the CPU's steps: one-token attention rounds as llama.cpp's one-chunk
        // kernel on both (a batch of 64 rows takes its tiled f32 kernel instead).
        let (sm, sa, st) = diff(&steps, &cpu_steps);
        // Last-row-only prefill (the last layer runs one row after copy_rows): the
        // same logits as the last row of the full prefill.
        let mut last_only = cuda_engine(&model, KvType::F16);
        let mut last = Vec::new();
        last_only
            .run(
                &seq,
                Want::Last,
                &mut |_, row: &[f32]| last = row.to_vec(),
                None,
            )
            .expect("run");
        let (lm, _, lt) = diff(&last, &g[g.len() - N_VOCAB..]);
        if lm > 1e-3 || lt < 1.0 {
            failures.push(format!(
                "{v}: last-row prefill differs from the full prefill: max {lm}"
            ));
        }
        eprintln!(
            "{v:7} gpu vs llama.cpp max {gm:.4} mean {ga:.4} top1 {gt:.3} | gpu vs cpu max {cm:.4} mean {ca:.4} top1 {ct:.3} \
             | steps vs cpu steps max {sm:.4} mean {sa:.5} top1 {st:.3}"
        );
        if gm > max_bound || ga > mean_bound {
            failures.push(format!(
                "{v}: vs llama.cpp max {gm} mean {ga} (bounds {max_bound} / {mean_bound})"
            ));
        }
        // F32 / F16 weights: the two engines' steps agree to rounding. BF16: the CPU
        // rounds the activations to BF16 as ggml does, the GPU keeps them f32 (the batch
        // differs by as much). Quantized weights: a last-bit difference flips 8-bit
        // activation steps downstream, so only the mean is bounded (0.026 .. 0.078 on the
        // emulated GPU).
        let exact = matches!(v, "f32" | "f16");
        let steps_mean_bound = if v == "bf16" { 0.05 } else { 0.1 };
        if (exact && (sm > 0.05 || st < 1.0)) || (!exact && sa > steps_mean_bound) {
            failures.push(format!(
                "{v}: one-token steps differ from the CPU's: max {sm}, top-1 {st}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The CUDA engine with f32 and Q8_0 KV caches against the CPU session with the same
/// cache type on the tiny f16 model: all 64 positions in one prefill, then the first 16
/// in a prefill and 16 one-token steps (decode attention over the cache type).
#[test]
fn cuda_engine_matches_cpu_engine_with_f32_and_q8_0_kv_caches() {
    if let Err(e) = gemma_kernels::cuda::CudaDevice::new(0) {
        eprintln!("no CUDA device: GPU tests not run ({e})");
        return;
    }
    let seq = sequence();
    let model = tiny_model("f16");
    let mut failures = Vec::new();
    // (cache type, max abs, mean abs). Both engines quantize K, V and the query through
    // Q8_0 identically (cuda_kv_types checks the bytes); the f32 differences upstream flip
    // Q8_0 roundings, a whole step each. A CPU-only emulation (f32-cache-sized noise on the
    // products, 10 seeds) gave Q8_0 gaps up to 0.41 / 0.057, hence these bounds.
    for (kv_type, max_bound, mean_bound) in [(KvType::F32, 0.05, 0.01), (KvType::Q8_0, 0.5, 0.065)]
    {
        let mut gpu = cuda_engine(&model, kv_type);
        let g = run(&mut gpu, &seq);
        let mut cpu = model.session(256, kv_type).expect("cpu session");
        let mut c = Vec::new();
        cpu.prefill_each(&seq, |_, row| c.extend_from_slice(row))
            .expect("cpu prefill");
        let (cm, ca, ct) = diff(&g, &c);
        let mut step = cuda_engine(&model, kv_type);
        let mut steps = run(&mut step, &seq[..16]);
        for &t in &seq[16..32] {
            steps.extend(run(&mut step, &[t]));
        }
        let (sm, sa, st) = diff(&steps, &c[..32 * N_VOCAB]);
        let name = kv_type.name();
        eprintln!(
            "kv {name:5} gpu vs cpu max {cm:.4} mean {ca:.4} top1 {ct:.3} | gpu steps vs cpu max {sm:.4} mean {sa:.5} top1 {st:.3}"
        );
        if cm > max_bound || ca > mean_bound || sm > max_bound || sa > mean_bound {
            failures.push(format!(
                "kv {name}: batch max {cm} mean {ca}, steps max {sm} mean {sa} (bounds {max_bound} / {mean_bound})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Decode steps replayed from a CUDA graph give the same logits as eager steps (the same
/// kernels on the same data: bit for bit), on a float and a quantized tiny model, through
/// the sliding-window ring (64 positions with a small window).
#[test]
fn decode_graph_replays_match_eager_steps() {
    if let Err(e) = gemma_kernels::cuda::CudaDevice::new(0) {
        eprintln!("no CUDA device: GPU tests not run ({e})");
        return;
    }
    let seq = sequence();
    for v in ["f16", "q4_k_m"] {
        let model = tiny_model(v);
        let mut logits = Vec::new();
        for graph in [false, true] {
            let mut backend = CudaBackend::new(model.gguf().bytes(), 0).expect("cuda backend");
            backend.set_decode_graph(graph).expect("graph switch");
            let mut engine = engine_on(&model, KvType::F16, backend);
            let before = super::graph::LAUNCHES.load(std::sync::atomic::Ordering::Relaxed);
            let mut out = run(&mut engine, &seq[..8]);
            for &t in &seq[8..] {
                out.extend(run(&mut engine, &[t]));
            }
            let launches =
                super::graph::LAUNCHES.load(std::sync::atomic::Ordering::Relaxed) - before;
            if graph {
                // One eager warm-up step, then every step from the graph.
                assert!(
                    launches >= seq.len() - 9,
                    "{v}: only {launches} graph launches"
                );
            }
            logits.push(out);
        }
        let (max, mean, top1) = diff(&logits[0], &logits[1]);
        eprintln!("{v:7} graph vs eager decode: max {max:.2e} mean {mean:.2e} top1 {top1:.3}");
        assert!(
            max <= 1e-6 && top1 == 1.0,
            "{v}: graph steps differ: max {max}"
        );
    }
}

/// Greedy steps picked on the device (`step_greedy`) give the ids the host picks from the
/// same steps' logits (`sampling::argmax`), with steps of both kinds mixed in one session
/// replaying one decode graph (the pick runs after it): every step after the warm-up and
/// the capture is a graph launch.
#[test]
fn greedy_steps_pick_on_the_device_what_the_host_picks_from_the_logits() {
    if let Err(e) = gemma_kernels::cuda::CudaDevice::new(0) {
        eprintln!("no CUDA device: GPU tests not run ({e})");
        return;
    }
    let seq = sequence();
    let model = tiny_model("q4_k_m");
    let host_pick = |engine: &mut dyn Runner, t: u32| crate::sampling::argmax(&run(engine, &[t]));
    let (mut mixed, mut reference) = (
        cuda_engine(&model, KvType::F16),
        cuda_engine(&model, KvType::F16),
    );
    run(&mut mixed, &seq[..8]);
    run(&mut reference, &seq[..8]);
    let before = super::graph::LAUNCHES.load(std::sync::atomic::Ordering::Relaxed);
    let steps = &seq[8..40];
    for (i, &t) in steps.iter().enumerate() {
        let want = host_pick(&mut reference, t);
        let got = if i % 3 == 2 {
            host_pick(&mut mixed, t)
        } else {
            mixed.step_greedy(t, None).expect("greedy step")
        };
        assert_eq!(got, want, "step {i} (token {t})");
    }
    let launches = super::graph::LAUNCHES.load(std::sync::atomic::Ordering::Relaxed) - before;
    // Both engines replay from their second step on; the other tests of this binary may
    // launch graphs meanwhile, so only a lower bound holds.
    assert!(
        launches >= 2 * (steps.len() - 2),
        "only {launches} graph launches"
    );
}

/// One piece of the image test's prompt: tokens of the fixture sequence, or the
/// soft-token rows of one image.
enum Piece {
    Text(std::ops::Range<usize>),
    Image(Vec<f32>),
}

/// Deterministic pseudo-random soft-token rows in about [-1, 1) (as tests/vision_lm_mask.rs).
fn image_rows(n: usize, width: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n * width)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Text, an image of 40 tokens (more than one 32-query tile of the flash kernel, five
/// times the local layers' window of 8), text, an image of 7 tokens, text: 59 positions.
fn image_prompt(n_embd: usize) -> Vec<Piece> {
    vec![
        Piece::Text(0..5),
        Piece::Image(image_rows(40, n_embd, 1)),
        Piece::Text(5..8),
        Piece::Image(image_rows(7, n_embd, 2)),
        Piece::Text(8..12),
    ]
}

/// The logits after every position of `prompt` on an engine.
fn engine_logits(engine: &mut dyn Runner, seq: &[u32], prompt: &[Piece]) -> Vec<f32> {
    let mut out = Vec::new();
    for piece in prompt {
        match piece {
            Piece::Text(range) => out.extend(run(engine, &seq[range.clone()])),
            Piece::Image(rows) => engine
                .run_image(
                    rows,
                    Want::All,
                    &mut |_, row: &[f32]| out.extend_from_slice(row),
                    None,
                )
                .expect("image run"),
        }
    }
    out
}

/// The logits after every position of `prompt` in a CPU session; `causal`: every image
/// row runs as its own one-token image (plain causal attention over the same rows).
fn cpu_image_logits(
    model: &Model,
    kv_type: KvType,
    seq: &[u32],
    prompt: &[Piece],
    causal: bool,
) -> Vec<f32> {
    let n_embd = model.config().n_embd;
    let mut session = model.session(256, kv_type).expect("cpu session");
    let mut out = Vec::new();
    for piece in prompt {
        match piece {
            Piece::Text(range) => {
                session
                    .prefill_each(&seq[range.clone()], |_, row| out.extend_from_slice(row))
                    .expect("cpu prefill");
            }
            Piece::Image(rows) => {
                let chunk = if causal { n_embd } else { rows.len() };
                for image in rows.chunks(chunk) {
                    session
                        .prefill_image_each(image, |_, row| out.extend_from_slice(row))
                        .expect("cpu image");
                }
            }
        }
    }
    out
}

/// Images on CUDA (bidirectional attention inside an image's tokens, causal elsewhere,
/// within the window of the local layers): the tiny f16 model runs text, two images of
/// random soft-token rows and text with each KV cache type (f16: the flash prefill
/// kernel; f32 and Q8_0: the row kernel), and its logits after every position match the
/// CPU session's, whose image mask tests/vision_lm_mask.rs checks against a naive
/// attention. A causal run of the same rows differs from the image run by max 15, mean
/// 2.2 (CPU, f32 cache; checked to exceed every bound), and an image run that keeps only
/// its last row (the last layer attends that row alone) gives the full run's row.
///
/// Bounds: the f32 cache's are those of the test above. The f16 cache's are looser: in
/// batches under 64 rows the CPU rounds the query and the sums of values to f16
/// (llama.cpp's one-chunk flash kernel) while the GPU widens keys and values to f32 (the
/// CPU's 64-row kernel); the CPU's own two f16 algorithms differ by max 0.043, mean 0.007
/// on this prompt (0.038 / 0.006 on the 64-token text). The Q8_0 cache's are the test
/// above's scaled by how much more Q8_0 rounding flips move this prompt's logits than the
/// text's (CPU flash vs standard attention over a Q8_0 cache: max 0.127, mean 0.018 here,
/// 0.112 / 0.014 on the text).
#[test]
fn cuda_engine_runs_images_like_the_cpu_engine() {
    if let Err(e) = gemma_kernels::cuda::CudaDevice::new(0) {
        eprintln!("NOT RUN: no CUDA device: GPU image test not run ({e})");
        return;
    }
    let seq = sequence();
    let model = tiny_model("f16");
    let n_embd = model.config().n_embd;
    let prompt = image_prompt(n_embd);
    let positions = 5 + 40 + 3 + 7 + 4;
    let causal = cpu_image_logits(&model, KvType::F32, &seq, &prompt, true);
    let mut failures = Vec::new();
    // (cache type, max abs, mean abs): see the doc comment.
    for (kv_type, max_bound, mean_bound) in [
        (KvType::F16, 0.15, 0.02),
        (KvType::F32, 0.05, 0.01),
        (KvType::Q8_0, 0.6, 0.085),
    ] {
        let name = kv_type.name();
        let mut gpu = cuda_engine(&model, kv_type);
        let g = engine_logits(&mut gpu, &seq, &prompt);
        let c = cpu_image_logits(&model, kv_type, &seq, &prompt, false);
        assert_eq!(g.len(), positions * N_VOCAB, "kv {name}: gpu logits");
        assert_eq!(c.len(), positions * N_VOCAB, "kv {name}: cpu logits");
        let (cm, ca, ct) = diff(&g, &c);
        let (xm, xa, _) = diff(&causal, &c);
        // The first image alone, keeping only its last row (position 44).
        let mut last_only = cuda_engine(&model, kv_type);
        run(&mut last_only, &seq[..5]);
        let Piece::Image(first_image) = &prompt[1] else {
            unreachable!("the prompt's second piece is an image")
        };
        let mut last = Vec::new();
        last_only
            .run_image(
                first_image,
                Want::Last,
                &mut |_, row: &[f32]| last = row.to_vec(),
                None,
            )
            .expect("image run");
        let (lm, _, lt) = diff(&last, &g[44 * N_VOCAB..45 * N_VOCAB]);
        eprintln!(
            "kv {name:5} images: gpu vs cpu max {cm:.4} mean {ca:.4} top1 {ct:.3} \
             | cpu causal vs cpu max {xm:.4} mean {xa:.4} | last-row image run max {lm:.2e}"
        );
        if cm > max_bound || ca > mean_bound {
            failures.push(format!(
                "kv {name}: images gpu vs cpu max {cm} mean {ca} (bounds {max_bound} / {mean_bound})"
            ));
        }
        if xm <= max_bound || xa <= mean_bound {
            failures.push(format!(
                "kv {name}: a causal run is within the bounds (max {xm} mean {xa}): the test cannot see the image mask"
            ));
        }
        if lm > 1e-3 || lt < 1.0 {
            failures.push(format!(
                "kv {name}: last-row image run differs from the full run: max {lm}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
