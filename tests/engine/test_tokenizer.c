/*
 * test_tokenizer.c — the tokenizer against Hugging Face goldens and its edge
 * cases, plus WordPiece vocabulary learning.
 *
 * Goldens: tests/data/tok/goldens.jsonl from Hugging Face tokenizers
 * (regenerate: python tests/hf/tok_goldens.py). Vocabularies and tweets are read from
 * $BFT_SHARED_DATA, default ../shared/data. Run from the
 * repository root.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <json.h>
#include <pthread.h>

#include <sys/resource.h>

#include "resource.h"
#include "test.h"
#include "tok_internal.h"   /* tok_stream_min: the whole-section reference */
#include "tokenizer.h"

static const char *data_dir(void)
{
    const char *d = getenv("BFT_SHARED_DATA");
    return d && *d ? d : "../shared/data";
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) { free(buf); buf = NULL; }
            else buf = nb;
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    *len = n;
    return buf;
}

static bft_tokenizer *load_vocab(const char *name, int lower)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/%s-vocab.txt", data_dir(), name);
    size_t n;
    char *v = read_file(path, &n);
    if (!v) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    o.do_lower_case = lower;
    bft_error err;
    bft_tokenizer *t = bft_tokenizer_new(v, n, &o, &err);
    if (!t) fprintf(stderr, "bft_tokenizer_new(%s): %s\n", name, err.msg);
    free(v);
    return t;
}

static bft_tokenizer *tk_cased, *tk_uncased;

/* ---- goldens ---- */

typedef struct golden {
    char *text;
    size_t len;
    int32_t *ids[5];        /* cased, uncased, x, y, m (x, y, m: NULL when absent) */
    size_t n[5];
    char *dec[3];           /* dc, du, dcn (NULL when absent) */
    int raw;                /* input given as bytes (invalid UTF-8) */
} golden;

static size_t nraw;

static golden *goldens;
static size_t ngoldens;

static int load_goldens(void)
{
    size_t len;
    char *all = read_file("tests/data/tok/goldens.jsonl", &len);
    if (!all) return -1;
    size_t cap = 4096;
    goldens = calloc(cap, sizeof *goldens);
    char *save = NULL;
    for (char *line = strtok_r(all, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_object *o = json_tokener_parse(line);
        if (!o) { free(all); return -1; }
        if (ngoldens == cap) {
            cap *= 2;
            goldens = realloc(goldens, cap * sizeof *goldens);
        }
        golden *g = &goldens[ngoldens++];
        memset(g, 0, sizeof *g);
        json_object *t, *a;
        if (json_object_object_get_ex(o, "t", &t)) {
            g->len = (size_t)json_object_get_string_len(t);
            g->text = malloc(g->len + 1);
            memcpy(g->text, json_object_get_string(t), g->len + 1);
        } else {
            /* raw bytes (invalid UTF-8) in hex */
            json_object_object_get_ex(o, "b", &t);
            const char *h = json_object_get_string(t);
            g->len = strlen(h) / 2;
            g->text = malloc(g->len + 1);
            for (size_t i = 0; i < g->len; i++) {
                unsigned v = 0;
                sscanf(h + 2 * i, "%2x", &v);
                g->text[i] = (char)v;
            }
            g->text[g->len] = '\0';
            g->raw = 1;
        }
        const char *keys[5] = {"c", "u", "x", "y", "m"};
        for (int k = 0; k < 5; k++) {
            if (!json_object_object_get_ex(o, keys[k], &a)) continue;
            g->n[k] = json_object_array_length(a);
            g->ids[k] = malloc((g->n[k] + 1) * sizeof(int32_t));
            for (size_t i = 0; i < g->n[k]; i++)
                g->ids[k][i] = json_object_get_int(json_object_array_get_idx(a, i));
        }
        const char *dkeys[3] = {"dc", "du", "dcn"};
        for (int k = 0; k < 3; k++)
            if (json_object_object_get_ex(o, dkeys[k], &a)) g->dec[k] = strdup(json_object_get_string(a));
        nraw += g->raw;
        json_object_put(o);
    }
    free(all);
    return 0;
}

static void show_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

static bft_tokenizer *tk_x, *tk_y;
static const char *const variant[5] = {"cased", "uncased", "uncased keep-accents no-CJK", "cased strip-accents",
                                       "all-MiniLM-L6-v2 (uncased vocab.txt)"};

static void check_goldens(int which)
{
    bft_tokenizer *t = which == 0 ? tk_cased : which == 1 || which == 4 ? tk_uncased : which == 2 ? tk_x : tk_y;
    CHECK(t != NULL, "vocabulary loaded");
    if (!t) return;
    size_t bad = 0, count = 0;
    int32_t full[4096];
    for (size_t gi = 0; gi < ngoldens; gi++) {
        golden *g = &goldens[gi];
        if (!g->ids[which]) continue;
        count++;
        int32_t *ids = NULL;
        size_t n = 0;
        bft_error err;
        int r = bft_encode_pieces(t, g->text, g->len, &ids, &n, &err);
        int same = r == 0 && n == g->n[which] && memcmp(ids, g->ids[which], n * sizeof *ids) == 0;
        /* the full encoding: [CLS] pieces [SEP], no truncation needed */
        if (same && n + 2 <= 4096) {
            int m = bft_encode(t, g->text, g->len, (int)n + 2, full, &err);
            same = m == (int)n + 2 && full[0] == 101 && full[n + 1] == 102 &&
                   memcmp(full + 1, g->ids[which], n * sizeof *ids) == 0;
        }
        if (!same) {
            if (++bad <= 8) {
                fprintf(stderr, "  golden %zu (%s) differs: \"%.*s\"\n", gi, variant[which],
                        (int)(g->len > 200 ? 200 : g->len), g->text);
                show_ids("want", g->ids[which], g->n[which]);
                show_ids("got ", ids, n);
            }
        }
        free(ids);
    }
    CHECK(count >= (which < 2 || which == 4 ? 3000u : 700u), "only %zu goldens", count);
    CHECK(which > 1 || nraw >= 100, "only %zu invalid-UTF-8 goldens", nraw);
    CHECK(bad == 0, "%zu of %zu goldens differ", bad, count);
    printf("# %s: %zu/%zu goldens identical\n", variant[which], count - bad, count);
}

static void test_goldens_cased(void) { check_goldens(0); }
static void test_goldens_uncased(void) { check_goldens(1); }
/* the tokenizer of the pretrained sentence-transformers/all-MiniLM-L6-v2
 * (its vocab.txt is byte-identical to bert-base-uncased's) */
static void test_goldens_minilm(void) { check_goldens(4); }

/* non-default settings: strip_accents / tokenize_chinese_chars explicit */
static void test_goldens_other_settings(void)
{
    char path[1024];
    const char *names[2] = {"bert-base-uncased", "bert-base-cased"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/vocab/%s-vocab.txt", data_dir(), names[k]);
        size_t n;
        char *v = read_file(path, &n);
        CHECK(v != NULL, "read %s", path);
        if (!v) return;
        bft_tokenizer_opts o = bft_tokenizer_default_opts();
        if (k == 0) { o.do_lower_case = 1; o.strip_accents = 0; o.tokenize_chinese_chars = 0; }
        else { o.do_lower_case = 0; o.strip_accents = 1; }
        bft_error err;
        bft_tokenizer *t = bft_tokenizer_new(v, n, &o, &err);
        free(v);
        if (k == 0) tk_x = t; else tk_y = t;
    }
    check_goldens(2);
    check_goldens(3);
    bft_tokenizer_free(tk_x);
    bft_tokenizer_free(tk_y);
}

static void test_decode_goldens(void)
{
    size_t checked = 0, bad = 0;
    for (size_t gi = 0; gi < ngoldens; gi++) {
        golden *g = &goldens[gi];
        for (int k = 0; k < 3; k++) {
            if (!g->dec[k]) continue;
            int which = k == 1;
            bft_tokenizer *t = which ? tk_uncased : tk_cased;
            size_t n = g->n[which];
            int32_t *ids = malloc((n + 2) * sizeof *ids);
            ids[0] = 101;
            memcpy(ids + 1, g->ids[which], n * sizeof *ids);
            ids[n + 1] = 102;
            char *s = bft_decode(t, ids, n + 2, k != 2);
            checked++;
            if (!s || strcmp(s, g->dec[k]) != 0) {
                if (++bad <= 5)
                    fprintf(stderr, "  decode %zu/%d: want \"%s\" got \"%s\"\n", gi, k, g->dec[k], s ? s : "(null)");
            }
            free(s);
            free(ids);
        }
    }
    CHECK(checked > 1000, "only %zu decodes checked", checked);
    CHECK(bad == 0, "%zu of %zu decodes differ", bad, checked);
    printf("# decode: %zu/%zu identical\n", checked - bad, checked);
}

/* ---- truncation, specials, vocabulary API ---- */

static void test_truncation(void)
{
    const int lens[] = {2, 3, 4, 10, 64, 512};
    size_t checked = 0;
    for (size_t gi = 0; gi < ngoldens; gi += 7) {
        golden *g = &goldens[gi];
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int ml = lens[li];
            int32_t out[512];
            bft_error err;
            int m = bft_encode(tk_cased, g->text, g->len, ml, out, &err);
            size_t keep = g->n[0] < (size_t)ml - 2 ? g->n[0] : (size_t)ml - 2;
            CHECK(m == (int)keep + 2, "golden %zu max_length %d: %d ids", gi, ml, m);
            if (m != (int)keep + 2) continue;
            CHECK(out[0] == 101 && out[m - 1] == 102, "golden %zu: [CLS]/[SEP] missing", gi);
            CHECK(memcmp(out + 1, g->ids[0], keep * sizeof *out) == 0, "golden %zu max %d: prefix differs", gi, ml);
            checked++;
        }
    }
    int32_t out[4];
    bft_error err;
    CHECK(bft_encode(tk_cased, "hello", 5, 1, out, &err) == -1 && err.code == BFT_EINVAL, "max_length 1 rejected");
    CHECK(checked > 1000, "checked %zu", checked);
}

