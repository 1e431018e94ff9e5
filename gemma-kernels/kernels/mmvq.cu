// Quantized matrix x vector products for decode (1..8 tokens): y[c * rows + r] =
// dot(W row r, x column c), with x quantized to 8 bits (see common.cuh) and integer dot
// products (dp4a). Blocks of 128 threads take a few whole rows each (see mmvq below); the
// rows are cut into "tasks" (a fixed slice of one weight block) in memory order, so a warp
// reads consecutive bytes; a task's weights are loaded once and dotted with every token;
// partial sums meet in a warp + shared-memory reduction. (One row per block, the layout of
// ggml-cuda's mmvq, measured on an H200: Q4_K 15360x3840 18.3 us, 38% of the bandwidth,
// and 381 us for the 262144-row Q6_K output matrix, 45%: its time grew with the number of
// blocks more than with bytes. One warp per row was slower: 23.2 us.)
//
// Per task (TPB tasks per block; the host's launch::mmvq_tasks_per_block says the same):
//   32-block types (Q4_0, Q5_0, Q8_0, Q4_1, Q5_1, IQ4_NL): 1 task, the whole block;
//   Q4_K, Q5_K: 4 tasks of 32 qs bytes (64 weights, two sub-blocks), 16-byte loads;
//   Q6_K: 4 tasks of 64 weights (16 from each quarter of one half);
//   Q2_K, Q3_K: 2 tasks of 128 weights (half a block: its 32 qs bytes once);
//   IQ4_XS: 8 tasks, one block of 32 each.
// (sm_90 SASS instructions per weight byte, one round of mmvq_<type>_1: Q4_K 3.0, Q6_K 4.3,
// Q4_0 3.7, Q8_0 1.8; with 16- or 32-weight tasks and rows padded to whole passes of the
// block's threads they were 7.3, 8.9, 8.5 and 5.0.)
// Offsets (-8, -16, the minimums) use s = d * sum(q) of each activation block a task
// covers whole (a Q4_K / Q5_K task: the two of its sub-blocks).

#define MMVQ_THREADS 128
#define LO4 0x0F0F0F0F

// Bit i (i < 4) of x moved to bit 4 of byte i: the fifth bit of four 5-bit values.
static __device__ __forceinline__ int bits4_to_b4(u32 x) {
    return (int) (((x & 1u) << 4) | ((x & 2u) << 11) | ((x & 4u) << 18) | ((x & 8u) << 25));
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
// One struct per weight type: QK weights and BYTES bytes per block, TPB tasks per block;
// load(blk, t) reads everything task t takes from its weight block into registers (and
// nothing else: no branch, so a thread's tasks all have their loads in flight together);
// dot<NC>(t, a, e0, acc) adds the task's products with NC tokens to acc.

template <int TY> struct Task;

// The int8 dot product of 32 weights (8 words of 4) with the 32 activations at q.
static __device__ __forceinline__ int dot32(const int *w, const i8 *q) {
    const int4 ul = load_i4(q), uh = load_i4(q + 16);
    const int u[8] = {ul.x, ul.y, ul.z, ul.w, uh.x, uh.y, uh.z, uh.w};
    int s = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) s = dp4a(w[i], u[i], s);
    return s;
}

// The 32 weights of a block of 4-bit quants w (low nibbles: weights 0..15, high: 16..31)
// as 8 words of int8, for dot32: the nibbles, plus bit 4 from the 32 bits of qh when Q5.
template <bool Q5> static __device__ __forceinline__ void nibble_words(const int *w, u32 qh, int (&out)[8]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[i] = (w[i] & LO4) | (Q5 ? bits4_to_b4(qh >> (4 * i)) : 0);
        out[4 + i] = ((w[i] >> 4) & LO4) | (Q5 ? bits4_to_b4(qh >> (16 + 4 * i)) : 0);
    }
}

// The same for IQ4 quants: the table's values of the nibbles.
static __device__ __forceinline__ void iq4_words(const int *w, int (&out)[8]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[i] = iq4_values4(w[i] & LO4);
        out[4 + i] = iq4_values4((w[i] >> 4) & LO4);
    }
}

// The loads of a 32-weight block that is an f16 scale d and then the quants, one task per
// block (Q4_0, IQ4_NL: W = 4 words; Q8_0: W = 8); the scale applies outside dot.
template <int W> struct TaskD16 : RawD16<W> {
    __device__ __forceinline__ float scale() const { return h2f((u16) this->d); }
};

