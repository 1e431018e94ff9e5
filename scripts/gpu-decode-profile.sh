#!/usr/bin/env bash
# Where a GPU decode step's time goes (issue 7): one device call after scripts/gpu-prepare.sh,
#   command "bash scripts/gpu-decode-profile.sh", carry ["gpu-bin"]   (about 4 minutes)
# Logs in /tmp/gpu-decode-profile (GPU_PROFILE_LOGS), archived into
# $OUT/gpu-decode-profile.tgz when $OUT is set (the device tool); a summary printed last.
#  1. synth (random weights, real shapes): a 270M Q4_K_M and a 12B Q4_K_M with 12 of its 48
#     layers (every kernel at the 12B's shapes, a quarter of the quantizing); the whole 12B
#     in the background (nice 19);
#  2. bench --prefill 16 --decode 64 with GEMMA_CUDA_PROFILE=steps (decode graphs on): per
#     replayed step the host's walk through the step's calls, the graph's GPU time (two
#     events), the read of its greedy pick (Session::step_greedy) and the wall time; as is,
#     with --flash-attn off (f32 attention sums instead of the CPU's one-chunk rounding),
#     without programmatic dependent launch (GEMMA_CUDA_PDL=0) and with the logits read
#     back (--read-logits); the 12-layer 12B also after 192 tokens (--depth 192: positions
#     192-256, the longest one-run walks of the CPU's one-chunk rounding) with and without
#     that rounding; nvidia-smi's clocks sampled during the 270M's;
#  3. cuda_bench --graph: the kernels at the 12B's shapes, replayed from a CUDA graph;
#  4. ncu: the GPU time of every kernel of two eager one-token steps (`generate`,
#     GEMMA_CUDA_GRAPH=0; clocks and caches left as they are), as CSV, summed per kernel;
#     then ncu's speed-of-light, memory, occupancy, warp-state and scheduler sections of the
#     12B's Q4_K and Q6_K matvecs and its post-norm kernel (ncu-sections.txt), what limits
#     them (they reach 54-59% of a plain read of their bytes, run 5).
set -u
cd "$(dirname "$0")/.."
BIN="${GPU_BIN:-gpu-bin}"
LOGS="${GPU_PROFILE_LOGS:-/tmp/gpu-decode-profile}"
mkdir -p "$LOGS"
export GEMMA_CACHE="${GEMMA_CACHE:-/tmp/gemma-cache}"
t0=$(date +%s)
# shellcheck source=scripts/gpu-find-nvrtc.sh
source scripts/gpu-find-nvrtc.sh
timeout 20 nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv \
  2>&1 | tee "$LOGS/nvidia-smi.log"

vocab="$BIN/fixtures/gemma3-vocab.gguf"
# Dry run elsewhere (emulated driver): GDP_270M / GDP_12B_L12 / GDP_12B name existing files.
m270=${GDP_270M:-/tmp/gdp-270m-q4_k_m.gguf}
m12l=${GDP_12B_L12:-/tmp/gdp-12b-l12-q4_k_m.gguf}
m12=${GDP_12B:-/tmp/gemma-synth-12b-q4_k_m.gguf}
[ -f "$m270" ] || timeout 60 "$BIN/synth" --size 270m --quant Q4_K_M --vocab-from "$vocab" --out "$m270" \
  > "$LOGS/synth-270m.log" 2>&1 &
[ -f "$m12l" ] || timeout 120 "$BIN/synth" --size 12b --layers 12 --quant Q4_K_M --vocab-from "$vocab" \
  --out "$m12l" > "$LOGS/synth-12b-l12.log" 2>&1 &
wait
[ -f "$m12" ] && echo "wrote $m12 (already there)" > "$LOGS/synth-12b.log"
[ -f "$m12" ] || { timeout 240 nice -n 19 "$BIN/synth" --size 12b --quant Q4_K_M --vocab-from "$vocab" \
  --out "$m12" > "$LOGS/synth-12b.log" 2>&1 & }
echo "synth done at $(( $(date +%s) - t0 )) s"

steps_rows=()
# bench_steps NAME MODEL [ENV=VALUE ...] [-- BENCH ARGS]: one bench with the step times.
bench_steps() {
  local name=$1 model=$2
  shift 2
  local envs=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  extra=("$@")
  env GEMMA_CUDA_PROFILE=steps "${envs[@]}" timeout 120 "$BIN/bench" --model "$model" --device cuda \
    --prefill 16 --decode 64 --reps 2 --json "${extra[@]}" > "$LOGS/$name.log" 2>&1
  local tps line
  tps=$(grep -o '"decode_tokens_per_s":[0-9.]*' "$LOGS/$name.log" | head -n1 | cut -d: -f2)
  line=$(grep -h '^decode steps' "$LOGS/$name.log" | tail -n1 | sed 's/^decode steps (GEMMA_CUDA_PROFILE=steps): //')
  steps_rows+=("$(printf '%-34s tg64 %7.1f tok/s | %s' "$name" "${tps:-0}" "${line:-no step line (see $name.log)}")")
  echo "${steps_rows[-1]}"
}

echo "=== decode steps"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu --format=csv -lms 100 \
  > "$LOGS/clocks-270m.csv" 2>&1 &
smi=$!
bench_steps 270m "$m270"
bench_steps 270m-fa-off "$m270" -- --flash-attn off
bench_steps 270m-nopdl "$m270" GEMMA_CUDA_PDL=0
bench_steps 270m-read-logits "$m270" -- --read-logits
kill $smi 2>/dev/null
bench_steps 12b-l12 "$m12l"
bench_steps 12b-l12-fa-off "$m12l" -- --flash-attn off
bench_steps 12b-l12-nopdl "$m12l" GEMMA_CUDA_PDL=0
# Positions 192-256: the last steps the CPU's one-chunk rounding covers (its one-run walk).
bench_steps 12b-l12-d192 "$m12l" -- --depth 192
bench_steps 12b-l12-d192-fa-off "$m12l" -- --depth 192 --flash-attn off

