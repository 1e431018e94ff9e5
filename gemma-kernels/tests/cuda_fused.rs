//! The fused decode kernels against references: `qk_norm_rope` (per-head RMSNorm, NEOX RoPE
//! and the query scale in one launch) against f64 math, `geglu_q8_1` (GeGLU with the
//! quantization of its result) against the plain `geglu` kernel and the CPU backend's
//! activation quantizers, bit for bit, `rms_norm_add_norm_q8_1` against `rms_norm_add`
//! then `rms_norm_q8_1`, `attention_decode_q8` against `attention_decode` then
//! `quantize_q8_1`, and `qk_norm_rope_store` against `qk_norm_rope` then `kv_store_pair`
//! (f16 cache), bit for bit. Runs where a CUDA device is present; elsewhere each test prints
//! "no CUDA device: GPU tests not run" and returns (the one allowed exception to no-skip).

mod cuda_util;

use cuda_util::*;
use gemma_kernels::cuda::{self, launch, ops, ActFormat, Q8Activations};

/// rms_norm(head) * w, rotated NEOX style at `pos`, times `scale`, in f64.
fn norm_rope_ref(head: &[f32], w: &[f32], eps: f32, pos: i32, base: f32, fscale: f32) -> Vec<f64> {
    let hd = head.len();
    let half = hd / 2;
    let ms = head.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / hd as f64;
    let inv = 1.0 / (ms + f64::from(eps)).sqrt();
    let n: Vec<f64> = (0..hd)
        .map(|i| f64::from(head[i]) * inv * f64::from(w[i]))
        .collect();
    let mut out = vec![0f64; hd];
    for i in 0..half {
        let theta =
            f64::from(pos) * f64::from(fscale) * f64::from(base).powf(-2.0 * i as f64 / hd as f64);
        let (s, c) = theta.sin_cos();
        out[i] = n[i] * c - n[i + half] * s;
        out[i + half] = n[i] * s + n[i + half] * c;
    }
    out
}

#[test]
fn qk_norm_rope_matches_norm_then_rope_then_scale() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(21);
    // Gemma 3's head size (256) and a small one whose half is below a warp (16).
    for (hd, n_q, n_k) in [(256, 4, 2), (16, 3, 1)] {
        let n = 3;
        let positions: Vec<i32> = vec![0, 5, 700];
        let (q, k) = (rng.vec(n * n_q * hd), rng.vec(n * n_k * hd));
        let wq: Vec<f32> = (0..hd).map(|_| 1.0 + rng.uniform()).collect();
        let wk: Vec<f32> = (0..hd).map(|_| 1.0 + rng.uniform()).collect();
        let p = ops::QkNormRope {
            n_q_heads: n_q,
            n_k_heads: n_k,
            head_dim: hd,
            freq_base: 10_000.0,
            freq_scale: 0.125,
            q_scale: 0.0625,
            eps: 1e-6,
        };
        let (mut qd, mut kd) = (
            cuda::upload(&dev, &q).unwrap(),
            cuda::upload(&dev, &k).unwrap(),
        );
        let (wqd, wkd, pd) = (
            cuda::upload(&dev, &wq).unwrap(),
            cuda::upload(&dev, &wk).unwrap(),
            cuda::upload(&dev, &positions).unwrap(),
        );
        ops::qk_norm_rope(&dev, &mut qd, &mut kd, &wqd, &wkd, &pd, n, p).unwrap();
        for (name, src, got, w, heads, scale) in [
            (
                "q",
                &q,
                cuda::download(&dev, &qd).unwrap(),
                &wq,
                n_q,
                p.q_scale,
            ),
            ("k", &k, cuda::download(&dev, &kd).unwrap(), &wk, n_k, 1.0),
        ] {
            let mut want = Vec::with_capacity(src.len());
            let mut mag = Vec::with_capacity(src.len());
            for (i, head) in src.chunks(hd).enumerate() {
                let pos = positions[i / heads];
                let r = norm_rope_ref(head, w, p.eps, pos, p.freq_base, p.freq_scale);
                want.extend(r.iter().map(|v| v * f64::from(scale)));
                // f32 angles (as llama.cpp): the error grows with the position.
                let bound = f64::from(scale) * 4.0 * (1.0 + f64::from(pos) / 100.0);
                mag.extend(std::iter::repeat_n(bound, hd));
            }
            assert_close(
                &format!("qk_norm_rope {name}, head_dim {hd}"),
                &got,
                &want,
                &mag,
                2e-4,
                0.0,
            );
        }
    }
}

