//! Turning a conversation into prompt text: the file's `tokenizer.chat_template` (a Jinja
//! template, rendered with minijinja the way Hugging Face's `apply_chat_template` does:
//! `trim_blocks` and `lstrip_blocks` on), or the built-in Gemma 3 format when the file has
//! none.
//!
//! Gemma 3 format: `<bos>` then, per message, `<start_of_turn>{user|model}\n{text}<end_of_turn>\n`
//! (text trimmed), a system message folded into the first user turn followed by a blank
//! line, and `<start_of_turn>model\n` as the generation prompt.

use gemma_gguf::GgufFile;
use minijinja::{context, Environment, Error as JinjaError, ErrorKind, Value};

use crate::generate::GenerateError;
use crate::tokenizer::{EncodeOptions, Tokenizer};

/// GGUF key of the template.
const TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Most minijinja instructions one rendering may run. A template comes from the model
/// file, so a hostile one could loop for hours (`range` allows 100 000 items per
/// loop, and loops nest). Gemma 3's own template spends about 40 per message, so this
/// covers some 120 000 messages, more than a 128K context holds.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions for the whole conversation.
    System,
    /// The person.
    User,
    /// The model (Gemma calls it `model`; templates receive `assistant`).
    Assistant,
}

impl Role {
    /// The role name templates receive: `system`, `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// A chat template: the file's Jinja source, or the built-in Gemma 3 format.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// Jinja source; `None` for the built-in format.
    source: Option<String>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The built-in Gemma 3 format, with `<bos>` as the BOS text.
    pub fn gemma() -> Self {
        Self {
            source: None,
            bos_token: "<bos>".into(),
            eos_token: "<eos>".into(),
        }
    }

    /// A Jinja template; fails if it does not compile. `bos_token` / `eos_token` are the
    /// texts the template sees under those names.
    pub fn from_source(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, GenerateError> {
        let template = Self {
            source: Some(source.into()),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        };
        if let Some(source) = &template.source {
            environment()
                .template_from_str(source)
                .map_err(template_error)?;
        }
        Ok(template)
    }

    /// The template of a GGUF file (`tokenizer.chat_template`), or the built-in Gemma 3
    /// format when the file has none. BOS/EOS texts come from the tokenizer.
    pub fn from_gguf(file: &GgufFile, tokenizer: &Tokenizer) -> Result<Self, GenerateError> {
        let text_of = |id: Option<u32>, fallback: &str| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or(fallback)
                .to_string()
        };
        let bos = text_of(tokenizer.bos_id(), "<bos>");
        let eos = text_of(tokenizer.eos_id(), "<eos>");
        match file.metadata().string(TEMPLATE_KEY) {
            Ok(source) => Self::from_source(source, bos, eos),
            Err(gemma_gguf::GgufError::MissingKey { .. }) => Ok(Self {
                source: None,
                bos_token: bos,
                eos_token: eos,
            }),
            Err(e) => Err(GenerateError::Template(format!("{TEMPLATE_KEY}: {e}"))),
        }
    }

    /// Whether this is the built-in format (the file had no template).
    pub fn is_builtin(&self) -> bool {
        self.source.is_none()
    }

    /// The Jinja source, if the template came from a file.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the
    /// model's answer starts.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, GenerateError> {
        match &self.source {
            None => render_gemma(&self.bos_token, messages, add_generation_prompt),
            Some(source) => {
                let env = environment();
                let template = env.template_from_str(source).map_err(template_error)?;
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
                    .collect();
                template
                    .render(context! {
                        messages => messages,
                        bos_token => self.bos_token.as_str(),
                        eos_token => self.eos_token.as_str(),
                        add_generation_prompt => add_generation_prompt,
                    })
                    .map_err(template_error)
            }
        }
    }
}

/// Tokenizes rendered prompt text: special tokens parsed, and BOS added only when the
/// vocabulary asks for it and the text does not already start with it (no double BOS).
pub fn encode_prompt(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    let starts_with_bos = tokenizer
        .bos_id()
        .and_then(|id| tokenizer.token_text(id))
        .is_some_and(|bos| !bos.is_empty() && text.starts_with(bos));
    tokenizer.encode_with(
        text,
        EncodeOptions {
            add_bos: !starts_with_bos,
            parse_special: true,
        },
    )
}

/// The built-in Gemma 3 format (what Gemma's Hugging Face template renders).
fn render_gemma(
    bos: &str,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<String, GenerateError> {
    let (system, turns) = match messages.first() {
        Some(Message {
            role: Role::System,
            content,
        }) => (Some(content.as_str()), &messages[1..]),
        _ => (None, messages),
    };
    let mut out = String::from(bos);
    for (i, message) in turns.iter().enumerate() {
        let expected_user = i % 2 == 0;
        if (message.role == Role::User) != expected_user || message.role == Role::System {
            return Err(GenerateError::Template(
                "Conversation roles must alternate user/assistant/user/assistant/...".into(),
            ));
        }
        let role = if message.role == Role::Assistant {
            "model"
        } else {
            "user"
        };
        out.push_str("<start_of_turn>");
        out.push_str(role);
        out.push('\n');
        if let (0, Some(system)) = (i, system) {
            out.push_str(system);
            out.push_str("\n\n");
        }
        out.push_str(message.content.trim());
        out.push_str("<end_of_turn>\n");
    }
    if add_generation_prompt {
        out.push_str("<start_of_turn>model\n");
    }
    Ok(out)
}

/// A minijinja environment set up like Hugging Face's template renderer.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<Value, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, message))
        },
    );
    env
}

fn template_error(e: JinjaError) -> GenerateError {
    if e.kind() == ErrorKind::OutOfFuel {
        return GenerateError::Template(format!(
            "the template ran past {TEMPLATE_FUEL} instructions (endless or hostile?)"
        ));
    }
    GenerateError::Template(match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.to_string(),
    })
}
