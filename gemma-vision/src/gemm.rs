//! Batched f32 matrix products `C = A B` for the encoder: A is a (strided) row-major
//! f32 matrix, B is packed once into column panels, and the rows of A are split into
//! cache-sized blocks that rayon spreads over the threads (Goto/BLIS structure).
//!
//! Packing converts B to f32 whatever it was stored as (F16, BF16, quantized blocks
//! through `gemma_kernels::quant::dequantize`), so every product runs in true f32
//! arithmetic: no activation is rounded to a lower precision.

use crate::kernels::{Kernels, TileArgs};
use rayon::prelude::*;

/// Depth of one pass over A and B: a `KC x NR` B sub-panel (32 KiB for NR = 32)
/// stays in L1 while the A block streams from L2.
const KC: usize = 256;

/// Rows of A per parallel task, rounded down to a multiple of the kernel's MR
/// (an `MC x KC` A block, about 240 KiB, sits in L2).
const MC: usize = 240;

/// A row-major f32 matrix view with a row stride (a column range of a wider matrix).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    /// The elements; row `i` starts at `i * stride`.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns (elements used per row).
    pub cols: usize,
    /// Distance between row starts.
    pub stride: usize,
}

/// B (`k x n`) packed as column panels of `nr` columns (the last one `nr / 2` wide when
/// that suffices), each panel `k x width` row-major and zero-padded.
pub(crate) struct PackedB {
    data: Vec<f32>,
    k: usize,
    n: usize,
    nr: usize,
}

impl PackedB {
    /// An empty packing, to be refilled with `pack_rows` / `pack_k_rows`.
    pub fn new() -> PackedB {
        PackedB {
            data: Vec::new(),
            k: 0,
            n: 0,
            nr: 1,
        }
    }

    fn reset(&mut self, k: usize, n: usize, nr: usize) {
        self.k = k;
        self.n = n;
        self.nr = nr;
        let full = n / nr;
        let rest = n % nr;
        let last = match rest {
            0 => 0,
            r if r <= nr / 2 => nr / 2,
            _ => nr,
        };
        self.data.clear();
        self.data.resize(k * (full * nr + last), 0.0);
    }

    /// Panel width (padded) of the panel starting at column `col`.
    fn panel_width(&self, col: usize) -> usize {
        if self.n - col <= self.nr / 2 {
            self.nr / 2
        } else {
            self.nr
        }
    }

    /// Packs B from its columns: `fill(j, out)` writes column `j` (k values, i.e. row j
    /// of a `[n, k]` weight matrix) into `out`. Parallel over panels.
    pub fn pack_rows<E: Send>(
        &mut self,
        k: usize,
        n: usize,
        nr: usize,
        fill: impl Fn(usize, &mut [f32]) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        self.reset(k, n, nr);
        if self.data.is_empty() {
            return Ok(());
        }
        self.data
            .par_chunks_mut(k * nr)
            .enumerate()
            .try_for_each_init(
                || vec![0f32; k],
                |column, (panel, dst)| {
                    let width = dst.len() / k.max(1);
                    let col0 = panel * nr;
                    for jj in 0..width.min(n - col0) {
                        fill(col0 + jj, column)?;
                        for (p, v) in column.iter().enumerate() {
                            dst[p * width + jj] = *v;
                        }
                    }
                    Ok(())
                },
            )
    }

