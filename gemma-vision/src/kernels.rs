//! The vision kernels per instruction set: the GEMM micro-tile, the attention softmax
//! and the GELU, each written once over [`Simd`] and compiled for Scalar, AVX2 and
//! AVX-512. The level is chosen once (`gemma_kernels::cpu::isa`, `GEMMA_ISA` override).

use crate::simd::{Scalar, Simd};
use gemma_kernels::cpu::isa::{self, Isa};
use std::sync::OnceLock;

/// One micro-tile of `C (+)= A_panel B_panel`.
pub(crate) struct TileArgs {
    /// Reduction depth of this pass.
    pub kc: usize,
    /// Packed A panel: `kc x MR`, `a[p * MR + i]`.
    pub a: *const f32,
    /// Packed B panel: `kc x width`, `b[p * width + j]`.
    pub b: *const f32,
    /// Top-left element of the C tile.
    pub c: *mut f32,
    /// Row stride of C.
    pub ldc: usize,
    /// Rows of the tile that exist (<= MR).
    pub rows: usize,
    /// Columns of the tile that exist (<= width).
    pub cols: usize,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
}

type TileFn = unsafe fn(&TileArgs);
type SoftmaxFn = unsafe fn(&mut [f32], f32);
type GeluFn = unsafe fn(&mut [f32]);

/// The kernels of one instruction set and the GEMM blocking they imply.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    /// The instruction set these kernels run on.
    pub isa: Isa,
    /// Rows of a micro-tile.
    pub mr: usize,
    /// Columns of a full micro-tile (B panels are packed with this width).
    pub nr: usize,
    tile_full: TileFn,
    tile_half: TileFn,
    softmax: SoftmaxFn,
    gelu: GeluFn,
}

impl Kernels {
    /// The kernels for `isa`, or `None` when this CPU cannot run it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        if !isa.is_supported() {
            return None;
        }
        Some(match isa {
            Isa::Scalar | Isa::Neon => Kernels {
                isa,
                mr: scalar::MR,
                nr: scalar::NR,
                tile_full: scalar::tile_full,
                tile_half: scalar::tile_half,
                softmax: scalar::softmax,
                gelu: scalar::gelu,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Kernels {
                isa,
                mr: avx2::MR,
                nr: avx2::NR,
                tile_full: avx2::tile_full,
                tile_half: avx2::tile_half,
                softmax: avx2::softmax,
                gelu: avx2::gelu,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Kernels {
                isa,
                mr: avx512::MR,
                nr: avx512::NR,
                tile_full: avx512::tile_full,
                tile_half: avx512::tile_half,
                softmax: avx512::softmax,
                gelu: avx512::gelu,
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        })
    }

    /// The kernels of this process's level (`gemma_kernels::cpu::isa::current()`).
    pub fn current() -> &'static Kernels {
        static CURRENT: OnceLock<Kernels> = OnceLock::new();
        CURRENT.get_or_init(|| Kernels::for_isa(isa::current()).unwrap_or_else(Kernels::scalar))
    }

    /// The scalar kernels, which every CPU runs.
    fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            mr: scalar::MR,
            nr: scalar::NR,
            tile_full: scalar::tile_full,
            tile_half: scalar::tile_half,
            softmax: scalar::softmax,
            gelu: scalar::gelu,
        }
    }

    /// Runs one micro-tile whose B panel is `width` (= nr or nr / 2) wide.
    ///
    /// # Safety
    /// `args` must describe valid packed panels and a C tile as documented on [`TileArgs`].
    pub unsafe fn tile(&self, width: usize, args: &TileArgs) {
        // SAFETY: the function pointers were selected for a supported ISA in
        // `for_isa`; the pointer contract is the caller's.
        unsafe {
            if width == self.nr {
                (self.tile_full)(args)
            } else {
                (self.tile_half)(args)
            }
        }
    }

    /// `row = softmax(row * scale)`.
    pub fn softmax(&self, row: &mut [f32], scale: f32) {
        // SAFETY: selected for a supported ISA in `for_isa`; works on the slice only.
        unsafe { (self.softmax)(row, scale) }
    }

    /// `x = gelu_tanh(x)` elementwise.
    pub fn gelu(&self, x: &mut [f32]) {
        // SAFETY: selected for a supported ISA in `for_isa`; works on the slice only.
        unsafe { (self.gelu)(x) }
    }
}

/// Largest `MR x NR` of any kernel (the spill buffer of partial tiles).
const MAX_TILE: usize = 16 * 32;

