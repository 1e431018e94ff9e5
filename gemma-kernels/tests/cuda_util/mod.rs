//! Shared helpers of the CUDA tests: the device (or the one allowed skip), a seeded random
//! generator, random GGUF blocks, the CPU backend's activation blocks in the GPU layout, and
//! F16 KV histories and caches for the attention tests.

#![allow(dead_code)] // each test binary uses a different subset

use bytemuck::Zeroable;
use gemma_gguf::GgmlType;
use gemma_kernels::cuda::{ActFormat, CudaDevice, CudaError};
use gemma_kernels::quant::{BlockQ8_0, BlockQ8_1, BlockQ8_K, QuantBlock};
use half::f16;

/// The GPU, or `None` (after printing why) when this machine has no CUDA driver or device:
/// the only case where GPU tests do not run. Any other failure (NVRTC missing on a GPU
/// machine, an old GPU) fails the test.
pub fn device() -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(dev) => Some(dev),
        Err(CudaError::Unavailable { reason }) => {
            eprintln!("no CUDA device: GPU tests not run ({reason})");
            None
        }
        Err(e) => panic!("CUDA device present but unusable: {e}"),
    }
}

/// SplitMix64: small, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Roughly normal (sum of uniforms), with occasional outliers x 20 like real activations.
    pub fn activation(&mut self) -> f32 {
        let v = (self.uniform() + self.uniform() + self.uniform()) * 0.6;
        if self.next_u64().is_multiple_of(97) {
            v * 20.0
        } else {
            v
        }
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.activation()).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Byte offsets of the f16 scale fields in one block of `ty` (random bytes there would
/// often be inf / NaN / huge).
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// A random rows x cols matrix of `ty` in raw GGUF bytes: random quants and sane scales.
pub fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n_blocks = rows * cols / ty.block_elems();
    let bb = ty.block_bytes();
    let mut data = vec![0u8; n_blocks * bb];
    match ty {
        GgmlType::F32 => {
            for c in data.chunks_exact_mut(4) {
                c.copy_from_slice(&(rng.uniform() * 0.1).to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in data.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(rng.uniform() * 0.1).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for c in data.chunks_exact_mut(2) {
                c.copy_from_slice(
                    &half::bf16::from_f32(rng.uniform() * 0.1)
                        .to_bits()
                        .to_le_bytes(),
                );
            }
        }
        _ => {
            for b in data.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            for block in data.chunks_exact_mut(bb) {
                for &off in scale_offsets(ty) {
                    let d = f16::from_f32(rng.uniform() * 0.01);
                    block[off..off + 2].copy_from_slice(&d.to_bits().to_le_bytes());
                }
            }
        }
    }
    data
}

/// CPU dequantization (the crate's reference) of a whole matrix.
pub fn dequantize(ty: GgmlType, data: &[u8], elems: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; elems];
    gemma_kernels::quant::dequantize(ty, data, &mut out).expect("CPU dequantize");
    out
}

/// The GPU's activation layout (qs rows of k_pad, {d, s} per 32) filled from the CPU
/// backend's own activation blocks for `format` (`BlockQ8_0::quantize_act`,
/// `BlockQ8_1::quantize_act`, `BlockQ8_K::quantize`): the values the GPU must reproduce.
pub struct Q8Twin {
    pub qs: Vec<i8>,
    pub ds: Vec<f32>, // {d, s} pairs
}

pub fn act_twin(x: &[f32], rows: usize, k: usize, format: ActFormat) -> Q8Twin {
    let k_pad = k.div_ceil(256) * 256;
    let mut qs = vec![0i8; rows * k_pad];
    let mut ds = vec![0f32; rows * k_pad / 32 * 2];
    for r in 0..rows {
        let mut row = vec![0f32; k_pad];
        row[..k].copy_from_slice(&x[r * k..(r + 1) * k]);
        // Per 32-block: the quants and (d, s).
        let mut blocks: Vec<([i8; 32], f32, f32)> = Vec::new();
        match format {
            ActFormat::Q8_0 => {
                let mut b = vec![BlockQ8_0::zeroed(); k_pad / 32];
                BlockQ8_0::quantize_act(&row, &mut b);
                for blk in &b {
                    let d = blk.d.to_f32();
                    let sum: i32 = blk.qs.iter().map(|&q| i32::from(q)).sum();
                    blocks.push((blk.qs, d, d * sum as f32));
                }
            }
            ActFormat::Q8_1 => {
                let mut b = vec![BlockQ8_1::zeroed(); k_pad / 32];
                BlockQ8_1::quantize_act(&row, &mut b);
                for blk in &b {
                    blocks.push((blk.qs, blk.d.to_f32(), blk.s.to_f32()));
                }
            }
            ActFormat::Q8K => {
                let mut b = vec![BlockQ8_K::zeroed(); k_pad / 256];
                BlockQ8_K::quantize(&row, &mut b);
                for blk in &b {
                    for q32 in blk.qs.chunks_exact(32) {
                        let sum: i32 = q32.iter().map(|&q| i32::from(q)).sum();
                        let mut q = [0i8; 32];
                        q.copy_from_slice(q32);
                        blocks.push((q, blk.d, blk.d * sum as f32));
                    }
                }
            }
        }
        for (j, (q, d, sum)) in blocks.into_iter().enumerate() {
            qs[r * k_pad + 32 * j..r * k_pad + 32 * j + 32].copy_from_slice(&q);
            let o = (r * k_pad / 32 + j) * 2;
            ds[o] = d;
            ds[o + 1] = sum;
        }
    }
    Q8Twin { qs, ds }
}

/// The activations the integer kernels actually multiply: d * q, row-major n x k.
pub fn q8_1_values(t: &Q8Twin, rows: usize, k: usize) -> Vec<f32> {
    let k_pad = k.div_ceil(256) * 256;
    let mut out = vec![0f32; rows * k];
    for r in 0..rows {
        for e in 0..k {
            let d = t.ds[(r * k_pad / 32 + e / 32) * 2];
            out[r * k + e] = d * f32::from(t.qs[r * k_pad + e]);
        }
    }
    out
}

/// Q4_1 / Q5_1: the kernels (and the CPU's vec_dot) take a block's min times the sum of its
/// activations from the activation block's s, which Q8_1 stores rounded to f16; moves the
/// f64 reference `want` (n x rows, exact sums) of `ty` weights onto that s:
/// += m * (s - d * sum(q)) per 32-block.
pub fn min_term_correction(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    act: &Q8Twin,
    n: usize,
    want: &mut [f64],
) {
    let (nb, bytes, k_pad) = (cols / 32, ty.block_bytes(), cols.div_ceil(256) * 256);
    for t in 0..n {
        for r in 0..rows {
            let mut fix = 0.0;
            for b in 0..nb {
                let blk = &weights[(r * nb + b) * bytes..];
                let m = f64::from(f16::from_le_bytes([blk[2], blk[3]]).to_f32());
                let j = t * k_pad / 32 + b;
                let (d, s) = (f64::from(act.ds[2 * j]), f64::from(act.ds[2 * j + 1]));
                let sum_q: f64 = act.qs[32 * j..32 * j + 32]
                    .iter()
                    .map(|&q| f64::from(q))
                    .sum();
                fix += m * (s - d * sum_q);
            }
            want[t * rows + r] += fix;
        }
    }
}

/// y[t][r] = sum_k w[r][k] x[t][k] in f64, with the sum of |terms| for error bounds.
pub fn matmul_ref(
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; n * rows];
    let mut mag = vec![0f64; n * rows];
    for t in 0..n {
        for r in 0..rows {
            let (mut s, mut m) = (0f64, 0f64);
            for k in 0..cols {
                let p = f64::from(w[r * cols + k]) * f64::from(x[t * cols + k]);
                s += p;
                m += p.abs();
            }
            y[t * rows + r] = s;
            mag[t * rows + r] = m;
        }
    }
    (y, mag)
}

