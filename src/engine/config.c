/*
 * config.c — BertConfig (config.json) and tokenizer_config.json: parsing with
 * json-c, validation, and writing back in Hugging Face's format.
 *
 * Error codes: malformed JSON or a field of the wrong JSON type → BFT_EFORMAT;
 * a value out of range (sizes, probabilities, hidden % heads) → BFT_EINVAL;
 * id2label / label2id that disagree → BFT_EMISMATCH; valid BertConfig
 * settings the engine does not implement (hidden_act other than "gelu",
 * relative position embeddings, decoders, regression heads) → BFT_EUNSUPPORTED.
 */
#include "model.h"
#include "resource.h"

#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_util.h"

/* Upper bounds that keep every size product far from overflow. */
#define MAX_DIM (1 << 24)
#define MAX_LAYERS 1024
#define MAX_LABELS 1000000

bft_config bft_config_default(void)
{
    bft_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 30522;
    c.hidden_size = 768;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 12;
    c.intermediate_size = 3072;
    c.max_position_embeddings = 512;
    c.type_vocab_size = 2;
    c.pad_token_id = 0;
    c.layer_norm_eps = 1e-12f;
    c.hidden_dropout_prob = 0.1f;
    c.attention_probs_dropout_prob = 0.1f;
    c.classifier_dropout = -1.0f;
    c.initializer_range = 0.02f;
    snprintf(c.hidden_act, sizeof c.hidden_act, "gelu");
    c.num_labels = 0;
    c.id2label = NULL;
    /* HF defaults (same values as bft_tokenizer_default_opts()). */
    c.tok.do_lower_case = 1;
    c.tok.strip_accents = -1;
    c.tok.tokenize_chinese_chars = 1;
    c.tok.model_max_length = 512;
    return c;
}

static void free_labels(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void bft_config_release(bft_config *cfg)
{
    if (!cfg)
        return;
    free_labels(cfg->id2label, cfg->num_labels);
    cfg->id2label = NULL;
}

int bft_config_copy(bft_config *dst, const bft_config *src)
{
    bft_config c = *src;
    c.id2label = NULL;
    if (src->id2label && src->num_labels > 0) {
        c.id2label = calloc((size_t)src->num_labels, sizeof *c.id2label);
        if (!c.id2label)
            return -1;
        for (int i = 0; i < src->num_labels; i++) {
            c.id2label[i] = strdup(src->id2label[i] ? src->id2label[i] : "");
            if (!c.id2label[i]) {
                free_labels(c.id2label, src->num_labels);
                return -1;
            }
        }
    }
    *dst = c;
    return 0;
}

const char *bft_config_label(const bft_config *cfg, int i, char *buf, size_t buflen)
{
    if (cfg->id2label && i >= 0 && i < cfg->num_labels && cfg->id2label[i])
        return cfg->id2label[i];
    if (buf && buflen) {
        snprintf(buf, buflen, "LABEL_%d", i);
        return buf;
    }
    return "";
}

int bft_config_validate(const bft_config *c, bft_error *err)
{
#define POS(field, max)                                                                   \
    if (c->field < 1 || c->field > (max))                                                 \
        return bft_set_error(err, BFT_EINVAL, "config: " #field " must be in [1, %d], got %d", \
                             (int)(max), c->field)
    POS(vocab_size, MAX_DIM);
    POS(hidden_size, MAX_DIM);
    POS(num_hidden_layers, MAX_LAYERS);
    POS(num_attention_heads, MAX_DIM);
    POS(intermediate_size, MAX_DIM);
    POS(max_position_embeddings, MAX_DIM);
    POS(type_vocab_size, MAX_DIM);
#undef POS
    if (c->hidden_size % c->num_attention_heads != 0)
        return bft_set_error(err, BFT_EINVAL,
                             "config: hidden_size %d is not a multiple of num_attention_heads %d",
                             c->hidden_size, c->num_attention_heads);
    if (c->pad_token_id < 0 || c->pad_token_id >= c->vocab_size)
        return bft_set_error(err, BFT_EINVAL, "config: pad_token_id %d is outside the vocabulary [0, %d)",
                             c->pad_token_id, c->vocab_size);
    if (!(c->layer_norm_eps > 0.0f) || !isfinite(c->layer_norm_eps))
        return bft_set_error(err, BFT_EINVAL, "config: layer_norm_eps must be > 0, got %g",
                             (double)c->layer_norm_eps);
    if (!(c->hidden_dropout_prob >= 0.0f && c->hidden_dropout_prob < 1.0f))
        return bft_set_error(err, BFT_EINVAL, "config: hidden_dropout_prob must be in [0, 1), got %g",
                             (double)c->hidden_dropout_prob);
    if (!(c->attention_probs_dropout_prob >= 0.0f && c->attention_probs_dropout_prob < 1.0f))
        return bft_set_error(err, BFT_EINVAL,
                             "config: attention_probs_dropout_prob must be in [0, 1), got %g",
                             (double)c->attention_probs_dropout_prob);
    if (!(c->classifier_dropout < 1.0f) || isnan(c->classifier_dropout))
        return bft_set_error(err, BFT_EINVAL, "config: classifier_dropout must be null or in [0, 1), got %g",
                             (double)c->classifier_dropout);
    if (!(c->initializer_range >= 0.0f) || !isfinite(c->initializer_range))
        return bft_set_error(err, BFT_EINVAL, "config: initializer_range must be >= 0, got %g",
                             (double)c->initializer_range);
    if (strcmp(c->hidden_act, "gelu") != 0)
        return bft_set_error(err, BFT_EUNSUPPORTED,
                             "config: hidden_act \"%s\" is not supported (only \"gelu\", the exact erf GELU)",
                             c->hidden_act);
    if (c->num_labels < 0 || c->num_labels > MAX_LABELS)
        return bft_set_error(err, BFT_EINVAL, "config: num_labels %d out of range", c->num_labels);
    if (c->problem_type != BFT_PROBLEM_SINGLE_LABEL && c->problem_type != BFT_PROBLEM_MULTI_LABEL)
        return bft_set_error(err, BFT_EINVAL, "config: unknown problem type %d", c->problem_type);
    if (!(c->ngram_scale >= 0.0f && c->ngram_scale <= 1000.0f))
        return bft_set_error(err, BFT_EINVAL, "config: bft_ngram_scale must be in [0, 1000], got %g",
                             (double)c->ngram_scale);
    return BFT_OK;
}

/* ---- reading ---------------------------------------------------------- */

/* Parse len bytes of JSON (need not be NUL-terminated) into a json-c object.
 * what names the file in messages. Trailing whitespace is allowed. */
static json_object *parse_json(const char *json, size_t len, const char *what, bft_error *err)
{
    json_tokener *tk;
    json_object *root;
    char *buf;
    size_t end;
    enum json_tokener_error jerr;

    if (!json) {
        bft_set_error(err, BFT_EINVAL, "%s: no data", what);
        return NULL;
    }
    if (len > (size_t)INT_MAX - 1) {
        bft_set_error(err, BFT_EFORMAT, "%s: %zu bytes is too large", what, len);
        return NULL;
    }
    /* json-c needs to see the end of the input to finish a top-level number:
     * give it a NUL-terminated copy (configs are small). */
    buf = malloc(len + 1);
    tk = json_tokener_new();
    if (!buf || !tk) {
        free(buf);
        if (tk)
            json_tokener_free(tk);
        bft_set_error(err, BFT_ENOMEM, "%s: out of memory", what);
        return NULL;
    }
    memcpy(buf, json, len);
    buf[len] = '\0';
    root = json_tokener_parse_ex(tk, buf, (int)len + 1);
    jerr = json_tokener_get_error(tk);
    end = json_tokener_get_parse_end(tk);
    if (!root || jerr != json_tokener_success) {
        bft_set_error(err, BFT_EFORMAT, "%s: invalid JSON at byte %zu: %s", what,
                      end > len ? len : end, json_tokener_error_desc(jerr));
        json_object_put(root);
        root = NULL;
    } else {
        /* parse_end counts the terminating NUL when the value needed it */
        for (size_t i = end; i < len; i++) {
            char ch = buf[i];
            if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
                bft_set_error(err, BFT_EFORMAT, "%s: unexpected data after the JSON value at byte %zu",
                              what, i);
                json_object_put(root);
                root = NULL;
                break;
            }
        }
    }
    json_tokener_free(tk);
    free(buf);
    return root;
}