/// The GEMM micro-tile: an `MR x (NV * LANES)` block of C kept in registers over `kc`
/// steps, each a broadcast of A times NV vectors of B.
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NV: usize>(t: &TileArgs) {
    let width = NV * S::LANES;
    // SAFETY (whole body): the pointers cover the panels and tile as TileArgs documents.
    unsafe {
        let mut acc = [[S::zero(); NV]; MR];
        let (mut a, mut b) = (t.a, t.b);
        for _ in 0..t.kc {
            let bv: [S::V; NV] = std::array::from_fn(|v| S::load(b.add(v * S::LANES)));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = S::splat(*a.add(i));
                for (v, slot) in row.iter_mut().enumerate() {
                    *slot = S::fma(av, bv[v], *slot);
                }
            }
            a = a.add(MR);
            b = b.add(width);
        }
        if t.rows == MR && t.cols == width {
            for (i, row) in acc.iter().enumerate() {
                for (v, value) in row.iter().enumerate() {
                    let dst = t.c.add(i * t.ldc + v * S::LANES);
                    let value = if t.accumulate {
                        S::add(S::load(dst), *value)
                    } else {
                        *value
                    };
                    S::store(dst, value);
                }
            }
        } else {
            // Spill the whole tile with constant indices first: a data-dependent index
            // into `acc` would keep it in memory inside the hot loop.
            let mut tmp = [0f32; MAX_TILE];
            for (i, row) in acc.iter().enumerate() {
                for (v, value) in row.iter().enumerate() {
                    S::store(tmp.as_mut_ptr().add(i * width + v * S::LANES), *value);
                }
            }
            for i in 0..t.rows {
                for j in 0..t.cols {
                    let dst = t.c.add(i * t.ldc + j);
                    let x = tmp[i * width + j];
                    *dst = if t.accumulate { *dst + x } else { x };
                }
            }
        }
    }
}

/// Elements per partial sum of the softmax denominator (a multiple of every LANES).
const SUM_BLOCK: usize = 64;

/// `row = softmax(row * scale)`: max, exponentials and their sum, then one scaling.
#[inline(always)]
unsafe fn softmax_row<S: Simd>(row: &mut [f32], scale: f32) {
    let n = row.len();
    let body = n / S::LANES * S::LANES;
    let p = row.as_mut_ptr();
    // SAFETY (whole body): every access is below `body <= n` in LANES steps, or a
    // single element below `n`.
    unsafe {
        let mut vmax = S::splat(f32::NEG_INFINITY);
        for i in (0..body).step_by(S::LANES) {
            vmax = S::max(vmax, S::load(p.add(i)));
        }
        let mut max = S::reduce_max(vmax);
        for i in body..n {
            max = max.max(*p.add(i));
        }
        let (vm, vs) = (S::splat(max), S::splat(scale));
        // Partial sums over short blocks, added in f64: the sum of a 4096-long row
        // stays within a few ulp even on the one-lane scalar path.
        let mut total = 0f64;
        for block in (0..body).step_by(SUM_BLOCK) {
            let mut vsum = S::zero();
            for i in (block..(block + SUM_BLOCK).min(body)).step_by(S::LANES) {
                let e = S::exp(S::mul(S::sub(S::load(p.add(i)), vm), vs));
                S::store(p.add(i), e);
                vsum = S::add(vsum, e);
            }
            total += f64::from(S::reduce_add(vsum));
        }
        for i in body..n {
            let e = ((*p.add(i) - max) * scale).exp();
            *p.add(i) = e;
            total += f64::from(e);
        }
        let sum = total as f32;
        let inv = S::splat(1.0 / sum);
        for i in (0..body).step_by(S::LANES) {
            S::store(p.add(i), S::mul(S::load(p.add(i)), inv));
        }
        for i in body..n {
            *p.add(i) *= 1.0 / sum;
        }
    }
}

/// `-2 sqrt(2 / pi)`: gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)),
/// u = sqrt(2 / pi) (x + 0.044715 x^3).
const GELU_C1: f32 = -2.0 * 0.797_884_6;
/// `GELU_C1 * 0.044715`.
const GELU_C3: f32 = GELU_C1 * 0.044_715;

/// `x = gelu_tanh(x)` (HF `gelu_pytorch_tanh`) in the overflow-free form `x / (1 + e^(-2u))`.
#[inline(always)]
unsafe fn gelu_slice<S: Simd>(x: &mut [f32]) {
    let n = x.len();
    let body = n / S::LANES * S::LANES;
    let p = x.as_mut_ptr();
    // SAFETY (whole body): accesses stay below `body <= n` in LANES steps, or below `n`.
    unsafe {
        let (c1, c3, one) = (S::splat(GELU_C1), S::splat(GELU_C3), S::splat(1.0));
        for i in (0..body).step_by(S::LANES) {
            let v = S::load(p.add(i));
            let e = S::exp(S::mul(v, S::fma(S::mul(v, v), c3, c1)));
            S::store(p.add(i), S::div(v, S::add(one, e)));
        }
        for i in body..n {
            let v = *p.add(i);
            *p.add(i) = v / (1.0 + (v * (v * v * GELU_C3 + GELU_C1)).exp());
        }
    }
}

