// Shared definitions for every gemma-rs CUDA kernel. Prepended to each .cu file before
// NVRTC compiles it, so the kernels need no system or CUDA headers at all.
//
// The GGUF block layouts below mirror the Rust `#[repr(C)]` blocks in
// gemma-kernels/src/quant/*.rs (and ggml's ggml-common.h) byte for byte; the
// static_asserts pin their sizes. Weights are uploaded to the GPU as raw GGUF blocks.

typedef signed char i8;
typedef unsigned char u8;
typedef short i16;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define WARP 32
#define NEG_INF __int_as_float(0xff800000)  // -infinity (no math.h under NVRTC)
#define QK8 32  // elements per block of the q8_1-style activation format

// KV-cache element formats (attention.cu, rope.cu; KvKind in attention.rs).
#define KV_F16 0
#define KV_F32 1
#define KV_Q8_0 2

// ---------------------------------------------------------------------------------
// GGUF weight blocks. `d`/`dmin` are IEEE half values kept as raw u16 bits.

// Q4_0: 4.5 bits/weight. 32 weights: w = d * (q - 8), q in 0..15; byte i holds
// weight i (low nibble) and weight i + 16 (high nibble).
struct block_q4_0 { u16 d; u8 qs[16]; };
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");

// Q5_0: 5.5 bits/weight. Like Q4_0 plus a fifth bit per weight in qh (bit i -> weight i),
// w = d * (q - 16).
struct block_q5_0 { u16 d; u8 qh[4]; u8 qs[16]; };
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");

// Q8_0: 8.5 bits/weight. 32 weights: w = d * q, q in -128..127.
struct block_q8_0 { u16 d; i8 qs[32]; };
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");

// Q4_K: 4.5 bits/weight. 256 weights in 8 sub-blocks of 32, each with a 6-bit scale and a
// 6-bit min packed in `scales`: w = d * sc * q - dmin * m. qs: 4 chunks of 32 bytes, chunk c
// holds weights 64c + i (low nibble) and 64c + 32 + i (high nibble).
struct block_q4_K { u16 d; u16 dmin; u8 scales[12]; u8 qs[128]; };
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");

// Q5_K: 5.5 bits/weight. Q4_K plus a fifth bit: bit 2c of qh[i] for weight 64c + i, bit
// 2c + 1 for weight 64c + 32 + i.
struct block_q5_K { u16 d; u16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; };
static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");

// Q6_K: 6.5625 bits/weight. 256 weights in 16 sub-blocks of 16 with int8 scales:
// w = d * sc * (q - 32). Half n (128 weights): ql[64n..], qh[32n..]; weight 128n + 32k + l
// takes the low (k = 0, 1) or high (k = 2, 3) nibble of ql[64n + l + 32 (k & 1)] and bits
// 2k..2k+1 of qh[32n + l]; its scale is scales[8n + l / 16 + 2k].
struct block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; u16 d; };
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");

// Q4_1: 5 bits/weight. Like Q4_0 with unsigned quants and a minimum: w = d * q + m.
struct block_q4_1 { u16 d; u16 m; u8 qs[16]; };
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");

// Q5_1: 6 bits/weight. Q4_1 plus a fifth bit per weight in qh (bit i -> weight i):
// w = d * q + m, q in 0..31.
struct block_q5_1 { u16 d; u16 m; u8 qh[4]; u8 qs[16]; };
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");

// IQ4_NL: 4.5 bits/weight. 32 weights as 4-bit indices into the non-linear table
// kvalues_iq4nl (nibbles as in Q4_0): w = d * kvalues[q].
struct block_iq4_nl { u16 d; u8 qs[16]; };
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl size");

// Q2_K: 2.625 bits/weight. 256 weights in 16 sub-blocks of 16, scales[s] = scale | min << 4
// (4 bits each): w = d * scale * q - dmin * min. Weight 128n + 32g + l is bits 2g..2g+1 of
// qs[32n + l].
struct block_q2_K { u8 scales[16]; u8 qs[64]; u16 d; u16 dmin; };
static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");