static const char *jtype(json_object *v)
{
    return json_type_to_name(json_object_get_type(v));
}

/* Integer field: *out set when present and not null. Returns 0, 1 if absent, -1 on error. */
static int get_int(json_object *root, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   bft_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || v == NULL)
        return 1;
    if (json_object_is_type(v, json_type_int)) {
        int64_t x = json_object_get_int64(v);
        /* a value above INT64_MAX is stored as uint64 and read back saturated */
        if (x < lo || x > hi) {
            bft_set_error(err, BFT_EINVAL, "config: %s must be in [%lld, %lld], got %s", key,
                          (long long)lo, (long long)hi, json_object_to_json_string(v));
            return -1;
        }
        *out = x;
        return 0;
    }
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi) {
            bft_set_error(err, BFT_EINVAL, "config: %s must be an integer in [%lld, %lld], got %s", key,
                          (long long)lo, (long long)hi, json_object_to_json_string(v));
            return -1;
        }
        *out = (int64_t)d;
        return 0;
    }
    bft_set_error(err, BFT_EFORMAT, "config: %s must be an integer, got %s", key, jtype(v));
    return -1;
}

static int get_int_field(json_object *root, const char *key, int lo, int hi, int *out, bft_error *err)
{
    int64_t x;
    int r = get_int(root, key, lo, hi, &x, err);
    if (r == 0)
        *out = (int)x;
    return r < 0 ? -1 : 0;
}

/* Number field (int or double, finite). null → *is_null = 1 when allowed. */
static int get_float_field(json_object *root, const char *key, float *out, int *is_null,
                           bft_error *err)
{
    json_object *v;
    double d;
    if (is_null)
        *is_null = 0;
    if (!json_object_object_get_ex(root, key, &v))
        return 0;
    if (v == NULL) {
        if (is_null) {
            *is_null = 1;
            return 0;
        }
        bft_set_error(err, BFT_EFORMAT, "config: %s must be a number, got null", key);
        return -1;
    }
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) {
        bft_set_error(err, BFT_EFORMAT, "config: %s must be a number, got %s", key, jtype(v));
        return -1;
    }
    d = json_object_get_double(v);
    if (!isfinite(d) || fabs(d) > 3.0e38) {
        bft_set_error(err, BFT_EINVAL, "config: %s must be a finite number, got %s", key,
                      json_object_to_json_string(v));
        return -1;
    }
    *out = (float)d;
    return 0;
}

