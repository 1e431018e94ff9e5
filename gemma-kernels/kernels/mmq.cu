// Quantized matrix x matrix products for prefill on int8 tensor cores (mma.sync, sm_80+):
// y[c * rows + r] = dot(W row r, x column c) for n tokens, x quantized to q8_1.
//
// A block of 128 threads (2 x 2 warps) computes a 64 (weight rows) x 64 (tokens) tile,
// stepping through K in tiles of 256. Each step starts copying the activation tile into
// shared memory (cp.async), loads the weights of the tile (all of a thread's loads in flight
// at once) and unpacks them to signed int8 in shared memory (offsets -8 / -16 / -32
// applied; mins kept aside), then every warp runs m16n8k32 mma (m16n8k16 pairs for the types whose
// scales change every 16 weights) on its 32 x 32 sub-tile. Two ways to scale:
//  - super-block types (K-quants, IQ4_XS: one d per row and tile, integer sub-block scales
//    and mins; activations in Q8_K, one d per 256) multiply each mma's int32 result by the
//    integer sub-block scale into int32 sums (one IMAD per value) and convert once per tile:
//    acc += d_w d_x isum - d_min d_x imin, ggml's CPU order (vec_dot_*_q8_K). The min term
//    imin = sum over 16-weight groups of min x activation sum is two more int8 mma per tile
//    (MmqIntMins);
//  - the 32-block types (a float scale per 32 weights and per 32 activations) convert each
//    mma result to float and scale it. The mma starts from I2F_BIAS, so the conversion is
//    one FADD instead of an I2F. Q4_1 / Q5_1 subtract their min term once per tile in f32:
//    sum_j min[r][j] * s[c][j].
// (Before the integer sums, each 32-wide K step cost an I2F, an FMUL and an FFMA per output
// value, and the K-quant min term 8 FFMA per value and tile: 88 TOPS measured on an H200
// for Q4_K 15360 x 3840 x 512, against about 1980 dense int8 TOPS for the tensor cores.)
// (Tried on an H200 and reverted: software-pipelining the tiles with cp.async, 85 KiB of
// dynamic shared memory per block, ran slower: Q4_K 688 against 656 us, Q8_0 678 against
// 519 us for 15360 x 3840 x 512, presumably from 2 blocks per SM instead of 5.)

#define MMQ_BM 64
#define MMQ_BN 64
#define MMQ_BK 256
#define MMQ_THREADS 128
// Blocks per multiprocessor the register budget must allow: 4, as many as the 46 KiB of
// shared memory lets fit. That caps the kernels at 128 registers, and sm_90 ptxas then
// spills 8 to 132 bytes in all but Q4_0, Q5_0 and IQ4_NL, Q6_K and Q8_0 partly inside the
// K loop (scripts/ptxas-report.sh); 3 allows 170 registers and leaves only Q3_K's 4 bytes.
// Which is faster is unmeasured: gpu-check.sh times both (a tuning constant:
// GEMMA_CUDA_DEFINES may set it, see modules.rs).
#ifndef MMQ_MIN_BLOCKS
#define MMQ_MIN_BLOCKS 4
#endif
#define MMQ_ROW_INTS (MMQ_BK / 4 + 4)  // +4 ints: conflict-free fragment loads

// The min terms of super-block types as int8 tensor-core operands, per 16 weights g of
// the tile: m[r] packs the 16 mins of row r (Q4_K / Q5_K: each per-32 min twice), xlo and
// xhi the sums of the 16 activations b of token c split as b = 128 hi + lo (lo in 0..127,
// |b| <= 16 x 127 so hi in -16..15): sum_g m x b = mma(m, lo) + 128 mma(m, hi), exact.
struct MmqIntMins {
    int m[MMQ_BM][MMQ_BK / 64];
    int xlo[MMQ_BN][MMQ_BK / 64];
    int xhi[MMQ_BN][MMQ_BK / 64];
};