template <> struct Task<GGML_Q4_0> : TaskD16<4> {
    enum { QK = 32, BYTES = 18, TPB = 1 };
    template <int NC> __device__ __forceinline__ void dot(int, ActView a, int e0, float *acc) const {
        int w[8];
        nibble_words<false>(q, 0u, w);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const float2 ds = a.d(c, e0);
            acc[c] += ds.x * (float) dot32(w, a.q(c, e0)) - 8.0f * ds.y;
        }
    }
};

template <> struct Task<GGML_Q5_0> : TaskD16<5> {  // q[0]: qh
    enum { QK = 32, BYTES = 22, TPB = 1 };
    template <int NC> __device__ __forceinline__ void dot(int, ActView a, int e0, float *acc) const {
        int w[8];
        nibble_words<true>(q + 1, (u32) q[0], w);
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const float2 ds = a.d(c, e0);
            acc[c] += ds.x * (float) dot32(w, a.q(c, e0)) - 16.0f * ds.y;
        }
    }
};

template <> struct Task<GGML_Q8_0> : TaskD16<8> {
    enum { QK = 32, BYTES = 34, TPB = 1 };
    template <int NC> __device__ __forceinline__ void dot(int, ActView a, int e0, float *acc) const {
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[c] += a.d(c, e0).x * (float) dot32(q, a.q(c, e0));
    }
};

// Q4_K / Q5_K: task t covers chunk t (64 weights): qs bytes [32t, 32t + 32) hold weights
// 64t + i (low nibbles, sub-block 2t) and 64t + 32 + i (high nibbles, sub-block 2t + 1);
// Q5_K's fifth bits are bits 2t and 2t + 1 of the 32 qh bytes.
template <bool Q5> struct TaskQK45 {
    enum { QK = 256, BYTES = Q5 ? 176 : 144, TPB = 4 };
    int4 hdr;    // d, dmin, scales[12]
    int4 v[2];
    int4 qh[2];  // Q5_K only
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        hdr = load_i4(blk);
        v[0] = load_i4(blk + (Q5 ? 48 : 16) + 32 * t);
        v[1] = load_i4(blk + (Q5 ? 48 : 16) + 32 * t + 16);
        pin(hdr);
        pin(v[0]);
        pin(v[1]);
        if (Q5) {
            qh[0] = load_i4(blk + 16);
            qh[1] = load_i4(blk + 32);
            pin(qh[0]);
            pin(qh[1]);
        }
    }
    __device__ __forceinline__ float scale() const { return 1.0f; }
    template <int NC> __device__ __forceinline__ void dot(int t, ActView a, int e0, float *acc) const {
        const int vw[8] = {v[0].x, v[0].y, v[0].z, v[0].w, v[1].x, v[1].y, v[1].z, v[1].w};
        // Q4_K keeps the high nibbles in place, 16 times their value (unsigned bytes, so
        // dp4a_us), and divides the exact sum by 16 once: one instruction per word, not two.
        int lo[8], hi[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            lo[i] = vw[i] & LO4;
            hi[i] = Q5 ? (vw[i] >> 4) & LO4 : vw[i] & ~LO4;
        }
        if (Q5) {
            const int qhw[8] = {qh[0].x, qh[0].y, qh[0].z, qh[0].w, qh[1].x, qh[1].y, qh[1].z, qh[1].w};
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                lo[i] |= ((qhw[i] >> (2 * t)) & 0x01010101) << 4;
                hi[i] |= ((qhw[i] >> (2 * t + 1)) & 0x01010101) << 4;
            }
        }
        // Scales and mins of sub-blocks 2t and 2t + 1, two per 16-bit value, without a
        // branch (the warp's threads hold all four chunks): bytes k, k + 1 (k = 2t mod 4)
        // of the 12 scale bytes, six bits each for t < 2, else four from bytes 8.. plus
        // the top two bits of bytes 0.. and 4...
        const int k = 16 * (t & 1);
        const int s0 = ((u32) hdr.y >> k) & 0xFFFF, s1 = ((u32) hdr.z >> k) & 0xFFFF, s2 = ((u32) hdr.w >> k) & 0xFFFF;
        const int sc2 = t < 2 ? s0 & 0x3F3F : (s2 & 0x0F0F) | ((s0 >> 2) & 0x3030);
        const int m2 = t < 2 ? s1 & 0x3F3F : ((s2 >> 4) & 0x0F0F) | ((s1 >> 2) & 0x3030);
        const int sc_a = sc2 & 0xFF, sc_b = sc2 >> 8;
        const float m_a = (float) (m2 & 0xFF), m_b = (float) (m2 >> 8);
        const float d = h2f((u16) (hdr.x & 0xFFFF));
        const float dmin = h2f((u16) ((u32) hdr.x >> 16));
        const int e = e0 + 64 * t;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const i8 *q = a.q(c, e);
            const int4 u0 = load_i4(q), u1 = load_i4(q + 16), u2 = load_i4(q + 32), u3 = load_i4(q + 48);
            const int ua[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
            const int ub[8] = {u2.x, u2.y, u2.z, u2.w, u3.x, u3.y, u3.z, u3.w};
            int sa = 0, sb = 0;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                sa = dp4a(lo[i], ua[i], sa);
                sb = Q5 ? dp4a(hi[i], ub[i], sb) : dp4a_us((u32) hi[i], ub[i], sb);
            }
            if (!Q5) sb >>= 4;  // exact: a multiple of 16
            // Q8_K activations: one d for all 256 (da.x == db.x), so the two sub-blocks
            // meet in int32 (|sum| < 2^23: exact in f32) as ggml's CPU sums them.
            const float2 da = a.d(c, e), db = a.d(c, e + 32);
            acc[c] += d * da.x * (float) (sc_a * sa + sc_b * sb) - dmin * (m_a * da.y + m_b * db.y);
        }
    }
};
template <> struct Task<GGML_Q4_K> : TaskQK45<false> {};
template <> struct Task<GGML_Q5_K> : TaskQK45<true> {};

