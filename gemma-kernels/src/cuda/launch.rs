//! Typed launches of the matrix kernels: activation quantization, decode matvec (mmvq,
//! dp4a), prefill matmul (mmq, int8 tensor cores) and the float-weight fallbacks; plus the
//! argument plumbing every launch function of this module tree uses.

use super::buffer::{ActFormat, DeviceMatrix, Q8Activations};
use super::device::CudaDevice;
use super::error::{check_len, CudaError};
use super::modules::Kernel;
use cudarc::driver::{sys, CudaFunction, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use gemma_gguf::GgmlType;
use std::ffi::c_void;

/// Up to this many tokens a product runs as matrix x vector(s) (mmvq); above it, on tensor
/// cores (mmq).
pub const MMVQ_MAX_TOKENS: usize = 8;

/// One kernel argument, passed by value.
pub(crate) enum Arg {
    /// A device pointer.
    P(u64),
    /// `int`
    I(i32),
    /// `long long`
    L(i64),
    /// `float`
    F(f32),
}

/// The device address of a buffer or view (this crate's single stream needs no events).
pub(crate) fn ptr<T, S: DevicePtr<T>>(dev: &CudaDevice, s: &S) -> u64 {
    let (p, _sync) = s.device_ptr(dev.stream());
    p
}

/// The device address of a buffer or view that the kernel writes.
pub(crate) fn ptr_mut<T, S: DevicePtrMut<T>>(dev: &CudaDevice, s: &mut S) -> u64 {
    let (p, _sync) = s.device_ptr_mut(dev.stream());
    p
}

/// A dimension as a kernel `int`.
pub(crate) fn int(what: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported {
        what,
        value: v,
        rule: "below 2^31",
    })
}

/// A grid dimension.
pub(crate) fn grid_dim(what: &'static str, v: usize) -> Result<u32, CudaError> {
    if v == 0 {
        return Err(CudaError::Unsupported {
            what,
            value: v,
            rule: "at least 1",
        });
    }
    u32::try_from(v).map_err(|_| CudaError::Unsupported {
        what,
        value: v,
        rule: "below 2^32",
    })
}

/// Launches `name` from `kernel` on the device's stream.
pub(crate) fn launch(
    dev: &CudaDevice,
    kernel: Kernel,
    name: &'static str,
    grid: (u32, u32, u32),
    block: u32,
    args: &[Arg],
) -> Result<(), CudaError> {
    let f = dev.function(kernel, name)?;
    if dev.pdl() && kernel.pdl_ready() {
        return launch_pdl(dev, &f, grid, block, args);
    }
    let stream = dev.stream();
    let mut b = stream.launch_builder(&f);
    for a in args {
        match a {
            Arg::P(v) => b.arg(v),
            Arg::I(v) => b.arg(v),
            Arg::L(v) => b.arg(v),
            Arg::F(v) => b.arg(v),
        };
    }
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: every caller passes the argument list of the kernel's C signature in
    // kernels/*.cu (types and order), and has checked that each buffer holds the elements the
    // kernel touches for the given dimensions.
    unsafe { b.launch(cfg) }?;
    Ok(())
}

/// [`launch`] with programmatic stream serialization (cuLaunchKernelEx): the kernel may
/// start before the previous one on the stream has finished; it waits for it on the device.
fn launch_pdl(
    dev: &CudaDevice,
    f: &CudaFunction,
    grid: (u32, u32, u32),
    block: u32,
    args: &[Arg],
) -> Result<(), CudaError> {
    let mut params: Vec<*mut c_void> = args
        .iter()
        .map(|a| match a {
            Arg::P(v) => v as *const u64 as *mut c_void,
            Arg::I(v) => v as *const i32 as *mut c_void,
            Arg::L(v) => v as *const i64 as *mut c_void,
            Arg::F(v) => v as *const f32 as *mut c_void,
        })
        .collect();
    // SAFETY: a zeroed attribute value is valid (a plain C union); the field set is the one
    // the attribute id selects.
    let mut attr = sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        pad: [0; 4],
        value: unsafe { std::mem::zeroed() },
    };
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: grid.0,
        gridDimY: grid.1,
        gridDimZ: grid.2,
        blockDimX: block,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        hStream: dev.stream().cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    dev.context().bind_to_thread()?;
    // SAFETY: as in `launch` (the argument list matches the kernel's C signature, buffers
    // are large enough); `params` points at `args`, and both outlive the call, which copies
    // the values; the stream and function belong to this device's context.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            f.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()?;
    Ok(())
}

