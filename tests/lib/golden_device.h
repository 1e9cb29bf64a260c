/*
 * golden_device.h — the golden tests of test_bert.c (PyTorch float64
 * reference, tests/data/golden) on a chosen device and precision: forward
 * probabilities, logits and loss, every gradient, and 10 AdamW steps of
 * bft_train, for the classifier checkpoints (multi-label ones with their
 * targets, class-weighted ones with their row shares) and the MLM one (with
 * bft_fill_mask). Tolerances: fp32 as test_bert; bf16 mixed precision from
 * the bf16 unit roundoff u = 2^-8 (as test_cuda.c's header explains):
 *   probabilities   |a - b| <= 1e-2
 *   logits, loss    |a - b| <= 3e-2 * max(1, |b|) (loss 2e-2)
 *   gradients       per tensor ||a - b|| <= 5e-2 ||b||
 *   params, 10 steps |a - b| <= 2e-5 max(|b|, .05) + 0.5 sum(lr) per element,
 *                    mean |a - b| <= 0.05 sum(lr).
 * Used by test_cuda.c (device cuda) and test_cpu_precision.c (the CPU's bf16).
 * Include after test.h, with the engine headers.
 */
#ifndef BFT_GOLDEN_DEVICE_H
#define BFT_GOLDEN_DEVICE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bert.h"
#include "golden.h"
#include "golden_train.h"
#include "model.h"
#include "train.h"

#define DEVNAME (device == BFT_DEVICE_CUDA ? "GPU" : "CPU")

static bft_model *golden_model(const char *name, const golden *gd)
{
    bft_error err;
    char dir[256];
    snprintf(dir, sizeof dir, "tests/data/ckpt/%s", golden_checkpoint(name));
    bft_model *m = bft_model_load_dir(dir, &err);
    CHECK(m != NULL, "load %s: %s", dir, err.msg);
    if (!m)
        return NULL;
    const rec *w = gfind(gd, "init/classifier.weight"), *b = gfind(gd, "init/classifier.bias");
    if (w && b) {
        int K = (int)w->dims[0];
        CHECK(bft_model_set_labels(m, K, NULL, 7, &err) == 0, "set_labels: %s", err.msg);
        if (m->p.clsw) {
            memcpy(m->p.clsw, w->data, (size_t)w->numel * sizeof(float));
            memcpy(m->p.clsb, b->data, (size_t)b->numel * sizeof(float));
        }
    }
    return m;
}

/* Gradients (host copy gmem) against the golden: fp32 elementwise as test_bert,
 * bf16 per-tensor relative Frobenius. */
static void check_grads(const golden *gd, const bft_model *m, const float *gmem, int bf16)
{
    int n = 0, compared = 0;
    bft_tensor_info *ti = bft_params_tensors(&m->cfg, m->parts, &n);
    double G = 0.0, worst = 0.0;
    for (int i = 0; i < n; i++) {
        char key[128];
        snprintf(key, sizeof key, "grad/%s", ti[i].name);
        const rec *r = gfind(gd, key);
        if (r)
            for (int64_t k = 0; k < r->numel; k++)
                G = fmax(G, fabs(((const float *)r->data)[k]));
    }
    for (int i = 0; i < n; i++) {
        char key[128];
        snprintf(key, sizeof key, "grad/%s", ti[i].name);
        const rec *r = gfind(gd, key);
        if (!r || r->numel != (int64_t)ti[i].numel)
            continue;
        const float *b = r->data, *a = gmem + ti[i].offset;
        compared++;
        if (golden_is_key_bias(ti[i].name)) {
            double mx = 0.0;
            for (int64_t k = 0; k < r->numel; k++)
                mx = fmax(mx, fabs(a[k]));
            CHECK(mx <= (bf16 ? 1e-2 : 1e-6) * G, "%s: max %g, should be ~0", ti[i].name, mx);
            continue;
        }
        if (bf16) {
            double num = 0.0, den = 0.0;
            for (int64_t k = 0; k < r->numel; k++) {
                num += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
                den += (double)b[k] * b[k];
            }
            double rel = sqrt(num / (den > 0 ? den : 1e-30));
            worst = fmax(worst, rel);
            CHECK(rel <= 5e-2, "bf16 grad %s: relative error %.3g", ti[i].name, rel);
        } else {
            double mt = 0.0;
            for (int64_t k = 0; k < r->numel; k++)
                mt = fmax(mt, fabs(b[k]));
            int bad = 0;
            for (int64_t k = 0; k < r->numel && bad < 3; k++) {
                double s = fmax(fabs(b[k]), 1e-2 * mt), e = fabs((double)a[k] - b[k]);
                worst = fmax(worst, e / s);
                if (!(e <= 1e-4 * s)) {
                    CHECK(0, "grad %s[%lld]: bft %.8g torch %.8g", ti[i].name, (long long)k, a[k],
                          b[k]);
                    bad++;
                }
            }
        }
    }
    printf("  %d gradient tensors compared, worst %s error %.3g\n", compared,
           bf16 ? "relative Frobenius" : "scaled relative", worst);
    CHECK(compared >= n - 5, "only %d of %d gradient tensors compared", compared, n);
    free(ti);
}

