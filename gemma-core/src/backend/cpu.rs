//! The CPU backend: host buffers, the memory-mapped weights read in place, the kernels of
//! `gemma_kernels::cpu` (run in the rayon pool the session installs).

mod attention;
mod attention_flash;
mod attention_step;
mod attention_tiles;
mod f16_accumulator;
mod kv_store;

pub use kv_store::CpuKvStore;

use super::{AttentionJob, AttentionNumerics, Backend, KvShape};
use crate::attention::SlotMap;
use crate::config::Rope;
use crate::weights::{Norm, Weight};
use crate::CoreError;
use gemma_kernels::cpu::matmul::{matmul, MatmulScratch, WeightMatrix};
use gemma_kernels::cpu::ops;
use gemma_kernels::quant;
use rayon::prelude::*;
use std::ops::Range;

/// One-token products of one input run side by side: each with its own rayon task, so
/// that the threads share all of their rows.
fn run_together(
    mut jobs: Vec<(WeightMatrix<'_>, &mut [f32], &mut MatmulScratch)>,
    x: &[f32],
) -> Result<(), CoreError> {
    let Some((m, y, scratch)) = jobs.pop() else {
        return Ok(());
    };
    let (rest, last) = rayon::join(|| run_together(jobs, x), || matmul(&m, x, 1, y, scratch));
    rest?;
    Ok(last?)
}

/// Rows per parallel task of the row-wise ops (norms, RoPE).
const ROWS_PER_TASK: usize = 16;

/// Runs the model with the CPU kernels on the bytes of the model file.
#[derive(Debug)]
pub struct CpuBackend<'m> {
    /// The whole GGUF file (weights are ranges of it).
    file: &'m [u8],
    /// Activation-quantization buffers of the matmuls.
    scratch: MatmulScratch,
    /// Buffers of the tiled (prefill) attention.
    tiles: attention_tiles::TileScratch,
    /// Value rows of the flash attention's one-chunk kernel.
    value_rows: attention_flash::ValueRows,
    /// Buffers of the one-row steps.
    step: attention_step::StepScratch,
    /// Activation buffers of the second and later products of [`Backend::matmul_many`].
    more_scratch: Vec<MatmulScratch>,
    /// Round attention as llama.cpp's flash attention does (see [`AttentionNumerics`]).
    flash_attention: bool,
}

impl<'m> CpuBackend<'m> {
    /// A backend reading weights from `file`, the bytes of the GGUF file, with
    /// llama.cpp's flash-attention numerics (its default; see [`Self::flash_attention`]).
    pub fn new(file: &'m [u8]) -> CpuBackend<'m> {
        CpuBackend {
            file,
            scratch: MatmulScratch::default(),
            tiles: attention_tiles::TileScratch::default(),
            value_rows: attention_flash::ValueRows::default(),
            step: attention_step::StepScratch::default(),
            more_scratch: Vec::new(),
            flash_attention: true,
        }
    }

    /// Rounds attention as llama.cpp with flash attention on (`true`) or off (`false`).
    pub fn flash_attention(mut self, on: bool) -> CpuBackend<'m> {
        self.flash_attention = on;
        self
    }

    fn matrix(&self, w: &Weight) -> Result<WeightMatrix<'m>, CoreError> {
        Ok(WeightMatrix::new(
            w.ty,
            self.bytes(&w.name, &w.bytes)?,
            w.rows,
            w.cols,
        )?)
    }

    fn norm(&self, n: &Norm) -> Result<&'m [f32], CoreError> {
        bytemuck::try_cast_slice(self.bytes(&n.name, &n.bytes)?).map_err(|_| {
            CoreError::MisalignedTensor {
                name: n.name.clone(),
            }
        })
    }

    fn bytes(&self, name: &str, range: &Range<usize>) -> Result<&'m [u8], CoreError> {
        self.file
            .get(range.clone())
            .ok_or_else(|| CoreError::MissingTensor {
                name: name.to_owned(),
            })
    }
}

