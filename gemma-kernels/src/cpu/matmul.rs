//! Quantized matrix products: `y = W · x` for one token (decode, matrix-vector) or a
//! batch of tokens (prefill, matrix-matrix), with `W` left in its GGUF blocks.
//!
//! The activations are quantized once per call into the weight type's activation format
//! (`QuantBlock::Act`, e.g. Q8_K for Q4_K), exactly as ggml's CPU backend does, then
//! every output is an integer dot product of a weight row with an activation row.
//! Rows are split over the current rayon pool in contiguous chunks, so each thread
//! streams its own part of the weights. For several tokens, each chunk of rows is
//! multiplied with a tile of tokens while the rows are in cache, so the weights come
//! from memory once per call rather than once per token: with the sixteen-row GEMM
//! kernels of `gemm` (AVX-512 VNNI, else AVX2; Q2_K to Q6_K, IQ4_XS, Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, IQ4_NL, F32, F16, BF16), else with the four-token kernels of `tiles`, else
//! one token at a time.

use crate::cpu::isa;
use crate::quant::{self, BlockVisitor, QuantBlock, VecDot};
use crate::KernelError;
use gemma_gguf::GgmlType;
use rayon::prelude::*;

mod arranged;
mod gemm;
mod tiles;

/// Output rows per parallel task for one token: a multiple of 16 so that two tasks
/// never write the same 64-byte cache line of `y`, and small enough to balance threads.
const DECODE_ROWS_PER_TASK: usize = 64;

/// Rows per parallel task for several tokens: their weights (a few tens of KiB) stay
/// in L2 while every token tile passes over them.
const PREFILL_ROWS_PER_TASK: usize = 16;

/// Tokens whose activations are multiplied with a weight row while it is in L1.
const TOKEN_TILE: usize = 8;

/// A weight matrix as stored in a GGUF file: `rows` rows of `cols` values of type `ty`,
/// each row a whole number of blocks, borrowed without copying.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    /// The ggml type of the blocks.
    pub ty: GgmlType,
    /// The raw ggml bytes, `rows * row_bytes` long.
    pub data: &'a [u8],
    /// Number of output rows (ggml `ne1`).
    pub rows: usize,
    /// Values per row, the input dimension (ggml `ne0`).
    pub cols: usize,
}

impl<'a> WeightMatrix<'a> {
    /// Checks that `cols` is a whole number of blocks of `ty` and that `data` holds
    /// exactly `rows` such rows.
    pub fn new(
        ty: GgmlType,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        let w = WeightMatrix {
            ty,
            data,
            rows,
            cols,
        };
        w.check_shape()?;
        Ok(w)
    }

    /// Bytes per row (`cols / block_elems * block_bytes`).
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elems().max(1) * self.ty.block_bytes()
    }

    fn check_shape(&self) -> Result<(), KernelError> {
        let block = self.ty.block_elems().max(1);
        if !self.cols.is_multiple_of(block) {
            return Err(KernelError::PartialBlock {
                ty: self.ty,
                len: self.cols,
                unit: "elements",
                block,
            });
        }
        let expected = self
            .rows
            .checked_mul(self.row_bytes())
            .ok_or(KernelError::Length {
                what: "weight matrix bytes (rows * row_bytes overflows)",
                expected: usize::MAX,
                found: self.data.len(),
            })?;
        if self.data.len() != expected {
            return Err(KernelError::Length {
                what: "weight matrix bytes (rows * row_bytes)",
                expected,
                found: self.data.len(),
            });
        }
        Ok(())
    }
}

/// Reusable buffers for the quantized activations, so that repeated products of the
/// same or smaller size allocate nothing. Create one per thread of work with
/// `MatmulScratch::default()` and pass it to every [`matmul`].
#[derive(Debug, Default)]
pub struct MatmulScratch {
    /// Activation blocks of any format, as 8-byte words (every block type's alignment
    /// divides 8).
    act: Vec<u64>,
    /// Per-activation-block values of the sixteen-row GEMM kernels (sums, scales).
    extra: Vec<i32>,
    /// Activations rearranged for the one-token kernels of `arranged`.
    arranged: arranged::ArrangedScratch,
}

/// The first `n` activation blocks of format `A` in `buf`, growing it if needed.
fn act_blocks<A: QuantBlock>(buf: &mut Vec<u64>, n: usize) -> Result<&mut [A], KernelError> {
    let bytes = n * std::mem::size_of::<A>();
    let words = bytes.div_ceil(8);
    if buf.len() < words {
        buf.resize(words, 0);
    }
    let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut buf[..words]);
    bytemuck::try_cast_slice_mut(&mut raw[..bytes]).map_err(|_| KernelError::Length {
        what: "activation scratch alignment",
        expected: std::mem::align_of::<A>(),
        found: 8,
    })
}

