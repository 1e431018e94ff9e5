//! The greedy pick on the device (`kernels/argmax.cu`): the index of the highest value of a
//! row of logits, by the host's rule (`gemma_core::sampling::argmax`: the first one on ties,
//! NaN never wins, 0 when no value is above -inf), so that a greedy decode step reads back
//! one id instead of its logits (1 MiB for Gemma 3's vocabulary).

use super::device::CudaDevice;
use super::error::{check_len, CudaError};
use super::launch::{grid_dim, int, launch, ptr, ptr_mut, Arg};
use super::modules::Kernel;
use cudarc::driver::{CudaSlice, DevicePtr};

/// Blocks of the first pass, each reducing one slice of the row (`ARGMAX_PARTS` in
/// argmax.cu).
const PARTS: usize = 128;
/// Threads per block of both passes (`ARGMAX_THREADS`).
const THREADS: u32 = 256;

/// The device memory of [`argmax`]: one key per first-pass block, and the picked index.
pub struct ArgmaxScratch {
    parts: CudaSlice<u64>,
    index: CudaSlice<i32>,
}

impl ArgmaxScratch {
    /// Allocates the scratch (about 1 KiB).
    pub fn new(dev: &CudaDevice) -> Result<ArgmaxScratch, CudaError> {
        Ok(ArgmaxScratch {
            parts: super::zeros(dev, PARTS)?,
            index: super::zeros(dev, 1)?,
        })
    }

    /// The one-element device buffer [`argmax`] writes its pick to.
    pub fn index(&self) -> &CudaSlice<i32> {
        &self.index
    }
}

/// Writes the index of the highest of the first `n` values of `x` to `scratch.index()`
/// (two launches: per-slice keys, then their maximum).
pub fn argmax<X: DevicePtr<f32>>(
    dev: &CudaDevice,
    x: &X,
    n: usize,
    scratch: &mut ArgmaxScratch,
) -> Result<(), CudaError> {
    check_len("argmax input", n, x.len())?;
    let per_block = int("argmax values per block", n.div_ceil(PARTS).max(1))?;
    let part_args = [
        Arg::P(ptr(dev, x)),
        Arg::I(int("argmax values", n)?),
        Arg::I(per_block),
        Arg::P(ptr_mut(dev, &mut scratch.parts)),
    ];
    let parts = (grid_dim("argmax parts", PARTS)?, 1, 1);
    launch(
        dev,
        Kernel::Argmax,
        "argmax_part",
        parts,
        THREADS,
        &part_args,
    )?;
    let final_args = [
        Arg::P(ptr(dev, &scratch.parts)),
        Arg::P(ptr_mut(dev, &mut scratch.index)),
    ];
    launch(
        dev,
        Kernel::Argmax,
        "argmax_final",
        (1, 1, 1),
        THREADS,
        &final_args,
    )
}
