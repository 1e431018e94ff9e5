#!/usr/bin/env bash
# Prepares the one GPU run of scripts/gpu-check.sh: builds the release binaries it runs and
# copies them, with the fixtures they read, into gpu-bin/ (git-ignored through
# .git/info/exclude). The device machine receives only the repository tree (at most 64 MiB
# in all) and has no Rust toolchain and no network, so everything travels in gpu-bin/:
#
#   scripts/gpu-prepare.sh           # here, with cargo; prints the size of gpu-bin/
#   device runs, back to back (the machine stays warm 30 s; carried folders do not stay,
#   files the commands copy to /tmp do):
#     for I in 1..4: command "mkdir -p /tmp/gp && cp gpu-mI/part /tmp/gp/I", carry ["gpu-mI"]
#     if a llama.cpp CUDA build is at llama-cuda/ (scripts/llamacpp-cuda/README.md):
#       command "mkdir -p /tmp/llama-cuda && cp -a llama-cuda/. /tmp/llama-cuda/", carry ["llama-cuda"]
#     command "bash scripts/gpu-check.sh", carry ["gpu-bin"] (~5 min; its logs come back as
#       $OUT/gpu-check-logs.tgz: the tool returns at most 8 files)
#
# What travels: the CUDA test binaries (kernel compile + parity, KV cache types, device
# checks), the gemma-core unit-test binary (CUDA engine vs CPU engine vs llama.cpp on the
# tiny models, KV types, decode graph), the CUDA image encoder test (gemma-vision
# cuda_encode) with the vision fixtures it reads (~2 MB), the kernel micro-benchmark, the
# examples generate / bench / synth and logits_kl (mean KL of two logit dumps), three of
# the tiny fixtures (~12 MB), the Gemma 3 vocabulary for `synth --vocab-from` (6.5 MB),
# the CPU's greedy `generate --json` outputs on two tiny models (generate-cpu-<variant>.json)
# and the CPU's `--dump-logits` of the 64-token fixture sequence for every carried variant
# and KV type (kl/cpu-<variant>-kv<type>.f32), which the GPU run compares with its own, and
# the last 21 MB of the real 270M with its prompts (real/; the rest travels in gpu-m1..4).
# The 12B file and the real-shape mmproj are generated there by `synth`. Total about 59 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${GPU_BIN:-gpu-bin}"
fixtures="${GEMMA_FIXTURES:-../shared/fixtures}"
# Carried tiny variants: the float model and two quantized mixes (every weight type's
# kernels are checked on random data by cuda_parity; the engine ran all twelve tiny
# variants on an H200 on 2026-11-28; the room goes to the real 270M, below).
variants="f16 q8_0 q4_k_m"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export CARGO_PROFILE_RELEASE_DEBUG=0   # small binaries
export CARGO_PROFILE_RELEASE_STRIP=symbols

rm -rf "$out"
mkdir -p "$out/fixtures/tiny"
grep -qx '/gpu-bin/' .git/info/exclude 2>/dev/null || echo '/gpu-bin/' >> .git/info/exclude

# Copies the test executables named in cargo's JSON messages (stdin) to $out/<name>.
copy_tests() {
  python3 -c '
import json, shutil, sys
out = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = m["target"]["name"] + ("-lib" if "lib" in m["target"]["kind"] else "")
        shutil.copy(m["executable"], f"{out}/{name}")
        print(f"  {out}/{name}")
' "$out"
}

echo "building CUDA test binaries"
cargo test --release --no-run --message-format=json -p gemma-kernels \
  --test cuda_nvrtc --test cuda_device --test cuda_parity --test cuda_kv_types --test cuda_fused \
  --test cuda_one_chunk --test cuda_argmax | copy_tests
cargo test --release --no-run --message-format=json -p gemma-core --lib | copy_tests
# The CUDA image encoder against the vision fixtures and the CPU encoder (gpu-check.sh step 9).
cargo test --release --no-run --message-format=json -p gemma-vision --test cuda_encode | copy_tests