static void test_specials_and_vocab(void)
{
    bft_special_ids s = bft_tokenizer_special(tk_cased);
    CHECK(s.cls == 101 && s.sep == 102 && s.mask == 103 && s.pad == 0 && s.unk == 100,
          "specials %d %d %d %d %d", s.cls, s.sep, s.mask, s.pad, s.unk);
    CHECK(bft_tokenizer_vocab_size(tk_cased) == 28996, "cased size %d", bft_tokenizer_vocab_size(tk_cased));
    CHECK(bft_tokenizer_vocab_size(tk_uncased) == 30522, "uncased size %d", bft_tokenizer_vocab_size(tk_uncased));
    CHECK(bft_tokenizer_token_id(tk_cased, "a") == 170, "a is %d", bft_tokenizer_token_id(tk_cased, "a"));
    const char *a = bft_tokenizer_token(tk_cased, 170);
    CHECK(a && strcmp(a, "a") == 0, "token 170");
    CHECK(bft_tokenizer_token(tk_cased, -1) == NULL && bft_tokenizer_token(tk_cased, 28996) == NULL, "out of range");
    CHECK(bft_tokenizer_token_id(tk_cased, "no-such-token-xyz") == -1, "absent token");
    /* every token maps back to its id (the vocabularies have no duplicates) */
    int bad = 0;
    for (int i = 0; i < bft_tokenizer_vocab_size(tk_uncased); i++)
        bad += bft_tokenizer_token_id(tk_uncased, bft_tokenizer_token(tk_uncased, i)) != i;
    CHECK(bad == 0, "%d tokens do not round-trip", bad);
    int32_t *ids = NULL;
    size_t n = 0;
    bft_error err;
    const char *txt = "Paris is the [MASK] of France.";
    CHECK(bft_encode_pieces(tk_cased, txt, strlen(txt), &ids, &n, &err) == 0, "encode");
    int has_mask = 0;
    for (size_t i = 0; i < n; i++) has_mask |= ids[i] == 103;
    CHECK(has_mask, "[MASK] kept whole");
    free(ids);
    bft_tokenizer_opts o = bft_tokenizer_get_opts(tk_uncased);
    CHECK(o.do_lower_case == 1 && o.strip_accents == -1 && o.tokenize_chinese_chars == 1, "opts");
    /* decode merges ## pieces and drops specials */
    int32_t d[] = {101, 1109, 103, 102};
    char *str = bft_decode(tk_cased, d, 4, 1);
    CHECK(str && strcmp(str, "The") == 0, "decode skip: %s", str ? str : "(null)");
    free(str);
    int32_t bogus[] = {-5, 1109, 1000000, 28996};
    str = bft_decode(tk_cased, bogus, 4, 0);
    CHECK(str && strcmp(str, "The") == 0, "decode out-of-range ids (left out): %s", str ? str : "(null)");
    free(str);
    str = bft_decode(tk_cased, NULL, 0, 1);
    CHECK(str && *str == '\0', "decode of nothing");
    free(str);
}

