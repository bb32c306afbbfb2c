#!/usr/bin/env python3
"""What a broadcast costs the AVX2 prefill tile: loops of its instructions in inline assembly.

The AVX2 interleaved products add, per element pair, one 8-row register of weight codes
times each token's activation pair into a sum per token (`vpmaddwd` + `vpaddd`). The
half tile broadcasts each token's pair from memory (`vpbroadcastd ymm, m32`); the octet
tile (`kernels::avx2::interleaved::madd_rotated`) reads 8 tokens' pairs with plain loads
instead. This times, per iteration of 8 multiply-adds into 8 sums (128 multiply-adds):

  1. broadcast + madd + add (the half tile's step, without decoding);
  2. load + madd + add (plain 32-byte loads: the octet tile's operand);
  3. madd with a memory operand + add;
  4. the 8 broadcasts alone;
  5-6. 1 and 3 after Q5_0's decoding (5 operations).

On the AMD Zen 3 VM (2026-12-07) 8 broadcasts took 4.1 cycles (two a cycle, on the vector
pipes the multiply-adds also need): 1 ran at 7.4 cycles, 2 at 5.3, 3 at 4.8.
Needs gcc and AVX2. Cycles assume the clock given by --ghz (default: measured by a loop
of dependent adds).
"""
import argparse
import os
import subprocess
import sys
import tempfile

SRC = r"""
#include <stdio.h>
#include <time.h>
#include <stdint.h>
static double now(){struct timespec a;clock_gettime(CLOCK_MONOTONIC,&a);return a.tv_sec+a.tv_nsec*1e-9;}
static int32_t act[8][64] __attribute__((aligned(64)));
#define CL "memory","xmm0","xmm1","xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13","xmm14"
#define RUN(name, body) { long n=100000000; double t0=now(); long k=n; __asm__ volatile("1:\n" body "sub $1,%0\n jnz 1b\n":"+r"(k):"r"(act):CL); double s=now()-t0; printf("%-28s %.2f cycles/iter (@3.0GHz)  %.1f GMAC/s\n", name, s*3.0e9/n, n*128.0/s/1e9);}
#define B8(ins) ins(0,0) ins(256,1) ins(512,2) ins(768,3) ins(1024,4) ins(1280,5) ins(1536,6) ins(1792,7)
#define BM(off,i) "vpbroadcastd " #off "(%1),%%ymm9\n vpmaddwd %%ymm8,%%ymm9,%%ymm9\n vpaddd %%ymm9,%%ymm" #i ",%%ymm" #i "\n"
#define LM(off,i) "vmovdqa " #off "(%1),%%ymm9\n vpmaddwd %%ymm8,%%ymm9,%%ymm9\n vpaddd %%ymm9,%%ymm" #i ",%%ymm" #i "\n"
#define MM(off,i) "vpmaddwd " #off "(%1),%%ymm8,%%ymm9\n vpaddd %%ymm9,%%ymm" #i ",%%ymm" #i "\n"
#define BO(off,i) "vpbroadcastd " #off "(%1),%%ymm9\n"
#define DEC "vpand %%ymm12,%%ymm14,%%ymm8\n vpand %%ymm13,%%ymm12,%%ymm11\n vpor %%ymm11,%%ymm8,%%ymm8\n vpsrld $1,%%ymm13,%%ymm13\n vpsrld $4,%%ymm14,%%ymm14\n"
int main(){
  RUN("bcast+madd+add", B8(BM))
  RUN("load+madd+add", B8(LM))
  RUN("madd(mem)+add", B8(MM))
  RUN("bcast only x8", B8(BO))
  RUN("dec+bcast+madd+add", DEC B8(BM))
  RUN("dec+madd(mem)+add", DEC B8(MM))
}

"""

CLOCK = r"""
#include <stdio.h>
#include <time.h>
int main(){struct timespec a,b;long n=1000000000;long x=0;clock_gettime(CLOCK_MONOTONIC,&a);
__asm__ volatile("1: add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n sub $1, %1\n jnz 1b":"+r"(x),"+r"(n));
clock_gettime(CLOCK_MONOTONIC,&b);printf("%.3f\n",x/((b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)*1e-9)/1e9);}
"""


def build_run(src, d, name):
    c = os.path.join(d, name + ".c")
    exe = os.path.join(d, name)
    with open(c, "w") as f:
        f.write(src)
    subprocess.run(["gcc", "-O2", c, "-o", exe], check=True)
    return subprocess.run([exe], check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ghz", type=float, help="clock for the cycle counts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ghz = args.ghz or float(build_run(CLOCK, d, "clock"))
        print(f"clock {ghz:.2f} GHz")
        src = SRC.replace("3.0e9", f"{ghz}e9").replace("(@3.0GHz)", f"(@{ghz:.2f}GHz)")
        sys.stdout.write(build_run(src, d, "bcast"))


if __name__ == "__main__":
    main()