// Q6_K: task t covers half n = t / 2 and l in [l0, l0 + 16), l0 = 16 (t % 2): weights
// 128n + 32k + l for k = 0..3 (sub-block 8n + 2k + t % 2 each); the four products meet in
// int32 with their scales (Q8_K activations: one d for the block), as the CPU sums them.
template <> struct Task<GGML_Q6_K> {
    enum { QK = 256, BYTES = 210, TPB = 4 };
    int la[4], lb[4], hh[4];
    int scw[2];  // scales[8n .. 8n + 8)
    int d;  // f16 bits
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        const block_q6_K *b = (const block_q6_K *) blk;
        const int n = t >> 1, l0 = 16 * (t & 1);
        load_words_a2<4>(b->ql + 64 * n + l0, la);
        load_words_a2<4>(b->ql + 64 * n + l0 + 32, lb);
        load_words_a2<4>(b->qh + 32 * n + l0, hh);
        load_words_a2<2>((const u8 *) b->scales + 8 * n, scw);
        d = load_u16((const u8 *) &b->d);
        pin(d);
    }
    __device__ __forceinline__ float scale() const { return h2f((u16) d); }
    template <int NC> __device__ __forceinline__ void dot(int t, ActView a, int e0, float *acc) const {
        const int n = t >> 1, l0 = 16 * (t & 1);
        // The 6-bit quants 0..63 as they are; the -32 goes outside the dot product, as
        // 32 times the sum of the activations (exact: the same integers).
        int q[4][4];
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            q[0][w] = (la[w] & LO4) | ((hh[w] << 4) & 0x30303030);
            q[1][w] = (lb[w] & LO4) | ((hh[w] << 2) & 0x30303030);
            q[2][w] = ((la[w] >> 4) & LO4) | (hh[w] & 0x30303030);
            q[3][w] = ((lb[w] >> 4) & LO4) | ((hh[w] >> 2) & 0x30303030);
        }
        // Scale k of the task: byte t % 2 + 2k of scales[8n ..], a signed byte.
        int sc[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) sc[k] = (i8) (scw[k / 2] >> (8 * ((t & 1) + 2 * (k % 2))));
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            int isum = 0;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const int4 u = load_i4(a.q(c, e0 + 128 * n + 32 * k) + l0);
                int s = dp4a(q[k][0], u.x, 0);
                s = dp4a(q[k][1], u.y, s);
                s = dp4a(q[k][2], u.z, s);
                s = dp4a(q[k][3], u.w, s);
                const int su = dp4a(0x01010101, u.w, dp4a(0x01010101, u.z, dp4a(0x01010101, u.y, dp4a(0x01010101, u.x, 0))));
                isum += sc[k] * (s - 32 * su);
            }
            acc[c] += a.d(c, e0).x * (float) isum;
        }
    }
};

