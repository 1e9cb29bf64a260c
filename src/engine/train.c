/*
 * train.c — fine-tuning with Hugging Face Trainer semantics, MLM pre-training,
 * batched inference, evaluation and fill-mask (see train.h).
 *
 * Trainer semantics reproduced here:
 *   - AdamW as torch.optim.AdamW (decoupled decay p *= 1 - lr*wd, bias
 *     correction), weight decay only on tensors params.c marks `decay`
 *     (never biases or LayerNorm weights);
 *   - get_linear_schedule_with_warmup: warmup = ceil(total * warmup_ratio),
 *     lr(step) = base * step/warmup while step < warmup, then
 *     base * (total - step)/(total - warmup); the scheduler is stepped after
 *     the optimizer, so update number s (0-based) uses lr(s): the first update
 *     uses lr 0 whenever warmup > 0;
 *   - clip_grad_norm_(max_grad_norm): coef = max / (norm + 1e-6), applied when < 1;
 *   - loss = mean over the batch, last partial batch kept, dynamic padding.
 * The parameters of the parts a task does not use (the MLM head when
 * fine-tuning a classifier; pooler and classifier when pre-training) are left
 * untouched, as they are absent from HF's BertForSequenceClassification /
 * BertForMaskedLM.
 *
 * Memory: parameters, gradients and AdamW m and v are one allocation each
 * (the gradient block has named pointers like the parameters); activations are
 * one allocation sized for the largest batch. Every return path frees all of it.
 */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "embed.h"
#include "metrics.h"
#include "bert.h"
#include "ops.h"
#include "rng.h"
#include "threads.h"
#include "train_state.h"

bft_train_opts bft_train_default_opts(void)
{
    bft_train_opts o;
    memset(&o, 0, sizeof o);
    o.epochs = 3;
    o.batch_size = 8;
    o.learning_rate = 5e-5;
    o.warmup_ratio = 0.0;
    o.weight_decay = 0.0;
    o.max_grad_norm = 1.0f;
    o.adam_beta1 = 0.9;
    o.adam_beta2 = 0.999;
    o.adam_eps = 1e-8;
    o.dropout = -1.0f;
    o.shuffle = 1;
    o.group_by_length = 0;
    o.seed = 42;
    o.valid = NULL;
    o.mlm_probability = 0.15f;
    return o;
}

void bft_set_threads(int n)
{
    bft_threads_set(n);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- datasets */

static int64_t ex_len(const bft_dataset *ds, int64_t i)
{
    return ds->offsets[i + 1] - ds->offsets[i];
}

static int is_multi(const bft_model *m)
{
    return m->cfg.problem_type == BFT_PROBLEM_MULTI_LABEL;
}

/* Check shape, ids and labels of ds against the model; *maxlen gets the longest. */
static int check_dataset(const bft_model *m, const bft_dataset *ds, int need_labels, int K,
                         const char *what, int *maxlen, bft_error *err)
{
    const bft_config *cfg = &m->cfg;
    int multi = need_labels && is_multi(m);
    if (!ds || ds->n <= 0 || !ds->offsets || !ds->tokens)
        return bft_set_error(err, BFT_EINVAL, "%s dataset is empty", what);
    if (need_labels && !multi && !ds->labels)
        return bft_set_error(err, BFT_EINVAL, "%s dataset has no labels", what);
    if (multi && (!ds->label_offsets || !ds->label_ids))
        return bft_set_error(err, BFT_EINVAL, "%s dataset has no label sets (multi-label model)", what);
    if (ds->offsets[0] < 0)
        return bft_set_error(err, BFT_EINVAL, "%s dataset: offsets[0] is negative", what);
    int64_t mx = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        int64_t len = ex_len(ds, i);
        if (len < 1)
            return bft_set_error(err, BFT_EINVAL, "%s example %lld is empty", what, (long long)i);
        if (len > cfg->max_position_embeddings)
            return bft_set_error(err, BFT_EINVAL,
                                 "%s example %lld has %lld tokens, more than max_position_embeddings %d",
                                 what, (long long)i, (long long)len, cfg->max_position_embeddings);
        if (len > mx)
            mx = len;
        for (int64_t k = ds->offsets[i]; k < ds->offsets[i + 1]; k++)
            if (ds->tokens[k] < 0 || ds->tokens[k] >= cfg->vocab_size)
                return bft_set_error(err, BFT_EINVAL, "%s example %lld: token id %d outside [0, %d)",
                                     what, (long long)i, ds->tokens[k], cfg->vocab_size);
        if (need_labels && !multi && (ds->labels[i] < 0 || ds->labels[i] >= K))
            return bft_set_error(err, BFT_EINVAL, "%s example %lld: label %d outside [0, %d)", what,
                                 (long long)i, ds->labels[i], K);
        if (multi) {
            if (ds->label_offsets[i + 1] < ds->label_offsets[i] || (i == 0 && ds->label_offsets[0] < 0))
                return bft_set_error(err, BFT_EINVAL, "%s example %lld: label offsets decrease", what,
                                     (long long)i);
            for (int64_t k = ds->label_offsets[i]; k < ds->label_offsets[i + 1]; k++)
                if (ds->label_ids[k] < 0 || ds->label_ids[k] >= K)
                    return bft_set_error(err, BFT_EINVAL, "%s example %lld: label %d outside [0, %d)",
                                         what, (long long)i, ds->label_ids[k], K);
        }
    }
    *maxlen = (int)mx;
    return 0;
}

/* Fill a padded batch from examples idx[0..B): ids (B,T), lens, labels; targets
 * (B,K) multi-hot from the label sets when not NULL (multi-label models). */
static void make_batch(const bft_dataset *ds, const int64_t *idx, int B, int pad_id, int32_t *ids,
                       int32_t *lens, int32_t *labels, float *targets, int K, bert_batch *bt)
{
    int T = 1;
    for (int b = 0; b < B; b++) {
        int len = (int)ex_len(ds, idx[b]);
        lens[b] = len;
        if (len > T)
            T = len;
    }
    for (int b = 0; b < B; b++) {
        const int32_t *src = ds->tokens + ds->offsets[idx[b]];
        int32_t *dst = ids + (size_t)b * T;
        memcpy(dst, src, (size_t)lens[b] * sizeof *dst);
        for (int t = lens[b]; t < T; t++)
            dst[t] = pad_id;
        if (labels)
            labels[b] = ds->labels ? ds->labels[idx[b]] : -1;
        if (targets) {
            float *y = targets + (size_t)b * K;
            memset(y, 0, (size_t)K * sizeof *y);
            for (int64_t k = ds->label_offsets[idx[b]]; k < ds->label_offsets[idx[b] + 1]; k++)
                y[ds->label_ids[k]] = 1.0f;
        }
    }
    bt->B = B;
    bt->T = T;
    bt->ids = ids;
    bt->lens = lens;
    bt->labels = labels;
    bt->targets = targets;
    bt->weights = NULL;
}

