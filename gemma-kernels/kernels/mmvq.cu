// Quantized matrix x vector products for decode (1..8 tokens): y[c * rows + r] =
// dot(W row r, x column c), with x quantized to q8_1 (see common.cuh) and integer dot
// products (dp4a), in the structure of ggml-cuda's mmvq: one block of 128 threads per
// weight row; every thread takes "tasks" (a fixed slice of one weight block) in order, so a
// warp reads consecutive bytes of the row; a task's weights are loaded once and dotted with
// every token; partial sums meet in a warp + shared-memory reduction. (One warp per row,
// tried on an H200, was slower: Q4_K 15360x3840 23.2 us against 18.3 us.)
//
// Per task (TPB tasks per block):
//   Q4_0, Q5_0: 2 tasks of 8 qs bytes (16 weights); Q8_0: 2 tasks of 16 weights;
//   Q4_K, Q5_K: 8 tasks of 16 qs bytes (32 weights, two sub-blocks), 16-byte loads;
//   Q6_K: 8 tasks of 32 weights (8 from each quarter of one half).
//   Q4_1, Q5_1, IQ4_NL: like Q4_0 (2 tasks of 16 weights);
//   Q2_K, Q3_K: 8 tasks of 32 weights (one activation block, two sub-blocks of 16);
//   IQ4_XS: 8 tasks, one block of 32 each.
// Offsets (-8, -16 and the K-quant mins) use s = d * sum(q) of the activation block; a
// task adds its 1/TPB share (Q4_0, Q5_0) or its half (the two tasks of a K-quant sub-block
// pair), so the full term is added exactly once per block.

#define MMVQ_THREADS 128
#define LO4 0x0F0F0F0F

// Bit i (i < 4) of x moved to bit 4 of byte i: the fifth bit of four 5-bit values.
static __device__ __forceinline__ int bits4_to_b4(u32 x) {
    return (int) (((x & 1u) << 4) | ((x & 2u) << 11) | ((x & 4u) << 18) | ((x & 8u) << 25));
}

// Byte i of a 32-bit word (i may be a run-time value).
static __device__ __forceinline__ int byte_of(int w, int i) {
    return (w >> (8 * i)) & 0xFF;
}

// Scale and min of sub-block j of a K-quant block from the 12 scale bytes held in three
// words (bytes 0-3, 4-7, 8-11); same packing as scale_min_k4.
static __device__ __forceinline__ void scale_min_words(int j, int s0, int s1, int s2, int *sc, int *m) {
    if (j < 4) {
        *sc = byte_of(s0, j) & 63;
        *m = byte_of(s1, j) & 63;
    } else {
        const int jj = j - 4;
        *sc = (byte_of(s2, jj) & 0xF) | ((byte_of(s0, jj) >> 6) << 4);
        *m = (byte_of(s2, jj) >> 4) | ((byte_of(s1, jj) >> 6) << 4);
    }
}

// Activations of column c for the weight block starting at element e0.
struct ActView {
    const i8 *qs;
    const float2 *ds;
    int k_pad;
    __device__ __forceinline__ const i8 *q(int c, int e0) const { return qs + (i64) c * k_pad + e0; }
    __device__ __forceinline__ float2 d(int c, int e0) const { return ds[(i64) c * (k_pad / QK8) + e0 / QK8]; }
};

// ---------------------------------------------------------------------------------

template <int NC>
static __device__ __forceinline__ void task_q4_0(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const block_q4_0 *b = (const block_q4_0 *) blk;
    const int v0 = load_i32_a2(b->qs + 8 * t);
    const int v1 = load_i32_a2(b->qs + 8 * t + 4);
    const float d = h2f(load_u16(blk));
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int2 ul = load_i2(a.q(c, e0) + 8 * t);
        const int2 uh = load_i2(a.q(c, e0) + 16 + 8 * t);
        int s = dp4a(v0 & LO4, ul.x, 0);
        s = dp4a(v1 & LO4, ul.y, s);
        s = dp4a((v0 >> 4) & LO4, uh.x, s);
        s = dp4a((v1 >> 4) & LO4, uh.y, s);
        const float2 ds = a.d(c, e0);
        acc[c] += d * (ds.x * (float) s - 4.0f * ds.y);  // -8 * s / 2 tasks
    }
}

