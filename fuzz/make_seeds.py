#!/usr/bin/env python3
"""Writes the small seed files in seeds/ (run from fuzz/). Plain struct packing, so the
seeds do not depend on any GGUF library."""

import struct
from pathlib import Path

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}


def s(b):
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STRING:
        return s(v)
    if t == ARRAY:
        elem, items = v
        return struct.pack("<IQ", elem, len(items)) + b"".join(value(elem, x) for x in items)
    return struct.pack("<" + FMT[t], v)


def gguf(kvs, tensors, align=32, version=3):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + value(t, v)
    offset = 0
    for name, dims, ty, nbytes in tensors:
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
        offset += -(-nbytes // align) * align
    out += b"\0" * (-len(out) % align)
    for i, (_, _, _, nbytes) in enumerate(tensors):
        out += bytes((i * 7 + j) & 0xFF for j in range(nbytes)) + b"\0" * (-nbytes % align)
    return out


seeds = Path("seeds")
seeds.mkdir(exist_ok=True)
every = [
    (b"general.architecture", STRING, b"gemma3"),
    (b"t.u8", U8, 7), (b"t.i8", I8, -7), (b"t.u16", U16, 700), (b"t.i16", I16, -700),
    (b"t.u32", U32, 70000), (b"t.i32", I32, -70000), (b"t.f32", F32, 1.5), (b"t.bool", BOOL, True),
    (b"t.u64", U64, 1 << 40), (b"t.i64", I64, -(1 << 40)), (b"t.f64", F64, 2.5),
    (b"tokenizer.ggml.tokens", ARRAY, (STRING, [b"<pad>", b"<eos>", b"<bos>", b"a", b"\xe2\x96\x81b"])),
    (b"tokenizer.ggml.scores", ARRAY, (F32, [0.0, -1.0, -2.0, -3.0, -4.0])),
    (b"tokenizer.ggml.token_type", ARRAY, (I32, [3, 3, 3, 1, 1])),
    (b"a.nested", ARRAY, (ARRAY, [(U16, [1, 2]), (STRING, [b"x"]), (ARRAY, [(BOOL, [True])])])),
]
tensors = [
    (b"token_embd.weight", [32, 5], 8, 34 * 5),  # Q8_0
    (b"output_norm.weight", [32], 0, 128),  # F32
    (b"blk.0.ffn_down.weight", [256, 1], 12, 144),  # Q4_K
    (b"blk.0.attn_v.weight", [256, 1, 1, 1], 30, 512),  # BF16
]
(seeds / "every_type.gguf").write_bytes(gguf(every, tensors))
(seeds / "align64_v2.gguf").write_bytes(
    gguf([(b"general.alignment", U32, 64)], [(b"a", [4], 0, 16), (b"b", [0], 1, 0)], align=64, version=2)
)
(seeds / "empty.gguf").write_bytes(gguf([], []))
(seeds / "vocab_head.gguf").write_bytes(Path("../../shared/fixtures/tokenizer/gemma3-vocab.gguf").read_bytes()[:4096])
