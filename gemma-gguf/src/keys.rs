//! Metadata key names, in one place (as llama.cpp's `gguf-py/gguf/constants.py` names them).
//!
//! Architecture-specific keys are `<arch>.<suffix>`; [`gemma3`] spells them out for Gemma 3
//! and [`arch_key`] builds them for any architecture.

/// Model architecture ("gemma3", "clip").
pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
/// Alignment of the tensor data (u32, default 32).
pub const GENERAL_ALIGNMENT: &str = "general.alignment";
/// Human-readable model name.
pub const GENERAL_NAME: &str = "general.name";
/// "model", "mmproj", ...
pub const GENERAL_TYPE: &str = "general.type";
/// llama.cpp's `llama_ftype` of the file (15 = MOSTLY_Q4_K_M).
pub const GENERAL_FILE_TYPE: &str = "general.file_type";
/// Version of the quantization formats (2 for current files).
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";
/// Size label ("270M").
pub const GENERAL_SIZE_LABEL: &str = "general.size_label";

/// Tokenizer model ("llama" = SentencePiece-style, "gpt2" = byte-level BPE).
pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
/// Pre-tokenizer name.
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
/// Token strings (array of string).
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
/// Token scores (array of f32).
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
/// Token types (array of i32: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// BPE merges (array of string).
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
/// Beginning-of-sequence token id.
pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
/// End-of-sequence token id.
pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
/// Unknown token id.
pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
/// Padding token id.
pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
/// Whether to prepend BOS.
pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
/// Whether to append EOS.
pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
/// Whether SentencePiece adds a space in front of the text.
pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
/// Jinja chat template.
pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// `<arch>.<suffix>`, e.g. `arch_key("gemma3", "block_count")`.
pub fn arch_key(arch: &str, suffix: &str) -> String {
    format!("{arch}.{suffix}")
}

/// Gemma 3 hyper-parameter keys.
pub mod gemma3 {
    /// The architecture name.
    pub const ARCH: &str = "gemma3";
    /// Training context length.
    pub const CONTEXT_LENGTH: &str = "gemma3.context_length";
    /// Hidden size (n_embd).
    pub const EMBEDDING_LENGTH: &str = "gemma3.embedding_length";
    /// Number of layers.
    pub const BLOCK_COUNT: &str = "gemma3.block_count";
    /// FFN hidden size.
    pub const FEED_FORWARD_LENGTH: &str = "gemma3.feed_forward_length";
    /// Query heads.
    pub const HEAD_COUNT: &str = "gemma3.attention.head_count";
    /// Key/value heads.
    pub const HEAD_COUNT_KV: &str = "gemma3.attention.head_count_kv";
    /// Head dimension of keys.
    pub const KEY_LENGTH: &str = "gemma3.attention.key_length";
    /// Head dimension of values.
    pub const VALUE_LENGTH: &str = "gemma3.attention.value_length";
    /// RMSNorm epsilon.
    pub const RMS_EPSILON: &str = "gemma3.attention.layer_norm_rms_epsilon";
    /// Sliding-window size of local layers.
    pub const SLIDING_WINDOW: &str = "gemma3.attention.sliding_window";
    /// Optional local/global layer pattern (integer or per-layer bool array).
    pub const SLIDING_WINDOW_PATTERN: &str = "gemma3.attention.sliding_window_pattern";
    /// RoPE base of global layers.
    pub const ROPE_FREQ_BASE: &str = "gemma3.rope.freq_base";
    /// Optional RoPE base of local layers (default 10 000).
    pub const ROPE_FREQ_BASE_SWA: &str = "gemma3.rope.freq_base_swa";
    /// RoPE scaling type ("linear").
    pub const ROPE_SCALING_TYPE: &str = "gemma3.rope.scaling.type";
    /// RoPE scaling factor (8 on 4B/12B/27B).
    pub const ROPE_SCALING_FACTOR: &str = "gemma3.rope.scaling.factor";
    /// Optional final logit soft-capping (absent in Gemma 3 files).
    pub const FINAL_LOGIT_SOFTCAPPING: &str = "gemma3.final_logit_softcapping";
}