struct __align__(16) MmqSmem {
    int w[MMQ_BM][MMQ_ROW_INTS];          // weights, int8 x 4 per int
    int x[MMQ_BN][MMQ_ROW_INTS];          // activations
    union {
        float ws[MMQ_BM][MMQ_BK / 32 + 1];  // 32-block types: the weight scale per 32
        int wsi[MMQ_BM][MMQ_BK / 16 + 1];   // super-block types: the integer scale per 16
    };
    union {
        float wm[MMQ_BM][MMQ_BK / 32];    // Q4_1 / Q5_1: minus the min per 32 weights
        MmqIntMins im;                    // super-block types with mins
    };
    float2 xd[MMQ_BN][MMQ_BK / 32];       // activation {d, s} per 32
    float wd[MMQ_BM];                     // super-block types: the row's d
    float wdm[MMQ_BM];                    // and its d_min
};

// An int32 mma accumulator started at I2F_BIAS holds the bits of the float 12582912 + c
// (2^23 + 2^22 + c, exact for |c| < 2^22: an int8 dot of 32 values is at most 2^19).
#define I2F_BIAS 0x4B400000
static __device__ __forceinline__ float biased_to_float(int v) { return __int_as_float(v) - 12582912.0f; }

static __device__ __forceinline__ int sub8_nibbles(int v) {  // 0..15 -> -8..7 per byte
    const int x = v ^ 0x08080808;
    return x | ((x & 0x08080808) * 0x1E);
}

static __device__ __forceinline__ int sub16_bytes(int v) {  // 0..31 -> -16..15 per byte
    const int x = v ^ 0x10101010;
    return x | ((x & 0x10101010) * 0x0E);
}

static __device__ __forceinline__ int sub32_bytes6(int v) {  // 0..63 -> -32..31 per byte
    const int x = v ^ 0x20202020;
    return x | ((x & 0x20202020) * 6);
}

static __device__ __forceinline__ int bits4_to_b4m(u32 x) {
    return (int) (((x & 1u) << 4) | ((x & 2u) << 11) | ((x & 4u) << 18) | ((x & 8u) << 25));
}

static __device__ __forceinline__ void scale_min_w(int j, int s0, int s1, int s2, int *sc, int *m) {
    if (j < 4) {
        *sc = byte_of(s0, j) & 63;
        *m = byte_of(s1, j) & 63;
    } else {
        const int jj = j - 4;
        *sc = (byte_of(s2, jj) & 0xF) | ((byte_of(s0, jj) >> 6) << 4);
        *m = (byte_of(s2, jj) >> 4) | ((byte_of(s1, jj) >> 6) << 4);
    }
}

// The weight part of a tile is 64 rows x 8 loader tasks: a 32-weight block per task, or an
// eighth of a super-block. WTask<TY>::load reads the raw bytes of a task into registers
// (pinned: nothing waits for them there), so each thread issues the loads of several tasks
// before it unpacks any (a loop that loaded and unpacked one task at a time waited for
// global memory once per task); unpack writes the task's signed int8 weights, scales and
// mins into tile row r.

template <int TY> struct WTask;

// 32-block types: task j = block j of the tile.
template <> struct WTask<GGML_Q4_0> : RawD16<4> {
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int j) const {
        int *dst = &s.w[r][8 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[i] = sub8_nibbles(q[i] & 0x0F0F0F0F);
            dst[4 + i] = sub8_nibbles((q[i] >> 4) & 0x0F0F0F0F);
        }
        s.ws[r][j] = h2f((u16) d);
    }
};

template <> struct WTask<GGML_Q5_0> : RawD16<5> {  // q[0]: qh, then the 16 qs bytes
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int j) const {
        int *dst = &s.w[r][8 * j];
        const u32 qh = (u32) q[0];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = q[1 + i];
            dst[i] = sub16_bytes((v & 0x0F0F0F0F) | bits4_to_b4m(qh >> (4 * i)));
            dst[4 + i] = sub16_bytes(((v >> 4) & 0x0F0F0F0F) | bits4_to_b4m(qh >> (16 + 4 * i)));
        }
        s.ws[r][j] = h2f((u16) d);
    }
};

template <> struct WTask<GGML_Q8_0> : RawD16<8> {
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int j) const {
        int *dst = &s.w[r][8 * j];
#pragma unroll
        for (int i = 0; i < 8; ++i) dst[i] = q[i];
        s.ws[r][j] = h2f((u16) d);
    }
};

template <> struct WTask<GGML_IQ4_NL> : RawD16<4> {
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int j) const {
        int *dst = &s.w[r][8 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[i] = iq4_values4(q[i] & 0x0F0F0F0F);
            dst[4 + i] = iq4_values4((q[i] >> 4) & 0x0F0F0F0F);
        }
        s.ws[r][j] = h2f((u16) d);
    }
};

