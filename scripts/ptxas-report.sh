#!/usr/bin/env bash
# Registers, stack and spills per CUDA kernel for sm_90 (or the arch given as $1, e.g. 80):
# compiles every kernel to PTX with NVRTC (through the cuda_nvrtc test) and assembles it with
# ptxas -v (PyPI nvidia-cuda-nvcc-cu12, installed by setup-nvrtc.sh --ptxas). No GPU needed.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-90}"
mapfile -t paths < <(scripts/setup-nvrtc.sh --ptxas)
export LD_LIBRARY_PATH="${paths[0]}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ptxas="${paths[1]}"
dump="$(mktemp -d)"
trap 'rm -rf "$dump"' EXIT
GEMMA_PTX_DUMP="$dump" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}" \
  cargo test -q -p gemma-kernels --test cuda_nvrtc >/dev/null
printf '%-22s %5s %6s %9s %9s %6s\n' kernel regs stack spill_st spill_ld smem
for f in "$dump"/*.compute_"$arch".ptx; do
  "$ptxas" -arch=sm_"$arch" -v "$f" -o /dev/null 2>&1
done | awk '
  /Compiling entry function/ { match($0, /'"'"'[A-Za-z0-9_]+'"'"'/); fn = substr($0, RSTART + 1, RLENGTH - 2) }
  /bytes stack frame/ { st = $1; ss = $5; sl = $9 }
  /Used [0-9]+ registers/ {
    regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
    smem = 0; if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
    printf "%-22s %5s %6s %9s %9s %6s\n", fn, regs, st, ss, sl, smem
  }'