/* Boolean field: absent → unchanged; null → *out = null_value if null_ok. */
static int get_bool_field(json_object *root, const char *what, const char *key, int *out, int null_ok,
                          int null_value, bft_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v))
        return 0;
    if (v == NULL) {
        if (null_ok) {
            *out = null_value;
            return 0;
        }
        bft_set_error(err, BFT_EFORMAT, "%s: %s must be true or false, got null", what, key);
        return -1;
    }
    if (!json_object_is_type(v, json_type_boolean)) {
        bft_set_error(err, BFT_EFORMAT, "%s: %s must be true or false, got %s", what, key, jtype(v));
        return -1;
    }
    *out = json_object_get_boolean(v) ? 1 : 0;
    return 0;
}

/* String field (no NUL inside). *out points into root. Absent or null → NULL. */
static int get_string_field(json_object *root, const char *key, const char **out, bft_error *err)
{
    json_object *v;
    *out = NULL;
    if (!json_object_object_get_ex(root, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string)) {
        bft_set_error(err, BFT_EFORMAT, "config: %s must be a string, got %s", key, jtype(v));
        return -1;
    }
    if (strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
        bft_set_error(err, BFT_EFORMAT, "config: %s contains a NUL character", key);
        return -1;
    }
    *out = json_object_get_string(v);
    return 0;
}

/* qsort comparator over an array of C strings. */
static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Two ids with the same name in names[0..n): 1 with *i < *j, 0 when all are
 * distinct, -1 on OOM. O(n log n): label lists can be long. */
int bft_find_duplicate_name(char *const *names, int n, int *i, int *j)
{
    const char **s;
    const char *dup = NULL;
    if (n < 2)
        return 0;
    if (!(s = malloc((size_t)n * sizeof *s)))
        return -1;
    memcpy(s, names, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_strp);
    for (int k = 1; k < n && !dup; k++)
        if (strcmp(s[k - 1], s[k]) == 0)
            dup = s[k];
    if (dup) {
        *i = *j = -1;
        for (int k = 0; k < n; k++)
            if (strcmp(names[k], dup) == 0) {
                if (*i < 0)
                    *i = k;
                else {
                    *j = k;
                    break;
                }
            }
    }
    free(s);
    return dup != NULL;
}

/* "12" → 12; only decimal digits, value < MAX_LABELS. */
static int parse_label_id(const char *s, int *out)
{
    long v = 0;
    if (!*s)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v >= MAX_LABELS)
            return -1;
    }
    *out = (int)v;
    return 0;
}

/* label2id key "LABEL_<id>"? */
static int is_default_name(const char *key, int64_t id)
{
    char dflt[32];
    snprintf(dflt, sizeof dflt, "LABEL_%lld", (long long)id);
    return strcmp(key, dflt) == 0;
}

/* num_labels (or _num_labels; they must agree) into *nl, -1 when neither is given. */
static int labels_count(json_object *root, int64_t *nl, bft_error *err)
{
    int64_t nl2 = -1;
    *nl = -1;
    if (get_int(root, "num_labels", 0, MAX_LABELS, nl, err) < 0 ||
        get_int(root, "_num_labels", 0, MAX_LABELS, &nl2, err) < 0)
        return -1;
    if (*nl >= 0 && nl2 >= 0 && *nl != nl2) {
        bft_set_error(err, BFT_EMISMATCH, "config: num_labels %lld and _num_labels %lld disagree",
                      (long long)*nl, (long long)nl2);
        return -1;
    }
    if (*nl < 0)
        *nl = nl2;
    return 0;
}

/* One id2label entry key → val into names (n entries): an id in [0, n), a string, once. */
static int id2label_entry(const char *key, json_object *val, char **names, int n, bft_error *err)
{
    int id;
    if (parse_label_id(key, &id) < 0 || id >= n) {
        bft_set_error(err, BFT_EFORMAT, "config: id2label key \"%.100s\" is not a label id in [0, %d)", key, n);
        return -1;
    }
    if (!val || !json_object_is_type(val, json_type_string)) {
        bft_set_error(err, BFT_EFORMAT, "config: id2label[\"%s\"] must be a string, got %s", key, jtype(val));
        return -1;
    }
    if (strlen(json_object_get_string(val)) != (size_t)json_object_get_string_len(val)) {
        bft_set_error(err, BFT_EFORMAT, "config: id2label[\"%s\"] contains a NUL character", key);
        return -1;
    }
    if (names[id]) { /* "1" and "01" */
        bft_set_error(err, BFT_EFORMAT, "config: id2label has label id %d twice", id);
        return -1;
    }
    if (!(names[id] = strdup(json_object_get_string(val)))) {
        bft_set_error(err, BFT_ENOMEM, "config: out of memory");
        return -1;
    }
    return 0;
}

/* id2label: *n distinct ids in [0, *n) (so every id is present), distinct
 * names, as many as num_labels nl (when given). *names is the caller's to free. */
static int parse_id2label(json_object *id2label, int64_t nl, char ***names, int *n, bft_error *err)
{
    int i, j, d;
    *n = json_object_object_length(id2label);
    if (*n > MAX_LABELS) {
        bft_set_error(err, BFT_EINVAL, "config: id2label has %d entries (max %d)", *n, MAX_LABELS);
        return -1;
    }
    if (*n > 0 && !(*names = calloc((size_t)*n, sizeof **names))) {
        bft_set_error(err, BFT_ENOMEM, "config: out of memory");
        return -1;
    }
    json_object_object_foreach(id2label, key, val)
    {
        if (id2label_entry(key, val, *names, *n, err) < 0)
            return -1;
    }
    d = bft_find_duplicate_name(*names, *n, &i, &j);
    if (d < 0) {
        bft_set_error(err, BFT_ENOMEM, "config: out of memory");
        return -1;
    }
    if (d > 0) {
        bft_set_error(err, BFT_EMISMATCH, "config: id2label gives the name \"%.100s\" to both %d and %d",
                      (*names)[i], i, j);
        return -1;
    }
    if (nl >= 0 && nl != *n) {
        bft_set_error(err, BFT_EMISMATCH, "config: num_labels %lld but id2label has %d entries", (long long)nl,
                      *n);
        return -1;
    }
    return 0;
}