/* Stable order of examples by increasing length (for inference batching). */
static int64_t *order_by_length(const bft_dataset *ds)
{
    int64_t n = ds->n, mx = 0;
    for (int64_t i = 0; i < n; i++)
        if (ex_len(ds, i) > mx)
            mx = ex_len(ds, i);
    int64_t *cnt = calloc((size_t)mx + 2, sizeof *cnt);
    int64_t *order = malloc((size_t)n * sizeof *order);
    if (!cnt || !order) {
        free(cnt);
        free(order);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        cnt[ex_len(ds, i) + 1]++;
    for (int64_t l = 1; l <= mx + 1; l++)
        cnt[l] += cnt[l - 1];
    for (int64_t i = 0; i < n; i++)
        order[cnt[ex_len(ds, i)]++] = i;
    free(cnt);
    return order;
}

/* Copy a host batch into the device buffers ids (B*T), lens (B), labels (B),
 * targets (B*K) and point bt at them (plain copies on the CPU backend). */
static void stage_batch(bert_batch *bt, int32_t *ids, int32_t *lens, int32_t *labels,
                        float *targets, int K)
{
    bft_dev_upload(ids, bt->ids, (size_t)bt->B * bt->T * sizeof *ids);
    bft_dev_upload(lens, bt->lens, (size_t)bt->B * sizeof *lens);
    bt->ids = ids;
    bt->lens = lens;
    if (bt->labels && labels) {
        bft_dev_upload(labels, bt->labels, (size_t)bt->B * sizeof *labels);
        bt->labels = labels;
    }
    if (bt->targets && targets) {
        bft_dev_upload(targets, bt->targets, (size_t)bt->B * K * sizeof *targets);
        bt->targets = targets;
    }
}

/* ---------------------------------------------------------------- inference */

/* Eval-mode forward over ds in length-sorted batches: probs (n,K) and, when
 * losses is given (labeled ds), per-example cross-entropy (n). */
static int run_inference(const bft_model *m, const bft_dataset *ds, int batch_size, float *probs,
                         float *losses, int (*poll)(void *), void *poll_ctx, bft_error *err)
{
    const bft_config *cfg = &m->cfg;
    int K = cfg->num_labels, maxlen = 0, rc;
    if (!m->parts.classifier || K < 1 || !m->p.clsw)
        return bft_set_error(err, BFT_EINVAL, "the model has no classifier");
    if (!m->parts.pooler || !m->p.poolw)
        return bft_set_error(err, BFT_EINVAL, "the model has no pooler");
    if ((rc = check_dataset(m, ds, losses != NULL, K, "input", &maxlen, err)) != 0)
        return rc;
    if (batch_size <= 0)
        batch_size = 32;
    if (batch_size > ds->n)
        batch_size = (int)ds->n;

    bert_acts a;
    int have_acts = 0;
    int64_t *order = order_by_length(ds);
    int32_t *ids = malloc((size_t)batch_size * maxlen * sizeof *ids);
    int32_t *lens = malloc((size_t)batch_size * sizeof *lens);
    int32_t *labels = malloc((size_t)batch_size * sizeof *labels);
    float *bprobs = malloc((size_t)batch_size * K * sizeof *bprobs);
    float *blosses = malloc((size_t)batch_size * sizeof *blosses);
    /* multi-label losses: (B,K) targets */
    int multi = losses && is_multi(m);
    float *targets = multi ? malloc((size_t)batch_size * K * sizeof *targets) : NULL;
    /* the batch on m's device (the current backend; host memory on the CPU) */
    int32_t *d_ids = bft_dev_alloc((size_t)batch_size * maxlen * sizeof *d_ids);
    int32_t *d_lens = bft_dev_alloc((size_t)batch_size * sizeof *d_lens);
    int32_t *d_labels = bft_dev_alloc((size_t)batch_size * sizeof *d_labels);
    float *d_targets = multi ? bft_dev_alloc((size_t)batch_size * K * sizeof *d_targets) : NULL;
    if (order && ids && lens && labels && bprobs && blosses && d_ids && d_lens && d_labels &&
        (!multi || (targets && d_targets)) &&
        bert_acts_alloc(&a, cfg, K, batch_size, maxlen, 0) == 0)
        have_acts = 1;
    if (!have_acts) {
        rc = bft_dev_check(err);
        if (rc == BFT_OK)
            rc = bft_set_error(err, BFT_ENOMEM, "out of memory for inference (batch %d x %d tokens)",
                               batch_size, maxlen);
        goto done;
    }
    for (int64_t s = 0; s < ds->n; s += batch_size) {
        int B = (int)(ds->n - s < batch_size ? ds->n - s : batch_size);
        bert_batch bt;
        make_batch(ds, order + s, B, cfg->pad_token_id, ids, lens,
                   losses && !multi ? labels : NULL, targets, K, &bt);
        stage_batch(&bt, d_ids, d_lens, d_labels, d_targets, K);
        a.poll = poll;
        a.poll_ctx = poll_ctx;
        bert_cls_forward(m, &a, &bt, NULL);
        if (a.stopped || (poll && poll(poll_ctx))) {
            rc = bft_set_error(err, BFT_ECANCEL, "inference cancelled");
            goto done;
        }
        bft_dev_download(bprobs, a.probs, (size_t)B * K * sizeof *bprobs);
        if (losses)
            bft_dev_download(blosses, a.losses, (size_t)B * sizeof *blosses);
        if ((rc = bft_dev_check(err)) != BFT_OK)
            goto done;
        for (int b = 0; b < B; b++) {
            int64_t i = order[s + b];
            if (probs)
                memcpy(probs + (size_t)i * K, bprobs + (size_t)b * K, (size_t)K * sizeof *probs);
            if (losses)
                losses[i] = blosses[b];
        }
    }
    rc = BFT_OK;
done:
    if (have_acts)
        bert_acts_free(&a);
    bft_dev_free(d_ids);
    bft_dev_free(d_lens);
    bft_dev_free(d_labels);
    bft_dev_free(d_targets);
    free(order);
    free(ids);
    free(lens);
    free(labels);
    free(targets);
    free(bprobs);
    free(blosses);
    return rc;
}

/* run_inference with m's weights on the inference device (bft_set_device). */
static int infer_on_device(const bft_model *m, const bft_dataset *ds, int batch_size, float *probs,
                           int (*poll)(void *), void *poll_ctx, bft_error *err)
{
    bft_devmodel d;
    int dev, prec, rc;
    bft_get_device(&dev, &prec);
    if ((rc = bft_devmodel_open(&d, m, dev, prec, 0, err)) != BFT_OK)
        return rc;
    rc = run_inference(&d.dm, ds, batch_size, probs, NULL, poll, poll_ctx, err);
    bft_devmodel_close(&d);
    return rc;
}

int bft_predict_poll(const bft_model *m, const bft_dataset *ds, int batch_size, float *probs,
                     int (*poll)(void *ctx), void *poll_ctx, bft_error *err)
{
    bft_clear_error(err);
    if (!m || !probs)
        return bft_set_error(err, BFT_EINVAL, "bft_predict: NULL model or output");
    return infer_on_device(m, ds, batch_size, probs, poll, poll_ctx, err);
}

int bft_predict(const bft_model *m, const bft_dataset *ds, int batch_size, float *probs,
                bft_error *err)
{
    bft_clear_error(err);
    if (!m || !probs)
        return bft_set_error(err, BFT_EINVAL, "bft_predict: NULL model or output");
    return infer_on_device(m, ds, batch_size, probs, NULL, NULL, err);
}

/* Sentence embeddings and hidden states (embed.c) run the encoder here. */
int bft_encoder_run(const bft_model *m, const bft_dataset *ds, int batch_size,
                    void (*fn)(void *ctx, const float *hidden, const int32_t *lens,
                               const int64_t *idx, int B, int T),
                    void *ctx, int (*poll)(void *ctx), void *poll_ctx, bft_error *err)
{
    const bft_config *cfg = &m->cfg;
    int C = cfg->hidden_size, maxlen = 0, rc, dev, prec;
    if ((rc = check_dataset(m, ds, 0, 0, "input", &maxlen, err)) != 0)
        return rc;
    if (batch_size <= 0)
        batch_size = 32;
    if (batch_size > ds->n)
        batch_size = (int)ds->n;
    bft_devmodel d;
    bft_get_device(&dev, &prec);
    if ((rc = bft_devmodel_open(&d, m, dev, prec, 0, err)) != BFT_OK)
        return rc;
    bert_acts a;
    memset(&a, 0, sizeof a);
    int have_acts = 0;
    int64_t *order = order_by_length(ds);
    int32_t *ids = malloc((size_t)batch_size * maxlen * sizeof *ids);
    int32_t *lens = malloc((size_t)batch_size * sizeof *lens);
    float *hidden = malloc((size_t)batch_size * maxlen * C * sizeof *hidden);
    int32_t *d_ids = bft_dev_alloc((size_t)batch_size * maxlen * sizeof *d_ids);
    int32_t *d_lens = bft_dev_alloc((size_t)batch_size * sizeof *d_lens);
    if (order && ids && lens && hidden && d_ids && d_lens &&
        bert_acts_alloc(&a, cfg, 0, batch_size, maxlen, 0) == 0)
        have_acts = 1;
    if (!have_acts) {
        rc = bft_dev_check(err);
        if (rc == BFT_OK)
            rc = bft_set_error(err, BFT_ENOMEM, "out of memory for inference (batch %d x %d tokens)",
                               batch_size, maxlen);
        goto done;
    }
    for (int64_t s = 0; s < ds->n; s += batch_size) {
        int B = (int)(ds->n - s < batch_size ? ds->n - s : batch_size);
        bert_batch bt;
        make_batch(ds, order + s, B, cfg->pad_token_id, ids, lens, NULL, NULL, 0, &bt);
        stage_batch(&bt, d_ids, d_lens, NULL, NULL, 0);   /* lens stays the host copy */
        a.poll = poll;
        a.poll_ctx = poll_ctx;
        const float *top = bert_encoder_forward(&d.dm, &a, &bt, NULL);
        if (a.stopped || (poll && poll(poll_ctx))) {
            rc = bft_set_error(err, BFT_ECANCEL, "inference cancelled");
            goto done;
        }
        bft_dev_download(hidden, top, (size_t)B * bt.T * C * sizeof *hidden);
        if ((rc = bft_dev_check(err)) != BFT_OK)
            goto done;
        fn(ctx, hidden, lens, order + s, B, bt.T);
    }
    rc = BFT_OK;
done:
    if (have_acts)
        bert_acts_free(&a);
    bft_dev_free(d_ids);
    bft_dev_free(d_lens);
    free(order);
    free(ids);
    free(lens);
    free(hidden);
    bft_devmodel_close(&d);
    return rc;
}

static int evaluate_ds(const bft_model *m, const bft_dataset *ds, int batch_size, float *loss,
                       float *accuracy, float *macro_f1, int64_t *confusion,
                       int (*poll)(void *), void *poll_ctx, bft_error *err);

int bft_evaluate_ds(const bft_model *m, const bft_dataset *ds, int batch_size, float *loss,
                    float *accuracy, float *macro_f1, int64_t *confusion, bft_error *err)
{
    bft_devmodel d;
    int dev, prec, rc;
    bft_clear_error(err);
    if (!m)
        return bft_set_error(err, BFT_EINVAL, "bft_evaluate_ds: NULL model");
    bft_get_device(&dev, &prec);
    if ((rc = bft_devmodel_open(&d, m, dev, prec, 0, err)) != BFT_OK)
        return rc;
    rc = evaluate_ds(&d.dm, ds, batch_size, loss, accuracy, macro_f1, confusion, NULL, NULL, err);
    bft_devmodel_close(&d);
    return rc;
}

/* bft_evaluate_ds with a cancellation poll (the trainer's per-epoch evaluation). */
static int evaluate_ds(const bft_model *m, const bft_dataset *ds, int batch_size, float *loss,
                       float *accuracy, float *macro_f1, int64_t *confusion,
                       int (*poll)(void *), void *poll_ctx, bft_error *err)
{
    bft_clear_error(err);
    if (!m)
        return bft_set_error(err, BFT_EINVAL, "bft_evaluate_ds: NULL model");
    int multi = is_multi(m);
    if (!ds || (multi ? !ds->label_offsets || !ds->label_ids : !ds->labels))
        return bft_set_error(err, BFT_EINVAL, "bft_evaluate_ds: dataset without labels");
    int K = m->cfg.num_labels;
    if (K < 1 || ds->n <= 0)
        return run_inference(m, ds, batch_size, NULL, NULL, poll, poll_ctx, err);
    float *probs = malloc((size_t)ds->n * K * sizeof *probs);
    float *losses = malloc((size_t)ds->n * sizeof *losses);
    /* counts (3K), then the confusion matrix (K, K) or two rows of (K) flags */
    int64_t *store = calloc((size_t)K * 3 + (multi ? 0 : (size_t)K * K), sizeof *store);
    unsigned char *flags = malloc((size_t)K * 2);
    int rc;
    if (!probs || !losses || !store || !flags) {
        rc = bft_set_error(err, BFT_ENOMEM, "out of memory for evaluation");
        goto done;
    }
    if ((rc = run_inference(m, ds, batch_size, probs, losses, poll, poll_ctx, err)) != 0)
        goto done;
    bft_class_counts cc;
    bft_counts_init(&cc, K, store);
    int64_t *conf = store + (size_t)K * 3; /* (K, K): rows true, columns predicted */
    double ls = 0.0;
    for (int64_t i = 0; i < ds->n; i++) {
        const float *p = probs + (size_t)i * K;
        ls += losses[i];
        if (multi) {
            /* label sets at threshold 0.5 (a label listed twice counts once) */
            unsigned char *truth = flags, *pred = flags + K;
            for (int k = 0; k < K; k++) {
                truth[k] = 0;
                pred[k] = p[k] >= 0.5f;
            }
            for (int64_t j = ds->label_offsets[i]; j < ds->label_offsets[i + 1]; j++)
                truth[ds->label_ids[j]] = 1;
            bft_counts_add_set(&cc, truth, pred);
            continue;
        }
        int best = 0;
        for (int k = 1; k < K; k++)
            if (p[k] > p[best])
                best = k;
        bft_counts_add(&cc, ds->labels[i], best);
        conf[(size_t)ds->labels[i] * K + best]++;
    }
    if (loss)
        *loss = (float)(ls / ds->n);
    if (accuracy)
        *accuracy = (float)bft_counts_accuracy(&cc);
    if (macro_f1)
        *macro_f1 = (float)bft_counts_macro_f1(&cc, multi);
    if (confusion && !multi)
        memcpy(confusion, conf, (size_t)K * K * sizeof *conf);
    rc = BFT_OK;
done:
    free(probs);
    free(losses);
    free(store);
    free(flags);
    return rc;
}

/* ---------------------------------------------------------------- fill-mask */

/* bft_fill_mask's arguments: an MLM head, a tokenizer with [MASK] (*mask_id),
 * top_k and the ids in range; *M the masks to fill (at most max_masks when >= 0). */
static int fill_mask_check(const bft_model *m, const int32_t *ids, int n, int top_k, int max_masks,
                           int *mask_id, int *M, bft_error *err)
{
    if (!m->parts.mlm || !m->p.mlm_w)
        return bft_set_error(err, BFT_EINVAL, "the model has no MLM head (cls.predictions)");
    if (!m->tok)
        return bft_set_error(err, BFT_EINVAL, "the model has no tokenizer to find [MASK]");
    const bft_config *cfg = &m->cfg;
    int V = cfg->vocab_size;
    if (top_k < 1 || top_k > V)
        return bft_set_error(err, BFT_EINVAL, "top_k %d outside [1, %d]", top_k, V);
    if (n < 1 || n > cfg->max_position_embeddings)
        return bft_set_error(err, BFT_EINVAL, "sequence of %d tokens (1..%d allowed)", n,
                             cfg->max_position_embeddings);
    *mask_id = bft_tokenizer_special(m->tok).mask;
    if (*mask_id < 0)
        return bft_set_error(err, BFT_EINVAL, "the vocabulary has no [MASK] token");
    for (int t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return bft_set_error(err, BFT_EINVAL, "token id %d outside [0, %d)", ids[t], V);
    *M = 0;
    for (int t = 0; t < n; t++)
        *M += ids[t] == *mask_id;
    if (max_masks >= 0 && *M > max_masks)
        *M = max_masks;
    return BFT_OK;
}

/* The top_k of the V scores p: ids oi and scores os, score descending, id ascending on ties. */
static void top_k_sorted(const float *p, int V, int top_k, int32_t *oi, float *os)
{
    int cnt = 0;
    /* insertion into a sorted top-k list */
    for (int v = 0; v < V; v++) {
        float s = p[v];
        if (cnt == top_k && !(s > os[cnt - 1]))
            continue;
        int pos = cnt < top_k ? cnt++ : top_k - 1;
        while (pos > 0 && s > os[pos - 1]) {
            os[pos] = os[pos - 1];
            oi[pos] = oi[pos - 1];
            pos--;
        }
        os[pos] = s;
        oi[pos] = v;
    }
}

int bft_fill_mask(const bft_model *m, const int32_t *ids, int n, int top_k, int max_masks,
                  int *n_masks, int32_t *out_ids, float *out_scores, bft_error *err)
{
    int mask_id = -1, M = 0, dev, prec, rc;
    bft_clear_error(err);
    if (n_masks)
        *n_masks = 0;
    if (!m || !ids || !n_masks || !out_ids || !out_scores)
        return bft_set_error(err, BFT_EINVAL, "bft_fill_mask: NULL argument");
    if ((rc = fill_mask_check(m, ids, n, top_k, max_masks, &mask_id, &M, err)) != BFT_OK || M == 0)
        return rc;

    const bft_config *cfg = &m->cfg;
    int V = cfg->vocab_size;
    bft_devmodel d;
    bft_get_device(&dev, &prec);
    if ((rc = bft_devmodel_open(&d, m, dev, prec, 0, err)) != BFT_OK)
        return rc;
    const bft_model *dm = &d.dm; /* m with its weights on the device */
    bert_acts a;
    bert_mlm_ws w;
    memset(&a, 0, sizeof a);
    memset(&w, 0, sizeof w);
    int64_t *rows = malloc((size_t)M * sizeof *rows);
    float *probs = malloc((size_t)M * V * sizeof *probs);
    int32_t len = n;
    /* ids, length and mask rows on the device */
    int32_t *d_ids = bft_dev_alloc((size_t)n * sizeof *d_ids);
    int32_t *d_len = bft_dev_alloc(sizeof *d_len);
    int64_t *d_rows = bft_dev_alloc((size_t)M * sizeof *d_rows);
    if (!rows || !probs || !d_ids || !d_len || !d_rows ||
        bert_acts_alloc(&a, cfg, 0, 1, n, 0) != 0 || bert_mlm_reserve(&w, cfg, M) != 0) {
        rc = bft_dev_check(err);
        if (rc == BFT_OK)
            rc = bft_set_error(err, BFT_ENOMEM, "out of memory for fill-mask");
        goto done;
    }
    for (int t = 0, j = 0; t < n && j < M; t++)
        if (ids[t] == mask_id)
            rows[j++] = t;
    bft_dev_upload(d_ids, ids, (size_t)n * sizeof *d_ids);
    bft_dev_upload(d_len, &len, sizeof len);
    bft_dev_upload(d_rows, rows, (size_t)M * sizeof *d_rows);
    bert_batch bt = {1, n, d_ids, d_len, NULL, NULL, NULL};
    const float *top = bert_encoder_forward(dm, &a, &bt, NULL);
    bert_mlm_forward(dm, &w, top, d_rows, M, NULL);
    bft_dev_download(probs, w.dlogits, (size_t)M * V * sizeof *probs);
    if ((rc = bft_dev_check(err)) != BFT_OK)
        goto done;
    for (int j = 0; j < M; j++)
        top_k_sorted(probs + (size_t)j * V, V, top_k, out_ids + (size_t)j * top_k, out_scores + (size_t)j * top_k);
    *n_masks = M;
    rc = BFT_OK;
done:
    bert_mlm_free(&w);
    bert_acts_free(&a);
    bft_dev_free(d_ids);
    bft_dev_free(d_len);
    bft_dev_free(d_rows);
    free(rows);
    free(probs);
    bft_devmodel_close(&d);
    return rc;
}

/* ---------------------------------------------------------------- training */

enum { TASK_CLS, TASK_MLM };

typedef struct trainer {
    bft_model *m;
    int task;
    bft_train_opts o;
    float *grad_mem, *m_mem, *v_mem; /* num_params floats each */
    bft_params g;                    /* named pointers into grad_mem */
    bft_tensor_info *tensors;
    int ntensors;
    unsigned char *trainable;        /* (ntensors) */
    unsigned char *accumulated;      /* (ntensors) gradient accumulated (+=): zeroed by AdamW */
    bert_acts acts;
    bert_mlm_ws mlm;
    int32_t *ids, *lens, *labels, *mlm_labels; /* batch buffers */
    int32_t *mlm_ids;
    int64_t *order, *rows;
    float *eval_probs;
    int32_t *d_ids, *d_lens, *d_labels, *d_mlm_labels; /* the batch on the device */
    float *targets, *d_targets;      /* (Bmax, K) multi-hot targets (multi-label models) */
    float *roww, *d_roww;            /* (Bmax) per-example loss shares (class weights) */
    float *best_mem;                 /* (num_params) the best epoch's weights (device) */
    bft_epoch_rec *hist;             /* (epochs) what each completed epoch reported */
    int64_t *d_rows;
    int Bmax, Tmax;                  /* the largest batch: examples, tokens */
    /* the run */
    int K, multi;                    /* the classifier's labels; label sets (TASK_CLS) */
    bft_special_ids sp;              /* TASK_MLM: the tokenizer's special ids */
    bert_dropout_cfg dc;
    bft_progress_fn progress;
    void *ctx;
    bft_train_result *res;
    int64_t steps_per_epoch, total, warmup; /* the schedule, in optimizer steps */
    int64_t step, samples;           /* done so far */
    double t0, loss_all;
    bft_rng mrng;                    /* MLM masking */
    int profile;                     /* BFT_PROFILE */
    double prof[3];                  /* forward, backward, optimizer seconds of a step */
    /* the best epoch so far (by metric_for_best) and its evaluation */
    int best_epoch, bad_epochs, stop, last_epoch, first_epoch;
    float best, best_l, best_a, best_f;
    uint64_t fingerprint;            /* of the state files */
    double loss_epoch;               /* the epoch running: loss sum and steps */
    int64_t steps_epoch;
} trainer;

static void trainer_free(trainer *t)
{
    bft_dev_free(t->grad_mem);
    bft_dev_free(t->m_mem);
    bft_dev_free(t->v_mem);
    bft_dev_free(t->d_ids);
    bft_dev_free(t->d_lens);
    bft_dev_free(t->d_labels);
    bft_dev_free(t->d_mlm_labels);
    bft_dev_free(t->d_rows);
    bft_dev_free(t->d_targets);
    free(t->targets);
    bft_dev_free(t->d_roww);
    bft_dev_free(t->best_mem);
    free(t->hist);
    free(t->roww);
    free(t->tensors);
    free(t->trainable);
    free(t->accumulated);
    bert_acts_free(&t->acts);
    bert_mlm_free(&t->mlm);
    free(t->ids);
    free(t->lens);
    free(t->labels);
    free(t->mlm_labels);
    free(t->mlm_ids);
    free(t->order);
    free(t->rows);
    free(t->eval_probs);
    memset(t, 0, sizeof *t);
}

static int is_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* lr of update number step (0-based) under get_linear_schedule_with_warmup:
 * LambdaLR's base_lr * lambda(step), rounded as in Python. */
static double schedule_lr(double base, int64_t step, int64_t total, int64_t warmup)
{
    if (step < warmup)
        return base * ((double)step / (double)(warmup > 1 ? warmup : 1));
    double r = (double)(total - step) / (double)(total - warmup > 1 ? total - warmup : 1);
    return base * (r > 0.0 ? r : 0.0);
}

/* One optimizer update over the trainable tensors; returns the pre-clip grad norm. */
static double optimizer_step(trainer *t, double lr, int64_t step1)
{
    const bft_train_opts *o = &t->o;
    /* the gradients of the tensors a task does not train are never written and
     * stay 0, so the norm over the whole block is the norm over the trainable
     * tensors: one reduction (one device round trip on CUDA) per step */
    double ss = bft_op_sumsq(t->grad_mem, t->m->num_params);
    double norm = sqrt(ss);
    float gscale = 1.0f;
    if (o->max_grad_norm > 0.0f) {
        double coef = (double)o->max_grad_norm / (norm + 1e-6);
        if (coef < 1.0)
            gscale = (float)coef;
    }
    for (int i = 0; i < t->ntensors; i++) {
        if (!t->trainable[i])
            continue;
        size_t off = t->tensors[i].offset;
        bft_op_adamw(t->m->params_mem + off, t->grad_mem + off, t->m_mem + off, t->v_mem + off,
                     t->tensors[i].numel, lr, o->adam_beta1, o->adam_beta2, o->adam_eps,
                     t->tensors[i].decay ? o->weight_decay : 0.0, gscale, step1,
                     t->accumulated[i]);
    }
    return norm;
}

/* The epoch's example order: dataset order, a permutation, or HF's
 * LengthGroupedSampler (megabatches of 50 batches sorted by length, the
 * longest example first). */
static void epoch_order(trainer *t, const bft_dataset *ds, int epoch)
{
    int64_t n = ds->n, *ord = t->order;
    for (int64_t i = 0; i < n; i++)
        ord[i] = i;
    bft_rng r;
    bft_rng_seed(&r, t->o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch + 1);
    if (t->o.shuffle)
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)bft_rng_below(&r, (uint64_t)i + 1);
            int64_t tmp = ord[i];
            ord[i] = ord[j];
            ord[j] = tmp;
        }
    if (t->o.group_by_length) {
        int64_t bs = t->o.batch_size, mult = n / (bs * 4);
        if (mult > 50)
            mult = 50;
        if (mult == 0)
            mult = 1;
        int64_t mb = mult * bs, best = 0, best_len = -1;
        for (int64_t s = 0; s < n; s += mb) {
            int64_t e = s + mb < n ? s + mb : n;
            /* stable insertion sort by length, descending */
            for (int64_t i = s + 1; i < e; i++) {
                int64_t v = ord[i], j = i;
                while (j > s && ex_len(ds, ord[j - 1]) < ex_len(ds, v)) {
                    ord[j] = ord[j - 1];
                    j--;
                }
                ord[j] = v;
            }
            if (ex_len(ds, ord[s]) > best_len) {
                best_len = ex_len(ds, ord[s]);
                best = s;
            }
        }
        int64_t tmp = ord[0];
        ord[0] = ord[best];
        ord[best] = tmp;
    }
}

