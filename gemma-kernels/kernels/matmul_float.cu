// Products with unquantized weights (F32, F16, BF16) and f32 activations, f32 accumulation:
// y[c * rows + r] = dot(W row r, x row c).
//   matvec_<ty>_<nc>: decode, one block of 128 threads per weight row, 16-byte weight loads
//                     (8 halves or 4 floats), each weight read once for nc tokens.
//   matmul_<ty>:      prefill, a 64 x 64 tile per block of 256 threads: F32 on CUDA cores,
//                     F16 / BF16 on tensor cores.

#define MVF_THREADS 128

template <int TY>
static __device__ __forceinline__ void load8(const u8 *row, int i, float *v) {  // weights i..i+7
    if (TY == GGML_F32) {
        const float4 a = __ldg((const float4 *) (row + 4 * (i64) i));
        const float4 b = __ldg((const float4 *) (row + 4 * (i64) i) + 1);
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
        const int4 q = load_i4(row + 2 * (i64) i);
        const int w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u16 lo = (u16) (w[j] & 0xFFFF), hi = (u16) ((u32) w[j] >> 16);
            v[2 * j] = TY == GGML_F16 ? h2f(lo) : bf2f(lo);
            v[2 * j + 1] = TY == GGML_F16 ? h2f(hi) : bf2f(hi);
        }
    }
}

// k must be a multiple of 8; x: nc rows of k floats.
template <int TY, int NC>
static __device__ __forceinline__ void matvec_f(const u8 *__restrict__ w, int k, const float *__restrict__ x,
                                                float *__restrict__ y, int rows) {
    const int row = blockIdx.x;
    const int esize = TY == GGML_F32 ? 4 : 2;
    const u8 *wrow = w + (i64) row * k * esize;
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[c] = 0.0f;
    for (int i = 8 * threadIdx.x; i < k; i += 8 * MVF_THREADS) {
        float v[8];
        load8<TY>(wrow, i, v);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const float4 a = __ldg((const float4 *) (x + (i64) c * k + i));
            const float4 b = __ldg((const float4 *) (x + (i64) c * k + i) + 1);
            acc[c] += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * b.x + v[5] * b.y + v[6] * b.z
                    + v[7] * b.w;
        }
    }
    __shared__ float partial[MVF_THREADS / WARP][NC];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const float s = warp_sum(acc[c]);
        if (lane == 0) partial[warp][c] = s;
    }
    __syncthreads();
    if (threadIdx.x < NC) {
        float s = 0.0f;
#pragma unroll
        for (int wi = 0; wi < MVF_THREADS / WARP; ++wi) s += partial[wi][threadIdx.x];
        y[(i64) threadIdx.x * rows + row] = s;
    }
}

#define MATVEC_F_KERNEL(NAME, TY, NC)                                                               \
    extern "C" __global__ void __launch_bounds__(MVF_THREADS) matvec_##NAME##_##NC(                \
        const u8 *w, int k, const float *x, float *y, int rows) {                                  \
        pdl_entry();                                                                                \
        matvec_f<TY, NC>(w, k, x, y, rows);                                                         \
    }

#define MATVEC_F_ALL(NAME, TY)     \
    MATVEC_F_KERNEL(NAME, TY, 1)   \
    MATVEC_F_KERNEL(NAME, TY, 2)   \
    MATVEC_F_KERNEL(NAME, TY, 4)   \
    MATVEC_F_KERNEL(NAME, TY, 8)

MATVEC_F_ALL(f32, GGML_F32)
MATVEC_F_ALL(f16, GGML_F16)
MATVEC_F_ALL(bf16, GGML_BF16)

// ---------------------------------------------------------------------------------
// Prefill with F32 weights, on CUDA cores: thread (tx, ty) of a 16 x 16 block computes rows
// ty + 16 i and tokens tx + 16 j of a 64 x 64 tile.

#define MMF_TILE 64
#define MMF_BK 32

