//! Typed launches of the SigLIP image encoder's kernels (`kernels/vision.cu`): LayerNorm
//! with bias, patch extraction (im2col), the bias / position / GELU / residual steps, the
//! bidirectional multi-head attention and the projector's average pool. The encoder's
//! matrix products are [`super::launch::matmul_float`] and its RMSNorm is
//! [`super::ops::rms_norm_inplace`]. All tensors are row-major f32.

use super::device::CudaDevice;
use super::error::{check_len, CudaError};
use super::launch::{grid_dim, int, launch, ptr, ptr_mut, Arg};
use super::modules::Kernel;
use cudarc::driver::{DevicePtr, DevicePtrMut};

/// Head widths [`attention`] has a kernel for (the real encoders use 72).
pub const ATTENTION_HEAD_DIMS: [usize; 5] = [16, 32, 64, 72, 80];

/// Threads per block of the attention kernel: one query each (`VIS_ATTN_THREADS`).
const ATTENTION_THREADS: usize = 128;

/// Blocks for a 1-D launch of 256 threads striding over n elements.
fn elementwise_grid(dev: &CudaDevice, n: usize) -> Result<(u32, u32, u32), CudaError> {
    let blocks = n.div_ceil(256).clamp(1, dev.sm_count() * 16);
    Ok((grid_dim("elements", blocks)?, 1, 1))
}

/// A row width that every row-wise kernel needs to be at least 1.
fn width(what: &'static str, dim: usize) -> Result<i32, CudaError> {
    if dim == 0 {
        return Err(CudaError::Unsupported {
            what,
            value: 0,
            rule: "at least 1",
        });
    }
    int(what, dim)
}

/// out = (x - mean) / sqrt(var + eps) * w + b per row of `dim` (biased variance, as
/// `torch.nn.LayerNorm`); `out` may be `x`'s buffer only through [`layer_norm_inplace`].
#[allow(clippy::too_many_arguments)]
pub fn layer_norm<X: DevicePtr<f32>, W: DevicePtr<f32>, B: DevicePtr<f32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    x: &X,
    w: &W,
    b: &B,
    out: &mut O,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), CudaError> {
    check_len("layer_norm input", rows * dim, x.len())?;
    check_len("layer_norm output", rows * dim, out.len())?;
    check_len("layer_norm weight", dim, w.len())?;
    check_len("layer_norm bias", dim, b.len())?;
    let args = [
        Arg::P(ptr(dev, x)),
        Arg::P(ptr(dev, w)),
        Arg::P(ptr(dev, b)),
        Arg::P(ptr_mut(dev, out)),
        Arg::I(width("layer_norm dim", dim)?),
        Arg::F(eps),
    ];
    let grid = (grid_dim("rows", rows)?, 1, 1);
    launch(dev, Kernel::Vision, "vis_layer_norm", grid, 256, &args)
}

/// [`layer_norm`] in place.
pub fn layer_norm_inplace<X: DevicePtrMut<f32>, W: DevicePtr<f32>, B: DevicePtr<f32>>(
    dev: &CudaDevice,
    x: &mut X,
    w: &W,
    b: &B,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<(), CudaError> {
    check_len("layer_norm input", rows * dim, x.len())?;
    check_len("layer_norm weight", dim, w.len())?;
    check_len("layer_norm bias", dim, b.len())?;
    let xp = ptr_mut(dev, x);
    let args = [
        Arg::P(xp),
        Arg::P(ptr(dev, w)),
        Arg::P(ptr(dev, b)),
        Arg::P(xp),
        Arg::I(width("layer_norm dim", dim)?),
        Arg::F(eps),
    ];
    let grid = (grid_dim("rows", rows)?, 1, 1);
    launch(dev, Kernel::Vision, "vis_layer_norm", grid, 256, &args)
}

/// Geometry of the patch embedding: a square CHW image cut into square patches.
#[derive(Clone, Copy, Debug)]
pub struct Patches {
    /// Image side in pixels (a multiple of `patch`).
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch: usize,
    /// Row length of the output, at least `3 * patch * patch` (the rest is zeros).
    pub k_pad: usize,
}

impl Patches {
    /// Patches per image side.
    pub fn side(&self) -> usize {
        self.image_size / self.patch.max(1)
    }

    /// Patches per image.
    pub fn count(&self) -> usize {
        self.side() * self.side()
    }
}

/// im2col: row n of `out` (`count() x k_pad`) holds patch n (row-major patch grid) of
/// `pixels` (3 x image_size x image_size) in Conv2d weight order (channel, ky, kx), then
/// zeros up to `k_pad`.
pub fn im2col<P: DevicePtr<f32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    pixels: &P,
    shape: Patches,
    out: &mut O,
) -> Result<(), CudaError> {
    let Patches {
        image_size,
        patch,
        k_pad,
    } = shape;
    if patch == 0 || !image_size.is_multiple_of(patch) {
        return Err(CudaError::Unsupported {
            what: "patch size",
            value: patch,
            rule: "non-zero and dividing the image size",
        });
    }
    if k_pad < 3 * patch * patch {
        return Err(CudaError::Shape {
            what: "im2col row length",
            needed: 3 * patch * patch,
            actual: k_pad,
        });
    }
    check_len("im2col pixels", 3 * image_size * image_size, pixels.len())?;
    check_len("im2col output", shape.count() * k_pad, out.len())?;
    let args = [
        Arg::P(ptr(dev, pixels)),
        Arg::I(int("image size", image_size)?),
        Arg::I(int("patch size", patch)?),
        Arg::I(int("patches per side", shape.side())?),
        Arg::I(int("k_pad", k_pad)?),
        Arg::P(ptr_mut(dev, out)),
    ];
    let grid = (grid_dim("patches", shape.count())?, 1, 1);
    launch(dev, Kernel::Vision, "vis_im2col", grid, 256, &args)
}

