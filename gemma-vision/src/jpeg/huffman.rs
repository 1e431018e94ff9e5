//! Huffman tables and the bit reader of entropy-coded data (ITU T.81 F.2.2, as
//! libjpeg's jdhuff.c reads it: `FF 00` is a data byte `FF`, extra `FF` fill bytes
//! are skipped, and at a marker the reader supplies zero bits).

use super::error::JpegError;

/// Codes up to this many bits are decoded with one table lookup.
const LOOKUP_BITS: u32 = 9;

/// A Huffman table from a DHT segment.
#[derive(Clone)]
pub(super) struct HuffmanTable {
    /// For each `LOOKUP_BITS`-bit prefix: `(code length << 8) | symbol`, or 0 when
    /// the code is longer.
    lookup: Vec<u16>,
    /// Largest code of each length (index 1..=16), -1 when there is none.
    max_code: [i32; 17],
    /// `values` index of a code of each length, minus the first code of that length.
    value_offset: [i32; 17],
    /// The symbols, in code order.
    values: Vec<u8>,
}

impl HuffmanTable {
    /// Builds a table from the 16 code-length counts and the symbols of a DHT
    /// segment; `None` if the counts describe more codes than fit their lengths.
    pub(super) fn new(counts: &[u8; 16], values: &[u8]) -> Option<HuffmanTable> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 || total != values.len() {
            return None;
        }
        let mut lookup = vec![0u16; 1 << LOOKUP_BITS];
        let mut max_code = [-1i32; 17];
        let mut value_offset = [0i32; 17];
        let mut code: i32 = 0;
        let mut index: i32 = 0;
        for len in 1..=16u32 {
            let count = i32::from(counts[len as usize - 1]);
            value_offset[len as usize] = index - code;
            if count > 0 {
                if code + count > 1 << len {
                    return None;
                }
                for i in 0..count {
                    let c = (code + i) as u32;
                    if len <= LOOKUP_BITS {
                        let shift = LOOKUP_BITS - len;
                        let entry = ((len as u16) << 8) | u16::from(values[(index + i) as usize]);
                        let first = (c << shift) as usize;
                        lookup[first..first + (1 << shift)].fill(entry);
                    }
                }
                max_code[len as usize] = code + count - 1;
            }
            index += count;
            code = (code + count) << 1;
        }
        Some(HuffmanTable {
            lookup,
            max_code,
            value_offset,
            values: values.to_vec(),
        })
    }
}

/// Reads bits, MSB first, from the entropy-coded data that starts at `pos`.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to read; at a marker (or the end of data) it stays there.
    pos: usize,
    /// Buffered bits, most significant first.
    acc: u64,
    /// Number of valid bits in `acc`.
    bits: u32,
    /// Zero bits supplied after a marker or the end of the data was reached.
    padded: u32,
    /// A marker or the end of the data was reached.
    stopped: bool,
}