/* The golden gname.bin on checkpoint ckpt (a golden with "targets": multi-label). */
static void golden_cls_device_on(const char *ckpt, const char *gname, int device, int bf16)
{
    golden gd;
    bft_error err;
    char path[256];
    const char *name = gname;
    snprintf(path, sizeof path, "tests/data/golden/%s.bin", gname);
    CHECK(golden_load(&gd, path) == 0, "cannot read %s", path);
    if (!gd.n)
        return;
    bft_model *m = golden_model(ckpt, &gd);
    if (!m) {
        golden_free(&gd);
        return;
    }
    const rec *rids = gfind(&gd, "ids"), *rlens = gfind(&gd, "lens"), *rlab = gfind(&gd, "labels");
    const rec *rtg = gfind(&gd, "targets");
    int B = (int)rids->dims[0], T = (int)rids->dims[1], K = m->cfg.num_labels;
    const int32_t *ids = rids->data, *lens = rlens->data, *labels = rlab ? rlab->data : NULL;
    const float *targets = rtg ? rtg->data : NULL;
    if (targets)
        m->cfg.problem_type = BFT_PROBLEM_MULTI_LABEL;
    int prec = bf16 ? BFT_PRECISION_BF16 : BFT_PRECISION_FP32;
    double tp = bf16 ? 1e-2 : 1e-5, tl = bf16 ? 3e-2 : 1e-5;

    /* forward + backward on the device, dropout off */
    bft_devmodel dv;
    int rc = bft_devmodel_open(&dv, m, device, prec, 1, &err);
    CHECK(rc == BFT_OK, "devmodel: %s", err.msg);
    if (rc == BFT_OK) {
        bert_acts a;
        CHECK(bert_acts_alloc(&a, &m->cfg, K, B, T, 1) == 0, "acts");
        int32_t *d_ids = bft_dev_alloc((size_t)B * T * 4), *d_lens = bft_dev_alloc((size_t)B * 4),
                *d_lab = bft_dev_alloc((size_t)B * 4);
        float *d_tg = bft_dev_alloc((size_t)B * K * 4);
        bft_dev_upload(d_ids, ids, (size_t)B * T * 4);
        bft_dev_upload(d_lens, lens, (size_t)B * 4);
        if (labels)
            bft_dev_upload(d_lab, labels, (size_t)B * 4);
        if (targets)
            bft_dev_upload(d_tg, targets, (size_t)B * K * 4);
        bert_batch bt = {B, T, d_ids, d_lens, labels ? d_lab : NULL, targets ? d_tg : NULL, NULL};
        float shares[64], *d_sh = bft_dev_alloc(sizeof shares);
        CHECK(B <= 64, "golden batch of %d", B);
        if (golden_row_weights(&gd, labels, B, shares)) {
            bft_dev_upload(d_sh, shares, (size_t)B * sizeof *shares);
            bt.weights = d_sh;
        }
        bert_dropout_cfg dc = {0.0f, 0.0f, 0.0f, 1, 0};
        float loss = bert_cls_forward(&dv.dm, &a, &bt, &dc);
        float *pr = malloc((size_t)B * K * 4), *lg = malloc((size_t)B * K * 4);
        bft_dev_download(pr, a.probs, (size_t)B * K * 4);
        bft_dev_download(lg, a.logits, (size_t)B * K * 4);
        const float *gp = gfind(&gd, "probs")->data, *gl = gfind(&gd, "logits")->data;
        float gloss = *(const float *)gfind(&gd, "loss")->data;
        double wp = 0.0;
        for (int i = 0; i < B * K; i++) {
            wp = fmax(wp, fabs(pr[i] - gp[i]));
            CHECK(fabs(pr[i] - gp[i]) <= tp, "%s prob[%d]: %.8f vs %.8f", name, i, pr[i], gp[i]);
            CHECK(fabs(lg[i] - gl[i]) <= tl * fmax(1.0, fabs(gl[i])), "%s logit[%d]: %.8f vs %.8f",
                  name, i, lg[i], gl[i]);
        }
        CHECK(fabs(loss - gloss) <= (bf16 ? 2e-2 : 1e-5) * fmax(1.0, fabs(gloss)),
              "%s loss %.8f vs %.8f", name, loss, gloss);
        printf("  %s %s: loss %.7f (torch %.7f), max |prob diff| %.2e\n", name,
               bf16 ? "bf16" : "fp32", loss, gloss, wp);
        float *gdev = bft_dev_alloc(m->num_params * sizeof(float));
        bft_op_zero(gdev, m->num_params);
        bft_params g;
        bft_params_assign(&g, gdev, &m->cfg, m->parts);
        bert_cls_backward(&dv.dm, &g, &a, &bt, &dc);
        float *gmem = malloc(m->num_params * sizeof(float));
        bft_dev_download(gmem, gdev, m->num_params * sizeof(float));
        CHECK(bft_dev_check(&err) == BFT_OK, "device: %s", err.msg);
        check_grads(&gd, m, gmem, bf16);
        free(gmem);
        free(pr);
        free(lg);
        bft_dev_free(gdev);
        bft_dev_free(d_ids);
        bft_dev_free(d_lens);
        bft_dev_free(d_lab);
        bft_dev_free(d_tg);
        bft_dev_free(d_sh);
        bert_acts_free(&a);
        bft_devmodel_close(&dv);
    }

    /* 10 steps of bft_train on the device */
    int32_t *tok, *lids = NULL;
    int64_t *off, *loff = NULL;
    bft_dataset ds = golden_train_set(ids, lens, labels, B, T, &tok, &off);
    if (targets)
        golden_label_sets(&ds, targets, B, K, &loff, &lids);
    bft_train_opts o = golden_train_opts(&gd, B);
    o.device = device;
    o.precision = prec;
    bft_train_result res;
    rc = bft_train(m, &ds, &o, NULL, NULL, &res, &err);
    CHECK(rc == 0, "bft_train on %s: %s", DEVNAME, err.msg);
    CHECK(res.steps == 10, "steps %lld", (long long)res.steps);
    char what[64];
    snprintf(what, sizeof what, "%s %s (%s)", name, bf16 ? "bf16" : "fp32", DEVNAME);
    golden_params10 p10 = golden_check_params10(&gd, m, what, bf16 ? 0.5 : 1e-3);
    if (bf16)
        CHECK(p10.mean_err <= 0.05 * p10.sum_lr, "mean |param error| %.3g > 0.05 sum(lr) = %.3g",
              p10.mean_err, 0.05 * p10.sum_lr);
    printf("  %s %s: %d tensors after 10 AdamW steps on the %s, worst error / tolerance %.2f, "
           "mean |error| %.2e (sum lr %.2e)\n",
           name, bf16 ? "bf16" : "fp32", p10.compared, DEVNAME, p10.worst, p10.mean_err, p10.sum_lr);
    free(off);
    free(tok);
    free(loff);
    free(lids);
    bft_model_free(m);
    golden_free(&gd);
}

