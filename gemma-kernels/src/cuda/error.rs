//! The error type of the CUDA backend.

use gemma_gguf::GgmlType;

/// Everything that can go wrong on the CUDA path. Each message is one line that names the
/// cause, so `--device cuda` on a machine without CUDA fails with a clear sentence.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No usable NVIDIA driver or GPU: libcuda could not be loaded, or reports no device.
    #[error("CUDA is not available: {reason}")]
    Unavailable {
        /// What was missing.
        reason: String,
    },
    /// NVRTC (libnvrtc.so), which compiles the kernels at run time, could not be loaded.
    #[error(
        "NVRTC is not available: libnvrtc.so(.12) was not found by the dynamic loader; \
         install it (scripts/setup-nvrtc.sh prints its folder) and add that folder to LD_LIBRARY_PATH"
    )]
    NvrtcMissing,
    /// The GPU is older than the kernels need (int8 tensor-core mma needs compute capability 8.0).
    #[error("GPU compute capability {major}.{minor} is not supported (need 8.0 or newer)")]
    UnsupportedArch {
        /// Major compute capability.
        major: i32,
        /// Minor compute capability.
        minor: i32,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// NVRTC rejected a kernel source.
    #[error("NVRTC could not compile {module}.cu for {arch}: {log}")]
    Compile {
        /// The kernel file (without `.cu`).
        module: &'static str,
        /// The virtual architecture, e.g. `compute_90`.
        arch: String,
        /// NVRTC's log or error.
        log: String,
    },
    /// A `GEMMA_CUDA_DEFINES` entry is not a tuning constant the kernels take.
    #[error(
        "GEMMA_CUDA_DEFINES entry `{0}`: expected NAME=NUMBER, NAME one of \
         ATT_KEYS_IN_FLIGHT, ATT_WALK_AHEAD, MMQ_MIN_BLOCKS"
    )]
    Tuning(String),
    /// The weight type has no CUDA kernel.
    #[error("weight type {0} is not supported on CUDA")]
    UnsupportedType(GgmlType),
    /// A buffer is smaller than the operation needs, or dimensions do not fit the kernel.
    #[error("{what}: needs {needed}, has {actual}")]
    Shape {
        /// Which argument or dimension.
        what: &'static str,
        /// The size required.
        needed: usize,
        /// The size given.
        actual: usize,
    },
    /// A dimension has a value the kernels do not handle.
    #[error("{what} = {value} is not supported by the CUDA kernels ({rule})")]
    Unsupported {
        /// Which dimension.
        what: &'static str,
        /// Its value.
        value: usize,
        /// What the kernels accept.
        rule: &'static str,
    },
}

impl CudaError {
    /// Whether the driver refused an allocation for lack of device memory.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(
            self,
            CudaError::Driver(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY
        )
    }
}

/// Checks that a buffer holds at least `needed` elements.
pub(crate) fn check_len(what: &'static str, needed: usize, actual: usize) -> Result<(), CudaError> {
    if actual < needed {
        return Err(CudaError::Shape {
            what,
            needed,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CudaError;
    use cudarc::driver::{sys::CUresult, DriverError};

    #[test]
    fn only_the_drivers_out_of_memory_counts_as_out_of_memory() {
        let driver = |r| CudaError::Driver(DriverError(r));
        assert!(driver(CUresult::CUDA_ERROR_OUT_OF_MEMORY).is_out_of_memory());
        assert!(!driver(CUresult::CUDA_ERROR_INVALID_VALUE).is_out_of_memory());
        assert!(!CudaError::NvrtcMissing.is_out_of_memory());
    }
}
