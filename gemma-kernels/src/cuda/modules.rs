//! The kernel sources (`gemma-kernels/kernels/*.cu`, embedded in the binary), their
//! compilation by NVRTC for the GPU found, a PTX cache on disk per architecture, and the
//! per-device cache of loaded modules and functions.

use super::error::CudaError;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// The header every kernel file starts with: typedefs, block layouts, helpers.
const COMMON: &str = include_str!("../../kernels/common.cuh");

/// One `.cu` file, compiled and loaded as one CUDA module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `quantize.cu`: activations to q8_1.
    Quantize,
    /// `norm.cu`: RMSNorm, fused with residual add or with quantization.
    Norm,
    /// `rope.cu`: NEOX rotary embedding.
    Rope,
    /// `elementwise.cu`: GeGLU, add, scale, f32 -> f16, row gather, KV-cache stores.
    Elementwise,
    /// `mmvq.cu`: quantized matrix x vector (decode, dp4a).
    Mmvq,
    /// `mmq.cu`: quantized matrix x matrix (prefill, int8 tensor cores).
    Mmq,
    /// `matmul_float.cu`: F32 / F16 / BF16 weights.
    MatmulFloat,
    /// `attention.cu`: decode attention split over keys, and the merge of the splits.
    Attention,
    /// `flash_attn.cu`: tiled prefill attention.
    FlashAttn,
    /// `vision.cu`: the SigLIP image encoder's LayerNorm, bias/GELU/residual, patch and
    /// pooling steps and its bidirectional attention.
    Vision,
    /// `argmax.cu`: the greedy pick over a row of logits.
    Argmax,
}

impl Kernel {
    /// Every kernel file, in a fixed order.
    pub const ALL: [Kernel; 11] = [
        Kernel::Quantize,
        Kernel::Norm,
        Kernel::Rope,
        Kernel::Elementwise,
        Kernel::Mmvq,
        Kernel::Mmq,
        Kernel::MatmulFloat,
        Kernel::Attention,
        Kernel::FlashAttn,
        Kernel::Vision,
        Kernel::Argmax,
    ];

    /// Whether every kernel of the file calls `pdl_wait` (kernels/common.cuh) before it
    /// touches memory other kernels write, so it may be launched with programmatic dependent
    /// launch (the decode path).
    pub fn pdl_ready(self) -> bool {
        matches!(
            self,
            Kernel::Quantize
                | Kernel::Norm
                | Kernel::Rope
                | Kernel::Elementwise
                | Kernel::Mmvq
                | Kernel::MatmulFloat
                | Kernel::Attention
                | Kernel::Argmax
        )
    }

