/*
 * checkpoint.c — Hugging Face model directories in and out: config.json,
 * vocab.txt, tokenizer_config.json and model.safetensors, mapped onto the
 * parameter block of params.c.
 *
 * Tensor names accepted (HF BertFor* checkpoints):
 *   encoder tensors with or without the "bert." prefix
 *     (embeddings.*, encoder.layer.N.*, pooler.dense.*);
 *   LayerNorm "weight"/"bias" or the legacy "gamma"/"beta";
 *   classifier.{weight,bias} and cls.predictions.* without a prefix.
 * Known tensors the engine does not use are skipped: cls.seq_relationship.*
 * (next-sentence head), cls.predictions.decoder.weight (tied to the word
 * embeddings; its shape must be (V, C)), cls.predictions.decoder.bias (the
 * same values as cls.predictions.bias; used for it when that is absent) and
 * the embeddings.position_ids / token_type_ids buffers. Anything else is an
 * error naming the tensor. Optional parts (pooler, classifier, MLM head) are
 * detected from the tensors present; a part that is present must be complete.
 */
#include "model.h"
#include "ngram.h"
#include "resource.h"
#include "rng.h"
#include "ptbin.h"
#include "safetensors.h"
#include "engine_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST "model.safetensors"

/* ---- small helpers ------------------------------------------------------ */

/* Lines in vocab.txt as Python's readlines() counts them. */
static size_t count_lines(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == '\n';
    if (len > 0 && s[len - 1] != '\n')
        n++;
    return n;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t at = 0;
    at += (size_t)snprintf(buf + at, n - at, "[");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < n)
        snprintf(buf + at, n - at, "]");
}

/* Prefix err->msg with "what: " (keeps the code). */
static void prefix_error(bft_error *err, const char *what)
{
    char tmp[sizeof err->msg + 128];
    if (!err)
        return;
    snprintf(tmp, sizeof tmp, "%s: %s", what, err->msg);
    memcpy(err->msg, tmp, sizeof err->msg - 1);
    err->msg[sizeof err->msg - 1] = '\0';
}

/* qsort comparator over an array of C strings. */
/* ---- name mapping ------------------------------------------------------- */

enum { USE_LOAD, USE_IGNORE };

/* One tensor of the file with its name mapped to the layout's naming. */
typedef struct mapped {
    const bft_st_tensor *t;
    char norm[160];   /* layout name: prefix stripped, gamma/beta → weight/bias */
    int prefixed;     /* had "bert." */
    int use;          /* USE_LOAD or USE_IGNORE */
    int used;         /* matched by a layout tensor */
} mapped;

static int is_encoder_name(const char *n)
{
    return starts_with(n, "embeddings.") || starts_with(n, "encoder.") || starts_with(n, "pooler.");
}

/* Map file names; reject duplicates after mapping. */
static int map_names(const bft_st_file *f, mapped *m, bft_error *err)
{
    for (int i = 0; i < f->n; i++) {
        const char *raw = f->t[i].name, *s = raw;
        mapped *x = &m[i];
        size_t l;
        x->t = &f->t[i];
        x->prefixed = 0;
        x->used = 0;
        if (starts_with(raw, "bert.") && is_encoder_name(raw + 5)) {
            s = raw + 5;
            x->prefixed = 1;
        }
        l = strlen(s);
        if (l >= sizeof x->norm - 8) {
            /* far longer than any BERT name: keep it recognisable in the error */
            snprintf(x->norm, sizeof x->norm, "%.100s...", s);
            x->use = USE_LOAD;
            continue;
        }
        memcpy(x->norm, s, l + 1);
        if (ends_with(x->norm, "LayerNorm.gamma"))
            memcpy(x->norm + l - 5, "weight", 7);
        else if (ends_with(x->norm, "LayerNorm.beta"))
            memcpy(x->norm + l - 4, "bias", 5);
        x->use = USE_LOAD;
        if (strcmp(x->norm, "embeddings.position_ids") == 0 ||
            strcmp(x->norm, "embeddings.token_type_ids") == 0 ||
            (!x->prefixed && (strcmp(x->norm, "cls.seq_relationship.weight") == 0 ||
                              strcmp(x->norm, "cls.seq_relationship.bias") == 0 ||
                              strcmp(x->norm, "cls.predictions.decoder.weight") == 0 ||
                              strcmp(x->norm, "cls.predictions.decoder.bias") == 0)))
            x->use = USE_IGNORE;
        /* "bert.x" and "x", or "...gamma" and "...weight": one parameter twice */
        for (int j = 0; j < i && x->use == USE_LOAD; j++)
            if (m[j].use == USE_LOAD && strcmp(m[j].norm, x->norm) == 0)
                return bft_set_error(err, BFT_EMISMATCH,
                                     ST ": tensors \"%.150s\" and \"%.150s\" are the same parameter",
                                     m[j].t->name, raw);
    }
    return BFT_OK;
}

/* The file tensor that provides layout tensor `name`, or -1. */
static int find_mapped(const mapped *m, int n, const char *name, int in_encoder)
{
    for (int i = 0; i < n; i++)
        if (m[i].use == USE_LOAD && (in_encoder || !m[i].prefixed) && strcmp(m[i].norm, name) == 0)
            return i;
    return -1;
}

static int find_ignored(const mapped *m, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (m[i].use == USE_IGNORE && strcmp(m[i].norm, name) == 0)
            return i;
    return -1;
}

/* ---- model allocation --------------------------------------------------- */

