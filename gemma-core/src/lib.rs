//! Gemma 3: config, weights, forward pass, KV cache, tokenizer, sampler and generation.

pub mod attention;
pub mod backend;
pub mod config;
mod engine;
mod error;
mod forward;
pub mod image;
pub mod kv_cache;
pub mod memory;
mod model;
mod session;
mod state;
#[cfg(test)]
mod tiny_fixtures;
pub mod trace;
pub mod weights;

pub use config::{Config, LayerConfig, Rope};
pub use error::CoreError;
pub use image::ImageError;
pub use kv_cache::{KvType, ParseKvTypeError};
pub use model::{Device, Model, ModelOptions, ParseDeviceError, DEFAULT_MAX_BATCH};
pub use session::Session;
pub use trace::{Trace, TraceEntry};
pub use weights::{LayerWeights, Norm, Weight, Weights};

pub mod tokenizer;
pub use tokenizer::{EncodeOptions, StreamDecoder, TokenType, Tokenizer, TokenizerError, Vocab};
pub mod chat;
pub mod chat_template;
pub mod generate;
pub mod sampling;
pub use chat::{Chat, ChatOptions, TurnSummary};
pub use chat_template::{ChatTemplate, Message, Role};
pub use generate::{
    CancelToken, GenerateError, GenerateOptions, Generation, GenerationStats, Piece, StopReason,
};
pub use sampling::{Sampler, SamplerConfig};
