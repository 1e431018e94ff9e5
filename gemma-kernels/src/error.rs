//! The crate's error type.

use gemma_gguf::GgmlType;

/// Everything the kernels can reject: types without kernels and buffers whose sizes do
/// not fit the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The ggml type has no (de)quantization or dot-product kernel here.
    #[error("ggml type {0} is not supported by the kernels")]
    UnsupportedType(GgmlType),
    /// A buffer has the wrong length for the operation.
    #[error("{what}: expected length {expected}, found {found}")]
    Length {
        /// Which buffer or dimension (for example "dequantize output").
        what: &'static str,
        /// The length the operation needs.
        expected: usize,
        /// The length it was given.
        found: usize,
    },
    /// A byte or element count is not a whole number of blocks of the type.
    #[error("{ty}: {len} {unit} is not a multiple of the block size {block}")]
    PartialBlock {
        /// The block type.
        ty: GgmlType,
        /// The length given.
        len: usize,
        /// "bytes" or "elements".
        unit: &'static str,
        /// Bytes or elements per block.
        block: usize,
    },
}
