/*
 * test_train.c — the training loop, inference and evaluation:
 *   - a tiny model learns a separable 3-class toy task to 100% accuracy
 *     (per-epoch validation through the progress callback, phase 1);
 *   - same seed, data and threads => bit-identical weights (dropout and
 *     shuffling on); another seed => different weights;
 *   - cancel from the callback returns BFT_ECANCEL without leaking (malloc
 *     statistics before/after, many times);
 *   - the last partial batch is kept (steps = ceil(n / batch) per epoch);
 *   - the learning rate of every step equals the closed form of
 *     get_linear_schedule_with_warmup (first update lr 0 with warmup), and the
 *     number of warmup steps is Trainer's math.ceil(total * warmup_ratio) in
 *     Python floats, also where total * ratio is an integer (20 x 0.1 -> 2);
 *   - bft_predict rows come back in dataset order (batched with mixed lengths ==
 *     one at a time), bft_evaluate_ds agrees with the predictions (accuracy,
 *     macro-F1 computed here from the confusion matrix);
 *   - MLM pre-training lowers the MLM loss and is deterministic;
 *   - load_best_model_at_end / early stopping on a run whose best epoch is not
 *     the last: the returned weights are bitwise the best epoch's (snapshots
 *     taken in the epoch callback), training stops patience epochs after it,
 *     the result reports the kept epoch and its metrics;
 *   - resume: a training (and an MLM pre-training) cancelled in its third
 *     epoch and resumed from the state saved after its second ends with the
 *     same weights, losses and metrics, bit for bit, as the uninterrupted run
 *     (dropout, shuffling, class weights, best epoch on); a state of another
 *     training is refused (BFT_EMISMATCH), a corrupt or truncated one too
 *     (BFT_EFORMAT); resuming a finished state changes nothing;
 *   - invalid inputs are errors with messages.
 */
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>
#include <pthread.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "rng.h"
#include "test.h"
#include "testdata.h"
#include "train.h"

#define CKPT "tests/data/ckpt/"

typedef struct {
    int steps, epochs_seen, cancel_at;
    float last_acc, first_loss, last_loss;
    int64_t total;
    double lrs[256];
    double epoch_loss_sum;   /* step losses of the current epoch */
    int epoch_steps;
    double worst_mean_diff;  /* |mean of step losses - epoch loss| */
} cb_ctx;

static int cb(void *vp, const bft_progress *p)
{
    cb_ctx *c = vp;
    if (p->phase == 0) {
        if (c->steps < 256)
            c->lrs[c->steps] = p->lr;
        c->steps++;
        c->total = p->total_steps;
        c->epoch_loss_sum += p->step_loss;
        c->epoch_steps++;
        if (c->cancel_at && c->steps == c->cancel_at)
            return 1;
    } else {
        c->epochs_seen++;
        c->last_acc = p->eval_accuracy;
        double d = fabs(c->epoch_loss_sum / c->epoch_steps - p->loss);
        if (d > c->worst_mean_diff)
            c->worst_mean_diff = d;
        c->epoch_loss_sum = 0.0;
        c->epoch_steps = 0;
        if (c->epochs_seen == 1)
            c->first_loss = p->loss;
        c->last_loss = p->loss;
    }
    return 0;
}

static bft_model *load(const char *name)
{
    bft_error err;
    char dir[256];
    snprintf(dir, sizeof dir, CKPT "%s", name);
    bft_model *m = bft_model_load_dir(dir, &err);
    CHECK(m != NULL, "load %s: %s", dir, err.msg);
    return m;
}

static void test_learns_toy_task(void)
{
    bft_model *m = load("tiny");
    if (!m)
        return;
    toy tr, va;
    toy_make(&tr, 96, 1, 3);
    toy_make(&va, 48, 2, 3);
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 12;
    o.batch_size = 8;
    o.learning_rate = 3e-3;
    o.warmup_ratio = 0.1;
    o.weight_decay = 0.01;
    o.valid = &va.ds;
    o.seed = 3;
    cb_ctx c = {0};
    bft_train_result res;
    bft_error err;
    int rc = bft_train(m, &tr.ds, &o, cb, &c, &res, &err);
    CHECK(rc == 0, "train: %s", err.msg);
    CHECK(c.epochs_seen == 12, "epoch callbacks %d", c.epochs_seen);
    CHECK(c.steps == 12 * 12 && res.steps == 144, "steps %d", c.steps);
    float loss, acc, f1;
    rc = bft_evaluate_ds(m, &tr.ds, 16, &loss, &acc, &f1, NULL, &err);
    CHECK(rc == 0, "evaluate: %s", err.msg);
    printf("  toy task: epoch loss %.3f -> %.3f, train acc %.3f, valid acc %.3f (f1 %.3f)\n",
           c.first_loss, c.last_loss, acc, res.eval_accuracy, res.eval_macro_f1);
    CHECK(acc == 1.0f, "train accuracy %.3f", acc);
    CHECK(res.eval_accuracy >= 0.95f, "valid accuracy %.3f", res.eval_accuracy);
    CHECK(c.last_acc == res.eval_accuracy, "callback accuracy %.3f", c.last_acc);
    CHECK(c.last_loss < 0.2f * c.first_loss, "loss %.3f -> %.3f", c.first_loss, c.last_loss);
    toy_free(&tr);
    toy_free(&va);
    bft_model_free(m);
}