// Q4_1 / Q5_1: d and m, (Q5_1: qh,) the 16 qs bytes; blocks 4- (Q4_1) or 8-byte aligned.
template <bool Q5> struct WTaskQ45_1 {
    int dm, qh, v[4];
    __device__ __forceinline__ void load(const u8 *blk, int) {
        dm = load_i32(blk);
        qh = Q5 ? load_i32(blk + 4) : 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[i] = load_i32(blk + (Q5 ? 8 : 4) + 4 * i);
            pin(v[i]);
        }
        pin(dm);
        pin(qh);
    }
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int j) const {
        int *dst = &s.w[r][8 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[i] = (v[i] & 0x0F0F0F0F) | (Q5 ? bits4_to_b4m((u32) qh >> (4 * i)) : 0);
            dst[4 + i] = ((v[i] >> 4) & 0x0F0F0F0F) | (Q5 ? bits4_to_b4m((u32) qh >> (16 + 4 * i)) : 0);
        }
        s.ws[r][j] = h2f((u16) (dm & 0xFFFF));
        s.wm[r][j] = -h2f((u16) ((u32) dm >> 16));  // w = d q + m: the min term adds m * s
    }
};
template <> struct WTask<GGML_Q4_1> : WTaskQ45_1<false> {};
template <> struct WTask<GGML_Q5_1> : WTaskQ45_1<true> {};

// Q4_K / Q5_K: task t covers chunk ch = t / 2 (64 weights), half h = t % 2.
template <bool Q5> struct WTaskQK45 {
    int4 hdr, v, qh;  // qh: Q5_K only
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        const int ch = t >> 1, h = t & 1;
        hdr = load_i4(blk);
        v = load_i4(blk + (Q5 ? 48 : 16) + 32 * ch + 16 * h);
        pin(hdr);
        pin(v);
        if (Q5) {
            qh = load_i4(blk + 16 + 16 * h);
            pin(qh);
        }
    }
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int t) const {
        const int ch = t >> 1, h = t & 1;
        const int vw[4] = {v.x, v.y, v.z, v.w};
        const int qhw[4] = {Q5 ? qh.x : 0, Q5 ? qh.y : 0, Q5 ? qh.z : 0, Q5 ? qh.w : 0};
        int lo[4], hi[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            lo[i] = (vw[i] & 0x0F0F0F0F) | (((qhw[i] >> (2 * ch)) & 0x01010101) << 4);
            hi[i] = ((vw[i] >> 4) & 0x0F0F0F0F) | (((qhw[i] >> (2 * ch + 1)) & 0x01010101) << 4);
        }
        // 16-byte stores: rows are 16-byte aligned (MMQ_ROW_INTS is a multiple of 4).
        *(int4 *) &s.w[r][16 * ch + 4 * h] = make_int4(lo[0], lo[1], lo[2], lo[3]);
        *(int4 *) &s.w[r][16 * ch + 8 + 4 * h] = make_int4(hi[0], hi[1], hi[2], hi[3]);
        if (h == 0) {
            int sc_a, m_a, sc_b, m_b;
            scale_min_w(2 * ch, hdr.y, hdr.z, hdr.w, &sc_a, &m_a);
            scale_min_w(2 * ch + 1, hdr.y, hdr.z, hdr.w, &sc_b, &m_b);
            s.wsi[r][4 * ch] = sc_a;
            s.wsi[r][4 * ch + 2] = sc_b;
            s.im.m[r][ch] = m_a * 0x0101 + m_b * 0x01010000;  // groups 4ch, 4ch + 1: m_a; then m_b
            if (ch == 0) {
                s.wd[r] = h2f((u16) (hdr.x & 0xFFFF));
                s.wdm[r] = h2f((u16) ((u32) hdr.x >> 16));
            }
        }
    }
};
template <> struct WTask<GGML_Q4_K> : WTaskQK45<false> {};
template <> struct WTask<GGML_Q5_K> : WTaskQK45<true> {};

