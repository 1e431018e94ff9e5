//! The CUDA activation quantizers against the CPU backend's, bit for bit, on every machine
//! (no GPU needed): `quantize_act256` of kernels/common.cuh through its three kernels
//! (`quantize_q8_1`, `geglu_q8_1`, `rms_norm_q8_1`), in the three formats, must give the
//! quants and {d, s} of `BlockQ8_0::quantize_act`, `BlockQ8_1::quantize_act` and
//! `BlockQ8_K::quantize` (`act_twin`) for any finite input. The fused post-norm, residual
//! and pre-norm (`rms_norm_add_norm_q8_1`) must give bit for bit what its two kernels
//! (`rms_norm_add`, then `rms_norm_q8_1`) give, and so must the decode attention's merge
//! of its splits that quantizes its result (`attn_combine_256`) against the merge followed
//! by `quantize_q8_1`.
//!
//! tests/emu/quantize_main.cpp compiles the real kernel sources as host C++ under the SIMT
//! emulation of tests/emu/emu.h (a block's threads as fibers meeting at real barriers, warp
//! shuffles and ballots, the GPU's f16 and integer conversions; see its header for what is
//! not emulated) and runs them under two thread schedules, one of them warp-greedy (warps
//! drift apart as far as the code allows, which exposes a missing `__syncthreads`). Needs a
//! C++20 compiler `c++` with <ucontext.h>: the test fails when there is none.

mod cuda_util;

use cuda_util::{act_twin, build_emulator, run_emulator, Rng};
use gemma_kernels::cpu::ops::geglu_f16_inplace;
use gemma_kernels::cuda::ActFormat;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The kernels of quantize_main.cpp (the ids it reads).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Quantize = 0,
    Geglu = 1,
    RmsNorm = 2,
}

const FORMATS: [ActFormat; 3] = [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K];
/// Row lengths: a partial warp and whole padding warps (100), one group, several groups
/// with a partial last one (1000).
const ROW_LENS: [usize; 3] = [100, 256, 1000];
/// (schedule, seed) pairs every case runs under.
const SCHEDULES: [(&str, u64); 2] = [("random", 7), ("warp-greedy", 3)];
/// NaN the emulator leaves in float outputs the kernel did not write.
const POISON: u32 = 0x7fba_dbad;

/// The sources of the emulator; its binary is named by a hash of their contents, so runs of
/// different sources sharing a target dir never mix binaries.
const SOURCES: [&str; 6] = [
    "tests/emu/quantize_main.cpp",
    "tests/emu/emu.h",
    "kernels/common.cuh",
    "kernels/quantize.cu",
    "kernels/norm.cu",
    "kernels/attention.cu",
];

/// Compiles tests/emu/quantize_main.cpp once per test binary; panics with the reason when
/// that is impossible.
fn emulator() -> &'static Path {
    static EMULATOR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match EMULATOR.get_or_init(|| build_emulator("quantize_emu", &SOURCES)) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// One launch: `a` is x (Quantize, RmsNorm) or gate (Geglu), `b` is up (Geglu) or the norm
