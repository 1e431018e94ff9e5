// Attention over the f16 KV cache for one decoding token, split over keys
// ("flash-decoding"): attn_decode_<D> computes, per KV head and per split of at most
// `kps` keys, the unnormalised partial softmax(q k) v of every query head of that KV head
// (GQA); attn_combine_<D> merges the splits.
//
// Cache layout: n_slots x n_kv x D halves. The query sits at position pos = *pos_ptr (read
// on the device, so a captured graph can be replayed for every step); it attends to the
// last n_live = min(pos + 1, window) positions (window 0: all), position p living in slot
// p % n_slots: a ring of `window` slots for sliding-window layers, the whole context for
// global ones. Only live keys are read. Splits without keys report l = 0.

#define ATT_THREADS 128
#define ATT_MAX_G 8
#define ATT_MAX_KPS 256

template <int N>
static __device__ __forceinline__ void load_halves(const u16 *p, float *f) {  // N in {2, 4, 8}
    if constexpr (N == 8) {
        const int4 v = load_i4(p);
        const int w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            f[2 * j] = h2f((u16) (w[j] & 0xFFFF));
            f[2 * j + 1] = h2f((u16) ((u32) w[j] >> 16));
        }
    } else if constexpr (N == 4) {
        const int2 v = load_i2(p);
        f[0] = h2f((u16) (v.x & 0xFFFF));
        f[1] = h2f((u16) ((u32) v.x >> 16));
        f[2] = h2f((u16) (v.y & 0xFFFF));
        f[3] = h2f((u16) ((u32) v.y >> 16));
    } else {
        const u32 v = __ldg((const u32 *) p);
        f[0] = h2f((u16) (v & 0xFFFF));
        f[1] = h2f((u16) (v >> 16));
    }
}

// q: n_heads x D floats; part_o: n_heads x n_splits x D; part_ml: n_heads x n_splits {m, l}.
// grid: (n_kv, n_splits), block: 128. n_heads / n_kv <= 8, kps <= 256.
template <int D>
static __device__ __forceinline__ void attn_decode(const float *__restrict__ q, const u16 *__restrict__ kc,
                                                   const u16 *__restrict__ vc, int n_heads, int n_kv, int n_slots,
                                                   const i32 *__restrict__ pos_ptr, int window, int kps, float scale,
                                                   float *__restrict__ part_o, float2 *__restrict__ part_ml) {
    constexpr int EPL = D / WARP;                     // key dims per lane
    constexpr int DPT = D >= ATT_THREADS ? D / ATT_THREADS : 1;  // value dims per thread
    __shared__ float sq[ATT_MAX_G][D];
    __shared__ float sp[ATT_MAX_G][ATT_MAX_KPS];
    const int hk = blockIdx.x, split = blockIdx.y, n_splits = gridDim.y;
    const int G = n_heads / n_kv;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int n_all = pos_ptr[0] + 1;
    const int n_live = window > 0 ? min(n_all, window) : n_all;
    const int start = n_all - n_live;
    const int i0 = split * kps, i1 = min(i0 + kps, n_live);
    if (i0 >= i1) {
        if (threadIdx.x < G) part_ml[(hk * G + threadIdx.x) * n_splits + split] = make_float2(NEG_INF, 0.0f);
        return;
    }
    for (int idx = threadIdx.x; idx < G * D; idx += ATT_THREADS) sq[idx / D][idx % D] = q[(i64) hk * G * D + idx] * scale;
    __syncthreads();

    // Scores: one warp per key, lanes across the head dimension.
    for (int i = i0 + warp; i < i1; i += ATT_THREADS / WARP) {
        const i64 slot = (start + i) % n_slots;
        float kf[EPL];
        load_halves<EPL>(kc + (slot * n_kv + hk) * D + lane * EPL, kf);
        for (int g = 0; g < G; ++g) {
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < EPL; ++e) dot += sq[g][lane * EPL + e] * kf[e];
            dot = warp_sum(dot);
            if (lane == 0) sp[g][i - i0] = dot;
        }
    }
    __syncthreads();

    // Softmax numerators per head: warp w handles heads w, w + 4.
    __shared__ float sm[ATT_MAX_G], sl[ATT_MAX_G];
    for (int g = warp; g < G; g += ATT_THREADS / WARP) {
        float m = NEG_INF;
        for (int j = lane; j < i1 - i0; j += WARP) m = fmaxf(m, sp[g][j]);
        m = warp_max(m);
        float l = 0.0f;
        for (int j = lane; j < i1 - i0; j += WARP) {
            const float p = expf(sp[g][j] - m);
            sp[g][j] = p;
            l += p;
        }
        l = warp_sum(l);
        if (lane == 0) {
            sm[g] = m;
            sl[g] = l;
        }
    }
    __syncthreads();

    // Weighted values: threads across the head dimension, keys in order.
    const int d0 = threadIdx.x * DPT;
    if (d0 >= D) return;
    float acc[ATT_MAX_G][DPT];
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; ++g)
#pragma unroll
        for (int e = 0; e < DPT; ++e) acc[g][e] = 0.0f;