// Q2_K / Q3_K: task t: n = t / 4, g = t % 4, weights 128n + 32g + l (l < 32).
template <bool Q3> struct WTaskQ23_K : RawQ23_K<Q3> {
    using RawQ23_K<Q3>::qs;
    using RawQ23_K<Q3>::hm;
    using RawQ23_K<Q3>::scw;  // Q2_K: scales[s0], scales[s0 + 1] (s0 = 8n + 2g) in the low bytes
    using RawQ23_K<Q3>::dd;
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        this->load_half(blk, t >> 2);
        if (!Q3) {
            scw[0] = load_u16(blk + 8 * (t >> 2) + 2 * (t & 3));
            pin(scw[0]);
        }
    }
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int t) const {
        const int n = t >> 2, g = t & 3;
        int *dst = &s.w[r][(128 * n + 32 * g) / 4];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int v = (qs[i] >> (2 * g)) & 0x03030303;
            if (Q3) {
                const int h = (hm[i] >> (4 * n + g)) & 0x01010101;
                const int x = (v | (h << 2)) ^ 0x04040404;  // q + 4h - 4 as int8
                dst[i] = x | ((x & 0x04040404) * 0x3E);
            } else {
                dst[i] = v;
            }
        }
        const int s0 = 8 * n + 2 * g;
        if (Q3) {
            s.wsi[r][s0] = q3_K_scale_words(scw, n, 2 * g) - 32;
            s.wsi[r][s0 + 1] = q3_K_scale_words(scw, n, 2 * g + 1) - 32;
            if (t == 0) s.wd[r] = h2f((u16) dd);
        } else {
            const int sc = scw[0];  // scales s0, s0 + 1: 4-bit scale, 4-bit min
            s.wsi[r][s0] = sc & 0xF;
            s.wsi[r][s0 + 1] = (sc >> 8) & 0xF;
            ((u16 *) s.im.m[r])[s0 / 2] = (u16) ((sc >> 4) & 0x0F0F);
            if (t == 0) {
                s.wd[r] = h2f((u16) (dd & 0xFFFF));
                s.wdm[r] = h2f((u16) ((u32) dd >> 16));
            }
        }
    }
};
template <> struct WTask<GGML_Q2_K> : WTaskQ23_K<false> {};
template <> struct WTask<GGML_Q3_K> : WTaskQ23_K<true> {};

// IQ4_XS: task t = block t of 32 weights; blocks 8-byte aligned.
template <> struct WTask<GGML_IQ4_XS> {
    int2 head, q01, q23;  // head: d, scales_h, scales_l[4]
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        head = load_i2(blk);
        q01 = load_i2(blk + 8 + 16 * t);
        q23 = load_i2(blk + 8 + 16 * t + 8);
        pin(head);
        pin(q01);
        pin(q23);
    }
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int t) const {
        int *dst = &s.w[r][8 * t];
        const int qs[4] = {q01.x, q01.y, q23.x, q23.y};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[i] = iq4_values4(qs[i] & 0x0F0F0F0F);
            dst[4 + i] = iq4_values4((qs[i] >> 4) & 0x0F0F0F0F);
        }
        const u32 scales_h = (u32) head.x >> 16, scales_l = (u32) head.y >> (8 * (t / 2));
        const int ls = (int) (((scales_l >> (4 * (t % 2))) & 0xF) | (((scales_h >> (2 * t)) & 3) << 4));
        s.wsi[r][2 * t] = ls - 32;
        if (t == 0) s.wd[r] = h2f((u16) (head.x & 0xFFFF));
    }
};

