// Products with unquantized weights (F32, F16, BF16) and f32 activations, f32 accumulation:
// y[c * rows + r] = dot(W row r, x row c).
//   matvec_<ty>_<nc>: decode, one block of 128 threads per weight row, 16-byte weight loads
//                     (8 halves or 4 floats), each weight read once for nc tokens.
//   matmul_<ty>:      prefill, a 64 x 64 tile per block of 256 threads on CUDA cores.

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
// Prefill: thread (tx, ty) of a 16 x 16 block computes rows ty + 16 i and tokens tx + 16 j.

#define MMF_TILE 64
#define MMF_BK 32

// Weight idx as raw bits (an f32's, or an f16 / bf16 in the low half; 0 is 0.0 in all),
// and those bits as a float.
template <int TY>
static __device__ __forceinline__ int load_w_bits(const u8 *w, i64 idx) {
    if (TY == GGML_F32) return __ldg((const int *) w + idx);
    return __ldg((const u16 *) w + idx);
}
template <int TY>
static __device__ __forceinline__ float bits_to_w(int b) {
    if (TY == GGML_F32) return __int_as_float(b);
    return TY == GGML_F16 ? h2f((u16) b) : bf2f((u16) b);
}

// w: rows x k, x: n x k, y: n x rows. grid: (ceil(rows / 64), ceil(n / 64)), block: 256.
template <int TY>
static __device__ __forceinline__ void matmul_f(const u8 *__restrict__ w, int k, const float *__restrict__ x, int n,
                                                float *__restrict__ y, int rows) {
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
        // A fixed 8 elements of each tile per thread: all 16 loads issued (as raw bits,
        // pinned) before the first is converted and stored.
        constexpr int PER = MMF_TILE * MMF_BK / 256;
        int wb[PER], xb[PER];
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int idx = threadIdx.x + 256 * i, r = idx / MMF_BK, kk = idx % MMF_BK;
            const int row = r0 + r, col = c0 + r, kg = k0 + kk;
            wb[i] = row < rows && kg < k ? load_w_bits<TY>(w, (i64) row * k + kg) : 0;
            xb[i] = col < n && kg < k ? __ldg((const int *) x + (i64) col * k + kg) : 0;
            pin(wb[i]);
            pin(xb[i]);
        }
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int idx = threadIdx.x + 256 * i, r = idx / MMF_BK, kk = idx % MMF_BK;
            sw[kk][r] = bits_to_w<TY>(wb[i]);
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

#define MATMUL_F_KERNEL(NAME, TY)                                                                    \
    extern "C" __global__ void __launch_bounds__(256) matmul_##NAME(const u8 *w, int k, const float *x, \
                                                                    int n, float *y, int rows) {     \
        pdl_entry();                                                                                 \
        matmul_f<TY>(w, k, x, n, y, rows);                                                           \
    }

MATMUL_F_KERNEL(f32, GGML_F32)
MATMUL_F_KERNEL(f16, GGML_F16)
MATMUL_F_KERNEL(bf16, GGML_BF16)