static void test_deterministic(void)
{
    toy tr;
    toy_make(&tr, 40, 5, 3);
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 2;
    o.batch_size = 6;
    o.learning_rate = 1e-3;
    o.dropout = 0.1f;
    o.weight_decay = 0.01;
    o.group_by_length = 1;
    bft_model *m[3];
    bft_error err;
    for (int k = 0; k < 3; k++) {
        m[k] = load("tiny");
        if (!m[k])
            return;
        o.seed = k == 2 ? 8 : 7;
        CHECK(bft_train(m[k], &tr.ds, &o, NULL, NULL, NULL, &err) == 0, "train: %s", err.msg);
    }
    size_t bytes = m[0]->num_params * sizeof(float);
    CHECK(memcmp(m[0]->params_mem, m[1]->params_mem, bytes) == 0, "same seed: weights differ");
    CHECK(memcmp(m[0]->params_mem, m[2]->params_mem, bytes) != 0, "other seed: weights equal");
    for (int k = 0; k < 3; k++)
        bft_model_free(m[k]);
    toy_free(&tr);
}

/* 10 cancelled trainings, 1 failed one (bad label), 1 complete one and a prediction. */
static int leak_round(bft_model *m, toy *tr, toy *va, bft_error *err)
{
    bft_train_opts o = bft_train_default_opts();
    int cancelled = 0;
    o.epochs = 2;
    o.valid = &va->ds;
    for (int i = 0; i < 10; i++) {
        cb_ctx c = {0};
        c.cancel_at = 1 + i % 5;
        int rc = bft_train(m, &tr->ds, &o, cb, &c, NULL, err);
        cancelled += rc == BFT_ECANCEL && c.steps == c.cancel_at;
    }
    CHECK(strstr(err->msg, "cancel") != NULL, "message: %s", err->msg);
    tr->lab[0] = 99;
    CHECK(bft_train(m, &tr->ds, &o, NULL, NULL, NULL, err) == BFT_EINVAL, "bad label accepted");
    tr->lab[0] = 0;
    o.epochs = 1;
    CHECK(bft_train(m, &tr->ds, &o, NULL, NULL, NULL, err) == 0, "train: %s", err->msg);
    float *probs = malloc((size_t)va->ds.n * 3 * sizeof *probs);
    CHECK(bft_predict(m, &va->ds, 4, probs, err) == 0, "predict: %s", err->msg);
    free(probs);
    return cancelled;
}

static void test_cancel_no_leak(void)
{
    bft_model *m = load("tiny");
    if (!m)
        return;
    toy tr, va;
    toy_make(&tr, 30, 9, 3);
    toy_make(&va, 10, 10, 3);
    bft_error err;
    /* the first rounds may allocate lasting state (thread pool, BLAS buffers) */
    leak_round(m, &tr, &va, &err);
    leak_round(m, &tr, &va, &err);
    struct mallinfo2 before = mallinfo2();
    int cancelled = 0;
    for (int r = 0; r < 5; r++)
        cancelled += leak_round(m, &tr, &va, &err);
    struct mallinfo2 after = mallinfo2();
    CHECK(cancelled == 50, "%d of 50 trainings returned BFT_ECANCEL at the right step", cancelled);
    /* A leak in the cancel, failure or success path repeats 50, 5 or 5 times:
     * at least 5 chunks of >= 32 bytes (glibc's smallest), 160 bytes. glibc
     * itself once showed 96 bytes more in the main arena (1 run in ~20:
     * lazily made per-thread state), so 128 bytes of slack are allowed. */
    CHECK(after.uordblks <= before.uordblks + 128 && before.uordblks <= after.uordblks + 128,
          "heap in use %zu -> %zu bytes after 50 cancels, 5 failures, 5 trainings, 5 predictions",
          before.uordblks, after.uordblks);
    toy_free(&tr);
    toy_free(&va);
    bft_model_free(m);
}

