//! Chat with a Gemma 3 GGUF model: an interactive REPL with streaming answers, or a
//! scripted conversation read from stdin.
//!
//! ```text
//! cargo run --release --example chat                       # default model, fetched if absent
//! cargo run --release --example chat -- --model F --system "Be brief."
//! cargo run --release --example chat -- --list-models      # GGUF files already on this machine
//! printf 'Hello\nAnd then?\n' | cargo run --release --example chat -- --temperature 0
//! ```
//! Model: `--model`, else `$GEMMA_MODEL`, else the project's default Gemma 3 270M file in
//! `$GEMMA_CACHE` (default `~/.cache/gemma-rs`), fetched with `scripts/fetch-model.sh`
//! when absent.
//!
//! Interactive (stdin is a terminal): `/reset` forgets the conversation, `/system TEXT`
//! sets the system prompt (`/system` alone clears it), `/image PATH` attaches an image to
//! the next message (with `--mmproj`), `/quit` (or Ctrl-D) leaves. Ctrl-C
//! stops the current answer; at the prompt it leaves. After each answer a line with the
//! prefill and decode speeds goes to stderr.
//!
//! Scripted (stdin is not a terminal): every non-empty line is a user message, answered
//! in turn; a line holding a JSON object `{"role": "user"|"assistant"|"system",
//! "content": "..."}` is that message, so a conversation can be replayed (a user message
//! followed by an assistant message is history, not answered). With `--single-message`
//! the whole of stdin is one user message. Answers go to stdout, one after another, each
//! followed by a newline; speeds go to stderr. Errors print one line and exit with status 1.
//!
//! Images: with `--mmproj F` (a Gemma 3 vision projector), `--image IMG` attaches an
//! image to the first user message and a `/image PATH` line (interactive or scripted)
//! to the next one (`--image-fit squash|letterbox` picks the preprocessing).

use std::error::Error;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "vision_support/mod.rs"]
mod vision_support;

use clap::Parser;
use gemma_core::generate::{CancelToken, GenerateOptions, StopReason};
use gemma_core::{
    Chat, ChatOptions, Device, KvType, Message, Model, ModelOptions, Role, SamplerConfig,
    TurnSummary,
};
use gemma_gguf::GgufFile;

