/*
 * ops_cpu.c — the CPU backend of ops.h: OpenBLAS sgemm for the matrix
 * products, tight C loops (written so gcc -O3 vectorises them: fixed-width
 * partial sums instead of serial reductions, branch-free exp/erf) for the rest,
 * all of it spread over the engine's thread pool (threads.c).
 *
 * OpenBLAS itself runs single-threaded: bft_gemm splits large products into
 * column (or row) blocks over the pool, so one pool of threads does all the
 * work (no BLAS threads spinning against ours) and BLAS may be called from the
 * pool's workers (the attention's per-head products).
 */
#include "ops_cpu_names.h" /* this file is the CPU backend: its ops are bft_cpu_* */
#include "ops.h"

#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bft_error.h"
#include "threads.h"

/*
 * Run-time choice of the vector instructions. The build targets any x86-64
 * (no -march), and the loops below that do the elementwise work (the *_part
 * workers) are compiled three times by gcc's target_clones: x86-64-v4
 * (AVX-512, with 512-bit vectors: the Makefile adds -mprefer-vector-width=512
 * to this file; measured: GELU, LayerNorm, softmax 25-35% faster than 256-bit),
 * x86-64-v3 (AVX2) and the baseline (SSE2); the dynamic loader picks one per
 * function for the CPU it runs on. All three give the same bits: reductions
 * use fixed-width partial sums in a fixed order and -std=c11 keeps a*b+c
 * unfused, so the vector width changes the speed only. A build whose target
 * already has AVX-512 (e.g. BFT_MARCH=-march=native on such a CPU), clang,
 * or -DBFT_NO_CLONES compiles each loop once.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX512F__) && \
    !defined(BFT_NO_CLONES)
#define BFT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BFT_HOT
#endif

/* ---------------------------------------------------------------- helpers */

#define VW 16 /* width of the partial-sum vectors */

/* Sum of x[0..n) in a fixed order (VW partial sums, then a fixed tree). */
static inline float vsum(const float *x, int n)
{
    float acc[VW] = {0};
    int i = 0;
    for (; i + VW <= n; i += VW)
        for (int k = 0; k < VW; k++)
            acc[k] += x[i + k];
    float s = 0.0f;
    for (int k = 0; k < VW; k++)
        s += acc[k];
    for (; i < n; i++)
        s += x[i];
    return s;
}

/* Dot product of a and b (n), fixed order. */
static inline float vdot(const float *a, const float *b, int n)
{
    float acc[VW] = {0};
    int i = 0;
    for (; i + VW <= n; i += VW)
        for (int k = 0; k < VW; k++)
            acc[k] += a[i + k] * b[i + k];
    float s = 0.0f;
    for (int k = 0; k < VW; k++)
        s += acc[k];
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Max of x[0..n) (n > 0). */
static inline float vmax(const float *x, int n)
{
    float acc[VW];
    int i = 0;
    for (int k = 0; k < VW; k++)
        acc[k] = -INFINITY;
    for (; i + VW <= n; i += VW)
        for (int k = 0; k < VW; k++)
            acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
    float m = -INFINITY;
    for (int k = 0; k < VW; k++)
        m = acc[k] > m ? acc[k] : m;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* exp(x) for float, branch-free (Cephes expf polynomial, ~1 ulp); vectorises. */
static inline float fexp(float x)
{
    union { int32_t i; float f; } u;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float r2 = r * r;
    float y = ((((1.9875691500E-4f * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r +
                4.1665795894E-2f) * r + 1.6666665459E-1f) * r + 5.0000001201E-1f;
    y = y * r2 + r + 1.0f;
    u.i = ((int32_t)fx + 127) << 23;
    return y * u.f;
}

/* erf(x), Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), the approximation
 * PyTorch's vectorised CPU kernels use; branch-free. */
static inline float ferf(float x)
{
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
                  0.254829592f) * t;
    float y = 1.0f - poly * fexp(-ax * ax);
    return copysignf(y, x);
}

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

static inline float gelu1(float x)
{
    return 0.5f * x * (1.0f + ferf(x * INV_SQRT2));
}

/* d/dx [x Phi(x)] = Phi(x) + x phi(x) */
static inline float gelu_grad1(float x)
{
    float cdf = 0.5f * (1.0f + ferf(x * INV_SQRT2));
    float pdf = INV_SQRT_2PI * fexp(-0.5f * x * x);
    return cdf + x * pdf;
}

float bft_gelu_ref(float x)
{
    return gelu1(x);
}

/* ---------------------------------------------------------------- dropout */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* 24 random bits of element i of the stream seed (splitmix64 at counter i). */
static inline uint32_t drop_bits(uint64_t seed, uint64_t i)
{
    return (uint32_t)(mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ull) >> 40);
}

static inline uint32_t drop_thresh(float p)
{
    return (uint32_t)((double)p * 16777216.0);
}

uint64_t bft_dropout_seed(uint64_t base, uint64_t step, uint64_t site)
{
    uint64_t z = mix64(base + 0x632BE59BD9B4E019ull);
    z = mix64(z ^ (step * 0x9E3779B97F4A7C15ull + 0x1234567ull));
    z = mix64(z ^ (site * 0xD1B54A32D192ED03ull + 0x89ABCDEFull));
    return z;
}

int bft_dropout_keep(const bft_dropout *d, uint64_t i)
{
    if (!d || d->p <= 0.0f)
        return 1;
    return drop_bits(d->seed, i) >= drop_thresh(d->p);
}

static inline int drop_active(const bft_dropout *d)
{
    return d && d->p > 0.0f;
}

/* out[i] = keep(base+i) ? inp[i]*scale : 0 over n elements. */
static inline void drop_span(float *out, const float *inp, int64_t n, uint64_t seed,
                             uint64_t base, uint32_t thresh, float scale)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = drop_bits(seed, base + (uint64_t)i);
        out[i] = b >= thresh ? inp[i] * scale : 0.0f;
    }
}

typedef struct {
    float *out;
    const float *inp;
    bft_dropout d;
} drop_job;