// Q6_K: task t: n = t / 4, l0 = 8 (t % 4): weights 128n + 32k + l0 + (0..7), k = 0..3.
template <> struct WTask<GGML_Q6_K> {
    int la[2], lb[2], hh[2], scw[2], d;  // scw: scales[8n .. 8n + 8)
    __device__ __forceinline__ void load(const u8 *blk, int t) {
        const block_q6_K *b = (const block_q6_K *) blk;
        const int n = t >> 2, l0 = 8 * (t & 3);
        load_words_a2<2>(b->ql + 64 * n + l0, la);
        load_words_a2<2>(b->ql + 64 * n + l0 + 32, lb);
        load_words_a2<2>(b->qh + 32 * n + l0, hh);
        load_words_a2<2>((const u8 *) b->scales + 8 * n, scw);
        d = load_u16((const u8 *) &b->d);
        pin(d);
    }
    __device__ __forceinline__ void unpack(MmqSmem &s, int r, int t) const {
        const int n = t >> 2, l0 = 8 * (t & 3);
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            const int base = 128 * n + l0 + 4 * w;
            s.w[r][(base + 0) / 4] = sub32_bytes6((la[w] & 0x0F0F0F0F) | ((hh[w] & 0x03030303) << 4));
            s.w[r][(base + 32) / 4] = sub32_bytes6((lb[w] & 0x0F0F0F0F) | (((hh[w] >> 2) & 0x03030303) << 4));
            s.w[r][(base + 64) / 4] = sub32_bytes6(((la[w] >> 4) & 0x0F0F0F0F) | (((hh[w] >> 4) & 0x03030303) << 4));
            s.w[r][(base + 96) / 4] = sub32_bytes6(((lb[w] >> 4) & 0x0F0F0F0F) | (((hh[w] >> 6) & 0x03030303) << 4));
        }
        if ((l0 & 15) == 0) {  // the scales of sub-blocks 8n + 2k + is: bytes is + 2k of scw
            const int is = l0 / 16;
#pragma unroll
            for (int k = 0; k < 4; ++k) s.wsi[r][8 * n + 2 * k + is] = (i8) byte_of(scw[k / 2], is + 2 * (k % 2));
        }
        if (t == 0) s.wd[r] = h2f((u16) d);
    }
};

// QK, BYTES: weights and bytes per block; MIN: w = d q - min (Q4_1 / Q5_1: + min); S16: a
// scale per 16 weights; INT: integer sub-block scales (and mins), one d (and d_min) per
// super-block; LOADS: loader tasks a thread loads before it unpacks them (2 for Q3_K, whose
// tasks hold 20 words; else all 4).
template <int TY> struct MmqType;
template <> struct MmqType<GGML_Q4_0> { enum { QK = 32, BYTES = 18, MIN = 0, S16 = 0, INT = 0, LOADS = 4 }; };
template <> struct MmqType<GGML_Q5_0> { enum { QK = 32, BYTES = 22, MIN = 0, S16 = 0, INT = 0, LOADS = 4 }; };
template <> struct MmqType<GGML_Q8_0> { enum { QK = 32, BYTES = 34, MIN = 0, S16 = 0, INT = 0, LOADS = 4 }; };
template <> struct MmqType<GGML_Q4_K> { enum { QK = 256, BYTES = 144, MIN = 1, S16 = 0, INT = 1, LOADS = 4 }; };
template <> struct MmqType<GGML_Q5_K> { enum { QK = 256, BYTES = 176, MIN = 1, S16 = 0, INT = 1, LOADS = 4 }; };
template <> struct MmqType<GGML_Q6_K> { enum { QK = 256, BYTES = 210, MIN = 0, S16 = 1, INT = 1, LOADS = 4 }; };
template <> struct MmqType<GGML_Q4_1> { enum { QK = 32, BYTES = 20, MIN = 1, S16 = 0, INT = 0, LOADS = 4 }; };
template <> struct MmqType<GGML_Q5_1> { enum { QK = 32, BYTES = 24, MIN = 1, S16 = 0, INT = 0, LOADS = 4 }; };
template <> struct MmqType<GGML_IQ4_NL> { enum { QK = 32, BYTES = 18, MIN = 0, S16 = 0, INT = 0, LOADS = 4 }; };
template <> struct MmqType<GGML_Q2_K> { enum { QK = 256, BYTES = 84, MIN = 1, S16 = 1, INT = 1, LOADS = 4 }; };
template <> struct MmqType<GGML_Q3_K> { enum { QK = 256, BYTES = 110, MIN = 0, S16 = 1, INT = 1, LOADS = 2 }; };
template <> struct MmqType<GGML_IQ4_XS> { enum { QK = 256, BYTES = 136, MIN = 0, S16 = 0, INT = 1, LOADS = 4 }; };

// Zeros for the loader task t of tile row r past the matrix's rows or blocks.
template <int TY>
static __device__ __forceinline__ void zero_w_task(MmqSmem &s, int r, int t) {
    typedef MmqType<TY> T;
#pragma unroll
    for (int i = 0; i < 8; ++i) s.w[r][8 * t + i] = 0;
    if (T::QK == 32) {
        s.ws[r][t] = 0.0f;
        s.wm[r][t] = 0.0f;
    } else {
        s.wsi[r][2 * t] = 0;
        s.wsi[r][2 * t + 1] = 0;
        if (T::MIN && t < MMQ_BK / 64) s.im.m[r][t] = 0;
        if (t == 0) {
            s.wd[r] = 0.0f;
            s.wdm[r] = 0.0f;
        }
    }
}

