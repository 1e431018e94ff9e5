//! Array values, kept encoded: a reader's arrays point into the file (zero copy), and
//! string or nested arrays build an index of element offsets on first use.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::cursor::Cursor;
use crate::read::{read_array_header, skip_elements};
use crate::storage::SharedBytes;
use crate::value::{encode_str, Value, ValueType};

/// A typed GGUF array. Cloning is cheap (the bytes are shared).
#[derive(Clone)]
pub struct Array {
    elem: ValueType,
    len: usize,
    data: SharedBytes,
    /// Start offset (in `data`) of every element; built on first use for string and
    /// nested arrays, whose elements have variable sizes.
    index: Arc<OnceLock<Vec<usize>>>,
}

/// A fixed-size type that can be stored in an [`Array`]. Implemented for the GGUF numeric
/// types and `bool`.
pub trait ArrayElement: Copy + sealed::Sealed {
    /// The GGUF value type of the elements.
    const TYPE: ValueType;
    /// Appends the little-endian encoding.
    fn encode(self, out: &mut Vec<u8>);
}

mod sealed {
    /// Restricts [`super::ArrayElement`] to the types of this module.
    pub trait Sealed {}
}

macro_rules! array_element {
    ($($t:ty => $vt:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl ArrayElement for $t {
            const TYPE: ValueType = ValueType::$vt;
            fn encode(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

array_element!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64);

impl sealed::Sealed for bool {}
impl ArrayElement for bool {
    const TYPE: ValueType = ValueType::Bool;
    fn encode(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

impl Array {
    /// An array over already validated encoded elements.
    pub(crate) fn from_parts(elem: ValueType, len: usize, data: SharedBytes) -> Array {
        Array {
            elem,
            len,
            data,
            index: Arc::default(),
        }
    }

    /// An array of numbers or booleans.
    pub fn from_slice<T: ArrayElement>(items: &[T]) -> Array {
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(items));
        for &item in items {
            item.encode(&mut bytes);
        }
        Array::from_parts(T::TYPE, items.len(), SharedBytes::owned(bytes))
    }

    /// An array of strings.
    pub fn from_strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Array {
        let mut bytes = Vec::new();
        let mut len = 0;
        for item in items {
            encode_str(item.as_ref(), &mut bytes);
            len += 1;
        }
        Array::from_parts(ValueType::String, len, SharedBytes::owned(bytes))
    }

    /// An array of arrays (each child may have its own element type).
    pub fn from_arrays(items: impl IntoIterator<Item = Array>) -> Array {
        let mut bytes = Vec::new();
        let mut len = 0;
        for item in items {
            item.encode(&mut bytes);
            len += 1;
        }
        Array::from_parts(ValueType::Array, len, SharedBytes::owned(bytes))
    }

    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded elements, exactly as in the file (without type id and count).
    pub fn raw_bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// Element `i`, decoded (strings are copied, nested arrays share their bytes).
    pub fn get(&self, i: usize) -> Option<Value> {
        if i >= self.len {
            return None;
        }
        match self.elem.fixed_size() {
            Some(size) => {
                let bytes = self.raw_bytes().get(i * size..(i + 1) * size)?;
                Value::decode_fixed(self.elem, bytes)
            }
            None => {
                let start = *self.index().get(i)?;
                self.variable_at(start)
            }
        }
    }

    /// All elements, decoded one by one.
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len).map_while(|i| self.get(i))
    }

    /// The elements of a string array, borrowed; `None` for other element types.
    pub fn strings(&self) -> Option<StringArray<'_>> {
        (self.elem == ValueType::String).then(|| StringArray {
            data: self.raw_bytes(),
            offsets: self.index(),
        })
    }

    /// Appends type id, count and elements.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.elem.id().to_le_bytes());
        out.extend_from_slice(&(self.len as u64).to_le_bytes());
        out.extend_from_slice(self.raw_bytes());
    }

    /// Start offsets of the elements of a string or nested array.
    fn index(&self) -> &[usize] {
        self.index.get_or_init(|| {
            let data = self.raw_bytes();
            let mut offsets = Vec::with_capacity(self.len);
            if self.elem == ValueType::String {
                // Only the length prefixes are read: the strings were validated when read
                // (or encoded by us); `StringArray::get` checks each one it returns.
                let mut pos = 0usize;
                for _ in 0..self.len {
                    let Some(prefix) = data.get(pos..pos.saturating_add(8)) else {
                        break;
                    };
                    offsets.push(pos);
                    let mut len = [0u8; 8];
                    len.copy_from_slice(prefix);
                    let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
                    pos = pos.saturating_add(8).saturating_add(len);
                }
                return offsets;
            }
            let mut cur = Cursor::new(data, 0);
            for _ in 0..self.len {
                offsets.push(cur.pos());
                // The bytes were validated when read (or encoded by us); a failure here
                // only shortens the index, so later elements read as absent.
                if skip_elements(&mut cur, self.elem, 1, "", 0).is_err() {
                    break;
                }
            }
            offsets
        })
    }

    /// The string or nested array starting at `start` in the data.
    fn variable_at(&self, start: usize) -> Option<Value> {
        let mut cur = Cursor::new(self.raw_bytes(), start);
        if self.elem == ValueType::String {
            let s = cur.string(u64::MAX, &String::new).ok()?;
            return Some(Value::String(s.to_owned()));
        }
        let (elem, len) = read_array_header(&mut cur, "", 0).ok()?;
        let data_start = cur.pos();
        skip_elements(&mut cur, elem, len, "", 0).ok()?;
        let data = self.data.sub(data_start..cur.pos());
        Some(Value::Array(Array::from_parts(elem, len, data)))
    }
}

impl PartialEq for Array {
    fn eq(&self, other: &Array) -> bool {
        self.elem == other.elem && self.len == other.len && self.raw_bytes() == other.raw_bytes()
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("elem", &self.elem)
            .field("len", &self.len)
            .field("bytes", &self.raw_bytes().len())
            .finish()
    }
}

/// The strings of a string array, borrowed from the file without copying.
#[derive(Clone, Copy, Debug)]
pub struct StringArray<'a> {
    data: &'a [u8],
    offsets: &'a [usize],
}

impl<'a> StringArray<'a> {
    /// Number of strings.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when there are no strings.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// String `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        let start = *self.offsets.get(i)?;
        Cursor::new(self.data, start)
            .string(u64::MAX, &String::new)
            .ok()
    }

    /// All strings in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let this = *self;
        (0..this.len()).map_while(move |i| this.get(i))
    }
}
