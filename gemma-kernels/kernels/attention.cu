// Attention over the KV cache for one decoding token, split over keys
// ("flash-decoding"): attn_decode_<D> computes, per KV head and per split, the unnormalised
// partial softmax(q k) v of every query head of that KV head (GQA); the live keys are
// spread over the splits in runs of a multiple of 32 keys (at most ATT_MAX_KPS; the host
// allocates enough splits), sized on the device from the position, so every step of a
// captured graph uses as many splits as its keys fill; attn_combine_<D> merges the splits
// (and may quantize the result for the output projection, as quantize_q8_1 would).
//
// Cache layout: n_slots x n_kv x D halves. The query sits at position pos = *pos_ptr (read
// on the device, so a captured graph can be replayed for every step); it attends to the
// last n_live = min(pos + 1, window) positions (window 0: all), position p living in slot
// p % n_slots: a ring of `window` slots for sliding-window layers, the whole context for
// global ones. Only live keys are read. Splits without keys report l = 0.
//
// The cache holds f16 (attn_decode_<D>), f32 (attn_decode_f32_<D>) or Q8_0 blocks
// (attn_decode_q8_0_<D>: rows of D / 32 blocks of 34 bytes, dequantized to f32 on load; the
// query is rounded through Q8_0 first, as the CPU backend quantizes it for Q·K).
// attn_prefill_<kv>_<D> serves prefill over f32 / Q8_0 caches holding every key a query
// sees: one block per (token, head), warps over keys with an online softmax, merged at the
// end (f16 caches use the tiled flash_attn.cu instead, or attn_prefill_chunked_<D>).
//
// llama.cpp's CPU flash attention, which the CPU engine reproduces, takes its one-chunk
// kernel for batches under 64 rows and one-token steps; over an F16 cache it rounds the
// query to F16 and keeps the sum of values in F16, rounded after every key (the CPU
// engine's AttentionNumerics::FlashChunked). With `chunked` set, decode does the same when
// the step's keys make one run on the CPU (positions up to ATT_ONE_RUN: the CPU splits
// longer ones over its threads): attn_decode_<D> (F16) scores the keys over its splits as
// usual, leaves the raw scores in part_o (n_heads x ATT_ONE_RUN) and asks for the values'
// lines in L2, and attn_combine_<D> walks the keys in order, a thread per dimension. So
// does attn_prefill_chunked_<D> for small batches. The same roundings in the same order:
// the two engines differ by the order of the Q.K sums only (f32 sums there would be a
// systematic difference of ~3e-4 relative).
//
// An image span [img_start, img_end) of positions (empty: text only) makes its tokens see
// each other: a query inside it also sees the keys after it up to img_end (Gemma 3's
// bidirectional image attention).

#define ATT_THREADS 128
#define ATT_COMBINE_THREADS 256  // block of attn_combine_<D>, every D
#define ATT_MAX_G 8
#define ATT_MAX_KPS 256
#define ATT_ONE_RUN 256  // positions of a one-token step the CPU sums in one run
// Tuning constants (GEMMA_CUDA_DEFINES may set them, see modules.rs):
#ifndef ATT_KEYS_IN_FLIGHT
#define ATT_KEYS_IN_FLIGHT 4  // keys a warp loads before it scores them
#endif
#ifndef ATT_WALK_AHEAD
#define ATT_WALK_AHEAD 16  // keys whose values are in flight in one_chunk_walk
#endif

static __device__ __forceinline__ float round_f16(float x) { return h2f(f2h(x)); }

// llama.cpp's one-chunk online softmax over an F16 cache takes the keys in order. A key
// of score s after the running maximum m (of the scores before it) has the factors {ms, vs}:
// a new maximum (s > m) scales the value sum by ms = exp(m - s), rounded to F16, and adds
// the key's values times vs = 1; any other key adds its values times vs = exp(s - m) (one
// fused multiply-add, rounded to F16: the CPU engine's f16_accumulator); the sum of weights
// l becomes l ms + vs. The factors depend on the scores alone, so they are computed for all
// keys at once (one_run_factors, piece_factors: m is a running maximum, exact in any order)
// and the walk from key to key is only one_chunk_apply's products and roundings.
static __device__ __forceinline__ float2 one_chunk_factors(float s, float m) {
    return s > m ? make_float2(expf(m - s), 1.0f) : make_float2(1.0f, expf(s - m));
}

// Adds a key with factors f and N of its values v to the value sums acc and the weight sum l.
template <int N>
static __device__ __forceinline__ void one_chunk_apply(float2 f, const float *v, float &l, float *acc) {
    if (f.x != 1.0f) {
#pragma unroll
        for (int e = 0; e < N; ++e) acc[e] = round_f16(__fmul_rn(acc[e], f.x));
    }
#pragma unroll
    for (int e = 0; e < N; ++e) acc[e] = round_f16(fmaf(v[e], f.y, acc[e]));
    l = __fadd_rn(__fmul_rn(l, f.x), f.y);
}

