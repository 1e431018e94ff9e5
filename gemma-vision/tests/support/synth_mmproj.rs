//! Builds Gemma 3 mmproj GGUF files in memory with random weights, in the layout
//! llama.cpp's converter writes (keys `clip.*`, tensors `v.*` / `mm.*`, patch and
//! position embeddings, norms and biases F32, matrices in a chosen type).
//! Shared by the vision tests and `benches/vision.rs` (included by path).
#![allow(dead_code)] // each including target uses a different subset

use gemma_gguf::{Array, GgmlType, GgufWriter, Value};
use gemma_kernels::quant;

/// Hyperparameters of a synthetic mmproj.
#[derive(Clone, Debug)]
pub struct Spec {
    pub image_size: u32,
    pub patch_size: u32,
    pub hidden: u32,
    pub ffn_hidden: u32,
    pub layers: u32,
    pub heads: u32,
    pub text_hidden: u32,
}

impl Spec {
    /// The real Gemma 3 4B vision tower (SigLIP-So400m shapes, 2560-wide projection).
    pub fn gemma3_4b() -> Spec {
        Spec {
            image_size: 896,
            patch_size: 14,
            hidden: 1152,
            ffn_hidden: 4304,
            layers: 27,
            heads: 16,
            text_hidden: 2560,
        }
    }
}

/// Where a tensor's values come from.
#[derive(Clone, Debug)]
pub enum Values {
    /// Normal-ish random values with this standard deviation around `mean`.
    Random { mean: f32, std: f32, seed: u64 },
    /// Exactly these values (ggml element order).
    Data(Vec<f32>),
}

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    pub values: Values,
}

impl Tensor {
    fn n_elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// The values as f32 (generated for `Random`).
    pub fn f32_values(&self) -> Vec<f32> {
        match &self.values {
            Values::Data(v) => v.clone(),
            Values::Random { mean, std, seed } => {
                random_values(self.n_elements(), *mean, *std, *seed)
            }
        }
    }
}

