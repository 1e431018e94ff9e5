//! The scratch buffers of a forward pass, allocated once per session at their largest
//! size (`max_batch` tokens) and reused by every call.

use crate::backend::Backend;
use crate::{Config, CoreError};

/// Activations of one batch of at most `max_tokens` tokens (each buffer row-major,
/// one row per token).
#[derive(Debug)]
pub(crate) struct State<Buf> {
    /// Most tokens per forward pass.
    pub max_tokens: usize,
    /// Most rows of logits computed at once.
    pub logit_rows: usize,
    /// The residual stream `[n, n_embd]`, always f32.
    pub x: Buf,
    /// Normalized input of attention or FFN `[n, n_embd]`.
    pub h: Buf,
    /// Queries `[n, n_head * head_dim_k]`.
    pub q: Buf,
    /// Keys `[n, n_head_kv * head_dim_k]`.
    pub k: Buf,
    /// Values `[n, n_head_kv * head_dim_v]`.
    pub v: Buf,
    /// Attention output before `attn_output` `[n, n_head * head_dim_v]`.
    pub att: Buf,
    /// Output of `attn_output` or `ffn_down` `[n, n_embd]`.
    pub o: Buf,
    /// FFN gate branch, then `gelu(gate) * up` `[n, n_ff]`.
    pub gate: Buf,
    /// FFN up branch `[n, n_ff]`.
    pub up: Buf,
    /// Final-normed rows for the output projection `[logit_rows, n_embd]`.
    pub out_norm: Buf,
    /// Logits `[logit_rows, n_vocab]`.
    pub logits: Buf,
}

impl<Buf> State<Buf> {
    /// Allocates every buffer on `backend`.
    pub fn new<B: Backend<Buffer = Buf>>(
        backend: &mut B,
        c: &Config,
        max_tokens: usize,
        logit_rows: usize,
    ) -> Result<State<Buf>, CoreError> {
        let mut alloc = |width: usize, rows: usize| {
            let len = width.checked_mul(rows).ok_or(CoreError::OutOfMemory {
                what: "activation buffers",
                bytes: u64::MAX,
            })?;
            backend.alloc(len)
        };
        Ok(State {
            max_tokens,
            logit_rows,
            x: alloc(c.n_embd, max_tokens)?,
            h: alloc(c.n_embd, max_tokens)?,
            q: alloc(c.q_dim(), max_tokens)?,
            k: alloc(c.k_dim(), max_tokens)?,
            v: alloc(c.v_dim(), max_tokens)?,
            att: alloc(c.attn_out_dim(), max_tokens)?,
            o: alloc(c.n_embd, max_tokens)?,
            gate: alloc(c.n_ff, max_tokens)?,
            up: alloc(c.n_ff, max_tokens)?,
            out_norm: alloc(c.n_embd, logit_rows)?,
            logits: alloc(c.n_vocab, logit_rows)?,
        })
    }
}
