#!/usr/bin/env bash
# Two `cuda_bench` logs side by side (e.g. a run kept in docs/gpu-runs/ and a new one): for
# every timing line both have (matvec / matmul / attention / row kernel, same type and shape), the old and
# new microseconds and the speed-up.
#
#   scripts/gpu-compare.sh docs/gpu-runs/2026-11-28-h200-run1-kernel-bench.log /tmp/gc/kernel-bench.log
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD.log NEW.log" >&2; exit 2; }
awk '
  # The label is the line up to the time ("<number> us"); the time the number before "us".
  function parse(line,   i, n, f) {
    n = split(line, f, /[ ]+/)
    for (i = 2; i <= n; i++) if (f[i] == "us") { label = line; sub(/ +[0-9.]+ us.*/, "", label); return f[i - 1] }
    return ""
  }
  /^(matvec|matmul|attention|row kernel)/ && !/rows\/block/ {
    t = parse($0)
    if (t == "") next
    if (FNR == NR) { old[label] = t; next }
    if (label in old) printf "%-52s %9.1f us -> %9.1f us  x%.2f\n", label, old[label], t, old[label] / t
  }
' "$1" "$2"
