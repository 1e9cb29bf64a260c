/*
 * test_checkpoint.c — Hugging Face checkpoint I/O: config.json and
 * tokenizer_config.json parsing, the safetensors reader/writer, loading the
 * tiny checkpoints of tests/data/ckpt (F32/F16/BF16, legacy gamma/beta, with
 * and without the "bert." prefix, MLM head), bit-identical round trips,
 * set_labels, fresh initialisation, and corrupt inputs (right error code and
 * a message naming the problem, never a crash).
 *
 * Run from the repository root (tests/run_all.sh does).
 */
#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "rng.h"
#include "safetensors.h"
#include "test.h"
#include "testdata.h"
#include "testfiles.h"
#include "train.h"

#define CKPT "tests/data/ckpt/"

/* ---- helpers ------------------------------------------------------------- */

static char *read_ckpt(const char *name, const char *file, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, CKPT "%s/%s", name, file);
    return test_read_file(path, len);
}

/* The tiny checkpoint's files, for building variants in memory. */
typedef struct files {
    char *config, *vocab, *tokcfg, *st;
    size_t config_len, vocab_len, tokcfg_len, st_len;
} files;

static files load_files(const char *name)
{
    files f;
    f.config = read_ckpt(name, "config.json", &f.config_len);
    f.vocab = read_ckpt(name, "vocab.txt", &f.vocab_len);
    f.tokcfg = read_ckpt(name, "tokenizer_config.json", &f.tokcfg_len);
    f.st = read_ckpt(name, "model.safetensors", &f.st_len);
    return f;
}

static void free_files(files *f)
{
    free(f->config);
    free(f->vocab);
    free(f->tokcfg);
    free(f->st);
}

static bft_model *load_with_st(const files *f, const void *st, size_t st_len, bft_error *err)
{
    return bft_model_load_mem(f->config, f->config_len, f->vocab, f->vocab_len, f->tokcfg, f->tokcfg_len, st,
                              st_len, err);
}

/* Hand-made safetensors (independent of bft_st_write): entries give the
 * header JSON of each tensor verbatim; data is appended as is. */
static unsigned char *make_st(const char *header, const void *data, size_t data_len, size_t *out_len)
{
    size_t h = strlen(header), total = 8 + h + data_len;
    unsigned char *b = malloc(total + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    if (data_len)
        memcpy(b + 8 + h, data, data_len);
    *out_len = total;
    return b;
}

/* A tensor list taken from a parsed file, editable, re-serialised by hand. */
typedef struct ent {
    char name[160];
    char dtype[16];
    int ndim;
    int64_t shape[4];
    unsigned char *data;
    size_t nbytes;
} ent;

static int ents_from_file(const char *st, size_t st_len, ent *out, int max)
{
    bft_st_file f;
    bft_error err;
    int n;
    if (bft_st_parse(st, st_len, &f, &err) < 0)
        return -1;
    n = f.n < max ? f.n : max;
    for (int i = 0; i < n; i++) {
        snprintf(out[i].name, sizeof out[i].name, "%s", f.t[i].name);
        snprintf(out[i].dtype, sizeof out[i].dtype, "%s", bft_st_dtype_name(f.t[i].dtype));
        out[i].ndim = f.t[i].ndim;
        for (int d = 0; d < f.t[i].ndim && d < 4; d++)
            out[i].shape[d] = f.t[i].shape[d];
        out[i].nbytes = f.t[i].nbytes;
        out[i].data = malloc(f.t[i].nbytes + 1);
        memcpy(out[i].data, f.t[i].data, f.t[i].nbytes);
    }
    bft_st_release(&f);
    return n;
}

static void ents_free(ent *e, int n)
{
    for (int i = 0; i < n; i++)
        free(e[i].data);
}

static unsigned char *ents_build(const ent *e, int n, size_t *out_len)
{
    size_t cap = 1 << 16, hl = 0, off = 0, dl = 0;
    char *h = malloc(cap);
    unsigned char *data, *b;
    hl += (size_t)snprintf(h + hl, cap - hl, "{");
    for (int i = 0; i < n; i++) {
        hl += (size_t)snprintf(h + hl, cap - hl, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", e[i].name,
                               e[i].dtype);
        for (int d = 0; d < e[i].ndim; d++)
            hl += (size_t)snprintf(h + hl, cap - hl, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
        hl += (size_t)snprintf(h + hl, cap - hl, "],\"data_offsets\":[%zu,%zu]}", off, off + e[i].nbytes);
        off += e[i].nbytes;
    }
    snprintf(h + hl, cap - hl, "}");
    data = malloc(off + 1);
    for (int i = 0; i < n; i++) {
        memcpy(data + dl, e[i].data, e[i].nbytes);
        dl += e[i].nbytes;
    }
    b = make_st(h, data, dl, out_len);
    free(h);
    free(data);
    return b;
}

static int find_ent(const ent *e, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].name, name) == 0)
            return i;
    return -1;
}