/* MLM masking of one batch (DataCollatorForLanguageModeling): among tokens
 * that are not special ([CLS] [SEP] [PAD] [MASK] [UNK]) and not padding, each is
 * chosen with probability p; chosen: 80% [MASK], 10% a random id, 10% kept.
 * Writes the masked ids and fills rows/labels of the M chosen positions. */
static int mlm_mask(trainer *t, const bert_batch *bt, bft_rng *r, bft_special_ids sp)
{
    int M = 0, V = t->m->cfg.vocab_size;
    float p = t->o.mlm_probability;
    for (int b = 0; b < bt->B; b++)
        for (int i = 0; i < bt->T; i++) {
            size_t k = (size_t)b * bt->T + i;
            int32_t id = bt->ids[k];
            t->mlm_ids[k] = id;
            if (i >= bt->lens[b] || id == sp.cls || id == sp.sep || id == sp.pad ||
                id == sp.mask || id == sp.unk)
                continue;
            if (!(bft_rng_uniform(r) < p))
                continue;
            t->rows[M] = (int64_t)k;
            t->mlm_labels[M] = id;
            M++;
            float u = bft_rng_uniform(r);
            if (u < 0.8f)
                t->mlm_ids[k] = sp.mask;
            else if (u < 0.9f)
                t->mlm_ids[k] = (int32_t)bft_rng_below(r, (uint64_t)V);
        }
    return M;
}

