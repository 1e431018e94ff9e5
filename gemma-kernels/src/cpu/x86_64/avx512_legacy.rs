//! avx512_legacy dot products (filled in next).
