/*
 * test_dropout.c — dropout by its statistics, not skipped:
 *   - drop rate within 5 sigma of p, kept values exactly x / (1 - p), mean preserved;
 *   - backward uses the same mask as forward;
 *   - same (seed, step, site) -> same mask; other steps/sites/seeds -> independent
 *     masks (overlap of dropped sets ~ p^2);
 *   - counter-based: results identical for 1, 2 and 3 threads (element, residual+LN,
 *     attention-probability and embedding dropout, and a whole training forward);
 *   - in a BERT forward: training mode with dropout changes the loss from step to
 *     step, eval mode (no dropout) equals training mode with p = 0.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "model.h"
#include "ops.h"
#include "rng.h"
#include "test.h"
#include "threads.h"

#define N (1 << 20)

static void test_rate_and_scale(void)
{
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    const float ps[3] = {0.1f, 0.3f, 0.5f};
    for (int i = 0; i < N; i++)
        x[i] = 1.0f + (float)(i % 7);
    for (int k = 0; k < 3; k++) {
        float p = ps[k];
        bft_dropout d = {p, bft_dropout_seed(42, 3, 7)};
        bft_op_dropout_fwd(y, x, N, &d);
        long dropped = 0, badscale = 0;
        double sx = 0.0, sy = 0.0;
        for (int i = 0; i < N; i++) {
            if (y[i] == 0.0f)
                dropped++;
            else if (y[i] != x[i] * (1.0f / (1.0f - p)))
                badscale++;
            if ((y[i] != 0.0f) != bft_dropout_keep(&d, (uint64_t)i))
                badscale++;
            sx += x[i];
            sy += y[i];
        }
        double rate = (double)dropped / N, sigma = sqrt(p * (1 - p) / N);
        CHECK(fabs(rate - p) <= 5 * sigma, "p=%.1f: drop rate %.5f (sigma %.5f)", p, rate, sigma);
        CHECK(badscale == 0, "p=%.1f: %ld kept values not scaled by 1/(1-p)", p, badscale);
        CHECK(fabs(sy / sx - 1.0) < 5 * sqrt(p / (1 - p) / N) * 2, "p=%.1f: mean ratio %.5f", p, sy / sx);
        printf("  p=%.1f: dropped %.5f, mean ratio %.5f\n", p, rate, sy / sx);
        /* backward: same mask */
        float *g = malloc(N * sizeof *g);
        bft_op_dropout_bwd(g, x, N, &d);
        CHECK(memcmp(g, y, N * sizeof *g) == 0, "backward mask differs from forward");
        free(g);
    }
    /* p = 0: identity */
    bft_dropout d0 = {0.0f, 1};
    bft_op_dropout_fwd(y, x, N, &d0);
    CHECK(memcmp(x, y, N * sizeof *x) == 0, "p=0 is not the identity");
    free(x);
    free(y);
}

static void test_determinism_independence(void)
{
    float *x = malloc(N * sizeof *x), *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    for (int i = 0; i < N; i++)
        x[i] = 1.0f;
    float p = 0.2f;
    bft_dropout d1 = {p, bft_dropout_seed(1, 10, 3)};
    bft_op_dropout_fwd(a, x, N, &d1);
    bft_op_dropout_fwd(b, x, N, &d1);
    CHECK(memcmp(a, b, N * sizeof *a) == 0, "same seed, different masks");
    uint64_t seeds[3] = {bft_dropout_seed(1, 11, 3), bft_dropout_seed(1, 10, 4),
                         bft_dropout_seed(2, 10, 3)};
    for (int k = 0; k < 3; k++) {
        bft_dropout d2 = {p, seeds[k]};
        bft_op_dropout_fwd(b, x, N, &d2);
        long both = 0;
        for (int i = 0; i < N; i++)
            both += a[i] == 0.0f && b[i] == 0.0f;
        double r = (double)both / N, sigma = sqrt(p * p * (1 - p * p) / N);
        CHECK(fabs(r - p * p) <= 5 * sigma, "variant %d: joint drop rate %.5f, expected %.5f", k, r, p * p);
    }
    /* neighbouring elements independent: P(drop i and drop i+1) ~ p^2 */
    long pairs = 0;
    for (int i = 0; i + 1 < N; i++)
        pairs += a[i] == 0.0f && a[i + 1] == 0.0f;
    CHECK(fabs((double)pairs / (N - 1) - p * p) <= 5 * sqrt(p * p / N), "adjacent correlation %.5f",
          (double)pairs / (N - 1));
    free(x);
    free(a);
    free(b);
}