BFT_HOT static void drop_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    drop_job *j = ctx;
    (void)tid;
    drop_span(j->out + i0, j->inp + i0, i1 - i0, j->d.seed, (uint64_t)i0, drop_thresh(j->d.p),
              1.0f / (1.0f - j->d.p));
}

void bft_op_dropout_fwd(float *out, const float *inp, size_t n, const bft_dropout *d)
{
    if (!drop_active(d)) {
        if (out != inp)
            memcpy(out, inp, n * sizeof *out);
        return;
    }
    drop_job j = {out, inp, *d};
    bft_parallel_for((int64_t)n, 16384, drop_part, &j);
}

void bft_op_dropout_bwd(float *dinp, const float *dout, size_t n, const bft_dropout *d)
{
    bft_op_dropout_fwd(dinp, dout, n, d);
}

/* ---------------------------------------------------------------- GEMM */

/*
 * OpenBLAS is loaded with dlopen on the first GEMM, never at library load:
 * Debian's default (pthread) OpenBLAS starts its worker threads in its
 * constructor, and bft.so may be loaded into the postmaster
 * (shared_preload_libraries), which must stay single-threaded. It is opened
 * with OPENBLAS_NUM_THREADS=1, so it starts no thread at all: the engine's
 * own pool splits large GEMMs (bft_gemm below). The pthread build's internal
 * locking keeps concurrent calls from the pool's threads safe.
 */
typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint, const blasint,
                         const float, const float *, const blasint, const float *, const blasint,
                         const float, float *, const blasint);

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static sgemm_fn blas_sgemm;
static char blas_error[256];

static void blas_init(void)
{
    static const char *const names[] = {"libopenblas.so.0", "libopenblas.so"};
    const char *prev = getenv("OPENBLAS_NUM_THREADS");
    char *saved = prev ? strdup(prev) : NULL;
    void *h = NULL;

    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (saved) {
        setenv("OPENBLAS_NUM_THREADS", saved, 1);
        free(saved);
    } else {
        unsetenv("OPENBLAS_NUM_THREADS");
    }
    if (!h) {
        const char *e = dlerror();
        snprintf(blas_error, sizeof blas_error,
                 "cannot load OpenBLAS (libopenblas.so.0): %s; install libopenblas0",
                 e ? e : "not found");
        return;
    }
    blas_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    void (*set_threads)(int) = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    if (set_threads)
        set_threads(1);
    if (!blas_sgemm)
        snprintf(blas_error, sizeof blas_error, "OpenBLAS has no cblas_sgemm");
}

int bft_cpu_blas_load(bft_error *err)
{
    pthread_once(&blas_once, blas_init);
    if (!blas_sgemm)
        return bft_set_error(err, BFT_EDEVICE, "%s", blas_error);
    return BFT_OK;
}

typedef struct {
    int tA, tB, M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int lda, ldb, ldc;
    int split_n;
    int unit;
} gemm_job;

static void gemm_raw(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc)
{
    if (blas_sgemm) {
        blas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                   M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* OpenBLAS could not be loaded (bft_cpu_blas_load reported why to the
     * engine's entry points): a plain loop keeps results correct. */
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc += (tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                       (tB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            C[(size_t)i * ldc + j] = alpha * acc + (beta != 0.0f ? beta * C[(size_t)i * ldc + j] : 0.0f);
        }
}

static void gemm_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    gemm_job *j = ctx;
    (void)tid;
    if (j->split_n) {
        int n0 = (int)(i0 * j->unit), n1 = (int)(i1 * j->unit);
        if (n1 > j->N)
            n1 = j->N;
        const float *B = j->tB ? j->B + (size_t)n0 * j->ldb : j->B + n0;
        gemm_raw(j->tA, j->tB, j->M, n1 - n0, j->K, j->alpha, j->A, j->lda, B, j->ldb, j->beta,
                 j->C + n0, j->ldc);
    } else {
        int m0 = (int)(i0 * j->unit), m1 = (int)(i1 * j->unit);
        if (m1 > j->M)
            m1 = j->M;
        const float *A = j->tA ? j->A + m0 : j->A + (size_t)m0 * j->lda;
        gemm_raw(j->tA, j->tB, m1 - m0, j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb, j->beta,
                 j->C + (size_t)m0 * j->ldc, j->ldc);
    }
}

void bft_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc)
{
    pthread_once(&blas_once, blas_init);
    if (M <= 0 || N <= 0)
        return;
    double flops = 2.0 * M * N * K;
    int nt = bft_threads_count();
    if (nt <= 1 || flops < 4e6) {
        gemm_raw(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    gemm_job j = {tA, tB, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc, 0, 16};
    /* split the larger output dimension, in blocks of 16 (32 rows when splitting M) */
    j.split_n = N >= M;
    if (!j.split_n)
        j.unit = 32;
    int64_t units = ((j.split_n ? N : M) + j.unit - 1) / j.unit;
    bft_parallel_for(units, 1, gemm_part, &j);
}

/* ---------------------------------------------------------------- column sums */

typedef struct {
    float *acc;        /* (C) = or += */
    const float *x;    /* (N, C) */
    int N, C, accum;
} colsum_job;

BFT_HOT static void colsum_part(void *ctx, int64_t c0, int64_t c1, int tid)
{
    colsum_job *j = ctx;
    (void)tid;
    int w = (int)(c1 - c0);
    float *acc = j->acc + c0;
    if (!j->accum)
        memset(acc, 0, (size_t)w * sizeof *acc);
    for (int r = 0; r < j->N; r++) {
        const float *x = j->x + (size_t)r * j->C + c0;
        for (int c = 0; c < w; c++)
            acc[c] += x[c];
    }
}

void bft_op_colsum(float *out, const float *x, int N, int C, int accum)
{
    colsum_job j = {out, x, N, C, accum};
    bft_parallel_for(C, (int64_t)(N * C < 65536 ? C : 64), colsum_part, &j);
}

/* ---------------------------------------------------------------- linear */

typedef struct {
    float *out;
    const float *bias;
    int OC;
} rowfill_job;

static void rowfill_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    rowfill_job *j = ctx;
    (void)tid;
    for (int64_t r = r0; r < r1; r++)
        memcpy(j->out + (size_t)r * j->OC, j->bias, (size_t)j->OC * sizeof(float));
}

void bft_op_linear_fwd(float *out, const float *inp, const float *w, const float *bias,
                       int N, int IC, int OC)
{
    float beta = 0.0f;
    if (bias) {
        rowfill_job j = {out, bias, OC};
        bft_parallel_for(N, 64, rowfill_part, &j);
        beta = 1.0f;
    }
    bft_gemm(0, 1, N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
}

void bft_op_linear_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                       const float *inp, const float *w, int N, int IC, int OC, int accum_dinp,
                       int accum_dw)
{
    if (dbias)
        bft_op_colsum(dbias, dout, N, OC, accum_dw);
    if (dw)
        bft_gemm(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, accum_dw ? 1.0f : 0.0f, dw, IC);
    if (dinp)
        bft_gemm(0, 0, N, IC, OC, 1.0f, dout, OC, w, IC, accum_dinp ? 1.0f : 0.0f, dinp, IC);
}

/* ---------------------------------------------------------------- GELU */

typedef struct {
    float *pre, *out;
    const float *bias;
    int OC;
} bgelu_job;

BFT_HOT static void bgelu_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    bgelu_job *j = ctx;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        float *x = j->pre + (size_t)r * j->OC;
        if (j->bias)
            for (int c = 0; c < j->OC; c++)
                x[c] += j->bias[c];
        if (j->out) {
            float *y = j->out + (size_t)r * j->OC;
            for (int c = 0; c < j->OC; c++)
                y[c] = gelu1(x[c]);
        }
    }
}

