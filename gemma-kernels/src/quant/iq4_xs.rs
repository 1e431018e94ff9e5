//! iq4_xs (filled in next).
