// Greedy sampling on the device: the index of the highest of n logits, by the host's rule
// (gemma_core::sampling::argmax: the first one on ties, NaN never wins, 0 when no value is
// above -inf), so that a greedy decode step reads back one id instead of its logits.
//
// Every value becomes a 64-bit key whose unsigned order is the rule's: the float's bits made
// monotonic in the high word (NaN as -inf, -0 as +0), the complement of the index in the low
// word (of equal values the lower index is the larger key). The maximum key is then the pick,
// whatever the order of the comparisons: exact and deterministic. Two kernels: argmax_part
// reduces one slice per block to a key, argmax_final the ARGMAX_PARTS keys to the id.

#define ARGMAX_THREADS 256
#define ARGMAX_PARTS 128  // blocks of argmax_part (the host's cuda::argmax::PARTS)

static __device__ __forceinline__ u64 argmax_key(float v, int i) {
    u32 b = __float_as_uint(v);
    if (v != v) b = 0xFF800000u;   // NaN ranks as -inf
    if (v == 0.0f) b = 0u;         // -0 ties with +0
    const u32 ord = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64) ord << 32) | (u64) (0xFFFFFFFFu - (u32) i);
}

static __device__ __forceinline__ u64 key_max(u64 a, u64 b) { return a > b ? a : b; }

// The largest of every thread's key (all ARGMAX_THREADS threads call it).
static __device__ __forceinline__ u64 block_max_key(u64 key) {
    __shared__ u64 keys[ARGMAX_THREADS];
    keys[threadIdx.x] = key;
    __syncthreads();
#pragma unroll
    for (int half = ARGMAX_THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) keys[threadIdx.x] = key_max(keys[threadIdx.x], keys[threadIdx.x + half]);
        __syncthreads();
    }
    return keys[0];
}

// parts[b] = the largest key of x[b * per_block .. min(n, (b + 1) * per_block)) (0 if empty).
// grid: ARGMAX_PARTS, block: ARGMAX_THREADS.
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) argmax_part(const float *__restrict__ x, int n,
                                                                         int per_block, u64 *__restrict__ parts) {
    pdl_entry();
    const int start = blockIdx.x * per_block, end = min(n, start + per_block);
    u64 best = 0;
#pragma unroll 4
    for (int i = start + threadIdx.x; i < end; i += ARGMAX_THREADS) best = key_max(best, argmax_key(x[i], i));
    best = block_max_key(best);
    if (threadIdx.x == 0) parts[blockIdx.x] = best;
}

// out[0] = the index of the largest of the ARGMAX_PARTS keys, or 0 when that key's value is
// -inf (or there were no values). grid: 1, block: ARGMAX_THREADS.
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) argmax_final(const u64 *__restrict__ parts,
                                                                          int *__restrict__ out) {
    pdl_entry();
    const u64 best = block_max_key(threadIdx.x < ARGMAX_PARTS ? parts[threadIdx.x] : 0);
    if (threadIdx.x == 0) {
        const bool above_neg_inf = (u32) (best >> 32) > (u32) ~0xFF800000u;
        out[0] = above_neg_inf ? (int) (0xFFFFFFFFu - (u32) best) : 0;
    }
}
