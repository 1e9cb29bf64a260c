/*
 * cli_util.c — helpers shared by the bft-cli subcommands: option parsing,
 * reading files and stdin, JSON string output, CSV (RFC 4180, libcsv),
 * tokenizing texts into a bft_dataset, timing.
 */
#include "cli.h"

#include <csv.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "chunk.h"
#include "train.h"

/* ---- options -------------------------------------------------------------- */

static int parse_i64(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* Store val, the value of option --name, into o->dst by o's type; 0, or 2 after a message. */
static int opt_set_value(const char *cmd, const char *name, cli_opt *o, const char *val)
{
    switch (o->type) {
    case OPT_INT: {
        long long v;
        if (parse_i64(val, o->lo, o->hi, &v) < 0) {
            fprintf(stderr, "bft-cli %s: --%s wants an integer in [%lld, %lld], got \"%s\"\n", cmd, name,
                    (long long)o->lo, (long long)o->hi, val);
            return 2;
        }
        *(int *)o->dst = (int)v;
        break;
    }
    case OPT_U64: {
        char *end;
        unsigned long long v;
        errno = 0;
        v = strtoull(val, &end, 10);
        if (errno || end == val || *end || val[0] == '-') {
            fprintf(stderr, "bft-cli %s: --%s wants a non-negative integer, got \"%s\"\n", cmd, name, val);
            return 2;
        }
        *(uint64_t *)o->dst = (uint64_t)v;
        break;
    }
    case OPT_FLOAT:
    case OPT_DOUBLE: {
        double v;
        if (parse_double(val, &v) < 0 || v < o->flo || v > o->fhi) {
            fprintf(stderr, "bft-cli %s: --%s wants a number in [%g, %g], got \"%s\"\n", cmd, name, o->flo,
                    o->fhi, val);
            return 2;
        }
        if (o->type == OPT_DOUBLE)
            *(double *)o->dst = v;
        else
            *(float *)o->dst = (float)v;
        break;
    }
    case OPT_STR:
        *(const char **)o->dst = val;
        break;
    default:
        break;
    }
    o->seen = 1;
    return 0;
}

/* One positional argument into pos (at most maxpos); 0, or 2 after a message. */
static int add_positional(const char *cmd, char **pos, int *np, int maxpos, char *arg)
{
    if (*np >= maxpos) {
        fprintf(stderr, "bft-cli %s: unexpected argument \"%s\"\n", cmd, arg);
        return 2;
    }
    pos[(*np)++] = arg;
    return 0;
}

/* Option argv[*i] ("--name", "--name=value" or "--name value", moving *i past
 * the value); 0, or 2 after a message. */
static int parse_option(const char *cmd, int argc, char **argv, int *i, cli_opt *opts, int nopts)
{
    const char *a = argv[*i], *val = NULL, *eq = strchr(a, '=');
    char name[64];
    cli_opt *o = NULL;
    snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
    for (int k = 0; k < nopts; k++)
        if (strcmp(opts[k].name, name) == 0)
            o = &opts[k];
    if (!o) {
        fprintf(stderr, "bft-cli %s: unknown option --%s (see bft-cli %s --help)\n", cmd, name, cmd);
        return 2;
    }
    if (o->type == OPT_FLAG) {
        if (eq) {
            fprintf(stderr, "bft-cli %s: --%s takes no value\n", cmd, name);
            return 2;
        }
        *(int *)o->dst = 1;
        o->seen = 1;
        return 0;
    }
    if (eq)
        val = eq + 1;
    else if (*i + 1 < argc)
        val = argv[++*i];
    else {
        fprintf(stderr, "bft-cli %s: --%s needs a value\n", cmd, name);
        return 2;
    }
    return opt_set_value(cmd, name, o, val);
}

int cli_parse_args(const char *cmd, int argc, char **argv, cli_opt *opts, int nopts, char **pos, int maxpos,
                   int *npos)
{
    int np = 0, rc;
    for (int i = 0; i < nopts; i++)
        opts[i].seen = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            /* every argument after "--" is positional */
            for (i++; i < argc; i++)
                if ((rc = add_positional(cmd, pos, &np, maxpos, argv[i])) != 0)
                    return rc;
            break;
        }
        rc = strncmp(argv[i], "--", 2) != 0 ? add_positional(cmd, pos, &np, maxpos, argv[i])
                                            : parse_option(cmd, argc, argv, &i, opts, nopts);
        if (rc != 0)
            return rc;
    }
    for (int k = 0; k < nopts; k++)
        if (opts[k].required && !opts[k].seen) {
            fprintf(stderr, "bft-cli %s: --%s is required (see bft-cli %s --help)\n", cmd, opts[k].name, cmd);
            return 2;
        }
    *npos = np;
    return 0;
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }
    return 0;
}

