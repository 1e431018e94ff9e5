//! One test per kind of malformed or hostile file: each asserts the exact error variant,
//! its byte offset and the key or tensor it names.

mod common;

use common::raw::{ty, Raw};
use gemma_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, MAX_ARRAY_DEPTH};

/// Header + one key + the given tensors; returns the bytes up to (not including) the data.
fn with_tensors(tensors: &[(&str, &[u64], u32, u64)]) -> Raw {
    let mut r = Raw::header(3, tensors.len() as u64, 1);
    r.kv_str("general.architecture", "gemma3");
    for &(name, dims, type_id, offset) in tensors {
        r.tensor(name, dims, type_id, offset);
    }
    r.pad(32);
    r
}

fn parse(r: &Raw) -> GgufError {
    match GgufFile::from_bytes(r.bytes.clone()) {
        Ok(_) => panic!("malformed file was accepted"),
        Err(e) => e,
    }
}

const F32: u32 = 0;

#[test]
fn minimal_valid_file_parses() {
    let mut r = with_tensors(&[("a", &[8], F32, 0), ("b", &[4, 2], F32, 32)]);
    r.data(64);
    let file = GgufFile::from_bytes(r.bytes).expect("valid");
    assert_eq!(file.tensors().len(), 2);
    assert_eq!(file.data_offset() % 32, 0);
    assert_eq!(file.tensor("b").unwrap().offset, file.data_offset() + 32);
    let empty = GgufFile::from_bytes(Raw::header(2, 0, 0).bytes).expect("empty v2 file");
    assert_eq!((empty.version(), empty.metadata().len()), (2, 0));
}

#[test]
fn wrong_magic() {
    let mut r = Raw::header(3, 0, 0);
    r.bytes[..4].copy_from_slice(b"GGML");
    match parse(&r) {
        GgufError::BadMagic { offset, found } => {
            assert_eq!((offset, found.as_slice()), (0, &b"GGML"[..]))
        }
        e => panic!("{e:?}"),
    }
    let e = GgufFile::from_bytes(b"PK".to_vec()).expect_err("rejected");
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e:?}");
}

#[test]
fn unsupported_versions() {
    for version in [0, 1, 4, 0x0300_0000] {
        match parse(&Raw::header(version, 0, 0)) {
            GgufError::UnsupportedVersion {
                offset: 4,
                version: v,
            } => assert_eq!(v, version),
            e => panic!("{e:?}"),
        }
    }
    let message = parse(&Raw::header(0x0300_0000, 0, 0)).to_string();
    assert!(message.contains("big-endian"), "{message}");
}

