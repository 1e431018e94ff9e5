#!/usr/bin/env bash
# Idempotently creates the Python venv the tests use as an independent reference
# (gguf-py 0.19 + numpy), in $GEMMA_CACHE (default ~/.cache/gemma-rs), and prints its python.
set -euo pipefail
cache="${GEMMA_CACHE:-$HOME/.cache/gemma-rs}"
venv="$cache/venv"
mkdir -p "$cache"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
if ! "$venv/bin/python" -c "import gguf, numpy" 2>/dev/null; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "gguf==0.19.0" numpy >&2
fi
echo "$venv/bin/python"