    /// Packs B from its rows: `fill(p, out)` writes row `p` (n values) into `out`.
    /// Sequential; meant for B with few rows or cheap rows.
    pub fn pack_k_rows<E>(
        &mut self,
        k: usize,
        n: usize,
        nr: usize,
        mut fill: impl FnMut(usize, &mut [f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.reset(k, n, nr);
        let mut row = vec![0f32; n];
        for p in 0..k {
            fill(p, &mut row)?;
            let mut col0 = 0;
            while col0 < n {
                let width = self.panel_width(col0);
                let used = width.min(n - col0);
                let offset = col0 * k + p * width;
                self.data[offset..offset + used].copy_from_slice(&row[col0..col0 + used]);
                col0 += width;
            }
        }
        Ok(())
    }
}

/// `c[i * ldc + j] = sum_p a[i, p] * b[p, j]` for `i < a.rows`, `j < b.n()`.
/// Parallel over blocks of rows of A; `b` must be packed with `kernels.nr`.
pub(crate) fn gemm(kernels: &Kernels, a: MatRef<'_>, b: &PackedB, c: &mut [f32], ldc: usize) {
    let (m, n, k) = (a.rows, b.n, b.k);
    debug_assert_eq!(a.cols, k);
    debug_assert_eq!(b.nr, kernels.nr);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    let mr = kernels.mr;
    let mc = (MC / mr).max(1) * mr;
    let c = &mut c[..(m - 1) * ldc + n];
    c.par_chunks_mut(mc * ldc).enumerate().for_each_init(
        || vec![0f32; mc * KC],
        |a_pack, (block, c_block)| {
            let row0 = block * mc;
            let rows = mc.min(m - row0);
            let mut p0 = 0;
            while p0 < k {
                let kc = KC.min(k - p0);
                pack_a(a, row0, rows, p0, kc, mr, a_pack);
                let mut col0 = 0;
                while col0 < n {
                    let width = b.panel_width(col0);
                    let b_panel = &b.data[col0 * k + p0 * width..];
                    for (panel, i0) in (0..rows).step_by(mr).enumerate() {
                        let args = TileArgs {
                            kc,
                            a: a_pack[panel * mr * kc..].as_ptr(),
                            a_step: mr,
                            b: b_panel.as_ptr(),
                            b_step: width,
                            c: c_block[i0 * ldc + col0..].as_mut_ptr(),
                            ldc,
                            rows: mr.min(rows - i0),
                            cols: width.min(n - col0),
                            accumulate: p0 > 0,
                        };
                        // SAFETY: `a` holds an MR x kc packed panel (pack_a), `b` a kc x width
                        // panel (b.data has k * width values from col0 * k + p0 * width on,
                        // kc <= k - p0), and `c` covers `rows` rows of stride ldc with
                        // `cols` columns each: c_block spans the block's rows up to column
                        // n of its last row, and col0 + cols <= n.
                        unsafe { kernels.tile(width, &args) };
                    }
                    col0 += width;
                }
                p0 += kc;
            }
        },
    );
}

/// A (`rows x depth`) given by its transpose: element `(i, p)` at `data[p * stride + i]`,
/// which is already the layout a micro-tile reads (with `a_step = stride`), so products
/// with such an A need no packing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TransposedRef<'a> {
    /// `depth` rows of `stride` values.
    pub data: &'a [f32],
    /// Rows of A (columns of `data` in use).
    pub rows: usize,
    /// Columns of A (rows of `data`).
    pub depth: usize,
    /// Distance between rows of `data`; at least `rows` rounded up to the kernel's MR,
    /// and `data` reaches that far in its last row, so every micro-tile reads inside
    /// `data` (values past `rows` only reach C rows that are never stored).
    pub stride: usize,
}

/// B of a product with an A given by its transpose: packed panels, or a row-major
/// matrix whose rows the micro-tile reads in place (its width a multiple of `nr`).
#[derive(Clone, Copy)]
pub(crate) enum BRef<'a> {
    /// Packed with the kernel's `nr`.
    Packed(&'a PackedB),
    /// `k x n` row-major with row stride `stride`; `n` a multiple of the kernel's `nr`.
    RowMajor {
        data: &'a [f32],
        k: usize,
        n: usize,
        stride: usize,
    },
}

impl BRef<'_> {
    fn shape(&self) -> (usize, usize) {
        match self {
            BRef::Packed(b) => (b.k, b.n),
            BRef::RowMajor { k, n, .. } => (*k, *n),
        }
    }

    /// The panel of columns from `col0` at depth `p0`: (values from its first element
    /// on, row step, panel width).
    fn panel(&self, col0: usize, p0: usize, nr: usize) -> (&[f32], usize, usize) {
        match self {
            BRef::Packed(b) => {
                let width = b.panel_width(col0);
                (&b.data[col0 * b.k + p0 * width..], width, width)
            }
            BRef::RowMajor { data, stride, .. } => (&data[p0 * stride + col0..], *stride, nr),
        }
    }
}

