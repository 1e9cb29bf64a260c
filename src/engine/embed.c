/*
 * embed.c — sentence embeddings: sentence-transformers' Pooling and Normalize
 * modules over the last hidden states, their configuration files, and the
 * embedding / hidden-state inference calls (the encoder runs in train.c's
 * bft_encoder_run).
 *
 * Error codes: malformed JSON or a field of the wrong type → BFT_EFORMAT; an
 * unknown pooling mode or a bad value → BFT_EINVAL; a sentence-transformers
 * module bft does not implement (Dense, LayerNorm, ...) → BFT_EUNSUPPORTED.
 */
#include "embed.h"

#include <ctype.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "engine_util.h"

static const char *const mode_names[BFT_POOL_NMODES] = {
    "cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"};

/* the older boolean keys, in sentence-transformers' concatenation order */
static const struct {
    const char *key;
    int mode;
} legacy_keys[BFT_POOL_NMODES] = {
    {"pooling_mode_cls_token", BFT_POOL_CLS},
    {"pooling_mode_max_tokens", BFT_POOL_MAX},
    {"pooling_mode_mean_tokens", BFT_POOL_MEAN},
    {"pooling_mode_mean_sqrt_len_tokens", BFT_POOL_MEAN_SQRT},
    {"pooling_mode_weightedmean_tokens", BFT_POOL_WMEAN},
    {"pooling_mode_lasttoken", BFT_POOL_LAST},
};

bft_pooling bft_pooling_default(void)
{
    bft_pooling p;
    memset(&p, 0, sizeof p);
    p.nmodes = 1;
    p.modes[0] = BFT_POOL_MEAN;
    return p;
}

int bft_pooling_dim(const bft_pooling *p, int C)
{
    return p->nmodes * C;
}

const char *bft_pool_mode_name(int mode)
{
    return mode >= 0 && mode < BFT_POOL_NMODES ? mode_names[mode] : NULL;
}

static int mode_from_name(const char *s, size_t n)
{
    for (int k = 0; k < BFT_POOL_NMODES; k++)
        if (strlen(mode_names[k]) == n && strncmp(mode_names[k], s, n) == 0)
            return k;
    return -1;
}

/* ---- pooling ---------------------------------------------------------- */

/* sentence-transformers' Normalize: x (D) / max(||x||, 1e-12). */
static void l2_normalize(float *x, int D)
{
    double ss = 0;
    for (int d = 0; d < D; d++)
        ss += (double)x[d] * x[d];
    double nrm = sqrt(ss);
    if (nrm < 1e-12)
        nrm = 1e-12;
    for (int d = 0; d < D; d++)
        x[d] = (float)(x[d] / nrm);
}

void bft_pool(const float *hidden, const int32_t *lens, int B, int T, int C,
              const bft_pooling *p, float *out)
{
    int D = bft_pooling_dim(p, C);
    for (int b = 0; b < B; b++) {
        const float *h = hidden + (size_t)b * T * C;
        int n = lens[b] < 1 ? 1 : (lens[b] > T ? T : lens[b]);
        float *o = out + (size_t)b * D;
        for (int k = 0; k < p->nmodes; k++) {
            float *ok = o + (size_t)k * C;
            switch (p->modes[k]) {
            case BFT_POOL_CLS:
                memcpy(ok, h, (size_t)C * sizeof *ok);
                break;
            case BFT_POOL_LAST:
                memcpy(ok, h + (size_t)(n - 1) * C, (size_t)C * sizeof *ok);
                break;
            case BFT_POOL_MAX:
                for (int c = 0; c < C; c++) {
                    float m = h[c];
                    for (int t = 1; t < n; t++)
                        if (h[(size_t)t * C + c] > m)
                            m = h[(size_t)t * C + c];
                    ok[c] = m;
                }
                break;
            default: { /* the means */
                double wsum = 0;
                for (int t = 0; t < n; t++)
                    wsum += p->modes[k] == BFT_POOL_WMEAN ? t + 1 : 1;
                double den = p->modes[k] == BFT_POOL_MEAN_SQRT ? sqrt(wsum) : wsum;
                for (int c = 0; c < C; c++) {
                    double s = 0;
                    for (int t = 0; t < n; t++)
                        s += (p->modes[k] == BFT_POOL_WMEAN ? t + 1 : 1) * (double)h[(size_t)t * C + c];
                    ok[c] = (float)(s / den);
                }
                break;
            }
            }
        }
        if (p->normalize)
            l2_normalize(o, D);
    }
}

