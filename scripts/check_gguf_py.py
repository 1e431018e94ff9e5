#!/usr/bin/env python3
"""Read a GGUF file with the reference reader (gguf-py, PyPI package `gguf`) and print
what it sees as one JSON object, so tests can compare it with gemma-gguf's view.

Usage: check_gguf_py.py FILE.gguf

Output: {"gguf_py_version", "version", "alignment", "metadata": {key: {"type", "value"}},
"tensors": [{"name", "type", "shape", "offset", "n_bytes", "sha256"}]}
- scalar values as JSON numbers/strings/bools; arrays as {"elem", "len", "values"} with
  every element for arrays of up to 4096 elements, else the first 16 and the SHA-256 of
  the raw element bytes;
- tensor "shape" in ggml ne order, "offset" absolute in the file, "sha256" of its bytes.
Exits 1 with a one-line message on stderr if gguf-py rejects the file.
"""

import hashlib
import importlib.metadata
import json
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType

FULL_ARRAY_LIMIT = 4096


def scalar(value):
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    return value


def field_value(field):
    """The value of a field, following gguf-py's parts layout (types[0] is the outer type)."""
    types = [GGUFValueType(t) for t in field.types]
    if types[0] != GGUFValueType.ARRAY:
        return types[0].name, scalar(field.contents())
    n = len(field.data)
    if len(types) == 1:
        # gguf-py records no element type for an empty array.
        return "ARRAY", {"elem": None, "len": n, "values": []}
    elem = types[1]
    entry = {"elem": elem.name, "len": n}
    if elem == GGUFValueType.ARRAY:
        entry["values"] = field.contents()
    elif n <= FULL_ARRAY_LIMIT:
        entry["values"] = [scalar(v) for v in field.contents()]
    else:
        entry["first"] = [scalar(v) for v in field.contents(slice(0, 16))]
        raw = b"".join(bytes(field.parts[i]) for i in field.data)
        if elem == GGUFValueType.STRING:
            # parts hold each string's length prefix just before its bytes.
            raw = b"".join(bytes(field.parts[i - 1]) + bytes(field.parts[i]) for i in field.data)
        entry["sha256"] = hashlib.sha256(raw).hexdigest()
    return "ARRAY", entry


def main():
    if len(sys.argv) != 2:
        print("usage: check_gguf_py.py FILE.gguf", file=sys.stderr)
        return 2
    try:
        reader = GGUFReader(sys.argv[1])
    except Exception as e:  # gguf-py raises ValueError, KeyError, IndexError... on bad files
        print(f"gguf-py rejected {sys.argv[1]}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    metadata = {}
    version = None
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            if key == "GGUF.version":
                version = scalar(field.contents())
            continue
        kind, value = field_value(field)
        metadata[key] = {"type": kind, "value": value}
    tensors = []
    for t in reader.tensors:
        data = reader.data[t.data_offset : t.data_offset + t.n_bytes]
        tensors.append(
            {
                "name": t.name,
                "type": t.tensor_type.name,
                "shape": [int(d) for d in t.shape],
                "offset": int(t.data_offset),
                "n_bytes": int(t.n_bytes),
                "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
            }
        )
    out = {
        "gguf_py_version": importlib.metadata.version("gguf"),
        "version": version,
        "alignment": int(reader.alignment),
        "metadata": metadata,
        "tensors": tensors,
    }
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
