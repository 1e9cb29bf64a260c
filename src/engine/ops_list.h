/*
 * ops_list.h — every op of the engine's compute interface, declared once.
 *
 * An X-macro list: each entry is
 *     BFT_OP(return type, name, (parameters), (arguments))
 * and whoever includes this file defines BFT_OP first to generate what it
 * needs from the list (and #undefs it after), so nothing repeats an op by
 * hand:
 *   ops.h                the prototypes bft_op_<name> that bert.c and train.c call
 *   backend.h            one function pointer per op in struct bft_backend
 *   backend.c            the dispatchers bft_op_<name> -> current backend
 *   ops_cpu.h            the CPU implementations' prototypes bft_cpu_op_<name>
 *   backend_cpu.c        the CPU backend table
 *   cuda/ops_cuda.h      the CUDA implementations' prototypes bft_cuda_op_<name>
 *   cuda/ops_cuda.cu     the CUDA backend table
 * A new op is one entry here plus its implementation in ops_cpu.c (or
 * backend_cpu.c) and cuda/ops_cuda.cu; the order of the entries is the
 * layout of struct bft_backend, so adding, removing or reordering one bumps
 * BFT_CUDA_ABI (cuda/ops_cuda.h). Return types are void, float or double
 * (backend.c's dispatchers know these three).
 *
 * Pointers are to row-major fp32 tensors in the current backend's memory;
 * shapes use N rows (usually B*T tokens), C channels, OC/IC output/input
 * features, K classes, B batch, T tokens, NH heads. bft_dropout is ops.h's.
 * No include guard: included once per expansion.
 */

/* Row-major GEMM: C (M,N) = alpha * op(A) (M,K) · op(B) (K,N) + beta * C,
 * op(X) = X^T when tX. Large products are split over the pool. */
BFT_OP(void, gemm, (int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
        const float *B, int ldb, float beta, float *C, int ldc),
       (tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))

/* Linear forward: out (N, OC) = inp (N, IC) · w (OC, IC)^T + bias (OC) (bias may be NULL). */
BFT_OP(void, linear_fwd, (float *out, const float *inp, const float *w, const float *bias, int N,
        int IC, int OC),
       (out, inp, w, bias, N, IC, OC))

/* Linear backward for out = inp · w^T + b, given dout (N, OC):
 * dinp (N, IC) = dout · w, dw (OC, IC) = dout^T · inp, dbias (OC) = column sums
 * of dout; "=" becomes "+=" for dinp when accum_dinp, for dw and dbias when
 * accum_dw. Any of dinp/dw/dbias may be NULL. */
BFT_OP(void, linear_bwd, (float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
        const float *w, int N, int IC, int OC, int accum_dinp, int accum_dw),
       (dinp, dw, dbias, dout, inp, w, N, IC, OC, accum_dinp, accum_dw))

/* out (C) = column sums of x (N, C) (+= when accum). */
BFT_OP(void, colsum, (float *out, const float *x, int N, int C, int accum),
       (out, x, N, C, accum))

/* In place pre (N, OC) += bias (OC); then out (N, OC) = gelu(pre) (erf GELU) when out. */
BFT_OP(void, bias_gelu_fwd, (float *pre, float *out, const float *bias, int N, int OC),
       (pre, out, bias, N, OC))

/* out (n) = gelu(inp) = inp * Phi(inp) (erf form). */
BFT_OP(void, gelu_fwd, (float *out, const float *inp, size_t n),
       (out, inp, n))

/* dinp (n) = dout * gelu'(inp); dinp may alias dout. */
BFT_OP(void, gelu_bwd, (float *dinp, const float *dout, const float *inp, size_t n),
       (dinp, dout, inp, n))

/* Backward helper: out (n) = gelu(x) and, in place, x = gelu'(x) (one erf/exp per
 * element for both); then bft_op_mul finishes the GELU backward. */
BFT_OP(void, gelu_recompute, (float *out, float *x, size_t n),
       (out, x, n))

/* In place x (n) *= y (n). */
BFT_OP(void, mul, (float *x, const float *y, size_t n),
       (x, y, n))

/* Embeddings + LayerNorm + dropout (BertEmbeddings, token type 0):
 * x (B,T,C) = wte[ids] + wtt[0] + wpe[t]; out (B,T,C) = dropout(LN(x)·w + b);
 * mean, rstd (B,T) saved for the backward. */
BFT_OP(void, embed_ln_fwd, (float *out, float *x, float *mean, float *rstd, const int32_t *ids,
        const float *wte, const float *wpe, const float *wtt, const float *w, const float *b, int B,
        int T, int C, float eps, const bft_dropout *d),
       (out, x, mean, rstd, ids, wte, wpe, wtt, w, b, B, T, C, eps, d))