/* ---- files ------------------------------------------------------------------ */

char *cli_read_stream(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        size_t got;
        if (cap - n < 2) {
            char *p;
            if (cap > SIZE_MAX / 2 || !(p = realloc(buf, cap * 2))) {
                free(buf);
                errno = ENOMEM;
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *cli_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    int e;
    if (!f)
        return NULL;
    buf = cli_read_stream(f, len);
    e = errno;
    fclose(f);
    errno = e;
    return buf;
}

int cli_next_line(FILE *f, char **line, size_t *cap, size_t *len)
{
    ssize_t n = getline(line, cap, f);
    if (n < 0)
        return 0;
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
        (*line)[--n] = '\0';
    *len = (size_t)n;
    return 1;
}

int cli_stdin_chunks(const char *cmd, int (*fn)(void *ctx, char **lines, size_t *lens, int64_t n),
                     void *ctx)
{
    int64_t chunk = isatty(STDIN_FILENO) ? 1 : CLI_LINE_CHUNK, n = 0;
    char **lines = calloc((size_t)chunk, sizeof *lines);
    size_t *lens = calloc((size_t)chunk, sizeof *lens), *caps = calloc((size_t)chunk, sizeof *caps);
    int rc = 0;
    if (!lines || !lens || !caps) {
        fprintf(stderr, "bft-cli %s: out of memory\n", cmd);
        rc = 1;
        goto out;
    }
    for (;;) {
        int more = cli_next_line(stdin, &lines[n], &caps[n], &lens[n]);
        if (more)
            n++;
        if (n == chunk || (!more && n > 0)) {
            if ((rc = fn(ctx, lines, lens, n)) != 0)
                break;
            n = 0;
        }
        if (!more)
            break;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "bft-cli %s: error reading stdin\n", cmd);
        rc = 1;
    }
out:
    if (lines)
        for (int64_t i = 0; i < chunk; i++)
            free(lines[i]);
    free(lines);
    free(lens);
    free(caps);
    return rc;
}

/* ---- output ----------------------------------------------------------------- */

void cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void cli_error(const char *cmd, const bft_error *err, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bft-cli %s: ", cmd);
    if (fmt) {
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (err)
            fputs(": ", stderr);
    }
    if (err)
        fprintf(stderr, "%s (%s)", err->msg[0] ? err->msg : "failed", bft_status_name(err->code));
    fputc('\n', stderr);
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double cli_peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
}

/* ---- model helpers -------------------------------------------------------- */

static int cli_precision = BFT_PRECISION_AUTO;

int cli_set_precision(const char *cmd, const char *precision)
{
    int p = bft_precision_parse(precision ? precision : "auto");
    if (p >= 0)
        cli_precision = p;
    else {
        fprintf(stderr, "bft-cli %s: --precision must be auto, fp32, bf16 or int8, got \"%s\"\n", cmd, precision);
        return 2;
    }
    return 0;
}

/* Select the engine's device (bft_set_device: inference; training commands copy
 * it into their options with bft_get_device). No fallback: cuda without a GPU fails. */
int cli_check_device(const char *cmd, const char *device)
{
    bft_error err;
    int dev = bft_device_parse(device ? device : "cpu");
    if (dev < 0) {
        fprintf(stderr, "bft-cli %s: --device must be cpu or cuda, got \"%s\"\n", cmd, device);
        return 2;
    }
    if (bft_set_device(dev, cli_precision, &err) != 0) {
        fprintf(stderr, "bft-cli %s: --device %s: %s (%s)\n", cmd, device, err.msg, bft_status_name(err.code));
        return 1;
    }
    return 0;
}

int cli_max_length(const char *cmd, const bft_model *m, int requested)
{
    int P = m->cfg.max_position_embeddings, ml = m->cfg.tok.model_max_length;
    if (requested > 0) {
        if (requested < 2 || requested > P) {
            fprintf(stderr, "bft-cli %s: --max-length must be in [2, %d] (max_position_embeddings), got %d\n", cmd, P,
                    requested);
            return -1;
        }
        return requested;
    }
    if (ml > 0 && ml < P)
        P = ml;
    return P < 512 ? P : 512;
}

int cli_encode(const bft_tokenizer *tok, const char *const *texts, const size_t *lens, int64_t n, int max_length,
               cli_tokens *out, bft_error *err)
{
    size_t cap = (size_t)(n > 0 ? n : 1) * 32, used = 0;
    int32_t *buf = malloc((size_t)max_length * sizeof *buf);
    out->tokens = malloc(cap * sizeof *out->tokens);
    out->offsets = malloc(((size_t)n + 1) * sizeof *out->offsets);
    out->n = n;
    if (!buf || !out->tokens || !out->offsets) {
        free(buf);
        cli_tokens_free(out);
        bft_set_error(err, BFT_ENOMEM, "out of memory");
        return -1;
    }
    out->offsets[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int k = bft_encode(tok, texts[i], lens[i], max_length, buf, err);
        if (k < 0) {
            free(buf);
            cli_tokens_free(out);
            return -1;
        }
        if (used + (size_t)k > cap) {
            int32_t *p;
            while (used + (size_t)k > cap)
                cap *= 2;
            if (!(p = realloc(out->tokens, cap * sizeof *p))) {
                free(buf);
                cli_tokens_free(out);
                bft_set_error(err, BFT_ENOMEM, "out of memory");
                return -1;
            }
            out->tokens = p;
        }
        memcpy(out->tokens + used, buf, (size_t)k * sizeof *buf);
        used += (size_t)k;
        out->offsets[i + 1] = (int64_t)used;
    }
    free(buf);
    return 0;
}

int cli_long_text(const char *cmd, const char *name)
{
    if (strcmp(name, "truncate") == 0)
        return -1;
    if (strcmp(name, "mean") == 0)
        return BFT_WINDOWS_MEAN;
    if (strcmp(name, "max") == 0)
        return BFT_WINDOWS_MAX;
    fprintf(stderr, "bft-cli %s: --long-text must be truncate, mean or max (not \"%s\")\n", cmd, name);
    return -2;
}

int cli_encode_windows(const bft_tokenizer *tok, const char *const *texts, const size_t *lens, int64_t n,
                       int max_length, int stride, cli_tokens *out, int64_t **first, bft_error *err)
{
    size_t cap = (size_t)(n > 0 ? n : 1) * 64, used = 0, wcap = (size_t)(n > 0 ? n : 1) + 1;
    int64_t nw = 0;
    out->tokens = malloc(cap * sizeof *out->tokens);
    out->offsets = malloc(wcap * sizeof *out->offsets);
    out->n = 0;
    *first = malloc(((size_t)n + 1) * sizeof **first);
    if (!out->tokens || !out->offsets || !*first) {
        cli_tokens_free(out);
        free(*first);
        *first = NULL;
        bft_set_error(err, BFT_ENOMEM, "out of memory");
        return -1;
    }
    out->offsets[0] = 0;
    (*first)[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t *ids;
        int64_t *off, k;
        if (bft_encode_windows(tok, texts[i], lens[i], max_length, stride, &ids, &off, &k, err) != 0)
            goto fail;
        size_t need = used + (size_t)off[k];
        int ok = 1;
        if (need > cap) {
            while (need > cap)
                cap *= 2;
            int32_t *p = realloc(out->tokens, cap * sizeof *p);
            ok = p != NULL;
            if (p)
                out->tokens = p;
        }
        if (ok && (size_t)(nw + k) + 1 > wcap) {
            while ((size_t)(nw + k) + 1 > wcap)
                wcap *= 2;
            int64_t *p = realloc(out->offsets, wcap * sizeof *p);
            ok = p != NULL;
            if (p)
                out->offsets = p;
        }
        if (!ok) {
            free(ids);
            free(off);
            bft_set_error(err, BFT_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(out->tokens + used, ids, (size_t)off[k] * sizeof *ids);
        for (int64_t w = 1; w <= k; w++)
            out->offsets[nw + w] = (int64_t)used + off[w];
        used = need;
        nw += k;
        (*first)[i + 1] = nw;
        free(ids);
        free(off);
    }
    out->n = nw;
    return 0;
fail:
    cli_tokens_free(out);
    free(*first);
    *first = NULL;
    return -1;
}

void cli_tokens_free(cli_tokens *t)
{
    free(t->tokens);
    free(t->offsets);
    t->tokens = NULL;
    t->offsets = NULL;
    t->n = 0;
}

/* ---- CSV -------------------------------------------------------------------- */

typedef struct csv_ctx {
    cli_csv *out;
    const char *cols[2];   /* wanted column names */
    int idx[2];            /* their indices, from the header */
    int64_t row;           /* 0 = header */
    int field;             /* index of the next field in the row */
    char *cur[2];          /* fields of the current row */
    size_t curlen[2];
    int64_t cap;
    int failed;
    char *msg;
    size_t msglen;
} csv_ctx;

static char *dup_mem(const void *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static void csv_field(void *s, size_t len, void *data)
{
    csv_ctx *c = data;
    if (c->failed)
        return;
    if (c->row == 0) {
        for (int k = 0; k < 2; k++)
            if (c->idx[k] < 0 && c->cols[k] && strlen(c->cols[k]) == len && memcmp(s, c->cols[k], len) == 0)
                c->idx[k] = c->field;
    } else {
        for (int k = 0; k < 2; k++)
            if (c->field == c->idx[k]) {
                free(c->cur[k]);
                c->cur[k] = dup_mem(s ? s : "", s ? len : 0);
                c->curlen[k] = s ? len : 0;
                if (!c->cur[k]) {
                    c->failed = 1;
                    snprintf(c->msg, c->msglen, "out of memory");
                }
            }
    }
    c->field++;
}

static void csv_row(int term, void *data)
{
    csv_ctx *c = data;
    (void)term;
    if (c->failed)
        return;
    if (c->row == 0) {
        for (int k = 0; k < 2; k++)
            if (c->cols[k] && c->idx[k] < 0) {
                c->failed = 1;
                snprintf(c->msg, c->msglen, "no column \"%s\" in the header row", c->cols[k]);
                return;
            }
    } else {
        cli_csv *o = c->out;
        for (int k = 0; k < 2; k++)
            if (c->cols[k] && !c->cur[k]) {
                c->failed = 1;
                snprintf(c->msg, c->msglen, "record %lld has %d fields, column \"%s\" is missing",
                         (long long)c->row, c->field, c->cols[k]);
                return;
            }
        if (o->n == c->cap) {
            int64_t ncap = c->cap ? c->cap * 2 : 1024;
            char **t = realloc(o->text, (size_t)ncap * sizeof *t);
            size_t *tl = t ? realloc(o->text_len, (size_t)ncap * sizeof *tl) : NULL;
            char **l = tl ? realloc(o->label, (size_t)ncap * sizeof *l) : NULL;
            if (t)
                o->text = t;
            if (tl)
                o->text_len = tl;
            if (l)
                o->label = l;
            if (!t || !tl || !l) {
                c->failed = 1;
                snprintf(c->msg, c->msglen, "out of memory");
                return;
            }
            c->cap = ncap;
        }
        o->text[o->n] = c->cur[0];
        o->text_len[o->n] = c->curlen[0];
        o->label[o->n] = c->cur[1]; /* NULL when no label column was asked for */
        c->cur[0] = c->cur[1] = NULL;
        o->n++;
    }
    c->row++;
    c->field = 0;
}

/* RFC 4180: spaces are part of fields. */
static int never_space(unsigned char ch)
{
    (void)ch;
    return 0;
}

int cli_read_csv(const char *path, const char *text_col, const char *label_col, cli_csv *out, char *msg,
                 size_t msglen)
{
    struct csv_parser p;
    csv_ctx c;
    size_t len;
    char *buf;
    int rc = 0;

    memset(out, 0, sizeof *out);
    memset(&c, 0, sizeof c);
    c.out = out;
    c.cols[0] = text_col;
    c.cols[1] = label_col;
    c.idx[0] = c.idx[1] = -1;
    c.msg = msg;
    c.msglen = msglen;
    buf = strcmp(path, "-") == 0 ? cli_read_stream(stdin, &len) : cli_read_file(path, &len);
    if (!buf) {
        snprintf(msg, msglen, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* a UTF-8 byte order mark is not part of the first column name */
    {
        size_t skip = len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
        if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0) {
            free(buf);
            snprintf(msg, msglen, "out of memory");
            return -1;
        }
        csv_set_space_func(&p, never_space);
        if (csv_parse(&p, buf + skip, len - skip, csv_field, csv_row, &c) != len - skip && !c.failed) {
            snprintf(msg, msglen, "%s: malformed CSV near record %lld: %s", path, (long long)c.row + 1,
                     csv_strerror(csv_error(&p)));
            rc = -1;
        }
        if (rc == 0 && !c.failed && csv_fini(&p, csv_field, csv_row, &c) != 0 && !c.failed) {
            snprintf(msg, msglen, "%s: malformed CSV at the end (unterminated quote?): %s", path,
                     csv_strerror(csv_error(&p)));
            rc = -1;
        }
        csv_free(&p);
    }
    free(buf);
    free(c.cur[0]);
    free(c.cur[1]);
    if (c.failed) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", msg);
        snprintf(msg, msglen, "%s: %s", path, tmp);
        rc = -1;
    }
    if (rc == 0 && c.row == 0) {
        snprintf(msg, msglen, "%s: empty file (a header row is required)", path);
        rc = -1;
    }
    if (rc != 0)
        cli_csv_free(out);
    return rc;
}

void cli_csv_free(cli_csv *c)
{
    for (int64_t i = 0; i < c->n; i++) {
        free(c->text[i]);
        if (c->label)
            free(c->label[i]);
    }
    free(c->text);
    free(c->text_len);
    free(c->label);
    memset(c, 0, sizeof *c);
}

/* ---- synthetic vocabularies ----------------------------------------------- */

char *cli_synthetic_vocab(int V, size_t *len)
{
    static const char *sp[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    char *v, *p;
    if (V < 5)
        return NULL;
    v = malloc((size_t)V * 16 + 16);
    if (!v)
        return NULL;
    p = v;
    for (int i = 0; i < V; i++)
        p += i < 5 ? sprintf(p, "%s\n", sp[i]) : sprintf(p, "w%d\n", i);
    *len = (size_t)(p - v);
    return v;
}