/// The mmvq kernel names of one type: for 1, 2, 4 and 8 tokens, then the one-token kernel
/// over up to three matrices (`mmvq_multi_<type>`).
#[rustfmt::skip]
fn mmvq_names(ty: GgmlType) -> Option<[&'static str; 5]> {
    Some(match ty {
        GgmlType::Q4_0 => ["mmvq_q4_0_1", "mmvq_q4_0_2", "mmvq_q4_0_4", "mmvq_q4_0_8", "mmvq_multi_q4_0"],
        GgmlType::Q5_0 => ["mmvq_q5_0_1", "mmvq_q5_0_2", "mmvq_q5_0_4", "mmvq_q5_0_8", "mmvq_multi_q5_0"],
        GgmlType::Q8_0 => ["mmvq_q8_0_1", "mmvq_q8_0_2", "mmvq_q8_0_4", "mmvq_q8_0_8", "mmvq_multi_q8_0"],
        GgmlType::Q4_K => ["mmvq_q4_K_1", "mmvq_q4_K_2", "mmvq_q4_K_4", "mmvq_q4_K_8", "mmvq_multi_q4_K"],
        GgmlType::Q5_K => ["mmvq_q5_K_1", "mmvq_q5_K_2", "mmvq_q5_K_4", "mmvq_q5_K_8", "mmvq_multi_q5_K"],
        GgmlType::Q6_K => ["mmvq_q6_K_1", "mmvq_q6_K_2", "mmvq_q6_K_4", "mmvq_q6_K_8", "mmvq_multi_q6_K"],
        GgmlType::Q4_1 => ["mmvq_q4_1_1", "mmvq_q4_1_2", "mmvq_q4_1_4", "mmvq_q4_1_8", "mmvq_multi_q4_1"],
        GgmlType::Q5_1 => ["mmvq_q5_1_1", "mmvq_q5_1_2", "mmvq_q5_1_4", "mmvq_q5_1_8", "mmvq_multi_q5_1"],
        GgmlType::IQ4_NL => ["mmvq_iq4_nl_1", "mmvq_iq4_nl_2", "mmvq_iq4_nl_4", "mmvq_iq4_nl_8", "mmvq_multi_iq4_nl"],
        GgmlType::Q2_K => ["mmvq_q2_K_1", "mmvq_q2_K_2", "mmvq_q2_K_4", "mmvq_q2_K_8", "mmvq_multi_q2_K"],
        GgmlType::Q3_K => ["mmvq_q3_K_1", "mmvq_q3_K_2", "mmvq_q3_K_4", "mmvq_q3_K_8", "mmvq_multi_q3_K"],
        GgmlType::IQ4_XS => ["mmvq_iq4_xs_1", "mmvq_iq4_xs_2", "mmvq_iq4_xs_4", "mmvq_iq4_xs_8", "mmvq_multi_iq4_xs"],
        _ => return None,
    })
}

fn mmq_name(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "mmq_q4_0",
        GgmlType::Q5_0 => "mmq_q5_0",
        GgmlType::Q8_0 => "mmq_q8_0",
        GgmlType::Q4_K => "mmq_q4_K",
        GgmlType::Q5_K => "mmq_q5_K",
        GgmlType::Q6_K => "mmq_q6_K",
        GgmlType::Q4_1 => "mmq_q4_1",
        GgmlType::Q5_1 => "mmq_q5_1",
        GgmlType::IQ4_NL => "mmq_iq4_nl",
        GgmlType::Q2_K => "mmq_q2_K",
        GgmlType::Q3_K => "mmq_q3_K",
        GgmlType::IQ4_XS => "mmq_iq4_xs",
        _ => return None,
    })
}