// The maximum of x over the lanes up to this one (inclusive), and over the lanes before it
// (NEG_INF for lane 0).
static __device__ __forceinline__ float2 warp_running_max(float x, int lane) {
#pragma unroll
    for (int o = 1; o < WARP; o <<= 1) {
        const float t = __shfl_sync(0xffffffffu, x, lane >= o ? lane - o : lane);
        if (lane >= o) x = fmaxf(x, t);
    }
    const float before = __shfl_sync(0xffffffffu, x, lane > 0 ? lane - 1 : 0);
    return make_float2(x, lane > 0 ? before : NEG_INF);
}

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

// N consecutive cached values (N in {1, 2, 4, 8}; elem a multiple of N) as floats.
template <int KV, int N>
static __device__ __forceinline__ void load_kv(const void *base, i64 elem, float *f) {
    if constexpr (KV == KV_F16) {
        const u16 *p = (const u16 *) base + elem;
        if constexpr (N == 1) f[0] = h2f(__ldg(p));
        else load_halves<N>(p, f);
    } else if constexpr (KV == KV_F32) {
        const float *p = (const float *) base + elem;
        if constexpr (N >= 4) {
#pragma unroll
            for (int i = 0; i < N; i += 4) {
                const float4 v = __ldg((const float4 *) (p + i));
                f[i] = v.x; f[i + 1] = v.y; f[i + 2] = v.z; f[i + 3] = v.w;
            }
        } else if constexpr (N == 2) {
            const float2 v = __ldg((const float2 *) p);
            f[0] = v.x; f[1] = v.y;
        } else {
            f[0] = __ldg(p);
        }
    } else {  // Q8_0: the N int8 values sit 2-byte aligned in their 34-byte block
        const u8 *blk = (const u8 *) base + (elem / 32) * 34;
        const float d = h2f(load_u16(blk));
        const u8 *q = blk + 2 + elem % 32;
        if constexpr (N >= 4) {
            int w[N / 4];
            load_words_a2<N / 4>(q, w);
#pragma unroll
            for (int i = 0; i < N; ++i) f[i] = __fmul_rn((float) (i8) (w[i / 4] >> (8 * (i % 4))), d);
        } else if constexpr (N == 2) {
            const u16 v = load_u16(q);
            f[0] = __fmul_rn((float) (i8) (v & 0xFF), d);
            f[1] = __fmul_rn((float) (i8) (v >> 8), d);
        } else {
            f[0] = __fmul_rn((float) __ldg((const i8 *) q), d);
        }
    }
}

// The rows of positions p0, p0 + stride, ... (ATT_KEYS_IN_FLIGHT of them; one at or past
// `end` loads p0's instead) of KV head hk in `cache` (position p in slot p % n_slots), this
// lane's EPL values of each: every load is issued before any is used.
template <int KV, int D, int EPL>
static __device__ __forceinline__ void load_in_flight(const void *cache, int p0, int stride, int end, int n_slots,
                                                      int n_kv, int hk, int lane,
                                                      float (&f)[ATT_KEYS_IN_FLIGHT][EPL]) {
#pragma unroll
    for (int u = 0; u < ATT_KEYS_IN_FLIGHT; ++u) {
        const int p = p0 + u * stride < end ? p0 + u * stride : p0;
        load_kv<KV, EPL>(cache, ((p % n_slots) * n_kv + hk) * D + lane * EPL, f[u]);
    }
}

// The dot product of a head's query and key, EPL values of each in every lane of the warp.
template <int EPL>
static __device__ __forceinline__ float warp_dot(const float *q, const float *k) {
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < EPL; ++e) dot += q[e] * k[e];
    return warp_sum(dot);
}

// Asks for the F16 value row of position p (KV head hk) in L2, from the lanes of a warp
// that each hold EPL of its values (one lane per 128-byte line).
template <int D, int EPL>
static __device__ __forceinline__ void prefetch_value_row(const void *vc, int p, int n_slots, int n_kv, int hk,
                                                          int lane) {
    if (lane * EPL % 64 == 0) prefetch_l2((const u16 *) vc + ((i64) (p % n_slots) * n_kv + hk) * D + lane * EPL);
}

// The query as the CPU backend sees it over a Q8_0 cache: quantized to Q8_0 blocks of 32
// (d = amax / 127 rounded to f16, q = round-to-nearest-even(x * 127 / amax)), then the
// dot products use q * d. v is one value of a 32-block spread over `width` lanes (width
// values per lane in the decode kernel: 1); amax is the block's largest magnitude.
static __device__ __forceinline__ float q8_0_roundtrip(float v, float amax) {
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const int q = max(-128, min(127, __float2int_rn(v * id)));
    return __fmul_rn((float) q, h2f(f2h(amax / 127.0f)));
}