echo "=== kernel times replayed from a CUDA graph (cuda_bench --graph)"
timeout 90 "$BIN/cuda_bench" --graph > "$LOGS/kernel-bench-graph.log" 2>&1
tail -n 5 "$LOGS/kernel-bench-graph.log"

echo "=== ncu"
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n1)
ncu_rows=()
for pair in "270m:$m270" "12b-l12:$m12l"; do
  name=${pair%%:*} model=${pair#*:}
  if [ -z "$ncu_bin" ]; then
    ncu_rows+=("ncu $name: NOT RUN (no ncu)")
    continue
  fi
  GEMMA_CUDA_GRAPH=0 timeout 90 "$ncu_bin" --csv --launch-count 600 --print-units base --metrics gpu__time_duration.sum \
    --clock-control none --cache-control none "$BIN/generate" --model "$model" --tokens 2 --max-tokens 2 \
    --temperature 0 --ignore-eos --device cuda > "$LOGS/ncu-$name.csv" 2> "$LOGS/ncu-$name.err"
  echo "ncu $name: rc $?, $(grep -c gpu__time_duration "$LOGS/ncu-$name.csv") kernels"
  ncu_rows+=("$(python3 - "$LOGS/ncu-$name.csv" "$name" <<'PY'
import csv, sys, collections
# The program's own output shares stdout with ncu's CSV: start at the header.
rows = list(csv.reader(open(sys.argv[1], errors="replace")))
head = [i for i, r in enumerate(rows) if "Kernel Name" in r and "Metric Value" in r]
if not head:
    print(f"ncu {sys.argv[2]}: no CSV (see the .err log)")
    sys.exit(0)
h = rows[head[0]]
k, u, v = h.index("Kernel Name"), h.index("Metric Unit"), h.index("Metric Value")
per = collections.OrderedDict()
total, unit = 0.0, ""
for r in rows[head[0] + 1:]:
    if len(r) != len(h) or r[h.index("Metric Name")] != "gpu__time_duration.sum":
        continue
    try:
        t = float(r[v].replace(",", ""))
    except ValueError:
        continue
    unit = r[u]
    name = r[k].split("(")[0]
    c, s = per.get(name, (0, 0.0))
    per[name] = (c + 1, s + t)
    total += t
print(f"ncu {sys.argv[2]}: {sum(c for c, _ in per.values())} kernels in two one-token steps, {total:.0f} {unit} in all")
for name, (c, s) in sorted(per.items(), key=lambda x: -x[1][1]):
    print(f"  {name:<34} {c:5d} x {s / c:9.0f} {unit} = {s:10.0f} {unit} {100 * s / total:5.1f}%")
PY
)")
  printf '%s\n' "${ncu_rows[-1]}"
done

echo "=== ncu sections of the 12B's Q4_K / Q6_K matvecs, the experimental layouts, the norm and the argmax"
if [ -n "$ncu_bin" ]; then
  # cuda_bench --launches 1: every timing launches its kernel once and times nothing.
  timeout 150 "$ncu_bin" \
    --kernel-name regex:'^(mmvq_q4_K_1|mmvq_q6_K_1|mmvq_x_.*|rms_norm_add_norm_q8_1|argmax_part)$' \
    --launch-count 80 --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section Occupancy --section WarpStateStats --section SchedulerStats --section LaunchStats \
    "$BIN/cuda_bench" --quick --launches 1 > "$LOGS/ncu-sections.txt" 2>&1
  echo "ncu sections: rc $?, $(grep -c 'Section: GPU Speed Of Light' "$LOGS/ncu-sections.txt") kernels"
fi

echo "=== whole 12B"
for _ in $(seq 1 40); do grep -q '^wrote ' "$LOGS/synth-12b.log" 2>/dev/null && break; sleep 3; done
if grep -q '^wrote ' "$LOGS/synth-12b.log" 2>/dev/null; then
  bench_steps 12b "$m12"
  bench_steps 12b-read-logits "$m12" -- --read-logits
  bench_steps 12b-nopdl "$m12" GEMMA_CUDA_PDL=0
else
  steps_rows+=("12b: synth not done (see synth-12b.log)")
fi

echo "=== summary ($(( $(date +%s) - t0 )) s)"
cat "$LOGS/nvidia-smi.log"
printf '%s\n' "${steps_rows[@]}"
awk -F', ' 'NR > 1 { n++; s += $2 + 0; if ($2 + 0 > mx) mx = $2 + 0; if (mn == 0 || $2 + 0 < mn) mn = $2 + 0 }
  END { if (n) printf "SM clock during the 270M benches: %d samples, mean %.0f MHz (min %.0f, max %.0f)\n", n, s / n, mn, mx }' \
  "$LOGS/clocks-270m.csv" 2>/dev/null
printf '%s\n' "${ncu_rows[@]}"
grep -h -E "^(matvec|matmul|attention|row kernel)|decode estimate" "$LOGS/kernel-bench-graph.log" 2>/dev/null
grep -E "^  (mmvq|rms_norm)|Duration|DRAM Throughput|L1/TEX Hit|L2 Hit|Achieved Occupancy|Theoretical Occupancy|Registers Per Thread|Issued Warp Per Scheduler|No Eligible|Warp Cycles Per Issued|Block Limit" \
  "$LOGS/ncu-sections.txt" 2>/dev/null | head -n 90
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  (cd "$LOGS" && tar czf "$OUT/gpu-decode-profile.tgz" .) && echo "logs: \$OUT/gpu-decode-profile.tgz"
fi
