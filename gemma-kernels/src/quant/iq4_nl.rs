//! iq4_nl (filled in next).
