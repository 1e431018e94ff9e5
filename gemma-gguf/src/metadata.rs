//! The metadata section: key/value pairs in file order, with typed getters.

use std::collections::HashMap;

use crate::array::{Array, StringArray};
use crate::cursor::Cursor;
use crate::read::{read_type, read_value};
use crate::storage::SharedBytes;
use crate::value::{Value, ValueType};
use crate::GgufError;

/// Longest key accepted: the GGUF specification limits keys to 2^16 - 1 bytes.
pub const MAX_KEY_LEN: u64 = 65_535;

/// Metadata key/value pairs, in file order.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, Value, u64)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// Reads `count` key/value pairs at the cursor (the count was checked against the file size).
    pub(crate) fn read(
        cur: &mut Cursor<'_>,
        count: usize,
        base: &SharedBytes,
    ) -> Result<Metadata, GgufError> {
        let mut metadata = Metadata {
            entries: Vec::with_capacity(count),
            index: HashMap::with_capacity(count),
        };
        for i in 0..count {
            let offset = cur.offset();
            let key = cur.string(MAX_KEY_LEN, &|| format!("metadata key {i}"))?;
            let ty = read_type(cur, key)?;
            let value = read_value(cur, ty, base, key)?;
            if metadata.index.contains_key(key) {
                return Err(GgufError::DuplicateKey {
                    offset,
                    key: key.to_owned(),
                });
            }
            metadata
                .index
                .insert(key.to_owned(), metadata.entries.len());
            metadata.entries.push((key.to_owned(), value, offset));
        }
        Ok(metadata)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entry(key).map(|e| &e.1)
    }

    /// The byte offset where the entry of `key` starts.
    pub fn offset_of(&self, key: &str) -> Option<u64> {
        self.entry(key).map(|e| e.2)
    }

    /// True when `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// All pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v, _)| (k.as_str(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An integer value (any integer type) that fits in u32.
    pub fn u32(&self, key: &str) -> Result<u32, GgufError> {
        self.integer(key, "u32")
    }

    /// An integer value (any integer type) that fits in u64.
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        self.integer(key, "u64")
    }

    /// An integer value (any integer type) that fits in i64.
    pub fn i64(&self, key: &str) -> Result<i64, GgufError> {
        self.integer(key, "i64")
    }

    /// A float value (f32, f64 or an integer, converted to f32).
    pub fn f32(&self, key: &str) -> Result<f32, GgufError> {
        let value = self.value(key)?;
        value
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| wrong_type(key, "f32", value))
    }

    /// A bool value.
    pub fn bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.value(key)? {
            Value::Bool(b) => Ok(*b),
            other => Err(wrong_type(key, "bool", other)),
        }
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Result<&str, GgufError> {
        let value = self.value(key)?;
        value
            .as_str()
            .ok_or_else(|| wrong_type(key, "string", value))
    }

    /// Any array value.
    pub fn array(&self, key: &str) -> Result<&Array, GgufError> {
        let value = self.value(key)?;
        value
            .as_array()
            .ok_or_else(|| wrong_type(key, "array", value))
    }

    /// A string array, borrowed without copying the strings.
    pub fn string_array(&self, key: &str) -> Result<StringArray<'_>, GgufError> {
        let value = self.value(key)?;
        value
            .as_array()
            .and_then(Array::strings)
            .ok_or_else(|| wrong_type(key, "array<string>", value))
    }

    /// An array of f32, f64 or integers, converted to f32.
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let array = self.typed_array(key, "array<f32>", |t| {
            t != ValueType::Bool && t.fixed_size().is_some()
        })?;
        if array.elem_type() == ValueType::F32 {
            let bytes = array.raw_bytes().chunks_exact(4);
            return Ok(bytes
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect());
        }
        Ok(array
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
            .collect())
    }

    /// An array of any integer type whose every element fits in i32.
    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let array = self.typed_array(key, "array<i32>", is_integer)?;
        let mut out = Vec::with_capacity(array.len());
        for value in array.iter() {
            let n = value.as_integer().unwrap_or(i128::MAX);
            out.push(i32::try_from(n).map_err(|_| out_of_range(key, "i32", n))?);
        }
        Ok(out)
    }

    /// An array of bools.
    pub fn bool_array(&self, key: &str) -> Result<Vec<bool>, GgufError> {
        let array = self.typed_array(key, "array<bool>", |t| t == ValueType::Bool)?;
        Ok(array.raw_bytes().iter().map(|&b| b != 0).collect())
    }

    fn entry(&self, key: &str) -> Option<&(String, Value, u64)> {
        self.index.get(key).and_then(|&i| self.entries.get(i))
    }

    fn value(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn integer<T: TryFrom<i128>>(&self, key: &str, expected: &'static str) -> Result<T, GgufError> {
        let value = self.value(key)?;
        let n = value
            .as_integer()
            .ok_or_else(|| wrong_type(key, expected, value))?;
        T::try_from(n).map_err(|_| out_of_range(key, expected, n))
    }

    fn typed_array(
        &self,
        key: &str,
        expected: &'static str,
        accepts: impl Fn(ValueType) -> bool,
    ) -> Result<&Array, GgufError> {
        let value = self.value(key)?;
        match value.as_array() {
            Some(array) if accepts(array.elem_type()) => Ok(array),
            _ => Err(wrong_type(key, expected, value)),
        }
    }
}

fn is_integer(t: ValueType) -> bool {
    use ValueType::*;
    matches!(t, U8 | I8 | U16 | I16 | U32 | I32 | U64 | I64)
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.type_name(),
    }
}

fn out_of_range(key: &str, expected: &'static str, value: i128) -> GgufError {
    GgufError::OutOfRange {
        key: key.to_owned(),
        expected,
        value,
    }
}