// Q4_1 / Q5_1: unsigned quants plus a minimum m: w = d q + m adds m * s.
template <bool Q5> struct TaskQ45_1 {
    enum { QK = 32, BYTES = Q5 ? 24 : 20, TPB = 1 };
    int dm, v[4];
    int qh;  // Q5_1 only
    __device__ __forceinline__ void load(const u8 *blk, int) {  // Q4_1: 4-byte, Q5_1: 8-byte aligned
        if (Q5) {
            const int2 head = load_i2(blk), q0 = load_i2(blk + 8), q1 = load_i2(blk + 16);
            dm = head.x;
            qh = head.y;
            v[0] = q0.x;
            v[1] = q0.y;
            v[2] = q1.x;
            v[3] = q1.y;
            pin(qh);
        } else {
            dm = load_i32(blk);
#pragma unroll
            for (int i = 0; i < 4; ++i) v[i] = load_i32(blk + 4 + 4 * i);
        }
        pin(dm);
#pragma unroll
        for (int i = 0; i < 4; ++i) pin(v[i]);
    }
    __device__ __forceinline__ float scale() const { return 1.0f; }
    template <int NC> __device__ __forceinline__ void dot(int, ActView a, int e0, float *acc) const {
        int w[8];
        nibble_words<Q5>(v, (u32) qh, w);
        const float d = h2f((u16) (dm & 0xFFFF)), m = h2f((u16) ((u32) dm >> 16));
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const float2 ds = a.d(c, e0);
            acc[c] += d * ds.x * (float) dot32(w, a.q(c, e0)) + m * ds.y;
        }
    }
};
template <> struct Task<GGML_Q4_1> : TaskQ45_1<false> {};
template <> struct Task<GGML_Q5_1> : TaskQ45_1<true> {};

template <> struct Task<GGML_IQ4_NL> : TaskD16<4> {
    enum { QK = 32, BYTES = 18, TPB = 1 };
    template <int NC> __device__ __forceinline__ void dot(int, ActView a, int e0, float *acc) const {
        int w[8];
        iq4_words(q, w);
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[c] += a.d(c, e0).x * (float) dot32(w, a.q(c, e0));
    }
};

// IQ4_XS: task t is block t (32 weights, qs bytes 16t..16t+16, one activation block).
template <> struct Task<GGML_IQ4_XS> {
    enum { QK = 256, BYTES = 136, TPB = 8 };
    int2 head;  // d, scales_h, scales_l[4]
    int2 v[2];
    __device__ __forceinline__ void load(const u8 *blk, int t) {  // 8-byte aligned blocks
        head = load_i2(blk);
        v[0] = load_i2(blk + 8 + 16 * t);
        v[1] = load_i2(blk + 8 + 16 * t + 8);
        pin(head);
        pin(v[0]);
        pin(v[1]);
    }
    __device__ __forceinline__ float scale() const { return 1.0f; }
    template <int NC> __device__ __forceinline__ void dot(int t, ActView a, int e0, float *acc) const {
        const int q4[4] = {v[0].x, v[0].y, v[1].x, v[1].y};
        int w[8];
        iq4_words(q4, w);
        const u32 scale_h = (u32) head.x >> 16, scale_l = (u32) head.y >> (8 * (t / 2));
        const int ls = (int) (((scale_l >> (4 * (t % 2))) & 0xF) | (((scale_h >> (2 * t)) & 3) << 4));
        const float dl = h2f((u16) (head.x & 0xFFFF)) * (float) (ls - 32);
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[c] += dl * a.d(c, e0 + 32 * t).x * (float) dot32(w, a.q(c, e0) + 32 * t);
    }
};

