//! Samplers on hand-made logits: greedy, each filter's effect, penalties, and seeded
//! reproducibility.

use gemma_core::{GenerateError, Sampler, SamplerConfig};

/// Draws `n` tokens and counts how often each id comes out.
fn histogram(config: SamplerConfig, logits: &[f32], history: &[u32], n: usize) -> Vec<usize> {
    let mut sampler = Sampler::new(config);
    let mut counts = vec![0; logits.len()];
    for _ in 0..n {
        counts[sampler.sample(logits, history).unwrap() as usize] += 1;
    }
    counts
}

fn free(temperature: f32) -> SamplerConfig {
    SamplerConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..SamplerConfig::default()
    }
}

#[test]
fn greedy_takes_the_first_maximum() {
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    assert_eq!(sampler.sample(&[0.1, 3.0, -1.0, 3.0], &[]).unwrap(), 1);
    assert_eq!(sampler.sample(&[f32::NEG_INFINITY, -5.0], &[]).unwrap(), 1);
    assert!(matches!(
        sampler.sample(&[], &[]),
        Err(GenerateError::EmptyLogits)
    ));
}

#[test]
fn temperature_sampling_follows_the_softmax() {
    // Probabilities 0.5, 0.25, 0.25 at temperature 1.
    let logits = [2f32.ln(), 0.0, 0.0];
    let counts = histogram(free(1.0), &logits, &[], 20_000);
    let p0 = counts[0] as f64 / 20_000.0;
    assert!((p0 - 0.5).abs() < 0.02, "p0 = {p0}");
    // A low temperature sharpens it: p0 = 2^10 / (2^10 + 2) at T = 0.1.
    let counts = histogram(free(0.1), &logits, &[], 5_000);
    assert!(counts[0] > 4_950, "{counts:?}");
}

#[test]
fn top_k_keeps_only_the_k_best() {
    let logits = [1.0, 5.0, 4.0, 3.0, 2.0, 0.0];
    let config = SamplerConfig {
        top_k: 2,
        ..free(50.0)
    };
    let counts = histogram(config, &logits, &[], 4_000);
    assert_eq!(
        counts[0] + counts[3] + counts[4] + counts[5],
        0,
        "{counts:?}"
    );
    assert!(counts[1] > 1_500 && counts[2] > 1_500, "{counts:?}");
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // Probabilities 0.6, 0.3, 0.1: top-p 0.85 keeps the first two, 0.5 only the first.
    let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
    let counts = histogram(
        SamplerConfig {
            top_p: 0.85,
            ..free(1.0)
        },
        &logits,
        &[],
        5_000,
    );
    assert_eq!(counts[2], 0, "{counts:?}");
    assert!(counts[1] > 1_300, "{counts:?}");
    let counts = histogram(
        SamplerConfig {
            top_p: 0.5,
            ..free(1.0)
        },
        &logits,
        &[],
        1_000,
    );
    assert_eq!(counts[0], 1_000);
}

#[test]
fn top_p_over_a_large_vocabulary() {
    // 20 000 equally likely tokens (more than the first sorted block): top-p 0.5 keeps
    // half of them (ties broken by id).
    let logits = vec![0.0f32; 20_000];
    let counts = histogram(
        SamplerConfig {
            top_p: 0.5,
            ..free(1.0)
        },
        &logits,
        &[],
        4_000,
    );
    let above: usize = counts[10_001..].iter().sum();
    assert_eq!(above, 0);
    let below: usize = counts[..5_000].iter().sum();
    assert!((below as f64 / 4_000.0 - 0.5).abs() < 0.04, "{below}");
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    // Relative probabilities 1, 0.5, 0.2, 0.05: min-p 0.1 drops the last one.
    let logits = [0.0, 0.5f32.ln(), 0.2f32.ln(), 0.05f32.ln()];
    let counts = histogram(
        SamplerConfig {
            min_p: 0.1,
            ..free(1.0)
        },
        &logits,
        &[],
        5_000,
    );
    assert_eq!(counts[3], 0, "{counts:?}");
    assert!(counts[2] > 400, "{counts:?}");
}

#[test]
fn penalties_change_the_greedy_choice() {
    let logits = [2.0, 1.9, -1.0];
    // Repetition penalty 1.1: 2.0 / 1.1 = 1.82 < 1.9.
    let config = SamplerConfig {
        repeat_penalty: 1.1,
        ..SamplerConfig::greedy()
    };
    assert_eq!(Sampler::new(config).sample(&logits, &[0]).unwrap(), 1);
    assert_eq!(Sampler::new(config).sample(&logits, &[2, 2]).unwrap(), 0);
    // Outside the window the penalty does not apply.
    let config = SamplerConfig {
        repeat_penalty: 1.1,
        penalty_last_n: 1,
        ..SamplerConfig::greedy()
    };
    assert_eq!(Sampler::new(config).sample(&logits, &[0, 2]).unwrap(), 0);
    // Presence: -0.2 once; frequency: -0.06 per occurrence (two occurrences: -0.12 > -0.1).
    let config = SamplerConfig {
        presence_penalty: 0.2,
        ..SamplerConfig::greedy()
    };
    assert_eq!(Sampler::new(config).sample(&logits, &[0]).unwrap(), 1);
    let config = SamplerConfig {
        frequency_penalty: 0.06,
        ..SamplerConfig::greedy()
    };
    assert_eq!(Sampler::new(config).sample(&logits, &[0]).unwrap(), 0);
    assert_eq!(Sampler::new(config).sample(&logits, &[0, 0]).unwrap(), 1);
    // A negative logit is multiplied: -1.0 * 2 = -2.0.
    let logits = [-1.0, -1.5];
    let config = SamplerConfig {
        repeat_penalty: 2.0,
        ..SamplerConfig::greedy()
    };
    assert_eq!(Sampler::new(config).sample(&logits, &[0]).unwrap(), 1);
}

#[test]
fn a_seed_reproduces_the_draws_and_another_seed_differs() {
    let logits: Vec<f32> = (0..1000)
        .map(|i| ((i * 7919) % 1000) as f32 / 200.0)
        .collect();
    let config = SamplerConfig {
        seed: 42,
        ..SamplerConfig::default()
    };
    let draw = |config: SamplerConfig| {
        let mut sampler = Sampler::new(config);
        (0..200)
            .map(|_| sampler.sample(&logits, &[]).unwrap())
            .collect::<Vec<_>>()
    };
    let first = draw(config);
    assert_eq!(first, draw(config));
    assert_ne!(first, draw(SamplerConfig { seed: 43, ..config }));
    let mut sampler = Sampler::new(config);
    sampler.sample(&logits, &[]).unwrap();
    sampler.reseed(42);
    assert_eq!(sampler.sample(&logits, &[]).unwrap(), first[0]);
}