void bft_op_bias_gelu_fwd(float *pre, float *out, const float *bias, int N, int OC)
{
    bgelu_job j = {pre, out, bias, OC};
    bft_parallel_for(N, 8, bgelu_part, &j);
}

typedef struct {
    float *out;
    const float *inp, *dout;
} gelu_job;

BFT_HOT static void gelu_fwd_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    gelu_job *j = ctx;
    (void)tid;
    for (int64_t i = i0; i < i1; i++)
        j->out[i] = gelu1(j->inp[i]);
}

BFT_HOT static void gelu_bwd_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    gelu_job *j = ctx;
    (void)tid;
    for (int64_t i = i0; i < i1; i++)
        j->out[i] = j->dout[i] * gelu_grad1(j->inp[i]);
}

BFT_HOT static void gelu_rec_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    gelu_job *j = ctx;
    float *restrict x = (float *)j->inp, *restrict out = j->out;
    (void)tid;
    for (int64_t i = i0; i < i1; i++) {
        /* erf(x/sqrt2) needs exp(-x^2/2), which is also the normal pdf's exponential */
        float v = x[i];
        float z = v * INV_SQRT2, az = fabsf(z);
        float t = 1.0f / (1.0f + 0.3275911f * az);
        float poly = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
                      0.254829592f) * t;
        float e = fexp(-az * az);
        float erfv = copysignf(1.0f - poly * e, z);
        float cdf = 0.5f * (1.0f + erfv);
        out[i] = v * cdf;
        x[i] = cdf + v * (INV_SQRT_2PI * e);
    }
}

void bft_op_gelu_recompute(float *out, float *x, size_t n)
{
    gelu_job j = {out, x, NULL};
    bft_parallel_for((int64_t)n, 8192, gelu_rec_part, &j);
}

BFT_HOT static void mul_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    gelu_job *j = ctx;
    (void)tid;
    for (int64_t i = i0; i < i1; i++)
        j->out[i] *= j->inp[i];
}

void bft_op_mul(float *x, const float *y, size_t n)
{
    gelu_job j = {x, y, NULL};
    bft_parallel_for((int64_t)n, 16384, mul_part, &j);
}

void bft_op_gelu_fwd(float *out, const float *inp, size_t n)
{
    gelu_job j = {out, inp, NULL};
    bft_parallel_for((int64_t)n, 8192, gelu_fwd_part, &j);
}

void bft_op_gelu_bwd(float *dinp, const float *dout, const float *inp, size_t n)
{
    gelu_job j = {dinp, inp, dout};
    bft_parallel_for((int64_t)n, 8192, gelu_bwd_part, &j);
}

/* ---------------------------------------------------------------- LayerNorm */

/* out = LN(x) w + b for one row; returns mean and rstd. Two-pass variance. */
static inline void ln_row(float *out, const float *x, const float *w, const float *b, int C,
                          float eps, float *mean_out, float *rstd_out)
{
    float mean = vsum(x, C) / (float)C;
    float acc[VW] = {0};
    int i = 0;
    for (; i + VW <= C; i += VW)
        for (int k = 0; k < VW; k++) {
            float dv = x[i + k] - mean;
            acc[k] += dv * dv;
        }
    float var = 0.0f;
    for (int k = 0; k < VW; k++)
        var += acc[k];
    for (; i < C; i++) {
        float dv = x[i] - mean;
        var += dv * dv;
    }
    var /= (float)C;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int c = 0; c < C; c++)
        out[c] = (x[c] - mean) * rstd * w[c] + b[c];
    if (mean_out)
        *mean_out = mean;
    if (rstd_out)
        *rstd_out = rstd;
}

typedef struct {
    float *out, *x, *mean, *rstd;
    const float *proj, *bias, *res, *w, *b;
    const int32_t *ids;
    const float *wte, *wpe, *wtt;
    int T, C;
    float eps;
    bft_dropout d;
} ln_job;

BFT_HOT static void ln_plain_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ln_job *j = ctx;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        size_t o = (size_t)r * j->C;
        ln_row(j->out + o, j->x + o, j->w, j->b, j->C, j->eps, j->mean ? j->mean + r : NULL,
               j->rstd ? j->rstd + r : NULL);
    }
}

void bft_op_layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C, float eps)
{
    ln_job j = {0};
    j.out = out;
    j.mean = mean;
    j.rstd = rstd;
    j.x = (float *)x;
    j.w = w;
    j.b = b;
    j.C = C;
    j.eps = eps;
    bft_parallel_for(N, 4, ln_plain_part, &j);
}

