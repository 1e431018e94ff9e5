//! q8_0 (filled in next).