/// weight (RmsNorm).
struct Case {
    style: &'static str,
    kernel: Kernel,
    format: ActFormat,
    rows: usize,
    k: usize,
    eps: f32,
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Puts `v` at `i` when the row is that long.
fn put(x: &mut [f32], i: usize, v: f32) {
    if let Some(slot) = x.get_mut(i) {
        *slot = v;
    }
}

/// A row of k activations in `style`; `variant` picks among the style's sub-cases.
fn gen_row(style: &str, k: usize, rng: &mut Rng, variant: usize) -> Vec<f32> {
    let mut x = rng.vec(k);
    match style {
        "normal" => {
            let scale = [1e-3f32, 1.0, 30.0, 1e4][variant % 4];
            x.iter_mut().for_each(|v| *v *= scale);
        }
        "mixed_scale" => {
            for (i, v) in x.iter_mut().enumerate() {
                *v *= 10f32.powi((i / 32 % 7) as i32 - 3);
            }
        }
        "zeros" => {
            // Whole 32-blocks of +0, of -0, of both; a row of -0 (an all-zero 256-group).
            for (i, v) in x.iter_mut().enumerate() {
                let b = i / 32;
                if b % 4 == 1 || variant % 3 == 2 {
                    *v = if variant % 3 == 2 { -0.0 } else { 0.0 };
                }
                if b % 4 == 3 && variant % 2 == 1 {
                    *v = -0.0;
                }
                if b % 8 == 2 && i % 3 == 0 {
                    *v = -0.0;
                }
            }
        }
        "signs" => {
            // Values below 3, then +3 and -3 in one warp, in different warps, either first.
            for v in x.iter_mut() {
                *v *= 0.3;
                if v.abs() >= 2.9 {
                    *v = 0.5;
                }
            }
            for g in 0..k.div_ceil(256) {
                let base = g * 256;
                let s = if (g + variant).is_multiple_of(2) {
                    3.0
                } else {
                    -3.0
                };
                match (g + variant) % 4 {
                    0 => {
                        put(&mut x, base + 32 + 7, -s);
                        put(&mut x, base + 5 * 32 + 2, s);
                    }
                    1 => {
                        put(&mut x, base + 2 * 32, s);
                        put(&mut x, base + 6 * 32 + 31, -s);
                        put(&mut x, base + 7 * 32, s);
                    }
                    2 => {
                        put(&mut x, base + 3 * 32 + 20, -s);
                        put(&mut x, base + 3 * 32 + 4, s);
                        put(&mut x, base + 31, -s);
                    }
                    _ => {
                        for w in 0..8 {
                            let sw = if w % 2 == 0 { s } else { -s };
                            put(&mut x, base + w * 32 + (w * 5 + variant) % 32, sw);
                            put(&mut x, base + w * 32 + (w * 11 + 3) % 32, -sw);
                        }
                    }
                }
            }
        }
        "ties" => {
            for (i, v) in x.iter_mut().enumerate() {
                let (l, b) = (i % 32, i / 32);
                *v = if variant % 5 == 4 {
                    // amax 254: 127 / amax = 0.5, odd values scale to exact ties.
                    match l {
                        3 => -254.0,
                        _ => (2 * l as i32 - 31) as f32 * if b % 2 == 0 { 3.0 } else { 1.0 },
                    }
                } else {
                    // amax (and Q8_K's max) +-127 * 2^e: the scale is a power of two and
                    // every (j + 0.5) * 2^e an exact tie.
                    let scale = 2f32.powi([0, -10, 5, 1][variant % 5]);
                    scale
                        * match l {
                            0 if (b + variant).is_multiple_of(2) => 127.0,
                            0 => -127.0,
                            1 if b % 3 == 0 => -127.0,
                            1 => 127.0,
                            _ => (l as f32 - 16.0) * 3.5 + 0.5 * (b % 2) as f32,
                        }
                };
            }
        }
        "tiny" => {
            // amax < 127 / FLT_MAX: 127 / amax overflows.
            let scale = [1e-38f32, 1e-40, 1e-44, 3e-37, 5e-37, 1e-36][variant % 6];
            x.iter_mut().for_each(|v| *v *= scale);
        }
        "tiny_block" => {
            for (i, v) in x.iter_mut().enumerate() {
                if (i / 32) % 3 == 1 {
                    *v *= 1e-38;
                }
            }
        }
        "huge" => {
            let scale = [1e30f32, 1e6, 1e36][variant % 3];
            x.iter_mut().for_each(|v| *v *= scale);
            if variant % 3 == 2 {
                put(&mut x, 40, f32::MAX);
                put(&mut x, 7, -f32::MAX);
            }
        }
        _ => unreachable!("unknown style {style}"),
    }
    x
}

const STYLES: [&str; 8] = [
    "normal",
    "mixed_scale",
    "zeros",
    "signs",
    "ties",
    "tiny",
    "tiny_block",
    "huge",
];

/// Every style, format and row length for `kernel`.
fn cases(kernel: Kernel) -> Vec<Case> {
    let mut rng = Rng::new(0x5eed_0e30 + kernel as u64);
    let mut cases = Vec::new();
    for format in FORMATS {
        for (si, &style) in STYLES.iter().enumerate() {
            for (ki, &k) in ROW_LENS.iter().enumerate() {
                let rows = 2;
                let x: Vec<f32> = (0..rows)
                    .flat_map(|r| gen_row(style, k, &mut rng, si + ki * rows + r))
                    .collect();
                let case = |kernel, rows, k, eps, a, b| Case {
                    style,
                    kernel,
                    format,
                    rows,
                    k,
                    eps,
                    a,
                    b,
                };
                cases.push(match kernel {
                    Kernel::Quantize => case(kernel, rows, k, 0.0, x, vec![]),
                    // gelu_tanh(16) == 16 exactly: the output is x again, as one row.
                    Kernel::Geglu => {
                        let up = x.iter().map(|v| v / 16.0).collect();
                        case(kernel, 1, x.len(), 0.0, vec![16.0; x.len()], up)
                    }
                    // Weight 1 keeps the sign ties and exact ties of the input.
                    Kernel::RmsNorm => {
                        let w = match style {
                            "signs" | "ties" => vec![1.0; k],
                            _ => (0..k).map(|_| 1.0 + 0.2 * rng.uniform()).collect(),
                        };
                        case(kernel, rows, k, 1e-6, x, w)
                    }
                });
            }
        }
        if kernel == Kernel::Geglu {
            let n = 1000;
            // Past both ends of the table (-10 and 10).
            let gate = (0..n).map(|_| 12.0 * rng.uniform()).collect();
            let up = rng.vec(n);
            cases.push(Case {
                style: "geglu_random",
                kernel,
                format,
                rows: 1,
                k: n,
                eps: 0.0,
                a: gate,
                b: up,
            });
        }
    }
    cases
}

/// The emulator's input (see quantize_main.cpp).
fn encode(cases: &[Case]) -> Vec<u8> {
    let mut bytes = (cases.len() as u32).to_ne_bytes().to_vec();
    for c in cases {
        for v in [c.kernel as u32, c.format as u32, c.rows as u32, c.k as u32] {
            bytes.extend(v.to_ne_bytes());
        }
        bytes.extend(c.eps.to_ne_bytes());
        bytes.extend(c.a.iter().chain(&c.b).flat_map(|v| v.to_ne_bytes()));
    }
    bytes
}

/// Runs the cases under one schedule; returns the emulator's output.
fn run_cases(cases: &[Case], schedule: &str, seed: u64) -> Vec<u8> {
    run_emulator(emulator(), schedule, seed, encode(cases))
}

/// Reads the emulator's output in order.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        assert!(self.0.len() >= n, "emulator output too short");
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }

    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.bytes(4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }
}

