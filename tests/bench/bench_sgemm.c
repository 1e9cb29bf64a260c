/*
 * bench_sgemm.c — the plain OpenBLAS sgemm rate on the GEMM shapes of one
 * BERT training step (and of one inference batch), the ceiling the engine is
 * measured against.
 *
 *   cc -O2 -Isrc/engine tests/bench/bench_sgemm.c build/libbftengine.a -lopenblas ... (see bench_engine.sh)
 *   bench_sgemm LAYERS HIDDEN INTERMEDIATE BATCH SEQ THREADS [REPEATS [cpu]]
 * ("cpu": time with the process CPU clock, rates x THREADS: robust on a loaded
 * machine when THREADS = 1; names then end in _cpu)
 *
 * Shapes per layer, N = BATCH*SEQ tokens, row-major as the engine calls them:
 *   forward  out(N,O) = in(N,I) . W(O,I)^T      for (O,I) in (3C,C) (C,C) (I,C) (C,I)
 *   backward dIn(N,I) = dOut(N,O) . W(O,I)      and dW(O,I) += dOut^T(O,N) . in(N,I)
 * Two ways are timed: OpenBLAS's own threading (openblas_set_num_threads(THREADS),
 * one cblas_sgemm per product: "plain OpenBLAS") and the engine's bft_op_gemm (OpenBLAS
 * single-threaded, products split over the engine's pool).
 * Prints GFLOP/s and the GEMM-only ceilings in samples/s:
 *   train_gemm_ceiling = BATCH / (time of the 3 products per weight, all layers)
 *   infer_gemm_ceiling = BATCH / (time of the forward products, all layers)
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"
#include "threads.h"

void openblas_set_num_threads(int num_threads);

static clockid_t which_clock = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(which_clock, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef void (*gemm_fn)(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc);

static void plain(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* One pass over the products of L layers; returns seconds (fwd and total). */
static void pass(gemm_fn g, int L, int C, int Im, int Ntok, float *in, float *w, float *out,
                 float *dw, double *t_fwd, double *t_all)
{
    int O[4] = {3 * C, C, Im, C}, In[4] = {C, C, C, Im};
    double f = 0.0, b = 0.0;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 4; k++) {
            double t0 = now();
            g(0, 1, Ntok, O[k], In[k], 1.0f, in, In[k], w, In[k], 0.0f, out, O[k]);
            double t1 = now();
            g(0, 0, Ntok, In[k], O[k], 1.0f, out, O[k], w, In[k], 0.0f, in, In[k]);
            g(1, 0, O[k], In[k], Ntok, 1.0f, out, O[k], in, In[k], 1.0f, dw, In[k]);
            double t2 = now();
            f += t1 - t0;
            b += t2 - t1;
        }
    *t_fwd = f;
    *t_all = f + b;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s LAYERS HIDDEN INTERMEDIATE BATCH SEQ THREADS [REPEATS]\n", argv[0]);
        return 2;
    }
    int L = atoi(argv[1]), C = atoi(argv[2]), Im = atoi(argv[3]), B = atoi(argv[4]);
    int T = atoi(argv[5]), th = atoi(argv[6]), rep = argc > 7 ? atoi(argv[7]) : 3;
    int cpu = argc > 8 && !strcmp(argv[8], "cpu");
    const char *sfx = cpu ? "_cpu" : "";
    if (cpu)
        which_clock = CLOCK_PROCESS_CPUTIME_ID;
    int Ntok = B * T, big = Im > 3 * C ? Im : 3 * C;
    float *in = malloc((size_t)Ntok * big * sizeof *in), *out = malloc((size_t)Ntok * big * sizeof *out);
    float *w = malloc((size_t)big * big * sizeof *w), *dw = malloc((size_t)big * big * sizeof *dw);
    for (size_t i = 0; i < (size_t)Ntok * big; i++)
        in[i] = out[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < (size_t)big * big; i++)
        w[i] = dw[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
    double flops_fwd = 2.0 * Ntok * (double)L * (4.0 * C * C + 2.0 * C * Im), flops_all = 3 * flops_fwd;
    const char *names[2] = {"openblas", "bft_op_gemm"};
    gemm_fn fns[2] = {plain, bft_op_gemm};
    for (int v = 0; v < 2; v++) {
        double best_f = 1e30, best_a = 1e30, tf, ta;
        if (v == 0)
            openblas_set_num_threads(th);
        else {
            bft_threads_set(th);
            bft_op_gemm(0, 0, 1, 1, 1, 1.0f, in, 1, w, 1, 0.0f, out, 1); /* sets OpenBLAS to 1 thread */
        }
        for (int r = 0; r < rep + 1; r++) {
            pass(fns[v], L, C, Im, Ntok, in, w, out, dw, &tf, &ta);
            if (r == 0)
                continue; /* warm-up */
            if (tf < best_f)
                best_f = tf;
            if (ta < best_a)
                best_a = ta;
        }
        double k = cpu ? th : 1.0;
        printf("%s_train_gflops%s: %.1f\n", names[v], sfx, k * flops_all / best_a * 1e-9);
        printf("%s_infer_gflops%s: %.1f\n", names[v], sfx, k * flops_fwd / best_f * 1e-9);
        printf("%s_train_gemm_ceiling_samples_per_s%s: %.3f\n", names[v], sfx, k * B / best_a);
        printf("%s_infer_gemm_ceiling_samples_per_s%s: %.3f\n", names[v], sfx, k * B / best_f);
        fflush(stdout);
    }
    free(in);
    free(out);
    free(w);
    free(dw);
    return 0;
}
