// Row and element-wise ops of a layer (tuili_backend::ops is the specification).

// The sum of every thread's `v` over the block, in every thread. `partial`: 32 doubles of
// shared memory, free again when this returns.
__device__ double block_sum_f64(double v, double* partial) {
    v = warp_sum_f64(v);
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = (blockDim.x + WARP - 1) / WARP;
        double t = lane < n_warps ? partial[lane] : 0.0;
        t = warp_sum_f64(t);
        if (lane == 0) partial[0] = t;
    }
    __syncthreads();
    const double sum = partial[0];
    __syncthreads();
    return sum;
}

// RMSNorm of rows: out[i, :] = x[src, :] / sqrt(mean(x[src, :]^2) + eps) * w, with
// src = rows ? rows[i] : i. x: [*, dim]; w: [dim]; out: [n, dim]. One block per row;
// the sum of squares in f64 as on the CPU. `out` may be `x` (rows in order): every read
// of a row's sum is done before the barrier that precedes its writes.
extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ w,
                                    const u32* __restrict__ rows, int dim, float eps,
                                    float* __restrict__ out) {
    __shared__ double partial[32];
    const size_t src = rows ? rows[blockIdx.x] : blockIdx.x;
    const float* xr = x + src * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
    ss = block_sum_f64(ss, partial);
    const float scale = (float)(1.0 / sqrt(ss / dim + (double)eps));
    float* o = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

// LayerNorm of rows, as the CPU's `ops::layer_norm_in_place` then the bias:
// out[i, :] = (x[src, :] - mean) / sqrt(var + eps) * w + b (b NULL: none), sums in f64,
// the mean and the scale in f32. Shapes and `rows` as rms_norm; `out` may be `x`.
extern "C" __global__ void layer_norm(const float* __restrict__ x, const float* __restrict__ w,
                                      const float* __restrict__ b,
                                      const u32* __restrict__ rows, int dim, float eps,
                                      float* __restrict__ out) {
    __shared__ double partial[32];
    const size_t src = rows ? rows[blockIdx.x] : blockIdx.x;
    const float* xr = x + src * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += (double)xr[i];
    const float mean = (float)(block_sum_f64(s, partial) / dim);
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i] - mean;
        ss += (double)(v * v);
    }
    const float scale = 1.0f / sqrtf((float)(block_sum_f64(ss, partial) / dim) + eps);
    float* o = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float y = (xr[i] - mean) * scale * w[i];
        o[i] = b ? y + b[i] : y;
    }
}

// x[i] += bias[i % d] for x: [n, d].
extern "C" __global__ void add_bias(float* __restrict__ x, const float* __restrict__ bias, int d,
                                    int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] += bias[i % d];
}

// x[i] += y[i].
extern "C" __global__ void add(float* __restrict__ x, const float* __restrict__ y, int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] += y[i];
}

// e^x for x <= 0, the CPU's `ops::exp_nonpositive` operation for operation (Cody-Waite
// reduction, Cephes' polynomial; explicit roundings so that no multiply-add is fused).
__device__ __forceinline__ float exp_nonpositive(float x) {
    const bool below = x < -87.3f;
    const float xc = below ? -87.3f : x;
    const float round = 12582912.0f;
    const float k = __fadd_rn(__fmul_rn(xc, 1.44269504088896341f), round);
    const float n = __fadd_rn(k, -round);
    const float r = __fadd_rn(__fadd_rn(xc, -__fmul_rn(n, 0.693359375f)),
                              -__fmul_rn(n, -2.1219444e-4f));
    float p = 1.9875691e-4f;
    p = __fadd_rn(__fmul_rn(p, r), 1.3981999e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.333452e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665796e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 1.6666665e-1f);
    p = __fadd_rn(__fmul_rn(p, r), 0.5f);
    const float e = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
    const u32 ni = __float_as_uint(k) - __float_as_uint(round);
    const float scale = __uint_as_float((ni + 127u) << 23);
    const float y = __fadd_rn(__fmul_rn(e, scale), __fmul_rn(x, 0.0f));
    return below ? 0.0f : y;
}

// g[i] = silu(g[i]) * u[i], as the CPU's `ops::silu_mul`: σ(v) from e^-|v|.
extern "C" __global__ void silu_mul(float* __restrict__ g, const float* __restrict__ u,
                                    int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        const float v = g[i];
        const float e = exp_nonpositive(-fabsf(v));
        const float num = v >= 0.0f ? 1.0f : e;
        g[i] = __fmul_rn(__fmul_rn(v, num) / __fadd_rn(1.0f, e), u[i]);
    }
}