/* Allocate the parameter block for m->cfg / m->parts (zeroed). */
static int alloc_params(bft_model *m, bft_error *err)
{
    size_t n = bft_params_count(&m->cfg, m->parts);
    int rc;
    if (n == 0 || n > SIZE_MAX / sizeof(float)) {
        return bft_set_error(err, BFT_EINVAL, "model: parameter count %zu is out of range", n);
    }
    if ((rc = bft_memory_check(bft_mem_model_bytes(&m->cfg, m->parts, 0), "the model's parameters",
                               err)) != BFT_OK)
        return rc;
    m->params_mem = calloc(n, sizeof(float));
    if (!m->params_mem)
        return bft_set_error(err, BFT_ENOMEM, "model: out of memory for %zu parameters (%zu MB)", n,
                             n * sizeof(float) >> 20);
    m->num_params = n;
    bft_params_assign(&m->p, m->params_mem, &m->cfg, m->parts);
    return BFT_OK;
}

/* vocab.txt bytes and size check, then the tokenizer. */
static int attach_vocab(bft_model *m, const char *vocab, size_t vocab_len, bft_error *err)
{
    size_t lines;
    if (!vocab)
        return bft_set_error(err, BFT_EINVAL, "vocab.txt: no data");
    lines = count_lines(vocab, vocab_len);
    if (lines != (size_t)m->cfg.vocab_size)
        return bft_set_error(err, BFT_EMISMATCH, "vocab.txt has %zu lines but config.json has vocab_size %d",
                             lines, m->cfg.vocab_size);
    /* kept with a final line break (psql's `cat vocab.txt` strips it), so the
     * same vocabulary is stored and exported as the same bytes */
    m->vocab = malloc(vocab_len + 2);
    if (!m->vocab)
        return bft_set_error(err, BFT_ENOMEM, "vocab.txt: out of memory");
    memcpy(m->vocab, vocab, vocab_len);
    if (vocab_len > 0 && vocab[vocab_len - 1] != '\n')
        m->vocab[vocab_len++] = '\n';
    m->vocab[vocab_len] = '\0';
    m->vocab_len = vocab_len;
    m->tok = bft_tokenizer_new(m->vocab, m->vocab_len, &m->cfg.tok, err);
    if (!m->tok) {
        if (err && err->code == BFT_OK)
            bft_set_error(err, BFT_EFORMAT, "vocab.txt: cannot build the tokenizer");
        prefix_error(err, "vocab.txt");
        return err ? err->code : BFT_EFORMAT;
    }
    if (bft_tokenizer_vocab_size(m->tok) != m->cfg.vocab_size)
        return bft_set_error(err, BFT_EMISMATCH, "vocab.txt has %d tokens but config.json has vocab_size %d",
                             bft_tokenizer_vocab_size(m->tok), m->cfg.vocab_size);
    return BFT_OK;
}

void bft_model_free(bft_model *m)
{
    if (!m)
        return;
    bft_tokenizer_free(m->tok);
    free(m->vocab);
    if (!m->params_external)
        free(m->params_mem);
    bft_config_release(&m->cfg);
    free(m);
}

int bft_model_share_params(bft_model *m, const float *block, size_t n, bft_error *err)
{
    bft_clear_error(err);
    if (!m || !block)
        return bft_set_error(err, BFT_EINVAL, "model: NULL model or parameter block"), -1;
    if (n != m->num_params || n != bft_params_count(&m->cfg, m->parts))
        return bft_set_error(err, BFT_EMISMATCH, "model: a block of %zu parameters for a model of %zu", n,
                             m->num_params), -1;
    if (!m->params_external)
        free(m->params_mem);
    m->params_mem = (float *)block; /* read only from here on: params_external */
    m->params_external = 1;
    bft_params_assign(&m->p, m->params_mem, &m->cfg, m->parts);
    return 0;
}

/* ---- loading ------------------------------------------------------------ */

/* Loading a safetensors file into a model: its tensors, their layout names
 * and, per layout tensor (list), the file's tensor (where). */
typedef struct weight_load {
    bft_model *m;
    bft_st_file f;
    mapped *mp;               /* (f.n) */
    int any_prefixed;         /* some tensor had "bert." */
    bft_tensor_info *list;    /* (nlist) the model's layout */
    int nlist;
    int *where;               /* (nlist) index into mp */
} weight_load;

/* The file's tensors (not more than a BERT of this depth can have) and their layout names. */
static int wl_map(weight_load *w, bft_error *err)
{
    bft_st_file *f = &w->f;
    /* A BERT has 16 tensors per layer plus at most 20 others and 6 known
     * extras; refusing more up front keeps the name matching below (quadratic
     * in the tensor count) cheap whatever the file holds. */
    long max = 16L * w->m->cfg.num_hidden_layers + 32;
    if (f->n > max)
        return bft_set_error(err, BFT_EMISMATCH,
                             ST ": %d tensors, more than a BERT with %d layers can have (%ld); first: \"%.200s\"",
                             f->n, w->m->cfg.num_hidden_layers, max, f->t[0].name);
    if (f->n > 0 && !(w->mp = calloc((size_t)f->n, sizeof *w->mp)))
        return bft_set_error(err, BFT_ENOMEM, ST ": out of memory");
    return map_names(f, w->mp, err);
}

/* Unexpected tensors first: they usually mean a different architecture. */
static int wl_check_names(weight_load *w, bft_error *err)
{
    for (int i = 0; i < w->f.n; i++) {
        const mapped *mp = &w->mp[i];
        if (mp->use == USE_IGNORE)
            continue;
        w->any_prefixed |= mp->prefixed;
        int known = is_encoder_name(mp->norm) || (!mp->prefixed && (starts_with(mp->norm, "classifier.") ||
                                                                   starts_with(mp->norm, "cls.predictions.") ||
                                                                   starts_with(mp->norm, "bft_ngram.")));
        if (!known)
            return bft_set_error(err, BFT_EMISMATCH,
                                 ST ": unexpected tensor \"%.200s\" (not part of BertForSequenceClassification, "
                                 "BertForMaskedLM or BertForPreTraining)",
                                 mp->t->name);
    }
    return BFT_OK;
}

