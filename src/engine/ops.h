/*
 * ops.h — the engine's narrow compute interface.
 *
 * Everything the BERT forward/backward (bert.c) computes goes through these
 * functions; a backend implements all of them over its own memory (the CPU
 * backend, ops_cpu.c: OpenBLAS sgemm + vectorised C loops on the engine's
 * thread pool; a CUDA backend would take device pointers). Pointers are to
 * row-major fp32 tensors; shapes use N rows (usually B*T tokens), C channels,
 * OC/IC output/input features, K classes, B batch, T tokens, NH heads.
 *
 * The ops dispatch through backend.c to the calling thread's backend (backend.h):
 * a new op needs an entry in backend.h's table, a dispatcher in backend.c, its
 * CPU name in ops_cpu_names.h, the CPU table entry in backend_cpu.c and a CUDA
 * implementation in cuda/ops_cuda.cu (bump BFT_CUDA_ABI).
 *
 * Every op gives the same result for any thread count: parallel loops split
 * independent rows or columns, reductions run in a fixed order, and dropout
 * masks come from a counter-based hash of (seed, element index).
 */
#ifndef BFT_OPS_H
#define BFT_OPS_H

#include <stddef.h>
#include <stdint.h>

/* One dropout site: drop probability p (0: identity), the stream seed (a hash of
 * the training seed, step and site) and nothing else: element i is kept iff
 * hash(seed, i) >= p * 2^24, and kept elements are scaled by 1 / (1 - p). */
typedef struct bft_dropout {
    float p;
    uint64_t seed;
} bft_dropout;

/* The dropout seed of one site: a hash of (base seed, step, site id). */
uint64_t bft_dropout_seed(uint64_t base, uint64_t step, uint64_t site);

/* 1 if element i of site d is kept (exposed for tests). */
int bft_dropout_keep(const bft_dropout *d, uint64_t i);

/* Row-major GEMM: C (M,N) = alpha * op(A) (M,K) · op(B) (K,N) + beta * C,
 * op(X) = X^T when tX. Large products are split over the pool. */
void bft_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* Linear forward: out (N, OC) = inp (N, IC) · w (OC, IC)^T + bias (OC) (bias may be NULL). */
void bft_op_linear_fwd(float *out, const float *inp, const float *w, const float *bias,
                       int N, int IC, int OC);

/* Linear backward for out = inp · w^T + b, given dout (N, OC):
 * dinp (N, IC) = dout · w, dw (OC, IC) = dout^T · inp, dbias (OC) = column sums
 * of dout; "=" becomes "+=" for dinp when accum_dinp, for dw and dbias when
 * accum_dw. Any of dinp/dw/dbias may be NULL. */
void bft_op_linear_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                       const float *inp, const float *w, int N, int IC, int OC, int accum_dinp,
                       int accum_dw);

/* out (C) = column sums of x (N, C) (+= when accum). */
void bft_op_colsum(float *out, const float *x, int N, int C, int accum);

/* In place pre (N, OC) += bias (OC); then out (N, OC) = gelu(pre) (erf GELU) when out. */
void bft_op_bias_gelu_fwd(float *pre, float *out, const float *bias, int N, int OC);

/* out (n) = gelu(inp) = inp * Phi(inp) (erf form). */
void bft_op_gelu_fwd(float *out, const float *inp, size_t n);

/* dinp (n) = dout * gelu'(inp); dinp may alias dout. */
void bft_op_gelu_bwd(float *dinp, const float *dout, const float *inp, size_t n);

/* Backward helper: out (n) = gelu(x) and, in place, x = gelu'(x) (one erf/exp per
 * element for both); then bft_op_mul finishes the GELU backward. */
void bft_op_gelu_recompute(float *out, float *x, size_t n);

/* In place x (n) *= y (n). */
void bft_op_mul(float *x, const float *y, size_t n);

/* Embeddings + LayerNorm + dropout (BertEmbeddings, token type 0):
 * x (B,T,C) = wte[ids] + wtt[0] + wpe[t]; out (B,T,C) = dropout(LN(x)·w + b);
 * mean, rstd (B,T) saved for the backward. */