/* label2id must be the exact inverse of the n labels (names, or LABEL_i when
 * names is NULL), except that HF's untouched default {"LABEL_0": 0, ...} next
 * to real names is ignored; have_labels: id2label or num_labels was given. */
static int check_label2id(json_object *label2id, int have_labels, char **names, int n, bft_error *err)
{
    int m = json_object_object_length(label2id), all_default = 1;
    json_object_object_foreach(label2id, key, val)
    {
        if (!val || !json_object_is_type(val, json_type_int)) {
            bft_set_error(err, BFT_EFORMAT, "config: label2id[\"%.100s\"] must be an integer, got %s", key,
                          jtype(val));
            return -1;
        }
        if (!is_default_name(key, json_object_get_int64(val)))
            all_default = 0;
    }
    if (!have_labels) {
        bft_set_error(err, BFT_EMISMATCH, "config: label2id is given without id2label");
        return -1;
    }
    if (all_default && names)
        return 0;
    if (m != n) {
        bft_set_error(err, BFT_EMISMATCH, "config: label2id has %d entries but there are %d labels", m, n);
        return -1;
    }
    json_object_object_foreach(label2id, key2, val2)
    {
        int64_t id = json_object_get_int64(val2);
        if (id < 0 || id >= n) {
            bft_set_error(err, BFT_EMISMATCH, "config: label2id[\"%.100s\"] = %lld is not a label id in [0, %d)",
                          key2, (long long)id, n);
            return -1;
        }
        if (names ? strcmp(names[id], key2) != 0 : !is_default_name(key2, id)) {
            char buf[32];
            snprintf(buf, sizeof buf, "LABEL_%lld", (long long)id);
            bft_set_error(err, BFT_EMISMATCH, "config: label2id[\"%.100s\"] = %lld but id2label[\"%lld\"] is \"%.100s\"",
                          key2, (long long)id, (long long)id, names ? names[id] : buf);
            return -1;
        }
    }
    return 0;
}

/* id2label / label2id / num_labels → cfg->num_labels, cfg->id2label.
 * id2label keys are label ids as strings ("0", "1", ...) covering [0, n);
 * names must be distinct; label2id must be its exact inverse, except that
 * HF's untouched default {"LABEL_0": 0, ...} next to real names is ignored. */
static int parse_labels(json_object *root, bft_config *cfg, bft_error *err)
{
    json_object *id2label = NULL, *label2id = NULL;
    int64_t nl;
    int n = 0;
    char **names = NULL;

    if (labels_count(root, &nl, err) < 0)
        return -1;
    json_object_object_get_ex(root, "id2label", &id2label);
    json_object_object_get_ex(root, "label2id", &label2id);
    if (id2label && !json_object_is_type(id2label, json_type_object)) {
        bft_set_error(err, BFT_EFORMAT, "config: id2label must be an object, got %s", jtype(id2label));
        return -1;
    }
    if (label2id && !json_object_is_type(label2id, json_type_object)) {
        bft_set_error(err, BFT_EFORMAT, "config: label2id must be an object, got %s", jtype(label2id));
        return -1;
    }
    if (id2label && parse_id2label(id2label, nl, &names, &n, err) < 0)
        goto fail;
    if (!id2label && nl >= 0)
        n = (int)nl; /* names default to LABEL_i */
    if (label2id && check_label2id(label2id, id2label || nl >= 0, names, n, err) < 0)
        goto fail;
    if (n == 1 && cfg->problem_type != BFT_PROBLEM_MULTI_LABEL) {
        bft_set_error(err, BFT_EUNSUPPORTED,
                      "config: 1 label means regression in Hugging Face (problem_type \"regression\"); "
                      "only single-label classification with >= 2 labels is supported");
        goto fail;
    }
    cfg->num_labels = n;
    cfg->id2label = names;
    return 0;
fail:
    free_labels(names, n);
    return -1;
}

