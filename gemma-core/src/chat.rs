//! A multi-turn conversation that keeps the model's KV cache between turns.
//!
//! Each turn renders the whole conversation with the chat template. When the text the
//! cache already holds is a prefix of it (the usual case: the template only appends), the
//! new turn costs only its new tokens: the end of the previous answer, the user's
//! message and the generation prompt. Otherwise (a changed system prompt, an answer cut by
//! a stop string, a template that rewrites earlier turns) the cache is kept up to the
//! first differing token and the rest is run again.

use crate::chat_template::{encode_prompt, ChatTemplate, Message, Role};
use crate::generate::{
    GenerateError, GenerateOptions, Generation, GenerationStats, Piece, StopReason,
};
use crate::image::{self, ImageTokens};
use crate::tokenizer::{EncodeOptions, Tokenizer};
use crate::{KvType, Model, Session};

/// How to set up a [`Chat`].
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Context length of the session (capped at the model's).
    pub ctx_len: usize,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// System prompt (folded into the first user turn by Gemma's template).
    pub system: Option<String>,
    /// Generation settings of every turn.
    pub generate: GenerateOptions,
}

impl Default for ChatOptions {
    /// 4096 tokens of F16 cache, no system prompt, default generation settings.
    fn default() -> Self {
        Self {
            ctx_len: 4096,
            kv_type: KvType::F16,
            system: None,
            generate: GenerateOptions::default(),
        }
    }
}

/// The outcome of one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnSummary {
    /// The answer as shown (also stored as the assistant message).
    pub text: String,
    /// Why it ended.
    pub stop: StopReason,
    /// Timings (prefill = this turn's new tokens only).
    pub stats: GenerationStats,
    /// Tokens of the cache reused from earlier turns.
    pub reused_tokens: usize,
}

/// A conversation with a model: messages, template, tokenizer and a session whose KV
/// cache follows the conversation.
pub struct Chat<'m> {
    session: Session<'m>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    options: GenerateOptions,
    system: Option<String>,
    /// User and assistant messages, alternating.
    messages: Vec<Message>,
    /// The tokens in the session's cache, in order (`session.position()` of them).
    cached: Vec<u32>,
    /// The conversation so far as tokens: the last prompt and the last answer's tokens.
    conversation: Vec<u32>,
    /// The text `conversation` stands for.
    conversation_text: String,
    /// The images of `messages`, in order.
    images: Vec<ImageTokens>,
    /// Images attached to the next user message.
    pending: Vec<ImageTokens>,
}

impl<'m> Chat<'m> {
    /// A chat with `model`: its tokenizer, its template (or the built-in Gemma 3 format)
    /// and a new session.
    pub fn new(model: &'m Model, options: ChatOptions) -> Result<Self, GenerateError> {
        let tokenizer = Tokenizer::from_gguf(model.gguf())?;
        let template = ChatTemplate::from_gguf(model.gguf(), &tokenizer)?;
        let ctx_len = options.ctx_len.min(model.config().context_length);
        let session = model.session(ctx_len, options.kv_type)?;
        let mut chat = Self::from_parts(session, tokenizer, template, options.generate);
        chat.system = options.system;
        Ok(chat)
    }

    /// A chat from its parts (the session should be empty, or its content is re-run).
    pub fn from_parts(
        session: Session<'m>,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        options: GenerateOptions,
    ) -> Self {
        let mut chat = Self {
            session,
            tokenizer,
            template,
            options,
            system: None,
            messages: Vec::new(),
            cached: Vec::new(),
            conversation: Vec::new(),
            conversation_text: String::new(),
            images: Vec::new(),
            pending: Vec::new(),
        };
        if chat.session.position() > 0 {
            chat.cached = vec![u32::MAX; chat.session.position()];
        }
        chat
    }

