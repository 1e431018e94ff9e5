//! avx2_kquants dot products (filled in next).
