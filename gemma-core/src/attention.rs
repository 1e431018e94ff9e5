//! Which keys a query sees, and where they are in the cache: the geometry of attention,
//! shared by every backend.
//!
//! A query at position `p` of a local layer with window `w` sees the keys at positions
//! `p - w + 1 ..= p` (clamped at 0); one of a global layer sees `0 ..= p`. Keys live in
//! cache slots: position `j` is in slot `j` of a global layer and in slot `j % slots` of a
//! ring, so a run of positions is at most two runs of consecutive slots.

use std::ops::Range;

/// Key positions a query at `pos` attends to (causal, and within `window` if given).
pub fn visible_keys(pos: usize, window: Option<usize>) -> Range<usize> {
    let first = match window {
        Some(w) => pos.saturating_sub(w.saturating_sub(1)),
        None => 0,
    };
    first..pos + 1
}

/// How positions map to slots in one layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotMap {
    /// Slot = position (a global layer: as many slots as the context).
    Linear,
    /// Slot = position % slots (a sliding-window ring).
    Ring {
        /// Number of slots in the ring.
        slots: usize,
    },
}

impl SlotMap {
    /// The slot holding `pos`.
    pub fn slot(self, pos: usize) -> usize {
        match self {
            SlotMap::Linear => pos,
            SlotMap::Ring { slots } => pos % slots,
        }
    }

    /// The runs of consecutive slots holding `keys`, in position order (at most two:
    /// a ring wraps at most once for a range no longer than the ring).
    pub fn segments(self, keys: Range<usize>) -> Segments {
        let len = keys.len();
        let first_slot = self.slot(keys.start);
        let until_end = match self {
            SlotMap::Linear => len,
            SlotMap::Ring { slots } => slots - first_slot,
        };
        let head = Segment {
            pos: keys.start,
            slot: first_slot,
            len: len.min(until_end),
        };
        let tail = (len > until_end).then(|| Segment {
            pos: keys.start + until_end,
            slot: 0,
            len: len - until_end,
        });
        Segments {
            parts: [Some(head), tail],
            next: 0,
        }
    }
}

/// A run of key positions `pos .. pos + len` stored in slots `slot .. slot + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First key position.
    pub pos: usize,
    /// Its slot.
    pub slot: usize,
    /// Number of keys.
    pub len: usize,
}

impl Segment {
    /// The slots of the run.
    pub fn slots(&self) -> Range<usize> {
        self.slot..self.slot + self.len
    }

    /// Offsets of the run's keys inside the visible range that starts at `first_pos`.
    pub fn offsets(&self, first_pos: usize) -> Range<usize> {
        self.pos - first_pos..self.pos - first_pos + self.len
    }
}

/// Iterator over the (one or two) segments of [`SlotMap::segments`].
#[derive(Clone, Debug)]
pub struct Segments {
    parts: [Option<Segment>; 2],
    next: usize,
}

impl Iterator for Segments {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        while self.next < 2 {
            let part = self.parts[self.next].take();
            self.next += 1;
            if let Some(seg) = part.filter(|s| s.len > 0) {
                return Some(seg);
            }
        }
        None
    }
}
