//! Compares two logit dumps (`generate --dump-logits`: little-endian f32, one row of
//! n_vocab per position) by the mean over positions of KL(P_ref || P_test), P = softmax of
//! the row, in f64; also the largest KL, the top-1 agreement and the largest absolute logit
//! difference. Used by scripts/gpu-check.sh for the GPU engine against the CPU engine.
//!
//! ```text
//! logits_kl REF.f32 TEST.f32 N_VOCAB [MAX_MEAN_KL]
//! ```
//! Prints one line `mean_kl=... max_kl=... top1=... max_abs=... rows=N` and exits 0, or 1
//! when MAX_MEAN_KL is given and exceeded, 2 on bad input (unreadable files, lengths that
//! are not whole rows or differ).

use std::process::ExitCode;

/// Reads a file of little-endian f32 values.
fn read_f32(path: &str) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "{path}: {} bytes is not a whole number of f32",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// log softmax of a row, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let lse = m + row
        .iter()
        .map(|&v| (f64::from(v) - m).exp())
        .sum::<f64>()
        .ln();
    row.iter().map(|&v| f64::from(v) - lse).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// (mean KL, max KL, top-1 agreement, max abs difference, rows).
fn compare(a: &[f32], b: &[f32], n_vocab: usize) -> (f64, f64, f64, f32, usize) {
    let rows = a.len() / n_vocab;
    let (mut sum, mut max_kl, mut agree, mut max_abs) = (0.0f64, 0.0f64, 0usize, 0.0f32);
    for (ra, rb) in a.chunks_exact(n_vocab).zip(b.chunks_exact(n_vocab)) {
        let (la, lb) = (log_softmax(ra), log_softmax(rb));
        let kl: f64 = la.iter().zip(&lb).map(|(p, q)| p.exp() * (p - q)).sum();
        sum += kl;
        max_kl = max_kl.max(kl);
        agree += usize::from(argmax(ra) == argmax(rb));
        for (x, y) in ra.iter().zip(rb) {
            max_abs = max_abs.max((x - y).abs());
        }
    }
    let n = rows.max(1) as f64;
    (sum / n, max_kl, agree as f64 / n, max_abs, rows)
}

fn run(args: &[String]) -> Result<bool, String> {
    if args.len() < 3 || args.len() > 4 {
        return Err("usage: logits_kl REF.f32 TEST.f32 N_VOCAB [MAX_MEAN_KL]".into());
    }
    let n_vocab: usize = args[2]
        .parse()
        .map_err(|_| format!("N_VOCAB {:?} is not a number", args[2]))?;
    let bound: Option<f64> = match args.get(3) {
        Some(s) => Some(
            s.parse()
                .map_err(|_| format!("MAX_MEAN_KL {s:?} is not a number"))?,
        ),
        None => None,
    };
    let (a, b) = (read_f32(&args[0])?, read_f32(&args[1])?);
    if n_vocab == 0 || a.is_empty() || a.len() != b.len() || !a.len().is_multiple_of(n_vocab) {
        return Err(format!(
            "{} and {} values: not the same whole number of rows of {n_vocab}",
            a.len(),
            b.len()
        ));
    }
    let (mean, max, top1, max_abs, rows) = compare(&a, &b, n_vocab);
    println!("mean_kl={mean:.3e} max_kl={max:.3e} top1={top1:.3} max_abs={max_abs:.4} rows={rows}");
    Ok(bound.is_none_or(|b| mean <= b))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
