/*
 * test_ngram.c — the n-gram head (ngram.h): features and logistic regression
 * against scikit-learn (tests/ref/ngram_ref.py, tests/data/golden/ngram_ref.txt),
 * cross-validation, its place in a model (safetensors round trip, drop),
 * mixing and the load-time checks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ngram.h"
#include "test.h"
#include "testdata.h"

#define GOLDEN "tests/data/golden/ngram_ref.txt"
#define MAXROWS 128

typedef struct golden {
    double C;
    int nword, nchar, ntrain, ntest;
    int labels[MAXROWS];
    char *train[MAXROWS];
    char *test[MAXROWS];
    double probs[MAXROWS][3];
} golden;

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int read_golden(golden *g)
{
    char line[1024];
    FILE *f = fopen(GOLDEN, "r");
    if (!f)
        return -1;
    memset(g, 0, sizeof *g);
    if (!fgets(line, sizeof line, f) || fscanf(f, "C %lf\nfeatures %d %d\ntrain %d\n", &g->C, &g->nword, &g->nchar,
                                               &g->ntrain) != 4 || g->ntrain > MAXROWS) {
        fclose(f);
        return -1;
    }
    for (int i = 0; i < g->ntrain && fgets(line, sizeof line, f); i++) {
        char *tab = strchr(line, '\t');
        g->labels[i] = atoi(line);
        g->train[i] = dupn(tab + 1, strcspn(tab + 1, "\n"));
    }
    if (fscanf(f, "test %d\n", &g->ntest) != 1 || g->ntest > MAXROWS) {
        fclose(f);
        return -1;
    }
    for (int i = 0; i < g->ntest && fgets(line, sizeof line, f); i++) {
        char *tab = strchr(line, '\t');
        g->test[i] = dupn(line, (size_t)(tab - line));
        sscanf(tab + 1, "%lf %lf %lf", &g->probs[i][0], &g->probs[i][1], &g->probs[i][2]);
    }
    fclose(f);
    return 0;
}

static void free_golden(golden *g)
{
    for (int i = 0; i < g->ntrain; i++)
        free(g->train[i]);
    for (int i = 0; i < g->ntest; i++)
        free(g->test[i]);
}

/* Read the golden; its corpus (training rows, then the held-out texts) and
 * a head fitted on the training rows with o (the golden's C when golden_c). */
static int fit_golden(golden *g, bft_ngram_corpus **cp, bft_ngram_head *h, bft_ngram_fit_opts o, int golden_c)
{
    bft_error err;
    int64_t rows[MAXROWS];
    int32_t labels[MAXROWS];
    *cp = NULL;
    if (read_golden(g) < 0) {
        CHECK(0, "cannot read %s", GOLDEN);
        return -1;
    }
    if (golden_c) {
        o.c_grid = &g->C;
        o.n_c = 1;
    }
    bft_ngram_corpus *c = bft_ngram_corpus_new();
    for (int i = 0; i < g->ntrain; i++) {
        CHECK(bft_ngram_corpus_add(c, g->train[i], strlen(g->train[i]), &err) == BFT_OK, "add: %s", err.msg);
        rows[i] = i;
        labels[i] = g->labels[i];
    }
    for (int i = 0; i < g->ntest; i++)
        CHECK(bft_ngram_corpus_add(c, g->test[i], strlen(g->test[i]), &err) == BFT_OK, "add: %s", err.msg);
    CHECK(bft_ngram_corpus_rows(c) == g->ntrain + g->ntest, "rows");
    int rc = bft_ngram_fit(c, rows, labels, g->ntrain, 3, &o, h, &err);
    CHECK(rc == BFT_OK, "fit: %s", err.msg);
    *cp = c;
    return rc;
}

/* Features and probabilities as scikit-learn's TF-IDF + LogisticRegression. */
static void test_reference(void)
{
    golden g;
    bft_ngram_corpus *c = NULL;
    bft_ngram_head h;
    bft_ngram_fit_opts o = bft_ngram_default_fit_opts();
    o.max_iter = 5000;
    o.tol = 1e-9;
    if (fit_golden(&g, &c, &h, o, 1) == BFT_OK) {
        int nchar = 0;
        double worst = 0;
        for (int64_t j = 0; j < h.F; j++)
            nchar += h.keys[2 * j] >= (float)(1 << 23); /* bit 47: the character group */
        CHECK(h.F == g.nword + g.nchar && nchar == g.nchar, "features %lld (char %d), scikit-learn %d + %d",
              (long long)h.F, nchar, g.nword, g.nchar);
        CHECK(h.C == g.C && isnan(h.cv_macro_f1), "C %g without cross-validation", h.C);
        for (int i = 0; i < g.ntest; i++) {
            float lp[3];
            bft_ngram_head_logprobs(&h, c, g.ntrain + i, lp);
            for (int k = 0; k < 3; k++) {
                double d = fabs(exp(lp[k]) - g.probs[i][k]);
                worst = d > worst ? d : worst;
            }
        }
        CHECK(worst < 1e-5, "probabilities within %g of scikit-learn's", worst);
        printf("# %lld features, max |p - sklearn| %.2e after %d iterations\n", (long long)h.F, worst,
               h.iterations);
        bft_ngram_head_free(&h);
    }
    bft_ngram_corpus_free(c);
    free_golden(&g);
}