// Q2_K / Q3_K: task t is half n = t of the block (128 weights): qs[32n + l] holds the 2-bit
// fields g = 0..3 of weights 128n + 32g + l (l < 32), of sub-blocks 8n + 2g (l < 16) and
// 8n + 2g + 1; Q3_K's high bit of that weight is bit 4n + g of hmask[l]. The quants go into
// dp4a as they are (Q3_K: 0..7), and the task's sums meet in int32 (Q8_K activations: one d
// for the block; every sum below 2^23): Q2_K d x sum(scale x dot) - dmin x sum(min x
// activation sum), Q3_K d x sum((scale - 32) x (dot - 4 x activation sum)).
template <bool Q3> struct TaskQ23_K : RawQ23_K<Q3> {
    enum { QK = 256, BYTES = Q3 ? 110 : 84, TPB = 2 };
    using RawQ23_K<Q3>::qs;
    using RawQ23_K<Q3>::hm;
    using RawQ23_K<Q3>::scw;  // Q2_K: scales[8t .. 8t + 8) in scw[0..1]
    using RawQ23_K<Q3>::dd;
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        this->load_half(blk, t);
        if (!Q3) {
            scw[0] = load_i32(blk + 8 * t);
            scw[1] = load_i32(blk + 8 * t + 4);
            pin(scw[0]);
            pin(scw[1]);
        }
    }
    __device__ __forceinline__ float scale() const { return 1.0f; }
    template <int NC> __device__ __forceinline__ void dot(int t, ActView a, int e0, float *acc) const {
        // Scales (and Q2_K's mins) of sub-blocks 8t + k.
        int sc[8], mn[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            if (Q3) {
                sc[k] = q3_K_scale_words(scw, t, k) - 32;
                mn[k] = 0;
            } else {
                const int b = byte_of(scw[k / 4], k % 4);
                sc[k] = b & 0xF;
                mn[k] = b >> 4;
            }
        }
        const float d = h2f((u16) (dd & 0xFFFF));
        const float dmin = Q3 ? 0.0f : h2f((u16) ((u32) dd >> 16));
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            int isum = 0, imin = 0;
#pragma unroll
            for (int g = 0; g < 4; ++g) {
                const i8 *q = a.q(c, e0 + 128 * t + 32 * g);
                const int4 ua = load_i4(q), ub = load_i4(q + 16);
                const int u[8] = {ua.x, ua.y, ua.z, ua.w, ub.x, ub.y, ub.z, ub.w};
                int s2[2] = {0, 0}, x2[2] = {0, 0};
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    int w = (qs[i] >> (2 * g)) & 0x03030303;
                    if (Q3) w |= ((hm[i] >> (4 * t + g)) & 0x01010101) << 2;
                    s2[i / 4] = dp4a(w, u[i], s2[i / 4]);
                    x2[i / 4] = dp4a(0x01010101, u[i], x2[i / 4]);
                }
                if (Q3) {
                    isum += sc[2 * g] * (s2[0] - 4 * x2[0]) + sc[2 * g + 1] * (s2[1] - 4 * x2[1]);
                } else {
                    isum += sc[2 * g] * s2[0] + sc[2 * g + 1] * s2[1];
                    imin += mn[2 * g] * x2[0] + mn[2 * g + 1] * x2[1];
                }
            }
            const float dx = a.d(c, e0).x;
            acc[c] += d * dx * (float) isum - (Q3 ? 0.0f : dmin * dx * (float) imin);
        }
    }
};
template <> struct Task<GGML_Q2_K> : TaskQ23_K<false> {};
template <> struct Task<GGML_Q3_K> : TaskQ23_K<true> {};

// ---------------------------------------------------------------------------------

// Tasks a thread takes per round; their loads are all issued before the dot products. Four,
// or two of the larger tasks of Q4_K, Q5_K, Q6_K (64 weights), Q2_K and Q3_K (128) (about
// the same bytes in flight, fewer registers: Q6_K took 105 with four); the host's
// launch::mmvq_items says the same.
#define MMVQ_ITEMS 4
template <int TY> struct Items { enum { N = MMVQ_ITEMS }; };
template <> struct Items<GGML_Q4_K> { enum { N = 2 }; };
template <> struct Items<GGML_Q5_K> { enum { N = 2 }; };
template <> struct Items<GGML_Q6_K> { enum { N = 2 }; };
template <> struct Items<GGML_Q2_K> { enum { N = 2 }; };
template <> struct Items<GGML_Q3_K> { enum { N = 2 }; };

