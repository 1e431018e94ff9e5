//! The CUDA quantized matrix kernels on every machine, no GPU needed: for each quantized
//! type the GPU backend supports, the decode matvec `mmvq_<type>_<n>` (kernels/mmvq.cu;
//! n = 1, 2, 4, 8 tokens; one row per block and the rows per block `launch::mmvq_rows_per_block`
//! picks) and the prefill matmul `mmq_<type>` (kernels/mmq.cu, on emulated int8 tensor
//! cores; 70 rows x 72 tokens: partial 64 x 64 tiles both ways) against f64 math on the
//! dequantized weights and the quantized activations the GPU gets (`act_twin`), and
//! `mmvq_multi_<type>` (two or three matrices of different row counts in one launch) bit for
//! bit against the single-matrix kernel on each matrix.
//!
//! tests/emu/mmvq_main.cpp compiles the real kernel sources as host C++ under the SIMT
//! emulation of tests/emu/emu.h (see its header for what is and is not emulated), launched
//! as src/cuda/launch.rs launches them, under two thread schedules; it stops on a misaligned
//! vector load, a load outside the buffers or a write outside an output. Needs a C++20 compiler `c++` with <ucontext.h>: the test
//! fails when there is none.

mod cuda_util;

use cuda_util::{
    act_twin, build_emulator, dequantize, matmul_ref, min_term_correction, q8_1_values,
    random_matrix, run_emulator, Q8Twin, Rng,
};
use gemma_gguf::GgmlType;
use gemma_kernels::cuda::{self, launch, padded_len, ActFormat};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The sources of the emulator (the first is compiled; see `build_emulator`).
const SOURCES: [&str; 5] = [
    "tests/emu/mmvq_main.cpp",
    "tests/emu/emu.h",
    "kernels/common.cuh",
    "kernels/mmvq.cu",
    "kernels/mmq.cu",
];
/// (schedule, seed) pairs every launch runs under.
const SCHEDULES: [(&str, u64); 2] = [("random", 11), ("warp-greedy", 5)];
/// NaN the emulator leaves in outputs the kernel did not write.
const POISON: u32 = 0x7fba_dbad;
/// Rows of the three matrices of the matvec problems: primes, none a multiple of another, so
/// the last block of several rows is partial. (Each block runs 128 emulated threads; more
/// rows cost time and test nothing more.)
const ROWS: [usize; 3] = [13, 5, 7];
/// The prefill matmul problem: 70 rows x 72 tokens, two 64 x 64 output tiles each way, the
/// second ones partial.
const MMQ_ROWS: usize = 70;
const MMQ_TOKENS: usize = 72;
/// Token counts of the single-matrix kernels (`mmvq_<type>_<n>`).
const TOKENS: [usize; 4] = [1, 2, 4, 8];
/// Tolerance of the products: relative to the sum of |terms|, plus absolute (cuda_parity's).
const REL_TOL: f64 = 2e-5;
const ABS_TOL: f64 = 1e-6;

/// Compiles tests/emu/mmvq_main.cpp once per test binary; panics with the reason when that
/// is impossible.
fn emulator() -> &'static Path {
    static EMULATOR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match EMULATOR.get_or_init(|| build_emulator("mmvq_emu", &SOURCES)) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// The quantized types of the GPU backend (those with mmvq kernels).
fn quantized_types() -> Vec<GgmlType> {
    let types: Vec<GgmlType> = cuda::SUPPORTED_TYPES
        .into_iter()
        .filter(|ty| ty.is_quantized())
        .collect();
    assert_eq!(types.len(), 12, "quantized GPU types: {types:?}");
    types
}

