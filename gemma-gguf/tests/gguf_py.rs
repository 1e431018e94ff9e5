//! Cross-check with the reference reader, gguf-py (PyPI `gguf` 0.19): files our writer
//! produces, the fixtures and the real model must look the same through both readers.
//! Needs `$HOME/.cache/gemma-rs/venv/bin/python` with `gguf` and `numpy` installed
//! (or `GEMMA_PYTHON` pointing at such an interpreter).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::sha256::sha256_hex;
use common::values::every_value;
use gemma_gguf::{GgmlType, GgufFile, GgufWriter, Value, ValueType};
use serde_json::Value as Json;

fn python() -> PathBuf {
    let path = match std::env::var_os("GEMMA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
            .join(".cache/gemma-rs/venv/bin/python"),
    };
    assert!(
        path.is_file(),
        "python with gguf-py missing at {}: create it with `python3 -m venv ~/.cache/gemma-rs/venv && \
         ~/.cache/gemma-rs/venv/bin/pip install gguf==0.19.0 numpy` (or set GEMMA_PYTHON)",
        path.display()
    );
    path
}

/// What gguf-py sees in `path`, as printed by scripts/check_gguf_py.py.
fn gguf_py_view(path: &Path) -> Json {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check_gguf_py.py");
    let out = Command::new(python())
        .arg(script)
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "gguf-py failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Json = serde_json::from_slice(&out.stdout).expect("script prints JSON");
    assert_eq!(
        view["gguf_py_version"], "0.19.0",
        "the reference is gguf-py 0.19.0"
    );
    view
}

fn gguf_py_type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "UINT8",
        ValueType::I8 => "INT8",
        ValueType::U16 => "UINT16",
        ValueType::I16 => "INT16",
        ValueType::U32 => "UINT32",
        ValueType::I32 => "INT32",
        ValueType::F32 => "FLOAT32",
        ValueType::Bool => "BOOL",
        ValueType::String => "STRING",
        ValueType::Array => "ARRAY",
        ValueType::U64 => "UINT64",
        ValueType::I64 => "INT64",
        ValueType::F64 => "FLOAT64",
    }
}

fn assert_scalar_eq(ours: &Value, theirs: &Json, key: &str) {
    match ours {
        Value::String(s) => assert_eq!(theirs.as_str(), Some(s.as_str()), "{key}"),
        Value::Bool(b) => assert_eq!(theirs.as_bool(), Some(*b), "{key}"),
        Value::F32(_) | Value::F64(_) => assert_eq!(theirs.as_f64(), ours.as_f64(), "{key}"),
        other => {
            let n = theirs
                .as_i64()
                .map(i128::from)
                .or(theirs.as_u64().map(i128::from));
            assert_eq!(n, other.as_integer(), "{key}");
        }
    }
}

/// Asserts that gguf-py's `view` describes exactly the same file as `file`.
fn assert_same_as_gguf_py(file: &GgufFile, view: &Json, check_hashes: bool) {
    assert_eq!(view["version"].as_u64(), Some(u64::from(file.version())));
    assert_eq!(view["alignment"].as_u64(), Some(file.alignment()));
    let theirs = view["metadata"].as_object().expect("metadata");
    assert_eq!(theirs.len(), file.metadata().len());
    for (key, ours) in file.metadata().iter() {
        let entry = &theirs[key];
        assert_eq!(entry["type"], gguf_py_type_name(ours.value_type()), "{key}");
        let Some(array) = ours.as_array() else {
            assert_scalar_eq(ours, &entry["value"], key);
            continue;
        };
        let value = &entry["value"];
        if value["elem"].is_null() {
            // gguf-py records no element type for an empty array.
            assert!(array.is_empty(), "{key}");
            continue;
        }
        assert_eq!(value["elem"], gguf_py_type_name(array.elem_type()), "{key}");
        if array.elem_type() == ValueType::Array {
            // gguf-py 0.19 flattens nested arrays (lengths and contents), so only the
            // types can be compared.
            continue;
        }
        assert_eq!(value["len"].as_u64(), Some(array.len() as u64), "{key}");
        let shown = value
            .get("values")
            .or(value.get("first"))
            .and_then(Json::as_array)
            .expect("values");
        for (i, theirs) in shown.iter().enumerate() {
            assert_scalar_eq(&array.get(i).expect("element"), theirs, key);
        }
        if let Some(hash) = value.get("sha256") {
            assert_eq!(
                hash.as_str(),
                Some(sha256_hex(array.raw_bytes()).as_str()),
                "{key}"
            );
        }
    }
    let tensors = view["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), file.tensors().len());
    for (ours, theirs) in file.tensors().iter().zip(tensors) {
        assert_eq!(theirs["name"], ours.name.as_str());
        assert_eq!(theirs["type"], ours.ty.name(), "{}", ours.name);
        let shape: Vec<u64> = theirs["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(shape, ours.dims, "{}", ours.name);
        assert_eq!(
            theirs["offset"].as_u64(),
            Some(ours.offset),
            "{}",
            ours.name
        );
        assert_eq!(
            theirs["n_bytes"].as_u64(),
            Some(ours.n_bytes),
            "{}",
            ours.name
        );
        if check_hashes {
            assert_eq!(
                theirs["sha256"].as_str(),
                Some(sha256_hex(file.tensor_data(ours)).as_str()),
                "{}",
                ours.name
            );
        }
    }
}

#[test]
fn gguf_py_reads_what_we_write() {
    let dir = std::env::temp_dir().join(format!("gemma-gguf-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("written.gguf");
    let mut w = GgufWriter::create(&path).unwrap();
    w.set_alignment(64).unwrap();
    for (k, v) in every_value() {
        w.add_metadata(k, v).unwrap();
    }
    let big = gemma_gguf::Array::from_strings((0..5000).map(|i| format!("tok{i}")));
    w.add_metadata("a.many_strings", big).unwrap();
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_XS,
    ];
    for (i, ty) in types.iter().enumerate() {
        w.add_tensor(format!("t{i}.{}", ty.name()), *ty, &[256, i as u64 + 1])
            .unwrap();
    }
    w.write_header().unwrap();
    for (i, ty) in types.iter().enumerate() {
        let n = ty.row_bytes(256).unwrap() * (i as u64 + 1);
        let bytes: Vec<u8> = (0..n).map(|j| (j * 7 + i as u64) as u8).collect();
        w.write_tensor_data(&format!("t{i}.{}", ty.name()), &bytes)
            .unwrap();
    }
    w.finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_same_as_gguf_py(&file, &gguf_py_view(&path), true);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Small fixtures only: gguf-py needs about 10 s of CPU for the 262144-string vocabulary
/// (the vocab file and the real model), which the other tests check against values gguf-py
/// reported for them.
#[test]
fn fixtures_look_the_same_to_gguf_py() {
    let root = common::fixtures();
    for name in [
        "vision/mmproj-tiny-f16.gguf",
        "tiny/tiny-gemma3-t1-q3_k_m.gguf",
    ] {
        let path = root.join(name);
        let file = GgufFile::open(&path).unwrap();
        assert_same_as_gguf_py(&file, &gguf_py_view(&path), true);
    }
}
