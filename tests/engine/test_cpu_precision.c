/*
 * test_cpu_precision.c — bf16 and int8 on the CPU (oneDNN, ops_dnnl.c).
 *
 * Everywhere: asking for bf16 on the CPU gives the oneDNN backend exactly
 * when bft_dnnl_available says so, else BFT_EUNSUPPORTED with a message
 * naming what is missing, and the fp32 backend stays current; in child
 * processes (oneDNN reads its settings once), a oneDNN library that cannot
 * be loaded (BFT_DNNL_LIBRARY pointing nowhere) and oneDNN limited to an ISA
 * without bf16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE) are refused the same way,
 * through bft_set_device and bft_train, with the weights untouched.
 *
 * Where this CPU and build run bf16 (else "skip - ...: why", counted neither
 * as passed nor failed):
 *   - products: bf16 GEMMs (every transpose, alpha, beta, leading dimensions,
 *     odd and large shapes) and linear fwd/bwd against a float64 reference
 *     over the operands rounded to bf16: |err| <= 1e-6 sqrt(K) sum_k |a b|
 *     (fp32 accumulation only: an fp32 product would miss it by ~1e-3);
 *   - attention fwd/bwd against the fp32 backend: relative Frobenius error
 *     <= 1e-2 (bf16 unit roundoff 2^-8, halved by rounding to nearest);
 *   - the golden tests of test_bert.c on the CPU in bf16 (golden_device.h:
 *     probabilities within 1e-2 of PyTorch float64, gradients 5e-2 per
 *     tensor, 10 AdamW steps);
 *   - bft_predict in bf16 against fp32 on every checkpoint of tests/data/ckpt:
 *     probabilities within 1e-2;
 *   - determinism: two bf16 trainings (dropout on, 2 threads) give identical
 *     weights, repeated inference identical probabilities;
 *   - the weights' bf16 copy follows the weights: after an fp32 training
 *     changed them in place, and after a bf16 training, bf16 inference on the
 *     model equals bf16 inference on a fresh copy of its weights;
 *   - the toy task of test_train.c learned in bf16: valid accuracy >= 0.95
 *     and within 2 examples of fp32's with the same seed.
 *
 * int8 (inference only), where the CPU has VNNI or AMX (else skipped):
 *   - refused for training (BFT_EUNSUPPORTED, weights untouched) and, in a
 *     child with ONEDNN_MAX_CPU_ISA=AVX2, refused for inference;
 *   - linear forward against a float64 reference of the same quantisation
 *     (per-row asymmetric u8 activations, per-channel symmetric s8 weights):
 *     error <= 1e-6 of the terms' size (the int32 accumulation is exact; only
 *     the fp32 dequantisation and bias rounds), and against fp32: relative
 *     Frobenius <= 2e-2;
 *   - probabilities on every test checkpoint within 5e-2 of fp32 (int8 keeps
 *     ~1/255 of each row's range per value), identical with 1 and 2 threads
 *     (integer accumulation), and the int8 copy follows weight changes.
 */
#include <math.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "bf16.h"
#include "bert.h"
#include "model.h"
#include "ops.h"
#include "ops_dnnl.h"
#include "rng.h"
#include "test.h"
#include "testdata.h"
#include "train.h"

#include "golden_device.h"

extern char **environ;

#define CKPT "tests/data/ckpt/"

static int bf16_ok;       /* this CPU and build run bf16 */
static char bf16_why[512]; /* why not */
static const bft_backend *BF; /* the bf16 backend */
static int int8_ok;       /* ... and int8 */
static char int8_why[512];
static const bft_backend *Q8; /* the int8 backend */

