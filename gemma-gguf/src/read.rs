//! Reading and validating metadata values from a cursor.
//!
//! Arrays are validated element by element (string lengths, UTF-8, nested types and
//! depth) but not decoded: the resulting [`Array`] points at the encoded bytes.

use crate::array::Array;
use crate::cursor::Cursor;
use crate::storage::SharedBytes;
use crate::value::{Value, ValueType};
use crate::GgufError;

/// Deepest nesting of arrays accepted (an array of arrays has depth 2). No real file nests
/// arrays at all; the cap bounds the recursion a hostile file can cause.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Reads a value type id.
pub(crate) fn read_type(cur: &mut Cursor<'_>, key: &str) -> Result<ValueType, GgufError> {
    let offset = cur.offset();
    let id = cur.u32(&|| format!("value type of key `{key}`"))?;
    ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
        offset,
        key: key.to_owned(),
        type_id: id,
    })
}

/// Reads one value of type `ty`. `base` holds the same bytes as the cursor's slice, so
/// arrays can point into it.
pub(crate) fn read_value(
    cur: &mut Cursor<'_>,
    ty: ValueType,
    base: &SharedBytes,
    key: &str,
) -> Result<Value, GgufError> {
    let context = || format!("value of key `{key}`");
    match ty.fixed_size() {
        Some(size) => {
            let bytes = cur.take(size as u64, &context)?;
            // `take` returned exactly `size` bytes, which is what decode_fixed expects.
            Value::decode_fixed(ty, bytes).ok_or_else(|| GgufError::Truncated {
                offset: cur.offset(),
                needed: size as u64,
                available: 0,
                context: context(),
            })
        }
        None if ty == ValueType::String => {
            Ok(Value::String(cur.string(u64::MAX, &context)?.to_owned()))
        }
        None => read_array(cur, base, key, 1).map(Value::Array),
    }
}

/// Reads an array (element type, count, elements) at nesting depth `depth`.
pub(crate) fn read_array(
    cur: &mut Cursor<'_>,
    base: &SharedBytes,
    key: &str,
    depth: usize,
) -> Result<Array, GgufError> {
    let (elem, len) = read_array_header(cur, key, depth)?;
    let data_start = cur.pos();
    skip_elements(cur, elem, len, key, depth)?;
    let data = base.sub(data_start..cur.pos());
    Ok(Array::from_parts(elem, len, data))
}

/// Reads an array's element type and count, checking the depth cap and that the count
/// fits in the rest of the file.
pub(crate) fn read_array_header(
    cur: &mut Cursor<'_>,
    key: &str,
    depth: usize,
) -> Result<(ValueType, usize), GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            offset: cur.offset(),
            key: key.to_owned(),
            limit: MAX_ARRAY_DEPTH,
        });
    }
    let elem = read_type(cur, key)?;
    let count_offset = cur.offset();
    let count = cur.u64(&|| format!("element count of key `{key}`"))?;
    let min_bytes = u128::from(count) * u128::from(elem.min_size());
    let available = cur.remaining();
    if min_bytes > u128::from(available) {
        return Err(GgufError::CountTooLarge {
            offset: count_offset,
            what: format!("elements of `{key}`"),
            count,
            min_bytes,
            available,
        });
    }
    // count <= available bytes (min_size >= 1), and available fits in usize.
    Ok((elem, count as usize))
}

/// Advances past `count` encoded elements of type `elem`, validating each.
pub(crate) fn skip_elements(
    cur: &mut Cursor<'_>,
    elem: ValueType,
    count: usize,
    key: &str,
    depth: usize,
) -> Result<(), GgufError> {
    let context = || format!("elements of key `{key}`");
    match elem.fixed_size() {
        // count * size <= remaining was checked by read_array_header, so no overflow.
        Some(size) => cur.take((count as u64) * size as u64, &context).map(|_| ()),
        None if elem == ValueType::String => {
            for _ in 0..count {
                cur.string(u64::MAX, &context)?;
            }
            Ok(())
        }
        None => {
            for _ in 0..count {
                let (child, child_len) = read_array_header(cur, key, depth + 1)?;
                skip_elements(cur, child, child_len, key, depth + 1)?;
            }
            Ok(())
        }
    }
}