/* float → IEEE half, round to nearest even (as torch's .half()). */
static uint16_t f32_to_f16(float f)
{
    uint32_t x, ax, sign, h, rem;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    ax = x & 0x7fffffff;
    if (ax >= 0x7f800000)
        return (uint16_t)(sign | (ax > 0x7f800000 ? 0x7e00 : 0x7c00));
    if (ax >= 0x477ff000)
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000) {
        float v;
        memcpy(&v, &ax, 4);
        return (uint16_t)(sign | (uint32_t)nearbyintf(v * 16777216.0f));
    }
    h = ((((ax >> 23) - 127 + 15)) << 10) | ((ax & 0x7fffff) >> 13);
    rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* Value of a named tensor from a file as floats (malloc'd). */
static float *tensor_f32(const char *st, size_t st_len, const char *name, size_t *numel)
{
    bft_st_file f;
    bft_error err;
    const bft_st_tensor *t;
    float *out = NULL;
    if (bft_st_parse(st, st_len, &f, &err) < 0)
        return NULL;
    t = bft_st_find(&f, name);
    if (t) {
        out = malloc((t->numel + 1) * sizeof(float));
        if (bft_st_to_f32(t, out, &err) < 0) {
            free(out);
            out = NULL;
        } else
            *numel = t->numel;
    }
    bft_st_release(&f);
    return out;
}

static int same_cfg(const bft_config *a, const bft_config *b)
{
    char x[32], y[32];
    if (a->vocab_size != b->vocab_size || a->hidden_size != b->hidden_size ||
        a->num_hidden_layers != b->num_hidden_layers || a->num_attention_heads != b->num_attention_heads ||
        a->intermediate_size != b->intermediate_size || a->max_position_embeddings != b->max_position_embeddings ||
        a->type_vocab_size != b->type_vocab_size || a->pad_token_id != b->pad_token_id ||
        a->layer_norm_eps != b->layer_norm_eps || a->hidden_dropout_prob != b->hidden_dropout_prob ||
        a->attention_probs_dropout_prob != b->attention_probs_dropout_prob ||
        a->classifier_dropout != b->classifier_dropout || a->initializer_range != b->initializer_range ||
        strcmp(a->hidden_act, b->hidden_act) != 0 || a->num_labels != b->num_labels ||
        a->tok.do_lower_case != b->tok.do_lower_case || a->tok.strip_accents != b->tok.strip_accents ||
        a->tok.tokenize_chinese_chars != b->tok.tokenize_chinese_chars ||
        a->tok.model_max_length != b->tok.model_max_length)
        return 0;
    for (int i = 0; i < a->num_labels; i++)
        if (strcmp(bft_config_label(a, i, x, sizeof x), bft_config_label(b, i, y, sizeof y)) != 0)
            return 0;
    return 1;
}

static const char *ALL[] = {"tiny", "tiny_f16", "tiny_bf16", "tiny_noprefix", "tiny_legacy", "tiny_mlm"};
#define NALL ((int)(sizeof ALL / sizeof ALL[0]))

/* ---- config.json ---------------------------------------------------------- */

static void test_config_defaults_and_parse(void)
{
    bft_config d = bft_config_default(), c;
    bft_error err;
    size_t len;
    char *json = read_ckpt("tiny", "config.json", &len);
    CHECK(d.vocab_size == 30522 && d.hidden_size == 768 && d.num_hidden_layers == 12 &&
              d.num_attention_heads == 12 && d.intermediate_size == 3072 && d.max_position_embeddings == 512 &&
              d.type_vocab_size == 2 && d.layer_norm_eps == 1e-12f && d.num_labels == 0 && !d.id2label &&
              d.classifier_dropout < 0 && strcmp(d.hidden_act, "gelu") == 0,
          "BertConfig defaults");
    CHECK(bft_config_validate(&d, &err) == BFT_OK, "defaults valid: %s", err.msg);
    CHECK(json != NULL, "tiny/config.json readable (run from the repository root)");
    if (!json)
        return;
    CHECK(bft_config_parse(json, len, &c, &err) == 0, "parse: %s", err.msg);
    CHECK(c.vocab_size == 140 && c.hidden_size == 32 && c.num_hidden_layers == 2 && c.num_attention_heads == 4 &&
              c.intermediate_size == 64 && c.max_position_embeddings == 64 && c.type_vocab_size == 2,
          "shape fields");
    CHECK(c.hidden_dropout_prob == 0.1f && c.attention_probs_dropout_prob == 0.1f && c.classifier_dropout < 0 &&
              c.initializer_range == 0.02f && c.layer_norm_eps == 1e-12f,
          "float fields");
    CHECK(c.num_labels == 3 && c.id2label && strcmp(c.id2label[0], "negative") == 0 &&
              strcmp(c.id2label[2], "positive") == 0,
          "labels");
    {
        char buf[32];
        CHECK(strcmp(bft_config_label(&c, 1, buf, sizeof buf), "neutral") == 0, "label 1");
        CHECK(strcmp(bft_config_label(&d, 7, buf, sizeof buf), "LABEL_7") == 0, "default label name");
    }
    /* copy is deep */
    {
        bft_config e;
        CHECK(bft_config_copy(&e, &c) == 0, "copy");
        CHECK(e.id2label != c.id2label && same_cfg(&e, &c), "deep copy equal");
        bft_config_release(&e);
        CHECK(e.id2label == NULL, "release clears");
    }
    bft_config_release(&c);
    free(json);

    /* bert-base-cased's config.json, verbatim */
    {
        const char *bbc = "{\n  \"architectures\": [\n    \"BertForMaskedLM\"\n  ],\n"
                          "  \"attention_probs_dropout_prob\": 0.1,\n  \"gradient_checkpointing\": false,\n"
                          "  \"hidden_act\": \"gelu\",\n  \"hidden_dropout_prob\": 0.1,\n  \"hidden_size\": 768,\n"
                          "  \"initializer_range\": 0.02,\n  \"intermediate_size\": 3072,\n"
                          "  \"layer_norm_eps\": 1e-12,\n  \"max_position_embeddings\": 512,\n"
                          "  \"model_type\": \"bert\",\n  \"num_attention_heads\": 12,\n  \"num_hidden_layers\": 12,\n"
                          "  \"pad_token_id\": 0,\n  \"position_embedding_type\": \"absolute\",\n"
                          "  \"transformers_version\": \"4.6.0.dev0\",\n  \"type_vocab_size\": 2,\n"
                          "  \"use_cache\": true,\n  \"vocab_size\": 28996\n}\n";
        CHECK(bft_config_parse(bbc, strlen(bbc), &c, &err) == 0, "bert-base-cased config: %s", err.msg);
        CHECK(c.vocab_size == 28996 && c.num_labels == 0 && c.hidden_size == 768, "bert-base-cased values");
        bft_config_release(&c);
    }
}

typedef struct bad_case {
    const char *json;
    int code;
    const char *needle;
} bad_case;

#define BASE "\"vocab_size\":100,\"hidden_size\":32,\"num_attention_heads\":4,\"num_hidden_layers\":2,\"intermediate_size\":64"

static void test_config_errors(void)
{
    static const bad_case cases[] = {
        {"", BFT_EFORMAT, "invalid JSON"},
        {"{" BASE ",", BFT_EFORMAT, "invalid JSON"},
        {"{" BASE "} x", BFT_EFORMAT, "after the JSON"},
        {"[1,2]", BFT_EFORMAT, "must be an object"},
        {"{" BASE ",\"num_attention_heads\":5}", BFT_EINVAL, "not a multiple of num_attention_heads"},
        {"{" BASE ",\"hidden_act\":\"relu\"}", BFT_EUNSUPPORTED, "hidden_act \"relu\""},
        {"{" BASE ",\"hidden_act\":\"gelu_new\"}", BFT_EUNSUPPORTED, "gelu_new"},
        {"{" BASE ",\"hidden_act\":3}", BFT_EFORMAT, "hidden_act must be a string"},
        {"{" BASE ",\"vocab_size\":-1}", BFT_EINVAL, "vocab_size"},
        {"{" BASE ",\"vocab_size\":0}", BFT_EINVAL, "vocab_size"},
        {"{" BASE ",\"vocab_size\":\"100\"}", BFT_EFORMAT, "vocab_size must be an integer"},
        {"{" BASE ",\"vocab_size\":100.5}", BFT_EINVAL, "vocab_size"},
        {"{" BASE ",\"vocab_size\":1000000000000000019884624838656}", BFT_EINVAL, "vocab_size"},
        {"{" BASE ",\"num_hidden_layers\":100000}", BFT_EINVAL, "num_hidden_layers"},
        {"{" BASE ",\"layer_norm_eps\":0}", BFT_EINVAL, "layer_norm_eps"},
        {"{" BASE ",\"layer_norm_eps\":NaN}", BFT_EINVAL, "layer_norm_eps"},
        {"{" BASE ",\"layer_norm_eps\":1e400}", BFT_EINVAL, "layer_norm_eps"},
        {"{" BASE ",\"hidden_dropout_prob\":1.0}", BFT_EINVAL, "hidden_dropout_prob"},
        {"{" BASE ",\"attention_probs_dropout_prob\":-0.1}", BFT_EINVAL, "attention_probs_dropout_prob"},
        {"{" BASE ",\"classifier_dropout\":-0.5}", BFT_EINVAL, "classifier_dropout"},
        {"{" BASE ",\"classifier_dropout\":\"x\"}", BFT_EFORMAT, "classifier_dropout"},
        {"{" BASE ",\"initializer_range\":-1}", BFT_EINVAL, "initializer_range"},
        {"{" BASE ",\"pad_token_id\":100}", BFT_EINVAL, "pad_token_id"},
        {"{" BASE ",\"model_type\":\"roberta\"}", BFT_EUNSUPPORTED, "model_type \"roberta\""},
        {"{" BASE ",\"position_embedding_type\":\"relative_key\"}", BFT_EUNSUPPORTED, "position_embedding_type"},
        {"{" BASE ",\"problem_type\":\"regression\"}", BFT_EUNSUPPORTED, "problem_type"},
        {"{" BASE ",\"is_decoder\":true}", BFT_EUNSUPPORTED, "is_decoder"},
        {"{" BASE ",\"id2label\":[\"a\",\"b\"]}", BFT_EFORMAT, "id2label must be an object"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"2\":\"b\"}}", BFT_EFORMAT, "id2label key \"2\""},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"x\":\"b\"}}", BFT_EFORMAT, "id2label key \"x\""},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"-1\":\"b\"}}", BFT_EFORMAT, "id2label key \"-1\""},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"1\":2}}", BFT_EFORMAT, "id2label[\"1\"] must be a string"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"1\":\"a\"}}", BFT_EMISMATCH, "\"a\" to both 0 and 1"},
        {"{" BASE ",\"id2label\":{\"1\":\"a\",\"01\":\"b\"}}", BFT_EFORMAT, "label id 1 twice"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"1\":\"b\"},\"label2id\":{\"a\":1,\"b\":0}}", BFT_EMISMATCH,
         "label2id[\"a\"] = 1 but id2label[\"1\"] is \"b\""},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"1\":\"b\"},\"label2id\":{\"a\":0}}", BFT_EMISMATCH,
         "label2id has 1 entries"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"1\":\"b\"},\"label2id\":{\"a\":0,\"c\":1}}", BFT_EMISMATCH,
         "label2id[\"c\"]"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"1\":\"b\"},\"label2id\":{\"a\":0,\"b\":\"1\"}}", BFT_EFORMAT,
         "label2id[\"b\"] must be an integer"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\",\"1\":\"b\"},\"num_labels\":3}", BFT_EMISMATCH, "num_labels 3"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\"}}", BFT_EUNSUPPORTED, "regression"},
        {"{" BASE ",\"label2id\":{\"a\":0,\"b\":1}}", BFT_EMISMATCH, "label2id is given without id2label"},
        {"{" BASE ",\"id2label\":{\"0\":\"a\\u0000b\",\"1\":\"c\"}}", BFT_EFORMAT, "NUL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bft_config c;
        bft_error err;
        int rc;
        bft_clear_error(&err);
        rc = bft_config_parse(cases[i].json, strlen(cases[i].json), &c, &err);
        CHECK(rc == -1, "case %zu accepted: %s", i, cases[i].json);
        CHECK(err.code == cases[i].code, "case %zu: code %s, want %s (%s)", i, bft_status_name(err.code),
              bft_status_name(cases[i].code), err.msg);
        CHECK(strstr(err.msg, cases[i].needle) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i, err.msg,
              cases[i].needle);
        CHECK(c.id2label == NULL, "case %zu: nothing owned after failure", i);
    }
    /* a NULL buffer */
    {
        bft_config c;
        bft_error err;
        CHECK(bft_config_parse(NULL, 0, &c, &err) == -1 && err.code == BFT_EINVAL, "NULL json");
    }
}

static void test_config_accepts(void)
{
    bft_config c;
    bft_error err;
    const char *j1 = "{" BASE ",\"classifier_dropout\":0.3,\"id2label\":{\"1\":\"pos\",\"0\":\"neg\"},"
                     "\"label2id\":{\"LABEL_0\":0,\"LABEL_1\":1}}";
    const char *j2 = "{" BASE ",\"num_labels\":4}";
    const char *j3 = "{" BASE ",\"id2label\":{\"0\":\"x\",\"1\":\"y\"},\"label2id\":{\"y\":1,\"x\":0},"
                     "\"hidden_size\":32.0, \"layer_norm_eps\": 1e-5}  \n";
    CHECK(bft_config_parse(j1, strlen(j1), &c, &err) == 0, "j1: %s", err.msg);
    CHECK(c.classifier_dropout == 0.3f && c.num_labels == 2 && strcmp(c.id2label[0], "neg") == 0 &&
              strcmp(c.id2label[1], "pos") == 0,
          "j1 values (default-style label2id next to real names is ignored)");
    bft_config_release(&c);
    CHECK(bft_config_parse(j2, strlen(j2), &c, &err) == 0 && c.num_labels == 4 && c.id2label == NULL,
          "num_labels without id2label: %s", err.msg);
    bft_config_release(&c);
    CHECK(bft_config_parse(j3, strlen(j3), &c, &err) == 0 && c.hidden_size == 32 && c.layer_norm_eps == 1e-5f,
          "integral double, trailing whitespace: %s", err.msg);
    bft_config_release(&c);
}

/* Long label lists stay cheap (duplicate detection is n log n, not n^2). */
static void test_config_many_labels(void)
{
    const int n = 200000;
    size_t cap = (size_t)n * 48 + 256, at = 0;
    char *j = malloc(cap);
    bft_config c;
    bft_error err;
    double t0, t1;
    struct timespec ts;
    at += (size_t)snprintf(j, cap, "{" BASE ",\"id2label\":{");
    for (int i = 0; i < n; i++)
        at += (size_t)snprintf(j + at, cap - at, "%s\"%d\":\"label number %d\"", i ? "," : "", i, i);
    snprintf(j + at, cap - at, "}}");
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = ts.tv_sec + 1e-9 * ts.tv_nsec;
    CHECK(bft_config_parse(j, strlen(j), &c, &err) == 0 && c.num_labels == n, "200k labels: %s", err.msg);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t1 = ts.tv_sec + 1e-9 * ts.tv_nsec;
    CHECK(t1 - t0 < 5.0, "200k labels took %.1f s", t1 - t0);
    if (c.num_labels == n)
        CHECK(strcmp(c.id2label[n - 1], "label number 199999") == 0, "last label");
    bft_config_release(&c);
    /* the same name twice, far apart */
    at = (size_t)snprintf(j, cap, "{" BASE ",\"id2label\":{");
    for (int i = 0; i < n; i++)
        at += (size_t)snprintf(j + at, cap - at, "%s\"%d\":\"x%d\"", i ? "," : "", i, i == n - 1 ? 7 : i);
    snprintf(j + at, cap - at, "}}");
    CHECK(bft_config_parse(j, strlen(j), &c, &err) == -1 && err.code == BFT_EMISMATCH &&
              strstr(err.msg, "\"x7\" to both 7 and 199999"),
          "far duplicate: %s", err.msg);
    free(j);
}