int bft_config_parse(const char *json, size_t len, bft_config *cfg, bft_error *err)
{
    bft_config c = bft_config_default();
    json_object *root;
    const char *s;
    int is_null, rc = -1;

    root = parse_json(json, len, "config.json", err);
    if (!root)
        goto out_default;
    if (!json_object_is_type(root, json_type_object)) {
        bft_set_error(err, BFT_EFORMAT, "config.json: top level must be an object, got %s", jtype(root));
        goto out;
    }

    if (get_string_field(root, "model_type", &s, err) < 0)
        goto out;
    if (s && strcmp(s, "bert") != 0) {
        bft_set_error(err, BFT_EUNSUPPORTED, "config: model_type \"%.100s\" is not supported (only \"bert\")", s);
        goto out;
    }
    if (get_int_field(root, "vocab_size", 1, MAX_DIM, &c.vocab_size, err) < 0 ||
        get_int_field(root, "hidden_size", 1, MAX_DIM, &c.hidden_size, err) < 0 ||
        get_int_field(root, "num_hidden_layers", 1, MAX_LAYERS, &c.num_hidden_layers, err) < 0 ||
        get_int_field(root, "num_attention_heads", 1, MAX_DIM, &c.num_attention_heads, err) < 0 ||
        get_int_field(root, "intermediate_size", 1, MAX_DIM, &c.intermediate_size, err) < 0 ||
        get_int_field(root, "max_position_embeddings", 1, MAX_DIM, &c.max_position_embeddings, err) < 0 ||
        get_int_field(root, "type_vocab_size", 1, MAX_DIM, &c.type_vocab_size, err) < 0 ||
        get_int_field(root, "pad_token_id", 0, MAX_DIM, &c.pad_token_id, err) < 0)
        goto out;
    if (get_float_field(root, "layer_norm_eps", &c.layer_norm_eps, NULL, err) < 0 ||
        get_float_field(root, "hidden_dropout_prob", &c.hidden_dropout_prob, NULL, err) < 0 ||
        get_float_field(root, "attention_probs_dropout_prob", &c.attention_probs_dropout_prob, NULL, err) < 0 ||
        get_float_field(root, "initializer_range", &c.initializer_range, NULL, err) < 0 ||
        get_float_field(root, "classifier_dropout", &c.classifier_dropout, &is_null, err) < 0 ||
        get_float_field(root, "bft_ngram_scale", &c.ngram_scale, NULL, err) < 0)
        goto out;
    if (is_null)
        c.classifier_dropout = -1.0f;
    else if (c.classifier_dropout < 0.0f && json_object_object_get_ex(root, "classifier_dropout", NULL)) {
        bft_set_error(err, BFT_EINVAL, "config: classifier_dropout must be null or in [0, 1), got %g",
                      (double)c.classifier_dropout);
        goto out;
    }

    if (get_string_field(root, "hidden_act", &s, err) < 0)
        goto out;
    if (s) {
        if (strcmp(s, "gelu") != 0) {
            bft_set_error(err, BFT_EUNSUPPORTED,
                          "config: hidden_act \"%.100s\" is not supported (only \"gelu\", the exact erf GELU)", s);
            goto out;
        }
        snprintf(c.hidden_act, sizeof c.hidden_act, "%s", s);
    }
    if (get_string_field(root, "position_embedding_type", &s, err) < 0)
        goto out;
    if (s && strcmp(s, "absolute") != 0) {
        bft_set_error(err, BFT_EUNSUPPORTED,
                      "config: position_embedding_type \"%.100s\" is not supported (only \"absolute\")", s);
        goto out;
    }
    if (get_string_field(root, "problem_type", &s, err) < 0)
        goto out;
    if (s && strcmp(s, "multi_label_classification") == 0)
        c.problem_type = BFT_PROBLEM_MULTI_LABEL;
    else if (s && strcmp(s, "single_label_classification") != 0) {
        bft_set_error(err, BFT_EUNSUPPORTED,
                      "config: problem_type \"%.100s\" is not supported (only single_label_classification "
                      "and multi_label_classification)", s);
        goto out;
    }
    {
        int dec = 0, cross = 0;
        if (get_bool_field(root, "config", "is_decoder", &dec, 0, 0, err) < 0 ||
            get_bool_field(root, "config", "add_cross_attention", &cross, 0, 0, err) < 0)
            goto out;
        if (dec || cross) {
            bft_set_error(err, BFT_EUNSUPPORTED, "config: %s is not supported (encoder-only BERT)",
                          dec ? "is_decoder" : "add_cross_attention");
            goto out;
        }
    }
    if (parse_labels(root, &c, err) < 0)
        goto out;
    if (bft_config_validate(&c, err) != BFT_OK) {
        bft_config_release(&c);
        goto out;
    }
    *cfg = c;
    rc = 0;
out:
    json_object_put(root);
out_default:
    if (rc < 0)
        *cfg = bft_config_default();
    return rc;
}

#define TC "tokenizer_config.json"

int bft_tokenizer_config_parse(const char *json, size_t len, bft_config *cfg, bft_error *err)
{
    bft_tokenizer_opts t = cfg->tok;
    json_object *root, *v;
    int rc = -1;

    root = parse_json(json, len, "tokenizer_config.json", err);
    if (!root)
        return -1;
    if (!json_object_is_type(root, json_type_object)) {
        bft_set_error(err, BFT_EFORMAT, "tokenizer_config.json: top level must be an object, got %s",
                      jtype(root));
        goto out;
    }
    if (get_bool_field(root, TC, "do_lower_case", &t.do_lower_case, 0, 0, err) < 0 ||
        get_bool_field(root, TC, "strip_accents", &t.strip_accents, 1, -1, err) < 0 ||
        get_bool_field(root, TC, "tokenize_chinese_chars", &t.tokenize_chinese_chars, 0, 0, err) < 0)
        goto out;
    if (json_object_object_get_ex(root, "model_max_length", &v) && v != NULL) {
        /* HF writes int(1e30) ("no limit"); anything beyond int range → 0 (unknown). */
        if (json_object_is_type(v, json_type_int)) {
            int64_t x = json_object_get_int64(v);
            if (x < 0) {
                bft_set_error(err, BFT_EINVAL, "tokenizer_config.json: model_max_length must be >= 0, got %lld",
                              (long long)x);
                goto out;
            }
            t.model_max_length = x > INT_MAX ? 0 : (int)x;
        } else if (json_object_is_type(v, json_type_double)) {
            double d = json_object_get_double(v);
            if (isnan(d) || d < 0) {
                bft_set_error(err, BFT_EINVAL, "tokenizer_config.json: model_max_length must be >= 0, got %s",
                              json_object_to_json_string(v));
                goto out;
            }
            t.model_max_length = d > (double)INT_MAX ? 0 : (int)d;
        } else {
            bft_set_error(err, BFT_EFORMAT, "tokenizer_config.json: model_max_length must be an integer, got %s",
                          jtype(v));
            goto out;
        }
    }
    cfg->tok = t;
    rc = 0;
out:
    json_object_put(root);
    return rc;
}

