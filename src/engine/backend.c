/*
 * backend.c — dispatch of the ops of ops.h to the calling thread's current
 * backend (see backend.h), device selection and the backend memory calls.
 */
#include "backend.h"

#include <string.h>
#include <strings.h>

#include "cuda/ops_cuda.h"

static _Thread_local const bft_backend *current;

const bft_backend *bft_backend_current(void)
{
    return current ? current : bft_cpu_backend();
}

const bft_backend *bft_backend_use(const bft_backend *b)
{
    const bft_backend *prev = bft_backend_current();
    current = b;
    return prev;
}

int bft_device_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcasecmp(s, "cpu") == 0)
        return BFT_DEVICE_CPU;
    if (strcasecmp(s, "cuda") == 0 || strcasecmp(s, "gpu") == 0 || strcasecmp(s, "cuda:0") == 0)
        return BFT_DEVICE_CUDA;
    return -1;
}

int bft_backend_open(int device, int precision, const bft_backend **out, bft_error *err)
{
    bft_clear_error(err);
    if (precision < BFT_PRECISION_AUTO || precision > BFT_PRECISION_BF16)
        return bft_set_error(err, BFT_EINVAL, "unknown precision %d (0 auto, 1 fp32, 2 bf16)",
                             precision);
    if (device == BFT_DEVICE_CPU) {
        if (precision == BFT_PRECISION_BF16)
            return bft_set_error(err, BFT_EUNSUPPORTED,
                                 "bf16 mixed precision needs the CUDA device; the CPU computes in fp32");
        if (bft_cpu_blas_load(err) != BFT_OK)
            return BFT_EDEVICE;
        *out = bft_cpu_backend();
        return BFT_OK;
    }
    if (device != BFT_DEVICE_CUDA)
        return bft_set_error(err, BFT_EINVAL, "unknown device %d (0 cpu, 1 cuda)", device);
    const bft_backend *cb = bft_cuda_backend();
    if (!cb) {
        bft_cuda_available(err); /* "bft was built without CUDA ..." */
        return BFT_EDEVICE;
    }
    int rc = bft_cuda_init(0, precision == BFT_PRECISION_FP32 ? 0 : 1, err);
    if (rc != BFT_OK)
        return rc;
    (void)bft_cuda_check(NULL); /* drop a failure a previous caller left unreported */
    *out = cb;
    return BFT_OK;
}

void *bft_dev_alloc(size_t bytes)
{
    return bft_backend_current()->alloc(bytes);
}

void bft_dev_free(void *p)
{
    if (p)
        bft_backend_current()->free(p);
}

void bft_dev_upload(void *dst, const void *src_host, size_t bytes)
{
    bft_backend_current()->upload(dst, src_host, bytes);
}

void bft_dev_download(void *dst_host, const void *src, size_t bytes)
{
    bft_backend_current()->download(dst_host, src, bytes);
}

void bft_dev_copy(void *dst, const void *src, size_t bytes)
{
    bft_backend_current()->copy(dst, src, bytes);
}

int bft_dev_check(bft_error *err)
{
    return bft_backend_current()->check(err);
}

/* ---------------------------------------------------------------- ops.h dispatch */

#define BE bft_backend_current()

void bft_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc)
{
    BE->gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void bft_op_linear_fwd(float *out, const float *inp, const float *w, const float *bias, int N,
                       int IC, int OC)
{
    BE->linear_fwd(out, inp, w, bias, N, IC, OC);
}

void bft_op_linear_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                       const float *inp, const float *w, int N, int IC, int OC, int accum_dinp,
                       int accum_dw)
{
    BE->linear_bwd(dinp, dw, dbias, dout, inp, w, N, IC, OC, accum_dinp, accum_dw);
}

void bft_op_colsum(float *out, const float *x, int N, int C, int accum)
{
    BE->colsum(out, x, N, C, accum);
}

void bft_op_bias_gelu_fwd(float *pre, float *out, const float *bias, int N, int OC)
{
    BE->bias_gelu_fwd(pre, out, bias, N, OC);
}

void bft_op_gelu_fwd(float *out, const float *inp, size_t n)
{
    BE->gelu_fwd(out, inp, n);
}

void bft_op_gelu_bwd(float *dinp, const float *dout, const float *inp, size_t n)
{
    BE->gelu_bwd(dinp, dout, inp, n);
}

void bft_op_gelu_recompute(float *out, float *x, size_t n)
{
    BE->gelu_recompute(out, x, n);
}

void bft_op_mul(float *x, const float *y, size_t n)
{
    BE->mul(x, y, n);
}

void bft_op_embed_ln_fwd(float *out, float *x, float *mean, float *rstd, const int32_t *ids,
                         const float *wte, const float *wpe, const float *wtt, const float *w,
                         const float *b, int B, int T, int C, float eps, const bft_dropout *d)
{
    BE->embed_ln_fwd(out, x, mean, rstd, ids, wte, wpe, wtt, w, b, B, T, C, eps, d);
}