#pragma unroll 4
    for (int i = i0; i < i1; ++i) {
        const i64 slot = (start + i) % n_slots;
        const u16 *vr = vc + (slot * n_kv + hk) * D + d0;
        float vf[DPT];
        if constexpr (DPT == 2) {
            const u32 v = __ldg((const u32 *) vr);
            vf[0] = h2f((u16) (v & 0xFFFF));
            vf[1] = h2f((u16) (v >> 16));
        } else {
            vf[0] = h2f(__ldg(vr));
        }
#pragma unroll
        for (int g = 0; g < ATT_MAX_G; ++g) {
            if (g < G) {
                const float p = sp[g][i - i0];
#pragma unroll
                for (int e = 0; e < DPT; ++e) acc[g][e] += p * vf[e];
            }
        }
    }
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; ++g) {
        if (g < G) {
            const int h = hk * G + g;
#pragma unroll
            for (int e = 0; e < DPT; ++e) part_o[((i64) h * n_splits + split) * D + d0 + e] = acc[g][e];
            if (threadIdx.x == 0) part_ml[h * n_splits + split] = make_float2(sm[g], sl[g]);
        }
    }
}

// out: n_heads x D. grid: n_heads, block: D.
template <int D>
static __device__ __forceinline__ void attn_combine(const float *__restrict__ part_o, const float2 *__restrict__ part_ml,
                                                    int n_splits, float *__restrict__ out) {
    const int h = blockIdx.x, d = threadIdx.x;
    float m = NEG_INF;
    for (int s = 0; s < n_splits; ++s) {
        const float2 ml = part_ml[h * n_splits + s];
        if (ml.y > 0.0f) m = fmaxf(m, ml.x);
    }
    float l = 0.0f, o = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
        const float2 ml = part_ml[h * n_splits + s];
        if (ml.y > 0.0f) {
            const float f = expf(ml.x - m);
            l += ml.y * f;
            o += part_o[((i64) h * n_splits + s) * D + d] * f;
        }
    }
    out[(i64) h * D + d] = o / l;
}

#define ATTN_KERNELS(D)                                                                                        \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_decode_##D(                                \
        const float *q, const u16 *kc, const u16 *vc, int n_heads, int n_kv, int n_slots, const i32 *pos_ptr,  \
        int window, int kps, float scale, float *part_o, float2 *part_ml) {                                   \
        attn_decode<D>(q, kc, vc, n_heads, n_kv, n_slots, pos_ptr, window, kps, scale, part_o, part_ml);       \
    }                                                                                                          \
    extern "C" __global__ void attn_combine_##D(const float *part_o, const float2 *part_ml, int n_splits,     \
                                                float *out) {                                                  \
        attn_combine<D>(part_o, part_ml, n_splits, out);                                                       \
    }

ATTN_KERNELS(64)
ATTN_KERNELS(128)
ATTN_KERNELS(256)
