//! GPU kernels against CPU references: dequantization bit for bit with
//! `quant::dequantize`, activation quantization bit for bit with an independent twin, and
//! every product, norm, RoPE, elementwise op and attention against f64 math on random data.
//! Runs where a CUDA device is present; elsewhere each test prints
//! "no CUDA device: GPU tests not run" and returns (the one allowed exception to no-skip).

mod cuda_util;

use cuda_util::*;
use gemma_gguf::GgmlType;
use gemma_kernels::cuda::{self, launch, ops, ActFormat, DeviceMatrix, Q8Activations};

const QUANT_TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
];

/// A row length that is not a multiple of 256 for 32-blocks (exercises the tile tail).
fn cols_for(ty: GgmlType) -> usize {
    if ty.block_elems() == 256 {
        768
    } else {
        640
    }
}

#[test]
fn dequantization_matches_cpu_bit_for_bit() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(1);
    for ty in cuda::SUPPORTED_TYPES {
        let (rows, cols) = (7, cols_for(ty));
        let data = random_matrix(&mut rng, ty, rows, cols);
        let want = dequantize(ty, &data, rows * cols);
        let w = DeviceMatrix::upload(&dev, ty, &data, rows, cols).unwrap();
        let ids: Vec<i32> = (0..rows as i32).rev().collect();
        let ids_d = cuda::upload(&dev, &ids).unwrap();
        let mut out = cuda::zeros::<f32>(&dev, rows * cols).unwrap();
        ops::get_rows(&dev, &w, &ids_d, rows, 1.0, &mut out).unwrap();
        let got = cuda::download(&dev, &out).unwrap();
        for (t, &id) in ids.iter().enumerate() {
            for i in 0..cols {
                let (g, e) = (got[t * cols + i], want[id as usize * cols + i]);
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{ty} row {id} elem {i}: gpu {g} cpu {e}"
                );
            }
        }
        // The embedding scale is one more rounded product.
        ops::get_rows(&dev, &w, &ids_d, 1, 3.5, &mut out).unwrap();
        let got = cuda::download(&dev, &out).unwrap();
        for i in 0..cols {
            assert_eq!(
                got[i].to_bits(),
                (want[ids[0] as usize * cols + i] * 3.5).to_bits(),
                "{ty} scaled {i}"
            );
        }
    }
}

#[test]
fn activation_quantization_matches_the_cpu_backend_exactly() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(2);
    for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
        for (rows, k) in [(1, 256), (3, 640), (5, 3840)] {
            let mut x = rng.vec(rows * k);
            x[k / 2] = 0.0;
            for v in &mut x[..32] {
                *v = 0.0; // an all-zero block
            }
            // Equal magnitudes of both signs: the first one decides Q8_K's sign.
            x[40] = -3.0;
            x[41] = 3.0;
            let xd = cuda::upload(&dev, &x).unwrap();
            let mut q = Q8Activations::new(&dev, k, rows).unwrap();
            launch::quantize_q8_1(&dev, &xd, rows, k, format, &mut q).unwrap();
            let (qs, ds) = q.download(&dev).unwrap();
            let twin = act_twin(&x, rows, k, format);
            assert_eq!(qs, twin.qs, "{format:?} q values, {rows} x {k}");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&ds),
                bits(&twin.ds),
                "{format:?} d and s, {rows} x {k}"
            );
        }
    }
}

