#!/usr/bin/env bash
# The prepared GPU run (issue 7), for a machine with an NVIDIA GPU but no Rust toolchain and
# no network. Run scripts/gpu-prepare.sh first (on a machine with cargo) and carry gpu-bin/.
#
#   bash scripts/gpu-check.sh            # logs under /tmp/gpu-check (GPU_CHECK_LOGS), table last;
#                                        # with $LOGS set (the device tool), the logs also go
#                                        # there as one gpu-check-logs.tgz (8 files come back)
#   bash scripts/gpu-check.sh --quick    # skips the kernel benchmark and the 12B (~1 min)
#
# Dry run without a GPU, on the emulated CUDA driver (scripts/emu-cuda.sh; ~7 min, nothing
# timed; move gpu-bin/real aside first, the real 270M takes minutes per prompt there):
#   LD_LIBRARY_PATH="$(scripts/emu-cuda.sh):$(scripts/setup-nvrtc.sh)" bash scripts/gpu-check.sh --quick
#
# Steps, each under `timeout`, continuing on failure:
#   1. nvidia-smi summary;
#   2. find libnvrtc on the machine (CUDA toolkit, system, Python wheels) and point the
#      loader at it (cudarc looks for libnvrtc.so / .so.12: a symlink folder covers .so.13);
#   3. every kernel compiled by this machine's NVRTC (cuda_nvrtc), device checks;
#   4. kernel parity against CPU references on random data (cuda_parity: every weight
#      type's dequantization, mmvq and mmq; cuda_kv_types: f32 / Q8_0 KV store + attention;
#      cuda_one_chunk: attention rounded as llama.cpp's one-chunk CPU kernel;
#      cuda_fused: the fused kernels against the launches they replace: QK-norm + RoPE,
#      GeGLU + q8_1, post-norm + residual + pre-norm + q8_1, attention + q8_1, QK-norm +
#      RoPE + KV store; cuda_argmax: the greedy pick on the device against a plain scan);
#   5. the CUDA engine against the CPU engine and llama.cpp on the tiny models, with f32 and
#      Q8_0 KV caches, with image spans, and decode-graph replays against eager steps
#      (gemma-core); again without programmatic dependent launch (GEMMA_CUDA_PDL=0; it is on
#      by default on sm_90+);
#   5b. mean KL(CPU || GPU) over the 64 positions of the fixture sequence, every carried
#      variant (f16 KV) and the f16 model with f32 / Q8_0 KV (logits_kl; bound 1e-3 for the
#      f16 model, for the quantized ones three times the KL between the CPU's own scalar and
#      SIMD paths if larger);
#   6. kernel timings at 12B shapes: matvec GB/s vs HBM and vs a plain streaming read of the
#      same bytes (what a kernel can reach at that size), matmul TOPS, attention (cuda_bench);
#   6a. the same (--quick) with every timing replayed from a CUDA graph (--graph): the
#      kernels' own times without the host's launch costs, side by side with 6's;
#   6b. the same (--quick) with three sets of tuning constants (GEMMA_CUDA_DEFINES: the keys
#      in flight in attention, the values in flight in the one-chunk walk, mmq's blocks per
#      SM), attention and matmul times side by side with the default's;
#   7. greedy `generate --device cuda --json` on the tiny f16 and q4_k_m models, its ids
#      compared with the CPU's (precomputed by gpu-prepare.sh): MATCH / MISMATCH;
#   7b. the same greedy runs with decode graphs (the default; the eager runs above set
#      GEMMA_CUDA_GRAPH=0): ids compared with the eager GPU run and the CPU: MATCH / MISMATCH;
#      and with decode graphs without PDL (GEMMA_CUDA_PDL=0), against the eager run;
#   8. `synth` a 12B Q4_K_M (in the background from the start; fallback: 8 of its 48 layers
#      if that fails or takes > 200 s), then `bench --device cuda --prefill 512 --decode 64
#      --reps 2 --json`: tokens/s, VRAM, once eager and once with GEMMA_CUDA_GRAPH=1; then
#      decode with one weight row per matvec block (GEMMA_CUDA_MMVQ_ROWS=1) and with
#      without PDL (GEMMA_CUDA_PDL=0, eager and graph);
#   8b. the real Gemma 3 270M Q4_K_M, joined from parts carried by earlier calls (gpu-mI/part
#      or /tmp/gp/I, see gpu-prepare.sh): for every fixture prompt, greedy 32 tokens and the logits
#      of every position from our CPU engine and from the GPU engine on this machine (mean
#      KL <= 1e-3, the issue's goal, shown next to the KL between the CPU's own scalar and
#      SIMD paths, 3.0e-3 .. 1.0e-2 on these prompts; ids compared with each other and
#      llama.cpp's); on the first prompt, where the GPU's activations part from the CPU's
#      (`generate --dump-trace`, scripts/trace-compare.py) beside where the CPU's scalar
#      kernels part from its SIMD ones; its speed on the GPU;
#   8b'. `GEMMA_CUDA_PROFILE=1 bench` on the 12B: GPU time per operation (prefill + decode);
#   8c. with a llama.cpp CUDA build at $LLAMA_CUDA_DIR (scripts/llamacpp-cuda/README.md):
#      llama-bench on the same 12B synth and real 270M files, side by side with ours;
#   9. the CUDA image encoder (gemma-vision cuda_encode): every stage and the soft tokens of
#      the fixture images with both tiny mmproj files against the references and the CPU,
#      head_dim 72 and partial tiles on random files; then (not with --quick) `synth` a 270M
#      Q8_0 and its real-shape mmproj (SigLIP-So400m: 27 layers, 4096 patches, F16): the soft
#      tokens of one image from `generate --dump-image-embeddings` on the CPU and with
#      --device cuda (max |diff| <= 1e-3 x max |value|), and the GPU encode time
#      (`bench --mmproj --image`, median of 3 after a warm-up).
# Budget: about 6 minutes (step 9 about 1), under 7 (timeouts sum to more; they are the worst case).
set -u
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
BIN="${GPU_BIN:-gpu-bin}"
LOGS="${GPU_CHECK_LOGS:-/tmp/gpu-check}"
mkdir -p "$LOGS"
export GEMMA_CACHE="${GEMMA_CACHE:-/tmp/gemma-cache}"
export GEMMA_FIXTURES="$PWD/$BIN/fixtures"
export GEMMA_TINY_VARIANTS="$(tr ' ' ',' < "$BIN/fixtures/variants.txt" 2>/dev/null | tr -d '\n')"
export RUST_BACKTRACE=1
t_start=$(date +%s)
rows=()