/// Checks the kernel's float output: not left unwritten, and the expected values.
fn check_float_output(c: &Case, out: &[f32], what: &str) {
    for (i, &o) in out.iter().enumerate() {
        assert_ne!(o.to_bits(), POISON, "{what}: output {i} not written");
        match (c.kernel, c.style) {
            // The host's tanhf is the CPU engine's: bit for bit.
            (Kernel::Geglu, "geglu_random") => {
                let mut want = [c.a[i]];
                geglu_f16_inplace(&mut want, &[c.b[i]]);
                assert_eq!(
                    o.to_bits(),
                    want[0].to_bits(),
                    "{what}: geglu {i}: {o} vs {}",
                    want[0]
                );
            }
            (Kernel::Geglu, _) => assert_eq!(
                o.to_bits(),
                (16.0 * c.b[i]).to_bits(),
                "{what}: geglu {i} with gate 16"
            ),
            _ => {}
        }
    }
    if c.kernel == Kernel::RmsNorm {
        for r in 0..c.rows {
            let x = &c.a[r * c.k..(r + 1) * c.k];
            let ms = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / c.k as f64;
            if !(1e-30..1e30).contains(&ms) {
                continue; // the f32 sum of squares under- or overflows
            }
            let inv = 1.0 / (ms + f64::from(c.eps)).sqrt();
            for (i, &xv) in x.iter().enumerate() {
                let want = f64::from(xv) * inv * f64::from(c.b[i]);
                let got = f64::from(out[r * c.k + i]);
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs() + 1e-30,
                    "{what}: rms_norm row {r} element {i}: {got} vs {want}"
                );
            }
        }
    }
}

/// Compares the emulated kernels' quants and {d, s} with the CPU quantizers of the values
/// they quantized; returns one line per differing 32-block.
fn mismatches(cases: &[Case], output: &[u8], schedule: &str) -> Vec<String> {
    let mut reader = Reader(output);
    let mut found = Vec::new();
    for c in cases {
        let what = format!(
            "{:?} {:?} {} k={} ({schedule})",
            c.kernel, c.format, c.style, c.k
        );
        let k_pad = c.k.div_ceil(256) * 256;
        let qs: Vec<i8> = reader
            .bytes(c.rows * k_pad)
            .iter()
            .map(|&b| b as i8)
            .collect();
        let ds = reader.f32s(c.rows * k_pad / 32 * 2);
        let src = match c.kernel {
            Kernel::Quantize => c.a.clone(),
            _ => {
                let out = reader.f32s(c.rows * c.k);
                check_float_output(c, &out, &what);
                out
            }
        };
        let twin = act_twin(&src, c.rows, c.k, c.format);
        for j in 0..c.rows * k_pad / 32 {
            let lanes = 32 * j..32 * j + 32;
            let bad_q = lanes.clone().find(|&i| qs[i] != twin.qs[i]);
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits();
            let (d, s, want_d, want_s) =
                (ds[2 * j], ds[2 * j + 1], twin.ds[2 * j], twin.ds[2 * j + 1]);
            if bad_q.is_none() && same(d, want_d) && same(s, want_s) {
                continue;
            }
            let (row, block) = (j / (k_pad / 32), j % (k_pad / 32));
            let mut line = format!(
                "{what} row {row} block32 {block}: d {d:e} vs cpu {want_d:e}, s {s:e} vs cpu {want_s:e}"
            );
            if let Some(i) = bad_q {
                let e = i % k_pad;
                let x = if e < c.k { src[row * c.k + e] } else { 0.0 };
                let n_bad = lanes.filter(|&i| qs[i] != twin.qs[i]).count();
                line += &format!(
                    "; {n_bad} quants differ, first lane {}: x {x:e} q {} vs cpu {}",
                    i % 32,
                    qs[i],
                    twin.qs[i]
                );
            }
            found.push(line);
        }
    }
    assert!(reader.0.is_empty(), "emulator output too long");
    found
}