/// GPU product of a random `ty` matrix with n random tokens against f64 math on the same
/// quantized activations.
fn check_product(dev: &cuda::CudaDevice, rng: &mut Rng, ty: GgmlType, rows: usize, n: usize) {
    let cols = cols_for(ty);
    let data = random_matrix(rng, ty, rows, cols);
    let wf = dequantize(ty, &data, rows * cols);
    let x = rng.vec(n * cols);
    let w = DeviceMatrix::upload(dev, ty, &data, rows, cols).unwrap();
    let xd = cuda::upload(dev, &x).unwrap();
    let mut scratch = Q8Activations::new(dev, cols, n).unwrap();
    let mut y = cuda::zeros::<f32>(dev, n * rows).unwrap();
    launch::matmul(dev, &w, &xd, n, &mut scratch, &mut y).unwrap();
    let got = cuda::download(dev, &y).unwrap();
    let format = ActFormat::for_weights(ty);
    let act = act_twin(&x, n, cols, format);
    let xq = if launch::uses_q8_activations(ty) {
        q8_1_values(&act, n, cols)
    } else {
        x
    };
    let (mut want, mag) = matmul_ref(&wf, &xq, rows, cols, n);
    if launch::uses_q8_activations(ty) && format == ActFormat::Q8_1 {
        min_term_correction(ty, &data, rows, cols, &act, n, &mut want);
    }
    assert_close(
        &format!("{ty} product {rows} x {cols}, {n} tokens"),
        &got,
        &want,
        &mag,
        2e-5,
        1e-6,
    );
}

/// The benchmarks' other layouts of the one-token product (`launch::MMVQ_EXPERIMENTS`)
/// against f64 math, as the engine's: rows sharing a block (768 columns) and long rows in
/// several rounds (18432 columns: 576 32-weight or 288 64-weight tasks).
#[test]
fn mmvq_experiments_match_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(12);
    for e in &launch::MMVQ_EXPERIMENTS {
        for (rows, cols) in [(67, 768), (5, 18432)] {
            let data = random_matrix(&mut rng, e.ty, rows, cols);
            let wf = dequantize(e.ty, &data, rows * cols);
            let x = rng.vec(cols);
            let w = DeviceMatrix::upload(&dev, e.ty, &data, rows, cols).unwrap();
            let xd = cuda::upload(&dev, &x).unwrap();
            let format = ActFormat::for_weights(e.ty);
            let mut q = Q8Activations::new(&dev, cols, 1).unwrap();
            launch::quantize_q8_1(&dev, &xd, 1, cols, format, &mut q).unwrap();
            let mut y = cuda::zeros::<f32>(&dev, rows).unwrap();
            launch::matvec_q8_experiment(&dev, &w, &q, e, &mut y).unwrap();
            let got = cuda::download(&dev, &y).unwrap();
            let act = act_twin(&x, 1, cols, format);
            let (want, mag) = matmul_ref(&wf, &q8_1_values(&act, 1, cols), rows, cols, 1);
            assert_close(
                &format!("{} {rows} x {cols}", e.kernel),
                &got,
                &want,
                &mag,
                2e-5,
                1e-6,
            );
        }
    }
}

#[test]
fn matvec_matches_reference_for_one_to_eight_tokens() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(3);
    for ty in cuda::SUPPORTED_TYPES {
        for n in [1, 2, 3, 8] {
            check_product(&dev, &mut rng, ty, 67, n);
        }
    }
}

/// A tall one-token product (the output projection over a vocabulary) takes more than 8
/// short rows per block (as many as a round of tasks covers) and matches f64 math, the
/// last block partial.
#[test]
fn tall_matvec_with_many_rows_per_block_matches_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(17);
    for ty in [GgmlType::Q8_0, GgmlType::Q6_K] {
        let rows = 32_768 + 37;
        let per_block = launch::mmvq_rows_per_block(ty, rows, cols_for(ty), 1);
        assert!(per_block > 8, "{ty}: {per_block} rows per block");
        check_product(&dev, &mut rng, ty, rows, 1);
    }
}

#[test]
fn tensor_core_matmul_matches_reference_with_ragged_tiles() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(4);
    for ty in QUANT_TYPES
        .iter()
        .copied()
        .chain([GgmlType::F16, GgmlType::BF16, GgmlType::F32])
    {
        for (rows, n) in [(64, 9), (130, 70)] {
            check_product(&dev, &mut rng, ty, rows, n);
        }
    }
}