// Writes a split's partial results: this thread's DPT value sums of every query head of KV
// head hk, and (thread 0) each head's running maximum m and sum l.
template <int D, int DPT>
static __device__ __forceinline__ void store_partials(const float (&acc)[ATT_MAX_G][DPT], const float *m,
                                                      const float *l, int G, int hk, int d0, int n_splits,
                                                      int split, float *__restrict__ part_o,
                                                      float2 *__restrict__ part_ml) {
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; ++g) {
        if (g < G) {
            const int h = hk * G + g;
#pragma unroll
            for (int e = 0; e < DPT; ++e) part_o[((i64) h * n_splits + split) * D + d0 + e] = acc[g][e];
            if (threadIdx.x == 0) part_ml[h * n_splits + split] = make_float2(m[g], l[g]);
        }
    }
}

// DPT (1 or 2) F16 values from p (DPT-aligned), as they are.
template <int DPT>
static __device__ __forceinline__ u32 load_raw_halves(const u16 *p) {
    if constexpr (DPT == 2) return __ldg((const u32 *) p);
    else return __ldg(p);
}

// The keys 0 .. n - 1 of one run in order, as one_chunk_apply, for G <= MAXG query heads of
// one KV head: key i has factors w[g][i] for head g and its DPT values at
// v + ((first + i) % n_slots) * stride, which every head takes. The values of the next
// ATT_WALK_AHEAD keys are in flight while one is added (kept as F16 bits, converted where
// used, so no load is waited for early).
template <int DPT, int MAXG>
static __device__ __forceinline__ void one_chunk_walk(const float2 (*w)[ATT_MAX_KPS], int G, int n, const u16 *v,
                                                      int first, int n_slots, int stride, float *l,
                                                      float (*acc)[DPT]) {
    // The keys are loaded in order: `slot` is the next one's.
    int slot = first % n_slots;
    u32 raw[ATT_WALK_AHEAD];
#pragma unroll
    for (int u = 0; u < ATT_WALK_AHEAD; ++u) {
        raw[u] = u < n ? load_raw_halves<DPT>(v + (i64) slot * stride) : 0u;
        slot = slot + 1 == n_slots ? 0 : slot + 1;
    }
    for (int i0 = 0; i0 < n; i0 += ATT_WALK_AHEAD) {
#pragma unroll
        for (int u = 0; u < ATT_WALK_AHEAD; ++u) {
            const int i = i0 + u;
            if (i < n) {
                float vf[DPT];
#pragma unroll
                for (int e = 0; e < DPT; ++e) vf[e] = h2f((u16) (raw[u] >> (16 * e)));
#pragma unroll
                for (int g = 0; g < MAXG; ++g)
                    if (g < G) one_chunk_apply<DPT>(w[g][i], vf, l[g], acc[g]);
                if (i + ATT_WALK_AHEAD < n) {
                    raw[u] = load_raw_halves<DPT>(v + (i64) slot * stride);
                    slot = slot + 1 == n_slots ? 0 : slot + 1;
                }
            }
        }
    }
}

