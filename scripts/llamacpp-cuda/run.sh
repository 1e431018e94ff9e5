#!/usr/bin/env bash
# Runs llama.cpp's llama-bench (CUDA backend, sm_90, built against CUDA 13.0) on a GGUF model.
# usage: run.sh MODEL.gguf [extra llama-bench args...]
# Prints `ldd llama-bench` first (a missing library shows as "not found"), then the JSON.
set -u
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODEL=${1:?usage: run.sh MODEL.gguf [extra llama-bench args]}
shift

CUDA_LIBS=/usr/local/cuda/lib64
# Fallback: the CUDA 13 libraries from the nvidia-* Python wheels, if the toolkit lacks them.
if [ ! -e "$CUDA_LIBS/libcublas.so.13" ] && command -v python3 >/dev/null; then
  WHEEL_LIBS=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
  [ -n "$WHEEL_LIBS" ] && CUDA_LIBS="$CUDA_LIBS:$WHEEL_LIBS"
fi
export LD_LIBRARY_PATH="$DIR:$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "== ldd $DIR/llama-bench"
ldd "$DIR/llama-bench"
echo "== ldd $DIR/libggml-cuda.so.0"
ldd "$DIR/libggml-cuda.so.0"
echo "== llama-bench -m $MODEL -ngl 99 -p 512 -n 64 -r 3 -o json $*"
exec "$DIR/llama-bench" -m "$MODEL" -ngl 99 -p 512 -n 64 -r 3 -o json "$@"