fn float_names(ty: GgmlType) -> Option<([&'static str; 4], &'static str)> {
    Some(match ty {
        GgmlType::F32 => (
            [
                "matvec_f32_1",
                "matvec_f32_2",
                "matvec_f32_4",
                "matvec_f32_8",
            ],
            "matmul_f32",
        ),
        GgmlType::F16 => (
            [
                "matvec_f16_1",
                "matvec_f16_2",
                "matvec_f16_4",
                "matvec_f16_8",
            ],
            "matmul_f16",
        ),
        GgmlType::BF16 => (
            [
                "matvec_bf16_1",
                "matvec_bf16_2",
                "matvec_bf16_4",
                "matvec_bf16_8",
            ],
            "matmul_bf16",
        ),
        _ => return None,
    })
}

/// Whether products with `ty` weights take q8_1 activations (else f32 ones).
pub fn uses_q8_activations(ty: GgmlType) -> bool {
    mmq_name(ty).is_some()
}

/// Tasks an mmvq thread takes per round, all their loads in flight at once (`Items` in
/// kernels/mmvq.cu): 4, or 2 for Q4_K, Q5_K and Q6_K (64-weight tasks) and Q2_K and Q3_K
/// (128); a block has 128 threads.
fn mmvq_items(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::Q2_K | GgmlType::Q3_K => 2,
        _ => 4,
    }
}

/// Rows from which a one-token product is tall: the output projection over a vocabulary.
const TALL_ROWS: usize = 32_768;

/// Most weight rows the host gives one mmvq block for `tokens` (1..=8) tokens of a matrix
/// of `rows` rows: 8 / tokens (a task already dots its weights with every token), or 32 for
/// one token of a tall matrix (at least 32768 rows, so thousands of blocks either way): its
/// short rows then fill a round. (The 270M's output rows of 640 weights are 20 Q8_0 tasks:
/// 8 rows used 160 of a round's 512 slots, and the matrix ran at 47% of the HBM bandwidth on
/// an H200 where 15360x3840 Q8_0, whose rounds are full, ran at 70%: run 4.)
pub fn mmvq_max_rows(tokens: usize, rows: usize) -> usize {
    match tokens {
        1 if rows >= TALL_ROWS => 32,
        t if t >= 8 => 1,
        t => 8 / t.max(1),
    }
}

/// Tasks (a thread's share of work) per weight block of the decode matvec: the `TPB` of
/// `Task<type>` in kernels/mmvq.cu.
pub fn mmvq_tasks_per_block(ty: GgmlType) -> usize {
    match ty {
        _ if ty.block_elems() == 32 => 1,
        GgmlType::Q2_K | GgmlType::Q3_K => 2,
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 4,
        _ => 8,
    }
}

/// Most weight rows per block of the decode matvec (mmvq) for a matrix of `rows` rows of
/// `cols` weights of `ty` and `tokens` tokens: as many whole rows as one round of the
/// block's threads covers (a row of `cols` weights is [`mmvq_tasks_per_block`] tasks per
/// weight block; a round is 128 threads x 4 tasks, x 2 for the 64-weight tasks), so a Q4_K
/// row of 3840 weights (60 tasks) shares a block with 3 others; at least 1 and at most
/// [`mmvq_max_rows`].
pub fn mmvq_row_limit(ty: GgmlType, rows: usize, cols: usize, tokens: usize) -> usize {
    let tasks = cols / ty.block_elems() * mmvq_tasks_per_block(ty);
    (128 * mmvq_items(ty) / tasks.max(1)).clamp(1, mmvq_max_rows(tokens, rows))
}

/// The rows per block of a multi-matrix product (`mmvq_multi_*`) of one token: the fewest
/// [`mmvq_rows_per_block`] of its weight types (its matrices are a layer's, never tall).
pub fn mmvq_multi_rows_per_block(types: &[GgmlType], cols: usize) -> usize {
    types
        .iter()
        .map(|&ty| mmvq_rows_per_block(ty, 0, cols, 1))
        .min()
        .unwrap_or(1)
}