// q: n_heads x D floats; part_o: n_heads x n_splits x D (a one-run step: the raw scores,
// n_heads x ATT_ONE_RUN); part_ml: n_heads x n_splits {m, l}. grid: (n_kv, n_splits),
// block: 128. n_heads / n_kv <= 8; n_splits x ATT_MAX_KPS covers every live key.
template <int D, int KV>
static __device__ __forceinline__ void attn_decode(const float *__restrict__ q, const void *__restrict__ kc,
                                                   const void *__restrict__ vc, int n_heads, int n_kv, int n_slots,
                                                   const i32 *__restrict__ pos_ptr, int window, float scale,
                                                   int chunked, float *__restrict__ part_o,
                                                   float2 *__restrict__ part_ml) {
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
    // One run as the CPU's: the splits only score the keys (attn_combine walks them).
    const bool one_run = KV == KV_F16 && chunked && n_all <= ATT_ONE_RUN;
    const int per_split = ((n_live + n_splits - 1) / n_splits + WARP - 1) / WARP * WARP;
    const int kps = min(ATT_MAX_KPS, max(WARP, per_split));
    const int i0 = split * kps, i1 = min(i0 + kps, n_live);
    if (i0 >= i1) {
        if (threadIdx.x < G) part_ml[(hk * G + threadIdx.x) * n_splits + split] = make_float2(NEG_INF, 0.0f);
        return;
    }
    for (int idx = threadIdx.x; idx < G * D; idx += ATT_THREADS) sq[idx / D][idx % D] = q[(i64) hk * G * D + idx] * scale;
    if (one_run)  // the query as the CPU's one-chunk kernel takes it: rounded to F16
        for (int idx = threadIdx.x; idx < G * D; idx += ATT_THREADS)
            sq[idx / D][idx % D] = round_f16(sq[idx / D][idx % D]);
    __syncthreads();
    if constexpr (KV == KV_Q8_0) {  // one warp per 32-block of the query
        for (int b = warp; b < G * D / 32; b += ATT_THREADS / WARP) {
            float *p = &sq[b / (D / 32)][32 * (b % (D / 32)) + lane];
            const float v = *p;
            *p = q8_0_roundtrip(v, warp_max(fabsf(v)));
        }
        __syncthreads();
    }

    // Scores: one warp per key (keys w, w + 4, ... of the split for warp w), lanes across the
    // head dimension; ATT_KEYS_IN_FLIGHT keys' loads are issued before their dot products.
    constexpr int NW = ATT_THREADS / WARP;
    for (int i = i0 + warp; i < i1; i += ATT_KEYS_IN_FLIGHT * NW) {
        float kf[ATT_KEYS_IN_FLIGHT][EPL];
        load_in_flight<KV, D, EPL>(kc, start + i, NW, start + i1, n_slots, n_kv, hk, lane, kf);
#pragma unroll
        for (int u = 0; u < ATT_KEYS_IN_FLIGHT; ++u) {
            if (i + u * NW >= i1) break;  // uniform over the warp
            const int key = i + u * NW;
            for (int g = 0; g < G; ++g) {
                const float dot = warp_dot<EPL>(&sq[g][lane * EPL], kf[u]);
                if (lane != 0) continue;
                if (one_run) part_o[(hk * G + g) * ATT_ONE_RUN + key] = dot;
                else sp[g][key - i0] = dot;
            }
            // attn_combine walks this key's values next: their lines on the way to L2 now.
            if (one_run) prefetch_value_row<D, EPL>(vc, start + key, n_slots, n_kv, hk, lane);
        }
    }
    if (one_run) return;
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
#pragma unroll 16
    for (int i = i0; i < i1; ++i) {
        const i64 slot = (start + i) % n_slots;
        float vf[DPT];
        load_kv<KV, DPT>(vc, (slot * n_kv + hk) * D + d0, vf);
#pragma unroll
        for (int g = 0; g < ATT_MAX_G; ++g) {
            if (g < G) {
                const float p = sp[g][i - i0];
#pragma unroll
                for (int e = 0; e < DPT; ++e) acc[g][e] += p * vf[e];
            }
        }
    }
    store_partials<D, DPT>(acc, sm, sl, G, hk, d0, n_splits, split, part_o, part_ml);
}

// This thread's value of head blockIdx.x (threads below D) from the splits of attn_decode:
// the block first finds the largest running max over the splits and how many splits hold
// keys (they fill a prefix); then groups of D / 4 threads (4 dimensions each, 16-byte loads)
// take every NG-th of those splits, so a long context's hundreds of splits are read NG at a
// time, not one after another; the groups' sums meet in shared memory.
template <int D>
static __device__ __forceinline__ float merge_splits(const float *__restrict__ part_o,
                                                     const float2 *__restrict__ part_ml, int n_splits) {
    constexpr int DV = D / 4;                        // threads per group
    constexpr int NG = ATT_COMBINE_THREADS / DV;     // groups over the splits
    __shared__ float sred[WARP];
    __shared__ float4 so[NG][DV];
    __shared__ float sl[NG];
    const int h = blockIdx.x;
    const float2 *ml = part_ml + (i64) h * n_splits;
    float m = NEG_INF, used = 0.0f;
    for (int s = threadIdx.x; s < n_splits; s += ATT_COMBINE_THREADS) {
        const float2 v = ml[s];
        if (v.y > 0.0f) {
            m = fmaxf(m, v.x);
            used = (float) (s + 1);  // exact: n_splits < 2^24
        }
    }
    m = block_max(m, sred);
    const int n_used = (int) block_max(used, sred);

    const int g = threadIdx.x / DV, j = threadIdx.x % DV;
    const float4 *po = (const float4 *) (part_o + (i64) h * n_splits * D) + j;
    float4 o = {0.0f, 0.0f, 0.0f, 0.0f};
    float l = 0.0f;
#pragma unroll 4
    for (int s = g; s < n_used; s += NG) {
        const float2 v = ml[s];
        if (v.y > 0.0f) {
            const float f = expf(v.x - m);
            const float4 x = po[(i64) s * DV];
            l += v.y * f;
            o.x += x.x * f;
            o.y += x.y * f;
            o.z += x.z * f;
            o.w += x.w * f;
        }
    }
    so[g][j] = o;
    if (j == 0) sl[g] = l;
    __syncthreads();
    if (threadIdx.x >= D) return 0.0f;
    float lt = 0.0f, ot = 0.0f;
#pragma unroll
    for (int k = 0; k < NG; ++k) {
        lt += sl[k];
        ot += ((const float *) so[k])[threadIdx.x];
    }
    return __fmul_rn(ot, 1.0f / lt);  // as the CPU merges runs: acc * (1 / sum)
}

