// Runs the activation quantization kernels of gemma-kernels (quantize_q8_1, geglu_q8_1,
// rms_norm_q8_1, rms_norm_add_norm_q8_1, attn_combine_256, all built on quantize_act256 of
// common.cuh) under the SIMT emulation of emu.h, for tests/cuda_emulated.rs. The kernel
// sources are the real ones, included below.
//
// usage: quantize_emu random|warp-greedy SEED < cases > results
// stdin (native endian): u32 case count, then per case u32 kernel (0 quantize_q8_1,
//   1 geglu_q8_1, 2 rms_norm_q8_1, 3 rms_norm_add_norm_q8_1, 4 rms_norm_add then
//   rms_norm_q8_1, 5 attn_combine_256 quantizing, 6 attn_combine_256 then quantize_q8_1),
//   u32 fmt (ACT_*), u32 rows, u32 k, f32 eps, and the inputs: kernel 0: x (rows x k);
//   1: gate, up (k each; rows must be 1); 2: x (rows x k), w (k); 3 and 4: o, residual
//   (rows x k each), w_post, w_next (k each); 5 and 6 (rows = 1, k = heads x 256, eps read
//   as the split count s): part_o (heads x s x 256), part_ml (heads x s float2 {m, l}).
// stdout per case: qs (rows x k_pad int8), ds (rows x k_pad / 32 float2 {d, s}) and, for
//   kernels 1 to 6, the float output (rows x k); kernels 3 and 4 then o and residual as they
//   leave them. k_pad = k rounded up to 256. Entries a kernel fails to write keep a poison
//   value (qs 0x5A, floats NaN 0x7fbadbad).

#include "emu.h"

#include "../../kernels/common.cuh"
#include "../../kernels/norm.cu"
#include "../../kernels/quantize.cu"
#include "../../kernels/attention.cu"
#undef asm

template <class T> static void read_vals(T *p, size_t n) {
    if (std::fread(p, sizeof(T), n, stdin) != n) {
        std::fprintf(stderr, "quantize_emu: input ends early\n");
        std::exit(2);
    }
}

template <class T> static void write_vals(const T *p, size_t n) {
    if (n != 0 && std::fwrite(p, sizeof(T), n, stdout) != n) {
        std::fprintf(stderr, "quantize_emu: write failed\n");
        std::exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc != 3 || (std::strcmp(argv[1], "random") != 0 && std::strcmp(argv[1], "warp-greedy") != 0)) {
        std::fprintf(stderr, "usage: quantize_emu random|warp-greedy SEED < cases > results\n");
        return 2;
    }
    emu::B.schedule = std::strcmp(argv[1], "random") == 0 ? emu::Schedule::Random : emu::Schedule::WarpGreedy;
    emu::B.rng.seed(std::strtoull(argv[2], nullptr, 10));
    const float poison = emu::bits_float(0x7fbadbad);
    uint32_t n_cases;
    read_vals(&n_cases, 1);
    for (uint32_t c = 0; c < n_cases; ++c) {
        uint32_t head[4];
        float eps;
        read_vals(head, 4);
        read_vals(&eps, 1);
        const uint32_t kernel = head[0], rows = head[2];
        const int fmt = (int) head[1], k = (int) head[3];
        const int k_pad = (k + 255) / 256 * 256;
        std::vector<i8> qs((size_t) rows * k_pad, 0x5A);
        std::vector<float2> ds((size_t) rows * k_pad / QK8, float2{poison, poison});
        std::vector<float> out;
        if (kernel == 0) {
            std::vector<float> x((size_t) rows * k);
            read_vals(x.data(), x.size());
            emu::launch(k_pad / 256, rows, 256, [&] { quantize_q8_1(x.data(), k, k_pad, fmt, qs.data(), ds.data()); });
        } else if (kernel == 1) {
            if (rows != 1) {
                std::fprintf(stderr, "quantize_emu: geglu_q8_1 takes one row\n");
                return 2;
            }
            std::vector<float> gate(k), up(k);
            read_vals(gate.data(), k);
            read_vals(up.data(), k);
            // out aliases gate, as the Rust launcher passes it.
            emu::launch(k_pad / 256, 1, 256, [&] { geglu_q8_1(gate.data(), up.data(), gate.data(), k, fmt, qs.data(), ds.data()); });
            out = gate;
        } else if (kernel == 2) {
            std::vector<float> x((size_t) rows * k), w(k);
            read_vals(x.data(), x.size());
            read_vals(w.data(), k);
            out.assign((size_t) rows * k, poison);
            emu::launch(rows, 1, ROW_THREADS, [&] { rms_norm_q8_1(x.data(), w.data(), out.data(), k, eps, k_pad, fmt, qs.data(), ds.data()); });
        } else if (kernel == 3 || kernel == 4) {
            std::vector<float> o((size_t) rows * k), res((size_t) rows * k), wp(k), wn(k);
            read_vals(o.data(), o.size());
            read_vals(res.data(), res.size());
            read_vals(wp.data(), k);
            read_vals(wn.data(), k);
            out.assign((size_t) rows * k, poison);
            if (kernel == 3) {
                emu::launch(rows, 1, ROW_THREADS, [&] {
                    rms_norm_add_norm_q8_1(o.data(), wp.data(), res.data(), wn.data(), out.data(), k, eps, k_pad, fmt,
                                           qs.data(), ds.data());
                });
            } else {
                // rms_norm_add with the host's block (ops.rs plain_norm_threads).
                const int plain = std::min(ROW_THREADS, (k + 255) / 256 * 256);
                emu::launch(rows, 1, plain, [&] { rms_norm_add(o.data(), wp.data(), res.data(), k, eps); });
                emu::launch(rows, 1, ROW_THREADS, [&] {
                    rms_norm_q8_1(res.data(), wn.data(), out.data(), k, eps, k_pad, fmt, qs.data(), ds.data());
                });
            }
            out.insert(out.end(), o.begin(), o.end());
            out.insert(out.end(), res.begin(), res.end());
        } else if (kernel == 5 || kernel == 6) {
            const int splits = (int) eps, heads = k / 256;
            if (rows != 1 || k % 256 != 0 || splits < 1) {
                std::fprintf(stderr, "quantize_emu: attn_combine takes one row of heads x 256\n");
                return 2;
            }
            std::vector<float> part_o((size_t) heads * splits * 256);
            std::vector<float2> part_ml((size_t) heads * splits);
            read_vals(part_o.data(), part_o.size());
            read_vals(part_ml.data(), part_ml.size());
            out.assign(k, poison);
            const int f = kernel == 5 ? fmt : -1;
            emu::launch(heads, 1, 256, [&] {
                attn_combine_256(part_o.data(), part_ml.data(), splits, out.data(), f, qs.data(), ds.data(), nullptr, 0, 0,
                                 nullptr, 0, /*chunked=*/0);
            });
            if (kernel == 6)
                emu::launch(k_pad / 256, 1, 256, [&] { quantize_q8_1(out.data(), k, k_pad, fmt, qs.data(), ds.data()); });
        } else {
            std::fprintf(stderr, "quantize_emu: unknown kernel %u\n", kernel);
            return 2;
        }
        write_vals(qs.data(), qs.size());
        write_vals(ds.data(), ds.size());
        write_vals(out.data(), out.size());
    }
    return std::fflush(stdout) == 0 ? 0 : 2;
}