# step NAME SECONDS CMD...: runs CMD with a timeout, logs to $LOGS/NAME.log, shows its tail.
step() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*"
  local s=$(date +%s)
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$? d=$(( $(date +%s) - s ))
  tail -n 25 "$LOGS/$name.log"
  local status=PASS
  [ $rc -eq 0 ] || status="FAIL rc=$rc"
  [ $rc -eq 124 ] && status="TIMEOUT ${limit}s"
  rows+=("$(printf '%-22s %-16s %4ss' "$name" "$status" "$d")")
}

# llama_bench NAME MODEL: llama.cpp's CUDA backend on MODEL (llama-bench -ngl 99 -p 512 -n 64
# -r 3, flash attention auto = on) when a build is at $LLAMA_CUDA_DIR (see
# scripts/llamacpp-cuda/README.md); logs to $LOGS/NAME.log and adds a row "prefill / decode".
LLAMA_CUDA_DIR="${LLAMA_CUDA_DIR:-$([ -d llama-cuda ] && echo llama-cuda || echo /tmp/llama-cuda)}"
llama_rows=()
llama_bench() {
  local name=$1 model=$2
  if [ ! -x "$LLAMA_CUDA_DIR/llama-bench" ]; then
    llama_rows+=("llama.cpp CUDA on $name: NOT RUN (no build at $LLAMA_CUDA_DIR)")
    return
  fi
  step "$name" 240 bash "$LLAMA_CUDA_DIR/run.sh" "$model"
  llama_rows+=("$(python3 - "$LOGS/$name.log" "$name" <<'PY'
import json, sys
text = open(sys.argv[1], errors="replace").read()
start = text.find("\n[")
try:
    runs = json.loads(text[start + 1:] if start >= 0 else text[text.index("["):])
except ValueError:
    print(f"llama.cpp CUDA on {sys.argv[2]}: no JSON (see the log)")
    sys.exit(0)
pp = [r["avg_ts"] for r in runs if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0]
tg = [r["avg_ts"] for r in runs if r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0]
backends = sorted({r.get("backends", "?") for r in runs})
print(f"llama.cpp CUDA on {sys.argv[2]}: prefill pp512 {pp[0] if pp else 0:.0f} tok/s | decode tg64 "
      f"{tg[0] if tg else 0:.1f} tok/s (backends {','.join(backends)}, flash attention auto)")
PY
)")
}

echo "=== nvidia-smi"
timeout 20 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,clocks.max.mem \
  --format=csv 2>&1 | tee "$LOGS/nvidia-smi.log"
gpu_name=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)