/// Row lengths: cuda_parity's (fewer tasks than threads, so up to 8 rows share a block and a
/// warp's tasks cross from one row into the next; a partial 256-group for the 32-block
/// types); one of 129 to 136 tasks (3 rows per block; 1 for Q4_K, Q5_K, Q6_K, Q2_K and
/// Q3_K, whose rounds are 2 tasks per thread); one of more tasks than a round, so a thread
/// runs two rounds or more, the last partial.
/// The longer 32-block rows have an odd number of blocks, so the last block of a matrix
/// starts 2 bytes past a 4-byte boundary (Q4_0, Q5_0, Q8_0, IQ4_NL) and its aligned loads
/// end at the matrix's last byte.
fn row_lengths(ty: GgmlType) -> [usize; 3] {
    match launch::mmvq_tasks_per_block(ty) {
        8 => [768, 4352, 16640],  // IQ4_XS: 24, 136 and 520 tasks
        4 => [768, 8448, 33024],  // Q4_K, Q5_K, Q6_K: 12, 132 and 516 tasks (rounds of 2)
        2 => [768, 16640, 33024], // Q2_K, Q3_K: 6, 130 and 258 tasks (rounds of 2)
        _ => [640, 4128, 16416],  // 32-block types, a task per block: 20, 129 and 513 tasks
    }
}

/// Random matrices of `ty` (`rows`; empty where 0; matrix 2 of `ty2`), and `tokens` tokens of
/// activations as the GPU gets them.
struct Problem {
    ty: GgmlType,
    ty2: GgmlType,
    cols: usize,
    rows: [usize; 3],
    tokens: usize,
    weights: [Vec<u8>; 3],
    act: Q8Twin,
}

impl Problem {
    fn new(rng: &mut Rng, ty: GgmlType, cols: usize, rows: [usize; 3], tokens: usize) -> Self {
        Self::with_types(rng, [ty, ty], cols, rows, tokens)
    }

    /// Matrices 0 and 1 of `types[0]`, matrix 2 of `types[1]`.
    fn with_types(
        rng: &mut Rng,
        types: [GgmlType; 2],
        cols: usize,
        rows: [usize; 3],
        tokens: usize,
    ) -> Self {
        let [ty, ty2] = types;
        let weights =
            [0, 1, 2].map(|m| random_matrix(rng, if m == 2 { ty2 } else { ty }, rows[m], cols));
        let x = rng.vec(tokens * cols);
        let act = act_twin(&x, tokens, cols, ActFormat::for_weights(ty));
        Problem {
            ty,
            ty2,
            cols,
            rows,
            tokens,
            weights,
            act,
        }
    }

    fn k_pad(&self) -> usize {
        padded_len(self.cols)
    }

    fn type_of(&self, mat: usize) -> GgmlType {
        if mat == 2 {
            self.ty2
        } else {
            self.ty
        }
    }

    /// The rows per block the host launches n tokens with (one token, with a matrix 2 of
    /// another type: the multi-matrix product's, so the single-matrix kernels sum in its
    /// order).
    fn per_block(&self, n: usize) -> usize {
        if self.ty2 == self.ty {
            launch::mmvq_rows_per_block(self.ty, self.rows[0], self.cols, n)
        } else {
            launch::mmvq_multi_rows_per_block(&[self.ty, self.ty2], self.cols)
        }
    }

    /// The launch header of mmvq_main.cpp, then the weights of `mats` and n tokens.
    fn encode(&self, op: u32, n: usize, mats: &[usize], per_block: usize, out: &mut Vec<u8>) {
        let k_pad = self.k_pad();
        let mut rows = [0u32; 3];
        for (slot, &m) in rows.iter_mut().zip(mats) {
            *slot = self.rows[m] as u32;
        }
        let head = [
            op,
            self.type_of(mats[0]).id(),
            n as u32,
            (self.cols / self.ty.block_elems()) as u32,
            k_pad as u32,
        ];
        let type2 = self.type_of(*mats.last().unwrap_or(&0)).id();
        let layout = [per_block as u32, type2];
        for v in head.iter().chain(&rows).chain(&layout) {
            out.extend(v.to_ne_bytes());
        }
        for &m in mats {
            out.extend(&self.weights[m]);
        }
        let tokens = if op == 1 { 1 } else { n };
        out.extend(self.act.qs[..tokens * k_pad].iter().map(|&q| q as u8));
        let ds = &self.act.ds[..tokens * k_pad / 32 * 2];
        out.extend(ds.iter().flat_map(|v| v.to_ne_bytes()));
    }
}