echo "building the kernel benchmark and logits_kl"
cargo build --release -q -p gemma-kernels --example cuda_bench --example logits_kl
cp "$CARGO_TARGET_DIR/release/examples/cuda_bench" "$CARGO_TARGET_DIR/release/examples/logits_kl" "$out/"

for ex in generate bench synth; do
  echo "building example $ex"
  cargo build --release -q --example "$ex"
  cp "$CARGO_TARGET_DIR/release/examples/$ex" "$out/"
done

cp "$fixtures/tiny/t1_reference.json" "$out/fixtures/tiny/"
for v in $variants; do
  cp "$fixtures/tiny/tiny-gemma3-t1-$v.gguf" "$fixtures/tiny/tiny-gemma3-t1-$v.logits.f32" "$out/fixtures/tiny/"
done
echo "$variants" > "$out/fixtures/variants.txt"
cp "$fixtures/tokenizer/gemma3-vocab.gguf" "$out/fixtures/"
# Vision fixtures for cuda_encode (~2 MB): both tiny mmproj files, the images, and the
# references it reads (every squash intermediate and the tokens of both fits).
mkdir -p "$out/fixtures/vision/images" "$out/fixtures/vision/ref"
cp "$fixtures"/vision/mmproj-tiny-f32.gguf "$fixtures"/vision/mmproj-tiny-f16.gguf "$out/fixtures/vision/"
cp "$fixtures"/vision/images/*.png "$out/fixtures/vision/images/"
for stem in gradient_224x224 checker_320x320 noise_300x200; do
  for ref in squash.embd squash.layer0 squash.layer1 squash.vision_out squash.pooled squash.normed \
    squash.tokens letterbox.tokens; do
    cp "$fixtures/vision/ref/$stem.$ref.f32" "$out/fixtures/vision/ref/"
  done
done

# The CPU's greedy continuations, for the GPU run to compare (same flags there, plus
# --device cuda; scripts/gpu-check.sh reads GEN_ARGS from here).
gen_args="--tokens 2,100,200,300,400 --max-tokens 24 --temperature 0 --ignore-eos --json"
echo "$gen_args" > "$out/generate-args.txt"
for v in f16 q4_k_m; do
  "$out/generate" --model "$out/fixtures/tiny/tiny-gemma3-t1-$v.gguf" $gen_args \
    | tail -n 1 > "$out/generate-cpu-$v.json"
  echo "  CPU greedy ($v): $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["generated_ids"])' "$out/generate-cpu-$v.json")"
done

# The CPU's logits of the fixture sequence, for the GPU's mean KL (scripts/gpu-check.sh):
# every variant with the f16 KV cache, and the f16 model with the f32 and Q8_0 caches.
seq=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["sequence"])))' \
  "$fixtures/tiny/t1_reference.json")
echo "--tokens $seq --max-tokens 1 --temperature 0 --ignore-eos" > "$out/kl-args.txt"
mkdir -p "$out/kl"
kl_runs=""
for v in $variants; do kl_runs="$kl_runs $v:f16"; done
kl_runs="$kl_runs f16:f32 f16:q8_0"
echo "$kl_runs" > "$out/kl/runs.txt"
for run in $kl_runs; do
  v=${run%%:*} kv=${run##*:}
  # shellcheck disable=SC2046
  "$out/generate" --model "$out/fixtures/tiny/tiny-gemma3-t1-$v.gguf" $(cat "$out/kl-args.txt") \
    --kv-type "$kv" --dump-logits "$out/kl/cpu-$v-kv$kv.f32" > /dev/null 2>&1 \
    || { echo "CPU logits dump failed: $v, kv $kv" >&2; exit 1; }
done
echo "  CPU logits for the KL checks: $kl_runs"
# For scale, per variant (f16 KV): the CPU's own mean KL between its scalar and SIMD paths
# (the same integers summed in another order: what any other summation order, a GPU's
# included, moves the logits by; gpu-check.sh's bound).
for v in $variants; do
  # shellcheck disable=SC2046
  GEMMA_ISA=scalar "$out/generate" --model "$out/fixtures/tiny/tiny-gemma3-t1-$v.gguf" \
    $(cat "$out/kl-args.txt") --dump-logits "$out/kl/scalar-$v.f32" > /dev/null 2>&1 \
    || { echo "CPU scalar logits dump failed: $v" >&2; exit 1; }
  "$out/logits_kl" "$out/kl/cpu-$v-kvf16.f32" "$out/kl/scalar-$v.f32" 512 > "$out/kl/scalar-vs-simd-$v.txt"
  rm -f "$out/kl/scalar-$v.f32"
done

# The real Gemma 3 270M Q4_K_M (253 MB) in five parts: four of 60 MB in gpu-m1 .. gpu-m4
# (each carried by its own device call beforehand, the machine kept warm between calls:
# a call's tree is limited to 64 MiB) and the rest in $out/real/part5. gpu-check.sh joins
# them, checks the sha256 and runs the real-model parity and speed steps. Also carried: the
# fixture prompts' token ids and llama.cpp's greedy continuations.
real_model="${GEMMA_TEST_MODEL:-$HOME/.cache/gemma-rs/gemma-3-270m-q4_k_m.gguf}"
mkdir -p "$out/real"
part_mb=60  # 57.2 MiB: with the ~4 MiB tree, under a call's 64 MiB
for i in 1 2 3 4; do
  rm -rf "gpu-m$i"
  mkdir -p "gpu-m$i"
  grep -qx "/gpu-m$i/" .git/info/exclude || echo "/gpu-m$i/" >> .git/info/exclude
  dd if="$real_model" of="gpu-m$i/part" bs=1000000 skip=$(( (i - 1) * part_mb )) count=$part_mb status=none
done
dd if="$real_model" of="$out/real/part5" bs=1000000 skip=$((4 * part_mb)) status=none
sha256sum "$real_model" | cut -d' ' -f1 > "$out/real/sha256"
python3 - "$fixtures/gemma3-270m" "$out/real" <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
names = [p["name"] for p in json.load(open(f"{src}/index.json"))["prompts"]]
for name in names:
    d = json.load(open(f"{src}/{name}.json"))
    open(f"{dst}/{name}.tokens", "w").write(",".join(map(str, d["token_ids"])))
    open(f"{dst}/{name}.greedy", "w").write(",".join(map(str, d["greedy"]["ids"])))
open(f"{dst}/prompts.txt", "w").write(" ".join(names))
PY
# For scale in gpu-check.sh's rows: the mean KL between this CPU's own scalar and SIMD paths
# over each prompt's logits (the same integers summed in another order).
for name in $(cat "$out/real/prompts.txt"); do
  for isa in default scalar; do
    # shellcheck disable=SC2046
    env $([ $isa = scalar ] && echo GEMMA_ISA=scalar) "$out/generate" --model "$real_model" \
      --tokens "$(cat "$out/real/$name.tokens")" --max-tokens 1 --temperature 0 --ignore-eos \
      --dump-logits "/tmp/gpu-prepare-$isa.f32" > /dev/null 2>&1 \
      || { echo "CPU logits dump failed: real $name ($isa)" >&2; exit 1; }
  done
  "$out/logits_kl" /tmp/gpu-prepare-default.f32 /tmp/gpu-prepare-scalar.f32 262144 \
    | sed -n 's/^mean_kl=\([^ ]*\).*/\1/p' > "$out/real/$name.cpu-spread"
done
rm -f /tmp/gpu-prepare-default.f32 /tmp/gpu-prepare-scalar.f32
echo "  real 270M: 4 parts in gpu-m1..gpu-m4 ($(du -sm gpu-m1 | cut -f1) MiB each), the rest and $(wc -w < "$out/real/prompts.txt") prompts in $out/real"

du -sh "$out"
size=$(du -sm "$out" | cut -f1)
[ "$size" -lt 60 ] || echo "WARNING: $out is ${size} MiB (aim: < 60 MiB)"
total=$(du -sm --exclude=.git --exclude=target --exclude='target-*' --exclude='gpu-m*' --exclude=fuzz \
  --exclude=llama-cuda . | cut -f1)
echo "repository tree with gpu-bin: ~${total} MiB (limit 64 MiB, ignored build folders excluded)"
