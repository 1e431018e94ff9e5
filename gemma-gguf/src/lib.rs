//! GGUF: the file format of llama.cpp, read through a memory map and validated field by field.
//!
//! # Reading
//! ```no_run
//! use gemma_gguf::{keys, GgufFile};
//! let file = GgufFile::open("model.gguf")?;
//! let layers = file.metadata().u32(keys::gemma3::BLOCK_COUNT)?;
//! let tokens = file.metadata().string_array(keys::TOKENIZER_TOKENS)?; // no copy per string
//! let embd = file.tensor("token_embd.weight").expect("tensor");
//! let bytes: &[u8] = file.tensor_data(embd); // zero-copy slice of the map
//! # let _ = (layers, tokens, bytes);
//! # Ok::<(), gemma_gguf::GgufError>(())
//! ```
//! Versions 2 and 3 are read. Every problem in a file is a [`GgufError`] naming its byte
//! offset and the key or tensor concerned: wrong magic or version, truncation, counts and
//! lengths the file cannot hold, arrays nested deeper than [`MAX_ARRAY_DEPTH`], unknown
//! value or tensor types, more than 4 dimensions, overflowing shapes, rows that are not whole
//! blocks, misaligned, out-of-bounds or overlapping tensors, duplicate keys or names, a bad
//! `general.alignment`, invalid UTF-8. Nothing is allocated beyond what the file's size
//! justifies: arrays stay encoded in the map ([`Array`]) and string arrays index their
//! elements only on first use.
//!
//! # Writing
//! [`GgufWriter`] writes GGUF v3, streaming: `add_metadata` / `add_tensor` declare,
//! `write_header` writes the header and tensor table, `write_tensor_data(name, bytes)` streams
//! each tensor's bytes in declaration order (a tensor may come in several chunks; padding is
//! added), `finish` checks completeness and returns the inner writer.

mod array;
mod cursor;
mod error;
mod file;
mod ggml_type;
pub mod keys;
mod metadata;
mod read;
mod storage;
mod tensor_info;
mod value;
mod writer;

pub use array::{Array, ArrayElement, StringArray};
pub use error::GgufError;
pub use file::{GgufFile, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_METADATA_KEYS, MAX_TENSORS};
pub use ggml_type::GgmlType;
pub use metadata::{Metadata, MAX_KEY_LEN};
pub use read::MAX_ARRAY_DEPTH;
pub use tensor_info::{TensorInfo, MAX_DIMS, MAX_TENSOR_NAME_LEN};
pub use value::{Value, ValueType};
pub use writer::{GgufWriter, WRITER_VERSION};
