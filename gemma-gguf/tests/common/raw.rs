//! A byte-level GGUF builder that writes exactly what it is told, so tests can build
//! files with any field broken. Offsets of what was written are returned for assertions.

/// Value type ids of the GGUF format.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Raw bytes under construction.
#[derive(Clone, Default)]
pub struct Raw {
    pub bytes: Vec<u8>,
}

impl Raw {
    /// Magic, version, tensor count, key count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }

    /// Current length (the offset of the next byte).
    pub fn pos(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// A GGUF string: u64 length, bytes.
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).raw(s)
    }

    /// A key with a u32 value.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(ty::U32).u32(v)
    }

    /// A key with a string value.
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key.as_bytes()).u32(ty::STRING).str(v.as_bytes())
    }

    /// A tensor table entry (type by ggml id, offset relative to the data section).
    pub fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }

    /// Zero bytes up to a multiple of `align`.
    pub fn pad(&mut self, align: u64) -> &mut Self {
        while !self.pos().is_multiple_of(align) {
            self.u8(0);
        }
        self
    }

    /// `n` bytes of filler data.
    pub fn data(&mut self, n: usize) -> &mut Self {
        self.bytes.extend((0..n).map(|i| i as u8));
        self
    }
}