/// The rows per block products launch with: [`mmvq_row_limit`], or less where
/// `GEMMA_CUDA_MMVQ_ROWS=r` asks for r (to compare layouts). The choice changes the order of
/// float sums, not their terms.
pub fn mmvq_rows_per_block(ty: GgmlType, rows: usize, cols: usize, tokens: usize) -> usize {
    static FORCED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        std::env::var("GEMMA_CUDA_MMVQ_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let limit = mmvq_row_limit(ty, rows, cols, tokens);
    forced.map_or(limit, |r| r.clamp(1, limit))
}

/// Splits n (<= 8) tokens into chunks of 8, 4, 2, 1: (first token, chunk size, name index).
fn token_chunks(n: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut c0 = 0;
    std::iter::from_fn(move || {
        if c0 >= n {
            return None;
        }
        let (nc, idx) = match n - c0 {
            r if r >= 8 => (8, 3),
            r if r >= 4 => (4, 2),
            r if r >= 2 => (2, 1),
            _ => (1, 0),
        };
        let item = (c0, nc, idx);
        c0 += nc;
        Some(item)
    })
}

/// Quantizes `rows` rows of `k` floats (row-major) to the q8_1 layout in `out`, in `format`.
pub fn quantize_q8_1<X: DevicePtr<f32>>(
    dev: &CudaDevice,
    x: &X,
    rows: usize,
    k: usize,
    format: ActFormat,
    out: &mut Q8Activations,
) -> Result<(), CudaError> {
    check_len("quantize_q8_1 input", rows * k, x.len())?;
    out.set_shape(rows, k, format)?;
    let (xp, qp, dp) = (
        ptr(dev, x),
        ptr_mut(dev, &mut out.qs),
        ptr_mut(dev, &mut out.ds),
    );
    let grid = (
        grid_dim("k", out.k_pad() / 256)?,
        grid_dim("rows", rows)?,
        1,
    );
    let args = [
        Arg::P(xp),
        Arg::I(int("k", k)?),
        Arg::I(int("k_pad", out.k_pad())?),
        Arg::I(format as i32),
        Arg::P(qp),
        Arg::P(dp),
    ];
    launch(dev, Kernel::Quantize, "quantize_q8_1", grid, 256, &args)
}

/// y (n x rows, row-major) = x W^T for a quantized W and q8_1 activations x (n rows):
/// mmvq for up to [`MMVQ_MAX_TOKENS`] tokens, mmq on tensor cores above.
pub fn matmul_q8<Y: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    w: &DeviceMatrix,
    x: &Q8Activations,
    n: usize,
    y: &mut Y,
) -> Result<(), CudaError> {
    let (names, mmq) = match (mmvq_names(w.ty()), mmq_name(w.ty())) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(CudaError::UnsupportedType(w.ty())),
    };
    check_q8_product(w, x, n, y.len())?;
    if n <= MMVQ_MAX_TOKENS {
        for (c0, nc, idx) in token_chunks(n) {
            let per_block = mmvq_rows_per_block(w.ty(), w.rows(), w.cols(), nc);
            let at = MmvqChunk {
                name: names[idx],
                token: c0,
                per_block,
            };
            launch_mmvq(dev, w, x, &at, y)?;
        }
        return Ok(());
    }
    let nb = int("blocks per row", w.cols() / w.ty().block_elems())?;
    let rows = int("rows", w.rows())?;
    let k_pad = x.k_pad();
    let (wp, qp, dp, yp) = (
        ptr(dev, w.data()),
        ptr(dev, &x.qs),
        ptr(dev, &x.ds),
        ptr_mut(dev, y),
    );
    let grid = (
        grid_dim("row tiles", w.rows().div_ceil(64))?,
        grid_dim("token tiles", n.div_ceil(64))?,
        1,
    );
    let args = [
        Arg::P(wp),
        Arg::I(nb),
        Arg::I(int("k", w.cols())?),
        Arg::P(qp),
        Arg::P(dp),
        Arg::I(int("k_pad", k_pad)?),
        Arg::I(int("n", n)?),
        Arg::P(yp),
        Arg::I(rows),
    ];
    launch(dev, Kernel::Mmq, mmq, grid, 128, &args)
}

/// One mmvq launch: kernel `name` on the tokens from `token` on, `per_block` rows per block.
struct MmvqChunk {
    name: &'static str,
    token: usize,
    per_block: usize,
}