static void test_vocab_errors(void)
{
    bft_error err;
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    CHECK(bft_tokenizer_new("", 0, &o, &err) == NULL && err.code == BFT_EFORMAT, "empty vocab");
    CHECK(bft_tokenizer_new("a\nb\n", 4, &o, &err) == NULL && err.code == BFT_EFORMAT, "no [UNK]");
    CHECK(bft_tokenizer_new("[UNK]\na\0b\n", 10, &o, &err) == NULL && err.code == BFT_EFORMAT, "NUL byte");
    /* CRLF and a last line without LF; [UNK] only: encode needs [CLS]/[SEP] */
    const char *v = "[PAD]\r\n[UNK]\r\nhello\r\n##s\r\nworld";
    bft_tokenizer *t = bft_tokenizer_new(v, strlen(v), &o, &err);
    CHECK(t != NULL, "CRLF vocab: %s", t ? "" : err.msg);
    if (!t) return;
    CHECK(bft_tokenizer_vocab_size(t) == 5, "size %d", bft_tokenizer_vocab_size(t));
    CHECK(bft_tokenizer_token_id(t, "world") == 4 && bft_tokenizer_token_id(t, "##s") == 3, "ids");
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(bft_encode_pieces(t, "Hellos WORLD x", 14, &ids, &n, &err) == 0, "encode");
    CHECK(n == 4 && ids[0] == 2 && ids[1] == 3 && ids[2] == 4 && ids[3] == 1, "pieces n=%zu", n);
    free(ids);
    int32_t out[8];
    CHECK(bft_encode(t, "hello", 5, 8, out, &err) == -1 && err.code == BFT_EMISMATCH, "no [CLS]");
    bft_tokenizer_free(t);
    bft_tokenizer_free(NULL);

    /* a vocabulary token of 101 characters is never used: words over 100
     * characters are [UNK] before any lookup; 100 characters are fine */
    char vv[400];
    int p = sprintf(vv, "[UNK]\n");
    memset(vv + p, 'a', 101);
    p += 101;
    p += sprintf(vv + p, "\n");
    memset(vv + p, 'b', 100);
    p += 100;
    p += sprintf(vv + p, "\n");
    t = bft_tokenizer_new(vv, (size_t)p, &o, &err);
    CHECK(t != NULL, "long-token vocab");
    if (!t) return;
    CHECK(bft_encode_pieces(t, vv + 6, 101, &ids, &n, &err) == 0 && n == 1 && ids[0] == 0, "101 chars → [UNK]");
    free(ids);
    CHECK(bft_encode_pieces(t, vv + 108, 100, &ids, &n, &err) == 0 && n == 1 && ids[0] == 2, "100 chars found");
    free(ids);
    bft_tokenizer_free(t);
}

/* ---- bad input ---- */

static int same_pieces(bft_tokenizer *t, const char *a, size_t la, const char *b, size_t lb)
{
    int32_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    bft_error err;
    int ok = bft_encode_pieces(t, a, la, &x, &nx, &err) == 0 && bft_encode_pieces(t, b, lb, &y, &ny, &err) == 0 &&
             nx == ny && memcmp(x, y, nx * sizeof *x) == 0;
    free(x);
    free(y);
    return ok;
}

static void test_invalid_utf8(void)
{
    /* documented: every invalid sequence becomes U+FFFD, which is dropped */
    static const struct { const char *bad; size_t lb; const char *good; } cases[] = {
        {"a\xff" "b", 3, "ab"},
        {"caf\xc3", 4, "caf"},                         /* truncated at the end */
        {"\xc3(x", 3, "(x"},                           /* bad continuation */
        {"\xc0\xaf" "slash", 7, "slash"},              /* overlong '/' */
        {"\xe0\x80\xaf" "x", 4, "x"},                  /* overlong 3-byte */
        {"\xed\xa0\x80" "sur", 6, "sur"},              /* UTF-8 surrogate */
        {"\xf4\x90\x80\x80" "big", 7, "big"},          /* > U+10FFFF */
        {"\xf8\x88\x80\x80\x80" "five", 9, "five"},    /* 5-byte form */
        {"\x80\x80\x80" "Tesla", 8, "Tesla"},          /* stray continuations */
        {"\xe2\x82" "a\xe2\x82\xac", 6, "a\xe2\x82\xac"},  /* truncated then valid euro */
        {"[MA\xffSK]", 7, "[MA\xef\xbf\xbdSK]"},       /* raw text is "[MA\uFFFDSK]": not a special */
        {"\xf0\x9f\x98" "\xf0\x9f\x98\x80", 7, "\xf0\x9f\x98\x80"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(same_pieces(tk_cased, cases[i].bad, cases[i].lb, cases[i].good, strlen(cases[i].good)),
              "invalid case %zu (cased)", i);
        CHECK(same_pieces(tk_uncased, cases[i].bad, cases[i].lb, cases[i].good, strlen(cases[i].good)),
              "invalid case %zu (uncased)", i);
    }
    /* "[MA\xffSK]" normalizes to "[MASK]", but specials are found in the raw
     * text only (as the reference does): "[", "MA", "##SK", "]" */
    int32_t *ids = NULL;
    size_t n = 0;
    bft_error err;
    CHECK(bft_encode_pieces(tk_cased, "[MA\xffSK]", 7, &ids, &n, &err) == 0 && n == 5 && ids[0] == 164 &&
          ids[4] == 166, "n=%zu", n);
    free(ids);
    /* all 256 single bytes and all 65536 two-byte strings: no crash, pieces valid */
    int bad = 0;
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++) {
            char s[3] = {(char)a, (char)b, 'z'};
            ids = NULL;
            if (bft_encode_pieces(tk_uncased, s, 3, &ids, &n, &err) != 0) bad++;
            for (size_t i = 0; i < n; i++) bad += ids[i] < 0 || ids[i] >= 30522;
            free(ids);
        }
    CHECK(bad == 0, "%d failures over two-byte prefixes", bad);
}

