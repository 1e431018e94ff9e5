//! Tokenize text with a GGUF file's vocabulary, as JSON lines.
//!
//! ```text
//! echo '{"text": "Hello world"}' | cargo run --release --example tokenize -- --model F
//! {"ids":[9259,1902]}
//! echo '{"ids": [9259, 1902]}' | cargo run --release --example tokenize -- --model F --decode
//! {"text":"Hello world"}
//! ```
//! Encoding adds no BOS (`--bos` adds it when the file asks for it) and matches special
//! tokens written in the text (`<start_of_turn>`...; `--no-special` treats them as text).
//! Decoding renders special tokens as their text. Only the vocabulary is read, so a
//! vocab-only GGUF works too. A bad line stops with one error line and exit code 1.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gemma_core::{EncodeOptions, Tokenizer};
use gemma_gguf::GgufFile;
use serde_json::{json, Value};

/// JSON lines in, JSON lines out: {"text": ...} -> {"ids": [...]}, or the reverse with --decode.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// GGUF file whose vocabulary to use.
    #[arg(long)]
    model: PathBuf,
    /// Read {"ids": [...]} lines and write {"text": ...} lines.
    #[arg(long)]
    decode: bool,
    /// Prepend BOS when the file's `tokenizer.ggml.add_bos_token` says so.
    #[arg(long)]
    bos: bool,
    /// Do not match control tokens written in the text.
    #[arg(long)]
    no_special: bool,
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
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let file = GgufFile::open(&args.model).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let tokenizer =
        Tokenizer::from_gguf(&file).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let options = EncodeOptions {
        add_bos: args.bos,
        parse_special: !args.no_special,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: String| format!("line {}: {what}", index + 1);
        let value: Value =
            serde_json::from_str(&line).map_err(|e| at(format!("invalid JSON: {e}")))?;
        let answer = if args.decode {
            let ids = value["ids"]
                .as_array()
                .ok_or_else(|| at("expected an object with an \"ids\" array".into()))?
                .iter()
                .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| at("\"ids\" must hold token ids (non-negative integers)".into()))?;
            let text = tokenizer.decode(&ids).map_err(|e| at(e.to_string()))?;
            json!({ "text": text })
        } else {
            let text = value["text"]
                .as_str()
                .ok_or_else(|| at("expected an object with a \"text\" string".into()))?;
            json!({ "ids": tokenizer.encode_with(text, options) })
        };
        writeln!(out, "{answer}").map_err(|e| format!("writing stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("writing stdout: {e}"))
}