#[test]
fn geglu_q8_1_matches_geglu_and_the_cpu_quantizers() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(22);
    // A multiple of 256 (read back as 3 rows of 1280) and a ragged length.
    for n in [3840, 10_000] {
        let (g, u) = (rng.vec(n), rng.vec(n));
        let (gd, ud) = (
            cuda::upload(&dev, &g).unwrap(),
            cuda::upload(&dev, &u).unwrap(),
        );
        let mut plain = cuda::zeros::<f32>(&dev, n).unwrap();
        ops::geglu(&dev, &gd, &ud, &mut plain, n).unwrap();
        let plain = cuda::download(&dev, &plain).unwrap();

        for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
            let mut fused = cuda::upload(&dev, &g).unwrap();
            let mut q8 = Q8Activations::new(&dev, n, 1).unwrap();
            ops::geglu_q8_1(&dev, &mut fused, &ud, n, format, &mut q8).unwrap();
            let fused = cuda::download(&dev, &fused).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fused), bits(&plain), "geglu_q8_1 values, n {n}");

            let (qs, ds) = q8.download(&dev).unwrap();
            let twin = act_twin(&plain, 1, n, format);
            assert_eq!(qs, twin.qs, "geglu_q8_1 {format:?} q values, n {n}");
            assert_eq!(
                bits(&ds),
                bits(&twin.ds),
                "geglu_q8_1 {format:?} d and s, n {n}"
            );
            if n % 256 == 0 {
                q8.split_rows(3, n / 3).unwrap();
                assert_eq!(
                    (q8.rows(), q8.k(), q8.format()),
                    (3, n / 3, format),
                    "split rows"
                );
            }
        }
    }
}

#[test]
fn rms_norm_add_norm_q8_1_matches_its_two_kernels() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(23);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    // Gemma 3 12B's and 27B's hidden sizes (the row in registers: 15 and 21 values per
    // thread), the 270M's, and one with a partial 256-group.
    for (rows, dim) in [(1, 3840), (1, 5376), (3, 640), (2, 1000)] {
        let (o, x) = (rng.vec(rows * dim), rng.vec(rows * dim));
        let w_post: Vec<f32> = (0..dim).map(|_| 1.0 + 0.2 * rng.uniform()).collect();
        let w_next: Vec<f32> = (0..dim).map(|_| 1.0 + 0.2 * rng.uniform()).collect();
        let (wp, wn) = (
            cuda::upload(&dev, &w_post).unwrap(),
            cuda::upload(&dev, &w_next).unwrap(),
        );
        for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
            let run = |fused: bool| {
                let mut od = cuda::upload(&dev, &o).unwrap();
                let mut xd = cuda::upload(&dev, &x).unwrap();
                let mut out = cuda::zeros::<f32>(&dev, rows * dim).unwrap();
                let mut q8 = Q8Activations::new(&dev, dim, rows).unwrap();
                if fused {
                    ops::rms_norm_add_norm_q8_1(
                        &dev, &mut od, &wp, &mut xd, &wn, &mut out, rows, dim, 1e-6, format,
                        &mut q8,
                    )
                    .unwrap();
                } else {
                    ops::rms_norm_add(&dev, &mut od, &wp, &mut xd, rows, dim, 1e-6).unwrap();
                    ops::rms_norm_q8_1(&dev, &xd, &wn, &mut out, rows, dim, 1e-6, format, &mut q8)
                        .unwrap();
                }
                let (qs, ds) = q8.download(&dev).unwrap();
                let floats = [&od, &xd, &out].map(|b| bits(&cuda::download(&dev, b).unwrap()));
                (floats, qs, bits(&ds))
            };
            assert_eq!(run(true), run(false), "{rows} x {dim} {format:?}");
        }
    }
}

#[test]
fn norms_fused_with_quantization_refuse_rows_past_6144() {
    let Some(dev) = device() else { return };
    let (rows, dim) = (1, 6400);
    let w = cuda::upload(&dev, &vec![1.0f32; dim]).unwrap();
    let x = cuda::upload(&dev, &vec![0.5f32; dim]).unwrap();
    let mut out = cuda::zeros::<f32>(&dev, dim).unwrap();
    let mut q8 = Q8Activations::new(&dev, dim, rows).unwrap();
    let mut o = cuda::upload(&dev, &vec![0.5f32; dim]).unwrap();
    let mut r = cuda::upload(&dev, &vec![0.5f32; dim]).unwrap();
    let (eps, f) = (1e-6, ActFormat::Q8K);
    for err in [
        ops::rms_norm_q8_1(&dev, &x, &w, &mut out, rows, dim, eps, f, &mut q8).unwrap_err(),
        ops::rms_norm_add_norm_q8_1(
            &dev, &mut o, &w, &mut r, &w, &mut out, rows, dim, eps, f, &mut q8,
        )
        .unwrap_err(),
    ] {
        assert!(err.to_string().contains("at most 6144"), "{err}");
    }
}