// Fills the weight part of the tile for K offset k0 (row r0 of the matrix): loader task
// idx = i x 128 + thread is task idx % 8 of tile row idx / 8. A task past the matrix loads
// the matrix's first block and writes zeros.
template <int TY>
static __device__ __forceinline__ void load_w_tile(const u8 *w, int nb, int rows, int r0, int k0, MmqSmem &s) {
    typedef MmqType<TY> T;
    constexpr int N = MMQ_BM * 8 / MMQ_THREADS;
#pragma unroll
    for (int i0 = 0; i0 < N; i0 += T::LOADS) {
        WTask<TY> task[T::LOADS];
        bool in[T::LOADS];
#pragma unroll
        for (int i = 0; i < T::LOADS; ++i) {
            const int idx = threadIdx.x + (i0 + i) * MMQ_THREADS, r = idx / 8, t = idx % 8;
            const int row = r0 + r, b = T::QK == 32 ? k0 / 32 + t : k0 / 256;
            in[i] = row < rows && b < nb;
            task[i].load(w + (in[i] ? ((i64) row * nb + b) * T::BYTES : 0), t);
        }
#pragma unroll
        for (int i = 0; i < T::LOADS; ++i) {
            const int idx = threadIdx.x + (i0 + i) * MMQ_THREADS, r = idx / 8, t = idx % 8;
            if (in[i]) task[i].unpack(s, r, t);
            else zero_w_task<TY>(s, r, t);
        }
    }
}

// Starts copying the activation tile into shared memory (cp.async: no registers; zeros past
// the n tokens); copy_async_wait ends it.
static __device__ __forceinline__ void load_x_tile(const i8 *xq, const float2 *xd, int k_pad, int n, int c0, int k0,
                                                   MmqSmem &s) {
#pragma unroll
    for (int i = 0; i < MMQ_BN * (MMQ_BK / 16) / MMQ_THREADS; ++i) {
        const int idx = threadIdx.x + i * MMQ_THREADS, c = idx / (MMQ_BK / 16), q = idx % (MMQ_BK / 16);
        const bool in = c0 + c < n;
        copy_async16(&s.x[c][4 * q], in ? xq + (i64) (c0 + c) * k_pad + k0 + 16 * q : xq, in);
    }
#pragma unroll
    for (int i = 0; i < MMQ_BN * (MMQ_BK / 32) / MMQ_THREADS; ++i) {
        const int idx = threadIdx.x + i * MMQ_THREADS, c = idx / (MMQ_BK / 32), j = idx % (MMQ_BK / 32);
        const bool in = c0 + c < n;
        copy_async8(&s.xd[c][j], in ? xd + (i64) (c0 + c) * (k_pad / QK8) + k0 / QK8 + j : xd, in);
    }
}

// The sums of each 16 activations of the tile (in shared memory), as the int8 halves of
// MmqIntMins.
static __device__ __forceinline__ void x_tile_sums(MmqSmem &s) {
#pragma unroll
    for (int i = 0; i < MMQ_BN * (MMQ_BK / 16) / MMQ_THREADS; ++i) {
        const int idx = threadIdx.x + i * MMQ_THREADS, c = idx / (MMQ_BK / 16), q = idx % (MMQ_BK / 16);
        const int4 v = *(const int4 *) &s.x[c][4 * q];
        const int ones = 0x01010101;
        const int b = dp4a(v.w, ones, dp4a(v.z, ones, dp4a(v.y, ones, dp4a(v.x, ones, 0))));
        ((u8 *) s.im.xlo[c])[q] = (u8) (b & 127);
        ((u8 *) s.im.xhi[c])[q] = (u8) (b >> 7);
    }
}

// (Without __CUDA_ARCH__: the CPU emulation of tests/emu/emu.h.)
static __device__ __forceinline__ void mma_k32(int (&c)[4], int a0, int a1, int a2, int a3, int b0, int b1) {
#ifdef __CUDA_ARCH__
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    const uint32_t a[4] = {(uint32_t) a0, (uint32_t) a1, (uint32_t) a2, (uint32_t) a3}, b[2] = {(uint32_t) b0, (uint32_t) b1};
    emu::mma_s8(32, c, a, b);
#endif
}

