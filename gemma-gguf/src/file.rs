//! A GGUF file: the memory map (or buffer) and the validated header, metadata and
//! tensor table.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::cursor::Cursor;
use crate::keys;
use crate::metadata::Metadata;
use crate::storage::{SharedBytes, Storage};
use crate::tensor_info::{read_tensor_info, RawTensorInfo, TensorInfo};
use crate::GgufError;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Largest `general.alignment` accepted (1 GiB): larger values only waste the file and
/// would make padding arithmetic approach overflow.
pub const MAX_ALIGNMENT: u64 = 1 << 30;

/// Most metadata keys accepted. Real files have fewer than a hundred; each key costs about
/// 150 bytes of memory, so the cap keeps a hostile header under ~10 MB.
pub const MAX_METADATA_KEYS: u64 = 1 << 16;

/// Most tensors accepted. The largest real files have a few thousand; each entry costs
/// about 200 bytes of memory, so the cap bounds a hostile tensor table to ~200 MB.
pub const MAX_TENSORS: u64 = 1 << 20;

/// Fewest bytes one metadata pair occupies: key length (8), type (4), a 1-byte value.
const MIN_KV_BYTES: u64 = 13;

/// Fewest bytes one tensor table entry occupies: name length (8), dimension count (4),
/// type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// A parsed, validated GGUF file. Tensor data are zero-copy slices of the map.
pub struct GgufFile {
    storage: Arc<Storage>,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Maps the file at `path` read-only and validates it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let open_error = |source| GgufError::Open {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(open_error)?;
        let len = file.metadata().map_err(open_error)?.len();
        let storage = if len == 0 {
            // Mapping zero bytes is an error on some systems; an empty buffer parses the same.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only. Another process truncating or rewriting the file
            // while it is mapped could change or remove the bytes under us; like every
            // mmap-based model loader we accept that risk and document it.
            Storage::Map(unsafe { memmap2::Mmap::map(&file) }.map_err(open_error)?)
        };
        GgufFile::parse(Arc::new(storage))
    }

    /// Validates a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::parse(Arc::new(Storage::Owned(bytes)))
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata pairs.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The bytes of tensor `t` (exactly `t.n_bytes` long), without copying. A `TensorInfo`
    /// from another file that does not fit in this one gives an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = usize::try_from(t.offset)
            .ok()
            .zip(usize::try_from(t.offset.saturating_add(t.n_bytes)).ok());
        range
            .and_then(|(start, end)| self.bytes().get(start..end))
            .unwrap_or(&[])
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.as_slice()
    }

    /// The alignment of the data section and of every tensor in it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the start of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    fn parse(storage: Arc<Storage>) -> Result<GgufFile, GgufError> {
        let len = storage.as_slice().len();
        let base = SharedBytes::new(storage.clone(), 0..len);
        let bytes = storage.as_slice();
        let mut cur = Cursor::new(bytes, 0);
        check_magic(bytes)?;
        cur.take(4, &|| "magic".into())?;
        let version = cur.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { offset: 4, version });
        }
        let tensor_count_offset = cur.offset();
        let tensor_count = cur.u64(&|| "tensor count".into())?;
        let kv_count_offset = cur.offset();
        let kv_count = cur.u64(&|| "metadata key count".into())?;
        let kv_count = check_count(
            &cur,
            kv_count_offset,
            kv_count,
            MIN_KV_BYTES,
            "metadata key",
            MAX_METADATA_KEYS,
        )?;
        let metadata = Metadata::read(&mut cur, kv_count, &base)?;
        let alignment = read_alignment(&metadata)?;
        let tensor_count = check_count(
            &cur,
            tensor_count_offset,
            tensor_count,
            MIN_TENSOR_INFO_BYTES,
            "tensor",
            MAX_TENSORS,
        )?;

        let mut raw = Vec::with_capacity(tensor_count);
        let mut by_name = HashMap::with_capacity(tensor_count);
        for index in 0..tensor_count {
            let entry = read_tensor_info(&mut cur, index)?;
            if by_name.insert(entry.info.name.clone(), index).is_some() {
                return Err(GgufError::DuplicateTensor {
                    offset: entry.entry_offset,
                    tensor: entry.info.name,
                });
            }
            raw.push(entry);
        }
        let data_offset =
            align_up(cur.offset(), alignment).ok_or_else(|| GgufError::Truncated {
                offset: cur.offset(),
                needed: alignment,
                available: cur.remaining(),
                context: "padding before the data section".into(),
            })?;
        let tensors = place_tensors(raw, data_offset, alignment, len as u64)?;
        Ok(GgufFile {
            storage,
            version,
            metadata,
            tensors,
            by_name,
            alignment,
            data_offset,
        })
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.bytes().len())
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