// Q3_K: 3.4375 bits/weight. 256 weights in 16 sub-blocks of 16 with 6-bit scales stored +32:
// w = d * (sc - 32) * (q - 4). Low 2 bits of weight 128n + 32g + l as in Q2_K, the high
// bit is bit 4n + g of hmask[l] (q = low + 4 * high). Scale s: low 4 bits in the nibble
// s / 8 of scales[s % 8], high 2 bits at bit 2 (s / 4) of scales[8 + s % 4].
struct block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; u16 d; };
static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");

// IQ4_XS: 4.25 bits/weight. 256 weights in 8 blocks of 32 (nibbles per block as in IQ4_NL),
// each with a 6-bit scale ls (low 4 bits: nibble ib % 2 of scales_l[ib / 2]; high 2 bits:
// bits 2 ib of scales_h): w = d * (ls - 32) * kvalues[q].
struct block_iq4_xs { u16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; };
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs size");

// The IQ4 table {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
// as four little-endian words of int8 values.
#define IQ4_T0 0xBFAD9881u
#define IQ4_T1 0xF6EADDCFu
#define IQ4_T2 0x26190D01u
#define IQ4_T3 0x71594535u

// Type ids: ggml's type numbers, so the Rust side passes GgmlType::id() unchanged.
#define GGML_F32 0
#define GGML_F16 1
#define GGML_Q4_0 2
#define GGML_Q4_1 3
#define GGML_Q5_0 6
#define GGML_Q5_1 7
#define GGML_Q8_0 8
#define GGML_Q2_K 10
#define GGML_Q3_K 11
#define GGML_Q4_K 12
#define GGML_Q5_K 13
#define GGML_Q6_K 14
#define GGML_IQ4_NL 20
#define GGML_IQ4_XS 23
#define GGML_BF16 30

// ---------------------------------------------------------------------------------
// Activations quantized for integer dot products ("q8_1" layout, struct of arrays):
// for a row of n elements (n padded to a multiple of 256 with zeros):
//   qs: n int8 values, ds: n / 32 float2 {d, s} with x ~= d * q and s = d * sum(q).
// ds of row t starts at ds_base + t * (n / 32); qs of row t at qs_base + t * n.
// The quants and scales are those of the CPU backend's activation blocks for the weight
// type (ggml's vec_dot_type), so both backends multiply the same integers:
#define ACT_Q8_0 0  // Q4_0, Q5_0, Q8_0, IQ4_NL: per 32, d = f16(amax / 127), q = rint(x * 127 / amax)
#define ACT_Q8_1 1  // Q4_1, Q5_1: the same d and q, s = f16(amax / 127 * sum(q))
#define ACT_Q8_K 2  // K-quants, IQ4_XS: per 256, d = 1 / (-127 / max) (max: the first value of
                    // largest magnitude), q = min(rint(x * -127 / max), 127)

// ---------------------------------------------------------------------------------
// Conversions (PTX, so no cuda_fp16.h is needed).

static __device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

static __device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("{ .reg .f16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

static __device__ __forceinline__ float bf2f(u16 b) {
    return __uint_as_float(((u32) b) << 16);
}

// ---------------------------------------------------------------------------------
// Programmatic dependent launch (sm_90 and up; no-ops below, and in a kernel launched
// without the attribute, see launch.rs). The next kernel on the stream may start once every
// block of this one has called pdl_launch_dependents (or exited); pdl_wait returns once the
// previous kernel has finished and its writes are visible. A kernel launched with the
// attribute calls pdl_wait before it touches any memory another kernel writes or reads
// (only the weights, which nothing writes, may be read before), and so finishes after its
// predecessor: the chain stays ordered.

static __device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

static __device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The start of a kernel with nothing to do before its inputs are ready.
static __device__ __forceinline__ void pdl_entry() {
    pdl_wait();
    pdl_launch_dependents();
}

// ---------------------------------------------------------------------------------
// Loads.

// Keeps a loaded value where it is: the compiler must materialize it at this empty asm
// statement, so it cannot sink the load into a later conditional block (the decode matvec
// issues all of a round's loads together this way).
static __device__ __forceinline__ void pin(int &v) {
    asm volatile("" : "+r"(v));
}
static __device__ __forceinline__ void pin(int2 &v) {
    pin(v.x);
    pin(v.y);
}
static __device__ __forceinline__ void pin(int4 &v) {
    pin(v.x);
    pin(v.y);
    pin(v.z);
    pin(v.w);
}

// Asks for the 128-byte line holding p to be brought into L2 (nothing waits for it; a no-op
// under the CPU emulation).
static __device__ __forceinline__ void prefetch_l2(const void *p) {
#ifdef __CUDA_ARCH__
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void) p;
#endif
}