static void test_tokenizer_config(void)
{
    bft_config c = bft_config_default();
    bft_error err;
    const char *huge = "{\"do_lower_case\": false, \"model_max_length\": 1000000000000000019884624838656,"
                       " \"strip_accents\": null, \"tokenize_chinese_chars\": false, \"tokenizer_class\": \"BertTokenizer\"}";
    const char *s1 = "{\"strip_accents\": true, \"model_max_length\": 128}";
    CHECK(c.tok.do_lower_case == 1 && c.tok.strip_accents == -1 && c.tok.tokenize_chinese_chars == 1 &&
              c.tok.model_max_length == 512,
          "tokenizer defaults");
    CHECK(bft_tokenizer_config_parse(huge, strlen(huge), &c, &err) == 0, "huge: %s", err.msg);
    CHECK(c.tok.do_lower_case == 0 && c.tok.strip_accents == -1 && c.tok.tokenize_chinese_chars == 0 &&
              c.tok.model_max_length == 0,
          "huge model_max_length → 0 (no limit), got %d", c.tok.model_max_length);
    CHECK(bft_tokenizer_config_parse(s1, strlen(s1), &c, &err) == 0 && c.tok.strip_accents == 1 &&
              c.tok.model_max_length == 128 && c.tok.do_lower_case == 0,
          "explicit strip_accents, fields not given are kept");
    {
        static const bad_case bad[] = {
            {"{\"do_lower_case\": \"yes\"}", BFT_EFORMAT, "do_lower_case must be true or false"},
            {"{\"do_lower_case\": null}", BFT_EFORMAT, "do_lower_case"},
            {"{\"strip_accents\": 1}", BFT_EFORMAT, "strip_accents"},
            {"{\"model_max_length\": -5}", BFT_EINVAL, "model_max_length"},
            {"{\"model_max_length\": \"512\"}", BFT_EFORMAT, "model_max_length"},
            {"{\"model_max_length\": 5", BFT_EFORMAT, "tokenizer_config.json: invalid JSON"},
            {"\"x\"", BFT_EFORMAT, "top level must be an object"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            bft_tokenizer_opts before = c.tok;
            int rc = bft_tokenizer_config_parse(bad[i].json, strlen(bad[i].json), &c, &err);
            CHECK(rc == -1 && err.code == bad[i].code, "tok case %zu: %s %s", i, bft_status_name(err.code), err.msg);
            CHECK(strstr(err.msg, bad[i].needle) != NULL, "tok case %zu: \"%s\" lacks \"%s\"", i, err.msg,
                  bad[i].needle);
            CHECK(memcmp(&before, &c.tok, sizeof before) == 0, "tok case %zu: cfg unchanged", i);
        }
    }
}

static void test_config_json_round_trip(void)
{
    bft_config c = bft_config_default(), d;
    bft_error err;
    const char *names[3] = {"bear \"quoted\"", "bull\\back", "ünïcode"};
    char *j;
    c.vocab_size = 1234;
    c.hidden_size = 48;
    c.num_attention_heads = 6;
    c.layer_norm_eps = 1e-7f;
    c.hidden_dropout_prob = 0.123456789f;
    c.attention_probs_dropout_prob = 0.0f;
    c.classifier_dropout = 0.25f;
    c.initializer_range = 0.0173f;
    c.pad_token_id = 3;
    c.num_labels = 3;
    c.id2label = (char **)names;
    c.tok.do_lower_case = 0;
    c.tok.strip_accents = 1;
    c.tok.model_max_length = 0;
    j = bft_config_to_json(&c, 1, 0);
    CHECK(j && strstr(j, "BertForSequenceClassification") && strstr(j, "\"model_type\": \"bert\"") &&
              strstr(j, "\"label2id\"") && strstr(j, "\"id2label\""),
          "config json: %s", j ? j : "(null)");
    CHECK(bft_config_parse(j, strlen(j), &d, &err) == 0, "reparse: %s", err.msg);
    d.tok = c.tok;
    CHECK(same_cfg(&c, &d), "config round trip exact (floats bit-equal, labels)");
    CHECK(d.problem_type == BFT_PROBLEM_SINGLE_LABEL && strstr(j, "\"single_label_classification\""),
          "single-label problem type written and read");
    bft_config_release(&d);
    free(j);

    /* multi-label: problem_type written and read back (1 label allowed there) */
    c.problem_type = BFT_PROBLEM_MULTI_LABEL;
    j = bft_config_to_json(&c, 1, 0);
    CHECK(j && strstr(j, "\"problem_type\": \"multi_label_classification\""), "multi-label json: %s",
          j ? j : "(null)");
    CHECK(bft_config_parse(j, strlen(j), &d, &err) == 0, "reparse multi-label: %s", err.msg);
    CHECK(d.problem_type == BFT_PROBLEM_MULTI_LABEL && d.num_labels == 3, "multi-label round trip");
    bft_config_release(&d);
    free(j);
    c.num_labels = 1;
    j = bft_config_to_json(&c, 1, 0);
    CHECK(j && bft_config_parse(j, strlen(j), &d, &err) == 0 && d.num_labels == 1,
          "one label is fine for multi-label: %s", err.msg);
    bft_config_release(&d);
    free(j);
    c.num_labels = 3;
    c.problem_type = BFT_PROBLEM_SINGLE_LABEL;

    /* tokenizer_config.json round trip, including "no limit" */
    j = bft_tokenizer_config_to_json(&c);
    d = bft_config_default();
    CHECK(j && bft_tokenizer_config_parse(j, strlen(j), &d, &err) == 0, "tokcfg reparse: %s", err.msg);
    CHECK(memcmp(&d.tok, &c.tok, sizeof d.tok) == 0, "tokenizer config round trip");
    CHECK(j && strstr(j, "\"tokenizer_class\": \"BertTokenizer\""), "tokenizer_class");
    free(j);

    c.classifier_dropout = -1;
    c.id2label = NULL;
    j = bft_config_to_json(&c, 0, 1);
    CHECK(j && strstr(j, "BertForMaskedLM") && !strstr(j, "id2label") && strstr(j, "\"classifier_dropout\": null"),
          "MLM config json: %s", j ? j : "");
    CHECK(bft_config_parse(j, strlen(j), &d, &err) == 0 && d.num_labels == 0 && d.classifier_dropout < 0,
          "reparse MLM config");
    bft_config_release(&d);
    free(j);
    j = bft_config_to_json(&c, 0, 0);
    CHECK(j && strstr(j, "\"BertModel\""), "encoder-only architectures");
    free(j);
}

/* ---- safetensors --------------------------------------------------------- */

static void test_f16_bf16_conversion(void)
{
    /* every half value converts exactly (check by converting back) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bft_f16_to_f32((uint16_t)h);
        if (((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff))
            bad += !isnan(f);
        else
            bad += f32_to_f16(f) != h;
    }
    CHECK(bad == 0, "%d half values do not round-trip", bad);
    CHECK(bft_f16_to_f32(0x3c00) == 1.0f && bft_f16_to_f32(0xc000) == -2.0f && bft_f16_to_f32(0x0001) == 5.9604644775390625e-8f &&
              bft_f16_to_f32(0x7bff) == 65504.0f && isinf(bft_f16_to_f32(0x7c00)),
          "known half values");
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bft_bf16_to_f32((uint16_t)h);
        uint32_t b;
        memcpy(&b, &f, 4);
        bad += b != h << 16;
    }
    CHECK(bad == 0, "bf16 bits");
}

static void test_safetensors_writer_structure(void)
{
    /* Python-free check of what HF's safetensors loader expects. */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1, 0.5f, 7}, z[1] = {0};
    bft_st_out outs[3] = {
        {"zeta.weight", 2, {2, 3}, a},
        {"alpha \"q\"", 1, {3}, b},
        {"mid.bias", 1, {0}, z},
    };
    bft_error err;
    size_t len, hlen = 0;
    unsigned char *buf = bft_st_write(outs, 3, &len, &err);
    bft_st_file f;
    CHECK(buf != NULL, "write: %s", err.msg);
    if (!buf)
        return;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | buf[i];
    CHECK((8 + hlen) % 8 == 0, "data section 8-byte aligned (header %zu)", hlen);
    CHECK(len == 8 + hlen + 9 * 4, "total length %zu", len);
    CHECK(memcmp(buf + 8, "{\"__metadata__\":{\"format\":\"pt\"}", 31) == 0, "metadata first: %.60s", buf + 8);
    {
        char *h = strndup((char *)buf + 8, hlen);
        char *pa = strstr(h, "\"alpha \\\"q\\\"\""), *pm = strstr(h, "\"mid.bias\""), *pz = strstr(h, "\"zeta.weight\"");
        CHECK(pa && pm && pz && pa < pm && pm < pz, "names sorted and escaped: %s", h);
        CHECK(strstr(h, "\"zeta.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[12,36]}") != NULL,
              "entry format: %s", h);
        for (size_t i = strlen(h); i > 0 && h[i - 1] == ' '; i--)
            ;
        free(h);
    }
    CHECK(bft_st_parse(buf, len, &f, &err) == 0, "reparse: %s", err.msg);
    if (f.n == 3) {
        const bft_st_tensor *t = bft_st_find(&f, "zeta.weight");
        float back[6];
        CHECK(t && t->dtype == BFT_ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "zeta meta");
        if (t) {
            bft_st_to_f32(t, back, &err);
            CHECK(memcmp(back, a, sizeof a) == 0, "zeta data");
        }
        t = bft_st_find(&f, "mid.bias");
        CHECK(t && t->numel == 0 && t->nbytes == 0, "empty tensor");
    }
    bft_st_release(&f);
    free(buf);
    /* duplicate names are refused */
    outs[1].name = "zeta.weight";
    CHECK(bft_st_write(outs, 3, &len, &err) == NULL && err.code == BFT_EINVAL && strstr(err.msg, "zeta.weight"),
          "duplicate name: %s", err.msg);
}

typedef struct st_case {
    const char *header;
    size_t data_len;
    const char *needle;
} st_case;

static void test_safetensors_corrupt(void)
{
    static const st_case cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 8, "outside the data section"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,4]}}", 8, "outside the data section"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
         "\"data_offsets\":[4,8]}}",
         8, "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "unused bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "data section has 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "need 12 bytes"},
        {"{\"a\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype \"F17\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "no shape array"},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "no dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8, "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,8]}}", 8,
         "too large"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "dimensions"},
        {"{\"a\":[1,2]}", 0, "not an object"},
        {"{\"__metadata__\":[1]}", 0, "__metadata__"},
        {"{\"__metadata__\":{\"format\":1}}", 0, "__metadata__"},
        {"[]", 0, "not a JSON object"},
        {"{\"a\":", 0, "not valid JSON"},
        {"{} x", 0, "after the header"},
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "empty tensor name"},
    };
    unsigned char zeros[64] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        unsigned char *b = make_st(cases[i].header, zeros, cases[i].data_len, &len);
        bft_st_file f;
        bft_error err;
        int rc = bft_st_parse(b, len, &f, &err);
        CHECK(rc == -1 && err.code == BFT_EFORMAT, "st case %zu: rc %d %s %s", i, rc, bft_status_name(err.code),
              err.msg);
        CHECK(strstr(err.msg, cases[i].needle) != NULL, "st case %zu: \"%s\" lacks \"%s\"", i, err.msg,
              cases[i].needle);
        if (rc == 0)
            bft_st_release(&f);
        free(b);
    }
    /* header length field */
    {
        unsigned char b[16] = {0};
        bft_st_file f;
        bft_error err;
        CHECK(bft_st_parse(b, 7, &f, &err) == -1 && err.code == BFT_EFORMAT && strstr(err.msg, "too short"),
              "7 bytes: %s", err.msg);
        b[0] = 9; /* 9 > 16 - 8 */
        CHECK(bft_st_parse(b, 16, &f, &err) == -1 && strstr(err.msg, "exceeds"), "length beyond buffer: %s", err.msg);
        memset(b, 0xff, 8);
        CHECK(bft_st_parse(b, 16, &f, &err) == -1 && strstr(err.msg, "out of range"), "huge length: %s", err.msg);
        b[0] = 0; b[1] = 0; b[2] = 0; b[3] = 0x10; b[4] = 0; b[5] = 0; b[6] = 0; b[7] = 0; /* 256 MB */
        CHECK(bft_st_parse(b, 16, &f, &err) == -1 && strstr(err.msg, "out of range"), "header > 100 MB: %s", err.msg);
    }
    /* valid edge cases: empty header object, other dtypes parse structurally */
    {
        size_t len;
        unsigned char *b = make_st("{}      ", NULL, 0, &len);
        bft_st_file f;
        bft_error err;
        CHECK(bft_st_parse(b, len, &f, &err) == 0 && f.n == 0, "empty file: %s", err.msg);
        bft_st_release(&f);
        free(b);
        b = make_st("{\"i\":{\"dtype\":\"I64\",\"shape\":[1,2],\"data_offsets\":[0,16]}}", zeros, 16, &len);
        CHECK(bft_st_parse(b, len, &f, &err) == 0 && f.n == 1 && f.t[0].dtype == BFT_ST_I64, "I64 parses");
        if (f.n == 1) {
            float out[2];
            CHECK(bft_st_to_f32(&f.t[0], out, &err) == -1 && err.code == BFT_EUNSUPPORTED &&
                      strstr(err.msg, "\"i\" has dtype I64"),
                  "I64 conversion refused: %s", err.msg);
        }
        bft_st_release(&f);
        free(b);
    }
}