/* RUN for tests that need bf16: skipped (neither passed nor failed) without it. */
#define RUN_BF16(fn)                                                                               \
    do {                                                                                           \
        if (bf16_ok) {                                                                             \
            RUN(fn);                                                                               \
        } else {                                                                                   \
            printf("skip - %s: %s\n", #fn, bf16_why);                                              \
            fflush(stdout);                                                                        \
        }                                                                                          \
    } while (0)

static bft_model *load(const char *name)
{
    bft_error err;
    char dir[256];
    snprintf(dir, sizeof dir, CKPT "%s", name);
    bft_model *m = bft_model_load_dir(dir, &err);
    CHECK(m != NULL, "load %s: %s", dir, err.msg);
    return m;
}

/* ---------------------------------------------------------------- everywhere */

static void test_selection(void)
{
    bft_error e;
    const bft_backend *be = NULL;
    printf("  bf16 on this CPU: %s%s%s\n", bf16_ok ? "yes" : "no", bf16_ok ? "" : " — ",
           bf16_ok ? "" : bf16_why);
    int rc = bft_backend_open(BFT_DEVICE_CPU, BFT_PRECISION_BF16, &be, &e);
    if (bf16_ok) {
        CHECK(rc == BFT_OK && be && be != bft_cpu_backend() && be->device == BFT_DEVICE_CPU,
              "open cpu bf16: rc %d (%s)", rc, e.msg);
    } else {
        CHECK(rc == BFT_EUNSUPPORTED && e.code == BFT_EUNSUPPORTED, "open cpu bf16: rc %d", rc);
        CHECK(strstr(e.msg, "bf16") && (strstr(e.msg, "oneDNN") || strstr(e.msg, "AVX512-BF16")),
              "message does not say what is missing: %s", e.msg);
        CHECK(bft_set_device(BFT_DEVICE_CPU, BFT_PRECISION_BF16, &e) == BFT_EUNSUPPORTED,
              "bft_set_device(cpu, bf16)");
        int prec = -1;
        bft_get_device(NULL, &prec);
        CHECK(prec == BFT_PRECISION_AUTO, "the precision changed to %d after a failure", prec);
    }
    /* fp32 and auto stay on the fp32 backend (OpenBLAS) */
    CHECK(bft_backend_open(BFT_DEVICE_CPU, BFT_PRECISION_FP32, &be, &e) == BFT_OK &&
              be == bft_cpu_backend(),
          "cpu fp32");
    CHECK(bft_backend_open(BFT_DEVICE_CPU, BFT_PRECISION_AUTO, &be, &e) == BFT_OK &&
              be == bft_cpu_backend(),
          "cpu auto");
    CHECK(bft_backend_current() == bft_cpu_backend(), "current backend is not the CPU");
    CHECK(bft_precision_parse("bf16") == BFT_PRECISION_BF16 &&
              bft_precision_parse("FP32") == BFT_PRECISION_FP32 &&
              bft_precision_parse("auto") == BFT_PRECISION_AUTO && bft_precision_parse("x") == -1,
          "bft_precision_parse");
    CHECK(strcmp(bft_precision_name(BFT_PRECISION_BF16), "bf16") == 0, "bft_precision_name");
}

/* Child process: bf16 must be refused (BFT_EUNSUPPORTED, message containing
 * want) by bft_set_device and bft_train, the weights untouched. */
static int child_refused(const char *want)
{
    bft_error e;
    int bad = 0;
    int rc = bft_set_device(BFT_DEVICE_CPU, BFT_PRECISION_BF16, &e);
    printf("child: bft_set_device(cpu, bf16): %s: %s\n", bft_status_name(rc), e.msg);
    bad += rc != BFT_EUNSUPPORTED || !strstr(e.msg, want);
    bft_model *m = bft_model_load_dir(CKPT "tiny", &e);
    if (!m)
        return 2;
    toy t;
    toy_make(&t, 16, 1, 2);
    float *before = malloc(m->num_params * sizeof *before);
    memcpy(before, m->params_mem, m->num_params * sizeof *before);
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 1;
    o.precision = BFT_PRECISION_BF16;
    rc = bft_train(m, &t.ds, &o, NULL, NULL, NULL, &e);
    printf("child: bft_train(precision bf16): %s: %s\n", bft_status_name(rc), e.msg);
    bad += rc != BFT_EUNSUPPORTED || !strstr(e.msg, want);
    bad += memcmp(before, m->params_mem, m->num_params * sizeof *before) != 0;
    o.precision = BFT_PRECISION_FP32;
    bad += bft_train(m, &t.ds, &o, NULL, NULL, NULL, &e) != BFT_OK; /* fp32 still works */
    free(before);
    toy_free(&t);
    bft_model_free(m);
    return bad ? 1 : 0;
}

/* Child process: int8 inference must be refused with a message containing want. */
static int child_refused_int8(const char *want)
{
    bft_error e;
    int rc = bft_set_device(BFT_DEVICE_CPU, BFT_PRECISION_INT8, &e);
    printf("child: bft_set_device(cpu, int8): %s: %s\n", bft_status_name(rc), e.msg);
    return rc == BFT_EUNSUPPORTED && strstr(e.msg, want) ? 0 : 1;
}

/* Run this binary as a child with one more environment variable; its exit status. */
static int spawn_child(const char *mode, const char *want, const char *env)
{
    int n = 0;
    while (environ[n])
        n++;
    char **envp = calloc((size_t)n + 2, sizeof *envp);
    for (int i = 0; i < n; i++)
        envp[i] = environ[i];
    envp[n] = (char *)env;
    char *argv[] = {"test_cpu_bf16", (char *)mode, (char *)want, NULL};
    pid_t pid;
    int st = -1;
    fflush(stdout);
    if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, envp) == 0)
        waitpid(pid, &st, 0);
    free(envp);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

static void test_refused_in_child(void)
{
    bft_error e;
    const char *no_lib = "cannot load oneDNN", *no_isa = "AVX512-BF16";
    const char *no_vnni = strstr(bf16_why, "built without")        ? "built without"
                          : strstr(bf16_why, "cannot load oneDNN") ? "cannot load oneDNN"
                                                                   : "VNNI";
    if (strstr(bf16_why, "built without"))
        no_lib = no_isa = "built without";
    else if (strstr(bf16_why, "cannot load oneDNN"))
        no_isa = no_lib;
    /* no oneDNN library */
    int st = spawn_child("--child-refused", no_lib, "BFT_DNNL_LIBRARY=/nonexistent/libdnnl.so.2");
    CHECK(st == 0, "no library: child exit %d", st);
    /* oneDNN limited to AVX-512 without BF16 */
    st = spawn_child("--child-refused", no_isa, "ONEDNN_MAX_CPU_ISA=AVX512_CORE");
    CHECK(st == 0, "ISA without bf16: child exit %d", st);
    /* oneDNN limited to AVX2 (no VNNI): int8 refused too */
    st = spawn_child("--child-refused-int8", no_vnni, "ONEDNN_MAX_CPU_ISA=AVX2");
    CHECK(st == 0, "ISA without VNNI: child exit %d", st);
    (void)e;
}

