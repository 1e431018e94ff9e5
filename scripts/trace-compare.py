#!/usr/bin/env python3
"""Compare two activation traces written by `generate --dump-trace DIR`, tensor by tensor
in the order the first one made them: relative RMS difference (||a - b|| / ||a||), largest
absolute difference and largest |a|; then the first tensor whose relative difference
exceeds --threshold (where two runs part ways). Only the Python standard library.

Usage:
    scripts/trace-compare.py A_DIR B_DIR [--only REGEX] [--threshold 1e-4]

Example (the GPU against the CPU, and the CPU's scalar kernels against its SIMD ones):
    generate --model M --tokens 2,818,5279 --max-tokens 1 --dump-trace /tmp/cpu
    generate --model M --tokens 2,818,5279 --max-tokens 1 --dump-trace /tmp/gpu --device cuda
    GEMMA_ISA=scalar generate ... --dump-trace /tmp/scalar
    scripts/trace-compare.py /tmp/cpu /tmp/gpu --only 'l_out|kqv_out|result_output'
"""
import argparse
import array
import json
import math
import os
import re
import sys


def load(folder, entry):
    values = array.array("f")
    with open(os.path.join(folder, entry["name"] + ".f32"), "rb") as f:
        values.frombytes(f.read())
    if sys.byteorder != "little":
        values.byteswap()
    return values


def compare(a, b):
    """(relative RMS difference, largest |a - b|, largest |a|) over the common length."""
    n = min(len(a), len(b))
    diff2 = norm2 = max_diff = max_abs = 0.0
    for i in range(n):
        x, y = a[i], b[i]
        d = x - y
        diff2 += d * d
        norm2 += x * x
        max_diff = max(max_diff, abs(d))
        max_abs = max(max_abs, abs(x))
    rel = math.sqrt(diff2 / norm2) if norm2 > 0 else (0.0 if diff2 == 0 else math.inf)
    return rel, max_diff, max_abs


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--only", help="print only the tensors whose name matches this regex")
    p.add_argument("--threshold", type=float, default=1e-4)
    args = p.parse_args()
    index_a = json.load(open(os.path.join(args.a, "index.json")))
    index_b = {e["name"]: e for e in json.load(open(os.path.join(args.b, "index.json")))}
    only = re.compile(args.only) if args.only else None
    first = None
    for entry in index_a:
        name = entry["name"]
        other = index_b.get(name)
        if other is None:
            print(f"{name:22} missing in {args.b}")
            continue
        if other["width"] != entry["width"]:
            print(f"{name:22} width {entry['width']} against {other['width']}")
            continue
        rel, max_diff, max_abs = compare(load(args.a, entry), load(args.b, other))
        if first is None and rel > args.threshold:
            first = name
        if only is None or only.search(name):
            rows = min(entry["rows"], other["rows"])
            print(f"{name:22} {rows:5} x {entry['width']:<6} rel {rel:.2e}  "
                  f"max diff {max_diff:.2e}  max |a| {max_abs:.2e}")
    print(f"first tensor above {args.threshold:g} relative: {first or 'none'}")


if __name__ == "__main__":
    main()
