// NEOX-style rotary embedding (llama.cpp's rope mode 2, used by Gemma 3): dimension i is
// rotated with i + head_dim / 2 by theta = pos * freq_scale * freq_base^(-2i / head_dim).
// x: n tokens x n_heads x head_dim floats, rotated in place; positions: one per token.
// grid: (n, n_heads), block: head_dim / 2 threads (at most 1024).
extern "C" __global__ void rope_neox(float *x, int n_heads, int head_dim, const i32 *__restrict__ positions,
                                     float freq_base, float freq_scale) {
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
