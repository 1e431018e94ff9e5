// Quantized matrix x matrix products for prefill on int8 tensor cores (mma.sync, sm_80+):
// y[c * rows + r] = dot(W row r, x column c) for n tokens, x quantized to q8_1.
//
// A block of 128 threads (2 x 2 warps) computes a 64 (weight rows) x 64 (tokens) tile,
// stepping through K in tiles of 256. Each step unpacks the weights of the tile to signed
// int8 in shared memory (offsets -8 / -16 / -32 applied; K-quant mins kept aside) with one
// f32 scale per 16 weights, copies the activation tile, then every warp runs
// m16n8k32 mma (m16n8k16 pairs for Q6_K, whose scales change every 16 weights) on its
// 32 x 32 sub-tile, scaling each int32 result by weight scale x activation scale into f32
// accumulators. The K-quant min term is subtracted once per K tile: sum_j min[r][j] * s[c][j]
// (Q4_1 / Q5_1 store minus their minimum there). Q2_K, whose minimums change every 16
// weights, instead multiplies an all-ones A fragment with the activations (the sums of 16
// activations) and subtracts min x sum per 16 inside the K loop.
// (Tried on an H200 and reverted: software-pipelining the tiles with cp.async, 85 KiB of
// dynamic shared memory per block, ran slower: Q4_K 688 against 656 us, Q8_0 678 against
// 519 us for 15360 x 3840 x 512, presumably from 2 blocks per SM instead of 5.)

#define MMQ_BM 64
#define MMQ_BN 64
#define MMQ_BK 256
#define MMQ_THREADS 128
// Blocks per multiprocessor the register budget must allow: 4, as many as the 47.5 KiB of
// shared memory lets fit (caps the K-quant kernels at 128 registers; they took 131-139, so
// only 3 blocks fit by registers).
#define MMQ_MIN_BLOCKS 4
#define MMQ_ROW_INTS (MMQ_BK / 4 + 4)  // +4 ints: conflict-free fragment loads

struct __align__(16) MmqSmem {
    int w[MMQ_BM][MMQ_ROW_INTS];          // weights, int8 x 4 per int
    int x[MMQ_BN][MMQ_ROW_INTS];          // activations
    float ws[MMQ_BM][MMQ_BK / 16 + 1];    // weight scale per 16 weights
    float wm[MMQ_BM][MMQ_BK / 16 + 1];    // min per 32 weights (d_min * m; Q2_K: per 16)
    float2 xd[MMQ_BN][MMQ_BK / 32];       // activation {d, s} per 32
};

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

static __device__ __forceinline__ int byte_at(int w, int i) { return (w >> (8 * i)) & 0xFF; }

static __device__ __forceinline__ void scale_min_w(int j, int s0, int s1, int s2, int *sc, int *m) {
    if (j < 4) {
        *sc = byte_at(s0, j) & 63;
        *m = byte_at(s1, j) & 63;
    } else {
        const int jj = j - 4;
        *sc = (byte_at(s2, jj) & 0xF) | ((byte_at(s0, jj) >> 6) << 4);
        *m = (byte_at(s2, jj) >> 4) | ((byte_at(s1, jj) >> 6) << 4);
    }
}

