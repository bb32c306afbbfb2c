// Causal attention over the paged KV cache, split along the sequence ("flash decoding"):
// each (token, head) pair's positions 0..=pos (or the last `window` of them when
// window > 0: a sliding window) are cut into splits of `split_len`; one
// block per (pair, split) computes an online softmax over its positions and writes the
// unnormalized output with its running max and sum; `attention_combine` merges the
// splits. Decode (one token, long context) gets many blocks from the splits; prefill
// gets them from the tokens. The same path serves both.

#define ATT_WARPS 4
#define ATT_MAX_D 8  // head_dim <= 32 * ATT_MAX_D

// q: [n, n_head, head_dim]; pools: [n_layer, n_blocks, block_size, kv_dim];
// part_o: [n * n_head, n_splits, head_dim]; part_ml: [n * n_head, n_splits, 2].
// grid (n * n_head, n_splits), block ATT_WARPS warps.
extern "C" __global__ void __launch_bounds__(WARP * ATT_WARPS)
attention_split(const float* __restrict__ q, const float* __restrict__ k_pool,
                const float* __restrict__ v_pool, const u32* __restrict__ pos,
                const u32* __restrict__ chunk, const u32* __restrict__ tables, int table_stride,
                int layer, int n_blocks, int block_size, int n_head, int n_kv_head, int head_dim,
                float scale, int window, float temp_scale, float temp_floor, float softcap,
                int split_len,
                float* __restrict__ part_o,
                float* __restrict__ part_ml) {
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS];
    __shared__ float sm_o[ATT_WARPS][WARP * ATT_MAX_D];
    const int pair = blockIdx.x, split = blockIdx.y, n_splits = gridDim.y;
    const int t = pair / n_head, h = pair % n_head;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int kv_dim = n_kv_head * head_dim;
    const int kvh = h / (n_head / n_kv_head);
    const int p_end = min((int)pos[t] + 1, (split + 1) * split_len);
    // Llama 4's attention temperature (temp_floor > 0): the token's scores times
    // 1 + temp_scale * ln(floor(pos / temp_floor) + 1), in double as on the CPU.
    if (temp_floor > 0.0f) {
        scale *= (float)(1.0 + (double)temp_scale * log(floor((double)pos[t] / (double)temp_floor) + 1.0));
    }
    const int p_first = window > 0 && (int)pos[t] + 1 > window ? (int)pos[t] + 1 - window : 0;
    const int p_start = split * split_len > p_first ? split * split_len : p_first;

    float qv[ATT_MAX_D], o[ATT_MAX_D];
    const float* qh = q + (size_t)pair * head_dim;
#pragma unroll
    for (int i = 0; i < ATT_MAX_D; i++) {
        const int d = lane + WARP * i;
        qv[i] = d < head_dim ? qh[d] : 0.0f;
        o[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int p = p_start + warp; p < p_end; p += ATT_WARPS) {
        const size_t row = kv_row(tables, table_stride, chunk[t], (u32)p, layer, n_blocks,
                                  block_size, kv_dim) + (size_t)kvh * head_dim;
        const float* kr = k_pool + row;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAX_D; i++) {
            const int d = lane + WARP * i;
            if (d < head_dim) s = fmaf(qv[i], kr[d], s);
        }
        s = warp_sum(s) * scale;
        // Logit soft-capping (Gemma 2; softcap 0: none): cap * tanh(s / cap).
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new);
        const float e = expf(s - m_new);
        l = l * corr + e;
        const float* vr = v_pool + row;
#pragma unroll
        for (int i = 0; i < ATT_MAX_D; i++) {
            const int d = lane + WARP * i;
            if (d < head_dim) o[i] = o[i] * corr + e * vr[d];
        }
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_MAX_D; i++) sm_o[warp][lane + WARP * i] = o[i];
    __syncthreads();
    if (warp != 0) return;
    // Merge the warps: M = max m_w, L = sum l_w e^(m_w - M), O = sum o_w e^(m_w - M).
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) mm = fmaxf(mm, sm_m[w]);
    float ll = 0.0f, f[ATT_WARPS];
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        // A warp with no position has m = -inf and contributes nothing (and an empty
        // split has mm = -inf: all factors 0).
        f[w] = sm_m[w] == -INFINITY ? 0.0f : expf(sm_m[w] - mm);
        ll += sm_l[w] * f[w];
    }
    const size_t part = (size_t)pair * n_splits + split;
#pragma unroll
    for (int i = 0; i < ATT_MAX_D; i++) {
        const int d = lane + WARP * i;
        if (d < head_dim) {
            float acc = 0.0f;
#pragma unroll
            for (int w = 0; w < ATT_WARPS; w++) acc += sm_o[w][d] * f[w];
            part_o[part * head_dim + d] = acc;
        }
    }
    if (lane == 0) {
        part_ml[2 * part] = mm;
        part_ml[2 * part + 1] = ll;
    }
}

// out[pair, :] = (sum_s o_s e^(m_s - M)) / (sum_s l_s e^(m_s - M)). out: [n, n_head, head_dim].
// With sinks ([n_head], gpt-oss; NULL: none) the head's sink joins M and the denominator.
// grid n * n_head, block: threads over head_dim.
extern "C" __global__ void attention_combine(const float* __restrict__ part_o,
                                             const float* __restrict__ part_ml, int n_splits,
                                             int head_dim, const float* __restrict__ sinks,
                                             int n_head, float* __restrict__ out) {
    const int pair = blockIdx.x;
    const float* ml = part_ml + (size_t)pair * n_splits * 2;
    float mm = -INFINITY;
    for (int s = 0; s < n_splits; s++) mm = fmaxf(mm, ml[2 * s]);
    float ll = 0.0f;
    if (sinks) {
        const float sink = sinks[pair % n_head];
        mm = fmaxf(mm, sink);
        ll = expf(sink - mm);
    }
    for (int s = 0; s < n_splits; s++) {
        if (ml[2 * s] != -INFINITY) ll += ml[2 * s + 1] * expf(ml[2 * s] - mm);
    }
    const float inv = 1.0f / ll;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n_splits; s++) {
            if (ml[2 * s] != -INFINITY) {
                acc += part_o[((size_t)pair * n_splits + s) * head_dim + d] * expf(ml[2 * s] - mm);
            }
        }
        out[(size_t)pair * head_dim + d] = acc * inv;
    }
}
