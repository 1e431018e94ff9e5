// A CPU emulation of the CUDA execution model, enough to compile gemma-kernels' .cu files as
// host C++ and run them with real SIMT semantics (tests/cuda_emulated.rs and
// tests/cuda_emulated_mmvq.rs, no GPU needed).
//
// Emulated:
// - A launch (emu::launch) runs its blocks one after the other, in grid order or (BlockOrder::
//   BySchedule) shuffled / backwards by the schedule. The threads of a block are cooperative
//   fibers (a hand-written stack switch on x86-64, ucontext elsewhere) that switch, straight
//   from one to the next, only at synchronization points, in an order chosen by a
//   seeded schedule: Random (any ready thread next) or WarpGreedy (the current warp runs as
//   far as it can before another warp starts, so warps drift apart as far as the code lets
//   them). A missing __syncthreads lets a later phase overwrite shared memory that another
//   warp still reads, and gives wrong results under some schedule.
// - __syncthreads is a barrier of the whole block. __shfl_sync, __shfl_xor_sync and
//   __ballot_sync (full mask only) make all 32 lanes of a warp meet, exchange, and meet
//   again. A thread that never reaches a barrier the others wait at, or lanes of one warp at
//   different barriers (divergence), stop the program with exit code 3 and a message.
// - __shared__ variables are one static copy, shared by the fibers of the running block.
// - cp.async (common.cuh's copy_async*): the source is read when the copy is issued, the
//   shared-memory write happens at the thread's copy_async_wait (emu::async_copy /
//   async_wait); a thread that ends with copies not waited for stops the program.
// - The int8 tensor-core products of mmq.cu (mma.sync m16n8k16 / m16n8k32, s8 x s8 + s32)
//   with their fragment layouts, as a warp-wide step (emu::mma_s8); likewise the f16 / bf16
//   m16n8k16 mma with f32 accumulation (emu::mma_f16).
// - The arithmetic the quantizers depend on, exactly: __float2int_rn (PTX cvt.rni.s32.f32:
//   nearest even, saturating, NaN -> 0), the _rn intrinsics (never fused), and the two PTX
//   asm f16 conversions of common.cuh (cvt.f32.f16, cvt.rn.f16.f32) in software; the
//   integer intrinsics of the matvec kernels (__dp4a, __funnelshift_r, __byte_perm with
//   selector nibbles below 8).
// - Faults a GPU raises on loads: __ldg of a vector type (int2, int4, float2: aligned as
//   CUDA's) or a u16 from a misaligned address stops the program, and so does an __ldg
//   outside the registered allocations (emu::readable, when a program registers any: see
//   mmvq_main.cpp). Plain dereferences are not checked (mmvq_main.cpp's guard bytes catch
//   stray writes).
//
// Not emulated:
// - Concurrent blocks, atomics, memory fences, races between blocks in global memory.
// - Partial warp masks and independent scheduling of the lanes of a warp between
//   synchronization points (lanes interleave only there, like warps).
// - The GPU's math library: tanhf, sqrtf, ... are the host's, and the compiler's floating
//   point contraction differs (build with -ffp-contract=off). Float outputs of the kernels
//   may differ from a GPU's in the last bits; the tests compare what the kernels derive
//   from their own float values.
// - Shared memory starts with the previous block's contents (undefined on a GPU).
// - Anything beyond the CUDA surface of the kernel files the emulator programs include,
//   defined below (__launch_bounds__, __align__ and __restrict__ are accepted; only
//   __align__ means something here); blocks are 1-D (threadIdx.y = threadIdx.z = 0).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <ucontext.h>

