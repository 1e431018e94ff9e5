//! The backend's matrix products: activations quantized once per input and format (the
//! CPU backend's activation blocks for the weight type) and shared by the products that
//! read them, one-token products of several matrices in one launch, tensor cores above
//! `MMVQ_MAX_TOKENS` tokens, float weights on f32 activations.

use super::{core_err, device_addr, tag, CudaBackend};
use crate::weights::Weight;
use crate::CoreError;
use gemma_gguf::GgmlType;
use gemma_kernels::cuda::{self, launch, ActFormat, CudaSlice, DeviceMatrix, Q8Activations};

impl CudaBackend<'_> {
    /// The q8_1 buffer, large enough for n rows of k values.
    pub(super) fn q8(&mut self, k: usize, n: usize) -> Result<&mut Q8Activations, CoreError> {
        let big_enough = self
            .q8
            .as_ref()
            .is_some_and(|q| q.capacity() >= cuda::padded_len(k) * n);
        if !big_enough {
            self.q8 = Some(Q8Activations::new(&self.dev, k, n).map_err(core_err)?);
        }
        self.q8.as_mut().ok_or(CoreError::EmptyInput)
    }

    /// [`crate::backend::Backend::matmul`].
    pub(super) fn product(
        &mut self,
        w: &Weight,
        x: &CudaSlice<f32>,
        n: usize,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let _span = self.span(if n <= launch::MMVQ_MAX_TOKENS {
            "matmul (mmvq)"
        } else {
            "matmul (mmq)"
        });
        let args = [
            w.bytes.start as u64,
            device_addr(&self.dev, x),
            n as u64,
            device_addr(&self.dev, y),
        ];
        if self.replaying(tag::MATMUL, &args) {
            return Ok(());
        }
        self.upload_matrix(w)?;
        if !launch::uses_q8_activations(w.ty) {
            self.q8_of = None;
            let m = &self.matrices[&w.bytes.start];
            return launch::matmul_float(&self.dev, m, x, n, y).map_err(core_err);
        }
        let format = ActFormat::for_weights(w.ty);
        let key = (device_addr(&self.dev, x), n, w.cols, format);
        self.act_format_of.insert(key.0, format);
        if n > 1 && self.q8_of == Some((key.0, 1, n * w.cols, format)) {
            // Quantized as one row by geglu: the same bytes as n rows when cols % 256 == 0.
            let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
            if q8.split_rows(n, w.cols).is_ok() {
                self.q8_of = Some(key);
            }
        }
        if self.q8_of != Some(key) {
            self.q8(w.cols, n)?;
            let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
            launch::quantize_q8_1(&self.dev, x, n, w.cols, format, q8).map_err(core_err)?;
            self.q8_of = Some(key);
        }
        let (dev, m) = (&self.dev, &self.matrices[&w.bytes.start]);
        let q8 = self.q8.as_ref().ok_or(CoreError::EmptyInput)?;
        launch::matmul_q8(dev, m, q8, n, y).map_err(core_err)?;
        if device_addr(&self.dev, y) == key.0 {
            self.q8_of = None;
        }
        Ok(())
    }

    /// [`crate::backend::Backend::matmul_many`].
    pub(super) fn products(
        &mut self,
        ws: &[&Weight],
        x: &CudaSlice<f32>,
        n: usize,
        ys: &mut [&mut CudaSlice<f32>],
    ) -> Result<(), CoreError> {
        // One token: 2 or 3 consecutive weights of one row length that one kernel takes
        // (`launch::multi_kernel`: one quantized type, Q4_K / Q5_K twice then Q6_K, or Q5_0
        // twice then Q8_0) run in
        // one launch (each call notes its own step signature and profile span, as matmul does).
        let mut i = 0;
        while i < ws.len().min(ys.len()) {
            let (w0, ty) = (ws[i], ws[i].ty);
            let end = ys.len().min(ws.len());
            let run = (2..=3.min(end - i))
                .rev()
                .find(|&r| {
                    let group = &ws[i..i + r];
                    let types: Vec<GgmlType> = group.iter().map(|w| w.ty).collect();
                    group.iter().all(|w| w.cols == w0.cols)
                        && types.iter().all(|&t| cuda::is_supported(t))
                        && launch::multi_kernel(&types).is_some()
                })
                .unwrap_or(1);
            if n != 1 || run < 2 || !launch::uses_q8_activations(ty) || !cuda::is_supported(ty) {
                self.product(w0, x, n, ys[i])?;
                i += 1;
                continue;
            }
            let group = &ws[i..i + run];
            let mut args = vec![device_addr(&self.dev, x), w0.cols as u64];
            for (w, y) in group.iter().zip(ys[i..i + run].iter()) {
                args.extend([w.bytes.start as u64, device_addr(&self.dev, y)]);
            }
            let _span = self.span("matmul, 2-3 in one (mmvq)");
            if !self.replaying(tag::MATMUL_MULTI, &args) {
                for w in group {
                    self.upload_matrix(w)?;
                }
                let format = ActFormat::for_weights(ty);
                let key = (device_addr(&self.dev, x), 1, w0.cols, format);
                self.act_format_of.insert(key.0, format);
                if self.q8_of != Some(key) {
                    self.q8(w0.cols, 1)?;
                    let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
                    launch::quantize_q8_1(&self.dev, x, 1, w0.cols, format, q8)
                        .map_err(core_err)?;
                    self.q8_of = Some(key);
                }
                let mats: Vec<&DeviceMatrix> = group
                    .iter()
                    .map(|w| &self.matrices[&w.bytes.start])
                    .collect();
                let q8 = self.q8.as_ref().ok_or(CoreError::EmptyInput)?;
                launch::matvec_q8_multi(&self.dev, &mats, q8, &mut ys[i..i + run])
                    .map_err(core_err)?;
                if ys[i..i + run]
                    .iter()
                    .any(|y| device_addr(&self.dev, y) == key.0)
                {
                    self.q8_of = None;
                }
            }
            i += run;
        }
        Ok(())
    }
}
