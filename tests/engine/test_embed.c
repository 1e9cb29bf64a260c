/*
 * test_embed.c — sentence embeddings: the pooling function against a naive
 * reference written from sentence-transformers' Pooling/Normalize formulas,
 * the configuration parsers (modules.json, the Pooling config in its current
 * and its older form, sentence_bert_config.json, bft's own forms) and their
 * errors, and bft_embed / bft_hidden_states on the tiny checkpoint (pooling of
 * the hidden states; batching and length order do not change a result);
 * bft_embed_windows on a 2,400-piece text: the combination of its windows
 * embedded one at a time (token-weighted mean or max, then normalized), and a
 * one-window text's vector unchanged.
 * Run from the repository root.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "embed.h"
#include "test.h"
#include "testdata.h"
#include "train.h"

/* naive reference: one mode, one row (valid tokens n), written from the
 * formulas of sentence_transformers.Pooling */
static void ref_mode(const float *h, int n, int C, int mode, double *o)
{
    for (int c = 0; c < C; c++) {
        double s = 0, w = 0, m = -INFINITY;
        for (int t = 0; t < n; t++) {
            double x = h[t * C + c], wt = mode == BFT_POOL_WMEAN ? t + 1 : 1;
            s += wt * x;
            w += wt;
            if (x > m) m = x;
        }
        switch (mode) {
        case BFT_POOL_CLS: o[c] = h[c]; break;
        case BFT_POOL_LAST: o[c] = h[(n - 1) * C + c]; break;
        case BFT_POOL_MAX: o[c] = m; break;
        case BFT_POOL_MEAN: o[c] = s / w; break;
        case BFT_POOL_MEAN_SQRT: o[c] = s / sqrt(w); break;
        case BFT_POOL_WMEAN: o[c] = s / w; break;
        }
    }
}

static void test_pool_reference(void)
{
    const int B = 5, T = 7, C = 6;
    int32_t lens[5] = {7, 1, 3, 6, 2};
    float *h = randn((size_t)B * T * C, 42, 1.0f);
    /* padding rows hold large values that must never show through */
    for (int b = 0; b < B; b++)
        for (int t = lens[b]; t < T; t++)
            for (int c = 0; c < C; c++)
                h[(b * T + t) * C + c] = 1000.0f;
    int combos[][3] = {{BFT_POOL_MEAN, -1, -1}, {BFT_POOL_CLS, -1, -1}, {BFT_POOL_MAX, -1, -1},
                       {BFT_POOL_MEAN_SQRT, -1, -1}, {BFT_POOL_WMEAN, -1, -1}, {BFT_POOL_LAST, -1, -1},
                       {BFT_POOL_CLS, BFT_POOL_MAX, BFT_POOL_MEAN}};
    int checked = 0;
    for (size_t ci = 0; ci < sizeof combos / sizeof combos[0]; ci++)
        for (int norm = 0; norm < 2; norm++) {
            bft_pooling p = bft_pooling_default();
            p.nmodes = 0;
            for (int k = 0; k < 3 && combos[ci][k] >= 0; k++) p.modes[p.nmodes++] = combos[ci][k];
            p.normalize = norm;
            int D = bft_pooling_dim(&p, C);
            CHECK(D == p.nmodes * C, "dim");
            float out[5 * 18];
            bft_pool(h, lens, B, T, C, &p, out);
            for (int b = 0; b < B; b++) {
                double ref[18], ss = 0;
                for (int k = 0; k < p.nmodes; k++) ref_mode(h + b * T * C, lens[b], C, p.modes[k], ref + k * C);
                for (int d = 0; d < D; d++) ss += ref[d] * ref[d];
                for (int d = 0; d < D; d++) {
                    double want = norm ? ref[d] / fmax(sqrt(ss), 1e-12) : ref[d];
                    CHECK_CLOSE(out[b * D + d], want, 1e-6, 1e-5, "combo %zu norm %d row %d dim %d: %g vs %g",
                                ci, norm, b, d, out[b * D + d], want);
                    checked++;
                }
                if (norm) {
                    double n2 = 0;
                    for (int d = 0; d < D; d++) n2 += (double)out[b * D + d] * out[b * D + d];
                    CHECK_CLOSE(n2, 1.0, 1e-6, 0, "unit length");
                }
            }
        }
    /* a zero vector stays zero under normalization (no division by zero) */
    float z[4] = {0, 0, 0, 0}, zo[4];
    int32_t one = 2;
    bft_pooling p = bft_pooling_default();
    p.normalize = 1;
    bft_pool(z, &one, 1, 2, 2, &p, zo);
    CHECK(zo[0] == 0 && zo[1] == 0, "zero vector");
    printf("# %d pooled values checked against the reference\n", checked);
    free(h);
}