impl<'a> BitReader<'a> {
    /// A reader of the entropy-coded data starting at byte `pos` of `data`.
    pub(super) fn new(data: &'a [u8], pos: usize) -> BitReader<'a> {
        BitReader {
            data,
            pos,
            acc: 0,
            bits: 0,
            padded: 0,
            stopped: false,
        }
    }

    /// Position of the next unread byte (the marker after the data once it is reached).
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    fn fill(&mut self) {
        while self.bits <= 56 {
            let byte = if self.stopped {
                self.padded += 8;
                0
            } else {
                match self.next_data_byte() {
                    Some(b) => b,
                    None => {
                        self.stopped = true;
                        continue;
                    }
                }
            };
            self.acc |= u64::from(byte) << (56 - self.bits);
            self.bits += 8;
        }
    }

    /// The next data byte, or `None` at a marker or the end (leaving `pos` on it).
    fn next_data_byte(&mut self) -> Option<u8> {
        let byte = *self.data.get(self.pos)?;
        if byte != 0xFF {
            self.pos += 1;
            return Some(byte);
        }
        // Skip fill bytes: FF FF ... 00 is one data byte FF, FF FF ... xx a marker.
        let mut next = self.pos + 1;
        while self.data.get(next) == Some(&0xFF) {
            next += 1;
        }
        match self.data.get(next) {
            Some(0) => {
                self.pos = next + 1;
                Some(0xFF)
            }
            _ => {
                self.pos = next - 1;
                None
            }
        }
    }

    /// The next `n` bits (n <= 16) without consuming them.
    #[inline]
    fn peek(&mut self, n: u32) -> u32 {
        if self.bits < n {
            self.fill();
        }
        (self.acc >> (64 - n)) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.bits -= n;
    }

    /// Reads `n` bits (0..=16) as an unsigned number.
    #[inline]
    pub(super) fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// Reads one bit.
    #[inline]
    pub(super) fn bit(&mut self) -> bool {
        self.bits(1) != 0
    }

    /// Reads `n` bits (0..=15) and sign-extends them as T.81 F.2.2.1 `EXTEND`.
    #[inline]
    pub(super) fn receive_extend(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let v = self.bits(n) as i32;
        if v < 1 << (n - 1) {
            v - (1 << n) + 1
        } else {
            v
        }
    }

    /// Decodes one Huffman symbol.
    #[inline]
    pub(super) fn decode(&mut self, table: &HuffmanTable) -> Result<u8, JpegError> {
        let peek = self.peek(16);
        let entry = table.lookup[(peek >> (16 - LOOKUP_BITS)) as usize];
        if entry != 0 {
            self.consume(u32::from(entry >> 8));
            return Ok(entry as u8);
        }
        for len in LOOKUP_BITS + 1..=16 {
            let code = (peek >> (16 - len)) as i32;
            if code <= table.max_code[len as usize] {
                self.consume(len);
                let index = code + table.value_offset[len as usize];
                return table
                    .values
                    .get(index as usize)
                    .copied()
                    .ok_or_else(|| self.corrupt("bad Huffman code"));
            }
        }
        Err(self.corrupt("bad Huffman code"))
    }

    /// Fails if bits past the end of the data were used: the data is truncated
    /// (or a marker interrupts it).
    pub(super) fn check_overrun(&self) -> Result<(), JpegError> {
        if self.padded > self.bits {
            if self.pos >= self.data.len() {
                return Err(JpegError::Truncated { offset: self.pos });
            }
            return Err(self.corrupt("entropy-coded data interrupted by a marker"));
        }
        Ok(())
    }

    /// Drops the buffered bits and reads the restart marker `RST(n)` that must
    /// follow; garbage bytes before it are skipped, as libjpeg does.
    pub(super) fn restart(&mut self, n: u8) -> Result<(), JpegError> {
        self.check_overrun()?;
        self.acc = 0;
        self.bits = 0;
        self.padded = 0;
        self.stopped = false;
        let marker =
            next_marker(self.data, self.pos).ok_or(JpegError::Truncated { offset: self.pos })?;
        if self.data[marker + 1] != 0xD0 + (n & 7) {
            return Err(self.corrupt("missing restart marker"));
        }
        self.pos = marker + 2;
        Ok(())
    }

    /// A [`JpegError::CorruptData`] at the current position.
    pub(super) fn corrupt(&self, reason: &'static str) -> JpegError {
        JpegError::CorruptData {
            offset: self.pos,
            reason,
        }
    }
}

/// Offset of the next marker (`FF` followed by a byte other than `00` and `FF`) at or
/// after `pos`.
pub(super) fn next_marker(data: &[u8], pos: usize) -> Option<usize> {
    let mut i = pos;
    while i + 1 < data.len() {
        if data[i] == 0xFF && data[i + 1] != 0 && data[i + 1] != 0xFF {
            return Some(i);
        }
        i += 1;
    }
    None
}