/// The F16 / BF16 prefill products (tensor cores, activations split into parts of the
/// weight type) keep the f32 activations: times an identity matrix (a 136-wide K, so the
/// last K tile is partial, and ragged row and token tiles), BF16's three parts give every
/// activation back bit for bit and F16's two to within 2^-22 of it (plus 2^-25: F16
/// subnormals). One rounded part would be 2^-12 (F16) or 2^-9 (BF16) off.
#[test]
fn float_tensor_core_products_keep_f32_activations() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(14);
    let (k, n) = (136, 70);
    // Activations over many binades, some with all 24 significant bits set.
    let mut x: Vec<f32> = (0..n * k)
        .map(|i| rng.activation() * 2f32.powi(i as i32 % 17 - 8))
        .collect();
    x[5] = f32::from_bits(0x3FFF_FFFF);
    x[k + 7] = -f32::from_bits(0x4180_0001);
    for (ty, one, rel, abs) in [
        (GgmlType::F16, 0x3C00u16, 2f64.powi(-22), 2f64.powi(-25)),
        (GgmlType::BF16, 0x3F80, 0.0, 0.0),
    ] {
        let data: Vec<u8> = (0..k * k)
            .flat_map(|i| if i / k == i % k { one } else { 0 }.to_le_bytes())
            .collect();
        let w = DeviceMatrix::upload(&dev, ty, &data, k, k).unwrap();
        let xd = cuda::upload(&dev, &x).unwrap();
        let mut y = cuda::zeros::<f32>(&dev, n * k).unwrap();
        launch::matmul_float(&dev, &w, &xd, n, &mut y).unwrap();
        let got = cuda::download(&dev, &y).unwrap();
        for (i, (&g, &want)) in got.iter().zip(&x).enumerate() {
            let err = (f64::from(g) - f64::from(want)).abs();
            assert!(
                err <= rel * f64::from(want).abs() + abs,
                "{ty} identity product, token {} value {}: got {g:e} want {want:e}",
                i / k,
                i % k
            );
        }
    }
}

#[test]
fn rms_norms_match_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(5);
    let (rows, dim, eps) = (6, 640, 1e-6f32);
    let x = rng.vec(rows * dim);
    let w: Vec<f32> = (0..dim).map(|_| 1.0 + rng.uniform()).collect();
    let r0 = rng.vec(rows * dim);
    let mut want = vec![0f64; rows * dim];
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / dim as f64;
        let inv = 1.0 / (ms + f64::from(eps)).sqrt();
        for i in 0..dim {
            want[r * dim + i] = f64::from(row[i]) * inv * f64::from(w[i]);
        }
    }
    let mag: Vec<f64> = want.iter().map(|v| v.abs()).collect();
    let (xd, wd) = (
        cuda::upload(&dev, &x).unwrap(),
        cuda::upload(&dev, &w).unwrap(),
    );
    let mut out = cuda::zeros::<f32>(&dev, rows * dim).unwrap();
    ops::rms_norm(&dev, &xd, &wd, &mut out, rows, dim, eps).unwrap();
    assert_close(
        "rms_norm",
        &cuda::download(&dev, &out).unwrap(),
        &want,
        &mag,
        1e-5,
        1e-7,
    );

    let mut inplace = cuda::upload(&dev, &x).unwrap();
    ops::rms_norm_inplace(&dev, &mut inplace, &wd, rows * 10, dim / 10, eps).unwrap();
    let got = cuda::download(&dev, &inplace).unwrap();
    for h in 0..rows * 10 {
        let row = &x[h * 64..(h + 1) * 64];
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / 64.0;
        let inv = 1.0 / (ms + f64::from(eps)).sqrt();
        for i in 0..64 {
            let e = f64::from(row[i]) * inv * f64::from(w[i]);
            assert!(
                (f64::from(got[h * 64 + i]) - e).abs() <= 1e-5 * e.abs() + 1e-7,
                "per-head norm {h} {i}"
            );
        }
    }

    let mut res = cuda::upload(&dev, &r0).unwrap();
    let mut normed = cuda::upload(&dev, &x).unwrap();
    ops::rms_norm_add(&dev, &mut normed, &wd, &mut res, rows, dim, eps).unwrap();
    assert_close(
        "rms_norm_add normed input",
        &cuda::download(&dev, &normed).unwrap(),
        &want,
        &mag,
        1e-5,
        1e-7,
    );
    let want_add: Vec<f64> = want
        .iter()
        .zip(&r0)
        .map(|(a, &b)| a + f64::from(b))
        .collect();
    let mag_add: Vec<f64> = want
        .iter()
        .zip(&r0)
        .map(|(a, &b)| a.abs() + f64::from(b).abs())
        .collect();
    assert_close(
        "rms_norm_add",
        &cuda::download(&dev, &res).unwrap(),
        &want_add,
        &mag_add,
        1e-5,
        1e-7,
    );

    // Fused with the quantization, in every format: the values of rms_norm, quantized as
    // the CPU backend quantizes them.
    let normed = cuda::download(&dev, &out).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
        let mut q = Q8Activations::new(&dev, dim, rows).unwrap();
        let mut out_q = cuda::zeros::<f32>(&dev, rows * dim).unwrap();
        ops::rms_norm_q8_1(&dev, &xd, &wd, &mut out_q, rows, dim, eps, format, &mut q).unwrap();
        assert_eq!(
            bits(&cuda::download(&dev, &out_q).unwrap()),
            bits(&normed),
            "rms_norm_q8_1 writes the values of rms_norm"
        );
        let (qs, ds) = q.download(&dev).unwrap();
        let twin = act_twin(&normed, rows, dim, format);
        assert_eq!(qs, twin.qs, "rms_norm_q8_1 {format:?} q values");
        assert_eq!(
            bits(&ds),
            bits(&twin.ds),
            "rms_norm_q8_1 {format:?} d and s"
        );
    }
}