namespace emu {

// A suspended fiber's machine state. On x86-64 a stack switch of a few instructions
// (emu_switch below: the callee-saved registers, MXCSR and the x87 control word are pushed on
// the old stack, the stack pointer swapped, the new fiber's popped); elsewhere ucontext,
// whose swapcontext costs a system call per switch.
#if defined(__x86_64__)
extern "C" void emu_switch(void **save_sp, void *to_sp);
asm(R"(
    .text
    .weak emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

struct Context {
    void *sp = nullptr;
};

// Saves the running fiber's state in `from` and resumes `to`.
inline void switch_context(Context &from, Context &to) { emu_switch(&from.sp, to.sp); }

// Prepares `c` to run `entry` (which never returns) on `stack`: the frame emu_switch pops,
// then entry's address for its `ret`, with the stack aligned as a call leaves it.
inline void make_context(Context &c, char *stack, size_t size, void (*entry)()) {
    uintptr_t top = ((uintptr_t) stack + size) & ~(uintptr_t) 15;
    uint64_t *sp = (uint64_t *) (top - 16);
    *sp = (uint64_t) (uintptr_t) entry;
    for (int i = 0; i < 6; ++i) *--sp = 0;      // rbp, rbx, r12..r15
    *--sp = 0x1F80ull | (0x037Full << 32);      // MXCSR default, x87 control word default
    c.sp = sp;
}
#else
struct Context {
    ucontext_t uc;
};

inline void switch_context(Context &from, Context &to) { swapcontext(&from.uc, &to.uc); }

inline void make_context(Context &c, char *stack, size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
#endif

enum class Schedule { Random, WarpGreedy };

// What a thread waits for at a barrier (two different ones at one barrier: divergence).
enum Kind { K_SYNC, K_SHFL_WRITE, K_SHFL_READ, K_BALLOT_WRITE, K_BALLOT_READ, K_MMA_WRITE, K_MMA_READ };

inline const char *kind_name(int k) {
    static const char *names[] = {"__syncthreads", "shfl (write)", "shfl (read)", "ballot (write)",
                                  "ballot (read)",  "mma (write)",  "mma (read)"};
    return names[k];
}

constexpr int MAX_THREADS = 1024;
constexpr int MAX_WARPS = MAX_THREADS / 32;
constexpr size_t STACK_BYTES = 64 * 1024;

struct Barrier {
    int size = 0;
    int kind = K_SYNC;
    std::vector<int> waiters;  // threads that arrived, released when all `size` have
};

// A cp.async copy issued and not yet waited for: its source bytes, read when issued, land
// at dst only at the thread's copy_async_wait.
struct PendingCopy {
    void *dst;
    unsigned n;
    uint8_t bytes[16];
};

struct Fiber {
    Context ctx;
    unsigned tid = 0;
    bool done = false;
    std::vector<char> stack;
    std::vector<PendingCopy> pending;
};

struct uint3_ { unsigned x, y, z; };

// The schedule's random numbers (splitmix64: cheap, as one is drawn per thread switch).
struct Rng {
    using result_type = uint64_t;
    uint64_t state = 1;
    static constexpr result_type min() { return 0; }
    static constexpr result_type max() { return ~(result_type) 0; }
    void seed(uint64_t s) { state = s; }
    result_type operator()() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Uniform in [0, n).
    size_t below(size_t n) { return (size_t) (((unsigned __int128) (*this)() * n) >> 64); }
};

// The running block. Barrier 0 is the block's, barrier 1 + w warp w's.
struct Block {
    Fiber fibers[MAX_THREADS];
    Barrier barriers[1 + MAX_WARPS];
    std::vector<int> ready[MAX_WARPS];  // per warp: threads that can run
    int n_ready = 0;
    int n_done = 0;
    int cur_warp = 0;
    Fiber *cur = nullptr;
    Context sched_ctx;
    uint32_t exchange_buf[MAX_WARPS][32];
    void (*body)() = nullptr;
    Schedule schedule = Schedule::Random;
    Rng rng;
};

inline Block B;
inline uint3_ block_idx, block_dim, grid_dim;

[[noreturn]] inline void die(const char *msg) {
    std::fprintf(stderr, "EMU ERROR: %s (block %u,%u", msg, block_idx.x, block_idx.y);
    if (B.cur) std::fprintf(stderr, ", thread %u", B.cur->tid);
    std::fprintf(stderr, ")\n");
    std::exit(3);
}

// The readable "device allocations": [start, end) ranges. When any are registered, an __ldg
// outside all of them stops the program (a read past a buffer, as a GPU may fault on).
inline std::vector<std::pair<uintptr_t, uintptr_t>> readable;

// A program with its own allocation table (driver.cpp) sets this instead: whether [start,
// start + n) lies in one allocation.
inline bool (*is_readable)(uintptr_t start, size_t n) = nullptr;

inline void check_readable(const void *p, size_t n) {
    const uintptr_t a = (uintptr_t) p;
    if (is_readable) {
        if (!is_readable(a, n)) die("__ldg outside every device allocation");
        return;
    }
    if (readable.empty()) return;
    for (const auto &r : readable)
        if (a >= r.first && a + n <= r.second) return;
    die("__ldg outside every device allocation");
}

inline void make_ready(int t) {
    B.ready[t / 32].push_back(t);
    B.n_ready++;
}

// Removes the next thread to run from the ready lists.
inline int pick_thread() {
    int w = B.cur_warp;
    if (B.schedule == Schedule::Random || B.ready[w].empty()) {
        size_t r = B.rng.below((size_t) B.n_ready);
        for (w = 0; r >= B.ready[w].size(); ++w) r -= B.ready[w].size();
        B.cur_warp = w;
    }
    std::vector<int> &list = B.ready[w];
    const size_t i = B.rng.below(list.size());
    const int t = list[i];
    list[i] = list.back();
    list.pop_back();
    B.n_ready--;
    return t;
}

// Leaves the current thread for the next one the schedule picks (straight from fiber to
// fiber), or for the scheduler of run_block when no thread is ready (all done, or deadlock).
// Returns when the current thread is picked again.
inline void run_next() {
    Fiber *self = B.cur;
    if (B.n_ready == 0) {
        B.cur = nullptr;
        switch_context(self->ctx, B.sched_ctx);
        return;
    }
    Fiber *next = &B.fibers[pick_thread()];
    if (next == self) return;
    B.cur = next;
    switch_context(self->ctx, next->ctx);
}

// The current thread arrives at barrier `bar` for `kind`; returns when the barrier released
// it and the schedule picked it again.
inline void arrive(int bar, int kind) {
    Barrier &b = B.barriers[bar];
    if (!b.waiters.empty() && b.kind != kind) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "divergence at barrier %d: %s while others wait at %s", bar, kind_name(kind),
                      kind_name(b.kind));
        die(msg);
    }
    b.kind = kind;
    b.waiters.push_back((int) B.cur->tid);
    if ((int) b.waiters.size() == b.size) {
        for (int t : b.waiters) make_ready(t);
        b.waiters.clear();
    }
    run_next();
}

inline void fiber_main() {
    B.body();
    if (!B.cur->pending.empty()) die("cp.async copies never waited for (copy_async_wait)");
    B.cur->done = true;
    B.n_done++;
    run_next();
}

// cp.async (common.cuh's copy_async16 / copy_async8): the n source bytes are read now, the
// shared-memory write waits for the thread's copy_async_wait, so a kernel that reads the
// tile before waiting (or before the barrier after it) sees the old contents.
inline void async_copy(void *dst, const void *src, unsigned n) {
    PendingCopy c{dst, n, {}};
    std::memcpy(c.bytes, src, n);
    B.cur->pending.push_back(c);
}

inline void async_wait() {
    for (const PendingCopy &c : B.cur->pending) std::memcpy(c.dst, c.bytes, c.n);
    B.cur->pending.clear();
}

// Resets `f` to start thread `tid` at fiber_main.
[[gnu::noinline]] inline void start_fiber(Fiber &f, unsigned tid) {
    f.tid = tid;
    f.done = false;
    f.pending.clear();
    if (f.stack.empty()) f.stack.resize(STACK_BYTES);
    make_context(f.ctx, f.stack.data(), f.stack.size(), fiber_main);
}

// Runs `body` as one block of n_threads threads (a multiple of 32).
inline void run_block(int n_threads, void (*body)()) {
    if (n_threads % 32 != 0 || n_threads <= 0 || n_threads > MAX_THREADS) die("bad block size");
    B.body = body;
    B.n_ready = 0;
    B.barriers[0] = Barrier{n_threads, K_SYNC, {}};
    for (int w = 0; w < n_threads / 32; ++w) {
        B.barriers[1 + w] = Barrier{32, K_SYNC, {}};
        B.ready[w].clear();
    }
    for (int t = 0; t < n_threads; ++t) {
        start_fiber(B.fibers[t], (unsigned) t);
        make_ready(t);
    }
    B.n_done = 0;
    while (B.n_done < n_threads) {
        if (B.n_ready == 0) {
            std::fprintf(stderr, "  %d of %d threads finished\n", B.n_done, n_threads);
            for (int b = 0; b <= n_threads / 32; ++b) {
                const Barrier &bar = B.barriers[b];
                if (bar.waiters.empty()) continue;
                std::fprintf(stderr, "  %zu threads (first: %d) wait at %s of %s\n", bar.waiters.size(), bar.waiters[0],
                             kind_name(bar.kind), b == 0 ? "the block" : "a warp");
            }
            die("deadlock: threads wait at a barrier that the others never reach");
        }
        B.cur = &B.fibers[pick_thread()];
        switch_context(B.sched_ctx, B.cur->ctx);  // back when no thread is ready
    }
}

// Which order a launch runs its blocks in: the grid's, or (BySchedule) shuffled under the
// Random schedule and backwards under WarpGreedy, so a result that depends on which of two
// blocks writes a location last differs between the schedules.
enum class BlockOrder { Grid, BySchedule };

inline std::function<void()> launch_body;
inline void run_launch_body() { launch_body(); }

// Runs `kernel` on a grid of gx x gy blocks of `threads` threads, one block after the other.
inline void launch(unsigned gx, unsigned gy, unsigned threads, std::function<void()> kernel,
                   BlockOrder order = BlockOrder::Grid) {
    launch_body = std::move(kernel);
    grid_dim = {gx, gy, 1};
    block_dim = {threads, 1, 1};
    std::vector<uint3_> blocks;
    for (unsigned y = 0; y < gy; ++y)
        for (unsigned x = 0; x < gx; ++x) blocks.push_back({x, y, 0});
    if (order == BlockOrder::BySchedule) {
        if (B.schedule == Schedule::Random) std::shuffle(blocks.begin(), blocks.end(), B.rng);
        else std::reverse(blocks.begin(), blocks.end());
    }
    for (const uint3_ &blk : blocks) {
        block_idx = blk;
        run_block((int) threads, run_launch_body);
    }
}

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Lane `src_lane` of the current warp's `mine`: all 32 lanes write, meet, read, meet.
inline uint32_t warp_exchange(uint32_t mine, int src_lane) {
    const int t = (int) B.cur->tid, w = t / 32;
    B.exchange_buf[w][t % 32] = mine;
    arrive(1 + w, K_SHFL_WRITE);
    const uint32_t r = B.exchange_buf[w][src_lane & 31];
    arrive(1 + w, K_SHFL_READ);
    return r;
}

// One lane's fragments of an int8 mma.sync.
struct MmaFragments {
    uint32_t a[4], b[2];
};
inline MmaFragments mma_buf[MAX_WARPS][32];

// mma.sync.aligned.m16n8k{K}.row.col.s32.s8.s8.s32 (K = 16 or 32) of the current thread's
// warp, with the PTX ISA's fragment layouts (g = lane / 4, t = lane % 4): A register r holds
// row g + 8 (r % 2) and the 4 bytes k = 4t + 16 (r / 2) .. + 3; B register r the 4 bytes
// k = 4t + 16 r .. + 3 of column g; C / D element i is row g + 8 (i / 2), column
// 2t + i % 2. Every lane must call it (a warp-wide barrier, like a shuffle).
inline void mma_s8(int k_size, int32_t (&c)[4], const uint32_t *a, const uint32_t *b) {
    const int tid = (int) B.cur->tid, w = tid / 32, lane = tid % 32;
    MmaFragments &mine = mma_buf[w][lane];
    for (int r = 0; r < k_size / 8; ++r) mine.a[r] = a[r];
    for (int r = 0; r < k_size / 16; ++r) mine.b[r] = b[r];
    arrive(1 + w, K_MMA_WRITE);
    auto byte = [](uint32_t v, int i) { return (int) (int8_t) (v >> (8 * i)); };
    auto a_at = [&](int row, int k) { return byte(mma_buf[w][4 * (row % 8) + (k % 16) / 4].a[row / 8 + 2 * (k / 16)], k % 4); };
    auto b_at = [&](int k, int col) { return byte(mma_buf[w][4 * col + (k % 16) / 4].b[k / 16], k % 4); };
    const int g = lane / 4, t = lane % 4;
    int32_t d[4];
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        uint32_t sum = (uint32_t) c[i];  // wraps like the hardware's 32-bit accumulator
        for (int k = 0; k < k_size; ++k) sum += (uint32_t) (a_at(row, k) * b_at(k, col));
        d[i] = (int32_t) sum;
    }
    arrive(1 + w, K_MMA_READ);
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

// IEEE binary16 -> binary32 (exact), as PTX cvt.f32.f16.
inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    const int e = (h >> 10) & 0x1f;
    const uint32_t m = h & 0x3ff;
    if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0));  // inf, quiet NaN
    if (e == 0) return bits_float(sign | float_bits((float) m * 0x1p-24f));  // zero, subnormal
    return bits_float(sign | ((uint32_t) (e - 15 + 127) << 23) | (m << 13));
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 of the current thread's
// warp (bf16 false: f16), with the PTX ISA's fragment layouts (g = lane / 4, t = lane % 4):
// A register r holds row g + 8 (r % 2) and the 2 values k = 2t + 8 (r / 2) .. + 1 (low half
// first); B register r the 2 values k = 2t + 8 r .. + 1 of column g; C / D element i is
// row g + 8 (i / 2), column 2t + i % 2. The products are exact; each output's 16 products
// are summed in f64 and added to c in one rounding (a GPU's tensor cores sum in another
// order, to within a few f32 ulps). Every lane must call it.
inline void mma_f16(bool bf16, float (&c)[4], const uint32_t *a, const uint32_t *b) {
    const int tid = (int) B.cur->tid, w = tid / 32, lane = tid % 32;
    MmaFragments &mine = mma_buf[w][lane];
    for (int r = 0; r < 4; ++r) mine.a[r] = a[r];
    for (int r = 0; r < 2; ++r) mine.b[r] = b[r];
    arrive(1 + w, K_MMA_WRITE);
    auto value = [bf16](uint32_t v, int i) {
        const uint16_t h = (uint16_t) (v >> (16 * i));
        return (double) (bf16 ? bits_float((uint32_t) h << 16) : half_to_float(h));
    };
    auto a_at = [&](int row, int k) { return value(mma_buf[w][4 * (row % 8) + (k % 8) / 2].a[row / 8 + 2 * (k / 8)], k % 2); };
    auto b_at = [&](int k, int col) { return value(mma_buf[w][4 * col + (k % 8) / 2].b[k / 8], k % 2); };
    const int g = lane / 4, t = lane % 4;
    float d[4];
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        double sum = 0.0;
        for (int k = 0; k < 16; ++k) sum += a_at(row, k) * b_at(k, col);
        d[i] = (float) ((double) c[i] + sum);
    }
    arrive(1 + w, K_MMA_READ);
    for (int i = 0; i < 4; ++i) c[i] = d[i];
}

