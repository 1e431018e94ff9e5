// Runs the QK-norm + RoPE kernels of gemma-kernels (qk_norm_rope, qk_norm_rope_store_<kv>)
// and the KV-cache stores (kv_store, kv_store_f32, kv_store_q8_0) under the SIMT emulation
// of emu.h, for tests/cuda_emulated_rope.rs. The kernel sources are the real ones, included
// below; launches mirror src/cuda/ops.rs, their blocks in emu::BlockOrder::BySchedule order
// (a cache slot two tokens write must end with the same one whatever the order).
//
// usage: rope_emu random|warp-greedy SEED < cases > results
// stdin (native endian): u32 case count, then per case u32 fused (1: qk_norm_rope_store_<kv>;
//   0: qk_norm_rope, then kv_store_<kv> of k and v), u32 kv (KV_*), u32 n, u32 n_q, u32 n_k,
//   u32 head_dim, u32 n_slots, f32 theta_scale, f32 freq_scale, f32 q_scale, f32 eps, then
//   i32 positions (n), q (n x n_q x head_dim), k, v (n x n_k x head_dim each), wq, wk
//   (head_dim each).
// stdout per case: q, k (as the kernels leave them), then the K and V caches (n_slots rows of
//   n_k x head_dim values: f16 bits, f32, or Q8_0 blocks of 34 bytes), which start filled
//   with 0xA5 bytes.

#include "emu.h"

#include "../../kernels/common.cuh"
#include "../../kernels/elementwise.cu"
#include "../../kernels/rope.cu"
#undef asm

[[noreturn]] static void fail(const char *msg) {
    std::fprintf(stderr, "rope_emu: %s\n", msg);
    std::exit(2);
}

template <class T> static void read_vals(T *p, size_t n) {
    if (n != 0 && std::fread(p, sizeof(T), n, stdin) != n) fail("input ends early");
}

template <class T> static void write_vals(const T *p, size_t n) {
    if (n != 0 && std::fwrite(p, sizeof(T), n, stdout) != n) fail("write failed");
}

int main(int argc, char **argv) {
    if (argc != 3 || (std::strcmp(argv[1], "random") != 0 && std::strcmp(argv[1], "warp-greedy") != 0))
        fail("usage: rope_emu random|warp-greedy SEED < cases > results");
    emu::B.schedule = std::strcmp(argv[1], "random") == 0 ? emu::Schedule::Random : emu::Schedule::WarpGreedy;
    emu::B.rng.seed(std::strtoull(argv[2], nullptr, 10));
    uint32_t n_cases;
    read_vals(&n_cases, 1);
    for (uint32_t c = 0; c < n_cases; ++c) {
        uint32_t head[7];
        float fp[4];
        read_vals(head, 7);
        read_vals(fp, 4);
        const uint32_t fused = head[0], kv = head[1];
        const int n = (int) head[2], n_q = (int) head[3], n_k = (int) head[4], hd = (int) head[5];
        const int n_slots = (int) head[6];
        if (kv > KV_Q8_0 || hd % 2 != 0 || (kv == KV_Q8_0 && (hd / 2) % 32 != 0)) fail("bad kv or head_dim");
        std::vector<i32> pos(n);
        std::vector<float> q((size_t) n * n_q * hd), k((size_t) n * n_k * hd), v(k.size()), wq(hd), wk(hd);
        read_vals(pos.data(), pos.size());
        read_vals(q.data(), q.size());
        read_vals(k.data(), k.size());
        read_vals(v.data(), v.size());
        read_vals(wq.data(), hd);
        read_vals(wk.data(), hd);
        const int width = n_k * hd;
        const size_t row_bytes = kv == KV_F16 ? 2 * width : kv == KV_F32 ? 4 * width : (size_t) width / 32 * 34;
        // 8-byte aligned storage, as device buffers are.
        std::vector<uint64_t> kc_store(((size_t) n_slots * row_bytes + 7) / 8), vc_store(kc_store.size());
        uint8_t *kc = (uint8_t *) kc_store.data(), *vc = (uint8_t *) vc_store.data();
        std::memset(kc, 0xA5, (size_t) n_slots * row_bytes);
        std::memset(vc, 0xA5, (size_t) n_slots * row_bytes);
        const unsigned threads = (unsigned) ((hd / 2 + 31) / 32 * 32);
        const float theta_scale = fp[0], fscale = fp[1], q_scale = fp[2], eps = fp[3];
        if (fused) {
            emu::launch(n, n_q + 2 * n_k, threads, [&] {
                if (kv == KV_F16)
                    qk_norm_rope_store_f16(q.data(), k.data(), v.data(), wq.data(), wk.data(), n, n_q, n_k, hd,
                                           pos.data(), theta_scale, fscale, q_scale, eps, n_slots, kc, vc);
                else if (kv == KV_F32)
                    qk_norm_rope_store_f32(q.data(), k.data(), v.data(), wq.data(), wk.data(), n, n_q, n_k, hd,
                                           pos.data(), theta_scale, fscale, q_scale, eps, n_slots, kc, vc);
                else
                    qk_norm_rope_store_q8_0(q.data(), k.data(), v.data(), wq.data(), wk.data(), n, n_q, n_k, hd,
                                            pos.data(), theta_scale, fscale, q_scale, eps, n_slots, kc, vc);
            }, emu::BlockOrder::BySchedule);
        } else {
            emu::launch(n, n_q + n_k, threads, [&] {
                qk_norm_rope(q.data(), k.data(), wq.data(), wk.data(), n_q, n_k, hd, pos.data(), theta_scale, fscale, q_scale,
                             eps);
            }, emu::BlockOrder::BySchedule);
            emu::launch(n, 2, 256, [&] {
                if (kv == KV_F16)
                    kv_store(k.data(), v.data(), n, width, pos.data(), n_slots, (u16 *) kc, (u16 *) vc);
                else if (kv == KV_F32)
                    kv_store_f32(k.data(), v.data(), n, width, pos.data(), n_slots, (float *) kc, (float *) vc);
                else
                    kv_store_q8_0(k.data(), v.data(), n, width, pos.data(), n_slots, kc, vc);
            }, emu::BlockOrder::BySchedule);
        }
        write_vals(q.data(), q.size());
        write_vals(k.data(), k.size());
        write_vals(kc, (size_t) n_slots * row_bytes);
        write_vals(vc, (size_t) n_slots * row_bytes);
    }
    return std::fflush(stdout) == 0 ? 0 : 2;
}