/// Chat with a Gemma 3 GGUF model.
#[derive(Parser)]
#[command(about, allow_negative_numbers = true)]
struct Args {
    /// GGUF model file (default: $GEMMA_MODEL, else the project's default model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// List the GGUF models found on this machine and exit.
    #[arg(long)]
    list_models: bool,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Read all of stdin as one user message (scripted mode).
    #[arg(long)]
    single_message: bool,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// Sampling temperature; 0 (or below, as in llama.cpp) is greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 64)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens below min_p times the best one's probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Presence penalty (0: off).
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Frequency penalty (0: off).
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Random seed of the sampler (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop an answer at this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Context length (at most the model's).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// KV cache type: f16, q8_0 or f32.
    #[arg(long, default_value = "f16")]
    kv_type: KvType,
    /// Device: cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Vision projector (mmproj GGUF): enables `--image` and `/image PATH`.
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Image file (PNG, JPEG) attached to the first user message.
    #[arg(long, requires = "mmproj")]
    image: Option<PathBuf>,
    /// How a non-square image becomes the encoder's square.
    #[arg(long, value_enum, default_value_t = vision_support::FitArg::Squash)]
    image_fit: vision_support::FitArg,
}

/// The vision projector and how to preprocess images for it.
struct Vision {
    model: gemma_vision::VisionModel,
    fit: gemma_vision::Fit,
}

/// Encodes the image at `path` and attaches it to the chat's next user message.
fn attach_image(
    chat: &mut Chat,
    vision: Option<&Vision>,
    path: &Path,
) -> Result<(), Box<dyn Error>> {
    let vision = vision.ok_or("images need a vision projector: start with --mmproj F")?;
    let (rows, took) = vision_support::encode_image(&vision.model, path, vision.fit)?;
    chat.attach_image(rows)?;
    eprintln!(
        "(image {} encoded in {:.2} s)",
        path.display(),
        took.as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            eprintln!("{} (see --help)", first.trim_end());
            return ExitCode::FAILURE;
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources on one line.
fn one_line(e: &dyn Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(&format!(": {s}"));
        source = s.source();
    }
    line
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    if args.list_models {
        list_models();
        return Ok(());
    }
    let path = model_path(args.model.clone())?;
    let vision = match &args.mmproj {
        Some(mmproj) => Some(Vision {
            model: vision_support::load_vision(mmproj, args.device)?,
            fit: args.image_fit.into(),
        }),
        None => None,
    };
    let image_tokens = vision.as_ref().map_or(0, |v| v.model.n_image_tokens());
    let mut options = ModelOptions {
        threads: args.threads,
        device: args.device,
        ..ModelOptions::default()
    };
    // An image runs as one batch within the local layers' rings.
    options.ring_margin = options.ring_margin.max(image_tokens);
    options.max_batch = options.max_batch.max(image_tokens);
    let model = Model::load(&path, options).map_err(|e| format!("{}: {e}", path.display()))?;
    if let (Some(v), Some(mmproj)) = (&vision, &args.mmproj) {
        vision_support::check_hidden(&v.model, mmproj, model.config().n_embd)?;
    }
    let seed = args.seed.unwrap_or_else(clock_seed);
    let sampler = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed,
        ..SamplerConfig::default()
    };
    let cancel = CancelToken::new();
    let generate = GenerateOptions {
        max_tokens: args.max_tokens,
        sampler,
        stop_strings: args.stop.clone(),
        cancel: Some(cancel.clone()),
    };
    let options = ChatOptions {
        ctx_len: args.ctx,
        kv_type: args.kv_type,
        system: args.system.clone(),
        generate,
    };
    let mut chat = Chat::new(&model, options)?;
    if let Some(image) = &args.image {
        attach_image(&mut chat, vision.as_ref(), image)?;
    }
    if std::io::stdin().is_terminal() {
        interactive(&mut chat, &path, &cancel, vision.as_ref())
    } else {
        scripted(&mut chat, args.single_message, vision.as_ref())
    }
}

/// A seed that differs from run to run.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------- conversation modes

fn interactive(
    chat: &mut Chat,
    path: &Path,
    cancel: &CancelToken,
    vision: Option<&Vision>,
) -> Result<(), Box<dyn Error>> {
    sigint::install();
    eprintln!(
        "{} ({} tokens of context). /reset, /system TEXT, /image PATH, /quit; Ctrl-C stops an answer.",
        path.display(),
        chat.session().ctx_len()
    );
    let stdin = std::io::stdin();
    loop {
        print!("> ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            println!();
            return Ok(());
        }
        let line = line.trim();
        match line
            .split_once(' ')
            .map_or((line, ""), |(c, rest)| (c, rest.trim()))
        {
            ("", _) => continue,
            ("/quit" | "/exit", _) => return Ok(()),
            ("/reset", _) => {
                chat.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            ("/system", text) => {
                chat.set_system((!text.is_empty()).then(|| text.to_string()));
                eprintln!(
                    "(system prompt {})",
                    if text.is_empty() { "cleared" } else { "set" }
                );
                continue;
            }
            ("/image", image) => {
                if let Err(e) = attach_image(chat, vision, Path::new(image)) {
                    eprintln!("error: {}", one_line(e.as_ref()));
                }
                continue;
            }
            (command, _) if command.starts_with('/') => {
                eprintln!("unknown command {command}: /reset, /system TEXT, /image PATH, /quit");
                continue;
            }
            _ => {}
        }
        cancel.reset();
        sigint::set_answering(true);
        let result = chat.send(line, |piece| {
            if sigint::take_interrupt() {
                cancel.cancel();
            }
            print!("{}", piece.text);
            let _ = std::io::stdout().flush();
        });
        sigint::set_answering(false);
        println!();
        match result {
            Ok(summary) => eprintln!("{}", stats_line(&summary)),
            // A message that cannot be answered does not end the session.
            Err(e) => eprintln!("error: {}", one_line(&e)),
        }
    }
}

fn scripted(
    chat: &mut Chat,
    single_message: bool,
    vision: Option<&Vision>,
) -> Result<(), Box<dyn Error>> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let messages = if single_message {
        vec![Message::new(Role::User, input.trim())]
    } else {
        parse_script(&input)?
    };
    let stdout = std::io::stdout();
    for (i, message) in messages.iter().enumerate() {
        let answered_in_script = messages
            .get(i + 1)
            .is_some_and(|next| next.role == Role::Assistant);
        if message.role != Role::User || answered_in_script {
            chat.push(message.clone());
            continue;
        }
        if let Some(image) = message.content.strip_prefix("/image ") {
            attach_image(chat, vision, Path::new(image.trim()))?;
            continue;
        }
        let summary = chat.send(&message.content, |piece| {
            let mut out = stdout.lock();
            let _ = out.write_all(piece.text.as_bytes());
            let _ = out.flush();
        })?;
        println!();
        eprintln!("{}", stats_line(&summary));
    }
    Ok(())
}

/// Plain lines are user messages; JSON object lines carry a role.
fn parse_script(input: &str) -> Result<Vec<Message>, Box<dyn Error>> {
    let mut messages = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('{') {
            messages.push(Message::new(Role::User, line));
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("stdin line {}: invalid JSON: {e}", n + 1))?;
        let content = value["content"]
            .as_str()
            .ok_or_else(|| format!("stdin line {}: no \"content\" string", n + 1))?;
        let role = match value["role"].as_str() {
            Some("user") => Role::User,
            Some("assistant" | "model") => Role::Assistant,
            Some("system") => Role::System,
            _ => {
                return Err(format!(
                    "stdin line {}: \"role\" must be user, assistant or system",
                    n + 1
                )
                .into())
            }
        };
        messages.push(Message::new(role, content));
    }
    Ok(messages)
}

fn stats_line(summary: &TurnSummary) -> String {
    let s = &summary.stats;
    let stop = match &summary.stop {
        StopReason::EndOfGeneration(_) => "end of turn".to_string(),
        StopReason::MaxTokens => "token limit".to_string(),
        StopReason::StopString(text) => format!("stop string {text:?}"),
        StopReason::ContextFull => "context full (/reset to start over)".to_string(),
        StopReason::Cancelled => "interrupted".to_string(),
        StopReason::Error => "error".to_string(),
    };
    format!(
        "[prefill {} tok at {:.1} tok/s, {} reused | decode {} tok at {:.1} tok/s | {stop}]",
        s.prefill_tokens,
        s.prefill_tokens_per_s(),
        summary.reused_tokens,
        s.generated_tokens,
        s.decode_tokens_per_s(),
    )
}

// ---------------------------------------------------------------- finding the model

/// `--model`, else `$GEMMA_MODEL`, else the project's cached default (fetched if absent).
fn model_path(arg: Option<PathBuf>) -> Result<PathBuf, Box<dyn Error>> {
    if let Some(path) = arg.or_else(|| std::env::var_os("GEMMA_MODEL").map(PathBuf::from)) {
        return Ok(path);
    }
    let default = project_cache().join("gemma-3-270m-q4_k_m.gguf");
    if default.is_file() {
        return Ok(default);
    }
    fetch_default_model()
}

/// `$GEMMA_CACHE`, else `~/.cache/gemma-rs`.
fn project_cache() -> PathBuf {
    std::env::var_os("GEMMA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/gemma-rs"))
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Runs `scripts/fetch-model.sh`, showing the elapsed time while it works.
fn fetch_default_model() -> Result<PathBuf, Box<dyn Error>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-model.sh");
    eprintln!(
        "No model given: fetching the default Gemma 3 270M Q4_K_M (about 250 MB) with {}",
        script.display()
    );
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) {
                eprint!(
                    "\r  downloading and assembling... {:>4} s",
                    start.elapsed().as_secs()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            eprintln!("\r  done in {} s{:30}", start.elapsed().as_secs(), "");
        })
    };
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output();
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    let output = output.map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", script.display(), output.status).into());
    }
    let path = String::from_utf8_lossy(&output.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    if path.is_empty() || !Path::new(&path).is_file() {
        return Err(format!("{} did not produce a model file", script.display()).into());
    }
    Ok(PathBuf::from(path))
}