/// One kernel launch and the number of floats it outputs.
enum Launch {
    /// `mmvq_<type>_<n>` on matrix `mat` of problem `p` with the first n tokens.
    Single {
        p: usize,
        mat: usize,
        n: usize,
        per_block: usize,
    },
    /// `mmvq_multi_<type>` on the matrices `mats` (in this order) of problem `p`, token 0,
    /// with the rows per block of one token.
    Multi { p: usize, mats: Vec<usize> },
    /// `mmq_<type>` on matrix 0 of problem `p` with all its tokens.
    Mmq { p: usize },
}

impl Launch {
    fn outputs(&self, problems: &[Problem]) -> usize {
        match self {
            Launch::Single { p, mat, n, .. } => n * problems[*p].rows[*mat],
            // The emulator writes three outputs, absent ones empty.
            Launch::Multi { p, mats } => mats.iter().map(|&m| problems[*p].rows[m]).sum(),
            Launch::Mmq { p } => problems[*p].tokens * problems[*p].rows[0],
        }
    }
}

/// Runs `launches` under every schedule; returns each launch's output per schedule.
fn run(problems: &[Problem], launches: &[Launch]) -> Vec<Vec<Vec<f32>>> {
    let mut input = (launches.len() as u32).to_ne_bytes().to_vec();
    for l in launches {
        match l {
            Launch::Single {
                p,
                mat,
                n,
                per_block,
            } => problems[*p].encode(0, *n, &[*mat], *per_block, &mut input),
            Launch::Multi { p, mats } => {
                let pr = &problems[*p];
                pr.encode(1, mats.len(), mats, pr.per_block(1), &mut input)
            }
            Launch::Mmq { p } => {
                let pr = &problems[*p];
                pr.encode(2, pr.tokens, &[0], 1, &mut input)
            }
        }
    }
    SCHEDULES
        .iter()
        .map(|&(schedule, seed)| {
            let out = run_emulator(emulator(), schedule, seed, input.clone());
            let floats: Vec<f32> = out
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes(c.try_into().expect("4 bytes")))
                .collect();
            let total: usize = launches.iter().map(|l| l.outputs(problems)).sum();
            assert_eq!(floats.len(), total, "emulator output length ({schedule})");
            let mut rest = &floats[..];
            launches
                .iter()
                .map(|l| {
                    let (head, tail) = rest.split_at(l.outputs(problems));
                    rest = tail;
                    head.to_vec()
                })
                .collect()
        })
        .collect()
}

/// The matvec problems: every quantized type at the row lengths `which` picks of
/// `row_lengths`, ROWS, 8 tokens.
fn problems(seed: u64, which: &[usize]) -> Vec<Problem> {
    let mut rng = Rng::new(seed);
    quantized_types()
        .into_iter()
        .flat_map(|ty| which.iter().map(move |&i| (ty, row_lengths(ty)[i])))
        .map(|(ty, cols)| Problem::new(&mut rng, ty, cols, ROWS, 8))
        .collect()
}

/// Checks `got` (n x rows of matrix `mat`) against f64 math; returns a line per bad output
/// and raises `worst` to the largest error seen as a fraction of its tolerance.
fn check_product(
    p: &Problem,
    mat: usize,
    n: usize,
    got: &[f32],
    what: &str,
    worst: &mut f64,
) -> Vec<String> {
    let (rows, cols) = (p.rows[mat], p.cols);
    let w = dequantize(p.type_of(mat), &p.weights[mat], rows * cols);
    let x = q8_1_values(&p.act, p.tokens, cols);
    let (mut want, mag) = matmul_ref(&w, &x[..n * cols], rows, cols, n);
    if ActFormat::for_weights(p.type_of(mat)) == ActFormat::Q8_1 {
        let (ty, weights) = (p.type_of(mat), &p.weights[mat]);
        min_term_correction(ty, weights, rows, cols, &p.act, n, &mut want);
    }
    let mut bad = Vec::new();
    for (i, &g) in got.iter().enumerate() {
        let (err, tol) = ((f64::from(g) - want[i]).abs(), REL_TOL * mag[i] + ABS_TOL);
        *worst = worst.max(err / tol);
        // NaN: the poison of an unwritten output.
        if g.is_nan() || err > tol {
            bad.push(format!(
                "{what}: token {} row {}: {g} (bits {:#x}) vs f64 {} (err {err:e}, tol {tol:e})",
                i / rows,
                i % rows,
                g.to_bits(),
                want[i]
            ));
        }
    }
    bad
}