#[test]
fn rope_matches_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(6);
    let (n, heads, hd) = (5, 3, 128);
    let x = rng.vec(n * heads * hd);
    let positions: Vec<i32> = vec![0, 1, 17, 511, 1000];
    for (base, fscale) in [(10_000.0f32, 1.0f32), (1_000_000.0, 0.125)] {
        let mut xd = cuda::upload(&dev, &x).unwrap();
        let pd = cuda::upload(&dev, &positions).unwrap();
        let rope = ops::Rope {
            n_heads: heads,
            head_dim: hd,
            freq_base: base,
            freq_scale: fscale,
        };
        ops::rope_neox(&dev, &mut xd, &pd, n, rope).unwrap();
        let got = cuda::download(&dev, &xd).unwrap();
        let half = hd / 2;
        let mut want = vec![0f64; x.len()];
        for (t, &pos) in positions.iter().enumerate() {
            for h in 0..heads {
                let o = (t * heads + h) * hd;
                for i in 0..half {
                    let theta = f64::from(pos)
                        * f64::from(fscale)
                        * f64::from(base).powf(-2.0 * i as f64 / hd as f64);
                    let (s, c) = theta.sin_cos();
                    let (x0, x1) = (f64::from(x[o + i]), f64::from(x[o + i + half]));
                    want[o + i] = x0 * c - x1 * s;
                    want[o + i + half] = x0 * s + x1 * c;
                }
            }
        }
        // The angle is computed in f32, as llama.cpp does: its absolute error grows with
        // the position (about pos * 2^-23 rad per rounding), so the bound does too.
        let mag: Vec<f64> = (0..x.len())
            .map(|i| {
                let pos = f64::from(positions[i / (heads * hd)]);
                (f64::from(x[i].abs()) + 1.0) * (1.0 + pos / 100.0)
            })
            .collect();
        assert_close(&format!("rope base {base}"), &got, &want, &mag, 2e-4, 0.0);
        // The angles are the CPU's, bit for bit (rope_theta_scale, then one f32 product per
        // pair): only sin / cos and the rotation's last bits may differ, at any position.
        let mut cpu = x.clone();
        for (t, &pos) in positions.iter().enumerate() {
            let token = &mut cpu[t * heads * hd..(t + 1) * heads * hd];
            gemma_kernels::cpu::ops::rope_neox(token, heads, hd, pos as usize, base, fscale);
        }
        let cpu_f64: Vec<f64> = cpu.iter().map(|&v| f64::from(v)).collect();
        let pair_mag: Vec<f64> = (0..x.len())
            .map(|i| {
                let (o, j) = (i - i % hd, i % (hd / 2));
                f64::from(x[o + j].abs() + x[o + j + hd / 2].abs())
            })
            .collect();
        assert_close(
            &format!("rope base {base} vs CPU"),
            &got,
            &cpu_f64,
            &pair_mag,
            1e-6,
            1e-7,
        );
    }
}