/* Fingerprint of a training for its state file: the task, every option that
 * changes the result, the model's shape, the data and the host's salt. */
static uint64_t train_fingerprint(const bft_model *m, const bft_dataset *ds,
                                  const bft_train_opts *o, int task)
{
    const bft_config *c = &m->cfg;
    uint64_t h = bft_train_hash(0x6266745f73746174ull, &o->state_salt, sizeof o->state_salt);
    int64_t iv[] = {task, o->epochs, o->batch_size, o->shuffle, o->group_by_length,
                    o->load_best_model_at_end, o->metric_for_best, o->early_stopping_patience,
                    o->device, o->precision, c->vocab_size, c->hidden_size, c->num_hidden_layers,
                    c->num_attention_heads, c->intermediate_size, c->max_position_embeddings,
                    c->num_labels, c->pad_token_id, m->parts.pooler, m->parts.classifier,
                    m->parts.mlm, (int64_t)m->num_params, (int64_t)o->seed};
    float fv[] = {o->learning_rate, o->warmup_ratio, o->weight_decay, o->max_grad_norm,
                  o->adam_beta1, o->adam_beta2, o->adam_eps, o->dropout, o->mlm_probability,
                  c->hidden_dropout_prob, c->attention_probs_dropout_prob, c->classifier_dropout,
                  c->layer_norm_eps};
    h = bft_train_hash(h, iv, sizeof iv);
    h = bft_train_hash(h, fv, sizeof fv);
    if (task == TASK_CLS && o->class_weights)
        h = bft_train_hash(h, o->class_weights, (size_t)c->num_labels * sizeof(float));
    const bft_dataset *sets[2] = {ds, task == TASK_CLS ? o->valid : NULL};
    for (int i = 0; i < 2; i++) {
        const bft_dataset *d = sets[i];
        if (!d) {
            h = bft_train_hash(h, "-", 1);
            continue;
        }
        h = bft_train_hash(h, &d->n, sizeof d->n);
        h = bft_train_hash(h, d->offsets, (size_t)(d->n + 1) * sizeof *d->offsets);
        h = bft_train_hash(h, d->tokens + d->offsets[0],
                           (size_t)(d->offsets[d->n] - d->offsets[0]) * sizeof *d->tokens);
        if (task == TASK_CLS && d->labels)
            h = bft_train_hash(h, d->labels, (size_t)d->n * sizeof *d->labels);
    }
    return h;
}