static void test_edge_strings(void)
{
    int32_t out[512];
    bft_error err;
    CHECK(bft_encode(tk_cased, "", 0, 512, out, &err) == 2 && out[0] == 101 && out[1] == 102, "empty");
    CHECK(bft_encode(tk_cased, NULL, 0, 512, out, &err) == 2, "NULL with length 0");
    int32_t *ids = NULL;
    size_t n = 99;
    CHECK(bft_encode_pieces(tk_cased, "", 0, &ids, &n, &err) == 0 && n == 0, "empty pieces");
    free(ids);

    size_t big = 1 << 20;
    char *s = malloc(big);
    /* 1 MB of words */
    static const char *words[] = {"Tesla ", "stock ", "rises ", "$TSLA ", "caf\xc3\xa9 ", "\xe4\xb8\xad ", "unbelievable, "};
    size_t p = 0, w = 0;
    while (p < big) {
        const char *x = words[w++ % 7];
        size_t l = strlen(x);
        if (p + l > big) l = big - p;
        memcpy(s + p, x, l);
        p += l;
    }
    for (int k = 0; k < 2; k++) {
        bft_tokenizer *t = k ? tk_uncased : tk_cased;
        ids = NULL;
        n = 0;
        CHECK(bft_encode_pieces(t, s, big, &ids, &n, &err) == 0 && n > 100000, "1MB words: %zu pieces", n);
        int m = bft_encode(t, s, big, 512, out, &err);
        CHECK(m == 512 && ids && memcmp(out + 1, ids, 510 * sizeof *out) == 0 && out[511] == 102, "1MB truncated");
        free(ids);
    }
    /* 1 MB without spaces: one word > 100 chars → [UNK] */
    memset(s, 'a', big);
    CHECK(bft_encode(tk_cased, s, big, 512, out, &err) == 3 && out[1] == 100, "1MB word");
    /* 1 MB of combining marks: cased keeps one huge word ([UNK]); uncased strips them all */
    for (size_t i = 0; i + 1 < big; i += 2) { s[i] = '\xcc'; s[i + 1] = '\x81'; }
    CHECK(bft_encode(tk_cased, s, big, 512, out, &err) == 3 && out[1] == 100, "combining cased");
    CHECK(bft_encode(tk_uncased, s, big, 512, out, &err) == 2, "combining uncased");
    CHECK(bft_encode(tk_cased, "\xcc\x81", 2, 512, out, &err) == 3 && out[1] == 389, "one combining mark (in the vocab)");
    CHECK(bft_encode(tk_uncased, "\xcc\x81", 2, 512, out, &err) == 2, "one combining mark stripped");
    CHECK(bft_encode(tk_uncased, "\xcc\x81\xcc\x82 \xcd\x85", 7, 512, out, &err) >= 2, "marks uncased");
    /* 1 MB of CJK: each ideograph its own word */
    for (size_t i = 0; i + 2 < big; i += 3) { s[i] = '\xe4'; s[i + 1] = '\xb8'; s[i + 2] = '\xad'; }
    ids = NULL;
    CHECK(bft_encode_pieces(tk_cased, s, big - big % 3, &ids, &n, &err) == 0 && n == big / 3, "CJK n=%zu", n);
    free(ids);
    /* 1 MB of NUL and control bytes → nothing */
    memset(s, 1, big);
    CHECK(bft_encode(tk_cased, s, big, 512, out, &err) == 2, "controls");
    free(s);
    /* word of exactly 100 / 101 code points */
    char w100[404];
    for (int i = 0; i < 101; i++) { w100[2 * i] = '\xc3'; w100[2 * i + 1] = '\xa9'; }
    CHECK(bft_encode(tk_cased, w100, 202, 512, out, &err) == 3 && out[1] == 100, "101 chars → [UNK]");
    int m = bft_encode(tk_cased, w100, 200, 512, out, &err);
    CHECK(m > 3, "100 chars split into %d pieces", m - 2);
}

/* ---- threads: one tokenizer shared by several threads ---- */

static void *thread_encode(void *arg)
{
    size_t bad = 0, start = (size_t)(uintptr_t)arg;
    for (size_t gi = start; gi < ngoldens; gi += 2) {
        golden *g = &goldens[gi];
        for (int which = 0; which < 2; which++) {
            int32_t *ids = NULL;
            size_t n = 0;
            bft_error err;
            if (bft_encode_pieces(which ? tk_uncased : tk_cased, g->text, g->len, &ids, &n, &err) != 0 ||
                n != g->n[which] || memcmp(ids, g->ids[which], n * sizeof *ids) != 0)
                bad++;
            free(ids);
        }
    }
    return (void *)(uintptr_t)bad;
}

static void test_threads(void)
{
    pthread_t th[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&th[i], NULL, thread_encode, (void *)(uintptr_t)(i % 2)) == 0, "create");
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        pthread_join(th[i], &r);
        CHECK((uintptr_t)r == 0, "thread %d: %zu differences", i, (size_t)(uintptr_t)r);
    }
}

/* ---- vocabulary learning ---- */

/* the text column of a simple RFC 4180 CSV (first field of each record) */
static char **read_csv_texts(const char *path, size_t *count)
{
    size_t len;
    char *all = read_file(path, &len);
    if (!all) return NULL;
    size_t cap = 1024, n = 0;
    char **out = malloc(cap * sizeof *out);
    size_t i = 0;
    int header = 1;
    while (i < len) {
        char *f = malloc(len - i + 1);
        size_t fl = 0;
        int field = 0;
        for (;;) {
            if (i < len && all[i] == '"') {
                i++;
                while (i < len) {
                    if (all[i] == '"') {
                        if (i + 1 < len && all[i + 1] == '"') { if (!field) f[fl++] = '"'; i += 2; continue; }
                        i++;
                        break;
                    }
                    if (!field) f[fl++] = all[i];
                    i++;
                }
            }
            while (i < len && all[i] != ',' && all[i] != '\n' && all[i] != '\r') {
                if (!field) f[fl++] = all[i];
                i++;
            }
            if (i < len && all[i] == ',') { field++; i++; continue; }
            break;
        }
        while (i < len && (all[i] == '\r' || all[i] == '\n')) i++;
        f[fl] = '\0';
        if (header) { header = 0; free(f); continue; }
        if (n == cap) { cap *= 2; out = realloc(out, cap * sizeof *out); }
        out[n++] = f;
    }
    free(all);
    *count = n;
    return out;
}