static void test_st_config(void)
{
    bft_error err;
    char dir[64];
    bft_pooling p = bft_pooling_default();
    const char *mod =
        "[{\"idx\":0,\"name\":\"0\",\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
        "{\"idx\":1,\"name\":\"1\",\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"},"
        "{\"idx\":2,\"name\":\"2\",\"path\":\"2_Normalize\",\"type\":\"sentence_transformers.models.Normalize\"}]";
    CHECK(bft_st_modules_parse(mod, strlen(mod), dir, sizeof dir, &p, &err) == BFT_OK, "%s", err.msg);
    CHECK(strcmp(dir, "1_Pooling") == 0 && p.normalize == 1, "dir %s normalize %d", dir, p.normalize);
    const char *mod2 = "[{\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
                       "{\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"}]";
    CHECK(bft_st_modules_parse(mod2, strlen(mod2), dir, sizeof dir, &p, &err) == BFT_OK && p.normalize == 0,
          "no Normalize");
    const char *dense = "[{\"path\":\"\",\"type\":\"sentence_transformers.models.Transformer\"},"
                        "{\"path\":\"1_Pooling\",\"type\":\"sentence_transformers.models.Pooling\"},"
                        "{\"path\":\"2_Dense\",\"type\":\"sentence_transformers.models.Dense\"}]";
    CHECK(bft_st_modules_parse(dense, strlen(dense), dir, sizeof dir, &p, &err) == BFT_EUNSUPPORTED &&
          strstr(err.msg, "Dense"), "Dense refused: %s", err.msg);
    const char *escape = "[{\"path\":\"\",\"type\":\"x.Transformer\"},{\"path\":\"../etc\",\"type\":\"x.Pooling\"}]";
    CHECK(bft_st_modules_parse(escape, strlen(escape), dir, sizeof dir, &p, &err) == BFT_EINVAL,
          "path outside the directory refused: %s", err.msg);
    const char *nopool = "[{\"path\":\"\",\"type\":\"x.Transformer\"}]";
    CHECK(bft_st_modules_parse(nopool, strlen(nopool), dir, sizeof dir, &p, &err) == BFT_EUNSUPPORTED, "no Pooling");
    CHECK(bft_st_modules_parse("{}", 2, dir, sizeof dir, &p, &err) == BFT_EFORMAT, "not a list");
    CHECK(bft_st_modules_parse("[", 1, dir, sizeof dir, &p, &err) == BFT_EFORMAT, "bad JSON");

    /* the older boolean form (all-MiniLM-L6-v2's) and the current one */
    const char *legacy = "{\"word_embedding_dimension\": 384, \"pooling_mode_cls_token\": false, "
                         "\"pooling_mode_mean_tokens\": true, \"pooling_mode_max_tokens\": false, "
                         "\"pooling_mode_mean_sqrt_len_tokens\": false}";
    CHECK(bft_st_pooling_parse(legacy, strlen(legacy), &p, &err) == BFT_OK && p.nmodes == 1 &&
          p.modes[0] == BFT_POOL_MEAN, "legacy mean");
    const char *legacy2 = "{\"pooling_mode_mean_tokens\": true, \"pooling_mode_cls_token\": true, "
                          "\"pooling_mode_max_tokens\": true}";
    CHECK(bft_st_pooling_parse(legacy2, strlen(legacy2), &p, &err) == BFT_OK && p.nmodes == 3 &&
          p.modes[0] == BFT_POOL_CLS && p.modes[1] == BFT_POOL_MAX && p.modes[2] == BFT_POOL_MEAN,
          "legacy order cls, max, mean");
    const char *none = "{\"word_embedding_dimension\": 8}";
    CHECK(bft_st_pooling_parse(none, strlen(none), &p, &err) == BFT_OK && p.nmodes == 1 &&
          p.modes[0] == BFT_POOL_MEAN, "nothing set: mean");
    const char *cur = "{\"embedding_dimension\": 8, \"pooling_mode\": \"cls\", \"include_prompt\": true}";
    CHECK(bft_st_pooling_parse(cur, strlen(cur), &p, &err) == BFT_OK && p.nmodes == 1 &&
          p.modes[0] == BFT_POOL_CLS, "pooling_mode cls");
    const char *list = "{\"pooling_mode\": [\"max\", \"lasttoken\"]}";
    CHECK(bft_st_pooling_parse(list, strlen(list), &p, &err) == BFT_OK && p.nmodes == 2 &&
          p.modes[0] == BFT_POOL_MAX && p.modes[1] == BFT_POOL_LAST, "pooling_mode list");
    const char *bad = "{\"pooling_mode\": \"median\"}";
    CHECK(bft_st_pooling_parse(bad, strlen(bad), &p, &err) == BFT_EINVAL && strstr(err.msg, "median"),
          "unknown mode: %s", err.msg);
    const char *badtype = "{\"pooling_mode_mean_tokens\": 1}";
    CHECK(bft_st_pooling_parse(badtype, strlen(badtype), &p, &err) == BFT_EFORMAT, "not a boolean");

    const char *sb = "{\"max_seq_length\": 256, \"do_lower_case\": false}";
    p.max_length = 0;
    CHECK(bft_st_sbert_parse(sb, strlen(sb), &p, &err) == BFT_OK && p.max_length == 256, "max_seq_length");
    const char *sb1 = "{\"max_seq_length\": 1}";
    CHECK(bft_st_sbert_parse(sb1, strlen(sb1), &p, &err) == BFT_EINVAL && p.max_length == 256, "1 refused");
}

