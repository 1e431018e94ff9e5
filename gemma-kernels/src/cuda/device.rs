//! One GPU: its context, the stream all kernels run on, and its compiled kernels.

use super::error::CudaError;
use super::modules::{ComputeArch, Kernel, ModuleCache};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DriverError};
use std::sync::Arc;

/// Whether the NVIDIA driver library can be loaded (it says nothing about devices).
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen libcuda by its usual names; loads no symbols.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, or the reason there are none usable.
pub fn device_count() -> Result<usize, CudaError> {
    if !driver_available() {
        return Err(CudaError::Unavailable {
            reason: "the NVIDIA driver library (libcuda.so) was not found; is this a machine with an NVIDIA GPU?".into(),
        });
    }
    let n = CudaContext::device_count()
        .map_err(|e| unavailable("the CUDA driver did not initialise", e))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Whether a CUDA device and NVRTC are both usable, i.e. [`CudaDevice::new`]`(0)` can work.
pub fn is_available() -> bool {
    super::modules::nvrtc_available() && matches!(device_count(), Ok(n) if n > 0)
}

fn unavailable(what: &str, e: DriverError) -> CudaError {
    CudaError::Unavailable {
        reason: format!("{what} ({e})"),
    }
}

/// A GPU with one stream. Kernels are compiled by NVRTC for its architecture the first time
/// they are used (PTX cached on disk, see [`super::modules::cached_ptx`]). All launches go
/// to [`CudaDevice::stream`] in order; reads back to the host synchronise.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: ComputeArch,
    name: String,
    sm_count: usize,
    modules: ModuleCache,
    pdl: bool,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

impl CudaDevice {
    /// Opens device `ordinal`. Fails with a one-line [`CudaError`] when the driver, a device
    /// or NVRTC is missing, or the GPU is older than compute capability 8.0.
    pub fn new(ordinal: usize) -> Result<CudaDevice, CudaError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::Unavailable {
                reason: format!(
                    "CUDA device {ordinal} was asked for, the driver reports {count} device(s)"
                ),
            });
        }
        if !super::modules::nvrtc_available() {
            return Err(CudaError::NvrtcMissing);
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| unavailable("could not create a CUDA context", e))?;
        // SAFETY: called before any buffer or stream of this context exists; every kernel of
        // this crate runs on the single stream below, so no cross-stream events are needed.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability()?;
        if major < 8 {
            return Err(CudaError::UnsupportedArch { major, minor });
        }
        let arch = ComputeArch { major, minor };
        let stream = ctx.new_stream()?;
        let name = ctx.name()?;
        let sm_count = usize::try_from(
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        )
        .unwrap_or(1);
        Ok(CudaDevice {
            ctx,
            stream,
            arch,
            name,
            sm_count,
            modules: ModuleCache::new(arch),
            pdl: major >= 9 && std::env::var("GEMMA_CUDA_PDL").map_or(true, |v| v != "0"),
        })
    }

    /// Whether kernels of the decode path are launched with programmatic dependent launch
    /// (compute capability 9.0 and up, unless `GEMMA_CUDA_PDL=0`): the next kernel starts
    /// while the previous one finishes, and a matvec streams its first weights before it
    /// waits for its activations (see `pdl_wait` in kernels/common.cuh). Measured on an
    /// H200 (docs/gpu-runs, runs 4 and 5): a decode graph's GPU time 3.8-6.4% lower on the
    /// 12B, 9.7-12.9% on the 270M.
    pub fn pdl(&self) -> bool {
        self.pdl
    }

    /// The device name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture kernels are compiled for.
    pub fn arch(&self) -> ComputeArch {
        self.arch
    }

    /// Number of streaming multiprocessors.
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every kernel of this device is launched on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until all work queued on the stream has finished.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        Ok(self.ctx.mem_get_info()?)
    }

    /// Compiles (or loads from the PTX cache) every kernel file now, so the first real
    /// launch does not pay for it.
    pub fn warm_up(&self) -> Result<(), CudaError> {
        for k in Kernel::ALL {
            self.modules.function(&self.ctx, k, first_function(k))?;
        }
        Ok(())
    }

    /// The function `name` from `kernel`'s module.
    pub(crate) fn function(
        &self,
        kernel: Kernel,
        name: &'static str,
    ) -> Result<CudaFunction, CudaError> {
        self.modules.function(&self.ctx, kernel, name)
    }
}

/// A function every module defines, to force its loading.
fn first_function(k: Kernel) -> &'static str {
    match k {
        Kernel::Quantize => "quantize_q8_1",
        Kernel::Norm => "rms_norm",
        Kernel::Rope => "rope_neox",
        Kernel::Elementwise => "add_f32",
        Kernel::Mmvq => "mmvq_q4_K_1",
        Kernel::Mmq => "mmq_q4_K",
        Kernel::MatmulFloat => "matvec_f16_1",
        Kernel::Attention => "attn_decode_256",
        Kernel::FlashAttn => "flash_prefill_256",
        Kernel::Vision => "vis_layer_norm",
        Kernel::Argmax => "argmax_part",
    }
}
