//! Helpers shared by the `quant_*` tests: fixture readers and a seeded random source.

#![allow(dead_code)]

use gemma_gguf::GgmlType;

/// The shared reference data, relative to this crate.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

/// The formats this test suite covers (F32 has no fixture of its own).
pub const TYPES: [GgmlType; 9] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// The bytes of fixture file `rel` (relative to the fixtures folder); fails clearly if absent.
pub fn read(rel: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{rel}");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("fixture {path} is missing ({e}); the tests need ../shared/fixtures")
    })
}

/// A little-endian `f32` fixture file.
pub fn read_f32(rel: &str) -> Vec<f32> {
    le_f32(&read(rel))
}

/// A little-endian `f64` fixture file.
pub fn read_f64(rel: &str) -> Vec<f64> {
    read(rel)
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")))
        .collect()
}

/// Little-endian `f32` values of `bytes`.
pub fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4-byte chunk")))
        .collect()
}

/// A JSON fixture file.
pub fn read_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("fixture {rel}: bad JSON: {e}"))
}

/// Index and count of the differing `block`-byte chunks of two equally long byte strings.
pub fn block_mismatches(ours: &[u8], theirs: &[u8], block: usize) -> (Option<usize>, usize) {
    assert_eq!(ours.len(), theirs.len(), "byte lengths differ");
    let mut first = None;
    let mut count = 0;
    for (i, (a, b)) in ours.chunks(block).zip(theirs.chunks(block)).enumerate() {
        if a != b {
            first.get_or_insert(i);
            count += 1;
        }
    }
    (first, count)
}

/// SplitMix64: a tiny seeded generator, enough for test data.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// `n` values that are hard for quantizers: normal values whose scale varies from
    /// 0.01 to 100 every 64 elements, a few outliers 10-50x larger (all within F16 range), and all-zero stretches of `zero_run` elements.
    pub fn hard_row(&mut self, n: usize, zero_run: usize) -> Vec<f32> {
        let mut x: Vec<f32> = (0..n).map(|_| self.normal()).collect();
        for chunk in x.chunks_mut(64) {
            let scale = 10f32.powf(self.uniform() * 4.0 - 2.0);
            chunk.iter_mut().for_each(|v| *v *= scale);
        }
        for _ in 0..n / 100 + 1 {
            let i = (self.next_u64() % n as u64) as usize;
            x[i] *= 10.0 + 40.0 * self.uniform();
        }
        if zero_run > 0 && n >= 2 * zero_run {
            let start = (self.next_u64() % (n / zero_run) as u64) as usize * zero_run;
            x[start..start + zero_run].iter_mut().for_each(|v| *v = 0.0);
        }
        x
    }
}