/* ---------------------------------------------------------------- products */

/* Float64 reference C = alpha op(Ar) op(Br) + beta C0 over bf16-rounded
 * operands; S = sum |a b| for the tolerance. */
static void ref_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, const float *C0, int ldc, double *R,
                     double *S)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0, s = 0.0;
            for (int k = 0; k < K; k++) {
                double a = bft_bf16_round(tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                double b = bft_bf16_round(tB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                acc += a * b;
                s += fabs(a * b);
            }
            R[(size_t)i * N + j] = alpha * acc + beta * C0[(size_t)i * ldc + j];
            S[(size_t)i * N + j] = fabs(alpha) * s + fabs(beta * C0[(size_t)i * ldc + j]);
        }
}

/* Worst |c - r| / (1e-6 sqrt(K) S + 1e-30) over an (M, N) result. */
static double worst_ratio(const float *C, int ldc, const double *R, const double *S, int M, int N,
                          int K)
{
    double w = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double e = fabs((double)C[(size_t)i * ldc + j] - R[(size_t)i * N + j]);
            double t = 1e-6 * sqrt((double)(K > 1 ? K : 1)) * S[(size_t)i * N + j] + 1e-30;
            if (e / t > w)
                w = e / t;
        }
    return w;
}

static void test_gemm_semantics(void)
{
    const bft_backend *prev = bft_backend_use(BF);
    static const int shapes[][3] = {{1, 1, 1},     {3, 5, 7},     {17, 33, 65},  {64, 64, 64},
                                    {130, 96, 257}, {257, 512, 96}, {512, 300, 768}, {8, 2, 40}};
    double worst = 0.0, worst_fp32 = 0.0;
    int cases = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], tA = t >> 1, tB = t & 1;
            int pad = (int)(s % 3); /* leading dimensions beyond the matrix */
            int lda = (tA ? M : K) + pad, ldb = (tB ? K : N) + pad, ldc = N + 2 * pad;
            float alpha = s % 2 ? 0.7f : 1.0f, beta = s % 4 == 3 ? 1.0f : (s % 4 == 1 ? 0.5f : 0.0f);
            float *A = randn((size_t)(tA ? K : M) * lda, 100 + s * 4 + t, 1.0f);
            float *B = randn((size_t)(tB ? N : K) * ldb, 200 + s * 4 + t, 1.0f);
            float *C = randn((size_t)M * ldc, 300 + s * 4 + t, 1.0f);
            float *C0 = malloc((size_t)M * ldc * sizeof *C0);
            memcpy(C0, C, (size_t)M * ldc * sizeof *C0);
            double *R = malloc((size_t)M * N * sizeof *R), *S = malloc((size_t)M * N * sizeof *S);
            ref_gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, R, S);
            bft_op_gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            double w = worst_ratio(C, ldc, R, S, M, N, K);
            CHECK(w <= 1.0, "gemm %dx%dx%d tA %d tB %d alpha %g beta %g: error %.3g x tolerance", M,
                  N, K, tA, tB, alpha, beta, w);
            /* columns beyond N untouched */
            for (int i = 0; i < M && pad; i++)
                for (int j = N; j < ldc; j++)
                    CHECK(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j], "wrote beyond N");
            if (w > worst)
                worst = w;
            /* the fp32 backend's result misses the bf16 reference by far more */
            if (K >= 64) {
                memcpy(C, C0, (size_t)M * ldc * sizeof *C0);
                bft_cpu_backend()->gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                double w32 = worst_ratio(C, ldc, R, S, M, N, K);
                if (w32 > worst_fp32)
                    worst_fp32 = w32;
            }
            cases++;
            free(A);
            free(B);
            free(C);
            free(C0);
            free(R);
            free(S);
        }
    bft_error e;
    CHECK(BF->check(&e) == BFT_OK, "backend error: %s", e.msg);
    CHECK(worst_fp32 > 20.0, "fp32 products look like bf16 ones (%.3g): the test cannot tell",
          worst_fp32);
    printf("  %d GEMMs: worst error %.3g x tolerance (fp32 operands would be %.3g x)\n", cases,
           worst, worst_fp32);
    printf("  %s\n", bft_dnnl_info());
    bft_backend_use(prev);
}