// w: rows x k, x: n x k, y: n x rows. grid: (ceil(rows / 64), ceil(n / 64)), block: 256.
static __device__ __forceinline__ void matmul_f32_tile(const float *__restrict__ w, int k,
                                                       const float *__restrict__ x, int n, float *__restrict__ y, int rows) {
    __shared__ float sw[MMF_BK][MMF_TILE + 1];
    __shared__ float sx[MMF_BK][MMF_TILE + 1];
    const int r0 = blockIdx.x * MMF_TILE, c0 = blockIdx.y * MMF_TILE;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += MMF_BK) {
        // A fixed 8 elements of each tile per thread: all 16 loads issued (pinned) before
        // the first is stored.
        constexpr int PER = MMF_TILE * MMF_BK / 256;
        int wb[PER], xb[PER];
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int idx = threadIdx.x + 256 * i, r = idx / MMF_BK, kk = idx % MMF_BK;
            const int row = r0 + r, col = c0 + r, kg = k0 + kk;
            wb[i] = row < rows && kg < k ? __ldg((const int *) w + (i64) row * k + kg) : 0;
            xb[i] = col < n && kg < k ? __ldg((const int *) x + (i64) col * k + kg) : 0;
            pin(wb[i]);
            pin(xb[i]);
        }
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int idx = threadIdx.x + 256 * i, r = idx / MMF_BK, kk = idx % MMF_BK;
            sw[kk][r] = __int_as_float(wb[i]);
            sx[kk][r] = __int_as_float(xb[i]);
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < MMF_BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = sw[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = sx[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int row = r0 + ty + 16 * i, col = c0 + tx + 16 * j;
            if (row < rows && col < n) y[(i64) col * rows + row] = acc[i][j];
        }
}

extern "C" __global__ void __launch_bounds__(256) matmul_f32(const u8 *w, int k, const float *x, int n, float *y,
                                                            int rows) {
    pdl_entry();
    matmul_f32_tile((const float *) w, k, x, n, y, rows);
}

// ---------------------------------------------------------------------------------
// Prefill with F16 / BF16 weights, on tensor cores (mma.sync m16n8k16, f32 accumulation).
// A block of 256 threads (2 x 4 warps, each 32 rows x 16 tokens) computes a 64 x 64 tile,
// stepping through K 32 at a time, double-buffered: while the warps multiply one K tile,
// the weights of the next travel by cp.async (raw, already in the weight type) and its
// activations wait in registers.
//
// The f32 activations are split into MMF_PARTS values of the weight type, each rounded to
// nearest from what the ones before leave: x = x1 + x2 for F16 (22 significant bits), + x3
// for BF16 (24); the weights multiply every part (exact products, f32 sums). So the
// products are those of the f32 activations, as the decode matvec above and the CPU image
// encoder compute them, to within about 2^-22 of each activation; an activation beyond the
// F16 range (|x| > 65504) is infinite in the F16 split, as in ggml's F16 products.

#define MMF_ROW_WORDS (MMF_BK / 2 + 4)  // a row's 32 values as 16 words, + 4: conflict-free fragment
                                        // loads, rows 16-byte aligned for cp.async
#define MMF_PARTS(TY) ((TY) == GGML_F16 ? 2 : 3)

