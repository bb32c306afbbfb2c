// Throughput of the planned row-interleaved block-sum design (docs/ARCHITECTURE.md,
// "What the specification costs"): per block of 32 elements, 16 rows x T tokens:
// 16 vpdpwssd per token (lanes = rows, int16 codes interleaved by element pairs, the
// token's activation pair broadcast), two partial integer sums per token (exact), then
// one convert, scale product and fused add per 16 (row, token) pairs. Codes are
// pre-decoded and stay in L1, so this is the arithmetic's ceiling, not a kernel.
//
//   gcc -O2 -mavx512f -mavx512vnni -mavx512bw -o /tmp/blocksum bench/proto/interleaved_blocksum.c
//   /tmp/blocksum
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define T 4
int main(){
  static int16_t codes[16*32*8] __attribute__((aligned(64)));  // 8 blocks x 16 regs x 32 i16
  static int32_t xp[T][8*16] __attribute__((aligned(64)));     // per token: 8 blocks x 16 pairs
  static float ws[8][16] __attribute__((aligned(64)));
  static float xd[T][8];
  for(int i=0;i<16*32*8;i++) codes[i]=(i*7)%15-7;
  for(int t=0;t<T;t++) for(int i=0;i<8*16;i++) xp[t][i]=(i*13+t)%1000;
  for(int b=0;b<8;b++) for(int r=0;r<16;r++) ws[b][r]=1e-3f*(r+1);
  for(int t=0;t<T;t++) for(int b=0;b<8;b++) xd[t][b]=1e-4f*(b+1);
  long iters=2000000; // each iter: 8 blocks (256 elements) x 16 rows x T tokens
  __m512 acc[T]; for(int t=0;t<T;t++) acc[t]=_mm512_setzero_ps();
  double t0=now();
  for(long it=0;it<iters;it++){
    for(int b=0;b<8;b++){
      __m512i s[T][2]; for(int t=0;t<T;t++){ s[t][0]=_mm512_setzero_si512(); s[t][1]=_mm512_setzero_si512();}
      const __m512i *c=(const __m512i*)(codes+b*16*32);
      #pragma GCC unroll 16
      for(int k=0;k<16;k++){
        __m512i ck=_mm512_load_si512(c+k);
        #pragma GCC unroll 4
        for(int t=0;t<T;t++) s[t][k&1]=_mm512_dpwssd_epi32(s[t][k&1],ck,_mm512_set1_epi32(xp[t][b*16+k]));
      }
      for(int t=0;t<T;t++) s[t][0]=_mm512_add_epi32(s[t][0],s[t][1]);
      __m512 w=_mm512_load_ps(ws[b]);
      for(int t=0;t<T;t++){
        __m512 pp=_mm512_mul_ps(w,_mm512_set1_ps(xd[t][b]));
        acc[t]=_mm512_fmadd_ps(pp,_mm512_cvtepi32_ps(s[t][0]),acc[t]);
      }
    }
    __asm__ volatile("" ::: "memory");
  }
  double s=now()-t0;
  float r=0; for(int t=0;t<T;t++) r+=_mm512_reduce_add_ps(acc[t]);
  double macs=(double)iters*8*32*16*T;
  printf("interleaved rows, %d tokens: %.1f GMAC/s per core (r=%g)\n",T,macs/s/1e9,r);
  return 0;
}