static void test_forms(void)
{
    bft_error err;
    bft_pooling p = bft_pooling_default();
    char buf[128];
    CHECK(bft_pooling_parse_name(" Mean + NORMALIZE ", &p, &err) == BFT_OK && p.nmodes == 1 &&
          p.modes[0] == BFT_POOL_MEAN && p.normalize, "mean+normalize: %s", err.msg);
    bft_pooling_name(&p, buf, sizeof buf);
    CHECK(strcmp(buf, "mean+normalize") == 0, "name %s", buf);
    CHECK(bft_pooling_parse_name("cls+max", &p, &err) == BFT_OK && p.nmodes == 2 && !p.normalize, "cls+max");
    CHECK(bft_pooling_parse_name("", &p, &err) == BFT_EINVAL, "empty");
    CHECK(bft_pooling_parse_name("normalize", &p, &err) == BFT_EINVAL, "no mode");
    CHECK(bft_pooling_parse_name("mean++cls", &p, &err) == BFT_EINVAL, "empty name");
    CHECK(bft_pooling_parse_name("avg", &p, &err) == BFT_EINVAL && strstr(err.msg, "avg"), "unknown");
    CHECK(bft_pooling_parse_name("mean+normalize+normalize", &p, &err) == BFT_EINVAL, "twice");
    CHECK(p.nmodes == 2 && p.modes[0] == BFT_POOL_CLS, "a failed parse leaves p alone");

    bft_pooling q = bft_pooling_default();
    q.nmodes = 2;
    q.modes[0] = BFT_POOL_WMEAN;
    q.modes[1] = BFT_POOL_MEAN_SQRT;
    q.normalize = 1;
    q.max_length = 256;
    char *j = bft_pooling_to_json(&q);
    CHECK(j && strcmp(j, "{\"modes\":[\"weightedmean\",\"mean_sqrt_len_tokens\"],\"normalize\":true,"
                         "\"max_length\":256}") == 0, "json %s", j ? j : "(null)");
    bft_pooling r;
    CHECK(j && bft_pooling_from_json(j, strlen(j), &r, &err) == BFT_OK && memcmp(&r, &q, sizeof r) == 0,
          "round trip");
    free(j);
    CHECK(bft_pooling_from_json("{\"modes\":[]}", 12, &r, &err) == BFT_EINVAL, "no modes");
    CHECK(bft_pooling_from_json("{\"modes\":[\"x\"]}", 15, &r, &err) == BFT_EINVAL, "bad mode");
    CHECK(bft_pooling_from_json("[]", 2, &r, &err) == BFT_EFORMAT, "not an object");
}

