//! Streaming GGUF v3 writer.
//!
//! Declare metadata and tensors, write the header, then stream each tensor's bytes in
//! declaration order (in as many chunks as you like); padding to the alignment is written
//! for you. Only the declarations are kept in memory, so files of any size can be written.
//!
//! ```no_run
//! use gemma_gguf::{GgmlType, GgufWriter, Value};
//! let mut w = GgufWriter::create("out.gguf")?;
//! w.add_metadata("general.architecture", Value::from("gemma3"))?;
//! w.add_tensor("output_norm.weight", GgmlType::F32, &[4])?;
//! w.write_header()?;
//! let data: Vec<u8> = [1.0f32, 1.0, 1.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! w.write_tensor_data("output_norm.weight", &data)?;
//! w.finish()?;
//! # Ok::<(), gemma_gguf::GgufError>(())
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::file::{align_up, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT};
use crate::metadata::MAX_KEY_LEN;
use crate::tensor_info::{byte_size, SizeProblem, MAX_DIMS, MAX_TENSOR_NAME_LEN};
use crate::value::{encode_str, Value};
use crate::{keys, GgmlType, GgufError};

/// The version this writer produces.
pub const WRITER_VERSION: u32 = 3;

/// A tensor declared with [`GgufWriter::add_tensor`].
struct Declared {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    n_bytes: u64,
}

/// Where the writer is in its sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Accepting metadata and tensor declarations.
    Declaring,
    /// Header written; expecting the bytes of tensor `current` (`written` so far).
    Data { current: usize, written: u64 },
}

/// Writes a GGUF v3 file to `W`, streaming tensor data.
pub struct GgufWriter<W: Write> {
    out: W,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<Declared>,
    tensor_index: HashMap<String, usize>,
    stage: Stage,
    bytes_written: u64,
}

impl GgufWriter<BufWriter<File>> {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| GgufError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(GgufWriter::new(BufWriter::with_capacity(1 << 20, file)))
    }
}

impl<W: Write> GgufWriter<W> {
    /// A writer into `out`, with the default alignment of 32.
    pub fn new(out: W) -> Self {
        GgufWriter {
            out,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
            tensor_index: HashMap::new(),
            stage: Stage::Declaring,
            bytes_written: 0,
        }
    }

