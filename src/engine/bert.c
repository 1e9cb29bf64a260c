/*
 * bert.c — BertForSequenceClassification and the BertForMaskedLM head,
 * forward and backward in fp32, exactly as Hugging Face's modeling_bert.py
 * (post-LN layers, erf GELU, additive padding mask, dropout where HF has it).
 * Each block is a forward/backward pair over the ops of ops.h with its shapes.
 */
#include "bert.h"

#include "backend.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- activations */

#define ALIGN_FLOATS 16

static size_t up(size_t n)
{
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* Lay the buffers out over base (or just count when base is NULL). */
static size_t acts_layout(bert_acts *a, const bft_config *cfg, int K, int Bmax, int Tmax,
                          int train, float *base)
{
    size_t C = (size_t)cfg->hidden_size, I = (size_t)cfg->intermediate_size;
    size_t NH = (size_t)cfg->num_attention_heads, L = (size_t)cfg->num_hidden_layers;
    size_t B = (size_t)Bmax, T = (size_t)Tmax, S = train ? L : 1;
    size_t BT = B * T, BTC = BT * C, BTI = BT * I, ATT = B * NH * T * T;
    size_t at = 0;
#define TAKE(field, n)                         \
    do {                                       \
        if (base)                              \
            a->field = base + at;              \
        at += up(n);                           \
    } while (0)
    TAKE(emb_x, BTC);
    TAKE(emb_mean, BT);
    TAKE(emb_rstd, BT);
    TAKE(h0, BTC);
    TAKE(qkv, S * 3 * BTC);
    if (train)
        TAKE(att, S * ATT);
    TAKE(ctx, S * BTC);
    TAKE(res1, S * BTC);
    TAKE(ln1, S * BTC);
    TAKE(ln1_mean, S * BT);
    TAKE(ln1_rstd, S * BT);
    TAKE(fch, S * BTI);
    TAKE(res2, S * BTC);
    TAKE(ln2, S * BTC);
    TAKE(ln2_mean, S * BT);
    TAKE(ln2_rstd, S * BT);
    TAKE(gelu, BTI);
    TAKE(cls, B * C);
    TAKE(pooled, B * C);
    TAKE(pooled_d, B * C);
    TAKE(logits, B * (size_t)(K > 0 ? K : 1));
    TAKE(probs, B * (size_t)(K > 0 ? K : 1));
    TAKE(losses, B);
    if (train) {
        TAKE(dA, BTC);
        TAKE(dB, BTC);
        TAKE(dC, BTC);
        TAKE(dqkv, 3 * BTC);
        TAKE(dI, BTI);
        TAKE(dlogits, B * (size_t)(K > 0 ? K : 1));
        TAKE(dpool, B * C);
    }
    if (base)
        a->rows = (int64_t *)(void *)(base + at);
    at += up(2 * B);
    TAKE(hcls, B * C);
    if (train)
        TAKE(dhcls, B * C);
#undef TAKE
    return at;
}

size_t bert_acts_bytes(const bft_config *cfg, int K, int Bmax, int Tmax, int train)
{
    bert_acts a;
    return acts_layout(&a, cfg, K, Bmax, Tmax, train, NULL) * sizeof(float);
}

int bert_acts_alloc(bert_acts *a, const bft_config *cfg, int K, int Bmax, int Tmax, int train)
{
    memset(a, 0, sizeof *a);
    size_t n = acts_layout(a, cfg, K, Bmax, Tmax, train, NULL);
    /* no zeroing needed: every buffer is written before it is read */
    a->mem = bft_dev_alloc(n * sizeof(float)); /* on the current backend (backend.h) */
    if (!a->mem)
        return -1;
    acts_layout(a, cfg, K, Bmax, Tmax, train, a->mem);
    a->nfloats = n;
    a->Bmax = Bmax;
    a->Tmax = Tmax;
    a->train = train;
    a->slots = train ? cfg->num_hidden_layers : 1;
    a->K = K;
    return 0;
}

void bert_acts_free(bert_acts *a)
{
    if (a) {
        bft_dev_free(a->mem);
        memset(a, 0, sizeof *a);
    }
}

/* ---------------------------------------------------------------- dropout sites */

enum { SITE_EMB = 1, SITE_CLS = 2, SITE_LAYER0 = 100 };

static bft_dropout site_drop(const bert_dropout_cfg *dc, int train, float p, uint64_t site)
{
    bft_dropout d = {0.0f, 0};
    if (train && dc && p > 0.0f) {
        d.p = p;
        d.seed = bft_dropout_seed(dc->seed, dc->step, site);
    }
    return d;
}

/* Pointers of layer l's activations (slot s). */
typedef struct {
    float *qkv, *att, *ctx, *res1, *ln1, *ln1_mean, *ln1_rstd, *fch, *res2, *ln2, *ln2_mean,
        *ln2_rstd;
    const float *in;
} layer_acts;

static layer_acts layer_slot(const bft_config *cfg, const bert_acts *a, int l)
{
    size_t C = (size_t)cfg->hidden_size, I = (size_t)cfg->intermediate_size;
    size_t NH = (size_t)cfg->num_attention_heads;
    size_t BT = (size_t)a->Bmax * a->Tmax, BTC = BT * C;
    size_t s = a->train ? (size_t)l : 0;
    layer_acts la;
    la.qkv = a->qkv + s * 3 * BTC;
    la.att = a->att ? a->att + s * (size_t)a->Bmax * NH * a->Tmax * a->Tmax : NULL;
    la.ctx = a->ctx + s * BTC;
    la.res1 = a->res1 + s * BTC;
    la.ln1 = a->ln1 + s * BTC;
    la.ln1_mean = a->ln1_mean + s * BT;
    la.ln1_rstd = a->ln1_rstd + s * BT;
    la.fch = a->fch + s * BT * I;
    la.res2 = a->res2 + s * BTC;
    la.ln2 = a->ln2 + s * BTC;
    la.ln2_mean = a->ln2_mean + s * BT;
    la.ln2_rstd = a->ln2_rstd + s * BT;
    if (l == 0)
        la.in = a->h0;
    else
        la.in = a->ln2 + (a->train ? (size_t)(l - 1) : 0) * BTC;
    return la;
}

/* ---------------------------------------------------------------- encoder */

const float *bert_encoder_forward(const bft_model *m, bert_acts *a, const bert_batch *bt,
                                  const bert_dropout_cfg *dc)
{
    const bft_config *cfg = &m->cfg;
    const bft_params *p = &m->p;
    int B = bt->B, T = bt->T, N = B * T;
    int C = cfg->hidden_size, I = cfg->intermediate_size, NH = cfg->num_attention_heads;
    float eps = cfg->layer_norm_eps;
    size_t CC = (size_t)C * C;
    int train = a->train && dc;
    float ph = dc ? dc->hidden : 0.0f, pa = dc ? dc->attn : 0.0f;

    /* embeddings: x (B,T,C) = wte[ids] + wtt[0] + wpe[t]; h0 = dropout(LN(x)) */
    bft_dropout de = site_drop(dc, train, ph, SITE_EMB);
    bft_op_embed_ln_fwd(a->h0, a->emb_x, a->emb_mean, a->emb_rstd, bt->ids, p->wte, p->wpe,
                        p->wtt, p->emb_lnw, p->emb_lnb, B, T, C, eps, &de);

    layer_acts la = {0};
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        if (l > 0 && a->poll && (a->stopped || a->poll(a->poll_ctx))) {
            a->stopped = 1;
            return la.ln2;
        }
        la = layer_slot(cfg, a, l);
        bft_dropout d_att = site_drop(dc, train, pa, SITE_LAYER0 + 3 * (uint64_t)l);
        bft_dropout d_h1 = site_drop(dc, train, ph, SITE_LAYER0 + 3 * (uint64_t)l + 1);
        bft_dropout d_h2 = site_drop(dc, train, ph, SITE_LAYER0 + 3 * (uint64_t)l + 2);
        /* qkv (B,T,3C) = in (B,T,C) · qkvw^T + qkvb */
        bft_op_linear_fwd(la.qkv, la.in, p->qkvw + (size_t)l * 3 * CC, p->qkvb + (size_t)l * 3 * C,
                          N, C, 3 * C);
        if (a->cls_only && l == cfg->num_hidden_layers - 1) {
            /* last layer of a classifier: only the [CLS] rows (B,...) from here on */
            bft_op_strided_rows(a->rows, B, T);
            bft_op_gather_rows(a->hcls, la.in, a->rows, B, C);
            bft_op_attention_cls_fwd(la.ctx, train ? la.att : NULL, la.qkv, bt->lens, B, T, C, NH,
                                     &d_att);
            bft_op_linear_fwd(la.res1, la.ctx, p->attprojw + (size_t)l * CC, NULL, B, C, C);
            bft_op_residual_ln_fwd(la.ln1, la.res1, la.ln1_mean, la.ln1_rstd, la.res1,
                                   p->attprojb + (size_t)l * C, a->hcls, p->ln1w + (size_t)l * C,
                                   p->ln1b + (size_t)l * C, B, C, eps, &d_h1);
            bft_op_linear_fwd(la.fch, la.ln1, p->fcw + (size_t)l * I * C, NULL, B, C, I);
            bft_op_bias_gelu_fwd(la.fch, a->gelu, p->fcb + (size_t)l * I, B, I);
            bft_op_linear_fwd(la.res2, a->gelu, p->fcprojw + (size_t)l * C * I, NULL, B, I, C);
            bft_op_residual_ln_fwd(la.ln2, la.res2, la.ln2_mean, la.ln2_rstd, la.res2,
                                   p->fcprojb + (size_t)l * C, la.ln1, p->ln2w + (size_t)l * C,
                                   p->ln2b + (size_t)l * C, B, C, eps, &d_h2);
            break;
        }
        /* ctx (B,T,C) = dropout(softmax(Q K^T / sqrt(hs) + mask)) V, att (B,NH,T,T) */
        bft_op_attention_fwd(la.ctx, train ? la.att : NULL, la.qkv, bt->lens, B, T, C, NH, &d_att);
        /* res1 = dropout(ctx · attprojw^T + attprojb) + in; ln1 = LN(res1) */
        bft_op_linear_fwd(la.res1, la.ctx, p->attprojw + (size_t)l * CC, NULL, N, C, C);
        bft_op_residual_ln_fwd(la.ln1, la.res1, la.ln1_mean, la.ln1_rstd, la.res1,
                               p->attprojb + (size_t)l * C, la.in, p->ln1w + (size_t)l * C,
                               p->ln1b + (size_t)l * C, N, C, eps, &d_h1);
        /* fch (B,T,I) = ln1 · fcw^T + fcb; gelu = GELU(fch) */
        bft_op_linear_fwd(la.fch, la.ln1, p->fcw + (size_t)l * I * C, NULL, N, C, I);
        bft_op_bias_gelu_fwd(la.fch, a->gelu, p->fcb + (size_t)l * I, N, I);
        /* res2 = dropout(gelu · fcprojw^T + fcprojb) + ln1; ln2 = LN(res2) */
        bft_op_linear_fwd(la.res2, a->gelu, p->fcprojw + (size_t)l * C * I, NULL, N, I, C);
        bft_op_residual_ln_fwd(la.ln2, la.res2, la.ln2_mean, la.ln2_rstd, la.res2,
                               p->fcprojb + (size_t)l * C, la.ln1, p->ln2w + (size_t)l * C,
                               p->ln2b + (size_t)l * C, N, C, eps, &d_h2);
    }
    return la.ln2;
}