/// A whole file: metadata in order, then tensors in order.
#[derive(Clone, Debug)]
pub struct Mmproj {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

impl Mmproj {
    /// A random Gemma 3 mmproj with `spec`'s shapes and its attention/FFN matrices and
    /// input projection in `matrix_ty` (F16 in real files).
    pub fn random(spec: &Spec, matrix_ty: GgmlType, seed: u64) -> Mmproj {
        let d = u64::from(spec.hidden);
        let f = u64::from(spec.ffn_hidden);
        let p = u64::from(spec.patch_size);
        let n = u64::from(spec.image_size / spec.patch_size).pow(2);
        let metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), "clip".into()),
            ("general.type".into(), "mmproj".into()),
            ("clip.projector_type".into(), "gemma3".into()),
            ("clip.has_vision_encoder".into(), Value::Bool(true)),
            ("clip.use_gelu".into(), Value::Bool(true)),
            ("clip.vision.image_size".into(), Value::U32(spec.image_size)),
            ("clip.vision.patch_size".into(), Value::U32(spec.patch_size)),
            (
                "clip.vision.embedding_length".into(),
                Value::U32(spec.hidden),
            ),
            (
                "clip.vision.feed_forward_length".into(),
                Value::U32(spec.ffn_hidden),
            ),
            ("clip.vision.block_count".into(), Value::U32(spec.layers)),
            (
                "clip.vision.attention.head_count".into(),
                Value::U32(spec.heads),
            ),
            (
                "clip.vision.attention.layer_norm_epsilon".into(),
                Value::F32(1e-6),
            ),
            (
                "clip.vision.image_mean".into(),
                Array::from_slice(&[0.5f32; 3]).into(),
            ),
            (
                "clip.vision.image_std".into(),
                Array::from_slice(&[0.5f32; 3]).into(),
            ),
            (
                "clip.vision.projection_dim".into(),
                Value::U32(spec.text_hidden),
            ),
        ];
        let mut seq = seed;
        let mut next = |mean: f32, std: f32| {
            seq = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
            Values::Random {
                mean,
                std,
                seed: seq,
            }
        };
        let mut tensors = Vec::new();
        let mut add = |name: String, ty: GgmlType, dims: Vec<u64>, values: Values| {
            tensors.push(Tensor {
                name,
                ty,
                dims,
                values,
            });
        };
        let inv_sqrt = |x: u64| 1.0 / (x as f32).sqrt();
        add(
            "v.patch_embd.weight".into(),
            GgmlType::F32,
            vec![p, p, 3, d],
            next(0.0, inv_sqrt(3 * p * p)),
        );
        add(
            "v.patch_embd.bias".into(),
            GgmlType::F32,
            vec![d],
            next(0.0, 0.1),
        );
        add(
            "v.position_embd.weight".into(),
            GgmlType::F32,
            vec![d, n],
            next(0.0, 0.5),
        );
        for i in 0..spec.layers {
            let b = format!("v.blk.{i}");
            for ln in ["ln1", "ln2"] {
                add(
                    format!("{b}.{ln}.weight"),
                    GgmlType::F32,
                    vec![d],
                    next(1.0, 0.1),
                );
                add(
                    format!("{b}.{ln}.bias"),
                    GgmlType::F32,
                    vec![d],
                    next(0.0, 0.1),
                );
            }
            for (name, inputs, outputs) in [
                ("attn_q", d, d),
                ("attn_k", d, d),
                ("attn_v", d, d),
                ("attn_out", d, d),
                ("ffn_up", d, f),
                ("ffn_down", f, d),
            ] {
                add(
                    format!("{b}.{name}.weight"),
                    matrix_ty,
                    vec![inputs, outputs],
                    next(0.0, inv_sqrt(inputs)),
                );
                add(
                    format!("{b}.{name}.bias"),
                    GgmlType::F32,
                    vec![outputs],
                    next(0.0, 0.1),
                );
            }
        }
        add(
            "v.post_ln.weight".into(),
            GgmlType::F32,
            vec![d],
            next(1.0, 0.1),
        );
        add(
            "v.post_ln.bias".into(),
            GgmlType::F32,
            vec![d],
            next(0.0, 0.1),
        );
        add(
            "mm.soft_emb_norm.weight".into(),
            GgmlType::F32,
            vec![d],
            next(1.0, 0.3),
        );
        add(
            "mm.input_projection.weight".into(),
            matrix_ty,
            vec![u64::from(spec.text_hidden), d],
            next(0.0, inv_sqrt(d)),
        );
        Mmproj { metadata, tensors }
    }

    /// The same model with every tensor stored as F32 holding exactly the values the
    /// typed file dequantizes to.
    pub fn f32_twin(&self) -> Mmproj {
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let values = t.f32_values();
                let mut bytes = vec![0u8; encoded_len(t.ty, values.len())];
                quant::quantize(t.ty, &values, &mut bytes).expect("quantizable tensor");
                let mut back = vec![0f32; values.len()];
                quant::dequantize(t.ty, &bytes, &mut back).expect("dequantizable tensor");
                Tensor {
                    name: t.name.clone(),
                    ty: GgmlType::F32,
                    dims: t.dims.clone(),
                    values: Values::Data(back),
                }
            })
            .collect();
        Mmproj {
            metadata: self.metadata.clone(),
            tensors,
        }
    }

    /// Serializes to GGUF v3 bytes, encoding each tensor in its type.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = GgufWriter::new(Vec::new());
        for (k, v) in &self.metadata {
            w.add_metadata(k.clone(), v.clone()).expect("metadata");
        }
        for t in &self.tensors {
            w.add_tensor(t.name.clone(), t.ty, &t.dims)
                .expect("tensor declaration");
        }
        w.write_header().expect("header");
        for t in &self.tensors {
            let values = t.f32_values();
            let mut bytes = vec![0u8; encoded_len(t.ty, values.len())];
            quant::quantize(t.ty, &values, &mut bytes).expect("quantizable tensor");
            w.write_tensor_data(&t.name, &bytes).expect("tensor data");
        }
        w.finish().expect("complete file")
    }
}

fn encoded_len(ty: GgmlType, n: usize) -> usize {
    ty.row_bytes(n as u64).expect("whole blocks") as usize
}

/// `n` values from a xorshift generator, each the sum of 4 uniforms scaled to `std`
/// (close enough to normal for weights).
pub fn random_values(n: usize, mean: f32, std: f32, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    // The sum of 4 uniforms on [-0.5, 0.5) has variance 4/12 = 1/3.
    let scale = std * 3f32.sqrt();
    (0..n)
        .map(|_| mean + scale * (uniform() + uniform() + uniform() + uniform()))
        .collect()
}
