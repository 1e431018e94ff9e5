//! gguf-info: what is inside a GGUF file.
//!
//! ```text
//! gguf-info FILE                 metadata (long arrays summarized), tensor table, per-type totals
//! gguf-info FILE --json          the same as one JSON object
//! gguf-info FILE --dump-tensor NAME --out OUT.f32
//!                                the tensor dequantized to little-endian f32, ggml element order
//! ```
//! A malformed file exits with code 1 and one line on stderr naming the problem.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;
use gemma::gguf::{GgmlType, GgufFile, Value};
use serde_json::{json, Value as Json};

/// Arrays longer than this are summarized (length and first elements).
const ARRAY_SHOWN: usize = 8;
/// Strings longer than this are cut in the human output.
const STRING_SHOWN: usize = 72;
/// Elements dequantized per step of `--dump-tensor` (bounds its memory).
const DUMP_CHUNK_ELEMS: u64 = 1 << 20;

/// Command line of gguf-info.
#[derive(Parser, Debug)]
#[command(
    name = "gguf-info",
    about = "Show the metadata and tensors of a GGUF file"
)]
pub struct Args {
    /// The GGUF file.
    pub file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Dequantize this tensor to little-endian f32 (needs --out).
    #[arg(long, value_name = "NAME", requires = "out")]
    pub dump_tensor: Option<String>,
    /// Output file of --dump-tensor.
    #[arg(long, value_name = "FILE.f32")]
    pub out: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(text) => {
            // A closed pipe (`gguf-info f | head`) is not an error worth reporting.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        Err(message) => {
            eprintln!("{}", message.replace('\n', " "));
            std::process::exit(1);
        }
    }
}

/// Runs the command; returns what to print, or the one-line error message.
pub fn run(args: &Args) -> Result<String, String> {
    let shown = args.file.display();
    let file = GgufFile::open(&args.file).map_err(|e| format!("gguf-info: {shown}: {e}"))?;
    if let (Some(name), Some(out)) = (&args.dump_tensor, &args.out) {
        let n = dump_tensor(&file, name, out).map_err(|e| format!("gguf-info: {shown}: {e}"))?;
        return Ok(format!(
            "wrote {n} f32 values of `{name}` to {}\n",
            out.display()
        ));
    }
    if args.json {
        let mut text =
            serde_json::to_string_pretty(&to_json(&file, &args.file)).map_err(|e| e.to_string())?;
        text.push('\n');
        return Ok(text);
    }
    Ok(to_text(&file, &args.file))
}

/// Per-type tensor count and bytes, by type name.
fn type_totals(file: &GgufFile) -> BTreeMap<GgmlType, (usize, u64)> {
    let mut totals = BTreeMap::new();
    for t in file.tensors() {
        let entry = totals.entry(t.ty).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += t.n_bytes;
    }
    totals
}

/// The JSON object of `--json`.
pub fn to_json(file: &GgufFile, path: &Path) -> Json {
    let metadata: serde_json::Map<String, Json> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), value_json(v)))
        .collect();
    let tensors: Vec<Json> = file
        .tensors()
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.dims, "offset": t.offset, "bytes": t.n_bytes}))
        .collect();
    let totals: serde_json::Map<String, Json> = type_totals(file)
        .into_iter()
        .map(|(ty, (count, bytes))| {
            (
                ty.name().to_owned(),
                json!({"count": count, "bytes": bytes}),
            )
        })
        .collect();
    json!({
        "file": path.display().to_string(),
        "file_size": file.bytes().len(),
        "version": file.version(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "metadata_count": file.metadata().len(),
        "tensor_count": file.tensors().len(),
        "metadata": metadata,
        "tensors": tensors,
        "type_totals": totals,
    })
}

/// A metadata value as JSON; arrays longer than [`ARRAY_SHOWN`] become
/// `{"type": "array", "elem": .., "len": .., "first": [..]}`.
fn value_json(value: &Value) -> Json {
    match value {
        Value::U8(v) => json!(v),
        Value::I8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::I64(v) => json!(v),
        Value::F32(v) => json!(v),
        Value::F64(v) => json!(v),
        Value::Bool(v) => json!(v),
        Value::String(s) => json!(s),
        Value::Array(a) if a.len() <= ARRAY_SHOWN => {
            Json::Array(a.iter().map(|v| value_json(&v)).collect())
        }
        Value::Array(a) => json!({
            "type": "array",
            "elem": a.elem_type().name(),
            "len": a.len(),
            "first": a.iter().take(ARRAY_SHOWN).map(|v| value_json(&v)).collect::<Vec<_>>(),
        }),
    }
}