/// Runs every case of `kernel` under each schedule and fails listing the differences.
fn check_kernel(kernel: Kernel) {
    let cases = cases(kernel);
    let mut bad = Vec::new();
    for (schedule, seed) in SCHEDULES {
        let output = run_cases(&cases, schedule, seed);
        bad.extend(mismatches(&cases, &output, schedule));
    }
    let blocks: usize = cases.iter().map(|c| c.rows * c.k.div_ceil(256) * 8).sum();
    assert!(
        bad.is_empty(),
        "{} of {} 32-blocks differ from the CPU quantizers, e.g.:\n{}",
        bad.len(),
        blocks * SCHEDULES.len(),
        bad[..bad.len().min(12)].join("\n")
    );
    eprintln!(
        "{kernel:?}: {} cases, {} 32-blocks x {} schedules bit-identical to the CPU",
        cases.len(),
        blocks,
        SCHEDULES.len()
    );
}

#[test]
fn quantize_q8_1_matches_cpu_quantizers() {
    check_kernel(Kernel::Quantize);
}

#[test]
fn geglu_q8_1_matches_cpu_quantizers() {
    check_kernel(Kernel::Geglu);
}

#[test]
fn rms_norm_q8_1_matches_cpu_quantizers() {
    check_kernel(Kernel::RmsNorm);
}

/// Ids of quantize_main.cpp: the fused kernel and its two-kernel sequence.
const ADD_NORM_FUSED: u32 = 3;
const ADD_NORM_PAIR: u32 = 4;

#[test]
fn rms_norm_add_norm_q8_1_matches_its_two_kernels() {
    let mut rng = Rng::new(0x5eed_add0);
    let rows = 2;
    // Inputs per case: o, residual, w_post, w_next.
    let mut inputs = Vec::new();
    for format in FORMATS {
        for (si, &style) in ["normal", "mixed_scale", "zeros", "tiny", "huge"]
            .iter()
            .enumerate()
        {
            for &k in &ROW_LENS {
                let o: Vec<f32> = (0..rows)
                    .flat_map(|r| gen_row(style, k, &mut rng, si + r))
                    .collect();
                let residual: Vec<f32> = (0..rows)
                    .flat_map(|r| gen_row("normal", k, &mut rng, r))
                    .collect();
                let w_post: Vec<f32> = (0..k).map(|_| 1.0 + 0.2 * rng.uniform()).collect();
                let w_next: Vec<f32> = (0..k).map(|_| 1.0 + 0.2 * rng.uniform()).collect();
                inputs.push((format, style, k, [o, residual, w_post, w_next]));
            }
        }
    }
    let mut bytes = ((2 * inputs.len()) as u32).to_ne_bytes().to_vec();
    for (format, _, k, vecs) in &inputs {
        for kernel in [ADD_NORM_FUSED, ADD_NORM_PAIR] {
            for v in [kernel, *format as u32, rows as u32, *k as u32] {
                bytes.extend(v.to_ne_bytes());
            }
            bytes.extend(1e-6f32.to_ne_bytes());
            bytes.extend(vecs.iter().flatten().flat_map(|v| v.to_ne_bytes()));
        }
    }
    let mut bad = Vec::new();
    for (schedule, seed) in SCHEDULES {
        let output = run_emulator(emulator(), schedule, seed, bytes.clone());
        let mut reader = Reader(&output);
        for (format, style, k, _) in &inputs {
            let k_pad = k.div_ceil(256) * 256;
            // qs, ds, out, o, residual of the fused kernel, then of the pair.
            let mut read = || {
                let mut words: Vec<u32> = reader
                    .bytes(rows * k_pad)
                    .iter()
                    .map(|&b| u32::from(b))
                    .collect();
                let floats = reader.f32s(rows * k_pad / 32 * 2 + 3 * rows * k);
                words.extend(floats.iter().map(|v| v.to_bits()));
                (words, floats)
            };
            let (fused, floats) = read();
            let (pair, _) = read();
            let what = format!("{format:?} {style} k={k} ({schedule})");
            if let Some(i) = (0..fused.len()).find(|&i| fused[i] != pair[i]) {
                bad.push(format!(
                    "{what}: output word {i}: fused {:#x}, pair {:#x}",
                    fused[i], pair[i]
                ));
            }
            if let Some(i) = floats.iter().position(|v| v.to_bits() == POISON) {
                bad.push(format!("{what}: float output {i} not written"));
            }
        }
        assert!(reader.0.is_empty(), "emulator output too long");
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases differ, e.g.:\n{}",
        bad.len(),
        inputs.len() * SCHEDULES.len(),
        bad[..bad.len().min(12)].join("\n")
    );
    eprintln!(
        "rms_norm_add_norm_q8_1: {} cases x {} schedules bit-identical to rms_norm_add + rms_norm_q8_1",
        inputs.len(),
        SCHEDULES.len()
    );
}