/* The classifier's rows are its labels: they must agree with config.json (and be 2 or more). */
static int wl_classifier(weight_load *w, bft_error *err)
{
    bft_model *m = w->m;
    char got[64];
    int cls_w = find_mapped(w->mp, w->f.n, "classifier.weight", 0);
    if (cls_w < 0)
        return bft_set_error(err, BFT_EMISMATCH, ST ": missing tensor \"classifier.weight\" (classifier.bias is present)");
    const bft_st_tensor *t = w->mp[cls_w].t;
    if (t->ndim != 2 || t->shape[1] != m->cfg.hidden_size || t->shape[0] < 1 || t->shape[0] > 1000000) {
        shape_str(got, sizeof got, t->ndim, t->shape);
        return bft_set_error(err, BFT_EMISMATCH,
                             ST ": tensor \"classifier.weight\" has shape %s, expected [num_labels, %d]", got,
                             m->cfg.hidden_size);
    }
    int K = (int)t->shape[0];
    if (m->cfg.num_labels == 0) {
        m->cfg.num_labels = K; /* names default to LABEL_i */
    } else if (m->cfg.num_labels != K) {
        return bft_set_error(err, BFT_EMISMATCH,
                             ST ": classifier.weight has %d rows but config.json has %d labels (id2label)", K,
                             m->cfg.num_labels);
    }
    if (K < 2)
        return bft_set_error(err, BFT_EUNSUPPORTED,
                             ST ": a classifier with 1 output is a regression head in Hugging Face; not supported");
    return BFT_OK;
}

/* The optional parts (pooler, classifier, MLM head) from what is present. */
static int wl_parts(weight_load *w, bft_error *err)
{
    bft_model *m = w->m;
    m->parts.pooler = m->parts.classifier = m->parts.mlm = m->parts.ngram = 0;
    for (int i = 0; i < w->f.n; i++) {
        if (w->mp[i].use != USE_LOAD)
            continue;
        if (strcmp(w->mp[i].norm, "bft_ngram.idf") == 0 && !w->mp[i].prefixed) {
            const bft_st_tensor *t = w->mp[i].t;
            if (t->ndim != 1 || t->shape[0] < 1 || t->shape[0] > INT32_MAX)
                return bft_set_error(err, BFT_EMISMATCH, ST ": tensor \"bft_ngram.idf\" has a bad shape");
            m->parts.ngram = (int)t->shape[0];
        } else if (starts_with(w->mp[i].norm, "pooler."))
            m->parts.pooler = 1;
        else if (starts_with(w->mp[i].norm, "classifier."))
            m->parts.classifier = 1;
        else if (starts_with(w->mp[i].norm, "cls.predictions."))
            m->parts.mlm = 1;
    }
    if (m->parts.classifier)
        return wl_classifier(w, err);
    /* no classifier: labels in config.json (often HF's default LABEL_0/1) describe nothing */
    bft_config_release(&m->cfg);
    m->cfg.num_labels = 0;
    return BFT_OK;
}

/* Match every layout tensor; report unexpected tensors (a layer index beyond
 * num_hidden_layers, a misspelt name, ...) before missing ones. */
static int wl_match(weight_load *w, bft_error *err)
{
    int rc, missing = -1;
    if ((rc = alloc_params(w->m, err)) != BFT_OK)
        return rc;
    if (!(w->list = bft_params_tensors(&w->m->cfg, w->m->parts, &w->nlist)) ||
        !(w->where = malloc((size_t)w->nlist * sizeof *w->where)))
        return bft_set_error(err, BFT_ENOMEM, ST ": out of memory");
    for (int k = 0; k < w->nlist; k++) {
        int i = find_mapped(w->mp, w->f.n, w->list[k].name, w->list[k].in_encoder);
        if (i < 0 && strcmp(w->list[k].name, "cls.predictions.bias") == 0)
            i = find_ignored(w->mp, w->f.n, "cls.predictions.decoder.bias"); /* same values, older name */
        w->where[k] = i;
        if (i >= 0)
            w->mp[i].used = 1;
        else if (missing < 0)
            missing = k;
    }
    for (int i = 0; i < w->f.n; i++)
        if (w->mp[i].use == USE_LOAD && !w->mp[i].used)
            return bft_set_error(err, BFT_EMISMATCH, ST ": unexpected tensor \"%.200s\"", w->mp[i].t->name);
    if (missing >= 0)
        return bft_set_error(err, BFT_EMISMATCH, ST ": missing tensor \"%s%s\"",
                             w->list[missing].in_encoder && w->any_prefixed ? "bert." : "", w->list[missing].name);
    return BFT_OK;
}

/* An ignored tensor that is stored must have the shape (ndim, s) (what is the tie, for the message). */
static int wl_check_ignored(const weight_load *w, const char *name, int ndim, const int64_t *s,
                            const char *what, bft_error *err)
{
    char want[64], got[64];
    int i = find_ignored(w->mp, w->f.n, name);
    if (i < 0)
        return BFT_OK;
    const bft_st_tensor *t = w->mp[i].t;
    if (t->ndim == ndim && t->shape[0] == s[0] && (ndim == 1 || t->shape[1] == s[1]))
        return BFT_OK;
    shape_str(got, sizeof got, t->ndim, t->shape);
    shape_str(want, sizeof want, ndim, s);
    return bft_set_error(err, BFT_EMISMATCH, ST ": tensor \"%.200s\"%s has shape %s, expected %s", t->name, what,
                         got, want);
}

/* Every matched tensor has its layout shape; the tied decoder, when stored,
 * the word embeddings' shape. */
