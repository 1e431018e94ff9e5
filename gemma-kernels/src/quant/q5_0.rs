//! q5_0 (filled in next).