/// Rejects files whose first bytes are not (a prefix of) the magic.
fn check_magic(bytes: &[u8]) -> Result<(), GgufError> {
    let head = &bytes[..bytes.len().min(4)];
    if head == &MAGIC[..head.len()] {
        return Ok(());
    }
    Err(GgufError::BadMagic {
        offset: 0,
        found: head.to_vec(),
    })
}

/// Checks `count` against `limit`, and that that many items of at least `min_size` bytes
/// fit in the rest of the file, so that no count can make us allocate more than the file
/// justifies.
fn check_count(
    cur: &Cursor<'_>,
    offset: u64,
    count: u64,
    min_size: u64,
    what: &'static str,
    limit: u64,
) -> Result<usize, GgufError> {
    if count > limit {
        return Err(GgufError::TooMany {
            offset,
            what,
            count,
            limit,
        });
    }
    let min_bytes = u128::from(count) * u128::from(min_size);
    let available = cur.remaining();
    if min_bytes > u128::from(available) {
        return Err(GgufError::CountTooLarge {
            offset,
            what: what.to_owned(),
            count,
            min_bytes,
            available,
        });
    }
    // count <= available, which is a slice length.
    Ok(count as usize)
}

/// `general.alignment`, or the default; must be a power of two up to [`MAX_ALIGNMENT`].
fn read_alignment(metadata: &Metadata) -> Result<u64, GgufError> {
    let Some(value) = metadata.get(keys::GENERAL_ALIGNMENT) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let found = match value.as_integer() {
        Some(a) if a > 0 && a <= i128::from(MAX_ALIGNMENT) && (a as u64).is_power_of_two() => {
            return Ok(a as u64);
        }
        Some(a) => a.to_string(),
        None => format!("of type {}", value.type_name()),
    };
    Err(GgufError::InvalidAlignment {
        offset: metadata.offset_of(keys::GENERAL_ALIGNMENT).unwrap_or(0),
        found,
    })
}

/// `offset` rounded up to a multiple of `alignment` (a power of two), `None` on overflow.
pub(crate) fn align_up(offset: u64, alignment: u64) -> Option<u64> {
    offset
        .checked_add(alignment - 1)
        .map(|v| v & !(alignment - 1))
}

/// Turns relative offsets into absolute ones and checks alignment, bounds and overlaps.
fn place_tensors(
    raw: Vec<RawTensorInfo>,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<Vec<TensorInfo>, GgufError> {
    let mut placed = Vec::with_capacity(raw.len());
    let mut field_offsets = Vec::with_capacity(raw.len());
    for RawTensorInfo {
        mut info,
        offset_field,
        ..
    } in raw
    {
        if !info.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                offset: offset_field,
                tensor: info.name,
                data_offset: info.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => info.offset = start,
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    offset: offset_field,
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    tensor: info.name,
                    file_len,
                })
            }
        }
        placed.push(info);
        field_offsets.push(offset_field);
    }
    check_overlaps(&placed, &field_offsets)?;
    Ok(placed)
}

/// Rejects any two non-empty tensors whose byte ranges intersect.
fn check_overlaps(tensors: &[TensorInfo], field_offsets: &[u64]) -> Result<(), GgufError> {
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].n_bytes > 0)
        .collect();
    order.sort_by_key(|&i| (tensors[i].offset, i));
    // The tensor reaching furthest among those starting earlier.
    let mut furthest: Option<usize> = None;
    for &i in &order {
        let t = &tensors[i];
        if let Some(f) = furthest {
            let prev = &tensors[f];
            if t.offset < prev.offset + prev.n_bytes {
                return Err(GgufError::TensorOverlap {
                    offset: field_offsets[i],
                    tensor: t.name.clone(),
                    other: prev.name.clone(),
                    start: t.offset,
                });
            }
        }
        // Offsets and sizes were bounded by the file length above, so the sums fit.
        if furthest.is_none_or(|f| t.offset + t.n_bytes > tensors[f].offset + tensors[f].n_bytes) {
            furthest = Some(i);
        }
    }
    Ok(())
}