/* ---- loading the tiny checkpoints --------------------------------------- */

static void test_load_tiny(void)
{
    bft_error err;
    bft_model *m = bft_model_load_dir(CKPT "tiny", &err);
    files f = load_files("tiny");
    const int C = 32, L = 2, I = 64;
    CHECK(m != NULL, "load tiny: %s", err.msg);
    if (!m || !f.st) {
        free_files(&f);
        bft_model_free(m);
        return;
    }
    CHECK(m->parts.pooler && m->parts.classifier && !m->parts.mlm, "parts");
    CHECK(m->cfg.num_labels == 3 && strcmp(m->cfg.id2label[1], "neutral") == 0, "labels");
    CHECK(m->tok && bft_tokenizer_vocab_size(m->tok) == 140, "tokenizer");
    CHECK(m->num_params == bft_params_count(&m->cfg, m->parts), "num_params");
    CHECK(m->p.clsw && m->p.poolw && !m->p.mlm_w, "pointers");
    /* every named tensor lands at its place, Q/K/V stacked */
    {
        static const char *qkv[3] = {"query", "key", "value"};
        char name[128];
        size_t n;
        for (int l = 0; l < L; l++) {
            for (int j = 0; j < 3; j++) {
                float *w, *b;
                snprintf(name, sizeof name, "bert.encoder.layer.%d.attention.self.%s.weight", l, qkv[j]);
                w = tensor_f32(f.st, f.st_len, name, &n);
                CHECK(w && n == (size_t)(C * C) &&
                          memcmp(w, m->p.qkvw + ((size_t)l * 3 + j) * C * C, n * 4) == 0,
                      "%s", name);
                free(w);
                snprintf(name, sizeof name, "bert.encoder.layer.%d.attention.self.%s.bias", l, qkv[j]);
                b = tensor_f32(f.st, f.st_len, name, &n);
                CHECK(b && memcmp(b, m->p.qkvb + ((size_t)l * 3 + j) * C, (size_t)C * 4) == 0, "%s", name);
                free(b);
            }
            snprintf(name, sizeof name, "bert.encoder.layer.%d.output.dense.weight", l);
            {
                float *w = tensor_f32(f.st, f.st_len, name, &n);
                CHECK(w && n == (size_t)(C * I) && memcmp(w, m->p.fcprojw + (size_t)l * C * I, n * 4) == 0, "%s",
                      name);
                free(w);
            }
            snprintf(name, sizeof name, "bert.encoder.layer.%d.attention.output.LayerNorm.weight", l);
            {
                float *w = tensor_f32(f.st, f.st_len, name, &n);
                CHECK(w && memcmp(w, m->p.ln1w + (size_t)l * C, (size_t)C * 4) == 0, "%s", name);
                free(w);
            }
        }
        {
            float *w = tensor_f32(f.st, f.st_len, "classifier.weight", &n);
            CHECK(w && n == 3 * (size_t)C && memcmp(w, m->p.clsw, n * 4) == 0, "classifier.weight");
            free(w);
            w = tensor_f32(f.st, f.st_len, "bert.embeddings.word_embeddings.weight", &n);
            CHECK(w && n == 140 * (size_t)C && memcmp(w, m->p.wte, n * 4) == 0, "word embeddings");
            free(w);
        }
    }
    /* load_mem gives the same model; the caller's buffer is untouched */
    {
        unsigned char *copy = malloc(f.st_len);
        bft_model *m2;
        memcpy(copy, f.st, f.st_len);
        m2 = load_with_st(&f, f.st, f.st_len, &err);
        CHECK(m2 && m2->num_params == m->num_params &&
                  memcmp(m2->params_mem, m->params_mem, m->num_params * 4) == 0,
              "load_mem == load_dir: %s", err.msg);
        CHECK(memcmp(copy, f.st, f.st_len) == 0, "buffer unchanged");
        bft_model_free(m2);
        free(copy);
    }
    /* an unaligned buffer works (large objects give arbitrary alignment) */
    {
        char *un = malloc(f.st_len + 3);
        bft_model *m3;
        memcpy(un + 3, f.st, f.st_len);
        m3 = load_with_st(&f, un + 3, f.st_len, &err);
        CHECK(m3 && memcmp(m3->params_mem, m->params_mem, m->num_params * 4) == 0, "unaligned: %s", err.msg);
        bft_model_free(m3);
        free(un);
    }
    /* tokenizer_config absent → HF defaults */
    {
        bft_model *m4 = bft_model_load_mem(f.config, f.config_len, f.vocab, f.vocab_len, NULL, 0, f.st, f.st_len, &err);
        CHECK(m4 && m4->cfg.tok.do_lower_case == 1 && m4->cfg.tok.model_max_length == 512, "no tokenizer_config");
        bft_model_free(m4);
    }
    free_files(&f);
    bft_model_free(m);
}

static void test_load_half_precision(void)
{
    bft_error err;
    bft_model *ref = bft_model_load_dir(CKPT "tiny", &err);
    bft_model *h = bft_model_load_dir(CKPT "tiny_f16", &err);
    bft_model *b = bft_model_load_dir(CKPT "tiny_bf16", &err);
    CHECK(ref && h && b, "load: %s", err.msg);
    if (ref && h && b) {
        size_t bad_h = 0, bad_b = 0, diff_h = 0, diff_b = 0;
        double maxrel_h = 0, maxrel_b = 0;
        CHECK(h->num_params == ref->num_params && b->num_params == ref->num_params, "same layout");
        for (size_t i = 0; i < ref->num_params; i++) {
            float r = ref->params_mem[i];
            /* exactly torch's round-to-nearest-even of the F32 original */
            bad_h += bft_f16_to_f32(f32_to_f16(r)) != h->params_mem[i];
            bad_b += bft_bf16_to_f32(f32_to_bf16(r)) != b->params_mem[i];
            diff_h += h->params_mem[i] != r;
            diff_b += b->params_mem[i] != r;
            if (fabsf(r) > 1e-4f) {
                double eh = fabs((double)h->params_mem[i] - r) / fabs(r), eb = fabs((double)b->params_mem[i] - r) / fabs(r);
                maxrel_h = eh > maxrel_h ? eh : maxrel_h;
                maxrel_b = eb > maxrel_b ? eb : maxrel_b;
            }
        }
        CHECK(bad_h == 0, "%zu F16 values differ from RNE(F32)", bad_h);
        CHECK(bad_b == 0, "%zu BF16 values differ from RNE(F32)", bad_b);
        CHECK(diff_h > ref->num_params / 2 && diff_b > ref->num_params / 2, "half values really are rounded");
        CHECK(maxrel_h <= 1.0 / 2048 && maxrel_b <= 1.0 / 256, "relative error %g / %g", maxrel_h, maxrel_b);
    }
    bft_model_free(ref);
    bft_model_free(h);
    bft_model_free(b);
}

static void test_load_variants(void)
{
    bft_error err;
    bft_model *tiny = bft_model_load_dir(CKPT "tiny", &err);
    bft_model *np = bft_model_load_dir(CKPT "tiny_noprefix", &err);
    bft_model *leg, *mlm;
    CHECK(tiny && np, "load: %s", err.msg);
    if (tiny && np) {
        /* same encoder weights, no prefix, no classifier */
        CHECK(np->parts.pooler && !np->parts.classifier && !np->parts.mlm && np->cfg.num_labels == 0, "noprefix parts");
        CHECK(np->num_params == tiny->num_params - 3 * 32 - 3, "noprefix size");
        CHECK(memcmp(np->params_mem, tiny->params_mem, np->num_params * 4) == 0, "noprefix weights == tiny encoder");
    }
    leg = bft_model_load_dir(CKPT "tiny_legacy", &err);
    CHECK(leg != NULL, "legacy: %s", err.msg);
    if (leg) {
        files f = load_files("tiny_legacy");
        size_t n;
        float *g = tensor_f32(f.st, f.st_len, "bert.embeddings.LayerNorm.gamma", &n);
        float *be = tensor_f32(f.st, f.st_len, "bert.encoder.layer.1.output.LayerNorm.beta", &n);
        float *mg = tensor_f32(f.st, f.st_len, "cls.predictions.transform.LayerNorm.gamma", &n);
        float *pb = tensor_f32(f.st, f.st_len, "cls.predictions.bias", &n);
        CHECK(leg->parts.pooler && leg->parts.mlm && !leg->parts.classifier, "legacy parts");
        CHECK(g && memcmp(g, leg->p.emb_lnw, 32 * 4) == 0, "gamma → LayerNorm.weight");
        CHECK(be && memcmp(be, leg->p.ln2b + 32, 32 * 4) == 0, "beta → LayerNorm.bias");
        CHECK(mg && memcmp(mg, leg->p.mlm_lnw, 32 * 4) == 0, "MLM transform gamma");
        CHECK(pb && memcmp(pb, leg->p.mlm_bias, 140 * 4) == 0, "cls.predictions.bias");
        CHECK(leg->cfg.tok.do_lower_case == 0, "cased tokenizer config");
        free(g);
        free(be);
        free(mg);
        free(pb);
        free_files(&f);
    }
    mlm = bft_model_load_dir(CKPT "tiny_mlm", &err);
    CHECK(mlm != NULL, "mlm: %s", err.msg);
    if (mlm) {
        CHECK(!mlm->parts.pooler && mlm->parts.mlm && !mlm->parts.classifier && !mlm->p.poolw, "mlm parts");
        CHECK(mlm->cfg.tok.model_max_length == 0 && mlm->cfg.tok.strip_accents == -1, "huge model_max_length");
    }
    bft_model_free(tiny);
    bft_model_free(np);
    bft_model_free(leg);
    bft_model_free(mlm);
}

/* Compare two models bit for bit. */
static int same_model(const bft_model *a, const bft_model *b)
{
    return a->num_params == b->num_params && memcmp(a->params_mem, b->params_mem, a->num_params * 4) == 0 &&
           a->parts.pooler == b->parts.pooler && a->parts.classifier == b->parts.classifier &&
           a->parts.mlm == b->parts.mlm && same_cfg(&a->cfg, &b->cfg) && a->vocab_len == b->vocab_len &&
           memcmp(a->vocab, b->vocab, a->vocab_len) == 0;
}