echo "=== libnvrtc"
# shellcheck source=scripts/gpu-find-nvrtc.sh
source scripts/gpu-find-nvrtc.sh

run_test() {  # run_test NAME SECONDS BINARY [ARGS...]
  local name=$1 limit=$2 bin="$BIN/$3"
  shift 3
  if [ -x "$bin" ]; then
    step "$name" "$limit" "$bin" --nocapture "$@"
  else
    rows+=("$(printf '%-22s %-16s' "$name" "MISSING $bin")")
  fi
}

# The synth 12B (random weights, real shapes, ~7.3 GB; about 100 s of quantizing on the
# CPU cores) is made in the background while the GPU tests run; step 8 waits for it.
synth_model=/tmp/gemma-synth-12b-q4_k_m.gguf
synth_pid=""
if [ $quick -eq 0 ]; then
  timeout 200 "$BIN/synth" --size 12b --quant Q4_K_M --vocab-from "$BIN/fixtures/gemma3-vocab.gguf" \
    --out "$synth_model" > "$LOGS/synth-12b.log" 2>&1 &
  synth_pid=$!
fi

run_test nvrtc-compile 120 cuda_nvrtc --test-threads=2
run_test device 30 cuda_device
run_test kernel-parity 180 cuda_parity --test-threads=4
run_test kv-types 60 cuda_kv_types
run_test one-chunk-attention 60 cuda_one_chunk
run_test fused-kernels 60 cuda_fused
run_test device-argmax 30 cuda_argmax
run_test engine-tiny-parity 180 gemma_core-lib backend::cuda
# The same without programmatic dependent launch (on by default from compute capability 9.0).
GEMMA_CUDA_PDL=0 run_test engine-tiny-parity-nopdl 180 gemma_core-lib backend::cuda

# Mean KL(CPU || GPU) of the fixture sequence's logits (CPU dumps made by gpu-prepare.sh).
kl_rows=()
kl_args=$(cat "$BIN/kl-args.txt" 2>/dev/null)
for run in $(cat "$BIN/kl/runs.txt" 2>/dev/null); do
  v=${run%%:*} kv=${run##*:}
  gpu_dump="$LOGS/kl-gpu-$v-kv$kv.f32"
  # shellcheck disable=SC2086
  timeout 60 "$BIN/generate" --model "$BIN/fixtures/tiny/tiny-gemma3-t1-$v.gguf" $kl_args \
    --kv-type "$kv" --device cuda --dump-logits "$gpu_dump" >"$LOGS/kl-gpu-$v-kv$kv.log" 2>&1
  # Bound: 1e-3 (the issue's goal), or for a quantized model three times the KL between the
  # CPU's own scalar and SIMD paths on the same file (gpu-prepare.sh), if larger: its
  # activations are quantized to 8 bits, so a last-bit difference anywhere flips whole steps
  # downstream (the CPU's paths differ by 3.8e-4 .. 2.4e-3 on the tiny models; the emulated
  # GPU by 6.0e-4 .. 2.1e-3). A systematic difference shows as several times that (an exact
  # GELU where the CPU rounds it to F16 as llama.cpp: 6.3e-3 on q4_k_m).
  # A Q8_0 cache: both engines round K, V and the query identically (cuda_kv_types), but
  # f32 differences upstream flip whole Q8_0 steps; a CPU-only emulation with f32-cache-sized
  # noise gave mean KL 1.0e-3 .. 2.3e-3, hence 3e-3 there.
  spread=$(sed -n 's/^mean_kl=\([^ ]*\).*/\1/p' "$BIN/kl/scalar-vs-simd-$v.txt" 2>/dev/null)
  bound=1e-3 bound_note="<= 1e-3"
  if [ "$kv" = q8_0 ]; then
    bound=3e-3 bound_note="<= 3e-3 (Q8_0 cache)"
  elif [ "$v" != f16 ] && [ -n "$spread" ]; then
    bound=$(awk -v r="$spread" 'BEGIN { b = 3 * r; if (b < 1e-3) b = 1e-3; printf "%.3e", b }')
    bound_note="<= max(1e-3, 3x CPU scalar-vs-SIMD KL $spread)"
  fi
  line=$("$BIN/logits_kl" "$BIN/kl/cpu-$v-kv$kv.f32" "$gpu_dump" 512 "$bound" 2>&1)
  case $? in
    0) verdict="PASS ($bound_note)" ;;
    1) verdict="FAIL (mean KL > $bound: $bound_note)" ;;
    *) verdict="FAIL (no GPU dump: see $LOGS/kl-gpu-$v-kv$kv.log)" ;;
  esac
  kl_rows+=("$(printf 'kl %-7s kv %-5s %-62s %s' "$v" "$kv" "$line" "$verdict")")
