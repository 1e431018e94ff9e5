//! The fused QK-norm, RoPE and KV-cache store (`qk_norm_rope_store_<kv>` of kernels/rope.cu)
//! on every machine, no GPU needed: its queries, keys and both caches must be bit for bit
//! what `qk_norm_rope` followed by `kv_store_<kv>` (the launches the engine makes without
//! it) leave, for f16, f32 and Q8_0 caches, with rings smaller than the batch and positions
//! that wrap.
//!
//! tests/emu/rope_main.cpp compiles the real kernel sources as host C++ under the SIMT
//! emulation of tests/emu/emu.h (see its header for what is and is not emulated), under two
//! thread schedules. Needs a C++20 compiler `c++` with <ucontext.h>: the test fails when
//! there is none.

mod cuda_util;

use cuda_util::{build_emulator, run_emulator, Rng};
use gemma_kernels::cpu::ops::rope_theta_scale;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The sources of the emulator (the first is compiled; see `build_emulator`).
const SOURCES: [&str; 5] = [
    "tests/emu/rope_main.cpp",
    "tests/emu/emu.h",
    "kernels/common.cuh",
    "kernels/elementwise.cu",
    "kernels/rope.cu",
];
/// (schedule, seed) pairs every case runs under.
const SCHEDULES: [(&str, u64); 2] = [("random", 13), ("warp-greedy", 17)];
/// KV_* of kernels/common.cuh, with the bytes of one cached value row of `width` values.
const KINDS: [(u32, &str); 3] = [(0, "f16"), (1, "f32"), (2, "q8_0")];

fn emulator() -> &'static Path {
    static EMULATOR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match EMULATOR.get_or_init(|| build_emulator("rope_emu", &SOURCES)) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// One layer's inputs.
struct Case {
    kind: u32,
    n: usize,
    n_q: usize,
    n_k: usize,
    hd: usize,
    n_slots: usize,
    pos0: usize,
    rng_seed: u64,
}

impl Case {
    fn row_bytes(&self) -> usize {
        let width = self.n_k * self.hd;
        match self.kind {
            0 => 2 * width,
            1 => 4 * width,
            _ => width / 32 * 34,
        }
    }

    /// Bytes of the emulator's output for this case.
    fn output_len(&self) -> usize {
        4 * self.n * (self.n_q + self.n_k) * self.hd + 2 * self.n_slots * self.row_bytes()
    }

    fn encode(&self, fused: bool, out: &mut Vec<u8>) {
        let head = [
            u32::from(fused),
            self.kind,
            self.n as u32,
            self.n_q as u32,
            self.n_k as u32,
            self.hd as u32,
            self.n_slots as u32,
        ];
        out.extend(head.iter().flat_map(|v| v.to_ne_bytes()));
        // theta_scale (of freq_base 10 000), freq_scale, q_scale, eps
        for v in [rope_theta_scale(10_000.0, self.hd), 0.125, 0.0625, 1e-6] {
            out.extend(v.to_ne_bytes());
        }
        out.extend((0..self.n).flat_map(|t| ((self.pos0 + t) as i32).to_ne_bytes()));
        let mut rng = Rng::new(self.rng_seed);
        let mut floats = rng.vec(self.n * (self.n_q + 2 * self.n_k) * self.hd);
        floats.extend((0..2 * self.hd).map(|_| 1.0 + 0.2 * rng.uniform()));
        out.extend(floats.iter().flat_map(|v| v.to_ne_bytes()));
    }
}

#[test]
fn qk_norm_rope_store_matches_qk_norm_rope_then_kv_store() {
    let mut cases = Vec::new();
    for (kind, _) in KINDS {
        // Decode (one token at a wrapping ring position), a prefill batch into a ring that
        // holds only its last tokens, and Gemma 3's head sizes.
        for (n, n_q, n_k, hd, n_slots, pos0) in [
            (1, 8, 4, 256, 16, 37),
            (5, 4, 2, 128, 3, 6),
            (3, 2, 1, 64, 8, 0),
        ] {
            cases.push(Case {
                kind,
                n,
                n_q,
                n_k,
                hd,
                n_slots,
                pos0,
                rng_seed: 0x5eed_0000 + cases.len() as u64,
            });
        }
    }
    let mut input = ((2 * cases.len()) as u32).to_ne_bytes().to_vec();
    for c in &cases {
        c.encode(true, &mut input);
        c.encode(false, &mut input);
    }
    let mut bad = Vec::new();
    for (schedule, seed) in SCHEDULES {
        let output = run_emulator(emulator(), schedule, seed, input.clone());
        let mut rest = &output[..];
        for c in &cases {
            let (fused, tail) = rest.split_at(c.output_len());
            let (pair, tail) = tail.split_at(c.output_len());
            rest = tail;
            let name = KINDS[c.kind as usize].1;
            if let Some(i) = (0..fused.len()).find(|&i| fused[i] != pair[i]) {
                bad.push(format!(
                    "{name} cache, n {} heads {}/{} x {} slots {} pos0 {} ({schedule}): byte {i} of {} differs",
                    c.n,
                    c.n_q,
                    c.n_k,
                    c.hd,
                    c.n_slots,
                    c.pos0,
                    fused.len()
                ));
            }
            // The caches were written where the stores go (not left all 0xA5).
            let caches = &fused[4 * c.n * (c.n_q + c.n_k) * c.hd..];
            assert!(caches.iter().any(|&b| b != 0xA5), "{name}: nothing stored");
        }
        assert!(rest.is_empty(), "emulator output too long");
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    eprintln!(
        "qk_norm_rope_store: {} cases x {} schedules bit-identical to qk_norm_rope + kv_store",
        cases.len(),
        SCHEDULES.len()
    );
}