static int wl_check_shapes(weight_load *w, bft_error *err)
{
    const bft_config *cfg = &w->m->cfg;
    char want[64], got[64];
    for (int k = 0; k < w->nlist; k++) {
        const bft_tensor_info *ti = &w->list[k];
        const bft_st_tensor *t = w->mp[w->where[k]].t;
        int ok = t->ndim == ti->ndim && t->shape[0] == ti->shape[0] && (ti->ndim == 1 || t->shape[1] == ti->shape[1]);
        if (!ok) {
            shape_str(got, sizeof got, t->ndim, t->shape);
            shape_str(want, sizeof want, ti->ndim, ti->shape);
            return bft_set_error(err, BFT_EMISMATCH, ST ": tensor \"%.200s\" has shape %s, expected %s from config.json",
                                 t->name, got, want);
        }
    }
    int64_t dw[2] = {cfg->vocab_size, cfg->hidden_size}, db[1] = {cfg->vocab_size};
    int rc = wl_check_ignored(w, "cls.predictions.decoder.weight", 2, dw, " (tied to the word embeddings)", err);
    if (rc == BFT_OK)
        rc = wl_check_ignored(w, "cls.predictions.decoder.bias", 1, db, "", err);
    return rc;
}

/* All checks passed: convert straight from the caller's buffer. */
static int wl_convert(weight_load *w, bft_error *err)
{
    for (int k = 0; k < w->nlist; k++) {
        if (bft_interrupted())
            return bft_set_error(err, BFT_ECANCEL, ST ": loading interrupted");
        if (bft_st_to_f32(w->mp[w->where[k]].t, w->m->params_mem + w->list[k].offset, err) < 0)
            return err ? err->code : BFT_EUNSUPPORTED;
    }
    return BFT_OK;
}

/* Map the safetensors tensors onto a freshly allocated parameter block: map the
 * names, check them, the parts, the matching and the shapes, then convert. */
static int load_weights(bft_model *m, const void *st, size_t st_len, bft_error *err)
{
    weight_load w;
    int rc;
    memset(&w, 0, sizeof w);
    w.m = m;
    if (bft_st_parse(st, st_len, &w.f, err) < 0)
        return err ? err->code : BFT_EFORMAT;
    rc = wl_map(&w, err);
    if (rc == BFT_OK)
        rc = wl_check_names(&w, err);
    if (rc == BFT_OK)
        rc = wl_parts(&w, err);
    if (rc == BFT_OK)
        rc = wl_match(&w, err);
    if (rc == BFT_OK)
        rc = wl_check_shapes(&w, err);
    if (rc == BFT_OK)
        rc = wl_convert(&w, err);
    free(w.where);
    free(w.list);
    free(w.mp);
    bft_st_release(&w.f);
    return rc;
}

bft_model *bft_model_load_mem(const char *config_json, size_t config_len, const char *vocab, size_t vocab_len,
                              const char *tokenizer_config, size_t tokcfg_len, const void *safetensors,
                              size_t st_len, bft_error *err)
{
    bft_model *m = calloc(1, sizeof *m);
    char *tj_vocab = NULL;
    size_t i = 0;
    if (!m) {
        bft_set_error(err, BFT_ENOMEM, "model: out of memory");
        return NULL;
    }
    bft_clear_error(err);
    if (bft_config_parse(config_json, config_len, &m->cfg, err) < 0)
        goto fail;
    if (!vocab) {
        bft_set_error(err, BFT_EINVAL, "vocab.txt: no data");
        goto fail;
    }
    /* tokenizer.json instead of vocab.txt: its vocabulary and normalizer
     * (tokenizer_config.json, when given, overrides the normalizer's settings
     * as BertTokenizerFast does) */
    while (i < vocab_len && (vocab[i] == ' ' || vocab[i] == '\t' || vocab[i] == '\n' || vocab[i] == '\r'))
        i++;
    if (i < vocab_len && vocab[i] == '{') {
        if (bft_tokenizer_json_parse(vocab, vocab_len, &m->cfg, &tj_vocab, &vocab_len, err) < 0)
            goto fail;
        vocab = tj_vocab;
    }
    if (tokenizer_config && bft_tokenizer_config_parse(tokenizer_config, tokcfg_len, &m->cfg, err) < 0)
        goto fail;
    if (count_lines(vocab, vocab_len) != (size_t)m->cfg.vocab_size) {
        bft_set_error(err, BFT_EMISMATCH, "vocab.txt has %zu lines but config.json has vocab_size %d",
                      count_lines(vocab, vocab_len), m->cfg.vocab_size);
        goto fail;
    }
    if (!safetensors) {
        bft_set_error(err, BFT_EINVAL, ST ": no data");
        goto fail;
    }
    if (bft_pt_detect(safetensors, st_len)) {
        /* pytorch_model.bin: its tensors as safetensors bytes, nothing executed */
        size_t conv_len = 0;
        void *conv = bft_pt_to_safetensors(safetensors, st_len, &conv_len, err);
        int lrc;
        if (!conv)
            goto fail;
        lrc = load_weights(m, conv, conv_len, err);
        free(conv);
        if (lrc != BFT_OK)
            goto fail;
    } else if (load_weights(m, safetensors, st_len, err) != BFT_OK)
        goto fail;
    if (bft_ngram_check(m, err) != BFT_OK)
        goto fail;
    if (attach_vocab(m, vocab, vocab_len, err) != BFT_OK)
        goto fail;
    free(tj_vocab);
    return m;
fail:
    if (err && err->code == BFT_OK)
        bft_set_error(err, BFT_EFORMAT, "model: load failed");
    free(tj_vocab);
    bft_model_free(m);
    return NULL;
}