void bft_op_embed_ln_bwd(float *dwte, float *dwpe, float *dwtt, float *dw, float *db,
                         float *dout, float *dx, const float *x, const float *mean,
                         const float *rstd, const int32_t *ids, const float *w, int B, int T,
                         int C, int pad_id, const bft_dropout *d)
{
    BE->embed_ln_bwd(dwte, dwpe, dwtt, dw, db, dout, dx, x, mean, rstd, ids, w, B, T, C, pad_id,
                     d);
}

void bft_op_residual_ln_fwd(float *out, float *x, float *mean, float *rstd, const float *proj,
                            const float *bias, const float *res, const float *w, const float *b,
                            int N, int C, float eps, const bft_dropout *d)
{
    BE->residual_ln_fwd(out, x, mean, rstd, proj, bias, res, w, b, N, C, eps, d);
}

void bft_op_layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C, float eps)
{
    BE->layernorm_fwd(out, mean, rstd, x, w, b, N, C, eps);
}

void bft_op_layernorm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *mean, const float *rstd, const float *w, int N, int C,
                          int accum_w)
{
    BE->layernorm_bwd(dx, dw, db, dout, x, mean, rstd, w, N, C, accum_w);
}

void bft_op_dropout_bias_bwd(float *dproj, float *dbias, const float *dx, int N, int C,
                             const bft_dropout *d)
{
    BE->dropout_bias_bwd(dproj, dbias, dx, N, C, d);
}

void bft_op_attention_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens, int B,
                          int T, int C, int NH, const bft_dropout *d)
{
    BE->attention_fwd(ctx, att, qkv, lens, B, T, C, NH, d);
}

void bft_op_attention_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                          const int32_t *lens, int B, int T, int C, int NH, const bft_dropout *d)
{
    BE->attention_bwd(dqkv, dctx, att, qkv, lens, B, T, C, NH, d);
}

void bft_op_attention_cls_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens,
                              int B, int T, int C, int NH, const bft_dropout *d)
{
    BE->attention_cls_fwd(ctx, att, qkv, lens, B, T, C, NH, d);
}

void bft_op_attention_cls_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                              const int32_t *lens, int B, int T, int C, int NH,
                              const bft_dropout *d)
{
    BE->attention_cls_bwd(dqkv, dctx, att, qkv, lens, B, T, C, NH, d);
}

void bft_op_gather_rows(float *out, const float *inp, const int64_t *rows, int n, int C)
{
    BE->gather_rows(out, inp, rows, n, C);
}

void bft_op_scatter_add_rows(float *dinp, const float *dout, const int64_t *rows, int n, int C)
{
    BE->scatter_add_rows(dinp, dout, rows, n, C);
}

void bft_op_bias_tanh_fwd(float *x, const float *bias, int N, int C)
{
    BE->bias_tanh_fwd(x, bias, N, C);
}

void bft_op_tanh_bwd(float *dinp, const float *dout, const float *y, size_t n)
{
    BE->tanh_bwd(dinp, dout, y, n);
}

void bft_op_dropout_fwd(float *out, const float *inp, size_t n, const bft_dropout *d)
{
    BE->dropout_fwd(out, inp, n, d);
}

void bft_op_dropout_bwd(float *dinp, const float *dout, size_t n, const bft_dropout *d)
{
    BE->dropout_bwd(dinp, dout, n, d);
}

void bft_op_softmax_xent(float *probs, float *losses, float *dlogits, const float *logits,
                         const int32_t *labels, const float *row_scale, int N, int K,
                         float dscale)
{
    BE->softmax_xent(probs, losses, dlogits, logits, labels, row_scale, N, K, dscale);
}

void bft_op_sigmoid_bce(float *probs, float *losses, float *dlogits, const float *logits,
                        const float *targets, int N, int K, float dscale)
{
    BE->sigmoid_bce(probs, losses, dlogits, logits, targets, N, K, dscale);
}

void bft_op_adamw(float *p, float *g, float *m, float *v, size_t n, double lr, double b1,
                  double b2, double eps, double wd, float gscale, int64_t t, int zero_grad)
{
    BE->adamw(p, g, m, v, n, lr, b1, b2, eps, wd, gscale, t, zero_grad);
}

double bft_op_sumsq(const float *x, size_t n)
{
    return BE->sumsq(x, n);
}

void bft_op_zero(float *x, size_t n)
{
    BE->zero(x, n);
}

void bft_op_strided_rows(int64_t *rows, int n, int64_t stride)
{
    BE->strided_rows(rows, n, stride);
}

float bft_op_mean(const float *x, int n)
{
    return BE->mean(x, n);
}
