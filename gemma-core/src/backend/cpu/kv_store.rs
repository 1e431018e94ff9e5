//! One layer's keys and values in host memory.
//!
//! Keys are stored per KV head, one row of `head_dim_k` values per slot:
//! `keys[g][slot][d]`, so that `Q·K` is a dot product of contiguous rows. Values in F16
//! or F32 are stored transposed, `values[g][d][slot]`, so that `P·V` is one dot product
//! per output value over a contiguous run of slots (as llama.cpp's non-flash attention
//! does with its transposed V cache). Q8_0 values keep rows of `head_dim_v` values
//! (their blocks run along the head dimension) and are accumulated row by row.
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
        let oom = || CoreError::OutOfMemory { what: "the KV cache", bytes: ty.row_bytes(elems) as u64 };
        Ok(match ty {
            KvType::F32 => KvData::F32(bytemuck::allocation::try_zeroed_vec(elems).map_err(|_| oom())?),
            KvType::F16 => KvData::F16(bytemuck::allocation::try_zeroed_vec(elems).map_err(|_| oom())?),
            KvType::Q8_0 => KvData::Q8_0(
                bytemuck::allocation::try_zeroed_vec(elems / BlockQ8_0::ELEMS).map_err(|_| oom())?,
            ),
        })
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
        let overflow = || CoreError::OutOfMemory { what: "the KV cache", bytes: u64::MAX };
        let per_head = |dim: usize| {
            shape
                .slots
                .checked_mul(dim)
                .and_then(|n| n.checked_mul(shape.heads.n_head_kv))
                .ok_or_else(overflow)
        };
        Ok(CpuKvStore {
            shape,
            keys: KvData::zeroed(shape.kv_type, per_head(shape.heads.head_dim_k)?)?,
            values: KvData::zeroed(shape.kv_type, per_head(shape.heads.head_dim_v)?)?,
        })
    }

    /// Writes the key row `k` (all KV heads) and value row `v` of one token into `slot`.
    pub(crate) fn write(&mut self, slot: usize, k: &[f32], v: &[f32]) {
        let KvShape { slots, heads, .. } = self.shape;
        let (dk, dv) = (heads.head_dim_k, heads.head_dim_v);
        for g in 0..heads.n_head_kv {
            let key = &k[g * dk..(g + 1) * dk];
            let row = (g * slots + slot) * dk;
            match &mut self.keys {
                KvData::F32(keys) => keys[row..row + dk].copy_from_slice(key),
                KvData::F16(keys) => keys[row..row + dk].convert_from_f32_slice(key),
                KvData::Q8_0(keys) => {
                    let b = BlockQ8_0::ELEMS;
                    BlockQ8_0::quantize_act(key, &mut keys[row / b..(row + dk) / b]);
                }
            }
            let value = &v[g * dv..(g + 1) * dv];
            match &mut self.values {
                KvData::F32(values) => {
                    for (d, &x) in value.iter().enumerate() {
                        values[(g * dv + d) * slots + slot] = x;
                    }
                }
                KvData::F16(values) => {
                    for (d, &x) in value.iter().enumerate() {
                        values[(g * dv + d) * slots + slot] = f16::from_f32(x);
                    }
                }
                KvData::Q8_0(values) => {
                    let b = BlockQ8_0::ELEMS;
                    let row = (g * slots + slot) * dv;
                    BlockQ8_0::quantize_act(value, &mut values[row / b..(row + dv) / b]);
                }
            }
        }
    }
}