/* ---- tokenizer.json (the "fast" tokenizer's file) ----------------------- */

#define TJ "tokenizer.json"

/* Place token s (l bytes) at id in the table; checks text and uniqueness. */
static int tj_put(const char **table, int n, int64_t id, const char *s, size_t l, bft_error *err)
{
    if (id < 0 || id >= n) {
        bft_set_error(err, BFT_EFORMAT, TJ ": token \"%.100s\" has id %lld outside [0, %d)", s,
                      (long long)id, n);
        return -1;
    }
    if (l == 0 || strlen(s) != l || strpbrk(s, "\n\r")) {
        bft_set_error(err, BFT_EFORMAT, TJ ": token %lld is empty or contains a NUL or line break",
                      (long long)id);
        return -1;
    }
    if (table[id] && strcmp(table[id], s) != 0) {
        bft_set_error(err, BFT_EFORMAT, TJ ": id %lld is both \"%.100s\" and \"%.100s\"", (long long)id,
                      table[id], s);
        return -1;
    }
    table[id] = s;
    return 0;
}

/* The "model" object: a WordPiece with BERT's settings; *vmap its vocab (token -> id). */
static int tj_model(json_object *root, json_object **vmap, bft_error *err)
{
    json_object *model, *v = NULL;
    if (!json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "model", &model) || !model ||
        !json_object_is_type(model, json_type_object))
        return bft_set_error(err, BFT_EFORMAT, TJ ": no \"model\" object"), -1;
    if (!json_object_object_get_ex(model, "type", &v) || !v || !json_object_is_type(v, json_type_string) ||
        strcmp(json_object_get_string(v), "WordPiece") != 0)
        return bft_set_error(err, BFT_EUNSUPPORTED, TJ ": model type %s is not supported (bft reads BERT's WordPiece)",
                             v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "(none)"),
               -1;
    if (json_object_object_get_ex(model, "continuing_subword_prefix", &v) && v &&
        (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "##") != 0))
        return bft_set_error(err, BFT_EUNSUPPORTED, TJ ": continuing_subword_prefix must be \"##\""), -1;
    if (json_object_object_get_ex(model, "max_input_chars_per_word", &v) && v &&
        (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 100))
        return bft_set_error(err, BFT_EUNSUPPORTED, TJ ": max_input_chars_per_word must be 100 (BERT's)"), -1;
    if (!json_object_object_get_ex(model, "vocab", vmap) || !*vmap || !json_object_is_type(*vmap, json_type_object))
        return bft_set_error(err, BFT_EFORMAT, TJ ": model.vocab must be an object (token -> id)"), -1;
    return 0;
}

/* The number of token ids: the vocab's, extended by added tokens past it (ids must stay dense). */
static int tj_count(json_object *root, json_object *vmap, json_object **added, int *n, bft_error *err)
{
    *n = json_object_object_length(vmap);
    *added = NULL;
    if (json_object_object_get_ex(root, "added_tokens", added) && *added &&
        !json_object_is_type(*added, json_type_array))
        return bft_set_error(err, BFT_EFORMAT, TJ ": added_tokens must be an array"), -1;
    if (*added)
        for (size_t i = 0; i < json_object_array_length(*added); i++) {
            json_object *a = json_object_array_get_idx(*added, i), *id;
            if (a && json_object_object_get_ex(a, "id", &id) && id && json_object_is_type(id, json_type_int) &&
                json_object_get_int64(id) >= *n && json_object_get_int64(id) < MAX_DIM)
                *n = (int)json_object_get_int64(id) + 1;
        }
    if (*n < 1 || *n > MAX_DIM)
        return bft_set_error(err, BFT_EFORMAT, TJ ": %d tokens", *n), -1;
    return 0;
}

/* table[id] = token for the vocab and the added tokens; every id 0..n-1 must have one. */
static int tj_table(json_object *vmap, json_object *added, const char **table, int n, bft_error *err)
{
    json_object_object_foreach(vmap, key, val)
    {
        if (!val || !json_object_is_type(val, json_type_int))
            return bft_set_error(err, BFT_EFORMAT, TJ ": the id of \"%.100s\" must be an integer", key), -1;
        if (tj_put(table, n, json_object_get_int64(val), key, strlen(key), err) < 0)
            return -1;
    }
    for (size_t i = 0; added && i < json_object_array_length(added); i++) {
        json_object *a = json_object_array_get_idx(added, i), *id, *content;
        if (!a || !json_object_is_type(a, json_type_object) ||
            !json_object_object_get_ex(a, "id", &id) || !id || !json_object_is_type(id, json_type_int) ||
            !json_object_object_get_ex(a, "content", &content) || !content ||
            !json_object_is_type(content, json_type_string))
            return bft_set_error(err, BFT_EFORMAT, TJ ": added_tokens[%zu] needs an integer id and a string content",
                                 i), -1;
        if (tj_put(table, n, json_object_get_int64(id), json_object_get_string(content),
                   (size_t)json_object_get_string_len(content), err) < 0)
            return -1;
    }
    for (int i = 0; i < n; i++)
        if (!table[i])
            return bft_set_error(err, BFT_EFORMAT, TJ ": no token has id %d (ids must be 0..%d)", i, n - 1), -1;
    return 0;
}