// The factors (one_chunk_factors) of the n keys of a run with scores s into w, a thread per
// key (every thread of the ATT_COMBINE_THREADS == ATT_ONE_RUN calls it): key i's running
// maximum from a warp scan of the scores and the warps' maxima before it.
static __device__ __forceinline__ void one_run_factors(const float *s, int n, float2 *w) {
    static_assert(ATT_COMBINE_THREADS == ATT_ONE_RUN, "a thread per key of a run");
    static_assert(ATT_ONE_RUN % ATT_WALK_AHEAD == 0, "walk_one_run reads whole groups of factors");
    __shared__ float warp_max_s[ATT_COMBINE_THREADS / WARP];
    const int i = threadIdx.x, lane = i % WARP, warp = i / WARP;
    const float si = i < n ? s[i] : NEG_INF;
    const float2 run = warp_running_max(si, lane);
    if (lane == WARP - 1) warp_max_s[warp] = run.x;
    __syncthreads();
    float m = run.y;
    for (int k = 0; k < warp; ++k) m = fmaxf(m, warp_max_s[k]);
    if (i < n) w[i] = one_chunk_factors(si, m);
    __syncthreads();
}

// This thread's value of head blockIdx.x (threads below D) for a one-run step: the n_all
// positions' last n_live keys (scores: attn_decode's raw scores of the head) walked in
// order as the CPU's one-chunk kernel, one dimension per thread, with one_run_factors'
// factors. (With the running maximum and an exp on the chain from key to key, this walk
// took 61 us per 12B layer at position 256 on an H200, against 11.5 us for f32 splits:
// cuda_bench, run 4.)
template <int D>
static __device__ __forceinline__ float walk_one_run(const float *__restrict__ scores, const void *__restrict__ vc,
                                                     int n_kv, int n_slots, int n_all, int window) {
    __shared__ float ss[ATT_ONE_RUN];
    __shared__ float2 sw[ATT_ONE_RUN];
    const int h = blockIdx.x, hk = h / (gridDim.x / n_kv);
    const int n_live = window > 0 ? min(n_all, window) : n_all;
    for (int i = threadIdx.x; i < n_live; i += ATT_COMBINE_THREADS) ss[i] = scores[(i64) h * ATT_ONE_RUN + i];
    __syncthreads();
    one_run_factors(ss, n_live, sw);
    if (threadIdx.x >= D) return 0.0f;
    const u16 *v = (const u16 *) vc + (i64) hk * D + threadIdx.x;
    const int stride = n_kv * D;
    // The values of the next ATT_WALK_AHEAD keys in flight, as one_chunk_walk.
    int slot = (n_all - n_live) % n_slots;
    u16 raw[ATT_WALK_AHEAD];
#pragma unroll
    for (int u = 0; u < ATT_WALK_AHEAD; ++u) {
        raw[u] = u < n_live ? __ldg(v + (i64) slot * stride) : (u16) 0;
        slot = slot + 1 == n_slots ? 0 : slot + 1;
    }
    float acc = 0.0f, l = 0.0f;
    for (int i0 = 0; i0 < n_live; i0 += ATT_WALK_AHEAD) {
        // These keys' factors first, so that no shared-memory read lies on the chain
        // (i0 + ATT_WALK_AHEAD <= ATT_ONE_RUN; those past n_live are not used).
        float2 f[ATT_WALK_AHEAD];
#pragma unroll
        for (int u = 0; u < ATT_WALK_AHEAD; ++u) f[u] = sw[i0 + u];
#pragma unroll
        for (int u = 0; u < ATT_WALK_AHEAD; ++u) {
            const int i = i0 + u;
            if (i < n_live) {
                const float vf = h2f(raw[u]);
                one_chunk_apply<1>(f[u], &vf, l, &acc);
                if (i + ATT_WALK_AHEAD < n_live) {
                    raw[u] = __ldg(v + (i64) slot * stride);
                    slot = slot + 1 == n_slots ? 0 : slot + 1;
                }
            }
        }
    }
    return __fmul_rn(acc, 1.0f / l);
}