impl Backend for CpuBackend<'_> {
    type Buffer = Vec<f32>;
    type KvStore = CpuKvStore;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn alloc(&mut self, len: usize) -> Result<Vec<f32>, CoreError> {
        bytemuck::allocation::try_zeroed_vec(len).map_err(|_| CoreError::OutOfMemory {
            what: "activation buffers",
            bytes: (len as u64).saturating_mul(4),
        })
    }

    fn alloc_kv(&mut self, shape: KvShape) -> Result<CpuKvStore, CoreError> {
        CpuKvStore::new(shape)
    }

    fn embed(
        &mut self,
        table: &Weight,
        tokens: &[u32],
        scale: f32,
        out: &mut Vec<f32>,
    ) -> Result<(), CoreError> {
        let data = self.bytes(&table.name, &table.bytes)?;
        let row_bytes = data.len() / table.rows;
        let cols = table.cols;
        for (&token, row) in tokens.iter().zip(out.chunks_exact_mut(cols)) {
            let t = token as usize;
            if t >= table.rows {
                return Err(CoreError::TokenOutOfRange {
                    token,
                    n_vocab: table.rows,
                });
            }
            quant::dequantize(table.ty, &data[t * row_bytes..(t + 1) * row_bytes], row)?;
            ops::scale(row, scale);
        }
        Ok(())
    }

    fn matmul(
        &mut self,
        w: &Weight,
        x: &Vec<f32>,
        n: usize,
        y: &mut Vec<f32>,
    ) -> Result<(), CoreError> {
        let m = self.matrix(w)?;
        Ok(matmul(
            &m,
            &x[..n * w.cols],
            n,
            &mut y[..n * w.rows],
            &mut self.scratch,
        )?)
    }

    fn matmul_many(
        &mut self,
        ws: &[&Weight],
        x: &Vec<f32>,
        n: usize,
        ys: &mut [&mut Vec<f32>],
    ) -> Result<(), CoreError> {
        if n != 1 || ws.len() < 2 {
            for (w, y) in ws.iter().zip(ys.iter_mut()) {
                self.matmul(w, x, n, y)?;
            }
            return Ok(());
        }
        let products = ws
            .iter()
            .zip(ys.iter_mut())
            .map(|(w, y)| Ok((self.matrix(w)?, &mut y[..w.rows])))
            .collect::<Result<Vec<_>, CoreError>>()?;
        self.more_scratch
            .resize_with(ws.len() - 1, MatmulScratch::default);
        let scratches = std::iter::once(&mut self.scratch).chain(self.more_scratch.iter_mut());
        let jobs: Vec<_> = products
            .into_iter()
            .zip(scratches)
            .map(|((m, y), scratch)| (m, y, scratch))
            .collect();
        run_together(jobs, &x[..ws[0].cols])
    }

    fn rms_norm(
        &mut self,
        x: &Vec<f32>,
        first: usize,
        rows: usize,
        w: &Norm,
        eps: f32,
        out: &mut Vec<f32>,
    ) -> Result<(), CoreError> {
        let w = self.norm(w)?;
        let len = w.len();
        out[..rows * len]
            .par_chunks_mut(len * ROWS_PER_TASK)
            .zip(x[first * len..(first + rows) * len].par_chunks(len * ROWS_PER_TASK))
            .for_each(|(out, x)| {
                for (o, x) in out.chunks_exact_mut(len).zip(x.chunks_exact(len)) {
                    ops::rms_norm(x, w, eps, o);
                }
            });
        Ok(())
    }

    fn rms_norm_inplace(
        &mut self,
        x: &mut Vec<f32>,
        rows: usize,
        w: &Norm,
        eps: f32,
    ) -> Result<(), CoreError> {
        let w = self.norm(w)?;
        let len = w.len();
        x[..rows * len]
            .par_chunks_mut(len * ROWS_PER_TASK)
            .for_each(|x| {
                for row in x.chunks_exact_mut(len) {
                    ops::rms_norm_inplace(row, w, eps);
                }
            });
        Ok(())
    }

    fn rope(
        &mut self,
        x: &mut Vec<f32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: Rope,
    ) -> Result<(), CoreError> {
        let width = n_heads * head_dim;
        x[..n_tokens * width]
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(t, row)| {
                ops::rope_neox(
                    row,
                    n_heads,
                    head_dim,
                    pos0 + t,
                    rope.freq_base,
                    rope.freq_scale,
                );
            });
        Ok(())
    }

    fn scale(&mut self, x: &mut Vec<f32>, len: usize, s: f32) -> Result<(), CoreError> {
        ops::scale(&mut x[..len], s);
        Ok(())
    }

    fn geglu(&mut self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) -> Result<(), CoreError> {
        const CHUNK: usize = 4096;
        gate[..len]
            .par_chunks_mut(CHUNK)
            .zip(up[..len].par_chunks(CHUNK))
            .for_each(|(g, u)| ops::geglu_f16_inplace(g, u));
        Ok(())
    }

    fn add(&mut self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<(), CoreError> {
        ops::add(&mut x[..len], &y[..len]);
        Ok(())
    }

    fn store_kv(
        &mut self,
        store: &mut CpuKvStore,
        k: &Vec<f32>,
        v: &Vec<f32>,
        rows: Range<usize>,
        pos0: usize,
        slot_map: SlotMap,
    ) -> Result<(), CoreError> {
        let heads = store.shape.heads;
        let (k_width, v_width) = (
            heads.n_head_kv * heads.head_dim_k,
            heads.n_head_kv * heads.head_dim_v,
        );
        for t in rows {
            let slot = slot_map.slot(pos0 + t);
            store.write(
                slot,
                &k[t * k_width..(t + 1) * k_width],
                &v[t * v_width..(t + 1) * v_width],
            );
        }
        Ok(())
    }

    fn attention(
        &mut self,
        q: &Vec<f32>,
        store: &CpuKvStore,
        job: &AttentionJob,
        out: &mut Vec<f32>,
    ) -> Result<(), CoreError> {
        let numerics =
            AttentionNumerics::for_batch(self.flash_attention, job.batch_rows, store.shape.kv_type);
        let widened = numerics == AttentionNumerics::FlashTiled;
        if numerics == AttentionNumerics::FlashChunked && attention_step::applies(job) {
            attention_step::attention(q, store, job, out, &mut self.step);
            Ok(())
        } else if numerics == AttentionNumerics::FlashChunked {
            attention_flash::attention(q, store, job, out, &mut self.value_rows);
            Ok(())
        } else if attention_tiles::applies(job) {
            attention_tiles::attention(q, store, job, widened, out, &mut self.tiles)
        } else {
            attention::attention(q, store, job, widened, out);
            Ok(())
        }
    }

    fn copy_rows(
        &mut self,
        buf: &mut Vec<f32>,
        from: usize,
        rows: usize,
        width: usize,
    ) -> Result<bool, CoreError> {
        buf.copy_within(from * width..(from + rows) * width, 0);
        Ok(true)
    }

    fn supports_images(&self) -> bool {
        true
    }

    fn load_rows(&mut self, rows: &[f32], out: &mut Vec<f32>) -> Result<(), CoreError> {
        // The engine checks that the rows fit a batch, the size of `out`.
        out[..rows.len()].copy_from_slice(rows);
        Ok(())
    }

    fn read(
        &mut self,
        buf: &Vec<f32>,
        range: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), CoreError> {
        out.copy_from_slice(&buf[range]);
        Ok(())
    }

    fn argmax(&mut self, buf: &Vec<f32>, len: usize) -> Result<u32, CoreError> {
        Ok(crate::sampling::argmax(&buf[..len]))
    }
}

