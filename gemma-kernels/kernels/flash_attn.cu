// Attention for prefill, flash-style: n new tokens at positions p0 .. p0 + n - 1, causal,
// optionally limited to a sliding window (query at qp sees keys kp with qp - kp < window),
// with GQA. Keys and values come from two places: positions before p_new from the f16
// cache (slot p % n_slots), positions from p_new on from the f16 K/V given for the new
// tokens (row p - p_new, n x n_kv x D). With p_new = p0 the new tokens' K/V need not be in
// the cache yet (a ring of `window` slots suffices; the caller stores them afterwards);
// with p_new past the last position every key comes from the cache.
//
// An image span [img_start, img_end) of positions (empty: text only) makes its tokens see
// each other (Gemma 3's bidirectional image attention): a query at qp inside it also sees
// the keys after it up to img_end, which must then be readable (in the cache, or new rows).
//
// A block of 4 warps handles one query head and BQ = 4 * QPW consecutive tokens (QPW per
// warp), walking the key range in tiles of 32 keys kept in shared memory. Scores: lane j
// owns key j of the tile; online softmax per query; weighted values: lanes across the head
// dimension. Accumulation in f32.

#define FA_THREADS 128
#define FA_KT 32  // keys per tile

// N halves (N in {2, 4, 8}) from shared memory, with one vector load: consecutive lanes
// read consecutive vectors, free of bank conflicts.
template <int N>
static __device__ __forceinline__ void lds_halves(const u16 *p, float *f) {
    u32 w[N / 2];
    if constexpr (N == 8) {
        const int4 v = *(const int4 *) p;
        w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
    } else if constexpr (N == 4) {
        const int2 v = *(const int2 *) p;
        w[0] = v.x; w[1] = v.y;
    } else {
        w[0] = *(const u32 *) p;
    }
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
        f[2 * i] = h2f((u16) (w[i] & 0xFFFF));
        f[2 * i + 1] = h2f((u16) (w[i] >> 16));
    }
}