done
printf '%s\n' "${kl_rows[@]}" | tee "$LOGS/kl.log"

if [ -x "$BIN/cuda_bench" ] && [ $quick -eq 0 ]; then
  step kernel-bench 180 "$BIN/cuda_bench"
  step kernel-bench-graph 90 "$BIN/cuda_bench" --quick --graph
fi

# 6b. Tuning constants without a rebuild (GEMMA_CUDA_DEFINES, see modules.rs): cuda_bench
# --quick with each set, its attention and matmul times against the default run's.
tune_rows=()
if [ -x "$BIN/cuda_bench" ] && [ $quick -eq 0 ] && [ -f "$LOGS/kernel-bench.log" ]; then
  for defs in "ATT_WALK_AHEAD=8 MMQ_MIN_BLOCKS=3" "ATT_WALK_AHEAD=32 MMQ_MIN_BLOCKS=2" "ATT_KEYS_IN_FLIGHT=8"; do
    name="tune-$(echo "$defs" | tr ' =' '-_' | tr '[:upper:]' '[:lower:]')"
    GEMMA_CUDA_DEFINES="$defs" step "$name" 60 "$BIN/cuda_bench" --quick
    tune_rows+=("GEMMA_CUDA_DEFINES=\"$defs\" (default -> these):")
    while IFS= read -r line; do tune_rows+=("  $line"); done < <(bash scripts/gpu-compare.sh \
      "$LOGS/kernel-bench.log" "$LOGS/$name.log" | grep -E '^(attention|matmul)')
  done
fi

