//! Q6_K block format (owned by the K-quant work; filled in next).