// out: n_heads x D. grid: n_heads, block: ATT_COMBINE_THREADS. The splits of attn_decode
// merged, or (chunked, F16 cache: vc, n_kv, n_slots, the position at pos_ptr and window as
// attn_decode's) a one-run step's keys walked. With fmt >= 0 (ACT_*; D == 256 only) the row
// is also quantized for the output projection: head h is 256-block h of qs / ds (the values
// quantize_q8_1 gives for out).
template <int D>
static __device__ __forceinline__ void attn_combine(const float *__restrict__ part_o, const float2 *__restrict__ part_ml,
                                                    int n_splits, float *__restrict__ out, int fmt,
                                                    i8 *__restrict__ qs, float2 *__restrict__ ds,
                                                    const void *__restrict__ vc, int n_kv, int n_slots,
                                                    const i32 *__restrict__ pos_ptr, int window, int chunked) {
    const int n_all = chunked ? pos_ptr[0] + 1 : 0;
    const float v = chunked && n_all <= ATT_ONE_RUN ? walk_one_run<D>(part_o, vc, n_kv, n_slots, n_all, window)
                                                    : merge_splits<D>(part_o, part_ml, n_splits);
    if (threadIdx.x >= D) return;  // D < 256: no quantization follows
    out[(i64) blockIdx.x * D + threadIdx.x] = v;
    if (D == 256 && fmt >= 0) {  // uniform over the block
        __shared__ float smax[8];
        quantize_act256(v, fmt, qs + (i64) blockIdx.x * 256, ds + (i64) blockIdx.x * (256 / QK8), smax);
    }
}

// The key positions [x, y) a prefill query at position qp sees: causal, within the window
// (0: all), and up to img_end inside the image span [img_start, img_end).
static __device__ __forceinline__ int2 visible_keys(int qp, int window, int img_start, int img_end) {
    const int lo = window > 0 ? max(0, qp - window + 1) : 0;
    return make_int2(lo, qp >= img_start && qp < img_end ? max(qp + 1, img_end) : qp + 1);
}

// Prefill over an f32 / Q8_0 cache that holds every visible key: token t (position
// qp = p0 + t) of head h attends to positions [lo, hi), lo = max(0, qp - window + 1)
// (0 for window 0), hi = qp + 1, or max(qp + 1, img_end) when img_start <= qp < img_end;
// position p in slot p % n_slots. q, out: n x n_heads x D. grid: (n, n_heads), block: 128.
template <int D, int KV>
static __device__ __forceinline__ void attn_prefill_rows(const float *__restrict__ q, const void *__restrict__ kc,
                                                         const void *__restrict__ vc, int n_heads, int n_kv,
                                                         int n_slots, int p0, int window, int img_start,
                                                         int img_end, float scale, float *__restrict__ out) {
    constexpr int EPL = D / WARP;
    constexpr int NW = ATT_THREADS / WARP;
    const int t = blockIdx.x, h = blockIdx.y;
    const int hk = h / (n_heads / n_kv);
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int qp = p0 + t;
    const int2 keys = visible_keys(qp, window, img_start, img_end);
    const int lo = keys.x, hi = keys.y;
    float qf[EPL], o[EPL];
#pragma unroll
    for (int e = 0; e < EPL; ++e) {
        qf[e] = q[((i64) t * n_heads + h) * D + lane * EPL + e] * scale;
        o[e] = 0.0f;
    }
    if constexpr (KV == KV_Q8_0) {  // a 32-block spans 32 / EPL lanes
        float amax = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; ++e) amax = fmaxf(amax, fabsf(qf[e]));
#pragma unroll
        for (int off = 1; off < 32 / EPL; off <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
#pragma unroll
        for (int e = 0; e < EPL; ++e) qf[e] = q8_0_roundtrip(qf[e], amax);
    }
    // Warp w takes keys lo + w, lo + w + NW, ... in order, ATT_KEYS_IN_FLIGHT of them at a
    // time: their K and V loads are all issued before the first is used (a key past the
    // range loads the round's first key and is dropped).
    float m = NEG_INF, l = 0.0f;
    for (int kp0 = lo + warp; kp0 < hi; kp0 += ATT_KEYS_IN_FLIGHT * NW) {
        float kf[ATT_KEYS_IN_FLIGHT][EPL], vf[ATT_KEYS_IN_FLIGHT][EPL];
        load_in_flight<KV, D, EPL>(kc, kp0, NW, hi, n_slots, n_kv, hk, lane, kf);
        load_in_flight<KV, D, EPL>(vc, kp0, NW, hi, n_slots, n_kv, hk, lane, vf);
#pragma unroll
        for (int u = 0; u < ATT_KEYS_IN_FLIGHT; ++u) {
            if (kp0 + u * NW >= hi) break;  // uniform over the warp
            const float dot = warp_dot<EPL>(qf, kf[u]);
            const float m_new = fmaxf(m, dot);
            const float corr = expf(m - m_new), p = expf(dot - m_new);
            l = l * corr + p;
#pragma unroll
            for (int e = 0; e < EPL; ++e) o[e] = o[e] * corr + p * vf[u][e];
            m = m_new;
        }
    }
    __shared__ float sml[NW][2];
    __shared__ float so[NW][D];
    if (lane == 0) {
        sml[warp][0] = m;
        sml[warp][1] = l;
    }
#pragma unroll
    for (int e = 0; e < EPL; ++e) so[warp][lane * EPL + e] = o[e];
    __syncthreads();
    float mt = NEG_INF;
#pragma unroll
    for (int w = 0; w < NW; ++w)
        if (sml[w][1] > 0.0f) mt = fmaxf(mt, sml[w][0]);
    for (int d = threadIdx.x; d < D; d += ATT_THREADS) {
        float lt = 0.0f, ot = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) {
            if (sml[w][1] > 0.0f) {
                const float f = expf(sml[w][0] - mt);
                lt += sml[w][1] * f;
                ot += so[w][d] * f;
            }
        }
        out[((i64) t * n_heads + h) * D + d] = ot / lt;
    }
}

