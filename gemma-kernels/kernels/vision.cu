// The SigLIP image encoder's own ops (gemma-vision runs its matrix products with
// matmul_float.cu and the projector's RMSNorm with norm.cu). All values f32, f32 arithmetic.
//   vis_layer_norm:        out = (x - mean) / sqrt(var + eps) * w + b per row (biased variance).
//   vis_im2col:            the pixels' patches as rows (channel, ky, kx), zero-padded to k_pad.
//   vis_add_bias_position: h = (h + b) + pos, the patch embedding's bias and position table.
//   vis_add_bias:          x += b per row.
//   vis_bias_gelu:         x = gelu_tanh(x + b) per row.
//   vis_add_bias_residual: h += y + b per row.
//   vis_attention_<hd>:    softmax(q k^T * scale) v per head over all patches, no mask.
//   vis_avg_pool:          mean of each k x k block of the patch grid.

// One block per row. out may alias x (each thread writes only the elements it read).
// grid: rows, block: 256.
extern "C" __global__ void __launch_bounds__(256) vis_layer_norm(
    const float *x, const float *__restrict__ w, const float *__restrict__ b, float *out, int dim, float eps) {
    __shared__ float scratch[32];
    const float *xr = x + (i64) blockIdx.x * dim;
    float *outr = out + (i64) blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
    const float mean = block_sum(s, scratch) / (float) dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float c = xr[i] - mean;
        ss += c * c;
    }
    const float var = block_sum(ss, scratch) / (float) dim;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) outr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
}

// pixels: 3 x size x size (CHW). Row n (patch row n / side, column n % side) of out holds
// the patch's values in PyTorch's Conv2d weight order (channel, ky, kx), then zeros up to
// k_pad. grid: side * side, block: 256.
extern "C" __global__ void __launch_bounds__(256) vis_im2col(
    const float *__restrict__ pixels, int size, int patch, int side, int k_pad, float *__restrict__ out) {
    const int n = blockIdx.x;
    const int r = n / side, c = n % side;
    const int pp = patch * patch;
    float *row = out + (i64) n * k_pad;
    for (int i = threadIdx.x; i < k_pad; i += blockDim.x) {
        float v = 0.0f;
        if (i < 3 * pp) {
            const int ch = i / pp, ky = (i % pp) / patch, kx = i % patch;
            v = pixels[(i64) ch * size * size + (i64) (r * patch + ky) * size + c * patch + kx];
        }
        row[i] = v;
    }
}

// h[i] = (h[i] + b[i % dim]) + pos[i] for i < n (pos: one row of dim per patch).
// 1-D grid of 256 threads, striding.
extern "C" __global__ void vis_add_bias_position(float *h, const float *__restrict__ b,
                                                 const float *__restrict__ pos, int dim, i64 n) {
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        h[i] = (h[i] + b[i % dim]) + pos[i];
}

// x[i] += b[i % dim] for i < n. 1-D grid of 256 threads, striding.
extern "C" __global__ void vis_add_bias(float *x, const float *__restrict__ b, int dim, i64 n) {
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        x[i] += b[i % dim];
}

// x[i] = gelu_tanh(x[i] + b[i % dim]) for i < n. 1-D grid of 256 threads, striding.
extern "C" __global__ void vis_bias_gelu(float *x, const float *__restrict__ b, int dim, i64 n) {
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        x[i] = gelu_tanh(x[i] + b[i % dim]);  // common.cuh
}

// h[i] += y[i] + b[i % dim] for i < n. 1-D grid of 256 threads, striding.
extern "C" __global__ void vis_add_bias_residual(float *h, const float *__restrict__ y, const float *__restrict__ b,
                                                 int dim, i64 n) {
    for (i64 i = blockIdx.x * (i64) blockDim.x + threadIdx.x; i < n; i += (i64) gridDim.x * blockDim.x)
        h[i] += y[i] + b[i % dim];
}

// ---------------------------------------------------------------------------------
// Bidirectional attention. q, k, v, out: n x width floats, head h in columns h * HD ...
// Each thread owns one query: its HD values and HD output accumulators live in registers.
// The block walks over all keys in tiles of VIS_KEY_TILE keys (K and V copied to shared
// memory by cp.async, width and head offsets multiples of 4 floats; read as broadcasts), eight keys at a time: their scores, the running maximum
// (the accumulators are rescaled only when it grows), then the weighted values (online
// softmax, f32). grid: (ceil(n / VIS_ATTN_THREADS), heads), block: VIS_ATTN_THREADS.

#define VIS_ATTN_THREADS 128
#define VIS_KEY_TILE 32
#define VIS_KEY_STEP 8