    /// The file name without `.cu`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Quantize => "quantize",
            Kernel::Norm => "norm",
            Kernel::Rope => "rope",
            Kernel::Elementwise => "elementwise",
            Kernel::Mmvq => "mmvq",
            Kernel::Mmq => "mmq",
            Kernel::MatmulFloat => "matmul_float",
            Kernel::Attention => "attention",
            Kernel::FlashAttn => "flash_attn",
            Kernel::Vision => "vision",
            Kernel::Argmax => "argmax",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Kernel::Quantize => include_str!("../../kernels/quantize.cu"),
            Kernel::Norm => include_str!("../../kernels/norm.cu"),
            Kernel::Rope => include_str!("../../kernels/rope.cu"),
            Kernel::Elementwise => include_str!("../../kernels/elementwise.cu"),
            Kernel::Mmvq => include_str!("../../kernels/mmvq.cu"),
            Kernel::Mmq => include_str!("../../kernels/mmq.cu"),
            Kernel::MatmulFloat => include_str!("../../kernels/matmul_float.cu"),
            Kernel::Attention => include_str!("../../kernels/attention.cu"),
            Kernel::FlashAttn => include_str!("../../kernels/flash_attn.cu"),
            Kernel::Vision => include_str!("../../kernels/vision.cu"),
            Kernel::Argmax => include_str!("../../kernels/argmax.cu"),
        }
    }

    /// Every kernel entry point the file defines (the launch layer uses exactly these).
    #[rustfmt::skip]
    pub fn functions(self) -> &'static [&'static str] {
        match self {
            Kernel::Quantize => &["quantize_q8_1", "geglu_q8_1"],
            Kernel::Norm => &[
                "rms_norm",
                "rms_norm_add",
                "rms_norm_q8_1",
                "rms_norm_add_norm_q8_1",
            ],
            Kernel::Rope => &[
                "rope_neox",
                "qk_norm_rope",
                "qk_norm_rope_store_f16",
                "qk_norm_rope_store_f32",
                "qk_norm_rope_store_q8_0",
            ],
            Kernel::Elementwise => &[
                "geglu", "add_f32", "scale_f32", "f32_to_f16", "get_rows", "kv_store", "kv_store_f32",
                "kv_store_q8_0", "read_stream",
            ],
            Kernel::Mmvq => &[
                "mmvq_q4_0_1", "mmvq_q4_0_2", "mmvq_q4_0_4", "mmvq_q4_0_8",
                "mmvq_q5_0_1", "mmvq_q5_0_2", "mmvq_q5_0_4", "mmvq_q5_0_8",
                "mmvq_q8_0_1", "mmvq_q8_0_2", "mmvq_q8_0_4", "mmvq_q8_0_8",
                "mmvq_q4_K_1", "mmvq_q4_K_2", "mmvq_q4_K_4", "mmvq_q4_K_8",
                "mmvq_q5_K_1", "mmvq_q5_K_2", "mmvq_q5_K_4", "mmvq_q5_K_8",
                "mmvq_q6_K_1", "mmvq_q6_K_2", "mmvq_q6_K_4", "mmvq_q6_K_8",
                "mmvq_q4_1_1", "mmvq_q4_1_2", "mmvq_q4_1_4", "mmvq_q4_1_8",
                "mmvq_q5_1_1", "mmvq_q5_1_2", "mmvq_q5_1_4", "mmvq_q5_1_8",
                "mmvq_iq4_nl_1", "mmvq_iq4_nl_2", "mmvq_iq4_nl_4", "mmvq_iq4_nl_8",
                "mmvq_q2_K_1", "mmvq_q2_K_2", "mmvq_q2_K_4", "mmvq_q2_K_8",
                "mmvq_q3_K_1", "mmvq_q3_K_2", "mmvq_q3_K_4", "mmvq_q3_K_8",
                "mmvq_iq4_xs_1", "mmvq_iq4_xs_2", "mmvq_iq4_xs_4", "mmvq_iq4_xs_8",
                "mmvq_multi_q4_0", "mmvq_multi_q5_0", "mmvq_multi_q8_0", "mmvq_multi_q4_K",
                "mmvq_multi_q5_K", "mmvq_multi_q6_K", "mmvq_multi_q4_1", "mmvq_multi_q5_1",
                "mmvq_multi_iq4_nl", "mmvq_multi_q2_K", "mmvq_multi_q3_K", "mmvq_multi_iq4_xs",
                "mmvq_multi_q4_K_q6_K", "mmvq_multi_q5_K_q6_K", "mmvq_multi_q5_0_q8_0",
                "mmvq_x_q4_K_half_tasks", "mmvq_x_q4_K_four_items", "mmvq_x_q6_K_four_items",
            ],
            Kernel::Mmq => &[
                "mmq_q4_0", "mmq_q5_0", "mmq_q8_0", "mmq_q4_K", "mmq_q5_K", "mmq_q6_K",
                "mmq_q4_1", "mmq_q5_1", "mmq_iq4_nl", "mmq_q2_K", "mmq_q3_K", "mmq_iq4_xs",
            ],
            Kernel::MatmulFloat => &[
                "matvec_f32_1", "matvec_f32_2", "matvec_f32_4", "matvec_f32_8",
                "matvec_f16_1", "matvec_f16_2", "matvec_f16_4", "matvec_f16_8",
                "matvec_bf16_1", "matvec_bf16_2", "matvec_bf16_4", "matvec_bf16_8",
                "matmul_f32", "matmul_f16", "matmul_bf16",
            ],
            Kernel::Attention => &[
                "attn_decode_64", "attn_combine_64", "attn_decode_128", "attn_combine_128",
                "attn_decode_256", "attn_combine_256",
                "attn_decode_f32_64", "attn_decode_f32_128", "attn_decode_f32_256",
                "attn_decode_q8_0_64", "attn_decode_q8_0_128", "attn_decode_q8_0_256",
                "attn_prefill_f32_64", "attn_prefill_f32_128", "attn_prefill_f32_256",
                "attn_prefill_q8_0_64", "attn_prefill_q8_0_128", "attn_prefill_q8_0_256",
                "attn_prefill_chunked_64", "attn_prefill_chunked_128", "attn_prefill_chunked_256",
            ],
            Kernel::FlashAttn => &["flash_prefill_64", "flash_prefill_128", "flash_prefill_256"],
            Kernel::Vision => &[
                "vis_layer_norm", "vis_im2col", "vis_add_bias_position", "vis_add_bias", "vis_bias_gelu",
                "vis_add_bias_residual", "vis_attention_16", "vis_attention_32", "vis_attention_64",
                "vis_attention_72", "vis_attention_80", "vis_avg_pool",
            ],
            Kernel::Argmax => &["argmax_part", "argmax_final"],
        }
    }

    /// The complete source NVRTC compiles: `common.cuh`, then the file (with `#line` so
    /// compiler messages point into the file).
    pub fn source(self) -> String {
        format!("{COMMON}\n#line 1 \"{}.cu\"\n{}", self.name(), self.file())
    }
}

