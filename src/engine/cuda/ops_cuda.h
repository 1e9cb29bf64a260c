/*
 * ops_cuda.h — the CUDA backend of ops.h (cuBLAS GEMMs + CUDA kernels).
 *
 * Every bft_cuda_op_* / bft_cuda_gemm function has the signature and the
 * semantics of the bft_op_* / bft_gemm function of ops.h with the same suffix,
 * but takes DEVICE pointers (tensors, ids, lens, labels and row indices all
 * live in GPU memory). Shapes use the letters of ops.h: N rows, C channels,
 * OC/IC output/input features, K classes, B batch, T tokens, NH heads.
 *
 * Precision: fp32 mode (the default) computes everything in fp32 with exact
 * fp32 GEMMs (no TF32); bf16 mode rounds GEMM inputs to bf16 and accumulates
 * in fp32 (tensor cores), activations, LayerNorm/softmax statistics, gradients,
 * master weights and AdamW moments stay fp32. Weights registered with
 * bft_cuda_set_weights get a bf16 mirror that bft_cuda_op_adamw refreshes in
 * the same pass, so weight operands are never converted twice.
 *
 * Errors: the ops return nothing; the first CUDA / cuBLAS failure (or an
 * out-of-memory) is kept as a sticky error, every later op is skipped, and
 * bft_cuda_check reports it (BFT_EDEVICE with the CUDA error string, or
 * BFT_ENOMEM). Dropout masks come from the same counter-based hash as the CPU
 * backend (bft_dropout_keep), so both backends drop the same elements.
 *
 * Loading and initialisation are lazy. The CUDA code lives in a separate
 * shared object, bft_cuda.so (this file's ops + cudart + cuBLAS), that
 * cuda_loader.c dlopen()s at the first CUDA request: bft.so and bft-cli do not
 * link the CUDA libraries, so loading them costs nothing on machines or in
 * sessions that never use the GPU (linking cuBLAS directly added ~0.14 s and
 * ~96 MB of private relocated memory to every process that loads bft.so).
 * bft_cuda.so is looked for in $BFT_CUDA_MODULE, next to the object that holds
 * the engine (bft.so in PostgreSQL's $libdir, or the bft-cli / test binary)
 * and one directory up. Nothing runs at library load; the first
 * bft_cuda_available / bft_cuda_init call loads the driver through cudart.
 * The backend keeps one process-wide state (handles, stream, workspaces): it
 * is meant for one caller thread at a time (a PostgreSQL backend, bft-cli).
 */
#ifndef BFT_OPS_CUDA_H
#define BFT_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "bft_error.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- engine side (cuda_loader.c) */

/* 1 when this build has the CUDA backend (USE_CUDA=1: bft_cuda.so was built). */
int bft_cuda_built(void);

/* 1 when a usable CUDA device (compute capability >= 8.0) is present, else 0
 * with err explaining why (built without CUDA, bft_cuda.so or cuBLAS missing,
 * no driver, no device, too old). */
int bft_cuda_available(bft_error *err);

/* Initialise the backend on device `index` (0 = first visible device): cuBLAS
 * handle, stream. Idempotent. precision: 0 fp32, 1 bf16 mixed precision.
 * Returns BFT_OK or BFT_EDEVICE / BFT_ENOMEM with err. */
int bft_cuda_init(int index, int precision, bft_error *err);

/* Synchronise, then report (and clear) the sticky error: BFT_OK or the code
 * of the first failure since the last check, with its message in err. */
int bft_cuda_check(bft_error *err);

/* Free every device buffer the backend holds (workspaces, bf16 mirror) and
 * the cuBLAS handle and stream; the next bft_cuda_init starts afresh. */
void bft_cuda_release(void);

/* "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", or "" when not initialised. */
const char *bft_cuda_device_name(void);

/* ---------------------------------------------------------------- the module's interface */

/* Bumped whenever this struct or bft_backend changes: a bft_cuda.so of another
 * build is refused instead of called with the wrong layout. */
#define BFT_CUDA_ABI 5

typedef struct bft_cuda_api {
    int abi;                 /* BFT_CUDA_ABI */
    size_t backend_size;     /* sizeof(bft_backend) */
    int (*available)(bft_error *err);
    int (*init)(int index, int precision, bft_error *err);
    int (*check)(bft_error *err);
    void (*release)(void);
    const char *(*device_name)(void);
    const bft_backend *backend;
} bft_cuda_api;

/* Exported by bft_cuda.so (the only symbol it exports). */
const bft_cuda_api *bft_cuda_module(void);

#ifdef BFT_CUDA_MODULE /* the module's own (hidden) functions */

/* ---------------------------------------------------------------- memory */

/* Device allocation of bytes (256-byte aligned); NULL on failure (sticky
 * BFT_ENOMEM error naming the size and the free memory). */
void *bft_cuda_alloc(size_t bytes);

/* Free a device allocation (NULL is fine). */
void bft_cuda_free(void *p);

/* Host → device and device → host copies of bytes (ordered on the backend's
 * stream; the download waits for the copy). */
void bft_cuda_upload(void *dst_dev, const void *src_host, size_t bytes);
void bft_cuda_download(void *dst_host, const void *src_dev, size_t bytes);