BFT_HOT static void res_ln_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ln_job *j = ctx;
    int C = j->C;
    int act = drop_active(&j->d);
    uint32_t th = act ? drop_thresh(j->d.p) : 0;
    float scale = act ? 1.0f / (1.0f - j->d.p) : 1.0f;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        size_t o = (size_t)r * C;
        float *x = j->x + o;
        const float *pr = j->proj + o, *rs = j->res + o;
        if (j->bias)
            for (int c = 0; c < C; c++)
                x[c] = pr[c] + j->bias[c];
        else if (x != pr)
            memcpy(x, pr, (size_t)C * sizeof *x);
        if (act)
            drop_span(x, x, C, j->d.seed, o, th, scale);
        for (int c = 0; c < C; c++)
            x[c] += rs[c];
        ln_row(j->out + o, x, j->w, j->b, C, j->eps, j->mean + r, j->rstd + r);
    }
}

void bft_op_residual_ln_fwd(float *out, float *x, float *mean, float *rstd, const float *proj,
                            const float *bias, const float *res, const float *w, const float *b,
                            int N, int C, float eps, const bft_dropout *d)
{
    ln_job j = {0};
    j.out = out;
    j.x = x;
    j.mean = mean;
    j.rstd = rstd;
    j.proj = proj;
    j.bias = bias;
    j.res = res;
    j.w = w;
    j.b = b;
    j.C = C;
    j.eps = eps;
    if (d)
        j.d = *d;
    bft_parallel_for(N, 4, res_ln_part, &j);
}

BFT_HOT static void embed_ln_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ln_job *j = ctx;
    int C = j->C;
    int act = drop_active(&j->d);
    uint32_t th = act ? drop_thresh(j->d.p) : 0;
    float scale = act ? 1.0f / (1.0f - j->d.p) : 1.0f;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        size_t o = (size_t)r * C;
        int t = (int)(r % j->T);
        float *x = j->x + o;
        const float *we = j->wte + (size_t)j->ids[r] * C, *pe = j->wpe + (size_t)t * C;
        for (int c = 0; c < C; c++)
            x[c] = (we[c] + j->wtt[c]) + pe[c];
        ln_row(j->out + o, x, j->w, j->b, C, j->eps, j->mean + r, j->rstd + r);
        if (act)
            drop_span(j->out + o, j->out + o, C, j->d.seed, o, th, scale);
    }
}

void bft_op_embed_ln_fwd(float *out, float *x, float *mean, float *rstd, const int32_t *ids,
                         const float *wte, const float *wpe, const float *wtt,
                         const float *w, const float *b, int B, int T, int C, float eps,
                         const bft_dropout *d)
{
    ln_job j = {0};
    j.out = out;
    j.x = x;
    j.mean = mean;
    j.rstd = rstd;
    j.ids = ids;
    j.wte = wte;
    j.wpe = wpe;
    j.wtt = wtt;
    j.w = w;
    j.b = b;
    j.T = T;
    j.C = C;
    j.eps = eps;
    if (d)
        j.d = *d;
    bft_parallel_for((int64_t)B * T, 4, embed_ln_part, &j);
}

typedef struct {
    float *dx, *dw, *db;
    const float *dout, *x, *mean, *rstd, *w;
    int N, C, accum;
} lnb_job;

/* dw, db (columns c0..c1) += sum over rows of dout*xhat, dout */
BFT_HOT static void lnb_cols_part(void *ctx, int64_t c0, int64_t c1, int tid)
{
    lnb_job *j = ctx;
    int w = (int)(c1 - c0);
    (void)tid;
    if (!j->accum) {
        if (j->dw)
            memset(j->dw + c0, 0, (size_t)w * sizeof(float));
        if (j->db)
            memset(j->db + c0, 0, (size_t)w * sizeof(float));
    }
    for (int r = 0; r < j->N; r++) {
        const float *g = j->dout + (size_t)r * j->C + c0, *x = j->x + (size_t)r * j->C + c0;
        float mean = j->mean[r], rstd = j->rstd[r];
        if (j->dw) {
            float *dw = j->dw + c0;
            for (int c = 0; c < w; c++)
                dw[c] += g[c] * ((x[c] - mean) * rstd);
        }
        if (j->db) {
            float *db = j->db + c0;
            for (int c = 0; c < w; c++)
                db[c] += g[c];
        }
    }
}

BFT_HOT static void lnb_rows_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    lnb_job *j = ctx;
    int C = j->C;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        const float *g = j->dout + (size_t)r * C, *x = j->x + (size_t)r * C;
        float *dx = j->dx + (size_t)r * C;
        float mean = j->mean[r], rstd = j->rstd[r];
        float a1[VW] = {0}, a2[VW] = {0};
        int i = 0;
        for (; i + VW <= C; i += VW)
            for (int k = 0; k < VW; k++) {
                float dn = g[i + k] * j->w[i + k];
                a1[k] += dn;
                a2[k] += dn * ((x[i + k] - mean) * rstd);
            }
        float s1 = 0.0f, s2 = 0.0f;
        for (int k = 0; k < VW; k++) {
            s1 += a1[k];
            s2 += a2[k];
        }
        for (; i < C; i++) {
            float dn = g[i] * j->w[i];
            s1 += dn;
            s2 += dn * ((x[i] - mean) * rstd);
        }
        float m1 = s1 / (float)C, m2 = s2 / (float)C;
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - mean) * rstd;
            dx[c] = (g[c] * j->w[c] - m1 - xh * m2) * rstd;
        }
    }
}

void bft_op_layernorm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *mean, const float *rstd, const float *w, int N, int C,
                          int accum_w)
{
    lnb_job j = {dx, dw, db, dout, x, mean, rstd, w, N, C, accum_w};
    if (dw || db)
        bft_parallel_for(C, (int64_t)(N * C < 65536 ? C : 64), lnb_cols_part, &j);
    bft_parallel_for(N, 4, lnb_rows_part, &j);
}