template <int NC>
static __device__ __forceinline__ void task_q5_0(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const block_q5_0 *b = (const block_q5_0 *) blk;
    const u32 qh = (u32) load_i32_a2(b->qh);
    const int v0 = load_i32_a2(b->qs + 8 * t);
    const int v1 = load_i32_a2(b->qs + 8 * t + 4);
    const int l0 = (v0 & LO4) | bits4_to_b4(qh >> (8 * t));
    const int l1 = (v1 & LO4) | bits4_to_b4(qh >> (8 * t + 4));
    const int h0 = ((v0 >> 4) & LO4) | bits4_to_b4(qh >> (16 + 8 * t));
    const int h1 = ((v1 >> 4) & LO4) | bits4_to_b4(qh >> (20 + 8 * t));
    const float d = h2f(load_u16(blk));
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int2 ul = load_i2(a.q(c, e0) + 8 * t);
        const int2 uh = load_i2(a.q(c, e0) + 16 + 8 * t);
        int s = dp4a(l0, ul.x, 0);
        s = dp4a(l1, ul.y, s);
        s = dp4a(h0, uh.x, s);
        s = dp4a(h1, uh.y, s);
        const float2 ds = a.d(c, e0);
        acc[c] += d * (ds.x * (float) s - 8.0f * ds.y);  // -16 * s / 2 tasks
    }
}

template <int NC>
static __device__ __forceinline__ void task_q8_0(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const block_q8_0 *b = (const block_q8_0 *) blk;
    const u8 *q = (const u8 *) b->qs + 16 * t;
    const int v0 = load_i32_a2(q), v1 = load_i32_a2(q + 4), v2 = load_i32_a2(q + 8), v3 = load_i32_a2(q + 12);
    const float d = h2f(load_u16(blk));
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int4 u = load_i4(a.q(c, e0) + 16 * t);
        int s = dp4a(v0, u.x, 0);
        s = dp4a(v1, u.y, s);
        s = dp4a(v2, u.z, s);
        s = dp4a(v3, u.w, s);
        acc[c] += d * a.d(c, e0).x * (float) s;
    }
}

// Q4_K / Q5_K: task t covers chunk c = t / 2 (64 weights), half h = t % 2: qs bytes
// [32c + 16h, +16) hold weights 64c + 16h + i (low nibbles, sub-block 2c) and
// 64c + 32 + 16h + i (high nibbles, sub-block 2c + 1).
template <int NC, bool Q5>
static __device__ __forceinline__ void task_qk45(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const int ch = t >> 1, h = t & 1;
    const int4 hdr = load_i4(blk);  // d, dmin, scales[12]
    const int qs_off = Q5 ? 48 : 16;
    const int4 v = load_i4(blk + qs_off + 32 * ch + 16 * h);
    int lo[4] = {v.x & LO4, v.y & LO4, v.z & LO4, v.w & LO4};
    int hi[4] = {(v.x >> 4) & LO4, (v.y >> 4) & LO4, (v.z >> 4) & LO4, (v.w >> 4) & LO4};
    if (Q5) {
        const int4 qh = load_i4(blk + 16 + 16 * h);
        const int qhw[4] = {qh.x, qh.y, qh.z, qh.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            lo[i] |= ((qhw[i] >> (2 * ch)) & 0x01010101) << 4;
            hi[i] |= ((qhw[i] >> (2 * ch + 1)) & 0x01010101) << 4;
        }
    }
    int sc_a, m_a, sc_b, m_b;
    scale_min_words(2 * ch, hdr.y, hdr.z, hdr.w, &sc_a, &m_a);
    scale_min_words(2 * ch + 1, hdr.y, hdr.z, hdr.w, &sc_b, &m_b);
    const float d = h2f((u16) (hdr.x & 0xFFFF));
    const float dmin = h2f((u16) ((u32) hdr.x >> 16));
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const i8 *q = a.q(c, e0);
        const int4 ua = load_i4(q + 64 * ch + 16 * h);
        const int4 ub = load_i4(q + 64 * ch + 32 + 16 * h);
        int sa = dp4a(lo[0], ua.x, 0);
        sa = dp4a(lo[1], ua.y, sa);
        sa = dp4a(lo[2], ua.z, sa);
        sa = dp4a(lo[3], ua.w, sa);
        int sb = dp4a(hi[0], ub.x, 0);
        sb = dp4a(hi[1], ub.y, sb);
        sb = dp4a(hi[2], ub.z, sb);
        sb = dp4a(hi[3], ub.w, sb);
        const float2 da = a.d(c, e0 + 64 * ch);
        const float2 db = a.d(c, e0 + 64 * ch + 32);
        acc[c] += d * ((float) sc_a * da.x * (float) sa + (float) sc_b * db.x * (float) sb)
                - 0.5f * dmin * ((float) m_a * da.y + (float) m_b * db.y);
    }
}