#[test]
fn elementwise_ops_match_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(7);
    let n = 10_000;
    let (a, b) = (rng.vec(n), rng.vec(n));
    let (ad, bd) = (
        cuda::upload(&dev, &a).unwrap(),
        cuda::upload(&dev, &b).unwrap(),
    );
    // GeGLU: the CPU engine's F16 GELU (gates over the whole table and past it).
    let gates: Vec<f32> = (0..n).map(|i| 12.0 * a[i].clamp(-1.0, 1.0)).collect();
    let mut out = cuda::zeros::<f32>(&dev, n).unwrap();
    ops::geglu(&dev, &cuda::upload(&dev, &gates).unwrap(), &bd, &mut out, n).unwrap();
    check_geglu_f16(&cuda::download(&dev, &out).unwrap(), &gates, &b);

    let mut sum = cuda::upload(&dev, &a).unwrap();
    ops::add(&dev, &mut sum, &bd, n).unwrap();
    let got = cuda::download(&dev, &sum).unwrap();
    assert!(
        got.iter()
            .zip(a.iter().zip(&b))
            .all(|(g, (x, y))| g.to_bits() == (x + y).to_bits()),
        "add"
    );

    ops::scale(&dev, &mut sum, 0.37, n).unwrap();
    let got2 = cuda::download(&dev, &sum).unwrap();
    assert!(
        got2.iter()
            .zip(&got)
            .all(|(g, x)| g.to_bits() == (x * 0.37).to_bits()),
        "scale"
    );

    let mut h = cuda::zeros::<u16>(&dev, n).unwrap();
    ops::f32_to_f16(&dev, &ad, &mut h, n).unwrap();
    let got = cuda::download(&dev, &h).unwrap();
    assert!(
        got.iter()
            .zip(&a)
            .all(|(g, x)| *g == half::f16::from_f32(*x).to_bits()),
        "f32_to_f16"
    );
}

#[test]
fn kv_store_fills_ring_slots_with_the_last_tokens() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(8);
    let (n, width, n_slots, p0) = (11, 32, 4, 5);
    let src = rng.vec(n * width);
    let positions: Vec<i32> = (p0..p0 + n as i32).collect();
    let (sd, pd) = (
        cuda::upload(&dev, &src).unwrap(),
        cuda::upload(&dev, &positions).unwrap(),
    );
    let mut cache = cuda::zeros::<u16>(&dev, n_slots * width).unwrap();
    ops::kv_store(&dev, &sd, n, width, &pd, n_slots, &mut cache).unwrap();
    // Keys and values in one launch: the values are the rows negated.
    let neg: Vec<f32> = src.iter().map(|v| -v).collect();
    let nd = cuda::upload(&dev, &neg).unwrap();
    let mut k_cache = cuda::zeros::<u16>(&dev, n_slots * width).unwrap();
    let mut v_cache = cuda::zeros::<u16>(&dev, n_slots * width).unwrap();
    ops::kv_store_pair(
        &dev,
        &sd,
        &nd,
        n,
        width,
        &pd,
        n_slots,
        &mut k_cache,
        &mut v_cache,
    )
    .unwrap();
    for (what, cache, rows) in [
        ("k", &cache, &src),
        ("pair k", &k_cache, &src),
        ("pair v", &v_cache, &neg),
    ] {
        let got = cuda::download(&dev, cache).unwrap();
        for t in n - n_slots..n {
            let slot = positions[t] as usize % n_slots;
            for i in 0..width {
                assert_eq!(
                    got[slot * width + i],
                    half::f16::from_f32(rows[t * width + i]).to_bits(),
                    "{what}: token {t} elem {i}"
                );
            }
        }
    }
}

