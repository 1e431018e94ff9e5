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
    """`tensors`: (name, dims, type, byte count) with patterned bytes, or (name, dims,
    type, data)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + value(t, v)
    datas = [t[3] if isinstance(t[3], bytes) else bytes((i * 7 + j) & 0xFF for j in range(t[3]))
             for i, t in enumerate(tensors)]
    offset = 0
    for (name, dims, ty, _), data in zip(tensors, datas):
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
        offset += -(-len(data) // align) * align
    out += b"\0" * (-len(out) % align)
    for data in datas:
        out += data + b"\0" * (-len(data) % align)
    return out


def q8_0(rows, cols, seed):
    """Q8_0 blocks of `rows` x `cols` small weights (scale 1/256, quants -127..127)."""
    out = b""
    for r in range(rows):
        for b in range(cols // 32):
            q = [((r * 31 + b * 17 + j * 13 + seed) % 255) - 127 for j in range(32)]
            out += struct.pack("<e", 1 / 256) + struct.pack("<32b", *q)
    return out


def f32s(values):
    return struct.pack(f"<{len(values)}f", *values)


def tiny_model():
    """A whole Gemma 3 of 2 layers (width 32, 2 query heads of 16, 1 KV head, FFN 64) with
    a 280-token vocabulary: Q8_0 matrices, F32 norms; every model check passes."""
    words = [b"\xe2\x96\x81Hello", b"\xe2\x96\x81", b"user", b"model", b"\n", b"H", b"i", b"A", b"n", b"d", b"?"]
    tokens = ([b"<pad>", b"<eos>", b"<bos>", b"<unk>", b"<start_of_turn>", b"<end_of_turn>", b"<start_of_image>",
               b"<end_of_image>"] + [b"<0x%02X>" % i for i in range(256)] + words)
    types = [3, 3, 3, 2, 3, 3, 3, 3] + [6] * 256 + [1] * len(words)
    scores = [-1000.0] * 8 + [0.0] * 256 + [-float(i) for i in range(len(words))]
    n_embd, heads, hd, ff, layers = 32, 2, 16, 64, 2
    kvs = [
        (b"general.architecture", STRING, b"gemma3"),
        (b"gemma3.context_length", U32, 64),
        (b"gemma3.embedding_length", U32, n_embd),
        (b"gemma3.block_count", U32, layers),
        (b"gemma3.feed_forward_length", U32, ff),
        (b"gemma3.attention.head_count", U32, heads),
        (b"gemma3.attention.head_count_kv", U32, 1),
        (b"gemma3.attention.key_length", U32, hd),
        (b"gemma3.attention.value_length", U32, hd),
        (b"gemma3.attention.layer_norm_rms_epsilon", F32, 1e-6),
        (b"gemma3.attention.sliding_window", U32, 4),
        (b"gemma3.rope.freq_base", F32, 1e6),
        (b"tokenizer.ggml.model", STRING, b"llama"),
        (b"tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        (b"tokenizer.ggml.scores", ARRAY, (F32, scores)),
        (b"tokenizer.ggml.token_type", ARRAY, (I32, types)),
        (b"tokenizer.ggml.bos_token_id", U32, 2),
        (b"tokenizer.ggml.eos_token_id", U32, 1),
        (b"tokenizer.ggml.unknown_token_id", U32, 3),
        (b"tokenizer.ggml.padding_token_id", U32, 0),
        (b"tokenizer.ggml.add_bos_token", BOOL, True),
    ]
    Q8_0, F32_TYPE = 8, 0
    ones = lambda n: f32s([1.0] * n)
    tensors = [(b"token_embd.weight", [n_embd, len(tokens)], Q8_0, q8_0(len(tokens), n_embd, 1)),
               (b"output_norm.weight", [n_embd], F32_TYPE, ones(n_embd))]
    for i in range(layers):
        blk = b"blk.%d." % i
        for name, cols, rows in [(b"attn_q", n_embd, heads * hd), (b"attn_k", n_embd, hd), (b"attn_v", n_embd, hd),
                                 (b"attn_output", heads * hd, n_embd), (b"ffn_gate", n_embd, ff),
                                 (b"ffn_up", n_embd, ff), (b"ffn_down", ff, n_embd)]:
            tensors.append((blk + name + b".weight", [cols, rows], Q8_0, q8_0(rows, cols, len(tensors))))
        for name, n in [(b"attn_q_norm", hd), (b"attn_k_norm", hd), (b"attn_norm", n_embd),
                        (b"post_attention_norm", n_embd), (b"ffn_norm", n_embd), (b"post_ffw_norm", n_embd)]:
            tensors.append((blk + name + b".weight", [n], F32_TYPE, ones(n)))
    return gguf(kvs, tensors)


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
(seeds / "tiny_model.gguf").write_bytes(tiny_model())
