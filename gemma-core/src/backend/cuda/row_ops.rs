//! The backend's row and elementwise operations: RMSNorm (fused with the activation
//! quantization of the products that follow, or with the residual add), the per-head
//! QK-norm fused with RoPE and the query scale, GeGLU (fused with the quantization of the
//! down projection's input), adds and scales. Each notes itself in a decode step's
//! signature and launches nothing while a captured step is replayed.

use super::{core_err, device_addr, tag, CudaBackend};
use crate::backend::QkNormRope;
use crate::config::Rope;
use crate::weights::Norm;
use crate::CoreError;
use gemma_kernels::cuda::{self, ops, ActFormat, CudaSlice};

impl CudaBackend<'_> {
    /// [`crate::backend::Backend::rms_norm`].
    pub(super) fn norm_rows(
        &mut self,
        x: &CudaSlice<f32>,
        first: usize,
        rows: usize,
        w: &Norm,
        eps: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let _span = self.span("rms_norm (+ q8)");
        let args = [
            device_addr(&self.dev, x),
            first as u64,
            rows as u64,
            w.bytes.start as u64,
            device_addr(&self.dev, out),
        ];
        if self.replaying(tag::RMS_NORM, &args) {
            return Ok(());
        }
        // The normed rows are also quantized for the products that usually follow.
        self.q8_of = None;
        let len = w.len;
        self.norm(w)?;
        self.q8(len, rows)?;
        let (wd, xv) = (
            &self.norms[&w.bytes.start],
            x.slice(first * len..(first + rows) * len),
        );
        let out_addr = device_addr(&self.dev, out);
        let format = self.act_format_of.get(&out_addr).copied();
        let format = format.unwrap_or(ActFormat::Q8_0);
        let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
        ops::rms_norm_q8_1(&self.dev, &xv, wd, out, rows, len, eps, format, q8)
            .map_err(core_err)?;
        self.q8_of = Some((out_addr, rows, len, format));
        Ok(())
    }

    /// [`crate::backend::Backend::rms_norm_inplace`].
    pub(super) fn norm_rows_inplace(
        &mut self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        w: &Norm,
        eps: f32,
    ) -> Result<(), CoreError> {
        let _span = self.span("rms_norm_inplace");
        let args = [device_addr(&self.dev, x), rows as u64, w.bytes.start as u64];
        if self.replaying(tag::RMS_NORM_INPLACE, &args) {
            return Ok(());
        }
        self.q8_of = None;
        self.norm(w)?;
        let wd = &self.norms[&w.bytes.start];
        ops::rms_norm_inplace(&self.dev, x, wd, rows, w.len, eps).map_err(core_err)
    }

    /// [`crate::backend::Backend::rope`].
    pub(super) fn rotate(
        &mut self,
        x: &mut CudaSlice<f32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        rope: Rope,
    ) -> Result<(), CoreError> {
        let _span = self.span("rope");
        let args = [
            device_addr(&self.dev, x),
            n_tokens as u64,
            n_heads as u64,
            head_dim as u64,
            u64::from(rope.freq_base.to_bits()),
            u64::from(rope.freq_scale.to_bits()),
        ];
        if self.replaying(tag::ROPE, &args) {
            return self.graph.note_pos(pos0);
        }
        self.q8_of = None;
        let r = ops::Rope {
            n_heads,
            head_dim,
            freq_base: rope.freq_base,
            freq_scale: rope.freq_scale,
        };
        if self.capturing_at(pos0)? {
            let pos = self.step_pos()?;
            return ops::rope_neox(&self.dev, x, &pos, n_tokens, r).map_err(core_err);
        }
        self.positions(pos0, n_tokens)?;
        let pos = self.positions.as_ref().ok_or(CoreError::EmptyInput)?;
        ops::rope_neox(&self.dev, x, pos, n_tokens, r).map_err(core_err)
    }

    /// [`crate::backend::Backend::scale`].
    pub(super) fn scale_values(
        &mut self,
        x: &mut CudaSlice<f32>,
        len: usize,
        s: f32,
    ) -> Result<(), CoreError> {
        let _span = self.span("scale");
        let args = [
            device_addr(&self.dev, x),
            len as u64,
            u64::from(s.to_bits()),
        ];
        if self.replaying(tag::SCALE, &args) {
            return Ok(());
        }
        self.q8_of = None;
        ops::scale(&self.dev, x, s, len).map_err(core_err)
    }

    /// [`crate::backend::Backend::geglu`].
    pub(super) fn gated_gelu(
        &mut self,
        gate: &mut CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
    ) -> Result<(), CoreError> {
        let _span = self.span("geglu (+ q8)");
        let args = [
            device_addr(&self.dev, gate),
            device_addr(&self.dev, up),
            len as u64,
        ];
        if self.replaying(tag::GEGLU, &args) {
            return Ok(());
        }
        // The result is also quantized (as one row) for the down projection that follows.
        self.q8_of = None;
        self.q8(len, 1)?;
        let gate_addr = device_addr(&self.dev, gate);
        let format = self.act_format_of.get(&gate_addr).copied();
        let format = format.unwrap_or(ActFormat::Q8_0);
        let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
        ops::geglu_q8_1(&self.dev, gate, up, len, format, q8).map_err(core_err)?;
        self.q8_of = Some((gate_addr, 1, len, format));
        Ok(())
    }

    /// [`crate::backend::Backend::add`].
    pub(super) fn add_values(
        &mut self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        len: usize,
    ) -> Result<(), CoreError> {
        let _span = self.span("add");
        let args = [
            device_addr(&self.dev, x),
            device_addr(&self.dev, y),
            len as u64,
        ];
        if self.replaying(tag::ADD, &args) {
            return Ok(());
        }
        self.q8_of = None;
        ops::add(&self.dev, x, y, len).map_err(core_err)
    }

    /// [`crate::backend::Backend::qk_norm_rope`].
    pub(super) fn norm_rope_heads(
        &mut self,
        q: &mut CudaSlice<f32>,
        k: &mut CudaSlice<f32>,
        n_tokens: usize,
        p: &QkNormRope,
    ) -> Result<(), CoreError> {
        let _span = self.span("qk_norm_rope");
        let args = [
            device_addr(&self.dev, q),
            device_addr(&self.dev, k),
            n_tokens as u64,
            p.q_norm.bytes.start as u64,
            p.k_norm.bytes.start as u64,
            u64::from(p.rope.freq_base.to_bits()),
            u64::from(p.rope.freq_scale.to_bits()),
            u64::from(p.q_scale.to_bits()),
        ];
        if self.replaying(tag::QK_NORM_ROPE, &args) {
            return self.graph.note_pos(p.pos0);
        }
        let captured = self.prepare_qk_rope(p, n_tokens)?;
        let r = self.qk_rope_inputs(p, n_tokens, captured)?;
        ops::qk_norm_rope(&self.dev, q, k, r.wq, r.wk, &r.pos, n_tokens, r.shape).map_err(core_err)
    }

    /// Uploads what a QK-norm + RoPE launch of `n` tokens reads (both norms; the positions
    /// unless a step is being captured, which reads the graph's); returns whether capturing.
    pub(super) fn prepare_qk_rope(&mut self, p: &QkNormRope, n: usize) -> Result<bool, CoreError> {
        self.q8_of = None;
        self.norm(p.q_norm)?;
        self.norm(p.k_norm)?;
        let captured = self.capturing_at(p.pos0)?;
        if !captured {
            self.positions(p.pos0, n)?;
        }
        Ok(captured)
    }

    /// The kernel shape, positions and norm weights of a QK-norm + RoPE launch, after
    /// [`Self::prepare_qk_rope`].
    pub(super) fn qk_rope_inputs(
        &self,
        p: &QkNormRope,
        n: usize,
        captured: bool,
    ) -> Result<QkRopeInputs<'_>, CoreError> {
        let h = p.heads;
        let pos = if captured {
            self.step_pos()?
        } else {
            self.positions
                .as_ref()
                .ok_or(CoreError::EmptyInput)?
                .slice(0..n)
        };
        Ok(QkRopeInputs {
            shape: ops::QkNormRope {
                n_q_heads: h.n_head,
                n_k_heads: h.n_head_kv,
                head_dim: h.head_dim_k,
                freq_base: p.rope.freq_base,
                freq_scale: p.rope.freq_scale,
                q_scale: p.q_scale,
                eps: p.eps,
            },
            pos,
            wq: &self.norms[&p.q_norm.bytes.start],
            wk: &self.norms[&p.k_norm.bytes.start],
        })
    }

    /// [`crate::backend::Backend::rms_norm_add`].
    pub(super) fn post_norm_add(
        &mut self,
        o: &mut CudaSlice<f32>,
        rows: usize,
        w: &Norm,
        eps: f32,
        x: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let _span = self.span("rms_norm_add");
        let args = [
            device_addr(&self.dev, o),
            rows as u64,
            w.bytes.start as u64,
            device_addr(&self.dev, x),
        ];
        if self.replaying(tag::RMS_NORM_ADD, &args) {
            return Ok(());
        }
        self.q8_of = None;
        self.norm(w)?;
        let wd = &self.norms[&w.bytes.start];
        ops::rms_norm_add(&self.dev, o, wd, x, rows, w.len, eps).map_err(core_err)
    }

    /// [`crate::backend::Backend::rms_norm_add_norm`]: one launch that also quantizes `out`
    /// for the products that read it (as [`Self::norm_rows`]).
    pub(super) fn post_norm_add_norm(
        &mut self,
        o: &mut CudaSlice<f32>,
        rows: usize,
        norms: &NormPair,
        x: &mut CudaSlice<f32>,
        eps: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CoreError> {
        let _span = self.span("rms_norm_add_norm (+ q8)");
        let args = [
            device_addr(&self.dev, o),
            rows as u64,
            norms.post.bytes.start as u64,
            device_addr(&self.dev, x),
            norms.next.bytes.start as u64,
            device_addr(&self.dev, out),
        ];
        if self.replaying(tag::RMS_NORM_ADD_NORM, &args) {
            return Ok(());
        }
        self.q8_of = None;
        let len = norms.post.len;
        self.norm(norms.post)?;
        self.norm(norms.next)?;
        self.q8(len, rows)?;
        let out_addr = device_addr(&self.dev, out);
        let format = self.act_format_of.get(&out_addr).copied();
        let format = format.unwrap_or(ActFormat::Q8_0);
        let (wp, wn) = (
            &self.norms[&norms.post.bytes.start],
            &self.norms[&norms.next.bytes.start],
        );
        let q8 = self.q8.as_mut().ok_or(CoreError::EmptyInput)?;
        ops::rms_norm_add_norm_q8_1(&self.dev, o, wp, x, wn, out, rows, len, eps, format, q8)
            .map_err(core_err)?;
        self.q8_of = Some((out_addr, rows, len, format));
        Ok(())
    }
}

/// The two norms of [`CudaBackend::post_norm_add_norm`]: the post-norm of the added values
/// and the pre-norm of the next block.
pub(super) struct NormPair<'w> {
    pub(super) post: &'w Norm,
    pub(super) next: &'w Norm,
}

/// What a QK-norm + RoPE launch reads besides q and k.
pub(super) struct QkRopeInputs<'a> {
    pub(super) shape: ops::QkNormRope,
    pub(super) pos: cuda::CudaView<'a, i32>,
    pub(super) wq: &'a CudaSlice<f32>,
    pub(super) wk: &'a CudaSlice<f32>,
}