/// Asserts |got - want| <= rel * mag + abs element-wise, naming the first failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], mag: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f64;
    for i in 0..got.len() {
        let err = (f64::from(got[i]) - want[i]).abs();
        let tol = rel * mag[i] + abs;
        assert!(
            err <= tol,
            "{what}: element {i}: got {} want {} (err {err:e}, tol {tol:e})",
            got[i],
            want[i]
        );
        worst = worst.max(err / tol);
    }
    eprintln!("{what}: ok, worst error {worst:.3} of tolerance");
}

/// Compiles a driver of the CUDA emulation (tests/emu/emu.h) into `$CARGO_TARGET_TMPDIR`:
/// `sources[0]` (relative to the crate) is the file given to `c++`, the others those it
/// includes. The binary is named `name` plus a hash of the compiler flags and every
/// source's contents, so runs of different sources sharing a target dir never mix binaries.
/// Errors say why there is none (no C++20 compiler `c++`, a compile error).
pub fn build_emulator(name: &str, sources: &[&str]) -> Result<std::path::PathBuf, String> {
    use std::hash::{Hash, Hasher};
    // The kernels read raw bytes through casts to other types: no strict aliasing.
    const FLAGS: [&str; 4] = [
        "-std=c++20",
        "-O2",
        "-ffp-contract=off",
        "-fno-strict-aliasing",
    ];
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    FLAGS.hash(&mut hasher);
    for src in sources {
        let text = std::fs::read(crate_dir.join(src))
            .map_err(|e| format!("cannot read {}: {e}", crate_dir.join(src).display()))?;
        text.hash(&mut hasher);
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let exe = dir.join(format!("{name}-{:016x}", hasher.finish()));
    // Built under a name of this process, then renamed: concurrent runs never see half a file.
    let partial = exe.with_extension(format!("{}.partial", std::process::id()));
    let output = std::process::Command::new("c++")
        .args(FLAGS)
        .arg("-o")
        .arg(&partial)
        .arg(crate_dir.join(sources[0]))
        .output()
        .map_err(|e| {
            format!(
                "cannot run the C++ compiler `c++` ({e}): this test needs a C++20 compiler \
                 (g++ or clang++) with <ucontext.h> to emulate the CUDA kernels"
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`c++` failed to compile the CUDA emulation {}:\n{}",
            sources[0],
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&partial, &exe).map_err(|e| format!("rename {}: {e}", partial.display()))?;
    Ok(exe)
}

/// Runs the emulator `exe` under one schedule ("random" or "warp-greedy") and seed with
/// `input` on stdin; returns its stdout, or panics with its stderr when it fails.
pub fn run_emulator(exe: &std::path::Path, schedule: &str, seed: u64, input: Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .args([schedule, &seed.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the kernel emulator");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("run the kernel emulator");
    assert!(
        output.status.success(),
        "kernel emulator {} ({schedule} schedule, seed {seed}) failed ({}):\n{}",
        exe.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    writer
        .join()
        .expect("stdin writer")
        .expect("write the emulator's input");
    output.stdout
}

/// Full K/V history (positions 0..len) as f16-rounded floats, n_kv x hd per position.
pub fn history(rng: &mut Rng, len: usize, kv_width: usize) -> Vec<f32> {
    rng.vec(len * kv_width)
        .into_iter()
        .map(|v| f16::from_f32(v).to_f32())
        .collect()
}

pub fn to_f16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| f16::from_f32(x).to_bits()).collect()
}

/// Cache holding positions [from, to) of `hist` in slot p % n_slots.
pub fn cache_of(hist: &[f32], from: usize, to: usize, n_slots: usize, kv_width: usize) -> Vec<u16> {
    let mut c = vec![0u16; n_slots * kv_width];
    for p in from..to {
        let s = p % n_slots;
        c[s * kv_width..(s + 1) * kv_width]
            .copy_from_slice(&to_f16_bits(&hist[p * kv_width..(p + 1) * kv_width]));
    }
    c
}

/// softmax(q k * scale) v in f64 for one query head over the given key positions.
#[allow(clippy::too_many_arguments)] // a plain reference formula, kept flat
pub fn attend(
    q: &[f32],
    kh: &[f32],
    vh: &[f32],
    keys: &[usize],
    hk: usize,
    n_kv: usize,
    hd: usize,
    scale: f32,
) -> Vec<f64> {
    let scores: Vec<f64> = keys
        .iter()
        .map(|&p| {
            (0..hd)
                .map(|d| f64::from(q[d]) * f64::from(kh[(p * n_kv + hk) * hd + d]))
                .sum::<f64>()
                * f64::from(scale)
        })
        .collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let l: f64 = e.iter().sum();
    (0..hd)
        .map(|d| {
            keys.iter()
                .zip(&e)
                .map(|(&p, w)| w * f64::from(vh[(p * n_kv + hk) * hd + d]))
                .sum::<f64>()
                / l
        })
        .collect()
}

/// The keys and values of a decode step at `pos`: histories of positions 0..=pos
/// (F16-rounded, `kv_width` values each), the first live position `start` (the last
/// `window` positions; window 0: all) and F16 caches of `n_slots` slots holding those.
pub struct DecodeKv {
    /// Keys of positions 0..=pos.
    pub kh: Vec<f32>,
    /// Values of positions 0..=pos.
    pub vh: Vec<f32>,
    /// The first live position.
    pub start: usize,
    /// The F16 key cache (position p in slot p % n_slots).
    pub k_cache: Vec<u16>,
    /// The F16 value cache.
    pub v_cache: Vec<u16>,
}

/// Random [`DecodeKv`] for position `pos`.
pub fn decode_kv(
    rng: &mut Rng,
    pos: usize,
    window: usize,
    n_slots: usize,
    kv_width: usize,
) -> DecodeKv {
    let (kh, vh) = (
        history(rng, pos + 1, kv_width),
        history(rng, pos + 1, kv_width),
    );
    let start = if window > 0 {
        (pos + 1).saturating_sub(window)
    } else {
        0
    };
    let k_cache = cache_of(&kh, start, pos + 1, n_slots, kv_width);
    let v_cache = cache_of(&vh, start, pos + 1, n_slots, kv_width);
    DecodeKv {
        kh,
        vh,
        start,
        k_cache,
        v_cache,
    }
}