// Unpacks one 32-weight block (Q4_0 / Q5_0 / Q8_0) into tile row r at int offset oi.
template <int TY>
static __device__ __forceinline__ void unpack_block32(const u8 *blk, MmqSmem &s, int r, int j) {
    int *dst = &s.w[r][8 * j];
    float d;
    if (TY == GGML_Q4_0) {
        const block_q4_0 *b = (const block_q4_0 *) blk;
        int qs[4];
        load_words_a2<4>(b->qs, qs);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[i] = sub8_nibbles(qs[i] & 0x0F0F0F0F);
            dst[4 + i] = sub8_nibbles((qs[i] >> 4) & 0x0F0F0F0F);
        }
        d = h2f(load_u16(blk));
    } else if (TY == GGML_Q5_0) {
        int w[5];  // qh, then the 16 qs bytes
        load_words_a2<5>(blk + 2, w);
        const u32 qh = (u32) w[0];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = w[1 + i];
            dst[i] = sub16_bytes((v & 0x0F0F0F0F) | bits4_to_b4m(qh >> (4 * i)));
            dst[4 + i] = sub16_bytes(((v >> 4) & 0x0F0F0F0F) | bits4_to_b4m(qh >> (16 + 4 * i)));
        }
        d = h2f(load_u16(blk));
    } else if (TY == GGML_Q4_1 || TY == GGML_Q5_1) {
        const bool q5 = TY == GGML_Q5_1;
        const u32 qh = q5 ? (u32) load_i32(blk + 4) : 0u;  // Q4_1 blocks 4-, Q5_1 8-byte aligned
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = load_i32(blk + (q5 ? 8 : 4) + 4 * i);
            dst[i] = (v & 0x0F0F0F0F) | (q5 ? bits4_to_b4m(qh >> (4 * i)) : 0);
            dst[4 + i] = ((v >> 4) & 0x0F0F0F0F) | (q5 ? bits4_to_b4m(qh >> (16 + 4 * i)) : 0);
        }
        d = h2f(load_u16(blk));
        s.wm[r][j] = -h2f(load_u16(blk + 2));  // w = d q + m: the min term adds m * s
    } else if (TY == GGML_IQ4_NL) {
        int qs[4];
        load_words_a2<4>(blk + 2, qs);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[i] = iq4_values4(qs[i] & 0x0F0F0F0F);
            dst[4 + i] = iq4_values4((qs[i] >> 4) & 0x0F0F0F0F);
        }
        d = h2f(load_u16(blk));
    } else {
        const block_q8_0 *b = (const block_q8_0 *) blk;
        int qs[8];
        load_words_a2<8>((const u8 *) b->qs, qs);
#pragma unroll
        for (int i = 0; i < 8; ++i) dst[i] = qs[i];
        d = h2f(load_u16(blk));
    }
    s.ws[r][2 * j] = d;
    s.ws[r][2 * j + 1] = d;
}

// Unpacks task t (0..7) of one K-quant super-block into tile row r.
template <int TY>
static __device__ __forceinline__ void unpack_superblock(const u8 *blk, MmqSmem &s, int r, int t) {
    if (TY == GGML_Q4_K || TY == GGML_Q5_K) {
        const bool q5 = TY == GGML_Q5_K;
        const int ch = t >> 1, h = t & 1;
        const int4 hdr = load_i4(blk);
        const int4 v = load_i4(blk + (q5 ? 48 : 16) + 32 * ch + 16 * h);
        int qhw[4] = {0, 0, 0, 0};
        if (q5) {
            const int4 qh = load_i4(blk + 16 + 16 * h);
            qhw[0] = qh.x; qhw[1] = qh.y; qhw[2] = qh.z; qhw[3] = qh.w;
        }
        const int vw[4] = {v.x, v.y, v.z, v.w};
        int *lo = &s.w[r][(64 * ch + 16 * h) / 4];
        int *hi = &s.w[r][(64 * ch + 32 + 16 * h) / 4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            lo[i] = (vw[i] & 0x0F0F0F0F) | (((qhw[i] >> (2 * ch)) & 0x01010101) << 4);
            hi[i] = ((vw[i] >> 4) & 0x0F0F0F0F) | (((qhw[i] >> (2 * ch + 1)) & 0x01010101) << 4);
        }
        if (h == 0) {
            const float d = h2f((u16) (hdr.x & 0xFFFF)), dmin = h2f((u16) ((u32) hdr.x >> 16));
#pragma unroll
            for (int k = 0; k < 2; ++k) {
                int sc, m;
                scale_min_w(2 * ch + k, hdr.y, hdr.z, hdr.w, &sc, &m);
                s.ws[r][2 * (2 * ch + k)] = d * (float) sc;
                s.ws[r][2 * (2 * ch + k) + 1] = d * (float) sc;
                s.wm[r][2 * ch + k] = dmin * (float) m;
            }
        }
    } else if (TY == GGML_Q2_K || TY == GGML_Q3_K) {
        // Task t: n = t / 4, g = t % 4, weights 128n + 32g + l (l < 32).
        const bool q3 = TY == GGML_Q3_K;
        const int n = t >> 2, g = t & 3;
        int *dst = &s.w[r][(128 * n + 32 * g) / 4];
        int qs[8], hm[8];
        load_words_a2<8>(blk + (q3 ? 32 : 16) + 32 * n, qs);
        if (q3) load_words_a2<8>(blk, hm);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int v = (qs[i] >> (2 * g)) & 0x03030303;
            if (q3) {
                const int h = (hm[i] >> (4 * n + g)) & 0x01010101;
                const int x = (v | (h << 2)) ^ 0x04040404;  // q + 4h - 4 as int8
                dst[i] = x | ((x & 0x04040404) * 0x3E);
            } else {
                dst[i] = v;
            }
        }
        const int s0 = 8 * n + 2 * g;
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            if (q3) {
                const block_q3_K *b = (const block_q3_K *) blk;
                s.ws[r][s0 + k] = h2f(load_u16(blk + 108)) * (float) (q3_K_scale(b->scales, s0 + k) - 32);
            } else {
                const int sc = __ldg(blk + s0 + k);
                s.ws[r][s0 + k] = h2f(load_u16(blk + 80)) * (float) (sc & 0xF);
                s.wm[r][s0 + k] = h2f(load_u16(blk + 82)) * (float) (sc >> 4);
            }
        }
    } else if (TY == GGML_IQ4_XS) {
        // Task t: block t of 32 weights.
        const block_iq4_xs *b = (const block_iq4_xs *) blk;
        int *dst = &s.w[r][8 * t];
        const int2 q01 = load_i2(b->qs + 16 * t), q23 = load_i2(b->qs + 16 * t + 8);  // 8-byte aligned
        const int qs[4] = {q01.x, q01.y, q23.x, q23.y};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            dst[i] = iq4_values4(qs[i] & 0x0F0F0F0F);
            dst[4 + i] = iq4_values4((qs[i] >> 4) & 0x0F0F0F0F);
        }
        const int ls = ((__ldg(&b->scales_l[t / 2]) >> (4 * (t % 2))) & 0xF) | (((load_u16(blk + 2) >> (2 * t)) & 3) << 4);
        const float dl = h2f(load_u16(blk)) * (float) (ls - 32);
        s.ws[r][2 * t] = dl;
        s.ws[r][2 * t + 1] = dl;
    } else {  // Q6_K
        const block_q6_K *b = (const block_q6_K *) blk;
        const int n = t >> 2, l0 = 8 * (t & 3);
        const u8 *qla = b->ql + 64 * n + l0;
        const u8 *qhp = b->qh + 32 * n + l0;
        int lav[2], lbv[2], hhv[2];
        load_words_a2<2>(qla, lav);
        load_words_a2<2>(qla + 32, lbv);
        load_words_a2<2>(qhp, hhv);
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            const int la = lav[w], lb = lbv[w], hh = hhv[w];
            const int base = 128 * n + l0 + 4 * w;
            s.w[r][(base + 0) / 4] = sub32_bytes6((la & 0x0F0F0F0F) | ((hh & 0x03030303) << 4));
            s.w[r][(base + 32) / 4] = sub32_bytes6((lb & 0x0F0F0F0F) | (((hh >> 2) & 0x03030303) << 4));
            s.w[r][(base + 64) / 4] = sub32_bytes6(((la >> 4) & 0x0F0F0F0F) | (((hh >> 4) & 0x03030303) << 4));
            s.w[r][(base + 96) / 4] = sub32_bytes6(((lb >> 4) & 0x0F0F0F0F) | (((hh >> 6) & 0x03030303) << 4));
        }
        if ((l0 & 15) == 0) {
            const float d = h2f(load_u16((const u8 *) &b->d));
            const int is = l0 / 16;
#pragma unroll
            for (int k = 0; k < 4; ++k) s.ws[r][8 * n + 2 * k + is] = d * (float) b->scales[8 * n + is + 2 * k];
        }
    }
}