static void test_round_trip(void)
{
    char tmpl[] = "/tmp/bft-ckpt-XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL, "mkdtemp");
    if (!dir)
        return;
    for (int k = 0; k < NALL; k++) {
        bft_error err;
        char out[PATH_MAX], out2[PATH_MAX];
        bft_model *a = bft_model_load_dir(strcat(strcpy(out, CKPT), ALL[k]), &err), *b = NULL, *c = NULL;
        CHECK(a != NULL, "%s: %s", ALL[k], err.msg);
        if (!a)
            continue;
        snprintf(out, sizeof out, "%s/%s/sub", dir, ALL[k]);
        CHECK(bft_model_save_dir(a, out, &err) == 0, "%s save: %s", ALL[k], err.msg);
        b = bft_model_load_dir(out, &err);
        CHECK(b && same_model(a, b), "%s: read → write → read differs (%s)", ALL[k], b ? "values" : err.msg);
        if (b) {
            size_t la, lb;
            void *sa = bft_model_to_safetensors(a, &la, &err), *sb = bft_model_to_safetensors(b, &lb, &err);
            char path[PATH_MAX];
            size_t lf;
            char *file;
            CHECK(sa && sb && la == lb && memcmp(sa, sb, la) == 0, "%s: safetensors bytes identical", ALL[k]);
            snprintf(path, sizeof path, "%s/model.safetensors", out);
            file = test_read_file(path, &lf);
            CHECK(file && lf == la && memcmp(file, sa, la) == 0, "%s: file == to_safetensors", ALL[k]);
            /* memory round trip with the generated config */
            {
                char *cj = bft_config_to_json(&a->cfg, a->parts.classifier, a->parts.mlm);
                char *tj = bft_tokenizer_config_to_json(&a->cfg);
                c = bft_model_load_mem(cj, strlen(cj), a->vocab, a->vocab_len, tj, strlen(tj), sa, la, &err);
                CHECK(c && same_model(a, c), "%s: memory round trip (%s)", ALL[k], c ? "values" : err.msg);
                free(cj);
                free(tj);
            }
            /* second save gives identical bytes */
            snprintf(out2, sizeof out2, "%s/%s/again", dir, ALL[k]);
            if (bft_model_save_dir(b, out2, &err) == 0) {
                const char *fs[4] = {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"};
                for (int i = 0; i < 4; i++) {
                    char p1[PATH_MAX + 64], p2[PATH_MAX + 64];
                    size_t l1 = 0, l2 = 0;
                    char *x, *y;
                    snprintf(p1, sizeof p1, "%s/%s", out, fs[i]);
                    snprintf(p2, sizeof p2, "%s/%s", out2, fs[i]);
                    x = test_read_file(p1, &l1);
                    y = test_read_file(p2, &l2);
                    CHECK(x && y && l1 == l2 && memcmp(x, y, l1) == 0, "%s: %s stable", ALL[k], fs[i]);
                    free(x);
                    free(y);
                }
                test_rm_dir(out2);
            }
            free(file);
            free(sa);
            free(sb);
        }
        bft_model_free(a);
        bft_model_free(b);
        bft_model_free(c);
        test_rm_dir(out);
        snprintf(out, sizeof out, "%s/%s", dir, ALL[k]);
        rmdir(out);
    }
    rmdir(dir);
}

static void test_written_names(void)
{
    /* HF naming in the written file: "bert." on encoder tensors only, no tied decoder */
    bft_error err;
    bft_model *m = bft_model_load_dir(CKPT "tiny_legacy", &err);
    size_t len;
    void *st;
    bft_st_file f;
    if (!m) {
        CHECK(0, "load: %s", err.msg);
        return;
    }
    st = bft_model_to_safetensors(m, &len, &err);
    CHECK(st && bft_st_parse(st, len, &f, &err) == 0, "parse written: %s", err.msg);
    if (st) {
        int enc = 0, prefixed = 0, bad = 0;
        const char *prev = "";
        for (int i = 0; i < f.n; i++) {
            const char *n = f.t[i].name;
            if (strncmp(n, "bert.", 5) == 0) {
                prefixed++;
                bad += !(strncmp(n + 5, "embeddings.", 11) == 0 || strncmp(n + 5, "encoder.", 8) == 0 ||
                         strncmp(n + 5, "pooler.", 7) == 0);
            } else
                bad += strncmp(n, "cls.predictions.", 16) != 0;
            enc++;
            bad += strstr(n, "gamma") != NULL || strstr(n, "beta") != NULL || strstr(n, "decoder") != NULL;
            bad += f.t[i].dtype != BFT_ST_F32;
            bad += strcmp(prev, n) >= 0; /* json-c keeps header order: sorted */
            prev = n;
        }
        CHECK(bad == 0 && prefixed == enc - 5 && f.n == 5 + 16 * 2 + 2 + 5, "%d bad names, %d tensors", bad, f.n);
        CHECK(bft_st_find(&f, "bert.embeddings.LayerNorm.weight") && bft_st_find(&f, "cls.predictions.bias") &&
                  bft_st_find(&f, "cls.predictions.transform.LayerNorm.bias"),
              "expected names");
        bft_st_release(&f);
    }
    free(st);
    bft_model_free(m);
}

/* ---- set_labels ------------------------------------------------------------ */

static double mean_of(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    return s / (double)n;
}

static double std_of(const float *x, size_t n)
{
    double m = mean_of(x, n), s = 0;
    for (size_t i = 0; i < n; i++)
        s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (double)n);
}

static void test_set_labels(void)
{
    bft_error err;
    bft_model *m = bft_model_load_dir(CKPT "tiny", &err), *ref = bft_model_load_dir(CKPT "tiny", &err);
    const char *names[3] = {"bear", "flat", "bull"};
    if (!m || !ref) {
        CHECK(0, "load: %s", err.msg);
        bft_model_free(m);
        bft_model_free(ref);
        return;
    }
    /* labels fit: keep the head (HF semantics), rename */
    CHECK(bft_model_set_labels(m, 3, names, 1, &err) == 0, "keep: %s", err.msg);
    CHECK(m->num_params == ref->num_params && memcmp(m->params_mem, ref->params_mem, m->num_params * 4) == 0,
          "weights kept");
    CHECK(strcmp(m->cfg.id2label[2], "bull") == 0, "renamed");
    CHECK(bft_model_set_labels(m, 3, NULL, 1, &err) == 0 && strcmp(m->cfg.id2label[0], "bear") == 0,
          "NULL names keep names");
    /* another count: new head, encoder and pooler kept */
    CHECK(bft_model_set_labels(m, 5, NULL, 7, &err) == 0, "replace: %s", err.msg);
    CHECK(m->cfg.num_labels == 5 && m->parts.classifier && m->p.clsw && !m->cfg.id2label, "5 labels");
    CHECK(m->num_params == ref->num_params + 2 * 33, "size");
    CHECK(memcmp(m->p.wte, ref->p.wte, (size_t)(ref->p.clsw - ref->p.wte) * 4) == 0,
          "everything before the classifier unchanged");
    {
        int zero = 1;
        for (int i = 0; i < 5; i++)
            zero &= m->p.clsb[i] == 0.0f;
        CHECK(zero, "fresh bias zero");
        CHECK(fabs(std_of(m->p.clsw, 5 * 32) - 0.02) < 0.006 && fabs(mean_of(m->p.clsw, 5 * 32)) < 0.005,
              "fresh head ~ N(0, 0.02): std %g", std_of(m->p.clsw, 5 * 32));
    }
    /* determinism in the seed */
    {
        bft_model *a = bft_model_load_dir(CKPT "tiny", &err);
        if (a) {
            bft_model_set_labels(a, 5, NULL, 7, &err);
            CHECK(memcmp(a->p.clsw, m->p.clsw, 5 * 32 * 4) == 0, "same seed, same head");
            bft_model_set_labels(a, 4, NULL, 7, &err);
            bft_model_set_labels(a, 5, NULL, 8, &err);
            CHECK(memcmp(a->p.clsw, m->p.clsw, 5 * 32 * 4) != 0, "other seed, other head");
        }
        bft_model_free(a);
    }
    CHECK(bft_model_set_labels(m, 1, NULL, 1, &err) == -1 && err.code == BFT_EINVAL, "1 label refused");
    {
        const char *dup[2] = {"a", "a"};
        CHECK(bft_model_set_labels(m, 2, dup, 1, &err) == -1 && err.code == BFT_EINVAL && strstr(err.msg, "\"a\""),
              "duplicate names refused: %s", err.msg);
        CHECK(m->cfg.num_labels == 5, "model unchanged after refusal");
    }
    bft_model_free(m);
    bft_model_free(ref);

    /* legacy (pooler + MLM, no classifier) gets a head; MLM head kept */
    {
        bft_model *l = bft_model_load_dir(CKPT "tiny_legacy", &err), *lr = bft_model_load_dir(CKPT "tiny_legacy", &err);
        const char *n2[2] = {"no", "yes"};
        if (l && lr) {
            CHECK(bft_model_set_labels(l, 2, n2, 3, &err) == 0, "legacy head: %s", err.msg);
            CHECK(l->parts.classifier && l->parts.mlm && l->parts.pooler && l->cfg.num_labels == 2, "parts");
            CHECK(memcmp(l->p.poolw, lr->p.poolw, 32 * 32 * 4) == 0 && memcmp(l->p.mlm_bias, lr->p.mlm_bias, 140 * 4) == 0 &&
                      memcmp(l->p.wte, lr->p.wte, 140 * 32 * 4) == 0,
                  "pooler, MLM head, embeddings kept");
        } else
            CHECK(0, "load legacy: %s", err.msg);
        bft_model_free(l);
        bft_model_free(lr);
    }
    /* MLM model without pooler: pooler created fresh */
    {
        bft_model *x = bft_model_load_dir(CKPT "tiny_mlm", &err);
        if (x) {
            CHECK(bft_model_set_labels(x, 3, NULL, 3, &err) == 0, "mlm head: %s", err.msg);
            CHECK(x->parts.pooler && x->p.poolw && x->p.poolb[0] == 0.0f &&
                      fabs(std_of(x->p.poolw, 32 * 32) - 0.02) < 0.003,
                  "fresh pooler");
        } else
            CHECK(0, "load mlm: %s", err.msg);
        bft_model_free(x);
    }
}

/* ---- fresh models ------------------------------------------------------------ */