static void test_linear_semantics(void)
{
    const bft_backend *prev = bft_backend_use(BF);
    int N = 70, IC = 96, OC = 130;
    float *x = randn((size_t)N * IC, 1, 1.0f), *w = randn((size_t)OC * IC, 2, 0.2f);
    float *b = randn((size_t)OC, 3, 0.5f), *dy = randn((size_t)N * OC, 4, 1.0f);
    float *y = calloc((size_t)N * OC, sizeof *y), *dx = randn((size_t)N * IC, 5, 1.0f);
    float *dw = randn((size_t)OC * IC, 6, 1.0f), *db = randn((size_t)OC, 7, 1.0f);
    float *dx0 = malloc((size_t)N * IC * sizeof *dx0), *dw0 = malloc((size_t)OC * IC * sizeof *dw0);
    float *db0 = malloc((size_t)OC * sizeof *db0);
    memcpy(dx0, dx, (size_t)N * IC * sizeof *dx0);
    memcpy(dw0, dw, (size_t)OC * IC * sizeof *dw0);
    memcpy(db0, db, (size_t)OC * sizeof *db0);
    /* weights registered (the bf16 copy serves them) and not */
    for (int reg = 0; reg < 2; reg++) {
        if (reg)
            BF->set_weights(w, (size_t)OC * IC);
        double *R = malloc((size_t)N * (OC > IC ? OC : IC) * sizeof *R);
        double *S = malloc((size_t)OC * (N > IC ? N : IC) * sizeof *S);
        double *R2 = malloc((size_t)OC * IC * sizeof *R2);
        float *zero = calloc((size_t)N * OC, sizeof *zero);
        bft_op_linear_fwd(y, x, w, b, N, IC, OC);
        ref_gemm(0, 1, N, OC, IC, 1.0f, x, IC, w, IC, 0.0f, zero, OC, R, S);
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) {
                R[(size_t)i * OC + o] += b[o];
                S[(size_t)i * OC + o] += fabs(b[o]);
            }
        double wf = worst_ratio(y, OC, R, S, N, OC, IC);
        CHECK(wf <= 1.0, "linear fwd (registered %d): %.3g x tolerance", reg, wf);
        /* backward, accumulating into dx (accum_dinp) and dw, db (accum_dw) */
        memcpy(dx, dx0, (size_t)N * IC * sizeof *dx);
        memcpy(dw, dw0, (size_t)OC * IC * sizeof *dw);
        memcpy(db, db0, (size_t)OC * sizeof *db);
        bft_op_linear_bwd(dx, dw, db, dy, x, w, N, IC, OC, 1, 1);
        ref_gemm(0, 0, N, IC, OC, 1.0f, dy, OC, w, IC, 1.0f, dx0, IC, R, S);
        double wx = worst_ratio(dx, IC, R, S, N, IC, OC);
        ref_gemm(1, 0, OC, IC, N, 1.0f, dy, OC, x, IC, 1.0f, dw0, IC, R2, S);
        double ww = worst_ratio(dw, IC, R2, S, OC, IC, N);
        CHECK(wx <= 1.0, "linear bwd dinp (registered %d): %.3g x tolerance", reg, wx);
        CHECK(ww <= 1.0, "linear bwd dw (registered %d): %.3g x tolerance", reg, ww);
        double wb = 0.0;
        for (int o = 0; o < OC; o++) {
            double s = db0[o];
            for (int i = 0; i < N; i++)
                s += dy[(size_t)i * OC + o];
            wb = fmax(wb, fabs(s - db[o]));
        }
        CHECK(wb <= 1e-4, "dbias (fp32 column sums): %.3g", wb);
        printf("  linear (weights %s): fwd %.3g, dinp %.3g, dw %.3g x tolerance, dbias %.2g\n",
               reg ? "registered" : "not registered", wf, wx, ww, wb);
        free(R);
        free(S);
        free(R2);
        free(zero);
    }
    BF->set_weights(NULL, 0);
    bft_error e;
    CHECK(BF->check(&e) == BFT_OK, "backend error: %s", e.msg);
    free(x);
    free(w);
    free(b);
    free(dy);
    free(y);
    free(dx);
    free(dw);
    free(db);
    free(dx0);
    free(dw0);
    free(db0);
    bft_backend_use(prev);
}

static double rel_fro(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-30));
}

static void test_attention_vs_fp32(void)
{
    int B = 3, T = 37, C = 64, NH = 4;
    int32_t lens[3] = {37, 20, 5};
    size_t nq = (size_t)B * T * 3 * C, nc = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    float *qkv = randn(nq, 11, 1.0f), *dctx = randn(nc, 12, 1.0f);
    float *ctx[2], *att[2], *dqkv[2];
    const bft_backend *bes[2] = {bft_cpu_backend(), BF};
    bft_dropout d = {0.2f, 99};
    for (int k = 0; k < 2; k++) {
        ctx[k] = calloc(nc, sizeof(float));
        att[k] = calloc(na, sizeof(float));
        dqkv[k] = calloc(nq, sizeof(float));
        bes[k]->attention_fwd(ctx[k], att[k], qkv, lens, B, T, C, NH, &d);
        bes[k]->attention_bwd(dqkv[k], dctx, att[k], qkv, lens, B, T, C, NH, &d);
    }
    double ec = rel_fro(ctx[1], ctx[0], nc), ea = rel_fro(att[1], att[0], na),
           eq = rel_fro(dqkv[1], dqkv[0], nq);
    CHECK(ec <= 1e-2 && ea <= 1e-2 && eq <= 1e-2, "ctx %.3g att %.3g dqkv %.3g", ec, ea, eq);
    CHECK(ec > 0.0 && eq > 0.0, "bf16 attention equals fp32 exactly: operands not rounded");
    printf("  attention bf16 vs fp32 (dropout 0.2): ctx %.2e, probabilities %.2e, dqkv %.2e\n",
           ec, ea, eq);
    for (int k = 0; k < 2; k++) {
        free(ctx[k]);
        free(att[k]);
        free(dqkv[k]);
    }
    free(qkv);
    free(dctx);
}