template <int HD>
static __device__ __forceinline__ void vis_attention(const float *__restrict__ q, const float *__restrict__ k,
                                                     const float *__restrict__ v, float *__restrict__ out, int n,
                                                     int width, float scale) {
    static_assert(HD % 4 == 0, "head_dim must be a multiple of 4");
    __shared__ float4 sk[VIS_KEY_TILE][HD / 4];
    __shared__ float4 sv[VIS_KEY_TILE][HD / 4];
    const int qi = blockIdx.x * VIS_ATTN_THREADS + threadIdx.x;
    const bool active = qi < n;
    const i64 col = (i64) blockIdx.y * HD;
    float qr[HD], acc[HD];
#pragma unroll
    for (int d = 0; d < HD; ++d) {
        qr[d] = active ? q[(i64) qi * width + col + d] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int k0 = 0; k0 < n; k0 += VIS_KEY_TILE) {
        __syncthreads();  // the previous tile is no longer read
        // The tile's keys and values by cp.async, all in flight at once (zeros past n; such
        // a key names key k0, which exists, as its unread source).
        for (int idx = threadIdx.x; idx < VIS_KEY_TILE * HD / 4; idx += VIS_ATTN_THREADS) {
            const int j = idx / (HD / 4), d4 = idx % (HD / 4);
            const bool in = k0 + j < n;
            const i64 off = (i64) (in ? k0 + j : k0) * width + col + 4 * d4;
            copy_async16(&sk[j][d4], k + off, in);
            copy_async16(&sv[j][d4], v + off, in);
        }
        copy_async_wait();
        __syncthreads();
        for (int j0 = 0; j0 < VIS_KEY_TILE; j0 += VIS_KEY_STEP) {
            float s[VIS_KEY_STEP];
            float step_max = m;
#pragma unroll
            for (int jj = 0; jj < VIS_KEY_STEP; ++jj) {
                float dot = 0.0f;
#pragma unroll
                for (int d4 = 0; d4 < HD / 4; ++d4) {
                    const float4 kk = sk[j0 + jj][d4];
                    dot += qr[4 * d4] * kk.x + qr[4 * d4 + 1] * kk.y + qr[4 * d4 + 2] * kk.z + qr[4 * d4 + 3] * kk.w;
                }
                s[jj] = k0 + j0 + jj < n ? dot * scale : NEG_INF;
                step_max = fmaxf(step_max, s[jj]);
            }
            if (step_max > m) {  // m = -inf before the first key: corr = 0 on zero accumulators
                const float corr = expf(m - step_max);
                l *= corr;
#pragma unroll
                for (int d = 0; d < HD; ++d) acc[d] *= corr;
                m = step_max;
            }
#pragma unroll
            for (int jj = 0; jj < VIS_KEY_STEP; ++jj) {
                const float p = s[jj] == NEG_INF ? 0.0f : expf(s[jj] - m);
                l += p;
#pragma unroll
                for (int d4 = 0; d4 < HD / 4; ++d4) {
                    const float4 vv = sv[j0 + jj][d4];
                    acc[4 * d4] += p * vv.x;
                    acc[4 * d4 + 1] += p * vv.y;
                    acc[4 * d4 + 2] += p * vv.z;
                    acc[4 * d4 + 3] += p * vv.w;
                }
            }
        }
    }
    if (!active) return;
    const float inv = 1.0f / l;  // l >= 1: the maximal key contributes exp(0)
#pragma unroll
    for (int d = 0; d < HD; ++d) out[(i64) qi * width + col + d] = acc[d] * inv;
}

#define VIS_ATTENTION_KERNEL(HD)                                                                          \
    extern "C" __global__ void __launch_bounds__(VIS_ATTN_THREADS) vis_attention_##HD(                   \
        const float *q, const float *k, const float *v, float *out, int n, int width, float scale) {      \
        vis_attention<HD>(q, k, v, out, n, width, scale);                                                 \
    }

VIS_ATTENTION_KERNEL(16)
VIS_ATTENTION_KERNEL(32)
VIS_ATTENTION_KERNEL(64)
VIS_ATTENTION_KERNEL(72)
VIS_ATTENTION_KERNEL(80)

// ---------------------------------------------------------------------------------
// h: side x side patches (row-major) of dim values; out: (side / k)^2 tokens of dim, token
// t = (t / out_side, t % out_side) the mean of its k x k patches, summed in (ky, kx) order
// then divided once (as torch.nn.AvgPool2d). grid: tokens, block: 256.
extern "C" __global__ void __launch_bounds__(256) vis_avg_pool(
    const float *__restrict__ h, float *__restrict__ out, int side, int dim, int k) {
    const int t = blockIdx.x;
    const int out_side = side / k;
    const int ty = t / out_side, tx = t % out_side;
    const float divisor = (float) (k * k);
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float s = 0.0f;
        for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) s += h[(i64) ((ty * k + ky) * side + tx * k + kx) * dim + d];
        out[(i64) t * dim + d] = s / divisor;
    }
}
