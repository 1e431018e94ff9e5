//! The one error type of this crate.

use gemma_gguf::{GgmlType, GgufError};
use gemma_kernels::KernelError;

/// Everything that can go wrong while loading an mmproj file, reading an image or
/// encoding it.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// The GGUF file could not be read, or a metadata key is missing or mistyped.
    #[error("mmproj file: {0}")]
    Gguf(#[from] GgufError),
    /// A kernel rejected a tensor (unsupported type, length mismatch).
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    /// The file is not a vision projector this crate implements.
    #[error("unsupported projector type `{found}` (only `gemma3` is implemented)")]
    UnsupportedProjector {
        /// The value of `clip.projector_type`.
        found: String,
    },
    /// A hyperparameter has a value the encoder cannot work with.
    #[error("bad vision config: `{key}` = {value}: {reason}")]
    BadConfig {
        /// The metadata key (or derived quantity) at fault.
        key: &'static str,
        /// Its value.
        value: f64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A tensor the encoder needs is not in the file.
    #[error("tensor `{name}` is missing from the mmproj file")]
    MissingTensor {
        /// The GGUF tensor name.
        name: String,
    },
    /// A tensor has other dimensions than the config implies.
    #[error("tensor `{name}` has dims {found:?}, expected {expected:?}")]
    TensorShape {
        /// The GGUF tensor name.
        name: String,
        /// The expected ggml `ne`.
        expected: Vec<u64>,
        /// The dims in the file.
        found: Vec<u64>,
    },
    /// A tensor is stored in a type the kernels cannot dequantize.
    #[error("tensor `{name}` has unsupported type {ty:?}")]
    TensorType {
        /// The GGUF tensor name.
        name: String,
        /// Its ggml type.
        ty: GgmlType,
    },
    /// The bytes are not in an image format this crate reads (PNG, JPEG).
    #[error("unrecognized image format (PNG and JPEG are supported)")]
    UnknownImageFormat,
    /// The image is larger than the decoder accepts.
    #[error("image of {width}x{height} is too large (at most {max_side} pixels per side and {max_pixels} pixels)")]
    ImageTooLarge {
        /// Width in pixels, as declared by the file.
        width: u32,
        /// Height in pixels, as declared by the file.
        height: u32,
        /// The largest accepted side.
        max_side: u32,
        /// The largest accepted pixel count.
        max_pixels: u64,
    },
    /// The image has no pixels.
    #[error("image has no pixels ({width}x{height})")]
    EmptyImage {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The image file is damaged or uses a feature the decoder lacks.
    #[error("cannot decode image: {0}")]
    ImageDecode(#[from] image::ImageError),
    /// Pixels made for another image size were given to the encoder.
    #[error("pixels are {found}x{found}, the encoder expects {expected}x{expected}")]
    PixelsSize {
        /// The encoder's image size.
        expected: usize,
        /// The size of the given pixels.
        found: usize,
    },
    /// The encoder's weights and activation buffers do not fit in the GPU's free memory.
    #[error(
        "the image encoder's weights and buffers on cuda:{device}: {:.1} MiB needed, the device \
         has {:.1} MiB free of {:.1} MiB",
        mib(*.needed),
        mib(*.free),
        mib(*.total)
    )]
    DeviceOutOfMemory {
        /// The CUDA device ordinal.
        device: usize,
        /// Bytes the encoder needs.
        needed: u64,
        /// Free device memory at the time.
        free: u64,
        /// The device's memory.
        total: u64,
    },
    /// The CUDA encoder failed: no usable driver, GPU or NVRTC (the same one line as
    /// `--device cuda` for the language model), or a device call or launch failed.
    #[error(transparent)]
    Cuda(#[from] gemma_kernels::cuda::CudaError),
}

/// Bytes in MiB, for messages.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
