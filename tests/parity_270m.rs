//! The real Gemma 3 270M Q4_K_M model against llama.cpp (`../shared/fixtures/gemma3-270m`).
//! For every reference prompt, fed as llama.cpp's token ids in one prefill:
//! - the same top-1 at every position where llama.cpp's top-1/top-2 margin is > 1.0
//!   (and at >= 97% of those with a margin > 0.5);
//! - the reference's top-20 recovered (each of its top-10 in our top-20, and at least
//!   15 of its 20 in our top-20 at every position);
//! - the last position's full logits close (max abs, mean abs, KL(llama.cpp || ours));
//! - the greedy continuation, teacher-forced (llama.cpp's 32 ids fed back one token at
//!   a time, as it did): the same top-1 wherever its margin is > 1.0, its top-5 in our
//!   top-10;
//! - free-running greedy (after truncating the session back to the prompt): the same ids
//!   as llama.cpp's 32 (`long_context`: 673 tokens, longer than the 512-token window)
//!   until, if ever, a step where llama.cpp's own top-1/top-2 margin is below 0.5 and we
//!   pick its second best (what follows depends on rounding, see below).
//!
//! The files were made with llama.cpp's default flash attention, whose rounding the
//! engine reproduces by default (`ModelOptions::flash_attention`). This model amplifies
//! rounding differences (activations with huge outliers): llama.cpp run here with flash
//! attention off differs from these files by up to 3.6 max abs and 1.28 mean, and its
//! greedy continuation leaves theirs on 3 of the 8 prompts (code_python at the first
//! step); with flash attention on, llama.cpp run here equals them on 7 of 8 (it leaves
//! long_context's at step 8). Our top-1/top-2 margins differ from llama.cpp's by about 0.1
//! on average at the teacher-forced steps (up to 1.3), whatever the order in which the
//! one-token kernels sum; changing that order alone (the Q4_0/Q5_0 kernels taking four
//! blocks per step instead of two) moved where `english`, `numbers` and `long_context`
//! leave llama.cpp's path, each at a step with a margin below 0.5. Run with
//! `--nocapture` to see the numbers.

mod parity_support;

use gemma_core::{KvType, Model, ModelOptions, Session};
use parity_support::{argmax, fixtures, ids, read_f32, read_json, real_model};
use serde_json::Value;

/// Margin above which llama.cpp's top-1 must be ours too.
const CLEAR_MARGIN: f32 = 1.0;
/// Margin above which at least [`MIN_AGREEMENT`] of the top-1 must agree.
const LIKELY_MARGIN: f32 = 0.5;
const MIN_AGREEMENT: f64 = 0.97;
/// Last-position bounds (llama.cpp's own settings differ by up to 3.6 max, 1.4 RMS).
const MAX_ABS: f32 = 3.0;
const MEAN_ABS: f64 = 0.5;
const MAX_KL: f64 = 0.05;

