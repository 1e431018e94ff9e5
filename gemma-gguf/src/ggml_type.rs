//! The one table of ggml tensor types: id, name, elements per block, bytes per block.
//!
//! Read by the parser (tensor byte sizes), the kernels (dispatch) and the CUDA launchers.
//! Ids and layouts follow ggml's `ggml.h` / `ggml-common.h`.

/// A ggml tensor element type as stored in a GGUF tensor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit, blocks of 32 with f16 scale and minimum.
    Q4_1,
    /// 5-bit, blocks of 32 with an f16 scale.
    Q5_0,
    /// 5-bit, blocks of 32 with f16 scale and minimum.
    Q5_1,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0,
    /// 8-bit, blocks of 32 with f16 scale and sum (activations).
    Q8_1,
    /// 2-bit K-quant, super-blocks of 256.
    Q2_K,
    /// 3-bit K-quant, super-blocks of 256.
    Q3_K,
    /// 4-bit K-quant, super-blocks of 256.
    Q4_K,
    /// 5-bit K-quant, super-blocks of 256.
    Q5_K,
    /// 6-bit K-quant, super-blocks of 256.
    Q6_K,
    /// 8-bit, super-blocks of 256 with f32 scale and block sums (activations).
    Q8_K,
    /// 2.06-bit importance quant.
    IQ2_XXS,
    /// 2.31-bit importance quant.
    IQ2_XS,
    /// 3.06-bit importance quant.
    IQ3_XXS,
    /// 1.56-bit importance quant.
    IQ1_S,
    /// 4-bit non-linear, blocks of 32.
    IQ4_NL,
    /// 3.44-bit importance quant.
    IQ3_S,
    /// 2.5-bit importance quant.
    IQ2_S,
    /// 4.25-bit non-linear, super-blocks of 256.
    IQ4_XS,
    /// int8.
    I8,
    /// int16.
    I16,
    /// int32.
    I32,
    /// int64.
    I64,
    /// IEEE float64.
    F64,
    /// 1.75-bit importance quant.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// ternary, 1.69 bits.
    TQ1_0,
    /// ternary, 2.06 bits.
    TQ2_0,
    /// 4-bit microscaling float, blocks of 32.
    MXFP4,
}

/// Facts about one type: `(type, ggml id, name, elements per block, bytes per block)`.
const TABLE: [(GgmlType, u32, &str, usize, usize); 32] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

impl GgmlType {
    /// Every known type, in ggml id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|row| row.0)
    }

    /// The type with ggml id `id`, or `None` for an unknown id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    /// The type named `name` (case-insensitive, as ggml prints it: "Q4_K", "bf16").
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|row| row.2.eq_ignore_ascii_case(name))
            .map(|row| row.0)
    }

    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        // The table holds every variant exactly once (checked by a test).
        &TABLE[TABLE.iter().position(|row| row.0 == self).unwrap_or(0)]
    }

    /// The ggml id stored in GGUF tensor tables.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The name ggml uses ("Q4_K").
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_elems(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.row().4
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a multiple of the
    /// block size or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let elems = self.block_elems() as u64;
        if !n.is_multiple_of(elems) {
            return None;
        }
        (n / elems).checked_mul(self.block_bytes() as u64)
    }

    /// True for block-quantized types (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(GgmlType::from_id(row.1), Some(row.0));
            assert_eq!(GgmlType::from_name(row.2), Some(row.0));
            assert_eq!(row.0.id(), row.1);
            assert!(TABLE[..i]
                .iter()
                .all(|other| other.0 != row.0 && other.1 != row.1));
        }
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_bytes(100), None);
        assert_eq!(GgmlType::from_id(4), None);
    }
}
