/*
 * cmd_tokenize.c — `bft-cli tokenize`: BERT WordPiece tokenization of stdin
 * lines, and WordPiece vocabulary learning.
 *
 *   bft-cli tokenize --vocab FILE [--lower] [--max-length N] [--tokens]
 *       one text per stdin line → one line of space-separated ids,
 *       [CLS] … [SEP]; --max-length truncates (keeping [SEP]); without it
 *       nothing is truncated. --lower: uncased settings (lower-case + strip
 *       accents). --tokens prints token strings instead of ids.
 *   bft-cli tokenize --learn-vocab SIZE --out FILE [--lower] [--min-frequency N]
 *       learn a SIZE-token vocab.txt from the stdin lines.
 *
 * Invalid UTF-8 in a line is dropped (see src/engine/tokenizer.c).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

static void tokenize_usage(FILE *f)
{
    fprintf(f,
            "usage: bft-cli tokenize --vocab FILE [--lower] [--max-length N] [--tokens]\n"
            "       bft-cli tokenize --learn-vocab SIZE --out FILE [--lower] [--min-frequency N]\n"
            "  Reads one text per line from stdin. The first form prints one line of\n"
            "  space-separated ids per text ([CLS] ... [SEP], like Hugging Face\n"
            "  BertTokenizer); --lower selects the uncased settings, --max-length N\n"
            "  truncates to N ids, --tokens prints token strings instead of ids.\n"
            "  The second form learns a WordPiece vocabulary (vocab.txt) of SIZE tokens.\n");
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0, r;
    char *buf = malloc(cap);
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return NULL; }
    *len = n;
    return buf;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* append id as decimal */
static inline char *put_int(char *p, int32_t v)
{
    char tmp[12];
    int n = 0;
    uint32_t u = v < 0 ? (uint32_t)(-(int64_t)v) : (uint32_t)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) *p++ = '-';
    while (n) *p++ = tmp[--n];
    return p;
}

static int learn(long size, long minf, const char *out_path, int lower)
{
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    o.do_lower_case = lower;
    bft_error err;
    bft_wp_trainer *tr = bft_wp_trainer_new(&o, (int)size, (int)minf, &err);
    if (!tr) {
        fprintf(stderr, "bft-cli tokenize: %s\n", err.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lines = 0;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (bft_wp_trainer_feed(tr, line, (size_t)n, &err)) {
            fprintf(stderr, "bft-cli tokenize: %s\n", err.msg);
            free(line);
            bft_wp_trainer_free(tr);
            return 1;
        }
        lines++;
    }
    free(line);
    size_t len = 0;
    char *v = bft_wp_trainer_finish(tr, &len, &err);
    bft_wp_trainer_free(tr);
    if (!v) {
        fprintf(stderr, "bft-cli tokenize: %s\n", err.msg);
        return 1;
    }
    FILE *f = fopen(out_path, "wb");
    if (!f || fwrite(v, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "bft-cli tokenize: cannot write %s: %s\n", out_path, strerror(errno));
        free(v);
        return 1;
    }
    size_t ntok = 0;
    for (size_t i = 0; i < len; i++) ntok += v[i] == '\n';
    fprintf(stderr, "learned %zu tokens from %ld lines into %s\n", ntok, lines, out_path);
    free(v);
    return 0;
}

/* The options of `bft-cli tokenize`. */
typedef struct tokenize_args {
    const char *vocab_path, *out_path;
    int lower, tokens;
    long max_length, learn_size, minf;
} tokenize_args;

/* Parse the command line into a; -1 to go on, else the exit status. */
static int tokenize_parse(int argc, char **argv, tokenize_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(s, "--vocab") && more) a->vocab_path = argv[++i];
        else if (!strcmp(s, "--lower")) a->lower = 1;
        else if (!strcmp(s, "--tokens")) a->tokens = 1;
        else if (!strcmp(s, "--max-length") && more) {
            if (parse_int(argv[++i], 2, 1L << 24, &a->max_length)) {
                fprintf(stderr, "bft-cli tokenize: --max-length must be an integer >= 2\n");
                return 2;
            }
        } else if (!strcmp(s, "--learn-vocab") && more) {
            if (parse_int(argv[++i], 100, 1L << 24, &a->learn_size)) {
                fprintf(stderr, "bft-cli tokenize: --learn-vocab must be an integer >= 100\n");
                return 2;
            }
        } else if (!strcmp(s, "--min-frequency") && more) {
            if (parse_int(argv[++i], 0, 1L << 30, &a->minf)) {
                fprintf(stderr, "bft-cli tokenize: bad --min-frequency\n");
                return 2;
            }
        } else if (!strcmp(s, "--out") && more) a->out_path = argv[++i];
        else if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            tokenize_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bft-cli tokenize: unknown or incomplete option '%s'\n", s);
            tokenize_usage(stderr);
            return 2;
        }
    }
    return -1;
}