bft_model *bft_model_wrap_params(const char *config_json, size_t config_len, const char *vocab, size_t vocab_len,
                                 const char *tokenizer_config, size_t tokcfg_len, bft_parts parts, int num_labels,
                                 const float *block, size_t n, bft_error *err)
{
    bft_model *m;
    size_t want;

    bft_clear_error(err);
    if (!block) {
        bft_set_error(err, BFT_EINVAL, "model: no parameter block");
        return NULL;
    }
    if (!(m = calloc(1, sizeof *m))) {
        bft_set_error(err, BFT_ENOMEM, "model: out of memory");
        return NULL;
    }
    if (bft_config_parse(config_json, config_len, &m->cfg, err) < 0)
        goto fail;
    if (tokenizer_config && bft_tokenizer_config_parse(tokenizer_config, tokcfg_len, &m->cfg, err) < 0)
        goto fail;
    /* the label rules of load_weights: a classifier's row count is the label
     * count, and a model without one has no labels */
    m->parts = parts;
    if (parts.classifier) {
        if (num_labels < 2 || (m->cfg.num_labels != 0 && m->cfg.num_labels != num_labels)) {
            bft_set_error(err, BFT_EMISMATCH, "model: a classifier of %d labels for a config with %d", num_labels,
                          m->cfg.num_labels);
            goto fail;
        }
        m->cfg.num_labels = num_labels;
    } else {
        bft_config_release(&m->cfg);
        m->cfg.num_labels = 0;
    }
    want = bft_params_count(&m->cfg, m->parts);
    if (n != want) {
        bft_set_error(err, BFT_EMISMATCH, "model: a block of %zu parameters where config.json needs %zu", n, want);
        goto fail;
    }
    m->params_mem = (float *)block; /* never written: params_external */
    m->params_external = 1;
    m->num_params = n;
    bft_params_assign(&m->p, m->params_mem, &m->cfg, m->parts);
    if (attach_vocab(m, vocab, vocab_len, err) != BFT_OK)
        goto fail;
    return m;
fail:
    if (err && err->code == BFT_OK)
        bft_set_error(err, BFT_EFORMAT, "model: wrap failed");
    bft_model_free(m);
    return NULL;
}

/* Open dir/name for reading without blocking (a FIFO or a device must not
 * hang the caller) and only when it is a regular file; *size receives its
 * size. Returns the descriptor, -2 when it does not exist (and missing_ok),
 * or -1 with err. */
static int open_regular(const char *dir, const char *name, int missing_ok, size_t *size, bft_error *err)
{
    char path[PATH_MAX];
    struct stat sb;
    int fd;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return bft_set_error(err, BFT_EINVAL, "%s: path too long", dir), -1;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT && missing_ok)
            return -2;
        return bft_set_error(err, BFT_EIO, "%s: %s", path, strerror(errno)), -1;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return bft_set_error(err, BFT_EIO, "%s: not a regular file", path), -1;
    }
    /* reads of a regular file never block: back to blocking mode */
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    *size = (size_t)sb.st_size;
    return fd;
}

/* Whole regular file into a malloc'd NUL-terminated buffer, read in 1 MB
 * pieces between interrupt checks and refused up front when larger than the
 * memory budget (resource.h). Returns 0, 1 when the file does not exist (and
 * missing_ok), -1 with err. */