typedef struct {
    float *dproj;
    const float *dx;
    int C;
    bft_dropout d;
} dbb_job;

BFT_HOT static void dbb_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    dbb_job *j = ctx;
    (void)tid;
    size_t o = (size_t)r0 * j->C;
    drop_span(j->dproj + o, j->dx + o, (r1 - r0) * j->C, j->d.seed, o, drop_thresh(j->d.p),
              1.0f / (1.0f - j->d.p));
}

void bft_op_dropout_bias_bwd(float *dproj, float *dbias, const float *dx, int N, int C,
                             const bft_dropout *d)
{
    if (drop_active(d)) {
        dbb_job j = {dproj, dx, C, *d};
        bft_parallel_for(N, 16, dbb_part, &j);
    } else if (dproj != dx) {
        memcpy(dproj, dx, (size_t)N * C * sizeof *dproj);
    }
    if (dbias)
        bft_op_colsum(dbias, dproj, N, C, 0);
}

/* ---------------------------------------------------------------- embeddings backward */

typedef struct {
    float *dwte, *dwpe, *dwtt;
    const float *dx;
    const int32_t *ids;
    int B, T, C, pad_id;
} emb_job;

BFT_HOT static void emb_bwd_part(void *ctx, int64_t c0, int64_t c1, int tid)
{
    emb_job *j = ctx;
    int w = (int)(c1 - c0);
    (void)tid;
    for (int b = 0; b < j->B; b++)
        for (int t = 0; t < j->T; t++) {
            size_t r = (size_t)b * j->T + t;
            const float *g = j->dx + r * j->C + c0;
            float *pe = j->dwpe + (size_t)t * j->C + c0, *tt = j->dwtt + c0;
            for (int c = 0; c < w; c++) {
                pe[c] += g[c];
                tt[c] += g[c];
            }
            if (j->ids[r] != j->pad_id) {
                float *we = j->dwte + (size_t)j->ids[r] * j->C + c0;
                for (int c = 0; c < w; c++)
                    we[c] += g[c];
            }
        }
}

void bft_op_embed_ln_bwd(float *dwte, float *dwpe, float *dwtt, float *dw, float *db,
                         float *dout, float *dx, const float *x, const float *mean,
                         const float *rstd, const int32_t *ids, const float *w, int B, int T,
                         int C, int pad_id, const bft_dropout *d)
{
    int N = B * T;
    bft_op_dropout_bwd(dout, dout, (size_t)N * C, d);
    bft_op_layernorm_bwd(dx, dw, db, dout, x, mean, rstd, w, N, C, 0);
    emb_job j = {dwte, dwpe, dwtt, dx, ids, B, T, C, pad_id};
    bft_parallel_for(C, 16, emb_bwd_part, &j);
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    float *ctx, *att, *dqkv;
    const float *qkv, *dctx, *catt;
    const int32_t *lens;
    int B, T, C, NH;
    bft_dropout d;
} att_job;

/* Fill the shape/dropout fields common to every attention op and run part
 * over the B*NH (batch, head) pairs, grain pairs per task. */
static void att_run(att_job *j, const float *qkv, const int32_t *lens, int B, int T, int C,
                    int NH, const bft_dropout *d, int64_t grain,
                    void (*part)(void *, int64_t, int64_t, int))
{
    j->qkv = qkv;
    j->lens = lens;
    j->B = B;
    j->T = T;
    j->C = C;
    j->NH = NH;
    if (d)
        j->d = *d;
    bft_parallel_for((int64_t)B * NH, grain, part, j);
}

/* Rows of one (b, h): softmax over keys < len of S (T, T) in place. */
static inline void softmax_rows(float *S, int T, int len)
{
    for (int i = 0; i < T; i++) {
        float *s = S + (size_t)i * T;
        float mx = vmax(s, len);
        for (int k = 0; k < len; k++)
            s[k] = fexp(s[k] - mx);
        float inv = 1.0f / vsum(s, len);
        for (int k = 0; k < len; k++)
            s[k] *= inv;
        for (int k = len; k < T; k++)
            s[k] = 0.0f;
    }
}

BFT_HOT static void att_fwd_part(void *ctx, int64_t p0, int64_t p1, int tid)
{
    att_job *j = ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int act = drop_active(&j->d);
    uint32_t th = act ? drop_thresh(j->d.p) : 0;
    float dscale = act ? 1.0f / (1.0f - j->d.p) : 1.0f;
    size_t TT = (size_t)T * T;
    float *scratch = NULL;
    (void)tid;
    if (!j->att || act) {
        scratch = malloc(TT * sizeof(float) * 2);
        if (!scratch)
            return; /* cannot happen in practice; outputs stay as they were */
    }
    for (int64_t pidx = p0; pidx < p1; pidx++) {
        int b = (int)(pidx / NH), h = (int)(pidx % NH);
        int len = j->lens[b];
        const float *Q = j->qkv + (size_t)b * T * C3 + (size_t)h * hs;
        const float *K = Q + C, *V = Q + 2 * C;
        float *P = j->att ? j->att + (size_t)pidx * TT : scratch;
        float *Pd = P;
        float *out = j->ctx + (size_t)b * T * C + (size_t)h * hs;
        /* S = Q K^T / sqrt(hs) over the real keys */
        gemm_raw(0, 1, T, len, hs, scale, Q, C3, K, C3, 0.0f, P, T);
        softmax_rows(P, T, len);
        if (act) {
            Pd = scratch + TT;
            for (int i = 0; i < T; i++)
                drop_span(Pd + (size_t)i * T, P + (size_t)i * T, T, j->d.seed,
                          (uint64_t)pidx * TT + (size_t)i * T, th, dscale);
        }
        /* ctx = Pd V */
        gemm_raw(0, 0, T, hs, len, 1.0f, Pd, T, V, C3, 0.0f, out, C);
    }
    free(scratch);
}

void bft_op_attention_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens,
                          int B, int T, int C, int NH, const bft_dropout *d)
{
    att_job j = {0};
    pthread_once(&blas_once, blas_init);
    j.ctx = ctx;
    j.att = att;
    att_run(&j, qkv, lens, B, T, C, NH, d, 1, att_fwd_part);
}