fn launch_mmvq<Y: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    w: &DeviceMatrix,
    x: &Q8Activations,
    at: &MmvqChunk,
    y: &mut Y,
) -> Result<(), CudaError> {
    let k_pad = x.k_pad();
    let args = [
        Arg::P(ptr(dev, w.data())),
        Arg::I(int("blocks per row", w.cols() / w.ty().block_elems())?),
        Arg::P(ptr(dev, &x.qs) + (at.token * k_pad) as u64),
        Arg::P(ptr(dev, &x.ds) + (at.token * k_pad / 32 * 8) as u64),
        Arg::I(int("k_pad", k_pad)?),
        Arg::P(ptr_mut(dev, y) + (at.token * w.rows() * 4) as u64),
        Arg::I(int("rows", w.rows())?),
        Arg::I(int("rows per block", at.per_block)?),
    ];
    let grid = grid_dim("row groups", w.rows().div_ceil(at.per_block))?;
    launch(dev, Kernel::Mmvq, at.name, (grid, 1, 1), 128, &args)
}

/// y = x W^T for one token's q8_1 activations `x` with `per_block` weight rows per block
/// (clamped to 1 ..= [`mmvq_row_limit`]), to compare layouts; [`matmul_q8`] picks
/// [`mmvq_rows_per_block`].
pub fn matvec_q8_with_rows<Y: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    w: &DeviceMatrix,
    x: &Q8Activations,
    per_block: usize,
    y: &mut Y,
) -> Result<(), CudaError> {
    let name = mmvq_names(w.ty()).ok_or(CudaError::UnsupportedType(w.ty()))?[0];
    check_q8_product(w, x, 1, y.len())?;
    let at = MmvqChunk {
        name,
        token: 0,
        per_block: per_block.clamp(1, mmvq_row_limit(w.ty(), w.rows(), w.cols(), 1)),
    };
    launch_mmvq(dev, w, x, &at, y)
}

/// A layout of the one-token quantized product other than the engine's (kernels/mmvq.cu's
/// `mmvq_x_*`), for benchmarks to time beside it ([`matvec_q8_experiment`]).
#[derive(Clone, Copy, Debug)]
pub struct MmvqExperiment {
    /// The kernel.
    pub kernel: &'static str,
    /// The weight type it takes.
    pub ty: GgmlType,
    /// What it changes.
    pub about: &'static str,
    tasks_per_block: usize,
    items: usize,
}

/// Every [`MmvqExperiment`].
pub const MMVQ_EXPERIMENTS: [MmvqExperiment; 3] = [
    MmvqExperiment {
        kernel: "mmvq_x_q4_K_half_tasks",
        ty: GgmlType::Q4_K,
        about: "32-weight tasks, 4 per thread (whole sectors per load)",
        tasks_per_block: 8,
        items: 4,
    },
    MmvqExperiment {
        kernel: "mmvq_x_q4_K_four_items",
        ty: GgmlType::Q4_K,
        about: "64-weight tasks, 4 per thread (twice the loads in flight)",
        tasks_per_block: 4,
        items: 4,
    },
    MmvqExperiment {
        kernel: "mmvq_x_q6_K_four_items",
        ty: GgmlType::Q6_K,
        about: "64-weight tasks, 4 per thread (twice the loads in flight)",
        tasks_per_block: 4,
        items: 4,
    },
];

/// y = x W^T for one token's q8_1 activations `x` with experiment `e`'s kernel (W must be
/// of its type), as many rows per block as one round of its tasks covers (at most 8).
pub fn matvec_q8_experiment<Y: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    w: &DeviceMatrix,
    x: &Q8Activations,
    e: &MmvqExperiment,
    y: &mut Y,
) -> Result<(), CudaError> {
    if w.ty() != e.ty {
        return Err(CudaError::UnsupportedType(w.ty()));
    }
    check_q8_product(w, x, 1, y.len())?;
    let tasks = w.cols() / w.ty().block_elems() * e.tasks_per_block;
    let at = MmvqChunk {
        name: e.kernel,
        token: 0,
        per_block: (128 * e.items / tasks.max(1)).clamp(1, mmvq_max_rows(1, w.rows())),
    };
    launch_mmvq(dev, w, x, &at, y)
}

/// Fails unless `x` holds n rows of W's row length in W's activation format and the output
/// has `y_len` = n x rows floats.
fn check_q8_product(
    w: &DeviceMatrix,
    x: &Q8Activations,
    n: usize,
    y_len: usize,
) -> Result<(), CudaError> {
    if x.k() != w.cols() {
        return Err(CudaError::Shape {
            what: "q8_1 activation row length",
            needed: w.cols(),
            actual: x.k(),
        });
    }
    check_format(w.ty(), x)?;
    check_len("q8_1 activation rows", n, x.rows())?;
    check_len("matmul output", n * w.rows(), y_len)
}

