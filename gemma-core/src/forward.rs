//! The Gemma 3 forward pass, written once over the [`Backend`] interface.
//!
//! A batch of `n` tokens at positions `pos0 ..` goes through every layer together
//! (prefill; decode is `n = 1`); the logits of the rows the caller wants are computed
//! afterwards by [`logits`], a few rows at a time.

use crate::backend::{AttentionJob, Backend, HeadShape, QkNormRope};
use crate::kv_cache::KvCache;
use crate::state::State;
use crate::trace::{Trace, TraceEntry};
use crate::{Config, CoreError, Weights};
use std::fmt;
use std::ops::Range;

/// The model as the forward pass sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModelRef<'m> {
    /// Hyper-parameters.
    pub config: &'m Config,
    /// Bound weights.
    pub weights: &'m Weights,
}

/// What a forward pass runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Input<'a> {
    /// Token ids (embedded and scaled by `sqrt(n_embd)`).
    Tokens(&'a [u32]),
    /// The rows (`n × n_embd`) of one image's embeddings, used as they are (no scaling,
    /// as llama.cpp); the image's tokens attend to each other.
    Image(&'a [f32]),
}

impl Input<'_> {
    /// Number of rows (tokens).
    pub fn len(&self, n_embd: usize) -> usize {
        match self {
            Input::Tokens(tokens) => tokens.len(),
            Input::Image(rows) => rows.len() / n_embd,
        }
    }
}