static void test_partial_batch_and_schedule(void)
{
    bft_model *m = load("tiny");
    if (!m)
        return;
    toy tr;
    toy_make(&tr, 10, 11, 3);
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 3;
    o.batch_size = 4;       /* 4 + 4 + 2 */
    o.warmup_ratio = 0.3;   /* total 9, warmup ceil(2.7) = 3 */
    o.learning_rate = 1e-3;
    cb_ctx c = {0};
    bft_error err;
    bft_train_result res;
    CHECK(bft_train(m, &tr.ds, &o, cb, &c, &res, &err) == 0, "train: %s", err.msg);
    CHECK(c.steps == 9 && c.total == 9 && res.steps == 9, "steps %d total %lld", c.steps, (long long)c.total);
    int64_t total = 9, warmup = 3;
    for (int s = 0; s < c.steps; s++) {
        double expect = s < warmup ? 1e-3 * s / warmup : 1e-3 * (double)(total - s) / (total - warmup);
        CHECK(fabs(c.lrs[s] - expect) <= 1e-9 + 1e-6 * expect, "step %d lr %.9g, expected %.9g", s, c.lrs[s], expect);
    }
    CHECK(c.lrs[0] == 0.0, "first update lr %g", c.lrs[0]);
    CHECK(c.epochs_seen == 3 && c.worst_mean_diff <= 1e-6 * fabs(c.last_loss),
          "the step losses average to the epoch loss (worst difference %g)", c.worst_mean_diff);
    /* no warmup: first update uses the full lr */
    o.warmup_ratio = 0.0;
    cb_ctx c2 = {0};
    CHECK(bft_train(m, &tr.ds, &o, cb, &c2, &res, &err) == 0, "train: %s", err.msg);
    CHECK(fabs(c2.lrs[0] - 1e-3) < 1e-9 && fabs(c2.lrs[8] - 1e-3 / 9) < 1e-9, "lrs %g %g", c2.lrs[0], c2.lrs[8]);
    toy_free(&tr);
    bft_model_free(m);
}

/* Warmup step counts where total x ratio is (mathematically) an integer: the
 * expected counts are Python's math.ceil(total * ratio) (Trainer's
 * get_warmup_steps), e.g. 20 x 0.1 = 2.0 -> 2 (a float ratio, 0.1f, made it 3)
 * and 100 x 0.07 = 7.000000000000001 -> 8. The warmup count is read off the
 * learning rates: 0 at update 0, below the base lr during warmup, then exactly
 * the base lr at update `warmup`, then linear decay. Both counts are also
 * checked through bft-cli's --warmup-ratio (tests/scripts/test_cli.sh). */
static void test_warmup_integer_products(void)
{
    static const struct {
        int total;
        double ratio;
        int warmup; /* Python: math.ceil(total * ratio) */
    } cases[] = {
        {20, 0.1, 2}, {30, 0.1, 3}, {10, 0.3, 3}, {10, 0.2, 2}, {5, 0.2, 1},
        {40, 0.05, 2}, {20, 0.15, 3}, {50, 0.06, 3}, {12, 0.25, 3}, {100, 0.07, 8},
        {9, 0.3, 3}, {10, 1.0, 10},
    };
    bft_model *m = load("tiny");
    if (!m)
        return;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int total = cases[k].total, w = cases[k].warmup;
        toy tr;
        toy_make(&tr, total, 40 + k, 3);
        bft_train_opts o = bft_train_default_opts();
        o.epochs = 1;
        o.batch_size = 1;
        o.learning_rate = 1e-3;
        o.warmup_ratio = cases[k].ratio;
        o.shuffle = 0;
        cb_ctx c = {0};
        bft_error err;
        bft_train_result res;
        CHECK(bft_train(m, &tr.ds, &o, cb, &c, &res, &err) == 0, "train: %s", err.msg);
        CHECK(c.steps == total, "steps %d, expected %d", c.steps, total);
        int seen = -1; /* first update at the full base lr */
        for (int s = 0; s < c.steps && s < 256; s++)
            if (c.lrs[s] == 1e-3) {
                seen = s;
                break;
            }
        CHECK(seen == (w < total ? w : -1) || (w == total && seen == -1),
              "%d steps x warmup_ratio %g: warmup %d steps, Trainer's is %d", total,
              cases[k].ratio, seen, w);
        for (int s = 0; s < c.steps && s < 256; s++) {
            double expect = s < w ? 1e-3 * ((double)s / w)
                                  : 1e-3 * ((double)(total - s) / (total - w > 1 ? total - w : 1));
            CHECK(c.lrs[s] == expect, "%d x %g: update %d lr %.9g, expected %.9g", total,
                  cases[k].ratio, s, c.lrs[s], expect);
        }
        toy_free(&tr);
    }
    bft_model_free(m);
}

