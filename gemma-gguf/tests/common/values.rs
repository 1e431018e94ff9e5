//! Metadata values covering every GGUF value type.

use gemma_gguf::{Array, Value};

/// One value of every scalar type, one array of every element type, and a nested array.
pub fn every_value() -> Vec<(String, Value)> {
    let mut values = vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60_000)),
        ("t.i16", Value::I16(-30_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.25)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::from("héllo ▁ world")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("a.u8", Array::from_slice(&[1u8, 2, 255]).into()),
        ("a.i8", Array::from_slice(&[-1i8, 7]).into()),
        ("a.u16", Array::from_slice(&[1u16, 65_535]).into()),
        ("a.i16", Array::from_slice(&[-2i16]).into()),
        ("a.u32", Array::from_slice(&[3u32, 4, 5]).into()),
        ("a.i32", Array::from_slice(&[-3i32, 4]).into()),
        ("a.f32", Array::from_slice(&[0.5f32, -0.0, 1e30]).into()),
        ("a.bool", Array::from_slice(&[true, false, true]).into()),
        ("a.string", Array::from_strings(["", "a", "日本"]).into()),
        ("a.u64", Array::from_slice(&[u64::MAX]).into()),
        ("a.i64", Array::from_slice(&[i64::MIN, 0]).into()),
        ("a.f64", Array::from_slice(&[1e-300f64]).into()),
        ("a.empty", Array::from_slice::<u32>(&[]).into()),
    ];
    let nested = Array::from_arrays([
        Array::from_strings(["x", "yz"]),
        Array::from_arrays([Array::from_slice(&[9i64])]),
        Array::from_slice(&[2.5f64]),
    ]);
    values.push(("a.nested", nested.into()));
    values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