// w: rows x nb blocks; aq/ads: NC activation rows (q8_1, row length k_pad); y: NC x rows.
// The block computes weight rows row0 .. row0 + n_rows - 1, which lie one after another in
// memory: n_rows x n_tasks tasks in one flat list (task f is task f mod n_tasks of row
// f / n_tasks, and its weight block is block f / TPB from the first row's, whatever the
// row). Thread t takes tasks t, t + MMVQ_THREADS, ..., so a warp reads consecutive bytes
// even across a row's end, and no thread idles while another has tasks: a round is
// ITEMS (Items<TY>) tasks per thread, all their loads in flight at once, slot j of the
// round holding task j * MMVQ_THREADS + t. Contract (the host's mmvq_rows_per_block keeps
// it): n_rows x n_tasks <= ITEMS x MMVQ_THREADS (one round; short rows share a block: a
// Q4_K row of 3840 weights is 60 tasks, 4 rows per block) or n_rows == 1 (long rows:
// several rounds into the same slots). Either way the slot sums, laid out in shared memory
// by task, put each row's tasks in one range that a warp adds up; the order of every float
// sum depends only on (nb, n_rows): results are deterministic for a given rows per block.
// T: the task type (Task<TY> for weight type TY), ITEMS: tasks per thread and round.
template <class T, int ITEMS, int NC>
static __device__ __forceinline__ void mmvq_tasks(const u8 *__restrict__ w, int nb, const i8 *__restrict__ aq,
                                                  const float2 *__restrict__ ads, int k_pad,
                                                  float *__restrict__ y, int rows, int row0, int n_rows) {
    constexpr int ROUND = ITEMS * MMVQ_THREADS;
    const u8 *wrows = w + (i64) row0 * nb * T::BYTES;
    const ActView a = {aq, ads, k_pad};
    const int n_tasks = nb * T::TPB;
    const int n_all = n_rows * n_tasks;
    // The first task of slot j's row: the same in every round (one round when n_rows > 1;
    // row 0 otherwise, where slot j's first task is below n_tasks or is not live).
    int row_start[ITEMS];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) row_start[j] = (j * MMVQ_THREADS + threadIdx.x) / n_tasks * n_tasks;
    float acc[ITEMS][NC] = {};
    for (int f0 = 0; f0 < n_all; f0 += ROUND) {  // uniform over the block
        T task[ITEMS];
        int tt[ITEMS];
        bool live[ITEMS];
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {  // every load first ...
            const int f = f0 + j * MMVQ_THREADS + threadIdx.x;
            // A task past the end loads task 0 and drops it: no branch.
            live[j] = f < n_all;
            const int fl = live[j] ? f : 0;
            tt[j] = fl - (live[j] ? row_start[j] : 0);
            task[j].load(wrows + (i64) (fl / T::TPB) * T::BYTES, fl % T::TPB);
        }
        // The first round's weights are on their way: now wait for the activations (and
        // the output buffer) of the kernels before this one.
        if (f0 == 0) pdl_wait();
        // ... then the products: the branch ends the compiler's basic block, so the loads
        // above stay together (in one block it interleaves them with the products, to save
        // registers); the block scale is applied outside, where its load cannot sink to.
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            float part[NC];
#pragma unroll
            for (int c = 0; c < NC; ++c) part[c] = 0.0f;
            if (live[j]) task[j].template dot<NC>(tt[j] % T::TPB, a, tt[j] / T::TPB * T::QK, part);
            const float scale = task[j].scale();
#pragma unroll
            for (int c = 0; c < NC; ++c) acc[j][c] += live[j] ? scale * part[c] : 0.0f;
        }
    }
    // Slot sums by task: row r's are [r n_tasks, (r + 1) n_tasks) (all of them when
    // n_rows == 1); warp w adds up the rows w, w + 4, ... for every token.
    __shared__ float partial[NC][ROUND];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j)
#pragma unroll
        for (int c = 0; c < NC; ++c) partial[c][j * MMVQ_THREADS + threadIdx.x] = acc[j][c];
    __syncthreads();
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    for (int rc = warp; rc < n_rows * NC; rc += MMVQ_THREADS / WARP) {
        const int r = rc / NC, c = rc % NC;
        const int lo = r * n_tasks, hi = min(lo + n_tasks, ROUND);
        float s = 0.0f;
        for (int f = lo + lane; f < hi; f += WARP) s += partial[c][f];
        s = warp_sum(s);
        if (lane == 0) y[(i64) c * rows + row0 + r] = s;
    }
}

