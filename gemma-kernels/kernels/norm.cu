// RMSNorm: out = x * (1 / sqrt(mean(x^2) + eps)) * w, one block per row. The weight is
// shared by all rows, so the per-head QK norm is the same kernel with rows = tokens * heads
// and dim = head_dim. The norm weights in GGUF already include Gemma's +1.

// 1 / rms of one row, every thread gets it. scratch: 32 floats of shared memory.
static __device__ __forceinline__ float row_inv_rms(const float *x, int dim, float eps, float *scratch) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, scratch);
    return 1.0f / sqrtf(ss / (float) dim + eps);
}

// out may alias x. grid: rows, block: 256.
extern "C" __global__ void __launch_bounds__(256) rms_norm(
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
extern "C" __global__ void __launch_bounds__(256) rms_norm_add(
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

// Pre-norm fused with the activation quantization of the matrix product that follows:
// writes the normed row (the same values as rms_norm) to out and, in format fmt, to the q8_1
// layout (see quantize.cu). dim <= k_pad. grid: rows, block: 256.
extern "C" __global__ void __launch_bounds__(256) rms_norm_q8_1(
    const float *__restrict__ x, const float *__restrict__ w, float *__restrict__ out, int dim, float eps,
    int k_pad, int fmt, i8 *__restrict__ qs, float2 *__restrict__ ds) {
    pdl_entry();
    __shared__ float scratch[32];
    __shared__ float smax[8];
    const int row = blockIdx.x;
    const float *xr = x + (i64) row * dim;
    float *outr = out + (i64) row * dim;
    const float inv = row_inv_rms(xr, dim, eps, scratch);
    i8 *qr = qs + (i64) row * k_pad;
    float2 *dr = ds + (i64) row * (k_pad / QK8);
    for (int g = 0; g < k_pad; g += 256) {  // blockDim.x == 256: one value per thread
        const int i = g + threadIdx.x;
        float v = 0.0f;
        if (i < dim) {
            v = xr[i] * inv * w[i];
            outr[i] = v;
        }
        quantize_act256(v, fmt, qr + g, dr + g / QK8, smax);
    }
}

// A post-norm, its residual add and the next pre-norm with its activation quantization in
// one pass: o = rms_norm(o) * w_post, residual += o, out = rms_norm(residual) * w_next,
// written and quantized in format fmt (the same values as rms_norm_add then rms_norm_q8_1:
// every thread sums the squares of the residual values it wrote, in the order rms_norm_q8_1
// reads them). dim <= k_pad. grid: rows, block: 256.
extern "C" __global__ void __launch_bounds__(256) rms_norm_add_norm_q8_1(
    float *__restrict__ o, const float *__restrict__ w_post, float *__restrict__ residual,
    const float *__restrict__ w_next, float *__restrict__ out, int dim, float eps, int k_pad, int fmt,
    i8 *__restrict__ qs, float2 *__restrict__ ds) {
    pdl_entry();
    __shared__ float scratch[32];
    __shared__ float smax[8];
    const int row = blockIdx.x;
    float *orow = o + (i64) row * dim;
    float *rrow = residual + (i64) row * dim;
    float *outr = out + (i64) row * dim;
    const float inv_post = row_inv_rms(orow, dim, eps, scratch);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = orow[i] * inv_post * w_post[i];
        orow[i] = v;
        const float r = rrow[i] + v;
        rrow[i] = r;
        ss += r * r;
    }
    const float inv_next = 1.0f / sqrtf(block_sum(ss, scratch) / (float) dim + eps);
    i8 *qr = qs + (i64) row * k_pad;
    float2 *dr = ds + (i64) row * (k_pad / QK8);
    for (int g = 0; g < k_pad; g += 256) {  // blockDim.x == 256: the values this thread wrote
        const int i = g + threadIdx.x;
        float v = 0.0f;
        if (i < dim) {
            v = rrow[i] * inv_next * w_next[i];
            outr[i] = v;
        }
        quantize_act256(v, fmt, qr + g, dr + g / QK8, smax);
    }
}
