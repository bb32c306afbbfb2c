#!/usr/bin/env python3
"""Ceilings of the AVX-512 VNNI prefill tile, from loops written out in inline assembly.

The interleaved products of `kernels::avx512::interleaved` run two 16-row groups by eight
tokens: per element pair, 16 `vpdpwssd` (one zmm of 16 rows per group and token), 8
broadcasts of the tokens' activation pairs, and the decoding of the codes (for Q5_0: a
mask, a merge of the fifth bits, two shifts per group); per block of 16 pairs, a float
step per group and token (convert, scale product, fused add into the sum kept in memory).
This writes C loops of exactly those instructions with gcc inline assembly, runs them,
and prints GMAC/s (multiply-adds, 32 per zmm `vpdpwssd`), so the kernel's rate
(`examples/matmul_bench`) can be read against what the instructions allow:

  1. `vpdpwssd` alone, zmm and ymm, 16 independent sums;
  2. the pair step: 16 `vpdpwssd` + 8 broadcasts + Q5_0's decoding, registers only;
  3. 16 pair steps and the block's float step, the sums kept in memory;
  4. a whole Q5_0 tile as the kernel runs it: for each tile of 8 tokens (of 512), every
     block of a two-group weight of COLS columns (codes and f16 scales read from memory),
     the 8 tokens' activation rows read from memory, the float step.

Needs gcc and a CPU with AVX-512 F and VNNI. usage: vnni-ceiling.py [--cols 896]
The clock (for cycles) is estimated by a loop of dependent adds.
"""
import argparse
import os
import subprocess
import sys
import tempfile

CLOB = ",".join(f'"xmm{i}"' for i in range(32))


def asm(lines):
    return "".join(f'"{l}\\n\\t"' for l in lines)


def dp_alone(reg):
    return [f"vpdpwssd %%{reg}30, %%{reg}31, %%{reg}{i}" for i in range(16)]


def pair_step(pair, decode=True, x_rows=False):
    """One element pair of the tile: sums s[g][t] in zmm(8g + t); codes of group g in
    zmm(26 + g), fifth bits in zmm(30 + g), the decoded pair in zmm(28 + g); masks in
    zmm17/18; the broadcast in zmm16."""
    s = []
    if decode:
        for g in range(2):
            s += [f"vpandd %%zmm17, %%zmm{26 + g}, %%zmm{28 + g}",
                  f"vpternlogd $0xf8, %%zmm18, %%zmm{30 + g}, %%zmm{28 + g}"]
    for t in range(8):
        src = f"{4 * pair}(%{2 + t})" if x_rows else f"{(4 * t + 32 * pair) % 1024}(%0)"
        s.append(f"vpbroadcastd {src}, %%zmm16")
        for g in range(2):
            s.append(f"vpdpwssd %%zmm16, %%zmm{28 + g}, %%zmm{8 * g + t}")
    if decode:
        for g in range(2):
            s.append(f"vpsrld $1, %%zmm{30 + g}, %%zmm{30 + g}")
            if pair % 4 != 3:
                s.append(f"vpsrld $4, %%zmm{26 + g}, %%zmm{26 + g}")
    return s


def float_step(acc, xd, scales):
    """The block's float step: acc[g][t] = fma(w_g · xd_t, float(s[g][t] - o Σx), acc)."""
    s = [f"vcvtph2ps {scales(g)}, %%zmm{24 + g}" for g in range(2)]
    for g in range(2):
        for t in range(8):
            a = f"{64 * (8 * g + t)}({acc})"
            r = 8 * g + t
            s += [f"vbroadcastss {4 * t}({xd}), %%zmm19",
                  f"vmulps %%zmm19, %%zmm{24 + g}, %%zmm20",
                  f"vpsubd %%zmm18, %%zmm{r}, %%zmm{r}",
                  f"vcvtdq2ps %%zmm{r}, %%zmm{r}",
                  f"vmovups {a}, %%zmm21",
                  f"vfmadd231ps %%zmm{r}, %%zmm20, %%zmm21",
                  f"vmovups %%zmm21, {a}",
                  f"vpxord %%zmm{r}, %%zmm{r}, %%zmm{r}"]
    return s


