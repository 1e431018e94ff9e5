//! Tensor table entries: name, type, shape and where the bytes are.

use crate::cursor::Cursor;
use crate::{GgmlType, GgufError};

/// Most dimensions a ggml tensor has (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// Longest tensor name accepted: ggml stores names in 64-byte buffers with a terminating
/// NUL (`GGML_MAX_NAME`), so llama.cpp rejects anything longer than 63 bytes.
pub const MAX_TENSOR_NAME_LEN: u64 = 63;

/// One tensor of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name ("blk.0.attn_q.weight").
    pub name: String,
    /// Its element type.
    pub ty: GgmlType,
    /// Shape in ggml `ne` order: `dims[0]` is the row length (input dimension),
    /// `dims[1]` the number of rows.
    pub dims: Vec<u64>,
    /// Absolute byte offset of its data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (the product of the dimensions; 1 for a 0-dimensional tensor;
    /// saturating, though a tensor read from a file never overflows).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Elements per row (`dims[0]`, 1 for a 0-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (the product of `dims[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |n, &d| n.saturating_mul(d))
    }
}

/// A tensor table entry as read, before its offset is placed in the data section.
pub(crate) struct RawTensorInfo {
    /// Name, type, shape and byte size; `offset` still relative to the data section.
    pub(crate) info: TensorInfo,
    /// Where the entry starts in the file.
    pub(crate) entry_offset: u64,
    /// Where its offset field is stored.
    pub(crate) offset_field: u64,
}

/// Reads and checks tensor table entry number `index`.
pub(crate) fn read_tensor_info(
    cur: &mut Cursor<'_>,
    index: usize,
) -> Result<RawTensorInfo, GgufError> {
    let entry_offset = cur.offset();
    let name = cur.string(MAX_TENSOR_NAME_LEN, &|| format!("name of tensor {index}"))?;
    let context = || format!("tensor info of `{name}`");
    let dims_offset = cur.offset();
    let n_dims = cur.u32(&context)?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            offset: dims_offset,
            tensor: name.to_owned(),
            n_dims,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(&context)?);
    }
    let type_offset = cur.offset();
    let type_id = cur.u32(&context)?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        offset: type_offset,
        tensor: name.to_owned(),
        type_id,
    })?;
    let offset_field = cur.offset();
    let offset = cur.u64(&context)?;
    let n_bytes = byte_size(ty, &dims).map_err(|problem| match problem {
        SizeProblem::Overflow => GgufError::ShapeOverflow {
            offset: dims_offset,
            tensor: name.to_owned(),
            dims: dims.clone(),
        },
        SizeProblem::PartialBlock => GgufError::RowNotBlockAligned {
            offset: dims_offset,
            tensor: name.to_owned(),
            ty,
            row_len: dims.first().copied().unwrap_or(1),
            block: ty.block_elems() as u64,
        },
    })?;
    let info = TensorInfo {
        name: name.to_owned(),
        ty,
        dims,
        offset,
        n_bytes,
    };
    Ok(RawTensorInfo {
        info,
        entry_offset,
        offset_field,
    })
}

/// Why a shape has no valid byte size.
pub(crate) enum SizeProblem {
    /// Element count or byte size past `i64::MAX` (ggml counts in int64).
    Overflow,
    /// Row length not a multiple of the block size.
    PartialBlock,
}

/// Bytes of a tensor of type `ty` and shape `dims`, with overflow and block checks.
pub(crate) fn byte_size(ty: GgmlType, dims: &[u64]) -> Result<u64, SizeProblem> {
    let limit = i64::MAX as u64;
    let mut n_elements: u64 = 1;
    for &d in dims {
        n_elements = n_elements
            .checked_mul(d)
            .filter(|&n| n <= limit)
            .ok_or(SizeProblem::Overflow)?;
    }
    if dims.iter().any(|&d| d > limit) {
        return Err(SizeProblem::Overflow);
    }
    let row_len = dims.first().copied().unwrap_or(1);
    let mut n_rows: u64 = 1;
    for &d in dims.iter().skip(1) {
        n_rows = n_rows.checked_mul(d).ok_or(SizeProblem::Overflow)?;
    }
    let row_bytes = ty.row_bytes(row_len).ok_or(SizeProblem::PartialBlock)?;
    row_bytes
        .checked_mul(n_rows)
        .filter(|&n| n <= limit)
        .ok_or(SizeProblem::Overflow)
}
