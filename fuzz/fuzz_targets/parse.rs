//! Fuzz target: any bytes must parse to a file or a typed error, never a panic, an
//! out-of-bounds read or an allocation the input does not justify. Every accepted file is
//! read completely, and rewritten through the writer, which must give back the same
//! metadata and tensor bytes.

#![no_main]

use gemma_gguf::{GgufFile, GgufWriter, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let md = file.metadata();
    for (key, value) in md.iter() {
        let _ = (
            md.u32(key),
            md.i64(key),
            md.f32(key),
            md.bool(key),
            md.string(key),
        );
        let _ = (md.f32_array(key), md.i32_array(key), md.bool_array(key));
        if let Value::Array(array) = value {
            visit(array);
        }
    }
    for t in file.tensors() {
        assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(file.tensor(&t.name), Some(t));
    }

    let mut w = GgufWriter::new(std::io::Cursor::new(Vec::new()));
    for (key, value) in md.iter() {
        if key != "general.alignment" {
            w.add_metadata(key, value.clone())
                .expect("metadata of a valid file is writable");
        }
    }
    w.set_alignment(file.alignment())
        .expect("alignment of a valid file");
    for t in file.tensors() {
        w.add_tensor(t.name.clone(), t.ty, &t.dims)
            .expect("tensor of a valid file is writable");
    }
    w.write_header().expect("header");
    for t in file.tensors() {
        w.write_tensor_data(&t.name, file.tensor_data(t))
            .expect("tensor data");
    }
    let bytes = w.finish().expect("finish").into_inner();
    let again = GgufFile::from_bytes(bytes).expect("a rewritten valid file parses");
    assert_eq!(again.tensors().len(), file.tensors().len());
    for (a, b) in file.tensors().iter().zip(again.tensors()) {
        assert_eq!((&a.name, a.ty, &a.dims), (&b.name, b.ty, &b.dims));
        assert_eq!(file.tensor_data(a), again.tensor_data(b));
    }
    for (key, value) in md.iter() {
        if key != "general.alignment" {
            let rewritten = again.metadata().get(key).expect("key kept");
            assert!(same(rewritten, value), "{key}: {rewritten:?} != {value:?}");
        }
    }
});

/// Reads every element of an array, recursively.
fn visit(array: &gemma_gguf::Array) {
    if let Some(strings) = array.strings() {
        assert_eq!(strings.iter().count(), array.len());
    }
    let mut n = 0;
    for element in array.iter() {
        if let Value::Array(inner) = &element {
            visit(inner);
        }
        n += 1;
    }
    assert_eq!(n, array.len());
}

/// Equality with floats compared bit for bit (NaN payloads must survive a rewrite).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}
