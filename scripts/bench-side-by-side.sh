#!/usr/bin/env bash
# Times llama.cpp and gemma-rs on the same GGUF file, one right after the other, on the
# same threads: prefill of PP tokens and TG decode steps from an empty cache, medians of
# REPS runs. llama.cpp comes from ../shared/tools/bench_llamacpp.py (llama-cpp-python,
# installed by ../shared/tools/setup_llamacpp.sh into ~/.cache/gemma-rs-peers).
# usage: scripts/bench-side-by-side.sh MODEL.gguf [PP=512] [TG=128] [REPS=5] [THREADS=2]
set -eu
MODEL=${1:?usage: scripts/bench-side-by-side.sh MODEL.gguf [PP] [TG] [REPS] [THREADS]}
PP=${2:-512}
TG=${3:-128}
REPS=${4:-5}
THREADS=${5:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${GEMMA_PEER_PYTHON:-$HOME/.cache/gemma-rs-peers/venv/bin/python}
TOOL="$ROOT/../shared/tools/bench_llamacpp.py"
[ -x "$PEER" ] || { echo "no llama.cpp peer at $PEER (run ../shared/tools/setup_llamacpp.sh)" >&2; exit 1; }
OUT=$(mktemp -d)
cargo build --release --quiet --example bench --manifest-path "$ROOT/Cargo.toml"
"$PEER" "$TOOL" "$MODEL" --threads "$THREADS" --pp "$PP" --tg "$TG" --reps "$REPS" \
  --load-reps 1 --json "$OUT/llamacpp.json" >/dev/null
"$ROOT/target/release/examples/bench" --model "$MODEL" --threads "$THREADS" --prefill "$PP" \
  --decode "$TG" --reps "$REPS" --json >"$OUT/gemma.json"
python3 - "$OUT/llamacpp.json" "$OUT/gemma.json" "$PP" "$TG" <<'PY'
import json, sys
peer, ours = json.load(open(sys.argv[1]))["runs"][0], json.load(open(sys.argv[2]))
pp, tg = sys.argv[3], sys.argv[4]
rows = [
    ("prefill tok/s", peer["tests"][f"pp{pp}"]["tok_s_median"], ours["prefill_tokens_per_s"]),
    ("decode tok/s", peer["tests"][f"tg{tg}"]["tok_s_median"], ours["decode_tokens_per_s"]),
    ("peak RSS GiB", peer["peak_rss_kB"] / 2**20, ours["peak_rss_bytes"] / 2**30),
    ("load s", peer["load_total_s"], ours["load_seconds"]),
]
print(f"{'':16}{'llama.cpp':>12}{'gemma-rs':>12}{'ratio':>8}")
for name, a, b in rows:
    print(f"{name:16}{a:12.3f}{b:12.3f}{b / a:8.2f}")
bound = ours["decode_bound_tokens_per_s"]
print(f"decode bound (measured bandwidth / weight bytes): {bound:.2f} tok/s; "
      f"gemma-rs at {ours['decode_tokens_per_s'] / bound:.0%}, llama.cpp at "
      f"{peer['tests'][f'tg{tg}']['tok_s_median'] / bound:.0%}")
PY
echo "results in $OUT" >&2