BFT_HOT static void att_bwd_part(void *ctx, int64_t p0, int64_t p1, int tid)
{
    att_job *j = ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int act = drop_active(&j->d);
    uint32_t th = act ? drop_thresh(j->d.p) : 0;
    float dscale = act ? 1.0f / (1.0f - j->d.p) : 1.0f;
    size_t TT = (size_t)T * T;
    /* Xt: a transposed (T, T) operand, so every product is NN or NT (OpenBLAS's
     * small-matrix kernels, no packing); dP: (T, T) gradient of the probabilities */
    float *scratch = malloc(TT * sizeof(float) * 2);
    (void)tid;
    if (!scratch)
        return;
    float *Xt = scratch, *dP = scratch + TT;
    for (int64_t pidx = p0; pidx < p1; pidx++) {
        int b = (int)(pidx / NH), h = (int)(pidx % NH);
        int len = j->lens[b];
        size_t qo = (size_t)b * T * C3 + (size_t)h * hs;
        const float *Q = j->qkv + qo, *K = Q + C, *V = Q + 2 * C;
        float *dQ = j->dqkv + qo, *dK = dQ + C, *dV = dQ + 2 * C;
        const float *P = j->catt + (size_t)pidx * TT;
        const float *dctx = j->dctx + (size_t)b * T * C + (size_t)h * hs;
        uint64_t base = (uint64_t)pidx * TT;
        /* Xt (len, T) = dropout(P)^T */
        for (int i = 0; i < T; i++) {
            const float *p = P + (size_t)i * T;
            if (act)
                for (int k = 0; k < len; k++)
                    Xt[(size_t)k * T + i] =
                        drop_bits(j->d.seed, base + (size_t)i * T + k) >= th ? p[k] * dscale : 0.0f;
            else
                for (int k = 0; k < len; k++)
                    Xt[(size_t)k * T + i] = p[k];
        }
        /* dV (len, hs) = dropout(P)^T dctx; rows >= len get 0 */
        gemm_raw(0, 0, len, hs, T, 1.0f, Xt, T, dctx, C, 0.0f, dV, C3);
        for (int t = len; t < T; t++)
            memset(dV + (size_t)t * C3, 0, (size_t)hs * sizeof(float));
        /* dP (T, len) = dctx V^T, through the dropout, then the softmax backward:
         * dS = P * (dP - sum_k P dP) */
        gemm_raw(0, 1, T, len, hs, 1.0f, dctx, C, V, C3, 0.0f, dP, T);
        for (int i = 0; i < T; i++) {
            float *dp = dP + (size_t)i * T;
            const float *p = P + (size_t)i * T;
            if (act)
                drop_span(dp, dp, len, j->d.seed, base + (size_t)i * T, th, dscale);
            float s = vdot(p, dp, len);
            for (int k = 0; k < len; k++)
                dp[k] = p[k] * (dp[k] - s);
        }
        /* dQ (T, hs) = dS K / sqrt(hs) */
        gemm_raw(0, 0, T, hs, len, scale, dP, T, K, C3, 0.0f, dQ, C3);
        /* dK (len, hs) = dS^T Q / sqrt(hs) */
        for (int i = 0; i < T; i++)
            for (int k = 0; k < len; k++)
                Xt[(size_t)k * T + i] = dP[(size_t)i * T + k];
        gemm_raw(0, 0, len, hs, T, scale, Xt, T, Q, C3, 0.0f, dK, C3);
        for (int t = len; t < T; t++)
            memset(dK + (size_t)t * C3, 0, (size_t)hs * sizeof(float));
    }
    free(scratch);
}

void bft_op_attention_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                          const int32_t *lens, int B, int T, int C, int NH, const bft_dropout *d)
{
    att_job j = {0};
    pthread_once(&blas_once, blas_init);
    j.dqkv = dqkv;
    j.dctx = dctx;
    j.catt = att;
    att_run(&j, qkv, lens, B, T, C, NH, d, 1, att_bwd_part);
}

/* ---------------------------------------------------------------- [CLS]-row attention */

BFT_HOT static void attc_fwd_part(void *ctx, int64_t p0, int64_t p1, int tid)
{
    att_job *j = ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int act = drop_active(&j->d);
    uint32_t th = act ? drop_thresh(j->d.p) : 0;
    float dscale = act ? 1.0f / (1.0f - j->d.p) : 1.0f;
    float *buf = malloc((size_t)T * sizeof(float));
    (void)tid;
    if (!buf)
        return;
    for (int64_t pidx = p0; pidx < p1; pidx++) {
        int b = (int)(pidx / NH), h = (int)(pidx % NH), len = j->lens[b];
        const float *q = j->qkv + (size_t)b * T * C3 + (size_t)h * hs;
        const float *K = q + C, *V = q + 2 * C;
        float *p = j->att ? j->att + (size_t)pidx * T : buf;
        float *out = j->ctx + (size_t)b * C + (size_t)h * hs;
        for (int k = 0; k < len; k++)
            p[k] = vdot(q, K + (size_t)k * C3, hs) * scale;
        float mx = vmax(p, len);
        for (int k = 0; k < len; k++)
            p[k] = fexp(p[k] - mx);
        float inv = 1.0f / vsum(p, len);
        for (int k = 0; k < len; k++)
            p[k] *= inv;
        for (int k = len; k < T; k++)
            p[k] = 0.0f;
        for (int c = 0; c < hs; c++)
            out[c] = 0.0f;
        uint64_t base = (uint64_t)pidx * T * T;
        for (int k = 0; k < len; k++) {
            float w = p[k];
            if (act)
                w = drop_bits(j->d.seed, base + (uint64_t)k) >= th ? w * dscale : 0.0f;
            const float *v = V + (size_t)k * C3;
            for (int c = 0; c < hs; c++)
                out[c] += w * v[c];
        }
    }
    free(buf);
}

void bft_op_attention_cls_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens,
                              int B, int T, int C, int NH, const bft_dropout *d)
{
    att_job j = {0};
    j.ctx = ctx;
    j.att = att;
    att_run(&j, qkv, lens, B, T, C, NH, d, 4, attc_fwd_part);
}