void bft_op_embed_ln_fwd(float *out, float *x, float *mean, float *rstd, const int32_t *ids,
                         const float *wte, const float *wpe, const float *wtt,
                         const float *w, const float *b, int B, int T, int C, float eps,
                         const bft_dropout *d);

/* Backward of bft_op_embed_ln_fwd given dout (B,T,C) (overwritten with scratch values):
 * dwte[ids] += (rows whose id is pad_id skipped, like nn.Embedding(padding_idx)),
 * dwpe[t] +=, dwtt[0] += (the tables accumulate: zero them first), dw, db (C) =.
 * dx (B,T,C) is scratch. */
void bft_op_embed_ln_bwd(float *dwte, float *dwpe, float *dwtt, float *dw, float *db,
                         float *dout, float *dx, const float *x, const float *mean,
                         const float *rstd, const int32_t *ids, const float *w, int B, int T,
                         int C, int pad_id, const bft_dropout *d);

/* Residual + LayerNorm (BertSelfOutput / BertOutput): x (N,C) = dropout(proj + bias) + res;
 * out (N,C) = LN(x)·w + b. proj may alias x. mean, rstd (N) saved. */
void bft_op_residual_ln_fwd(float *out, float *x, float *mean, float *rstd, const float *proj,
                            const float *bias, const float *res, const float *w, const float *b,
                            int N, int C, float eps, const bft_dropout *d);

/* Plain LayerNorm: out (N,C) = LN(x)·w + b, mean/rstd (N) saved when not NULL. */
void bft_op_layernorm_fwd(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int N, int C, float eps);

/* LayerNorm backward: dx (N,C) = d LN / d x given dout (dx may alias dout);
 * dw, db (C) = (+= when accum_w; either may be NULL). */
void bft_op_layernorm_bwd(float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *mean, const float *rstd, const float *w, int N, int C,
                          int accum_w);

/* Backward of the dropout(proj + bias) part of bft_op_residual_ln_fwd given dx (N,C),
 * the gradient at x: dproj (N,C) = dropout mask · dx (dproj may alias dx),
 * dbias (C) = column sums of dproj. */
void bft_op_dropout_bias_bwd(float *dproj, float *dbias, const float *dx, int N, int C,
                             const bft_dropout *d);

/* Self-attention core (BertSelfAttention after the Q/K/V projections):
 * qkv (B,T,3C) holds Q | K | V, head h at columns h*C/NH of each; for each b, h:
 * P = softmax(Q K^T / sqrt(C/NH) + mask) where keys t >= lens[b] are padding
 * (HF's additive finfo.min mask, i.e. weight exactly 0); att (B,NH,T,T) = P
 * (saved for the backward; may be NULL when not training);
 * ctx (B,T,C) = dropout(P) · V, heads concatenated. */
void bft_op_attention_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens,
                          int B, int T, int C, int NH, const bft_dropout *d);

/* Backward of bft_op_attention_fwd: dqkv (B,T,3C) = gradient w.r.t. qkv given dctx (B,T,C). */
void bft_op_attention_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                          const int32_t *lens, int B, int T, int C, int NH, const bft_dropout *d);

/* Self-attention of the first query row ([CLS]) of every sequence only (the last
 * layer of a classifier needs no other row): for each b, h,
 * p = softmax(q_b0 K_b^T / sqrt(C/NH) + mask) over keys < lens[b], att (B,NH,T) = p
 * (may be NULL when not training), ctx (B,C) row b = dropout(p) · V_b. Dropout
 * element j of (b, h) is element (b, h, 0, j) of bft_op_attention_fwd. */
void bft_op_attention_cls_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens,
                              int B, int T, int C, int NH, const bft_dropout *d);

/* Backward of bft_op_attention_cls_fwd given dctx (B,C): dqkv (B,T,3C), every element
 * written (Q rows t > 0 and K/V rows t >= lens[b] are 0). */
void bft_op_attention_cls_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                              const int32_t *lens, int B, int T, int C, int NH,
                              const bft_dropout *d);

