//! Run-time type dispatch: from a [`GgmlType`] read out of a file to the block format
//! that implements it, and byte-level (de)quantization on top of it.

use super::{
    BlockIQ4_NL, BlockIQ4_XS, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
    BlockQ8_K, QuantBlock,
};
use crate::KernelError;
use gemma_gguf::GgmlType;

/// An operation generic over the block format, run by [`visit`] for a type known only
/// at run time.
pub trait BlockVisitor {
    /// What the operation returns.
    type Output;
    /// Runs the operation for block format `B`.
    fn visit<B: QuantBlock>(self) -> Self::Output;
}

/// Runs `visitor` with the block format of `ty`: the one place that maps ggml types to
/// their implementations.
pub fn visit<V: BlockVisitor>(ty: GgmlType, visitor: V) -> Result<V::Output, KernelError> {
    Ok(match ty {
        GgmlType::F32 => visitor.visit::<f32>(),
        GgmlType::F16 => visitor.visit::<half::f16>(),
        GgmlType::BF16 => visitor.visit::<half::bf16>(),
        GgmlType::Q4_0 => visitor.visit::<BlockQ4_0>(),
        GgmlType::Q4_1 => visitor.visit::<BlockQ4_1>(),
        GgmlType::Q5_0 => visitor.visit::<BlockQ5_0>(),
        GgmlType::Q5_1 => visitor.visit::<BlockQ5_1>(),
        GgmlType::Q8_0 => visitor.visit::<BlockQ8_0>(),
        GgmlType::Q8_1 => visitor.visit::<BlockQ8_1>(),
        GgmlType::Q8_K => visitor.visit::<BlockQ8_K>(),
        GgmlType::Q2_K => visitor.visit::<super::BlockQ2_K>(),
        GgmlType::Q3_K => visitor.visit::<super::BlockQ3_K>(),
        GgmlType::Q4_K => visitor.visit::<super::BlockQ4_K>(),
        GgmlType::Q5_K => visitor.visit::<super::BlockQ5_K>(),
        GgmlType::Q6_K => visitor.visit::<super::BlockQ6_K>(),
        GgmlType::IQ4_NL => visitor.visit::<BlockIQ4_NL>(),
        GgmlType::IQ4_XS => visitor.visit::<BlockIQ4_XS>(),
        _ => return Err(KernelError::UnsupportedType(ty)),
    })
}

/// True when `ty` can be dequantized, quantized and multiplied here.
pub fn is_supported(ty: GgmlType) -> bool {
    struct Probe;
    impl BlockVisitor for Probe {
        type Output = ();
        fn visit<B: QuantBlock>(self) {}
    }
    visit(ty, Probe).is_ok()
}

/// Dequantizes the raw ggml bytes `src` of type `ty` into `dst`, bit-exact with ggml's
/// `to_float`. `src` must hold whole blocks and `dst` exactly their elements.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    struct Dequantize<'a> {
        src: &'a [u8],
        dst: &'a mut [f32],
    }
    impl BlockVisitor for Dequantize<'_> {
        type Output = Result<(), KernelError>;
        fn visit<B: QuantBlock>(self) -> Self::Output {
            dequantize_as::<B>(self.src, self.dst)
        }
    }
    visit(ty, Dequantize { src, dst })?
}

/// Quantizes `src` into raw ggml bytes of type `ty`, byte-exact with ggml's reference
/// quantizer (`ggml_quantize_chunk` without importance matrix). `src.len()` must be a
/// multiple of the block size and `dst` exactly as long as the blocks.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    struct Quantize<'a> {
        src: &'a [f32],
        dst: &'a mut [u8],
    }
    impl BlockVisitor for Quantize<'_> {
        type Output = Result<(), KernelError>;
        fn visit<B: QuantBlock>(self) -> Self::Output {
            quantize_as::<B>(self.src, self.dst)
        }
    }
    visit(ty, Quantize { src, dst })?
}

/// The number of blocks in `len` bytes of `B`, or an error for a partial block.
fn whole_blocks<B: QuantBlock>(len: usize) -> Result<usize, KernelError> {
    let size = std::mem::size_of::<B>();
    if !len.is_multiple_of(size) {
        return Err(KernelError::PartialBlock {
            ty: B::TYPE,
            len,
            unit: "bytes",
            block: size,
        });
    }
    Ok(len / size)
}

fn dequantize_as<B: QuantBlock>(src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let n_blocks = whole_blocks::<B>(src.len())?;
    let expected = n_blocks * B::ELEMS;
    if dst.len() != expected {
        return Err(KernelError::Length {
            what: "dequantize output",
            expected,
            found: dst.len(),
        });
    }
    match bytemuck::try_cast_slice::<u8, B>(src) {
        Ok(blocks) => B::dequantize(blocks, dst),
        // Misaligned bytes (a GGUF tensor at an odd offset): copy into aligned blocks.
        Err(_) => {
            let mut blocks = vec![B::zeroed(); n_blocks];
            bytemuck::cast_slice_mut::<B, u8>(&mut blocks).copy_from_slice(src);
            B::dequantize(&blocks, dst);
        }
    }
    Ok(())
}

fn quantize_as<B: QuantBlock>(src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    if !src.len().is_multiple_of(B::ELEMS) {
        return Err(KernelError::PartialBlock {
            ty: B::TYPE,
            len: src.len(),
            unit: "elements",
            block: B::ELEMS,
        });
    }
    let expected = src.len() / B::ELEMS * std::mem::size_of::<B>();
    if dst.len() != expected {
        return Err(KernelError::Length {
            what: "quantize output",
            expected,
            found: dst.len(),
        });
    }
    match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        Ok(blocks) => B::quantize(src, blocks),
        Err(_) => {
            let mut blocks = vec![B::zeroed(); src.len() / B::ELEMS];
            B::quantize(src, &mut blocks);
            dst.copy_from_slice(bytemuck::cast_slice(&blocks));
        }
    }
    Ok(())
}
