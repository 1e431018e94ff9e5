//! Streaming generation: prefill a prompt, then sample and run one token at a time,
//! yielding text pieces as they become complete, until an end-of-generation token
//! (`<eos>`, `<end_of_turn>`), a stop string, the token limit, the context's end or a
//! cancellation from another thread.
//!
//! ```no_run
//! use gemma_core::{generate::{Generation, GenerateOptions}, KvType, Model, ModelOptions, Tokenizer};
//! let model = Model::load("gemma-3-270m-q4_k_m.gguf", ModelOptions::default())?;
//! let tokenizer = Tokenizer::from_gguf(model.gguf())?;
//! let mut session = model.session(2048, KvType::F16)?;
//! let prompt = gemma_core::chat_template::encode_prompt(&tokenizer, "The capital of France is");
//! let mut generation = Generation::new(&mut session, &tokenizer, &prompt, GenerateOptions::default())?;
//! for piece in &mut generation {
//!     print!("{}", piece?.text);
//! }
//! println!("\n{:?}", generation.stop_reason());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sampling::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
use crate::{CoreError, Session};

/// What generation, chat templates and sampling can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The model or its session failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The tokenizer could not be built or decode failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template did not compile or render (its message).
    #[error("chat template: {0}")]
    Template(String),
    /// The prompt does not leave room for one generated token in the context.
    #[error("prompt of {prompt_tokens} tokens (after {position} already in the context) does not fit a context of {ctx_len}")]
    PromptTooLong {
        /// Tokens of the new prompt.
        prompt_tokens: usize,
        /// Tokens already in the session.
        position: usize,
        /// The session's context length.
        ctx_len: usize,
    },
    /// The prompt is empty (nothing to predict from).
    #[error("empty prompt")]
    EmptyPrompt,
    /// The model produced no logits.
    #[error("no logits to sample from")]
    EmptyLogits,
    /// An image could not be run.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
}

/// A flag another thread sets to stop a generation at the next token.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the generation to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called since the last reset.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Clears the flag for the next generation.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Most tokens to generate (the end-of-generation token not counted).
    pub max_tokens: usize,
    /// Sampling parameters.
    pub sampler: SamplerConfig,
    /// Stop when the text contains one of these (the stop string is not returned).
    pub stop_strings: Vec<String>,
    /// Stop when this is cancelled.
    pub cancel: Option<CancelToken>,
}

impl Default for GenerateOptions {
    /// 512 tokens, Gemma's recommended sampling, no stop strings.
    fn default() -> Self {
        Self {
            max_tokens: 512,
            sampler: SamplerConfig::default(),
            stop_strings: Vec::new(),
            cancel: None,
        }
    }
}

/// Text released by one generation step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The token generated at this step.
    pub token: u32,
    /// The text that became final (empty while a UTF-8 sequence or a possible stop
    /// string is being held back; held text comes out with a later piece).
    pub text: String,
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token (`<end_of_turn>` or `<eos>`), not returned.
    EndOfGeneration(u32),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The text reached this stop string.
    StopString(String),
    /// The context is full.
    ContextFull,
    /// The [`CancelToken`] was set.
    Cancelled,
    /// An error was returned by the iterator.
    Error,
}

/// Timings of a generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationStats {
    /// Tokens run by the prefill.
    pub prefill_tokens: usize,
    /// Time of the prefill.
    pub prefill_time: Duration,
    /// Tokens generated (returned as pieces).
    pub generated_tokens: usize,
    /// Time of the decode steps and sampling after the prefill.
    pub decode_time: Duration,
}

impl GenerationStats {
    /// Prefill speed in tokens per second (0 when nothing was prefilled).
    pub fn prefill_tokens_per_s(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill_time)
    }

    /// Decode speed in tokens per second: generated tokens after the first, each of
    /// which needed one forward step.
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
}

fn rate(tokens: usize, time: Duration) -> f64 {
    if tokens == 0 || time.is_zero() {
        0.0
    } else {
        tokens as f64 / time.as_secs_f64()
    }
}

/// A running generation: an iterator of [`Piece`]s. After an end-of-generation token the
/// session holds the prompt and every generated token; after any other stop the last
/// generated token has not been run (nothing needed its logits, see
/// [`Generation::unfed_token`]).
pub struct Generation<'a, 'm> {
    session: &'a mut Session<'m>,
    tokenizer: &'a Tokenizer,
    sampler: Sampler,
    options: GenerateOptions,
    decoder: StreamDecoder,
    /// Prompt and generated tokens (what the penalties look at).
    history: Vec<u32>,
    prompt_len: usize,
    /// Decoded text not yet returned because it may be the start of a stop string.
    held: String,
    stats: GenerationStats,
    stop: Option<StopReason>,
    /// The last returned token, to be run before sampling the next one.
    unfed: Option<u32>,
}

