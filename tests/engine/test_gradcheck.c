/*
 * test_gradcheck.c — finite-difference check of the analytic BERT gradients.
 *
 * Model: tests/data/ckpt/tiny (L=2, C=32, NH=4, I=64, V=140, K=3) and
 * tests/data/ckpt/tiny_mlm (MLM head). A batch of 3 sequences of different
 * lengths (so padding and the attention mask are exercised).
 *
 * For several random coordinates of EVERY tensor of the layout the analytic
 * gradient (bert_cls_backward / bert_mlm_backward) is compared with the
 * 4-point central difference
 *     fd = (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / (12 h),   h = 3e-2,
 * whose truncation error is O(h^4) and whose fp32 rounding error is about
 * 1.5 * 1e-7 |L| / h ~ 5e-6 |L| (measured: the error shrinks as h grows from
 * 3e-3 to 3e-2, i.e. it is rounding, not a wrong gradient). Each perturbed loss is computed twice (the
 * forward is deterministic, so both must agree bit for bit) — the
 * "double-checked" loss. Tolerance: |fd - g| <= 1e-3 * max(|g|, |fd|) + 2e-5 * max(1, |L|).
 * Coordinates whose gradient is exactly zero by construction (word-embedding
 * rows of unused tokens, the [PAD] row, positions beyond the batch) are also
 * checked to be exactly 0.
 * Dropout off, with class weights (weighted cross-entropy), and with dropout 0.1 on every site (the masks are a
 * deterministic function of (seed, step, site, index), so the loss stays a
 * smooth function of the weights and the same check applies).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "model.h"
#include "rng.h"
#include "test.h"

#define CKPT "tests/data/ckpt/"

static const int32_t LENS[3] = {7, 12, 4};
static const int32_t LABELS[3] = {2, 0, 1};
/* weighted cross-entropy: the examples' shares of the loss (class weights
 * 0.5, 3, 1 for labels 2, 0, 1, normalised) */
static const float SHARES[3] = {0.5f / 4.5f, 3.0f / 4.5f, 1.0f / 4.5f};
#define B 3
#define T 12

static void make_ids(int32_t *ids, int V, uint64_t seed)
{
    bft_rng r;
    bft_rng_seed(&r, seed);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int32_t id;
            if (t == 0)
                id = 2; /* [CLS] */
            else if (t == LENS[b] - 1)
                id = 3; /* [SEP] */
            else if (t >= LENS[b])
                id = 0; /* [PAD] */
            else
                id = 5 + (int32_t)bft_rng_below(&r, (uint64_t)(V - 5) / 2); /* lower half only */
            ids[b * T + t] = id;
        }
}

typedef struct {
    bft_model *m;
    bert_acts a;
    bert_batch bt;
    bert_dropout_cfg dc;
    int32_t ids[B * T];
    /* MLM */
    int mlm;
    bert_mlm_ws w;
    int64_t rows[8];
    int32_t mlab[8];
    int M;
} ctx_t;

static float loss_of(ctx_t *c)
{
    if (!c->mlm)
        return bert_cls_forward(c->m, &c->a, &c->bt, &c->dc);
    const float *top = bert_encoder_forward(c->m, &c->a, &c->bt, &c->dc);
    return bert_mlm_forward(c->m, &c->w, top, c->rows, c->M, c->mlab);
}

static void grads_of(ctx_t *c, const bft_params *g, float *gmem, size_t np)
{
    memset(gmem, 0, np * sizeof(float));
    if (!c->mlm) {
        bert_cls_forward(c->m, &c->a, &c->bt, &c->dc);
        bert_cls_backward(c->m, g, &c->a, &c->bt, &c->dc);
        return;
    }
    const float *top = bert_encoder_forward(c->m, &c->a, &c->bt, &c->dc);
    bert_mlm_forward(c->m, &c->w, top, c->rows, c->M, c->mlab);
    memset(c->a.dA, 0, (size_t)B * T * c->m->cfg.hidden_size * sizeof(float));
    bert_mlm_backward(c->m, g, &c->w, c->rows, c->M, c->a.dA);
    bert_encoder_backward(c->m, g, &c->a, &c->bt, &c->dc);
}

static int used_token(const ctx_t *c, int id)
{
    for (int k = 0; k < B * T; k++)
        if (c->ids[k] == id && (k % T) < LENS[k / T])
            return 1;
    return 0;
}

/* Run the check on model dir with dropout p; mlm: use the MLM loss;
 * weighted: the weighted cross-entropy (SHARES). */
