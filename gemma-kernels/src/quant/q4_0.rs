//! q4_0 (filled in next).