/* Backward of bft_op_embed_ln_fwd given dout (B,T,C) (overwritten with scratch values):
 * dwte[ids] += (rows whose id is pad_id skipped, like nn.Embedding(padding_idx)),
 * dwpe[t] +=, dwtt[0] += (the tables accumulate: zero them first), dw, db (C) =.
 * dx (B,T,C) is scratch. */
BFT_OP(void, embed_ln_bwd, (float *dwte, float *dwpe, float *dwtt, float *dw, float *db,
        float *dout, float *dx, const float *x, const float *mean, const float *rstd,
        const int32_t *ids, const float *w, int B, int T, int C, int pad_id, const bft_dropout *d),
       (dwte, dwpe, dwtt, dw, db, dout, dx, x, mean, rstd, ids, w, B, T, C, pad_id, d))

/* Residual + LayerNorm (BertSelfOutput / BertOutput): x (N,C) = dropout(proj + bias) + res;
 * out (N,C) = LN(x)·w + b. proj may alias x. mean, rstd (N) saved. */
BFT_OP(void, residual_ln_fwd, (float *out, float *x, float *mean, float *rstd, const float *proj,
        const float *bias, const float *res, const float *w, const float *b, int N, int C,
        float eps, const bft_dropout *d),
       (out, x, mean, rstd, proj, bias, res, w, b, N, C, eps, d))

/* Plain LayerNorm: out (N,C) = LN(x)·w + b, mean/rstd (N) saved when not NULL. */
BFT_OP(void, layernorm_fwd, (float *out, float *mean, float *rstd, const float *x, const float *w,
        const float *b, int N, int C, float eps),
       (out, mean, rstd, x, w, b, N, C, eps))

/* LayerNorm backward: dx (N,C) = d LN / d x given dout (dx may alias dout);
 * dw, db (C) = (+= when accum_w; either may be NULL). */
BFT_OP(void, layernorm_bwd, (float *dx, float *dw, float *db, const float *dout, const float *x,
        const float *mean, const float *rstd, const float *w, int N, int C, int accum_w),
       (dx, dw, db, dout, x, mean, rstd, w, N, C, accum_w))

/* Backward of the dropout(proj + bias) part of bft_op_residual_ln_fwd given dx (N,C),
 * the gradient at x: dproj (N,C) = dropout mask · dx (dproj may alias dx),
 * dbias (C) = column sums of dproj. */
BFT_OP(void, dropout_bias_bwd, (float *dproj, float *dbias, const float *dx, int N, int C,
        const bft_dropout *d),
       (dproj, dbias, dx, N, C, d))

/* Self-attention core (BertSelfAttention after the Q/K/V projections):
 * qkv (B,T,3C) holds Q | K | V, head h at columns h*C/NH of each; for each b, h:
 * P = softmax(Q K^T / sqrt(C/NH) + mask) where keys t >= lens[b] are padding
 * (HF's additive finfo.min mask, i.e. weight exactly 0); att (B,NH,T,T) = P
 * (saved for the backward; may be NULL when not training);
 * ctx (B,T,C) = dropout(P) · V, heads concatenated. */
BFT_OP(void, attention_fwd, (float *ctx, float *att, const float *qkv, const int32_t *lens, int B,
        int T, int C, int NH, const bft_dropout *d),
       (ctx, att, qkv, lens, B, T, C, NH, d))

/* Backward of bft_op_attention_fwd: dqkv (B,T,3C) = gradient w.r.t. qkv given dctx (B,T,C). */
BFT_OP(void, attention_bwd, (float *dqkv, const float *dctx, const float *att, const float *qkv,
        const int32_t *lens, int B, int T, int C, int NH, const bft_dropout *d),
       (dqkv, dctx, att, qkv, lens, B, T, C, NH, d))

/* Self-attention of the first query row ([CLS]) of every sequence only (the last
 * layer of a classifier needs no other row): for each b, h,
 * p = softmax(q_b0 K_b^T / sqrt(C/NH) + mask) over keys < lens[b], att (B,NH,T) = p
 * (may be NULL when not training), ctx (B,C) row b = dropout(p) · V_b. Dropout
 * element j of (b, h) is element (b, h, 0, j) of bft_op_attention_fwd. */
BFT_OP(void, attention_cls_fwd, (float *ctx, float *att, const float *qkv, const int32_t *lens,
        int B, int T, int C, int NH, const bft_dropout *d),
       (ctx, att, qkv, lens, B, T, C, NH, d))

