//! GGUF: the file format of llama.cpp, read through a memory map and validated field by field.

mod ggml_type;

pub use ggml_type::GgmlType;
