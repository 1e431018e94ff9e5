#!/usr/bin/env python3
"""Time llama.cpp (CPU, through llama-cpp-python) after DEPTH tokens already in the cache,
for a side-by-side with `bench --depth DEPTH --prefill PP --decode TG`: the cache is filled
once (untimed), then each repetition removes what followed the depth, evaluates PP more
tokens in one batch and then TG single-token steps; medians are printed. The ids follow
`bench`'s pseudo-random formula. Uses the peer venv made by ../shared/tools/setup_llamacpp.sh.

Usage:
    ~/.cache/gemma-rs-peers/venv/bin/python scripts/bench_llamacpp_depth.py MODEL.gguf
        [--depth 4096] [--pp 32] [--tg 16] [--threads 2] [--reps 5]
"""
import argparse
import statistics
import time

from llama_cpp import Llama


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--depth", type=int, default=4096)
    p.add_argument("--pp", type=int, default=32)
    p.add_argument("--tg", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.depth + max(a.pp, a.tg) + 16, n_threads=a.threads,
                n_threads_batch=a.threads, n_batch=512, verbose=False)
    n_vocab = llm.n_vocab()
    ids = [(i * 2654435761 + 12345) % n_vocab for i in range(a.depth + a.pp)]
    llm.eval(ids[:a.depth])
    ctx = llm._ctx
    forget = getattr(ctx, "memory_seq_rm", None) or getattr(ctx, "kv_cache_seq_rm")
    prefill, decode = [], []
    for _ in range(a.reps + 1):  # the first one warms up
        forget(-1, a.depth, -1)
        llm.n_tokens = a.depth
        start = time.perf_counter()
        llm.eval(ids[a.depth:])
        prefill.append(a.pp / (time.perf_counter() - start))
        forget(-1, a.depth, -1)
        llm.n_tokens = a.depth
        start = time.perf_counter()
        for _ in range(a.tg):
            llm.eval([ids[-1]])
        decode.append(a.tg / (time.perf_counter() - start))
    print(f"llama.cpp @ d{a.depth}, {a.threads} threads: prefill pp{a.pp} "
          f"{statistics.median(prefill[1:]):.1f} tok/s, decode tg{a.tg} "
          f"{statistics.median(decode[1:]):.1f} tok/s (medians of {a.reps})")


if __name__ == "__main__":
    main()
