// Quantized weights: ggml's block layouts, read in place (tuili_backend::quant is the
// specification; the tables in its legacy.rs and kquants.rs give every field).
//
// The unit of work is a *slice*: 8 consecutive elements of a row, elements
// 8*s .. 8*s+8 for slice s. Each type has one decoder,
//     decode8_T(row, s, v)   row: the row's bytes; v: [8] floats out,
// and both kernels below are built from it:
//   - matvec_T: y[j, r] = sum_c w[r, c] * x[j, c] for up to MV_MAX_N tokens j, one warp
//     per row, each lane taking every 32nd slice;
//   - dequant_T: out[i, :] = w[ids[i], :] in f32 (the embedding lookup, and the weight
//     tile that cuBLAS multiplies for larger batches).

#define MV_MAX_N 8
#define MV_ROWS 4  // rows (warps) per block of matvec

// ---- 32-element blocks (legacy.rs) ------------------------------------------------
// Slice sub (0..4) of a 32-element block: elements 8*sub..8*sub+8. Q4/Q5 keep element j
// (j < 16) in the low nibble of qs[j] and element j + 16 in its high nibble.

__device__ __forceinline__ void decode8_q4_0(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 2) * 18;  // d (f16), qs[16]
    const int sub = s & 3;
    const float d = f16_to_f32(ld_u16(b));
    const uint2 q = ld8_a2(b + 2 + 8 * (sub & 1));
    const int shift = sub >= 2 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = (float)((int)((byte_of(q, k) >> shift) & 15) - 8) * d;
}

__device__ __forceinline__ void decode8_q4_1(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 2) * 20;  // d, m (f16), qs[16]
    const int sub = s & 3;
    const float d = f16_to_f32(ld_u16(b));
    const float m = f16_to_f32(ld_u16(b + 2));
    const uint2 q = ld8_a4(b + 4 + 8 * (sub & 1));
    const int shift = sub >= 2 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = (float)((byte_of(q, k) >> shift) & 15) * d + m;
}

__device__ __forceinline__ void decode8_q5_0(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 2) * 22;  // d (f16), qh (u32), qs[16]
    const int sub = s & 3;
    const float d = f16_to_f32(ld_u16(b));
    const u32 qh = (u32)ld_u16(b + 2) | ((u32)ld_u16(b + 4) << 16);
    const uint2 q = ld8_a2(b + 6 + 8 * (sub & 1));
    const int shift = sub >= 2 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int e = 8 * sub + k;
        const u32 hi = ((qh >> e) & 1) << 4;
        v[k] = (float)((int)(((byte_of(q, k) >> shift) & 15) | hi) - 16) * d;
    }
}

__device__ __forceinline__ void decode8_q5_1(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 2) * 24;  // d, m (f16), qh (u32), qs[16]
    const int sub = s & 3;
    const float d = f16_to_f32(ld_u16(b));
    const float m = f16_to_f32(ld_u16(b + 2));
    const u32 qh = *(const u32*)(b + 4);
    const uint2 q = ld8_a4(b + 8 + 8 * (sub & 1));
    const int shift = sub >= 2 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int e = 8 * sub + k;
        const u32 hi = ((qh >> e) & 1) << 4;
        v[k] = (float)(((byte_of(q, k) >> shift) & 15) | hi) * d + m;
    }
}

__device__ __forceinline__ void decode8_q8_0(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 2) * 34;  // d (f16), qs[32] (i8)
    const int sub = s & 3;
    const float d = f16_to_f32(ld_u16(b));
    const uint2 q = ld8_a2(b + 2 + 8 * sub);
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = (float)(i8)byte_of(q, k) * d;
}

// MXFP4 (mxfp4.rs): e (an E8M0 scale), qs[16], 17 bytes, so byte loads (no alignment).
// Value: twice the E2M1 value of the nibble times 2^(e - 128).
__device__ __forceinline__ void decode8_mxfp4(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 2) * 17;
    const int sub = s & 3;
    const float d = ldexpf(1.0f, (int)b[0] - 128);
    const u8* q = b + 1 + 8 * (sub & 1);
    const int shift = sub >= 2 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int n = (q[k] >> shift) & 15, m = n & 7;
        // 0, 1, 2, 3, 4, 6, 8, 12 for m = 0..8.
        const int mag = m < 4 ? m : (4 + 2 * (m & 1)) << ((m - 4) >> 1);
        v[k] = (float)(n & 8 ? -mag : mag) * d;
    }
}