// Asynchronous copies from global to shared memory (cp.async, sm_80+): nothing passes
// through registers, so a thread can start many before it waits (copy_async_wait waits
// for all of its own). `in` false writes zeros and reads nothing (src must still be a valid
// address). Without __CUDA_ARCH__: the CPU emulation of tests/emu/emu.h, whose write lands
// at copy_async_wait.
static __device__ __forceinline__ u32 shared_address(const void *p) {
#ifdef __CUDA_ARCH__
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
#else
    return 0;
#endif
}

static __device__ __forceinline__ void copy_async16(void *dst, const void *src, bool in) {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(shared_address(dst)), "l"(src), "r"(in ? 16 : 0)
                 : "memory");
#else
    const int4 v = in ? __ldg((const int4 *) src) : make_int4(0, 0, 0, 0);
    emu::async_copy(dst, &v, 16);
#endif
}

static __device__ __forceinline__ void copy_async8(void *dst, const void *src, bool in) {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(shared_address(dst)), "l"(src), "r"(in ? 8 : 0)
                 : "memory");
#else
    const int2 v = in ? __ldg((const int2 *) src) : make_int2(0, 0);
    emu::async_copy(dst, &v, 8);
#endif
}

static __device__ __forceinline__ void copy_async_wait() {
#ifdef __CUDA_ARCH__
    asm volatile("cp.async.wait_all;" ::: "memory");
#else
    emu::async_wait();
#endif
}

// N consecutive 32-bit words from a 2-byte aligned address in aligned loads (pinned): the N
// aligned words from the one holding p and, when p is 2 bytes past a 4-byte boundary, the
// run's last 2 bytes; funnel-shifted together. Never reads past the run; may read the 2
// bytes before p (inside the 4-byte word holding p, so inside any 4-byte aligned buffer).
template <int N> static __device__ __forceinline__ void load_words_a2(const u8 *p, int *out) {
    const u32 *base = (const u32 *) ((u64) p & ~3ull);
    const u32 shift = (u32) ((u64) p & 2) * 8;  // 0 or 16
    u32 w[N + 1];
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = __ldg(base + i);
    w[N] = shift != 0 ? (u32) __ldg((const u16 *) (p + 4 * N - 2)) : 0u;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        out[i] = (int) __funnelshift_r(w[i], w[i + 1], shift);
        pin(out[i]);
    }
}

// A 32-bit word from a 4-byte aligned address.
static __device__ __forceinline__ int load_i32(const u8 *p) {
    return (int) __ldg((const u32 *) p);
}

static __device__ __forceinline__ u16 load_u16(const u8 *p) {
    return __ldg((const u16 *) p);
}

// 16 bytes from a 16-byte aligned address, through the read-only cache.
static __device__ __forceinline__ int4 load_i4(const void *p) {
    return __ldg((const int4 *) p);
}

static __device__ __forceinline__ int2 load_i2(const void *p) {
    return __ldg((const int2 *) p);
}

// ---------------------------------------------------------------------------------
// IQ4 table lookups.

// kvalues_iq4nl[q] for q in 0..15.
static __device__ __forceinline__ int iq4_value(int q) {
    const u32 w = q < 8 ? (q < 4 ? IQ4_T0 : IQ4_T1) : (q < 12 ? IQ4_T2 : IQ4_T3);
    return (int) (i8) (w >> (8 * (q & 3)));
}

