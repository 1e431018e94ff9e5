//! q8_1 (filled in next).
