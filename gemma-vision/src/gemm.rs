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
                            b: b_panel.as_ptr(),
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
        for i in 0..mr {
            let r = panel * mr + i;
            if r < rows {
                let src = &a.data[(row0 + r) * a.stride + p0..][..kc];
                for (p, v) in src.iter().enumerate() {
                    dst[p * mr + i] = *v;
                }
            } else {
                for p in 0..kc {
                    dst[p * mr + i] = 0.0;
                }
            }
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
}