/// A virtual GPU architecture (`compute_XY`) that PTX is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ComputeArch {
    /// Major compute capability.
    pub major: i32,
    /// Minor compute capability.
    pub minor: i32,
}

impl ComputeArch {
    /// The NVRTC name, e.g. `compute_90`.
    pub fn name(self) -> String {
        format!("compute_{}{}", self.major, self.minor)
    }
}

/// Whether libnvrtc can be loaded (so kernels can be compiled).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; loads no symbols.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The NVRTC version (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NvrtcMissing);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::NvrtcMissing);
    }
    Ok((major, minor))
}

/// Kernel-internal tuning constants (`#ifndef` in the .cu files; nothing on the host depends
/// on them) that a GPU run may set without a rebuild, through `GEMMA_CUDA_DEFINES`.
const TUNING_CONSTANTS: [&str; 3] = ["ATT_KEYS_IN_FLIGHT", "ATT_WALK_AHEAD", "MMQ_MIN_BLOCKS"];

/// NVRTC `-D` options from a `GEMMA_CUDA_DEFINES` value: space-separated `NAME=NUMBER`
/// entries, NAME one of the tuning constants (e.g. `ATT_WALK_AHEAD=8 MMQ_MIN_BLOCKS=2`).
pub fn parse_tuning_defines(text: &str) -> Result<Vec<String>, CudaError> {
    text.split_whitespace()
        .map(|entry| match entry.split_once('=') {
            Some((name, value))
                if TUNING_CONSTANTS.contains(&name)
                    && value.parse::<u32>().is_ok_and(|v| (1..=64).contains(&v)) =>
            {
                Ok(format!("-D{entry}"))
            }
            _ => Err(CudaError::Tuning(entry.to_string())),
        })
        .collect()
}

/// The tuning options `GEMMA_CUDA_DEFINES` asks for (none when unset).
fn tuning_defines() -> Result<Vec<String>, CudaError> {
    std::env::var("GEMMA_CUDA_DEFINES").map_or(Ok(Vec::new()), |v| parse_tuning_defines(&v))
}

/// Options every kernel is compiled with: IEEE division and square root, no fast math; then
/// the tuning `defines`.
fn compile_options(arch: ComputeArch, defines: &[String]) -> Vec<String> {
    let mut options = vec![
        format!("--gpu-architecture={}", arch.name()),
        "--std=c++17".into(),
        "--diag-suppress=177".into(), // helpers of common.cuh a file does not use
    ];
    options.extend_from_slice(defines);
    options
}