// Bytes 0..3 hold 6-bit values 0..63; returns them minus 32 as signed bytes.
static __device__ __forceinline__ int sub32_bytes(int v) {
    const int x = v ^ 0x20202020;
    return x | ((x & 0x20202020) * 6);
}

// Q6_K: task t covers half n = t / 4 and l in [l0, l0 + 8), l0 = 8 (t % 4): weights
// 128n + 32k + l for k = 0..3 (each group in its own activation block).
template <int NC>
static __device__ __forceinline__ void task_q6_K(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const block_q6_K *b = (const block_q6_K *) blk;
    const int n = t >> 2, l0 = 8 * (t & 3);
    const u8 *qla = b->ql + 64 * n + l0;
    const u8 *qlb = qla + 32;
    const u8 *qhp = b->qh + 32 * n + l0;
    int q[4][2];
#pragma unroll
    for (int w = 0; w < 2; ++w) {
        const int la = load_i32_a2(qla + 4 * w), lb = load_i32_a2(qlb + 4 * w), hh = load_i32_a2(qhp + 4 * w);
        q[0][w] = sub32_bytes((la & LO4) | ((hh & 0x03030303) << 4));
        q[1][w] = sub32_bytes((lb & LO4) | (((hh >> 2) & 0x03030303) << 4));
        q[2][w] = sub32_bytes(((la >> 4) & LO4) | (((hh >> 4) & 0x03030303) << 4));
        q[3][w] = sub32_bytes(((lb >> 4) & LO4) | (((hh >> 6) & 0x03030303) << 4));
    }
    const int is = l0 / 16;
    float sc[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) sc[k] = (float) __ldg(&b->scales[8 * n + is + 2 * k]);
    const float d = h2f(load_u16((const u8 *) &b->d));
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int eg = e0 + 128 * n + 32 * k;
            const int2 u = load_i2(a.q(c, eg) + l0);
            const int s = dp4a(q[k][1], u.y, dp4a(q[k][0], u.x, 0));
            sum += sc[k] * a.d(c, eg).x * (float) s;
        }
        acc[c] += d * sum;
    }
}

// Q4_1 / Q5_1: unsigned quants plus a minimum m: a task adds half of m * s.
template <int NC, bool Q5>
static __device__ __forceinline__ void task_q45_1(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const int qs_off = Q5 ? 8 : 4;
    const int v0 = load_i32_a2(blk + qs_off + 8 * t);
    const int v1 = load_i32_a2(blk + qs_off + 8 * t + 4);
    int l0 = v0 & LO4, l1 = v1 & LO4, h0 = (v0 >> 4) & LO4, h1 = (v1 >> 4) & LO4;
    if (Q5) {
        const u32 qh = (u32) load_i32_a2(blk + 4);
        l0 |= bits4_to_b4(qh >> (8 * t));
        l1 |= bits4_to_b4(qh >> (8 * t + 4));
        h0 |= bits4_to_b4(qh >> (16 + 8 * t));
        h1 |= bits4_to_b4(qh >> (20 + 8 * t));
    }
    const int dm = load_i32_a2(blk);
    const float d = h2f((u16) (dm & 0xFFFF)), m = h2f((u16) ((u32) dm >> 16));
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int2 ul = load_i2(a.q(c, e0) + 8 * t);
        const int2 uh = load_i2(a.q(c, e0) + 16 + 8 * t);
        int s = dp4a(l0, ul.x, 0);
        s = dp4a(l1, ul.y, s);
        s = dp4a(h0, uh.x, s);
        s = dp4a(h1, uh.y, s);
        const float2 ds = a.d(c, e0);
        acc[c] += d * ds.x * (float) s + 0.5f * m * ds.y;
    }
}