/// A metadata value for the human output.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => string_text(s),
        Value::Array(a) => {
            let shown: Vec<String> = a.iter().take(ARRAY_SHOWN).map(|v| value_text(&v)).collect();
            let more = if a.len() > ARRAY_SHOWN { ", ..." } else { "" };
            format!("[{}{more}] ({} elements)", shown.join(", "), a.len())
        }
        Value::F32(v) => format!("{v:e}"),
        Value::F64(v) => format!("{v:e}"),
        other => value_json(other).to_string(),
    }
}

/// A string quoted and escaped, cut after [`STRING_SHOWN`] characters.
fn string_text(s: &str) -> String {
    let count = s.chars().count();
    if count <= STRING_SHOWN {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(STRING_SHOWN).collect();
    format!("{head:?}... ({} bytes)", s.len())
}

/// The human-readable report.
pub fn to_text(file: &GgufFile, path: &Path) -> String {
    let mut out = String::new();
    let size = file.bytes().len() as u64;
    let md = file.metadata();
    let _ = writeln!(
        out,
        "file: {} ({size} bytes, {})",
        path.display(),
        human_bytes(size)
    );
    let _ = writeln!(
        out,
        "GGUF v{}, {} metadata keys, {} tensors, alignment {}, data section at offset {}",
        file.version(),
        md.len(),
        file.tensors().len(),
        file.alignment(),
        file.data_offset()
    );
    let _ = writeln!(out, "\nmetadata:");
    let key_width = md.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in md.iter() {
        let _ = writeln!(
            out,
            "  {key:key_width$}  {:<13}  {}",
            value.type_name(),
            value_text(value)
        );
    }
    if !file.tensors().is_empty() {
        let name_width = file
            .tensors()
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(out, "\ntensors:");
        let _ = writeln!(
            out,
            "  {:name_width$}  {:<7}  {:<22}  {:>12}  {:>12}",
            "name", "type", "shape", "bytes", "offset"
        );
        for t in file.tensors() {
            let shape = format!("{:?}", t.dims);
            let _ = writeln!(
                out,
                "  {:name_width$}  {:<7}  {shape:<22}  {:>12}  {:>12}",
                t.name,
                t.ty.name(),
                t.n_bytes,
                t.offset
            );
        }
    }
    let _ = writeln!(out, "\nper type:");
    let mut total = 0;
    for (ty, (count, bytes)) in type_totals(file) {
        total += bytes;
        let _ = writeln!(
            out,
            "  {:<7}  {count:>5} tensors  {bytes:>12} bytes  ({})",
            ty.name(),
            human_bytes(bytes)
        );
    }
    let _ = writeln!(
        out,
        "  total    {:>5} tensors  {total:>12} bytes  ({})",
        file.tensors().len(),
        human_bytes(total)
    );
    let _ = writeln!(out, "file size: {size} bytes ({})", human_bytes(size));
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Writes tensor `name` dequantized to little-endian f32 at `out`, a bounded number of
/// rows at a time; returns the number of values written.
pub fn dump_tensor(file: &GgufFile, name: &str, out: &Path) -> Result<u64, String> {
    let t = file
        .tensor(name)
        .ok_or_else(|| format!("no tensor named `{name}`"))?;
    let bytes = file.tensor_data(t);
    let row_len = t.row_len();
    // The reader checked that rows are whole blocks and that the sizes fit in the file.
    let row_bytes =
        t.ty.row_bytes(row_len)
            .ok_or_else(|| format!("tensor `{name}`: rows are not whole blocks"))?;
    let rows_per_chunk = (DUMP_CHUNK_ELEMS / row_len.max(1)).max(1);
    let chunk_bytes = (rows_per_chunk * row_bytes) as usize;
    let file_out =
        std::fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file_out);
    let mut values = Vec::new();
    let mut written = 0u64;
    for chunk in bytes.chunks(chunk_bytes.max(1)) {
        let rows = (chunk.len() as u64).checked_div(row_bytes).unwrap_or(0);
        values.resize((rows * row_len) as usize, 0.0f32);
        gemma::kernels::quant::dequantize(t.ty, chunk, &mut values)
            .map_err(|e| format!("cannot dequantize tensor `{name}` ({}): {e}", t.ty))?;
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        writer
            .write_all(&le)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        written += values.len() as u64;
    }
    writer
        .flush()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(written)
}