/* ---- sentence-transformers configuration ------------------------------ */

/* Does type name a module class "Name" (…models.Name or a module path ending
 * in .Name)? */
static int type_is(const char *type, const char *name)
{
    size_t lt = strlen(type), ln = strlen(name);
    return lt > ln && type[lt - ln - 1] == '.' && strcmp(type + lt - ln, name) == 0;
}

/* A module directory: "" or one plain name (no '/', no "..", no leading '.'). */
static int plain_dir(const char *s)
{
    if (*s == '\0')
        return 1;
    if (s[0] == '.' || strlen(s) > 200)
        return 0;
    for (const char *q = s; *q; q++)
        if (!(isalnum((unsigned char)*q) || *q == '_' || *q == '-' || *q == '.'))
            return 0;
    return 1;
}

int bft_st_modules_parse(const char *json, size_t len, char *pooling_dir, size_t dirlen,
                         bft_pooling *p, bft_error *err)
{
    json_object *root = bft_json_parse(json, len, "modules.json", err);
    if (!root)
        return err ? err->code : BFT_EFORMAT;
    int rc = BFT_OK, seen_tr = 0, seen_pool = 0, seen_norm = 0;
    if (!json_object_is_type(root, json_type_array)) {
        rc = bft_set_error(err, BFT_EFORMAT, "modules.json: expected a list of modules");
        goto out;
    }
    size_t n = json_object_array_length(root);
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(root, i), *v;
        const char *type, *path = "";
        if (!json_object_is_type(m, json_type_object) || !json_object_object_get_ex(m, "type", &v) ||
            !json_object_is_type(v, json_type_string)) {
            rc = bft_set_error(err, BFT_EFORMAT, "modules.json: module %zu has no \"type\" string", i);
            goto out;
        }
        type = json_object_get_string(v);
        if (json_object_object_get_ex(m, "path", &v) && v) {
            if (!json_object_is_type(v, json_type_string)) {
                rc = bft_set_error(err, BFT_EFORMAT, "modules.json: module %zu: \"path\" is not a string", i);
                goto out;
            }
            path = json_object_get_string(v);
        }
        if (type_is(type, "Transformer") && !seen_tr && !seen_pool && !seen_norm) {
            seen_tr = 1;
        } else if (type_is(type, "Pooling") && seen_tr && !seen_pool && !seen_norm) {
            if (!plain_dir(path)) {
                rc = bft_set_error(err, BFT_EINVAL, "modules.json: the Pooling module's path \"%.100s\" "
                                   "is not a plain directory name", path);
                goto out;
            }
            if (strlen(path) >= dirlen) {
                rc = bft_set_error(err, BFT_EINVAL, "modules.json: Pooling path too long");
                goto out;
            }
            snprintf(pooling_dir, dirlen, "%s", path);
            seen_pool = 1;
        } else if (type_is(type, "Normalize") && seen_pool && !seen_norm) {
            seen_norm = 1;
        } else {
            rc = bft_set_error(err, BFT_EUNSUPPORTED,
                               "modules.json: module %zu (%.200s) is not supported: bft computes "
                               "Transformer, Pooling and an optional Normalize, in that order", i, type);
            goto out;
        }
    }
    if (!seen_tr || !seen_pool) {
        rc = bft_set_error(err, BFT_EUNSUPPORTED,
                           "modules.json: no %s module", seen_tr ? "Pooling" : "Transformer");
        goto out;
    }
    p->normalize = seen_norm;
