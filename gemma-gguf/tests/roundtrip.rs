//! The writer: round trips through the reader, byte-identical rewrites of files written by
//! gguf-py and llama.cpp, chunked streaming, and every misuse reported.

mod common;

use std::io::Cursor;

use common::values::every_value;
use gemma_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};

fn writer() -> GgufWriter<Cursor<Vec<u8>>> {
    GgufWriter::new(Cursor::new(Vec::new()))
}

#[test]
fn every_value_type_round_trips() {
    let mut w = writer();
    w.set_alignment(64).unwrap();
    for (k, v) in every_value() {
        w.add_metadata(k, v).unwrap();
    }
    let tensors: [(&str, GgmlType, &[u64]); 4] = [
        ("q4k", GgmlType::Q4_K, &[512, 3]),
        ("f16", GgmlType::F16, &[5]),
        ("q8", GgmlType::Q8_0, &[64, 2, 2]),
        ("bf16", GgmlType::BF16, &[3, 1, 1, 2]),
    ];
    for (name, ty, dims) in tensors {
        w.add_tensor(name, ty, dims).unwrap();
    }
    let planned = w.planned_size();
    w.write_header().unwrap();
    let mut contents = Vec::new();
    for (i, (name, ty, dims)) in tensors.iter().enumerate() {
        let n = ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
        let bytes: Vec<u8> = (0..n)
            .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8))
            .collect();
        w.write_tensor_data(name, &bytes).unwrap();
        contents.push(bytes);
    }
    let bytes = w.finish().unwrap().into_inner();
    assert_eq!(bytes.len() as u64, planned);

    let file = GgufFile::from_bytes(bytes).expect("reads back");
    assert_eq!((file.version(), file.alignment()), (3, 64));
    let mut expected = vec![("general.alignment".to_owned(), Value::U32(64))];
    expected.extend(every_value());
    let read: Vec<(String, Value)> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    assert_eq!(read, expected);
    for ((name, ty, dims), bytes) in tensors.iter().zip(&contents) {
        let t = file.tensor(name).unwrap();
        assert_eq!((t.ty, t.dims.as_slice()), (*ty, *dims));
        assert_eq!(t.offset % 64, 0);
        assert_eq!(file.tensor_data(t), bytes.as_slice());
    }
    let md = file.metadata();
    assert_eq!(md.i32_array("a.u16").unwrap(), [1, 65_535]);
    assert!(
        matches!(md.i32_array("a.u64"), Err(GgufError::OutOfRange { value, .. }) if value == u64::MAX as i128)
    );
    assert!(matches!(md.u32("t.i8"), Err(GgufError::OutOfRange { .. })));
    assert_eq!(md.i64("t.i64").unwrap(), i64::MIN);
    assert_eq!(md.f32("t.f64").unwrap(), std::f32::consts::PI);
    assert_eq!(md.f32_array("a.i32").unwrap(), [-3.0, 4.0]);
    assert_eq!(md.bool_array("a.bool").unwrap(), [true, false, true]);
    let nested = md.array("a.nested").unwrap();
    assert_eq!(nested.elem_type(), ValueType::Array);
    let inner = nested.get(1).unwrap();
    assert_eq!(inner.type_name(), "array<array>");
}

/// Rewriting a file through reader and writer reproduces it byte for byte: the layout is
/// the one gguf-py (F32 source) and llama.cpp (quantized files) write.
#[test]
fn rewrite_of_fixture_files_is_byte_identical() {
    let root = common::fixtures();
    for name in [
        "tiny-gemma3-t1-f32.gguf",
        "tiny-gemma3-t1-q4_k_m.gguf",
        "tiny-gemma3-t1-iq4_xs.gguf",
    ] {
        let original = std::fs::read(root.join("tiny").join(name)).expect("read fixture");
        let file = GgufFile::from_bytes(original.clone()).expect("parse");
        let mut w = writer();
        for (k, v) in file.metadata().iter() {
            w.add_metadata(k, v.clone()).unwrap();
        }
        for t in file.tensors() {
            w.add_tensor(t.name.clone(), t.ty, &t.dims).unwrap();
        }
        w.write_header().unwrap();
        for t in file.tensors() {
            w.write_tensor_data(&t.name, file.tensor_data(t)).unwrap();
        }
        let rewritten = w.finish().unwrap().into_inner();
        assert!(
            rewritten == original,
            "{name}: rewrite differs from the original"
        );
    }
}