/// Plain Rust kernels: the reference.
mod scalar {
    use super::*;
    pub const MR: usize = 4;
    pub const NR: usize = 16;
    pub unsafe fn tile_full(t: &TileArgs) {
        // SAFETY: forwarded contract.
        unsafe { tile::<Scalar, MR, NR>(t) }
    }
    pub unsafe fn tile_half(t: &TileArgs) {
        // SAFETY: forwarded contract.
        unsafe { tile::<Scalar, MR, { NR / 2 }>(t) }
    }
    pub unsafe fn softmax(row: &mut [f32], scale: f32) {
        // SAFETY: slice-bounded.
        unsafe { softmax_row::<Scalar>(row, scale) }
    }
    pub unsafe fn gelu(x: &mut [f32]) {
        // SAFETY: slice-bounded.
        unsafe { gelu_slice::<Scalar>(x) }
    }
}

/// AVX2 + FMA: 6 x 16 tiles (12 accumulators).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::simd::Avx2;
    pub const MR: usize = 6;
    pub const NR: usize = 16;
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_full(t: &TileArgs) {
        // SAFETY: forwarded contract; the CPU has AVX2 + FMA (checked in for_isa).
        unsafe { tile::<Avx2, MR, 2>(t) }
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_half(t: &TileArgs) {
        // SAFETY: as above.
        unsafe { tile::<Avx2, MR, 1>(t) }
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(row: &mut [f32], scale: f32) {
        // SAFETY: slice-bounded; AVX2 + FMA present.
        unsafe { softmax_row::<Avx2>(row, scale) }
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu(x: &mut [f32]) {
        // SAFETY: slice-bounded; AVX2 + FMA present.
        unsafe { gelu_slice::<Avx2>(x) }
    }
}

/// AVX-512F: 12 x 32 tiles (24 accumulators of the 32 registers).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use crate::simd::Avx512;
    pub const MR: usize = 12;
    pub const NR: usize = 32;
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn tile_full(t: &TileArgs) {
        // SAFETY: forwarded contract; the CPU has AVX-512F (checked in for_isa).
        unsafe { tile::<Avx512, MR, 2>(t) }
    }
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn tile_half(t: &TileArgs) {
        // SAFETY: as above.
        unsafe { tile::<Avx512, MR, 1>(t) }
    }
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn softmax(row: &mut [f32], scale: f32) {
        // SAFETY: slice-bounded; AVX-512F present.
        unsafe { softmax_row::<Avx512>(row, scale) }
    }
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn gelu(x: &mut [f32]) {
        // SAFETY: slice-bounded; AVX-512F present.
        unsafe { gelu_slice::<Avx512>(x) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<f32> {
        let mut x: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
        x.extend([
            -100.0, -30.0, -9.5, -1e-8, 0.0, 1e-8, 9.5, 30.0, 100.0, 1e4, -1e4,
        ]);
        x
    }

    /// gelu_tanh of every ISA against the float64 formula of `gelu_pytorch_tanh`.
    #[test]
    fn gelu_matches_f64_tanh_formula_on_every_isa() {
        for isa in Isa::available() {
            let kernels = Kernels::for_isa(isa).expect("available ISA");
            let x = inputs();
            let mut y = x.clone();
            kernels.gelu(&mut y);
            for (x, y) in x.iter().zip(&y) {
                let xd = f64::from(*x);
                let want = 0.5
                    * xd
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3)))
                            .tanh());
                // Relative to the result: far tighter than f32 `0.5 x (1 + tanh(u))`,
                // whose cancellation for negative x only bounds the absolute error.
                let tol = 2e-6 * want.abs() + 1e-9;
                assert!(
                    (f64::from(*y) - want).abs() <= tol,
                    "{isa:?} gelu({x}) = {y}, want {want}"
                );
            }
        }
    }

    /// Softmax of every ISA against float64, for lengths with and without a lane tail.
    #[test]
    fn softmax_matches_f64_on_every_isa() {
        for isa in Isa::available() {
            let kernels = Kernels::for_isa(isa).expect("available ISA");
            for n in [1usize, 7, 16, 33, 256, 4099] {
                let row: Vec<f32> = (0..n)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
                    .collect();
                let scale = 0.125;
                let max = row
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(*v) * scale));
                let exps: Vec<f64> = row
                    .iter()
                    .map(|v| (f64::from(*v) * scale - max).exp())
                    .collect();
                let sum: f64 = exps.iter().sum();
                let mut got = row.clone();
                kernels.softmax(&mut got, scale as f32);
                for (g, e) in got.iter().zip(&exps) {
                    let want = e / sum;
                    assert!(
                        (f64::from(*g) - want).abs() <= 2e-6 * want + 1e-12,
                        "{isa:?} n{n}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