/// `c[i * ldc + j] = sum_p a[i, p] * b[p, j]` on the calling thread, for an A given by
/// its transpose: no operand is packed here.
pub(crate) fn gemm_transposed_a(
    kernels: &Kernels,
    a: TransposedRef<'_>,
    b: BRef<'_>,
    c: &mut [f32],
    ldc: usize,
) {
    let (k, n) = b.shape();
    let (m, mr, nr) = (a.rows, kernels.mr, kernels.nr);
    let b_ok = match b {
        BRef::Packed(p) => p.nr == nr,
        BRef::RowMajor { data, stride, .. } => {
            n % nr == 0 && stride >= n && (k == 0 || data.len() >= (k - 1) * stride + n)
        }
    };
    let a_reach = m.div_ceil(mr) * mr;
    assert!(
        b_ok && a.depth == k
            && a.stride >= a_reach
            && (k == 0 || a.data.len() >= (k - 1) * a.stride + a_reach)
            && (m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n),
        "gemm_transposed_a: A {m}x{} (stride {}, {} values), B {k}x{n}, C {} values (ldc {ldc})",
        a.depth,
        a.stride,
        a.data.len(),
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    let mc = (MC / mr).max(1) * mr;
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        for block0 in (0..m).step_by(mc) {
            let rows = mc.min(m - block0);
            let mut col0 = 0;
            while col0 < n {
                let (b_panel, b_step, width) = b.panel(col0, p0, nr);
                for i0 in (block0..block0 + rows).step_by(mr) {
                    let args = TileArgs {
                        kc,
                        a: a.data[p0 * a.stride + i0..].as_ptr(),
                        a_step: a.stride,
                        b: b_panel.as_ptr(),
                        b_step,
                        c: c[i0 * ldc + col0..].as_mut_ptr(),
                        ldc,
                        rows: mr.min(m - i0),
                        cols: width.min(n - col0),
                        accumulate: p0 > 0,
                    };
                    // SAFETY: the tile reads a[(p0 + p) * stride + i0 + i] for p < kc,
                    // i < mr: at most (k - 1) * stride + a_reach - 1 < data.len() (checked
                    // above); B panels as in `gemm`, or rows p0 + p < k of a row-major B
                    // at columns col0 + j < n (n a multiple of nr); it writes rows
                    // i0.. < m of C up to column col0 + cols <= n, inside
                    // c.len() >= (m - 1) * ldc + n.
                    unsafe { kernels.tile(width, &args) };
                }
                col0 += width;
            }
        }
    }
}

