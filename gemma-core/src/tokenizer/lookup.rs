//! Text -> token id lookup: an open-addressing hash table over the vocabulary's bytes.
//!
//! All token texts live in one byte buffer (no allocation per token); the table stores
//! ids, so a lookup hashes the query once and compares bytes only on a hash-slot hit.

/// Token texts concatenated, with the start offset of every token (`offsets[id]..offsets[id + 1]`).
#[derive(Debug, Clone)]
pub(crate) struct TokenTexts {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl TokenTexts {
    /// Packs the texts into one buffer. Fails (returns `None`) past 4 GiB of text.
    pub(crate) fn new<'a>(texts: impl Iterator<Item = &'a [u8]>) -> Option<Self> {
        let mut bytes = Vec::new();
        let mut offsets = vec![0u32];
        for text in texts {
            bytes.extend_from_slice(text);
            offsets.push(u32::try_from(bytes.len()).ok()?);
        }
        Some(Self { bytes, offsets })
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The bytes of token `id` (`id < len()`).
    pub(crate) fn get(&self, id: usize) -> &[u8] {
        &self.bytes[self.offsets[id] as usize..self.offsets[id + 1] as usize]
    }
}

/// Open-addressing (linear probing) table of token ids keyed by their text.
#[derive(Debug, Clone)]
pub(crate) struct TokenLookup {
    /// Per slot: the high 32 bits of the key's hash, then `id + 1` (0: empty slot). The
    /// hash tag rejects almost every non-matching probe without touching the token text.
    slots: Vec<u64>,
    mask: usize,
}

impl TokenLookup {
    /// Builds the table. When several ids share a text the highest id wins (as in llama.cpp,
    /// whose `token_to_id` map is filled in id order).
    pub(crate) fn new(texts: &TokenTexts) -> Self {
        let capacity = (texts.len() * 2).next_power_of_two().max(16);
        let mut table = Self {
            slots: vec![0; capacity],
            mask: capacity - 1,
        };
        for id in 0..texts.len() {
            let key = texts.get(id);
            let hash = hash_bytes(key);
            let entry = (hash & TAG_MASK) | (id as u64 + 1);
            let mut slot = hash as usize & table.mask;
            loop {
                let stored = table.slots[slot];
                if stored == 0 {
                    table.slots[slot] = entry;
                    break;
                }
                if stored & TAG_MASK == hash & TAG_MASK && texts.get(slot_id(stored)) == key {
                    table.slots[slot] = entry;
                    break;
                }
                slot = (slot + 1) & table.mask;
            }
        }
        table
    }

    /// The id whose text is exactly `key`.
    #[inline]
    pub(crate) fn get(&self, texts: &TokenTexts, key: &[u8]) -> Option<u32> {
        let hash = hash_bytes(key);
        let mut slot = hash as usize & self.mask;
        loop {
            let stored = self.slots[slot];
            if stored == 0 {
                return None;
            }
            if stored & TAG_MASK == hash & TAG_MASK {
                let id = slot_id(stored);
                if texts.get(id) == key {
                    return Some(id as u32);
                }
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

/// The hash bits kept in a slot as a tag.
const TAG_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// The token id stored in a non-empty slot.
#[inline]
fn slot_id(stored: u64) -> usize {
    (stored & 0xFFFF_FFFF) as usize - 1
}

/// A fast non-cryptographic hash of a short byte string (8 bytes per step, then a final
/// avalanche so that the low bits used for the slot depend on every input bit).
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 32)
}

/// [`std::hash::BuildHasher`] for maps keyed by short strings, using [`hash_bytes`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BytesHasherBuilder;

/// Hasher state of [`BytesHasherBuilder`].
#[derive(Debug, Default)]
pub(crate) struct BytesHasher(u64);

impl std::hash::BuildHasher for BytesHasherBuilder {
    type Hasher = BytesHasher;
    fn build_hasher(&self) -> BytesHasher {
        BytesHasher(0)
    }
}

impl std::hash::Hasher for BytesHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.rotate_left(5) ^ hash_bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_token_and_rejects_others() {
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        let texts = TokenTexts::new(words.iter().map(|w| w.as_bytes())).unwrap();
        let table = TokenLookup::new(&texts);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(table.get(&texts, w.as_bytes()), Some(i as u32));
        }
        assert_eq!(table.get(&texts, b"w1000"), None);
        assert_eq!(table.get(&texts, b""), None);
    }

    #[test]
    fn duplicate_text_maps_to_last_id() {
        let texts = TokenTexts::new([&b"a"[..], b"b", b"a"].into_iter()).unwrap();
        let table = TokenLookup::new(&texts);
        assert_eq!(table.get(&texts, b"a"), Some(2));
        assert_eq!(table.get(&texts, b"b"), Some(1));
    }
}
