//! dispatch (filled in next).