#[test]
fn decode_attention_matches_reference_on_rings_and_global_caches() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(9);
    // (head_dim, n_heads, n_kv, n_slots, window, pos)
    for (hd, nh, nkv, n_slots, window, pos) in [
        (256, 4, 2, 16, 16, 40),
        (256, 4, 1, 64, 0, 37),
        (128, 8, 2, 300, 0, 299),
        (64, 2, 2, 8, 8, 3),
    ] {
        let DecodeKv {
            kh,
            vh,
            start,
            k_cache: kc,
            v_cache: vc,
        } = decode_kv(&mut rng, pos, window, n_slots, nkv * hd);
        let q = rng.vec(nh * hd);
        let shape = cuda::AttnShape {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            n_slots,
            window,
            scale: 1.0 / (hd as f32).sqrt(),
            one_chunk_f16: false,
        };
        let (qd, kd, vd) = (
            cuda::upload(&dev, &q).unwrap(),
            cuda::upload(&dev, &kc).unwrap(),
            cuda::upload(&dev, &vc).unwrap(),
        );
        let pd = cuda::upload(&dev, &[pos as i32]).unwrap();
        let mut scratch = cuda::DecodeScratch::new(&dev, &shape).unwrap();
        let mut out = cuda::zeros::<f32>(&dev, nh * hd).unwrap();
        cuda::attention_decode(&dev, &qd, &kd, &vd, &pd, &shape, &mut scratch, &mut out).unwrap();
        let got = cuda::download(&dev, &out).unwrap();
        let keys: Vec<usize> = (start..=pos).collect();
        let mut want = Vec::new();
        for h in 0..nh {
            want.extend(attend(
                &q[h * hd..(h + 1) * hd],
                &kh,
                &vh,
                &keys,
                h / (nh / nkv),
                nkv,
                hd,
                shape.scale,
            ));
        }
        let mag = vec![1.0; want.len()];
        assert_close(
            &format!("decode attention hd {hd} window {window} pos {pos}"),
            &got,
            &want,
            &mag,
            1e-5,
            0.0,
        );
    }
}

#[test]
fn prefill_attention_matches_reference_with_cache_and_window() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(10);
    // (head_dim, n_heads, n_kv, n_slots, window, p0, n)
    for (hd, nh, nkv, n_slots, window, p0, n) in [
        (256, 4, 2, 16, 16, 20, 37),
        (256, 4, 1, 128, 0, 9, 70),
        (128, 4, 4, 80, 0, 0, 80),
        (64, 8, 2, 24, 24, 50, 33),
    ] {
        let kvw = nkv * hd;
        let total = p0 + n;
        let (kh, vh) = (history(&mut rng, total, kvw), history(&mut rng, total, kvw));
        let from = if window > 0 {
            p0.saturating_sub(window)
        } else {
            0
        };
        let (kc, vc) = (
            cache_of(&kh, from, p0, n_slots, kvw),
            cache_of(&vh, from, p0, n_slots, kvw),
        );
        let (kn, vn) = (to_f16_bits(&kh[p0 * kvw..]), to_f16_bits(&vh[p0 * kvw..]));
        let q = rng.vec(n * nh * hd);
        let shape = cuda::AttnShape {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            n_slots,
            window,
            scale: 1.0 / (hd as f32).sqrt(),
            one_chunk_f16: false,
        };
        let up16 = |v: &Vec<u16>| cuda::upload(&dev, v).unwrap();
        let (kcd, vcd, knd, vnd) = (up16(&kc), up16(&vc), up16(&kn), up16(&vn));
        let qd = cuda::upload(&dev, &q).unwrap();
        let mut out = cuda::zeros::<f32>(&dev, n * nh * hd).unwrap();
        cuda::attention_prefill(&dev, &qd, &knd, &vnd, &kcd, &vcd, n, p0, &shape, &mut out)
            .unwrap();
        let got = cuda::download(&dev, &out).unwrap();
        let mut want = Vec::new();
        for t in 0..n {
            let qp = p0 + t;
            let lo = if window > 0 {
                (qp + 1).saturating_sub(window)
            } else {
                0
            };
            let keys: Vec<usize> = (lo..=qp).collect();
            for h in 0..nh {
                let qo = (t * nh + h) * hd;
                want.extend(attend(
                    &q[qo..qo + hd],
                    &kh,
                    &vh,
                    &keys,
                    h / (nh / nkv),
                    nkv,
                    hd,
                    shape.scale,
                ));
            }
        }
        let mag = vec![1.0; want.len()];
        assert_close(
            &format!("prefill attention hd {hd} window {window} p0 {p0} n {n}"),
            &got,
            &want,
            &mag,
            1e-5,
            0.0,
        );

        // The same with every key already in a cache large enough for the batch.
        let slots = if window > 0 { window + n - 1 } else { total };
        let lo = if window > 0 {
            (p0 + 1).saturating_sub(window)
        } else {
            0
        };
        let full = cuda::AttnShape {
            n_slots: slots,
            ..shape
        };
        let (kf, vf) = (
            up16(&cache_of(&kh, lo, total, slots, kvw)),
            up16(&cache_of(&vh, lo, total, slots, kvw)),
        );
        let mut out2 = cuda::zeros::<f32>(&dev, n * nh * hd).unwrap();
        cuda::attention_prefill_cached(&dev, &qd, &kf, &vf, n, p0, 0..0, &full, &mut out2).unwrap();
        let got2 = cuda::download(&dev, &out2).unwrap();
        assert_close(
            &format!("cached prefill attention hd {hd} window {window}"),
            &got2,
            &want,
            &mag,
            1e-5,
            0.0,
        );
    }
}

