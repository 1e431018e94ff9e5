//! Typed launches of the row and elementwise kernels: RMSNorm (plain, + residual, +
//! quantization), RoPE, GeGLU, add, scale, f32 -> f16, the embedding gather and KV-cache
//! stores. All tensors are row-major f32 unless said otherwise.

use super::attention::{KvElem, KvKind};
use super::buffer::{ActFormat, DeviceMatrix, Q8Activations};
use super::device::CudaDevice;
use super::error::{check_len, CudaError};
use super::launch::{grid_dim, int, launch, ptr, ptr_mut, Arg};
use super::modules::Kernel;
use crate::cpu::ops::rope_theta_scale;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

/// Blocks for a 1-D elementwise launch of 256 threads over n elements.
fn elementwise_grid(dev: &CudaDevice, n: usize) -> Result<(u32, u32, u32), CudaError> {
    let blocks = n.div_ceil(256).clamp(1, dev.sm_count() * 16);
    Ok((grid_dim("elements", blocks)?, 1, 1))
}

fn checked_rows(what: &'static str, rows: usize, dim: usize, len: usize) -> Result<(), CudaError> {
    check_len(what, rows * dim, len)
}

/// out = x / sqrt(mean(x^2) + eps) * w per row of `dim` (w: dim floats, as stored in GGUF).
pub fn rms_norm<X: DevicePtr<f32>, W: DevicePtr<f32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    x: &X,
    w: &W,
    out: &mut O,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), CudaError> {
    checked_rows("rms_norm input", rows, dim, x.len())?;
    checked_rows("rms_norm output", rows, dim, out.len())?;
    check_len("rms_norm weight", dim, w.len())?;
    let args = [
        Arg::P(ptr(dev, x)),
        Arg::P(ptr(dev, w)),
        Arg::P(ptr_mut(dev, out)),
        Arg::I(int("dim", dim)?),
        Arg::F(eps),
    ];
    launch(
        dev,
        Kernel::Norm,
        "rms_norm",
        (grid_dim("rows", rows)?, 1, 1),
        plain_norm_threads(dim),
        &args,
    )
}

/// [`rms_norm`] in place (also the per-head QK norm: rows = tokens x heads, dim = head_dim).
pub fn rms_norm_inplace<X: DevicePtrMut<f32>, W: DevicePtr<f32>>(
    dev: &CudaDevice,
    x: &mut X,
    w: &W,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), CudaError> {
    checked_rows("rms_norm input", rows, dim, x.len())?;
    check_len("rms_norm weight", dim, w.len())?;
    let xp = ptr_mut(dev, x);
    let args = [
        Arg::P(xp),
        Arg::P(ptr(dev, w)),
        Arg::P(xp),
        Arg::I(int("dim", dim)?),
        Arg::F(eps),
    ];
    launch(
        dev,
        Kernel::Norm,
        "rms_norm",
        (grid_dim("rows", rows)?, 1, 1),
        plain_norm_threads(dim),
        &args,
    )
}

/// x = rms_norm(x) * w, then residual += x: Gemma's post-attention / post-FFN norm and the
/// residual add in one launch, with the values of [`rms_norm_inplace`] then [`add`].
pub fn rms_norm_add<X: DevicePtrMut<f32>, W: DevicePtr<f32>, R: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    x: &mut X,
    w: &W,
    residual: &mut R,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), CudaError> {
    checked_rows("rms_norm_add input", rows, dim, x.len())?;
    checked_rows("rms_norm_add residual", rows, dim, residual.len())?;
    check_len("rms_norm_add weight", dim, w.len())?;
    let args = [
        Arg::P(ptr_mut(dev, x)),
        Arg::P(ptr(dev, w)),
        Arg::P(ptr_mut(dev, residual)),
        Arg::I(int("dim", dim)?),
        Arg::F(eps),
    ];
    launch(
        dev,
        Kernel::Norm,
        "rms_norm_add",
        (grid_dim("rows", rows)?, 1, 1),
        plain_norm_threads(dim),
        &args,
    )
}

/// Threads of the norms that keep a row in registers (`ROW_THREADS`, kernels/common.cuh).
const ROW_THREADS: u32 = 1024;