out:
    json_object_put(root);
    return rc;
}

int bft_st_pooling_parse(const char *json, size_t len, bft_pooling *p, bft_error *err)
{
    json_object *root = bft_json_parse(json, len, "pooling config.json", err), *v;
    if (!root)
        return err ? err->code : BFT_EFORMAT;
    int rc = BFT_OK, modes[BFT_POOL_NMODES], nm = 0;
    if (!json_object_is_type(root, json_type_object)) {
        rc = bft_set_error(err, BFT_EFORMAT, "pooling config.json: expected an object");
        goto out;
    }
    if (json_object_object_get_ex(root, "pooling_mode", &v) && v) {
        int single = json_object_is_type(v, json_type_string);
        if (!single && !json_object_is_type(v, json_type_array)) {
            rc = bft_set_error(err, BFT_EFORMAT, "pooling config.json: \"pooling_mode\" must be a name or a list");
            goto out;
        }
        size_t n = single ? 1 : json_object_array_length(v);
        if (n < 1 || n > BFT_POOL_NMODES) {
            rc = bft_set_error(err, BFT_EINVAL, "pooling config.json: %zu pooling modes", n);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            json_object *e = single ? v : json_object_array_get_idx(v, i);
            if (!json_object_is_type(e, json_type_string)) {
                rc = bft_set_error(err, BFT_EFORMAT, "pooling config.json: pooling mode %zu is not a string", i);
                goto out;
            }
            const char *s = json_object_get_string(e);
            int k = mode_from_name(s, strlen(s));
            if (k < 0) {
                rc = bft_set_error(err, BFT_EINVAL, "pooling config.json: unknown pooling mode \"%.60s\"", s);
                goto out;
            }
            modes[nm++] = k;
        }
    } else {
        for (int i = 0; i < BFT_POOL_NMODES; i++) {
            if (!json_object_object_get_ex(root, legacy_keys[i].key, &v) || !v)
                continue;
            if (!json_object_is_type(v, json_type_boolean)) {
                rc = bft_set_error(err, BFT_EFORMAT, "pooling config.json: \"%s\" is not a boolean",
                                   legacy_keys[i].key);
                goto out;
            }
            if (json_object_get_boolean(v))
                modes[nm++] = legacy_keys[i].mode;
        }
        if (nm == 0)
            modes[nm++] = BFT_POOL_MEAN;
    }
    p->nmodes = nm;
    memcpy(p->modes, modes, sizeof modes);
out:
    json_object_put(root);
    return rc;
}

int bft_st_sbert_parse(const char *json, size_t len, bft_pooling *p, bft_error *err)
{
    json_object *root = bft_json_parse(json, len, "sentence_bert_config.json", err), *v;
    if (!root)
        return err ? err->code : BFT_EFORMAT;
    int rc = BFT_OK;
    if (!json_object_is_type(root, json_type_object)) {
        rc = bft_set_error(err, BFT_EFORMAT, "sentence_bert_config.json: expected an object");
    } else if (json_object_object_get_ex(root, "max_seq_length", &v) && v) {
        if (!json_object_is_type(v, json_type_int)) {
            rc = bft_set_error(err, BFT_EFORMAT, "sentence_bert_config.json: max_seq_length is not an integer");
        } else {
            int64_t m = json_object_get_int64(v);
            if (m < 2 || m > (1 << 20))
                rc = bft_set_error(err, BFT_EINVAL, "sentence_bert_config.json: max_seq_length %lld out of range",
                                   (long long)m);
            else
                p->max_length = (int)m;
        }
    }
    json_object_put(root);
    return rc;
}