/// Compiles one kernel file to PTX text with NVRTC (no GPU needed), with the tuning
/// constants of `GEMMA_CUDA_DEFINES`.
pub fn compile_ptx(kernel: Kernel, arch: ComputeArch) -> Result<String, CudaError> {
    compile_ptx_tuned(kernel, arch, &tuning_defines()?)
}

/// [`compile_ptx`] with the tuning `defines` given (options from [`parse_tuning_defines`]).
pub fn compile_ptx_tuned(
    kernel: Kernel,
    arch: ComputeArch,
    defines: &[String],
) -> Result<String, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NvrtcMissing);
    }
    let opts = CompileOptions {
        options: compile_options(arch, defines),
        name: Some(format!("{}.cu", kernel.name())),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(kernel.source(), opts).map_err(|e| {
        CudaError::Compile {
            module: kernel.name(),
            arch: arch.name(),
            log: match &e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                    log.to_string_lossy().into_owned()
                }
                other => format!("{other:?}"),
            },
        }
    })?;
    Ok(ptx.to_src())
}

/// FNV-1a, 64 bits: a stable hash for cache file names.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `$GEMMA_CACHE/ptx` (default `~/.cache/gemma-rs/ptx`), or `None` without a home folder.
fn ptx_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("GEMMA_CACHE") {
        return Some(PathBuf::from(dir).join("ptx"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/gemma-rs/ptx"))
}

/// PTX for `kernel` on `arch`, from the disk cache when the same source, options and NVRTC
/// version were compiled before; compiled (and stored, best effort) otherwise.
pub fn cached_ptx(kernel: Kernel, arch: ComputeArch) -> Result<String, CudaError> {
    let (major, minor) = nvrtc_version()?;
    let source = kernel.source();
    let defines = tuning_defines()?;
    let opts = compile_options(arch, &defines).join(" ");
    let version = format!("{major}.{minor}");
    let key = fnv1a(&[source.as_bytes(), opts.as_bytes(), version.as_bytes()]);
    let path = ptx_cache_dir().map(|d| {
        d.join(arch.name())
            .join(format!("{}-{key:016x}.ptx", kernel.name()))
    });
    if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(text);
    }
    let ptx = compile_ptx_tuned(kernel, arch, &defines)?;
    if let Some(path) = path {
        // A cache that cannot be written only costs a recompilation next time.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &ptx).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(ptx)
}

/// The modules of one device, loaded on first use, and the functions looked up in them.
pub(crate) struct ModuleCache {
    arch: ComputeArch,
    modules: [OnceLock<Arc<CudaModule>>; Kernel::ALL.len()],
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl ModuleCache {
    pub(crate) fn new(arch: ComputeArch) -> Self {
        ModuleCache {
            arch,
            modules: Default::default(),
            functions: Mutex::new(HashMap::new()),
        }
    }

    fn module(&self, ctx: &Arc<CudaContext>, kernel: Kernel) -> Result<Arc<CudaModule>, CudaError> {
        let slot = &self.modules[Kernel::ALL.iter().position(|k| *k == kernel).unwrap_or(0)];
        if let Some(m) = slot.get() {
            return Ok(m.clone());
        }
        let ptx = cached_ptx(kernel, self.arch)?;
        let module = ctx.load_module(Ptx::from_src(ptx))?;
        // Another thread may have won the race; either module works.
        Ok(slot.get_or_init(|| module).clone())
    }

    /// The function `name` of `kernel`'s module.
    pub(crate) fn function(
        &self,
        ctx: &Arc<CudaContext>,
        kernel: Kernel,
        name: &'static str,
    ) -> Result<CudaFunction, CudaError> {
        if let Some(f) = self.functions.lock().map_err(|_| poisoned())?.get(name) {
            return Ok(f.clone());
        }
        let f = self.module(ctx, kernel)?.load_function(name)?;
        self.functions
            .lock()
            .map_err(|_| poisoned())?
            .insert(name, f.clone());
        Ok(f)
    }
}

fn poisoned() -> CudaError {
    CudaError::Unavailable {
        reason: "the kernel cache lock was poisoned by a panic in another thread".into(),
    }
}