static int read_file(const char *dir, const char *name, char **out, size_t *len, int missing_ok, bft_error *err)
{
    char *buf = NULL;
    size_t size = 0, n = 0, cap;
    int fd, rc;

    *out = NULL;
    *len = 0;
    fd = open_regular(dir, name, missing_ok, &size, err);
    if (fd == -2)
        return 1;
    if (fd < 0)
        return -1;
    if ((rc = bft_memory_check(size, name, err)) != BFT_OK) {
        close(fd);
        return -1;
    }
    /* the file may grow while it is read: never past the budget */
    cap = size + 1 > 65536 ? size + 1 : 65536;
    for (;;) {
        ssize_t got;
        if (n + 1 >= cap) {
            size_t ncap = cap * 2;
            char *p;
            if (bft_memory_check(ncap, name, err) != BFT_OK) {
                free(buf);
                close(fd);
                return -1;
            }
            p = realloc(buf, ncap);
            if (!p) {
                free(buf);
                close(fd);
                return bft_set_error(err, BFT_ENOMEM, "%s/%s: out of memory", dir, name), -1;
            }
            buf = p;
            cap = ncap;
        } else if (!buf && !(buf = malloc(cap))) {
            close(fd);
            return bft_set_error(err, BFT_ENOMEM, "%s/%s: out of memory", dir, name), -1;
        }
        if (bft_interrupted()) {
            free(buf);
            close(fd);
            return bft_set_error(err, BFT_ECANCEL, "%s/%s: reading interrupted", dir, name), -1;
        }
        got = read(fd, buf + n, (cap - n - 1) < (1u << 20) ? cap - n - 1 : (1u << 20));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return bft_set_error(err, BFT_EIO, "%s/%s: read error: %s", dir, name, strerror(e)), -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

bft_model *bft_model_load_dir(const char *dir, bft_error *err)
{
    char *config = NULL, *vocab = NULL, *tokcfg = NULL;
    size_t config_len, vocab_len, tokcfg_len;
    char path[PATH_MAX];
    int fd = -1;
    void *st = MAP_FAILED;
    size_t st_len = 0;
    bft_model *m = NULL;
    struct stat sb;

    bft_clear_error(err);
    if (!dir) {
        bft_set_error(err, BFT_EINVAL, "model directory: NULL");
        return NULL;
    }
    /* vocab.txt, or tokenizer.json when a checkpoint ships only that */
    int rv;
    if (read_file(dir, "config.json", &config, &config_len, 0, err) < 0 ||
        (rv = read_file(dir, "vocab.txt", &vocab, &vocab_len, 1, err)) < 0 ||
        (rv == 1 && read_file(dir, "tokenizer.json", &vocab, &vocab_len, 1, err) < 0) ||
        read_file(dir, "tokenizer_config.json", &tokcfg, &tokcfg_len, 1, err) < 0)
        goto out;
    if (!vocab) {
        bft_set_error(err, BFT_EIO, "%s: neither vocab.txt nor tokenizer.json exists", dir);
        goto out;
    }
    if ((size_t)snprintf(path, sizeof path, "%s/" ST, dir) >= sizeof path) {
        bft_set_error(err, BFT_EINVAL, "%s: path too long", dir);
        goto out;
    }
    /* model.safetensors when it exists, else pytorch_model.bin */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 && errno == ENOENT) {
        char bin[PATH_MAX];
        snprintf(bin, sizeof bin, "%s/pytorch_model.bin", dir);
        fd = open(bin, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd >= 0 || errno != ENOENT)
            memcpy(path, bin, sizeof path);
        else
            errno = ENOENT;
    }
    if (fd < 0) {
        int e = errno;
        char idx[PATH_MAX], bidx[PATH_MAX];
        snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
        snprintf(bidx, sizeof bidx, "%s/pytorch_model.bin.index.json", dir);
        if (e == ENOENT && (access(idx, F_OK) == 0 || access(bidx, F_OK) == 0))
            bft_set_error(err, BFT_EUNSUPPORTED,
                          "%s: sharded checkpoints (%s) are not supported; "
                          "save the model as one model.safetensors",
                          dir, access(idx, F_OK) == 0 ? "model.safetensors.index.json" : "pytorch_model.bin.index.json");
        else if (e == ENOENT)
            bft_set_error(err, BFT_EIO, "%s: neither model.safetensors nor pytorch_model.bin exists", dir);
        else
            bft_set_error(err, BFT_EIO, "%s: %s", path, strerror(e));
        goto out;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        bft_set_error(err, BFT_EIO, "%s: not a regular file", path);
        goto out;
    }
    st_len = (size_t)sb.st_size;
    if (st_len == 0) {
        bft_set_error(err, BFT_EFORMAT, "%s: empty file", path);
        goto out;
    }
    /* the mapped file, then parameters as F32 (twice its size from F16/BF16);
     * a pytorch_model.bin is first converted to safetensors bytes (about its
     * size again) */
    if (bft_memory_check(st_len + 2 * st_len + (strstr(path, "/pytorch_model.bin") ? st_len : 0), ST, err) !=
        BFT_OK)
        goto out;
    st = mmap(NULL, st_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st == MAP_FAILED) {
        bft_set_error(err, BFT_EIO, "%s: mmap: %s", path, strerror(errno));
        goto out;
    }
    if (strstr(path, "/pytorch_model.bin") && !bft_pt_detect(st, st_len)) {
        bft_set_error(err, BFT_EFORMAT, "%s: not a PyTorch checkpoint (neither torch.save's zip archive nor its "
                      "legacy format)", path);
        goto out;
    }
    m = bft_model_load_mem(config, config_len, vocab, vocab_len, tokcfg, tokcfg ? tokcfg_len : 0, st, st_len,
                           err);
out:
    if (st != MAP_FAILED)
        munmap(st, st_len);
    if (fd >= 0)
        close(fd);
    free(config);
    free(vocab);
    free(tokcfg);
    return m;
}

/* ---- fresh models ------------------------------------------------------- */

/* HF _init_weights for one tensor of the layout. Returns BFT_ECANCEL when
 * interrupted (polled every 2^20 values), else BFT_OK. */
static int init_tensor(const bft_tensor_info *ti, float *base, const bft_config *cfg, bft_rng *rng)
{
    float *x = base + ti->offset;
    if (ends_with(ti->name, "LayerNorm.weight")) {
        for (size_t i = 0; i < ti->numel; i++)
            x[i] = 1.0f;
    } else if (ti->ndim == 1) {
        /* biases, LayerNorm biases, cls.predictions.bias */
        for (size_t i = 0; i < ti->numel; i++)
            x[i] = 0.0f;
    } else {
        for (size_t i = 0; i < ti->numel; i++) {
            if ((i & 0xFFFFF) == 0xFFFFF && bft_interrupted())
                return BFT_ECANCEL;
            x[i] = bft_rng_normal(rng) * cfg->initializer_range;
        }
        if (strcmp(ti->name, "embeddings.word_embeddings.weight") == 0 && cfg->pad_token_id >= 0 &&
            cfg->pad_token_id < cfg->vocab_size)
            memset(x + (size_t)cfg->pad_token_id * (size_t)cfg->hidden_size, 0,
                   (size_t)cfg->hidden_size * sizeof(float));
    }
    return BFT_OK;
}

bft_model *bft_model_new(const bft_config *cfg, const char *vocab, size_t vocab_len, bft_parts parts,
                         uint64_t seed, bft_error *err)
{
    bft_model *m;
    bft_tensor_info *list = NULL;
    int n = 0;
    bft_rng rng;

    bft_clear_error(err);
    if (!cfg) {
        bft_set_error(err, BFT_EINVAL, "model: no config");
        return NULL;
    }
    if (bft_config_validate(cfg, err) != BFT_OK)
        return NULL;
    if (parts.classifier && cfg->num_labels < 2) {
        bft_set_error(err, BFT_EINVAL, "model: a classifier needs num_labels >= 2, got %d", cfg->num_labels);
        return NULL;
    }
    if (!(m = calloc(1, sizeof *m))) {
        bft_set_error(err, BFT_ENOMEM, "model: out of memory");
        return NULL;
    }
    if (bft_config_copy(&m->cfg, cfg) < 0) {
        free(m);
        bft_set_error(err, BFT_ENOMEM, "model: out of memory");
        return NULL;
    }
    m->parts.pooler = parts.pooler != 0;
    m->parts.classifier = parts.classifier != 0;
    m->parts.mlm = parts.mlm != 0;
    m->parts.ngram = 0; /* a new model has no n-gram head */
    m->cfg.ngram_scale = 0;
    if (!m->parts.classifier) {
        bft_config_release(&m->cfg);
        m->cfg.num_labels = 0;
    }
    if (attach_vocab(m, vocab, vocab_len, err) != BFT_OK || alloc_params(m, err) != BFT_OK)
        goto fail;
    if (!(list = bft_params_tensors(&m->cfg, m->parts, &n))) {
        bft_set_error(err, BFT_ENOMEM, "model: out of memory");
        goto fail;
    }
    bft_rng_seed(&rng, seed);
    for (int k = 0; k < n; k++)
        if (init_tensor(&list[k], m->params_mem, &m->cfg, &rng) != BFT_OK) {
            free(list);
            bft_set_error(err, BFT_ECANCEL, "model: initialisation interrupted");
            goto fail;
        }
    free(list);
    return m;
fail:
    bft_model_free(m);
    return NULL;
}

/* Free n label names and their array. */
static void free_names(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* *out: a copy of the n names (none NULL, all distinct). */
static int copy_label_names(const char *const *names, int n, char ***out, bft_error *err)
{
    char **nnames = calloc((size_t)n, sizeof *nnames);
    int a, b, d, rc;
    if (!nnames)
        return bft_set_error(err, BFT_ENOMEM, "model: out of memory");
    for (int i = 0; i < n; i++) {
        if (!names[i] || !(nnames[i] = strdup(names[i]))) {
            free_names(nnames, i);
            return names[i] ? bft_set_error(err, BFT_ENOMEM, "model: out of memory")
                            : bft_set_error(err, BFT_EINVAL, "model: label name %d is NULL", i);
        }
    }
    if ((d = bft_find_duplicate_name(nnames, n, &a, &b)) != 0) {
        rc = d < 0 ? bft_set_error(err, BFT_ENOMEM, "model: out of memory")
                   : bft_set_error(err, BFT_EINVAL, "model: label name \"%.100s\" given for %d and %d",
                                   nnames[a], a, b);
        free_names(nnames, n);
        return rc;
    }
    *out = nnames;
    return BFT_OK;
}

/* A parameter block for config ncfg and parts nparts: every tensor the model
 * shares with it copied, the others (pooler, classifier) initialised from rng. */
static int head_block(const bft_model *m, const bft_config *ncfg, bft_parts nparts, size_t count,
                      uint64_t seed, float **out, bft_error *err)
{
    int on = 0, nn = 0, rc = BFT_OK;
    bft_tensor_info *olist = bft_params_tensors(&m->cfg, m->parts, &on);
    bft_tensor_info *nlist = bft_params_tensors(ncfg, nparts, &nn);
    float *mem = calloc(count, sizeof(float));
    bft_rng rng;
    if (!olist || !nlist || !mem)
        rc = bft_set_error(err, BFT_ENOMEM, "model: out of memory for %zu parameters", count);
    bft_rng_seed(&rng, seed);
    for (int k = 0; rc == BFT_OK && k < nn; k++) {
        const bft_tensor_info *ti = &nlist[k];
        int found = 0;
        /* a classifier of another size has another numel: never copied */
        for (int j = 0; j < on; j++)
            if (strcmp(olist[j].name, ti->name) == 0 && olist[j].numel == ti->numel) {
                memcpy(mem + ti->offset, m->params_mem + olist[j].offset, ti->numel * sizeof(float));
                found = 1;
                break;
            }
        if (!found && init_tensor(ti, mem, ncfg, &rng) != BFT_OK)
            rc = bft_set_error(err, BFT_ECANCEL, "model: initialisation interrupted");
    }
    free(olist);
    free(nlist);
    if (rc != BFT_OK)
        free(mem);
    else
        *out = mem;
    return rc;
}

/* set_labels body: returns BFT_OK or an error code. */
static int set_labels(bft_model *m, int num_labels, const char *const *names, uint64_t seed, bft_error *err)
{
    bft_config ncfg;
    bft_parts nparts;
    char **nnames = NULL;
    float *mem = NULL;
    size_t count;
    int rc;

    if (num_labels < 2 || num_labels > 1000000)
        return bft_set_error(err, BFT_EINVAL,
                             "model: num_labels must be in [2, 1000000], got %d (1 label is regression in Hugging Face)",
                             num_labels);
    if (names && (rc = copy_label_names(names, num_labels, &nnames, err)) != BFT_OK)
        return rc;
    if (m->parts.classifier && m->cfg.num_labels == num_labels && m->parts.pooler) {
        /* the head fits: keep its weights (HF semantics), only rename */
        if (nnames) {
            bft_config_release(&m->cfg);
            m->cfg.id2label = nnames;
        }
        return BFT_OK;
    }
    /* New block: copy every tensor the new layout shares, fresh pooler/classifier. */
    ncfg = m->cfg;
    ncfg.num_labels = num_labels;
    ncfg.id2label = NULL;
    nparts = m->parts;
    nparts.pooler = 1;
    nparts.classifier = 1;
    nparts.ngram = 0; /* the n-gram head belongs to the old labels */
    ncfg.ngram_scale = 0;
    count = bft_params_count(&ncfg, nparts);
    if (bft_memory_check((count + m->num_params) * sizeof(float), "the model with its new classifier",
                         err) != BFT_OK)
        rc = BFT_ENOMEM;
    else
        rc = head_block(m, &ncfg, nparts, count, seed, &mem, err);
    if (rc != BFT_OK) {
        free_names(nnames, num_labels);
        return rc;
    }
    if (!m->params_external)
        free(m->params_mem);
    m->params_external = 0; /* the new block is the model's own */
    bft_config_release(&m->cfg);
    m->cfg = ncfg;
    m->cfg.id2label = nnames;
    m->parts = nparts;
    m->params_mem = mem;
    m->num_params = count;
    bft_params_assign(&m->p, mem, &m->cfg, m->parts);
    return BFT_OK;
}

int bft_model_set_labels(bft_model *m, int num_labels, const char *const *names, uint64_t seed, bft_error *err)
{
    bft_clear_error(err);
    if (!m) {
        bft_set_error(err, BFT_EINVAL, "model: NULL");
        return -1;
    }
    return set_labels(m, num_labels, names, seed, err) == BFT_OK ? 0 : -1;
}

/* ---- writing ------------------------------------------------------------ */

void *bft_model_to_safetensors(const bft_model *m, size_t *out_len, bft_error *err)
{
    bft_tensor_info *list;
    bft_st_out *outs;
    char (*names)[104];
    int n = 0;
    void *bytes;

    bft_clear_error(err);
    if (!m || !m->params_mem || !out_len) {
        bft_set_error(err, BFT_EINVAL, "model: nothing to serialise");
        return NULL;
    }
    list = bft_params_tensors(&m->cfg, m->parts, &n);
    outs = list ? calloc((size_t)n + 1, sizeof *outs) : NULL;
    names = list ? calloc((size_t)n + 1, sizeof *names) : NULL;
    if (!list || !outs || !names) {
        free(list);
        free(outs);
        free(names);
        bft_set_error(err, BFT_ENOMEM, "model: out of memory");
        return NULL;
    }
    for (int k = 0; k < n; k++) {
        snprintf(names[k], sizeof names[k], "%s%s", list[k].in_encoder ? "bert." : "", list[k].name);
        outs[k].name = names[k];
        outs[k].ndim = list[k].ndim;
        outs[k].shape[0] = list[k].shape[0];
        outs[k].shape[1] = list[k].shape[1];
        outs[k].data = m->params_mem + list[k].offset;
    }
    bytes = bft_st_write(outs, n, out_len, err);
    free(list);
    free(outs);
    free(names);
    return bytes;
}

/* mkdir -p */
static int make_dirs(const char *dir, bft_error *err)
{
    char path[PATH_MAX];
    size_t l = strlen(dir);
    if (l == 0 || l >= sizeof path)
        return bft_set_error(err, BFT_EINVAL, "bad output directory \"%.200s\"", dir);
    memcpy(path, dir, l + 1);
    for (size_t i = 1; i <= l; i++) {
        if (path[i] == '/' || path[i] == '\0') {
            char c = path[i];
            path[i] = '\0';
            if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return bft_set_error(err, BFT_EIO, "%s: %s", path, strerror(errno));
            path[i] = c;
        }
    }
    {
        struct stat sb;
        if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode))
            return bft_set_error(err, BFT_EIO, "%s: not a directory", dir);
    }
    return BFT_OK;
}