static void test_new_model(void)
{
    bft_config c = bft_config_default();
    bft_parts parts = {1, 1, 1, 0};
    bft_error err;
    size_t vl;
    char *vocab;
    const char *names[3] = {"x", "y", "z"};
    bft_model *a, *b, *d;
    c.vocab_size = 1000;
    c.hidden_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.intermediate_size = 128;
    c.max_position_embeddings = 128;
    c.pad_token_id = 0;
    c.num_labels = 3;
    c.id2label = (char **)names;
    vocab = synth_vocab(1000, &vl);
    a = bft_model_new(&c, vocab, vl, parts, 42, &err);
    b = bft_model_new(&c, vocab, vl, parts, 42, &err);
    d = bft_model_new(&c, vocab, vl, parts, 43, &err);
    CHECK(a && b && d, "new: %s", err.msg);
    if (a && b && d) {
        size_t n = 1000 * 64;
        int ok = 1;
        CHECK(memcmp(a->params_mem, b->params_mem, a->num_params * 4) == 0, "deterministic in the seed");
        CHECK(memcmp(a->params_mem, d->params_mem, a->num_params * 4) != 0, "seed matters");
        CHECK(a->cfg.id2label != c.id2label && strcmp(a->cfg.id2label[2], "z") == 0, "labels copied");
        /* wte ~ N(0, 0.02), padding row zero */
        for (int i = 0; i < 64; i++)
            ok &= a->p.wte[i] == 0.0f;
        CHECK(ok, "padding row of wte is zero");
        CHECK(fabs(mean_of(a->p.wte + 64, n - 64)) < 3 * 0.02 / sqrt((double)n) * 1.5,
              "wte mean %g", mean_of(a->p.wte + 64, n - 64));
        CHECK(fabs(std_of(a->p.wte + 64, n - 64) / 0.02 - 1) < 0.02, "wte std %g", std_of(a->p.wte + 64, n - 64));
        CHECK(fabs(std_of(a->p.qkvw, 2 * 3 * 64 * 64) / 0.02 - 1) < 0.02, "qkv std");
        CHECK(fabs(std_of(a->p.fcw, 2 * 128 * 64) / 0.02 - 1) < 0.03, "fc std");
        ok = 1;
        for (int i = 0; i < 2 * 64; i++)
            ok &= a->p.ln1w[i] == 1.0f && a->p.ln1b[i] == 0.0f && a->p.ln2w[i] == 1.0f && a->p.attprojb[i] == 0.0f;
        for (int i = 0; i < 64; i++)
            ok &= a->p.emb_lnw[i] == 1.0f && a->p.emb_lnb[i] == 0.0f && a->p.mlm_lnw[i] == 1.0f && a->p.poolb[i] == 0.0f;
        for (int i = 0; i < 1000; i++)
            ok &= a->p.mlm_bias[i] == 0.0f;
        for (int i = 0; i < 2 * 128; i++)
            ok &= a->p.fcb[i] == 0.0f;
        CHECK(ok, "LayerNorm 1/0, biases 0");
        /* all N(0, r): fraction beyond 2 sigma ≈ 4.55% */
        {
            size_t beyond = 0;
            for (size_t i = 64; i < n; i++)
                beyond += fabsf(a->p.wte[i]) > 0.04f;
            CHECK(fabs((double)beyond / (double)(n - 64) - 0.0455) < 0.005, "normal tails: %g",
                  (double)beyond / (double)(n - 64));
        }
    }
    bft_model_free(a);
    bft_model_free(b);
    bft_model_free(d);
    /* validation */
    c.num_attention_heads = 5;
    a = bft_model_new(&c, vocab, vl, parts, 1, &err);
    CHECK(!a && err.code == BFT_EINVAL && strstr(err.msg, "num_attention_heads"), "hidden %% heads: %s", err.msg);
    c.num_attention_heads = 4;
    c.vocab_size = 999;
    a = bft_model_new(&c, vocab, vl, parts, 1, &err);
    CHECK(!a && err.code == BFT_EMISMATCH && strstr(err.msg, "1000") && strstr(err.msg, "999"), "vocab size: %s",
          err.msg);
    c.vocab_size = 1000;
    c.num_labels = 0;
    a = bft_model_new(&c, vocab, vl, parts, 1, &err);
    CHECK(!a && err.code == BFT_EINVAL, "classifier without labels: %s", err.msg);
    free(vocab);
}

static void test_rng(void)
{
    bft_rng r, s;
    double sum = 0, sq = 0, usum = 0;
    int n = 200000, inrange = 1;
    bft_rng_seed(&r, 0);
    bft_rng_seed(&s, 0);
    CHECK(bft_rng_next(&r) == bft_rng_next(&s), "deterministic");
    CHECK(r.s[0] | r.s[1] | r.s[2] | r.s[3], "seed 0 gives a non-zero state");
    for (int i = 0; i < n; i++) {
        float u = bft_rng_uniform(&r), z = bft_rng_normal(&r);
        inrange &= u >= 0.0f && u < 1.0f && isfinite(z);
        usum += u;
        sum += z;
        sq += (double)z * z;
    }
    CHECK(inrange, "uniform in [0,1), normal finite");
    CHECK(fabs(usum / n - 0.5) < 0.005, "uniform mean %g", usum / n);
    CHECK(fabs(sum / n) < 0.01 && fabs(sq / n - 1) < 0.015, "normal mean %g var %g", sum / n, sq / n);
    {
        int hist[7] = {0}, ok = 1;
        for (int i = 0; i < 70000; i++)
            hist[bft_rng_below(&r, 7)]++;
        for (int i = 0; i < 7; i++)
            ok &= abs(hist[i] - 10000) < 500;
        CHECK(ok, "below(7) uniform");
    }
}

/* ---- corrupt checkpoints ------------------------------------------------------ */

static void expect_fail(const files *f, const unsigned char *st, size_t st_len, int code, const char *needle,
                        const char *what)
{
    bft_error err;
    bft_model *m;
    bft_clear_error(&err);
    m = load_with_st(f, st, st_len, &err);
    CHECK(m == NULL, "%s: loaded", what);
    CHECK(err.code == code, "%s: %s, want %s (%s)", what, bft_status_name(err.code), bft_status_name(code), err.msg);
    CHECK(strstr(err.msg, needle) != NULL, "%s: \"%s\" lacks \"%s\"", what, err.msg, needle);
    bft_model_free(m);
}

static void test_corrupt_checkpoints(void)
{
    files f = load_files("tiny");
    ent e[64];
    int n;
    size_t len;
    unsigned char *b;
    if (!f.st) {
        CHECK(0, "tiny files");
        return;
    }
    /* truncations: every length through the header and a sample beyond */
    {
        int crashes_or_loads = 0;
        for (size_t l = 0; l < f.st_len; l += (l < 4400 ? 1 : 997)) {
            bft_error err;
            bft_model *m = load_with_st(&f, f.st, l, &err);
            crashes_or_loads += m != NULL || err.code != BFT_EFORMAT;
            bft_model_free(m);
        }
        CHECK(crashes_or_loads == 0, "%d truncated files not refused with BFT_EFORMAT", crashes_or_loads);
        expect_fail(&f, (unsigned char *)f.st, f.st_len - 1, BFT_EFORMAT, "data section", "truncated by one byte");
    }
    /* header length too large */
    b = malloc(f.st_len);
    memcpy(b, f.st, f.st_len);
    b[4] = 1;
    expect_fail(&f, b, f.st_len, BFT_EFORMAT, "header length", "header length > file");
    free(b);

    n = ents_from_file(f.st, f.st_len, e, 64);
    CHECK(n == 41, "tiny has 41 tensors (%d)", n);
    if (n != 41)
        goto out;
    /* rebuilt unchanged: loads (the hand-made writer is right) */
    b = ents_build(e, n, &len);
    {
        bft_error err;
        bft_model *m = load_with_st(&f, b, len, &err);
        CHECK(m != NULL, "rebuilt tiny loads: %s", err.msg);
        bft_model_free(m);
    }
    free(b);
    /* missing tensor */
    {
        int i = find_ent(e, n, "bert.encoder.layer.1.output.dense.bias");
        ent save = e[i];
        e[i] = e[n - 1];
        b = ents_build(e, n - 1, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "missing tensor \"bert.encoder.layer.1.output.dense.bias\"", "missing");
        free(b);
        e[i] = save;
    }
    /* unexpected tensors */
    {
        static const char *extra[] = {"bert.encoder.layer.1.foo.weight", "qa_outputs.weight",
                                      "bert.encoder.layer.2.output.dense.bias", "bert.classifier.weight",
                                      "cls.predictions.transform.foo"};
        for (size_t k = 0; k < sizeof extra / sizeof extra[0]; k++) {
            char want[200];
            e[n] = e[find_ent(e, n, "classifier.bias")];
            snprintf(e[n].name, sizeof e[n].name, "%s", extra[k]);
            b = ents_build(e, n + 1, &len);
            snprintf(want, sizeof want, "tensor \"%s\"", extra[k]);
            expect_fail(&f, b, len, BFT_EMISMATCH, want, extra[k]);
            free(b);
        }
    }
    /* ignored tensors: next-sentence head, position_ids (I64) */
    {
        static int64_t ids[64];
        ent x[3];
        memset(x, 0, sizeof x);
        for (int i = 0; i < 64; i++)
            ids[i] = i;
        snprintf(x[0].name, sizeof x[0].name, "bert.embeddings.position_ids");
        snprintf(x[0].dtype, sizeof x[0].dtype, "I64");
        x[0].ndim = 2, x[0].shape[0] = 1, x[0].shape[1] = 64, x[0].data = (unsigned char *)ids, x[0].nbytes = 512;
        x[1] = e[find_ent(e, n, "classifier.weight")];
        snprintf(x[1].name, sizeof x[1].name, "cls.seq_relationship.weight");
        x[1].shape[0] = 3;
        e[n] = x[0];
        e[n + 1] = x[1];
        b = ents_build(e, n + 2, &len);
        {
            bft_error err;
            bft_model *m = load_with_st(&f, b, len, &err);
            CHECK(m != NULL, "ignored tensors: %s", err.msg);
            bft_model_free(m);
        }
        free(b);
        /* a tied decoder of the wrong shape */
        e[n] = e[find_ent(e, n, "classifier.weight")];
        snprintf(e[n].name, sizeof e[n].name, "cls.predictions.decoder.weight");
        b = ents_build(e, n + 1, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "cls.predictions.decoder.weight", "decoder shape");
        free(b);
    }
    /* the same parameter twice */
    {
        e[n] = e[find_ent(e, n, "bert.pooler.dense.bias")];
        snprintf(e[n].name, sizeof e[n].name, "pooler.dense.bias");
        b = ents_build(e, n + 1, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "same parameter", "prefix and no prefix");
        free(b);
        snprintf(e[n].name, sizeof e[n].name, "bert.embeddings.LayerNorm.beta");
        b = ents_build(e, n + 1, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "same parameter", "beta and bias");
        free(b);
    }
    /* wrong shape (data resized to match, so the file itself is valid) */
    {
        int i = find_ent(e, n, "bert.pooler.dense.weight");
        ent save = e[i];
        e[i].shape[1] = 31;
        e[i].nbytes = 32 * 31 * 4;
        b = ents_build(e, n, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "\"bert.pooler.dense.weight\" has shape [32, 31], expected [32, 32]",
                    "wrong shape");
        free(b);
        e[i].ndim = 1;
        e[i].shape[0] = 32 * 32;
        e[i].nbytes = 32 * 32 * 4;
        b = ents_build(e, n, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "has shape [1024], expected [32, 32]", "wrong rank");
        free(b);
        e[i] = save;
        /* classifier rows vs config labels */
        i = find_ent(e, n, "classifier.weight");
        save = e[i];
        e[i].shape[0] = 2;
        e[i].nbytes = 2 * 32 * 4;
        b = ents_build(e, n, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "classifier.weight has 2 rows but config.json has 3 labels",
                    "classifier rows");
        free(b);
        e[i] = save;
    }
    /* wrong dtypes */
    {
        int i = find_ent(e, n, "bert.embeddings.LayerNorm.bias");
        ent save = e[i];
        snprintf(e[i].dtype, sizeof e[i].dtype, "I32");
        b = ents_build(e, n, &len);
        expect_fail(&f, b, len, BFT_EUNSUPPORTED, "\"bert.embeddings.LayerNorm.bias\" has dtype I32", "I32 weights");
        free(b);
        snprintf(e[i].dtype, sizeof e[i].dtype, "F64");
        e[i].shape[0] = 16; /* 16 doubles = 128 bytes */
        b = ents_build(e, n, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "has shape [16], expected [32]", "F64 wrong shape");
        free(b);
        e[i].shape[0] = 32;
        e[i].nbytes = 256;
        e[i].data = calloc(1, 256);
        b = ents_build(e, n, &len);
        expect_fail(&f, b, len, BFT_EUNSUPPORTED, "dtype F64", "F64 weights");
        free(b);
        free(e[i].data);
        snprintf(e[i].dtype, sizeof e[i].dtype, "F99");
        e[i] = save;
        snprintf(e[i].dtype, sizeof e[i].dtype, "Q4");
        b = ents_build(e, n, &len);
        expect_fail(&f, b, len, BFT_EFORMAT, "unknown dtype \"Q4\"", "unknown dtype");
        free(b);
        e[i] = save;
    }
    /* vocab.txt size and config errors with valid weights */
    {
        bft_error err;
        bft_model *m;
        size_t vl = f.vocab_len;
        while (vl > 0 && f.vocab[vl - 1] == '\n')
            vl--;
        while (vl > 0 && f.vocab[vl - 1] != '\n')
            vl--; /* drop the last line */
        m = bft_model_load_mem(f.config, f.config_len, f.vocab, vl, f.tokcfg, f.tokcfg_len, f.st, f.st_len, &err);
        CHECK(!m && err.code == BFT_EMISMATCH && strstr(err.msg, "139") && strstr(err.msg, "140"), "vocab: %s",
              err.msg);
        bft_model_free(m);
        {
            const char *cfgs[] = {"{\"vocab_size\":140,\"hidden_size\":32,\"num_attention_heads\":5}",
                                  "{\"vocab_size\":140,\"hidden_size\":32,\"num_attention_heads\":4,\"num_hidden_layers\":3,"
                                  "\"intermediate_size\":64,\"max_position_embeddings\":64}",
                                  "{\"vocab_size\":140,\"hidden_size\":32,\"num_attention_heads\":4,\"num_hidden_layers\":2,"
                                  "\"intermediate_size\":64,\"max_position_embeddings\":128}",
                                  "not json"};
            const int codes[] = {BFT_EINVAL, BFT_EMISMATCH, BFT_EMISMATCH, BFT_EFORMAT};
            const char *needles[] = {"num_attention_heads 5", "missing tensor \"bert.encoder.layer.2.",
                                     "position_embeddings.weight\" has shape [64, 32], expected [128, 32]",
                                     "config.json: invalid JSON"};
            for (int k = 0; k < 4; k++) {
                m = bft_model_load_mem(cfgs[k], strlen(cfgs[k]), f.vocab, f.vocab_len, NULL, 0, f.st, f.st_len, &err);
                CHECK(!m && err.code == codes[k] && strstr(err.msg, needles[k]), "config %d: %s %s", k,
                      bft_status_name(err.code), err.msg);
                bft_model_free(m);
            }
        }
        m = bft_model_load_mem(f.config, f.config_len, f.vocab, f.vocab_len, "{\"do_lower_case\":1}", 19, f.st,
                               f.st_len, &err);
        CHECK(!m && err.code == BFT_EFORMAT && strstr(err.msg, "do_lower_case"), "bad tokenizer_config: %s", err.msg);
        bft_model_free(m);
    }
    /* far too many tensors: refused before any name matching */
    {
        char *h = malloc(70 * 64 + 16);
        size_t at = 0;
        at += (size_t)sprintf(h, "{");
        for (int i = 0; i < 70; i++)
            at += (size_t)sprintf(h + at, "%s\"t%d\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
                                  i ? "," : "", i);
        sprintf(h + at, "}");
        b = make_st(h, NULL, 0, &len);
        expect_fail(&f, b, len, BFT_EMISMATCH, "70 tensors, more than a BERT with 2 layers can have (64)",
                    "too many tensors");
        free(b);
        free(h);
    }
    /* random corruption of header bytes: refused or loaded, never a crash */
    {
        bft_rng r;
        int loaded = 0, refused = 0;
        unsigned char *c = malloc(f.st_len);
        bft_rng_seed(&r, 99);
        for (int it = 0; it < 300; it++) {
            bft_error err;
            bft_model *m;
            memcpy(c, f.st, f.st_len);
            for (int k = 0; k < 1 + it % 4; k++)
                c[8 + bft_rng_below(&r, 4300)] = (unsigned char)bft_rng_below(&r, 256);
            m = load_with_st(&f, c, f.st_len, &err);
            if (m)
                loaded++;
            else
                refused += err.code != BFT_OK && err.msg[0] != '\0';
            bft_model_free(m);
        }
        CHECK(loaded + refused == 300, "every corrupted file loaded or refused with a message (%d + %d)", loaded,
              refused);
        free(c);
    }
out:
    ents_free(e, n > 0 ? n : 0);
    free_files(&f);
}