int bft_pooling_load_dir(const char *dir, bft_pooling *p, int *found, bft_error *err)
{
    char *buf = NULL, sub[256], name[300];
    size_t len;
    bft_pooling q = bft_pooling_default();
    int r, rc;

    *found = 0;
    r = bft_read_dir_file(dir, "modules.json", &buf, &len, 1, err);
    if (r < 0)
        return err ? err->code : BFT_EIO;
    if (r == 1) {
        *p = q;
        return BFT_OK;
    }
    rc = bft_st_modules_parse(buf, len, sub, sizeof sub, &q, err);
    free(buf);
    if (rc != BFT_OK)
        return rc;
    snprintf(name, sizeof name, "%s%sconfig.json", sub, *sub ? "/" : "");
    if (!*sub)   /* the pooling config cannot be the model's own config.json */
        return bft_set_error(err, BFT_EUNSUPPORTED, "modules.json: the Pooling module has no directory of its own");
    if (bft_read_dir_file(dir, name, &buf, &len, 0, err) < 0)
        return err ? err->code : BFT_EIO;
    rc = bft_st_pooling_parse(buf, len, &q, err);
    free(buf);
    if (rc != BFT_OK)
        return rc;
    r = bft_read_dir_file(dir, "sentence_bert_config.json", &buf, &len, 1, err);
    if (r < 0)
        return err ? err->code : BFT_EIO;
    if (r == 0) {
        rc = bft_st_sbert_parse(buf, len, &q, err);
        free(buf);
        if (rc != BFT_OK)
            return rc;
    }
    *p = q;
    *found = 1;
    return BFT_OK;
}

/* ---- the user's and bft's own forms ----------------------------------- */

int bft_pooling_parse_name(const char *s, bft_pooling *p, bft_error *err)
{
    bft_pooling q = *p;
    q.nmodes = 0;
    q.normalize = 0;
    const char *c = s;
    for (;;) {
        while (*c == ' ' || *c == '\t')
            c++;
        const char *e = c;
        while (*e && *e != '+')
            e++;
        const char *f = e;
        while (f > c && (f[-1] == ' ' || f[-1] == '\t'))
            f--;
        char w[32];
        size_t n = (size_t)(f - c);
        if (n == 0 || n >= sizeof w)
            return bft_set_error(err, BFT_EINVAL, "pooling \"%.100s\": expected mode names joined by '+' "
                                 "(cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken, normalize)", s);
        for (size_t i = 0; i < n; i++)
            w[i] = (char)tolower((unsigned char)c[i]);
        w[n] = '\0';
        int k = mode_from_name(w, n);
        if (strcmp(w, "normalize") == 0) {
            if (q.normalize)
                return bft_set_error(err, BFT_EINVAL, "pooling \"%.100s\": normalize given twice", s);
            q.normalize = 1;
        } else if (k >= 0) {
            if (q.nmodes == BFT_POOL_NMODES)
                return bft_set_error(err, BFT_EINVAL, "pooling \"%.100s\": too many modes", s);
            q.modes[q.nmodes++] = k;
        } else {
            return bft_set_error(err, BFT_EINVAL, "pooling \"%.100s\": unknown mode \"%s\" (cls, max, mean, "
                                 "mean_sqrt_len_tokens, weightedmean, lasttoken, normalize)", s, w);
        }
        if (*e == '\0')
            break;
        c = e + 1;
    }
    if (q.nmodes == 0)
        return bft_set_error(err, BFT_EINVAL, "pooling \"%.100s\": no pooling mode", s);
    *p = q;
    return BFT_OK;
}

void bft_pooling_name(const bft_pooling *p, char *buf, size_t buflen)
{
    size_t o = 0;
    if (buflen == 0)
        return;
    buf[0] = '\0';
    for (int k = 0; k < p->nmodes + (p->normalize ? 1 : 0); k++) {
        const char *w = k < p->nmodes ? bft_pool_mode_name(p->modes[k]) : "normalize";
        int r = snprintf(buf + o, buflen - o, "%s%s", k ? "+" : "", w ? w : "?");
        if (r < 0 || (size_t)r >= buflen - o)
            return;
        o += (size_t)r;
    }
}

