// Activation quantization to the q8_1 layout of common.cuh: per 32 values one f32 scale
// d = amax / 127, q = round(x / d), and s = d * sum(q). Rows are padded with zeros to
// k_pad (a multiple of 256) so every weight type can read whole blocks.

// x: rows x k floats (row stride k). qs: rows x k_pad, ds: rows x (k_pad / 32).
// grid: (k_pad / 256, rows), block: 256 threads (8 warps, one 32-block each).
extern "C" __global__ void __launch_bounds__(256) quantize_q8_1(
    const float *__restrict__ x, int k, int k_pad, i8 *__restrict__ qs, float2 *__restrict__ ds) {
    const int row = blockIdx.y;
    const int blk = blockIdx.x * 8 + threadIdx.x / WARP;
    const int lane = threadIdx.x % WARP;
    const int i = blk * QK8 + lane;
    const float v = i < k ? x[(i64) row * k + i] : 0.0f;
    quantize_q8_1_lane(v, qs + (i64) row * k_pad + blk * QK8, ds + (i64) row * (k_pad / QK8) + blk, lane);
}