template <int NC>
static __device__ __forceinline__ void task_iq4_nl(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const int v0 = load_i32_a2(blk + 2 + 8 * t);
    const int v1 = load_i32_a2(blk + 2 + 8 * t + 4);
    const int l0 = iq4_values4(v0 & LO4), l1 = iq4_values4(v1 & LO4);
    const int h0 = iq4_values4((v0 >> 4) & LO4), h1 = iq4_values4((v1 >> 4) & LO4);
    const float d = h2f(load_u16(blk));
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int2 ul = load_i2(a.q(c, e0) + 8 * t);
        const int2 uh = load_i2(a.q(c, e0) + 16 + 8 * t);
        int s = dp4a(l0, ul.x, 0);
        s = dp4a(l1, ul.y, s);
        s = dp4a(h0, uh.x, s);
        s = dp4a(h1, uh.y, s);
        acc[c] += d * a.d(c, e0).x * (float) s;
    }
}

// IQ4_XS: task t is block t (32 weights, qs bytes 16t..16t+16, one activation block).
template <int NC>
static __device__ __forceinline__ void task_iq4_xs(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const block_iq4_xs *b = (const block_iq4_xs *) blk;
    int lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int v = load_i32_a2(b->qs + 16 * t + 4 * i);
        lo[i] = iq4_values4(v & LO4);
        hi[i] = iq4_values4((v >> 4) & LO4);
    }
    const int ls = ((__ldg(&b->scales_l[t / 2]) >> (4 * (t % 2))) & 0xF) | (((load_u16(blk + 2) >> (2 * t)) & 3) << 4);
    const float dl = h2f(load_u16(blk)) * (float) (ls - 32);
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int4 ul = load_i4(a.q(c, e0) + 32 * t);
        const int4 uh = load_i4(a.q(c, e0) + 32 * t + 16);
        int s = dp4a(lo[0], ul.x, 0);
        s = dp4a(lo[1], ul.y, s);
        s = dp4a(lo[2], ul.z, s);
        s = dp4a(lo[3], ul.w, s);
        s = dp4a(hi[0], uh.x, s);
        s = dp4a(hi[1], uh.y, s);
        s = dp4a(hi[2], uh.z, s);
        s = dp4a(hi[3], uh.w, s);
        acc[c] += dl * a.d(c, e0 + 32 * t).x * (float) s;
    }
}

// Values 0..7 per byte to -4..3.
static __device__ __forceinline__ int sub4_bytes(int v) {
    const int x = v ^ 0x04040404;
    return x | ((x & 0x04040404) * 0x3E);
}

// Q2_K / Q3_K: task t covers n = t / 4, g = t % 4: weights 128n + 32g + l (l < 32), the 2-bit
// field g of qs[32n + l]; sub-blocks 8n + 2g (l < 16) and 8n + 2g + 1. Q2_K subtracts
// dmin * min * (sum of the 16 activations); Q3_K adds the high bit and offsets by -4.
template <int NC, bool Q3>
static __device__ __forceinline__ void task_q23_K(const u8 *blk, int t, ActView a, int e0, float *acc) {
    const int n = t >> 2, g = t & 3;
    const int qs_off = Q3 ? 32 : 16;
    int q[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int v = load_i32_a2(blk + qs_off + 32 * n + 4 * i);
        q[i] = (v >> (2 * g)) & 0x03030303;
        if (Q3) {
            const int h = load_i32_a2(blk + 4 * i);
            q[i] = sub4_bytes(q[i] | (((h >> (4 * n + g)) & 0x01010101) << 2));
        }
    }
    const int s0 = 8 * n + 2 * g;
    float sc_a, sc_b, mn_a = 0.0f, mn_b = 0.0f, d;
    if (Q3) {
        const block_q3_K *b = (const block_q3_K *) blk;
        sc_a = (float) (q3_K_scale(b->scales, s0) - 32);
        sc_b = (float) (q3_K_scale(b->scales, s0 + 1) - 32);
        d = h2f(load_u16(blk + 108));
    } else {
        const int sa = __ldg(blk + s0), sb = __ldg(blk + s0 + 1);
        sc_a = (float) (sa & 0xF);
        sc_b = (float) (sb & 0xF);
        const int dd = load_i32_a2(blk + 80);
        d = h2f((u16) (dd & 0xFFFF));
        const float dmin = h2f((u16) ((u32) dd >> 16));
        mn_a = dmin * (float) (sa >> 4);
        mn_b = dmin * (float) (sb >> 4);
    }
    const int eg = e0 + 128 * n + 32 * g;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int4 ua = load_i4(a.q(c, eg));
        const int4 ub = load_i4(a.q(c, eg) + 16);
        int sa = dp4a(q[0], ua.x, 0);
        sa = dp4a(q[1], ua.y, sa);
        sa = dp4a(q[2], ua.z, sa);
        sa = dp4a(q[3], ua.w, sa);
        int sb = dp4a(q[4], ub.x, 0);
        sb = dp4a(q[5], ub.y, sb);
        sb = dp4a(q[6], ub.z, sb);
        sb = dp4a(q[7], ub.w, sb);
        const float dx = a.d(c, eg).x;
        float r = d * dx * (sc_a * (float) sa + sc_b * (float) sb);
        if (!Q3) {
            const int xa = dp4a(0x01010101, ua.w, dp4a(0x01010101, ua.z, dp4a(0x01010101, ua.y, dp4a(0x01010101, ua.x, 0))));
            const int xb = dp4a(0x01010101, ub.w, dp4a(0x01010101, ub.z, dp4a(0x01010101, ub.y, dp4a(0x01010101, ub.x, 0))));
            r -= dx * (mn_a * (float) xa + mn_b * (float) xb);
        }
        acc[c] += r;
    }
}

