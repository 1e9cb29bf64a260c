/*
 * backend.h — compute backends behind ops.h (CPU: ops_cpu.c; CUDA: cuda/ops_cuda.cu).
 *
 * Every bft_op_* / bft_gemm call of ops.h goes to the calling thread's current
 * backend (bft_backend_use; the CPU when none was chosen), so bert.c runs
 * unchanged on either: with the CUDA backend every tensor pointer it passes is
 * a device pointer. Memory for tensors comes from bft_dev_alloc and moves with
 * bft_dev_upload / bft_dev_download (plain malloc/memcpy on the CPU).
 *
 * Devices: BFT_DEVICE_CPU, BFT_DEVICE_CUDA. Precisions (CUDA only; the CPU is
 * always fp32): BFT_PRECISION_AUTO (bf16 mixed precision on CUDA),
 * BFT_PRECISION_FP32, BFT_PRECISION_BF16.
 */
#ifndef BFT_BACKEND_H
#define BFT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "model.h"
#include "ops.h"

/* the same values as train.h's (an identical redefinition is allowed) */
#define BFT_DEVICE_CPU 0
#define BFT_DEVICE_CUDA 1
#define BFT_PRECISION_AUTO 0
#define BFT_PRECISION_FP32 1
#define BFT_PRECISION_BF16 2

/* One backend: its memory functions and one entry per op of ops.h (same
 * signatures and semantics, pointers into the backend's memory). */