static char *train(char **texts, size_t n, int vocab_size, int lower, int reverse, size_t *len, double *secs)
{
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    o.do_lower_case = lower;
    bft_error err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bft_wp_trainer *tr = bft_wp_trainer_new(&o, vocab_size, 0, &err);
    if (!tr) return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *t = texts[reverse ? n - 1 - i : i];
        if (bft_wp_trainer_feed(tr, t, strlen(t), &err)) { bft_wp_trainer_free(tr); return NULL; }
    }
    char *v = bft_wp_trainer_finish(tr, len, &err);
    bft_wp_trainer_free(tr);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return v;
}

static void test_vocab_learning(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/topic_train.csv", data_dir());
    size_t nt = 0;
    char **texts = read_csv_texts(path, &nt);
    CHECK(texts && nt > 16000, "read %zu tweets", nt);
    if (!texts) return;
    bft_error err;
    CHECK(bft_wp_trainer_new(NULL, 50, 0, &err) == NULL && err.code == BFT_EINVAL, "vocab_size < 100");
    for (int lower = 0; lower < 2; lower++) {
        int size = lower ? 8000 : 16000;
        size_t l1 = 0, l2 = 0;
        double s1 = 0, s2 = 0;
        char *v1 = train(texts, nt, size, lower, 0, &l1, &s1);
        char *v2 = train(texts, nt, size, lower, 1, &l2, &s2);
        CHECK(v1 && v2, "training failed");
        if (!v1 || !v2) { free(v1); free(v2); continue; }
        CHECK(l1 == l2 && memcmp(v1, v2, l1) == 0, "not deterministic (lower=%d)", lower);
        printf("# learned %d-token %s vocabulary from %zu tweets in %.2f s\n", size, lower ? "uncased" : "cased", nt, s1);
        CHECK(s1 < 10.0, "training took %.1f s", s1);
        bft_tokenizer_opts o = bft_tokenizer_default_opts();
        o.do_lower_case = lower;
        bft_tokenizer *t = bft_tokenizer_new(v1, l1, &o, &err);
        CHECK(t != NULL, "learned vocab does not load: %s", err.msg);
        if (!t) { free(v1); free(v2); continue; }
        CHECK(bft_tokenizer_vocab_size(t) == size, "vocab size %d", bft_tokenizer_vocab_size(t));
        static const char *sp[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
        for (int k = 0; k < 5; k++) {
            const char *tok = bft_tokenizer_token(t, k);
            CHECK(tok && strcmp(tok, sp[k]) == 0, "token %d is %s", k, tok ? tok : "(null)");
        }
        /* round trip: each line of vocab.txt is token i, and token → id */
        int bad = 0;
        const char *p = v1;
        for (int i = 0; i < bft_tokenizer_vocab_size(t); i++) {
            const char *e = strchr(p, '\n');
            const char *tok = bft_tokenizer_token(t, i);
            bad += !tok || !e || strlen(tok) != (size_t)(e - p) || memcmp(tok, p, (size_t)(e - p)) != 0 ||
                   bft_tokenizer_token_id(t, tok) != i;
            p = e ? e + 1 : p;
        }
        CHECK(bad == 0, "%d tokens do not round-trip", bad);
        /* [UNK] rate on the training texts */
        size_t total = 0, unk = 0;
        for (size_t i = 0; i < nt; i++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (bft_encode_pieces(t, texts[i], strlen(texts[i]), &ids, &n, &err)) { bad++; continue; }
            for (size_t j = 0; j < n; j++) unk += ids[j] == 1;
            total += n;
            free(ids);
        }
        double rate = total ? (double)unk / (double)total : 1.0;
        printf("# learned vocab: %zu tokens on the training texts, %zu [UNK] (%.4f%%)\n", total, unk, 100 * rate);
        CHECK(rate < 0.005, "[UNK] rate %.4f", rate);
        /* a vocabulary learned from the texts themselves needs fewer pieces
         * than the general bert-base one */
        size_t base = 0;
        for (size_t i = 0; i < nt; i++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (bft_encode_pieces(lower ? tk_uncased : tk_cased, texts[i], strlen(texts[i]), &ids, &n, &err) == 0)
                base += n;
            free(ids);
        }
        printf("# bert-base-%s needs %zu tokens on the same texts\n", lower ? "uncased" : "cased", base);
        CHECK(total < base, "%zu learned vs %zu bert-base tokens", total, base);
        bft_tokenizer_free(t);
        free(v1);
        free(v2);
    }
    /* a tiny corpus stops when no pair is left, below vocab_size */
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    bft_wp_trainer *tr = bft_wp_trainer_new(&o, 1000, 0, &err);
    CHECK(tr && bft_wp_trainer_feed(tr, "hug hugs pug [MASK] pun", 23, &err) == 0, "feed");
    size_t len = 0;
#define TINY "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ng\nh\nn\np\ns\nu\n##g\n##n\n##s\n##u\n"
    char *v = bft_wp_trainer_finish(tr, &len, &err);
    CHECK(v && len > 10 && strncmp(v, TINY, strlen(TINY)) == 0,
          "tiny vocab:\n%s", v ? v : "(null)");
    CHECK(v && strstr(v, "\nhug\n") && strstr(v, "\nhugs\n"), "merges hug, hugs");
    free(v);
    bft_wp_trainer_free(tr);
    /* min_frequency 3: only (##u, ##g), seen 3 times, is merged */
    tr = bft_wp_trainer_new(&o, 1000, 3, &err);
    CHECK(tr && bft_wp_trainer_feed(tr, "hug hugs pug pun", 16, &err) == 0, "feed");
    v = bft_wp_trainer_finish(tr, &len, &err);
    CHECK(v && strcmp(v, TINY "##ug\n") == 0, "min_frequency vocab:\n%s", v ? v : "(null)");
    free(v);
    bft_wp_trainer_free(tr);
    for (size_t i = 0; i < nt; i++) free(texts[i]);
    free(texts);
}

/* Naive reference trainer over plain [a-z] words: recount every pair before
 * each merge. Same rules: ids = specials, sorted chars, sorted "##" chars,
 * merges; highest count first, ties to the smaller (left id, right id). */
typedef struct nv_tok { char s[128]; } nv_tok;

static int nv_find(nv_tok *v, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(v[i].s, s) == 0) return i;
    return -1;
}