template <int TY, int NC>
static __device__ __forceinline__ void mmvq(const u8 *__restrict__ w, int nb, const i8 *__restrict__ aq,
                                            const float2 *__restrict__ ads, int k_pad, float *__restrict__ y,
                                            int rows, int row0, int n_rows) {
    mmvq_tasks<Task<TY>, Items<TY>::N, NC>(w, nb, aq, ads, k_pad, y, rows, row0, n_rows);
}

// The rows of block `blk` when a matrix of `rows` rows takes `per_block` rows per block.
static __device__ __forceinline__ int block_rows(int blk, int rows, int per_block) {
    return min(per_block, rows - blk * per_block);
}

// Up to three products of one token with matrices of one row length (Q, K and V; gate and
// up) in one launch: the first blocks compute matrix 0's rows (per_block rows each), then
// matrix 1's, then matrix 2's (rows 0 for an absent one). Matrices 0 and 1 are of type TY,
// matrix 2 of type TY2 (the Q6_K V of the layers a Q4_K_M / Q5_K_M file gives more bits, or
// the Q8_0 that stands for it next to Q5_0 where rows are not whole 256-blocks, as in the
// 270M and 1B; the two types take the same activations). One launch keeps the GPU busy
// where the small K and V products alone would leave most of it idle (measured on an H200
// with 12B shapes: Q+K in one launch 11.7 us against 9.6 + 8.9 us apart).
template <int TY, int TY2>
static __device__ __forceinline__ void mmvq_multi(const u8 *w0, float *y0, int rows0, const u8 *w1, float *y1,
                                                  int rows1, const u8 *w2, float *y2, int rows2, int nb,
                                                  const i8 *aq, const float2 *ads, int k_pad, int per_block) {
    const int blocks0 = (rows0 + per_block - 1) / per_block;
    const int blocks1 = (rows1 + per_block - 1) / per_block;
    int blk = blockIdx.x;
    if (blk < blocks0) {
        mmvq<TY, 1>(w0, nb, aq, ads, k_pad, y0, rows0, blk * per_block, block_rows(blk, rows0, per_block));
    } else if ((blk -= blocks0) < blocks1) {
        mmvq<TY, 1>(w1, nb, aq, ads, k_pad, y1, rows1, blk * per_block, block_rows(blk, rows1, per_block));
    } else {
        blk -= blocks1;
        mmvq<TY2, 1>(w2, nb, aq, ads, k_pad, y2, rows2, blk * per_block, block_rows(blk, rows2, per_block));
    }
}

#define MMVQ_KERNEL(NAME, TY, NC)                                                                       \
    extern "C" __global__ void __launch_bounds__(MMVQ_THREADS) mmvq_##NAME##_##NC(                     \
        const u8 *w, int nb, const i8 *aq, const float2 *ads, int k_pad, float *y, int rows, int per_block) { \
        pdl_launch_dependents();                                                                        \
        mmvq<TY, NC>(w, nb, aq, ads, k_pad, y, rows, blockIdx.x * per_block,                            \
                     block_rows(blockIdx.x, rows, per_block));                                          \
    }

#define MMVQ_MULTI_KERNEL(NAME, TY, TY2)                                                                \
    extern "C" __global__ void __launch_bounds__(MMVQ_THREADS) mmvq_multi_##NAME(                      \
        const u8 *w0, float *y0, int rows0, const u8 *w1, float *y1, int rows1, const u8 *w2, float *y2, \
        int rows2, int nb, const i8 *aq, const float2 *ads, int k_pad, int per_block) {                 \
        pdl_launch_dependents();                                                                        \
        mmvq_multi<TY, TY2>(w0, y0, rows0, w1, y1, rows1, w2, y2, rows2, nb, aq, ads, k_pad, per_block); \
    }

#define MMVQ_ALL_NC(NAME, TY) \
    MMVQ_KERNEL(NAME, TY, 1)  \
    MMVQ_KERNEL(NAME, TY, 2)  \
    MMVQ_KERNEL(NAME, TY, 4)  \
    MMVQ_KERNEL(NAME, TY, 8)  \
    MMVQ_MULTI_KERNEL(NAME, TY, TY)

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
MMVQ_MULTI_KERNEL(q4_K_q6_K, GGML_Q4_K, GGML_Q6_K)
MMVQ_MULTI_KERNEL(q5_K_q6_K, GGML_Q5_K, GGML_Q6_K)
MMVQ_MULTI_KERNEL(q5_0_q8_0, GGML_Q5_0, GGML_Q8_0)

