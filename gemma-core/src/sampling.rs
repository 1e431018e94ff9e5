//! Choosing the next token from logits: greedy, or temperature sampling after
//! repetition/presence/frequency penalties and top-k, top-p and min-p filters (applied in
//! llama.cpp's default order: penalties, top-k, top-p, min-p, temperature), with a seeded
//! generator so that a run can be reproduced exactly.
//!
//! A [`Sampler`] owns one vocabulary-sized scratch buffer, allocated on first use and
//! reused for every token: sampling allocates nothing per token.

use crate::generate::GenerateError;

/// Sampling parameters. [`SamplerConfig::default`] is Gemma's recommended setting
/// (temperature 1, top-k 64, top-p 0.95); [`SamplerConfig::greedy`] always picks the
/// most likely token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; `<= 0` means greedy (argmax after the penalties).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this; 1 disables.
    pub repeat_penalty: f32,
    /// Subtract this from the logit of every token seen recently; 0 disables.
    pub presence_penalty: f32,
    /// Subtract this times the number of recent occurrences; 0 disables.
    pub frequency_penalty: f32,
    /// How many of the most recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 64,
            top_p: 0.95,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0x5EED,
        }
    }
}

impl SamplerConfig {
    /// Always the most likely token, no penalties.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            ..Self::default()
        }
    }

    /// Whether the choice is the highest logit as it is ([`argmax`]): greedy, no penalties.
    pub fn is_plain_greedy(&self) -> bool {
        self.temperature <= 0.0 && !self.has_penalties()
    }

    fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// A token id with its (adjusted) logit.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
}

/// Picks tokens from logits according to a [`SamplerConfig`].
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    candidates: Vec<Candidate>,
    recent: Vec<u32>,
}

impl Sampler {
    /// A sampler whose generator starts from `config.seed`.
    pub fn new(config: SamplerConfig) -> Self {
        Self {
            config,
            rng: Rng::new(config.seed),
            candidates: Vec::new(),
            recent: Vec::new(),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Restarts the random generator from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.config.seed = seed;
        self.rng = Rng::new(seed);
    }

    /// Chooses the next token. `history` is the sequence so far (prompt and generated
    /// tokens); the penalties look at its last `penalty_last_n` tokens.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, GenerateError> {
        if logits.is_empty() {
            return Err(GenerateError::EmptyLogits);
        }
        let config = self.config;
        if config.is_plain_greedy() {
            return Ok(argmax(logits));
        }
        // Without penalties, top-k needs only the logits from the k-th highest up.
        let keep = if config.temperature > 0.0 && !config.has_penalties() && config.top_k > 0 {
            config.top_k
        } else {
            logits.len()
        };
        candidates_from_kth(logits, keep, &mut self.candidates);
        if config.has_penalties() {
            self.apply_penalties(history);
        }
        if config.temperature <= 0.0 {
            return Ok(argmax_of(self.candidates.iter().map(|c| (c.id, c.logit))));
        }
        if config.top_k > 0 {
            top_k(&mut self.candidates, config.top_k);
        }
        if config.top_p < 1.0 {
            top_p(&mut self.candidates, config.top_p);
        }
        if config.min_p > 0.0 {
            min_p(&mut self.candidates, config.min_p);
        }
        Ok(self.draw(config.temperature))
    }

    /// llama.cpp's penalties: `logit / r` (positive) or `logit * r` (negative), then
    /// `- count * frequency - presence` for every token among the recent ones.
    fn apply_penalties(&mut self, history: &[u32]) {
        let config = self.config;
        let window = &history[history.len().saturating_sub(config.penalty_last_n)..];
        self.recent.clear();
        self.recent.extend_from_slice(window);
        self.recent.sort_unstable();
        for run in self.recent.chunk_by(|a, b| a == b) {
            let Some(candidate) = self.candidates.get_mut(run[0] as usize) else {
                continue;
            };
            let logit = &mut candidate.logit;
            if *logit <= 0.0 {
                *logit *= config.repeat_penalty;
            } else {
                *logit /= config.repeat_penalty;
            }
            *logit -= run.len() as f32 * config.frequency_penalty + config.presence_penalty;
        }
    }