// Four table values at once: byte i of v holds an index 0..15; byte i of the result is
// kvalues_iq4nl[that index] (int8).
static __device__ __forceinline__ int iq4_values4(int v) {
    const u32 x = (u32) v;
    const u32 sel = ((x & 0x7u) | ((x >> 4) & 0x70u) | ((x >> 8) & 0x700u) | ((x >> 12) & 0x7000u));
    const u32 lo = __byte_perm(IQ4_T0, IQ4_T1, sel);
    const u32 hi = __byte_perm(IQ4_T2, IQ4_T3, sel);
    const u32 m = ((x >> 3) & 0x01010101u) * 0xFFu;  // bytes whose index is >= 8
    return (int) ((lo & ~m) | (hi & m));
}

// ---------------------------------------------------------------------------------
// Raw weight-block loads shared by the decode matvec (mmvq.cu) and the prefill matmul's
// tile loader (mmq.cu): the words one task of a block needs, loaded and pinned (nothing
// waits for them there, so a thread can have several tasks' loads in flight).

// Byte i of a 32-bit word (i may be a run-time value).
static __device__ __forceinline__ int byte_of(int w, int i) {
    return (w >> (8 * i)) & 0xFF;
}

// A 32-weight block that is an f16 scale d and then W words, 2-byte aligned: Q4_0 and
// IQ4_NL (4 words of nibbles), Q5_0 (qh, then 4 words of nibbles), Q8_0 (8 words of int8).
template <int W> struct RawD16 {
    int q[W];
    int d;  // f16 bits
    __device__ __forceinline__ void load(const u8 *blk, int) {
        load_words_a2<W>(blk + 2, q);
        d = load_u16(blk);
        pin(d);
    }
};

// Q2_K / Q3_K, half n of a block (weights 128n .. 128n + 127): the 8 qs words of the half,
// Q3_K's 8 hmask words and 12 scale bytes, and d (Q2_K: d | dmin << 16). Q2_K's scales are
// left to the caller (scw), which takes those of its own sub-blocks. Blocks are 4- (Q2_K)
// or 2-byte (Q3_K) aligned.
template <bool Q3> struct RawQ23_K {
    int qs[8];
    int hm[8];
    int scw[3];
    int dd;
    __device__ __forceinline__ void load_half(const u8 *blk, int n) {
        if (Q3) {
            load_words_a2<8>(blk + 32 + 32 * n, qs);
            load_words_a2<8>(blk, hm);
            load_words_a2<3>(blk + 96, scw);
            dd = load_u16(blk + 108);
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                qs[i] = load_i32(blk + 16 + 32 * n + 4 * i);
                pin(qs[i]);
            }
            dd = load_i32(blk + 80);
        }
        pin(dd);
    }
};

// The 6-bit scale of Q3_K sub-block 8n + k (k < 8; q3_K_scale) from the 12 scale bytes in
// three words. (With k known at compile time the words are indexed statically.)
static __device__ __forceinline__ int q3_K_scale_words(const int *w, int n, int k) {
    const int lo = (byte_of(w[k / 4], k % 4) >> (4 * n)) & 0xF;
    const int hi = (byte_of(w[2], k % 4) >> (4 * n + 2 * (k / 4))) & 3;
    return lo | (hi << 4);
}

// ---------------------------------------------------------------------------------
// Integer dot product of 4 int8 lanes, added to c.
static __device__ __forceinline__ int dp4a(int a, int b, int c) {
    return __dp4a(a, b, c);
}

// The same with the 4 lanes of a unsigned (0..255), those of b signed. (Without
// __CUDA_ARCH__: the CPU emulation of tests/emu/emu.h; the sum wraps like the GPU's.)
static __device__ __forceinline__ int dp4a_us(u32 a, int b, int c) {
#ifdef __CUDA_ARCH__
    int r;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#else
    u32 r = (u32) c;
    for (int i = 0; i < 4; ++i) r += (u32) ((int) ((a >> (8 * i)) & 0xFF) * (int) (i8) (b >> (8 * i)));
    return (int) r;
#endif
}

// ---------------------------------------------------------------------------------
// Reductions.

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of an int over the warp, wrapping like the CPU quantizers' i32 sums.
static __device__ __forceinline__ int warp_sum_i(int v) {
    u32 u = (u32) v;
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) u += (u32) __shfl_xor_sync(0xffffffffu, (int) u, o);
    return (int) u;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `scratch` holds 32 floats of shared memory.