/* bft_embed == bft_pool over bft_hidden_states, whatever the batch size */
static void test_embed_tiny(void)
{
    bft_error err;
    bft_model *m = bft_model_load_dir("tests/data/ckpt/tiny", &err);
    CHECK(m != NULL, "load: %s", m ? "" : err.msg);
    if (!m) return;
    const char *texts[] = {"the market rose", "a", "stocks fell sharply after the report on inflation",
                           "[MASK] bank", "x y z w v u t s r q"};
    int n = 5, C = m->cfg.hidden_size;
    int32_t tok[5 * 64];
    int64_t off[6] = {0};
    for (int i = 0; i < n; i++) {
        int k = bft_encode(m->tok, texts[i], strlen(texts[i]), 64, tok + off[i], &err);
        CHECK(k > 0, "encode");
        off[i + 1] = off[i] + k;
    }
    bft_dataset ds = {n, tok, off, NULL, NULL, NULL};
    float *hid = malloc(sizeof(float) * off[n] * C);
    CHECK(bft_hidden_states(m, &ds, 2, hid, NULL, NULL, &err) == BFT_OK, "hidden: %s", err.msg);
    bft_pooling p = bft_pooling_default();
    p.nmodes = 2;
    p.modes[1] = BFT_POOL_MAX;
    p.normalize = 1;
    int D = bft_pooling_dim(&p, C);
    float *e1 = malloc(sizeof(float) * n * D), *e2 = malloc(sizeof(float) * n * D), *ref = malloc(sizeof(float) * D);
    CHECK(bft_embed(m, &ds, 1, &p, e1, NULL, NULL, &err) == BFT_OK, "embed b1: %s", err.msg);
    CHECK(bft_embed(m, &ds, 32, &p, e2, NULL, NULL, &err) == BFT_OK, "embed b32: %s", err.msg);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        int32_t len = (int32_t)(off[i + 1] - off[i]);
        bft_pool(hid + off[i] * C, &len, 1, len, C, &p, ref);
        for (int d = 0; d < D; d++) {
            worst = fmax(worst, fabs(e1[i * D + d] - ref[d]));
            worst = fmax(worst, fabs(e2[i * D + d] - ref[d]));
        }
    }
    /* batches pad to their longest row: padding must not change a row */
    CHECK(worst <= 1e-5, "embed vs pooled hidden states: %g", worst);
    /* the hidden states of a text alone equal those inside a batch */
    bft_dataset one = {1, tok + off[2], off + 2, NULL, NULL, NULL};
    int64_t off1[2] = {0, off[3] - off[2]};
    one.offsets = off1;
    float *h1 = malloc(sizeof(float) * off1[1] * C);
    CHECK(bft_hidden_states(m, &one, 1, h1, NULL, NULL, &err) == BFT_OK, "hidden one");
    double w2 = 0;
    for (int64_t k = 0; k < off1[1] * C; k++) w2 = fmax(w2, fabs(h1[k] - hid[off[2] * C + k]));
    CHECK(w2 <= 1e-5, "alone vs batched: %g", w2);
    printf("# embed vs pooled hidden states %.2g, alone vs batched %.2g\n", worst, w2);
    /* errors */
    bft_pooling bad = p;
    bad.nmodes = 0;
    CHECK(bft_embed(m, &ds, 4, &bad, e1, NULL, NULL, &err) == BFT_EINVAL, "no modes refused");
    bft_dataset empty = {0, tok, off, NULL, NULL, NULL};
    CHECK(bft_embed(m, &empty, 4, &p, e1, NULL, NULL, &err) == BFT_EINVAL, "empty dataset refused");
    free(hid);
    free(e1);
    free(e2);
    free(ref);
    free(h1);
    bft_model_free(m);
}

/* long texts: windows embedded together and combined == each window embedded
 * alone, combined here in double */