/* The golden name.bin on its own checkpoint (golden_checkpoint). */
static void golden_cls_device(const char *name, int device, int bf16)
{
    golden_cls_device_on(golden_checkpoint(name), name, device, bf16);
}

static void golden_mlm_device(int device, int bf16)
{
    golden gd;
    bft_error err;
    CHECK(golden_load(&gd, "tests/data/golden/tiny_mlm.bin") == 0, "cannot read golden");
    if (!gd.n)
        return;
    bft_model *m = golden_model("tiny_mlm", &gd);
    if (!m) {
        golden_free(&gd);
        return;
    }
    int prec = bf16 ? BFT_PRECISION_BF16 : BFT_PRECISION_FP32;
    const rec *rids = gfind(&gd, "ids"), *rrows = gfind(&gd, "rows");
    int B = (int)rids->dims[0], T = (int)rids->dims[1], M = (int)rrows->numel;
    int V = m->cfg.vocab_size;
    const int32_t *ids = rids->data, *lens = gfind(&gd, "lens")->data;
    const int32_t *rows32 = rrows->data, *labels = gfind(&gd, "labels")->data;
    const float *gp = gfind(&gd, "probs")->data;
    double tp = bf16 ? 1e-2 : 1e-5;
    int64_t rows[64];
    for (int j = 0; j < M && j < 64; j++)
        rows[j] = rows32[j];
    bft_devmodel dv;
    int rc = bft_devmodel_open(&dv, m, device, prec, 1, &err);
    CHECK(rc == BFT_OK, "devmodel: %s", err.msg);
    if (rc == BFT_OK) {
        bert_acts a;
        bert_mlm_ws w;
        memset(&w, 0, sizeof w);
        CHECK(bert_acts_alloc(&a, &m->cfg, 0, B, T, 1) == 0, "acts");
        CHECK(bert_mlm_reserve(&w, &m->cfg, M) == 0, "ws");
        int32_t *d_ids = bft_dev_alloc((size_t)B * T * 4), *d_lens = bft_dev_alloc((size_t)B * 4),
                *d_lab = bft_dev_alloc((size_t)M * 4);
        int64_t *d_rows = bft_dev_alloc((size_t)M * 8);
        bft_dev_upload(d_ids, ids, (size_t)B * T * 4);
        bft_dev_upload(d_lens, lens, (size_t)B * 4);
        bft_dev_upload(d_lab, labels, (size_t)M * 4);
        bft_dev_upload(d_rows, rows, (size_t)M * 8);
        bert_batch bt = {B, T, d_ids, d_lens, NULL, NULL, NULL};
        bert_dropout_cfg dc = {0.0f, 0.0f, 0.0f, 1, 0};
        const float *top = bert_encoder_forward(&dv.dm, &a, &bt, &dc);
        bert_mlm_forward(&dv.dm, &w, top, d_rows, M, NULL);
        float *pr = malloc((size_t)M * V * 4);
        bft_dev_download(pr, w.dlogits, (size_t)M * V * 4);
        double wp = 0.0;
        for (int64_t i = 0; i < (int64_t)M * V; i++)
            wp = fmax(wp, fabs(pr[i] - gp[i]));
        CHECK(wp <= tp, "MLM probabilities: max diff %.3g > %.3g", wp, tp);
        float loss = bert_mlm_forward(&dv.dm, &w, top, d_rows, M, d_lab);
        float gloss = *(const float *)gfind(&gd, "loss")->data;
        CHECK(fabs(loss - gloss) <= (bf16 ? 2e-2 : 1e-5) * fmax(1.0, fabs(gloss)),
              "MLM loss %.8f vs %.8f", loss, gloss);
        printf("  tiny_mlm %s: MLM loss %.7f (torch %.7f), max |prob diff| %.2e\n",
               bf16 ? "bf16" : "fp32", loss, gloss, wp);
        float *gdev = bft_dev_alloc(m->num_params * sizeof(float));
        bft_op_zero(gdev, m->num_params);
        bft_params g;
        bft_params_assign(&g, gdev, &m->cfg, m->parts);
        bft_op_zero(a.dA, (size_t)B * T * m->cfg.hidden_size);
        bert_mlm_backward(&dv.dm, &g, &w, d_rows, M, a.dA);
        bert_encoder_backward(&dv.dm, &g, &a, &bt, &dc);
        float *gmem = malloc(m->num_params * sizeof(float));
        bft_dev_download(gmem, gdev, m->num_params * sizeof(float));
        CHECK(bft_dev_check(&err) == BFT_OK, "device: %s", err.msg);
        check_grads(&gd, m, gmem, bf16);
        free(gmem);
        free(pr);
        bft_dev_free(gdev);
        bft_dev_free(d_ids);
        bft_dev_free(d_lens);
        bft_dev_free(d_lab);
        bft_dev_free(d_rows);
        bert_mlm_free(&w);
        bert_acts_free(&a);
        bft_devmodel_close(&dv);
    }
    /* bft_fill_mask on the device, sequence 1 (no padding) */
    CHECK(bft_set_device(device, prec, &err) == BFT_OK, "set_device: %s", err.msg);
    int b = 1, nm = 0;
    int32_t oid[3 * 5];
    float osc[3 * 5];
    rc = bft_fill_mask(m, ids + (size_t)b * T, T, 5, 3, &nm, oid, osc, &err);
    CHECK(rc == 0, "fill_mask on %s: %s", DEVNAME, err.msg);
    int j0 = 0;
    while (j0 < M && rows32[j0] / T != b)
        j0++;
    for (int j = 0; j < nm && j0 + j < M; j++) {
        const float *p = gp + (size_t)(j0 + j) * V;
        for (int k = 0; k < 5; k++) {
            int cnt_greater = 0;
            for (int v = 0; v < V; v++)
                cnt_greater += p[v] > p[oid[j * 5 + k]] + (bf16 ? tp : 0.0);
            CHECK(cnt_greater <= k, "mask %d rank %d: id %d has %d clearly larger golden probabilities",
                  j, k, oid[j * 5 + k], cnt_greater);
            CHECK(fabs(osc[j * 5 + k] - p[oid[j * 5 + k]]) <= tp, "mask %d rank %d: %.7f vs %.7f", j,
                  k, osc[j * 5 + k], p[oid[j * 5 + k]]);
        }
    }
    bft_set_device(BFT_DEVICE_CPU, BFT_PRECISION_AUTO, &err);
    bft_device_release();
    bft_model_free(m);
    golden_free(&gd);
}

#undef DEVNAME

#endif