static __device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int n_warps = blockDim.x / WARP;
    v = lane < n_warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Largest value over the whole block (same contract as block_sum).
static __device__ __forceinline__ float block_max(float v, float *scratch) {
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int n_warps = blockDim.x / WARP;
    v = lane < n_warps ? scratch[lane] : NEG_INF;
    return warp_max(v);
}

// ---------------------------------------------------------------------------------
// GELU, tanh approximation (Gemma's activation), as ggml computes it.
#define GELU_COEF_A 0.044715f
#define SQRT_2_OVER_PI 0.79788456080286535587989211986876f

static __device__ __forceinline__ float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * x * (1.0f + GELU_COEF_A * x * x)));
}

// The language model's GeGLU, gelu(g) * u, as the CPU engine computes it
// (gemma_kernels::cpu::ops::geglu_f16_inplace, llama.cpp's CPU backend): the GELU of g
// rounded to F16, rounded to F16; 0 from -10 down, g * u from 10 up. Each operation in the
// CPU's order and rounded alone (no FMA contraction), so only tanhf can differ from the
// host's, and the F16 rounding hides that but for a value next to an F16 rounding boundary.
static __device__ __forceinline__ float geglu_f16(float g, float u) {
    if (g <= -10.0f) return 0.0f;
    if (g >= 10.0f) return g * u;
    const float x = h2f(f2h(g));
    const float inner = __fmul_rn(__fmul_rn(SQRT_2_OVER_PI, x), __fadd_rn(1.0f, __fmul_rn(__fmul_rn(GELU_COEF_A, x), x)));
    const float gelu = __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, tanhf(inner)));
    return __fmul_rn(h2f(f2h(gelu)), u);
}

// ---------------------------------------------------------------------------------
// Activation quantization.

// The first value of largest magnitude of a warp's 32 values, with its sign.
static __device__ __forceinline__ float warp_first_max(float v) {
    const float amax = warp_max(fabsf(v));
    const u32 at = __ballot_sync(0xffffffffu, fabsf(v) == amax);
    return __shfl_sync(0xffffffffu, v, at ? __ffs(at) - 1 : 0);
}

// quantize_act256 once smax holds the 8 warps' warp_first_max (ACT_Q8_K; smax is not read
// for the other formats): no barrier. t: the thread's index in the 256 (value t).
static __device__ __forceinline__ void quantize_act256_store(float v, int fmt, int t, i8 *qs, float2 *ds,
                                                             const float *smax) {
    const int lane = t % WARP, warp = t / WARP;
    int q;
    float d, s;
    if (fmt == ACT_Q8_K) {
        // The first value of largest magnitude, with its sign: first within each warp, then
        // the first warp holding the block's largest magnitude.
        float mx = 0.0f;
#pragma unroll
        for (int w = 0; w < 8; ++w)
            if (fabsf(smax[w]) > fabsf(mx)) mx = smax[w];
        if (mx == 0.0f) {
            q = 0;
            d = 0.0f;
        } else {
            const float iscale = -127.0f / mx;
            // |mx| < 127 / FLT_MAX makes iscale infinite; ggml's nearest_int then gives
            // quants whose int8 is 0 (and d = 1 / iscale = +-0).
            q = fabsf(iscale) <= 3.40282347e38f ? min(__float2int_rn(iscale * v), 127) : 0;
            d = 1.0f / iscale;
        }
        s = d * warp_sum((float) q);  // exact: |sum| <= 32 * 128
    } else {
        const float amax = warp_max(fabsf(v));
        const float d32 = amax / 127.0f;
        d = h2f(f2h(d32));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const float r = v * id;
        // x86 cvtps2dq, as the CPU quantizers round: NaN and values outside the int range
        // (the +-inf products when 127 / amax overflows, amax < 127 / FLT_MAX) give INT_MIN.
        const int qi = fabsf(r) < 2147483648.0f ? __float2int_rn(r) : (int) 0x80000000u;
        q = max(-128, min(127, qi));
        // Q8_1's s sums the unclamped quants (wrapping), Q8_0's twin the stored int8 ones.
        s = fmt == ACT_Q8_1 ? h2f(f2h(d32 * (float) warp_sum_i(qi))) : d * warp_sum((float) q);
    }
    qs[t] = (i8) q;
    if (lane == 0) ds[warp] = make_float2(d, s);
}