    /// Softmax of the remaining candidates at `temperature`, then one draw.
    fn draw(&mut self, temperature: f32) -> u32 {
        let candidates = &self.candidates;
        let max = candidates
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        let weight = |c: &Candidate| (((c.logit - max) / temperature) as f64).exp();
        let total: f64 = candidates.iter().map(weight).sum();
        let mut threshold = self.rng.next_f64() * total;
        for candidate in candidates {
            threshold -= weight(candidate);
            if threshold < 0.0 {
                return candidate.id;
            }
        }
        // Rounding left a sliver: the last candidate (every filter keeps at least one).
        candidates.last().map_or(0, |c| c.id)
    }
}

/// The index of the highest logit: the first one on ties, 0 when no logit is above -inf
/// (NaN never wins). Sixteen running maxima (vectorized), then a search for the first index
/// holding the maximum: a scan carrying the best so far is one dependent chain, 150-250 us
/// over a 262144-token vocabulary, as long as a GPU's whole decode step of the 270M.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let best = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if best == f32::NEG_INFINITY {
        return 0;
    }
    logits.iter().position(|&v| v == best).unwrap_or(0) as u32
}

/// The id with the highest logit (the first one on ties).
fn argmax_of(items: impl Iterator<Item = (u32, f32)>) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (id, logit) in items {
        if logit > best.1 {
            best = (id, logit);
        }
    }
    best.0
}

/// Descending by logit, then ascending by id (a total, deterministic order).
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Keeps the `k` highest logits, sorted descending (linear selection, then a sort of `k`).
fn top_k(candidates: &mut Vec<Candidate>, k: usize) {
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, by_logit_desc);
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(by_logit_desc);
}

/// Makes `out` the candidates that can be among the `k` highest of `logits` (`k >= 1`):
/// those from the `k`-th highest up, ties included (all of them when `k >= len`), so that
/// [`top_k`] selects among a few instead of the whole vocabulary.
fn candidates_from_kth(logits: &[f32], k: usize, out: &mut Vec<Candidate>) {
    let floor = (k < logits.len()).then(|| kth_highest(logits, k));
    out.clear();
    out.extend(
        logits
            .iter()
            .enumerate()
            .filter(|(_, logit)| floor.is_none_or(|f| logit.total_cmp(&f).is_ge()))
            .map(|(id, &logit)| Candidate {
                id: id as u32,
                logit,
            }),
    );
}

/// The `k`-th highest of `logits` (`1 <= k <= logits.len()`; `f32::total_cmp`'s order),
/// found with `k` of them kept at a time. Most logits lose to the lowest kept: runs of 16
/// that are all below it (a NaN is not) are passed over with one vector comparison.
fn kth_highest(logits: &[f32], k: usize) -> f32 {
    let (first, rest) = logits.split_at(k);
    let mut kept = first.to_vec();
    let mut lowest = index_of_lowest(&kept);
    for run in rest.chunks(16) {
        let floor = kept[lowest];
        if run.iter().fold(true, |below, &x| below & (x < floor)) {
            continue;
        }
        for &logit in run {
            if logit.total_cmp(&kept[lowest]).is_gt() {
                kept[lowest] = logit;
                lowest = index_of_lowest(&kept);
            }
        }
    }
    kept[lowest]
}

/// Where the lowest of `values` is (`f32::total_cmp`'s order).
fn index_of_lowest(values: &[f32]) -> usize {
    (0..values.len())
        .min_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0)
}