/* Rows gather: out (n, C) = inp rows (rows[r] * C ...). */
void bft_op_gather_rows(float *out, const float *inp, const int64_t *rows, int n, int C);

/* Rows scatter-add: dinp rows[r] += dout (n, C) row r (rows distinct). */
void bft_op_scatter_add_rows(float *dinp, const float *dout, const int64_t *rows, int n, int C);

/* In place x (N,C) = tanh(x + bias). */
void bft_op_bias_tanh_fwd(float *x, const float *bias, int N, int C);

/* dinp (n) = dout * (1 - y^2) for y = tanh(.) (dinp may alias dout). */
void bft_op_tanh_bwd(float *dinp, const float *dout, const float *y, size_t n);

/* Dropout: out (n) = mask · inp / (1 - p) (out may alias inp). */
void bft_op_dropout_fwd(float *out, const float *inp, size_t n, const bft_dropout *d);

/* Dropout backward: dinp (n) = mask · dout / (1 - p) (may alias). */
void bft_op_dropout_bwd(float *dinp, const float *dout, size_t n, const bft_dropout *d);

/* Softmax + cross-entropy over rows: probs (N,K) = softmax(logits) (may be NULL
 * when only losses/grad are needed, then dlogits must be given or scratch used);
 * for labels[r] >= 0: losses[r] = -log softmax[labels[r]] (losses may be NULL),
 * dlogits (N,K) = (softmax - onehot) · dscale · row_scale[r] (row_scale (N) may
 * be NULL: 1; weighted cross-entropy passes each row's share of the batch's
 * loss); rows with labels[r] < 0 get loss 0 and zero gradient. labels may be
 * NULL (probs only). */
void bft_op_softmax_xent(float *probs, float *losses, float *dlogits, const float *logits,
                         const int32_t *labels, const float *row_scale, int N, int K,
                         float dscale);

/* Sigmoid + binary cross-entropy (multi-label classification, HF's
 * BCEWithLogitsLoss with mean reduction): probs (N,K) = sigmoid(logits) (may be
 * NULL); with targets (N,K) multi-hot in {0,1}: losses[r] = (1/K) sum_k
 * [max(x,0) - x y + log(1 + exp(-|x|))] (may be NULL) and dlogits (N,K) =
 * (sigmoid(x) - y) · dscale / K (may be NULL). targets NULL: probs only. */
void bft_op_sigmoid_bce(float *probs, float *losses, float *dlogits, const float *logits,
                        const float *targets, int N, int K, float dscale);

/* AdamW step as torch.optim.AdamW on n parameters (t = 1-based step):
 * g' = g·gscale; p *= 1 - lr·wd; m = lerp(m, g', 1-b1); v = b2·v + (1-b2)·g'^2;
 * p -= lr/(1-b1^t) · m / (sqrt(v)/sqrt(1-b2^t) + eps).
 * The hyper-parameters are doubles, as Python floats are in torch: every
 * scalar (1 - lr·wd, 1 - b1, 1 - b2, lr/(1-b1^t), sqrt(1-b2^t)) is computed in
 * double and rounded once to float, like torch's scalar arguments.
 * zero_grad: also set g to 0 (saves a separate pass before the next backward). */
void bft_op_adamw(float *p, float *g, float *m, float *v, size_t n, double lr, double b1,
                  double b2, double eps, double wd, float gscale, int64_t t, int zero_grad);

/* Sum of squares of x (n), accumulated in double in a fixed order. */
double bft_op_sumsq(const float *x, size_t n);

/* x (n) = 0. */
void bft_op_zero(float *x, size_t n);

/* rows (n) = r * stride for r in [0, n) (e.g. the [CLS] row of each sequence). */
void bft_op_strided_rows(int64_t *rows, int n, int64_t stride);

/* Mean of x (n), summed in double in index order; returned to the host. */
float bft_op_mean(const float *x, int n);

/* Erf GELU of one value and its derivative (reference for tests). */
float bft_gelu_ref(float x);

#endif
