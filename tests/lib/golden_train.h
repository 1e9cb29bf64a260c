/*
 * golden_train.h — the golden training check shared by test_bert.c (CPU) and
 * test_cuda.c (GPU): the golden batch as a dataset, the reference run's
 * hyper-parameters as bft_train options, and the comparison of the weights
 * after its 10 AdamW steps with PyTorch's (param10/<tensor> records).
 * Include after test.h and golden.h.
 */
#ifndef BFT_TEST_GOLDEN_TRAIN_H
#define BFT_TEST_GOLDEN_TRAIN_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "train.h"

/* The checkpoint (tests/data/ckpt/<dir>) of a golden: its own name, except
 * tiny_weighted, made from tiny_legacy (bert_ref.py's SCENARIOS). */
static inline const char *golden_checkpoint(const char *golden_name)
{
    return strcmp(golden_name, "tiny_weighted") == 0 ? "tiny_legacy" : golden_name;
}

/* The attention key biases: their gradient is 0 in exact arithmetic (softmax
 * ignores a per-row constant), so what they get is rounding noise. */
static inline int golden_is_key_bias(const char *name)
{
    return strstr(name, "attention.self.key.bias") != NULL;
}

/* The B rows of ids (B, T) with their lens, packed as a dataset; *tok and
 * *off are malloc'ed (the caller frees them). */
static inline bft_dataset golden_train_set(const int32_t *ids, const int32_t *lens,
                                           const int32_t *labels, int B, int T, int32_t **tok,
                                           int64_t **off)
{
    *off = malloc((size_t)(B + 1) * sizeof **off);
    *tok = malloc((size_t)B * T * sizeof **tok);
    (*off)[0] = 0;
    for (int b = 0; b < B; b++) {
        memcpy(*tok + (*off)[b], ids + (size_t)b * T, (size_t)lens[b] * sizeof **tok);
        (*off)[b + 1] = (*off)[b] + lens[b];
    }
    bft_dataset ds = {B, *tok, *off, labels, NULL, NULL};
    return ds;
}

/* A multi-label golden's targets (B, K) multi-hot as label sets on ds:
 * *loff (B + 1) and *lids are malloc'ed (the caller frees them). */
static inline void golden_label_sets(bft_dataset *ds, const float *targets, int B, int K,
                                     int64_t **loff, int32_t **lids)
{
    *loff = malloc((size_t)(B + 1) * sizeof **loff);
    *lids = malloc((size_t)B * K * sizeof **lids + 1);
    (*loff)[0] = 0;
    for (int b = 0; b < B; b++) {
        int64_t at = (*loff)[b];
        for (int k = 0; k < K; k++)
            if (targets[(size_t)b * K + k] != 0.0f)
                (*lids)[at++] = k;
        (*loff)[b + 1] = at;
    }
    ds->labels = NULL;
    ds->label_offsets = *loff;
    ds->label_ids = *lids;
}

/* The Python float (a decimal of at most 7 significant digits) a golden
 * stored as F32: 2e-3f -> 0.002, as the reference run used it. */
static inline double golden_decimal(float f)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)f);
    return strtod(buf, NULL);
}

/* bft_train options of the reference run (train/hparams: lr, weight decay,
 * warmup ratio, max grad norm, epochs; class_weights when recorded): one batch
 * of B, no shuffle, no dropout. */
static inline bft_train_opts golden_train_opts(const golden *gd, int B)
{
    float hp[5];
    memcpy(hp, gfind(gd, "train/hparams")->data, sizeof hp);
    bft_train_opts o = bft_train_default_opts();
    o.learning_rate = golden_decimal(hp[0]);
    o.weight_decay = golden_decimal(hp[1]);
    o.warmup_ratio = golden_decimal(hp[2]);
    o.max_grad_norm = hp[3];
    o.epochs = (int)hp[4];
    o.batch_size = B;
    o.shuffle = 0;
    o.dropout = 0.0f;
    const rec *cw = gfind(gd, "class_weights"); /* weighted cross-entropy goldens */
    o.class_weights = cw ? (const float *)cw->data : NULL;
    return o;
}

/* What golden_check_params10 saw. */
typedef struct {
    int compared;    /* tensors compared */
    double worst;    /* largest error / tolerance (key biases left out) */
    double mean_err; /* mean |error| (key biases left out) */
    double sum_lr;   /* sum of the 10 steps' learning rates */
} golden_params10;

/* Compare m's weights after the 10 steps with param10/<tensor>: element k
 * within 2e-5 max(|ref|, 0.05) + lr_slack sum(lr) (key biases: 3 sum(lr)),
 * at least all but 5 tensors compared. what names the run in failures. */
static inline golden_params10 golden_check_params10(const golden *gd, const bft_model *m,
                                                    const char *what, double lr_slack)
{
    golden_params10 res = {0, 0.0, 0.0, 0.0};
    const float *lrs = gfind(gd, "train/lrs")->data;
    double abs_sum = 0.0;
    int64_t cnt = 0;
    for (int s = 0; s < 10; s++)
        res.sum_lr += lrs[s];
    int n = 0;
    bft_tensor_info *ti = bft_params_tensors(&m->cfg, m->parts, &n);
    for (int i = 0; i < n; i++) {
        char key[128];
        snprintf(key, sizeof key, "param10/%s", ti[i].name);
        const rec *r = gfind(gd, key);
        if (!r)
            continue;
        const float *b = r->data, *x = m->params_mem + ti[i].offset;
        int kb = golden_is_key_bias(ti[i].name), bad = 0;
        for (int64_t k = 0; k < r->numel && bad < 3; k++) {
            double e = fabs((double)x[k] - b[k]);
            double tol = kb ? 3.0 * res.sum_lr
                            : 2e-5 * fmax(fabs(b[k]), 0.05) + lr_slack * res.sum_lr;
            if (!kb) {
                res.worst = fmax(res.worst, e / tol);
                abs_sum += e;
                cnt++;
            }
            if (!(e <= tol)) {
                CHECK(0, "%s after 10 steps %s[%lld]: bft %.8g, torch %.8g", what, ti[i].name,
                      (long long)k, x[k], b[k]);
                bad++;
            }
        }
        res.compared++;
    }
    res.mean_err = cnt ? abs_sum / cnt : 0.0;
    CHECK(res.compared >= n - 5, "%s: only %d of %d tensors compared", what, res.compared, n);
    free(ti);
    return res;
}

/* The per-example loss shares of a weighted golden batch (w[y_r] / sum_b w[y_b])
 * into shares (B); returns 0 when the golden has no class weights. */
static inline int golden_row_weights(const golden *gd, const int32_t *labels, int B, float *shares)
{
    const rec *cw = gfind(gd, "class_weights");
    if (!cw)
        return 0;
    const float *w = cw->data;
    double s = 0.0;
    for (int b = 0; b < B; b++)
        s += w[labels[b]];
    for (int b = 0; b < B; b++)
        shares[b] = (float)(w[labels[b]] / s);
    return 1;
}

#endif
