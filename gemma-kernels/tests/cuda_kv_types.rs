//! The f32 and Q8_0 KV caches on the GPU against CPU references: `kv_store` writes the
//! same bytes as the CPU cache (f32 copied, Q8_0 quantized by `BlockQ8_0::quantize_act`),
//! and decode / prefill attention over those caches match f64 attention over the values
//! the cache holds (over a Q8_0 cache with the query rounded through Q8_0 too, as the CPU
//! backend quantizes it for Q·K). Runs where a CUDA device is present; elsewhere each test prints
//! "no CUDA device: GPU tests not run" and returns (the one allowed exception to no-skip).

mod cuda_util;

use bytemuck::Zeroable;
use cuda_util::*;
use cudarc::driver::ValidAsZeroBits;
use gemma_kernels::cuda::{self, ops, CudaDevice, KvElem};
use gemma_kernels::quant::{BlockQ8_0, QuantBlock};

/// A cache format under test: how the host encodes rows and what values the cache holds.
trait HostKv: KvElem + bytemuck::Pod + ValidAsZeroBits {
    /// `values` (a multiple of 32) encoded as the device cache stores them.
    fn encode(values: &[f32]) -> Vec<Self>;
    /// The values a cache row holds after storing `values` (also the query the attention
    /// dots with the keys).
    fn held(values: &[f32]) -> Vec<f32>;
    /// Buffer elements per cached value (bytes per 32 values / 32 for Q8_0).
    fn buffer_len(values: usize) -> usize {
        Self::KIND.buffer_len(values)
    }
}

impl HostKv for f32 {
    fn encode(values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }
    fn held(values: &[f32]) -> Vec<f32> {
        values.to_vec()
    }
}

impl HostKv for u8 {
    fn encode(values: &[f32]) -> Vec<u8> {
        let mut blocks = vec![BlockQ8_0::zeroed(); values.len() / 32];
        BlockQ8_0::quantize_act(values, &mut blocks);
        bytemuck::cast_slice(&blocks).to_vec()
    }
    fn held(values: &[f32]) -> Vec<f32> {
        let mut blocks = vec![BlockQ8_0::zeroed(); values.len() / 32];
        BlockQ8_0::quantize_act(values, &mut blocks);
        let mut out = vec![0f32; values.len()];
        BlockQ8_0::dequantize(&blocks, &mut out);
        out
    }
}

fn check_store<E: HostKv>(dev: &CudaDevice, rng: &mut Rng, label: &str) {
    let (n, width, n_slots, p0) = (11, 256, 4, 5);
    let src = rng.vec(n * width);
    let positions: Vec<i32> = (p0..p0 + n as i32).collect();
    let (sd, pd) = (
        cuda::upload(dev, &src).unwrap(),
        cuda::upload(dev, &positions).unwrap(),
    );
    let mut cache = cuda::zeros::<E>(dev, E::buffer_len(n_slots * width)).unwrap();
    ops::kv_store(dev, &sd, n, width, &pd, n_slots, &mut cache).unwrap();
    let got = cuda::download(dev, &cache).unwrap();
    let row = E::buffer_len(width);
    for t in n - n_slots..n {
        let slot = positions[t] as usize % n_slots;
        let want = E::encode(&src[t * width..(t + 1) * width]);
        let same = bytemuck::cast_slice::<E, u8>(&got[slot * row..(slot + 1) * row])
            == bytemuck::cast_slice::<E, u8>(&want);
        assert!(
            same,
            "{label} kv_store: token {t} (slot {slot}) differs from the CPU cache"
        );
    }
}

/// Cache rows holding positions [from, to) of `hist` (n_kv x hd values per position).
fn cache_of<E: HostKv>(hist: &[f32], from: usize, to: usize, n_slots: usize, kvw: usize) -> Vec<E> {
    let row = E::buffer_len(kvw);
    let mut c = vec![E::zeroed(); n_slots * row];
    for p in from..to {
        let s = p % n_slots;
        c[s * row..(s + 1) * row].copy_from_slice(&E::encode(&hist[p * kvw..(p + 1) * kvw]));
    }
    c
}