static void test_load_dir_errors(void)
{
    bft_error err;
    char tmpl[] = "/tmp/bft-ckpt-XXXXXX", path[PATH_MAX];
    char *dir = mkdtemp(tmpl);
    bft_model *m = bft_model_load_dir("/nonexistent/bft", &err);
    FILE *fp;
    CHECK(!m && err.code == BFT_EIO && strstr(err.msg, "config.json"), "missing dir: %s", err.msg);
    if (!dir)
        return;
    snprintf(path, sizeof path, "%s/config.json", dir);
    fp = fopen(path, "w");
    fputs("{\"vocab_size\": 3, \"hidden_size\": 4, \"num_attention_heads\": 2}", fp);
    fclose(fp);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    fp = fopen(path, "w");
    fputs("[PAD]\n[UNK]\n[CLS]\n", fp);
    fclose(fp);
    snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
    fp = fopen(path, "w");
    fputs("x", fp);
    fclose(fp);
    m = bft_model_load_dir(dir, &err);
    CHECK(!m && err.code == BFT_EFORMAT && strstr(err.msg, "pytorch_model.bin: not a PyTorch checkpoint"),
          "a pytorch_model.bin that is not one: %s", err.msg);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    fp = fopen(path, "w");
    fputs("{}", fp);
    fclose(fp);
    m = bft_model_load_dir(dir, &err);
    CHECK(!m && err.code == BFT_EUNSUPPORTED && strstr(err.msg, "sharded"), "sharded: %s", err.msg);
    unlink(path);
    m = bft_model_load_dir(dir, &err);
    CHECK(!m && err.code == BFT_EIO && strstr(err.msg, "model.safetensors"), "no weights: %s", err.msg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fp = fopen(path, "w");
    fclose(fp);
    m = bft_model_load_dir(dir, &err);
    CHECK(!m && err.code == BFT_EFORMAT && strstr(err.msg, "empty"), "empty weights: %s", err.msg);
    test_rm_dir(dir);
    /* saving into a path under a regular file fails cleanly */
    {
        bft_model *t = bft_model_load_dir(CKPT "tiny", &err);
        if (t) {
            CHECK(bft_model_save_dir(t, CKPT "tiny/config.json/sub", &err) == -1 && err.code == BFT_EIO,
                  "save under a file: %s %s", bft_status_name(err.code), err.msg);
        }
        bft_model_free(t);
    }
}

/* Probabilities (n, K) of m for three sentences (bft_predict). */
static int predict3(const bft_model *m, float *probs, bft_error *err)
{
    static const char *texts[3] = {"the movie was great", "a dull and boring plot", "it is a movie"};
    int32_t ids[3 * 16];
    int64_t off[4] = {0};
    bft_dataset ds;
    for (int i = 0; i < 3; i++) {
        int n = bft_encode(m->tok, texts[i], strlen(texts[i]), 16, ids + off[i], err);
        if (n < 0)
            return -1;
        off[i + 1] = off[i] + n;
    }
    ds.n = 3;
    ds.tokens = ids;
    ds.offsets = off;
    ds.labels = NULL;
    return bft_predict(m, &ds, 3, probs, err) == BFT_OK ? 0 : -1;
}

/* External read-only parameters (a shared cache's mapping): a model pointing
 * into a PROT_READ copy of its block predicts bit-identically, is never
 * written (a write would fault), is not freed by bft_model_free, refuses
 * training, and gets a block of its own from set_labels; mismatched blocks
 * are refused. */
static void test_shared_params(void)
{
    bft_error err;
    files f = load_files("tiny");
    bft_model *ref = load_with_st(&f, f.st, f.st_len, &err);
    bft_model *sh = NULL, *w = NULL, *bad;
    float pref[9], p[9];
    size_t bytes;
    float *ro;

    CHECK(ref != NULL, "load tiny: %s", err.msg);
    if (!ref) {
        free_files(&f);
        return;
    }
    bytes = ref->num_params * sizeof(float);
    ro = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ro != MAP_FAILED, "mmap");
    if (ro == MAP_FAILED) {
        bft_model_free(ref);
        free_files(&f);
        return;
    }
    memcpy(ro, ref->params_mem, bytes);
    CHECK(mprotect(ro, bytes, PROT_READ) == 0, "mprotect");
    CHECK(predict3(ref, pref, &err) == 0, "predict (own block): %s", err.msg);

    /* share: the loaded model's own block replaced by the read-only copy */
    sh = load_with_st(&f, f.st, f.st_len, &err);
    CHECK(sh && bft_model_share_params(sh, ro, sh->num_params, &err) == 0, "share: %s", err.msg);
    if (sh) {
        CHECK(sh->params_external == 1 && sh->params_mem == ro && sh->p.wte == ro, "points into the block");
        CHECK(predict3(sh, p, &err) == 0 && memcmp(p, pref, sizeof p) == 0, "shared: identical probabilities");
        CHECK(bft_model_share_params(sh, ro, sh->num_params - 1, &err) == -1 && err.code == BFT_EMISMATCH,
              "a block of another size is refused");
    }

    /* wrap: config, vocabulary and tokenizer config, the block as it is */
    w = bft_model_wrap_params(f.config, f.config_len, f.vocab, f.vocab_len, f.tokcfg, f.tokcfg_len, ref->parts,
                              ref->cfg.num_labels, ro, ref->num_params, &err);
    CHECK(w != NULL, "wrap: %s", err.msg);
    if (w) {
        CHECK(w->params_external && w->num_params == ref->num_params && same_cfg(&w->cfg, &ref->cfg),
              "wrapped: same config and layout");
        CHECK(strcmp(bft_config_label(&w->cfg, 2, (char[16]){0}, 16), "positive") == 0, "labels kept");
        CHECK(predict3(w, p, &err) == 0 && memcmp(p, pref, sizeof p) == 0, "wrapped: identical probabilities");
        {
            bft_dataset ds = {0};
            bft_train_opts o = bft_train_default_opts();
            int32_t ids[3] = {101, 5, 102}, lab = 0;
            int64_t off[2] = {0, 3};
            ds.n = 1;
            ds.tokens = ids;
            ds.offsets = off;
            ds.labels = &lab;
            o.epochs = 1;
            CHECK(bft_train(w, &ds, &o, NULL, NULL, NULL, &err) == BFT_EINVAL && strstr(err.msg, "read-only"),
                  "training refuses read-only parameters: %s", err.msg);
        }
        CHECK(bft_model_set_labels(w, 5, NULL, 7, &err) == 0, "set_labels: %s", err.msg);
        CHECK(w->params_external == 0 && w->params_mem != ro && w->num_params == ref->num_params + 2 * 32 + 2,
              "a new head: a block of the model's own");
    }
    bad = bft_model_wrap_params(f.config, f.config_len, f.vocab, f.vocab_len, f.tokcfg, f.tokcfg_len, ref->parts,
                                ref->cfg.num_labels, ro, ref->num_params + 1, &err);
    CHECK(bad == NULL && err.code == BFT_EMISMATCH, "wrap: a block of another size is refused");
    bad = bft_model_wrap_params(f.config, f.config_len, f.vocab, f.vocab_len, f.tokcfg, f.tokcfg_len, ref->parts,
                                2, ro, ref->num_params, &err);
    CHECK(bad == NULL && err.code == BFT_EMISMATCH, "wrap: another label count than config.json is refused");
    bad = bft_model_wrap_params(f.config, f.config_len, f.vocab, f.vocab_len, f.tokcfg, f.tokcfg_len, ref->parts,
                                ref->cfg.num_labels, NULL, ref->num_params, &err);
    CHECK(bad == NULL && err.code == BFT_EINVAL, "wrap: no block");
    bft_model_free(sh);
    bft_model_free(w);
    /* still mapped and intact after both models are gone */
    CHECK(memcmp(ro, ref->params_mem, bytes) == 0, "the block outlives its models, unchanged");
    munmap(ro, bytes);
    bft_model_free(ref);
}

