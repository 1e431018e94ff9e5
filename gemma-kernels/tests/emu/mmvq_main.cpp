// Runs the quantized matrix kernels of gemma-kernels (the decode matvecs mmvq_<type>_<nc> and
// mmvq_multi_<type> of kernels/mmvq.cu, the prefill matmul mmq_<type> of kernels/mmq.cu on
// emulated int8 tensor cores) under the SIMT emulation of emu.h, for
// tests/cuda_emulated_mmvq.rs. The kernel sources are the real ones, included below;
// launches mirror src/cuda/launch.rs (matmul_q8, matvec_q8_multi): 128 threads per block,
// `per_block` weight rows per mmvq block, 64 x 64 output tiles per mmq block.
//
// usage: mmvq_emu random|warp-greedy SEED < cases > results
// stdin (native endian): u32 case count, then per case u32 op (0: mmvq_<type>_<n>, 1:
//   mmvq_multi_<type>, 2: mmq_<type>), u32 type (ggml id), u32 n (tokens for op 0: 1, 2, 4
//   or 8; matrices for op 1: 2 or 3; tokens for op 2), u32 nb (weight blocks per row), u32 k_pad, u32 rows[3] (op 0: rows[0]
//   only), u32 per_block (rows per block, as launch.rs's mmvq_rows_per_block), u32 type2 (op
//   1: the type of matrix 2, the type above or Q6_K after Q4_K / Q5_K), the weights (rows[i] x nb blocks for each matrix), then the activations of n (op
//   0) or 1 (op 1) tokens: qs (k_pad int8 each), ds (k_pad / 32 float2 {d, s} each).
// stdout per case: ops 0 and 2: y (n x rows[0] floats); op 1: y_0, y_1, y_2 (rows[i] floats
//   each).
//   Outputs a kernel fails to write keep a poison value (NaN 0x7fbadbad).
// Every buffer lives in its own 256-byte aligned "device allocation" between guard bytes
// (as cudaMalloc aligns); a write outside an output stops the program with exit code 3.

#include "emu.h"

#include "../../kernels/common.cuh"
#include "../../kernels/mmvq.cu"
#include "../../kernels/mmq.cu"
#undef asm

typedef void (*SingleKernel)(const u8 *, int, const i8 *, const float2 *, int, float *, int, int);
typedef void (*MultiKernel)(const u8 *, float *, int, const u8 *, float *, int, const u8 *, float *, int, int,
                            const i8 *, const float2 *, int, int);
typedef void (*MmqKernel)(const u8 *, int, int, const i8 *, const float2 *, int, int, float *, int);

// The kernels of one weight type.
struct TypeKernels {
    int ty;
    int block_bytes;
    int block_elems;
    SingleKernel single[4];  // 1, 2, 4, 8 tokens
    MultiKernel multi;
    MmqKernel mmq;
};