/* The normalizer decides the casing and accents, as BertTokenizerFast's; only BertPreTokenizer. */
static int tj_normalizer(json_object *root, bft_tokenizer_opts *t, bft_error *err)
{
    json_object *norm, *v;
    if (json_object_object_get_ex(root, "normalizer", &norm) && norm) {
        const char *type = NULL;
        if (!json_object_is_type(norm, json_type_object) ||
            !json_object_object_get_ex(norm, "type", &v) || !v || !json_object_is_type(v, json_type_string))
            return bft_set_error(err, BFT_EFORMAT, TJ ": normalizer must be an object with a type"), -1;
        type = json_object_get_string(v);
        if (strcmp(type, "BertNormalizer") != 0)
            return bft_set_error(err, BFT_EUNSUPPORTED,
                                 TJ ": normalizer %s is not supported (bft implements BertNormalizer)", type), -1;
        if (get_bool_field(norm, TJ, "lowercase", &t->do_lower_case, 0, 0, err) < 0 ||
            get_bool_field(norm, TJ, "strip_accents", &t->strip_accents, 1, -1, err) < 0 ||
            get_bool_field(norm, TJ, "handle_chinese_chars", &t->tokenize_chinese_chars, 0, 0, err) < 0)
            return -1;
    }
    if (json_object_object_get_ex(root, "pre_tokenizer", &v) && v &&
        (!json_object_is_type(v, json_type_object) || !json_object_object_get_ex(v, "type", &v) || !v ||
         !json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "BertPreTokenizer") != 0))
        return bft_set_error(err, BFT_EUNSUPPORTED, TJ ": only the BertPreTokenizer is supported"), -1;
    return 0;
}

/* table[0..n) as vocab.txt (one token per line); NULL out of memory. */
static char *tj_vocab_text(const char **table, int n, size_t *len)
{
    size_t total = 0;
    char *out;
    for (int i = 0; i < n; i++)
        total += strlen(table[i]) + 1;
    if (!(out = malloc(total + 1)))
        return NULL;
    total = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(table[i]);
        memcpy(out + total, table[i], l);
        out[total + l] = '\n';
        total += l + 1;
    }
    out[total] = '\0';
    *len = total;
    return out;
}

int bft_tokenizer_json_parse(const char *json, size_t len, bft_config *cfg, char **vocab,
                             size_t *vocab_len, bft_error *err)
{
    json_object *root, *vmap = NULL, *added = NULL;
    const char **table = NULL;
    bft_tokenizer_opts t = cfg->tok;
    int n = 0, rc;

    *vocab = NULL;
    *vocab_len = 0;
    /* json-c's objects take a few tens of bytes per byte of a vocabulary */
    if (bft_memory_check(len * 16, TJ, err) != BFT_OK)
        return -1;
    if (!(root = parse_json(json, len, TJ, err)))
        return -1;
    rc = tj_model(root, &vmap, err);
    if (rc == 0)
        rc = tj_count(root, vmap, &added, &n, err);
    if (rc == 0 && !(table = calloc((size_t)n, sizeof *table)))
        rc = (bft_set_error(err, BFT_ENOMEM, TJ ": out of memory"), -1);
    if (rc == 0)
        rc = tj_table(vmap, added, table, n, err);
    if (rc == 0)
        rc = tj_normalizer(root, &t, err);
    if (rc == 0 && !(*vocab = tj_vocab_text(table, n, vocab_len)))
        rc = (bft_set_error(err, BFT_ENOMEM, TJ ": out of memory"), -1);
    if (rc == 0)
        cfg->tok = t;
    free(table);
    json_object_put(root);
    return rc;
}

/* ---- writing ---------------------------------------------------------- */

/* A json-c double whose text is the shortest decimal that reads back (via
 * strtod then float, as our parser does) to exactly f. */
static json_object *float_json(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f)
            break;
    }
    /* "1e-12" is valid JSON; make integral values look like floats ("0.0"). */
    if (!strpbrk(buf, ".eEn")) {
        size_t l = strlen(buf);
        if (l + 2 < sizeof buf)
            memcpy(buf + l, ".0", 3);
    }
    return json_object_new_double_s((double)f, buf);
}