/* The CUDA backend keeps a bf16 copy of the weights it trains: after the
 * weights were replaced (a resumed state) it is made again. */
static void weights_replaced(const bft_model *m)
{
    const bft_backend *be = bft_backend_current();
    be->set_weights(NULL, 0);
    be->set_weights(m->params_mem, m->num_params);
}

/* Options the trainer accepts at all: epochs, batch size, optimizer ranges. */
static int check_optimizer_opts(const bft_train_opts *o, bft_error *err)
{
    if (o->epochs <= 0)
        return bft_set_error(err, BFT_EINVAL, "epochs must be > 0 (got %d)", o->epochs);
    if (o->batch_size <= 0)
        return bft_set_error(err, BFT_EINVAL, "batch_size must be > 0 (got %d)", o->batch_size);
    if (!(o->learning_rate >= 0.0 && o->learning_rate <= 1e6) ||
        !(o->warmup_ratio >= 0.0 && o->warmup_ratio <= 1.0) ||
        !(o->weight_decay >= 0.0 && o->weight_decay <= 1e6) ||
        !(o->adam_beta1 >= 0.0 && o->adam_beta1 < 1.0) ||
        !(o->adam_beta2 >= 0.0 && o->adam_beta2 < 1.0) || !(o->adam_eps >= 0.0 && o->adam_eps <= 1e6) ||
        !(o->dropout < 1.0f) || isnan(o->max_grad_norm))
        return bft_set_error(err, BFT_EINVAL,
                             "invalid optimizer options (lr %g, warmup_ratio %g, weight_decay %g, "
                             "betas %g/%g, eps %g, dropout %g)",
                             o->learning_rate, o->warmup_ratio, o->weight_decay, o->adam_beta1,
                             o->adam_beta2, o->adam_eps, (double)o->dropout);
    return BFT_OK;
}

/* Classification: the model's heads, the data sets, best-model and class-weight options. */
static int check_cls_task(trainer *t, const bft_dataset *ds, bft_error *err)
{
    const bft_model *m = t->m;
    const bft_train_opts *o = &t->o;
    int K = t->K, rc;
    if (!m->parts.classifier || !m->p.clsw || K < 1)
        return bft_set_error(err, BFT_EINVAL, "the model has no classifier (set the labels first)");
    if (K < 2 && !is_multi(m))
        return bft_set_error(err, BFT_EUNSUPPORTED,
                             "num_labels 1 is regression in Hugging Face; at least 2 classes are needed");
    if (!m->parts.pooler || !m->p.poolw)
        return bft_set_error(err, BFT_EINVAL, "the model has no pooler");
    if ((rc = check_dataset(m, ds, 1, K, "training", &t->Tmax, err)) != 0)
        return rc;
    if (o->valid) {
        int vm = 0;
        if ((rc = check_dataset(m, o->valid, 1, K, "validation", &vm, err)) != 0)
            return rc;
    }
    if ((o->load_best_model_at_end || o->early_stopping_patience > 0) && !o->valid)
        return bft_set_error(err, BFT_EINVAL,
                             "load_best_model_at_end and early stopping need a validation set");
    if (o->metric_for_best < BFT_METRIC_LOSS || o->metric_for_best > BFT_METRIC_MACRO_F1 ||
        o->early_stopping_patience < 0)
        return bft_set_error(err, BFT_EINVAL, "invalid metric_for_best %d or patience %d",
                             o->metric_for_best, o->early_stopping_patience);
    if (o->class_weights && is_multi(m))
        return bft_set_error(err, BFT_EINVAL,
                             "class weights apply to single-label classification, not to a multi-label model");
    if (o->class_weights)
        for (int k = 0; k < K; k++)
            if (!(o->class_weights[k] > 0.0f) || isinf(o->class_weights[k]))
                return bft_set_error(err, BFT_EINVAL,
                                     "class weight %d is %g: weights must be positive and finite",
                                     k, o->class_weights[k]);
    return BFT_OK;
}

/* MLM pre-training: the MLM head, the tokenizer's [MASK], the masking rate, the data. */
static int check_mlm_task(trainer *t, const bft_dataset *ds, bft_error *err)
{
    const bft_model *m = t->m;
    if (!m->parts.mlm || !m->p.mlm_w)
        return bft_set_error(err, BFT_EINVAL, "the model has no MLM head (cls.predictions)");
    if (!m->tok)
        return bft_set_error(err, BFT_EINVAL, "the model has no tokenizer (special ids needed)");
    if (!(t->o.mlm_probability > 0.0f && t->o.mlm_probability < 1.0f))
        return bft_set_error(err, BFT_EINVAL, "mlm_probability must be in (0, 1) (got %g)",
                             t->o.mlm_probability);
    t->sp = bft_tokenizer_special(m->tok);
    if (t->sp.mask < 0)
        return bft_set_error(err, BFT_EINVAL, "the vocabulary has no [MASK] token");
    return check_dataset(m, ds, 0, 0, "training", &t->Tmax, err);
}

/* Which tensors the task trains, and whose gradient the backward accumulates. */
static int mark_trainable(trainer *t, bft_error *err)
{
    t->trainable = calloc((size_t)t->ntensors, 1);
    t->accumulated = calloc((size_t)t->ntensors, 1);
    if (!t->trainable || !t->accumulated)
        return bft_set_error(err, BFT_ENOMEM, "out of memory for training");
    for (int i = 0; i < t->ntensors; i++) {
        const char *nm = t->tensors[i].name;
        int head_mlm = is_prefix(nm, "cls.predictions.");
        int head_cls = is_prefix(nm, "pooler.") || is_prefix(nm, "classifier.");
        t->trainable[i] = t->task == TASK_CLS ? !head_mlm : !head_cls;
        /* the backward assigns every gradient except the embedding tables' */
        t->accumulated[i] = is_prefix(nm, "embeddings.") && strstr(nm, "_embeddings.weight") != NULL;
    }
    return BFT_OK;
}

/* Gradients, AdamW moments, activations and batch buffers for batches of
 * (Bmax, Tmax); on the compute device (backend.h) where the steps use them. */