/// Ids of quantize_main.cpp: the split merge quantizing its output, and the merge followed
/// by quantize_q8_1.
const COMBINE_FUSED: u32 = 5;
const COMBINE_THEN_QUANTIZE: u32 = 6;

#[test]
fn attn_combine_quantizing_matches_combine_then_quantize() {
    let mut rng = Rng::new(0x5eed_c0b1);
    let heads = 4;
    let k = heads * 256;
    // Inputs per case: part_o, then part_ml as {m, l} pairs.
    let mut inputs = Vec::new();
    for format in FORMATS {
        for splits in [1usize, 3] {
            let part_o = rng.vec(heads * splits * 256);
            let mut part_ml = Vec::new();
            for i in 0..heads * splits {
                // A split without keys (l = 0) in the middle of each head's three.
                let empty = splits == 3 && i % 3 == 1;
                let l = 1.0 + 5.0 * (rng.uniform() + 1.0); // 1 .. 11
                part_ml.extend([rng.uniform() * 4.0, if empty { 0.0 } else { l }]);
            }
            inputs.push((format, splits, part_o, part_ml));
        }
    }
    let mut bytes = ((2 * inputs.len()) as u32).to_ne_bytes().to_vec();
    for (format, splits, part_o, part_ml) in &inputs {
        for kernel in [COMBINE_FUSED, COMBINE_THEN_QUANTIZE] {
            for v in [kernel, *format as u32, 1, k as u32] {
                bytes.extend(v.to_ne_bytes());
            }
            bytes.extend((*splits as f32).to_ne_bytes());
            bytes.extend(part_o.iter().chain(part_ml).flat_map(|v| v.to_ne_bytes()));
        }
    }
    let mut bad = Vec::new();
    for (schedule, seed) in SCHEDULES {
        let output = run_emulator(emulator(), schedule, seed, bytes.clone());
        let mut reader = Reader(&output);
        for (format, splits, _, _) in &inputs {
            // qs, ds and the merged row: the fused kernel's, then the pair's.
            let mut read = || {
                let mut words: Vec<u32> = reader.bytes(k).iter().map(|&b| u32::from(b)).collect();
                let floats = reader.f32s(k / 32 * 2 + k);
                words.extend(floats.iter().map(|v| v.to_bits()));
                (words, floats)
            };
            let (fused, floats) = read();
            let (pair, _) = read();
            let what = format!("{format:?} {splits} splits ({schedule})");
            if let Some(i) = (0..fused.len()).find(|&i| fused[i] != pair[i]) {
                bad.push(format!(
                    "{what}: output word {i}: fused {:#x}, pair {:#x}",
                    fused[i], pair[i]
                ));
            }
            if let Some(i) = floats
                .iter()
                .position(|v| v.to_bits() == POISON || !v.is_finite())
            {
                bad.push(format!(
                    "{what}: float output {i} not written or not finite"
                ));
            }
        }
        assert!(reader.0.is_empty(), "emulator output too long");
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    eprintln!(
        "attn_combine_256: {} cases x {} schedules bit-identical to the merge + quantize_q8_1",
        inputs.len(),
        SCHEDULES.len()
    );
}