static void test_embed_windows(void)
{
    bft_error err;
    bft_model *m = bft_model_load_dir("tests/data/ckpt/tiny", &err);
    CHECK(m != NULL, "load: %s", m ? "" : err.msg);
    if (!m) return;
    const char *words[] = {"the", "market", "rose", "after", "stocks", "fell", "report", "bank"};
    size_t cap = 40000, len = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 2400; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s%s", i ? " " : "", words[(i * 7 + i / 5) % 8]);
    const int max_length = 32, stride = 8;
    int32_t *ids = NULL;
    int64_t *off = NULL, nwin = 0;
    CHECK(bft_encode_windows(m->tok, text, len, max_length, stride, &ids, &off, &nwin, &err) == 0,
          "windows: %s", err.msg);
    CHECK(nwin > 90 && off[nwin] > 2000, "%lld windows, %lld ids", (long long)nwin, (long long)off[nwin]);
    int C = m->cfg.hidden_size;
    for (int mode = BFT_WINDOWS_MEAN; mode <= BFT_WINDOWS_MAX; mode++) {
        bft_pooling p = bft_pooling_default();
        p.normalize = 1;
        if (mode == BFT_WINDOWS_MAX) {   /* two pooling modes, concatenated */
            p.nmodes = 2;
            p.modes[1] = BFT_POOL_CLS;
        }
        int D = bft_pooling_dim(&p, C);
        bft_dataset ds = {nwin, ids, off, NULL, NULL, NULL};
        int64_t first[2] = {0, nwin};
        float *got = malloc(sizeof(float) * D), *one = malloc(sizeof(float) * D);
        double *acc = calloc((size_t)D, sizeof(double)), wsum = 0;
        CHECK(bft_embed_windows(m, &ds, first, 1, mode, 16, &p, got, NULL, NULL, &err) == BFT_OK,
              "embed windows: %s", err.msg);
        bft_pooling raw = p;
        raw.normalize = 0;
        for (int64_t w = 0; w < nwin; w++) {
            int64_t o1[2] = {0, off[w + 1] - off[w]};
            bft_dataset dw = {1, ids + off[w], o1, NULL, NULL, NULL};
            CHECK(bft_embed(m, &dw, 1, &raw, one, NULL, NULL, &err) == BFT_OK, "window %lld", (long long)w);
            for (int d = 0; d < D; d++) {
                if (mode == BFT_WINDOWS_MAX)
                    acc[d] = w == 0 || one[d] > acc[d] ? one[d] : acc[d];
                else
                    acc[d] += (double)o1[1] * one[d];
            }
            wsum += (double)o1[1];
        }
        double ss = 0, worst = 0, norm = 0;
        for (int d = 0; d < D; d++) {
            if (mode == BFT_WINDOWS_MEAN)
                acc[d] /= wsum;
            ss += acc[d] * acc[d];
        }
        for (int d = 0; d < D; d++) {
            worst = fmax(worst, fabs(got[d] - acc[d] / sqrt(ss)));
            norm += (double)got[d] * got[d];
        }
        CHECK(worst <= 1e-6, "%s: combined vs windows alone %g", mode ? "max" : "mean", worst);
        CHECK(fabs(sqrt(norm) - 1) < 1e-6, "unit vector: %g", sqrt(norm));
        printf("# %lld windows, %s: combined vs windows alone %.2g\n", (long long)nwin,
               mode ? "max (mean+cls)" : "mean", worst);
        /* one window only: bft_embed's vector, bit for bit */
        int64_t f1[2] = {0, 1};
        bft_dataset d1 = {1, ids, off, NULL, NULL, NULL};
        CHECK(bft_embed_windows(m, &d1, f1, 1, mode, 16, &p, got, NULL, NULL, &err) == BFT_OK, "one window");
        CHECK(bft_embed(m, &d1, 16, &p, one, NULL, NULL, &err) == BFT_OK, "embed first window");
        CHECK(memcmp(got, one, sizeof(float) * D) == 0, "one window == bft_embed");
        /* errors: texts that do not cover the windows, a text without windows, a bad mode */
        int64_t short_first[2] = {0, nwin - 1}, empty_first[3] = {0, 0, nwin};
        CHECK(bft_embed_windows(m, &ds, short_first, 1, mode, 16, &p, got, NULL, NULL, &err) == BFT_EINVAL,
              "uncovered windows refused");
        CHECK(bft_embed_windows(m, &ds, empty_first, 2, mode, 16, &p, got, NULL, NULL, &err) == BFT_EINVAL,
              "a text without windows refused");
        CHECK(bft_embed_windows(m, &ds, first, 1, 7, 16, &p, got, NULL, NULL, &err) == BFT_EINVAL,
              "bad mode refused");
        free(got);
        free(one);
        free(acc);
    }
    free(ids);
    free(off);
    free(text);
    bft_model_free(m);
}

/* a sentence-transformers directory (tests/data/ckpt/tiny_st) */
static void test_load_dir(void)
{
    bft_error err;
    bft_pooling p;
    int found = -1;
    CHECK(bft_pooling_load_dir("tests/data/ckpt/tiny_st", &p, &found, &err) == BFT_OK, "%s", err.msg);
    CHECK(found == 1 && p.nmodes == 1 && p.modes[0] == BFT_POOL_MEAN && p.normalize && p.max_length == 48,
          "tiny_st: found %d modes %d normalize %d max_length %d", found, p.nmodes, p.normalize, p.max_length);
    CHECK(bft_pooling_load_dir("tests/data/ckpt/tiny", &p, &found, &err) == BFT_OK && found == 0 &&
          p.nmodes == 1 && p.modes[0] == BFT_POOL_MEAN && !p.normalize && p.max_length == 0,
          "a plain checkpoint: mean");
}

int main(void)
{
    RUN(test_pool_reference);
    RUN(test_st_config);
    RUN(test_forms);
    RUN(test_embed_tiny);
    RUN(test_embed_windows);
    RUN(test_load_dir);
    return test_summary();
}
