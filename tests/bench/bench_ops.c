/*
 * bench_ops.c — CPU time of the CPU backend's elementwise and row ops (everything
 * but the GEMMs) at BERT-base training shapes, one thread, best of REPS; used
 * by tests/bench/bench_portable.sh to compare builds of the same engine.
 *
 *   bench_ops [REPS]
 *
 * Shapes: N = 16 x 64 tokens, C = 768, I = 3072, 12 heads, AdamW over 110 M
 * parameters scaled down to 8 M (memory-bound either way). Prints one line
 * per op, "op NAME: MICROSECONDS us HASH" (HASH: of the op's output bits),
 * and "checksum: X" over all of them: two builds that compute identical
 * results print the same hashes.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"
#include "threads.h"

/* CPU time of the process: everything runs on this one thread, and time spent
 * preempted on a loaded machine does not count. */
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n)
{
    float *x = malloc(n * sizeof *x);
    if (!x) {
        fprintf(stderr, "bench_ops: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        x[i] = frand();
    return x;
}

static uint64_t hash = 1469598103934665603ull;
/* Mix bytes into the running checksum; returns the hash of these bytes alone. */
static uint64_t mix(const void *p, size_t bytes)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++) {
        hash = (hash ^ b[i]) * 1099511628211ull;
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

static int reps = 20;

/* Best time of reps runs of one op; setup restores the inputs before each. */
#define TIME(name, setup, op, out, outn)                                         \
    do {                                                                         \
        double best = 1e30;                                                      \
        for (int r_ = 0; r_ < reps; r_++) {                                      \
            setup;                                                               \
            double t0_ = now();                                                  \
            op;                                                                  \
            double t1_ = now();                                                  \
            if (t1_ - t0_ < best)                                                \
                best = t1_ - t0_;                                                \
        }                                                                        \
        uint64_t h_ = mix(out, (outn) * sizeof(float));                         \
        printf("op %-22s %10.1f us  %016llx\n", name ":", best * 1e6,            \
               (unsigned long long)h_);                                          \
    } while (0)

int main(int argc, char **argv)
{
    if (argc > 1)
        reps = atoi(argv[1]);
    bft_threads_set(1);
    const int B = 16, T = 64, N = B * T, C = 768, I = 3072, NH = 12, K = 20;
    const size_t NP = 8u << 20;
    float *a = rand_buf((size_t)N * I), *a0 = rand_buf((size_t)N * I), *b = rand_buf((size_t)N * I);
    float *o = rand_buf((size_t)N * I), *bias = rand_buf(I), *w = rand_buf(C), *bb = rand_buf(C);
    float *mean = rand_buf(N), *rstd = rand_buf(N), *dw = rand_buf(C), *db = rand_buf(C);
    float *x = rand_buf((size_t)N * C), *res = rand_buf((size_t)N * C), *dx = rand_buf((size_t)N * C);
    float *qkv = rand_buf((size_t)N * 3 * C), *ctx = rand_buf((size_t)N * C);
    float *att = rand_buf((size_t)B * NH * T * T), *dqkv = rand_buf((size_t)N * 3 * C);
    float *logits = rand_buf((size_t)N * K), *probs = rand_buf((size_t)N * K), *dl = rand_buf((size_t)N * K);
    float *losses = rand_buf(N);
    float *p = rand_buf(NP), *g = rand_buf(NP), *m = rand_buf(NP), *v = rand_buf(NP);
    float *p0 = rand_buf(NP), *g0 = rand_buf(NP);
    int32_t lens[16], labels[16 * 64];
    for (int i = 0; i < B; i++)
        lens[i] = T - 3 * i;
    for (int i = 0; i < N; i++)
        labels[i] = i % K;
    for (size_t i = 0; i < NP; i++)
        v[i] = fabsf(v[i]);
    bft_dropout d = {0.1f, bft_dropout_seed(42, 1, 7)};
    size_t nI = (size_t)N * I, nC = (size_t)N * C;

    TIME("gelu_fwd", (void)0, bft_op_gelu_fwd(o, a0, nI), o, nI);
    TIME("gelu_bwd", (void)0, bft_op_gelu_bwd(o, b, a0, nI), o, nI);
    TIME("bias_gelu_fwd", memcpy(a, a0, nI * sizeof *a), bft_op_bias_gelu_fwd(a, o, bias, N, I), o, nI);
    TIME("gelu_recompute", memcpy(a, a0, nI * sizeof *a), bft_op_gelu_recompute(o, a, nI), a, nI);
    TIME("dropout_fwd", (void)0, bft_op_dropout_fwd(o, a0, nI, &d), o, nI);
    TIME("layernorm_fwd", (void)0, bft_op_layernorm_fwd(o, mean, rstd, x, w, bb, N, C, 1e-12f), o, nC);
    TIME("residual_ln_fwd", memcpy(dx, x, nC * sizeof *dx),
         bft_op_residual_ln_fwd(o, dx, mean, rstd, a0, bias, res, w, bb, N, C, 1e-12f, &d), o, nC);
    TIME("layernorm_bwd", memcpy(dx, res, nC * sizeof *dx),
         bft_op_layernorm_bwd(dx, dw, db, dx, x, mean, rstd, w, N, C, 0), dx, nC);
    TIME("dropout_bias_bwd", (void)0, bft_op_dropout_bias_bwd(o, db, res, N, C, &d), o, nC);
    TIME("attention_fwd", (void)0, bft_op_attention_fwd(ctx, att, qkv, lens, B, T, C, NH, &d), ctx, nC);
    TIME("attention_bwd", (void)0, bft_op_attention_bwd(dqkv, x, att, qkv, lens, B, T, C, NH, &d),
         dqkv, nC * 3);
    TIME("attention_cls_fwd", (void)0, bft_op_attention_cls_fwd(ctx, att, qkv, lens, B, T, C, NH, &d),
         ctx, (size_t)B * C);
    TIME("attention_cls_bwd", (void)0,
         bft_op_attention_cls_bwd(dqkv, x, att, qkv, lens, B, T, C, NH, &d), dqkv, nC * 3);
    TIME("softmax_xent", (void)0, bft_op_softmax_xent(probs, losses, dl, logits, labels, N, K, 1.0f / N),
         dl, (size_t)N * K);
    TIME("colsum", (void)0, bft_op_colsum(bias, a0, N, I, 0), bias, (size_t)I);
    TIME("adamw", (memcpy(p, p0, NP * sizeof *p), memcpy(g, g0, NP * sizeof *g)),
         bft_op_adamw(p, g, m, v, NP, 5e-5f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f, 3, 0), p, NP);
    double ss = 0;
    TIME("sumsq", (void)0, ss = bft_op_sumsq(g0, NP), &ss, 2);
    printf("checksum: %016llx\n", (unsigned long long)hash);
    /* what the run-time choice sees, and which OpenBLAS kernels the GEMMs used */
    __builtin_cpu_init();
    printf("cpu: %s\n", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
                             ? "x86-64-v4 (AVX-512)"
                         : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "x86-64-v3 (AVX2)"
                                                                                            : "baseline");
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_NOLOAD);
    char *(*corename)(void) = h ? (char *(*)(void))dlsym(h, "openblas_get_corename") : NULL;
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("openblas: %s kernels (OPENBLAS_CORETYPE=%s)\n", corename ? corename() : "?", ct ? ct : "unset");
    return 0;
}