// binary32 -> binary16, round to nearest even, as PTX cvt.rn.f16.f32.
inline uint16_t float_to_half(float f) {
    const uint32_t x = float_bits(f);
    const uint16_t sign = (x >> 16) & 0x8000;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00 | ((ax >> 13) & 0x3ff);  // quiet NaN
    if (ax == 0x7f800000u) return sign | 0x7c00;
    if ((ax >> 23) == 0) return sign;  // f32 subnormal: far below half the smallest f16
    const int e = (int) (ax >> 23) - 127;
    const uint32_t mant = (ax & 0x7fffff) | 0x800000;  // 24-bit significand
    if (e > 15) return sign | 0x7c00;
    // Right shift from the 24-bit significand to the f16 one (normal: 11 bits).
    const int shift = e >= -14 ? 13 : 13 + (-14 - e);
    if (shift > 25) return sign;  // below half the smallest f16 subnormal
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    if (e < -14) return sign | (uint16_t) q;  // subnormal (q == 0x400 is the smallest normal)
    const uint32_t bits = ((uint32_t) (e + 15) << 10) + (q - 0x400);  // a carry bumps the exponent
    return sign | (uint16_t) (bits >= 0x7c00 ? 0x7c00 : bits);
}

}  // namespace emu

// ---------------------------------------------------------------------------------
// The CUDA surface the kernels use.

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define threadIdx (emu::uint3_{emu::B.cur->tid, 0, 0})
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

