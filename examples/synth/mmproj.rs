//! `synth --mmproj`: a Gemma 3 vision projector ("mmproj") GGUF with random weights, in
//! the layout llama.cpp's `convert_hf_to_gguf.py --mmproj` writes for projector type
//! `gemma3` (class `Gemma3VisionModel`): the same `general.*`/`clip.*` keys in the same
//! order, `v.*`/`mm.*` tensors in the converter's order, and its type rules:
//! 1-D tensors F32, the patch and position embeddings forced to F32, the input projection
//! forced to F16 (llama.cpp issue 13025), the attention/MLP matrices in the chosen type
//! (F16 for released files; Q8_0 falls back to F16 for rows that are not whole blocks,
//! as the converter does).
//!
//! Shapes default to SigLIP-So400m as Gemma 3 4B/12B/27B ship it: 896 px input, 14 px
//! patches (4096 of them), width 1152, 27 layers, MLP 4304, 16 heads, 4x4 pooling to 256
//! image tokens, projected to the language model's hidden size.

use std::path::Path;
use std::time::Instant;

use gemma::gguf::{keys, Array, GgmlType, Value};

use super::{write_file, Args, Init, Planned, Shape};

/// Side of one patch in pixels (every Gemma 3 release).
const PATCH_SIZE: u64 = 14;
/// Side of the average-pooling window the converter leaves implicit (no
/// `clip.vision.projector.scale_factor` key): `(896 / 14) / sqrt(256)`.
const POOL_KERNEL: u64 = 4;

/// Hyperparameters of a Gemma 3 vision tower and projector.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionShape {
    /// Input image side in pixels (`clip.vision.image_size`).
    pub image_size: u64,
    /// Patch side in pixels (`clip.vision.patch_size`).
    pub patch_size: u64,
    /// Encoder width (`clip.vision.embedding_length`).
    pub hidden: u64,
    /// MLP width (`clip.vision.feed_forward_length`).
    pub ff: u64,
    /// Encoder blocks (`clip.vision.block_count`).
    pub layers: u64,
    /// Attention heads (`clip.vision.attention.head_count`).
    pub heads: u64,
    /// Width of the language model the image tokens are projected to.
    pub text_hidden: u64,
}

impl VisionShape {
    /// SigLIP-So400m as in Gemma 3 4B/12B/27B, projecting to `text_hidden`.
    pub fn gemma3(text_hidden: u64) -> VisionShape {
        VisionShape {
            image_size: 896,
            patch_size: PATCH_SIZE,
            hidden: 1152,
            ff: 4304,
            layers: 27,
            heads: 16,
            text_hidden,
        }
    }

    /// [`VisionShape::gemma3`] for a model of width `text_hidden` with the `--vision-*`
    /// and `--image-size` overrides of `args`, checked.
    pub fn from_args(args: &Args, text_hidden: u64) -> Result<VisionShape, String> {
        let mut v = VisionShape::gemma3(text_hidden);
        let overrides = [
            (&mut v.layers, args.vision_layers),
            (&mut v.hidden, args.vision_hidden),
            (&mut v.ff, args.vision_ff),
            (&mut v.heads, args.vision_heads),
            (&mut v.image_size, args.image_size),
        ];
        for (field, value) in overrides {
            if let Some(value) = value {
                *field = value;
            }
        }
        if [v.hidden, v.ff, v.heads, v.image_size].contains(&0) {
            return Err("vision hidden, ff, heads and image size must be positive".into());
        }
        if !v.hidden.is_multiple_of(v.heads) {
            return Err(format!(
                "{} vision heads do not divide the vision width {}",
                v.heads, v.hidden
            ));
        }
        if !v.image_size.is_multiple_of(v.patch_size * POOL_KERNEL) {
            return Err(format!(
                "--image-size {} is not a multiple of {} (patch {} x pool {POOL_KERNEL})",
                v.image_size,
                v.patch_size * POOL_KERNEL,
                v.patch_size
            ));
        }
        Ok(v)
    }