static __device__ __forceinline__ void mma_k16(int (&c)[4], int a0, int a1, int b0) {
#ifdef __CUDA_ARCH__
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
                 "{%0, %1, %2, %3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(b0));
#else
    const uint32_t a[2] = {(uint32_t) a0, (uint32_t) a1}, b[1] = {(uint32_t) b0};
    emu::mma_s8(16, c, a, b);
#endif
}

// The fragments of K step j (32 wide) of a warp's 32 x 32 sub-tile: a[mt] for weight rows
// wr + 16 mt + (0..15), b[nt] for tokens wc + 8 nt + (0..7) (mma.sync's register layouts).
static __device__ __forceinline__ void load_fragments(const MmqSmem &s, int j, int wr, int wc, int g, int tig,
                                                      int (&a)[2][4], int (&b)[4][2]) {
    const int ki = 8 * j + tig;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
        const int rr = wr + 16 * mt + g;
        a[mt][0] = s.w[rr][ki];
        a[mt][1] = s.w[rr + 8][ki];
        a[mt][2] = s.w[rr][ki + 4];
        a[mt][3] = s.w[rr + 8][ki + 4];
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
        const int cc = wc + 8 * nt + g;
        b[nt][0] = s.x[cc][ki];
        b[nt][1] = s.x[cc][ki + 4];
    }
}

// Super-block types: the tile's K steps summed in int32 with the integer sub-block scales
// (per 32, or per 16 with S16), then scaled once by the row's d and the token's Q8_K d;
// with MINS, minus d_min x d x the int32 min term (MmqIntMins), as ggml's CPU sums them.
// Bounds: |scale x dot| < 2^24 per 16 or 32 weights (IQ4_XS: 32 x 127 x 127 x 32), at
// most 16 of them per tile: far from int32 overflow.
template <bool S16, bool MINS>
static __device__ __forceinline__ void tile_products_int(const MmqSmem &s, int wr, int wc, int g, int tig,
                                                         float (&acc)[2][4][4]) {
    int isum[2][4][4] = {};
#pragma unroll 1
    for (int j = 0; j < MMQ_BK / 32; ++j) {
        int a[2][4], b[4][2];
        load_fragments(s, j, wr, wc, g, tig, a, b);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
            const int rr = wr + 16 * mt + g;
            // Scales of rows rr and rr + 8: the first and second 16 weights (S16), or all 32.
            const int sc[2][2] = {{s.wsi[rr][2 * j], s.wsi[rr][2 * j + 1]}, {s.wsi[rr + 8][2 * j], s.wsi[rr + 8][2 * j + 1]}};
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                if (S16) {
                    int c1[4] = {0, 0, 0, 0}, c2[4] = {0, 0, 0, 0};
                    mma_k16(c1, a[mt][0], a[mt][1], b[nt][0]);
                    mma_k16(c2, a[mt][2], a[mt][3], b[nt][1]);
#pragma unroll
                    for (int i = 0; i < 4; ++i) isum[mt][nt][i] += sc[i / 2][0] * c1[i] + sc[i / 2][1] * c2[i];
                } else {
                    int c[4] = {0, 0, 0, 0};
                    mma_k32(c, a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
#pragma unroll
                    for (int i = 0; i < 4; ++i) isum[mt][nt][i] += sc[i / 2][0] * c[i];
                }
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
        const int rr = wr + 16 * mt + g;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            int lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0};
            if (MINS) {
                const int cc = wc + 8 * nt + g;
                mma_k16(lo, s.im.m[rr][tig], s.im.m[rr + 8][tig], s.im.xlo[cc][tig]);
                mma_k16(hi, s.im.m[rr][tig], s.im.m[rr + 8][tig], s.im.xhi[cc][tig]);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int row = rr + 8 * (i / 2);
                const float dx = s.xd[wc + 8 * nt + 2 * tig + (i % 2)][0].x;
                acc[mt][nt][i] += s.wd[row] * dx * (float) isum[mt][nt][i];
                if (MINS) acc[mt][nt][i] -= s.wdm[row] * dx * (float) (lo[i] + 128 * hi[i]);
            }
        }
    }
}