// The factors (one_chunk_factors) of a piece of n <= ATT_MAX_KPS keys for each of G heads:
// key i of head g has score s[g][i] and factors w[g][i]; m[g]: the running maximum of the
// scores before the piece, then with the piece's (uniform over the block). Each of the
// ATT_THREADS threads takes two neighbouring keys; a warp scan of their maxima and the
// warps' maxima before it give each key's running maximum.
static __device__ __forceinline__ void piece_factors(const float (*s)[ATT_MAX_KPS], int G, int n, float *m,
                                                     float2 (*w)[ATT_MAX_KPS]) {
    static_assert(2 * ATT_THREADS == ATT_MAX_KPS, "two keys per thread");
    __shared__ float warp_max_s[ATT_THREADS / WARP];
    const int k = 2 * threadIdx.x, lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; ++g) {
        if (g >= G) break;  // uniform over the block
        const float s0 = k < n ? s[g][k] : NEG_INF, s1 = k + 1 < n ? s[g][k + 1] : NEG_INF;
        const float2 run = warp_running_max(fmaxf(s0, s1), lane);
        if (lane == WARP - 1) warp_max_s[warp] = run.x;
        __syncthreads();
        float before = fmaxf(m[g], run.y), all = m[g];
#pragma unroll
        for (int j = 0; j < ATT_THREADS / WARP; ++j) {
            if (j < warp) before = fmaxf(before, warp_max_s[j]);
            all = fmaxf(all, warp_max_s[j]);
        }
        if (k < n) w[g][k] = one_chunk_factors(s0, before);
        if (k + 1 < n) w[g][k + 1] = one_chunk_factors(s1, fmaxf(before, s0));
        m[g] = all;
        __syncthreads();  // warp_max_s is rewritten for the next head
    }
}

// Prefill of a batch under 64 rows over an F16 cache as llama.cpp's one-chunk CPU kernel
// (see one_chunk_factors; visible keys as attn_prefill_rows). One block per (token, KV head)
// takes the G query heads of that KV head, so each key and value is read once for all of
// them: the keys go by in pieces of ATT_MAX_KPS, scored by the warps (queries rounded to
// F16) into shared memory, their factors computed (piece_factors), then walked in order by
// each thread for its DPT dimensions of every head. q, out: n x n_heads x D. grid: (n, n_kv),
// block: 128.
template <int D>
static __device__ __forceinline__ void attn_prefill_chunked(const float *__restrict__ q, const void *__restrict__ kc,
                                                            const void *__restrict__ vc, int n_heads, int n_kv,
                                                            int n_slots, int p0, int window, int img_start,
                                                            int img_end, float scale, float *__restrict__ out) {
    constexpr int EPL = D / WARP;
    constexpr int NW = ATT_THREADS / WARP;
    constexpr int DPT = D >= ATT_THREADS ? D / ATT_THREADS : 1;
    __shared__ float sq[ATT_MAX_G][D];
    __shared__ float sp[ATT_MAX_G][ATT_MAX_KPS];
    __shared__ float2 sw[ATT_MAX_G][ATT_MAX_KPS];
    const int t = blockIdx.x, hk = blockIdx.y;
    const int G = n_heads / n_kv;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int qp = p0 + t;
    const int2 keys = visible_keys(qp, window, img_start, img_end);
    const int lo = keys.x, hi = keys.y;
    const float *qt = q + ((i64) t * n_heads + hk * G) * D;  // the block's G heads, one after another
    for (int idx = threadIdx.x; idx < G * D; idx += ATT_THREADS) sq[idx / D][idx % D] = round_f16(qt[idx] * scale);
    __syncthreads();
    const int d0 = threadIdx.x * DPT;
    float m[ATT_MAX_G], l[ATT_MAX_G], acc[ATT_MAX_G][DPT];
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; ++g) {
        m[g] = NEG_INF;
        l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < DPT; ++e) acc[g][e] = 0.0f;
    }
    for (int c0 = lo; c0 < hi; c0 += ATT_MAX_KPS) {
        const int c1 = min(c0 + ATT_MAX_KPS, hi);
        for (int kp0 = c0 + warp; kp0 < c1; kp0 += ATT_KEYS_IN_FLIGHT * NW) {
            float kf[ATT_KEYS_IN_FLIGHT][EPL];
            load_in_flight<KV_F16, D, EPL>(kc, kp0, NW, c1, n_slots, n_kv, hk, lane, kf);
#pragma unroll
            for (int u = 0; u < ATT_KEYS_IN_FLIGHT; ++u) {
                const int key = kp0 + u * NW;
                if (key >= c1) break;  // uniform over the warp
                for (int g = 0; g < G; ++g) {
                    const float dot = warp_dot<EPL>(&sq[g][lane * EPL], kf[u]);
                    if (lane == 0) sp[g][key - c0] = dot;
                }
                prefetch_value_row<D, EPL>(vc, key, n_slots, n_kv, hk, lane);  // walked next
            }
        }
        __syncthreads();
        piece_factors(sp, G, c1 - c0, m, sw);
        if (d0 < D)
            one_chunk_walk<DPT, ATT_MAX_G>(sw, G, c1 - c0, (const u16 *) vc + (i64) hk * D + d0, c0, n_slots, n_kv * D,
                                           l, acc);
        __syncthreads();
    }
    if (d0 >= D) return;
