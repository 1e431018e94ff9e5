#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the test data and reference tools
# (the real Gemma 3 270M model, gguf-py, NVRTC for the CUDA compile test) into
# ~/.cache/gemma-rs, runs every test of the workspace, then (without arguments) the tests
# that need a GPU once more on the emulated CUDA driver (scripts/test-emulated-gpu.sh), and
# checks that the fuzz targets (fuzz/, their own workspace) still compile.
# Arguments go to `cargo test --workspace` and skip both.
set -euo pipefail
cd "$(dirname "$0")/.."
export GEMMA_TEST_MODEL="${GEMMA_TEST_MODEL:-$(scripts/fetch-model.sh)}"
scripts/setup-python.sh >/dev/null
nvrtc_dir="$(scripts/setup-nvrtc.sh)"
export LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo test --workspace "$@"
if [ $# -eq 0 ]; then
  scripts/test-emulated-gpu.sh
  cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
  echo "fuzz targets: compile"
else
  echo "scripts/test.sh: arguments given, the emulated GPU tests (scripts/test-emulated-gpu.sh) and the fuzz compile check not run" >&2
fi
