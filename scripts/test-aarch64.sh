#!/usr/bin/env bash
# The gemma-kernels tests built for aarch64-unknown-linux-gnu and run under qemu-aarch64:
# the NEON kernels (selected through `Isa::Neon`) against the scalar oracle and the
# ggml fixtures. Installs nothing: needs the Rust target, the cross linker and qemu-user.
#
# Two passes: qemu's default CPU (has `dotprod`: the `sdot` kernels are selected) and a
# Cortex-A53 (no `dotprod`: the baseline NEON kernels are selected). The NVRTC compile
# tests are skipped: they dlopen the host's x86-64 libnvrtc, which cannot load into an
# emulated aarch64 process (scripts/test.sh runs them natively).
#
# Usage: scripts/test-aarch64.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
linker=aarch64-linux-gnu-gcc
sysroot=/usr/aarch64-linux-gnu

missing=()
libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null || true)
compgen -G "$libdir/libstd-*.rlib" >/dev/null || missing+=("Rust standard library for $target (rustup target add $target)")
command -v "$linker" >/dev/null || missing+=("cross linker $linker (apt-get install gcc-aarch64-linux-gnu)")
command -v qemu-aarch64 >/dev/null || missing+=("qemu-aarch64 (apt-get install qemu-user)")
[ -d "$sysroot" ] || missing+=("aarch64 C runtime in $sysroot (apt-get install libc6-dev-arm64-cross)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-aarch64.sh: cannot cross-test, missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 2
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$linker"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
skip=(--skip every_kernel_compiles_for --skip nvrtc_reports)

status=0
for cpu in default cortex-a53; do
    echo "== gemma-kernels on aarch64 (qemu CPU: $cpu)"
    start=$SECONDS
    log=$(mktemp)
    if [ "$cpu" = default ]; then
        run=(env -u QEMU_CPU)
    else
        run=(env QEMU_CPU="$cpu")
    fi
    if "${run[@]}" cargo test -p gemma-kernels --target "$target" --release --no-fail-fast "$@" \
        -- "${skip[@]}" 2>&1 | tee "$log"; then
        result=passed
    else
        result=FAILED
        status=1
    fi
    passed=$(grep -o '[0-9]* passed' "$log" | awk '{s += $1} END {print s + 0}')
    failed=$(grep -o '[0-9]* failed' "$log" | awk '{s += $1} END {print s + 0}')
    echo "== qemu CPU $cpu: $result ($passed tests passed, $failed failed, $((SECONDS - start)) s)"
    rm -f "$log"
done
exit "$status"