/* ---- tokenizer.json (checkpoints without vocab.txt) --------------------- */

static void write_text(const char *dir, const char *name, const char *text, size_t len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fwrite(text, 1, len, fp);
        fclose(fp);
    }
}

/* ids of text under m's tokenizer == want (n ids) */
static int encodes_as(const bft_model *m, const char *text, const int32_t *want, int n)
{
    int32_t ids[64];
    bft_error err;
    int got = bft_encode(m->tok, text, strlen(text), 64, ids, &err);
    if (got != n)
        return 0;
    for (int i = 0; i < n; i++)
        if (ids[i] != want[i])
            return 0;
    return 1;
}

/* A model directory holding only config.json, model.safetensors and the
 * tokenizer.json (+ tokenizer_config.json) that transformers 5's
 * save_pretrained writes (tests/hf/make_test_files.py): the vocabulary and the
 * BertNormalizer come from tokenizer.json; ids equal the Python tokenizers'. */
static void test_tokenizer_json(void)
{
    /* ids from tokenizers.Tokenizer.from_file(...).encode(text).ids */
    static const int32_t unc1[] = {2, 82, 97, 99, 5, 124, 32, 56, 61, 60, 7, 3};
    static const int32_t unc2[] = {2, 115, 113, 6, 1, 17, 107, 3};
    static const int32_t cas1[] = {2, 129, 1, 99, 5, 131, 1, 7, 3};
    static const int32_t cas2[] = {2, 132, 113, 6, 1, 17, 107, 3};
    const char *t1 = "The Cat sat. Hello Caf\xc3\xa9!", *t2 = "Bank shares, 42% up";
    char tmpl[] = "/tmp/bft-tokjson-XXXXXX";
    char *dir = mkdtemp(tmpl);
    bft_error err;
    size_t n;
    files f = load_files("tiny");
    char *tj = test_read_file("tests/data/hf/tokenizer/uncased/tokenizer.json", &n);
    size_t tj_len = n, tc_len = 0, cj_len = 0;
    char *tc = test_read_file("tests/data/hf/tokenizer/uncased/tokenizer_config.json", &tc_len);
    char *cj = test_read_file("tests/data/hf/tokenizer/cased/tokenizer.json", &cj_len);
    CHECK(dir && tj && tc && cj && f.config && f.st, "test files (run from the repository root)");
    if (!dir || !tj || !tc || !cj || !f.config || !f.st)
        goto out;
    write_text(dir, "config.json", f.config, f.config_len);
    write_text(dir, "model.safetensors", f.st, f.st_len);
    write_text(dir, "tokenizer.json", tj, tj_len);
    bft_model *m = bft_model_load_dir(dir, &err);
    CHECK(m != NULL, "load with tokenizer.json only: %s", err.msg);
    if (m) {
        CHECK(m->vocab_len == f.vocab_len && memcmp(m->vocab, f.vocab, f.vocab_len) == 0,
              "vocabulary from tokenizer.json == tiny's vocab.txt");
        CHECK(m->cfg.tok.do_lower_case == 1 && m->cfg.tok.strip_accents == -1 &&
                  m->cfg.tok.tokenize_chinese_chars == 1, "BertNormalizer settings");
        CHECK(encodes_as(m, t1, unc1, 12) && encodes_as(m, t2, unc2, 8), "uncased ids == tokenizers'");
        bft_model_free(m);
    }
    /* with the tokenizer_config.json save_pretrained writes beside it */
    write_text(dir, "tokenizer_config.json", tc, tc_len);
    m = bft_model_load_dir(dir, &err);
    CHECK(m && m->cfg.tok.do_lower_case == 1 && m->cfg.tok.model_max_length == 512,
          "with tokenizer_config.json: %s", m ? "" : err.msg);
    bft_model_free(m);
    /* cased: lowercase false in the normalizer, no tokenizer_config.json */
    {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        unlink(path);
    }
    write_text(dir, "tokenizer.json", cj, cj_len);
    m = bft_model_load_dir(dir, &err);
    CHECK(m != NULL, "cased tokenizer.json: %s", err.msg);
    if (m) {
        CHECK(m->cfg.tok.do_lower_case == 0, "lowercase false -> cased");
        CHECK(encodes_as(m, t1, cas1, 9) && encodes_as(m, t2, cas2, 8), "cased ids == tokenizers'");
        bft_model_free(m);
    }
    /* tokenizer_config.json overrides the normalizer (as BertTokenizerFast) */
    m = bft_model_load_mem(f.config, f.config_len, cj, cj_len, "{\"do_lower_case\": true}", 23, f.st,
                           f.st_len, &err);
    CHECK(m && m->cfg.tok.do_lower_case == 1 && encodes_as(m, t1, unc1, 12),
          "tokenizer.json as the vocab argument, do_lower_case from tokenizer_config: %s", m ? "" : err.msg);
    bft_model_free(m);
    /* vocab.txt wins when both exist */
    write_text(dir, "vocab.txt", f.vocab, f.vocab_len);
    m = bft_model_load_dir(dir, &err);
    CHECK(m && m->cfg.tok.do_lower_case == 1, "vocab.txt preferred (HF defaults: uncased): %s", m ? "" : err.msg);
    bft_model_free(m);

    /* malformed or unsupported tokenizer.json: clear errors */
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } bad[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", BFT_EUNSUPPORTED, "BPE"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\": 2}}}", BFT_EFORMAT, "id 2 outside"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\": 0}}}", BFT_EFORMAT, "both"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\\nb\": 1}}}", BFT_EFORMAT, "line break"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\": \"1\"}}}", BFT_EFORMAT, "integer"},
        {"{\"model\": {\"type\": \"WordPiece\", \"continuing_subword_prefix\": \"@@\", \"vocab\": {}}}",
         BFT_EUNSUPPORTED, "##"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\": 1}}, "
         "\"normalizer\": {\"type\": \"Sequence\"}}", BFT_EUNSUPPORTED, "Sequence"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\": 1}}, "
         "\"added_tokens\": [{\"id\": 3, \"content\": \"[X]\"}]}", BFT_EFORMAT, "no token has id 2"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\": 1}}, "
         "\"pre_tokenizer\": {\"type\": \"Whitespace\"}}", BFT_EUNSUPPORTED, "BertPreTokenizer"},
        {"{\"model\": 3}", BFT_EFORMAT, "model"},
        {"{\"model\": {\"type\": \"WordPiece\"", BFT_EFORMAT, "invalid JSON"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        bft_config cfg = bft_config_default();
        char *v = NULL;
        size_t vl = 0;
        int rc = bft_tokenizer_json_parse(bad[k].json, strlen(bad[k].json), &cfg, &v, &vl, &err);
        CHECK(rc == -1 && !v && err.code == bad[k].code && strstr(err.msg, bad[k].msg),
              "bad tokenizer.json %zu: rc %d %s %s", k, rc, bft_status_name(err.code), err.msg);
        free(v);
    }
    /* added tokens past model.vocab extend it; a JSON vocab of the wrong size is a mismatch */
    {
        const char *j = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"[UNK]\": 0, \"a\": 1}}, "
                        "\"added_tokens\": [{\"id\": 2, \"content\": \"[NEW]\"}]}";
        bft_config cfg = bft_config_default();
        char *v = NULL;
        size_t vl = 0;
        CHECK(bft_tokenizer_json_parse(j, strlen(j), &cfg, &v, &vl, &err) == 0 && v &&
                  strcmp(v, "[UNK]\na\n[NEW]\n") == 0, "added token appended: %s", v ? v : err.msg);
        free(v);
        m = bft_model_load_mem(f.config, f.config_len, j, strlen(j), NULL, 0, f.st, f.st_len, &err);
        CHECK(!m && err.code == BFT_EMISMATCH, "3-token tokenizer.json for V=140: %s", err.msg);
        bft_model_free(m);
    }
    {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/vocab.txt", dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        unlink(path);
        m = bft_model_load_dir(dir, &err);
        CHECK(!m && err.code == BFT_EIO && strstr(err.msg, "neither vocab.txt nor tokenizer.json"),
              "no vocabulary file: %s", err.msg);
    }
out:
    if (dir)
        test_rm_dir(dir);
    free(tj);
    free(tc);
    free(cj);
    free_files(&f);
}

int main(void)
{
    RUN(test_rng);
    RUN(test_config_defaults_and_parse);
    RUN(test_config_errors);
    RUN(test_config_accepts);
    RUN(test_config_many_labels);
    RUN(test_tokenizer_config);
    RUN(test_config_json_round_trip);
    RUN(test_f16_bf16_conversion);
    RUN(test_safetensors_writer_structure);
    RUN(test_safetensors_corrupt);
    RUN(test_load_tiny);
    RUN(test_load_half_precision);
    RUN(test_load_variants);
    RUN(test_round_trip);
    RUN(test_written_names);
    RUN(test_set_labels);
    RUN(test_new_model);
    RUN(test_corrupt_checkpoints);
    RUN(test_load_dir_errors);
    RUN(test_shared_params);
    RUN(test_tokenizer_json);
    return test_summary();
}