/// Fails unless `x` was quantized in the format products with `ty` weights take.
fn check_format(ty: GgmlType, x: &Q8Activations) -> Result<(), CudaError> {
    if x.format() != ActFormat::for_weights(ty) {
        return Err(CudaError::Unsupported {
            what: "activation format (ActFormat) for these weights",
            value: x.format() as usize,
            rule: "ActFormat::for_weights of the weight type",
        });
    }
    Ok(())
}

/// The one-launch kernel for one token's products with matrices of these types (2 or 3 of one
/// quantized type, Q4_K / Q5_K twice then Q6_K, or Q5_0 twice then Q8_0), if there is one.
pub fn multi_kernel(types: &[GgmlType]) -> Option<&'static str> {
    let (&first, rest) = types.split_first()?;
    if !(1..=2).contains(&rest.len()) {
        return None;
    }
    if rest.iter().all(|&t| t == first) {
        return mmvq_names(first).map(|n| n[4]);
    }
    match (first, rest) {
        (GgmlType::Q4_K, [GgmlType::Q4_K, GgmlType::Q6_K]) => Some("mmvq_multi_q4_K_q6_K"),
        (GgmlType::Q5_K, [GgmlType::Q5_K, GgmlType::Q6_K]) => Some("mmvq_multi_q5_K_q6_K"),
        (GgmlType::Q5_0, [GgmlType::Q5_0, GgmlType::Q8_0]) => Some("mmvq_multi_q5_0_q8_0"),
        _ => None,
    }
}

/// Products of one token's q8_1 activations `x` with two or three matrices of one row length
/// (types as [`multi_kernel`] takes them), in one launch: `ys[i] = x W_i^T`.
pub fn matvec_q8_multi<Y: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    ws: &[&DeviceMatrix],
    x: &Q8Activations,
    ys: &mut [&mut Y],
) -> Result<(), CudaError> {
    let (first, ty) = match ws.first() {
        Some(w) if (2..=3).contains(&ws.len()) && ys.len() == ws.len() => (*w, w.ty()),
        _ => {
            return Err(CudaError::Unsupported {
                what: "matrices of one multi-matrix product",
                value: ws.len(),
                rule: "2 or 3, with one output each",
            })
        }
    };
    if let Some(w) = ws.iter().find(|w| w.cols() != first.cols()) {
        return Err(CudaError::Shape {
            what: "row length of a multi-matrix product (one row length)",
            needed: first.cols(),
            actual: w.cols(),
        });
    }
    let types: Vec<GgmlType> = ws.iter().map(|w| w.ty()).collect();
    let name = multi_kernel(&types).ok_or(CudaError::UnsupportedType(ty))?;
    if x.k() != first.cols() {
        return Err(CudaError::Shape {
            what: "q8_1 activation row length",
            needed: first.cols(),
            actual: x.k(),
        });
    }
    for &t in &types {
        check_format(t, x)?;
    }
    check_len("q8_1 activation rows", 1, x.rows())?;
    let per_block = mmvq_multi_rows_per_block(&types, first.cols());
    let mut args = Vec::with_capacity(14);
    let mut blocks = 0;
    for i in 0..3 {
        match (ws.get(i), ys.get_mut(i)) {
            (Some(w), Some(y)) => {
                check_len("multi-matrix product output", w.rows(), y.len())?;
                let yp = ptr_mut(dev, &mut **y);
                args.extend([
                    Arg::P(ptr(dev, w.data())),
                    Arg::P(yp),
                    Arg::I(int("rows", w.rows())?),
                ]);
                blocks += w.rows().div_ceil(per_block);
            }
            _ => args.extend([Arg::P(0), Arg::P(0), Arg::I(0)]),
        }
    }
    args.extend([
        Arg::I(int("blocks per row", first.cols() / ty.block_elems())?),
        Arg::P(ptr(dev, &x.qs)),
        Arg::P(ptr(dev, &x.ds)),
        Arg::I(int("k_pad", x.k_pad())?),
        Arg::I(int("rows per block", per_block)?),
    ]);
    launch(
        dev,
        Kernel::Mmvq,
        name,
        (grid_dim("row groups", blocks)?, 1, 1),
        128,
        &args,
    )
}