/// Fails listing the first problems found, or reports how many outputs were checked.
fn report(bad: &[String], checked: usize, what: &str) {
    assert!(
        bad.is_empty(),
        "{} of {checked} outputs wrong, e.g.:\n{}",
        bad.len(),
        bad[..bad.len().min(12)].join("\n")
    );
    eprintln!(
        "{what}: {checked} outputs ({} schedules) ok",
        SCHEDULES.len()
    );
}

#[test]
fn single_matrix_kernels_match_f64_reference() {
    let problems = problems(0x3377_0001, &[0, 1, 2]);
    let mut launches = Vec::new();
    let mut grouped = 0;
    for (p, pr) in problems.iter().enumerate() {
        // The longest rows (two rounds per thread) at 1 and 2 tokens only: they cost the most
        // emulation time and add nothing for 4 and 8.
        let longest = pr.cols == row_lengths(pr.ty)[2];
        for n in TOKENS.into_iter().filter(|&n| n <= 2 || !longest) {
            let mut layouts = vec![1, pr.per_block(n)];
            layouts.dedup();
            grouped += usize::from(layouts.len() > 1);
            for per_block in layouts {
                launches.push(Launch::Single {
                    p,
                    mat: 0,
                    n,
                    per_block,
                });
            }
        }
    }
    // At 1, 2 and 4 tokens (8 tokens take one row per block): the two shorter rows of every
    // type but Q4_K, Q5_K, Q6_K, Q2_K and Q3_K (130 or 132 tasks fill their round of 2 x
    // 128), the shortest of those: 57 of 120.
    assert_eq!(grouped, 57, "launches with several rows per block");
    let outputs = run(&problems, &launches);
    let (mut bad, mut checked, mut worst) = (Vec::new(), 0, 0f64);
    for ((schedule, _), per_launch) in SCHEDULES.iter().zip(&outputs) {
        for (l, got) in launches.iter().zip(per_launch) {
            let Launch::Single {
                p,
                mat,
                n,
                per_block,
            } = *l
            else {
                unreachable!("single launches only")
            };
            let pr = &problems[p];
            let what = format!(
                "mmvq {} {} x {} with {n} tokens, {per_block} rows per block ({schedule})",
                pr.ty, pr.rows[mat], pr.cols
            );
            bad.extend(check_product(pr, mat, n, got, &what, &mut worst));
            checked += got.len();
        }
    }
    report(&bad, checked, "mmvq_<type>_<1, 2, 4, 8>");
    eprintln!("mmvq_<type>_<1, 2, 4, 8>: worst error {worst:.3} of the tolerance");
}

