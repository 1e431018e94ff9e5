//! SentencePiece-style merging by score (llama.cpp's `llm_tokenizer_spm`).
//!
//! A chunk of escaped text (spaces already turned into `▁`) starts as one symbol per
//! character. Every adjacent pair whose concatenation is a vocabulary token is a candidate;
//! the candidate whose token has the highest score is merged first (ties: leftmost), and the
//! merged symbol forms new candidates with its neighbours. Symbols that are not tokens at the
//! end (single characters missing from the vocabulary) fall back to `<0xNN>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Tokenizer;

/// Marks a symbol whose token id has not been looked up (an unmerged character).
const UNRESOLVED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: u32,
    /// Byte length; 0 once merged into its left neighbour.
    len: u32,
    prev: u32,
    next: u32,
    id: u32,
}

/// Marks the absence of a neighbour.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    /// Byte length of the merged text, to detect candidates made stale by other merges.
    len: u32,
    id: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Buffers reused across the chunks of one `encode` call.
#[derive(Debug, Default)]
pub(crate) struct MergeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
}

impl Tokenizer {
    /// Tokenizes one chunk of escaped text, appending ids to `out`.
    pub(crate) fn merge_chunk(&self, chunk: &str, scratch: &mut MergeScratch, out: &mut Vec<u32>) {
        if chunk.is_empty() {
            return;
        }
        let bytes = chunk.as_bytes();
        let symbols = &mut scratch.symbols;
        symbols.clear();
        for (i, (start, ch)) in chunk.char_indices().enumerate() {
            symbols.push(Symbol {
                start: start as u32,
                len: ch.len_utf8() as u32,
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: i as u32 + 1,
                id: UNRESOLVED,
            });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = NONE;
        }
        // A chunk of one character needs no merging.
        if symbols.len() > 1 {
            let heap = &mut scratch.heap;
            heap.clear();
            for left in 0..symbols.len() as u32 - 1 {
                self.push_bigram(bytes, symbols, heap, left, left + 1);
            }
            while let Some(bigram) = heap.pop() {
                let (l, r) = (bigram.left as usize, bigram.right as usize);
                let (left, right) = (symbols[l], symbols[r]);
                if left.len == 0 || right.len == 0 || left.len + right.len != bigram.len {
                    continue;
                }
                symbols[l].len += right.len;
                symbols[l].id = bigram.id;
                symbols[l].next = right.next;
                symbols[r].len = 0;
                if right.next != NONE {
                    symbols[right.next as usize].prev = bigram.left;
                }
                if left.prev != NONE {
                    self.push_bigram(bytes, symbols, heap, left.prev, bigram.left);
                }
                if right.next != NONE {
                    self.push_bigram(bytes, symbols, heap, bigram.left, right.next);
                }
            }
        }
        let mut index = 0u32;
        while index != NONE {
            let symbol = symbols[index as usize];
            let text = &bytes[symbol.start as usize..(symbol.start + symbol.len) as usize];
            let id = match symbol.id {
                UNRESOLVED => self.lookup.get(&self.texts, text),
                id => Some(id),
            };
            match id {
                Some(id) => out.push(id),
                None => out.extend(text.iter().map(|&b| self.byte_fallback[b as usize])),
            }
            index = symbol.next;
        }
    }

    /// Queues the merge of `left` and `right` when their concatenation is a token.
    #[inline]
    fn push_bigram(
        &self,
        bytes: &[u8],
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Bigram>,
        left: u32,
        right: u32,
    ) {
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let len = l.len + r.len;
        let text = &bytes[l.start as usize..(l.start + len) as usize];
        if let Some(id) = self.lookup.get(&self.texts, text) {
            heap.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                len,
                id,
            });
        }
    }
}
