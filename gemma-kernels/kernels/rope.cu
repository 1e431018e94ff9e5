// NEOX-style rotary embedding (llama.cpp's rope mode 2, used by Gemma 3): dimension i is
// rotated with i + head_dim / 2 by theta = pos * freq_scale * freq_base^(-2i / head_dim).
// x: n tokens x n_heads x head_dim floats, rotated in place; positions: one per token.
// grid: (n, n_heads), block: head_dim / 2 threads (at most 1024).
extern "C" __global__ void rope_neox(float *x, int n_heads, int head_dim, const i32 *__restrict__ positions,
                                     float freq_base, float freq_scale) {
    pdl_entry();
    const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    const int half = head_dim / 2;
    if (i >= half) return;
    float *v = x + ((i64) t * n_heads + h) * head_dim;
    const float theta_scale = powf(freq_base, -2.0f / (float) head_dim);
    const float theta = freq_scale * ((float) positions[t] * powf(theta_scale, (float) i));
    float s, c;
    sincosf(theta, &s, &c);
    const float x0 = v[i], x1 = v[i + half];
    v[i] = x0 * c - x1 * s;
    v[i + half] = x0 * s + x1 * c;
}

// QK-norm, RoPE and the query scale of one layer in one launch: every head of q (n x n_q x
// head_dim) and of k (n x n_k x head_dim) is RMS-normed (weights wq / wk), rotated NEOX
// style at positions[t], and the query heads are multiplied by q_scale: the values of
// rms_norm in place, rope_neox and scale_f32 in turn. Thread i holds dimensions i and
// i + head_dim / 2. grid: (n, n_q + n_k), block: head_dim / 2 rounded up to a multiple of 32.
extern "C" __global__ void qk_norm_rope(float *q, float *k, const float *__restrict__ wq,
                                        const float *__restrict__ wk, int n_q, int n_k, int head_dim,
                                        const i32 *__restrict__ positions, float freq_base, float freq_scale,
                                        float q_scale, float eps) {
    pdl_entry();
    __shared__ float scratch[32];
    const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    const int half = head_dim / 2;
    const bool is_q = h < n_q;
    float *v = is_q ? q + ((i64) t * n_q + h) * head_dim : k + ((i64) t * n_k + (h - n_q)) * head_dim;
    const float *w = is_q ? wq : wk;
    const bool live = i < half;
    const float x0 = live ? v[i] : 0.0f, x1 = live ? v[i + half] : 0.0f;
    const float ss = block_sum(x0 * x0 + x1 * x1, scratch);
    if (!live) return;
    const float inv = 1.0f / sqrtf(ss / (float) head_dim + eps);
    const float n0 = x0 * inv * w[i], n1 = x1 * inv * w[i + half];
    const float theta_scale = powf(freq_base, -2.0f / (float) head_dim);
    const float theta = freq_scale * ((float) positions[t] * powf(theta_scale, (float) i));
    float s, c;
    sincosf(theta, &s, &c);
    float r0 = n0 * c - n1 * s, r1 = n0 * s + n1 * c;
    if (is_q) {
        r0 *= q_scale;
        r1 *= q_scale;
    }
    v[i] = r0;
    v[i + half] = r1;
}