static void gradcheck(const char *dir, float p, int mlm, int per_tensor, int weighted)
{
    bft_error err;
    ctx_t c;
    memset(&c, 0, sizeof c);
    c.m = bft_model_load_dir(dir, &err);
    CHECK(c.m != NULL, "load %s: %s", dir, err.msg);
    if (!c.m)
        return;
    c.mlm = mlm;
    const bft_config *cfg = &c.m->cfg;
    int K = mlm ? 0 : cfg->num_labels;
    make_ids(c.ids, cfg->vocab_size, 7);
    c.bt = (bert_batch){B, T, c.ids, LENS, mlm ? NULL : LABELS, NULL, weighted ? SHARES : NULL};
    c.dc = (bert_dropout_cfg){p, p, p, 1234, 5};
    CHECK(bert_acts_alloc(&c.a, cfg, K, B, T, 1) == 0, "acts");
    if (mlm) {
        /* masked positions: a few real tokens, labels = other ids */
        int64_t pos[5] = {1, 3, T + 2, T + 9, 2 * T + 1};
        for (int j = 0; j < 5; j++) {
            c.rows[j] = pos[j];
            c.mlab[j] = c.ids[pos[j]];
            c.ids[pos[j]] = 4; /* [MASK] */
        }
        c.M = 5;
        CHECK(bert_mlm_reserve(&c.w, cfg, c.M) == 0, "mlm ws");
    }
    size_t np = c.m->num_params;
    float *gmem = malloc(np * sizeof(float));
    bft_params g;
    bft_params_assign(&g, gmem, cfg, c.m->parts);
    grads_of(&c, &g, gmem, np);
    double L0 = loss_of(&c);

    int n = 0;
    bft_tensor_info *ti = bft_params_tensors(cfg, c.m->parts, &n);
    bft_rng r;
    bft_rng_seed(&r, 99);
    int checked = 0, zero_checked = 0;
    double worst = 0.0, gmax = 0.0;
    for (int i = 0; i < n; i++) {
        const char *nm = ti[i].name;
        int is_head_cls = !strncmp(nm, "pooler.", 7) || !strncmp(nm, "classifier.", 11);
        int is_head_mlm = !strncmp(nm, "cls.predictions.", 16);
        if ((mlm && is_head_cls) || (!mlm && is_head_mlm))
            continue;
        for (int k = 0; k < per_tensor; k++) {
            size_t idx = (size_t)bft_rng_below(&r, ti[i].numel);
            int expect_zero = 0;
            if (!strcmp(nm, "embeddings.word_embeddings.weight")) {
                int row = (int)(idx / cfg->hidden_size), col = (int)(idx % cfg->hidden_size);
                if (k == 0) { /* the [PAD] row: never a gradient (padding_idx) unless MLM decoder */
                    row = 0;
                    expect_zero = !mlm;
                } else if (k == 1 && !mlm) { /* an unused row */
                    row = cfg->vocab_size - 1;
                    expect_zero = 1;
                } else { /* a used row */
                    int tries = 0;
                    while (!used_token(&c, row) && tries++ < 1000)
                        row = (int)bft_rng_below(&r, (uint64_t)cfg->vocab_size);
                }
                idx = (size_t)row * cfg->hidden_size + col;
            }
            if (!strcmp(nm, "embeddings.position_embeddings.weight") && k == 0) {
                idx = (size_t)(T + 3) * cfg->hidden_size + idx % cfg->hidden_size;
                expect_zero = 1;
            }
            if (!strcmp(nm, "embeddings.token_type_embeddings.weight"))
                idx %= (size_t)cfg->hidden_size; /* type 0 (type 1 is unused) */
            float *x = c.m->params_mem + ti[i].offset + idx;
            float an = gmem[ti[i].offset + idx];
            if (expect_zero) {
                CHECK(an == 0.0f, "%s[%zu]: gradient %g, expected exactly 0", nm, idx, an);
                zero_checked++;
                continue;
            }
            float x0 = *x;
            double h = 3e-2, l[4];
            const double d[4] = {h, -h, 2 * h, -2 * h};
            for (int s = 0; s < 4; s++) {
                *x = (float)(x0 + d[s]);
                float la = loss_of(&c), lb = loss_of(&c);
                CHECK(la == lb, "%s: the forward is not deterministic (%.9g vs %.9g)", nm, la, lb);
                l[s] = (double)la;
            }
            *x = x0;
            double fd = (8.0 * (l[0] - l[1]) - (l[2] - l[3])) / (12.0 * h);
            double tol = 1e-3 * fmax(fabs(an), fabs(fd)) + 2e-5 * fmax(1.0, fabs(L0));
            double e = fabs(fd - an);
            if (e > worst)
                worst = e;
            if (fabs(an) > gmax)
                gmax = fabs(an);
            CHECK(e <= tol, "%s[%zu] (%s, p=%g): analytic %.6g vs finite difference %.6g", nm, idx,
                  dir, p, an, fd);
            checked++;
        }
    }
    printf("  %s%s%s p=%.2f: %d coordinates checked (+%d exact zeros), worst |fd - g| %.2e "
           "(largest |g| %.3g)\n", dir, mlm ? " (MLM)" : "", weighted ? " (class weights)" : "", p, checked, zero_checked, worst, gmax);
    CHECK(checked >= 3 * (n - (mlm ? 4 : 5)) / 2, "too few coordinates checked: %d", checked);
    free(ti);
    free(gmem);
    bert_mlm_free(&c.w);
    bert_acts_free(&c.a);
    bft_model_free(c.m);
}

static void test_cls_no_dropout(void) { gradcheck(CKPT "tiny", 0.0f, 0, 4, 0); }
static void test_cls_dropout(void) { gradcheck(CKPT "tiny", 0.1f, 0, 2, 0); }
static void test_cls_weighted(void) { gradcheck(CKPT "tiny", 0.0f, 0, 2, 1); }
static void test_mlm_no_dropout(void) { gradcheck(CKPT "tiny_mlm", 0.0f, 1, 3, 0); }

int main(void)
{
    RUN(test_cls_no_dropout);
    RUN(test_cls_dropout);
    RUN(test_cls_weighted);
    RUN(test_mlm_no_dropout);
    return test_summary();
}
