// RMSNorm: out = x * (1 / sqrt(mean(x^2) + eps)) * w, one block per row. The weight is
// shared by all rows, so the per-head QK norm is the same kernel with rows = tokens * heads
// and dim = head_dim. The norm weights in GGUF already include Gemma's +1. Every kernel
// here sums a row's squares in one order: thread t takes values t, t + B, t + 2B, ... in
// turn, then block_sum; the fused kernels run B = ROW_THREADS, rms_norm and rms_norm_add
// min(ROW_THREADS, dim rounded up to 256) (the same sums: where B >= dim, each thread holds
// one value or none, whatever B).

// 1 / rms of one row, every thread gets it. scratch: 32 floats of shared memory.
static __device__ __forceinline__ float row_inv_rms(const float *x, int dim, float eps, float *scratch) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, scratch);
    return 1.0f / sqrtf(ss / (float) dim + eps);
}

// out may alias x. grid: rows, block: see above (a multiple of 256).
extern "C" __global__ void __launch_bounds__(ROW_THREADS) rms_norm(
    const float *x, const float *__restrict__ w, float *out, int dim, float eps) {
    pdl_entry();
    __shared__ float scratch[32];
    const float *xr = x + (i64) blockIdx.x * dim;
    float *outr = out + (i64) blockIdx.x * dim;
    const float inv = row_inv_rms(xr, dim, eps, scratch);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) outr[i] = xr[i] * inv * w[i];
}

// Post-norm and residual add in one pass: x = rms_norm(x) * w, residual += x (the same
// values as rms_norm in place followed by add_f32, in one launch).
extern "C" __global__ void __launch_bounds__(ROW_THREADS) rms_norm_add(
    float *__restrict__ x, const float *__restrict__ w, float *__restrict__ residual, int dim, float eps) {
    pdl_entry();
    __shared__ float scratch[32];
    float *xr = x + (i64) blockIdx.x * dim;
    float *rr = residual + (i64) blockIdx.x * dim;
    const float inv = row_inv_rms(xr, dim, eps, scratch);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i] * inv * w[i];
        xr[i] = v;
        rr[i] += v;
    }
}

// The end of a norm whose row is held as load_row holds it: v = v * inv * w (0 past dim),
// written to out and quantized in format fmt to this row of the q8_1 layout (qs, ds: the
// row's own; k_pad / 256 groups). smax: 8 x 4 x ROW_VALUES floats of shared memory.
static __device__ __forceinline__ void norm_store_quantize(float (&v)[ROW_VALUES], float inv,
                                                           const float (&w)[ROW_VALUES], int dim, float *out,
                                                           int k_pad, int fmt, i8 *qs, float2 *ds, float *smax) {
#pragma unroll
    for (int j = 0; j < ROW_VALUES; ++j) {
        const int i = ROW_THREADS * j + threadIdx.x;
        v[j] = i < dim ? v[j] * inv * w[j] : 0.0f;
        if (i < dim) out[i] = v[j];
    }
    quantize_act_row(v, k_pad / 256, fmt, qs, ds, smax);
}

// Pre-norm fused with the activation quantization of the matrix product that follows:
// writes the normed row (the same values as rms_norm) to out and, in format fmt, to the q8_1
// layout (see quantize.cu). The row stays in registers (load_row: every load issued before
// any is waited for). dim <= k_pad <= ROW_THREADS x ROW_VALUES. grid: rows, block: ROW_THREADS.
extern "C" __global__ void __launch_bounds__(ROW_THREADS) rms_norm_q8_1(
    const float *__restrict__ x, const float *__restrict__ w, float *__restrict__ out, int dim, float eps,
    int k_pad, int fmt, i8 *__restrict__ qs, float2 *__restrict__ ds) {
    pdl_entry();
    __shared__ float scratch[32];
    __shared__ float smax[8 * 4 * ROW_VALUES];
    const int row = blockIdx.x;
    float xv[ROW_VALUES], wv[ROW_VALUES];
    load_row(x + (i64) row * dim, dim, xv);
    load_row(w, dim, wv);
    float ss = 0.0f;  // rms_norm's order: this thread's values in turn
#pragma unroll
    for (int j = 0; j < ROW_VALUES; ++j) ss += xv[j] * xv[j];
    const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float) dim + eps);
    norm_store_quantize(xv, inv, wv, dim, out + (i64) row * dim, k_pad, fmt, qs + (i64) row * k_pad,
                        ds + (i64) row * (k_pad / QK8), smax);
}

// A post-norm, its residual add and the next pre-norm with its activation quantization in
// one pass: o = rms_norm(o) * w_post, residual += o, out = rms_norm(residual) * w_next,
// written and quantized in format fmt (the same values as rms_norm_add then rms_norm_q8_1:
// every thread sums the squares of the residual values it wrote, in the order rms_norm_q8_1
// reads them). The rows stay in registers (load_row: every load issued before any is waited
// for; a loop that loaded, stored and loaded again waited for memory once per 256 values).
// dim <= k_pad <= ROW_THREADS x ROW_VALUES. grid: rows, block: ROW_THREADS.
extern "C" __global__ void __launch_bounds__(ROW_THREADS) rms_norm_add_norm_q8_1(
    float *__restrict__ o, const float *__restrict__ w_post, float *__restrict__ residual,
    const float *__restrict__ w_next, float *__restrict__ out, int dim, float eps, int k_pad, int fmt,
    i8 *__restrict__ qs, float2 *__restrict__ ds) {
    pdl_entry();
    __shared__ float scratch[32];
    __shared__ float smax[8 * 4 * ROW_VALUES];
    const int row = blockIdx.x;
    float *orow = o + (i64) row * dim;
    float *rrow = residual + (i64) row * dim;
    float ov[ROW_VALUES], rv[ROW_VALUES], wp[ROW_VALUES], wn[ROW_VALUES];
    load_row(orow, dim, ov);
    load_row(rrow, dim, rv);
    load_row(w_post, dim, wp);
    load_row(w_next, dim, wn);
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < ROW_VALUES; ++j) ss += ov[j] * ov[j];
    const float inv_post = 1.0f / sqrtf(block_sum(ss, scratch) / (float) dim + eps);
    ss = 0.0f;
#pragma unroll
    for (int j = 0; j < ROW_VALUES; ++j) {
        const int i = ROW_THREADS * j + threadIdx.x;
        if (i < dim) {
            const float v = ov[j] * inv_post * wp[j];
            orow[i] = v;
            rv[j] += v;
            rrow[i] = rv[j];
        }
        ss += rv[j] * rv[j];
    }
    const float inv_next = 1.0f / sqrtf(block_sum(ss, scratch) / (float) dim + eps);
    norm_store_quantize(rv, inv_next, wn, dim, out + (i64) row * dim, k_pad, fmt, qs + (i64) row * k_pad,
                        ds + (i64) row * (k_pad / QK8), smax);
}
