//! Device buffers: weight matrices in their GGUF blocks, q8_1 activations, and plain
//! host <-> device copies.

use super::device::CudaDevice;
use super::error::{check_len, CudaError};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};
use gemma_gguf::GgmlType;

/// Weight types the CUDA kernels handle.
pub const SUPPORTED_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
];

/// Whether `ty` has CUDA kernels.
pub fn is_supported(ty: GgmlType) -> bool {
    SUPPORTED_TYPES.contains(&ty)
}

/// A `rows x cols` weight matrix on the device, bytes exactly as in the GGUF file (rows of
/// `ty.row_bytes(cols)` bytes); uploaded once, never converted.
pub struct DeviceMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: CudaSlice<u8>,
}

impl DeviceMatrix {
    /// Copies a matrix of raw GGUF blocks to the device.
    pub fn upload(
        dev: &CudaDevice,
        ty: GgmlType,
        data: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, CudaError> {
        if !is_supported(ty) {
            return Err(CudaError::UnsupportedType(ty));
        }
        if !cols.is_multiple_of(ty.block_elems()) || !cols.is_multiple_of(8) {
            return Err(CudaError::Unsupported {
                what: "matrix row length",
                value: cols,
                rule: "a multiple of the block size and of 8",
            });
        }
        let row_bytes = cols / ty.block_elems() * ty.block_bytes();
        let needed = row_bytes.checked_mul(rows).ok_or(CudaError::Shape {
            what: "matrix bytes",
            needed: usize::MAX,
            actual: data.len(),
        })?;
        if data.len() != needed {
            return Err(CudaError::Shape {
                what: "matrix bytes",
                needed,
                actual: data.len(),
            });
        }
        let data = dev.stream().clone_htod(data)?;
        Ok(DeviceMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// The ggml type of the blocks.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row length (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Bytes of device memory held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The raw blocks.
    pub fn data(&self) -> &CudaSlice<u8> {
        &self.data
    }
}

/// Rounds a row length up to the activation padding (256, one K-quant super-block).
pub fn padded_len(k: usize) -> usize {
    k.div_ceil(256) * 256
}

/// How activations are quantized for the products with one weight type: the CPU backend's
/// activation blocks for it (ggml's `vec_dot_type`), so that both backends multiply the same
/// integers by the same scales (`ACT_*` in kernels/common.cuh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// Per 32 values: d = f16(amax / 127), q = round-half-even(x * 127 / amax); as
    /// `BlockQ8_0` (Q4_0, Q5_0, Q8_0, IQ4_NL weights).
    Q8_0 = 0,
    /// The same d and q, with s = f16(amax / 127 * sum(q)); as `BlockQ8_1` (Q4_1, Q5_1).
    Q8_1 = 1,
    /// Per 256 values: d = -max / 127 with max the first value of largest magnitude,
    /// q = min(round(x / d), 127); as `BlockQ8_K` (the K-quants and IQ4_XS).
    Q8K = 2,
}

impl ActFormat {
    /// The format of the products with `ty` weights (quantized types; Q8_0 for others).
    pub fn for_weights(ty: GgmlType) -> ActFormat {
        match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 => ActFormat::Q8_1,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_XS => ActFormat::Q8K,
            _ => ActFormat::Q8_0,
        }
    }
}

/// Activations quantized for integer dot products: `rows` rows of `k` values (padded with
/// zeros to k_pad = [`padded_len`]`(k)`), per 32 values a scale d and s = d * sum(q) (both
/// f32, with the values of the [`ActFormat`] they were quantized in). Layout: `qs` rows of
/// k_pad int8, `ds` rows of k_pad / 32 pairs {d, s}. One buffer serves every product of a
/// model: its shape and format are set by each quantization.
pub struct Q8Activations {
    k: usize,
    k_pad: usize,
    rows: usize,
    format: ActFormat,
    pub(crate) qs: CudaSlice<i8>,
    pub(crate) ds: CudaSlice<f32>,
}

impl Q8Activations {
    /// Allocates room for `max_rows` rows of up to `max_k` values.
    pub fn new(dev: &CudaDevice, max_k: usize, max_rows: usize) -> Result<Self, CudaError> {
        let elems = padded_len(max_k) * max_rows.max(1);
        let qs = dev.stream().alloc_zeros::<i8>(elems)?;
        let ds = dev.stream().alloc_zeros::<f32>(elems / 32 * 2)?;
        Ok(Q8Activations {
            k: max_k,
            k_pad: padded_len(max_k),
            rows: 0,
            format: ActFormat::Q8_0,
            qs,
            ds,
        })
    }

    /// Values per row of the current contents.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Padded row length of the current contents.
    pub fn k_pad(&self) -> usize {
        self.k_pad
    }

    /// Int8 values the allocation holds (rows x padded row length at most).
    pub fn capacity(&self) -> usize {
        self.qs.len()
    }

    /// Rows of the current contents.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Format of the current contents.
    pub fn format(&self) -> ActFormat {
        self.format
    }

    /// Bytes of device memory held (values and scales).
    pub fn bytes(&self) -> usize {
        self.qs.len() + self.ds.len() * 4
    }

    /// Sets the shape and format of the next contents; fails when they do not fit the
    /// allocation.
    pub(crate) fn set_shape(
        &mut self,
        rows: usize,
        k: usize,
        format: ActFormat,
    ) -> Result<(), CudaError> {
        let k_pad = padded_len(k);
        check_len("q8_1 activation buffer", rows * k_pad, self.qs.len())?;
        (self.rows, self.k, self.k_pad, self.format) = (rows, k, k_pad, format);
        Ok(())
    }

    /// Reads the current contents, one row of `rows * k` values, as `rows` rows of `k`: the
    /// same bytes when k is a multiple of 256 (no padding between rows). Fails otherwise.
    pub fn split_rows(&mut self, rows: usize, k: usize) -> Result<(), CudaError> {
        if self.rows != 1 || rows.checked_mul(k) != Some(self.k) || !k.is_multiple_of(256) {
            return Err(CudaError::Shape {
                what: "q8_1 rows to split (one row of rows x k, k a multiple of 256)",
                needed: rows.saturating_mul(k),
                actual: self.k,
            });
        }
        self.set_shape(rows, k, self.format)
    }

    /// Copies the quantized values and the {d, s} pairs of the current contents to the host.
    pub fn download(&self, dev: &CudaDevice) -> Result<(Vec<i8>, Vec<f32>), CudaError> {
        let qs = dev
            .stream()
            .clone_dtoh(&self.qs.slice(..self.rows * self.k_pad))?;
        let ds = dev
            .stream()
            .clone_dtoh(&self.ds.slice(..self.rows * self.k_pad / 32 * 2))?;
        Ok((qs, ds))
    }
}

/// Copies a host slice to a new device buffer.
pub fn upload<T: DeviceRepr>(dev: &CudaDevice, src: &[T]) -> Result<CudaSlice<T>, CudaError> {
    Ok(dev.stream().clone_htod(src)?)
}

/// Allocates a zeroed device buffer of `n` elements.
pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
    dev: &CudaDevice,
    n: usize,
) -> Result<CudaSlice<T>, CudaError> {
    Ok(dev.stream().alloc_zeros::<T>(n.max(1))?)
}

/// Copies a device buffer (or view) back to the host; waits for the stream.
pub fn download<T: DeviceRepr, S: DevicePtr<T>>(
    dev: &CudaDevice,
    src: &S,
) -> Result<Vec<T>, CudaError> {
    Ok(dev.stream().clone_dtoh(src)?)
}
