#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the test data and reference tools
# (the real Gemma 3 270M model, gguf-py, NVRTC for the CUDA compile test) into
# ~/.cache/gemma-rs, runs every test of the workspace, then (without arguments) the tests
# that need a GPU once more on the emulated CUDA driver (scripts/test-emulated-gpu.sh).
# Arguments go to `cargo test --workspace` and skip the emulated run.
set -euo pipefail
cd "$(dirname "$0")/.."
export GEMMA_TEST_MODEL="${GEMMA_TEST_MODEL:-$(scripts/fetch-model.sh)}"
scripts/setup-python.sh >/dev/null
nvrtc_dir="$(scripts/setup-nvrtc.sh)"
export LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo test --workspace "$@"
if [ $# -eq 0 ]; then
  scripts/test-emulated-gpu.sh
else
  echo "scripts/test.sh: arguments given, the emulated GPU tests (scripts/test-emulated-gpu.sh) not run" >&2
fi
