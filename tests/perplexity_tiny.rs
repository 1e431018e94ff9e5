//! The perplexity example on the tiny fixtures: its statistics against an independent
//! computation on llama.cpp's logits, and end to end — F32 base saved, each quantized
//! variant compared with it — against the same numbers computed from the fixture logits
//! of llama.cpp, within the engine-vs-llama.cpp noise.

#[allow(dead_code)]
#[path = "../examples/perplexity.rs"]
mod perplexity;

use clap::Parser;
use perplexity::{Args, Report};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

const N_VOCAB: usize = 512;
const N_POS: usize = 64;
/// The fixed sequence is scored as one chunk of 64: positions 32..=62 predict 33..=63.
const FIRST: usize = N_POS / 2;

const VARIANTS: [&str; 15] = [
    "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m", "q4_k", "q5_k",
    "q6_k", "iq4_nl", "iq4_xs", "q4_k_m",
];

fn tiny() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/tiny"
    ));
    assert!(
        dir.is_dir(),
        "test fixtures missing: expected {}",
        dir.display()
    );
    dir
}

fn sequence() -> Vec<u32> {
    let text = std::fs::read_to_string(tiny().join("t1_reference.json")).unwrap();
    let json: Json = serde_json::from_str(&text).unwrap();
    json["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

/// llama.cpp's logits of a variant for the fixed sequence, `[64][512]`.
fn fixture_logits(variant: &str) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(tiny().join(format!("tiny-gemma3-t1-{variant}.logits.f32"))).unwrap();
    assert_eq!(bytes.len(), N_POS * N_VOCAB * 4);
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    values.chunks_exact(N_VOCAB).map(<[f32]>::to_vec).collect()
}

/// The metrics written out plainly (probabilities, not log-softmax), in f64.
struct Reference {
    ppl: f64,
    base_ppl: f64,
    kld: f64,
    same_top: f64,
    dp: f64,
}

fn probabilities(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

fn top(p: &[f64]) -> usize {
    (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()
}

fn reference(base: &[Vec<f32>], model: &[Vec<f32>], seq: &[u32]) -> Reference {
    let (mut nll, mut base_nll, mut kld, mut same, mut dp) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let positions = FIRST..N_POS - 1;
    let n = positions.len() as f64;
    for pos in positions {
        let (pm, pb) = (probabilities(&model[pos]), probabilities(&base[pos]));
        let t = seq[pos + 1] as usize;
        nll -= pm[t].ln();
        base_nll -= pb[t].ln();
        kld += pb
            .iter()
            .zip(&pm)
            .map(|(b, m)| if *b > 0.0 { b * (b / m).ln() } else { 0.0 })
            .sum::<f64>();
        same += f64::from(u8::from(top(&pm) == top(&pb)));
        dp += pm[t] - pb[t];
    }
    Reference {
        ppl: (nll / n).exp(),
        base_ppl: (base_nll / n).exp(),
        kld: kld / n,
        same_top: same / n,
        dp: dp / n,
    }
}

fn report_json(r: &Report) -> (Json, impl Fn(&str) -> f64 + '_) {
    let j = r.json();
    let j2 = j.clone();
    (j, move |k: &str| {
        j2[k].as_f64().unwrap_or_else(|| panic!("missing {k}"))
    })
}

#[test]
fn statistics_match_an_independent_computation_on_llama_cpp_logits() {
    let seq = sequence();
    let base = fixture_logits("f32");
    for variant in VARIANTS {
        let model = fixture_logits(variant);
        let scores = (FIRST..N_POS - 1)
            .map(|p| perplexity::score(&model[p], seq[p + 1], Some(&base[p])))
            .collect();
        let report = Report {
            ctx: N_POS,
            chunks: 1,
            scores,
            with_base: true,
        };
        let (_, get) = report_json(&report);
        let want = reference(&base, &model, &seq);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
        assert!(
            close(get("ppl"), want.ppl),
            "{variant} ppl {} vs {}",
            get("ppl"),
            want.ppl
        );
        assert!(close(get("base_ppl"), want.base_ppl), "{variant} base ppl");
        assert!(
            close(get("kld_mean"), want.kld),
            "{variant} kld {} vs {}",
            get("kld_mean"),
            want.kld
        );
        assert!(
            close(get("same_top_p"), want.same_top),
            "{variant} same top"
        );
        assert!(close(get("dp_mean"), want.dp), "{variant} dp");
        assert!(
            close(get("ln_ppl_ratio"), (want.ppl / want.base_ppl).ln()),
            "{variant} ln ratio"
        );
        assert!(get("kld_min") <= get("kld_median") && get("kld_median") <= get("kld_max"));
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("perplexity-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn args(model: &Path, tokens: &Path, extra: &[&str]) -> Args {
    let mut argv = vec![
        "perplexity",
        "--model",
        model.to_str().unwrap(),
        "--tokens-file",
        tokens.to_str().unwrap(),
        "--threads",
        "2",
        // As the fixtures' llama.cpp runs.
        "--flash-attn",
        "off",
    ];
    argv.extend_from_slice(extra);
    Args::parse_from(argv)
}

#[test]
fn quantized_variants_against_the_f32_base_agree_with_llama_cpp_numbers() {
    let seq = sequence();
    let dir = temp_dir();
    let tokens = dir.join("t1.tokens");
    std::fs::write(&tokens, format!("{seq:?}")).unwrap();
    let base_path = dir.join("f32-base");
    let model = |v: &str| tiny().join(format!("tiny-gemma3-t1-{v}.gguf"));

    let base_report = perplexity::run(&args(
        &model("f32"),
        &tokens,
        &["--ctx", "64", "--save-logits", base_path.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(
        (base_report.chunks, base_report.scores.len()),
        (1, N_POS - 1 - FIRST)
    );
    let base_fixture = fixture_logits("f32");
    let f32_ref = reference(&base_fixture, &base_fixture, &seq);
    let (ppl, _) = base_report.ppl();
    assert!(
        (ppl / f32_ref.ppl).ln().abs() < 0.005,
        "F32 PPL {ppl} vs llama.cpp {}",
        f32_ref.ppl
    );

    for variant in VARIANTS {
        let report = perplexity::run(&args(
            &model(variant),
            &tokens,
            &["--ctx", "64", "--kl-base", base_path.to_str().unwrap()],
        ))
        .unwrap();
        let (_, get) = report_json(&report);
        let want = reference(&base_fixture, &fixture_logits(variant), &seq);
        println!(
            "{variant:>7}: PPL {:.1} (llama.cpp {:.1})  KLD {:.5} ({:.5})  same top {:.3} ({:.3})  mean dp {:+.5} ({:+.5})",
            get("ppl"), want.ppl, get("kld_mean"), want.kld, get("same_top_p"), want.same_top, get("dp_mean"), want.dp
        );
        // Our logits differ from llama.cpp's by the activation-quantization noise (mean abs
        // 0.03-0.1 on these models), in the base and in the variant: a few percent of PPL
        // and of KL, a few of the 31 top-1 comparisons, a fraction of a percent of p.
        assert!(
            (get("ppl") / want.ppl).ln().abs() < 0.04,
            "{variant}: PPL {} vs {}",
            get("ppl"),
            want.ppl
        );
        assert!(
            (get("base_ppl") / want.base_ppl).ln().abs() < 0.005,
            "{variant}: base PPL"
        );
        assert!(
            (get("kld_mean") - want.kld).abs() <= 0.04 * want.kld + 0.002,
            "{variant}: KLD {} vs {}",
            get("kld_mean"),
            want.kld
        );
        assert!(
            (get("same_top_p") - want.same_top).abs() <= 3.5 / 31.0,
            "{variant}: same top {} vs {}",
            get("same_top_p"),
            want.same_top
        );
        assert!(
            (get("dp_mean") - want.dp).abs() <= 1e-3,
            "{variant}: mean dp {} vs {}",
            get("dp_mean"),
            want.dp
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chunks_score_their_second_half() {
    let seq = sequence();
    let dir = temp_dir().join("chunks");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("t1.tokens");
    std::fs::write(
        &tokens,
        seq.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
    )
    .unwrap();
    let model = tiny().join("tiny-gemma3-t1-f32.gguf");
    // 64 tokens in chunks of 16: 4 chunks, positions 8..=14 of each predict 9..=15.
    let report = perplexity::run(&args(&model, &tokens, &["--ctx", "16"])).unwrap();
    assert_eq!((report.chunks, report.scores.len()), (4, 28));
    // The first chunk is the sequence's own prefix (it starts with BOS): its scores are
    // those of llama.cpp's logits at positions 8..=14.
    let llama = fixture_logits("f32");
    for (i, s) in report.scores[..7].iter().enumerate() {
        let pos = 8 + i;
        let want = perplexity::score(&llama[pos], seq[pos + 1], None).nll;
        assert!(
            (s.nll - want).abs() < 0.02,
            "position {pos}: nll {} vs {want}",
            s.nll
        );
    }
    let one = perplexity::run(&args(
        &model,
        &tokens,
        &["--ctx", "16", "--max-chunks", "1"],
    ))
    .unwrap();
    assert_eq!(one.scores, report.scores[..7]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mismatched_or_short_inputs_are_errors() {
    let seq = sequence();
    let dir = temp_dir().join("errors");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("t1.tokens");
    std::fs::write(&tokens, format!("{seq:?}")).unwrap();
    let model = tiny().join("tiny-gemma3-t1-q8_0.gguf");
    let base = dir.join("base");
    perplexity::run(&args(
        &model,
        &tokens,
        &["--ctx", "32", "--save-logits", base.to_str().unwrap()],
    ))
    .unwrap();
    let other_ctx = perplexity::run(&args(
        &model,
        &tokens,
        &["--ctx", "16", "--kl-base", base.to_str().unwrap()],
    ));
    assert!(other_ctx.unwrap_err().contains("ctx"));
    let too_long = perplexity::run(&args(&model, &tokens, &["--ctx", "128"]));
    assert!(too_long.unwrap_err().contains("need at least"));
    std::fs::write(&tokens, "2, 5, x").unwrap();
    assert!(perplexity::run(&args(&model, &tokens, &["--ctx", "4"]))
        .unwrap_err()
        .contains("not a token id"));
    let same = perplexity::run(&args(&model, &dir.join("missing"), &["--ctx", "4"]));
    assert!(same.is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--device cuda` scores the F16 model as the CPU does (mean KL to the CPU's logits under
/// 1e-3, the same PPL within 0.5%), or fails with one line naming CUDA where there is no GPU.
#[test]
fn cuda_device_scores_like_the_cpu_or_says_why_not() {
    let seq = sequence();
    let dir = temp_dir();
    let tokens = dir.join("t1-cuda.tokens");
    std::fs::write(&tokens, format!("{seq:?}")).unwrap();
    let base = dir.join("f16-cpu");
    let model = tiny().join("tiny-gemma3-t1-f16.gguf");
    let cpu = perplexity::run(&args(
        &model,
        &tokens,
        &["--ctx", "64", "--save-logits", base.to_str().unwrap()],
    ))
    .unwrap();
    let extra = [
        "--ctx",
        "64",
        "--device",
        "cuda",
        "--kl-base",
        base.to_str().unwrap(),
    ];
    let gpu = match perplexity::run(&args(&model, &tokens, &extra)) {
        Ok(report) => report,
        Err(message) => {
            assert!(
                message.to_lowercase().contains("cuda") && !message.contains('\n'),
                "no one-line CUDA reason: {message}"
            );
            eprintln!("NOT RUN on a GPU (perplexity --device cuda): {message}");
            return;
        }
    };
    let mean_kl = gpu.scores.iter().map(|s| s.kld).sum::<f64>() / gpu.scores.len() as f64;
    let (cpu_ppl, gpu_ppl) = (cpu.ppl().0, gpu.ppl().0);
    eprintln!("perplexity --device cuda: mean KL to the CPU {mean_kl:.3e}, PPL {gpu_ppl:.4} vs {cpu_ppl:.4}");
    assert!(mean_kl < 1e-3, "mean KL {mean_kl}");
    assert!(
        (gpu_ppl / cpu_ppl).ln().abs() < 0.005,
        "PPL {gpu_ppl} vs {cpu_ppl}"
    );
}
