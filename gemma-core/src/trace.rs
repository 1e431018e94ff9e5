//! Named activations of the forward pass, recorded on request for comparison with
//! another engine layer by layer (llama.cpp names its tensors the same way, e.g.
//! `attn_norm-0`, `Qcur-3`, `l_out-17`).
//!
//! Recording costs a copy of each requested tensor; with no [`Trace`] attached to the
//! session nothing is copied. Names, per layer `il`:
//! `attn_norm-il`, `Qcur-il`, `Kcur-il`, `Vcur-il` (projections), `Qcur_normed-il`,
//! `Kcur_normed-il` (QK-norm), `Qcur_rope-il`, `Kcur_rope-il` (after RoPE; queries also
//! scaled), `kqv_out-il` (attention), `attn_out-il` (`attn_output`), `attn_post_norm-il`,
//! `sa_out-il` (residual), `ffn_norm-il`, `ffn_geglu-il`, `ffn_out-il` (`ffn_down`),
//! `ffn_post_norm-il`, `l_out-il` (layer output); once: `inp_scaled` (scaled
//! embeddings), `result_norm` and `result_output` (logits).

/// One recorded tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEntry {
    /// Its name (see the module docs).
    pub name: String,
    /// Position of its first row.
    pub pos0: usize,
    /// Number of rows (tokens).
    pub rows: usize,
    /// Values per row.
    pub width: usize,
    /// `rows × width` values, row-major.
    pub data: Vec<f32>,
}

/// A recorder of named activations.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    only: Option<Vec<String>>,
    entries: Vec<TraceEntry>,
}

impl Trace {
    /// A trace recording every named tensor.
    pub fn all() -> Trace {
        Trace::default()
    }

    /// A trace recording only the tensors named in `names`.
    pub fn only<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Trace {
        Trace {
            only: Some(names.into_iter().map(Into::into).collect()),
            entries: Vec::new(),
        }
    }

    /// Whether a tensor of this name is recorded.
    pub fn wants(&self, name: &str) -> bool {
        match &self.only {
            None => true,
            Some(names) => names.iter().any(|n| n == name),
        }
    }

    /// Everything recorded, in order.
    pub fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }

    /// The last entry of this name.
    pub fn get(&self, name: &str) -> Option<&TraceEntry> {
        self.entries.iter().rev().find(|e| e.name == name)
    }

    /// Forgets every entry (the filter stays).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Adds an entry.
    pub(crate) fn push(&mut self, entry: TraceEntry) {
        self.entries.push(entry);
    }
}