/// y (n x rows) = x W^T for an F32 / F16 / BF16 W and f32 activations x (n x cols).
pub fn matmul_float<X: DevicePtr<f32>, Y: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    w: &DeviceMatrix,
    x: &X,
    n: usize,
    y: &mut Y,
) -> Result<(), CudaError> {
    let (names, matmul) = float_names(w.ty()).ok_or(CudaError::UnsupportedType(w.ty()))?;
    check_len("matmul input", n * w.cols(), x.len())?;
    check_len("matmul output", n * w.rows(), y.len())?;
    let k = int("k", w.cols())?;
    let rows = int("rows", w.rows())?;
    let (wp, xp, yp) = (ptr(dev, w.data()), ptr(dev, x), ptr_mut(dev, y));
    if n <= MMVQ_MAX_TOKENS {
        for (c0, _, idx) in token_chunks(n) {
            let args = [
                Arg::P(wp),
                Arg::I(k),
                Arg::P(xp + (c0 * w.cols() * 4) as u64),
                Arg::P(yp + (c0 * w.rows() * 4) as u64),
                Arg::I(rows),
            ];
            launch(
                dev,
                Kernel::MatmulFloat,
                names[idx],
                (grid_dim("rows", w.rows())?, 1, 1),
                128,
                &args,
            )?;
        }
        return Ok(());
    }
    let grid = (
        grid_dim("row tiles", w.rows().div_ceil(64))?,
        grid_dim("token tiles", n.div_ceil(64))?,
        1,
    );
    let args = [
        Arg::P(wp),
        Arg::I(k),
        Arg::P(xp),
        Arg::I(int("n", n)?),
        Arg::P(yp),
        Arg::I(rows),
    ];
    launch(dev, Kernel::MatmulFloat, matmul, grid, 256, &args)
}

/// y (n x rows) = x W^T for any supported W: quantizes x (n x cols f32) into `scratch` first
/// when W is quantized, like the CPU `matmul`.
pub fn matmul<X: DevicePtr<f32>, Y: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    w: &DeviceMatrix,
    x: &X,
    n: usize,
    scratch: &mut Q8Activations,
    y: &mut Y,
) -> Result<(), CudaError> {
    if !uses_q8_activations(w.ty()) {
        return matmul_float(dev, w, x, n, y);
    }
    quantize_q8_1(dev, x, n, w.cols(), ActFormat::for_weights(w.ty()), scratch)?;
    matmul_q8(dev, w, scratch, n, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_functions() -> Vec<&'static str> {
        Kernel::ALL
            .iter()
            .flat_map(|k| k.functions().iter().copied())
            .collect()
    }

    #[test]
    fn every_launched_name_is_a_listed_kernel_function() {
        let listed = all_functions();
        for ty in GgmlType::all() {
            let mut names: Vec<&str> = Vec::new();
            names.extend(mmvq_names(ty).into_iter().flatten());
            names.extend(mmq_name(ty));
            names.extend(
                MMVQ_EXPERIMENTS
                    .iter()
                    .filter(|e| e.ty == ty)
                    .map(|e| e.kernel),
            );
            if let Some((matvec, matmul)) = float_names(ty) {
                names.extend(matvec);
                names.push(matmul);
            }
            for name in names {
                assert!(
                    listed.contains(&name),
                    "{name} (for {ty}) is not in Kernel::functions"
                );
            }
        }
    }

    #[test]
    fn quantized_types_have_both_product_kernels() {
        for ty in super::super::SUPPORTED_TYPES {
            let quantized = mmvq_names(ty).is_some() && mmq_name(ty).is_some();
            assert!(
                quantized || float_names(ty).is_some(),
                "{ty} has no product kernel"
            );
            assert_eq!(uses_q8_activations(ty), quantized, "{ty}");
        }
    }

    #[test]
    fn token_chunks_cover_every_token_once_with_kernel_sizes() {
        for n in 1..=MMVQ_MAX_TOKENS {
            let chunks: Vec<_> = token_chunks(n).collect();
            let mut next = 0;
            for (c0, nc, idx) in chunks {
                assert_eq!(c0, next, "n = {n}");
                assert_eq!(nc, [1, 2, 4, 8][idx], "n = {n}");
                next += nc;
            }
            assert_eq!(next, n);
        }
    }
}
