//! The device's greedy pick (`cuda::argmax`) against a plain scan of the host: the first
//! index of the highest value, NaN never winning, 0 when no value is above -inf; on rows of
//! Gemma 3's vocabulary (262144) and of sizes that leave first-pass blocks empty, with ties,
//! NaN, infinities and signed zeros. Runs where a CUDA device is present (the emulated one
//! in CI); elsewhere it prints "no CUDA device: GPU tests not run" and returns.

mod cuda_util;

use cuda_util::{device, Rng};
use gemma_kernels::cuda::{self, ArgmaxScratch};

/// The rule of `gemma_core::sampling::argmax`, as the plainest scan states it.
fn first_highest(x: &[f32]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &v) in x.iter().enumerate() {
        if v > best.1 {
            best = (i as u32, v);
        }
    }
    best.0
}

#[test]
fn device_argmax_picks_the_first_highest_value() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(31);
    let mut scratch = ArgmaxScratch::new(&dev).unwrap();
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| (rng.next_u64() % 20_001) as f32 / 1000.0 - 10.0)
            .collect()
    };
    let mut cases: Vec<(&str, Vec<f32>)> = Vec::new();
    for n in [1, 5, 127, 129, 1000, 262_144] {
        cases.push(("random", random(n)));
    }
    let mut tie = random(262_144);
    tie[70_000] = 50.0;
    tie[200_000] = 50.0;
    tie[10] = 49.999_996;
    cases.push(("tie between two slices", tie));
    let mut tie_in_slice = random(262_144);
    tie_in_slice[4097] = 50.0;
    tie_in_slice[4095] = 50.0;
    cases.push(("tie inside one slice", tie_in_slice));
    let mut nan = vec![f32::NAN; 1000];
    nan[999] = -1e30;
    cases.push(("NaN never wins", nan));
    cases.push(("all NaN", vec![f32::NAN; 300]));
    cases.push(("all -inf", vec![f32::NEG_INFINITY; 300]));
    let mut nan_inf = vec![f32::NEG_INFINITY; 300];
    nan_inf[0] = f32::NAN;
    cases.push(("NaN and -inf", nan_inf));
    let mut zeros = vec![-1.0; 300];
    zeros[7] = -0.0;
    zeros[200] = 0.0;
    cases.push(("-0 before +0", zeros));
    let mut infinities = random(5000);
    infinities[4000] = f32::INFINITY;
    infinities[4001] = f32::INFINITY;
    infinities[3] = f32::NAN;
    cases.push(("two +inf", infinities));
    let mut tiny = vec![-3.0; 300];
    tiny[150] = f32::from_bits(1); // the smallest subnormal beats -0 and +0
    tiny[100] = 0.0;
    cases.push(("subnormal", tiny));
    for (name, x) in &cases {
        let d = cuda::upload(&dev, x).unwrap();
        cuda::argmax(&dev, &d, x.len(), &mut scratch).unwrap();
        let got = cuda::download(&dev, scratch.index()).unwrap()[0];
        assert_eq!(got as u32, first_highest(x), "{name}, {} values", x.len());
    }
    // Only the first n values count.
    let mut longer = random(3000);
    longer[2500] = 99.0;
    let d = cuda::upload(&dev, &longer).unwrap();
    cuda::argmax(&dev, &d, 2000, &mut scratch).unwrap();
    let got = cuda::download(&dev, scratch.index()).unwrap()[0];
    assert_eq!(got as u32, first_highest(&longer[..2000]));
    assert!(cuda::argmax(&dev, &d, 3001, &mut scratch).is_err());
}