/* ---------------------------------------------------------------- models */

static void test_golden_bf16(void)
{
    golden_cls_device("tiny_f16", BFT_DEVICE_CPU, 1);
    golden_cls_device("tiny_legacy", BFT_DEVICE_CPU, 1);
    golden_mlm_device(BFT_DEVICE_CPU, 1);
}

/* bft_predict with (device cpu, precision) into probs. */
static int predict(const bft_model *m, const bft_dataset *ds, int precision, float *probs)
{
    bft_error e;
    int rc = bft_set_device(BFT_DEVICE_CPU, precision, &e);
    CHECK(rc == BFT_OK, "set_device: %s", e.msg);
    if (rc == BFT_OK) {
        rc = bft_predict(m, ds, 7, probs, &e);
        CHECK(rc == BFT_OK, "predict: %s", e.msg);
    }
    bft_set_device(BFT_DEVICE_CPU, BFT_PRECISION_AUTO, &e);
    return rc;
}

static void test_checkpoints_bf16_vs_fp32(void)
{
    static const char *const names[] = {"tiny", "tiny_bf16", "tiny_f16", "tiny_legacy",
                                        "tiny_noprefix"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        bft_model *m = load(names[i]);
        if (!m)
            continue;
        bft_error e;
        if (m->cfg.num_labels < 2)
            CHECK(bft_model_set_labels(m, 3, NULL, 5, &e) == 0, "labels: %s", e.msg);
        toy t;
        toy_make(&t, 40, 9, 3);
        int K = m->cfg.num_labels;
        float *p32 = malloc((size_t)t.ds.n * K * sizeof *p32);
        float *p16 = malloc((size_t)t.ds.n * K * sizeof *p16);
        float *p16b = malloc((size_t)t.ds.n * K * sizeof *p16b);
        if (predict(m, &t.ds, BFT_PRECISION_FP32, p32) == BFT_OK &&
            predict(m, &t.ds, BFT_PRECISION_BF16, p16) == BFT_OK &&
            predict(m, &t.ds, BFT_PRECISION_BF16, p16b) == BFT_OK) {
            double w = 0.0;
            int agree = 0;
            for (int64_t r = 0; r < t.ds.n; r++) {
                int a32 = 0, a16 = 0;
                for (int k = 0; k < K; k++) {
                    w = fmax(w, fabs(p16[r * K + k] - p32[r * K + k]));
                    a32 = p32[r * K + k] > p32[r * K + a32] ? k : a32;
                    a16 = p16[r * K + k] > p16[r * K + a16] ? k : a16;
                }
                agree += a32 == a16;
            }
            CHECK(w <= 1e-2, "%s: bf16 probabilities differ from fp32 by %.3g", names[i], w);
            CHECK(w > 0.0, "%s: bf16 probabilities identical to fp32", names[i]);
            CHECK(memcmp(p16, p16b, (size_t)t.ds.n * K * sizeof *p16) == 0,
                  "%s: repeated bf16 inference differs", names[i]);
            printf("  %-13s bf16 vs fp32: max |prob diff| %.2e, argmax agree %d/%lld\n", names[i], w,
                   agree, (long long)t.ds.n);
        }
        free(p32);
        free(p16);
        free(p16b);
        toy_free(&t);
        bft_model_free(m);
    }
    bft_device_release();
}

/* A copy of m's weights in a freshly loaded tiny model. */
static bft_model *copy_of(const bft_model *m)
{
    bft_model *c = load("tiny");
    if (!c)
        return NULL;
    bft_error e;
    if (c->cfg.num_labels != m->cfg.num_labels)
        CHECK(bft_model_set_labels(c, m->cfg.num_labels, NULL, 1, &e) == 0, "labels: %s", e.msg);
    CHECK(c->num_params == m->num_params, "copy: %zu vs %zu parameters", c->num_params,
          m->num_params);
    if (c->num_params == m->num_params)
        memcpy(c->params_mem, m->params_mem, m->num_params * sizeof(float));
    return c;
}