static int trainer_alloc(trainer *t, const bft_dataset *ds, bft_error *err)
{
    const bft_model *m = t->m;
    const bft_config *cfg = &m->cfg;
    const bft_train_opts *o = &t->o;
    int cls = t->task == TASK_CLS, mlm = t->task == TASK_MLM, K = t->K;
    size_t np = m->num_params;
    int Bmax = t->Bmax = (int)(o->batch_size < ds->n ? o->batch_size : ds->n), maxlen = t->Tmax;
    size_t BT = (size_t)Bmax * maxlen;
    t->grad_mem = bft_dev_alloc(np * sizeof(float)); /* embedding rows re-zeroed by AdamW */
    t->m_mem = bft_dev_alloc(np * sizeof(float));
    t->v_mem = bft_dev_alloc(np * sizeof(float));
    t->d_ids = bft_dev_alloc(BT * sizeof *t->d_ids);
    t->d_lens = bft_dev_alloc((size_t)Bmax * sizeof *t->d_lens);
    t->d_labels = bft_dev_alloc((size_t)Bmax * sizeof *t->d_labels);
    t->tensors = bft_params_tensors(cfg, m->parts, &t->ntensors);
    t->ids = malloc(BT * sizeof *t->ids);
    t->lens = malloc((size_t)Bmax * sizeof *t->lens);
    t->labels = malloc((size_t)Bmax * sizeof *t->labels);
    t->order = malloc((size_t)ds->n * sizeof *t->order);
    if (t->multi) {
        t->targets = malloc((size_t)Bmax * K * sizeof *t->targets);
        t->d_targets = bft_dev_alloc((size_t)Bmax * K * sizeof *t->d_targets);
    }
    if (cls && o->load_best_model_at_end)
        t->best_mem = bft_dev_alloc(np * sizeof(float));
    if (cls && o->class_weights) {
        t->roww = malloc((size_t)Bmax * sizeof *t->roww);
        t->d_roww = bft_dev_alloc((size_t)Bmax * sizeof *t->d_roww);
    }
    if (mlm) {
        t->mlm_ids = malloc(BT * sizeof *t->mlm_ids);
        t->mlm_labels = malloc(BT * sizeof *t->mlm_labels);
        t->rows = malloc(BT * sizeof *t->rows);
        t->d_rows = bft_dev_alloc(BT * sizeof *t->d_rows);
        t->d_mlm_labels = bft_dev_alloc(BT * sizeof *t->d_mlm_labels);
    }
    if (!t->grad_mem || !t->m_mem || !t->v_mem || !t->tensors || !t->ids || !t->lens || !t->labels ||
        !t->order || (mlm && (!t->mlm_ids || !t->mlm_labels || !t->rows)) ||
        !t->d_ids || !t->d_lens || !t->d_labels || (t->multi && (!t->targets || !t->d_targets)) ||
        (mlm && (!t->d_rows || !t->d_mlm_labels)) ||
        (cls && o->class_weights && (!t->roww || !t->d_roww)) ||
        (cls && o->load_best_model_at_end && !t->best_mem) ||
        bert_acts_alloc(&t->acts, cfg, cls ? K : 0, Bmax, maxlen, 1) != 0) {
        bft_error de;
        int drc = bft_dev_check(&de);
        if (drc != BFT_OK)
            return bft_set_error(err, drc, "%s (training %zu parameters, batch %d x %d tokens)",
                                 de.msg, np, Bmax, maxlen);
        return bft_set_error(err, BFT_ENOMEM,
                             "out of memory for training (%zu parameters, batch %d x %d tokens)", np,
                             Bmax, maxlen);
    }
    t->acts.poll = o->poll;
    t->acts.poll_ctx = o->poll_ctx;
    if (mark_trainable(t, err) != BFT_OK)
        return BFT_ENOMEM;
    bft_params_assign(&t->g, t->grad_mem, cfg, m->parts);
    bft_op_zero(t->grad_mem, np);
    bft_op_zero(t->m_mem, np);
    bft_op_zero(t->v_mem, np);
    return BFT_OK;
}

/* Dropout, the schedule (total and warmup steps), the MLM masking RNG, profiling. */
static void trainer_start(trainer *t, const bft_dataset *ds)
{
    const bft_config *cfg = &t->m->cfg;
    const bft_train_opts *o = &t->o;
    t->dc.hidden = o->dropout >= 0.0f ? o->dropout : cfg->hidden_dropout_prob;
    t->dc.attn = o->dropout >= 0.0f ? o->dropout : cfg->attention_probs_dropout_prob;
    t->dc.classifier = o->dropout >= 0.0f ? o->dropout
                       : (cfg->classifier_dropout >= 0.0f ? cfg->classifier_dropout
                                                          : cfg->hidden_dropout_prob);
    t->dc.seed = o->seed;
    t->dc.step = 0;
    t->steps_per_epoch = (ds->n + o->batch_size - 1) / o->batch_size;
    t->total = t->steps_per_epoch * o->epochs;
    /* Trainer: math.ceil(num_training_steps * warmup_ratio), Python floats */
    t->warmup = (int64_t)ceil((double)t->total * o->warmup_ratio);
    t->t0 = now_s();
    bft_rng_seed(&t->mrng, o->seed ^ 0x5DEECE66Dull);
    /* BFT_PROFILE=1: phase times of every step after the first on stderr */
    const char *penv = getenv("BFT_PROFILE");
    t->profile = penv && *penv && strcmp(penv, "0") != 0;
    t->best = t->best_l = t->best_a = t->best_f = NAN;
    t->first_epoch = 1;
}

/* Read a saved state into the trainer: weights, moments, best weights, history. */
static int read_state(trainer *t, bft_state_hdr *h, bft_error *err)
{
    const bft_model *m = t->m;
    const bft_train_opts *o = &t->o;
    bft_epoch_rec *rh = NULL;
    char *note = malloc(BFT_STATE_NOTE_MAX);
    float *arrays[4] = {m->params_mem, t->m_mem, t->v_mem, t->best_mem};
    int rc = note ? bft_state_read(o->resume_path, h, note, &rh, NULL, err)
                  : bft_set_error(err, BFT_ENOMEM, "out of memory");
    free(rh);
    rh = NULL;
    if (rc == BFT_OK &&
        (h->fingerprint != t->fingerprint || h->task != (uint32_t)t->task ||
         h->num_params != (uint64_t)m->num_params || h->epochs != o->epochs ||
         h->has_best != (t->best_mem != NULL)))
        rc = bft_set_error(err, BFT_EMISMATCH,
                           "the saved training state %s belongs to another training (its data, "
                           "options or initial model differ)", o->resume_path);
    if (rc == BFT_OK)
        rc = bft_state_read(o->resume_path, h, note, &rh, arrays, err);
    free(note);
    if (rc == BFT_OK)
        memcpy(t->hist, rh, (size_t)h->nhist * sizeof *t->hist);
    free(rh);
    return rc;
}

/* The result as it stood after the restored epochs. */
static void restored_result(trainer *t, const bft_state_hdr *h)
{
    bft_train_result *res = t->res;
    if (!res)
        return;
    if (h->epochs_done > 0) {
        const bft_epoch_rec *r = &t->hist[h->epochs_done - 1];
        res->steps = t->step;
        res->epochs = h->epochs_done;
        res->train_loss = (float)(t->loss_all / (t->step > 0 ? t->step : 1));
        res->last_epoch_loss = r->loss;
        res->seconds = h->elapsed_s;
        res->samples_per_s = h->elapsed_s > 0 ? t->samples / h->elapsed_s : 0.0;
        res->eval_loss = r->eval_loss;
        res->eval_accuracy = r->eval_accuracy;
        res->eval_macro_f1 = r->eval_macro_f1;
        res->best_epoch = t->best_epoch;
        res->best_metric = t->best;
        res->kept_epoch = h->epochs_done;
        res->early_stopped = t->stop;
    }
    res->resumed_epochs = h->epochs_done;
}

/* The restored epochs, as their phase-1 reports (marked restored). */
static int report_restored(trainer *t, int epochs_done, bft_error *err)
{
    const bft_train_opts *o = &t->o;
    for (int e = 0; e < epochs_done && t->progress; e++) {
        const bft_epoch_rec *r = &t->hist[e];
        bft_progress pr;
        memset(&pr, 0, sizeof pr);
        pr.phase = 1;
        pr.restored = 1;
        pr.epoch = r->epoch;
        pr.epochs = o->epochs;
        pr.step = t->steps_per_epoch * r->epoch;
        pr.total_steps = t->total;
        pr.loss = r->loss;
        pr.lr = (float)schedule_lr(o->learning_rate, pr.step - 1, t->total, t->warmup);
        pr.elapsed_s = r->elapsed_s;
        pr.samples_per_s = r->samples_per_s;
        pr.eta_s = NAN;
        pr.eval_loss = r->eval_loss;
        pr.eval_accuracy = r->eval_accuracy;
        pr.eval_macro_f1 = r->eval_macro_f1;
        if (t->progress(t->ctx, &pr) != 0)
            return bft_set_error(err, BFT_ECANCEL, "training cancelled");
    }
    return BFT_OK;
}

/* State files: the fingerprint and history; with resume_path, continue after the
 * last completed epoch of the saved state. */