/// Packs rows `row0..row0 + rows`, columns `p0..p0 + kc` of `a` into panels of `mr`
/// rows, `kc x mr` each (`out[panel][p][i]`), padding missing rows with zeros.
fn pack_a(
    a: MatRef<'_>,
    row0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    out: &mut [f32],
) {
    for (panel, dst) in out
        .chunks_exact_mut(mr * kc)
        .take(rows.div_ceil(mr))
        .enumerate()
    {
        let first = panel * mr;
        let present = mr.min(rows - first);
        let base = (row0 + first) * a.stride + p0;
        // Row by row of the panel (consecutive writes), reading `present` rows of A.
        for (p, out) in dst.chunks_exact_mut(mr).enumerate() {
            for (i, d) in out[..present].iter_mut().enumerate() {
                *d = a.data[base + i * a.stride + p];
            }
            out[present..].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemma_kernels::cpu::isa::Isa;
    use std::convert::Infallible;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every ISA against a float64 triple loop, over shapes that exercise row tails
    /// (m not a multiple of MR), half and full column panels, k beyond one KC pass,
    /// a strided A and a C wider than n, for both packings.
    #[test]
    fn gemm_matches_f64_reference_on_every_isa() {
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (13, 40, 17),
            (250, 300, 33),
            (37, 9, 600),
            (241, 64, 520),
        ];
        for isa in Isa::available() {
            let kernels = Kernels::for_isa(isa).expect("available ISA");
            for &(m, k, n) in &shapes {
                let (lda, ldc) = (k + 3, n + 5);
                let a = values(m * lda, 1 + m as u64);
                let w = values(n * k, 2 + k as u64); // n rows of k: B = w^T
                let mut expected = vec![0f64; m * n];
                for i in 0..m {
                    for j in 0..n {
                        expected[i * n + j] = (0..k)
                            .map(|p| f64::from(a[i * lda + p]) * f64::from(w[j * k + p]))
                            .sum();
                    }
                }
                let a_ref = MatRef {
                    data: &a,
                    rows: m,
                    cols: k,
                    stride: lda,
                };
                let mut by_rows = PackedB::new();
                let Ok(()) = by_rows.pack_rows(k, n, kernels.nr, |j, dst| {
                    dst.copy_from_slice(&w[j * k..][..k]);
                    Ok::<(), Infallible>(())
                });
                let mut by_k_rows = PackedB::new();
                let Ok(()) = by_k_rows.pack_k_rows(k, n, kernels.nr, |p, dst| {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = w[j * k + p];
                    }
                    Ok::<(), Infallible>(())
                });
                for (packing, b) in [("rows", &by_rows), ("k rows", &by_k_rows)] {
                    let mut c = vec![f32::NAN; m * ldc];
                    gemm(&kernels, a_ref, b, &mut c, ldc);
                    for i in 0..m {
                        for j in 0..n {
                            let (got, want) = (f64::from(c[i * ldc + j]), expected[i * n + j]);
                            let tol = 1e-5 * (k as f64).sqrt() * (1.0 + want.abs());
                            assert!(
                                (got - want).abs() <= tol,
                                "{isa:?} {packing} m{m} k{k} n{n} at ({i},{j}): {got} vs {want}"
                            );
                        }
                        // Columns beyond n are never written.
                        assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()));
                    }
                }
            }
        }
    }

    /// `gemm_transposed_a` on every ISA against a float64 triple loop: A read in place
    /// from its transpose (rows not a multiple of MR, reading into the padding), B packed
    /// or row-major in place, k beyond one KC pass, a C wider than n.
    #[test]
    fn gemm_transposed_a_matches_f64_reference_on_every_isa() {
        for isa in Isa::available() {
            let kernels = Kernels::for_isa(isa).expect("available ISA");
            for &(m, k, n) in &[
                (1usize, 1usize, 32usize),
                (5, 7, 64),
                (37, 300, 32),
                (250, 72, 96),
            ] {
                let a_stride = m.div_ceil(kernels.mr) * kernels.mr + 3;
                let at = values(k * a_stride, 3 + m as u64); // at[p * a_stride + i] = A[i, p]
                let (b_stride, ldc) = (n + 5, n + 2);
                let b = values(k * b_stride, 4 + k as u64); // b[p * b_stride + j] = B[p, j]
                let mut expected = vec![0f64; m * n];
                for i in 0..m {
                    for j in 0..n {
                        expected[i * n + j] = (0..k)
                            .map(|p| {
                                f64::from(at[p * a_stride + i]) * f64::from(b[p * b_stride + j])
                            })
                            .sum();
                    }
                }
                let a = TransposedRef {
                    data: &at,
                    rows: m,
                    depth: k,
                    stride: a_stride,
                };
                let mut packed = PackedB::new();
                let Ok(()) = packed.pack_k_rows(k, n, kernels.nr, |p, dst| {
                    dst.copy_from_slice(&b[p * b_stride..][..n]);
                    Ok::<(), Infallible>(())
                });
                let row_major = BRef::RowMajor {
                    data: &b,
                    k,
                    n,
                    stride: b_stride,
                };
                for (name, b) in [("packed", BRef::Packed(&packed)), ("row-major", row_major)] {
                    let mut c = vec![f32::NAN; m * ldc];
                    gemm_transposed_a(&kernels, a, b, &mut c, ldc);
                    for i in 0..m {
                        for j in 0..n {
                            let (got, want) = (f64::from(c[i * ldc + j]), expected[i * n + j]);
                            let tol = 1e-5 * (k as f64).sqrt() * (1.0 + want.abs());
                            assert!(
                                (got - want).abs() <= tol,
                                "{isa:?} {name} m{m} k{k} n{n} at ({i},{j}): {got} vs {want}"
                            );
                        }
                        assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()));
                    }
                }
            }
        }
    }
}