static void test_deterministic_and_copy_follows(void)
{
    toy tr, va;
    toy_make(&tr, 40, 5, 3);
    toy_make(&va, 24, 6, 3);
    bft_set_threads(2);
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 2;
    o.batch_size = 6;
    o.learning_rate = 1e-3f;
    o.dropout = 0.1f;
    o.weight_decay = 0.01f;
    o.seed = 7;
    o.precision = BFT_PRECISION_BF16;
    bft_model *m[2];
    bft_error e;
    for (int k = 0; k < 2; k++) {
        m[k] = load("tiny");
        if (!m[k])
            return;
        CHECK(bft_model_set_labels(m[k], 3, NULL, 1, &e) == 0, "labels: %s", e.msg);
        CHECK(bft_train(m[k], &tr.ds, &o, NULL, NULL, NULL, &e) == 0, "train: %s", e.msg);
    }
    size_t bytes = m[0]->num_params * sizeof(float);
    CHECK(memcmp(m[0]->params_mem, m[1]->params_mem, bytes) == 0,
          "two bf16 trainings (2 threads): weights differ");
    int K = 3;
    size_t np = (size_t)va.ds.n * K;
    float *pa = malloc(np * sizeof *pa), *pb = malloc(np * sizeof *pb), *pc = malloc(np * 4);
    /* after a bf16 training: the model's bf16 inference == a fresh copy's */
    bft_model *c = copy_of(m[0]);
    if (c && predict(m[0], &va.ds, BFT_PRECISION_BF16, pa) == BFT_OK &&
        predict(c, &va.ds, BFT_PRECISION_BF16, pb) == BFT_OK)
        CHECK(memcmp(pa, pb, np * sizeof *pa) == 0, "after a bf16 training: stale bf16 weights");
    bft_model_free(c);
    /* an fp32 training changes the weights in place: bf16 inference follows */
    o.precision = BFT_PRECISION_FP32;
    o.epochs = 1;
    CHECK(bft_train(m[0], &tr.ds, &o, NULL, NULL, NULL, &e) == 0, "train fp32: %s", e.msg);
    c = copy_of(m[0]);
    if (c && predict(m[0], &va.ds, BFT_PRECISION_BF16, pc) == BFT_OK &&
        predict(c, &va.ds, BFT_PRECISION_BF16, pb) == BFT_OK) {
        CHECK(memcmp(pc, pb, np * sizeof *pc) == 0, "after an fp32 training: stale bf16 weights");
        CHECK(memcmp(pc, pa, np * sizeof *pc) != 0, "the fp32 training changed nothing");
    }
    bft_model_free(c);
    printf("  two bf16 trainings: identical weights; bf16 inference follows the weights\n");
    free(pa);
    free(pb);
    free(pc);
    for (int k = 0; k < 2; k++)
        bft_model_free(m[k]);
    toy_free(&tr);
    toy_free(&va);
    bft_set_threads(0);
    bft_device_release();
}

static void test_learns_toy_task_bf16(void)
{
    toy tr, va;
    toy_make(&tr, 96, 1, 3);
    toy_make(&va, 48, 2, 3);
    float acc[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        bft_model *m = load("tiny");
        if (!m)
            break;
        bft_train_opts o = bft_train_default_opts();
        o.epochs = 12;
        o.batch_size = 8;
        o.learning_rate = 3e-3f;
        o.warmup_ratio = 0.1f;
        o.weight_decay = 0.01f;
        o.valid = &va.ds;
        o.seed = 3;
        o.precision = k ? BFT_PRECISION_BF16 : BFT_PRECISION_FP32;
        bft_train_result res;
        bft_error e;
        CHECK(bft_train(m, &tr.ds, &o, NULL, NULL, &res, &e) == 0, "train: %s", e.msg);
        acc[k] = res.eval_accuracy;
        printf("  toy task %s: train loss %.4f, valid accuracy %.3f\n", k ? "bf16" : "fp32",
               res.train_loss, res.eval_accuracy);
        bft_model_free(m);
    }
    CHECK(acc[1] >= 0.95f, "bf16 valid accuracy %.3f", acc[1]);
    CHECK(fabsf(acc[1] - acc[0]) <= 2.0f / 48 + 1e-6f, "accuracy fp32 %.3f bf16 %.3f", acc[0],
          acc[1]);
    toy_free(&tr);
    toy_free(&va);
}

/* ---------------------------------------------------------------- int8 */

