//! The signed-byte dot product every NEON kernel is built on, in its two forms, and the
//! macro that hands out a kernel in the form the CPU supports.
//!
//! Each kernel is written once, generic over [`I8Dot`], and compiled twice: with
//! [`Widening`] (baseline NEON: `smull` + `sadalp`) and with [`Sdot`] (the `dotprod`
//! extension's `sdot`, usable only with a token that `dotprod` code creates). Both give
//! the same exact `i32` sum of each 16-byte product vector; only the lane a product lands
//! in differs, and every kernel gives all four lanes of one product vector the same scale.

use std::arch::aarch64::*;

/// Adds the 16 products `a[i] * b[i]` of signed bytes into the four `i32` lanes of `acc`
/// (which lane receives which product is up to the implementation; kernels only use the
/// lane sum, or scale all four lanes alike).
pub(crate) trait I8Dot: Copy {
    /// `acc` plus the products of `a` and `b`.
    fn dot(self, acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Baseline NEON: widening multiplies to `i16` (every byte product fits) then pairwise
/// widening adds into `i32`.
#[derive(Clone, Copy)]
pub(crate) struct Widening;

impl I8Dot for Widening {
    #[inline(always)]
    fn dot(self, acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: NEON is part of every AArch64 target's baseline (and `Isa::Neon` checks
        // it before any kernel is handed out); the intrinsics touch registers only.
        unsafe {
            let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
            vpadalq_s16(acc, vmull_high_s8(a, b))
        }
    }
}

/// The `dotprod` extension's `sdot`. A value exists only inside code compiled with that
/// feature (its constructor is such a function), which proves the CPU has it.
#[derive(Clone, Copy)]
pub(crate) struct Sdot(());

impl Sdot {
    /// The proof token; callable only from `dotprod` code.
    #[target_feature(enable = "neon,dotprod")]
    pub(crate) fn new() -> Sdot {
        Sdot(())
    }
}

impl I8Dot for Sdot {
    /// `sdot acc.4s, a.16b, b.16b`, written as assembly because the `vdotq_s32`
    /// intrinsic is not stable Rust yet. The `.arch_extension` line lets the kernels
    /// that contain it be compiled for plain NEON (so that they inline it).
    #[inline(always)]
    fn dot(self, mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: an `Sdot` exists only where the CPU has `dotprod` (see `Sdot::new`);
        // the instruction reads and writes registers only.
        unsafe {
            std::arch::asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
}

/// An IEEE half to `f32`, exactly (`fcvt`, baseline AArch64; `half`'s own conversion
/// checks for the `fp16` extension on every call).
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn f16_to_f32(h: half::f16) -> f32 {
    let out: f32;
    // SAFETY: register-only instructions of every AArch64 CPU with floating point.
    unsafe {
        std::arch::asm!(
            "fmov {v:s}, {bits:w}",
            "fcvt {v:s}, {v:h}",
            bits = in(reg) h.to_bits() as u32,
            v = out(vreg) out,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// The 16 bytes at `p` (unaligned).
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn load_u8(p: &[u8; 16]) -> uint8x16_t {
    // SAFETY: `p` is 16 readable bytes.
    unsafe { vld1q_u8(p.as_ptr()) }
}

/// The 16 signed bytes at `p` (unaligned).
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn load_i8(p: &[i8; 16]) -> int8x16_t {
    // SAFETY: `p` is 16 readable bytes.
    unsafe { vld1q_s8(p.as_ptr()) }
}

/// `s[at..at + N]` as a fixed-size array reference.
#[inline(always)]
pub(crate) fn chunk<T, const N: usize>(s: &[T], at: usize) -> &[T; N] {
    // Invariant: callers pass constant-bounded offsets into fixed-size block arrays
    // (`at + N <= s.len()` by the block layout), so this never fails.
    s[at..at + N]
        .try_into()
        .expect("in-bounds chunk of a block array")
}

/// Hands out `$kernel` (a `#[target_feature(enable = "neon")]` function generic over
/// [`I8Dot`]) as the `VecDot` `$name`, in its `sdot` form when the CPU has `dotprod`;
/// both forms are also reachable as `$module::{widening, sdot}` for the tests.
macro_rules! neon_kernel {
    ($(#[$doc:meta])* $name:ident, $module:ident, $w:ty, $x:ty, $kernel:ident) => {
        mod $module {
            use super::*;

            /// The baseline NEON form.
            #[target_feature(enable = "neon")]
            pub(super) fn widening(w: &[$w], x: &[$x]) -> f32 {
                $kernel($crate::cpu::aarch64::neon_dot::Widening, w, x)
            }

            /// The `dotprod` form.
            #[target_feature(enable = "neon,dotprod")]
            pub(super) fn sdot(w: &[$w], x: &[$x]) -> f32 {
                $kernel($crate::cpu::aarch64::neon_dot::Sdot::new(), w, x)
            }
        }

        $(#[$doc])*
        pub(crate) fn $name() -> Option<$crate::quant::VecDot<$w>> {
            if !$crate::cpu::isa::Isa::Neon.is_supported() {
                return None;
            }
            if $crate::cpu::isa::has_neon_dotprod() {
                Some(|w: &[$w], x: &[$x]| {
                    // SAFETY: NEON and dotprod were detected before this was handed out;
                    // the kernel reads only `min(w.len(), x.len())` blocks.
                    unsafe { $module::sdot(w, x) }
                })
            } else {
                Some(|w: &[$w], x: &[$x]| {
                    // SAFETY: NEON was detected before this was handed out; the kernel
                    // reads only `min(w.len(), x.len())` blocks.
                    unsafe { $module::widening(w, x) }
                })
            }
        }
    };
}
pub(crate) use neon_kernel;
