#!/usr/bin/env python3
"""Time llama.cpp (CPU, through llama-cpp-python) on a long prompt and the decode after
it, for a side-by-side with `generate --prompt-file F --json` (its prefill_tokens_per_s
and decode_tokens_per_s), where `bench` decodes from an empty cache.

Each repetition clears the cache, evaluates the prompt in batches of 512 (logits of the
last token only) and then `--decode` single-token steps; medians are printed. The prompt
is tokenized by llama.cpp with BOS, as `generate` does. Uses the peer venv made by
../shared/tools/setup_llamacpp.sh.

Usage:
    ~/.cache/gemma-rs-peers/venv/bin/python scripts/bench_llamacpp_long.py MODEL.gguf PROMPT.txt
        [--decode 64] [--threads 2] [--reps 3] [--ctx 8192]
"""
import argparse
import statistics
import time

from llama_cpp import Llama


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("prompt_file")
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ctx", type=int, default=8192)
    a = p.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.ctx, n_threads=a.threads,
                n_threads_batch=a.threads, n_batch=512, verbose=False)
    tokens = llm.tokenize(open(a.prompt_file).read().encode(), add_bos=True)
    if len(tokens) + a.decode > a.ctx:
        raise SystemExit(f"{len(tokens)} prompt tokens + {a.decode} steps exceed --ctx {a.ctx}")
    prefill, decode = [], []
    for _ in range(a.reps):
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        prefill.append(len(tokens) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(a.decode):
            llm.eval([tokens[-1]])
        decode.append(a.decode / (time.perf_counter() - start))
    print(f"llama.cpp {len(tokens)}-token prompt, {a.threads} threads: "
          f"prefill {statistics.median(prefill):.1f} tok/s, "
          f"decode {statistics.median(decode):.1f} tok/s after it (medians of {a.reps})")


if __name__ == "__main__":
    main()