    /// Sets or clears the system prompt (kept for the following turns; the history stays).
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system;
    }

    /// The system prompt.
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// Forgets the conversation (the system prompt stays).
    pub fn reset(&mut self) {
        self.messages.clear();
        self.images.clear();
        self.pending.clear();
        self.conversation.clear();
        self.conversation_text.clear();
    }

    /// Adds a message to the history without generating (to replay a conversation; a
    /// system message sets the system prompt). The cache catches up at the next turn.
    pub fn push(&mut self, message: Message) {
        match message.role {
            Role::System => self.system = Some(message.content),
            _ => self.messages.push(message),
        }
    }

    /// The conversation so far as tokens (the last prompt and the last answer's tokens;
    /// empty before the first turn).
    pub fn tokens(&self) -> &[u32] {
        &self.conversation
    }

    /// The user and assistant messages so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The session (position, context length, cache size).
    pub fn session(&self) -> &Session<'m> {
        &self.session
    }

    /// Generation settings, to change between turns.
    pub fn options_mut(&mut self) -> &mut GenerateOptions {
        &mut self.options
    }

    /// Attaches an image to the next user message: its soft tokens (the vision
    /// projector's output, rows of the model's hidden size). At [`Chat::send`] the message
    /// starts with `<start_of_image>` for each attached image, which becomes (llama.cpp's
    /// layout) `<start_of_image>`, the soft tokens, `<end_of_image>`. The cache keeps images
    /// like text: later turns reuse them. (A `<start_of_image>` typed in a message takes
    /// the place of the next image in order.)
    pub fn attach_image(&mut self, soft_tokens: Vec<f32>) -> Result<(), GenerateError> {
        let hidden = self.session.model().config().n_embd;
        self.pending.push(ImageTokens::new(soft_tokens, hidden)?);
        Ok(())
    }

    /// Images attached to the next user message.
    pub fn pending_images(&self) -> usize {
        self.pending.len()
    }

    /// Sends a user message and generates the answer, giving each piece to `on_piece`
    /// as it comes. A cancelled or cut answer is kept as it is.
    pub fn send(
        &mut self,
        user: &str,
        mut on_piece: impl FnMut(&Piece),
    ) -> Result<TurnSummary, GenerateError> {
        let content = "<start_of_image>".repeat(self.pending.len()) + user;
        let mut all = self.full_messages();
        all.push(Message::new(Role::User, content.clone()));
        let rendered = self.template.render(&all, true)?;
        let images: Vec<ImageTokens> = self.images.iter().chain(&self.pending).cloned().collect();
        let desired = self.desired_tokens(&rendered, &images);
        let ctx_len = self.session.ctx_len();
        if desired.len() >= ctx_len {
            return Err(GenerateError::PromptTooLong {
                prompt_tokens: desired.len(),
                position: 0,
                ctx_len,
            });
        }
        let reused = self.rewind_to_common_prefix(&desired)?;
        // Images (and the text before them) run here; the text after the last one
        // starts the generation.
        let split = desired[reused..]
            .iter()
            .rposition(|&t| image::is_placeholder(t))
            .map_or(reused, |i| reused + i + 1);
        if let Err(e) =
            image::prefill_with_images(&mut self.session, &desired[reused..split], &images)
        {
            self.forget_cache();
            return Err(e.into());
        }

        let mut text = String::new();
        let (outcome, tokens, unfed, stats) = {
            let generation = Generation::new(
                &mut self.session,
                &self.tokenizer,
                &desired[split..],
                self.options.clone(),
            );
            let mut generation = match generation {
                Ok(g) => g,
                Err(e) => {
                    self.forget_cache();
                    return Err(e);
                }
            };
            let mut outcome = Ok(());
            for piece in &mut generation {
                match piece {
                    Ok(piece) => {
                        text.push_str(&piece.text);
                        on_piece(&piece);
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            let stop = generation
                .stop_reason()
                .cloned()
                .unwrap_or(StopReason::Error);
            (
                outcome.map(|()| stop),
                generation.tokens().to_vec(),
                generation.unfed_token(),
                generation.stats(),
            )
        };
        let stop = match outcome {
            Ok(stop) => stop,
            Err(e) => {
                self.forget_cache();
                return Err(e);
            }
        };
        self.cached = desired.clone();
        self.cached
            .extend_from_slice(&tokens[..tokens.len() - usize::from(unfed.is_some())]);
        self.conversation = desired;
        self.conversation.extend_from_slice(&tokens);
        self.conversation_text = rendered;
        self.conversation_text
            .push_str(&self.tokenizer.decode(&tokens)?);
        self.messages.push(Message::new(Role::User, content));
        self.images = images;
        self.pending.clear();
        self.messages
            .push(Message::new(Role::Assistant, text.clone()));
        Ok(TurnSummary {
            text,
            stop,
            stats,
            reused_tokens: reused,
        })
    }

    /// System message (if any) followed by the history.
    fn full_messages(&self) -> Vec<Message> {
        let system = self
            .system
            .iter()
            .map(|s| Message::new(Role::System, s.clone()));
        system.chain(self.messages.iter().cloned()).collect()
    }

    /// The tokens the session should hold before generating: the previous conversation's
    /// exact tokens plus the new text when the rendering extends it, else a fresh encoding;
    /// `images` (those of the conversation, then the new ones) expanded in order.
    fn desired_tokens(&self, rendered: &str, images: &[ImageTokens]) -> Vec<u32> {
        match rendered.strip_prefix(self.conversation_text.as_str()) {
            Some(new_text) if !self.conversation.is_empty() => {
                let mut tokens = self.conversation.clone();
                let options = EncodeOptions {
                    add_bos: false,
                    parse_special: true,
                };
                let from = tokens.len();
                self.tokenizer.encode_into(new_text, options, &mut tokens);
                image::expand_images(&mut tokens, from, &images[self.images.len()..]);
                tokens
            }
            _ => {
                let mut tokens = encode_prompt(&self.tokenizer, rendered);
                image::expand_images(&mut tokens, 0, images);
                tokens
            }
        }
    }

    /// Keeps the longest cached prefix of `desired` (leaving at least one token to run)
    /// and returns its length.
    fn rewind_to_common_prefix(&mut self, desired: &[u32]) -> Result<usize, GenerateError> {
        let mut common = self
            .cached
            .iter()
            .zip(desired)
            .take_while(|(a, b)| a == b)
            .count();
        common = common.min(desired.len().saturating_sub(1));
        // An image runs whole: never keep only part of one.
        while common > 0
            && image::is_placeholder(desired[common])
            && image::is_placeholder(desired[common - 1])
        {
            common -= 1;
        }
        if common < self.session.position() {
            if !self.session.can_truncate(common) {
                common = 0;
            }
            self.session.truncate(common)?;
        }
        self.cached.truncate(common);
        Ok(common)
    }

    /// After a failure the cache content is unknown: start over at the next turn.
    fn forget_cache(&mut self) {
        self.cached = vec![u32::MAX; self.session.position()];
        self.conversation.clear();
        self.conversation_text.clear();
    }
}
