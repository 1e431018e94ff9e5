// Elementwise ops, the embedding row gather and KV-cache writes (f16, f32, Q8_0). 1-D grids of 256 threads,
// each thread striding over the elements.

// out[i] = gelu(gate[i]) * up[i] with the F16 GELU of the CPU engine (common.cuh's
// geglu_f16); out may alias gate or up.
extern "C" __global__ void geglu(const float *gate, const float *up, float *out, i64 n) {
    pdl_entry();
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        out[i] = geglu_f16(gate[i], up[i]);
}

// a[i] += b[i]
extern "C" __global__ void add_f32(float *a, const float *b, i64 n) {
    pdl_entry();
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x) a[i] += b[i];
}

// a[i] *= s
extern "C" __global__ void scale_f32(float *a, float s, i64 n) {
    pdl_entry();
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x) a[i] *= s;
}

// dst[i] = (half) src[i], round to nearest even.
extern "C" __global__ void f32_to_f16(const float *__restrict__ src, u16 *__restrict__ dst, i64 n) {
    pdl_entry();
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        dst[i] = f2h(src[i]);
}

// out[t][i] = dequant(W row ids[t])[i] * scale: the token embedding (scale = sqrt(hidden))
// and, with scale 1, plain dequantization of whole rows. row_bytes: bytes per weight row.
// grid: n tokens, block: 256.
extern "C" __global__ void get_rows(const u8 *__restrict__ w, int ty, i64 row_bytes, const i32 *__restrict__ ids,
                                    int dim, float scale, float *__restrict__ out) {
    pdl_entry();
    const int t = blockIdx.x;
    const u8 *row = w + (i64) ids[t] * row_bytes;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(i64) t * dim + i] = __fmul_rn(dequant_elem(ty, row, i), scale);
}

// Stores the K rows (blockIdx.y 0) and the V rows (blockIdx.y 1; a grid of height 1 stores
// K only) of n tokens into their caches: token t goes to slot positions[t] % n_slots (a ring
// for sliding-window layers, n_slots = context for global ones). Only the last n_slots
// tokens are stored, so no two tokens race for a slot. src: n x width floats.
// kv_store: f16 caches (n_slots x width halves). grid: (n, 1 or 2), block: 256.
extern "C" __global__ void kv_store(const float *__restrict__ src_k, const float *__restrict__ src_v, int n,
                                    int width, const i32 *__restrict__ positions, int n_slots,
                                    u16 *__restrict__ cache_k, u16 *__restrict__ cache_v) {
    pdl_entry();
    const int t = blockIdx.x;
    if (t < n - n_slots) return;
    const float *src = blockIdx.y ? src_v : src_k;
    u16 *cache = blockIdx.y ? cache_v : cache_k;
    const i64 slot = positions[t] % n_slots;
    for (int i = threadIdx.x; i < width; i += blockDim.x) cache[slot * width + i] = f2h(src[(i64) t * width + i]);
}

// kv_store for f32 caches (n_slots x width floats).
extern "C" __global__ void kv_store_f32(const float *__restrict__ src_k, const float *__restrict__ src_v, int n,
                                        int width, const i32 *__restrict__ positions, int n_slots,
                                        float *__restrict__ cache_k, float *__restrict__ cache_v) {
    pdl_entry();
    const int t = blockIdx.x;
    if (t < n - n_slots) return;
    const float *src = blockIdx.y ? src_v : src_k;
    float *cache = blockIdx.y ? cache_v : cache_k;
    const i64 slot = positions[t] % n_slots;
    for (int i = threadIdx.x; i < width; i += blockDim.x) cache[slot * width + i] = src[(i64) t * width + i];
}

// kv_store for Q8_0 caches (n_slots rows of width / 32 blocks of 34 bytes; width a multiple
// of 32), quantized like the CPU cache (BlockQ8_0::quantize_act): d = amax / 127 stored as
// f16, q = round-to-nearest-even(x * 127 / amax). One warp per block of 32.
extern "C" __global__ void kv_store_q8_0(const float *__restrict__ src_k, const float *__restrict__ src_v, int n,
                                         int width, const i32 *__restrict__ positions, int n_slots,
                                         u8 *__restrict__ cache_k, u8 *__restrict__ cache_v) {
    pdl_entry();
    const int t = blockIdx.x;
    if (t < n - n_slots) return;
    const float *src = blockIdx.y ? src_v : src_k;
    u8 *cache = blockIdx.y ? cache_v : cache_k;
    const i64 slot = positions[t] % n_slots;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int nb = width / 32;
    for (int b = warp; b < nb; b += blockDim.x / WARP) {
        const float v = src[(i64) t * width + 32 * b + lane];
        const float amax = warp_max(fabsf(v));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const int q = max(-128, min(127, __float2int_rn(v * id)));
        u8 *blk = cache + (slot * nb + b) * 34;
        blk[2 + lane] = (u8) (i8) q;
        if (lane == 0) {
            const u16 d = f2h(amax / 127.0f);
            blk[0] = (u8) (d & 0xFF);
            blk[1] = (u8) (d >> 8);
        }
    }
}

// Streams n16 16-byte words from memory and writes the XOR of each warp's words to
// out[blockIdx.x * 8 + warp]: the time a plain read of a buffer takes, the reference for
// the matvec kernels' bandwidth (cuda_bench). Four loads in flight per thread.
// grid: any, block: 256.
extern "C" __global__ void __launch_bounds__(256) read_stream(const int4 *__restrict__ p, i64 n16,
                                                              int *__restrict__ out) {
    pdl_entry();
    const i64 stride = (i64) gridDim.x * 256;
    int acc = 0;
    i64 i = blockIdx.x * (i64) 256 + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        int4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) v[u] = __ldg(p + i + u * stride);
#pragma unroll
        for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n16; i += stride) {
        const int4 v = __ldg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    if (threadIdx.x % WARP == 0) out[blockIdx.x * 8 + threadIdx.x / WARP] = acc;
}