template <int TY> struct MmqType;
template <> struct MmqType<GGML_Q4_0> { enum { QK = 32, BYTES = 18, MIN = 0, S16 = 0 }; };
template <> struct MmqType<GGML_Q5_0> { enum { QK = 32, BYTES = 22, MIN = 0, S16 = 0 }; };
template <> struct MmqType<GGML_Q8_0> { enum { QK = 32, BYTES = 34, MIN = 0, S16 = 0 }; };
template <> struct MmqType<GGML_Q4_K> { enum { QK = 256, BYTES = 144, MIN = 1, S16 = 0 }; };
template <> struct MmqType<GGML_Q5_K> { enum { QK = 256, BYTES = 176, MIN = 1, S16 = 0 }; };
template <> struct MmqType<GGML_Q6_K> { enum { QK = 256, BYTES = 210, MIN = 0, S16 = 1 }; };
template <> struct MmqType<GGML_Q4_1> { enum { QK = 32, BYTES = 20, MIN = 1, S16 = 0 }; };
template <> struct MmqType<GGML_Q5_1> { enum { QK = 32, BYTES = 24, MIN = 1, S16 = 0 }; };
template <> struct MmqType<GGML_IQ4_NL> { enum { QK = 32, BYTES = 18, MIN = 0, S16 = 0 }; };
template <> struct MmqType<GGML_Q2_K> { enum { QK = 256, BYTES = 84, MIN = 2, S16 = 1 }; };
template <> struct MmqType<GGML_Q3_K> { enum { QK = 256, BYTES = 110, MIN = 0, S16 = 1 }; };
template <> struct MmqType<GGML_IQ4_XS> { enum { QK = 256, BYTES = 136, MIN = 0, S16 = 0 }; };