/// Widest row the norms fused with quantization take: they keep a row in registers,
/// `ROW_THREADS` x `ROW_VALUES` (kernels/common.cuh) values.
const ROW_IN_REGISTERS_MAX: usize = ROW_THREADS as usize * 6;

/// Threads of [`rms_norm`] and [`rms_norm_add`] for rows of `dim`: the fused norms' sums
/// (norm.cu), with no more threads than a row has values (rounded up to 256).
fn plain_norm_threads(dim: usize) -> u32 {
    dim.div_ceil(256).clamp(1, ROW_THREADS as usize / 256) as u32 * 256
}

/// Refuses rows wider than [`ROW_IN_REGISTERS_MAX`].
fn check_row_in_registers(dim: usize) -> Result<(), CudaError> {
    if dim > ROW_IN_REGISTERS_MAX {
        return Err(CudaError::Unsupported {
            what: "row length of a norm fused with quantization",
            value: dim,
            rule: "at most 6144",
        });
    }
    Ok(())
}

/// out = rms_norm(x) * w (the values of [`rms_norm`]), also quantized in `format` to `q8`
/// (the input of the products that follow), in one launch.
#[allow(clippy::too_many_arguments)] // rms_norm's arguments plus the quantized output
pub fn rms_norm_q8_1<X: DevicePtr<f32>, W: DevicePtr<f32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    x: &X,
    w: &W,
    out: &mut O,
    rows: usize,
    dim: usize,
    eps: f32,
    format: ActFormat,
    q8: &mut Q8Activations,
) -> Result<(), CudaError> {
    checked_rows("rms_norm_q8_1 input", rows, dim, x.len())?;
    checked_rows("rms_norm_q8_1 output", rows, dim, out.len())?;
    check_len("rms_norm_q8_1 weight", dim, w.len())?;
    check_row_in_registers(dim)?;
    q8.set_shape(rows, dim, format)?;
    let args = [
        Arg::P(ptr(dev, x)),
        Arg::P(ptr(dev, w)),
        Arg::P(ptr_mut(dev, out)),
        Arg::I(int("dim", dim)?),
        Arg::F(eps),
        Arg::I(int("k_pad", q8.k_pad())?),
        Arg::I(format as i32),
        Arg::P(ptr_mut(dev, &mut q8.qs)),
        Arg::P(ptr_mut(dev, &mut q8.ds)),
    ];
    launch(
        dev,
        Kernel::Norm,
        "rms_norm_q8_1",
        (grid_dim("rows", rows)?, 1, 1),
        ROW_THREADS,
        &args,
    )
}

/// A post-norm, its residual and the next pre-norm in one launch: o = rms_norm(o) * w_post,
/// residual += o, out = rms_norm(residual) * w_next, also quantized in `format` to `q8` (the
/// values of [`rms_norm_add`] then [`rms_norm_q8_1`]).
#[allow(clippy::too_many_arguments)] // both norms' arguments plus the quantized output
pub fn rms_norm_add_norm_q8_1<O, W, R, Out>(
    dev: &CudaDevice,
    o: &mut O,
    w_post: &W,
    residual: &mut R,
    w_next: &W,
    out: &mut Out,
    rows: usize,
    dim: usize,
    eps: f32,
    format: ActFormat,
    q8: &mut Q8Activations,
) -> Result<(), CudaError>
where
    O: DevicePtrMut<f32>,
    W: DevicePtr<f32>,
    R: DevicePtrMut<f32>,
    Out: DevicePtrMut<f32>,
{
    checked_rows("rms_norm_add_norm_q8_1 input", rows, dim, o.len())?;
    checked_rows("rms_norm_add_norm_q8_1 residual", rows, dim, residual.len())?;
    checked_rows("rms_norm_add_norm_q8_1 output", rows, dim, out.len())?;
    check_len("rms_norm_add_norm_q8_1 post weight", dim, w_post.len())?;
    check_len("rms_norm_add_norm_q8_1 next weight", dim, w_next.len())?;
    check_row_in_registers(dim)?;
    q8.set_shape(rows, dim, format)?;
    let args = [
        Arg::P(ptr_mut(dev, o)),
        Arg::P(ptr(dev, w_post)),
        Arg::P(ptr_mut(dev, residual)),
        Arg::P(ptr(dev, w_next)),
        Arg::P(ptr_mut(dev, out)),
        Arg::I(int("dim", dim)?),
        Arg::F(eps),
        Arg::I(int("k_pad", q8.k_pad())?),
        Arg::I(format as i32),
        Arg::P(ptr_mut(dev, &mut q8.qs)),
        Arg::P(ptr_mut(dev, &mut q8.ds)),
    ];
    launch(
        dev,
        Kernel::Norm,
        "rms_norm_add_norm_q8_1",
        (grid_dim("rows", rows)?, 1, 1),
        ROW_THREADS,
        &args,
    )
}