// Quantizes 256 activations in format `fmt` (ACT_*): thread i of a block of 256 holds value
// i, warp w the 32-block w; writes qs[i] and, from lane 0 of each warp, ds[w]. Every thread
// of the block calls it (ACT_Q8_K reduces over the block). smax: 8 floats of shared memory.
static __device__ __forceinline__ void quantize_act256(float v, int fmt, i8 *qs, float2 *ds, float *smax) {
    if (fmt == ACT_Q8_K) {
        const float wmax = warp_first_max(v);
        __syncthreads();  // smax may still be read by a previous call
        if (threadIdx.x % WARP == 0) smax[threadIdx.x / WARP] = wmax;
        __syncthreads();
    }
    quantize_act256_store(v, fmt, threadIdx.x, qs, ds, smax);
}

// Threads and values per thread of the row kernels that keep a whole row in registers
// (norm.cu): rows of up to ROW_THREADS x ROW_VALUES = 6144 (Gemma 3's widest is 5376); the
// host checks. A block of 1024 threads: one row per block is a single multiprocessor's work,
// bound by the latency of its dependent steps (loads, two block sums, the quantization's
// warp reductions), which 32 warps hide where 8 did not (the 12B's 3840-value post-norm +
// residual + pre-norm + Q8_K on an H200: 9.4-13.9 us with 256 threads, 5.4-6.3 with 1024).
#define ROW_THREADS 1024
#define ROW_VALUES 6

// Thread t's values of a row of dim floats: x[ROW_THREADS j + t] for every j (0 past dim),
// their loads issued together.
static __device__ __forceinline__ void load_row(const float *x, int dim, float (&v)[ROW_VALUES]) {
#pragma unroll
    for (int j = 0; j < ROW_VALUES; ++j) {
        const int i = ROW_THREADS * j + threadIdx.x;
        v[j] = i < dim ? x[i] : 0.0f;
    }
}

