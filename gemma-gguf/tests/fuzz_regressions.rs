//! Every input the fuzzer (fuzz/fuzz_targets/parse.rs) found to crash, kept with the
//! property it broke: a file the reader accepts must be rewritable by the writer into a
//! file with the same metadata (floats bit for bit) and tensor bytes.

use std::path::PathBuf;

use gemma_gguf::{GgufFile, GgufWriter, Value};

fn data(name: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz")).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// The fuzz target's round-trip property.
fn rewrite_round_trips(file: &GgufFile) {
    let mut w = GgufWriter::new(std::io::Cursor::new(Vec::new()));
    for (key, value) in file.metadata().iter() {
        if key != "general.alignment" {
            w.add_metadata(key, value.clone()).unwrap();
        }
    }
    w.set_alignment(file.alignment()).unwrap();
    for t in file.tensors() {
        w.add_tensor(t.name.clone(), t.ty, &t.dims).unwrap();
    }
    w.write_header().unwrap();
    for t in file.tensors() {
        w.write_tensor_data(&t.name, file.tensor_data(t)).unwrap();
    }
    let again = GgufFile::from_bytes(w.finish().unwrap().into_inner()).unwrap();
    for (a, b) in file.tensors().iter().zip(again.tensors()) {
        assert_eq!((&a.name, a.ty, &a.dims), (&b.name, b.ty, &b.dims));
        assert_eq!(file.tensor_data(a), again.tensor_data(b));
    }
    for (key, value) in file.metadata().iter() {
        if key != "general.alignment" {
            assert!(same(again.metadata().get(key).unwrap(), value), "{key}");
        }
    }
}

/// Found by the fuzzer: a zero-byte tensor last in the file; the writer had already marked
/// it complete and refused its (empty) data.
#[test]
fn zero_size_last_tensor_rewrite() {
    let file =
        GgufFile::from_bytes(data("zero_size_last_tensor_rewrite.gguf")).expect("valid v2 file");
    let last = file.tensors().last().unwrap();
    assert_eq!((last.name.as_str(), last.n_bytes), ("b", 0));
    rewrite_round_trips(&file);
}

/// Found by the fuzzer: an f32 NaN metadata value (a NaN is not equal to itself; it must
/// survive the rewrite bit for bit).
#[test]
fn nan_metadata_value() {
    let file = GgufFile::from_bytes(data("nan_metadata_value.gguf")).expect("valid v2 file");
    let (_, value) = file.metadata().iter().next().unwrap();
    assert!(matches!(value, Value::F32(v) if v.is_nan()));
    rewrite_round_trips(&file);
}
