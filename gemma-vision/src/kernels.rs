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
    /// A panel: `kc x MR` values, `a[p * a_step + i]` (`a_step` = MR when packed).
    pub a: *const f32,
    /// Distance between the MR values of consecutive `p` in `a` (>= MR).
    pub a_step: usize,
    /// B panel: `kc x width` values, `b[p * b_step + j]` (`b_step` = width when packed).
    pub b: *const f32,
    /// Distance between the rows of the B panel (>= width).
    pub b_step: usize,
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
type SoftmaxColumnsFn = unsafe fn(&mut [f32], usize, f32, &mut [f32]);
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
    softmax_columns: SoftmaxColumnsFn,
    gelu: GeluFn,
}

impl Kernels {
    /// The kernels for `isa`, or `None` when this CPU cannot run it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        if !isa.is_supported() {
            return None;
        }
        Some(match isa {
            // No NEON kernels here yet: AArch64 runs the scalar ones.
            Isa::Scalar | Isa::Neon => Kernels::scalar(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Kernels {
                isa,
                mr: avx2::MR,
                nr: avx2::NR,
                tile_full: avx2::tile_full,
                tile_half: avx2::tile_half,
                softmax_columns: avx2::softmax_columns,
                gelu: avx2::gelu,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Kernels {
                isa,
                mr: avx512::MR,
                nr: avx512::NR,
                tile_full: avx512::tile_full,
                tile_half: avx512::tile_half,
                softmax_columns: avx512::softmax_columns,
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
            softmax_columns: scalar::softmax_columns,
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

    /// Softmax down the columns of the row-major `s` (`cols` columns, `cols` a multiple
    /// of 16), unnormalized: column j becomes `exp((s[.., j] - max_j) * scale)` and
    /// `inv_sums[j]` the reciprocal of its sum (the caller scales the product instead
    /// of every probability). `scale` must be positive.
    pub fn softmax_columns(&self, s: &mut [f32], cols: usize, scale: f32, inv_sums: &mut [f32]) {
        assert!(
            cols.is_multiple_of(COLUMN_MULTIPLE)
                && s.len().is_multiple_of(cols)
                && inv_sums.len() == cols,
            "softmax_columns: {cols} columns, {} values, {} sums",
            s.len(),
            inv_sums.len()
        );
        // SAFETY: selected for a supported ISA in `for_isa`; the slices were just checked
        // to hold whole rows of `cols` values and `cols` sums.
        unsafe { (self.softmax_columns)(s, cols, scale, inv_sums) }
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
    debug_assert!(t.a_step >= MR && t.b_step >= width);
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
            a = a.add(t.a_step);
            b = b.add(t.b_step);
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

/// `softmax_columns` handles widths that are a multiple of this (every LANES divides it).
pub(crate) const COLUMN_MULTIPLE: usize = 16;

/// Rows of `softmax_columns` whose exponentials are summed in f32 before the f64 total.
const COLUMN_SUM_BLOCK: usize = 64;

/// Column-wise unnormalized softmax (see [`Kernels::softmax_columns`]): a pass for the
/// column maxima, then one for the exponentials, summed over short row blocks in f32
/// and across blocks in f64 (a 4096-long column stays within a few ulp even on the
/// one-lane scalar path).
#[inline(always)]
unsafe fn softmax_columns<S: Simd>(s: &mut [f32], cols: usize, scale: f32, inv_sums: &mut [f32]) {
    let rows = s.len() / cols;
    let p = s.as_mut_ptr();
    let mut max = vec![f32::NEG_INFINITY; cols];
    let mut block_sum = vec![0f32; cols];
    let mut total = vec![0f64; cols];
    // SAFETY (whole body): `cols` is a multiple of LANES (COLUMN_MULTIPLE) and `s` holds
    // `rows * cols` values, so every vector access below is in bounds.
    unsafe {
        let m = max.as_mut_ptr();
        for r in 0..rows {
            for c in (0..cols).step_by(S::LANES) {
                S::store(
                    m.add(c),
                    S::max(S::load(m.add(c)), S::load(p.add(r * cols + c))),
                );
            }
        }
        let vs = S::splat(scale);
        let bs = block_sum.as_mut_ptr();
        for block in (0..rows).step_by(COLUMN_SUM_BLOCK) {
            block_sum.iter_mut().for_each(|v| *v = 0.0);
            for r in block..(block + COLUMN_SUM_BLOCK).min(rows) {
                for c in (0..cols).step_by(S::LANES) {
                    let x = p.add(r * cols + c);
                    let e = S::exp(S::mul(S::sub(S::load(x), S::load(m.add(c))), vs));
                    S::store(x, e);
                    S::store(bs.add(c), S::add(S::load(bs.add(c)), e));
                }
            }
            for (t, b) in total.iter_mut().zip(&block_sum) {
                *t += f64::from(*b);
            }
        }
    }
    for (inv, t) in inv_sums.iter_mut().zip(&total) {
        *inv = 1.0 / *t as f32;
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
    pub unsafe fn softmax_columns(s: &mut [f32], cols: usize, scale: f32, sums: &mut [f32]) {
        // SAFETY: checked shapes (Kernels::softmax_columns).
        unsafe { super::softmax_columns::<Scalar>(s, cols, scale, sums) }
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
    pub unsafe fn softmax_columns(s: &mut [f32], cols: usize, scale: f32, sums: &mut [f32]) {
        // SAFETY: checked shapes (Kernels::softmax_columns); AVX2 + FMA present.
        unsafe { super::softmax_columns::<Avx2>(s, cols, scale, sums) }
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
    pub unsafe fn softmax_columns(s: &mut [f32], cols: usize, scale: f32, sums: &mut [f32]) {
        // SAFETY: checked shapes (Kernels::softmax_columns); AVX-512F present.
        unsafe { super::softmax_columns::<Avx512>(s, cols, scale, sums) }
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

    /// Column softmax of every ISA against float64, for 1 to 4099 rows (partial sum
    /// blocks) and 16 or 48 columns.
    #[test]
    fn softmax_columns_matches_f64_on_every_isa() {
        for isa in Isa::available() {
            let kernels = Kernels::for_isa(isa).expect("available ISA");
            for (rows, cols) in [(1usize, 16usize), (7, 48), (65, 16), (4099, 48)] {
                let s: Vec<f32> = (0..rows * cols)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
                    .collect();
                let scale = 0.125f32;
                let mut got = s.clone();
                let mut inv = vec![0f32; cols];
                kernels.softmax_columns(&mut got, cols, scale, &mut inv);
                for j in 0..cols {
                    let column = || (0..rows).map(|r| f64::from(s[r * cols + j]) * 0.125);
                    let max = column().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = column().map(|x| (x - max).exp()).sum();
                    for (r, x) in column().enumerate() {
                        let want = (x - max).exp() / sum;
                        let p = f64::from(got[r * cols + j]) * f64::from(inv[j]);
                        assert!(
                            (p - want).abs() <= 2e-6 * want + 1e-12,
                            "{isa:?} {rows}x{cols} ({r},{j}): {p} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