/// Shape and frequencies of a rotary embedding.
#[derive(Clone, Copy, Debug)]
pub struct Rope {
    /// Heads per token.
    pub n_heads: usize,
    /// Dimensions per head (even).
    pub head_dim: usize,
    /// Base of the frequencies (10 000 local, 1 000 000 global in Gemma 3).
    pub freq_base: f32,
    /// Linear position scaling (1 / factor; 1 / 8 on the global layers of 4B and up).
    pub freq_scale: f32,
}

/// Rotates x (n tokens x n_heads x head_dim) in place, NEOX style, token t at
/// `positions[t]`: theta = pos * freq_scale * freq_base^(-2i / head_dim), each angle rounded as
/// the CPU's [`crate::cpu::ops::rope_neox`] rounds it (bit for bit, before sin / cos).
pub fn rope_neox<X: DevicePtrMut<f32>, P: DevicePtr<i32>>(
    dev: &CudaDevice,
    x: &mut X,
    positions: &P,
    n: usize,
    rope: Rope,
) -> Result<(), CudaError> {
    let Rope {
        n_heads,
        head_dim,
        freq_base,
        freq_scale,
    } = rope;
    if !head_dim.is_multiple_of(2) || head_dim > 2048 {
        return Err(CudaError::Unsupported {
            what: "head_dim",
            value: head_dim,
            rule: "even, at most 2048",
        });
    }
    check_len("rope input", n * n_heads * head_dim, x.len())?;
    check_len("rope positions", n, positions.len())?;
    let args = [
        Arg::P(ptr_mut(dev, x)),
        Arg::I(int("n_heads", n_heads)?),
        Arg::I(int("head_dim", head_dim)?),
        Arg::P(ptr(dev, positions)),
        Arg::F(rope_theta_scale(freq_base, head_dim)),
        Arg::F(freq_scale),
    ];
    let grid = (grid_dim("tokens", n)?, grid_dim("heads", n_heads)?, 1);
    launch(
        dev,
        Kernel::Rope,
        "rope_neox",
        grid,
        grid_dim("threads", head_dim / 2)?,
        &args,
    )
}

/// Shape, frequencies and scales of [`qk_norm_rope`].
#[derive(Clone, Copy, Debug)]
pub struct QkNormRope {
    /// Query heads per token.
    pub n_q_heads: usize,
    /// Key heads per token.
    pub n_k_heads: usize,
    /// Dimensions per head (even, at most 2048).
    pub head_dim: usize,
    /// Base of the RoPE frequencies.
    pub freq_base: f32,
    /// Linear RoPE position scaling.
    pub freq_scale: f32,
    /// Factor of the queries after RoPE (the attention scale).
    pub q_scale: f32,
    /// Epsilon of the per-head RMSNorm.
    pub eps: f32,
}