#[cfg(test)]
mod tests {
    //! One-token products run together ([`Backend::matmul_many`]) against the same
    //! products one at a time, bit for bit, on the weights of the tiny fixtures.

    use super::*;
    use crate::tiny_fixtures::tiny_fixtures;
    use crate::{Model, ModelOptions};
    use std::error::Error;

    #[test]
    fn products_run_together_equal_products_one_at_a_time() -> Result<(), Box<dyn Error>> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
        for variant in ["q4_k_m", "q4_0", "q8_0", "f16", "iq4_xs"] {
            let path = tiny_fixtures().join(format!("tiny-gemma3-t1-{variant}.gguf"));
            let model = Model::load(path, ModelOptions::default())?;
            let mut b = CpuBackend::new(model.gguf().bytes());
            for layer in &model.weights().layers {
                let sets: [&[&Weight]; 2] = [
                    &[&layer.wq, &layer.wk, &layer.wv],
                    &[&layer.ffn_gate, &layer.ffn_up],
                ];
                for ws in sets {
                    let x: Vec<f32> = (0..ws[0].cols)
                        .map(|i| ((i * 7919) % 113) as f32 / 37.0 - 1.5)
                        .collect();
                    let mut alone: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.0; w.rows]).collect();
                    let mut together = alone.clone();
                    pool.install(|| -> Result<(), CoreError> {
                        for (w, y) in ws.iter().zip(alone.iter_mut()) {
                            b.matmul(w, &x, 1, y)?;
                        }
                        let mut ys: Vec<&mut Vec<f32>> = together.iter_mut().collect();
                        b.matmul_many(ws, &x, 1, &mut ys)
                    })?;
                    assert_eq!(alone, together, "{variant}: {}", ws[0].name);
                    assert!(
                        alone.iter().flatten().any(|&v| v != 0.0),
                        "{variant}: all zero"
                    );
                }
            }
        }
        Ok(())
    }
}