/* Cross-validation picks a C of the grid and the head fits its training rows. */
static void test_cross_validation(void)
{
    golden g;
    bft_ngram_corpus *c = NULL;
    bft_ngram_head h;
    if (fit_golden(&g, &c, &h, bft_ngram_default_fit_opts(), 0) == BFT_OK) {
        int right = 0;
        CHECK(h.C == 1 || h.C == 10 || h.C == 100 || h.C == 1000, "C %g from the grid", h.C);
        CHECK(h.cv_macro_f1 > 0.5 && h.cv_macro_f1 <= 1.0, "cross-validated macro-F1 %g", h.cv_macro_f1);
        for (int i = 0; i < g.ntrain; i++) {
            float lp[3];
            int best = 0;
            bft_ngram_head_logprobs(&h, c, i, lp);
            for (int k = 1; k < 3; k++)
                best = lp[k] > lp[best] ? k : best;
            right += best == g.labels[i];
        }
        CHECK(right == g.ntrain, "%d of %d training rows right", right, g.ntrain);
        bft_ngram_head_free(&h);
    }
    bft_ngram_corpus_free(c);
    free_golden(&g);
}

/* softmax(log p + s log q) */
static void test_mix(void)
{
    float p[2] = {0.5f, 0.5f}, lq[2] = {logf(0.9f), logf(0.1f)};
    bft_ngram_mix_logprobs(p, lq, 2, 1.0f);
    CHECK(fabsf(p[0] - 0.9f) < 1e-6f && fabsf(p[1] - 0.1f) < 1e-6f, "scale 1: %g %g", p[0], p[1]);
    float r[2] = {0.2f, 0.8f};
    bft_ngram_mix_logprobs(r, lq, 2, 2.0f);
    double a = 0.2 * 0.81, b = 0.8 * 0.01;
    CHECK(fabs(r[0] - a / (a + b)) < 1e-6 && fabs(r[0] + r[1] - 1.0) < 1e-6, "scale 2: %g %g", r[0], r[1]);
}

/* In a model: the block grows by the head, survives safetensors, mixes the
 * same after the round trip, and drops back to the encoder's block. */