/// The `k` largest ids of `row` (ties: smaller id), best first.
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.select_nth_unstable_by(k, |&a, &b| {
        row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    idx
}

/// KL(p || q) of the softmaxes of two logit rows.
fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_softmax = |x: &[f32]| {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        x.iter().map(move |&v| v as f64 - lse).collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(&a, &b)| a.exp() * (a - b)).sum()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array of floats")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

/// Top-1 agreement counts.
#[derive(Default)]
struct Agreement {
    clear: usize,
    likely: usize,
    likely_equal: usize,
    min_overlap: usize,
}

impl Agreement {
    /// Checks one row of our logits against llama.cpp's best ids and logits there.
    fn check(
        &mut self,
        what: &str,
        row: &[f32],
        ref_ids: &[u32],
        ref_logits: &[f32],
        failures: &mut Vec<String>,
    ) {
        let k = ref_ids.len();
        let ours = top_k(row, 2 * k);
        let margin = ref_logits[0] - ref_logits[1];
        if margin > LIKELY_MARGIN {
            self.likely += 1;
            self.likely_equal += usize::from(ours[0] == ref_ids[0]);
        }
        if margin > CLEAR_MARGIN {
            self.clear += 1;
            if ours[0] != ref_ids[0] {
                failures.push(format!(
                    "{what}: top-1 {} != llama.cpp {} (margin {margin:.3})",
                    ours[0], ref_ids[0]
                ));
            }
        }
        let half = &ours[..k];
        let overlap = ref_ids.iter().filter(|id| half.contains(id)).count();
        self.min_overlap = self.min_overlap.min(overlap);
        let top_half_missing = ref_ids[..k / 2].iter().any(|id| !ours.contains(id));
        if top_half_missing || (k == 20 && overlap < 15) {
            failures.push(format!("{what}: llama.cpp's top-{k} overlap {overlap}/{k}, its top-{} all in our top-{}: {}", k / 2, 2 * k, !top_half_missing));
        }
    }

    fn rate(&self) -> f64 {
        if self.likely == 0 {
            1.0
        } else {
            self.likely_equal as f64 / self.likely as f64
        }
    }
}

/// Greedy ids from `first` (the current logits of `session`) while they equal `want`:
/// the length of the common prefix.
/// Runs greedy decoding from `first` (the prompt's last logits) while it picks `want`'s
/// ids: how many it picked, and the id it picked instead of the next one, if any.
fn free_greedy(session: &mut Session<'_>, first: &[f32], want: &[u32]) -> (usize, Option<u32>) {
    let mut next = argmax(first) as u32;
    let mut same = 0;
    while same < want.len() && next == want[same] {
        same += 1;
        if same < want.len() {
            next = argmax(session.step(next).expect("step")) as u32;
        }
    }
    (same, (same < want.len()).then_some(next))
}

#[test]
fn gemma3_270m_matches_llama_cpp() {
    let dir = fixtures().join("gemma3-270m");
    let index = read_json(&dir.join("index.json"));
    let options = ModelOptions {
        threads: 2,
        ..ModelOptions::default()
    };
    let model = Model::load(real_model(), options).expect("loading the 270M model");
    let mut failures = Vec::new();
    let prompts = index["prompts"].as_array().expect("prompts");
    assert_eq!(prompts.len(), 8, "index.json lists 8 prompts");
    for entry in prompts {
        let name = entry["name"].as_str().expect("name");
        let r = read_json(&dir.join(entry["json"].as_str().expect("json")));
        let tokens = ids(&r["token_ids"]);
        let mut session = model.session(1024, KvType::F16).expect("session");

        // Every prompt position, one prefill.
        let mut prompt = Agreement {
            min_overlap: 20,
            ..Agreement::default()
        };
        let mut fails = Vec::new();
        let last = session
            .prefill_each(&tokens, |pos, row| {
                let what = format!("{name} pos {pos}");
                prompt.check(
                    &what,
                    row,
                    &ids(&r["top_ids"][pos]),
                    &floats(&r["top_logits"][pos]),
                    &mut fails,
                );
            })
            .expect("prefill")
            .to_vec();
        if prompt.rate() < MIN_AGREEMENT {
            fails.push(format!(
                "{name}: top-1 agreement {:.3} where the margin is > {LIKELY_MARGIN}",
                prompt.rate()
            ));
        }

        // The last position's full logits.
        let expected = read_f32(&dir.join(r["last_logits_file"].as_str().expect("file")));
        let max_abs = last
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let mean_abs = last
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>()
            / last.len() as f64;
        let kl = kl(&expected, &last);
        if !(max_abs <= MAX_ABS && mean_abs <= MEAN_ABS && kl <= MAX_KL) {
            fails.push(format!(
                "{name} last logits: max {max_abs:.3} mean {mean_abs:.4} KL {kl:.5}"
            ));
        }

        // Greedy, teacher-forced: llama.cpp's ids fed back one at a time.
        let greedy = &r["greedy"];
        let want = ids(&greedy["ids"]);
        let mut forced = Agreement {
            min_overlap: 5,
            ..Agreement::default()
        };
        let mut row = last.clone();
        for (step, &id) in want.iter().enumerate() {
            let what = format!("{name} greedy step {step}");
            forced.check(
                &what,
                &row,
                &ids(&greedy["top_ids"][step]),
                &floats(&greedy["top_logits"][step]),
                &mut fails,
            );
            if step + 1 < want.len() {
                row = session.step(id).expect("step").to_vec();
            }
        }

        // Greedy, free-running, from the prompt again (the cache goes back 31 tokens).
        session
            .truncate(tokens.len())
            .expect("truncate back to the prompt");
        let (same, other) = free_greedy(&mut session, &last, &want);
        let margins: Vec<f32> = (0..want.len())
            .map(|s| {
                let l = floats(&greedy["top_logits"][s]);
                l[0] - l[1]
            })
            .collect();
        let low_margin = margins
            .iter()
            .position(|&m| m < LIKELY_MARGIN)
            .unwrap_or(want.len());
        // Leaving llama.cpp's path is only allowed at a near-tie of its own: a margin
        // below LIKELY_MARGIN there, and our id its second best.
        if let Some(other) = other {
            let second = ids(&greedy["top_ids"][same])[1];
            if margins[same] >= LIKELY_MARGIN || other != second {
                fails.push(format!(
                    "{name} greedy: first {same} of {} ids equal, then {other} where llama.cpp has {} (margin {:.3}) and {second} second",
                    want.len(),
                    want[same],
                    margins[same]
                ));
            }
        }
        println!(
            "{name:13} {:4} tokens | top-1: {} clear ok, {:.3} agree (margin>{LIKELY_MARGIN}) | top-20 overlap >= {} | last: max {max_abs:.3} mean {mean_abs:.4} KL {kl:.5} | forced greedy top-1 agree {:.3} | free greedy {same}/32 (first margin < {LIKELY_MARGIN} at step {low_margin})",
            tokens.len(),
            prompt.clear,
            prompt.rate(),
            prompt.min_overlap,
            forced.rate(),
        );
        failures.append(&mut fails);
    }
    assert!(
        failures.is_empty(),
        "disagreements with llama.cpp:\n{}",
        failures.join("\n")
    );
}

/// The same checks on every other SIMD level this CPU has but the scalar one (with AVX2 on
/// an AVX-512 CPU, the paths of AVX2-only CPUs). The scalar kernels are checked at kernel
/// level (`gemma-kernels/tests/matmul.rs`) and on the tiny models: on this model, end to
/// end, they would take minutes.
#[test]
fn gemma3_270m_matches_llama_cpp_on_every_simd_level() {
    parity_support::rerun_on_other_simd_levels(&["gemma3_270m_matches_llama_cpp"], false);
}