void bert_encoder_backward(const bft_model *m, const bft_params *g, bert_acts *a,
                           const bert_batch *bt, const bert_dropout_cfg *dc)
{
    const bft_config *cfg = &m->cfg;
    const bft_params *p = &m->p;
    int B = bt->B, T = bt->T, N = B * T;
    int C = cfg->hidden_size, I = cfg->intermediate_size, NH = cfg->num_attention_heads;
    size_t CC = (size_t)C * C;
    float ph = dc ? dc->hidden : 0.0f, pa = dc ? dc->attn : 0.0f;

    int top = cfg->num_hidden_layers - 1;
    if (a->cls_only) {
        /* the [CLS]-only last layer: a->dA holds d out (B,C) */
        if (a->poll && (a->stopped || a->poll(a->poll_ctx))) {
            a->stopped = 1;
            return;
        }
        int l = top--;
        layer_acts la = layer_slot(cfg, a, l);
        bft_dropout d_att = site_drop(dc, 1, pa, SITE_LAYER0 + 3 * (uint64_t)l);
        bft_dropout d_h1 = site_drop(dc, 1, ph, SITE_LAYER0 + 3 * (uint64_t)l + 1);
        bft_dropout d_h2 = site_drop(dc, 1, ph, SITE_LAYER0 + 3 * (uint64_t)l + 2);
        bft_op_layernorm_bwd(a->dB, g->ln2w + (size_t)l * C, g->ln2b + (size_t)l * C, a->dA,
                             la.res2, la.ln2_mean, la.ln2_rstd, p->ln2w + (size_t)l * C, B, C, 0);
        bft_op_dropout_bias_bwd(a->dA, g->fcprojb + (size_t)l * C, a->dB, B, C, &d_h2);
        bft_op_gelu_recompute(a->gelu, la.fch, (size_t)B * I);
        bft_op_linear_bwd(a->dI, g->fcprojw + (size_t)l * C * I, NULL, a->dA, a->gelu,
                          p->fcprojw + (size_t)l * C * I, B, I, C, 0, 0);
        bft_op_mul(a->dI, la.fch, (size_t)B * I);
        bft_op_linear_bwd(a->dB, g->fcw + (size_t)l * I * C, g->fcb + (size_t)l * I, a->dI, la.ln1,
                          p->fcw + (size_t)l * I * C, B, C, I, 1, 0);
        /* dhcls = d res1 = d (input [CLS] rows) through the residual */
        bft_op_layernorm_bwd(a->dhcls, g->ln1w + (size_t)l * C, g->ln1b + (size_t)l * C, a->dB,
                             la.res1, la.ln1_mean, la.ln1_rstd, p->ln1w + (size_t)l * C, B, C, 0);
        bft_op_dropout_bias_bwd(a->dB, g->attprojb + (size_t)l * C, a->dhcls, B, C, &d_h1);
        bft_op_linear_bwd(a->dC, g->attprojw + (size_t)l * CC, NULL, a->dB, la.ctx,
                          p->attprojw + (size_t)l * CC, B, C, C, 0, 0);
        /* dqkv (B,T,3C): Q only at the [CLS] rows, K and V everywhere */
        bft_op_attention_cls_bwd(a->dqkv, a->dC, la.att, la.qkv, bt->lens, B, T, C, NH, &d_att);
        /* dA (B,T,C) = d in through Q, K, V, plus the residual at the [CLS] rows */
        bft_op_linear_bwd(a->dA, g->qkvw + (size_t)l * 3 * CC, g->qkvb + (size_t)l * 3 * C, a->dqkv,
                          la.in, p->qkvw + (size_t)l * 3 * CC, N, C, 3 * C, 0, 0);
        bft_op_scatter_add_rows(a->dA, a->dhcls, a->rows, B, C);
    }
    /* a->dA (B,T,C) holds d loss / d (layer output) throughout */
    for (int l = top; l >= 0; l--) {
        if (a->poll && (a->stopped || a->poll(a->poll_ctx))) {
            a->stopped = 1;
            return;
        }
        layer_acts la = layer_slot(cfg, a, l);
        bft_dropout d_att = site_drop(dc, 1, pa, SITE_LAYER0 + 3 * (uint64_t)l);
        bft_dropout d_h1 = site_drop(dc, 1, ph, SITE_LAYER0 + 3 * (uint64_t)l + 1);
        bft_dropout d_h2 = site_drop(dc, 1, ph, SITE_LAYER0 + 3 * (uint64_t)l + 2);
        /* LN2: dB = d res2 (also d ln1 through the residual) */
        bft_op_layernorm_bwd(a->dB, g->ln2w + (size_t)l * C, g->ln2b + (size_t)l * C, a->dA,
                             la.res2, la.ln2_mean, la.ln2_rstd, p->ln2w + (size_t)l * C, N, C, 0);
        /* dA = d (gelu · fcprojw^T) through the dropout; fcprojb grad */
        bft_op_dropout_bias_bwd(a->dA, g->fcprojb + (size_t)l * C, a->dB, N, C, &d_h2);
        /* recompute gelu (B,T,I); fch becomes gelu'(fch) (no longer needed itself) */
        bft_op_gelu_recompute(a->gelu, la.fch, (size_t)N * I);
        /* dI = d gelu; fcprojw grad */
        bft_op_linear_bwd(a->dI, g->fcprojw + (size_t)l * C * I, NULL, a->dA, a->gelu,
                          p->fcprojw + (size_t)l * C * I, N, I, C, 0, 0);
        /* dI = d fch = d gelu * gelu'(fch) */
        bft_op_mul(a->dI, la.fch, (size_t)N * I);
        /* dB += d ln1 through the intermediate dense; fcw, fcb grads */
        bft_op_linear_bwd(a->dB, g->fcw + (size_t)l * I * C, g->fcb + (size_t)l * I, a->dI, la.ln1,
                          p->fcw + (size_t)l * I * C, N, C, I, 1, 0);
        /* LN1: dA = d res1 (also d in through the residual) */
        bft_op_layernorm_bwd(a->dA, g->ln1w + (size_t)l * C, g->ln1b + (size_t)l * C, a->dB,
                             la.res1, la.ln1_mean, la.ln1_rstd, p->ln1w + (size_t)l * C, N, C, 0);
        /* dB = d (ctx · attprojw^T) through the dropout; attprojb grad */
        bft_op_dropout_bias_bwd(a->dB, g->attprojb + (size_t)l * C, a->dA, N, C, &d_h1);
        /* dC = d ctx; attprojw grad */
        bft_op_linear_bwd(a->dC, g->attprojw + (size_t)l * CC, NULL, a->dB, la.ctx,
                          p->attprojw + (size_t)l * CC, N, C, C, 0, 0);
        /* dqkv (B,T,3C) */
        bft_op_attention_bwd(a->dqkv, a->dC, la.att, la.qkv, bt->lens, B, T, C, NH, &d_att);
        /* dA += d in through Q, K, V; qkvw, qkvb grads */
        bft_op_linear_bwd(a->dA, g->qkvw + (size_t)l * 3 * CC, g->qkvb + (size_t)l * 3 * C, a->dqkv,
                          la.in, p->qkvw + (size_t)l * 3 * CC, N, C, 3 * C, 1, 0);
    }
    /* embeddings: dA = d h0 */
    bft_dropout de = site_drop(dc, 1, ph, SITE_EMB);
    bft_op_embed_ln_bwd(g->wte, g->wpe, g->wtt, g->emb_lnw, g->emb_lnb, a->dA, a->dB, a->emb_x,
                        a->emb_mean, a->emb_rstd, bt->ids, p->emb_lnw, B, T, C,
                        cfg->pad_token_id, &de);
}