// quantize_act256 of the n_groups 256-groups of a row held as load_row holds it (group
// 4j + threadIdx.x / 256: v[j] of 256 threads; a whole warp takes the same group) with one
// barrier for all of them. smax: 8 x 4 x ROW_VALUES floats of shared memory.
static __device__ __forceinline__ void quantize_act_row(const float (&v)[ROW_VALUES], int n_groups, int fmt, i8 *qs,
                                                        float2 *ds, float *smax) {
    const int t = threadIdx.x % 256, sub = threadIdx.x / 256;
    if (fmt == ACT_Q8_K) {
#pragma unroll
        for (int j = 0; j < ROW_VALUES; ++j) {
            const int g = ROW_THREADS / 256 * j + sub;
            if (g < n_groups) {  // uniform over each warp
                const float wmax = warp_first_max(v[j]);
                if (t % WARP == 0) smax[8 * g + t / WARP] = wmax;
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < ROW_VALUES; ++j) {
        const int g = ROW_THREADS / 256 * j + sub;
        if (g < n_groups) quantize_act256_store(v[j], fmt, t, qs + 256 * g, ds + 256 / QK8 * g, smax + 8 * g);
    }
}

// ---------------------------------------------------------------------------------
// K-quant scale decoding: the 6-bit scale and min of sub-block j (0..7) of Q4_K / Q5_K.
static __device__ __forceinline__ void scale_min_k4(int j, const u8 *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// ---------------------------------------------------------------------------------
// Dequantization of single weights, bit-exact with ggml's dequantize_row_* (the products
// are formed in the same order and in f32, with _rn intrinsics so that no FMA contraction
// changes a rounding). Used by the embedding gather, the float
// fallback paths and the dequantization kernel the tests compare with the CPU.

static __device__ __forceinline__ float dequant_q4_0(const u8 *row, int i) {
    const block_q4_0 *b = (const block_q4_0 *) row + i / 32;
    const int j = i % 32;
    const int q = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
    return __fmul_rn((float) (q - 8), h2f(b->d));
}

static __device__ __forceinline__ float dequant_q5_0(const u8 *row, int i) {
    const block_q5_0 *b = (const block_q5_0 *) row + i / 32;
    const int j = i % 32;
    const u32 qh = (u32) b->qh[0] | ((u32) b->qh[1] << 8) | ((u32) b->qh[2] << 16) | ((u32) b->qh[3] << 24);
    const int lo = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
    const int hi = (qh >> j) & 1;
    return __fmul_rn((float) ((lo | (hi << 4)) - 16), h2f(b->d));
}

static __device__ __forceinline__ float dequant_q8_0(const u8 *row, int i) {
    const block_q8_0 *b = (const block_q8_0 *) row + i / 32;
    return __fmul_rn((float) b->qs[i % 32], h2f(b->d));
}

static __device__ __forceinline__ float dequant_q4_K(const u8 *row, int i) {
    const block_q4_K *b = (const block_q4_K *) row + i / 256;
    const int j = i % 256;
    const int sub = j / 32;
    int sc, m;
    scale_min_k4(sub, b->scales, &sc, &m);
    const float d = __fmul_rn(h2f(b->d), (float) sc);
    const float mn = __fmul_rn(h2f(b->dmin), (float) m);
    const int chunk = j / 64, l = j % 32;
    const u8 byte = b->qs[32 * chunk + l];
    const int q = (sub & 1) ? (byte >> 4) : (byte & 0xF);
    return __fsub_rn(__fmul_rn(d, (float) q), mn);
}

static __device__ __forceinline__ float dequant_q5_K(const u8 *row, int i) {
    const block_q5_K *b = (const block_q5_K *) row + i / 256;
    const int j = i % 256;
    const int sub = j / 32;
    int sc, m;
    scale_min_k4(sub, b->scales, &sc, &m);
    const float d = __fmul_rn(h2f(b->d), (float) sc);
    const float mn = __fmul_rn(h2f(b->dmin), (float) m);
    const int chunk = j / 64, l = j % 32;
    const u8 byte = b->qs[32 * chunk + l];
    const int lo = (sub & 1) ? (byte >> 4) : (byte & 0xF);
    const int hi = (b->qh[l] >> sub) & 1;
    return __fsub_rn(__fmul_rn(d, (float) (lo + (hi << 4))), mn);
}

static __device__ __forceinline__ float dequant_q6_K(const u8 *row, int i) {
    const block_q6_K *b = (const block_q6_K *) row + i / 256;
    const int j = i % 256;
    const int n = j / 128, k = (j % 128) / 32, l = j % 32;
    const u8 ql = b->ql[64 * n + l + 32 * (k & 1)];
    const int lo = k < 2 ? (ql & 0xF) : (ql >> 4);
    const int hi = (b->qh[32 * n + l] >> (2 * k)) & 3;
    const int q = (lo | (hi << 4)) - 32;
    // ggml evaluates d * sc * q left to right, in f32.
    return __fmul_rn(__fmul_rn(h2f(b->d), (float) b->scales[8 * n + l / 16 + 2 * k]), (float) q);
}

static __device__ __forceinline__ float dequant_q4_1(const u8 *row, int i) {
    const block_q4_1 *b = (const block_q4_1 *) row + i / 32;
    const int j = i % 32;
    const int q = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
    return __fadd_rn(__fmul_rn((float) q, h2f(b->d)), h2f(b->m));
}

static __device__ __forceinline__ float dequant_q5_1(const u8 *row, int i) {
    const block_q5_1 *b = (const block_q5_1 *) row + i / 32;
    const int j = i % 32;
    const u32 qh = (u32) b->qh[0] | ((u32) b->qh[1] << 8) | ((u32) b->qh[2] << 16) | ((u32) b->qh[3] << 24);
    const int lo = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
    const int hi = (qh >> j) & 1;
    return __fadd_rn(__fmul_rn((float) (lo | (hi << 4)), h2f(b->d)), h2f(b->m));
}

static __device__ __forceinline__ float dequant_iq4_nl(const u8 *row, int i) {
    const block_iq4_nl *b = (const block_iq4_nl *) row + i / 32;
    const int j = i % 32;
    const int q = j < 16 ? (b->qs[j] & 0xF) : (b->qs[j - 16] >> 4);
    return __fmul_rn(h2f(b->d), (float) iq4_value(q));
}

static __device__ __forceinline__ float dequant_q2_K(const u8 *row, int i) {
    const block_q2_K *b = (const block_q2_K *) row + i / 256;
    const int j = i % 256;
    const int n = j / 128, g = (j % 128) / 32, l = j % 32;
    const int q = (b->qs[32 * n + l] >> (2 * g)) & 3;
    const int sc = b->scales[j / 16];
    const float dl = __fmul_rn(h2f(b->d), (float) (sc & 0xF));
    const float ml = __fmul_rn(h2f(b->dmin), (float) (sc >> 4));
    return __fsub_rn(__fmul_rn(dl, (float) q), ml);
}

// The 6-bit scale (stored + 32) of sub-block s (0..15) of a Q3_K block.
static __device__ __forceinline__ int q3_K_scale(const u8 *scales, int s) {
    const int lo = (scales[s % 8] >> (4 * (s / 8))) & 0xF;
    const int hi = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
    return lo | (hi << 4);
}

static __device__ __forceinline__ float dequant_q3_K(const u8 *row, int i) {
    const block_q3_K *b = (const block_q3_K *) row + i / 256;
    const int j = i % 256;
    const int n = j / 128, g = (j % 128) / 32, l = j % 32;
    const int lo = (b->qs[32 * n + l] >> (2 * g)) & 3;
    const int hi = (b->hmask[l] >> (4 * n + g)) & 1;
    const float dl = __fmul_rn(h2f(b->d), (float) (q3_K_scale(b->scales, j / 16) - 32));
    return __fmul_rn(dl, (float) (lo + 4 * hi - 4));
}

// The 6-bit scale ls of block ib (0..7) of an IQ4_XS block.
static __device__ __forceinline__ int iq4_xs_scale(const block_iq4_xs *b, int ib) {
    return ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b->scales_h >> (2 * ib)) & 3) << 4);
}