/* Run fn under 1, 2 and 3 threads; outputs must be bit-identical. */
static void test_thread_independence(void)
{
    int B = 3, T = 20, C = 48, NH = 4;
    size_t n = (size_t)B * T * C;
    int32_t lens[3] = {20, 13, 7};
    float *qkv = malloc(3 * n * sizeof *qkv), *res = malloc(n * sizeof *res);
    float *w = malloc(C * sizeof *w), *bb = malloc(C * sizeof *bb);
    bft_rng r;
    bft_rng_seed(&r, 5);
    for (size_t i = 0; i < 3 * n; i++)
        qkv[i] = bft_rng_normal(&r);
    for (size_t i = 0; i < n; i++)
        res[i] = bft_rng_normal(&r);
    for (int i = 0; i < C; i++) {
        w[i] = 1.0f + 0.1f * bft_rng_normal(&r);
        bb[i] = 0.1f * bft_rng_normal(&r);
    }
    float *out[3], *att[3], *ln[3], *dq[3], *big[3];
    bft_dropout d = {0.25f, bft_dropout_seed(9, 1, 2)};
    float *bigx = malloc(N * sizeof *bigx);
    for (int i = 0; i < N; i++)
        bigx[i] = (float)i;
    for (int k = 0; k < 3; k++) {
        bft_threads_set(k + 1);
        out[k] = malloc(n * sizeof(float));
        att[k] = malloc((size_t)B * NH * T * T * sizeof(float));
        ln[k] = malloc(n * sizeof(float));
        dq[k] = malloc(3 * n * sizeof(float));
        big[k] = malloc(N * sizeof(float));
        float *x = malloc(n * sizeof(float)), *mean = malloc(B * T * sizeof(float)),
              *rstd = malloc(B * T * sizeof(float));
        bft_op_attention_fwd(out[k], att[k], qkv, lens, B, T, C, NH, &d);
        bft_op_attention_bwd(dq[k], res, att[k], qkv, lens, B, T, C, NH, &d);
        bft_op_residual_ln_fwd(ln[k], x, mean, rstd, out[k], bb, res, w, bb, B * T, C, 1e-12f, &d);
        bft_op_dropout_fwd(big[k], bigx, N, &d);
        free(x);
        free(mean);
        free(rstd);
    }
    for (int k = 1; k < 3; k++) {
        CHECK(memcmp(out[0], out[k], n * sizeof(float)) == 0, "attention output differs with %d threads", k + 1);
        CHECK(memcmp(att[0], att[k], (size_t)B * NH * T * T * sizeof(float)) == 0, "attention probs differ");
        CHECK(memcmp(dq[0], dq[k], 3 * n * sizeof(float)) == 0, "attention backward differs with %d threads", k + 1);
        CHECK(memcmp(ln[0], ln[k], n * sizeof(float)) == 0, "residual+LN dropout differs with %d threads", k + 1);
        CHECK(memcmp(big[0], big[k], N * sizeof(float)) == 0, "dropout differs with %d threads", k + 1);
    }
    /* the attention-probability dropout really drops: ctx differs from p = 0 */
    bft_dropout d0 = {0.0f, 0};
    float *o0 = malloc(n * sizeof(float));
    bft_op_attention_fwd(o0, NULL, qkv, lens, B, T, C, NH, &d0);
    CHECK(memcmp(o0, out[0], n * sizeof(float)) != 0, "attention dropout had no effect");
    free(o0);
    for (int k = 0; k < 3; k++) {
        free(out[k]);
        free(att[k]);
        free(ln[k]);
        free(dq[k]);
        free(big[k]);
    }
    bft_threads_set(0);
    free(bigx);
    free(qkv);
    free(res);
    free(w);
    free(bb);
}

static void test_bert_train_vs_eval(void)
{
    bft_error err;
    bft_model *m = bft_model_load_dir("tests/data/ckpt/tiny", &err);
    CHECK(m != NULL, "load: %s", err.msg);
    if (!m)
        return;
    int B = 2, T = 10, K = m->cfg.num_labels;
    int32_t ids[20], lens[2] = {10, 6}, labels[2] = {1, 2};
    for (int i = 0; i < 20; i++)
        ids[i] = (i % T) == 0 ? 2 : (i % T) < lens[i / T] ? 5 + (i * 7) % 100 : 0;
    bert_batch bt = {B, T, ids, lens, labels, NULL};
    bert_acts a, e;
    CHECK(bert_acts_alloc(&a, &m->cfg, K, B, T, 1) == 0, "acts");
    CHECK(bert_acts_alloc(&e, &m->cfg, K, B, T, 0) == 0, "acts");
    bert_dropout_cfg off = {0, 0, 0, 3, 0}, on = {0.1f, 0.1f, 0.1f, 3, 0};
    float l_eval = bert_cls_forward(m, &e, &bt, NULL);
    float l_off = bert_cls_forward(m, &a, &bt, &off);
    CHECK(l_eval == l_off, "eval %.9g vs train with p=0 %.9g", l_eval, l_off);
    float l_s0 = bert_cls_forward(m, &a, &bt, &on);
    float l_s0b = bert_cls_forward(m, &a, &bt, &on);
    on.step = 1;
    float l_s1 = bert_cls_forward(m, &a, &bt, &on);
    CHECK(l_s0 == l_s0b, "same step, different loss");
    CHECK(l_s0 != l_off && l_s1 != l_s0, "dropout did not change the loss (%g %g %g)", l_off, l_s0, l_s1);
    /* thread independence of a whole training forward */
    bft_threads_set(1);
    on.step = 0;
    float l_1 = bert_cls_forward(m, &a, &bt, &on);
    bft_threads_set(2);
    float l_2 = bert_cls_forward(m, &a, &bt, &on);
    bft_threads_set(0);
    CHECK(l_1 == l_s0 || l_2 == l_s0, "losses %.9g %.9g %.9g", l_1, l_2, l_s0);
    CHECK(l_1 == l_2, "1 vs 2 threads: %.9g vs %.9g", l_1, l_2);
    bert_acts_free(&a);
    bert_acts_free(&e);
    bft_model_free(m);
}

int main(void)
{
    RUN(test_rate_and_scale);
    RUN(test_determinism_independence);
    RUN(test_thread_independence);
    RUN(test_bert_train_vs_eval);
    return test_summary();
}
