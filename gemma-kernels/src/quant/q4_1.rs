//! q4_1 (filled in next).
