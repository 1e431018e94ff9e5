//! One layer's keys and values in host memory.
//!
//! Keys are stored per KV head, one row of `head_dim_k` values per slot:
//! `keys[g][slot][d]`, so that `Q·K` is a dot product of contiguous rows. F16 and F32
//! values are stored transposed, `values[g][d][slot]`, so that `P·V` is one dot product
//! per output value over a contiguous run of slots (as llama.cpp's transposed V cache);
//! Q8_0 values keep rows `values[g][slot][d]` (their blocks run along the head
//! dimension) and are accumulated row by row.
//! The buffers are allocated zeroed (untouched pages stay unmapped until used).

use crate::backend::KvShape;
use crate::kv_cache::KvType;
use crate::CoreError;
use gemma_kernels::quant::{BlockQ8_0, QuantBlock};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Cached values of one type.
#[derive(Debug)]
pub(crate) enum KvData {
    /// F32 values.
    F32(Vec<f32>),
    /// F16 values.
    F16(Vec<f16>),
    /// Q8_0 blocks of 32 values.
    Q8_0(Vec<BlockQ8_0>),
}

impl KvData {
    /// `elems` zeroed values of `ty` (`elems` a multiple of its block size).
    fn zeroed(ty: KvType, elems: usize) -> Result<KvData, CoreError> {
        let oom = || CoreError::OutOfMemory {
            what: "the KV cache",
            bytes: ty.row_bytes(elems) as u64,
        };
        Ok(match ty {
            KvType::F32 => {
                KvData::F32(bytemuck::allocation::try_zeroed_vec(elems).map_err(|_| oom())?)
            }
            KvType::F16 => {
                KvData::F16(bytemuck::allocation::try_zeroed_vec(elems).map_err(|_| oom())?)
            }
            KvType::Q8_0 => KvData::Q8_0(
                bytemuck::allocation::try_zeroed_vec(elems / BlockQ8_0::ELEMS)
                    .map_err(|_| oom())?,
            ),
        })
    }

    /// Stores `src` at element offset `at` (a multiple of the block size).
    fn write_row(&mut self, at: usize, src: &[f32]) {
        match self {
            KvData::F32(data) => data[at..at + src.len()].copy_from_slice(src),
            KvData::F16(data) => data[at..at + src.len()].convert_from_f32_slice(src),
            KvData::Q8_0(data) => {
                let b = BlockQ8_0::ELEMS;
                BlockQ8_0::quantize_act(src, &mut data[at / b..(at + src.len()) / b]);
            }
        }
    }

    /// The row of `len` values at element offset `at`.
    pub(crate) fn row(&self, at: usize, len: usize) -> Row<'_> {
        match self {
            KvData::F32(data) => Row::F32(&data[at..at + len]),
            KvData::F16(data) => Row::F16(&data[at..at + len]),
            KvData::Q8_0(data) => {
                let b = BlockQ8_0::ELEMS;
                Row::Q8_0(&data[at / b..(at + len) / b])
            }
        }
    }
}

/// One cached key or value row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Row<'a> {
    /// F32 values.
    F32(&'a [f32]),
    /// F16 values.
    F16(&'a [f16]),
    /// Q8_0 blocks.
    Q8_0(&'a [BlockQ8_0]),
}

impl Row<'_> {
    /// The values as f32 (exact for F32/F16, dequantized for Q8_0).
    pub(crate) fn to_f32(self, out: &mut [f32]) {
        match self {
            Row::F32(x) => out.copy_from_slice(x),
            Row::F16(x) => x.convert_to_f32_slice(out),
            Row::Q8_0(x) => BlockQ8_0::dequantize(x, out),
        }
    }
}

/// Keys and values of one layer.
#[derive(Debug)]
pub struct CpuKvStore {
    /// Slots, heads and type.
    pub(crate) shape: KvShape,
    /// `[kv head][slot][head_dim_k]`.
    pub(crate) keys: KvData,
    /// `[kv head][head_dim_v][slot]` for F16/F32, `[kv head][slot][head_dim_v]` for Q8_0.
    pub(crate) values: KvData,
}

impl CpuKvStore {
    /// Zeroed storage for `shape`.
    pub(crate) fn new(shape: KvShape) -> Result<CpuKvStore, CoreError> {
        let overflow = || CoreError::OutOfMemory {
            what: "the KV cache",
            bytes: u64::MAX,
        };
        let elems = |dim: usize| {
            shape
                .slots
                .checked_mul(dim)
                .and_then(|n| n.checked_mul(shape.heads.n_head_kv))
                .ok_or_else(overflow)
        };
        Ok(CpuKvStore {
            shape,
            keys: KvData::zeroed(shape.kv_type, elems(shape.heads.head_dim_k)?)?,
            values: KvData::zeroed(shape.kv_type, elems(shape.heads.head_dim_v)?)?,
        })
    }

    /// The key row of KV head `g` in `slot`.
    pub(crate) fn key(&self, g: usize, slot: usize) -> Row<'_> {
        let dk = self.shape.heads.head_dim_k;
        self.keys.row((g * self.shape.slots + slot) * dk, dk)
    }

    /// The value row of KV head `g` in `slot` (Q8_0 only: F16/F32 values are transposed).
    pub(crate) fn value(&self, g: usize, slot: usize) -> Row<'_> {
        let dv = self.shape.heads.head_dim_v;
        self.values.row((g * self.shape.slots + slot) * dv, dv)
    }

    /// Writes the key row `k` (all KV heads) and value row `v` of one token into `slot`.
    pub(crate) fn write(&mut self, slot: usize, k: &[f32], v: &[f32]) {
        let KvShape { slots, heads, .. } = self.shape;
        let (dk, dv) = (heads.head_dim_k, heads.head_dim_v);
        for g in 0..heads.n_head_kv {
            self.keys
                .write_row((g * slots + slot) * dk, &k[g * dk..(g + 1) * dk]);
            let value = &v[g * dv..(g + 1) * dv];
            let transposed = |d: usize| (g * dv + d) * slots + slot;
            match &mut self.values {
                KvData::F32(values) => value
                    .iter()
                    .enumerate()
                    .for_each(|(d, &x)| values[transposed(d)] = x),
                KvData::F16(values) => value
                    .iter()
                    .enumerate()
                    .for_each(|(d, &x)| values[transposed(d)] = f16::from_f32(x)),
                q8 @ KvData::Q8_0(_) => q8.write_row((g * slots + slot) * dv, value),
            }
        }
    }
}