/// h = (h + b) + pos for `rows` rows of `dim` (`b`: dim values, `pos`: rows x dim).
pub fn add_bias_position<H: DevicePtrMut<f32>, B: DevicePtr<f32>, P: DevicePtr<f32>>(
    dev: &CudaDevice,
    h: &mut H,
    b: &B,
    pos: &P,
    rows: usize,
    dim: usize,
) -> Result<(), CudaError> {
    let n = rows * dim;
    check_len("add_bias_position h", n, h.len())?;
    check_len("add_bias_position bias", dim, b.len())?;
    check_len("add_bias_position positions", n, pos.len())?;
    let args = [
        Arg::P(ptr_mut(dev, h)),
        Arg::P(ptr(dev, b)),
        Arg::P(ptr(dev, pos)),
        Arg::I(width("dim", dim)?),
        Arg::L(n as i64),
    ];
    let grid = elementwise_grid(dev, n)?;
    launch(
        dev,
        Kernel::Vision,
        "vis_add_bias_position",
        grid,
        256,
        &args,
    )
}

/// The three per-row bias steps of the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasOp {
    /// x += b.
    Add,
    /// x = gelu_tanh(x + b).
    Gelu,
}

/// x = op(x, b) for `rows` rows of `dim` (`b`: dim values).
pub fn bias<X: DevicePtrMut<f32>, B: DevicePtr<f32>>(
    dev: &CudaDevice,
    op: BiasOp,
    x: &mut X,
    b: &B,
    rows: usize,
    dim: usize,
) -> Result<(), CudaError> {
    let n = rows * dim;
    check_len("bias x", n, x.len())?;
    check_len("bias b", dim, b.len())?;
    let args = [
        Arg::P(ptr_mut(dev, x)),
        Arg::P(ptr(dev, b)),
        Arg::I(width("dim", dim)?),
        Arg::L(n as i64),
    ];
    let name = match op {
        BiasOp::Add => "vis_add_bias",
        BiasOp::Gelu => "vis_bias_gelu",
    };
    launch(
        dev,
        Kernel::Vision,
        name,
        elementwise_grid(dev, n)?,
        256,
        &args,
    )
}

/// h += y + b for `rows` rows of `dim`: the residual add of a biased linear output.
pub fn add_bias_residual<H: DevicePtrMut<f32>, Y: DevicePtr<f32>, B: DevicePtr<f32>>(
    dev: &CudaDevice,
    h: &mut H,
    y: &Y,
    b: &B,
    rows: usize,
    dim: usize,
) -> Result<(), CudaError> {
    let n = rows * dim;
    check_len("add_bias_residual h", n, h.len())?;
    check_len("add_bias_residual y", n, y.len())?;
    check_len("add_bias_residual bias", dim, b.len())?;
    let args = [
        Arg::P(ptr_mut(dev, h)),
        Arg::P(ptr(dev, y)),
        Arg::P(ptr(dev, b)),
        Arg::I(width("dim", dim)?),
        Arg::L(n as i64),
    ];
    let grid = elementwise_grid(dev, n)?;
    launch(
        dev,
        Kernel::Vision,
        "vis_add_bias_residual",
        grid,
        256,
        &args,
    )
}

