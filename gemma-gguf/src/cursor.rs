//! Bounds-checked little-endian reads over a byte slice.
//!
//! Every read checks the remaining length first and reports a [`GgufError::Truncated`]
//! naming the field being read; nothing here can index out of bounds.

use crate::GgufError;

/// A read position in a byte slice.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at `pos` (which may be past the end: every read then fails cleanly).
    pub(crate) fn new(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    /// The current position (absolute in the slice).
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The current position as a file offset.
    pub(crate) fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes left after the current position.
    pub(crate) fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    /// The next `n` bytes, advancing past them; `context` names the field for the error.
    pub(crate) fn take(
        &mut self,
        n: u64,
        context: &dyn Fn() -> String,
    ) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                offset: self.offset(),
                needed: n,
                available,
                context: context(),
            });
        }
        // n <= remaining <= len, so neither the cast nor the addition can overflow.
        let end = self.pos + n as usize;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| GgufError::Truncated {
                offset: self.offset(),
                needed: n,
                available,
                context: context(),
            })?;
        self.pos = end;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(
        &mut self,
        context: &dyn Fn() -> String,
    ) -> Result<[u8; N], GgufError> {
        let slice = self.take(N as u64, context)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// A little-endian u32.
    pub(crate) fn u32(&mut self, context: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(context).map(u32::from_le_bytes)
    }

    /// A little-endian u64.
    pub(crate) fn u64(&mut self, context: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(context).map(u64::from_le_bytes)
    }

    /// A GGUF string (u64 length, then UTF-8 bytes) of at most `limit` bytes.
    pub(crate) fn string(
        &mut self,
        limit: u64,
        context: &dyn Fn() -> String,
    ) -> Result<&'a str, GgufError> {
        let len_offset = self.offset();
        let len = self.u64(context)?;
        if len > limit {
            return Err(GgufError::StringTooLong {
                offset: len_offset,
                context: context(),
                len,
                limit,
            });
        }
        let start = self.offset();
        let bytes = self.take(len, context)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            offset: start,
            context: context(),
        })
    }
}