// ---------------------------------------------------------------------------------

template <int TY> struct MmvqType;
template <> struct MmvqType<GGML_Q4_0> { enum { QK = 32, BYTES = 18, TPB = 2 }; };
template <> struct MmvqType<GGML_Q5_0> { enum { QK = 32, BYTES = 22, TPB = 2 }; };
template <> struct MmvqType<GGML_Q8_0> { enum { QK = 32, BYTES = 34, TPB = 2 }; };
template <> struct MmvqType<GGML_Q4_K> { enum { QK = 256, BYTES = 144, TPB = 8 }; };
template <> struct MmvqType<GGML_Q5_K> { enum { QK = 256, BYTES = 176, TPB = 8 }; };
template <> struct MmvqType<GGML_Q6_K> { enum { QK = 256, BYTES = 210, TPB = 8 }; };
template <> struct MmvqType<GGML_Q4_1> { enum { QK = 32, BYTES = 20, TPB = 2 }; };
template <> struct MmvqType<GGML_Q5_1> { enum { QK = 32, BYTES = 24, TPB = 2 }; };
template <> struct MmvqType<GGML_IQ4_NL> { enum { QK = 32, BYTES = 18, TPB = 2 }; };
template <> struct MmvqType<GGML_Q2_K> { enum { QK = 256, BYTES = 84, TPB = 8 }; };
template <> struct MmvqType<GGML_Q3_K> { enum { QK = 256, BYTES = 110, TPB = 8 }; };
template <> struct MmvqType<GGML_IQ4_XS> { enum { QK = 256, BYTES = 136, TPB = 8 }; };

template <int TY, int NC>
static __device__ __forceinline__ void run_task(const u8 *blk, int t, ActView a, int e0, float *acc) {
    if (TY == GGML_Q4_0) task_q4_0<NC>(blk, t, a, e0, acc);
    if (TY == GGML_Q5_0) task_q5_0<NC>(blk, t, a, e0, acc);
    if (TY == GGML_Q8_0) task_q8_0<NC>(blk, t, a, e0, acc);
    if (TY == GGML_Q4_K) task_qk45<NC, false>(blk, t, a, e0, acc);
    if (TY == GGML_Q5_K) task_qk45<NC, true>(blk, t, a, e0, acc);
    if (TY == GGML_Q6_K) task_q6_K<NC>(blk, t, a, e0, acc);
    if (TY == GGML_Q4_1) task_q45_1<NC, false>(blk, t, a, e0, acc);
    if (TY == GGML_Q5_1) task_q45_1<NC, true>(blk, t, a, e0, acc);
    if (TY == GGML_IQ4_NL) task_iq4_nl<NC>(blk, t, a, e0, acc);
    if (TY == GGML_Q2_K) task_q23_K<NC, false>(blk, t, a, e0, acc);
    if (TY == GGML_Q3_K) task_q23_K<NC, true>(blk, t, a, e0, acc);
    if (TY == GGML_IQ4_XS) task_iq4_xs<NC>(blk, t, a, e0, acc);
}

