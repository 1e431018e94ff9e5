//! avx512_kquants dot products (filled in next).
