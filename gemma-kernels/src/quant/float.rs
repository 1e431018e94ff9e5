//! float (filled in next).