static int trainer_resume(trainer *t, const bft_dataset *ds, bft_error *err)
{
    const bft_train_opts *o = &t->o;
    bft_state_hdr h;
    int rc;
    t->fingerprint = o->state_path || o->resume_path ? train_fingerprint(t->m, ds, o, t->task) : 0;
    if ((o->state_path || o->resume_path) &&
        !(t->hist = calloc((size_t)o->epochs + 1, sizeof *t->hist)))
        return bft_set_error(err, BFT_ENOMEM, "out of memory for training");
    if (o->state_note_len > BFT_STATE_NOTE_MAX)
        return bft_set_error(err, BFT_EINVAL, "state note of %zu bytes (at most %d)",
                             o->state_note_len, BFT_STATE_NOTE_MAX);
    if (!o->resume_path)
        return BFT_OK;
    if ((rc = read_state(t, &h, err)) != BFT_OK)
        return rc;
    weights_replaced(t->m);
    t->step = h.step;
    t->samples = h.samples;
    t->loss_all = h.loss_all;
    t->t0 = now_s() - h.elapsed_s;
    t->best_epoch = h.best_epoch;
    t->bad_epochs = h.bad_epochs;
    t->stop = h.stop;
    t->best = h.best;
    t->best_l = h.best_l;
    t->best_a = h.best_a;
    t->best_f = h.best_f;
    memcpy(t->mrng.s, h.rng, sizeof t->mrng.s);
    t->last_epoch = h.epochs_done;
    t->first_epoch = h.epochs_done + 1;
    restored_result(t, &h);
    return report_restored(t, h.epochs_done, err);
}

/* Forward and backward of one classification batch (class weights: each
 * example's share of the batch loss). Returns the batch loss. */
static float cls_step(trainer *t, bert_batch *bt)
{
    const bft_train_opts *o = &t->o;
    int B = bt->B;
    stage_batch(bt, t->d_ids, t->d_lens, t->d_labels, t->d_targets, t->K);
    if (o->class_weights) {
        /* each example's share of the batch loss: w[y] / sum of the batch's w[y] */
        double sw = 0.0;
        for (int b = 0; b < B; b++)
            sw += o->class_weights[t->labels[b]];
        for (int b = 0; b < B; b++)
            t->roww[b] = (float)(o->class_weights[t->labels[b]] / sw);
        bft_dev_upload(t->d_roww, t->roww, (size_t)B * sizeof *t->roww);
        bt->weights = t->d_roww;
    }
    double p0 = now_s();
    float loss = bert_cls_forward(t->m, &t->acts, bt, &t->dc);
    double p1 = now_s();
    bert_cls_backward(t->m, &t->g, &t->acts, bt, &t->dc);
    t->prof[0] += p1 - p0;
    t->prof[1] += now_s() - p1;
    return loss;
}

/* Forward and backward of one MLM batch: mask, encoder, MLM head on the M
 * masked positions (none: loss 0, no gradient). Stops early when cancelled
 * (t->acts.stopped). */
static int mlm_step(trainer *t, const bert_batch *bt, float *loss, bft_error *err)
{
    const bft_config *cfg = &t->m->cfg;
    int M = mlm_mask(t, bt, &t->mrng, t->sp);
    bert_batch mb = *bt;
    mb.ids = t->mlm_ids;
    stage_batch(&mb, t->d_ids, t->d_lens, NULL, NULL, 0);
    *loss = 0.0f;
    if (M == 0)
        return BFT_OK;
    if (bert_mlm_reserve(&t->mlm, cfg, M) != 0)
        return bft_set_error(err, BFT_ENOMEM, "out of memory for the MLM head (%d rows)", M);
    bft_dev_upload(t->d_rows, t->rows, (size_t)M * sizeof *t->d_rows);
    bft_dev_upload(t->d_mlm_labels, t->mlm_labels, (size_t)M * sizeof *t->d_mlm_labels);
    const float *top = bert_encoder_forward(t->m, &t->acts, &mb, &t->dc);
    if (t->acts.stopped)
        return BFT_OK;
    *loss = bert_mlm_forward(t->m, &t->mlm, top, t->d_rows, M, t->d_mlm_labels);
    bft_op_zero(t->acts.dA, (size_t)mb.B * mb.T * cfg->hidden_size);
    bert_mlm_backward(t->m, &t->g, &t->mlm, t->d_rows, M, t->acts.dA);
    bert_encoder_backward(t->m, &t->g, &t->acts, &mb, &t->dc);
    return BFT_OK;
}

/* Report one optimizer step (phase 0) to the progress callback. */
static int report_step(trainer *t, int epoch, float loss, double lr, bft_error *err)
{
    bft_progress pr;
    double el = now_s() - t->t0;
    memset(&pr, 0, sizeof pr);
    pr.phase = 0;
    pr.epoch = epoch;
    pr.epochs = t->o.epochs;
    pr.step = t->step;
    pr.total_steps = t->total;
    pr.loss = (float)(t->loss_epoch / t->steps_epoch);
    pr.step_loss = loss;
    pr.lr = lr;
    pr.elapsed_s = el;
    pr.samples_per_s = el > 0 ? t->samples / el : 0.0;
    pr.eta_s = el / t->step * (t->total - t->step);
    pr.eval_loss = pr.eval_accuracy = pr.eval_macro_f1 = NAN;
    if (t->progress(t->ctx, &pr) != 0)
        return bft_set_error(err, BFT_ECANCEL, "training cancelled at step %lld", (long long)t->step);
    return BFT_OK;
}

/* One training step on the B examples order[s ..] of ds: batch, forward,
 * backward, AdamW update at the scheduled learning rate, progress. */
static int train_step(trainer *t, const bft_dataset *ds, int64_t s, int epoch, bft_error *err)
{
    const bft_train_opts *o = &t->o;
    int B = (int)(ds->n - s < o->batch_size ? ds->n - s : o->batch_size), rc;
    bert_batch bt;
    make_batch(ds, t->order + s, B, t->m->cfg.pad_token_id, t->ids, t->lens,
               t->task == TASK_CLS && !t->multi ? t->labels : NULL, t->targets, t->K, &bt);
    double lr = schedule_lr(o->learning_rate, t->step, t->total, t->warmup);
    float loss;
    t->dc.step = (uint64_t)t->step;
    if (t->task == TASK_CLS)
        loss = cls_step(t, &bt);
    else if ((rc = mlm_step(t, &bt, &loss, err)) != BFT_OK)
        return rc;
    if (t->acts.stopped)
        return bft_set_error(err, BFT_ECANCEL, "training cancelled in step %lld", (long long)t->step + 1);
    double p2 = now_s();
    optimizer_step(t, lr, t->step + 1);
    if ((rc = bft_dev_check(err)) != BFT_OK)
        return rc;
    t->prof[2] += now_s() - p2;
    if (t->profile && t->step > 0)
        fprintf(stderr, "bft profile: step %lld forward %.1f ms, backward %.1f ms, "
                "optimizer %.1f ms\n", (long long)t->step + 1, 1e3 * t->prof[0],
                1e3 * t->prof[1], 1e3 * t->prof[2]);
    t->prof[0] = t->prof[1] = t->prof[2] = 0.0;
    t->step++;
    t->steps_epoch++;
    t->samples += B;
    t->loss_epoch += loss;
    t->loss_all += loss;
    return t->progress ? report_step(t, epoch, loss, lr, err) : BFT_OK;
}

/* After an epoch of classification: score the validation set (el, ea, ef),
 * keep the best epoch (and its weights), count epochs without improvement. */
static int validate_epoch(trainer *t, int epoch, float *el, float *ea, float *ef, bft_error *err)
{
    const bft_train_opts *o = &t->o;
    bft_model *m = t->m;
    int rc = evaluate_ds(m, o->valid, 32, el, ea, ef, NULL, o->poll, o->poll_ctx, err);
    if (rc != BFT_OK)
        return rc;
    float mv = o->metric_for_best == BFT_METRIC_LOSS       ? *el
               : o->metric_for_best == BFT_METRIC_ACCURACY ? *ea
                                                           : *ef;
    int better = t->best_epoch == 0 || (isnan(t->best) && !isnan(mv)) ||
                 (o->metric_for_best == BFT_METRIC_LOSS ? mv < t->best : mv > t->best);
    if (better) {
        t->best = mv;
        t->best_epoch = epoch;
        t->best_l = *el;
        t->best_a = *ea;
        t->best_f = *ef;
        t->bad_epochs = 0;
        if (t->best_mem)
            bft_dev_copy(t->best_mem, m->params_mem, m->num_params * sizeof(float));
    } else if (o->early_stopping_patience > 0 && ++t->bad_epochs >= o->early_stopping_patience &&
               epoch < o->epochs)
        t->stop = 1;
    return BFT_OK;
}

