//! Gemma 3: config, weights, forward pass, KV cache, tokenizer, sampler and generation.