/// One layer's QK-norm, RoPE and query scale in one launch: every head of q (n tokens x
/// n_q_heads x head_dim) and k (n x n_k_heads x head_dim) becomes rms_norm(head) * wq (wk),
/// rotated as [`rope_neox`] does at `positions[t]`; q is then scaled. The values of
/// [`rms_norm_inplace`], [`rope_neox`] and [`scale`] in turn.
#[allow(clippy::too_many_arguments)] // two tensors, their two norm weights, positions, shape
pub fn qk_norm_rope<Q, K, W, P>(
    dev: &CudaDevice,
    q: &mut Q,
    k: &mut K,
    wq: &W,
    wk: &W,
    positions: &P,
    n: usize,
    p: QkNormRope,
) -> Result<(), CudaError>
where
    Q: DevicePtrMut<f32>,
    K: DevicePtrMut<f32>,
    W: DevicePtr<f32>,
    P: DevicePtr<i32>,
{
    let hd = p.head_dim;
    if !hd.is_multiple_of(2) || hd > 2048 {
        return Err(CudaError::Unsupported {
            what: "head_dim",
            value: hd,
            rule: "even, at most 2048",
        });
    }
    check_len("qk_norm_rope queries", n * p.n_q_heads * hd, q.len())?;
    check_len("qk_norm_rope keys", n * p.n_k_heads * hd, k.len())?;
    check_len("qk_norm_rope query norm", hd, wq.len())?;
    check_len("qk_norm_rope key norm", hd, wk.len())?;
    check_len("qk_norm_rope positions", n, positions.len())?;
    let args = [
        Arg::P(ptr_mut(dev, q)),
        Arg::P(ptr_mut(dev, k)),
        Arg::P(ptr(dev, wq)),
        Arg::P(ptr(dev, wk)),
        Arg::I(int("query heads", p.n_q_heads)?),
        Arg::I(int("key heads", p.n_k_heads)?),
        Arg::I(int("head_dim", hd)?),
        Arg::P(ptr(dev, positions)),
        Arg::F(rope_theta_scale(p.freq_base, hd)),
        Arg::F(p.freq_scale),
        Arg::F(p.q_scale),
        Arg::F(p.eps),
    ];
    let grid = (
        grid_dim("tokens", n)?,
        grid_dim("heads", p.n_q_heads + p.n_k_heads)?,
        1,
    );
    let threads = grid_dim("threads", (hd / 2).div_ceil(32) * 32)?;
    launch(dev, Kernel::Rope, "qk_norm_rope", grid, threads, &args)
}

/// gate = gelu(gate) * up (n elements, the values of [`geglu_inplace`]), also quantized
/// in `format` to `q8` as one row of n values: the layout of rows of length `k` for any k
/// that is a multiple of 256 and divides n (see [`Q8Activations::split_rows`]).
pub fn geglu_q8_1<G: DevicePtrMut<f32>, U: DevicePtr<f32>>(
    dev: &CudaDevice,
    gate: &mut G,
    up: &U,
    n: usize,
    format: ActFormat,
    q8: &mut Q8Activations,
) -> Result<(), CudaError> {
    check_len("geglu gate", n, gate.len())?;
    check_len("geglu up", n, up.len())?;
    q8.set_shape(1, n, format)?;
    let g = ptr_mut(dev, gate);
    let args = [
        Arg::P(g),
        Arg::P(ptr(dev, up)),
        Arg::P(g),
        Arg::L(n as i64),
        Arg::I(format as i32),
        Arg::P(ptr_mut(dev, &mut q8.qs)),
        Arg::P(ptr_mut(dev, &mut q8.ds)),
    ];
    let grid = (grid_dim("blocks", q8.k_pad() / 256)?, 1, 1);
    launch(dev, Kernel::Quantize, "geglu_q8_1", grid, 256, &args)
}

/// out = gelu(gate) * up, n elements, with the GELU of the CPU engine (and of llama.cpp's CPU
/// backend): GELU-tanh of the gate rounded to F16, rounded to F16 (see
/// [`crate::cpu::ops::geglu_f16_inplace`]).
pub fn geglu<G: DevicePtr<f32>, U: DevicePtr<f32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    gate: &G,
    up: &U,
    out: &mut O,
    n: usize,
) -> Result<(), CudaError> {
    check_len("geglu gate", n, gate.len())?;
    check_len("geglu up", n, up.len())?;
    check_len("geglu output", n, out.len())?;
    let args = [
        Arg::P(ptr(dev, gate)),
        Arg::P(ptr(dev, up)),
        Arg::P(ptr_mut(dev, out)),
        Arg::L(n as i64),
    ];
    launch(
        dev,
        Kernel::Elementwise,
        "geglu",
        elementwise_grid(dev, n)?,
        256,
        &args,
    )
}