// Fills the weight part of the tile for K offset k0 (row r0 of the matrix).
template <int TY>
static __device__ __forceinline__ void load_w_tile(const u8 *w, int nb, int rows, int r0, int k0, MmqSmem &s) {
    typedef MmqType<TY> T;
    // 64 rows x 8 tasks: a 32-weight block per task, or an eighth of a super-block.
    for (int task = threadIdx.x; task < MMQ_BM * 8; task += MMQ_THREADS) {
        const int r = task / 8, t = task % 8;
        const int row = r0 + r;
        if (T::QK == 32) {
            const int b = k0 / 32 + t;
            if (row < rows && b < nb) {
                unpack_block32<TY>(w + ((i64) row * nb + b) * T::BYTES, s, r, t);
            } else {
#pragma unroll
                for (int i = 0; i < 8; ++i) s.w[r][8 * t + i] = 0;
                s.ws[r][2 * t] = 0.0f;
                s.ws[r][2 * t + 1] = 0.0f;
                s.wm[r][t] = 0.0f;
            }
        } else {
            const int b = k0 / 256;
            if (row < rows) {
                unpack_superblock<TY>(w + ((i64) row * nb + b) * T::BYTES, s, r, t);
            } else {
#pragma unroll
                for (int i = 0; i < 8; ++i) s.w[r][8 * t + i] = 0;
                s.ws[r][2 * t] = 0.0f;
                s.ws[r][2 * t + 1] = 0.0f;
                s.wm[r][2 * t] = 0.0f;
                s.wm[r][2 * t + 1] = 0.0f;
            }
        }
    }
}

static __device__ __forceinline__ void load_x_tile(const i8 *xq, const float2 *xd, int k_pad, int n, int c0,
                                                   int k0, MmqSmem &s) {
    for (int idx = threadIdx.x; idx < MMQ_BN * (MMQ_BK / 16); idx += MMQ_THREADS) {
        const int c = idx / (MMQ_BK / 16), q = idx % (MMQ_BK / 16);
        const int col = c0 + c;
        int4 v = make_int4(0, 0, 0, 0);
        if (col < n) v = load_i4(xq + (i64) col * k_pad + k0 + 16 * q);
        *(int4 *) &s.x[c][4 * q] = v;
    }
    for (int idx = threadIdx.x; idx < MMQ_BN * (MMQ_BK / 32); idx += MMQ_THREADS) {
        const int c = idx / (MMQ_BK / 32), j = idx % (MMQ_BK / 32);
        const int col = c0 + c;
        s.xd[c][j] = col < n ? xd[(i64) col * (k_pad / QK8) + k0 / QK8 + j] : make_float2(0.0f, 0.0f);
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

    float acc[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += MMQ_BK) {
        load_w_tile<TY>(w, nb, rows, r0, k0, s);
        load_x_tile(xq, xd, k_pad, n, c0, k0, s);
        __syncthreads();
#pragma unroll 2
        for (int j = 0; j < MMQ_BK / 32; ++j) {
            const int ki = 8 * j + tig;
            int a[2][4], b[4][2];
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
            int ones[4][2][4];  // Q2_K: sums of the 16-activation halves per column
            if (T::MIN == 2) {
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
                        for (int i = 0; i < 4; ++i) ones[nt][hh][i] = 0;
                        mma_k16(ones[nt][hh], 0x01010101, 0x01010101, b[nt][hh]);
                    }
            }
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
                    if (T::S16) {
                        int c1[4] = {0, 0, 0, 0}, c2[4] = {0, 0, 0, 0};
                        mma_k16(c1, a[mt][0], a[mt][1], b[nt][0]);
                        mma_k16(c2, a[mt][2], a[mt][3], b[nt][1]);
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            const int row = rr + 8 * (i / 2);
                            float v = (float) c1[i] * s.ws[row][2 * j] + (float) c2[i] * s.ws[row][2 * j + 1];
                            if (T::MIN == 2)
                                v -= (float) ones[nt][0][i] * s.wm[row][2 * j] + (float) ones[nt][1][i] * s.wm[row][2 * j + 1];
                            acc[mt][nt][i] += v * xs[nt][i % 2];
                        }
                    } else {
                        int c[4] = {0, 0, 0, 0};
                        mma_k32(c, a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1]);
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            const int row = rr + 8 * (i / 2);
                            acc[mt][nt][i] += (float) c[i] * s.ws[row][2 * j] * xs[nt][i % 2];
                        }
                    }
                }
            }
        }
        if (T::MIN == 1) {
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