// Types with a float scale per 32 weights and per 32 activations: each mma result
// converted (biased_to_float) and scaled.
static __device__ __forceinline__ void tile_products_float(const MmqSmem &s, int wr, int wc, int g, int tig,
                                                           float (&acc)[2][4][4]) {
#pragma unroll 2
    for (int j = 0; j < MMQ_BK / 32; ++j) {
        int a[2][4], b[4][2];
        load_fragments(s, j, wr, wc, g, tig, a, b);
        float xs[4][2];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) xs[nt][e] = s.xd[wc + 8 * nt + 2 * tig + e][j].x;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
            const int rr = wr + 16 * mt + g;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
                int c[4] = {I2F_BIAS, I2F_BIAS, I2F_BIAS, I2F_BIAS};
                mma_k32(c, a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    acc[mt][nt][i] += biased_to_float(c[i]) * s.ws[rr + 8 * (i / 2)][j] * xs[nt][i % 2];
            }
        }
    }
}

// w: rows x nb blocks; xq/xd: n activation rows (q8_1, length k_pad); k: row length.
// grid: (ceil(rows / 64), ceil(n / 64)), block: 128.
template <int TY>
static __device__ __forceinline__ void mmq(const u8 *__restrict__ w, int nb, int k, const i8 *__restrict__ xq,
                                           const float2 *__restrict__ xd, int k_pad, int n, float *__restrict__ y,
                                           int rows) {
    typedef MmqType<TY> T;
    __shared__ MmqSmem s;
    const int r0 = blockIdx.x * MMQ_BM, c0 = blockIdx.y * MMQ_BN;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int g = lane / 4, tig = lane % 4;
    const int wr = 32 * (warp % 2), wc = 32 * (warp / 2);  // warp's sub-tile

    float acc[2][4][4] = {};

    for (int k0 = 0; k0 < k; k0 += MMQ_BK) {
        load_x_tile(xq, xd, k_pad, n, c0, k0, s);
        load_w_tile<TY>(w, nb, rows, r0, k0, s);
        copy_async_wait();
        __syncthreads();
        if (T::INT && T::MIN) {
            x_tile_sums(s);
            __syncthreads();
        }
        if (T::INT) {
            tile_products_int<T::S16, T::MIN>(s, wr, wc, g, tig, acc);
        } else {
            tile_products_float(s, wr, wc, g, tig, acc);
        }
        if (!T::INT && T::MIN) {  // Q4_1 / Q5_1
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const int row = wr + 16 * mt + g + 8 * (i / 2);
                        const int col = wc + 8 * nt + 2 * tig + (i % 2);
                        float m = 0.0f;
#pragma unroll
                        for (int jj = 0; jj < MMQ_BK / 32; ++jj) m += s.wm[row][jj] * s.xd[col][jj].y;
                        acc[mt][nt][i] -= m;
                    }
        }
        __syncthreads();
    }

#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int row = r0 + wr + 16 * mt + g + 8 * (i / 2);
                const int col = c0 + wc + 8 * nt + 2 * tig + (i % 2);
                if (row < rows && col < n) y[(i64) col * rows + row] = acc[mt][nt][i];
            }
}

#define MMQ_KERNEL(NAME, TY)                                                                              \
    extern "C" __global__ void __launch_bounds__(MMQ_THREADS, MMQ_MIN_BLOCKS) mmq_##NAME(                \
        const u8 *w, int nb, int k, const i8 *xq, const float2 *xd, int k_pad, int n, float *y, int rows) { \
        mmq<TY>(w, nb, k, xq, xd, k_pad, n, y, rows);                                                     \
    }

MMQ_KERNEL(q4_0, GGML_Q4_0)
MMQ_KERNEL(q5_0, GGML_Q5_0)
MMQ_KERNEL(q8_0, GGML_Q8_0)
MMQ_KERNEL(q4_K, GGML_Q4_K)
MMQ_KERNEL(q5_K, GGML_Q5_K)
MMQ_KERNEL(q6_K, GGML_Q6_K)
MMQ_KERNEL(q4_1, GGML_Q4_1)
MMQ_KERNEL(q5_1, GGML_Q5_1)
MMQ_KERNEL(iq4_nl, GGML_IQ4_NL)
MMQ_KERNEL(q2_K, GGML_Q2_K)
MMQ_KERNEL(q3_K, GGML_Q3_K)
MMQ_KERNEL(iq4_xs, GGML_IQ4_XS)