static void test_model(void)
{
    golden g;
    bft_ngram_corpus *c = NULL;
    bft_ngram_head h;
    bft_config cfg = bft_config_default();
    bft_parts parts = {1, 1, 0, 0};
    bft_error err;
    size_t vl;
    char *vocab;
    if (fit_golden(&g, &c, &h, bft_ngram_default_fit_opts(), 1) != BFT_OK) {
        bft_ngram_corpus_free(c);
        free_golden(&g);
        return;
    }
    cfg.vocab_size = 100;
    cfg.hidden_size = 16;
    cfg.num_hidden_layers = 1;
    cfg.num_attention_heads = 2;
    cfg.intermediate_size = 32;
    cfg.max_position_embeddings = 32;
    cfg.pad_token_id = 0;
    cfg.num_labels = 3;
    vocab = synth_vocab(100, &vl);
    bft_model *m = bft_model_new(&cfg, vocab, vl, parts, 1, &err);
    CHECK(m != NULL, "new: %s", err.msg);
    if (m) {
        size_t base = m->num_params;
        CHECK(!bft_ngram_has_head(m), "no head yet");
        CHECK(bft_model_set_ngram(m, &h, 4.0f, &err) == BFT_OK, "set: %s", err.msg);
        CHECK(m->parts.ngram == h.F && m->num_params == base + (size_t)(h.F * 2 + h.F + 3 * h.F + 3),
              "block %zu = %zu + the head", m->num_params, base);
        CHECK(bft_ngram_has_head(m) && m->cfg.ngram_scale == 4.0f, "head with scale 4");
        size_t st_len = 0;
        void *st = bft_model_to_safetensors(m, &st_len, &err);
        char *cj = bft_config_to_json(&m->cfg, 1, 0);
        CHECK(st && cj && strstr(cj, "\"bft_ngram_scale\""), "config.json names the scale");
        bft_model *r = st && cj ? bft_model_load_mem(cj, strlen(cj), vocab, vl, NULL, 0, st, st_len, &err) : NULL;
        CHECK(r != NULL, "reload: %s", err.msg);
        if (r) {
            const char *t = g.test[0];
            float p1[3] = {0.2f, 0.3f, 0.5f}, p2[3] = {0.2f, 0.3f, 0.5f}, lp[3];
            CHECK(r->parts.ngram == h.F && r->cfg.ngram_scale == 4.0f, "reloaded head %d", r->parts.ngram);
            CHECK(bft_ngram_mix(m, t, strlen(t), p1, &err) == BFT_OK &&
                  bft_ngram_mix(r, t, strlen(t), p2, &err) == BFT_OK, "mix: %s", err.msg);
            CHECK(memcmp(p1, p2, sizeof p1) == 0, "same mix after the round trip");
            bft_ngram_head_logprobs(&h, c, g.ntrain, lp);
            float p3[3] = {0.2f, 0.3f, 0.5f};
            bft_ngram_mix_logprobs(p3, lp, 3, 4.0f);
            CHECK(fabsf(p3[0] - p1[0]) < 1e-6f && fabsf(p3[2] - p1[2]) < 1e-6f,
                  "text and corpus row give the same mix");
            /* a load refuses keys out of order */
            float *keys = r->p.ng_keys;
            float t0 = keys[0], t1 = keys[1];
            keys[0] = keys[2];
            keys[1] = keys[3];
            CHECK(bft_ngram_check(r, &err) == BFT_EMISMATCH, "keys out of order refused");
            keys[0] = t0;
            keys[1] = t1;
            keys[1] = 0.5f;
            CHECK(bft_ngram_check(r, &err) == BFT_EMISMATCH, "a fractional key refused");
            keys[1] = t1;
            CHECK(bft_ngram_check(r, &err) == BFT_OK, "restored: %s", err.msg);
            bft_model_free(r);
        }
        CHECK(bft_model_drop_ngram(m, &err) == BFT_OK && m->num_params == base && m->parts.ngram == 0 &&
              !bft_ngram_has_head(m), "dropped");
        float p4[3] = {0.2f, 0.3f, 0.5f};
        CHECK(bft_ngram_mix(m, "profit", 6, p4, &err) == BFT_OK && p4[2] == 0.5f, "no head: no mix");
        /* the head must match the classifier */
        bft_ngram_head h2 = h;
        h2.K = 2;
        CHECK(bft_model_set_ngram(m, &h2, 4.0f, &err) == BFT_EINVAL, "a head of other labels refused");
        free(st);
        free(cj);
        bft_model_free(m);
    }
    free(vocab);
    bft_ngram_head_free(&h);
    bft_ngram_corpus_free(c);
    free_golden(&g);
}

/* Unusable input is an error, never a crash. */
static void test_errors(void)
{
    bft_error err;
    bft_ngram_head h;
    int64_t rows[2] = {0, 1};
    int32_t labels[2] = {0, 1};
    bft_ngram_corpus *c = bft_ngram_corpus_new();
    CHECK(bft_ngram_corpus_add(c, "xyz", 3, &err) == BFT_OK &&
          bft_ngram_corpus_add(c, "qwk", 3, &err) == BFT_OK, "add");
    CHECK(bft_ngram_fit(c, rows, labels, 2, 2, NULL, &h, &err) == BFT_OK && h.F == 0 && h.keys == NULL,
          "no n-gram in two rows: no head");
    labels[1] = 5;
    CHECK(bft_ngram_fit(c, rows, labels, 2, 2, NULL, &h, &err) == BFT_EINVAL, "label out of range");
    rows[1] = 9;
    labels[1] = 1;
    CHECK(bft_ngram_fit(c, rows, labels, 2, 2, NULL, &h, &err) == BFT_EINVAL, "row out of range");
    CHECK(bft_ngram_corpus_add(c, "\xff\xfe invalid \xc3", 12, &err) == BFT_OK, "invalid UTF-8 is dropped");
    CHECK(bft_ngram_corpus_add(c, "", 0, &err) == BFT_OK && bft_ngram_corpus_rows(c) == 4, "empty text");
    /* a text is read up to BFT_NGRAM_MAX_WORDS tokens: a huge one costs no more */
    size_t big = (size_t)64 << 20;
    char *t = malloc(big);
    for (size_t i = 0; i < big; i++)
        t[i] = i % 3 == 2 ? ' ' : (char)('a' + (i / 3) % 26);
    size_t before = bft_ngram_corpus_bytes(c);
    CHECK(bft_ngram_corpus_add(c, t, big, &err) == BFT_OK, "64 MB text: %s", err.msg);
    CHECK(bft_ngram_corpus_bytes(c) - before < (size_t)4 << 20, "grew by %zu bytes",
          bft_ngram_corpus_bytes(c) - before);
    free(t);
    bft_ngram_corpus_free(c);
}

int main(void)
{
    RUN(test_reference);
    RUN(test_cross_validation);
    RUN(test_mix);
    RUN(test_model);
    RUN(test_errors);
    return test_summary();
}