# Greedy generation on the GPU against the CPU's ids precomputed by gpu-prepare.sh.
gen_args=$(cat "$BIN/generate-args.txt" 2>/dev/null)
ids() { grep -o '"generated_ids":\[[^]]*\]' "$1" 2>/dev/null | head -n1; }
gen_rows=()
# compare_ids LABEL GPU_IDS CPU_IDS: appends a MATCH / MISMATCH row.
compare_ids() {
  local label=$1 gpu=$2 cpu=$3 verdict same
  if [ -z "$gpu" ] || [ -z "$cpu" ]; then verdict="NO OUTPUT"
  elif [ "$gpu" = "$cpu" ]; then verdict="MATCH"
  else
    read -ra c_ids <<< "$(echo "${cpu#*:}" | tr -d '[]' | tr ',' ' ')"
    read -ra g_ids <<< "$(echo "${gpu#*:}" | tr -d '[]' | tr ',' ' ')"
    same=0
    while [ $same -lt ${#c_ids[@]} ] && [ "${c_ids[$same]}" = "${g_ids[$same]:-}" ]; do same=$((same + 1)); done
    verdict="MISMATCH (first $same of ${#c_ids[@]} ids equal)"
  fi
  gen_rows+=("$(printf '%-42s %s' "$label" "$verdict")")
}
for v in f16 q4_k_m; do
  tiny_model="$BIN/fixtures/tiny/tiny-gemma3-t1-$v.gguf"
  # shellcheck disable=SC2086
  GEMMA_CUDA_GRAPH=1 step "generate-graph-$v" 60 "$BIN/generate" --model "$tiny_model" $gen_args --device cuda
  # shellcheck disable=SC2086
  GEMMA_CUDA_GRAPH=0 step "generate-$v" 60 "$BIN/generate" --model "$tiny_model" $gen_args --device cuda
  gpu=$(ids "$LOGS/generate-$v.log") cpu=$(ids "$BIN/generate-cpu-$v.json")
  graph=$(ids "$LOGS/generate-graph-$v.log")
  compare_ids "generate $v decode graph vs eager GPU ids:" "$graph" "$gpu"
  compare_ids "generate $v decode graph vs CPU ids:" "$graph" "$cpu"
  compare_ids "generate $v eager GPU vs CPU ids:" "$gpu" "$cpu"
  # shellcheck disable=SC2086
  GEMMA_CUDA_PDL=0 GEMMA_CUDA_GRAPH=1 step "generate-graph-nopdl-$v" 60 "$BIN/generate" --model "$tiny_model" \
    $gen_args --device cuda
  compare_ids "generate $v graph without PDL vs eager GPU ids:" "$(ids "$LOGS/generate-graph-nopdl-$v.log")" "$gpu"
  [ "$gpu" = "$cpu" ] || gen_rows+=("  cpu ${cpu#*:}" "  gpu ${gpu#*:}")
  vram=$(grep -o '"vram_bytes":[0-9]*' "$LOGS/generate-$v.log" | head -n1)
  planned=$(grep -o '"vram_predicted_bytes":[0-9]*' "$LOGS/generate-$v.log" | head -n1)
  [ -n "$vram" ] && gen_rows+=("  $v ${vram//\"/} (the planner: ${planned//\"/})")
done

# A synth 12B Q4_K_M (random weights, real shapes; ~7.3 GB in /tmp), then its speed and VRAM,
# eager and with decode graphs.
synth_note="12B (48 layers)"
bench_line="" graph_line="" rows1_line="" nopdl_graph_line="" nopdl_line=""
if [ -n "$synth_pid" ]; then
  s=$(date +%s)
  wait "$synth_pid"
  rows+=("$(printf '%-22s %-16s %4ss' synth-12b "$(grep -q '^wrote ' "$LOGS/synth-12b.log" && echo PASS || echo FAIL)" \
    "$(( $(date +%s) - s ))") (waited; it ran in the background)")
fi
if [ $quick -eq 0 ] && ! grep -q '^wrote ' "$LOGS/synth-12b.log"; then
  synth_note="12B shapes, 8 of 48 layers (the full 12B synth failed or took > 200 s)"
  step synth-12b-8layers 60 "$BIN/synth" --size 12b --layers 8 --quant Q4_K_M \
    --vocab-from "$BIN/fixtures/gemma3-vocab.gguf" --out "$synth_model"
fi
if [ $quick -eq 0 ] && [ -f "$synth_model" ]; then
  GEMMA_CUDA_GRAPH=0 step bench-12b 240 "$BIN/bench" --model "$synth_model" --device cuda --prefill 512 --decode 64 \
    --reps 2 --json
  bench_line=$(grep -h '^{' "$LOGS/bench-12b.log" | tail -n1)
  GEMMA_CUDA_GRAPH=1 step bench-12b-graph 120 "$BIN/bench" --model "$synth_model" --device cuda --prefill 16 \
    --decode 64 --reps 2 --json
  graph_line=$(grep -h '^{' "$LOGS/bench-12b-graph.log" | tail -n1)
  # The same with one weight row per matvec block (the layout before rows were grouped).
  GEMMA_CUDA_GRAPH=1 GEMMA_CUDA_MMVQ_ROWS=1 step bench-12b-graph-rows1 120 "$BIN/bench" --model "$synth_model" \
    --device cuda --prefill 16 --decode 64 --reps 2 --json
  rows1_line=$(grep -h '^{' "$LOGS/bench-12b-graph-rows1.log" | tail -n1)
  # With programmatic dependent launch: decode graph, and eager prefill + decode.
  GEMMA_CUDA_PDL=0 GEMMA_CUDA_GRAPH=1 step bench-12b-graph-nopdl 120 "$BIN/bench" --model "$synth_model" \
    --device cuda --prefill 16 --decode 64 --reps 2 --json
  nopdl_graph_line=$(grep -h '^{' "$LOGS/bench-12b-graph-nopdl.log" | tail -n1)
  GEMMA_CUDA_PDL=0 GEMMA_CUDA_GRAPH=0 step bench-12b-nopdl 240 "$BIN/bench" --model "$synth_model" \
    --device cuda --prefill 512 --decode 64 --reps 2 --json
  nopdl_line=$(grep -h '^{' "$LOGS/bench-12b-nopdl.log" | tail -n1)
  # Where the GPU time goes: per-operation event timings (eager, prefill 512 + decode 32).
  GEMMA_CUDA_PROFILE=1 step profile-12b 120 "$BIN/bench" --model "$synth_model" --device cuda --prefill 512 \
    --decode 32 --reps 1
  llama_bench llama-12b "$synth_model"
fi
rm -f "$synth_model"

# 8b. The real Gemma 3 270M Q4_K_M, joined from its parts (gpu-m1..gpu-m4, carried by
# earlier calls, and $BIN/real/part5): for every fixture prompt, our CPU engine and the GPU
# engine on this machine, greedy 32 tokens each (ids compared with each other and with
# llama.cpp's) and the logits of every prompt position (mean KL(CPU || GPU), bound 1e-3);
# then the 270M's prefill / decode speed on the GPU, eager and with decode graphs.
real_rows=()
real_model=/tmp/gemma-270m-q4_k_m.gguf
if [ -f "$BIN/real/part5" ]; then
  parts=()
  for i in 1 2 3 4; do
    if [ -f "gpu-m$i/part" ]; then parts+=("gpu-m$i/part"); else parts+=("/tmp/gp/$i"); fi
  done
  cat "${parts[@]}" "$BIN/real/part5" > "$real_model" 2>/dev/null
  if [ "$(sha256sum "$real_model" | cut -d' ' -f1)" != "$(cat "$BIN/real/sha256")" ]; then
    real_rows+=("real 270M: NOT RUN (parts missing or corrupt: ${parts[*]})")
    rm -f "$real_model"
  fi
fi
if [ -f "$real_model" ]; then
  for name in $(cat "$BIN/real/prompts.txt"); do
    toks=$(cat "$BIN/real/$name.tokens")
    for d in cpu cuda; do
      timeout 120 "$BIN/generate" --model "$real_model" --tokens "$toks" --max-tokens 32 --temperature 0 \
        --ignore-eos --json --device $d --dump-logits "/tmp/real-$d-$name.f32" > "$LOGS/real-$d-$name.log" 2>&1
    done
    line=$("$BIN/logits_kl" "/tmp/real-cpu-$name.f32" "/tmp/real-cuda-$name.f32" 262144 1e-3 2>&1)
    case $? in 0) verdict=PASS ;; 1) verdict="FAIL (mean KL > 1e-3)" ;; *) verdict="FAIL (no dump)" ;; esac
    cpu=$(ids "$LOGS/real-cpu-$name.log") gpu=$(ids "$LOGS/real-cuda-$name.log")
    llama=$(cat "$BIN/real/$name.greedy")
    g_ids=$(echo "${gpu#*:}" | tr -d '[]')
    c_ids=$(echo "${cpu#*:}" | tr -d '[]')
    same() { [ -n "$1" ] && [ "$1" = "$2" ] && echo same || echo DIFFERENT; }
    spread=$(cat "$BIN/real/$name.cpu-spread" 2>/dev/null)
    real_rows+=("$(printf 'real %-13s %-66s %s (CPU scalar vs SIMD: %s) | greedy 32: gpu vs cpu %s, gpu vs llama.cpp %s, cpu vs llama.cpp %s' \
      "$name" "$line" "$verdict" "${spread:-?}" "$(same "$g_ids" "$c_ids")" "$(same "$g_ids" "$llama")" \
      "$(same "$c_ids" "$llama")")")
    rm -f "/tmp/real-cpu-$name.f32" "/tmp/real-cuda-$name.f32"
  done
  # Where the GPU's activations part from the CPU's on the first prompt (every named tensor
  # of its prefill, `generate --dump-trace`), beside where the CPU's scalar kernels part
  # from its SIMD ones: summation order alone grows through this model's layers to a KL
  # above 1e-3 (see docs/gpu-runs/README.md).
  first=$(cut -d' ' -f1 "$BIN/real/prompts.txt")
  for run in cpu scalar cuda; do
    # shellcheck disable=SC2046
    env $([ $run = scalar ] && echo GEMMA_ISA=scalar) timeout 120 "$BIN/generate" --model "$real_model" \
      --tokens "$(cat "$BIN/real/$first.tokens")" --max-tokens 1 --device "$([ $run = cuda ] && echo cuda || echo cpu)" \
      --dump-trace "/tmp/trace-$run" > "$LOGS/trace-$run.log" 2>&1
  done
  for other in cuda scalar; do
    python3 scripts/trace-compare.py /tmp/trace-cpu "/tmp/trace-$other" \
      --only '^(kqv_out|l_out)-(0|2|5|8|11|17)$|result_output' > "$LOGS/trace-cpu-vs-$other.txt" 2>&1
    real_rows+=("trace $first cpu vs $other: $(tail -n1 "$LOGS/trace-cpu-vs-$other.txt" | sed 's/ tensor above \([^ ]*\) relative:/ tensor above \1:/'); rel $(grep -E '^(l_out-(2|8|17)|result_output) ' \
      "$LOGS/trace-cpu-vs-$other.txt" | awk '{printf "%s %s  ", $1, $6}')")
  done
  rm -rf /tmp/trace-cpu /tmp/trace-scalar /tmp/trace-cuda
  GEMMA_CUDA_GRAPH=0 step bench-270m 120 "$BIN/bench" --model "$real_model" --device cuda --prefill 512 \
    --decode 128 --reps 3 --json
  GEMMA_CUDA_GRAPH=1 step bench-270m-graph 120 "$BIN/bench" --model "$real_model" --device cuda --prefill 512 \
    --decode 128 --reps 3 --json
  GEMMA_CUDA_GRAPH=1 GEMMA_CUDA_PDL=0 step bench-270m-graph-nopdl 120 "$BIN/bench" --model "$real_model" --device cuda \
    --prefill 512 --decode 128 --reps 3 --json
  llama_bench llama-270m "$real_model"
  rm -f "$real_model"
elif [ ${#real_rows[@]} -eq 0 ]; then
  real_rows+=("real 270M: NOT RUN (no $BIN/real/part5: run scripts/gpu-prepare.sh)")
fi
printf '%s\n' "${real_rows[@]}" | tee "$LOGS/real.log"

# 9. The CUDA image encoder: fixtures, then real shapes.
run_test vision-cuda-encode 120 cuda_encode --test-threads=1
vision_rows=()
vision_lm=/tmp/gemma-synth-270m-q8_0.gguf
vision_mmproj=/tmp/gemma-synth-mmproj-270m.gguf
vision_image="$BIN/fixtures/vision/images/noise_300x200.png"
if [ $quick -eq 0 ]; then
  step vision-synth 120 "$BIN/synth" --size 270m --quant Q8_0 --vocab-from "$BIN/fixtures/gemma3-vocab.gguf" \
    --out "$vision_lm" --mmproj "$vision_mmproj"
  vision_args=(--model "$vision_lm" --mmproj "$vision_mmproj" --image "$vision_image" --tokens 2,100
    --max-tokens 1 --temperature 0)
  step vision-generate-cpu 120 "$BIN/generate" "${vision_args[@]}" --device cpu \
    --dump-image-embeddings "$LOGS/vision-cpu-tokens.f32"
  step vision-generate-gpu 120 "$BIN/generate" "${vision_args[@]}" --device cuda \
    --dump-image-embeddings "$LOGS/vision-gpu-tokens.f32"
  vision_rows+=("$(python3 - "$LOGS/vision-cpu-tokens.f32" "$LOGS/vision-gpu-tokens.f32" <<'PY'
import array, sys
cpu, gpu = array.array("f"), array.array("f")
try:
    cpu.frombytes(open(sys.argv[1], "rb").read())
    gpu.frombytes(open(sys.argv[2], "rb").read())
except OSError as e:
    print(f"vision real shapes GPU vs CPU tokens: FAIL (missing output: {e})")
    sys.exit(0)
if len(cpu) != len(gpu) or not cpu:
    print(f"vision real shapes GPU vs CPU tokens: FAIL ({len(gpu)} values, CPU {len(cpu)})")
    sys.exit(0)
err = max(abs(a - b) for a, b in zip(cpu, gpu))
scale = max(abs(a) for a in cpu)
verdict = "PASS" if err <= 1e-3 * scale else "FAIL"
print(f"vision real shapes GPU vs CPU tokens: max |diff| {err:.3e}, max |value| {scale:.3e}: {verdict} (<= 1e-3 x max)")
PY
)")
  step vision-bench 180 "$BIN/bench" --model "$vision_lm" --device cuda --prefill 16 --decode 4 --reps 3 \
    --mmproj "$vision_mmproj" --image "$vision_image"
  encode=$(sed -n 's/^image encode: //p' "$LOGS/vision-bench.log" | head -n1)
  vision_rows+=("vision real-shape encode (896x896, 27 layers, F16) on cuda: ${encode:-no figure} (median of 3, preprocessing included)")
fi
rm -f "$vision_lm" "$vision_mmproj"

# field JSON NAME [DIVISOR]: a number of a bench JSON line (0 when absent or null), divided.
field() {
  local v
  v=$(echo "$1" | grep -o "\"$2\":[^,}]*" | head -n1 | cut -d: -f2)
  awk -v x="$v" -v d="${3:-1}" 'BEGIN { print (x + 0) / d }'
}

echo
echo "=== summary (${gpu_name:-unknown GPU}, $(( $(date +%s) - t_start )) s, logs in $LOGS)"
grep -h -E "^matvec|^matmul|^attention|^row kernel|decode estimate|^device:" "$LOGS/kernel-bench.log" 2>/dev/null | sed 's/^/  /'
grep -h -E "gpu vs llama.cpp|^kv |graph vs eager" "$LOGS/engine-tiny-parity.log" 2>/dev/null | sed 's/^/  /'
grep -h -E "test result" "$LOGS"/*.log 2>/dev/null | sed 's/^/  /'
printf '%s\n' "${kl_rows[@]}"
if [ -f "$LOGS/kernel-bench.log" ] && [ -f "$LOGS/kernel-bench-graph.log" ]; then
  echo "kernel times launched one after the other -> replayed from a CUDA graph (launch costs out):"
  bash scripts/gpu-compare.sh "$LOGS/kernel-bench.log" "$LOGS/kernel-bench-graph.log" | sed 's/^/  /'
  grep -h "decode estimate" "$LOGS/kernel-bench-graph.log" | sed 's/^/  graph: /'
fi
[ ${#tune_rows[@]} -gt 0 ] && printf '%s\n' "${tune_rows[@]}"
printf '%s\n' "${gen_rows[@]}"
awk '/GPU tokens max/ { for (i = 1; i < NF; i++) { if ($i == "|diff|") r = $(i + 1); if ($i == "reference,") c = $(i + 1) }
       n++; if (r + 0 > mr) mr = r + 0; if (c + 0 > mc) mc = c + 0 }
     END { if (n) printf "  vision fixtures: %d GPU encodes, worst tokens max |diff| %.3e vs reference, %.3e vs CPU\n", n, mr, mc }' \
  "$LOGS/vision-cuda-encode.log" 2>/dev/null
grep -h -E "GPU vs CPU max|NOT RUN" "$LOGS/vision-cuda-encode.log" 2>/dev/null | sed 's/^/  /'
[ ${#vision_rows[@]} -eq 0 ] || printf '%s\n' "${vision_rows[@]}"
if [ -n "$bench_line" ]; then
  printf 'bench %s Q4_K_M on cuda: prefill pp512 %.0f tok/s | decode tg64 %.1f tok/s | weights read %.0f GB/s | VRAM held %.2f GiB (device used %.2f GiB)\n' \
    "$synth_note" "$(field "$bench_line" prefill_tokens_per_s)" "$(field "$bench_line" decode_tokens_per_s)" \
    "$(field "$bench_line" decode_weight_bytes_per_s 1e9)" "$(field "$bench_line" vram_bytes 1073741824)" \
    "$(field "$bench_line" vram_device_used_bytes 1073741824)"
fi
printf '%s\n' "${real_rows[@]}"
[ ${#llama_rows[@]} -eq 0 ] || printf '%s\n' "${llama_rows[@]}"
sed -n '/^GPU time per operation/,/^[^ ]/p' "$LOGS/profile-12b.log" 2>/dev/null | head -n 20
for f in bench-270m bench-270m-graph bench-270m-graph-nopdl; do
  l=$(grep -h '^{' "$LOGS/$f.log" 2>/dev/null | tail -n1)
  case $f in bench-270m) how=eager ;; bench-270m-graph) how=GEMMA_CUDA_GRAPH=1 ;; *) how="GEMMA_CUDA_GRAPH=1 GEMMA_CUDA_PDL=0" ;; esac
  [ -n "$l" ] && printf 'bench real 270M Q4_K_M on cuda (%s): prefill pp512 %.0f tok/s | decode tg128 %.1f tok/s | VRAM held %.2f GiB\n' \
    "$how" "$(field "$l" prefill_tokens_per_s)" \
    "$(field "$l" decode_tokens_per_s)" "$(field "$l" vram_bytes 1073741824)"
done
if [ -n "$graph_line" ]; then
  printf 'bench %s Q4_K_M on cuda with GEMMA_CUDA_GRAPH=1: decode tg64 %.1f tok/s (eager above)\n' \
    "$synth_note" "$(field "$graph_line" decode_tokens_per_s)"
fi
if [ -n "$nopdl_line" ] && [ -n "$nopdl_graph_line" ]; then
  printf 'bench %s Q4_K_M on cuda with GEMMA_CUDA_PDL=0: prefill pp512 %.0f tok/s | decode tg64 %.1f tok/s eager, %.1f tok/s with GEMMA_CUDA_GRAPH=1\n' \
    "$synth_note" "$(field "$nopdl_line" prefill_tokens_per_s)" "$(field "$nopdl_line" decode_tokens_per_s)" \
    "$(field "$nopdl_graph_line" decode_tokens_per_s)"
fi
if [ -n "$rows1_line" ]; then
  printf 'bench %s Q4_K_M on cuda with GEMMA_CUDA_GRAPH=1 GEMMA_CUDA_MMVQ_ROWS=1: decode tg64 %.1f tok/s\n' \
    "$synth_note" "$(field "$rows1_line" decode_tokens_per_s)"
fi
ref=docs/gpu-runs/2026-11-28-h200-run2-kernel-bench.log
if [ -f "$ref" ] && [ -f "$LOGS/kernel-bench.log" ]; then
  echo "kernel times against $ref (an H200):"
  bash scripts/gpu-compare.sh "$ref" "$LOGS/kernel-bench.log" | sed 's/^/  /'
fi
printf '%s\n' "${rows[@]}"
# The device tool returns at most 8 files from $OUT: every log in one archive (the logit
# dumps stay behind, 67 MB each).
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  (cd "$LOGS" && tar czf "$OUT/gpu-check-logs.tgz" --exclude='*.f32' .) && echo "logs: \$OUT/gpu-check-logs.tgz"
fi