// Aligned as CUDA's vector types: a load of one from a misaligned address faults on a GPU.
struct alignas(8) float2 { float x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };

inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
// A read-only load; stops the program where a GPU would fault (misaligned address).
template <class T> inline T __ldg(const T *p) {
    if ((uintptr_t) p % alignof(T) != 0) emu::die("misaligned __ldg (a GPU faults)");
    emu::check_readable(p, sizeof(T));
    return *p;
}
inline float __int_as_float(int i) { return emu::bits_float((uint32_t) i); }
inline float __uint_as_float(unsigned u) { return emu::bits_float(u); }
inline unsigned __float_as_uint(float f) { return emu::float_bits(f); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }

// PTX cvt.rni.s32.f32: nearest even, saturating, NaN -> 0.
inline int __float2int_rn(float x) {
    if (x != x) return 0;
    const float r = std::nearbyintf(x);
    if (r >= 2147483648.0f) return INT32_MAX;
    if (r < -2147483648.0f) return INT32_MIN;
    return (int) r;
}

inline int __ffs(int x) { return x == 0 ? 0 : __builtin_ctz((unsigned) x) + 1; }

// The 32 bits of hi:lo from bit (shift & 31) up.
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    return (unsigned) (((((uint64_t) hi) << 32) | lo) >> (shift & 31));
}

inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = ((uint64_t) y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned) ((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}

// Signed 8-bit lanes; the sum wraps like the GPU's 32-bit add.
inline int __dp4a(int a, int b, int c) {
    uint32_t r = (uint32_t) c;
    for (int i = 0; i < 4; ++i) r += (uint32_t) ((int) (signed char) (a >> (8 * i)) * (int) (signed char) (b >> (8 * i)));
    return (int) r;
}

inline void __syncthreads() { emu::arrive(0, emu::K_SYNC); }

inline void emu_full_mask(unsigned mask) {
    if (mask != 0xffffffffu) emu::die("partial warp mask (not emulated)");
}

inline float __shfl_sync(unsigned mask, float v, int src_lane) {
    emu_full_mask(mask);
    return emu::bits_float(emu::warp_exchange(emu::float_bits(v), src_lane));
}

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
    emu_full_mask(mask);
    return emu::bits_float(emu::warp_exchange(emu::float_bits(v), ((int) emu::B.cur->tid % 32) ^ lane_mask));
}

inline int __shfl_xor_sync(unsigned mask, int v, int lane_mask) {
    emu_full_mask(mask);
    return (int) emu::warp_exchange((uint32_t) v, ((int) emu::B.cur->tid % 32) ^ lane_mask);
}

inline unsigned __ballot_sync(unsigned mask, int pred) {
    emu_full_mask(mask);
    const int t = (int) emu::B.cur->tid, w = t / 32;
    emu::B.exchange_buf[w][t % 32] = pred ? 1 : 0;
    emu::arrive(1 + w, emu::K_BALLOT_WRITE);
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= emu::B.exchange_buf[w][i] << i;
    emu::arrive(1 + w, emu::K_BALLOT_READ);
    return r;
}

// The two PTX asm statements of common.cuh: h2f (cvt.f32.f16 from u16 h into float f) and
// f2h (cvt.rn.f16.f32 from float f into u16 h). Both functions name their operands f and h,
// so `asm(...)` becomes a call on those two variables, chosen by the instruction text.
// Includers #undef asm after the kernel sources.
inline void emu_asm(const char *text, float &f, unsigned short &h) {
    if (std::strstr(text, "cvt.f32.f16")) f = emu::half_to_float(h);
    else if (std::strstr(text, "cvt.rn.f16.f32")) h = emu::float_to_half(f);
    else emu::die("unknown asm statement");
}
#define asm(...) emu_asm(#__VA_ARGS__, f, h)