/// Prints the GGUF models found in the usual places.
fn list_models() {
    let home = home();
    let hf_hub = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .unwrap_or_else(|| home.join(".cache/huggingface/hub"));
    let ollama = std::env::var_os("OLLAMA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".ollama/models"));
    let places: [(&str, PathBuf, bool); 5] = [
        ("project", project_cache(), false),
        ("huggingface", hf_hub, false),
        ("ollama", ollama.join("blobs"), true),
        ("lmstudio", home.join(".lmstudio/models"), false),
        ("lmstudio", home.join(".cache/lm-studio/models"), false),
    ];
    let mut found = 0;
    for (source, dir, by_magic) in places {
        let mut files = Vec::new();
        collect_gguf(&dir, by_magic, 0, &mut files);
        files.sort();
        for file in files {
            found += 1;
            let size = std::fs::metadata(&file).map_or(0, |m| m.len());
            println!(
                "{source:<12} {:>9}  {:<40} {}",
                human_size(size),
                describe(&file),
                file.display()
            );
        }
    }
    if found == 0 {
        eprintln!("no GGUF models found (looked in the project cache, Hugging Face, Ollama and LM Studio folders)");
    }
}

/// GGUF files under `dir`: by the `.gguf` extension, or (Ollama's blobs) by the magic bytes.
fn collect_gguf(dir: &Path, by_magic: bool, depth: usize, out: &mut Vec<PathBuf>) {
    // Deep enough for hub/models--org--name/snapshots/<rev>/file.gguf; symlinked folders
    // are not followed, so there is no cycle.
    const MAX_DEPTH: usize = 8;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                collect_gguf(&path, by_magic, depth + 1, out);
            }
        } else if path.is_file() {
            let is_gguf = if by_magic {
                let mut magic = [0u8; 4];
                std::fs::File::open(&path)
                    .and_then(|mut f| f.read_exact(&mut magic))
                    .is_ok()
                    && &magic == b"GGUF"
            } else {
                path.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            };
            if is_gguf {
                out.push(path);
            }
        }
    }
}

