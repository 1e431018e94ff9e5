// Runs the decode attention of gemma-kernels (attn_decode_<kv>_<D>, then attn_combine_<D>, of
// kernels/attention.cu) under the SIMT emulation of emu.h, for
// tests/cuda_emulated_attention.rs. The kernel sources are the real ones, included below;
// launches mirror src/cuda/attention.rs (attention_decode): grid (n_kv, n_splits) of 128
// threads, then n_heads blocks of D threads.
//
// usage: attention_emu random|warp-greedy SEED < cases > results
// stdin (native endian): u32 case count, then per case u32 kv (KV_*), u32 D (64, 128 or 256),
//   u32 n_heads, u32 n_kv, u32 n_slots, u32 window, u32 pos, u32 n_splits, f32 scale, then
//   q (n_heads x D floats) and the K and V caches (n_slots rows of n_kv x D values: f16 bits,
//   f32, or Q8_0 blocks of 34 bytes).
// stdout per case: the attention output (n_heads x D floats).

#include "emu.h"

#include "../../kernels/common.cuh"
#include "../../kernels/attention.cu"
#undef asm

[[noreturn]] static void fail(const char *msg) {
    std::fprintf(stderr, "attention_emu: %s\n", msg);
    std::exit(2);
}

template <class T> static void read_vals(T *p, size_t n) {
    if (n != 0 && std::fread(p, sizeof(T), n, stdin) != n) fail("input ends early");
}

typedef void (*DecodeKernel)(const float *, const void *, const void *, int, int, int, const i32 *, int, float,
                             int, float *, float2 *);
typedef void (*CombineKernel)(const float *, const float2 *, int, float *, int, i8 *, float2 *, const void *, int, int,
                              const i32 *, int, int);

static DecodeKernel decode_kernel(uint32_t kv, uint32_t d) {
    const DecodeKernel table[3][3] = {{attn_decode_64, attn_decode_f32_64, attn_decode_q8_0_64},
                                      {attn_decode_128, attn_decode_f32_128, attn_decode_q8_0_128},
                                      {attn_decode_256, attn_decode_f32_256, attn_decode_q8_0_256}};
    return table[d == 64 ? 0 : d == 128 ? 1 : 2][kv];
}

int main(int argc, char **argv) {
    if (argc != 3 || (std::strcmp(argv[1], "random") != 0 && std::strcmp(argv[1], "warp-greedy") != 0))
        fail("usage: attention_emu random|warp-greedy SEED < cases > results");
    emu::B.schedule = std::strcmp(argv[1], "random") == 0 ? emu::Schedule::Random : emu::Schedule::WarpGreedy;
    emu::B.rng.seed(std::strtoull(argv[2], nullptr, 10));
    uint32_t n_cases;
    read_vals(&n_cases, 1);
    for (uint32_t c = 0; c < n_cases; ++c) {
        uint32_t head[8];
        float scale;
        read_vals(head, 8);
        read_vals(&scale, 1);
        const uint32_t kv = head[0], d = head[1];
        const int n_heads = (int) head[2], n_kv = (int) head[3], n_slots = (int) head[4];
        const int window = (int) head[5], pos = (int) head[6], n_splits = (int) head[7];
        if (kv > KV_Q8_0 || (d != 64 && d != 128 && d != 256)) fail("bad kv kind or head size");
        const size_t values = (size_t) n_slots * n_kv * d;
        const size_t bytes = kv == KV_F16 ? 2 * values : kv == KV_F32 ? 4 * values : values / 32 * 34;
        std::vector<float> q((size_t) n_heads * d);
        std::vector<uint64_t> kc((bytes + 7) / 8), vc((bytes + 7) / 8);  // 8-byte aligned, as device buffers
        read_vals(q.data(), q.size());
        read_vals((uint8_t *) kc.data(), bytes);
        read_vals((uint8_t *) vc.data(), bytes);
        // The caches are the only memory read through __ldg: exactly their bytes.
        emu::readable = {{(uintptr_t) kc.data(), (uintptr_t) kc.data() + bytes},
                         {(uintptr_t) vc.data(), (uintptr_t) vc.data() + bytes}};
        std::vector<float> part_o((size_t) n_heads * n_splits * d, emu::bits_float(0x7fbadbad));
        std::vector<float2> part_ml((size_t) n_heads * n_splits);
        std::vector<float> out((size_t) n_heads * d, emu::bits_float(0x7fbadbad));
        const i32 p = pos;
        const DecodeKernel dk = decode_kernel(kv, d);
        emu::launch(n_kv, n_splits, ATT_THREADS, [&] {
            dk(q.data(), kc.data(), vc.data(), n_heads, n_kv, n_slots, &p, window, scale, /*chunked=*/0,
               part_o.data(), part_ml.data());
        });
        const CombineKernel ck = d == 64 ? attn_combine_64 : d == 128 ? attn_combine_128 : attn_combine_256;
        emu::launch(n_heads, 1, ATT_COMBINE_THREADS, [&] {
            ck(part_o.data(), part_ml.data(), n_splits, out.data(), -1, nullptr, nullptr, vc.data(), n_kv, n_slots, &p,
               window, /*chunked=*/0);
        });
        if (std::fwrite(out.data(), 4, out.size(), stdout) != out.size()) fail("write failed");
    }
    return std::fflush(stdout) == 0 ? 0 : 2;
}