// ---- 256-element super-blocks (kquants.rs) ----------------------------------------

// Scale and min of sub-block j (0..8) of Q4_K/Q5_K from the 12 packed bytes.
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, float* sc, float* mn) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *mn = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *mn = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Q4_K: d, dmin (f16), scales[12], qs[128]. Elements 64i..64i+32 are the low nibbles of
// qs[32i..32i+32] (sub-block 2i), 64i+32..64i+64 their high nibbles (sub-block 2i+1).
__device__ __forceinline__ void decode8_q4_k(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 5) * 144;
    const int sub = s & 31;                 // slice within the block
    const int i = sub >> 3, r = sub & 7;    // 64-element group, slice within it
    const int g = 2 * i + (r >> 2);         // sub-block of 32
    float sc, mn;
    scale_min_k4(g, b + 4, &sc, &mn);
    const float dl = f16_to_f32(ld_u16(b)) * sc;
    const float ml = f16_to_f32(ld_u16(b + 2)) * mn;
    const uint2 q = ld8_a8(b + 16 + 32 * i + 8 * (r & 3));
    const int shift = r >= 4 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = dl * (float)((byte_of(q, k) >> shift) & 15) - ml;
}

// Q5_K: d, dmin, scales[12], qh[32], qs[128]; as Q4_K plus bit g of qh[l] as the 5th bit
// of element l of sub-block g.
__device__ __forceinline__ void decode8_q5_k(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 5) * 176;
    const int sub = s & 31;
    const int i = sub >> 3, r = sub & 7;
    const int g = 2 * i + (r >> 2);
    float sc, mn;
    scale_min_k4(g, b + 4, &sc, &mn);
    const float dl = f16_to_f32(ld_u16(b)) * sc;
    const float ml = f16_to_f32(ld_u16(b + 2)) * mn;
    const int l0 = 8 * (r & 3);
    const uint2 q = ld8_a8(b + 48 + 32 * i + l0);
    const uint2 h = ld8_a8(b + 16 + l0);
    const int shift = r >= 4 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const u32 hi = ((byte_of(h, k) >> g) & 1) << 4;
        v[k] = dl * (float)(((byte_of(q, k) >> shift) & 15) | hi) - ml;
    }
}

// Q6_K: ql[128], qh[64], scales[16] (i8), d (f16). Element 128h + 32t + l (l < 32):
// low 4 bits from ql[64h + 32(t&1) + l] (low nibble for t < 2, high for t >= 2), high
// 2 bits from bits 2t..2t+2 of qh[32h + l]; value d * scale[(128h+32t+l)/16] * (q - 32).
__device__ __forceinline__ void decode8_q6_k(const u8* row, int s, float* v) {
    const u8* b = row + (s >> 5) * 210;
    const int sub = s & 31;
    const int h = sub >> 4, t = (sub >> 2) & 3, l0 = 8 * (sub & 3);
    const float d = f16_to_f32(ld_u16(b + 208));
    const float dl = d * (float)(i8)b[192 + 8 * h + 2 * t + (l0 >> 4)];
    const uint2 ql = ld8_a2(b + 64 * h + 32 * (t & 1) + l0);
    const uint2 qh = ld8_a2(b + 128 + 32 * h + l0);
    const int shift = t >= 2 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const int q = (int)(((byte_of(ql, k) >> shift) & 15) | (((byte_of(qh, k) >> (2 * t)) & 3) << 4)) - 32;
        v[k] = dl * (float)q;
    }
}

// ---- Plain floats (float.rs): a slice is 16 or 32 bytes, one or two vector loads ----

__device__ __forceinline__ void decode8_f32(const u8* row, int s, float* v) {
    const float4* p = (const float4*)(row + 32 * s);
    const float4 a = p[0], c = p[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = c.x; v[5] = c.y; v[6] = c.z; v[7] = c.w;
}

__device__ __forceinline__ void decode8_f16(const u8* row, int s, float* v) {
    const uint4 w = *(const uint4*)(row + 16 * s);
    const u32 u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        v[2 * k] = f16_to_f32((u16)(u[k] & 0xffff));
        v[2 * k + 1] = f16_to_f32((u16)(u[k] >> 16));
    }
}