#[test]
fn attention_decode_q8_matches_attention_then_quantize() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(24);
    let (nh, nkv, hd, slots) = (8, 2, 256, 64);
    let shape = cuda::AttnShape {
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        n_slots: slots,
        window: 0,
        scale: 1.0 / 16.0,
        one_chunk_f16: false,
    };
    let cache = |rng: &mut Rng| -> Vec<u16> {
        rng.vec(slots * nkv * hd)
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect()
    };
    let (kd, vd) = (
        cuda::upload(&dev, &cache(&mut rng)).unwrap(),
        cuda::upload(&dev, &cache(&mut rng)).unwrap(),
    );
    let qd = cuda::upload(&dev, &rng.vec(nh * hd)).unwrap();
    let pd = cuda::upload(&dev, &[40i32]).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
        let mut scratch = cuda::DecodeScratch::new(&dev, &shape).unwrap();
        let mut plain = cuda::zeros::<f32>(&dev, nh * hd).unwrap();
        cuda::attention_decode(&dev, &qd, &kd, &vd, &pd, &shape, &mut scratch, &mut plain).unwrap();
        let mut q8_plain = Q8Activations::new(&dev, nh * hd, 1).unwrap();
        launch::quantize_q8_1(&dev, &plain, 1, nh * hd, format, &mut q8_plain).unwrap();

        let mut fused = cuda::zeros::<f32>(&dev, nh * hd).unwrap();
        let mut q8 = Q8Activations::new(&dev, nh * hd, 1).unwrap();
        let kv = cuda::DecodeKv {
            k: &kd,
            v: &vd,
            pos: &pd,
        };
        cuda::attention_decode_q8(
            &dev,
            &qd,
            &kv,
            &shape,
            &mut scratch,
            &mut fused,
            Some((&mut q8, format)),
        )
        .unwrap();
        let (a, b) = (
            cuda::download(&dev, &plain).unwrap(),
            cuda::download(&dev, &fused).unwrap(),
        );
        assert_eq!(bits(&a), bits(&b), "attention output, {format:?}");
        let ((qa, da), (qb, db)) = (q8_plain.download(&dev).unwrap(), q8.download(&dev).unwrap());
        assert_eq!(qa, qb, "quants, {format:?}");
        assert_eq!(bits(&da), bits(&db), "d and s, {format:?}");
    }
}

#[test]
fn qk_norm_rope_store_matches_qk_norm_rope_then_kv_store() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(25);
    let (n, n_q, n_k, hd, slots) = (2, 8, 4, 256, 16);
    let p = ops::QkNormRope {
        n_q_heads: n_q,
        n_k_heads: n_k,
        head_dim: hd,
        freq_base: 10_000.0,
        freq_scale: 1.0,
        q_scale: 0.0625,
        eps: 1e-6,
    };
    let (q, k, v) = (
        rng.vec(n * n_q * hd),
        rng.vec(n * n_k * hd),
        rng.vec(n * n_k * hd),
    );
    let w: Vec<f32> = (0..hd).map(|_| 1.0 + 0.2 * rng.uniform()).collect();
    let (wd, vd, pd) = (
        cuda::upload(&dev, &w).unwrap(),
        cuda::upload(&dev, &v).unwrap(),
        cuda::upload(&dev, &[17i32, 18]).unwrap(),
    );
    let run = |fused: bool| {
        let (mut qd, mut kd) = (
            cuda::upload(&dev, &q).unwrap(),
            cuda::upload(&dev, &k).unwrap(),
        );
        let mut kc = cuda::zeros::<u16>(&dev, slots * n_k * hd).unwrap();
        let mut vc = cuda::zeros::<u16>(&dev, slots * n_k * hd).unwrap();
        if fused {
            let kv = ops::KvTarget {
                v: &vd,
                n_slots: slots,
                k_cache: &mut kc,
                v_cache: &mut vc,
            };
            ops::qk_norm_rope_store(&dev, &mut qd, &mut kd, &wd, &wd, &pd, n, p, kv).unwrap();
        } else {
            ops::qk_norm_rope(&dev, &mut qd, &mut kd, &wd, &wd, &pd, n, p).unwrap();
            ops::kv_store_pair(&dev, &kd, &vd, n, n_k * hd, &pd, slots, &mut kc, &mut vc).unwrap();
        }
        let f = |b: &cuda::CudaSlice<f32>| {
            cuda::download(&dev, b)
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        (
            f(&qd),
            f(&kd),
            cuda::download(&dev, &kc).unwrap(),
            cuda::download(&dev, &vc).unwrap(),
        )
    };
    assert_eq!(run(true), run(false));
}