impl<'a, 'm> Generation<'a, 'm> {
    /// Runs `prompt` at the session's current position and gets ready to generate.
    pub fn new(
        session: &'a mut Session<'m>,
        tokenizer: &'a Tokenizer,
        prompt: &[u32],
        options: GenerateOptions,
    ) -> Result<Self, GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let (position, ctx_len) = (session.position(), session.ctx_len());
        if position + prompt.len() >= ctx_len {
            return Err(GenerateError::PromptTooLong {
                prompt_tokens: prompt.len(),
                position,
                ctx_len,
            });
        }
        let start = Instant::now();
        session.prefill(prompt)?;
        let stats = GenerationStats {
            prefill_tokens: prompt.len(),
            prefill_time: start.elapsed(),
            ..GenerationStats::default()
        };
        Ok(Self {
            session,
            tokenizer,
            sampler: Sampler::new(options.sampler),
            options,
            decoder: StreamDecoder::new(true),
            history: prompt.to_vec(),
            prompt_len: prompt.len(),
            held: String::new(),
            stats,
            stop: None,
            unfed: None,
        })
    }

    /// Why the generation ended (`None` while it runs).
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// Timings so far.
    pub fn stats(&self) -> GenerationStats {
        self.stats
    }

    /// The generated tokens (the end-of-generation token excluded).
    pub fn tokens(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }

    /// The last generated token if it has not been run through the model.
    pub fn unfed_token(&self) -> Option<u32> {
        self.unfed
    }

    /// Runs the pending token and samples the next one (a plain greedy choice by the
    /// session where the logits are: [`Session::step_greedy`]).
    fn next_token(&mut self) -> Result<u32, GenerateError> {
        if let (Some(token), true) = (self.unfed, self.sampler.config().is_plain_greedy()) {
            self.unfed = None;
            return Ok(self.session.step_greedy(token)?);
        }
        let logits = match self.unfed.take() {
            Some(token) => self.session.step(token)?,
            None => self.session.logits(),
        };
        self.sampler.sample(logits, &self.history)
    }

    /// Ends the generation; returns the held text as a last piece if there is any.
    fn finish(&mut self, reason: StopReason, token: u32) -> Option<Piece> {
        self.stop = Some(reason);
        self.held.push_str(&self.decoder.finish());
        let text = std::mem::take(&mut self.held);
        (!text.is_empty()).then_some(Piece { token, text })
    }

    fn step(&mut self) -> Result<Option<Piece>, GenerateError> {
        let last = self.history.last().copied().unwrap_or(0);
        if self
            .options
            .cancel
            .as_ref()
            .is_some_and(CancelToken::is_cancelled)
        {
            return Ok(self.finish(StopReason::Cancelled, last));
        }
        if self.stats.generated_tokens >= self.options.max_tokens {
            return Ok(self.finish(StopReason::MaxTokens, last));
        }
        if self.unfed.is_some() && self.session.position() >= self.session.ctx_len() {
            return Ok(self.finish(StopReason::ContextFull, last));
        }
        let start = Instant::now();
        let token = self.next_token()?;
        self.stats.decode_time += start.elapsed();
        if self.tokenizer.is_end_of_generation(token) {
            return Ok(self.finish(StopReason::EndOfGeneration(token), last));
        }
        self.history.push(token);
        self.unfed = Some(token);
        self.stats.generated_tokens += 1;
        let text = self.decoder.push(self.tokenizer, token)?;
        self.held.push_str(&text);
        if let Some((at, stop)) = find_stop(&self.held, &self.options.stop_strings) {
            self.held.truncate(at);
            let stop = stop.to_string();
            let piece = self.finish(StopReason::StopString(stop), token);
            return Ok(Some(piece.unwrap_or(Piece {
                token,
                text: String::new(),
            })));
        }
        let keep = held_suffix_len(&self.held, &self.options.stop_strings);
        let text = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        Ok(Some(Piece { token, text }))
    }
}

impl Iterator for Generation<'_, '_> {
    type Item = Result<Piece, GenerateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() {
            return None;
        }
        match self.step() {
            Ok(piece) => piece.map(Ok),
            Err(e) => {
                self.stop = Some(StopReason::Error);
                Some(Err(e))
            }
        }
    }
}

/// The first stop string found in `text`: `(byte offset, stop string)`.
fn find_stop<'s>(text: &str, stops: &'s [String]) -> Option<(usize, &'s str)> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.as_str())))
        .min_by_key(|&(at, _)| at)
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string (held
/// back until the next piece shows whether the stop string follows).
fn held_suffix_len(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for stop in stops {
        for (i, _) in stop.char_indices().skip(1) {
            if i > keep && text.ends_with(&stop[..i]) {
                keep = i;
            }
        }
    }
    keep
}
