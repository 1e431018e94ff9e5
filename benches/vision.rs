//! Image encode time of the Gemma 3 vision tower at the real shapes (896x896 input,
//! 27 SigLIP layers of width 1152, MLP 4304, 16 heads; 2560-wide projection).
//!
//! `cargo bench --bench vision` (runs in the default rayon pool: all cores).
//! Environment: `GEMMA_VISION_MMPROJ` an mmproj file to time (for example one written by
//! `cargo run --release --example synth -- --size 4b --mmproj /tmp/mmproj-4b-f16.gguf`,
//! the file llama.cpp is timed on by `scripts/bench_llamacpp_vision.py`); without it a
//! random mmproj of the real shapes with F16 matrices is built in memory.
//! `GEMMA_VISION_BENCH_ITERS` timed encodes (default 3, after one warm-up),
//! `GEMMA_VISION_BENCH_LAYERS` to time fewer layers of the in-memory model (default 27;
//! the per-layer time and the FLOP rate are printed either way), `GEMMA_ISA` to force a
//! kernel level.

#[path = "../gemma-vision/tests/support/synth_mmproj.rs"]
mod synth_mmproj;

use gemma_gguf::{GgmlType, GgufFile};
use gemma_vision::image::{DynamicImage, RgbImage};
use gemma_vision::{Fit, Stage, VisionModel};
use std::time::{Duration, Instant};
use synth_mmproj::{random_values, Mmproj, Spec};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The shapes of a loaded model, for the FLOP count.
fn spec_of(model: &VisionModel) -> Spec {
    let c = model.config();
    Spec {
        image_size: c.image_size as u32,
        patch_size: c.patch_size as u32,
        hidden: c.hidden as u32,
        ffn_hidden: c.ffn_hidden as u32,
        layers: c.n_layers as u32,
        heads: c.n_heads as u32,
        text_hidden: c.text_hidden as u32,
    }
}

/// Multiply-adds x 2 of one encode: the GEMMs of every layer, attention included.
fn flops(spec: &Spec) -> f64 {
    let n = f64::from((spec.image_size / spec.patch_size).pow(2));
    let d = f64::from(spec.hidden);
    let f = f64::from(spec.ffn_hidden);
    let patch = f64::from(3 * spec.patch_size * spec.patch_size);
    let tokens = n / 16.0;
    let per_layer = 2.0 * n * d * (4.0 * d + 2.0 * f) + 2.0 * 2.0 * n * n * d;
    2.0 * n * patch * d
        + f64::from(spec.layers) * per_layer
        + 2.0 * tokens * d * f64::from(spec.text_hidden)
}

fn main() {
    let iters = env_usize("GEMMA_VISION_BENCH_ITERS", 3).max(1);
    let t = Instant::now();
    let (model, source) = match std::env::var_os("GEMMA_VISION_MMPROJ") {
        Some(path) => {
            let model = VisionModel::load(&path).expect("GEMMA_VISION_MMPROJ loads");
            (model, format!("{}", std::path::Path::new(&path).display()))
        }
        None => {
            let mut spec = Spec::gemma3_4b();
            spec.layers = env_usize("GEMMA_VISION_BENCH_LAYERS", spec.layers as usize) as u32;
            let bytes = Mmproj::random(&spec, GgmlType::F16, 20250301).to_bytes();
            let source = format!(
                "random mmproj in memory, {:.0} MB, F16 matrices",
                bytes.len() as f64 / 1e6
            );
            let gguf = GgufFile::from_bytes(bytes).expect("synthetic mmproj parses");
            (VisionModel::from_gguf(gguf).expect("loads"), source)
        }
    };
    let spec = spec_of(&model);
    println!(
        "vision bench: {source}, {} layers, ready in {:.1?}; isa {:?}, {} threads",
        spec.layers,
        t.elapsed(),
        model.isa(),
        rayon::current_num_threads()
    );

    let side = spec.image_size;
    let noise: Vec<u8> = random_values((side * side * 3) as usize, 0.5, 0.25, 7)
        .into_iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0) as u8)
        .collect();
    let image =
        DynamicImage::ImageRgb8(RgbImage::from_raw(side, side, noise).expect("buffer size"));
    let t = Instant::now();
    let pixels = model.preprocess(&image, Fit::Squash).expect("preprocess");
    println!("preprocess {side}x{side}: {:.1?}", t.elapsed());

    let mut totals = Vec::new();
    for iter in 0..=iters {
        let start = Instant::now();
        let mut last = start;
        let mut embed = Duration::ZERO;
        let mut layers = Duration::ZERO;
        model
            .encode_traced(&pixels, &mut |stage, _| {
                let now = Instant::now();
                match stage {
                    Stage::Embeddings => embed = now - last,
                    Stage::Layer(_) => layers += now - last,
                    _ => {}
                }
                last = now;
            })
            .expect("encode");
        let total = start.elapsed();
        let label = if iter == 0 { "warm-up" } else { "timed" };
        println!(
            "encode ({label}): {total:.2?} = embed {embed:.2?} + layers {layers:.2?} ({:.0} ms/layer) + post/pool/project {:.2?}",
            layers.as_secs_f64() * 1e3 / f64::from(spec.layers.max(1)),
            total.saturating_sub(embed + layers)
        );
        if iter > 0 {
            totals.push(total);
        }
    }
    totals.sort();
    let median = totals[totals.len() / 2];
    let gflop = flops(&spec) / 1e9;
    println!(
        "median encode {median:.2?} over {} runs: {gflop:.0} GFLOP -> {:.1} GFLOP/s",
        totals.len(),
        gflop / median.as_secs_f64()
    );
}
