#!/usr/bin/env bash
# Installs a second llama.cpp peer built for AVX2 alone (no AVX-512, no AVX-VNNI): the same
# llama-cpp-python as ../shared/tools/setup_llamacpp.sh, in its own venv, to compare our
# AVX2 path (GEMMA_ISA=avx2, what AVX2-only CPUs run) with llama.cpp's AVX2 build on a CPU
# that has AVX-512. About 10 minutes on 2 cores. Idempotent.
#
#   scripts/setup-llamacpp-avx2.sh [DIR]        (default: ~/.cache/gemma-rs-peers-avx2)
#   GEMMA_ISA=avx2 GEMMA_PEER_PYTHON=DIR/venv/bin/python scripts/bench-side-by-side.sh FILE 64 32 3
set -eu
DIR=${1:-$HOME/.cache/gemma-rs-peers-avx2}
PY="$DIR/venv/bin/python"
[ -x "$PY" ] || python3 -m venv "$DIR/venv"
if ! "$PY" -c "import llama_cpp" 2>/dev/null; then
  "$DIR/venv/bin/pip" install -q numpy
  # --no-cache-dir: pip would otherwise reuse a wheel it built earlier for the native CPU
  # (its cache key ignores CMAKE_ARGS).
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
    "$DIR/venv/bin/pip" install -q --no-cache-dir --no-binary llama-cpp-python llama-cpp-python==0.3.36
fi
# The check that it is an AVX2 build: no 512-bit register in its CPU backend.
LIB=$("$PY" -c 'import llama_cpp, os; print(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-cpu.so"))')
if command -v objdump >/dev/null && objdump -d "$LIB" | grep -q zmm; then
  echo "error: $LIB uses AVX-512 registers: not an AVX2-only build" >&2
  exit 1
fi
echo "python: $PY"