// f32 -> f16 / bf16, round to nearest even (bf16: NaN stays NaN, quiet, as half::bf16).
template <int TY>
static __device__ __forceinline__ u32 round_to(float v) {
    if (TY == GGML_F16) return f2h(v);
    const u32 b = __float_as_uint(v);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (b >> 16) | 0x40u;
    return (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
}

template <int TY>
static __device__ __forceinline__ float widen(u32 h) {
    return TY == GGML_F16 ? h2f((u16) h) : bf2f((u16) h);
}

template <int TY> struct __align__(16) MmfTile {
    int w[MMF_TILE][MMF_ROW_WORDS];                     // weight row r, values k0 .. k0 + 31
    int x[MMF_PARTS(TY)][MMF_TILE][MMF_ROW_WORDS];      // activation part p of token c
};

// Thread t's share of a K tile: row / token t / 4, values 8 (t % 4) .. + 7.
template <int TY>
static __device__ __forceinline__ void load_weights(MmfTile<TY> &s, const u8 *w, int k, int rows, int r0, int k0) {
    const int r = threadIdx.x / 4, kk = k0 + 8 * (threadIdx.x % 4);
    const bool in = r0 + r < rows && kk < k;
    copy_async16(&s.w[r][4 * (threadIdx.x % 4)], in ? w + 2 * ((i64) (r0 + r) * k + kk) : w, in);
}

static __device__ __forceinline__ void load_activations(const float *x, int k, int n, int c0, int k0, float4 (&v)[2]) {
    const int c = threadIdx.x / 4, kk = k0 + 8 * (threadIdx.x % 4);
    const bool in = c0 + c < n && kk < k;
    const float4 *p = (const float4 *) (x + (in ? (i64) (c0 + c) * k + kk : 0));
    v[0] = in ? __ldg(p) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    v[1] = in ? __ldg(p + 1) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

template <int TY>
static __device__ __forceinline__ void store_activations(MmfTile<TY> &s, const float4 (&v)[2]) {
    float rest[8] = {v[0].x, v[0].y, v[0].z, v[0].w, v[1].x, v[1].y, v[1].z, v[1].w};
    const int c = threadIdx.x / 4, word = 4 * (threadIdx.x % 4);
#pragma unroll
    for (int p = 0; p < MMF_PARTS(TY); ++p) {
        u32 packed[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const u32 lo = round_to<TY>(rest[2 * i]), hi = round_to<TY>(rest[2 * i + 1]);
            rest[2 * i] -= widen<TY>(lo);
            rest[2 * i + 1] -= widen<TY>(hi);
            packed[i] = lo | (hi << 16);
        }
        *(int4 *) &s.x[p][c][word] = make_int4((int) packed[0], (int) packed[1], (int) packed[2], (int) packed[3]);
    }
}

// (Without __CUDA_ARCH__: the CPU emulation of tests/emu/emu.h.)
template <int TY>
static __device__ __forceinline__ void mma_k16_f(float (&c)[4], const int (&a)[4], int b0, int b1) {
#ifdef __CUDA_ARCH__
    if (TY == GGML_F16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    const uint32_t av[4] = {(uint32_t) a[0], (uint32_t) a[1], (uint32_t) a[2], (uint32_t) a[3]};
    const uint32_t bv[2] = {(uint32_t) b0, (uint32_t) b1};
    emu::mma_f16(TY == GGML_BF16, c, av, bv);
#endif
}

// The warp's 32 x 16 sub-tile (rows wr.., tokens wc..) times one K tile: two K steps of 16.
template <int TY>
static __device__ __forceinline__ void multiply_tile(const MmfTile<TY> &s, int wr, int wc, float (&acc)[2][2][4]) {
    const int lane = threadIdx.x % WARP, g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
        const int kw = 8 * ks + tig;
        int a[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
            const int r = wr + 16 * mt + g;
            a[mt][0] = s.w[r][kw];
            a[mt][1] = s.w[r + 8][kw];
            a[mt][2] = s.w[r][kw + 4];
            a[mt][3] = s.w[r + 8][kw + 4];
        }
#pragma unroll
        for (int p = 0; p < MMF_PARTS(TY); ++p)
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                const int c = wc + 8 * nt + g;
                const int b0 = s.x[p][c][kw], b1 = s.x[p][c][kw + 4];
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) mma_k16_f<TY>(acc[mt][nt], a[mt], b0, b1);
            }
    }
}

// w: rows x k (k a multiple of 8), x: n x k, y: n x rows. grid: (ceil(rows / 64),
// ceil(n / 64)), block: 256.
template <int TY>
static __device__ __forceinline__ void matmul_mma(const u8 *__restrict__ w, int k, const float *__restrict__ x, int n,
                                                  float *__restrict__ y, int rows) {
    __shared__ MmfTile<TY> tiles[2];
    const int r0 = blockIdx.x * MMF_TILE, c0 = blockIdx.y * MMF_TILE;
    const int warp = threadIdx.x / WARP, wr = 32 * (warp % 2), wc = 16 * (warp / 2);
    float acc[2][2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
    float4 next[2];
    load_weights<TY>(tiles[0], w, k, rows, r0, 0);
    load_activations(x, k, n, c0, 0, next);
    store_activations<TY>(tiles[0], next);
    const int n_tiles = (k + MMF_BK - 1) / MMF_BK;
    for (int t = 0; t < n_tiles; ++t) {
        copy_async_wait();
        __syncthreads();  // tile t complete; every warp done with tile t - 1's buffer
        const bool more = t + 1 < n_tiles;
        if (more) {
            load_weights<TY>(tiles[(t + 1) % 2], w, k, rows, r0, (t + 1) * MMF_BK);
            load_activations(x, k, n, c0, (t + 1) * MMF_BK, next);
        }
        multiply_tile<TY>(tiles[t % 2], wr, wc, acc);
        if (more) store_activations<TY>(tiles[(t + 1) % 2], next);
    }
    const int lane = threadIdx.x % WARP, g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int row = r0 + wr + 16 * mt + g + 8 * (i / 2), col = c0 + wc + 8 * nt + 2 * tig + i % 2;
                if (row < rows && col < n) y[(i64) col * rows + row] = acc[mt][nt][i];
            }
}

#define MATMUL_MMA_KERNEL(NAME, TY)                                                                  \
    extern "C" __global__ void __launch_bounds__(256) matmul_##NAME(const u8 *w, int k, const float *x, \
                                                                    int n, float *y, int rows) {     \
        pdl_entry();                                                                                 \
        matmul_mma<TY>(w, k, x, n, y, rows);                                                         \
    }

MATMUL_MMA_KERNEL(f16, GGML_F16)
MATMUL_MMA_KERNEL(bf16, GGML_BF16)