static void test_predict_order_and_eval(void)
{
    bft_model *m = load("tiny");
    if (!m)
        return;
    toy va;
    toy_make(&va, 37, 12, 3);
    int K = m->cfg.num_labels, n = (int)va.ds.n;
    float *pb = malloc((size_t)n * K * sizeof *pb), *p1 = malloc((size_t)n * K * sizeof *p1);
    bft_error err;
    CHECK(bft_predict(m, &va.ds, 8, pb, &err) == 0, "predict: %s", err.msg);
    for (int i = 0; i < n; i++) {
        bft_dataset one = {1, va.tok + va.off[i], (int64_t[]){0, va.off[i + 1] - va.off[i]}, NULL,
                           NULL, NULL};
        CHECK(bft_predict(m, &one, 1, p1 + (size_t)i * K, &err) == 0, "predict one: %s", err.msg);
    }
    double worst = 0.0;
    for (int i = 0; i < n * K; i++)
        worst = fmax(worst, fabs(pb[i] - p1[i]));
    CHECK(worst <= 1e-6, "batched vs single probabilities differ by %g", worst);
    /* evaluation vs the predictions */
    float loss, acc, f1;
    int64_t conf[9];
    CHECK(bft_evaluate_ds(m, &va.ds, 5, &loss, &acc, &f1, conf, &err) == 0, "evaluate: %s", err.msg);
    int64_t cm[9] = {0};
    double l = 0.0;
    int correct = 0;
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int k = 1; k < K; k++)
            if (pb[i * K + k] > pb[i * K + best])
                best = k;
        correct += best == va.lab[i];
        cm[va.lab[i] * K + best]++;
        l -= log(pb[i * K + va.lab[i]]);
    }
    double f = 0.0;
    int cls = 0;
    for (int k = 0; k < K; k++) {
        int64_t tp = cm[k * K + k], fp = 0, fn = 0;
        for (int j = 0; j < K; j++)
            if (j != k) {
                fp += cm[j * K + k];
                fn += cm[k * K + j];
            }
        if (tp + fp + fn) {
            cls++;
            f += 2.0 * tp / (2.0 * tp + fp + fn);
        }
    }
    CHECK(memcmp(cm, conf, sizeof cm) == 0, "confusion matrix differs");
    CHECK(fabs(acc - (double)correct / n) < 1e-6, "accuracy %g vs %g", acc, (double)correct / n);
    CHECK(fabs(f1 - f / cls) < 1e-6, "macro-F1 %g vs %g", f1, f / cls);
    CHECK(fabs(loss - l / n) < 1e-5, "loss %g vs %g", loss, l / n);
    free(pb);
    free(p1);
    toy_free(&va);
    bft_model_free(m);
}

static void test_mlm_pretraining(void)
{
    toy tr;
    toy_make(&tr, 64, 13, 3);
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 8;
    o.batch_size = 8;
    o.learning_rate = 2e-3f;
    o.mlm_probability = 0.3f;
    bft_model *m[2];
    float first = 0, last = 0;
    bft_error err;
    for (int k = 0; k < 2; k++) {
        m[k] = load("tiny_mlm");
        if (!m[k])
            return;
        cb_ctx c = {0};
        CHECK(bft_pretrain_mlm(m[k], &tr.ds, &o, cb, &c, NULL, &err) == 0, "mlm: %s", err.msg);
        first = c.first_loss;
        last = c.last_loss;
    }
    printf("  MLM epoch loss %.3f -> %.3f\n", first, last);
    CHECK(last < 0.8f * first, "MLM loss %.3f -> %.3f", first, last);
    CHECK(memcmp(m[0]->params_mem, m[1]->params_mem, m[0]->num_params * sizeof(float)) == 0,
          "MLM pre-training not deterministic");
    /* fill-mask works on the pre-trained model */
    int32_t ids[6] = {2, 30, 4, 31, 4, 3}, oid[10];
    float osc[10];
    int nm = 0;
    CHECK(bft_fill_mask(m[0], ids, 6, 5, 2, &nm, oid, osc, &err) == 0 && nm == 2, "fill-mask %s", err.msg);
    for (int k = 0; k < 2; k++)
        bft_model_free(m[k]);
    toy_free(&tr);
}

/* Two models trained at the same time from two threads (the engine is
 * thread-safe for different models): both succeed and give the weights a
 * sequential training gives (the pool is used by one, the other runs its loops
 * itself; every op gives the same result for any split). */
typedef struct {
    bft_model *m;
    toy *tr;
    int rc;
} thr_arg;

static void *thr_train(void *p)
{
    thr_arg *a = p;
    bft_train_opts o = bft_train_default_opts();
    bft_error err;
    o.epochs = 2;
    o.batch_size = 8;
    o.learning_rate = 1e-3f;
    o.seed = 21;
    a->rc = bft_train(a->m, &a->tr->ds, &o, NULL, NULL, NULL, &err);
    return NULL;
}