/* ---------------------------------------------------------------- classification head */

float bert_cls_forward(const bft_model *m, bert_acts *a, const bert_batch *bt,
                       const bert_dropout_cfg *dc)
{
    const bft_params *p = &m->p;
    int B = bt->B, T = bt->T, C = m->cfg.hidden_size, K = m->cfg.num_labels;
    int train = a->train && dc;
    a->cls_only = 1;
    const float *top = bert_encoder_forward(m, a, bt, dc);
    (void)T;

    /* cls (B,C) = top[:, 0] (the encoder computed only those rows in its last
     * layer); pooled = tanh(cls · poolw^T + poolb) */
    bft_dev_copy(a->cls, top, (size_t)B * C * sizeof *a->cls);
    bft_op_linear_fwd(a->pooled, a->cls, p->poolw, NULL, B, C, C);
    bft_op_bias_tanh_fwd(a->pooled, p->poolb, B, C);
    /* pooled_d = dropout(pooled); logits (B,K) = pooled_d · clsw^T + clsb */
    float pc = 0.0f;
    if (dc)
        pc = dc->classifier;
    bft_dropout dcl = site_drop(dc, train, pc, SITE_CLS);
    bft_op_dropout_fwd(a->pooled_d, a->pooled, (size_t)B * C, &dcl);
    bft_op_linear_fwd(a->logits, a->pooled_d, p->clsw, p->clsb, B, C, K);
    if (m->cfg.problem_type == BFT_PROBLEM_MULTI_LABEL) {
        /* sigmoid probabilities, per-example mean binary cross-entropy, d mean / d logits */
        bft_op_sigmoid_bce(a->probs, bt->targets ? a->losses : NULL,
                           train && bt->targets ? a->dlogits : NULL, a->logits, bt->targets, B, K,
                           1.0f / (float)B);
        if (!bt->targets)
            return 0.0f;
        return bft_op_mean(a->losses, B);
    }
    /* probs, per-example cross-entropy, d loss / d logits: the loss is the mean,
     * or with weights the weighted sum (torch CrossEntropyLoss(weight=w) gives
     * example r the share w[y_r] / sum_b w[y_b]) */
    bft_op_softmax_xent(a->probs, bt->labels ? a->losses : NULL,
                        train && bt->labels ? a->dlogits : NULL, a->logits, bt->labels,
                        bt->labels ? bt->weights : NULL, B, K,
                        bt->labels && bt->weights ? 1.0f : 1.0f / (float)B);
    if (!bt->labels)
        return 0.0f;
    if (bt->weights) {
        bft_op_mul(a->losses, bt->weights, (size_t)B);
        return bft_op_mean(a->losses, B) * (float)B;
    }
    return bft_op_mean(a->losses, B);
}