/// The streaming-read reference of the benchmarks reads every whole 16-byte word once: the
/// XOR of its outputs is the XOR of the buffer's 32-bit words (a tail short of 16 bytes is
/// not read).
#[test]
fn read_stream_reads_every_word_once() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(9);
    // On 132 SMs (1056 blocks of 256 threads) 24 MiB take one round of four loads per
    // thread and then single loads; the 40-byte tail has 2 whole words, 8 bytes are not read.
    let bytes: Vec<u8> = (0..(24 << 20) + 40).map(|_| rng.next_u64() as u8).collect();
    let d = cuda::upload(&dev, &bytes).unwrap();
    let mut out = cuda::zeros::<i32>(&dev, ops::read_stream_blocks(&dev) * 8).unwrap();
    ops::read_stream(&dev, &d, &mut out).unwrap();
    let got = cuda::download(&dev, &out)
        .unwrap()
        .iter()
        .fold(0, |a, &b| a ^ b);
    let want = bytes[..bytes.len() / 16 * 16]
        .chunks_exact(4)
        .fold(0i32, |a, w| {
            a ^ i32::from_le_bytes([w[0], w[1], w[2], w[3]])
        });
    assert_eq!(got, want);
}

/// `got` against the CPU engine's F16 GeGLU of `gate` and `up`: within one F16 step of the
/// GELU (the device's tanhf may differ from the host's by an ulp, which moves a value next
/// to an F16 rounding boundary), and bit for bit for at least 99% of the values (an exact
/// f32 GELU would agree on few).
fn check_geglu_f16(got: &[f32], gate: &[f32], up: &[f32]) {
    let (mut want, mut gelu) = (gate.to_vec(), gate.to_vec());
    gemma_kernels::cpu::ops::geglu_f16_inplace(&mut want, up);
    gemma_kernels::cpu::ops::geglu_f16_inplace(&mut gelu, &vec![1.0; gate.len()]);
    let mut exact = 0;
    for (i, (&o, &w)) in got.iter().zip(&want).enumerate() {
        let step = 2f32.powi(-10) * gelu[i].abs().max(2f32.powi(-14)) * up[i].abs();
        assert!(
            (o - w).abs() <= step,
            "geglu {i}: {o} vs {w} (gate {}, up {})",
            gate[i],
            up[i]
        );
        exact += usize::from(o.to_bits() == w.to_bits());
    }
    assert!(
        100 * exact >= 99 * got.len(),
        "geglu: {exact} of {} bit for bit",
        got.len()
    );
}