/// Architecture and name from the file's metadata.
fn describe(path: &Path) -> String {
    match GgufFile::open(path) {
        Ok(file) => {
            let meta = file.metadata();
            let arch = meta.string("general.architecture").unwrap_or("?");
            let name = meta.string("general.name").unwrap_or("");
            let usable = if arch == "gemma3" {
                ""
            } else {
                " (not gemma3)"
            };
            format!("{arch} {name}{usable}")
        }
        Err(e) => format!("unreadable: {e}"),
    }
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
    }
}

// ---------------------------------------------------------------- Ctrl-C

/// Ctrl-C handling without extra crates: a C `signal` handler that only touches atomics
/// (or exits when no answer is running).
mod sigint {
    use std::sync::atomic::{AtomicBool, Ordering};

    static ANSWERING: AtomicBool = AtomicBool::new(false);
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);

    /// Whether an answer is being generated (Ctrl-C then stops it instead of exiting).
    pub fn set_answering(answering: bool) {
        INTERRUPTED.store(false, Ordering::SeqCst);
        ANSWERING.store(answering, Ordering::SeqCst);
    }

    /// Whether Ctrl-C was pressed since the last call.
    pub fn take_interrupt() -> bool {
        INTERRUPTED.swap(false, Ordering::SeqCst)
    }

    #[cfg(unix)]
    pub fn install() {
        extern "C" {
            fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
            fn _exit(status: i32) -> !;
        }
        const SIGINT: i32 = 2;
        extern "C" fn on_sigint(_: i32) {
            if ANSWERING.load(Ordering::SeqCst) {
                INTERRUPTED.store(true, Ordering::SeqCst);
            } else {
                // SAFETY: `_exit` is async-signal-safe; 130 is the shell's code for SIGINT.
                unsafe { _exit(130) }
            }
        }
        // SAFETY: `signal` is the C library's; the handler only uses atomics and `_exit`,
        // both async-signal-safe.
        unsafe {
            signal(SIGINT, on_sigint);
        }
    }

    #[cfg(not(unix))]
    pub fn install() {}
}