#[test]
fn chunked_writes_equal_whole_writes() {
    let data: Vec<u8> = (0..34 * 8).map(|i| i as u8).collect();
    let build = |chunk: usize| {
        let mut w = writer();
        w.add_tensor("a", GgmlType::Q8_0, &[32, 8]).unwrap();
        w.add_tensor("empty", GgmlType::F32, &[0]).unwrap();
        w.add_tensor("b", GgmlType::F32, &[3]).unwrap();
        w.write_header().unwrap();
        for piece in data.chunks(chunk) {
            w.write_tensor_data("a", piece).unwrap();
        }
        w.write_tensor_data("b", &[0u8; 12]).unwrap();
        w.finish().unwrap().into_inner()
    };
    let whole = build(data.len());
    assert_eq!(build(1), whole);
    assert_eq!(build(7), whole);
    let file = GgufFile::from_bytes(whole).unwrap();
    assert_eq!(file.tensor_data(file.tensor("a").unwrap()), data.as_slice());
    assert_eq!(file.tensor("empty").unwrap().n_bytes, 0);
}

fn misuse_reason(result: Result<(), GgufError>) -> &'static str {
    match result {
        Err(GgufError::WriterMisuse { reason, .. }) => reason,
        other => panic!("expected WriterMisuse, got {other:?}"),
    }
}

#[test]
fn writer_misuse_is_reported() {
    let mut w = writer();
    w.add_metadata("k", Value::U8(1)).unwrap();
    assert_eq!(
        misuse_reason(w.add_metadata("k", Value::U8(2))),
        "duplicate metadata key"
    );
    w.add_tensor("a", GgmlType::F32, &[4]).unwrap();
    w.add_tensor("b", GgmlType::F32, &[4]).unwrap();
    assert_eq!(
        misuse_reason(w.add_tensor("a", GgmlType::F32, &[4])),
        "duplicate tensor name"
    );
    assert_eq!(
        misuse_reason(w.add_tensor("c", GgmlType::Q4_0, &[16])),
        "row length is not a multiple of the type's block size"
    );
    assert_eq!(
        misuse_reason(w.add_tensor("c", GgmlType::F32, &[1; 5])),
        "more than 4 dimensions"
    );
    assert_eq!(
        misuse_reason(w.add_tensor("c", GgmlType::F32, &[u64::MAX, 2])),
        "shape overflows"
    );
    assert_eq!(
        misuse_reason(w.add_tensor("x".repeat(64), GgmlType::F32, &[1])),
        "tensor name longer than 63 bytes"
    );
    assert!(matches!(
        w.set_alignment(24),
        Err(GgufError::InvalidAlignment { .. })
    ));
    assert!(matches!(
        w.set_alignment(0),
        Err(GgufError::InvalidAlignment { .. })
    ));
    assert_eq!(
        misuse_reason(w.write_tensor_data("a", &[0; 16])),
        "tensor data written before write_header"
    );
    w.write_header().unwrap();
    assert_eq!(
        misuse_reason(w.add_metadata("late", Value::U8(1))),
        "declaration after write_header"
    );
    assert_eq!(
        misuse_reason(w.write_tensor_data("zzz", &[0; 16])),
        "tensor was never declared"
    );
    assert!(misuse_reason(w.write_tensor_data("b", &[0; 16])).contains("out of declaration order"));
    assert_eq!(
        misuse_reason(w.write_tensor_data("a", &[0; 17])),
        "more bytes than the tensor's declared size"
    );
    w.write_tensor_data("a", &[0; 16]).unwrap();
    match w.finish() {
        Err(GgufError::WriterMisuse { name, reason }) => assert_eq!(
            (name.as_str(), reason),
            ("b", "tensor data incomplete at finish")
        ),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn alignment_given_as_metadata_sets_the_alignment() {
    let mut w = writer();
    w.add_metadata("general.alignment", Value::U64(128))
        .unwrap();
    w.add_tensor("a", GgmlType::F32, &[1]).unwrap();
    w.write_header().unwrap();
    w.write_tensor_data("a", &[0; 4]).unwrap();
    let file = GgufFile::from_bytes(w.finish().unwrap().into_inner()).unwrap();
    assert_eq!(file.alignment(), 128);
    assert_eq!(
        file.metadata().get("general.alignment"),
        Some(&Value::U32(128))
    );
    assert_eq!(file.data_offset() % 128, 0);
    let mut w = writer();
    assert!(matches!(
        w.add_metadata("general.alignment", Value::from("x")),
        Err(GgufError::WriterMisuse { .. })
    ));
}

#[test]
fn metadata_only_file() {
    let mut w = writer();
    w.add_metadata("general.name", "vocab").unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.metadata().string("general.name").unwrap(), "vocab");
    assert!(file.tensors().is_empty());
}

#[test]
fn written_to_disk_and_mapped() {
    let dir = std::env::temp_dir().join(format!("gemma-gguf-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.gguf");
    let mut w = GgufWriter::create(&path).unwrap();
    w.add_tensor("w", GgmlType::Q6_K, &[256, 2]).unwrap();
    w.write_header().unwrap();
    w.write_tensor_data("w", &[5u8; 420]).unwrap();
    w.finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.tensor_data(&file.tensors()[0]), &[5u8; 420][..]);
    std::fs::remove_dir_all(&dir).unwrap();
    let missing = GgufFile::open(dir.join("missing.gguf")).expect_err("missing file");
    assert!(matches!(missing, GgufError::Open { .. }));
}
