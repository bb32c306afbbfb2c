#!/usr/bin/env python3
"""How fast a core issues the 512-bit dot-product instructions the BF16 and integer
products use: loops of 12 independent accumulators (no dependency between them, no
memory operand) in inline assembly, per instruction:

  1. vfmadd231ps zmm (16 f32 multiply-adds);
  2. vdpbf16ps zmm (32 bf16 multiply-adds into 16 f32 sums);
  3. vpdpwssd zmm (32 int16 multiply-adds into 16 int32 sums).

The BF16 products (`kernels::avx512::bf16`) run two fused multiply-adds per element pair
where that gives `vdpbf16ps`'s bits, because on the Intel Emerald Rapids VM (2026-12-08)
`vdpbf16ps` issued once per 2.2 cycles against two `vfmadd231ps` a cycle (2.9 GHz:
42, 85 and 184 GMAC/s for 2, 1 and 3): two FMAs per pair do twice the multiply-adds per
cycle of one `vdpbf16ps`. Needs gcc, AVX-512 F/BF16/VNNI. Cycles assume the
clock given by --ghz (default: measured by a loop of dependent register adds).
"""
import argparse
import os
import subprocess
import sys
import tempfile

SRC = r"""
#include <stdio.h>
#include <time.h>
static double now(){struct timespec a;clock_gettime(CLOCK_MONOTONIC,&a);return a.tv_sec+a.tv_nsec*1e-9;}
#define CL "zmm0","zmm1","zmm2","zmm3","zmm4","zmm5","zmm6","zmm7","zmm8","zmm9","zmm10","zmm11","zmm12","zmm13"
#define X12(ins) ins(0) ins(1) ins(2) ins(3) ins(4) ins(5) ins(6) ins(7) ins(8) ins(9) ins(10) ins(11)
#define FMA(i) "vfmadd231ps %%zmm12,%%zmm13,%%zmm" #i "\n"
#define DPBF(i) "vdpbf16ps %%zmm12,%%zmm13,%%zmm" #i "\n"
#define DPWS(i) "vpdpwssd %%zmm12,%%zmm13,%%zmm" #i "\n"
#define RUN(name, macs, body) { long n=50000000; double t0=now(); long k=n; \
  __asm__ volatile("vpxord %%zmm12,%%zmm12,%%zmm12\n vpxord %%zmm13,%%zmm13,%%zmm13\n" \
                   "1:\n" X12(body) "sub $1,%0\n jnz 1b\n":"+r"(k)::CL); \
  double s=now()-t0; printf("%s %.6e %.3f\n", name, s/n, n*12.0*macs/s/1e9);}
int main(){
  { long n=400000000; double t0=now(); long k=n, x=0;
    long one=1;
    __asm__ volatile("1:\n add %2,%1\n add %2,%1\n add %2,%1\n add %2,%1\n sub $1,%0\n jnz 1b\n":"+r"(k),"+r"(x):"r"(one));
    printf("clock %.4f\n", 4.0*n/(now()-t0)/1e9); }
  RUN("vfmadd231ps", 16, FMA)
  RUN("vdpbf16ps", 32, DPBF)
  RUN("vpdpwssd", 32, DPWS)
  return 0;
}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ghz", type=float, help="the core clock (default: measured)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "rates.c"), os.path.join(d, "rates")
        with open(src, "w") as f:
            f.write(SRC)
        subprocess.run(["gcc", "-O2", "-mavx512f", "-mavx512bf16", "-mavx512vnni", src, "-o", exe],
                       check=True)
        out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.split("\n")
    ghz = args.ghz or float(out[0].split()[1])
    print(f"clock {ghz:.2f} GHz ({'given' if args.ghz else 'measured: 4 dependent adds per cycle'})")
    print(f"{'instruction':<14} {'cycles per instruction':>24} {'GMAC/s':>8}")
    for line in out[1:]:
        if not line:
            continue
        name, per_iter, gmacs = line.split()
        print(f"{name:<14} {float(per_iter) * ghz * 1e9 / 12:>24.2f} {float(gmacs):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