static void test_concurrent_models(void)
{
    toy tr;
    toy_make(&tr, 48, 20, 3);
    /* hidden 128 / intermediate 512: large enough for the GEMMs to be split over the pool */
    bft_model *tiny = load("tiny");
    if (!tiny)
        return;
    bft_config cfg;
    bft_error err;
    CHECK(bft_config_copy(&cfg, &tiny->cfg) == 0, "config copy");
    cfg.hidden_size = 128;
    cfg.intermediate_size = 512;
    bft_parts parts = {1, 1, 0, 0};
    bft_model *ref = bft_model_new(&cfg, tiny->vocab, tiny->vocab_len, parts, 5, &err);
    bft_model *m1 = bft_model_new(&cfg, tiny->vocab, tiny->vocab_len, parts, 5, &err);
    bft_model *m2 = bft_model_new(&cfg, tiny->vocab, tiny->vocab_len, parts, 5, &err);
    bft_config_release(&cfg);
    bft_model_free(tiny);
    CHECK(ref && m1 && m2, "bft_model_new: %s", err.msg);
    if (!ref || !m1 || !m2)
        return;
    thr_arg r = {ref, &tr, -1}, a1 = {m1, &tr, -1}, a2 = {m2, &tr, -1};
    thr_train(&r);
    pthread_t t1, t2;
    pthread_create(&t1, NULL, thr_train, &a1);
    pthread_create(&t2, NULL, thr_train, &a2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(r.rc == 0 && a1.rc == 0 && a2.rc == 0, "rc %d %d %d", r.rc, a1.rc, a2.rc);
    size_t bytes = ref->num_params * sizeof(float);
    CHECK(memcmp(ref->params_mem, m1->params_mem, bytes) == 0, "thread 1 weights differ from sequential");
    CHECK(memcmp(ref->params_mem, m2->params_mem, bytes) == 0, "thread 2 weights differ from sequential");
    bft_model_free(ref);
    bft_model_free(m1);
    bft_model_free(m2);
    toy_free(&tr);
}

/* Per-epoch snapshots of the weights and evaluation (epoch callback). */
typedef struct {
    const bft_model *m;
    int epochs;
    float *snap[16];
    float eval_loss[16], eval_acc[16], eval_f1[16];
} snap_ctx;

static int snap_cb(void *vp, const bft_progress *p)
{
    snap_ctx *c = vp;
    if (p->phase != 1 || p->epoch > 15)
        return 0;
    c->epochs = p->epoch;
    c->snap[p->epoch] = malloc(c->m->num_params * sizeof(float));
    memcpy(c->snap[p->epoch], c->m->params_mem, c->m->num_params * sizeof(float));
    c->eval_loss[p->epoch] = p->eval_loss;
    c->eval_acc[p->epoch] = p->eval_accuracy;
    c->eval_f1[p->epoch] = p->eval_macro_f1;
    return 0;
}

static void snap_free(snap_ctx *c)
{
    for (int e = 0; e < 16; e++)
        free(c->snap[e]);
}

/* Validation rows labelled (k + 1) mod 3 where the training rows say k: the
 * better the model learns, the worse it does on them, so the best validation
 * loss comes early and the last epoch is not the best. */
static void test_best_epoch_early_stopping(void)
{
    toy tr, va;
    toy_make(&tr, 48, 21, 3);
    toy_make(&va, 24, 22, 3);
    for (int i = 0; i < 24; i++)
        va.lab[i] = (va.lab[i] + 1) % 3;
    for (int load_best = 1; load_best >= 0; load_best--) {
        bft_model *m = load("tiny");
        if (!m)
            break;
        bft_train_opts o = bft_train_default_opts();
        o.epochs = 10;
        o.batch_size = 8;
        o.learning_rate = 3e-3f;
        o.valid = &va.ds;
        o.seed = 4;
        o.load_best_model_at_end = load_best;
        o.metric_for_best = BFT_METRIC_LOSS;
        o.early_stopping_patience = 2;
        snap_ctx c;
        memset(&c, 0, sizeof c);
        c.m = m;
        bft_train_result res;
        bft_error err;
        int rc = bft_train(m, &tr.ds, &o, snap_cb, &c, &res, &err);
        CHECK(rc == 0, "train: %s", err.msg);
        int best = 1;
        for (int e = 2; e <= c.epochs; e++)
            if (c.eval_loss[e] < c.eval_loss[best])
                best = e;
        printf("  load_best %d: validation loss", load_best);
        for (int e = 1; e <= c.epochs; e++)
            printf(" %.3f", c.eval_loss[e]);
        printf("; best epoch %d, ran %d, kept %d, early stop %d\n", res.best_epoch, res.epochs,
               res.kept_epoch, res.early_stopped);
        CHECK(best < c.epochs, "the best epoch (%d) must not be the last (%d)", best, c.epochs);
        CHECK(res.best_epoch == best, "best epoch %d, expected %d", res.best_epoch, best);
        CHECK(res.best_metric == c.eval_loss[best], "best metric %g vs %g", res.best_metric,
              c.eval_loss[best]);
        CHECK(c.epochs == best + 2 && res.epochs == c.epochs && res.early_stopped == 1,
              "stopped after epoch %d (best %d, patience 2), early_stopped %d", c.epochs, best,
              res.early_stopped);
        CHECK(res.steps == (int64_t)c.epochs * 6, "steps %lld", (long long)res.steps);
        int kept = load_best ? best : c.epochs;
        CHECK(res.kept_epoch == kept, "kept epoch %d, expected %d", res.kept_epoch, kept);
        CHECK(c.snap[kept] && memcmp(m->params_mem, c.snap[kept], m->num_params * sizeof(float)) == 0,
              "the returned weights are not epoch %d's", kept);
        CHECK(res.eval_loss == c.eval_loss[kept] && res.eval_accuracy == c.eval_acc[kept] &&
                  res.eval_macro_f1 == c.eval_f1[kept],
              "result metrics are not epoch %d's", kept);
        float l, a, f;
        CHECK(bft_evaluate_ds(m, &va.ds, 32, &l, &a, &f, NULL, &err) == 0, "eval: %s", err.msg);
        CHECK(fabsf(l - res.eval_loss) <= 1e-6f * fmaxf(1.0f, l) && a == res.eval_accuracy,
              "re-evaluated %g/%g vs reported %g/%g", l, a, res.eval_loss, res.eval_accuracy);
        snap_free(&c);
        bft_model_free(m);
    }
    /* by accuracy (higher is better) on honest validation rows: no early stop
     * when it keeps improving or ties are not improvements */
    {
        bft_model *m = load("tiny");
        toy hv;
        toy_make(&hv, 24, 23, 3);
        bft_train_opts o = bft_train_default_opts();
        o.epochs = 6;
        o.batch_size = 8;
        o.learning_rate = 3e-3f;
        o.valid = &hv.ds;
        o.seed = 4;
        o.load_best_model_at_end = 1;
        o.metric_for_best = BFT_METRIC_ACCURACY;
        snap_ctx c;
        memset(&c, 0, sizeof c);
        c.m = m;
        bft_train_result res;
        bft_error err;
        CHECK(bft_train(m, &tr.ds, &o, snap_cb, &c, &res, &err) == 0, "train: %s", err.msg);
        int best = 1;
        for (int e = 2; e <= c.epochs; e++)
            if (c.eval_acc[e] > c.eval_acc[best])
                best = e;
        CHECK(c.epochs == 6 && !res.early_stopped, "ran %d epochs", c.epochs);
        CHECK(res.best_epoch == best && res.kept_epoch == best && res.best_metric == c.eval_acc[best],
              "accuracy: best %d kept %d, expected %d", res.best_epoch, res.kept_epoch, best);
        CHECK(memcmp(m->params_mem, c.snap[best], m->num_params * sizeof(float)) == 0,
              "weights are not epoch %d's", best);
        printf("  by accuracy: best epoch %d (%.3f) of 6\n", best, c.eval_acc[best]);
        snap_free(&c);
        toy_free(&hv);
        bft_model_free(m);
    }
    toy_free(&tr);
    toy_free(&va);
}

/* Progress for the resume tests: cancel at a step, count restored epochs. */
typedef struct {
    int64_t cancel_at;
    int restored, computed;
    float epoch_loss[16];
} resume_ctx;

static int resume_cb(void *vp, const bft_progress *p)
{
    resume_ctx *c = vp;
    if (p->phase == 0)
        return c->cancel_at && p->step == c->cancel_at;
    if (p->restored)
        c->restored++;
    else
        c->computed++;
    if (p->epoch < 16)
        c->epoch_loss[p->epoch] = p->loss;
    return 0;
}

static void test_resume(void)
{
    char path[64], other[64];
    snprintf(path, sizeof path, "/tmp/bft_test_state_%d", (int)getpid());
    snprintf(other, sizeof other, "/tmp/bft_test_state_%d.b", (int)getpid());
    toy tr, va;
    toy_make(&tr, 44, 31, 3); /* 6 batches of 8, the last partial */
    toy_make(&va, 24, 32, 3);
    float cw[3] = {1.0f, 2.0f, 0.5f};
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 5;
    o.batch_size = 8;
    o.learning_rate = 3e-3f;
    o.warmup_ratio = 0.2f;
    o.dropout = 0.1f;
    o.group_by_length = 1;
    o.valid = &va.ds;
    o.seed = 8;
    o.class_weights = cw;
    o.load_best_model_at_end = 1;
    o.metric_for_best = BFT_METRIC_MACRO_F1;
    o.state_salt = 77;
    bft_error err;

    /* uninterrupted, saving its state */
    bft_model *a = load("tiny"), *b = load("tiny");
    if (!a || !b)
        return;
    bft_train_result ra, rb;
    resume_ctx ca = {0, 0, 0, {0}}, cb2 = {0, 0, 0, {0}};
    o.state_path = other;
    CHECK(bft_train(a, &tr.ds, &o, resume_cb, &ca, &ra, &err) == 0, "train: %s", err.msg);
    bft_train_state_info_t info;
    CHECK(bft_train_state_info(other, &info, &err) == 0 && info.epochs_done == 5 && info.task == 0 &&
              info.step == ra.steps,
          "state info: %s (done %d)", err.msg, info.epochs_done);

    /* cancelled in epoch 3, then resumed */
    o.state_path = path;
    cb2.cancel_at = 2 * 6 + 3;
    CHECK(bft_train(b, &tr.ds, &o, resume_cb, &cb2, &rb, &err) == BFT_ECANCEL, "cancel: %s", err.msg);
    CHECK(bft_train_state_info(path, &info, &err) == 0 && info.epochs_done == 2, "state after cancel: %d",
          info.epochs_done);
    bft_model_free(b);
    b = load("tiny");
    resume_ctx cr = {0, 0, 0, {0}};
    o.resume_path = path;
    CHECK(bft_train(b, &tr.ds, &o, resume_cb, &cr, &rb, &err) == 0, "resume: %s", err.msg);
    CHECK(cr.restored == 2 && cr.computed == 3 && rb.resumed_epochs == 2, "restored %d computed %d",
          cr.restored, cr.computed);
    CHECK(memcmp(a->params_mem, b->params_mem, a->num_params * sizeof(float)) == 0,
          "resumed weights differ from the uninterrupted run's");
    CHECK(ra.steps == rb.steps && ra.train_loss == rb.train_loss && ra.eval_loss == rb.eval_loss &&
              ra.eval_macro_f1 == rb.eval_macro_f1 && ra.best_epoch == rb.best_epoch &&
              ra.kept_epoch == rb.kept_epoch && ra.epochs == rb.epochs,
          "results differ: loss %.9g/%.9g eval %.9g/%.9g best %d/%d", ra.train_loss, rb.train_loss,
          ra.eval_loss, rb.eval_loss, ra.best_epoch, rb.best_epoch);
    CHECK(memcmp(ca.epoch_loss, cr.epoch_loss, sizeof ca.epoch_loss) == 0, "per-epoch losses differ");
    printf("  cancelled in epoch 3, resumed: weights bitwise equal, train loss %.7f, kept epoch %d\n",
           rb.train_loss, rb.kept_epoch);

    /* a finished state: nothing left to do, same result */
    bft_model_free(b);
    b = load("tiny");
    o.resume_path = other;
    o.state_path = NULL;
    resume_ctx cf = {0, 0, 0, {0}};
    CHECK(bft_train(b, &tr.ds, &o, resume_cb, &cf, &rb, &err) == 0, "resume finished: %s", err.msg);
    CHECK(cf.computed == 0 && cf.restored == 5 && rb.steps == ra.steps &&
              memcmp(a->params_mem, b->params_mem, a->num_params * sizeof(float)) == 0,
          "resuming a finished state: computed %d epochs", cf.computed);

    /* another training's state: other seed, other salt, other data */
    o.seed = 9;
    CHECK(bft_train(b, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EMISMATCH, "other seed: %s", err.msg);
    o.seed = 8;
    o.state_salt = 78;
    CHECK(bft_train(b, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EMISMATCH, "other salt: %s", err.msg);
    o.state_salt = 77;
    tr.lab[5] = (tr.lab[5] + 1) % 3;
    CHECK(bft_train(b, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EMISMATCH, "other data: %s", err.msg);
    tr.lab[5] = (tr.lab[5] + 2) % 3;

    /* corrupt and truncated files */
    FILE *f = fopen(other, "r+b");
    long size = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        fseek(f, size / 2, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, size / 2, SEEK_SET);
        fputc(ch ^ 0x40, f);
        fclose(f);
    }
    CHECK(size > 0 && bft_train(b, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EFORMAT &&
              strstr(err.msg, "checksum"),
          "corrupt state: %s", err.msg);
    CHECK(truncate(other, size - 100) == 0, "truncate");
    CHECK(bft_train(b, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EFORMAT, "truncated state: %s", err.msg);
    o.resume_path = "/nonexistent/state";
    CHECK(bft_train(b, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EIO, "missing state: %s", err.msg);

    /* MLM pre-training: cancelled in epoch 2 of 3, resumed */
    bft_model *ma = load("tiny_mlm"), *mb = load("tiny_mlm");
    if (ma && mb) {
        bft_train_opts mo = bft_train_default_opts();
        mo.epochs = 3;
        mo.batch_size = 8;
        mo.learning_rate = 2e-3f;
        mo.seed = 5;
        mo.state_path = path;
        bft_dataset un = tr.ds;
        un.labels = NULL;
        bft_train_result r1, r2;
        CHECK(bft_pretrain_mlm(ma, &un, &mo, NULL, NULL, &r1, &err) == 0, "mlm: %s", err.msg);
        resume_ctx cm = {6 + 2, 0, 0, {0}};
        CHECK(bft_pretrain_mlm(mb, &un, &mo, resume_cb, &cm, NULL, &err) == BFT_ECANCEL, "mlm cancel");
        bft_model_free(mb);
        mb = load("tiny_mlm");
        mo.resume_path = path;
        CHECK(bft_pretrain_mlm(mb, &un, &mo, NULL, NULL, &r2, &err) == 0, "mlm resume: %s", err.msg);
        CHECK(memcmp(ma->params_mem, mb->params_mem, ma->num_params * sizeof(float)) == 0 &&
                  r1.train_loss == r2.train_loss && r2.resumed_epochs == 1,
              "resumed MLM differs (loss %.9g vs %.9g, resumed %d)", r1.train_loss, r2.train_loss,
              r2.resumed_epochs);
        /* a fine-tuning state is not an MLM state */
        CHECK(bft_train_state_info(path, &info, &err) == 0 && info.task == 1, "mlm state task %d", info.task);
    }
    bft_model_free(ma);
    bft_model_free(mb);
    unlink(path);
    unlink(other);
    bft_model_free(a);
    bft_model_free(b);
    toy_free(&tr);
    toy_free(&va);
}

static void test_errors(void)
{
    bft_model *m = load("tiny");
    bft_model *nohead = load("tiny_noprefix");
    if (!m || !nohead)
        return;
    toy tr;
    toy_make(&tr, 8, 14, 3);
    bft_train_opts o = bft_train_default_opts();
    bft_error err;
    tr.lab[3] = 7;
    CHECK(bft_train(m, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL && strstr(err.msg, "label"),
          "bad label: %s", err.msg);
    tr.lab[3] = 1;
    tr.tok[5] = 100000;
    CHECK(bft_train(m, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL && strstr(err.msg, "token"),
          "bad token: %s", err.msg);
    tr.tok[5] = 40;
    CHECK(bft_train(nohead, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL, "no classifier: %s", err.msg);
    CHECK(bft_pretrain_mlm(m, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL, "no MLM head: %s", err.msg);
    o.epochs = 0;
    CHECK(bft_train(m, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL, "epochs 0: %s", err.msg);
    o = bft_train_default_opts();
    bft_dataset empty = {0, tr.tok, tr.off, tr.lab, NULL, NULL};
    CHECK(bft_train(m, &empty, &o, NULL, NULL, NULL, &err) == BFT_EINVAL, "empty: %s", err.msg);
    o.load_best_model_at_end = 1;
    CHECK(bft_train(m, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL && strstr(err.msg, "validation"),
          "load_best without validation: %s", err.msg);
    o = bft_train_default_opts();
    o.early_stopping_patience = 1;
    CHECK(bft_train(m, &tr.ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL && strstr(err.msg, "validation"),
          "early stopping without validation: %s", err.msg);
    o = bft_train_default_opts();
    int32_t longseq[80] = {0};
    int64_t off[2] = {0, 80};
    bft_dataset lng = {1, longseq, off, NULL, NULL, NULL};
    float probs[3];
    CHECK(bft_predict(m, &lng, 4, probs, &err) == BFT_EINVAL && strstr(err.msg, "max_position"),
          "too long: %s", err.msg);
    toy_free(&tr);
    bft_model_free(m);
    bft_model_free(nohead);
}

int main(void)
{
    RUN(test_learns_toy_task);
    RUN(test_deterministic);
    RUN(test_cancel_no_leak);
    RUN(test_partial_batch_and_schedule);
    RUN(test_warmup_integer_products);
    RUN(test_predict_order_and_eval);
    RUN(test_mlm_pretraining);
    RUN(test_best_epoch_early_stopping);
    RUN(test_resume);
    RUN(test_concurrent_models);
    RUN(test_errors);
    return test_summary();
}