/* Backward of bft_op_attention_cls_fwd given dctx (B,C): dqkv (B,T,3C), every element
 * written (Q rows t > 0 and K/V rows t >= lens[b] are 0). */
BFT_OP(void, attention_cls_bwd, (float *dqkv, const float *dctx, const float *att, const float *qkv,
        const int32_t *lens, int B, int T, int C, int NH, const bft_dropout *d),
       (dqkv, dctx, att, qkv, lens, B, T, C, NH, d))

/* Rows gather: out (n, C) = inp rows (rows[r] * C ...). */
BFT_OP(void, gather_rows, (float *out, const float *inp, const int64_t *rows, int n, int C),
       (out, inp, rows, n, C))

/* Rows scatter-add: dinp rows[r] += dout (n, C) row r (rows distinct). */
BFT_OP(void, scatter_add_rows, (float *dinp, const float *dout, const int64_t *rows, int n, int C),
       (dinp, dout, rows, n, C))

/* In place x (N,C) = tanh(x + bias). */
BFT_OP(void, bias_tanh_fwd, (float *x, const float *bias, int N, int C),
       (x, bias, N, C))

/* dinp (n) = dout * (1 - y^2) for y = tanh(.) (dinp may alias dout). */
BFT_OP(void, tanh_bwd, (float *dinp, const float *dout, const float *y, size_t n),
       (dinp, dout, y, n))

/* Dropout: out (n) = mask · inp / (1 - p) (out may alias inp). */
BFT_OP(void, dropout_fwd, (float *out, const float *inp, size_t n, const bft_dropout *d),
       (out, inp, n, d))

/* Dropout backward: dinp (n) = mask · dout / (1 - p) (may alias). */
BFT_OP(void, dropout_bwd, (float *dinp, const float *dout, size_t n, const bft_dropout *d),
       (dinp, dout, n, d))

/* Softmax + cross-entropy over rows: probs (N,K) = softmax(logits) (may be NULL
 * when only losses/grad are needed, then dlogits must be given or scratch used);
 * for labels[r] >= 0: losses[r] = -log softmax[labels[r]] (losses may be NULL),
 * dlogits (N,K) = (softmax - onehot) · dscale; rows with labels[r] < 0 get loss 0
 * and zero gradient. labels may be NULL (probs only). row_scale (N) or NULL:
 * row r's loss and gradient are multiplied by row_scale[r] (class weights). */
BFT_OP(void, softmax_xent, (float *probs, float *losses, float *dlogits, const float *logits,
        const int32_t *labels, const float *row_scale, int N, int K, float dscale),
       (probs, losses, dlogits, logits, labels, row_scale, N, K, dscale))

/* Sigmoid + binary cross-entropy (multi-label classification, HF's
 * BCEWithLogitsLoss with mean reduction): probs (N,K) = sigmoid(logits) (may be
 * NULL); with targets (N,K) multi-hot in {0,1}: losses[r] = (1/K) sum_k
 * [max(x,0) - x y + log(1 + exp(-|x|))] (may be NULL) and dlogits (N,K) =
 * (sigmoid(x) - y) · dscale / K (may be NULL). targets NULL: probs only. */
BFT_OP(void, sigmoid_bce, (float *probs, float *losses, float *dlogits, const float *logits,
        const float *targets, int N, int K, float dscale),
       (probs, losses, dlogits, logits, targets, N, K, dscale))

/* AdamW step as torch.optim.AdamW on n parameters (t = 1-based step):
 * g' = g·gscale; p *= 1 - lr·wd; m = b1·m + (1-b1)·g'; v = b2·v + (1-b2)·g'^2;
 * p -= lr/(1-b1^t) · m / (sqrt(v)/sqrt(1-b2^t) + eps).
 * zero_grad: also set g to 0 (saves a separate pass before the next backward). */
BFT_OP(void, adamw, (float *p, float *g, float *m, float *v, size_t n, double lr, double b1,
        double b2, double eps, double wd, float gscale, int64_t t, int zero_grad),
       (p, g, m, v, n, lr, b1, b2, eps, wd, gscale, t, zero_grad))

/* Sum of squares of x (n), accumulated in double in a fixed order. */
BFT_OP(double, sumsq, (const float *x, size_t n),
       (x, n))

/* x (n) = 0. */
BFT_OP(void, zero, (float *x, size_t n),
       (x, n))

/* rows (n) = r * stride for r in [0, n) (e.g. the [CLS] row of each sequence). */
BFT_OP(void, strided_rows, (int64_t *rows, int n, int64_t stride),
       (rows, n, stride))

/* Mean of x (n), summed in double in index order; returned to the host. */
BFT_OP(float, mean, (const float *x, int n),
       (x, n))