// w: rows x nb blocks; aq/ads: NC activation rows (q8_1, row length k_pad); y: NC x rows.
// The block computes weight row `row`.
template <int TY, int NC>
static __device__ __forceinline__ void mmvq(const u8 *__restrict__ w, int nb, const i8 *__restrict__ aq,
                                            const float2 *__restrict__ ads, int k_pad, float *__restrict__ y,
                                            int rows, int row) {
    typedef MmvqType<TY> T;
    const u8 *wrow = w + (i64) row * nb * T::BYTES;
    const ActView a = {aq, ads, k_pad};
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[c] = 0.0f;
    const int n_tasks = nb * T::TPB;
#pragma unroll 2
    for (int task = threadIdx.x; task < n_tasks; task += MMVQ_THREADS) {
        const int b = task / T::TPB;
        run_task<TY, NC>(wrow + (i64) b * T::BYTES, task % T::TPB, a, b * T::QK, acc);
    }
    __shared__ float partial[MMVQ_THREADS / WARP][NC];
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
        for (int wi = 0; wi < MMVQ_THREADS / WARP; ++wi) s += partial[wi][threadIdx.x];
        y[(i64) threadIdx.x * rows + row] = s;
    }
}

// Up to three products of one token with matrices of the same type and row length (Q, K and
// V; gate and up) in one launch: blocks 0 .. rows0 - 1 compute matrix 0's rows, then matrix
// 1's, then matrix 2's (rows 0 for an absent one). One launch keeps the GPU busy where the
// small K and V products alone would leave most of it idle (measured on an H200 with
// 12B shapes: Q+K in one launch 11.7 us against 9.6 + 8.9 us apart).
template <int TY>
static __device__ __forceinline__ void mmvq_multi(const u8 *w0, float *y0, int rows0, const u8 *w1, float *y1,
                                                  int rows1, const u8 *w2, float *y2, int rows2, int nb,
                                                  const i8 *aq, const float2 *ads, int k_pad) {
    const int row = blockIdx.x;
    if (row < rows0) {
        mmvq<TY, 1>(w0, nb, aq, ads, k_pad, y0, rows0, row);
    } else if (row < rows0 + rows1) {
        mmvq<TY, 1>(w1, nb, aq, ads, k_pad, y1, rows1, row - rows0);
    } else {
        mmvq<TY, 1>(w2, nb, aq, ads, k_pad, y2, rows2, row - rows0 - rows1);
    }
}

#define MMVQ_KERNEL(NAME, TY, NC)                                                                       \
    extern "C" __global__ void __launch_bounds__(MMVQ_THREADS) mmvq_##NAME##_##NC(                     \
        const u8 *w, int nb, const i8 *aq, const float2 *ads, int k_pad, float *y, int rows) {          \
        mmvq<TY, NC>(w, nb, aq, ads, k_pad, y, rows, blockIdx.x);                                       \
    }

#define MMVQ_MULTI_KERNEL(NAME, TY)                                                                     \
    extern "C" __global__ void __launch_bounds__(MMVQ_THREADS) mmvq_multi_##NAME(                      \
        const u8 *w0, float *y0, int rows0, const u8 *w1, float *y1, int rows1, const u8 *w2, float *y2, \
        int rows2, int nb, const i8 *aq, const float2 *ads, int k_pad) {                                \
        mmvq_multi<TY>(w0, y0, rows0, w1, y1, rows1, w2, y2, rows2, nb, aq, ads, k_pad);                \
    }

#define MMVQ_ALL_NC(NAME, TY) \
    MMVQ_KERNEL(NAME, TY, 1)  \
    MMVQ_KERNEL(NAME, TY, 2)  \
    MMVQ_KERNEL(NAME, TY, 4)  \
    MMVQ_KERNEL(NAME, TY, 8)  \
    MMVQ_MULTI_KERNEL(NAME, TY)

MMVQ_ALL_NC(q4_0, GGML_Q4_0)
MMVQ_ALL_NC(q5_0, GGML_Q5_0)
MMVQ_ALL_NC(q8_0, GGML_Q8_0)
MMVQ_ALL_NC(q4_K, GGML_Q4_K)
MMVQ_ALL_NC(q5_K, GGML_Q5_K)
MMVQ_ALL_NC(q6_K, GGML_Q6_K)
MMVQ_ALL_NC(q4_1, GGML_Q4_1)
MMVQ_ALL_NC(q5_1, GGML_Q5_1)
MMVQ_ALL_NC(iq4_nl, GGML_IQ4_NL)
MMVQ_ALL_NC(q2_K, GGML_Q2_K)
MMVQ_ALL_NC(q3_K, GGML_Q3_K)
MMVQ_ALL_NC(iq4_xs, GGML_IQ4_XS)
