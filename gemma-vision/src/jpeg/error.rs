//! Why a JPEG file could not be decoded.

/// A JPEG file is damaged, truncated or uses a feature this decoder does not implement.
/// Carried inside [`crate::VisionError::ImageDecode`] (as the source of an
/// `image::ImageError::Decoding`), so callers can match it with `downcast_ref`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    /// The data ends before the image is complete (inside a header or the
    /// entropy-coded data). Pillow refuses such files too unless told otherwise.
    #[error("JPEG data ends early (at byte {offset})")]
    Truncated {
        /// Byte offset where more data was needed.
        offset: usize,
    },
    /// A marker segment is malformed.
    #[error("bad JPEG {segment} segment at byte {offset}: {reason}")]
    BadSegment {
        /// The segment kind (`SOF`, `DHT`, `DQT`, `SOS`, `DRI`, ...).
        segment: &'static str,
        /// Byte offset of its marker.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The entropy-coded data is corrupt (a Huffman code that is not in the table,
    /// a coefficient index past 63, a missing restart marker, a marker in the middle).
    #[error("corrupt JPEG data near byte {offset}: {reason}")]
    CorruptData {
        /// Byte offset near which the problem was found.
        offset: usize,
        /// What was found.
        reason: &'static str,
    },
    /// A scan refers to a table that was never defined.
    #[error("JPEG scan uses undefined {kind} table {index}")]
    MissingTable {
        /// `"Huffman DC"`, `"Huffman AC"` or `"quantization"`.
        kind: &'static str,
        /// The table slot (0..=3).
        index: u8,
    },
    /// A valid JPEG feature this decoder does not implement (arithmetic coding,
    /// lossless or hierarchical mode, 12-bit samples, 2 or more than 4 components,
    /// sampling factors whose ratios are not integers, more than 1000 scans).
    #[error("unsupported JPEG feature: {0}")]
    Unsupported(&'static str),
    /// The file has no frame header or no scan before its end.
    #[error("JPEG file has no image ({0})")]
    NoImage(&'static str),
}
