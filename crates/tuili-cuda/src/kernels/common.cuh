// Shared helpers of the tuili kernels. Compiled by NVRTC with no system headers: only
// built-in types (uint2, uint4, float4) and PTX. With TUILI_HOST defined, the sources
// also compile as host C++ (tests/host_kernels.rs runs the decoders and element-wise
// kernels that way, one "thread" at a time, against the CPU's reference).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef signed char i8;

#define WARP 32
#define FULL_MASK 0xffffffffu
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// IEEE half (bits) to float, exactly (PTX cvt).
#ifndef TUILI_HOST
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}
#else
float f16_to_f32(u16 h);  // defined by the host harness
#endif

// bfloat16 (bits) to float: the top half of an f32.
__device__ __forceinline__ float bf16_to_f32(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Little-endian u16 at a 2-byte aligned address.
__device__ __forceinline__ u16 ld_u16(const u8* p) {
    return *(const u16*)p;
}

// 8 bytes at a 2-byte aligned address, as two little-endian words.
__device__ __forceinline__ uint2 ld8_a2(const u8* p) {
    const u16* q = (const u16*)p;
    uint2 r;
    r.x = (u32)q[0] | ((u32)q[1] << 16);
    r.y = (u32)q[2] | ((u32)q[3] << 16);
    return r;
}

// 8 bytes at a 4-byte aligned address.
__device__ __forceinline__ uint2 ld8_a4(const u8* p) {
    const u32* q = (const u32*)p;
    uint2 r;
    r.x = q[0];
    r.y = q[1];
    return r;
}

// 8 bytes at an 8-byte aligned address (one load).
__device__ __forceinline__ uint2 ld8_a8(const u8* p) {
    return *(const uint2*)p;
}

// Byte k (0..8) of an 8-byte value.
__device__ __forceinline__ u32 byte_of(uint2 w, int k) {
    return ((k < 4 ? w.x : w.y) >> (8 * (k & 3))) & 0xff;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