/// `y[t * rows + r] = dot(W row r, x row t)` for `t in 0..n`; `x` is `n × cols`
/// row-major, `y` is `n × rows`.
///
/// The activations are quantized to the weight type's activation format once; the
/// dot products use the best SIMD kernel of [`isa::current`] (the scalar one otherwise)
/// and run in the current rayon pool (set the thread count with `ThreadPool::install`).
pub fn matmul(
    w: &WeightMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), KernelError> {
    w.check_shape()?;
    check_len("matmul input x (n * cols)", n.checked_mul(w.cols), x.len())?;
    check_len("matmul output y (n * rows)", n.checked_mul(w.rows), y.len())?;
    if n == 0 || w.rows == 0 {
        return Ok(());
    }
    if w.cols == 0 {
        y.fill(0.0);
        return Ok(());
    }
    quant::visit(
        w.ty,
        Matmul {
            w,
            x,
            n,
            y,
            scratch,
        },
    )?
}

fn check_len(what: &'static str, expected: Option<usize>, found: usize) -> Result<(), KernelError> {
    match expected {
        Some(e) if e == found => Ok(()),
        _ => Err(KernelError::Length {
            what,
            expected: expected.unwrap_or(usize::MAX),
            found,
        }),
    }
}

/// The arguments of [`matmul`], carried to the block format chosen at run time.
struct Matmul<'m, 'a> {
    w: &'m WeightMatrix<'a>,
    x: &'m [f32],
    n: usize,
    y: &'m mut [f32],
    scratch: &'m mut MatmulScratch,
}

impl BlockVisitor for Matmul<'_, '_> {
    type Output = Result<(), KernelError>;

    fn visit<B: QuantBlock>(self) -> Self::Output {
        let Matmul {
            w,
            x,
            n,
            y,
            scratch,
        } = self;
        let weights: &[B] = bytemuck::try_cast_slice(w.data).map_err(|_| KernelError::Length {
            what: "weight data address modulo the block alignment",
            expected: 0,
            found: w.data.as_ptr() as usize % std::mem::align_of::<B>(),
        })?;
        let blocks_per_row = w.cols / B::ELEMS;
        let act = act_blocks::<B::Act>(&mut scratch.act, n * blocks_per_row)?;
        quantize_rows::<B::Act>(x, w.cols, act, blocks_per_row);
        let act: &[B::Act] = act;
        let dot: VecDot<B> = B::vec_dot_for(isa::current()).unwrap_or(B::vec_dot);
        let rows = Rows {
            weights,
            blocks_per_row,
            dot,
            dot4: None,
            scaled4: None,
        };
        if n == 1 {
            if !arranged::matvec_with_arranged_kernel(&rows, act, y, &mut scratch.arranged) {
                rows.matvec(act, y);
            }
        } else if !gemm::matmat_with_gemm_kernel(&rows, act, n, y, &mut scratch.extra)
            && !tiles::matmat_with_tile_kernel(&rows, act, n, y)
        {
            rows.matmat(act, n, y);
        }
        Ok(())
    }
}

/// Quantizes each `cols`-long row of `x` into its `blocks_per_row` activation blocks.
fn quantize_rows<A: QuantBlock>(x: &[f32], cols: usize, act: &mut [A], blocks_per_row: usize) {
    if x.len() == cols {
        A::quantize_act(x, act);
        return;
    }
    x.par_chunks(cols)
        .zip(act.par_chunks_mut(blocks_per_row))
        .for_each(|(row, blocks)| A::quantize_act(row, blocks));
}

/// The weight rows of one matrix with the dot products chosen for them.
struct Rows<'a, B: QuantBlock> {
    weights: &'a [B],
    blocks_per_row: usize,
    /// One row times one token.
    dot: VecDot<B>,
    /// One row times [`tiles::TILE_TOKENS`] tokens, where this format and CPU have one.
    dot4: Option<tiles::Dot4<B>>,
    /// Or such a kernel that takes the activation block scales as f32, with those scales
    /// (one per activation block, in the order of the activation blocks).
    scaled4: Option<(tiles::ScaledDot4<B>, &'a [f32])>,
}