    /// Patches per image (4096 for the real shapes).
    pub fn n_patches(&self) -> u64 {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Soft tokens per image (256 for the real shapes).
    pub fn n_image_tokens(&self) -> u64 {
        self.n_patches() / (POOL_KERNEL * POOL_KERNEL)
    }
}

/// The converter's `--outtype` choices that make sense for an mmproj.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmprojQuant {
    /// `--outtype f32` (the input projection stays F16).
    F32,
    /// `--outtype f16`, what released mmproj files use.
    F16,
    /// `--outtype bf16`.
    BF16,
    /// `--outtype q8_0`.
    Q8_0,
}

/// `(choice, name, general.file_type, type of the attention and MLP matrices)`.
const MMPROJ_QUANTS: [(MmprojQuant, &str, u32, GgmlType); 4] = [
    (MmprojQuant::F32, "F32", 0, GgmlType::F32),
    (MmprojQuant::F16, "F16", 1, GgmlType::F16),
    (MmprojQuant::BF16, "BF16", 32, GgmlType::BF16),
    (MmprojQuant::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
];

impl MmprojQuant {
    /// Parses "F16", "q8_0", ... (case-insensitive).
    pub fn parse(name: &str) -> Result<MmprojQuant, String> {
        MMPROJ_QUANTS
            .iter()
            .find(|q| q.1.eq_ignore_ascii_case(name))
            .map(|q| q.0)
            .ok_or_else(|| format!("unknown --mmproj-quant {name:?} (F16, F32, BF16 or Q8_0)"))
    }

    fn row(self) -> &'static (MmprojQuant, &'static str, u32, GgmlType) {
        // MMPROJ_QUANTS has a row for every variant.
        MMPROJ_QUANTS
            .iter()
            .find(|q| q.0 == self)
            .unwrap_or(&MMPROJ_QUANTS[1])
    }

    /// The name ("F16").
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// `general.file_type` (llama_ftype).
    pub fn ftype(self) -> u32 {
        self.row().2
    }

    /// The type of a weight matrix whose rows hold `row_len` values.
    pub fn matrix_type(self, row_len: u64) -> GgmlType {
        let ty = self.row().3;
        if row_len.is_multiple_of(ty.block_elems() as u64) {
            ty
        } else {
            GgmlType::F16
        }
    }
}

/// Every tensor of the mmproj in the converter's order: the Hugging Face names sorted
/// (safetensors lists them so), renamed: `mm.*`, then `v.patch_embd.*`,
/// `v.position_embd`, the blocks (by block number as text: 0, 1, 10, 11, ...; inside
/// each: ln1, ln2, ffn_up, ffn_down, attn_k, attn_out, attn_q, attn_v, bias before
/// weight), then `v.post_ln.*`.
pub fn plan(v: &VisionShape, quant: MmprojQuant) -> Vec<Planned> {
    let (d, f, p) = (v.hidden, v.ff, v.patch_size);
    let tensor = |name: String, ty: GgmlType, dims: Vec<u64>, init: Init| Planned {
        name,
        ty,
        dims,
        init,
    };
    let vector = |name: String, len: u64, init: Init| tensor(name, GgmlType::F32, vec![len], init);
    let bias = |name: String, len: u64| vector(name, len, Init::Normal(0.1));
    let linear = |name: String, inputs: u64, outputs: u64| {
        tensor(
            name,
            quant.matrix_type(inputs),
            vec![inputs, outputs],
            Init::Normal(1.0 / (inputs as f32).sqrt()),
        )
    };
    let mut tensors = vec![
        tensor(
            "mm.input_projection.weight".into(),
            GgmlType::F16,
            vec![v.text_hidden, d],
            Init::Normal(1.0 / (d as f32).sqrt()),
        ),
        vector("mm.soft_emb_norm.weight".into(), d, Init::Norm),
        bias("v.patch_embd.bias".into(), d),
        tensor(
            "v.patch_embd.weight".into(),
            GgmlType::F32,
            vec![p, p, 3, d],
            Init::Normal(1.0 / ((3 * p * p) as f32).sqrt()),
        ),
        tensor(
            "v.position_embd.weight".into(),
            GgmlType::F32,
            vec![d, v.n_patches()],
            Init::Normal(0.5),
        ),
    ];
    let mut blocks: Vec<u64> = (0..v.layers).collect();
    blocks.sort_by_key(|b| b.to_string());
    for b in blocks {
        let name = |part: &str, kind: &str| format!("v.blk.{b}.{part}.{kind}");
        for ln in ["ln1", "ln2"] {
            tensors.push(vector(name(ln, "bias"), d, Init::Normal(0.1)));
            tensors.push(vector(name(ln, "weight"), d, Init::Norm));
        }
        for (part, inputs, outputs) in [
            ("ffn_up", d, f),
            ("ffn_down", f, d),
            ("attn_k", d, d),
            ("attn_out", d, d),
            ("attn_q", d, d),
            ("attn_v", d, d),
        ] {
            tensors.push(bias(name(part, "bias"), outputs));
            tensors.push(linear(name(part, "weight"), inputs, outputs));
        }
    }
    tensors.push(bias("v.post_ln.bias".into(), d));
    tensors.push(vector("v.post_ln.weight".into(), d, Init::Norm));
    tensors
}

