//! AArch64 NEON kernels, one file per format family, each behind `#[target_feature]`.
//!
//! Every integer kernel comes in a baseline-NEON form and a `dotprod` (`sdot`) form,
//! chosen at run time (`is_aarch64_feature_detected!`) when the kernel is handed out.

pub(crate) mod neon_dot;
pub(crate) mod neon_float;
pub(crate) mod neon_kquants;
pub(crate) mod neon_legacy;
#[cfg(test)]
mod tests;
