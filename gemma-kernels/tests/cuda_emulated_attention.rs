//! The CUDA decode attention (kernels/attention.cu: `attn_decode_<kv>_<D>` over the key
//! splits, then `attn_combine_<D>`) on every machine, no GPU needed: against f64 softmax
//! attention over the values the cache holds (over a Q8_0 cache with the query rounded
//! through Q8_0, as the CPU backend quantizes it for Q·K), for f16, f32 and Q8_0 caches,
//! head sizes 64, 128 and 256, grouped queries, ring caches of sliding-window layers, and
//! splits from more than the live keys fill (empty ones) to 256 keys each (the most).
//!
//! tests/emu/attention_main.cpp compiles the real kernel sources as host C++ under the SIMT
//! emulation of tests/emu/emu.h (see its header for what is and is not emulated), under two
//! thread schedules. Needs a C++20 compiler `c++` with <ucontext.h>: the test fails when
//! there is none.

mod cuda_util;

use bytemuck::Zeroable;
use cuda_util::{assert_close, build_emulator, run_emulator, Rng};
use gemma_kernels::quant::{BlockQ8_0, QuantBlock};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SOURCES: [&str; 4] = [
    "tests/emu/attention_main.cpp",
    "tests/emu/emu.h",
    "kernels/common.cuh",
    "kernels/attention.cu",
];
const SCHEDULES: [(&str, u64); 2] = [("random", 19), ("warp-greedy", 23)];

fn emulator() -> &'static Path {
    static EMULATOR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match EMULATOR.get_or_init(|| build_emulator("attention_emu", &SOURCES)) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// A cache format (KV_* of kernels/common.cuh): its bytes for some values, and the values a
/// cache holds after storing them.
#[derive(Clone, Copy, Debug)]
enum Kind {
    F16 = 0,
    F32 = 1,
    Q8_0 = 2,
}

impl Kind {
    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Kind::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_bits().to_ne_bytes())
                .collect(),
            Kind::F32 => values.iter().flat_map(|v| v.to_ne_bytes()).collect(),
            Kind::Q8_0 => {
                let mut blocks = vec![BlockQ8_0::zeroed(); values.len() / 32];
                BlockQ8_0::quantize_act(values, &mut blocks);
                bytemuck::cast_slice(&blocks).to_vec()
            }
        }
    }

    fn held(self, values: &[f32]) -> Vec<f32> {
        match self {
            Kind::F16 => values
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect(),
            Kind::F32 => values.to_vec(),
            Kind::Q8_0 => {
                let mut blocks = vec![BlockQ8_0::zeroed(); values.len() / 32];
                BlockQ8_0::quantize_act(values, &mut blocks);
                let mut out = vec![0f32; values.len()];
                BlockQ8_0::dequantize(&blocks, &mut out);
                out
            }
        }
    }
}

