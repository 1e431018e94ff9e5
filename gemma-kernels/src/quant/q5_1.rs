//! q5_1 (filled in next).