static void test_trainer_matches_naive(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/topic_train.csv", data_dir());
    size_t nt = 0;
    char **texts = read_csv_texts(path, &nt);
    CHECK(texts != NULL, "tweets");
    if (!texts) return;
    /* corpus: the lower-case ASCII letter runs of 500 tweets (at most 20 letters) */
    size_t ncorp = nt < 500 ? nt : 500;
    char **corp = malloc(ncorp * sizeof *corp);
    for (size_t i = 0; i < ncorp; i++) {
        const char *t = texts[i];
        char *c = malloc(strlen(t) * 2 + 2);
        size_t o = 0, run = 0;
        for (const char *p = t; *p; p++) {
            if (*p >= 'a' && *p <= 'z') { if (run < 20) c[o++] = *p; run++; }
            else if (run) { c[o++] = ' '; run = 0; }
        }
        c[o] = '\0';
        corp[i] = c;
    }
    const int vsize = 700;
    bft_error err;
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    bft_wp_trainer *tr = bft_wp_trainer_new(&o, vsize, 0, &err);
    for (size_t i = 0; i < ncorp; i++) bft_wp_trainer_feed(tr, corp[i], strlen(corp[i]), &err);
    size_t len = 0;
    char *got = bft_wp_trainer_finish(tr, &len, &err);
    bft_wp_trainer_free(tr);

    /* naive: words with counts */
    int cap = 20000, nw = 0;
    char (*words)[24] = malloc((size_t)cap * sizeof *words);
    int *wc = calloc((size_t)cap, sizeof *wc);
    for (size_t i = 0; i < ncorp; i++) {
        char *save = NULL, *dup = strdup(corp[i]);
        for (char *w = strtok_r(dup, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            int k;
            for (k = 0; k < nw; k++)
                if (strcmp(words[k], w) == 0) break;
            if (k == nw && nw < cap) strcpy(words[nw++], w);
            if (k < cap) wc[k]++;
        }
        free(dup);
    }
    nv_tok *v = malloc(4000 * sizeof *v);
    int nv = 0;
    static const char *sp[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int k = 0; k < 5; k++) strcpy(v[nv++].s, sp[k]);
    int seen[2][26] = {{0}};
    for (int k = 0; k < nw; k++)
        for (int j = 0; words[k][j]; j++) { seen[0][words[k][j] - 'a'] = 1; if (j) seen[1][words[k][j] - 'a'] = 1; }
    for (int c = 0; c < 2; c++)
        for (int l = 0; l < 26; l++)
            if (seen[c][l]) snprintf(v[nv++].s, 128, "%s%c", c ? "##" : "", 'a' + l);
    int (*sym)[24] = malloc((size_t)nw * sizeof *sym);
    int *sl = malloc((size_t)nw * sizeof *sl);
    for (int k = 0; k < nw; k++) {
        sl[k] = (int)strlen(words[k]);
        for (int j = 0; j < sl[k]; j++) {
            char b[4] = {'#', '#', words[k][j], 0};
            sym[k][j] = nv_find(v, nv, j ? b : b + 2);
        }
    }
    while (nv < vsize) {
        /* count all pairs */
        long best = 0;
        int ba = -1, bb = -1;
        /* pairs are few enough to scan: collect (a,b,count) in a list */
        int np = 0;
        static int pa[200000], pb[200000];
        static long pc[200000];
        for (int k = 0; k < nw; k++)
            for (int j = 0; j + 1 < sl[k]; j++) {
                int a = sym[k][j], b = sym[k][j + 1], q;
                for (q = 0; q < np; q++)
                    if (pa[q] == a && pb[q] == b) break;
                if (q == np) { pa[np] = a; pb[np] = b; pc[np] = 0; np++; }
                pc[q] += wc[k];
            }
        for (int q = 0; q < np; q++)
            if (pc[q] > best || (pc[q] == best && (pa[q] < ba || (pa[q] == ba && pb[q] < bb)))) {
                best = pc[q]; ba = pa[q]; bb = pb[q];
            }
        if (best < 1) break;
        char ns[128];
        const char *rb = v[bb].s;
        if (rb[0] == '#' && rb[1] == '#') rb += 2;
        size_t la = strlen(v[ba].s), lb = strlen(rb);
        if (la + lb >= sizeof ns) break;   /* words are at most 20 letters */
        memcpy(ns, v[ba].s, la);
        memcpy(ns + la, rb, lb + 1);
        int nid = nv_find(v, nv, ns);
        if (nid < 0) { strcpy(v[nv].s, ns); nid = nv++; }
        for (int k = 0; k < nw; k++) {
            int o2 = 0;
            for (int j = 0; j < sl[k];) {
                if (j + 1 < sl[k] && sym[k][j] == ba && sym[k][j + 1] == bb) { sym[k][o2++] = nid; j += 2; }
                else sym[k][o2++] = sym[k][j++];
            }
            sl[k] = o2;
        }
    }
    size_t wl = 0;
    char *want = malloc((size_t)nv * 130 + 1);
    for (int i = 0; i < nv; i++) wl += (size_t)sprintf(want + wl, "%s\n", v[i].s);
    CHECK(got && len == wl && memcmp(got, want, wl) == 0, "trainer differs from the naive reference (%zu vs %zu bytes)",
          len, wl);
    if (got && (len != wl || memcmp(got, want, wl) != 0)) {
        size_t i = 0;
        while (i < len && i < wl && got[i] == want[i]) i++;
        fprintf(stderr, "  first difference at byte %zu: got \"%.40s\" want \"%.40s\"\n", i, got + i, want + i);
    }
    printf("# trainer == naive reference: %d tokens from %d distinct words\n", nv, nw);
    free(want);
    free(got);
    free(v);
    free(sym);
    free(sl);
    free(words);
    free(wc);
    for (size_t i = 0; i < ncorp; i++) free(corp[i]);
    free(corp);
    for (size_t i = 0; i < nt; i++) free(texts[i]);
    free(texts);
}


/* ---- long texts: streamed windows give exactly the whole text's tokens ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* append s (len bytes) to a growing buffer */
static void app(char **b, size_t *n, size_t *cap, const char *s, size_t len)
{
    if (*n + len + 1 > *cap) {
        while (*n + len + 1 > *cap) *cap = *cap ? *cap * 2 : 1 << 16;
        *b = realloc(*b, *cap);
    }
    memcpy(*b + *n, s, len);
    *n += len;
    (*b)[*n] = '\0';
}

static void app_rep(char **b, size_t *n, size_t *cap, const char *s, size_t times)
{
    for (size_t i = 0; i < times; i++) app(b, n, cap, s, strlen(s));
}

/* Texts of 0.3-2 MB that stress the window split rules: every golden text
 * (all scripts, invalid UTF-8, specials) joined by spaces and newlines; Greek
 * capitals with sigma next to case-ignorable marks; combining marks,
 * dotted capital I, CJK, Hangul; long runs without any space (accented
 * letters, ASCII, a 300 KB word) that force windows to split inside words. */
static char *stress_text(int kind, size_t *len)
{
    char *b = NULL;
    size_t n = 0, cap = 0;
    switch (kind) {
    case 0:
        for (int rep = 0; rep < 3; rep++)
            for (size_t i = 0; i < ngoldens; i++) {
                app(&b, &n, &cap, goldens[i].text, goldens[i].len);
                app(&b, &n, &cap, i % 3 ? " " : "\n", 1);
            }
        break;
    case 1:
        for (int i = 0; i < 20000; i++) {
            app(&b, &n, &cap, "ΟΔΟΣ ΣΑΣ. Σ.Σ ΑΣ'Β ΑΣ\xCC\x81Β ΌΣΟΣ: ", strlen("ΟΔΟΣ ΣΑΣ. Σ.Σ ΑΣ'Β ΑΣ\xCC\x81Β ΌΣΟΣ: "));
            if (i % 1000 == 999) app_rep(&b, &n, &cap, "ΑΣΑΣ.Σ:Β'Σ", 3000);   /* 60 KB, no split point */
        }
        break;
    case 2:
        for (int i = 0; i < 15000; i++)
            app(&b, &n, &cap, "Ame\xCC\x81lie\xCC\xA7\xCC\x81 \xC4\xB0STANBUL \xC4\xB0\xCC\x87i \xE4\xB8\xAD\xE6\x96\x87\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 caf\xC3\xA9! \xF0\x9F\x98\x80x ",
                strlen("Ame\xCC\x81lie\xCC\xA7\xCC\x81 \xC4\xB0STANBUL \xC4\xB0\xCC\x87i \xE4\xB8\xAD\xE6\x96\x87\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 caf\xC3\xA9! \xF0\x9F\x98\x80x "));
        break;
    case 3:
        app_rep(&b, &n, &cap, "\xC3\xA9", 60000);           /* 120 KB of é, no space */
        app(&b, &n, &cap, " word ", 6);
        app_rep(&b, &n, &cap, "Abc", 100000);                /* a 300 KB word */
        app(&b, &n, &cap, ". ", 2);
        app_rep(&b, &n, &cap, "x,", 100000);                 /* 100,000 one-letter words, no space */
        app(&b, &n, &cap, " \xC3\x89T\xC3\x89 ", strlen(" \xC3\x89T\xC3\x89 "));
        app_rep(&b, &n, &cap, "e\xCC\x81", 50000);           /* e + combining acute, no space */
        app(&b, &n, &cap, " end [MASK] [SEP] tail", strlen(" end [MASK] [SEP] tail"));
        break;
    }
    *len = n;
    return b;
}

static bft_tokenizer *settings_tokenizer(const char *name, int lower, int strip, int chinese)
{
    char path[1024];
    size_t n;
    snprintf(path, sizeof path, "%s/vocab/%s-vocab.txt", data_dir(), name);
    char *v = read_file(path, &n);
    if (!v) return NULL;
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    o.do_lower_case = lower;
    o.strip_accents = strip;
    o.tokenize_chinese_chars = chinese;
    bft_error err;
    bft_tokenizer *t = bft_tokenizer_new(v, n, &o, &err);
    free(v);
    return t;
}

static void test_streaming_equals_whole(void)
{
    bft_tokenizer *ts[4] = {tk_cased, tk_uncased, settings_tokenizer("bert-base-uncased", 1, 0, 0),
                            settings_tokenizer("bert-base-cased", 0, 1, 1)};
    size_t compared = 0;
    for (int kind = 0; kind < 4; kind++) {
        size_t len;
        char *text = stress_text(kind, &len);
        CHECK(len > TOK_STREAM_MIN * 4, "stress text %d has %zu bytes", kind, len);
        for (int t = 0; t < 4; t++) {
            int32_t *whole = NULL, *streamed = NULL;
            size_t nw = 0, ns = 0;
            bft_error err;
            tok_stream_min = SIZE_MAX;
            int rw = bft_encode_pieces(ts[t], text, len, &whole, &nw, &err);
            tok_stream_min = TOK_STREAM_MIN;
            int rs = bft_encode_pieces(ts[t], text, len, &streamed, &ns, &err);
            CHECK(rw == 0 && rs == 0, "text %d tokenizer %d: encode failed", kind, t);
            CHECK(nw == ns && nw > 0 && memcmp(whole, streamed, nw * sizeof *whole) == 0,
                  "text %d tokenizer %d: streamed %zu tokens vs whole %zu", kind, t, ns, nw);
            if (nw != ns || (nw && memcmp(whole, streamed, nw * sizeof *whole) != 0)) {
                size_t i = 0;
                while (i < nw && i < ns && whole[i] == streamed[i]) i++;
                fprintf(stderr, "  first difference at token %zu: %d vs %d\n", i,
                        i < nw ? whole[i] : -1, i < ns ? streamed[i] : -1);
            }
            /* truncation of a long text: the first max_length - 2 pieces */
            int32_t out[512];
            int m = bft_encode(ts[t], text, len, 512, out, &err);
            size_t keep = nw < 510 ? nw : 510;
            CHECK(m == (int)keep + 2 && memcmp(out + 1, whole, keep * sizeof *out) == 0,
                  "text %d tokenizer %d: truncated encode differs", kind, t);
            compared += nw;
            free(whole);
            free(streamed);
        }
        free(text);
    }
    printf("# streamed == whole-section tokens: %zu tokens over 4 texts x 4 settings\n", compared);
    bft_tokenizer_free(ts[2]);
    bft_tokenizer_free(ts[3]);
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int polls_left;
static int countdown_hook(void *ctx)
{
    (void)ctx;
    return --polls_left < 0;
}

/* bft_classify(repeat('é ', N)): truncation before normalization, so time
 * and memory do not grow with the text; and a text that must be read to its
 * end (encode_pieces) can be interrupted. */
static void test_huge_text(void)
{
    size_t len = (size_t)256 << 20;
    char *text = malloc(len);
    CHECK(text != NULL, "malloc");
    if (!text) return;
    for (size_t i = 0; i + 3 <= len; i += 3) { text[i] = (char)0xC3; text[i + 1] = (char)0xA9; text[i + 2] = ' '; }
    len -= len % 3;
    long rss0 = max_rss_kb();
    int32_t out[128];
    bft_error err;
    double t0 = now_s();
    int m = bft_encode(tk_uncased, text, len, 128, out, &err);
    double dt = now_s() - t0;
    long grew = max_rss_kb() - rss0;
    CHECK(m == 128, "encoded %d ids", m);
    CHECK(out[1] == bft_tokenizer_token_id(tk_uncased, "e") && out[126] == out[1], "ids %d %d", out[1], out[126]);
    CHECK(grew < 16 * 1024, "peak RSS grew by %ld kB for a %zu MB text", grew, len >> 20);
    CHECK(dt < 2.0, "took %.3f s", dt);
    printf("# %zu MB text, max_length 128: %.3f s, peak RSS +%ld kB\n", len >> 20, dt, grew);

    /* the whole text must be read: interrupted after a few polls */
    int32_t *ids = NULL;
    size_t n = 0;
    polls_left = 20;
    bft_set_interrupt_hook(countdown_hook, NULL);
    t0 = now_s();
    int r = bft_encode_pieces(tk_uncased, text, 64u << 20, &ids, &n, &err);
    dt = now_s() - t0;
    bft_set_interrupt_hook(NULL, NULL);
    CHECK(r == -1 && err.code == BFT_ECANCEL, "interrupt: r %d code %d (%s)", r, err.code, err.msg);
    CHECK(dt < 1.0, "interrupt took %.3f s", dt);
    free(ids);
    free(text);
}

/* The word table stays within its memory bound: rare words are pruned, the
 * frequent ones still make the vocabulary; learning can be interrupted. */
static void test_trainer_bounds(void)
{
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    bft_error err;
    bft_wp_trainer *tr = bft_wp_trainer_new(&o, 300, 0, &err);
    CHECK(tr != NULL, "trainer");
    if (!tr) return;
    size_t limit = 4u << 20;
    bft_wp_trainer_set_memory(tr, limit);
    char buf[64];
    for (unsigned i = 0; i < 300000; i++) {
        int l = snprintf(buf, sizeof buf, "w%uq%x frequent common", i, i * 7919u);
        CHECK(bft_wp_trainer_feed(tr, buf, (size_t)l, &err) == 0, "feed: %s", err.msg);
    }
    size_t pruned = 0;
    long long below = 0;
    size_t words = bft_wp_trainer_stats(tr, &pruned, &below);
    CHECK(pruned > 100000 && words * 80 < limit, "words %zu pruned %zu below %lld", words, pruned, below);
    size_t vlen;
    char *v = bft_wp_trainer_finish(tr, &vlen, &err);
    CHECK(v && strstr(v, "\nfrequent\n") && strstr(v, "\ncommon\n"), "frequent words missing");
    printf("# bounded table: %zu words kept, %zu pruned (last pruning: counts below %lld)\n", words, pruned, below);
    free(v);
    polls_left = 2;
    bft_set_interrupt_hook(countdown_hook, NULL);
    v = bft_wp_trainer_finish(tr, &vlen, &err);
    bft_set_interrupt_hook(NULL, NULL);
    CHECK(v == NULL && err.code == BFT_ECANCEL, "finish not interrupted (%s)", err.msg);
    free(v);
    bft_wp_trainer_free(tr);
}

int main(void)
{
    /* The bert-base vocabularies are shared data, not part of the repository
     * ($BFT_SHARED_DATA/vocab). Outside CI, a checkout without them skips this
     * test with a clear line; in CI (CI=true) their absence is a failure. */
    if (access(data_dir(), R_OK) != 0 && !(getenv("CI") && strcmp(getenv("CI"), "true") == 0)) {
        printf("skip - tokenizer goldens: %s not found (the bert-base vocabularies are shared data, "
               "not in the repository; set BFT_SHARED_DATA)\n", data_dir());
        printf("RESULT: 0 passed, 0 failed\n");
        return 0;
    }
    tk_cased = load_vocab("bert-base-cased", 0);
    tk_uncased = load_vocab("bert-base-uncased", 1);
    if (!tk_cased || !tk_uncased || load_goldens() != 0) {
        fprintf(stderr, "cannot load vocabularies (%s/vocab) or tests/data/tok/goldens.jsonl; run from the repo root\n",
                data_dir());
        printf("RESULT: 0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_goldens_cased);
    RUN(test_goldens_uncased);
    RUN(test_goldens_minilm);
    RUN(test_goldens_other_settings);
    RUN(test_decode_goldens);
    RUN(test_truncation);
    RUN(test_specials_and_vocab);
    RUN(test_vocab_errors);
    RUN(test_invalid_utf8);
    RUN(test_edge_strings);
    RUN(test_threads);
    RUN(test_vocab_learning);
    RUN(test_trainer_matches_naive);
    RUN(test_streaming_equals_whole);
    RUN(test_huge_text);
    RUN(test_trainer_bounds);
    for (size_t i = 0; i < ngoldens; i++) {
        free(goldens[i].text);
        for (int k = 0; k < 4; k++) free(goldens[i].ids[k]);
        for (int k = 0; k < 3; k++) free(goldens[i].dec[k]);
    }
    free(goldens);
    bft_tokenizer_free(tk_cased);
    bft_tokenizer_free(tk_uncased);
    return test_summary();
}