#define RUN_INT8(fn)                                                                               \
    do {                                                                                           \
        if (int8_ok) {                                                                             \
            RUN(fn);                                                                               \
        } else {                                                                                   \
            printf("skip - %s: %s\n", #fn, int8_why);                                              \
            fflush(stdout);                                                                        \
        }                                                                                          \
    } while (0)

/* The kernel's quantisation, in the same float arithmetic. */
static void ref_quant_row(const float *x, int n, uint8_t *q, float *sx, int *zp)
{
    float mn = 0.0f, mx = 0.0f;
    for (int k = 0; k < n; k++) {
        mn = x[k] < mn ? x[k] : mn;
        mx = x[k] > mx ? x[k] : mx;
    }
    float sc = mx > mn ? (mx - mn) / 255.0f : 1.0f, inv = 1.0f / sc;
    float z = nearbyintf(-mn * inv);
    z = z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z;
    for (int k = 0; k < n; k++) {
        float v = nearbyintf(x[k] * inv) + z;
        q[k] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
    }
    *sx = sc;
    *zp = (int)z;
}

static void ref_quant_weights(const float *w, int n, int8_t *q, float *sw)
{
    float mx = 0.0f;
    for (int k = 0; k < n; k++)
        mx = fabsf(w[k]) > mx ? fabsf(w[k]) : mx;
    float sc = mx > 0.0f ? mx / 127.0f : 1.0f, inv = 1.0f / sc;
    for (int k = 0; k < n; k++) {
        float v = nearbyintf(w[k] * inv);
        q[k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
    }
    *sw = sc;
}

static void test_int8_linear_semantics(void)
{
    int N = 70, IC = 200, OC = 130;
    float *x = randn((size_t)N * IC, 21, 1.0f), *w = randn((size_t)OC * IC, 22, 0.2f);
    float *b = randn((size_t)OC, 23, 0.5f);
    float *y = calloc((size_t)N * OC, sizeof *y), *y32 = calloc((size_t)N * OC, sizeof *y32);
    for (int i = 0; i < N; i++) /* skewed rows, like GELU outputs */
        if (i % 3 == 0)
            for (int k = 0; k < IC; k++)
                x[(size_t)i * IC + k] = fabsf(x[(size_t)i * IC + k]) - 0.1f;
    uint8_t *qx = malloc((size_t)N * IC);
    int8_t *qw = malloc((size_t)OC * IC);
    float *sx = malloc((size_t)N * sizeof *sx), *sw = malloc((size_t)OC * sizeof *sw);
    int *zp = malloc((size_t)N * sizeof *zp);
    for (int i = 0; i < N; i++)
        ref_quant_row(x + (size_t)i * IC, IC, qx + (size_t)i * IC, &sx[i], &zp[i]);
    for (int o = 0; o < OC; o++)
        ref_quant_weights(w + (size_t)o * IC, IC, qw + (size_t)o * IC, &sw[o]);
    bft_cpu_backend()->linear_fwd(y32, x, w, b, N, IC, OC);
    for (int reg = 0; reg < 2; reg++) {
        if (reg)
            Q8->set_weights(w, (size_t)OC * IC);
        Q8->linear_fwd(y, x, w, b, N, IC, OC);
        double worst = 0.0;
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) {
                int64_t acc = 0;
                for (int k = 0; k < IC; k++)
                    acc += (int64_t)(qx[(size_t)i * IC + k] - zp[i]) * qw[(size_t)o * IC + k];
                double t = (double)sx[i] * sw[o] * (double)acc, r = t + b[o];
                /* relative to the terms: fp32 dequantisation and bias addition */
                double e = fabs(y[(size_t)i * OC + o] - r) / (fabs(t) + fabs(b[o]) + 1e-30);
                worst = fmax(worst, e);
            }
        double fro = rel_fro(y, y32, (size_t)N * OC);
        CHECK(worst <= 1e-6, "int8 linear (registered %d): relative error %.3g vs the reference",
              reg, worst);
        CHECK(fro <= 2e-2 && fro > 0.0, "int8 vs fp32: relative Frobenius %.3g", fro);
        printf("  int8 linear (weights %s): %.2g from the quantised reference, %.2e from fp32\n",
               reg ? "registered" : "not registered", worst, fro);
    }
    Q8->set_weights(NULL, 0);
    bft_error e;
    CHECK(Q8->check(&e) == BFT_OK, "backend error: %s", e.msg);
    printf("  %s\n", bft_dnnl_info());
    free(x);
    free(w);
    free(b);
    free(y);
    free(y32);
    free(qx);
    free(qw);
    free(sx);
    free(sw);
    free(zp);
}

static void test_int8_training_refused(void)
{
    bft_model *m = load("tiny");
    if (!m)
        return;
    toy t;
    toy_make(&t, 16, 1, 2);
    float *before = malloc(m->num_params * sizeof *before);
    memcpy(before, m->params_mem, m->num_params * sizeof *before);
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 1;
    o.precision = BFT_PRECISION_INT8;
    bft_error e;
    int rc = bft_train(m, &t.ds, &o, NULL, NULL, NULL, &e);
    CHECK(rc == BFT_EUNSUPPORTED && strstr(e.msg, "inference"), "int8 training: rc %d (%s)", rc,
          e.msg);
    CHECK(memcmp(before, m->params_mem, m->num_params * sizeof *before) == 0,
          "a refused training changed the weights");
    CHECK(bft_backend_current() == bft_cpu_backend(), "current backend is not the CPU");
    const bft_backend *be;
    CHECK(bft_backend_open(BFT_DEVICE_CUDA, BFT_PRECISION_INT8, &be, &e) == BFT_EUNSUPPORTED,
          "int8 on cuda");
    free(before);
    toy_free(&t);
    bft_model_free(m);
}

static void test_int8_checkpoints(void)
{
    static const char *const names[] = {"tiny", "tiny_bf16", "tiny_f16", "tiny_legacy",
                                        "tiny_noprefix"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        bft_model *m = load(names[i]);
        if (!m)
            continue;
        bft_error e;
        if (m->cfg.num_labels < 2)
            CHECK(bft_model_set_labels(m, 3, NULL, 5, &e) == 0, "labels: %s", e.msg);
        toy t;
        toy_make(&t, 40, 9, 3);
        int K = m->cfg.num_labels;
        size_t np = (size_t)t.ds.n * K;
        float *p32 = malloc(np * 4), *p8 = malloc(np * 4), *p8b = malloc(np * 4);
        bft_set_threads(1);
        int ok = predict(m, &t.ds, BFT_PRECISION_FP32, p32) == BFT_OK &&
                 predict(m, &t.ds, BFT_PRECISION_INT8, p8) == BFT_OK;
        bft_set_threads(2);
        ok = ok && predict(m, &t.ds, BFT_PRECISION_INT8, p8b) == BFT_OK;
        if (ok) {
            double w = 0.0;
            int agree = 0;
            for (int64_t r = 0; r < t.ds.n; r++) {
                int a32 = 0, a8 = 0;
                for (int k = 0; k < K; k++) {
                    w = fmax(w, fabs(p8[r * K + k] - p32[r * K + k]));
                    a32 = p32[r * K + k] > p32[r * K + a32] ? k : a32;
                    a8 = p8[r * K + k] > p8[r * K + a8] ? k : a8;
                }
                agree += a32 == a8;
            }
            CHECK(w <= 5e-2, "%s: int8 probabilities differ from fp32 by %.3g", names[i], w);
            CHECK(w > 0.0, "%s: int8 probabilities identical to fp32", names[i]);
            CHECK(memcmp(p8, p8b, np * sizeof *p8) == 0, "%s: int8 differs with 1 and 2 threads",
                  names[i]);
            printf("  %-13s int8 vs fp32: max |prob diff| %.2e, argmax agree %d/%lld\n", names[i], w,
                   agree, (long long)t.ds.n);
        }
        free(p32);
        free(p8);
        free(p8b);
        toy_free(&t);
        bft_model_free(m);
    }
    bft_set_threads(0);
    bft_device_release();
}

static void test_int8_copy_follows(void)
{
    toy tr, va;
    toy_make(&tr, 40, 5, 3);
    toy_make(&va, 24, 6, 3);
    bft_model *m = load("tiny");
    if (!m)
        return;
    size_t np = (size_t)va.ds.n * m->cfg.num_labels;
    float *pa = malloc(np * 4), *pb = malloc(np * 4), *pc = malloc(np * 4);
    bft_error e;
    CHECK(predict(m, &va.ds, BFT_PRECISION_INT8, pa) == BFT_OK, "predict");
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 1;
    o.batch_size = 6;
    o.learning_rate = 1e-3f;
    CHECK(bft_train(m, &tr.ds, &o, NULL, NULL, NULL, &e) == 0, "train fp32: %s", e.msg);
    bft_model *c = copy_of(m);
    if (c && predict(m, &va.ds, BFT_PRECISION_INT8, pc) == BFT_OK &&
        predict(c, &va.ds, BFT_PRECISION_INT8, pb) == BFT_OK) {
        CHECK(memcmp(pc, pb, np * 4) == 0, "after an fp32 training: stale int8 weights");
        CHECK(memcmp(pc, pa, np * 4) != 0, "the training changed nothing");
    }
    bft_model_free(c);
    bft_model_free(m);
    free(pa);
    free(pb);
    free(pc);
    toy_free(&tr);
    toy_free(&va);
    bft_device_release();
}

int main(int argc, char **argv)
{
    bft_error e;
    if (argc == 3 && strcmp(argv[1], "--child-refused") == 0)
        return child_refused(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--child-refused-int8") == 0)
        return child_refused_int8(argv[2]);
    bf16_ok = bft_dnnl_available(BFT_DNNL_BF16, &e) == BFT_OK;
    snprintf(bf16_why, sizeof bf16_why, "%s", e.msg);
    if (bf16_ok)
        CHECK(bft_dnnl_bf16_backend(&BF, &e) == BFT_OK, "bf16 backend: %s", e.msg);
    int8_ok = bft_dnnl_available(BFT_DNNL_INT8, &e) == BFT_OK;
    snprintf(int8_why, sizeof int8_why, "%s", e.msg);
    if (int8_ok)
        CHECK(bft_dnnl_int8_backend(&Q8, &e) == BFT_OK, "int8 backend: %s", e.msg);
    RUN(test_selection);
    RUN(test_refused_in_child);
    RUN_BF16(test_gemm_semantics);
    RUN_BF16(test_linear_semantics);
    RUN_BF16(test_attention_vs_fp32);
    RUN_BF16(test_golden_bf16);
    RUN_BF16(test_checkpoints_bf16_vs_fp32);
    RUN_BF16(test_deterministic_and_copy_follows);
    RUN_BF16(test_learns_toy_task_bf16);
    RUN(test_int8_training_refused);
    RUN_INT8(test_int8_linear_semantics);
    RUN_INT8(test_int8_checkpoints);
    RUN_INT8(test_int8_copy_follows);
    return test_summary();
}