/// The values the cache holds for every position of a random history (per position row).
fn held_history<E: HostKv>(hist: &[f32], kvw: usize) -> Vec<f32> {
    hist.chunks_exact(kvw).flat_map(E::held).collect()
}

fn check_attention<E: HostKv>(dev: &CudaDevice, rng: &mut Rng, label: &str) {
    // (head_dim, n_heads, n_kv, window, p0, n): decode at position p0 + n - 1 after a
    // prefill of n tokens at p0 .. p0 + n - 1, with every key in the cache.
    for (hd, nh, nkv, window, p0, n) in [
        (256, 4, 2, 16, 20, 9),
        (128, 8, 2, 0, 40, 5),
        (64, 2, 1, 8, 3, 6),
    ] {
        let kvw = nkv * hd;
        let total = p0 + n;
        let (kh, vh) = (rng.vec(total * kvw), rng.vec(total * kvw));
        let (kheld, vheld) = (held_history::<E>(&kh, kvw), held_history::<E>(&vh, kvw));
        let n_slots = if window > 0 { window + n - 1 } else { total };
        let lo = if window > 0 {
            (p0 + 1).saturating_sub(window)
        } else {
            0
        };
        let shape = cuda::AttnShape {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            n_slots,
            window,
            scale: 1.0 / (hd as f32).sqrt(),
            one_chunk_f16: false,
        };
        let kd = cuda::upload(dev, &cache_of::<E>(&kh, lo, total, n_slots, kvw)).unwrap();
        let vd = cuda::upload(dev, &cache_of::<E>(&vh, lo, total, n_slots, kvw)).unwrap();
        let q = rng.vec(n * nh * hd);
        let qd = cuda::upload(dev, &q).unwrap();
        let mut want = Vec::new();
        for t in 0..n {
            let qp = p0 + t;
            let from = if window > 0 {
                (qp + 1).saturating_sub(window)
            } else {
                0
            };
            let keys: Vec<usize> = (from..=qp).collect();
            for h in 0..nh {
                let qo = (t * nh + h) * hd;
                // The kernels scale the query in f32, then (Q8_0) round it like the CPU.
                let scaled: Vec<f32> = q[qo..qo + hd].iter().map(|&x| x * shape.scale).collect();
                want.extend(attend(
                    &E::held(&scaled),
                    &kheld,
                    &vheld,
                    &keys,
                    h / (nh / nkv),
                    nkv,
                    hd,
                    1.0,
                ));
            }
        }
        let mag = vec![1.0; want.len()];
        let mut out = cuda::zeros::<f32>(dev, n * nh * hd).unwrap();
        cuda::attention_prefill_cached(dev, &qd, &kd, &vd, n, p0, 0..0, &shape, &mut out).unwrap();
        assert_close(
            &format!("{label} prefill attention hd {hd} window {window} p0 {p0} n {n}"),
            &cuda::download(dev, &out).unwrap(),
            &want,
            &mag,
            1e-5,
            0.0,
        );
        // Decode of the last token over the same cache.
        let last = (n - 1) * nh * hd;
        let ql = cuda::upload(dev, &q[last..]).unwrap();
        let pd = cuda::upload(dev, &[(total - 1) as i32]).unwrap();
        let mut scratch = cuda::DecodeScratch::new(dev, &shape).unwrap();
        let mut out1 = cuda::zeros::<f32>(dev, nh * hd).unwrap();
        cuda::attention_decode(dev, &ql, &kd, &vd, &pd, &shape, &mut scratch, &mut out1).unwrap();
        assert_close(
            &format!(
                "{label} decode attention hd {hd} window {window} pos {}",
                total - 1
            ),
            &cuda::download(dev, &out1).unwrap(),
            &want[last..],
            &mag[last..],
            1e-5,
            0.0,
        );
    }
}

#[test]
fn kv_store_writes_the_cpu_cache_bytes_for_f32_and_q8_0() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(21);
    check_store::<f32>(&dev, &mut rng, "f32");
    check_store::<u8>(&dev, &mut rng, "q8_0");
}

#[test]
fn attention_over_f32_and_q8_0_caches_matches_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(22);
    check_attention::<f32>(&dev, &mut rng, "f32");
    check_attention::<u8>(&dev, &mut rng, "q8_0");
}