/// gate = gelu(gate) * up, n elements, in place (the values of [`geglu`]).
pub fn geglu_inplace<G: DevicePtrMut<f32>, U: DevicePtr<f32>>(
    dev: &CudaDevice,
    gate: &mut G,
    up: &U,
    n: usize,
) -> Result<(), CudaError> {
    check_len("geglu gate", n, gate.len())?;
    check_len("geglu up", n, up.len())?;
    let g = ptr_mut(dev, gate);
    let args = [Arg::P(g), Arg::P(ptr(dev, up)), Arg::P(g), Arg::L(n as i64)];
    launch(
        dev,
        Kernel::Elementwise,
        "geglu",
        elementwise_grid(dev, n)?,
        256,
        &args,
    )
}

/// a += b, n elements.
pub fn add<A: DevicePtrMut<f32>, B: DevicePtr<f32>>(
    dev: &CudaDevice,
    a: &mut A,
    b: &B,
    n: usize,
) -> Result<(), CudaError> {
    check_len("add a", n, a.len())?;
    check_len("add b", n, b.len())?;
    let args = [
        Arg::P(ptr_mut(dev, a)),
        Arg::P(ptr(dev, b)),
        Arg::L(n as i64),
    ];
    launch(
        dev,
        Kernel::Elementwise,
        "add_f32",
        elementwise_grid(dev, n)?,
        256,
        &args,
    )
}

/// Blocks of [`read_stream`]: eight per multiprocessor (2048 threads each).
pub fn read_stream_blocks(dev: &CudaDevice) -> usize {
    dev.sm_count() * 8
}

/// Reads the whole 16-byte words of `bytes` and writes the XOR of each warp's words to
/// `out` ([`read_stream_blocks`] x 8 values): a plain streaming read, the bandwidth
/// reference of the matvec benchmarks.
pub fn read_stream(
    dev: &CudaDevice,
    bytes: &CudaSlice<u8>,
    out: &mut CudaSlice<i32>,
) -> Result<(), CudaError> {
    let blocks = read_stream_blocks(dev);
    check_len("read_stream output", blocks * 8, out.len())?;
    let args = [
        Arg::P(ptr(dev, bytes)),
        Arg::L((bytes.len() / 16) as i64),
        Arg::P(ptr_mut(dev, out)),
    ];
    launch(
        dev,
        Kernel::Elementwise,
        "read_stream",
        (grid_dim("read_stream blocks", blocks)?, 1, 1),
        256,
        &args,
    )
}

/// a *= s, n elements.
pub fn scale<A: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    a: &mut A,
    s: f32,
    n: usize,
) -> Result<(), CudaError> {
    check_len("scale input", n, a.len())?;
    let args = [Arg::P(ptr_mut(dev, a)), Arg::F(s), Arg::L(n as i64)];
    launch(
        dev,
        Kernel::Elementwise,
        "scale_f32",
        elementwise_grid(dev, n)?,
        256,
        &args,
    )
}

/// dst = src rounded to f16 (raw bits), n elements.
pub fn f32_to_f16<S: DevicePtr<f32>, D: DevicePtrMut<u16>>(
    dev: &CudaDevice,
    src: &S,
    dst: &mut D,
    n: usize,
) -> Result<(), CudaError> {
    check_len("f32_to_f16 input", n, src.len())?;
    check_len("f32_to_f16 output", n, dst.len())?;
    let args = [
        Arg::P(ptr(dev, src)),
        Arg::P(ptr_mut(dev, dst)),
        Arg::L(n as i64),
    ];
    launch(
        dev,
        Kernel::Elementwise,
        "f32_to_f16",
        elementwise_grid(dev, n)?,
        256,
        &args,
    )
}

/// `out[t] = dequantize(W row ids[t]) * scale` for n ids: the token embedding (scale =
/// sqrt(hidden)), or with scale 1 the plain dequantization of rows.
pub fn get_rows<I: DevicePtr<i32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    w: &DeviceMatrix,
    ids: &I,
    n: usize,
    scale: f32,
    out: &mut O,
) -> Result<(), CudaError> {
    check_len("get_rows ids", n, ids.len())?;
    check_len("get_rows output", n * w.cols(), out.len())?;
    let args = [
        Arg::P(ptr(dev, w.data())),
        Arg::I(int("type id", w.ty().id() as usize)?),
        Arg::L(w.row_bytes() as i64),
        Arg::P(ptr(dev, ids)),
        Arg::I(int("dim", w.cols())?),
        Arg::F(scale),
        Arg::P(ptr_mut(dev, out)),
    ];
    launch(
        dev,
        Kernel::Elementwise,
        "get_rows",
        (grid_dim("ids", n)?, 1, 1),
        256,
        &args,
    )
}

