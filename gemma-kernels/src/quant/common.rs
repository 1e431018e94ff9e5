//! common (filled in next).