#[test]
fn multi_matrix_kernel_matches_single_matrix_kernel_bit_for_bit() {
    // The row length only matters inside a block, where the multi kernel runs the single
    // kernel's code: cuda_parity's only (4 rows per block, the last block of each matrix
    // partial).
    let mut problems = problems(0x3377_0002, &[0]);
    // Q, K of a K-quant and the Q6_K V of the layers a Q4_K_M / Q5_K_M file gives more bits;
    // Q5_0 and Q8_0 where they stand for Q4_K and Q6_K (rows not whole 256-blocks).
    let mut rng = Rng::new(0x3377_0004);
    let mixed = [
        (GgmlType::Q4_K, GgmlType::Q6_K),
        (GgmlType::Q5_K, GgmlType::Q6_K),
        (GgmlType::Q5_0, GgmlType::Q8_0),
    ]
    .map(|(ty, ty2)| Problem::with_types(&mut rng, [ty, ty2], row_lengths(ty)[0], ROWS, 8));
    problems.extend(mixed);
    let mut launches = Vec::new();
    for (p, pr) in problems.iter().enumerate() {
        if pr.ty2 != pr.ty {
            for mat in 0..3 {
                launches.push(Launch::Single {
                    p,
                    mat,
                    n: 1,
                    per_block: pr.per_block(1),
                });
            }
            launches.push(Launch::Multi {
                p,
                mats: vec![0, 1, 2],
            });
            continue;
        }
        for mat in 0..3 {
            launches.push(Launch::Single {
                p,
                mat,
                n: 1,
                per_block: pr.per_block(1),
            });
        }
        launches.push(Launch::Multi {
            p,
            mats: vec![0, 1],
        });
        launches.push(Launch::Multi {
            p,
            mats: vec![0, 1, 2],
        });
        launches.push(Launch::Multi {
            p,
            mats: vec![2, 0],
        });
    }
    let outputs = run(&problems, &launches);
    let (mut bad, mut checked, mut worst) = (Vec::new(), 0, 0f64);
    for ((schedule, _), per_launch) in SCHEDULES.iter().zip(&outputs) {
        // The single-matrix outputs of each problem's three matrices, checked on the way.
        let mut singles: Vec<Vec<&[f32]>> = vec![Vec::new(); problems.len()];
        for (l, got) in launches.iter().zip(per_launch) {
            match l {
                Launch::Single { p, mat, n, .. } => {
                    let pr = &problems[*p];
                    let what = format!(
                        "mmvq {} {} x {} ({schedule})",
                        pr.ty, pr.rows[*mat], pr.cols
                    );
                    bad.extend(check_product(pr, *mat, *n, got, &what, &mut worst));
                    singles[*p].push(got);
                }
                Launch::Multi { p, mats } => {
                    let pr = &problems[*p];
                    let want: Vec<f32> = mats
                        .iter()
                        .flat_map(|&m| singles[*p][m].iter().copied())
                        .collect();
                    let shapes: Vec<usize> = mats.iter().map(|&m| pr.rows[m]).collect();
                    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        if g.to_bits() != w.to_bits() || g.to_bits() == POISON {
                            bad.push(format!(
                                "mmvq_multi {} rows {shapes:?} x {} ({schedule}): output {i}: \
                                 {g} (bits {:#x}) vs single-matrix kernel {w}",
                                pr.ty,
                                pr.cols,
                                g.to_bits()
                            ));
                        }
                    }
                    checked += got.len();
                }
                Launch::Mmq { .. } => unreachable!("matvec launches only"),
            }
        }
    }
    report(&bad, checked, "mmvq_multi_<type>");
    eprintln!(
        "mmvq_<type>_1 on the multi kernel's matrices: worst error {worst:.3} of the tolerance"
    );
}

#[test]
fn prefill_matmul_kernels_match_f64_reference() {
    let mut rng = Rng::new(0x3377_0003);
    let problems: Vec<Problem> = quantized_types()
        .into_iter()
        .map(|ty| {
            let cols = row_lengths(ty)[0];
            Problem::new(&mut rng, ty, cols, [MMQ_ROWS, 0, 0], MMQ_TOKENS)
        })
        .collect();
    let launches: Vec<Launch> = (0..problems.len()).map(|p| Launch::Mmq { p }).collect();
    let outputs = run(&problems, &launches);
    let (mut bad, mut checked, mut worst) = (Vec::new(), 0, 0f64);
    for ((schedule, _), per_launch) in SCHEDULES.iter().zip(&outputs) {
        for (pr, got) in problems.iter().zip(per_launch) {
            let what = format!(
                "mmq {} {} x {} with {} tokens ({schedule})",
                pr.ty, MMQ_ROWS, pr.cols, MMQ_TOKENS
            );
            bad.extend(check_product(pr, 0, MMQ_TOKENS, got, &what, &mut worst));
            checked += got.len();
        }
    }
    report(&bad, checked, "mmq_<type>");
    eprintln!("mmq_<type>: worst error {worst:.3} of the tolerance");
}
