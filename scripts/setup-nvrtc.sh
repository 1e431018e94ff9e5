#!/usr/bin/env bash
# Idempotently installs NVIDIA's NVRTC (runtime CUDA compiler, PyPI `nvidia-cuda-nvrtc-cu12`)
# into the project's Python venv and prints the folder holding libnvrtc.so.12, for
# LD_LIBRARY_PATH. No GPU or CUDA driver is needed: the CUDA kernel compile test
# (gemma-kernels/tests/cuda_nvrtc.rs) only needs this library.
#
#   export LD_LIBRARY_PATH="$(scripts/setup-nvrtc.sh)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
#
# cudarc (built with the cuda-12080 feature) dlopens libnvrtc.so / libnvrtc.so.12 by name,
# so the loader must find it: LD_LIBRARY_PATH is read when a process starts.
# With --ptxas it also installs `nvidia-cuda-nvcc-cu12` and prints the path of its ptxas on
# a second line (used to report registers and spills per kernel for sm_90).
# Cache: $GEMMA_CACHE, else ~/.cache/gemma-rs. Needs python3 + pip and the PyPI registry.
set -euo pipefail
cache="${GEMMA_CACHE:-$HOME/.cache/gemma-rs}"
venv="$cache/venv"
mkdir -p "$cache"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
libdir="$site/nvidia/cuda_nvrtc/lib"
if [ ! -e "$libdir/libnvrtc.so.12" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "nvidia-cuda-nvrtc-cu12==12.9.86" >&2
fi
[ -e "$libdir/libnvrtc.so.12" ] || { echo "libnvrtc.so.12 missing under $libdir" >&2; exit 1; }
echo "$libdir"
if [ "${1:-}" = "--ptxas" ]; then
  ptxas="$site/nvidia/cuda_nvcc/bin/ptxas"
  if [ ! -x "$ptxas" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "nvidia-cuda-nvcc-cu12==12.9.86" >&2
  fi
  [ -x "$ptxas" ] || { echo "ptxas missing at $ptxas" >&2; exit 1; }
  echo "$ptxas"
fi