BFT_HOT static void attc_bwd_part(void *ctx, int64_t p0, int64_t p1, int tid)
{
    att_job *j = ctx;
    int T = j->T, C = j->C, NH = j->NH, hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int act = drop_active(&j->d);
    uint32_t th = act ? drop_thresh(j->d.p) : 0;
    float dscale = act ? 1.0f / (1.0f - j->d.p) : 1.0f;
    float *buf = malloc((size_t)T * 2 * sizeof(float));
    (void)tid;
    if (!buf)
        return;
    float *keep = buf, *ds = buf + T;
    for (int64_t pidx = p0; pidx < p1; pidx++) {
        int b = (int)(pidx / NH), h = (int)(pidx % NH), len = j->lens[b];
        size_t qo = (size_t)b * T * C3 + (size_t)h * hs;
        const float *q = j->qkv + qo, *K = q + C, *V = q + 2 * C;
        float *dq = j->dqkv + qo, *dK = dq + C, *dV = dq + 2 * C;
        const float *p = j->catt + (size_t)pidx * T;
        const float *dc = j->dctx + (size_t)b * C + (size_t)h * hs;
        uint64_t base = (uint64_t)pidx * T * T;
        /* keep[k]: dropout multiplier of key k; dp = keep * (dctx . v_k) */
        for (int k = 0; k < len; k++)
            keep[k] = act ? (drop_bits(j->d.seed, base + (uint64_t)k) >= th ? dscale : 0.0f) : 1.0f;
        for (int k = 0; k < len; k++)
            ds[k] = keep[k] * vdot(dc, V + (size_t)k * C3, hs);
        float s = vdot(p, ds, len);
        for (int k = 0; k < len; k++)
            ds[k] = p[k] * (ds[k] - s) * scale;
        /* dq = sum_k ds_k K_k; dK_k = ds_k q; dV_k = keep_k p_k dctx */
        for (int c = 0; c < hs; c++)
            dq[c] = 0.0f;
        for (int k = 0; k < len; k++) {
            const float *kk = K + (size_t)k * C3;
            float *dk = dK + (size_t)k * C3, *dv = dV + (size_t)k * C3;
            float wk = ds[k], wv = keep[k] * p[k];
            for (int c = 0; c < hs; c++) {
                dq[c] += wk * kk[c];
                dk[c] = wk * q[c];
                dv[c] = wv * dc[c];
            }
        }
        for (int t = 1; t < T; t++)
            memset(dq + (size_t)t * C3, 0, (size_t)hs * sizeof(float));
        for (int t = len; t < T; t++) {
            memset(dK + (size_t)t * C3, 0, (size_t)hs * sizeof(float));
            memset(dV + (size_t)t * C3, 0, (size_t)hs * sizeof(float));
        }
    }
    free(buf);
}

void bft_op_attention_cls_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                              const int32_t *lens, int B, int T, int C, int NH,
                              const bft_dropout *d)
{
    att_job j = {0};
    j.dqkv = dqkv;
    j.dctx = dctx;
    j.catt = att;
    att_run(&j, qkv, lens, B, T, C, NH, d, 4, attc_bwd_part);
}

/* ---------------------------------------------------------------- small ops */

void bft_op_gather_rows(float *out, const float *inp, const int64_t *rows, int n, int C)
{
    for (int r = 0; r < n; r++)
        memcpy(out + (size_t)r * C, inp + (size_t)rows[r] * C, (size_t)C * sizeof *out);
}

void bft_op_scatter_add_rows(float *dinp, const float *dout, const int64_t *rows, int n, int C)
{
    for (int r = 0; r < n; r++) {
        float *d = dinp + (size_t)rows[r] * C;
        const float *g = dout + (size_t)r * C;
        for (int c = 0; c < C; c++)
            d[c] += g[c];
    }
}

void bft_op_bias_tanh_fwd(float *x, const float *bias, int N, int C)
{
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++)
            x[(size_t)r * C + c] = tanhf(x[(size_t)r * C + c] + (bias ? bias[c] : 0.0f));
}

void bft_op_tanh_bwd(float *dinp, const float *dout, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] = dout[i] * (1.0f - y[i] * y[i]);
}

/* ---------------------------------------------------------------- softmax cross-entropy */

typedef struct {
    float *probs, *losses, *dlogits;
    const float *logits;
    const int32_t *labels;
    const float *row_scale;
    int K;
    float dscale;
} xent_job;

BFT_HOT static void xent_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    xent_job *j = ctx;
    int K = j->K;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        const float *lg = j->logits + (size_t)r * K;
        int y = j->labels ? j->labels[r] : -1;
        float mx = vmax(lg, K);
        /* exp into the probs row, or the dlogits row when probs are not wanted */
        float *e = j->probs ? j->probs + (size_t)r * K : j->dlogits + (size_t)r * K;
        for (int k = 0; k < K; k++)
            e[k] = fexp(lg[k] - mx);
        float sum = vsum(e, K), inv = 1.0f / sum;
        for (int k = 0; k < K; k++)
            e[k] *= inv;
        if (j->losses)
            j->losses[r] = y >= 0 ? -(float)((double)lg[y] - mx - log((double)sum)) : 0.0f;
        if (j->dlogits) {
            float *d = j->dlogits + (size_t)r * K;
            if (y >= 0) {
                float ds = j->row_scale ? j->dscale * j->row_scale[r] : j->dscale;
                for (int k = 0; k < K; k++)
                    d[k] = e[k] * ds;
                d[y] -= ds;
            } else {
                memset(d, 0, (size_t)K * sizeof *d);
            }
        }
    }
}

void bft_op_softmax_xent(float *probs, float *losses, float *dlogits, const float *logits,
                         const int32_t *labels, const float *row_scale, int N, int K,
                         float dscale)
{
    xent_job j = {probs, losses, dlogits, logits, labels, row_scale, K, dscale};
    if (!probs && !dlogits)
        return;
    bft_parallel_for(N, K >= 4096 ? 1 : 64, xent_part, &j);
}