void bert_cls_backward(const bft_model *m, const bft_params *g, bert_acts *a,
                       const bert_batch *bt, const bert_dropout_cfg *dc)
{
    const bft_params *p = &m->p;
    int B = bt->B, T = bt->T, C = m->cfg.hidden_size, K = m->cfg.num_labels;
    float pc = dc ? dc->classifier : 0.0f;
    bft_dropout dcl = site_drop(dc, 1, pc, SITE_CLS);

    /* classifier: dpool (B,C) = dlogits · clsw; clsw, clsb grads */
    bft_op_linear_bwd(a->dpool, g->clsw, g->clsb, a->dlogits, a->pooled_d, p->clsw, B, C, K, 0, 0);
    /* dropout, tanh */
    bft_op_dropout_bwd(a->dpool, a->dpool, (size_t)B * C, &dcl);
    bft_op_tanh_bwd(a->dpool, a->dpool, a->pooled, (size_t)B * C);
    /* pooler dense: d cls (B,C) straight into dA, the gradient at the [CLS]-only
     * last layer's output; poolw, poolb grads */
    bft_op_linear_bwd(a->dA, g->poolw, g->poolb, a->dpool, a->cls, p->poolw, B, C, C, 0, 0);
    (void)T;
    bert_encoder_backward(m, g, a, bt, dc);
}