/// Stores n rows of `width` floats (K or V of n tokens, width = n_kv_heads x head_dim) into
/// a cache of `n_slots` rows: token t to slot `positions[t] % n_slots` (a ring for
/// sliding-window layers). Only the last n_slots tokens are written. The cache format
/// follows its element type ([`KvElem`]): f16 (rounded), f32, or Q8_0 blocks quantized like
/// the CPU cache (width a multiple of 32).
pub fn kv_store<E: KvElem, S: DevicePtr<f32>, P: DevicePtr<i32>, C: DevicePtrMut<E>>(
    dev: &CudaDevice,
    src: &S,
    n: usize,
    width: usize,
    positions: &P,
    n_slots: usize,
    cache: &mut C,
) -> Result<(), CudaError> {
    check_kv_store::<E>(src.len(), n, width, positions.len(), n_slots, cache.len())?;
    let (s, c) = (ptr(dev, src), ptr_mut(dev, cache));
    launch_kv_store::<E>(
        dev,
        [s, s],
        n,
        width,
        ptr(dev, positions),
        n_slots,
        [c, c],
        1,
    )
}

/// The tokens' keys and values and where they go: the caches of one layer, `n_slots` slots
/// (token t to slot `positions[t] % n_slots`, as [`kv_store`]).
pub struct KvTarget<'a, S, C> {
    /// The values (n x n_k_heads x head_dim floats); the keys are [`qk_norm_rope_store`]'s k.
    pub v: &'a S,
    /// Slots of each cache.
    pub n_slots: usize,
    /// Key cache.
    pub k_cache: &'a mut C,
    /// Value cache.
    pub v_cache: &'a mut C,
}

/// [`qk_norm_rope`] and [`kv_store_pair`] of the same tokens in one launch: the normed,
/// rotated keys and the values go to their caches (the values of those two calls). A Q8_0
/// cache needs head_dim / 2 to be a multiple of 32.
#[allow(clippy::too_many_arguments)] // qk_norm_rope's arguments plus the caches
pub fn qk_norm_rope_store<E, Q, K, W, P, S, C>(
    dev: &CudaDevice,
    q: &mut Q,
    k: &mut K,
    wq: &W,
    wk: &W,
    positions: &P,
    n: usize,
    p: QkNormRope,
    kv: KvTarget<'_, S, C>,
) -> Result<(), CudaError>
where
    E: KvElem,
    Q: DevicePtrMut<f32>,
    K: DevicePtrMut<f32>,
    W: DevicePtr<f32>,
    P: DevicePtr<i32>,
    S: DevicePtr<f32>,
    C: DevicePtrMut<E>,
{
    let hd = p.head_dim;
    if !hd.is_multiple_of(2)
        || hd > 2048
        || (E::KIND == KvKind::Q8_0 && !(hd / 2).is_multiple_of(32))
    {
        return Err(CudaError::Unsupported {
            what: "head_dim of a fused QK-norm, RoPE and KV store",
            value: hd,
            rule: "even, at most 2048; with a Q8_0 cache, head_dim / 2 a multiple of 32",
        });
    }
    check_len("qk_norm_rope_store queries", n * p.n_q_heads * hd, q.len())?;
    check_len("qk_norm_rope_store query norm", hd, wq.len())?;
    check_len("qk_norm_rope_store key norm", hd, wk.len())?;
    let width = p.n_k_heads * hd;
    check_kv_store::<E>(
        k.len(),
        n,
        width,
        positions.len(),
        kv.n_slots,
        kv.k_cache.len(),
    )?;
    check_kv_store::<E>(
        kv.v.len(),
        n,
        width,
        positions.len(),
        kv.n_slots,
        kv.v_cache.len(),
    )?;
    let name = match E::KIND {
        KvKind::F16 => "qk_norm_rope_store_f16",
        KvKind::F32 => "qk_norm_rope_store_f32",
        KvKind::Q8_0 => "qk_norm_rope_store_q8_0",
    };
    let args = [
        Arg::P(ptr_mut(dev, q)),
        Arg::P(ptr_mut(dev, k)),
        Arg::P(ptr(dev, kv.v)),
        Arg::P(ptr(dev, wq)),
        Arg::P(ptr(dev, wk)),
        Arg::I(int("tokens", n)?),
        Arg::I(int("query heads", p.n_q_heads)?),
        Arg::I(int("key heads", p.n_k_heads)?),
        Arg::I(int("head_dim", hd)?),
        Arg::P(ptr(dev, positions)),
        Arg::F(rope_theta_scale(p.freq_base, hd)),
        Arg::F(p.freq_scale),
        Arg::F(p.q_scale),
        Arg::F(p.eps),
        Arg::I(int("slots", kv.n_slots)?),
        Arg::P(ptr_mut(dev, kv.k_cache)),
        Arg::P(ptr_mut(dev, kv.v_cache)),
    ];
    let grid = (
        grid_dim("tokens", n)?,
        grid_dim("heads", p.n_q_heads + 2 * p.n_k_heads)?,
        1,
    );
    let threads = grid_dim("threads", (hd / 2).div_ceil(32) * 32)?;
    launch(dev, Kernel::Rope, name, grid, threads, &args)
}