__device__ __forceinline__ void decode8_bf16(const u8* row, int s, float* v) {
    const uint4 w = *(const uint4*)(row + 16 * s);
    const u32 u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        v[2 * k] = bf16_to_f32((u16)(u[k] & 0xffff));
        v[2 * k + 1] = bf16_to_f32((u16)(u[k] >> 16));
    }
}

// ---- Kernels, one pair per type ---------------------------------------------------

// w: [rows, row_bytes]; x: [n, cols] (n <= MV_MAX_N); y: [n, rows]; slices = cols / 8.
// Block: MV_ROWS warps, one row each.
#define DEFINE_MATVEC(T)                                                                   \
    extern "C" __global__ void __launch_bounds__(WARP * MV_ROWS)                          \
    matvec_##T(const u8* __restrict__ w, int rows, int row_bytes, int slices,              \
               const float* __restrict__ x, int cols, int n, float* __restrict__ y) {      \
        const int lane = threadIdx.x % WARP;                                               \
        const int row = blockIdx.x * MV_ROWS + threadIdx.x / WARP;                         \
        if (row >= rows) return;                                                           \
        const u8* wr = w + (size_t)row * row_bytes;                                        \
        float acc[MV_MAX_N];                                                               \
        _Pragma("unroll") for (int j = 0; j < MV_MAX_N; j++) acc[j] = 0.0f;                \
        for (int s = lane; s < slices; s += WARP) {                                        \
            float v[8];                                                                    \
            decode8_##T(wr, s, v);                                                         \
            _Pragma("unroll") for (int j = 0; j < MV_MAX_N; j++) {                         \
                if (j < n) {                                                               \
                    const float4* xp = (const float4*)(x + (size_t)j * cols + 8 * s);      \
                    const float4 a = xp[0], c = xp[1];                                     \
                    float t = acc[j];                                                      \
                    t = fmaf(v[0], a.x, t); t = fmaf(v[1], a.y, t);                        \
                    t = fmaf(v[2], a.z, t); t = fmaf(v[3], a.w, t);                        \
                    t = fmaf(v[4], c.x, t); t = fmaf(v[5], c.y, t);                        \
                    t = fmaf(v[6], c.z, t); t = fmaf(v[7], c.w, t);                        \
                    acc[j] = t;                                                            \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        _Pragma("unroll") for (int j = 0; j < MV_MAX_N; j++) {                             \
            if (j < n) {                                                                   \
                const float t = warp_sum(acc[j]);                                          \
                if (lane == 0) y[(size_t)j * rows + row] = t;                              \
            }                                                                              \
        }                                                                                  \
    }

// w: [*, row_bytes]; ids: [n_rows] rows of w to take (NULL: rows 0..n_rows);
// out: [n_rows, cols] f32. One thread per slice.
#define DEFINE_DEQUANT(T)                                                                  \
    extern "C" __global__ void dequant_##T(const u8* __restrict__ w, int row_bytes,        \
                                           int slices, const u32* __restrict__ ids,        \
                                           int n_rows, float* __restrict__ out) {          \
        const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;                   \
        if (i >= (size_t)n_rows * slices) return;                                          \
        const int r = (int)(i / slices), s = (int)(i % slices);                            \
        const size_t src = ids ? ids[r] : (size_t)r;                                       \
        float v[8];                                                                        \
        decode8_##T(w + src * row_bytes, s, v);                                            \
        float4* o = (float4*)(out + (size_t)r * slices * 8 + 8 * s);                       \
        float4 a, c;                                                                       \
        a.x = v[0]; a.y = v[1]; a.z = v[2]; a.w = v[3];                                    \
        c.x = v[4]; c.y = v[5]; c.z = v[6]; c.w = v[7];                                    \
        o[0] = a;                                                                          \
        o[1] = c;                                                                          \
    }

#define DEFINE_TYPE(T) DEFINE_MATVEC(T) DEFINE_DEQUANT(T)

DEFINE_TYPE(q4_0)
DEFINE_TYPE(q4_1)
DEFINE_TYPE(q5_0)
DEFINE_TYPE(q5_1)
DEFINE_TYPE(q8_0)
DEFINE_TYPE(mxfp4)
DEFINE_TYPE(q4_k)
DEFINE_TYPE(q5_k)
DEFINE_TYPE(q6_k)
DEFINE_TYPE(f32)
DEFINE_TYPE(f16)
DEFINE_TYPE(bf16)
