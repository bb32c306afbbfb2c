// Writes what ggml's reference K-quant quantizers (quantize_row_q{2,3,4,5,6}_K_ref in
// ggml/src/ggml-quants.c) make of kquant_input() of crates/tuili-backend/tests/quant_fixtures.rs:
// the Q2_K, Q3_K, Q4_K, Q5_K and Q6_K bytes one type after the other, to the file named by argv[1]
// (kquants-ggml.bin); with a second argument, also the input as raw little-endian f32 there.
// Built and run by regenerate.sh, which links it with ggml-quants.c and nothing else.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-common.h"
#include "ggml-quants.h"

#define N_SUPER 16
#define N (N_SUPER * QK_K) // (16 * 256) floats

// A port of kquant_input(): xorshift64 (13, 7, 17), each value a sum of four uniforms in
// [-2^11, 2^11) times a power of two, special cases in the first five super-blocks.
static void kquant_input(float *x /* (16 * 256) */) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int b = 0; b < N_SUPER; b++) {
        int e = b * 7 % 23 - 16; // scales 2^-16 .. 2^6
        uint32_t bits = (uint32_t)(127 + e - 12) << 23;
        float unit;
        memcpy(&unit, &bits, sizeof unit);
        for (int i = 0; i < QK_K; i++) {
            int32_t r = 0;
            for (int j = 0; j < 4; j++) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                r += (int32_t)((s >> 40) % 4096) - 2048;
            }
            float v = (float)r * unit;
            float out;
            switch (b) {
            case 0: out = 0.0f; break;
            case 1: out = 0.7f; break;
            case 2: out = i == 5 ? -3.0f : 0.0f; break;
            case 3: out = v < 0 ? -v : v; break;
            case 4: out = v < 0 ? v : -v; break;
            default: out = v;
            }
            x[b * QK_K + i] = out;
        }
    }
}

// ggml.c is not linked: the reference quantizers reach only ggml_abort (GGML_ASSERT, never
// tripped by these inputs); the other three are used by ggml-quants.c's row validation.
void ggml_abort(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "ggml_abort at %s:%d (%s)\n", file, line, fmt);
    abort();
}
static void unused(const char *name) {
    fprintf(stderr, "%s is not part of this harness\n", name);
    abort();
}
size_t ggml_type_size(enum ggml_type type) {
    (void)type;
    unused("ggml_type_size");
    return 0;
}
size_t ggml_row_size(enum ggml_type type, int64_t ne) {
    (void)type, (void)ne;
    unused("ggml_row_size");
    return 0;
}
const char *ggml_type_name(enum ggml_type type) {
    (void)type;
    unused("ggml_type_name");
    return "";
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s OUT.bin [INPUT.f32]\n", argv[0]);
        return 2;
    }
    static float x[N];
    kquant_input(x);

    static block_q2_K q2[N_SUPER];
    static block_q3_K q3[N_SUPER];
    static block_q4_K q4[N_SUPER];
    static block_q5_K q5[N_SUPER];
    static block_q6_K q6[N_SUPER];
    quantize_row_q2_K_ref(x, q2, N);
    quantize_row_q3_K_ref(x, q3, N);
    quantize_row_q4_K_ref(x, q4, N);
    quantize_row_q5_K_ref(x, q5, N);
    quantize_row_q6_K_ref(x, q6, N);

    FILE *f = fopen(argv[1], "wb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    fwrite(q2, sizeof q2, 1, f);
    fwrite(q3, sizeof q3, 1, f);
    fwrite(q4, sizeof q4, 1, f);
    fwrite(q5, sizeof q5, 1, f);
    fwrite(q6, sizeof q6, 1, f);
    if (fclose(f) != 0) {
        perror(argv[1]);
        return 1;
    }
    if (argc > 2) {
        FILE *g = fopen(argv[2], "wb");
        if (!g || fwrite(x, sizeof x, 1, g) != 1 || fclose(g) != 0) {
            perror(argv[2]);
            return 1;
        }
    }
    return 0;
}
