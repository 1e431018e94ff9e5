//! The one error type of this crate.
//!
//! Every parse error names the byte offset where the problem was found and, when there is
//! one, the metadata key or tensor name it belongs to.

use std::path::PathBuf;

use crate::GgmlType;

/// Everything that can go wrong reading, querying or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Open {
        /// The path given to [`crate::GgufFile::open`].
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// Writing failed in the underlying writer.
    #[error("write failed: {0}")]
    Write(#[from] std::io::Error),

    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic at offset {offset} is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// Always 0.
        offset: u64,
        /// The bytes found (fewer than four if the file is that short).
        found: Vec<u8>,
    },

    /// The format version is not 2 or 3.
    #[error("unsupported GGUF version {version} at offset {offset}{}", big_endian_hint(*version))]
    UnsupportedVersion {
        /// Always 4.
        offset: u64,
        /// The version number read as little-endian.
        version: u32,
    },

    /// The file ends before a field that must be there.
    #[error("file truncated at offset {offset}: {context} needs {needed} bytes, {available} left")]
    Truncated {
        /// Where the field starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
        /// What was being read ("metadata key count", "value of key `general.name`").
        context: String,
    },

    /// A count (keys, tensors, array elements) that the rest of the file cannot hold.
    #[error(
        "{what} count {count} at offset {offset} needs at least {min_bytes} bytes, only {available} left in the file"
    )]
    CountTooLarge {
        /// Where the count is stored.
        offset: u64,
        /// What is counted, with the key when it is an array ("elements of `tokenizer.ggml.tokens`").
        what: String,
        /// The count read from the file.
        count: u64,
        /// The smallest number of bytes that many items occupy.
        min_bytes: u128,
        /// Bytes left in the file.
        available: u64,
    },

    /// More metadata keys or tensors than this reader accepts (see [`crate::MAX_METADATA_KEYS`]
    /// and [`crate::MAX_TENSORS`]).
    #[error("{what} count {count} at offset {offset} is more than the limit of {limit}")]
    TooMany {
        /// Where the count is stored.
        offset: u64,
        /// "metadata key" or "tensor".
        what: &'static str,
        /// The count read from the file.
        count: u64,
        /// The cap.
        limit: u64,
    },

    /// A string whose length is past a cap of this reader.
    #[error("{context} at offset {offset} is {len} bytes long, more than the limit of {limit}")]
    StringTooLong {
        /// Where the length is stored.
        offset: u64,
        /// What the string is ("key", "name of tensor 3").
        context: String,
        /// The length read from the file.
        len: u64,
        /// The cap that was exceeded.
        limit: u64,
    },

    /// A string that is not valid UTF-8.
    #[error("invalid UTF-8 at offset {offset} in {context}")]
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: u64,
        /// What the string is.
        context: String,
    },

    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("arrays nested deeper than {limit} at offset {offset} in key `{key}`")]
    NestingTooDeep {
        /// Where the too-deep array starts.
        offset: u64,
        /// The metadata key holding it.
        key: String,
        /// The depth cap.
        limit: usize,
    },

    /// A metadata value type id that GGUF does not define.
    #[error("unknown value type id {type_id} at offset {offset} in key `{key}`")]
    UnknownValueType {
        /// Where the id is stored.
        offset: u64,
        /// The key whose value (or array element type) it is.
        key: String,
        /// The id read.
        type_id: u32,
    },

    /// The same key twice.
    #[error("duplicate metadata key `{key}` at offset {offset}")]
    DuplicateKey {
        /// Where the second occurrence starts.
        offset: u64,
        /// The key.
        key: String,
    },

    /// `general.alignment` is 0, not a power of two, too large or not an integer.
    #[error("invalid general.alignment {found} at offset {offset}: must be a power of two from 1 to 2^30")]
    InvalidAlignment {
        /// Where the value is stored (0 for an alignment given to the writer).
        offset: u64,
        /// The value, as text.
        found: String,
    },

    /// A tensor type id that ggml does not define.
    #[error("unknown tensor type id {type_id} at offset {offset} for tensor `{tensor}`")]
    UnknownTensorType {
        /// Where the id is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The id read.
        type_id: u32,
    },

    /// More dimensions than ggml's four.
    #[error("tensor `{tensor}` at offset {offset} has {n_dims} dimensions, at most 4 are allowed")]
    TooManyDims {
        /// Where the dimension count is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The count read.
        n_dims: u32,
    },

    /// A shape whose element count or byte size does not fit in 63 bits.
    #[error("tensor `{tensor}` at offset {offset}: shape {dims:?} overflows")]
    ShapeOverflow {
        /// Where the shape is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The dimensions read.
        dims: Vec<u64>,
    },

    /// A row length that is not a whole number of the type's blocks.
    #[error(
        "tensor `{tensor}` at offset {offset}: row length {row_len} is not a multiple of {ty}'s block size {block}"
    )]
    RowNotBlockAligned {
        /// Where the shape is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// `dims[0]`.
        row_len: u64,
        /// Elements per block of `ty`.
        block: u64,
    },

    /// The same tensor name twice.
    #[error("duplicate tensor name `{tensor}` at offset {offset}")]
    DuplicateTensor {
        /// Where the second entry starts.
        offset: u64,
        /// The name.
        tensor: String,
    },

    /// A tensor data offset that is not a multiple of the alignment.
    #[error("tensor `{tensor}`: data offset {data_offset} (stored at offset {offset}) is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// Where the tensor's offset field is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The offset read (relative to the data section).
        data_offset: u64,
        /// The file's alignment.
        alignment: u64,
    },

    /// Tensor bytes that reach past the end of the file.
    #[error(
        "tensor `{tensor}`: bytes {start}..{end} (offset field at {offset}) lie outside the data section, which ends at {file_len}"
    )]
    TensorOutOfBounds {
        /// Where the tensor's offset field is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// Absolute start of its bytes.
        start: u64,
        /// Absolute end of its bytes (exclusive), saturated on overflow.
        end: u64,
        /// The file's length.
        file_len: u64,
    },

    /// Two tensors whose bytes overlap.
    #[error(
        "tensor `{tensor}` (offset field at {offset}) overlaps tensor `{other}` at byte {start}"
    )]
    TensorOverlap {
        /// Where the tensor's offset field is stored.
        offset: u64,
        /// The tensor.
        tensor: String,
        /// The tensor it overlaps.
        other: String,
        /// Absolute start of `tensor`'s bytes.
        start: u64,
    },

    /// A getter asked for a key the file does not have.
    #[error("metadata key `{key}` not found")]
    MissingKey {
        /// The key asked for.
        key: String,
    },

    /// A getter asked for a type the value does not have.
    #[error("metadata key `{key}` is {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type the getter wanted.
        expected: &'static str,
        /// The type found in the file.
        found: &'static str,
    },

    /// An integer value (or array element) that does not fit the type asked for.
    #[error("metadata key `{key}`: value {value} does not fit in {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The type the getter wanted.
        expected: &'static str,
        /// The value found.
        value: i128,
    },

    /// The writer was used in the wrong order or with inconsistent data.
    #[error("GGUF writer: {reason} (`{name}`)")]
    WriterMisuse {
        /// The key or tensor concerned.
        name: String,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Extra text for a version that looks byte-swapped.
fn big_endian_hint(version: u32) -> &'static str {
    match version.swap_bytes() {
        2 | 3 => " (this looks like a big-endian GGUF file, which is not supported)",
        _ => "",
    }
}
