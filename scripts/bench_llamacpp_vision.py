#!/usr/bin/env python3
"""Time llama.cpp's CPU image encode (mtmd, the library behind llama-mtmd-cli) on an
mmproj GGUF, for a side-by-side with `bench --mmproj F --image F` / `benches/vision.rs`.

Uses llama-cpp-python's ctypes bindings (`llama_cpp.mtmd_cpp`; the peer venv made by
../shared/tools/setup_llamacpp.sh). mtmd needs a text model: it checks that the model's
n_embd equals the projector's output width and takes <start_of_image>/<end_of_image>
from its vocabulary, so pass a Gemma 3 GGUF of the matching width (the real 270M for a
`synth --size 270m --mmproj` file).

Each timed run is one `mtmd_encode_chunk` of the image chunk of one 896x896 (or the
encoder's size) random RGB bitmap, after `--warmup` untimed runs; the median is printed
and, with --json, written with every run. Preprocessing (a no-op resize at the model's
size) is excluded, as are model loads.

Usage:
    python bench_llamacpp_vision.py --mmproj MMPROJ.gguf --model TEXT.gguf
        [--threads 2] [--reps 3] [--warmup 1] [--flash-attn auto|on|off] [--json OUT]
"""
import argparse
import ctypes
import json
import random
import statistics
import sys
import time

import llama_cpp as L
import llama_cpp.mtmd_cpp as M

FLASH = {"auto": -1, "off": 0, "on": 1}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mmproj", required=True)
    ap.add_argument("--model", required=True, help="text GGUF with the projector's width")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--flash-attn", choices=sorted(FLASH), default="auto")
    ap.add_argument("--size", type=int, default=896, help="side of the random test image")
    ap.add_argument("--json")
    args = ap.parse_args()

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = L.llama_model_load_from_file(args.model.encode(), mp)
    if not model:
        sys.exit(f"cannot load text model {args.model}")

    cp = M.mtmd_context_params_default()
    cp.use_gpu = False
    cp.n_threads = args.threads
    cp.print_timings = False
    cp.warmup = False
    cp.flash_attn_type = FLASH[args.flash_attn]
    t = time.perf_counter()
    ctx = M.mtmd_init_from_file(args.mmproj.encode(), model, cp)
    load_s = time.perf_counter() - t
    if not ctx:
        sys.exit(f"mtmd_init_from_file failed for {args.mmproj}")

    rng = random.Random(7)
    side = args.size
    pixels = (ctypes.c_uint8 * (side * side * 3))(*(rng.randrange(256) for _ in range(side * side * 3)))
    bitmap = M.mtmd_bitmap_init(side, side, pixels)
    marker = M.mtmd_default_marker()
    text = M.mtmd_input_text()
    text.text = marker
    text.text_len = len(marker)
    text.add_special = False
    text.parse_special = True
    chunks = M.mtmd_input_chunks_init()
    bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bitmap)
    rc = M.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1)
    if rc != 0:
        sys.exit(f"mtmd_tokenize failed ({rc})")
    image = None
    for i in range(M.mtmd_input_chunks_size(chunks)):
        chunk = M.mtmd_input_chunks_get(chunks, i)
        if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            image = chunk
    if image is None:
        sys.exit("no image chunk after tokenizing the media marker")
    n_tokens = M.mtmd_input_chunk_get_n_tokens(image)

    runs = []
    for i in range(args.warmup + args.reps):
        t = time.perf_counter()
        rc = M.mtmd_encode_chunk(ctx, image)
        dt = time.perf_counter() - t
        if rc != 0:
            sys.exit(f"mtmd_encode_chunk failed ({rc})")
        label = "warm-up" if i < args.warmup else "timed"
        print(f"llama.cpp encode ({label}): {dt:.2f} s", flush=True)
        if i >= args.warmup:
            runs.append(dt)
    median = statistics.median(runs)
    print(
        f"llama.cpp {L.__version__} mtmd CPU, {args.threads} threads, flash-attn {args.flash_attn}: "
        f"{n_tokens} image tokens, median encode {median:.2f} s over {len(runs)} runs "
        f"(min {min(runs):.2f}, max {max(runs):.2f}); mmproj load {load_s:.2f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "llama_cpp_python": L.__version__,
                    "mmproj": args.mmproj,
                    "threads": args.threads,
                    "flash_attn": args.flash_attn,
                    "image_tokens": n_tokens,
                    "encode_s": runs,
                    "median_encode_s": median,
                    "load_s": load_s,
                },
                f,
                indent=1,
            )
    M.mtmd_input_chunks_free(chunks)
    M.mtmd_bitmap_free(bitmap)
    M.mtmd_free(ctx)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