/* ---------------------------------------------------------------- MLM head */

int bert_mlm_reserve(bert_mlm_ws *w, const bft_config *cfg, int M)
{
    size_t C = (size_t)cfg->hidden_size, V = (size_t)cfg->vocab_size;
    if (M <= w->cap)
        return 0;
    size_t m = (size_t)M;
    size_t n = up(m * C) * 6 + up(m) * 3 + up(m * V) * 2;
    float *mem = bft_dev_alloc(n * sizeof(float));
    if (!mem)
        return -1;
    bft_dev_free(w->mem);
    w->mem = mem;
    w->cap = M;
    size_t at = 0;
#define TAKE(field, cnt)          \
    do {                          \
        w->field = mem + at;      \
        at += up(cnt);            \
    } while (0)
    TAKE(h, m * C);
    TAKE(pre, m * C);
    TAKE(g, m * C);
    TAKE(ln, m * C);
    TAKE(dh, m * C);
    TAKE(dh2, m * C);
    TAKE(mean, m);
    TAKE(rstd, m);
    TAKE(losses, m);
    TAKE(logits, m * V);
    TAKE(dlogits, m * V);
#undef TAKE
    return 0;
}

void bert_mlm_free(bert_mlm_ws *w)
{
    if (w) {
        bft_dev_free(w->mem);
        memset(w, 0, sizeof *w);
    }
}