/// Keeps the most likely candidates until their probability reaches `p` (at least one).
/// Sorts only as many as needed: the top 256, then 4x more while the mass is short.
fn top_p(candidates: &mut Vec<Candidate>, p: f32) {
    let max = candidates
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let weight = |c: &Candidate| ((c.logit - max) as f64).exp();
    let total: f64 = candidates.iter().map(weight).sum();
    let target = p.max(0.0) as f64 * total;
    let len = candidates.len();
    let mut mass = 0.0;
    // `candidates[..sorted]` are the `sorted` most likely, in order; the rest are below them.
    let mut sorted = 0;
    while sorted < len {
        let head = if sorted == 0 { 256 } else { sorted * 4 }.min(len);
        if head < len {
            candidates[sorted..].select_nth_unstable_by(head - sorted - 1, by_logit_desc);
        }
        candidates[sorted..head].sort_unstable_by(by_logit_desc);
        for i in sorted..head {
            mass += weight(&candidates[i]);
            if mass >= target {
                candidates.truncate(i + 1);
                return;
            }
        }
        sorted = head;
    }
}

/// Keeps candidates whose probability is at least `p` times the highest one's.
fn min_p(candidates: &mut Vec<Candidate>, p: f32) {
    let max = candidates
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let threshold = max + p.min(1.0).ln();
    candidates.retain(|c| c.logit >= threshold);
}

/// xoshiro256** seeded through SplitMix64: small, fast and the same on every platform.
#[derive(Debug, Clone)]
struct Rng {
    state: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            state: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_the_reference_sequence() {
        // Reference: xoshiro256** with state [1, 2, 3, 4] (Blackman & Vigna's C code).
        let mut rng = Rng {
            state: [1, 2, 3, 4],
        };
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(got, vec![11520, 0, 1509978240]);
    }

    #[test]
    fn argmax_is_the_first_highest_logit_as_a_plain_scan_finds_it() {
        let scan = |x: &[f32]| argmax_of(x.iter().copied().enumerate().map(|(i, l)| (i as u32, l)));
        let mut rng = Rng::new(5);
        // Lengths around the 16 lanes, a vocabulary; few distinct values (ties), NaN, +-inf.
        for len in [1, 2, 15, 16, 17, 33, 1000, 262_144] {
            for case in 0..6 {
                let x: Vec<f32> = (0..len)
                    .map(|_| match (rng.next_u64() % 40, case) {
                        (0, 1) => f32::NAN,
                        (1, 2) => f32::INFINITY,
                        (2, 3) => f32::NEG_INFINITY,
                        (_, 4) => f32::NEG_INFINITY,
                        (_, 5) => f32::NAN,
                        (v, _) => (v % 7) as f32 - 3.0,
                    })
                    .collect();
                assert_eq!(argmax(&x), scan(&x), "len {len}, case {case}");
            }
        }
        assert_eq!(argmax(&[f32::NAN, 2.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn top_k_of_the_candidates_from_the_kth_equals_a_full_sort() {
        // Logits drawn from a few values (many ties, broken by id), with infinities.
        let mut rng = Rng::new(9);
        for (n, k) in [
            (1, 1),
            (5, 1),
            (5, 5),
            (100, 7),
            (1000, 64),
            (4096, 1),
            (4096, 4095),
        ] {
            let logits: Vec<f32> = (0..n)
                .map(|_| match rng.next_u64() % 9 {
                    0 => f32::NEG_INFINITY,
                    1 => f32::INFINITY,
                    r => r as f32 * 0.5 - 2.0,
                })
                .collect();
            let mut want = Vec::new();
            candidates_from_kth(&logits, n, &mut want);
            want.sort_unstable_by(by_logit_desc);
            want.truncate(k);
            let mut got = Vec::new();
            candidates_from_kth(&logits, k, &mut got);
            top_k(&mut got, k);
            let ids = |c: &[Candidate]| c.iter().map(|c| c.id).collect::<Vec<_>>();
            assert_eq!(ids(&got), ids(&want), "n={n} k={k}");
        }
    }
}