impl<B: QuantBlock> Rows<'_, B> {
    fn row(&self, r: usize) -> &[B] {
        &self.weights[r * self.blocks_per_row..(r + 1) * self.blocks_per_row]
    }

    /// One token: contiguous chunks of rows per task, each writing its own part of `y`.
    fn matvec(&self, act: &[B::Act], y: &mut [f32]) {
        y.par_chunks_mut(DECODE_ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, ys)| {
                let first = chunk * DECODE_ROWS_PER_TASK;
                for (i, out) in ys.iter_mut().enumerate() {
                    *out = (self.dot)(self.row(first + i), act);
                }
            });
    }

    /// Several tokens: a task per chunk of rows; inside it, tiles of tokens pass over
    /// the chunk, each row multiplied with the whole tile while it is in L1.
    fn matmat(&self, act: &[B::Act], n: usize, y: &mut [f32]) {
        let rows = y.len() / n;
        let out = SharedOut(y.as_mut_ptr());
        let n_tasks = rows.div_ceil(PREFILL_ROWS_PER_TASK);
        (0..n_tasks).into_par_iter().for_each(|task| {
            let first = task * PREFILL_ROWS_PER_TASK;
            let last = (first + PREFILL_ROWS_PER_TASK).min(rows);
            let mut tile = [0.0f32; TOKEN_TILE * PREFILL_ROWS_PER_TASK];
            for t0 in (0..n).step_by(TOKEN_TILE) {
                let tokens = TOKEN_TILE.min(n - t0);
                for r in first..last {
                    let row = self.row(r);
                    let out = &mut tile[r - first..];
                    self.row_times_tokens(row, act, t0, tokens, out);
                }
                for t in 0..tokens {
                    let src = &tile
                        [t * PREFILL_ROWS_PER_TASK..t * PREFILL_ROWS_PER_TASK + (last - first)];
                    // SAFETY: `(t0 + t) * rows + first .. + (last - first)` lies inside `y`
                    // (t0 + t < n, last <= rows, y.len() == n * rows), and only this task
                    // writes rows `first..last`, so no two tasks touch the same element.
                    unsafe { out.write((t0 + t) * rows + first, src) };
                }
            }
        });
    }

    /// `out[t * PREFILL_ROWS_PER_TASK] = dot(row, token t0 + t)` for `t in 0..tokens`,
    /// four at a time where a four-token kernel exists.
    fn row_times_tokens(
        &self,
        row: &[B],
        act: &[B::Act],
        t0: usize,
        tokens: usize,
        out: &mut [f32],
    ) {
        let bpr = self.blocks_per_row;
        let token = |t: usize| &act[(t0 + t) * bpr..(t0 + t + 1) * bpr];
        let mut t = 0;
        if let Some(dot4) = self.dot4 {
            while t + tiles::TILE_TOKENS <= tokens {
                let ys = dot4(row, [token(t), token(t + 1), token(t + 2), token(t + 3)]);
                for (k, y) in ys.into_iter().enumerate() {
                    out[(t + k) * PREFILL_ROWS_PER_TASK] = y;
                }
                t += tiles::TILE_TOKENS;
            }
        } else if let Some((dot4, scales)) = self.scaled4 {
            let scale = |t: usize| &scales[(t0 + t) * bpr..(t0 + t + 1) * bpr];
            while t + tiles::TILE_TOKENS <= tokens {
                let x = [token(t), token(t + 1), token(t + 2), token(t + 3)];
                let s = [scale(t), scale(t + 1), scale(t + 2), scale(t + 3)];
                for (k, y) in dot4(row, x, s).into_iter().enumerate() {
                    out[(t + k) * PREFILL_ROWS_PER_TASK] = y;
                }
                t += tiles::TILE_TOKENS;
            }
        }
        for t in t..tokens {
            out[t * PREFILL_ROWS_PER_TASK] = (self.dot)(row, token(t));
        }
    }
}

/// The output buffer of [`Rows::matmat`], shared by tasks that write disjoint parts.
struct SharedOut(*mut f32);

// SAFETY: tasks only write disjoint ranges through the pointer (see `Rows::matmat`),
// and the buffer outlives the parallel loop that uses it.
unsafe impl Send for SharedOut {}
// SAFETY: as above; no element is read or written by two tasks.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The start of the buffer (for the sixteen-row kernels, x86-64 only).
    #[cfg(target_arch = "x86_64")]
    fn ptr(&self) -> *mut f32 {
        self.0
    }

    /// Copies `src` to `offset..offset + src.len()` of the buffer.
    ///
    /// # Safety
    /// The range must lie inside the buffer and no other thread may access it meanwhile.
    unsafe fn write(&self, offset: usize, src: &[f32]) {
        // SAFETY: guaranteed by the caller.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(offset), src.len()) };
    }
}