static char *dump(json_object *root)
{
    char *out = NULL;
    if (root) {
        const char *s = json_object_to_json_string_ext(
            root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (s) {
            size_t l = strlen(s);
            out = malloc(l + 2);
            if (out) {
                memcpy(out, s, l);
                out[l] = '\n';
                out[l + 1] = '\0';
            }
        }
        json_object_put(root);
    }
    return out;
}

/* json_object_object_add that remembers a failure in *ok. */
static void put(json_object *o, const char *k, json_object *v, int *ok)
{
    if (!v || json_object_object_add(o, k, v) != 0) {
        json_object_put(v);
        *ok = 0;
    }
}

char *bft_config_to_json(const bft_config *cfg, int has_classifier, int has_mlm)
{
    json_object *root = json_object_new_object(), *arch = json_object_new_array();
    int ok = root && arch;
    const char *a = has_classifier ? "BertForSequenceClassification"
                  : has_mlm        ? "BertForMaskedLM"
                                   : "BertModel";

    if (!ok) {
        json_object_put(root);
        json_object_put(arch);
        return NULL;
    }
    if (json_object_array_add(arch, json_object_new_string(a)) != 0)
        ok = 0;
    /* keys in sorted order, like transformers' to_json_string(sort_keys=True) */
    put(root, "architectures", arch, &ok);
    put(root, "attention_probs_dropout_prob", float_json(cfg->attention_probs_dropout_prob), &ok);
    if (cfg->classifier_dropout < 0)
        json_object_object_add(root, "classifier_dropout", NULL);
    else
        put(root, "classifier_dropout", float_json(cfg->classifier_dropout), &ok);
    put(root, "hidden_act", json_object_new_string(cfg->hidden_act), &ok);
    put(root, "hidden_dropout_prob", float_json(cfg->hidden_dropout_prob), &ok);
    put(root, "hidden_size", json_object_new_int(cfg->hidden_size), &ok);
    if (has_classifier && cfg->num_labels > 0) {
        json_object *i2l = json_object_new_object(), *l2i = json_object_new_object();
        if (!i2l || !l2i)
            ok = 0;
        for (int i = 0; ok && i < cfg->num_labels; i++) {
            char key[32], buf[32];
            const char *name = bft_config_label(cfg, i, buf, sizeof buf);
            snprintf(key, sizeof key, "%d", i);
            put(i2l, key, json_object_new_string(name), &ok);
            put(l2i, name, json_object_new_int(i), &ok);
        }
        put(root, "id2label", i2l, &ok);
        put(root, "initializer_range", float_json(cfg->initializer_range), &ok);
        put(root, "intermediate_size", json_object_new_int(cfg->intermediate_size), &ok);
        put(root, "label2id", l2i, &ok);
    } else {
        put(root, "initializer_range", float_json(cfg->initializer_range), &ok);
        put(root, "intermediate_size", json_object_new_int(cfg->intermediate_size), &ok);
    }
    put(root, "layer_norm_eps", float_json(cfg->layer_norm_eps), &ok);
    put(root, "max_position_embeddings", json_object_new_int(cfg->max_position_embeddings), &ok);
    put(root, "model_type", json_object_new_string("bert"), &ok);
    put(root, "num_attention_heads", json_object_new_int(cfg->num_attention_heads), &ok);
    put(root, "num_hidden_layers", json_object_new_int(cfg->num_hidden_layers), &ok);
    put(root, "pad_token_id", json_object_new_int(cfg->pad_token_id), &ok);
    put(root, "position_embedding_type", json_object_new_string("absolute"), &ok);
    if (has_classifier)
        put(root, "problem_type",
            json_object_new_string(cfg->problem_type == BFT_PROBLEM_MULTI_LABEL
                                       ? "multi_label_classification"
                                       : "single_label_classification"),
            &ok);
    if (has_classifier && cfg->ngram_scale > 0)
        put(root, "bft_ngram_scale", float_json(cfg->ngram_scale), &ok);
    put(root, "torch_dtype", json_object_new_string("float32"), &ok);
    put(root, "type_vocab_size", json_object_new_int(cfg->type_vocab_size), &ok);
    put(root, "use_cache", json_object_new_boolean(1), &ok);
    put(root, "vocab_size", json_object_new_int(cfg->vocab_size), &ok);
    if (!ok) {
        json_object_put(root);
        return NULL;
    }
    return dump(root);
}

char *bft_tokenizer_config_to_json(const bft_config *cfg)
{
    json_object *root = json_object_new_object();
    int ok = root != NULL;
    static const char *special[][2] = {{"cls_token", "[CLS]"}, {"mask_token", "[MASK]"},
                                       {"pad_token", "[PAD]"}, {"sep_token", "[SEP]"},
                                       {"unk_token", "[UNK]"}};
    if (!ok)
        return NULL;
    put(root, "clean_up_tokenization_spaces", json_object_new_boolean(1), &ok);
    put(root, special[0][0], json_object_new_string(special[0][1]), &ok);
    put(root, "do_lower_case", json_object_new_boolean(cfg->tok.do_lower_case != 0), &ok);
    put(root, special[1][0], json_object_new_string(special[1][1]), &ok);
    if (cfg->tok.model_max_length > 0)
        put(root, "model_max_length", json_object_new_int(cfg->tok.model_max_length), &ok);
    else /* HF's VERY_LARGE_INTEGER, int(1e30): no limit */
        put(root, "model_max_length",
            json_object_new_double_s(1e30, "1000000000000000019884624838656"), &ok);
    put(root, special[2][0], json_object_new_string(special[2][1]), &ok);
    put(root, special[3][0], json_object_new_string(special[3][1]), &ok);
    if (cfg->tok.strip_accents < 0)
        json_object_object_add(root, "strip_accents", NULL);
    else
        put(root, "strip_accents", json_object_new_boolean(cfg->tok.strip_accents != 0), &ok);
    put(root, "tokenize_chinese_chars", json_object_new_boolean(cfg->tok.tokenize_chinese_chars != 0), &ok);
    put(root, "tokenizer_class", json_object_new_string("BertTokenizer"), &ok);
    put(root, special[4][0], json_object_new_string(special[4][1]), &ok);
    if (!ok) {
        json_object_put(root);
        return NULL;
    }
    return dump(root);
}

/* ---- for the other engine modules (engine_util.h) ------------------------ */

json_object *bft_json_parse(const char *json, size_t len, const char *what, bft_error *err)
{
    return parse_json(json, len, what, err);
}