// g[i] = gelu(g[i]) * u[i], GELU's tanh form as the CPU's `ops::gelu_tanh_mul` bit for bit; u NULL:
// gelu(g[i]) alone (`ops::gelu_tanh`: an ungated feed-forward block).
extern "C" __global__ void gelu_tanh_mul(float* __restrict__ g, const float* __restrict__ u,
                                         int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        // x σ(z), z = 2√(2/π) (x + 0.044715 x³): the CPU's operations in its order.
        const float x = g[i];
        const float z = __fmul_rn(__fmul_rn(1.5957692f, x),
                                  __fadd_rn(1.0f, __fmul_rn(__fmul_rn(0.044715f, x), x)));
        const float e = exp_nonpositive(-fabsf(z));
        const float num = z >= 0.0f ? 1.0f : e;
        const float y = __fmul_rn(x, num) / __fadd_rn(1.0f, e);
        g[i] = u ? __fmul_rn(y, u[i]) : y;
    }
}

// g[i] = gpt-oss's clamped SwiGLU of g[i] and u[i], as the CPU's `ops::swiglu_oai_mul`:
// x = min(g, 7), y = clamp(u, -7, 7), x σ(1.702 x) (y + 1).
extern "C" __global__ void swiglu_oai_mul(float* __restrict__ g, const float* __restrict__ u,
                                          int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        const float x = fminf(g[i], 7.0f);
        const float y = fminf(fmaxf(u[i], -7.0f), 7.0f);
        g[i] = __fmul_rn(x / __fadd_rn(1.0f, expf(__fmul_rn(1.702f, -x))), __fadd_rn(y, 1.0f));
    }
}

// x[i] *= s.
extern "C" __global__ void scale(float* __restrict__ x, float s, int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] *= s;
}

// x[i] = v.
extern "C" __global__ void fill(float* __restrict__ x, float v, int total) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] = v;
}

// Rows of a mixture of experts' tokens. dst[r, :] = src[idx[r], :]; idx: [n];
// total = n * dim.
extern "C" __global__ void gather_rows(const float* __restrict__ src, const u32* __restrict__ idx,
                                       int dim, int total, float* __restrict__ dst) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) dst[i] = src[(size_t)idx[i / dim] * dim + i % dim];
}

// dst[idx[r], :] += w[r] * y[r, :], one fused multiply-add per element as the CPU's `axpy`.
// The rows of one launch are different tokens: no two threads write one element.
extern "C" __global__ void scatter_add_rows(const float* __restrict__ y, const u32* __restrict__ idx,
                                            const float* __restrict__ w, int dim, int total,
                                            float* __restrict__ dst) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        float* d = dst + (size_t)idx[i / dim] * dim + i % dim;
        *d = fmaf(w[i / dim], y[i], *d);
    }
}

// RoPE in place. x: [n, n_heads, head_dim]; pos: [n]; inv_freq: [head_dim / 2];
// cos and sin multiplied by mscale.
// neox = 0 rotates pairs (2i, 2i+1), neox = 1 pairs (i, i + head_dim/2). The angle in
// f64 as on the CPU (positions reach 1e5). One thread per (token, head, pair).
// Turns the first 2 * n_pairs dimensions of each head (fewer than head_dim for partial
// rotary embeddings); NEOX mode pairs p with p + n_pairs.
extern "C" __global__ void rope(float* __restrict__ x, const u32* __restrict__ pos,
                                const float* __restrict__ inv_freq, int n, int n_heads,
                                int head_dim, int n_pairs, int neox, float mscale) {
    const int half = n_pairs;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * n_heads * half) return;
    const int p = i % half;
    const int th = i / half;  // token * n_heads + head
    const int t = th / n_heads;
    const double theta = (double)pos[t] * (double)inv_freq[p];
    // YaRN's attention factor multiplies both (1 otherwise), as on the CPU.
    const float c = (float)cos(theta) * mscale, s = (float)sin(theta) * mscale;
    float* head = x + (size_t)th * head_dim;
    const int a = neox ? p : 2 * p;
    const int b = neox ? p + half : 2 * p + 1;
    const float x0 = head[a], x1 = head[b];
    head[a] = x0 * c - x1 * s;
    head[b] = x0 * s + x1 * c;
}

// Where position `pos` of chunk `chunk` lives in a KV pool of one layer:
// pool layout [n_layer, n_blocks, block_size, kv_dim]; tables: [n_chunks, table_stride].
__device__ __forceinline__ size_t kv_row(const u32* tables, int table_stride, u32 chunk,
                                         u32 pos, int layer, int n_blocks, int block_size,
                                         int kv_dim) {
    const u32 block = tables[(size_t)chunk * table_stride + pos / block_size];
    return (((size_t)layer * n_blocks + block) * block_size + pos % block_size) * kv_dim;
}

// Writes each token's K and V ([n, kv_dim] each) into the pools at its position.
extern "C" __global__ void kv_write(const float* __restrict__ k, const float* __restrict__ v,
                                    float* __restrict__ k_pool, float* __restrict__ v_pool,
                                    const u32* __restrict__ pos, const u32* __restrict__ chunk,
                                    const u32* __restrict__ tables, int table_stride, int layer,
                                    int n_blocks, int block_size, int kv_dim, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * kv_dim) return;
    const int t = i / kv_dim, e = i % kv_dim;
    const size_t at =
        kv_row(tables, table_stride, chunk[t], pos[t], layer, n_blocks, block_size, kv_dim) + e;
    k_pool[at] = k[i];
    v_pool[at] = v[i];
}