typedef struct bft_backend {
    const char *name;     /* "cpu", "cuda" */
    int device;           /* BFT_DEVICE_* */
    void *(*alloc)(size_t bytes);                  /* NULL on failure (check() says why) */
    void (*free)(void *p);
    void (*upload)(void *dst, const void *src_host, size_t bytes);
    void (*download)(void *dst_host, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);   /* within the backend's memory */
    int (*check)(bft_error *err);                  /* first failure since the last check */
    void (*set_weights)(const float *w, size_t n); /* parameter block hint (bf16 mirror) */

    void (*gemm)(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
    void (*linear_fwd)(float *out, const float *inp, const float *w, const float *bias, int N,
                       int IC, int OC);
    void (*linear_bwd)(float *dinp, float *dw, float *dbias, const float *dout,
                       const float *inp, const float *w, int N, int IC, int OC, int accum_dinp,
                       int accum_dw);
    void (*colsum)(float *out, const float *x, int N, int C, int accum);
    void (*bias_gelu_fwd)(float *pre, float *out, const float *bias, int N, int OC);
    void (*gelu_fwd)(float *out, const float *inp, size_t n);
    void (*gelu_bwd)(float *dinp, const float *dout, const float *inp, size_t n);
    void (*gelu_recompute)(float *out, float *x, size_t n);
    void (*mul)(float *x, const float *y, size_t n);
    void (*embed_ln_fwd)(float *out, float *x, float *mean, float *rstd, const int32_t *ids,
                         const float *wte, const float *wpe, const float *wtt, const float *w,
                         const float *b, int B, int T, int C, float eps, const bft_dropout *d);
    void (*embed_ln_bwd)(float *dwte, float *dwpe, float *dwtt, float *dw, float *db,
                         float *dout, float *dx, const float *x, const float *mean,
                         const float *rstd, const int32_t *ids, const float *w, int B, int T,
                         int C, int pad_id, const bft_dropout *d);
    void (*residual_ln_fwd)(float *out, float *x, float *mean, float *rstd, const float *proj,
                            const float *bias, const float *res, const float *w,
                            const float *b, int N, int C, float eps, const bft_dropout *d);
    void (*layernorm_fwd)(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C, float eps);
    void (*layernorm_bwd)(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *mean, const float *rstd, const float *w, int N, int C,
                          int accum_w);
    void (*dropout_bias_bwd)(float *dproj, float *dbias, const float *dx, int N, int C,
                             const bft_dropout *d);
    void (*attention_fwd)(float *ctx, float *att, const float *qkv, const int32_t *lens, int B,
                          int T, int C, int NH, const bft_dropout *d);
    void (*attention_bwd)(float *dqkv, const float *dctx, const float *att, const float *qkv,
                          const int32_t *lens, int B, int T, int C, int NH,
                          const bft_dropout *d);
    void (*attention_cls_fwd)(float *ctx, float *att, const float *qkv, const int32_t *lens,
                              int B, int T, int C, int NH, const bft_dropout *d);
    void (*attention_cls_bwd)(float *dqkv, const float *dctx, const float *att, const float *qkv,
                              const int32_t *lens, int B, int T, int C, int NH,
                              const bft_dropout *d);
    void (*gather_rows)(float *out, const float *inp, const int64_t *rows, int n, int C);
    void (*scatter_add_rows)(float *dinp, const float *dout, const int64_t *rows, int n, int C);
    void (*bias_tanh_fwd)(float *x, const float *bias, int N, int C);
    void (*tanh_bwd)(float *dinp, const float *dout, const float *y, size_t n);
    void (*dropout_fwd)(float *out, const float *inp, size_t n, const bft_dropout *d);
    void (*dropout_bwd)(float *dinp, const float *dout, size_t n, const bft_dropout *d);
    void (*softmax_xent)(float *probs, float *losses, float *dlogits, const float *logits,
                         const int32_t *labels, const float *row_scale, int N, int K,
                         float dscale);
    void (*sigmoid_bce)(float *probs, float *losses, float *dlogits, const float *logits,
                        const float *targets, int N, int K, float dscale);
    void (*adamw)(float *p, float *g, float *m, float *v, size_t n, double lr, double b1,
                  double b2, double eps, double wd, float gscale, int64_t t, int zero_grad);
    double (*sumsq)(const float *x, size_t n);
    void (*zero)(float *x, size_t n);
    void (*strided_rows)(int64_t *rows, int n, int64_t stride);
    float (*mean)(const float *x, int n);
} bft_backend;

/* The CPU backend (always present). */
const bft_backend *bft_cpu_backend(void);

/* Load OpenBLAS (dlopen on first use, never at library load, with no threads
 * of its own); BFT_EDEVICE with the reason when it cannot be loaded. */
int bft_cpu_blas_load(bft_error *err);

/* The CUDA backend, or NULL when bft was built without CUDA. Selecting it
 * does not initialise CUDA: bft_backend_open does. */
const bft_backend *bft_cuda_backend(void);

/* Open the backend of device (BFT_DEVICE_*) with precision (BFT_PRECISION_*):
 * initialises CUDA lazily (never at library load). No silent fallback: CUDA
 * without a usable GPU is BFT_EDEVICE with the reason. *out receives the
 * backend. Returns BFT_OK or an error code with err. */
int bft_backend_open(int device, int precision, const bft_backend **out, bft_error *err);

/* The calling thread's current backend (the CPU one unless changed). */
const bft_backend *bft_backend_current(void);

/* Make b the calling thread's current backend (NULL: the CPU); returns the
 * previous one so callers can restore it. */
const bft_backend *bft_backend_use(const bft_backend *b);

/* Parse "cpu" / "cuda" (also "gpu", "cuda:0") into BFT_DEVICE_*; -1 when unknown. */
int bft_device_parse(const char *s);

/* Memory of the current backend: allocate (64-byte aligned on the CPU), free,
 * copy in from / out to host memory. */
void *bft_dev_alloc(size_t bytes);
void bft_dev_free(void *p);
void bft_dev_upload(void *dst, const void *src_host, size_t bytes);
void bft_dev_download(void *dst_host, const void *src, size_t bytes);
void bft_dev_copy(void *dst, const void *src, size_t bytes);

/* The current backend's first failure since the last check (BFT_OK if none). */
int bft_dev_check(bft_error *err);

/* A model's weights on the device of one engine call. */
typedef struct bft_devmodel {
    const bft_backend *be;   /* the call's backend */
    const bft_backend *prev; /* the caller's backend, restored by close */
    bft_model dm;            /* the model with params_mem / p on the device (a shallow copy;
                              * on the CPU the very same weights as the model's) */
    float *owned;            /* device weights this handle frees (training) */
} bft_devmodel;

/* Make (device, precision) the calling thread's backend and put m's weights on
 * it: nothing to do on the CPU; on CUDA an upload (training: a private copy;
 * inference: a cached copy reused while the model's weights are unchanged).
 * Returns BFT_OK or an error code with err (nothing to close then). */
int bft_devmodel_open(bft_devmodel *d, const bft_model *m, int device, int precision,
                      int training, bft_error *err);

/* Copy the device weights back into m->params_mem (no-op on the CPU). */
int bft_devmodel_download(bft_devmodel *d, bft_model *m, bft_error *err);

/* Free the private device weights and restore the caller's backend. */
void bft_devmodel_close(bft_devmodel *d);

#endif
