#!/usr/bin/env bash
# The tests that need a GPU, run on the emulated CUDA driver (scripts/emu-cuda.sh): the CUDA
# backend unchanged, its kernels compiled as host C++ and run under the SIMT emulation of
# gemma-kernels/tests/emu/emu.h. Checks what a CPU can: every kernel against f64 / CPU
# references, the fused kernels against the ones they replace, the CUDA engine against the
# CPU engine and llama.cpp on the tiny models (every weight type, every KV type, images,
# decode graphs), the image encoder, `perplexity --device cuda`, the refusal of a session
# larger than the device's free memory. Not timing: the
# emulation runs blocks one after another, about 10^4 times slower than a GPU.
# Fails when any of those tests did not run (no device found) as well as when one fails.
# scripts/test.sh runs it after the workspace tests; needs NVRTC (scripts/setup-nvrtc.sh)
# and a C++20 compiler `c++`. Arguments go to every `cargo test` (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
emu_dir="$(scripts/emu-cuda.sh)"
nvrtc_dir="$(scripts/setup-nvrtc.sh)"
export LD_LIBRARY_PATH="$emu_dir:$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo_args=("$@")
# run CARGO_ARGS... [-- TEST_ARGS...]: one `cargo test`, its output kept in $log.
run() {
  local args=() rest=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift && rest=("$@")
  echo "== emulated GPU: cargo test ${cargo_args[*]} ${args[*]} -- --nocapture ${rest[*]}" >&2
  cargo test "${cargo_args[@]}" "${args[@]}" -- --nocapture "${rest[@]}" 2>&1 | tee -a "$log"
  return "${PIPESTATUS[0]}"
}
run -p gemma-kernels --test cuda_device --test cuda_parity --test cuda_fused --test cuda_kv_types \
  --test cuda_one_chunk --test cuda_argmax
run -p gemma-vision --test cuda_encode
run -p gemma-vision --test cuda_memory
run -p gemma --test perplexity_tiny cuda
# A session larger than the device's memory (GEMMA_EMU_MEM_MIB shrinks the emulated device).
run -p gemma --test cuda_memory
# memory::cuda_check compares a session's device memory with the plan, which counts a real
# driver's context and allocation rounding; the emulated device has neither (it measured
# 11.5 MiB against the plan's 25.4 for the tiny model), so that test is for GPUs only.
run -p gemma-core --lib cuda -- --skip memory::cuda_check
if ! grep -q 'gemma-rs CUDA emulator' "$log"; then
  echo "emulated GPU tests: the emulated device was not found (see $emu_dir)" >&2
  exit 1
fi
if grep -qiE 'not run|no CUDA device' "$log"; then
  echo "emulated GPU tests: some GPU tests did not run on the emulated device:" >&2
  grep -iE 'not run|no CUDA device' "$log" >&2
  exit 1
fi
echo "emulated GPU tests: all ran and passed" >&2
