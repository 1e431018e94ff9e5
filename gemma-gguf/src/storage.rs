//! The bytes of a file (a memory map or an owned buffer), shared by the file and the
//! array values that point into it.

use std::ops::Range;
use std::sync::Arc;

/// Where the bytes of a file live.
pub(crate) enum Storage {
    /// A read-only memory map of the file.
    Map(memmap2::Mmap),
    /// Bytes owned in memory (`GgufFile::from_bytes`, arrays built for the writer).
    Owned(Vec<u8>),
}

impl Storage {
    /// All the bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Storage::Map(map) => map,
            Storage::Owned(vec) => vec,
        }
    }
}

/// A range of bytes inside a shared [`Storage`]; cloning shares, never copies.
#[derive(Clone)]
pub(crate) struct SharedBytes {
    storage: Arc<Storage>,
    range: Range<usize>,
}

impl SharedBytes {
    /// A view of `range` in `storage`; an out-of-bounds range views nothing.
    pub(crate) fn new(storage: Arc<Storage>, range: Range<usize>) -> Self {
        let range = if storage.as_slice().get(range.clone()).is_some() {
            range
        } else {
            0..0
        };
        SharedBytes { storage, range }
    }

    /// Takes ownership of `bytes`.
    pub(crate) fn owned(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        SharedBytes {
            storage: Arc::new(Storage::Owned(bytes)),
            range: 0..len,
        }
    }

    /// A view of `range` relative to this view (nothing if out of bounds).
    pub(crate) fn sub(&self, range: Range<usize>) -> Self {
        let range = if range.start <= range.end && range.end <= self.range.len() {
            self.range.start + range.start..self.range.start + range.end
        } else {
            0..0
        };
        SharedBytes {
            storage: self.storage.clone(),
            range,
        }
    }

    /// The viewed bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // The range was checked against the storage in `new` and storage never shrinks.
        self.storage
            .as_slice()
            .get(self.range.clone())
            .unwrap_or(&[])
    }
}