char *bft_pooling_to_json(const bft_pooling *p)
{
    json_object *root = json_object_new_object(), *modes = json_object_new_array();
    char *out = NULL;
    if (!root || !modes) {
        json_object_put(root);
        json_object_put(modes);
        return NULL;
    }
    for (int k = 0; k < p->nmodes; k++)
        json_object_array_add(modes, json_object_new_string(bft_pool_mode_name(p->modes[k])));
    json_object_object_add(root, "modes", modes);
    json_object_object_add(root, "normalize", json_object_new_boolean(p->normalize));
    if (p->max_length > 0)
        json_object_object_add(root, "max_length", json_object_new_int(p->max_length));
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    if (s)
        out = strdup(s);
    json_object_put(root);
    return out;
}

int bft_pooling_from_json(const char *json, size_t len, bft_pooling *p, bft_error *err)
{
    json_object *root = bft_json_parse(json, len, "pooling", err), *v;
    if (!root)
        return err ? err->code : BFT_EFORMAT;
    bft_pooling q = bft_pooling_default();
    int rc = BFT_OK;
    if (!json_object_is_type(root, json_type_object) || !json_object_object_get_ex(root, "modes", &v) ||
        !json_object_is_type(v, json_type_array)) {
        rc = bft_set_error(err, BFT_EFORMAT, "pooling: expected {\"modes\": [...], \"normalize\": ...}");
        goto out;
    }
    size_t n = json_object_array_length(v);
    if (n < 1 || n > BFT_POOL_NMODES) {
        rc = bft_set_error(err, BFT_EINVAL, "pooling: %zu modes", n);
        goto out;
    }
    q.nmodes = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
        int k = mode_from_name(s, strlen(s));
        if (k < 0) {
            rc = bft_set_error(err, BFT_EINVAL, "pooling: unknown mode \"%.60s\"", s);
            goto out;
        }
        q.modes[q.nmodes++] = k;
    }
    if (json_object_object_get_ex(root, "normalize", &v) && v) {
        if (!json_object_is_type(v, json_type_boolean)) {
            rc = bft_set_error(err, BFT_EFORMAT, "pooling: \"normalize\" is not a boolean");
            goto out;
        }
        q.normalize = json_object_get_boolean(v) ? 1 : 0;
    }
    if (json_object_object_get_ex(root, "max_length", &v) && v) {
        int64_t m = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
        if (m < 2 || m > (1 << 20)) {
            rc = bft_set_error(err, BFT_EINVAL, "pooling: bad max_length");
            goto out;
        }
        q.max_length = (int)m;
    }
    *p = q;
out:
    json_object_put(root);
    return rc;
}

/* ---- inference -------------------------------------------------------- */

typedef struct embed_ctx {
    const bft_pooling *p;
    int C, D;
    float *out;
    float *pooled;      /* (B,D) scratch */
} embed_ctx;

static void embed_batch(void *vctx, const float *hidden, const int32_t *lens, const int64_t *idx,
                        int B, int T)
{
    embed_ctx *c = vctx;
    bft_pool(hidden, lens, B, T, c->C, c->p, c->pooled);
    for (int b = 0; b < B; b++)
        memcpy(c->out + (size_t)idx[b] * c->D, c->pooled + (size_t)b * c->D, (size_t)c->D * sizeof(float));
}

int bft_embed(const bft_model *m, const bft_dataset *ds, int batch_size, const bft_pooling *p,
              float *out, int (*poll)(void *ctx), void *poll_ctx, bft_error *err)
{
    bft_clear_error(err);
    if (!m || !p || !out)
        return bft_set_error(err, BFT_EINVAL, "bft_embed: NULL argument");
    if (p->nmodes < 1 || p->nmodes > BFT_POOL_NMODES)
        return bft_set_error(err, BFT_EINVAL, "bft_embed: %d pooling modes", p->nmodes);
    for (int k = 0; k < p->nmodes; k++)
        if (!bft_pool_mode_name(p->modes[k]))
            return bft_set_error(err, BFT_EINVAL, "bft_embed: pooling mode %d", p->modes[k]);
    embed_ctx c;
    c.p = p;
    c.C = m->cfg.hidden_size;
    c.D = bft_pooling_dim(p, c.C);
    c.out = out;
    int bmax = batch_size <= 0 ? 32 : batch_size;
    c.pooled = malloc((size_t)bmax * c.D * sizeof *c.pooled);
    if (!c.pooled)
        return bft_set_error(err, BFT_ENOMEM, "bft_embed: out of memory");
    int rc = bft_encoder_run(m, ds, bmax, embed_batch, &c, poll, poll_ctx, err);
    free(c.pooled);
    return rc;
}