static __device__ __forceinline__ float dequant_iq4_xs(const u8 *row, int i) {
    const block_iq4_xs *b = (const block_iq4_xs *) row + i / 256;
    const int j = i % 256;
    const int ib = j / 32, k = j % 32;
    const u8 byte = b->qs[16 * ib + k % 16];
    const int q = k < 16 ? (byte & 0xF) : (byte >> 4);
    const float dl = __fmul_rn(h2f(b->d), (float) (iq4_xs_scale(b, ib) - 32));
    return __fmul_rn(dl, (float) iq4_value(q));
}

// Dequantizes element i of a row of type `ty` (a GGML_* id). Unknown ids give 0; the
// Rust side only launches supported types.
static __device__ __forceinline__ float dequant_elem(int ty, const u8 *row, int i) {
    switch (ty) {
    case GGML_F32: return ((const float *) row)[i];
    case GGML_F16: return h2f(((const u16 *) row)[i]);
    case GGML_BF16: return bf2f(((const u16 *) row)[i]);
    case GGML_Q4_0: return dequant_q4_0(row, i);
    case GGML_Q5_0: return dequant_q5_0(row, i);
    case GGML_Q8_0: return dequant_q8_0(row, i);
    case GGML_Q4_K: return dequant_q4_K(row, i);
    case GGML_Q5_K: return dequant_q5_K(row, i);
    case GGML_Q6_K: return dequant_q6_K(row, i);
    case GGML_Q4_1: return dequant_q4_1(row, i);
    case GGML_Q5_1: return dequant_q5_1(row, i);
    case GGML_IQ4_NL: return dequant_iq4_nl(row, i);
    case GGML_Q2_K: return dequant_q2_K(row, i);
    case GGML_Q3_K: return dequant_q3_K(row, i);
    case GGML_IQ4_XS: return dequant_iq4_xs(row, i);
    default: return 0.0f;
    }
}
