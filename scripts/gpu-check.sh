#!/usr/bin/env bash
# The prepared GPU run (issue 7), for a machine with an NVIDIA GPU but no Rust toolchain and
# no network. Run scripts/gpu-prepare.sh first (on a machine with cargo) and carry gpu-bin/.
#
#   bash scripts/gpu-check.sh            # logs under $OUT (or /tmp/gpu-check), table last
#
# Steps, each under `timeout`, continuing on failure:
#   1. nvidia-smi summary;
#   2. find libnvrtc on the machine (CUDA toolkit, system, Python wheels) and point the
#      loader at it (cudarc looks for libnvrtc.so / .so.12: a symlink folder covers .so.13);
#   3. every kernel compiled by this machine's NVRTC (cuda_nvrtc), device checks;
#   4. kernel parity against CPU references on random data (cuda_parity);
#   5. the CUDA engine against the CPU engine and llama.cpp on the tiny models (gemma-core);
#   6. kernel timings at 12B shapes: matvec GB/s vs HBM, matmul TOPS, attention (cuda_bench);
#   7. when the examples exist: a synth 12B Q4_K_M, decode and 512-token prefill tokens/s.
# Budget: under 6 minutes in total.
set -u
cd "$(dirname "$0")/.."
BIN="${GPU_BIN:-gpu-bin}"
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
export GEMMA_CACHE="${GEMMA_CACHE:-/tmp/gemma-cache}"
export GEMMA_FIXTURES="$PWD/$BIN/fixtures"
export GEMMA_TINY_VARIANTS="$(tr ' ' ',' < "$BIN/fixtures/variants.txt" 2>/dev/null | tr -d '\n')"
export RUST_BACKTRACE=1
t_start=$(date +%s)
rows=()

# step NAME SECONDS CMD...: runs CMD with a timeout, logs to $OUT/NAME.log, shows its tail.
step() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*"
  local s=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$? d=$(( $(date +%s) - s ))
  tail -n 25 "$OUT/$name.log"
  local status=PASS
  [ $rc -eq 0 ] || status="FAIL rc=$rc"
  [ $rc -eq 124 ] && status="TIMEOUT ${limit}s"
  rows+=("$(printf '%-22s %-16s %4ss' "$name" "$status" "$d")")
}

echo "=== nvidia-smi"
timeout 20 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,clocks.max.mem \
  --format=csv 2>&1 | tee "$OUT/nvidia-smi.log"
gpu_name=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)

echo "=== libnvrtc"
nvrtc=""
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/local/lib; do
  nvrtc=$(ls "$dir"/libnvrtc.so* 2>/dev/null | grep -v builtins | grep -v alt | head -n1)
  [ -n "$nvrtc" ] && break
done
if [ -z "$nvrtc" ]; then
  nvrtc=$(timeout 60 find /usr /opt "$HOME/.cache/gemma-rs" -name 'libnvrtc.so*' -not -name '*builtins*' -not -name '*alt*' 2>/dev/null | head -n1)
fi
if [ -n "$nvrtc" ]; then
  links=/tmp/gemma-nvrtc
  mkdir -p "$links"
  ln -sf "$nvrtc" "$links/libnvrtc.so"
  ln -sf "$nvrtc" "$links/libnvrtc.so.12"
  export LD_LIBRARY_PATH="$links:$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using $nvrtc"
else
  echo "libnvrtc not found on this machine: kernel steps will fail"
fi

run_test() {  # run_test NAME SECONDS BINARY [ARGS...]
  local name=$1 limit=$2 bin="$BIN/$3"
  shift 3
  if [ -x "$bin" ]; then
    step "$name" "$limit" "$bin" --nocapture "$@"
  else
    rows+=("$(printf '%-22s %-16s' "$name" "MISSING $bin")")
  fi
}

run_test nvrtc-compile 120 cuda_nvrtc --test-threads=2
run_test device 30 cuda_device
run_test kernel-parity 180 cuda_parity --test-threads=4
run_test engine-tiny-parity 180 gemma_core-lib backend::cuda
if [ -x "$BIN/cuda_bench" ]; then
  step kernel-bench 180 "$BIN/cuda_bench"
fi

# Model-level speed, when the examples were built (their flags per DESIGN.md section 4).
if [ -x "$BIN/synth" ] && [ -x "$BIN/bench" ]; then
  model=/tmp/gemma-synth-12b-q4_k_m.gguf
  step synth-12b 150 "$BIN/synth" --size 12b --ftype q4_k_m --out "$model"
  [ -f "$model" ] && step bench-12b 200 "$BIN/bench" --model "$model" --device cuda --prompt-tokens 512 --gen-tokens 64 --json
fi
if [ -x "$BIN/generate" ] && [ -f "$BIN/fixtures/tiny/tiny-gemma3-t1-q4_k_m.gguf" ]; then
  step generate-tiny 60 "$BIN/generate" --model "$BIN/fixtures/tiny/tiny-gemma3-t1-q4_k_m.gguf" \
    --tokens 2,100,200,300 --max-tokens 16 --temperature 0 --device cuda --json
fi

echo
echo "=== summary (${gpu_name:-unknown GPU}, $(( $(date +%s) - t_start )) s, logs in $OUT)"
grep -h -E "^matvec|^matmul|^attention|decode estimate|^device:" "$OUT/kernel-bench.log" 2>/dev/null | sed 's/^/  /'
grep -h -E "gpu vs llama.cpp" "$OUT/engine-tiny-parity.log" 2>/dev/null | sed 's/^/  /'
grep -h -E "test result" "$OUT"/*.log 2>/dev/null | sed 's/^/  /'
printf '%s\n' "${rows[@]}"