/* ---------------------------------------------------------------- sigmoid binary cross-entropy */

typedef struct {
    float *probs, *losses, *dlogits;
    const float *logits, *targets;
    int K;
    float dscale;
} bce_job;

static void bce_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    bce_job *j = ctx;
    int K = j->K;
    float dk = j->dscale / (float)K;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        const float *lg = j->logits + (size_t)r * K;
        const float *y = j->targets ? j->targets + (size_t)r * K : NULL;
        double ls = 0.0;
        for (int k = 0; k < K; k++) {
            float x = lg[k];
            /* sigmoid without overflow: exp of -|x| only */
            float e = expf(-fabsf(x));
            float p = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
            if (j->probs)
                j->probs[(size_t)r * K + k] = p;
            if (y) {
                ls += (double)fmaxf(x, 0.0f) - (double)x * y[k] + log1p((double)e);
                if (j->dlogits)
                    j->dlogits[(size_t)r * K + k] = (p - y[k]) * dk;
            }
        }
        if (y && j->losses)
            j->losses[r] = (float)(ls / K);
    }
}

void bft_op_sigmoid_bce(float *probs, float *losses, float *dlogits, const float *logits,
                        const float *targets, int N, int K, float dscale)
{
    bce_job j = {probs, losses, dlogits, logits, targets, K, dscale};
    if (!probs && !(targets && (losses || dlogits)))
        return;
    bft_parallel_for(N, K >= 4096 ? 1 : 64, bce_part, &j);
}

/* ---------------------------------------------------------------- optimizer */

typedef struct {
    float *p, *m, *v, *g;
    float decay, b2, c1, c2, eps, gscale, step_size, bc2s;
    int zero_grad;
} adamw_job;

BFT_HOT static void adamw_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    adamw_job *j = ctx;
    float *p = j->p, *m = j->m, *v = j->v, *g = j->g;
    float decay = j->decay, b2 = j->b2, c1 = j->c1, c2 = j->c2;
    float gs = j->gscale, ss = -j->step_size, bc2s = j->bc2s, eps = j->eps;
    (void)tid;
    for (int64_t i = i0; i < i1; i++) {
        float gi = g[i] * gs;
        float pi = p[i] * decay;
        float mi = m[i] + c1 * (gi - m[i]); /* torch's lerp_ (weight < 0.5) */
        float vi = v[i] * b2 + c2 * gi * gi; /* mul_(b2).addcmul_(g, g, value=1-b2) */
        m[i] = mi;
        v[i] = vi;
        p[i] = pi + ss * (mi / (sqrtf(vi) / bc2s + eps));
    }
    if (j->zero_grad)
        memset(g + i0, 0, (size_t)(i1 - i0) * sizeof *g);
}

void bft_op_adamw(float *p, float *g, float *m, float *v, size_t n, double lr, double b1,
                  double b2, double eps, double wd, float gscale, int64_t t, int zero_grad)
{
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    adamw_job j = {p, m, v, g, (float)(1.0 - lr * wd), (float)b2, (float)(1.0 - b1),
                   (float)(1.0 - b2), (float)eps, gscale, (float)(lr / bc1), (float)sqrt(bc2),
                   zero_grad};
    bft_parallel_for((int64_t)n, 32768, adamw_part, &j);
}

/* ---------------------------------------------------------------- reductions */

#define SUMSQ_BLOCK 65536

typedef struct {
    const float *x;
    size_t n;
    double *part;
} sumsq_job;

/* Sum of squares of x (n), in a fixed order: four interleaved streams (quarters
 * of the block, for memory-level parallelism), float partials over 1024-element
 * chunks accumulated into double. */
BFT_HOT static double sumsq_block(const float *x, size_t n)
{
    size_t q = n / 4 / 1024 * 1024, i;
    double s = 0.0;
    for (size_t c = 0; c < q; c += 1024) {
        float acc[4][VW];
        for (int w = 0; w < 4; w++)
            for (int k = 0; k < VW; k++)
                acc[w][k] = 0.0f;
        for (i = c; i < c + 1024; i += VW)
            for (int w = 0; w < 4; w++)
                for (int k = 0; k < VW; k++) {
                    float v = x[(size_t)w * q + i + k];
                    acc[w][k] += v * v;
                }
        for (int w = 0; w < 4; w++)
            for (int k = 0; k < VW; k++)
                s += (double)acc[w][k];
    }
    float tail = 0.0f;
    for (i = 4 * q; i < n; i++)
        tail += x[i] * x[i];
    return s + (double)tail;
}

static void sumsq_part(void *ctx, int64_t b0, int64_t b1, int tid)
{
    sumsq_job *j = ctx;
    (void)tid;
    for (int64_t b = b0; b < b1; b++) {
        size_t s = (size_t)b * SUMSQ_BLOCK, e = s + SUMSQ_BLOCK < j->n ? s + SUMSQ_BLOCK : j->n;
        j->part[b] = sumsq_block(j->x + s, e - s);
    }
}

double bft_op_sumsq(const float *x, size_t n)
{
    size_t nb = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    double total = 0.0;
    if (nb <= 1)
        return sumsq_block(x, n);
    double *part = malloc(nb * sizeof *part);
    if (!part) {
        for (size_t b = 0; b < nb; b++) {
            size_t s = b * SUMSQ_BLOCK, e = s + SUMSQ_BLOCK < n ? s + SUMSQ_BLOCK : n;
            total += sumsq_block(x + s, e - s);
        }
        return total;
    }
    sumsq_job j = {x, n, part};
    bft_parallel_for((int64_t)nb, 4, sumsq_part, &j);
    for (size_t b = 0; b < nb; b++)
        total += part[b];
    free(part);
    return total;
}

typedef struct {
    float *x;
} zero_job;

static void zero_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    zero_job *j = ctx;
    (void)tid;
    memset(j->x + i0, 0, (size_t)(i1 - i0) * sizeof(float));
}

void bft_op_zero(float *x, size_t n)
{
    zero_job j = {x};
    bft_parallel_for((int64_t)n, 1 << 18, zero_part, &j);
}
