// NEOX-style rotary embedding (llama.cpp's rope mode 2, used by Gemma 3): dimension i is
// rotated with i + head_dim / 2 by theta = pos * freq_scale * freq_base^(-2i / head_dim).

// The angle of pair i at `pos` exactly as the CPU backend (and ggml's CPU rope) computes it:
// pos multiplied i times by theta_scale = freq_base^(-2 / head_dim), which the host computes
// (gemma_kernels::cpu::ops::rope_theta_scale), each product rounded to f32, then times
// freq_scale. (powf(theta_scale, i), as ggml's CUDA rope computes it, differs by a few ulps;
// amplified by the activation quantization downstream, such differences are a large part of
// a quantized model's KL against the CPU.) At most head_dim / 2 - 1 dependent
// multiplications per thread.
static __device__ __forceinline__ float rope_angle(int pos, int i, float theta_scale, float freq_scale) {
    float theta = (float) pos;
    for (int j = 0; j < i; ++j) theta = __fmul_rn(theta, theta_scale);
    return __fmul_rn(freq_scale, theta);
}

// x: n tokens x n_heads x head_dim floats, rotated in place; positions: one per token.
// grid: (n, n_heads), block: head_dim / 2 threads (at most 1024).
extern "C" __global__ void rope_neox(float *x, int n_heads, int head_dim, const i32 *__restrict__ positions,
                                     float theta_scale, float freq_scale) {
    pdl_entry();
    const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    const int half = head_dim / 2;
    if (i >= half) return;
    float *v = x + ((i64) t * n_heads + h) * head_dim;
    const float theta = rope_angle(positions[t], i, theta_scale, freq_scale);
    float s, c;
    sincosf(theta, &s, &c);
    const float x0 = v[i], x1 = v[i + half];
    v[i] = x0 * c - x1 * s;
    v[i + half] = x0 * s + x1 * c;
}

// One head x (head_dim values) RMS-normed with weight w, rotated NEOX style at `pos` and
// multiplied by `scale`, written back: thread i (all threads of the block call it; block_sum)
// holds dimensions i and i + head_dim / 2. Returns false for the threads past head_dim / 2,
// which hold nothing; the others get their two values in r0, r1.
static __device__ __forceinline__ bool norm_rope_head(float *x, const float *__restrict__ w, int head_dim, int pos,
                                                      float theta_scale, float freq_scale, float scale, float eps,
                                                      float *scratch, float &r0, float &r1) {
    const int i = threadIdx.x, half = head_dim / 2;
    const bool live = i < half;
    const float x0 = live ? x[i] : 0.0f, x1 = live ? x[i + half] : 0.0f;
    const float ss = block_sum(x0 * x0 + x1 * x1, scratch);
    if (!live) return false;
    const float inv = 1.0f / sqrtf(ss / (float) head_dim + eps);
    const float n0 = x0 * inv * w[i], n1 = x1 * inv * w[i + half];
    const float theta = rope_angle(pos, i, theta_scale, freq_scale);
    float s, c;
    sincosf(theta, &s, &c);
    r0 = n0 * c - n1 * s;
    r1 = n0 * s + n1 * c;
    if (scale != 1.0f) {
        r0 *= scale;
        r1 *= scale;
    }
    x[i] = r0;
    x[i + half] = r1;
    return true;
}

// QK-norm, RoPE and the query scale of one layer in one launch: every head of q (n x n_q x
// head_dim) and of k (n x n_k x head_dim) is RMS-normed (weights wq / wk), rotated NEOX
// style at positions[t], and the query heads are multiplied by q_scale: the values of
// rms_norm in place, rope_neox and scale_f32 in turn. Thread i holds dimensions i and
// i + head_dim / 2. grid: (n, n_q + n_k), block: head_dim / 2 rounded up to a multiple of 32.
extern "C" __global__ void qk_norm_rope(float *q, float *k, const float *__restrict__ wq,
                                        const float *__restrict__ wk, int n_q, int n_k, int head_dim,
                                        const i32 *__restrict__ positions, float theta_scale, float freq_scale,
                                        float q_scale, float eps) {
    pdl_entry();
    __shared__ float scratch[32];
    const int t = blockIdx.x, h = blockIdx.y;
    const bool is_q = h < n_q;
    float *x = is_q ? q + ((i64) t * n_q + h) * head_dim : k + ((i64) t * n_k + (h - n_q)) * head_dim;
    float r0, r1;
    norm_rope_head(x, is_q ? wq : wk, head_dim, positions[t], theta_scale, freq_scale, is_q ? q_scale : 1.0f, eps,
                   scratch, r0, r1);
}