/// One decode step: the query at position `pos` over a cache of `n_slots` slots.
struct Case {
    kind: Kind,
    d: usize,
    n_heads: usize,
    n_kv: usize,
    n_slots: usize,
    window: usize,
    pos: usize,
    n_splits: usize,
    q: Vec<f32>,
    /// Per position (pos + 1 of them) n_kv x d keys and values.
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }

    /// The positions the query sees.
    fn live(&self) -> std::ops::RangeInclusive<usize> {
        let from = if self.window > 0 {
            (self.pos + 1).saturating_sub(self.window)
        } else {
            0
        };
        from..=self.pos
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let head = [
            self.kind as u32,
            self.d as u32,
            self.n_heads as u32,
            self.n_kv as u32,
            self.n_slots as u32,
            self.window as u32,
            self.pos as u32,
            self.n_splits as u32,
        ];
        out.extend(head.iter().flat_map(|v| v.to_ne_bytes()));
        out.extend(self.scale().to_ne_bytes());
        out.extend(self.q.iter().flat_map(|v| v.to_ne_bytes()));
        let width = self.n_kv * self.d;
        for hist in [&self.k, &self.v] {
            // Slots hold the live positions; the others stale random values.
            let mut rows: Vec<Vec<f32>> = (0..self.n_slots)
                .map(|s| hist[..width].iter().map(|v| v + s as f32).collect())
                .collect();
            for p in self.live() {
                rows[p % self.n_slots] = hist[p * width..(p + 1) * width].to_vec();
            }
            for row in rows {
                out.extend(self.kind.encode(&row));
            }
        }
    }

    /// f64 attention over the held values; (want, magnitude) per output.
    fn reference(&self) -> Vec<f64> {
        let (d, width, g) = (self.d, self.n_kv * self.d, self.n_heads / self.n_kv);
        let held = |hist: &[f32], p: usize| self.kind.held(&hist[p * width..(p + 1) * width]);
        let mut want = Vec::new();
        for h in 0..self.n_heads {
            let hk = h / g;
            let scaled: Vec<f32> = self.q[h * d..(h + 1) * d]
                .iter()
                .map(|&x| x * self.scale())
                .collect();
            let q = match self.kind {
                Kind::Q8_0 => self.kind.held(&scaled),
                _ => scaled,
            };
            let keys: Vec<usize> = self.live().collect();
            let scores: Vec<f64> = keys
                .iter()
                .map(|&p| {
                    let k = held(&self.k, p);
                    (0..d)
                        .map(|i| f64::from(q[i]) * f64::from(k[hk * d + i]))
                        .sum()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = e.iter().sum();
            let vals: Vec<Vec<f32>> = keys.iter().map(|&p| held(&self.v, p)).collect();
            for i in 0..d {
                want.push(
                    vals.iter()
                        .zip(&e)
                        .map(|(v, w)| w * f64::from(v[hk * d + i]))
                        .sum::<f64>()
                        / l,
                );
            }
        }
        want
    }
}

#[test]
fn decode_attention_matches_f64_reference() {
    let mut rng = Rng::new(0xa77e_0001);
    let mut cases = Vec::new();
    for kind in [Kind::F16, Kind::F32, Kind::Q8_0] {
        // (d, heads, kv heads, slots, window, pos, splits): a global layer with its keys in
        // 2 splits and with more splits than keys; a sliding-window ring whose live keys wrap;
        // 768 live keys in 3 splits of 256 (the most); grouped queries of 4 and 1; keys in
        // 38 of 40 splits of 32 (the combine's thread groups each take several splits: 4
        // groups for d 256, 16 for d 64) with the rest empty.
        for (d, n_heads, n_kv, n_slots, window, pos, n_splits) in [
            (256, 4, 2, 64, 0, 40, 2),
            (256, 4, 2, 64, 0, 40, 8),
            (128, 8, 2, 16, 16, 37, 4),
            (64, 2, 2, 768, 0, 767, 3),
            (256, 2, 1, 1280, 0, 1200, 40),
            (64, 4, 2, 1280, 0, 1200, 40),
        ] {
            let width = n_kv * d;
            cases.push(Case {
                kind,
                d,
                n_heads,
                n_kv,
                n_slots,
                window,
                pos,
                n_splits,
                q: rng.vec(n_heads * d),
                k: rng.vec((pos + 1) * width),
                v: rng.vec((pos + 1) * width),
            });
        }
    }
    let mut input = (cases.len() as u32).to_ne_bytes().to_vec();
    for c in &cases {
        c.encode(&mut input);
    }
    for (schedule, seed) in SCHEDULES {
        let output = run_emulator(emulator(), schedule, seed, input.clone());
        let floats: Vec<f32> = output
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let mut rest = &floats[..];
        for c in &cases {
            let (got, tail) = rest.split_at(c.n_heads * c.d);
            rest = tail;
            let want = c.reference();
            let mag = vec![1.0; want.len()];
            assert_close(
                &format!(
                    "{:?} d {} heads {}/{} slots {} window {} pos {} splits {} ({schedule})",
                    c.kind, c.d, c.n_heads, c.n_kv, c.n_slots, c.window, c.pos, c.n_splits
                ),
                got,
                &want,
                &mag,
                1e-5,
                0.0,
            );
        }
        assert!(rest.is_empty(), "emulator output too long");
    }
}