int bft_embed_windows(const bft_model *m, const bft_dataset *ds, const int64_t *first, int64_t ntext,
                      int mode, int batch_size, const bft_pooling *p, float *out,
                      int (*poll)(void *ctx), void *poll_ctx, bft_error *err)
{
    bft_clear_error(err);
    if (!m || !ds || !first || !p || !out)
        return bft_set_error(err, BFT_EINVAL, "bft_embed_windows: NULL argument");
    if (mode != BFT_WINDOWS_MEAN && mode != BFT_WINDOWS_MAX)
        return bft_set_error(err, BFT_EINVAL, "bft_embed_windows: combination mode %d", mode);
    if (first[0] != 0 || first[ntext] != ds->n)
        return bft_set_error(err, BFT_EINVAL, "bft_embed_windows: %lld texts do not cover %lld windows",
                             (long long)ntext, (long long)ds->n);
    for (int64_t i = 0; i < ntext; i++)
        if (first[i + 1] <= first[i])
            return bft_set_error(err, BFT_EINVAL, "bft_embed_windows: text %lld has no window", (long long)i);
    int D = bft_pooling_dim(p, m->cfg.hidden_size);
    bft_pooling raw = *p;
    raw.normalize = 0;   /* the windows are combined first, then normalized */
    float *wemb = malloc((size_t)(ds->n > 0 ? ds->n : 1) * D * sizeof *wemb);
    int64_t *ntok = malloc((size_t)(ds->n > 0 ? ds->n : 1) * sizeof *ntok);
    if (!wemb || !ntok) {
        free(wemb);
        free(ntok);
        return bft_set_error(err, BFT_ENOMEM, "bft_embed_windows: out of memory for %lld windows",
                             (long long)ds->n);
    }
    int rc = bft_embed(m, ds, batch_size, &raw, wemb, poll, poll_ctx, err);
    if (rc == BFT_OK) {
        for (int64_t w = 0; w < ds->n; w++)
            ntok[w] = ds->offsets[w + 1] - ds->offsets[w];
        for (int64_t i = 0; i < ntext; i++) {
            float *o = out + (size_t)i * D;
            bft_combine_windows(wemb + (size_t)first[i] * D, ntok + first[i], first[i + 1] - first[i], D,
                                mode, o);
            if (p->normalize)
                l2_normalize(o, D);
        }
    }
    free(wemb);
    free(ntok);
    return rc;
}

typedef struct hidden_ctx {
    const bft_dataset *ds;
    int C;
    float *out;
} hidden_ctx;

static void hidden_batch(void *vctx, const float *hidden, const int32_t *lens, const int64_t *idx,
                         int B, int T)
{
    hidden_ctx *c = vctx;
    for (int b = 0; b < B; b++)
        memcpy(c->out + (size_t)(c->ds->offsets[idx[b]] - c->ds->offsets[0]) * c->C,
               hidden + (size_t)b * T * c->C, (size_t)lens[b] * c->C * sizeof(float));
}

int bft_hidden_states(const bft_model *m, const bft_dataset *ds, int batch_size, float *out,
                      int (*poll)(void *ctx), void *poll_ctx, bft_error *err)
{
    bft_clear_error(err);
    if (!m || !ds || !out)
        return bft_set_error(err, BFT_EINVAL, "bft_hidden_states: NULL argument");
    hidden_ctx c = {ds, m->cfg.hidden_size, out};
    return bft_encoder_run(m, ds, batch_size <= 0 ? 32 : batch_size, hidden_batch, &c, poll, poll_ctx, err);
}