/// gguf-py's `model_weight_count_rounded_notation` (what the converter writes as
/// `general.size_label`): "162K", "419M", "1.2B".
pub fn size_label(params: u64) -> String {
    let n = params as f64;
    let (scaled, suffix) = match n {
        n if n > 1e12 => (n * 1e-12, "T"),
        n if n > 1e9 => (n * 1e-9, "B"),
        n if n > 1e6 => (n * 1e-6, "M"),
        n => (n * 1e-3, "K"),
    };
    let digits = format!("{}", scaled.round()).trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// The metadata, in the converter's order, for a file holding `params` weights.
pub fn metadata(
    v: &VisionShape,
    quant: MmprojQuant,
    label: &str,
    params: u64,
) -> Vec<(String, Value)> {
    let u32v = |x: u64| Value::U32(x as u32);
    let rgb = || Value::from(Array::from_slice(&[0.5f32; 3]));
    vec![
        (keys::GENERAL_ARCHITECTURE.into(), "clip".into()),
        (keys::GENERAL_TYPE.into(), "mmproj".into()),
        (
            keys::GENERAL_NAME.into(),
            format!("Gemma 3 {label} synthetic vision").into(),
        ),
        (keys::GENERAL_SIZE_LABEL.into(), size_label(params).into()),
        (keys::GENERAL_FILE_TYPE.into(), Value::U32(quant.ftype())),
        ("clip.has_vision_encoder".into(), Value::Bool(true)),
        ("clip.vision.projection_dim".into(), u32v(v.text_hidden)),
        ("clip.vision.image_size".into(), u32v(v.image_size)),
        ("clip.vision.patch_size".into(), u32v(v.patch_size)),
        ("clip.vision.embedding_length".into(), u32v(v.hidden)),
        ("clip.vision.feed_forward_length".into(), u32v(v.ff)),
        ("clip.vision.block_count".into(), u32v(v.layers)),
        ("clip.vision.attention.head_count".into(), u32v(v.heads)),
        ("clip.vision.image_mean".into(), rgb()),
        ("clip.vision.image_std".into(), rgb()),
        ("clip.projector_type".into(), "gemma3".into()),
        (
            "clip.vision.attention.layer_norm_epsilon".into(),
            Value::F32(1e-6),
        ),
        ("clip.use_gelu".into(), Value::Bool(true)),
        (keys::GENERAL_QUANTIZATION_VERSION.into(), Value::U32(2)),
    ]
}

/// Writes the mmproj for `v` to `out`; returns a one-line summary.
pub fn run(
    v: &VisionShape,
    quant: MmprojQuant,
    text: &Shape,
    out: &Path,
    seed: u64,
    progress: bool,
) -> Result<String, String> {
    let start = Instant::now();
    let tensors = plan(v, quant);
    let params = tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();
    let metadata = metadata(v, quant, text.label, params);
    // A different stream from the language model's weights of the same seed.
    let seed = seed ^ 0x6d6d_7072_6f6a_0000;
    let bytes = write_file(out, metadata, &tensors, seed, progress)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "wrote {}: Gemma 3 {} vision projector {}, {} layers, {}x{} px -> {} tokens of {}, {} tensors, {bytes} bytes in {secs:.1} s",
        out.display(),
        text.label,
        quant.name(),
        v.layers,
        v.image_size,
        v.image_size,
        v.n_image_tokens(),
        v.text_hidden,
        tensors.len()
    ))
}
