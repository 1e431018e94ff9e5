//! avx2_legacy dot products (filled in next).