#define TYPE_KERNELS(NAME, TY)                                                                               \
    TypeKernels {                                                                                            \
        TY, Task<TY>::BYTES, Task<TY>::QK, {mmvq_##NAME##_1, mmvq_##NAME##_2, mmvq_##NAME##_4, mmvq_##NAME##_8},       \
            mmvq_multi_##NAME, mmq_##NAME                                                                    \
    }

static const TypeKernels KERNELS[] = {
    TYPE_KERNELS(q4_0, GGML_Q4_0),     TYPE_KERNELS(q5_0, GGML_Q5_0), TYPE_KERNELS(q8_0, GGML_Q8_0),
    TYPE_KERNELS(q4_K, GGML_Q4_K),     TYPE_KERNELS(q5_K, GGML_Q5_K), TYPE_KERNELS(q6_K, GGML_Q6_K),
    TYPE_KERNELS(q4_1, GGML_Q4_1),     TYPE_KERNELS(q5_1, GGML_Q5_1), TYPE_KERNELS(iq4_nl, GGML_IQ4_NL),
    TYPE_KERNELS(q2_K, GGML_Q2_K),     TYPE_KERNELS(q3_K, GGML_Q3_K), TYPE_KERNELS(iq4_xs, GGML_IQ4_XS),
};

[[noreturn]] static void fail(const char *msg) {
    std::fprintf(stderr, "mmvq_emu: %s\n", msg);
    std::exit(2);
}

template <class T> static void read_vals(T *p, size_t n) {
    if (n != 0 && std::fread(p, sizeof(T), n, stdin) != n) fail("input ends early");
}

template <class T> static void write_vals(const T *p, size_t n) {
    if (n != 0 && std::fwrite(p, sizeof(T), n, stdout) != n) fail("write failed");
}

// A device allocation: `bytes` at a 256-byte aligned address, GUARD bytes of 0xA5 each side;
// kernels may read exactly its bytes (emu::readable).
class DevBuf {
    static constexpr size_t GUARD = 256;
    std::vector<uint8_t> storage_;
    uint8_t *data_ = nullptr;
    size_t bytes_ = 0;

  public:
    DevBuf(const DevBuf &) = delete;
    DevBuf(DevBuf &&) = default;
    explicit DevBuf(size_t bytes) : storage_(bytes + 3 * GUARD, 0xA5), bytes_(bytes) {
        const uintptr_t base = (uintptr_t) storage_.data() + GUARD;
        data_ = (uint8_t *) ((base + 255) / 256 * 256);
        emu::readable.emplace_back((uintptr_t) data_, (uintptr_t) data_ + bytes);
    }
    template <class T> T *as() const { return bytes_ ? (T *) data_ : nullptr; }
    size_t bytes() const { return bytes_; }
    // True when no byte outside [data, data + bytes) changed.
    bool guards_intact() const {
        for (size_t i = 0; i < storage_.size(); ++i) {
            const uint8_t *p = storage_.data() + i;
            if ((p < data_ || p >= data_ + bytes_) && *p != 0xA5) return false;
        }
        return true;
    }
};

static DevBuf read_buf(size_t bytes) {
    DevBuf b(bytes);
    read_vals(b.as<uint8_t>(), bytes);
    return b;
}

static DevBuf poisoned_output(size_t n) {
    DevBuf b(n * sizeof(float));
    for (size_t i = 0; i < n; ++i) b.as<float>()[i] = emu::bits_float(0x7fbadbad);
    return b;
}

static void check_guards(const DevBuf &b, const char *what, uint32_t c, const uint32_t *head) {
    if (!b.guards_intact()) {
        std::fprintf(stderr, "EMU ERROR: case %u (op %u, type %u, n %u, rows %u %u %u / %u) wrote outside %s\n",
                     c, head[0], head[1], head[2], head[5], head[6], head[7], head[8], what);
        std::exit(3);
    }
}

int main(int argc, char **argv) {
    if (argc != 3 || (std::strcmp(argv[1], "random") != 0 && std::strcmp(argv[1], "warp-greedy") != 0))
        fail("usage: mmvq_emu random|warp-greedy SEED < cases > results");
    emu::B.schedule = std::strcmp(argv[1], "random") == 0 ? emu::Schedule::Random : emu::Schedule::WarpGreedy;
    emu::B.rng.seed(std::strtoull(argv[2], nullptr, 10));
    uint32_t n_cases;
    read_vals(&n_cases, 1);
    for (uint32_t c = 0; c < n_cases; ++c) {
        uint32_t head[10];
        read_vals(head, 10);
        const uint32_t op = head[0], ty = head[1], n = head[2];
        const int nb = (int) head[3], k_pad = (int) head[4];
        const int rows[3] = {(int) head[5], (int) head[6], (int) head[7]};
        const int per_block = (int) head[8];
        if (per_block < 1) fail("rows per block must be positive");
        auto groups = [&](int r) { return (unsigned) ((r + per_block - 1) / per_block); };
        auto kernels_of = [](uint32_t t) {
            const TypeKernels *found = nullptr;
            for (const TypeKernels &k : KERNELS)
                if ((uint32_t) k.ty == t) found = &k;
            if (!found) fail("unknown weight type");
            return found;
        };
        const TypeKernels *kern = kernels_of(ty);
        // The multi-matrix kernel, and the blocks of matrix 2 (op 1).
        MultiKernel multi = kern->multi;
        int block_bytes2 = kern->block_bytes;
        if (op == 1 && head[9] != ty) {
            if (head[9] == GGML_Q6_K && ty == GGML_Q4_K) multi = mmvq_multi_q4_K_q6_K;
            else if (head[9] == GGML_Q6_K && ty == GGML_Q5_K) multi = mmvq_multi_q5_K_q6_K;
            else if (head[9] == GGML_Q8_0 && ty == GGML_Q5_0) multi = mmvq_multi_q5_0_q8_0;
            else fail("no multi-matrix kernel for these types");
            block_bytes2 = kernels_of(head[9])->block_bytes;
        }
        if (k_pad % 256 != 0) fail("k_pad must be a multiple of 256");
        const int n_mats = op == 1 ? (int) n : 1;
        const int n_tokens = op == 1 ? 1 : (int) n;
        if (op > 2 || n_mats < 1 || n_mats > 3) fail("bad op or matrix count");
        std::vector<DevBuf> w;
        emu::readable.clear();
        for (int i = 0; i < n_mats; ++i)
            w.push_back(read_buf((size_t) rows[i] * nb * (i == 2 ? block_bytes2 : kern->block_bytes)));
        DevBuf qs = read_buf((size_t) n_tokens * k_pad);
        DevBuf ds = read_buf((size_t) n_tokens * k_pad / QK8 * sizeof(float2));
        std::vector<DevBuf> y;
        if (op == 2) {
            y.push_back(poisoned_output((size_t) n * rows[0]));
            const int k = nb * kern->block_elems;
            const unsigned gx = (unsigned) ((rows[0] + MMQ_BM - 1) / MMQ_BM), gy = (unsigned) ((n + MMQ_BN - 1) / MMQ_BN);
            emu::launch(gx, gy, MMQ_THREADS, [&] {
                kern->mmq(w[0].as<u8>(), nb, k, qs.as<i8>(), ds.as<float2>(), k_pad, (int) n, y[0].as<float>(), rows[0]);
            });
        } else if (op == 0) {
            int idx = n == 1 ? 0 : n == 2 ? 1 : n == 4 ? 2 : n == 8 ? 3 : -1;
            if (idx < 0) fail("tokens must be 1, 2, 4 or 8");
            y.push_back(poisoned_output((size_t) n * rows[0]));
            const SingleKernel k = kern->single[idx];
            emu::launch(groups(rows[0]), 1, MMVQ_THREADS, [&] {
                k(w[0].as<u8>(), nb, qs.as<i8>(), ds.as<float2>(), k_pad, y[0].as<float>(), rows[0], per_block);
            });
        } else {
            // Absent matrices: null pointers and 0 rows, as matvec_q8_multi passes them.
            for (int i = 0; i < 3; ++i) y.push_back(poisoned_output(i < n_mats ? (size_t) rows[i] : 0));
            auto wp = [&](int i) { return i < n_mats ? w[i].as<u8>() : nullptr; };
            auto rw = [&](int i) { return i < n_mats ? rows[i] : 0; };
            emu::launch(groups(rw(0)) + groups(rw(1)) + groups(rw(2)), 1, MMVQ_THREADS, [&] {
                multi(wp(0), y[0].as<float>(), rw(0), wp(1), y[1].as<float>(), rw(1), wp(2), y[2].as<float>(), rw(2),
                      nb, qs.as<i8>(), ds.as<float2>(), k_pad, per_block);
            });
        }
        for (const DevBuf &b : w) check_guards(b, "a weight matrix", c, head);
        check_guards(qs, "the activation quants", c, head);
        check_guards(ds, "the activation scales", c, head);
        for (const DevBuf &b : y) {
            check_guards(b, "an output", c, head);
            write_vals(b.as<uint8_t>(), b.bytes());
        }
    }
    return std::fflush(stdout) == 0 ? 0 : 2;
}