/// The kernel name for one head width.
fn attention_name(head_dim: usize) -> Option<&'static str> {
    Some(match head_dim {
        16 => "vis_attention_16",
        32 => "vis_attention_32",
        64 => "vis_attention_64",
        72 => "vis_attention_72",
        80 => "vis_attention_80",
        _ => return None,
    })
}

/// Bidirectional attention over `n` patches: `out[:, h] = softmax(q_h k_h^T / sqrt(head_dim))
/// v_h` for every head h, with `q`, `k`, `v` and `out` `n x (heads * head_dim)` and head h in
/// columns `h * head_dim ..`. `head_dim` must be one of [`ATTENTION_HEAD_DIMS`].
#[allow(clippy::too_many_arguments)]
pub fn attention<Q: DevicePtr<f32>, K: DevicePtr<f32>, V: DevicePtr<f32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    q: &Q,
    k: &K,
    v: &V,
    out: &mut O,
    n: usize,
    heads: usize,
    head_dim: usize,
) -> Result<(), CudaError> {
    let name = attention_name(head_dim).ok_or(CudaError::Unsupported {
        what: "vision head_dim",
        value: head_dim,
        rule: "16, 32, 64, 72 or 80",
    })?;
    let width = heads * head_dim;
    for (what, len) in [
        ("attention q", q.len()),
        ("attention k", k.len()),
        ("attention v", v.len()),
        ("attention output", out.len()),
    ] {
        check_len(what, n * width, len)?;
    }
    let args = [
        Arg::P(ptr(dev, q)),
        Arg::P(ptr(dev, k)),
        Arg::P(ptr(dev, v)),
        Arg::P(ptr_mut(dev, out)),
        Arg::I(int("patches", n)?),
        Arg::I(int("attention width", width)?),
        Arg::F(1.0 / (head_dim as f32).sqrt()),
    ];
    let grid = (
        grid_dim("query blocks", n.div_ceil(ATTENTION_THREADS))?,
        grid_dim("heads", heads)?,
        1,
    );
    launch(
        dev,
        Kernel::Vision,
        name,
        grid,
        ATTENTION_THREADS as u32,
        &args,
    )
}

/// Mean of each `k x k` block of a `side x side` grid of rows of `dim` values: `out` holds
/// `(side / k)^2` rows in row-major block order (`torch.nn.AvgPool2d(k, k)`).
pub fn avg_pool<H: DevicePtr<f32>, O: DevicePtrMut<f32>>(
    dev: &CudaDevice,
    h: &H,
    out: &mut O,
    side: usize,
    dim: usize,
    k: usize,
) -> Result<(), CudaError> {
    if k == 0 || !side.is_multiple_of(k) {
        return Err(CudaError::Unsupported {
            what: "pool kernel",
            value: k,
            rule: "non-zero and dividing the patches per side",
        });
    }
    let tokens = (side / k) * (side / k);
    check_len("avg_pool input", side * side * dim, h.len())?;
    check_len("avg_pool output", tokens * dim, out.len())?;
    let args = [
        Arg::P(ptr(dev, h)),
        Arg::P(ptr_mut(dev, out)),
        Arg::I(int("patches per side", side)?),
        Arg::I(width("dim", dim)?),
        Arg::I(int("pool kernel", k)?),
    ];
    let grid = (grid_dim("tokens", tokens)?, 1, 1);
    launch(dev, Kernel::Vision, "vis_avg_pool", grid, 256, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attention_width_has_a_listed_kernel() {
        let listed = Kernel::Vision.functions();
        for hd in ATTENTION_HEAD_DIMS {
            let name = attention_name(hd).expect("listed width has a name");
            assert!(listed.contains(&name), "{name} not in Kernel::functions");
            assert!(Kernel::Vision
                .source()
                .contains(&format!("VIS_ATTENTION_KERNEL({hd})")));
        }
        assert_eq!(attention_name(128), None);
        assert!(Kernel::Vision
            .source()
            .contains(&format!("#define VIS_ATTN_THREADS {ATTENTION_THREADS}")));
    }

    #[test]
    fn patch_geometry_counts_the_grid() {
        let p = Patches {
            image_size: 896,
            patch: 14,
            k_pad: 592,
        };
        assert_eq!((p.side(), p.count()), (64, 4096));
    }
}
