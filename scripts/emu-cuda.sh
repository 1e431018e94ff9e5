#!/usr/bin/env bash
# Builds the emulated CUDA driver (gemma-kernels/tests/emu/driver.cpp: a libcuda.so whose
# kernels are gemma-kernels' .cu files compiled as host C++ and run under the SIMT emulation
# of emu.h) and prints the folder holding it, for LD_LIBRARY_PATH:
#
#   export LD_LIBRARY_PATH="$(scripts/emu-cuda.sh):$(scripts/setup-nvrtc.sh)"
#   cargo test -p gemma-kernels --test cuda_parity   # the GPU tests, on the CPU
#
# Every program started with it first on the path sees one emulated GPU (compute capability
# 9.0): the CUDA backend runs unchanged, NVRTC still compiles the kernels, and the driver
# runs the host-compiled copies of them. Rebuilt only when a source changed. Needs a C++20
# compiler `c++`. Output: target/emu-cuda (or $CARGO_TARGET_DIR/emu-cuda).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
emu="$root/gemma-kernels/tests/emu"
kernels="$root/gemma-kernels/kernels"
out="${CARGO_TARGET_DIR:-$root/target}/emu-cuda"
mkdir -p "$out"
flags=(-std=c++20 -O2 -fPIC -fvisibility=hidden -ffp-contract=off -fno-strict-aliasing)
stamp="$(cat "$0" "$emu"/emu.h "$emu"/registry.h "$emu"/kernel_file.cpp "$emu"/driver.cpp \
  "$kernels"/*.cu "$kernels"/*.cuh | sha256sum | cut -c1-16) ${flags[*]}"
if [ -e "$out/libcuda.so" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out"
  exit 0
fi
rm -f "$out"/*.o "$out"/*.table "$out"/libcuda.so*
pids=()
for cu in "$kernels"/*.cu; do
  name="$(basename "$cu" .cu)"
  (
    # The entry points: every extern "C" function of the preprocessed file (but emu.h's).
    c++ "${flags[@]}" -E -DKERNEL_FILE="\"$cu\"" "$emu/kernel_file.cpp" |
      grep -o 'extern "C" void [A-Za-z_0-9]*' | awk '$4 != "emu_switch" {print "EMU_KERNEL(" $4 ")"}' >"$out/$name.table"
    c++ "${flags[@]}" -c -DKERNEL_FILE="\"$cu\"" -DKERNEL_TABLE="\"$out/$name.table\"" \
      "$emu/kernel_file.cpp" -o "$out/$name.o"
  ) >&2 &
  pids+=($!)
done
c++ "${flags[@]}" -c "$emu/driver.cpp" -o "$out/driver.o" >&2
for p in "${pids[@]}"; do wait "$p"; done
# Only as libcuda.so, which cudarc tries first: NVRTC dlopens libcuda.so.1 for the driver's
# private export table, and must not find this one.
c++ -shared -Wl,-soname,libcuda.so -o "$out/libcuda.so" "$out"/*.o
echo "$stamp" >"$out/stamp"
echo "$out"