/// Runs `input` through every layer at the cache's position and stores their keys and
/// values. Only the batch rows in `keep` need their final hidden states: if the backend
/// can move rows ([`Backend::copy_rows`]), only those go through the last layer's
/// attention and FFN (llama.cpp does the same). Returns the row of `st.x` that holds the
/// final state of `keep.start` (0 after such a move, else `keep.start`).
pub(crate) fn forward<B: Backend>(
    b: &mut B,
    m: ModelRef<'_>,
    cache: &mut KvCache<B::KvStore>,
    st: &mut State<B::Buffer>,
    input: Input<'_>,
    keep: Range<usize>,
    mut trace: Option<&mut Trace>,
) -> Result<usize, CoreError> {
    let (c, w) = (m.config, m.weights);
    let n = input.len(c.n_embd);
    let pos0 = cache.position();
    let eps = c.rms_eps;
    let heads = HeadShape {
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim_k: c.head_dim_k,
        head_dim_v: c.head_dim_v,
    };
    let tile = cache.max_tile();
    // The batch rows the buffers hold: all of them, then only `keep` after the last attention.
    let mut held = pos0..pos0 + n;
    // Without a trace to record between them, a backend may fuse steps (same values).
    let fuse = trace.is_none();
    if !fuse {
        b.tracing()?;
    }
    let mut tr =
        |b: &mut B,
         name: fmt::Arguments<'_>,
         buf: &B::Buffer,
         held: &Range<usize>,
         width: usize| { record(trace.as_deref_mut(), b, name, buf, held.clone(), width) };
    // Where the final state of row `keep.start` will be.
    let mut kept_row0 = keep.start;
    // Whether `st.h` already holds this layer's attention input (fused into the previous
    // layer's last norm).
    let mut h_ready = false;
    cache.begin(n)?;

    // Embedding: x = token_embd[token] * sqrt(n_embd), or the image rows as they are.
    let image = match input {
        Input::Tokens(tokens) => {
            b.embed(&w.token_embd, tokens, c.embedding_scale, &mut st.x)?;
            None
        }
        Input::Image(rows) => {
            b.load_rows(rows, &mut st.x)?;
            Some(pos0..pos0 + n)
        }
    };
    tr(b, format_args!("inp_scaled"), &st.x, &held, c.n_embd)?;

    for (il, (lw, lc)) in w.layers.iter().zip(&c.layers).enumerate() {
        let last_layer = il + 1 == c.n_layer;

        // Attention input: h = rms_norm(x) * attn_norm.
        if !std::mem::take(&mut h_ready) {
            b.rms_norm(&st.x, 0, n, &lw.attn_norm, eps, &mut st.h)?;
        }
        tr(b, format_args!("attn_norm-{il}"), &st.h, &held, c.n_embd)?;

        // Projections: q = Wq h, k = Wk h, v = Wv h.
        b.matmul_many(
            &[&lw.wq, &lw.wk, &lw.wv],
            &st.h,
            n,
            &mut [&mut st.q, &mut st.k, &mut st.v],
        )?;
        tr(b, format_args!("Qcur-{il}"), &st.q, &held, c.q_dim())?;
        tr(b, format_args!("Kcur-{il}"), &st.k, &held, c.k_dim())?;
        tr(b, format_args!("Vcur-{il}"), &st.v, &held, c.v_dim())?;

        // QK-norm (an RMSNorm over each query and key head), RoPE with the layer's base
        // and scaling, then the query scale; a batch of one attention tile also stores its
        // keys and values now.
        let layer = cache.layer_mut(il);
        let (window, slot_map) = (layer.window(), layer.slot_map());
        let mut stored = false;
        if fuse {
            let p = QkNormRope {
                heads,
                q_norm: &lw.q_norm,
                k_norm: &lw.k_norm,
                eps,
                pos0,
                rope: lc.rope,
                q_scale: c.attention_scale,
            };
            if n <= tile {
                let store = layer.store_mut();
                b.qk_norm_rope_store(&mut st.q, &mut st.k, &st.v, n, &p, store, slot_map)?;
                stored = true;
            } else {
                b.qk_norm_rope(&mut st.q, &mut st.k, n, &p)?;
            }
        } else {
            b.rms_norm_inplace(&mut st.q, n * c.n_head, &lw.q_norm, eps)?;
            b.rms_norm_inplace(&mut st.k, n * c.n_head_kv, &lw.k_norm, eps)?;
            tr(b, format_args!("Qcur_normed-{il}"), &st.q, &held, c.q_dim())?;
            tr(b, format_args!("Kcur_normed-{il}"), &st.k, &held, c.k_dim())?;
            b.rope(&mut st.q, n, c.n_head, c.head_dim_k, pos0, lc.rope)?;
            b.rope(&mut st.k, n, c.n_head_kv, c.head_dim_k, pos0, lc.rope)?;
            b.scale(&mut st.q, n * c.q_dim(), c.attention_scale)?;
            tr(b, format_args!("Qcur_rope-{il}"), &st.q, &held, c.q_dim())?;
            tr(b, format_args!("Kcur_rope-{il}"), &st.k, &held, c.k_dim())?;
        }

        // In the last layer, keep only the rows wanted if the backend can: their
        // residual rows go to the front now (attention does not read them).
        let prune = last_layer
            && keep.len() < n
            && b.copy_rows(&mut st.x, keep.start, keep.len(), c.n_embd)?;

        // Attention: store a tile's keys and values, then its queries attend to the
        // cache (causal, within the window of a local layer).
        let attend = if prune { keep.clone() } else { 0..n };
        for first in (0..n).step_by(tile.min(n)) {
            let rows = first..(first + tile).min(n);
            if !stored {
                b.store_kv(
                    layer.store_mut(),
                    &st.k,
                    &st.v,
                    rows.clone(),
                    pos0,
                    slot_map,
                )?;
            }
            let rows = rows.start.max(attend.start)..rows.end.min(attend.end);
            if !rows.is_empty() {
                let job = AttentionJob {
                    rows,
                    pos0,
                    window,
                    slot_map,
                    heads,
                    image: image.clone(),
                    batch_rows: n,
                };
                b.attention(&st.q, layer.store(), &job, &mut st.att)?;
            }
        }
        let rows = if prune {
            // From here on only the kept rows, at the front of the buffers.
            b.copy_rows(&mut st.att, keep.start, keep.len(), c.attn_out_dim())?;
            held = pos0 + keep.start..pos0 + keep.end;
            kept_row0 = 0;
            keep.len()
        } else {
            n
        };
        tr(
            b,
            format_args!("kqv_out-{il}"),
            &st.att,
            &held,
            c.attn_out_dim(),
        )?;

        // Output projection, post-attention norm, residual: x += rms_norm(Wo att).
        b.matmul(&lw.wo, &st.att, rows, &mut st.o)?;
        tr(b, format_args!("attn_out-{il}"), &st.o, &held, c.n_embd)?;
        // FFN input: h = rms_norm(x) * ffn_norm.
        if fuse {
            let (post, next) = (&lw.post_attn_norm, &lw.ffn_norm);
            b.rms_norm_add_norm(&mut st.o, rows, post, &mut st.x, next, eps, &mut st.h)?;
        } else {
            b.rms_norm_inplace(&mut st.o, rows, &lw.post_attn_norm, eps)?;
            tr(
                b,
                format_args!("attn_post_norm-{il}"),
                &st.o,
                &held,
                c.n_embd,
            )?;
            b.add(&mut st.x, &st.o, rows * c.n_embd)?;
            tr(b, format_args!("sa_out-{il}"), &st.x, &held, c.n_embd)?;
            b.rms_norm(&st.x, 0, rows, &lw.ffn_norm, eps, &mut st.h)?;
        }
        tr(b, format_args!("ffn_norm-{il}"), &st.h, &held, c.n_embd)?;

        // GeGLU: gelu_tanh(W_gate h) * (W_up h), then W_down.
        b.matmul_many(
            &[&lw.ffn_gate, &lw.ffn_up],
            &st.h,
            rows,
            &mut [&mut st.gate, &mut st.up],
        )?;
        b.geglu(&mut st.gate, &st.up, rows * c.n_ff)?;
        tr(b, format_args!("ffn_geglu-{il}"), &st.gate, &held, c.n_ff)?;
        b.matmul(&lw.ffn_down, &st.gate, rows, &mut st.o)?;
        tr(b, format_args!("ffn_out-{il}"), &st.o, &held, c.n_embd)?;

        // Post-FFN norm and residual: x += rms_norm(ffn); fused with the next layer's
        // attention input (all rows go on: only the last layer drops rows).
        let next_layer = w.layers.get(il + 1);
        if let (true, Some(next)) = (fuse, next_layer) {
            let post = &lw.post_ffn_norm;
            b.rms_norm_add_norm(
                &mut st.o,
                rows,
                post,
                &mut st.x,
                &next.attn_norm,
                eps,
                &mut st.h,
            )?;
            h_ready = true;
        } else if fuse {
            b.rms_norm_add(&mut st.o, rows, &lw.post_ffn_norm, eps, &mut st.x)?;
        } else {
            b.rms_norm_inplace(&mut st.o, rows, &lw.post_ffn_norm, eps)?;
            tr(
                b,
                format_args!("ffn_post_norm-{il}"),
                &st.o,
                &held,
                c.n_embd,
            )?;
            b.add(&mut st.x, &st.o, rows * c.n_embd)?;
        }
        tr(b, format_args!("l_out-{il}"), &st.x, &held, c.n_embd)?;
    }
    cache.commit(n);
    Ok(kept_row0)
}