#[test]
fn truncated_header() {
    let r = Raw::header(3, 0, 0);
    let short = Raw {
        bytes: r.bytes[..20].to_vec(),
    };
    match parse(&short) {
        GgufError::Truncated {
            offset,
            needed,
            available,
            context,
        } => {
            assert_eq!((offset, needed, available), (16, 8, 4));
            assert_eq!(context, "metadata key count");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn truncated_metadata_value() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.name").u32(ty::U64).u32(7);
    match parse(&r) {
        GgufError::Truncated {
            offset,
            needed: 8,
            available: 4,
            context,
        } => {
            assert_eq!(offset, 24 + 8 + 12 + 4);
            assert!(context.contains("general.name"), "{context}");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn truncated_tensor_table() {
    let mut r = Raw::header(3, 1, 0);
    r.str(b"blk.0.attn_q.weight").u32(2).u64(8);
    match parse(&r) {
        GgufError::Truncated {
            offset, context, ..
        } => {
            assert_eq!(offset, 24 + 27 + 4 + 8);
            assert!(context.contains("`blk.0.attn_q.weight`"), "{context}");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn truncated_data_section() {
    let mut r = with_tensors(&[("a", &[8], F32, 0), ("b", &[8], F32, 32)]);
    let data_start = r.pos();
    r.data(40); // b needs bytes 32..64 of the data section
    match parse(&r) {
        GgufError::TensorOutOfBounds {
            tensor,
            start,
            end,
            file_len,
            ..
        } => {
            assert_eq!(tensor, "b");
            assert_eq!(
                (start, end, file_len),
                (data_start + 32, data_start + 64, data_start + 40)
            );
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn string_length_past_end_of_file() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"general.name")
        .u32(ty::STRING)
        .u64(1 << 40)
        .raw(b"abc");
    match parse(&r) {
        GgufError::Truncated {
            offset,
            needed,
            available,
            context,
        } => {
            assert_eq!((offset, needed, available), (24 + 20 + 4 + 8, 1 << 40, 3));
            assert!(context.contains("general.name"));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn array_count_past_end_of_file() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"tokenizer.ggml.tokens")
        .u32(ty::ARRAY)
        .u32(ty::STRING)
        .u64(u64::MAX / 2);
    r.str(b"a");
    match parse(&r) {
        GgufError::CountTooLarge {
            offset,
            what,
            count,
            available,
            ..
        } => {
            assert_eq!((offset, count, available), (24 + 29 + 8, u64::MAX / 2, 9));
            assert!(what.contains("tokenizer.ggml.tokens"), "{what}");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn key_and_tensor_counts_larger_than_the_file() {
    match parse(&Raw::header(3, 0, 1000)) {
        GgufError::CountTooLarge {
            offset: 16,
            count: 1000,
            min_bytes: 13_000,
            available: 0,
            ..
        } => {}
        e => panic!("{e:?}"),
    }
    let mut r = Raw::header(3, 50, 0);
    r.data(100);
    match parse(&r) {
        GgufError::CountTooLarge {
            offset: 8, what, ..
        } => assert_eq!(what, "tensor"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn key_and_tensor_counts_over_the_caps() {
    match parse(&Raw::header(3, 0, 1 << 60)) {
        GgufError::TooMany {
            offset: 16,
            what: "metadata key",
            count,
            limit,
        } => assert_eq!((count, limit), (1 << 60, gemma_gguf::MAX_METADATA_KEYS)),
        e => panic!("{e:?}"),
    }
    match parse(&Raw::header(3, u64::MAX, 0)) {
        GgufError::TooMany {
            offset: 8,
            what: "tensor",
            ..
        } => {}
        e => panic!("{e:?}"),
    }
}

#[test]
fn nested_array_recursion_bomb() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"bomb").u32(ty::ARRAY);
    for _ in 0..100_000 {
        r.u32(ty::ARRAY).u64(1);
    }
    match parse(&r) {
        GgufError::NestingTooDeep { key, limit, offset } => {
            assert_eq!((key.as_str(), limit), ("bomb", MAX_ARRAY_DEPTH));
            assert_eq!(offset, 24 + 12 + 4 + 12 * MAX_ARRAY_DEPTH as u64);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn nested_arrays_within_the_cap_are_read() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"nested").u32(ty::ARRAY);
    r.u32(ty::ARRAY).u64(2);
    r.u32(ty::U16).u64(2).raw(&[1, 0, 2, 0]);
    r.u32(ty::STRING).u64(1).str(b"x");
    let file = GgufFile::from_bytes(r.bytes).expect("valid");
    let outer = file.metadata().array("nested").unwrap();
    assert_eq!(outer.len(), 2);
    let first = outer.get(0).unwrap();
    assert_eq!(
        first.as_array().unwrap().iter().collect::<Vec<_>>(),
        [Value::U16(1), Value::U16(2)]
    );
    let second = outer.get(1).unwrap();
    assert_eq!(
        second.as_array().unwrap().strings().unwrap().get(0),
        Some("x")
    );
    assert_eq!(outer.get(2), None);
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(13).u32(0);
    match parse(&r) {
        GgufError::UnknownValueType {
            offset,
            key,
            type_id,
        } => assert_eq!((offset, key.as_str(), type_id), (33, "k", 13)),
        e => panic!("{e:?}"),
    }
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr").u32(ty::ARRAY).u32(99).u64(0);
    match parse(&r) {
        GgufError::UnknownValueType {
            offset,
            type_id: 99,
            ..
        } => assert_eq!(offset, 24 + 11 + 4),
        e => panic!("{e:?}"),
    }
}

#[test]
fn unknown_tensor_type() {
    let r = with_tensors(&[("w", &[32], 4, 0)]); // id 4 was Q4_2, removed from ggml
    match parse(&r) {
        GgufError::UnknownTensorType {
            tensor,
            type_id,
            offset,
        } => {
            assert_eq!((tensor.as_str(), type_id), ("w", 4));
            assert_eq!(offset, 24 + 28 + 4 + 14 + 9 + 4 + 8);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn more_than_four_dimensions() {
    let r = with_tensors(&[("w", &[1, 1, 1, 1, 1], F32, 0)]);
    match parse(&r) {
        GgufError::TooManyDims { tensor, n_dims, .. } => {
            assert_eq!((tensor.as_str(), n_dims), ("w", 5))
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn shape_product_overflow() {
    for dims in [
        &[1u64 << 32, 1 << 32][..],
        &[u64::MAX],
        &[0, u64::MAX],
        &[1 << 62, 2],
    ] {
        let r = with_tensors(&[("w", dims, F32, 0)]);
        match parse(&r) {
            GgufError::ShapeOverflow {
                tensor, dims: d, ..
            } => assert_eq!((tensor.as_str(), d.as_slice()), ("w", dims)),
            e => panic!("{dims:?}: {e:?}"),
        }
    }
}

#[test]
fn row_length_not_a_multiple_of_the_block() {
    let r = with_tensors(&[("w", &[100, 2], GgmlType::Q4_K.id(), 0)]);
    match parse(&r) {
        GgufError::RowNotBlockAligned {
            tensor,
            ty,
            row_len,
            block,
            ..
        } => {
            assert_eq!(
                (tensor.as_str(), ty, row_len, block),
                ("w", GgmlType::Q4_K, 100, 256)
            );
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn misaligned_tensor_offset() {
    let mut r = with_tensors(&[("w", &[4], F32, 16)]);
    r.data(64);
    match parse(&r) {
        GgufError::MisalignedTensor {
            tensor,
            data_offset,
            alignment,
            offset,
        } => {
            assert_eq!((tensor.as_str(), data_offset, alignment), ("w", 16, 32));
            assert_eq!(offset, 24 + 28 + 4 + 14 + 9 + 4 + 8 + 4);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn tensor_outside_the_data_section() {
    let mut r = with_tensors(&[("w", &[4], F32, 1 << 20)]);
    r.data(64);
    assert!(matches!(parse(&r), GgufError::TensorOutOfBounds { ref tensor, .. } if tensor == "w"));
    let mut r = with_tensors(&[("w", &[4], F32, u64::MAX - 31)]);
    r.data(64);
    match parse(&r) {
        GgufError::TensorOutOfBounds { end, .. } => assert_eq!(end, u64::MAX, "overflow saturates"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn overlapping_tensors() {
    let mut r = with_tensors(&[
        ("a", &[16], F32, 0),
        ("b", &[8], F32, 32),
        ("c", &[4], F32, 64),
    ]);
    r.data(128);
    match parse(&r) {
        GgufError::TensorOverlap { tensor, other, .. } => {
            assert_eq!((tensor.as_str(), other.as_str()), ("b", "a"))
        }
        e => panic!("{e:?}"),
    }
    // Zero-sized tensors overlap nothing.
    let mut r = with_tensors(&[("a", &[8], F32, 0), ("empty", &[0, 3], F32, 0)]);
    r.data(32);
    GgufFile::from_bytes(r.bytes).expect("empty tensor at a used offset is fine");
}

#[test]
fn duplicate_key() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("a.b", 1);
    let second = r.pos();
    r.kv_u32("a.b", 2);
    match parse(&r) {
        GgufError::DuplicateKey { offset, key } => {
            assert_eq!((offset, key.as_str()), (second, "a.b"))
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn duplicate_tensor_name() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[8], F32, 0);
    let second = r.pos();
    r.tensor("w", &[8], F32, 32);
    r.pad(32).data(64);
    match parse(&r) {
        GgufError::DuplicateTensor { offset, tensor } => {
            assert_eq!((offset, tensor.as_str()), (second, "w"))
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn bad_alignment() {
    for (alignment, found) in [(0u32, "0"), (48, "48"), (1 << 31, "2147483648")] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", alignment);
        match parse(&r) {
            GgufError::InvalidAlignment { offset, found: f } => {
                assert_eq!((offset, f.as_str()), (24, found))
            }
            e => panic!("{e:?}"),
        }
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.alignment", "64");
    assert!(
        matches!(parse(&r), GgufError::InvalidAlignment { ref found, .. } if found == "of type string")
    );
}

#[test]
fn custom_alignment_is_honoured() {
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64);
    r.tensor("w", &[4], F32, 0);
    r.pad(64).data(16);
    let file = GgufFile::from_bytes(r.bytes).expect("valid");
    assert_eq!((file.alignment(), file.data_offset() % 64), (64, 0));
}

#[test]
fn invalid_utf8() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"bad\xff").u32(ty::U8).u8(0);
    match parse(&r) {
        GgufError::InvalidUtf8 { offset, context } => {
            assert_eq!((offset, context.as_str()), (32, "metadata key 0"))
        }
        e => panic!("{e:?}"),
    }
    let mut r = Raw::header(3, 0, 1);
    r.str(b"toks")
        .u32(ty::ARRAY)
        .u32(ty::STRING)
        .u64(2)
        .str(b"ok")
        .str(b"\xc3\x28");
    match parse(&r) {
        GgufError::InvalidUtf8 { offset, context } => {
            assert_eq!(offset, 24 + 12 + 4 + 12 + 10 + 8);
            assert!(context.contains("toks"));
        }
        e => panic!("{e:?}"),
    }
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w\u{1}", &[4], F32, 0);
    r.bytes[32] = 0xfe;
    assert!(
        matches!(parse(&r), GgufError::InvalidUtf8 { ref context, .. } if context == "name of tensor 0")
    );
}

#[test]
fn overlong_key_and_tensor_name() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(70_000).raw(&vec![b'k'; 70_000]).u32(ty::U8).u8(0);
    assert!(matches!(
        parse(&r),
        GgufError::StringTooLong {
            len: 70_000,
            limit: 65_535,
            offset: 24,
            ..
        }
    ));
    let name = "x".repeat(64);
    let r = with_tensors(&[(name.as_str(), &[4], F32, 0)]);
    assert!(matches!(
        parse(&r),
        GgufError::StringTooLong {
            len: 64,
            limit: 63,
            ..
        }
    ));
}

/// A small valid file whose every prefix is a truncation (the last tensor ends exactly on
/// the alignment, so even its final byte matters).
fn small_valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_metadata("general.architecture", "gemma3").unwrap();
    w.add_metadata("x.count", Value::U32(3)).unwrap();
    let strings = gemma_gguf::Array::from_strings(["a", "bc", ""]);
    w.add_metadata("x.strings", strings.clone()).unwrap();
    let nested =
        gemma_gguf::Array::from_arrays([strings, gemma_gguf::Array::from_slice(&[1.5f32])]);
    w.add_metadata("x.nested", nested).unwrap();
    w.add_tensor("q", GgmlType::Q8_0, &[32, 1]).unwrap();
    w.add_tensor("f", GgmlType::F32, &[8]).unwrap();
    w.write_header().unwrap();
    w.write_tensor_data("q", &[7u8; 34]).unwrap();
    w.write_tensor_data("f", &[1u8; 32]).unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_valid_file();
    GgufFile::from_bytes(bytes.clone()).expect("the full file is valid");
    for len in 0..bytes.len() {
        match GgufFile::from_bytes(bytes[..len].to_vec()) {
            Ok(_) => panic!("prefix of {len} of {} bytes accepted", bytes.len()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn every_single_byte_corruption_is_handled() {
    let bytes = small_valid_file();
    for i in 0..bytes.len() {
        for value in [0x00, 0xff, 0x80, 0x09] {
            let mut corrupt = bytes.clone();
            corrupt[i] = value;
            if let Ok(file) = GgufFile::from_bytes(corrupt) {
                for t in file.tensors() {
                    assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
                }
            }
        }
    }
}