/* Write dir/name atomically (temporary file + rename). */
static int write_file(const char *dir, const char *name, const void *data, size_t len, bft_error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    FILE *fp;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= sizeof tmp)
        return bft_set_error(err, BFT_EINVAL, "%s: path too long", dir);
    if (!(fp = fopen(tmp, "wb")))
        return bft_set_error(err, BFT_EIO, "%s: %s", tmp, strerror(errno));
    if ((len && fwrite(data, 1, len, fp) != len) || fflush(fp) != 0) {
        int e = errno;
        fclose(fp);
        unlink(tmp);
        return bft_set_error(err, BFT_EIO, "%s: write failed: %s", tmp, strerror(e));
    }
    if (fclose(fp) != 0) {
        unlink(tmp);
        return bft_set_error(err, BFT_EIO, "%s: write failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return bft_set_error(err, BFT_EIO, "%s: %s", path, strerror(e));
    }
    return BFT_OK;
}

static int save_dir(const bft_model *m, const char *dir, bft_error *err)
{
    char *config = NULL, *tokcfg = NULL;
    void *st = NULL;
    size_t st_len = 0;
    int rc;

    bft_clear_error(err);
    if (!m || !dir)
        return bft_set_error(err, BFT_EINVAL, "model: nothing to save");
    if ((rc = make_dirs(dir, err)) != BFT_OK)
        return rc;
    config = bft_config_to_json(&m->cfg, m->parts.classifier, m->parts.mlm);
    tokcfg = bft_tokenizer_config_to_json(&m->cfg);
    if (!config || !tokcfg) {
        rc = bft_set_error(err, BFT_ENOMEM, "model: out of memory");
        goto out;
    }
    if (!(st = bft_model_to_safetensors(m, &st_len, err))) {
        rc = err ? err->code : BFT_ENOMEM;
        goto out;
    }
    if ((rc = write_file(dir, ST, st, st_len, err)) != BFT_OK ||
        (rc = write_file(dir, "vocab.txt", m->vocab, m->vocab_len, err)) != BFT_OK ||
        (rc = write_file(dir, "tokenizer_config.json", tokcfg, strlen(tokcfg), err)) != BFT_OK ||
        (rc = write_file(dir, "config.json", config, strlen(config), err)) != BFT_OK)
        goto out;
out:
    free(config);
    free(tokcfg);
    free(st);
    return rc;
}

int bft_model_save_dir(const bft_model *m, const char *dir, bft_error *err)
{
    return save_dir(m, dir, err) == BFT_OK ? 0 : -1;
}

/* ---- for the other engine modules (engine_util.h) ---------------------- */

int bft_read_dir_file(const char *dir, const char *name, char **out, size_t *len, int missing_ok,
                      bft_error *err)
{
    return read_file(dir, name, out, len, missing_ok, err);
}