def whole_block():
    s = []
    for g in range(2):
        s += [f"vmovdqu64 256(%{g}), %%zmm{24 + g}", f"vpslld $4, %%zmm{24 + g}, %%zmm{30 + g}"]
    for c in range(4):
        s += [f"vmovdqu64 {64 * c}(%{g}), %%zmm{26 + g}" for g in range(2)]
        for j in range(4):
            if c == 3 and j == 0:
                s += [f"vpsrld $8, %%zmm{24 + g}, %%zmm{30 + g}" for g in range(2)]
            s += pair_step(4 * c + j, decode=True, x_rows=True)
    return s + float_step("%10", "%11", lambda g: f"320(%{g})")


PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec a; clock_gettime(CLOCK_MONOTONIC, &a); return a.tv_sec + a.tv_nsec * 1e-9; }
static int buf[1024] __attribute__((aligned(64)));
static float acc[256] __attribute__((aligned(64)));
static float xd[64] __attribute__((aligned(64)));
static double best(double a, double b) { return a < b ? a : b; }
int main(void) {
  double t, ghz;
  long n, cols = COLS, ntok = 512, nb = COLS / 32, gb = nb * 352;
  { long x = 0; n = 500000000; t = now();
    for (long i = 0; i < n; i++) __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    ghz = 4.0 * n / (now() - t) / 1e9; printf("clock (dependent adds): %.2f GHz\n", ghz); }
#define TIME(label, iters, macs, ...) { double b = 1e9; for (int r = 0; r < 5; r++) { t = now(); \
    for (long i = 0; i < iters; i++) { __VA_ARGS__ } b = best(b, now() - t); } \
    printf("%-58s %6.1f GMAC/s\n", label, (double)(iters) * (macs) / b / 1e9); }
  n = 20000000;
  TIME("1. vpdpwssd zmm alone", n, 16 * 32, __asm__ volatile(DP_ZMM ::: CLOB);)
  TIME("1. vpdpwssd ymm alone", n, 16 * 16, __asm__ volatile(DP_YMM ::: CLOB);)
  TIME("2. pair step: 16 vpdpwssd, 8 broadcasts, Q5_0 decoding", n, 16 * 32, __asm__ volatile(PAIR :: "r"(buf) : CLOB);)
  n = 1000000;
  TIME("3. 16 pair steps and the float step (sums in memory)", n, 16 * 16 * 32,
       __asm__ volatile(BLOCK :: "r"(buf), "r"(buf + 512), "r"(acc) : "memory", CLOB);)
  char *w = aligned_alloc(64, 2 * gb + 4096);
  short *x = aligned_alloc(64, ntok * cols * 2 + 4096);
  for (long i = 0; i < 2 * gb; i++) w[i] = (char)(i * 7);
  for (long i = 0; i < ntok * cols; i++) x[i] = (short)(i * 3);
  TIME("4. whole Q5_0 tiles, 512 tokens, weights and rows in memory", 4, (double)ntok / 8 * nb * 16 * 16 * 32,
    for (long t0 = 0; t0 < ntok; t0 += 8) for (long b = 0; b < nb; b++) {
      char *c0 = w + b * 352, *c1 = w + gb + b * 352;
      short *r[8]; for (int k = 0; k < 8; k++) r[k] = x + (t0 + k) * cols + b * 32;
      __asm__ volatile(WHOLE :: "r"(c0), "r"(c1), "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3]),
                       "r"(r[4]), "r"(r[5]), "r"(r[6]), "r"(r[7]), "r"(acc), "r"(xd) : "memory", CLOB);
    })
  return 0;
}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cols", type=int, default=896, help="columns of the whole-tile weight")
    a = ap.parse_args()
    block = []
    for p in range(16):
        block += pair_step(p)
    block += float_step("%2", "%1", lambda g: f"{32 * g}(%1)")
    src = (PROGRAM.replace("COLS", str(a.cols)).replace("CLOB", CLOB)
           .replace("DP_ZMM", asm(dp_alone("zmm"))).replace("DP_YMM", asm(dp_alone("ymm")))
           .replace("PAIR", asm(pair_step(0))).replace("BLOCK", asm(block))
           .replace("WHOLE", asm(whole_block())))
    with tempfile.TemporaryDirectory() as d:
        c, exe = os.path.join(d, "ceiling.c"), os.path.join(d, "ceiling")
        with open(c, "w") as f:
            f.write(src)
        subprocess.run(["gcc", "-O2", "-mavx512f", "-o", exe, c], check=True)
        sys.exit(subprocess.run([exe]).returncode)


if __name__ == "__main__":
    main()