    /// Sets the data alignment (a power of two up to 2^30) and records it as
    /// `general.alignment` when it differs from the default.
    pub fn set_alignment(&mut self, alignment: u64) -> Result<(), GgufError> {
        self.expect_declaring(keys::GENERAL_ALIGNMENT)?;
        if !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
            return Err(GgufError::InvalidAlignment {
                offset: 0,
                found: alignment.to_string(),
            });
        }
        self.alignment = alignment;
        let value = Value::U32(alignment as u32);
        match self
            .metadata
            .iter_mut()
            .find(|(k, _)| k == keys::GENERAL_ALIGNMENT)
        {
            Some(entry) => entry.1 = value,
            None if alignment != DEFAULT_ALIGNMENT => {
                self.metadata
                    .push((keys::GENERAL_ALIGNMENT.to_owned(), value));
            }
            None => {}
        }
        Ok(())
    }

    /// Adds a metadata pair (in order). `general.alignment` also sets the alignment.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), GgufError> {
        let key = key.into();
        let value = value.into();
        self.expect_declaring(&key)?;
        if key.len() as u64 > MAX_KEY_LEN {
            return Err(misuse(key, "key longer than 65535 bytes"));
        }
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(misuse(key, "duplicate metadata key"));
        }
        if key == keys::GENERAL_ALIGNMENT {
            let alignment = value
                .as_integer()
                .and_then(|a| u64::try_from(a).ok())
                .ok_or_else(|| {
                    misuse(key.clone(), "general.alignment must be an unsigned integer")
                })?;
            self.set_alignment(alignment)?;
            // set_alignment recorded it (as u32) unless it is the default; keep it explicit.
            if !self.metadata.iter().any(|(k, _)| *k == key) {
                self.metadata.push((key, Value::U32(alignment as u32)));
            }
            return Ok(());
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares a tensor of type `ty` and shape `dims` (ggml `ne` order, row length first).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
    ) -> Result<(), GgufError> {
        let name = name.into();
        self.expect_declaring(&name)?;
        if name.len() as u64 > MAX_TENSOR_NAME_LEN {
            return Err(misuse(name, "tensor name longer than 63 bytes"));
        }
        if dims.len() > MAX_DIMS as usize {
            return Err(misuse(name, "more than 4 dimensions"));
        }
        if self.tensor_index.contains_key(&name) {
            return Err(misuse(name, "duplicate tensor name"));
        }
        let n_bytes = match byte_size(ty, dims) {
            Ok(n) => n,
            Err(SizeProblem::Overflow) => return Err(misuse(name, "shape overflows")),
            Err(SizeProblem::PartialBlock) => {
                return Err(misuse(
                    name,
                    "row length is not a multiple of the type's block size",
                ))
            }
        };
        self.tensor_index.insert(name.clone(), self.tensors.len());
        self.tensors.push(Declared {
            name,
            ty,
            dims: dims.to_vec(),
            n_bytes,
        });
        Ok(())
    }

    /// The alignment in effect.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Total size the finished file will have (known once everything is declared).
    pub fn planned_size(&self) -> u64 {
        let data_start = align_up(self.header().len() as u64, self.alignment).unwrap_or(u64::MAX);
        let data: u64 = self
            .tensors
            .iter()
            .map(|t| align_up(t.n_bytes, self.alignment).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add);
        data_start.saturating_add(data)
    }

    /// Writes header, metadata, tensor table and the padding before the data section.
    pub fn write_header(&mut self) -> Result<(), GgufError> {
        self.expect_declaring("header")?;
        let mut header = self.header();
        let padded = align_up(header.len() as u64, self.alignment).unwrap_or(0);
        header.resize(padded as usize, 0);
        self.out.write_all(&header)?;
        self.bytes_written = padded;
        self.stage = Stage::Data {
            current: 0,
            written: 0,
        };
        self.advance_past_complete()
    }

    /// Appends `bytes` to tensor `name`, which must be the first tensor (in declaration
    /// order) not yet complete. A tensor may be written in several chunks; padding follows
    /// its last byte. Zero-byte tensors are complete from the start (writing them is a no-op).
    pub fn write_tensor_data(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufError> {
        let Stage::Data { current, written } = self.stage else {
            return Err(misuse(
                name.to_owned(),
                "tensor data written before write_header",
            ));
        };
        // Zero-byte tensors complete themselves; writing their (empty) data is a no-op.
        if bytes.is_empty() && self.tensor_index.get(name).is_some_and(|&i| i < current) {
            return Ok(());
        }
        let Some(tensor) = self.tensors.get(current) else {
            return Err(misuse(name.to_owned(), "all tensors are already complete"));
        };
        if tensor.name != name {
            let reason = if self.tensor_index.contains_key(name) {
                "tensor data written out of declaration order (or the previous tensor is incomplete)"
            } else {
                "tensor was never declared"
            };
            return Err(misuse(name.to_owned(), reason));
        }
        let total = written.saturating_add(bytes.len() as u64);
        if total > tensor.n_bytes {
            return Err(misuse(
                name.to_owned(),
                "more bytes than the tensor's declared size",
            ));
        }
        self.out.write_all(bytes)?;
        self.bytes_written += bytes.len() as u64;
        self.stage = Stage::Data {
            current,
            written: total,
        };
        self.advance_past_complete()
    }

    /// Checks that every tensor was written, flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W, GgufError> {
        match self.stage {
            Stage::Declaring if !self.tensors.is_empty() => {
                return Err(misuse("header".into(), "finish called before write_header"));
            }
            Stage::Declaring => self.write_header()?,
            Stage::Data { current, .. } => {
                if let Some(t) = self.tensors.get(current) {
                    return Err(misuse(t.name.clone(), "tensor data incomplete at finish"));
                }
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// Moves past complete tensors, writing their padding.
    fn advance_past_complete(&mut self) -> Result<(), GgufError> {
        while let Stage::Data { current, written } = self.stage {
            let Some(tensor) = self.tensors.get(current) else {
                return Ok(());
            };
            if written < tensor.n_bytes {
                return Ok(());
            }
            let padded = align_up(tensor.n_bytes, self.alignment).unwrap_or(tensor.n_bytes);
            let padding = vec![0u8; (padded - tensor.n_bytes) as usize];
            self.out.write_all(&padding)?;
            self.bytes_written += padding.len() as u64;
            self.stage = Stage::Data {
                current: current + 1,
                written: 0,
            };
        }
        Ok(())
    }

    /// The encoded header, metadata and tensor table (without the final padding).
    fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&WRITER_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            encode_str(key, &mut out);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            value.encode(&mut out);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            encode_str(&t.name, &mut out);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = offset.saturating_add(align_up(t.n_bytes, self.alignment).unwrap_or(u64::MAX));
        }
        out
    }

    fn expect_declaring(&self, name: &str) -> Result<(), GgufError> {
        match self.stage {
            Stage::Declaring => Ok(()),
            Stage::Data { .. } => Err(misuse(name.to_owned(), "declaration after write_header")),
        }
    }
}

fn misuse(name: String, reason: &'static str) -> GgufError {
    GgufError::WriterMisuse { name, reason }
}