/* Device → device copy of bytes. */
void bft_cuda_copy(void *dst_dev, const void *src_dev, size_t bytes);

/* Register the fp32 parameter block w (n floats, device) as the model's
 * weights: in bf16 mode a bf16 mirror is allocated and filled, GEMM operands
 * inside the block use it, and bft_cuda_op_adamw updates it. w NULL clears. */
void bft_cuda_set_weights(const float *w, size_t n);

/* ---------------------------------------------------------------- ops (device pointers) */

void bft_cuda_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);
void bft_cuda_op_linear_fwd(float *out, const float *inp, const float *w, const float *bias,
                            int N, int IC, int OC);
void bft_cuda_op_linear_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                            const float *inp, const float *w, int N, int IC, int OC,
                            int accum_dinp, int accum_dw);
void bft_cuda_op_colsum(float *out, const float *x, int N, int C, int accum);
void bft_cuda_op_bias_gelu_fwd(float *pre, float *out, const float *bias, int N, int OC);
void bft_cuda_op_gelu_fwd(float *out, const float *inp, size_t n);
void bft_cuda_op_gelu_bwd(float *dinp, const float *dout, const float *inp, size_t n);
void bft_cuda_op_gelu_recompute(float *out, float *x, size_t n);
void bft_cuda_op_mul(float *x, const float *y, size_t n);
void bft_cuda_op_embed_ln_fwd(float *out, float *x, float *mean, float *rstd, const int32_t *ids,
                              const float *wte, const float *wpe, const float *wtt,
                              const float *w, const float *b, int B, int T, int C, float eps,
                              const bft_dropout *d);
void bft_cuda_op_embed_ln_bwd(float *dwte, float *dwpe, float *dwtt, float *dw, float *db,
                              float *dout, float *dx, const float *x, const float *mean,
                              const float *rstd, const int32_t *ids, const float *w, int B,
                              int T, int C, int pad_id, const bft_dropout *d);
void bft_cuda_op_residual_ln_fwd(float *out, float *x, float *mean, float *rstd,
                                 const float *proj, const float *bias, const float *res,
                                 const float *w, const float *b, int N, int C, float eps,
                                 const bft_dropout *d);
void bft_cuda_op_layernorm_fwd(float *out, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int N, int C, float eps);
void bft_cuda_op_layernorm_bwd(float *dx, float *dw, float *db, const float *dout,
                               const float *x, const float *mean, const float *rstd,
                               const float *w, int N, int C, int accum_w);
void bft_cuda_op_dropout_bias_bwd(float *dproj, float *dbias, const float *dx, int N, int C,
                                  const bft_dropout *d);
void bft_cuda_op_attention_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens,
                               int B, int T, int C, int NH, const bft_dropout *d);
void bft_cuda_op_attention_bwd(float *dqkv, const float *dctx, const float *att,
                               const float *qkv, const int32_t *lens, int B, int T, int C,
                               int NH, const bft_dropout *d);
void bft_cuda_op_attention_cls_fwd(float *ctx, float *att, const float *qkv,
                                   const int32_t *lens, int B, int T, int C, int NH,
                                   const bft_dropout *d);
void bft_cuda_op_attention_cls_bwd(float *dqkv, const float *dctx, const float *att,
                                   const float *qkv, const int32_t *lens, int B, int T, int C,
                                   int NH, const bft_dropout *d);
void bft_cuda_op_gather_rows(float *out, const float *inp, const int64_t *rows, int n, int C);
void bft_cuda_op_scatter_add_rows(float *dinp, const float *dout, const int64_t *rows, int n,
                                  int C);
void bft_cuda_op_bias_tanh_fwd(float *x, const float *bias, int N, int C);
void bft_cuda_op_tanh_bwd(float *dinp, const float *dout, const float *y, size_t n);
void bft_cuda_op_dropout_fwd(float *out, const float *inp, size_t n, const bft_dropout *d);
void bft_cuda_op_dropout_bwd(float *dinp, const float *dout, size_t n, const bft_dropout *d);
void bft_cuda_op_softmax_xent(float *probs, float *losses, float *dlogits, const float *logits,
                              const int32_t *labels, const float *row_scale, int N, int K,
                              float dscale);
void bft_cuda_op_sigmoid_bce(float *probs, float *losses, float *dlogits, const float *logits,
                             const float *targets, int N, int K, float dscale);
void bft_cuda_op_adamw(float *p, float *g, float *m, float *v, size_t n, double lr,
                       double b1, double b2, double eps, double wd, float gscale, int64_t t,
                       int zero_grad);
/* Synchronises (the result is returned to the host); 0 after an error. */
double bft_cuda_op_sumsq(const float *x, size_t n);
void bft_cuda_op_zero(float *x, size_t n);

/* rows (n, device) = r * stride for r in [0, n): the [CLS] row indices. */
void bft_cuda_op_strided_rows(int64_t *rows, int n, int64_t stride);

/* Mean of x (n floats, device) summed in double in index order on the host
 * (the CPU backend's order): synchronises. */
float bft_cuda_op_mean(const float *x, int n);

#endif /* BFT_CUDA_MODULE */

#ifdef __cplusplus
}
#endif

#endif
