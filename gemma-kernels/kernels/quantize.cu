// Activation quantization to the q8_1 layout of common.cuh, in the format (ACT_*) of the
// weight type that will multiply it. Rows are padded with zeros to k_pad (a multiple of 256)
// so every weight type can read whole blocks.

// x: rows x k floats (row stride k). qs: rows x k_pad, ds: rows x (k_pad / 32).
// grid: (k_pad / 256, rows), block: 256 threads (one value each; 8 warps, one 32-block each).
extern "C" __global__ void __launch_bounds__(256) quantize_q8_1(
    const float *__restrict__ x, int k, int k_pad, int fmt, i8 *__restrict__ qs, float2 *__restrict__ ds) {
    pdl_entry();
    __shared__ float smax[8];
    const int row = blockIdx.y;
    const int i = blockIdx.x * 256 + threadIdx.x;
    const float v = i < k ? x[(i64) row * k + i] : 0.0f;
    quantize_act256(v, fmt, qs + (i64) row * k_pad + blockIdx.x * 256,
                    ds + (i64) row * (k_pad / QK8) + blockIdx.x * 8, smax);
}

// out = geglu_f16(gate, up) (the values of elementwise.cu's geglu; out may alias gate),
// also quantized as quantize_q8_1 does for one row of n values (k_pad = n rounded up to 256:
// the layout of rows of length n when n is a multiple of 256). grid: k_pad / 256, block: 256.
extern "C" __global__ void __launch_bounds__(256) geglu_q8_1(
    const float *gate, const float *__restrict__ up, float *out, i64 n, int fmt, i8 *__restrict__ qs,
    float2 *__restrict__ ds) {
    pdl_entry();
    __shared__ float smax[8];
    const i64 i = (i64) blockIdx.x * 256 + threadIdx.x;
    float v = 0.0f;
    if (i < n) {
        v = geglu_f16(gate[i], up[i]);
        out[i] = v;
    }
    quantize_act256(v, fmt, qs + (i64) blockIdx.x * 256, ds + (i64) blockIdx.x * 8, smax);
}