// ---------------------------------------------------------------------------------
// Other layouts of the one-token product, for cuda_bench to time beside the engine's (the
// host's launch::MMVQ_EXPERIMENTS); the engine does not launch them.

// Q4_K in 32-weight tasks: task t = 2c + h takes the 16 qs bytes [32c + 16h, +16), weights
// 64c + 16h + i (low nibbles, sub-block 2c) and 64c + 32 + 16h + i (high nibbles, 2c + 1).
// Two neighbouring threads then share every 32-byte sector a load touches, of the weights as
// of the activations, where a 64-weight task's thread uses half of each sector per load. The
// halves of a chunk are summed in float apart; the minimums' term goes with h = 0.
struct TaskQ4KHalf {
    enum { QK = 256, BYTES = 144, TPB = 8 };
    int4 hdr;  // d, dmin, scales[12]
    int4 v;
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        hdr = load_i4(blk);
        v = load_i4(blk + 16 + 16 * t);
        pin(hdr);
        pin(v);
    }
    __device__ __forceinline__ float scale() const { return 1.0f; }
    template <int NC> __device__ __forceinline__ void dot(int t, ActView a, int e0, float *acc) const {
        const int c = t >> 1, h = t & 1;
        const int vw[4] = {v.x, v.y, v.z, v.w};
        int lo[4], hi[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            lo[i] = vw[i] & LO4;
            hi[i] = vw[i] & ~LO4;
        }
        // Scales and mins of sub-blocks 2c and 2c + 1 (as TaskQK45 with t = c).
        const int k = 16 * (c & 1);
        const int s0 = ((u32) hdr.y >> k) & 0xFFFF, s1 = ((u32) hdr.z >> k) & 0xFFFF, s2 = ((u32) hdr.w >> k) & 0xFFFF;
        const int sc2 = c < 2 ? s0 & 0x3F3F : (s2 & 0x0F0F) | ((s0 >> 2) & 0x3030);
        const int m2 = c < 2 ? s1 & 0x3F3F : ((s2 >> 4) & 0x0F0F) | ((s1 >> 2) & 0x3030);
        const int sc_a = sc2 & 0xFF, sc_b = sc2 >> 8;
        const float m_a = (float) (m2 & 0xFF), m_b = (float) (m2 >> 8);
        const float d = h2f((u16) (hdr.x & 0xFFFF));
        const float dmin = h == 0 ? h2f((u16) ((u32) hdr.x >> 16)) : 0.0f;
        const int e = e0 + 64 * c;
#pragma unroll
        for (int n = 0; n < NC; ++n) {
            const i8 *q = a.q(n, e) + 16 * h;
            const int4 ua = load_i4(q), ub = load_i4(q + 32);
            const int u_a[4] = {ua.x, ua.y, ua.z, ua.w}, u_b[4] = {ub.x, ub.y, ub.z, ub.w};
            int sa = 0, sb = 0;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                sa = dp4a(lo[i], u_a[i], sa);
                sb = dp4a_us((u32) hi[i], u_b[i], sb);
            }
            sb >>= 4;  // exact: a multiple of 16
            const float2 da = a.d(n, e), db = a.d(n, e + 32);
            acc[n] += d * da.x * (float) (sc_a * sa + sc_b * sb) - dmin * (m_a * da.y + m_b * db.y);
        }
    }
};

#define MMVQ_EXPERIMENT(NAME, TASK, ITEMS)                                                              \
    extern "C" __global__ void __launch_bounds__(MMVQ_THREADS) mmvq_x_##NAME(                          \
        const u8 *w, int nb, const i8 *aq, const float2 *ads, int k_pad, float *y, int rows, int per_block) { \
        pdl_launch_dependents();                                                                        \
        mmvq_tasks<TASK, ITEMS, 1>(w, nb, aq, ads, k_pad, y, rows, blockIdx.x * per_block,              \
                                   block_rows(blockIdx.x, rows, per_block));                            \
    }

MMVQ_EXPERIMENT(q4_K_half_tasks, TaskQ4KHalf, 4)     // 32-weight tasks, four per thread
MMVQ_EXPERIMENT(q4_K_four_items, Task<GGML_Q4_K>, 4)  // the engine's tasks, four per thread
MMVQ_EXPERIMENT(q6_K_four_items, Task<GGML_Q6_K>, 4)