template <int D>
static __device__ __forceinline__ void flash_prefill(const float *__restrict__ q, const u16 *__restrict__ k_new,
                                                     const u16 *__restrict__ v_new, const u16 *__restrict__ kc,
                                                     const u16 *__restrict__ vc, int n, int n_heads, int n_kv,
                                                     int p0, int p_new, int n_slots, int window, int img_start,
                                                     int img_end, float scale, float *__restrict__ out) {
    constexpr int QPW = 512 / D;         // queries per warp
    constexpr int BQ = 4 * QPW;          // queries per block
    constexpr int EPL = D / WARP;        // value dims per lane
    constexpr int KS = D + 4;            // K row stride in halves: conflict-free 8-byte reads
    __shared__ __align__(16) float sq[BQ][D];
    __shared__ __align__(16) u16 sk[FA_KT][KS];
    __shared__ __align__(16) u16 sv[FA_KT][D];

    const int t0 = blockIdx.x * BQ, h = blockIdx.y;
    const int hk = h / (n_heads / n_kv);
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;

    // The block's queries, scaled: BQ x D = 2048 floats, four 16-byte loads per thread
    // issued together.
#pragma unroll
    for (int i = 0; i < BQ * D / 4 / FA_THREADS; ++i) {
        const int idx = threadIdx.x + i * FA_THREADS, qi = idx / (D / 4), d4 = idx % (D / 4);
        const int t = t0 + qi;
        float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
        if (t < n) v = __ldg((const float4 *) (q + ((i64) t * n_heads + h) * D) + d4);
        v.x *= scale;
        v.y *= scale;
        v.z *= scale;
        v.w *= scale;
        *(float4 *) &sq[qi][4 * d4] = v;
    }

    const int t_last = min(t0 + BQ, n) - 1;
    // Exclusive end of the keys any query of the block sees: past the image when one of
    // the block's positions p0 + t0 .. p0 + t_last lies inside it.
    const bool block_in_image = img_start < img_end && img_start <= p0 + t_last && p0 + t0 < img_end;
    const int k_end = block_in_image ? max(p0 + t_last + 1, img_end) : p0 + t_last + 1;
    const int k_begin = window > 0 ? max(0, p0 + t0 - window + 1) : 0;

    float m[QPW], l[QPW], o[QPW][EPL];
#pragma unroll
    for (int qi = 0; qi < QPW; ++qi) {
        m[qi] = NEG_INF;
        l[qi] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; ++e) o[qi][e] = 0.0f;
    }

    for (int kt = k_begin; kt < k_end; kt += FA_KT) {
        __syncthreads();  // previous tile fully used (and sq written on the first pass)
        // The tile's keys and values by cp.async, all in flight at once (zeros past k_end;
        // such a key names key kt, which exists, as its unread source).
        for (int idx = threadIdx.x; idx < FA_KT * (D / 4); idx += FA_THREADS) {
            const int j = idx / (D / 4), c = idx % (D / 4);
            const bool in = kt + j < k_end;
            const int kp = in ? kt + j : kt;
            const u16 *ks, *vs;
            if (kp < p_new) {
                const i64 off = ((i64) (kp % n_slots) * n_kv + hk) * D;
                ks = kc + off;
                vs = vc + off;
            } else {
                const i64 off = ((i64) (kp - p_new) * n_kv + hk) * D;
                ks = k_new + off;
                vs = v_new + off;
            }
            copy_async8(&sk[j][4 * c], ks + 4 * c, in);
            copy_async8(&sv[j][4 * c], vs + 4 * c, in);
        }
        copy_async_wait();
        __syncthreads();

        // Scores of key `lane` for this warp's queries.
        float s[QPW];
#pragma unroll
        for (int qi = 0; qi < QPW; ++qi) s[qi] = 0.0f;
#pragma unroll 4
        for (int c = 0; c < D / 4; ++c) {
            const int2 kw = *(const int2 *) &sk[lane][4 * c];
            const float k0 = h2f((u16) (kw.x & 0xFFFF)), k1 = h2f((u16) ((u32) kw.x >> 16));
            const float k2 = h2f((u16) (kw.y & 0xFFFF)), k3 = h2f((u16) ((u32) kw.y >> 16));
#pragma unroll
            for (int qi = 0; qi < QPW; ++qi) {
                const float4 qv = *(const float4 *) &sq[warp * QPW + qi][4 * c];
                s[qi] += qv.x * k0 + qv.y * k1 + qv.z * k2 + qv.w * k3;
            }
        }

        const int kp = kt + lane;
        float p[QPW];
#pragma unroll
        for (int qi = 0; qi < QPW; ++qi) {
            const int qp = p0 + t0 + warp * QPW + qi;
            const int q_end = qp >= img_start && qp < img_end ? max(qp + 1, img_end) : qp + 1;
            const bool ok = kp < k_end && kp < q_end && (window <= 0 || qp - kp < window);
            const float sv_ = ok ? s[qi] : NEG_INF;
            const float m_new = fmaxf(m[qi], warp_max(sv_));
            if (m_new == NEG_INF) {  // nothing visible yet for this query
                p[qi] = 0.0f;
                continue;
            }
            const float corr = expf(m[qi] - m_new);
            p[qi] = ok ? expf(sv_ - m_new) : 0.0f;
            l[qi] = l[qi] * corr + warp_sum(p[qi]);
            m[qi] = m_new;
#pragma unroll
            for (int e = 0; e < EPL; ++e) o[qi][e] *= corr;
        }

        // Weighted values: lane owns dims lane * EPL .. + EPL.
#pragma unroll 4
        for (int j = 0; j < FA_KT; ++j) {
            float vf[EPL];
            lds_halves<EPL>(&sv[j][lane * EPL], vf);
#pragma unroll
            for (int qi = 0; qi < QPW; ++qi) {
                const float pj = __shfl_sync(0xffffffffu, p[qi], j);
#pragma unroll
                for (int e = 0; e < EPL; ++e) o[qi][e] += pj * vf[e];
            }
        }
    }

#pragma unroll
    for (int qi = 0; qi < QPW; ++qi) {
        const int t = t0 + warp * QPW + qi;
        if (t < n) {
            const float inv = 1.0f / l[qi];
#pragma unroll
            for (int e = 0; e < EPL; ++e) out[((i64) t * n_heads + h) * D + lane * EPL + e] = o[qi][e] * inv;
        }
    }
}

// q, out: n x n_heads x D floats. grid: (ceil(n / BQ), n_heads) with BQ = 2048 / D, block: 128.
#define FLASH_KERNEL(D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(FA_THREADS) flash_prefill_##D(                             \
        const float *q, const u16 *k_new, const u16 *v_new, const u16 *kc, const u16 *vc, int n, int n_heads, \
        int n_kv, int p0, int p_new, int n_slots, int window, int img_start, int img_end, float scale,        \
        float *out) {                                                                                        \
        flash_prefill<D>(q, k_new, v_new, kc, vc, n, n_heads, n_kv, p0, p_new, n_slots, window, img_start,   \
                         img_end, scale, out);                                                               \
    }

FLASH_KERNEL(64)
FLASH_KERNEL(128)
FLASH_KERNEL(256)