// One element of a token's K or V row stored into a cache slot row (KV_* of attention.cu:
// f16, f32, or Q8_0 blocks of 32 quantized as kv_store_q8_0 does, where the 32 values of a
// block are the `v` of one warp's lanes, lane = element % 32).
template <int KV>
static __device__ __forceinline__ void store_kv_elem(void *cache, i64 row, int width, int e, float v) {
    if (KV == KV_F16) {
        ((u16 *) cache)[row * width + e] = f2h(v);
    } else if (KV == KV_F32) {
        ((float *) cache)[row * width + e] = v;
    } else {
        const int lane = threadIdx.x % WARP;
        const float amax = warp_max(fabsf(v));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const int q = max(-128, min(127, __float2int_rn(v * id)));
        u8 *blk = (u8 *) cache + (row * (width / 32) + e / 32) * 34;
        blk[2 + lane] = (u8) (i8) q;
        if (lane == 0) {
            const u16 d = f2h(amax / 127.0f);
            blk[0] = (u8) (d & 0xFF);
            blk[1] = (u8) (d >> 8);
        }
    }
}

// qk_norm_rope and the KV-cache store of the same tokens in one launch: blocks y < n_q + n_k
// are qk_norm_rope's (the key heads also go to cache_k), blocks y >= n_q + n_k store value
// head y - n_q - n_k of v to cache_v, as kv_store_<kv> would (token t to slot positions[t] %
// n_slots, only the last n_slots tokens). For a Q8_0 cache head_dim / 2 is a multiple of 32
// (a warp holds whole blocks). grid: (n, n_q + 2 n_k), block: as qk_norm_rope.
template <int KV>
static __device__ __forceinline__ void qk_norm_rope_store(
    float *q, float *k, const float *__restrict__ v, const float *__restrict__ wq, const float *__restrict__ wk,
    int n, int n_q, int n_k, int head_dim, const i32 *__restrict__ positions, float theta_scale, float freq_scale,
    float q_scale, float eps, int n_slots, void *cache_k, void *cache_v) {
    __shared__ float scratch[32];
    const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    const int half = head_dim / 2, width = n_k * head_dim;
    const bool live = i < half, stored = t >= n - n_slots;
    const i64 slot = positions[t] % n_slots;
    if (h >= n_q + n_k) {  // a value head: stored as it is
        const int hv = h - n_q - n_k;
        if (!live || !stored) return;
        const float *src = v + ((i64) t * n_k + hv) * head_dim;
        store_kv_elem<KV>(cache_v, slot, width, hv * head_dim + i, src[i]);
        store_kv_elem<KV>(cache_v, slot, width, hv * head_dim + half + i, src[i + half]);
        return;
    }
    const bool is_q = h < n_q;
    float *x = is_q ? q + ((i64) t * n_q + h) * head_dim : k + ((i64) t * n_k + (h - n_q)) * head_dim;
    float r0, r1;
    if (!norm_rope_head(x, is_q ? wq : wk, head_dim, positions[t], theta_scale, freq_scale, is_q ? q_scale : 1.0f,
                        eps, scratch, r0, r1))
        return;
    if (!is_q && stored) {
        const int hk = h - n_q;
        store_kv_elem<KV>(cache_k, slot, width, hk * head_dim + i, r0);
        store_kv_elem<KV>(cache_k, slot, width, hk * head_dim + half + i, r1);
    }
}

#define QK_NORM_ROPE_STORE(NAME, KV)                                                                          \
    extern "C" __global__ void NAME(float *q, float *k, const float *v, const float *wq, const float *wk, int n, \
                                    int n_q, int n_k, int head_dim, const i32 *positions, float theta_scale,   \
                                    float freq_scale, float q_scale, float eps, int n_slots, void *cache_k,    \
                                    void *cache_v) {                                                           \
        pdl_entry();                                                                                           \
        qk_norm_rope_store<KV>(q, k, v, wq, wk, n, n_q, n_k, head_dim, positions, theta_scale, freq_scale,   \
                               q_scale, eps, n_slots, cache_k, cache_v);                                       \
    }

QK_NORM_ROPE_STORE(qk_norm_rope_store_f16, KV_F16)
QK_NORM_ROPE_STORE(qk_norm_rope_store_f32, KV_F32)
QK_NORM_ROPE_STORE(qk_norm_rope_store_q8_0, KV_Q8_0)