/* The tokenizer of a vocab.txt (it needs [CLS] and [SEP]); NULL after a message. */
static bft_tokenizer *tokenize_load(const char *vocab_path, int lower)
{
    size_t vlen = 0;
    char *vocab = slurp(vocab_path, &vlen);
    if (!vocab) {
        fprintf(stderr, "bft-cli tokenize: cannot read %s: %s\n", vocab_path, strerror(errno));
        return NULL;
    }
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    o.do_lower_case = lower;
    bft_error err;
    bft_tokenizer *tok = bft_tokenizer_new(vocab, vlen, &o, &err);
    free(vocab);
    if (!tok) {
        fprintf(stderr, "bft-cli tokenize: %s: %s\n", vocab_path, err.msg);
        return NULL;
    }
    bft_special_ids sp = bft_tokenizer_special(tok);
    if (sp.cls < 0 || sp.sep < 0) {
        fprintf(stderr, "bft-cli tokenize: %s has no [CLS] or [SEP] token\n", vocab_path);
        bft_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

/* Id k of a line's nids: ids[k], or [CLS] pieces… [SEP] when ids is NULL. */
static int32_t line_id(const int32_t *ids, const int32_t *pieces, size_t nids, size_t k, bft_special_ids sp)
{
    return ids ? ids[k] : k == 0 ? sp.cls : k == nids - 1 ? sp.sep : pieces[k - 1];
}

/* One output line (ids, or tokens with --tokens) into *out (grown as needed); its length, -1 out of memory. */
static ssize_t format_line(const bft_tokenizer *tok, const int32_t *ids, const int32_t *pieces, size_t nids,
                           int tokens, char **out, size_t *ocap)
{
    bft_special_ids sp = bft_tokenizer_special(tok);
    /* at most 11 chars per id, or the token lengths */
    size_t need = 16;
    for (size_t k = 0; k < nids; k++)
        need += tokens ? strlen(bft_tokenizer_token(tok, line_id(ids, pieces, nids, k, sp))) + 1 : 12;
    if (need > *ocap) {
        char *no = realloc(*out, need);
        if (!no)
            return -1;
        *out = no;
        *ocap = need;
    }
    char *p = *out;
    for (size_t k = 0; k < nids; k++) {
        int32_t id = line_id(ids, pieces, nids, k, sp);
        if (k) *p++ = ' ';
        if (tokens) {
            const char *t = bft_tokenizer_token(tok, id);
            size_t tl = strlen(t);
            memcpy(p, t, tl);
            p += tl;
        } else {
            p = put_int(p, id);
        }
    }
    *p++ = '\n';
    return p - *out;
}

/* Tokenize every stdin line to stdout: [CLS] … [SEP], truncated to max_length when given. */
static int tokenize_stream(const bft_tokenizer *tok, const tokenize_args *a)
{
    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    char *line = NULL, *out = NULL;
    size_t cap = 0, ocap = 0;
    int32_t *trunc = a->max_length ? malloc((size_t)a->max_length * sizeof *trunc) : NULL;
    int rc = 0;
    ssize_t n, len;
    bft_error err;
    bft_clear_error(&err);
    if (a->max_length && !trunc)
        rc = 1;
    while (!rc && (n = getline(&line, &cap, stdin)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        int32_t *ids = NULL, *pieces = NULL;
        size_t nids = 0;
        if (a->max_length) {
            int m = bft_encode(tok, line, (size_t)n, (int)a->max_length, trunc, &err);
            if (m < 0) { rc = 1; break; }
            ids = trunc;
            nids = (size_t)m;
        } else {
            size_t np = 0;
            if (bft_encode_pieces(tok, line, (size_t)n, &pieces, &np, &err)) { rc = 1; break; }
            nids = np + 2;
        }
        len = format_line(tok, ids, pieces, nids, a->tokens, &out, &ocap);
        free(pieces);
        if (len < 0 || fwrite(out, 1, (size_t)len, stdout) != (size_t)len)
            rc = 1;
    }
    if (rc && err.code) fprintf(stderr, "bft-cli tokenize: %s\n", err.msg);
    if (fflush(stdout) != 0) rc = 1;
    free(line);
    free(out);
    free(trunc);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    tokenize_args a;
    int rc;
    memset(&a, 0, sizeof a);
    if ((rc = tokenize_parse(argc, argv, &a)) >= 0)
        return rc;
    if (a.learn_size) {
        if (!a.out_path) {
            fprintf(stderr, "bft-cli tokenize: --learn-vocab needs --out FILE\n");
            return 2;
        }
        return learn(a.learn_size, a.minf, a.out_path, a.lower);
    }
    if (!a.vocab_path) {
        tokenize_usage(stderr);
        return 2;
    }
    bft_tokenizer *tok = tokenize_load(a.vocab_path, a.lower);
    if (!tok)
        return 1;
    rc = tokenize_stream(tok, &a);
    bft_tokenizer_free(tok);
    return rc;
}