float bert_mlm_forward(const bft_model *m, bert_mlm_ws *w, const float *hidden,
                       const int64_t *rows, int M, const int32_t *labels)
{
    const bft_params *p = &m->p;
    int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    /* h (M,C) = hidden rows; g = GELU(h · mlm_w^T + mlm_b); ln = LN(g) */
    bft_op_gather_rows(w->h, hidden, rows, M, C);
    bft_op_linear_fwd(w->pre, w->h, p->mlm_w, NULL, M, C, C);
    bft_op_bias_gelu_fwd(w->pre, w->g, p->mlm_b, M, C);
    bft_op_layernorm_fwd(w->ln, w->mean, w->rstd, w->g, p->mlm_lnw, p->mlm_lnb, M, C,
                         m->cfg.layer_norm_eps);
    /* logits (M,V) = ln · wte^T + mlm_bias (decoder tied to the word embeddings) */
    bft_op_linear_fwd(w->logits, w->ln, p->wte, p->mlm_bias, M, C, V);
    if (!labels) {
        bft_op_softmax_xent(w->dlogits, NULL, NULL, w->logits, NULL, NULL, M, V, 0.0f);
        return 0.0f;
    }
    bft_op_softmax_xent(NULL, w->losses, w->dlogits, w->logits, labels, NULL, M, V,
                        1.0f / (float)M);
    return bft_op_mean(w->losses, M);
}

void bert_mlm_backward(const bft_model *m, const bft_params *g, bert_mlm_ws *w,
                       const int64_t *rows, int M, float *dhidden)
{
    const bft_params *p = &m->p;
    int C = m->cfg.hidden_size, V = m->cfg.vocab_size;
    /* decoder: dh = dlogits · wte; wte (tied: accumulated) and bias grads */
    bft_op_linear_bwd(w->dh, g->wte, NULL, w->dlogits, w->ln, p->wte, M, C, V, 0, 1);
    bft_op_colsum(g->mlm_bias, w->dlogits, M, V, 0);
    /* LayerNorm, GELU, dense */
    bft_op_layernorm_bwd(w->dh, g->mlm_lnw, g->mlm_lnb, w->dh, w->g, w->mean, w->rstd, p->mlm_lnw,
                         M, C, 0);
    bft_op_gelu_bwd(w->dh, w->dh, w->pre, (size_t)M * C);
    bft_op_linear_bwd(w->dh2, g->mlm_w, g->mlm_b, w->dh, w->h, p->mlm_w, M, C, C, 0, 0);
    bft_op_scatter_add_rows(dhidden, w->dh2, rows, M, C);
}