/// Logits of hidden-state rows `first .. first + rows` of `st.x` (at most
/// `st.logit_rows`; row `first` is at position `pos`), written to `out` (`rows × n_vocab`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn logits<B: Backend>(
    b: &mut B,
    m: ModelRef<'_>,
    st: &mut State<B::Buffer>,
    first: usize,
    rows: usize,
    pos: usize,
    out: &mut [f32],
    mut trace: Option<&mut Trace>,
) -> Result<(), CoreError> {
    let c = m.config;
    output_head(b, m, st, first, rows, pos, trace.as_deref_mut())?;
    b.read(&st.logits, 0..rows * c.n_vocab, out)?;
    // Optional soft-capping: c * tanh(logits / c).
    if let Some(cap) = c.final_logit_softcap {
        for v in out.iter_mut() {
            *v = cap * (*v / cap).tanh();
        }
    }
    if let Some(t) = trace {
        if t.wants("result_output") {
            t.push(TraceEntry {
                name: "result_output".into(),
                pos0: pos,
                rows,
                width: c.n_vocab,
                data: out.to_vec(),
            });
        }
    }
    Ok(())
}

/// The greedy pick after hidden-state row `first` of `st.x` (at position `pos`): the index
/// of its highest logit, found by the backend where the logits are ([`Backend::argmax`]).
/// For a model without final soft-capping, which rounds to ties logits that were apart.
pub(crate) fn greedy_pick<B: Backend>(
    b: &mut B,
    m: ModelRef<'_>,
    st: &mut State<B::Buffer>,
    first: usize,
    pos: usize,
) -> Result<u32, CoreError> {
    output_head(b, m, st, first, 1, pos, None)?;
    b.argmax(&st.logits, m.config.n_vocab)
}

/// The final norm of hidden-state rows `first .. first + rows` of `st.x`, then the output
/// projection (tied to the embeddings unless the file has `output.weight`) into
/// `st.logits`.
fn output_head<B: Backend>(
    b: &mut B,
    m: ModelRef<'_>,
    st: &mut State<B::Buffer>,
    first: usize,
    rows: usize,
    pos: usize,
    trace: Option<&mut Trace>,
) -> Result<(), CoreError> {
    let (c, w) = (m.config, m.weights);
    b.rms_norm(
        &st.x,
        first,
        rows,
        &w.output_norm,
        c.rms_eps,
        &mut st.out_norm,
    )?;
    record(
        trace,
        b,
        format_args!("result_norm"),
        &st.out_norm,
        pos..pos + rows,
        c.n_embd,
    )?;
    b.matmul(&w.output, &st.out_norm, rows, &mut st.logits)
}

/// Copies the rows of `positions` (`width` values each) of `buf` into the trace if it wants `name` (formatted
/// only when a trace is attached).
fn record<B: Backend>(
    trace: Option<&mut Trace>,
    b: &mut B,
    name: fmt::Arguments<'_>,
    buf: &B::Buffer,
    positions: Range<usize>,
    width: usize,
) -> Result<(), CoreError> {
    let Some(t) = trace else { return Ok(()) };
    let name = name.to_string();
    if !t.wants(&name) {
        return Ok(());
    }
    let rows = positions.len();
    let mut data = vec![0.0; rows * width];
    b.read(buf, 0..rows * width, &mut data)?;
    t.push(TraceEntry {
        name,
        pos0: positions.start,
        rows,
        width,
        data,
    });
    Ok(())
}