#pragma unroll
    for (int g = 0; g < ATT_MAX_G; ++g) {
        if (g < G) {
            const float inv = l[g] == 0.0f ? 0.0f : 1.0f / l[g];
#pragma unroll
            for (int e = 0; e < DPT; ++e) out[((i64) t * n_heads + hk * G + g) * D + d0 + e] = __fmul_rn(acc[g][e], inv);
        }
    }
}

#define ATTN_DECODE(NAME, D, KV)                                                                               \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) NAME(                                           \
        const float *q, const void *kc, const void *vc, int n_heads, int n_kv, int n_slots, const i32 *pos_ptr, \
        int window, float scale, int chunked, float *part_o, float2 *part_ml) {                               \
        pdl_entry();                                                                                           \
        attn_decode<D, KV>(q, kc, vc, n_heads, n_kv, n_slots, pos_ptr, window, scale, chunked, part_o, part_ml); \
    }

#define ATTN_PREFILL(NAME, D, KV)                                                                              \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) NAME(                                           \
        const float *q, const void *kc, const void *vc, int n_heads, int n_kv, int n_slots, int p0, int window, \
        int img_start, int img_end, float scale, float *out) {                                                 \
        pdl_entry();                                                                                          \
        attn_prefill_rows<D, KV>(q, kc, vc, n_heads, n_kv, n_slots, p0, window, img_start, img_end, scale,    \
                                 out);                                                                         \
    }

#define ATTN_KERNELS(D)                                                                                        \
    ATTN_DECODE(attn_decode_##D, D, KV_F16)                                                                    \
    ATTN_DECODE(attn_decode_f32_##D, D, KV_F32)                                                                \
    ATTN_DECODE(attn_decode_q8_0_##D, D, KV_Q8_0)                                                              \
    ATTN_PREFILL(attn_prefill_f32_##D, D, KV_F32)                                                              \
    ATTN_PREFILL(attn_prefill_q8_0_##D, D, KV_Q8_0)                                                            \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS)                                                 \
        attn_prefill_chunked_##D(const float *q, const void *kc, const void *vc, int n_heads, int n_kv,       \
                                 int n_slots, int p0, int window, int img_start, int img_end, float scale,    \
                                 float *out) {                                                                 \
        pdl_entry();                                                                                           \
        attn_prefill_chunked<D>(q, kc, vc, n_heads, n_kv, n_slots, p0, window, img_start, img_end, scale, out); \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(ATT_COMBINE_THREADS)                                         \
        attn_combine_##D(const float *part_o, const float2 *part_ml, int n_splits, float *out, int fmt, i8 *qs, \
                         float2 *ds, const void *vc, int n_kv, int n_slots, const i32 *pos_ptr, int window,    \
                         int chunked) {                                                                        \
        pdl_entry();                                                                                           \
        attn_combine<D>(part_o, part_ml, n_splits, out, fmt, qs, ds, vc, n_kv, n_slots, pos_ptr, window, chunked); \
    }

ATTN_KERNELS(64)
ATTN_KERNELS(128)
ATTN_KERNELS(256)