/* The result and the history after epoch (validation scores el, ea, ef). */
static void record_epoch(trainer *t, int epoch, double elapsed, float el, float ea, float ef)
{
    bft_train_result *res = t->res;
    float eloss = (float)(t->loss_epoch / t->steps_epoch);
    double sps = elapsed > 0 ? t->samples / elapsed : 0.0;
    if (res) {
        res->steps = t->step;
        res->warmup_steps = t->warmup;
        res->epochs = epoch;
        res->train_loss = (float)(t->loss_all / t->step);
        res->last_epoch_loss = eloss;
        res->seconds = elapsed;
        res->samples_per_s = sps;
        res->eval_loss = el;
        res->eval_accuracy = ea;
        res->eval_macro_f1 = ef;
        res->best_epoch = t->best_epoch;
        res->best_metric = t->best;
        res->kept_epoch = epoch;
        res->early_stopped = t->stop;
    }
    if (t->hist) {
        bft_epoch_rec *rec = &t->hist[epoch - 1];
        memset(rec, 0, sizeof *rec);
        rec->epoch = epoch;
        rec->loss = eloss;
        rec->eval_loss = el;
        rec->eval_accuracy = ea;
        rec->eval_macro_f1 = ef;
        rec->samples_per_s = sps;
        rec->elapsed_s = elapsed;
    }
}

/* The state after epoch to o->state_path: what resume => true continues from. */
static int save_state(trainer *t, int epoch, double elapsed, bft_error *err)
{
    const bft_model *m = t->m;
    bft_state_hdr h;
    float *arrays[4] = {m->params_mem, t->m_mem, t->v_mem, t->best_mem};
    memset(&h, 0, sizeof h);
    h.task = (uint32_t)t->task;
    h.note_len = (uint32_t)t->o.state_note_len;
    h.fingerprint = t->fingerprint;
    h.num_params = m->num_params;
    h.epochs = t->o.epochs;
    h.epochs_done = epoch;
    h.nhist = epoch;
    h.best_epoch = t->best_epoch;
    h.bad_epochs = t->bad_epochs;
    h.stop = t->stop;
    h.has_best = t->best_mem != NULL;
    h.step = t->step;
    h.samples = t->samples;
    h.loss_all = t->loss_all;
    h.elapsed_s = elapsed;
    h.best = t->best;
    h.best_l = t->best_l;
    h.best_a = t->best_a;
    h.best_f = t->best_f;
    memcpy(h.rng, t->mrng.s, sizeof h.rng);
    return bft_state_write(t->o.state_path, &h, t->o.state_note, t->hist, arrays, err);
}

/* Report the end of epoch (phase 1) to the progress callback. */
static int report_epoch(trainer *t, int epoch, double elapsed, float el, float ea, float ef,
                        bft_error *err)
{
    bft_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.phase = 1;
    pr.epoch = epoch;
    pr.epochs = t->o.epochs;
    pr.step = t->step;
    pr.total_steps = t->total;
    pr.loss = (float)(t->loss_epoch / t->steps_epoch);
    pr.step_loss = NAN;
    pr.lr = schedule_lr(t->o.learning_rate, t->step - 1, t->total, t->warmup);
    pr.elapsed_s = elapsed;
    pr.samples_per_s = elapsed > 0 ? t->samples / elapsed : 0.0;
    pr.eta_s = elapsed / t->step * (t->total - t->step);
    pr.eval_loss = el;
    pr.eval_accuracy = ea;
    pr.eval_macro_f1 = ef;
    if (t->progress(t->ctx, &pr) != 0)
        return bft_set_error(err, BFT_ECANCEL, "training cancelled after epoch %d", epoch);
    return BFT_OK;
}

/* One epoch: its example order, every step, then validation, the result,
 * the saved state and the epoch's report. */
static int train_epoch(trainer *t, const bft_dataset *ds, int epoch, bft_error *err)
{
    const bft_train_opts *o = &t->o;
    float el = NAN, ea = NAN, ef = NAN;
    int rc;
    t->loss_epoch = 0.0;
    t->steps_epoch = 0;
    epoch_order(t, ds, epoch);
    for (int64_t s = 0; s < ds->n; s += o->batch_size)
        if ((rc = train_step(t, ds, s, epoch, err)) != BFT_OK)
            return rc;
    if (t->task == TASK_CLS && o->valid && (rc = validate_epoch(t, epoch, &el, &ea, &ef, err)) != BFT_OK)
        return rc;
    t->last_epoch = epoch;
    double elapsed = now_s() - t->t0;
    record_epoch(t, epoch, elapsed, el, ea, ef);
    if (o->state_path && (rc = save_state(t, epoch, elapsed, err)) != BFT_OK)
        return rc;
    return t->progress ? report_epoch(t, epoch, elapsed, el, ea, ef, err) : BFT_OK;
}

/* load_best_model_at_end: the best epoch's weights replace the last ones. */
static int keep_best(trainer *t, bft_error *err)
{
    bft_model *m = t->m;
    int rc;
    if (!t->best_mem || t->best_epoch == 0 || t->best_epoch == t->last_epoch)
        return BFT_OK;
    bft_dev_copy(m->params_mem, t->best_mem, m->num_params * sizeof(float));
    if ((rc = bft_dev_check(err)) != BFT_OK)
        return rc;
    if (t->res) {
        t->res->kept_epoch = t->best_epoch;
        t->res->eval_loss = t->best_l;
        t->res->eval_accuracy = t->best_a;
        t->res->eval_macro_f1 = t->best_f;
    }
    return BFT_OK;
}

/* Train m on ds for task (TASK_CLS or TASK_MLM): check, allocate, resume,
 * the epochs, keep the best; one cleanup path. */
static int train_body(bft_model *m, const bft_dataset *ds, const bft_train_opts *opts, int task,
                      bft_progress_fn progress, void *ctx, bft_train_result *res,
                      bft_error *err)
{
    trainer t;
    int rc;
    bft_clear_error(err);
    memset(&t, 0, sizeof t);
    if (res) {
        memset(res, 0, sizeof *res);
        res->eval_loss = res->eval_accuracy = res->eval_macro_f1 = res->best_metric = NAN;
    }
    if (!m || !ds)
        return bft_set_error(err, BFT_EINVAL, "NULL model or dataset");
    t.m = m;
    t.task = task;
    t.o = opts ? *opts : bft_train_default_opts();
    t.K = m->cfg.num_labels;
    t.multi = task == TASK_CLS && is_multi(m);
    t.progress = progress;
    t.ctx = ctx;
    t.res = res;
    rc = check_optimizer_opts(&t.o, err);
    if (rc == BFT_OK)
        rc = task == TASK_CLS ? check_cls_task(&t, ds, err) : check_mlm_task(&t, ds, err);
    if (rc == BFT_OK)
        rc = trainer_alloc(&t, ds, err);
    if (rc == BFT_OK) {
        trainer_start(&t, ds);
        rc = trainer_resume(&t, ds, err);
    }
    for (int epoch = t.first_epoch; rc == BFT_OK && epoch <= t.o.epochs && !t.stop; epoch++)
        rc = train_epoch(&t, ds, epoch, err);
    if (rc == BFT_OK)
        rc = keep_best(&t, err);
    trainer_free(&t);
    return rc;
}

/* Training on opts->device: the weights go up once, every step runs there, and
 * they come back at the end (also after a cancel, as the CPU trains in place). */
static int run_training(bft_model *m, const bft_dataset *ds, const bft_train_opts *opts, int task,
                        bft_progress_fn progress, void *ctx, bft_train_result *res,
                        bft_error *err)
{
    bft_devmodel d;
    int rc;
    if (!m || !ds)
        return train_body(m, ds, opts, task, progress, ctx, res, err);
    bft_clear_error(err);
    if (m->params_external)
        return bft_set_error(err, BFT_EINVAL, "training: the model's parameters are read-only (shared)");
    if (res) {
        memset(res, 0, sizeof *res);
        res->eval_loss = res->eval_accuracy = res->eval_macro_f1 = res->best_metric = NAN;
    }
    rc = bft_devmodel_open(&d, m, opts ? opts->device : BFT_DEVICE_CPU,
                           opts ? opts->precision : BFT_PRECISION_AUTO, 1, err);
    if (rc != BFT_OK)
        return rc;
    rc = train_body(&d.dm, ds, opts, task, progress, ctx, res, err);
    if (rc == BFT_OK || rc == BFT_ECANCEL) {
        bft_error e2;
        int rc2 = bft_devmodel_download(&d, m, rc == BFT_OK ? err : &e2);
        if (rc == BFT_OK)
            rc = rc2;
    }
    bft_devmodel_close(&d);
    return rc;
}

int bft_train(bft_model *m, const bft_dataset *ds, const bft_train_opts *opts,
              bft_progress_fn progress, void *ctx, bft_train_result *res, bft_error *err)
{
    return run_training(m, ds, opts, TASK_CLS, progress, ctx, res, err);
}

int bft_pretrain_mlm(bft_model *m, const bft_dataset *ds, const bft_train_opts *opts,
                     bft_progress_fn progress, void *ctx, bft_train_result *res, bft_error *err)
{
    return run_training(m, ds, opts, TASK_MLM, progress, ctx, res, err);
}