/// [`kv_store`] of a token batch's keys and values into their two caches, in one launch.
#[allow(clippy::too_many_arguments)] // two sources and two caches of one layout
pub fn kv_store_pair<E, S, P, C>(
    dev: &CudaDevice,
    k: &S,
    v: &S,
    n: usize,
    width: usize,
    positions: &P,
    n_slots: usize,
    k_cache: &mut C,
    v_cache: &mut C,
) -> Result<(), CudaError>
where
    E: KvElem,
    S: DevicePtr<f32>,
    P: DevicePtr<i32>,
    C: DevicePtrMut<E>,
{
    check_kv_store::<E>(k.len(), n, width, positions.len(), n_slots, k_cache.len())?;
    check_kv_store::<E>(v.len(), n, width, positions.len(), n_slots, v_cache.len())?;
    let srcs = [ptr(dev, k), ptr(dev, v)];
    let caches = [ptr_mut(dev, k_cache), ptr_mut(dev, v_cache)];
    launch_kv_store::<E>(dev, srcs, n, width, ptr(dev, positions), n_slots, caches, 2)
}

fn check_kv_store<E: KvElem>(
    src_len: usize,
    n: usize,
    width: usize,
    positions_len: usize,
    n_slots: usize,
    cache_len: usize,
) -> Result<(), CudaError> {
    check_len("kv_store input", n * width, src_len)?;
    check_len("kv_store positions", n, positions_len)?;
    if E::KIND == KvKind::Q8_0 && !width.is_multiple_of(32) {
        return Err(CudaError::Unsupported {
            what: "Q8_0 KV row width",
            value: width,
            rule: "a multiple of 32",
        });
    }
    check_len(
        "kv_store cache",
        E::KIND.buffer_len(n_slots * width),
        cache_len,
    )
}

/// The store kernel of `E`'s caches over (K, V) sources and caches; `pairs` 1 stores K only.
#[allow(clippy::too_many_arguments)] // the kernel's arguments
fn launch_kv_store<E: KvElem>(
    dev: &CudaDevice,
    srcs: [u64; 2],
    n: usize,
    width: usize,
    positions: u64,
    n_slots: usize,
    caches: [u64; 2],
    pairs: u32,
) -> Result<(), CudaError> {
    let name = match E::KIND {
        KvKind::F16 => "kv_store",
        KvKind::F32 => "kv_store_f32",
        KvKind::Q8_0 => "kv_store_q8_0",
    };
    let args = [
        Arg::P(srcs[0]),
        Arg::P(srcs[1]),
        Arg::I(int("n", n)?),
        Arg::I(int("width", width)?),
        Arg::P(positions),
        Arg::I(int("n_slots", n_slots)?),
        Arg::P(caches[0]),
        Arg::P(caches[1]),
    ];
    launch(
        dev,
        Kernel::Elementwise,
        name,
        (grid_dim("tokens", n)?, pairs, 1),
        256,
        &args,
    )
}
