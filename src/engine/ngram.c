/*
 * ngram.c — the n-gram head (ngram.h): features, fitting by L-BFGS with
 * cross-validated regularisation, its place in a model's parameter block and
 * the mixing with the encoder's probabilities.
 */
#include "ngram.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "resource.h"
#include "rng.h"
#include "tok_internal.h"

#define KEY_BITS 47
#define KEY_MASK ((UINT64_C(1) << KEY_BITS) - 1)
#define GROUP_CHAR (UINT64_C(1) << KEY_BITS)
#define HALF_BITS 24
#define HALF_MASK ((UINT64_C(1) << HALF_BITS) - 1)
#define SEED_WORD UINT64_C(0x6e6772616d2d7764)
#define SEED_CHAR UINT64_C(0x6e6772616d2d6368)
#define CHAR_MIN_N 2
#define CHAR_MAX_N 5
#define MIN_DF 2
#define LBFGS_M 6

/* ---- featurisation ------------------------------------------------------ */

/* Grow *p (elements of size sz) to hold at least need; 0 or -1 on OOM. */
static int grow(void **p, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * sz);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* One text's tokens (bytes and offsets) and keys, reused between texts. */
typedef struct featurizer {
    tok_norm norm;
    char *bytes;
    size_t nbytes, bytes_cap;
    size_t *off;             /* token i at bytes[off[i] .. off[i+1]) */
    size_t ntok, off_cap;
    uint64_t *keys;
    size_t nkeys, keys_cap;
    char *scratch;
    size_t scratch_cap;
    size_t *cps;             /* code point offsets of one padded token */
    size_t cps_cap;
    int oom;
} featurizer;

static int fz_word(void *ctx, const char *w, size_t len)
{
    featurizer *f = ctx;
    if (f->ntok >= BFT_NGRAM_MAX_WORDS)
        return 1; /* the rest of the text is not read */
    if (grow((void **)&f->bytes, &f->bytes_cap, f->nbytes + len, 1) ||
        grow((void **)&f->off, &f->off_cap, f->ntok + 2, sizeof(size_t))) {
        f->oom = 1;
        return 1;
    }
    memcpy(f->bytes + f->nbytes, w, len);
    f->nbytes += len;
    f->off[++f->ntok] = f->nbytes;
    return 0;
}

static int fz_special(void *ctx, int spec_index)
{
    (void)ctx;
    (void)spec_index;
    return 0;
}

static void fz_init(featurizer *f)
{
    memset(f, 0, sizeof *f);
    f->norm.lower = 1;
    f->norm.strip = 1;
    f->norm.chinese = 1;
    f->norm.nspec = 0;
    tok_norm_finish(&f->norm);
}

static void fz_free(featurizer *f)
{
    free(f->bytes);
    free(f->off);
    free(f->keys);
    free(f->scratch);
    free(f->cps);
}

static int fz_key(featurizer *f, uint64_t group, const char *s, size_t n)
{
    if (grow((void **)&f->keys, &f->keys_cap, f->nkeys + 1, sizeof(uint64_t)))
        return -1;
    f->keys[f->nkeys++] = group | (tok_hash(s, n, group ? SEED_CHAR : SEED_WORD) & KEY_MASK);
    return 0;
}

/* Code points of s[0..n) (valid UTF-8, as the pre-tokenizer gives it). */
static size_t count_cps(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int key_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The keys of one text into f->keys (sorted, with repeats). 0, -1 OOM, TOK_INTERRUPTED. */
static int fz_text(featurizer *f, const char *text, size_t len)
{
    tok_ws ws;
    tok_sink sink = {fz_special, fz_word, f, NULL};
    f->nbytes = f->ntok = f->nkeys = 0;
    f->oom = 0;
    if (grow((void **)&f->off, &f->off_cap, 2, sizeof(size_t)))
        return -1;
    f->off[0] = 0;
    tok_ws_init(&ws);
    int r = len ? tok_process(&f->norm, text, len, &ws, &sink) : 0;
    tok_ws_free(&ws);
    if (r == TOK_INTERRUPTED)
        return r;
    if (r < 0 || f->oom)
        return -1;
    /* words: unigrams and bigrams of the tokens of two or more characters */
    size_t prev = (size_t)-1;
    for (size_t i = 0; i < f->ntok; i++) {
        const char *w = f->bytes + f->off[i];
        size_t wl = f->off[i + 1] - f->off[i];
        if (count_cps(w, wl) < 2)
            continue;
        if (fz_key(f, 0, w, wl))
            return -1;
        if (prev != (size_t)-1) {
            const char *pw = f->bytes + f->off[prev];
            size_t pl = f->off[prev + 1] - f->off[prev];
            if (grow((void **)&f->scratch, &f->scratch_cap, pl + wl + 1, 1))
                return -1;
            memcpy(f->scratch, pw, pl);
            f->scratch[pl] = ' ';
            memcpy(f->scratch + pl + 1, w, wl);
            if (fz_key(f, 0, f->scratch, pl + 1 + wl))
                return -1;
        }
        prev = i;
    }
    /* characters: 2- to 5-grams of " token " */
    for (size_t i = 0; i < f->ntok; i++) {
        const char *w = f->bytes + f->off[i];
        size_t wl = f->off[i + 1] - f->off[i];
        size_t need = wl + 2;
        if (grow((void **)&f->scratch, &f->scratch_cap, need, 1) ||
            grow((void **)&f->cps, &f->cps_cap, need + 1, sizeof(size_t)))
            return -1;
        char *p = f->scratch;
        size_t *cp = f->cps;
        p[0] = ' ';
        memcpy(p + 1, w, wl);
        p[wl + 1] = ' ';
        /* byte offset of every code point, and the end */
        size_t ncp = 0;
        for (size_t b = 0; b < need; b++)
            if (((unsigned char)p[b] & 0xC0) != 0x80)
                cp[ncp++] = b;
        cp[ncp] = need;
        for (size_t n = CHAR_MIN_N; n <= CHAR_MAX_N; n++) {
            if (ncp <= n) {
                /* shorter than n (or exactly n): the padded token, once */
                if (fz_key(f, GROUP_CHAR, p, need))
                    return -1;
                break;
            }
            for (size_t s = 0; s + n <= ncp; s++)
                if (fz_key(f, GROUP_CHAR, p + cp[s], cp[s + n] - cp[s]))
                    return -1;
        }
    }
    qsort(f->keys, f->nkeys, sizeof(uint64_t), key_cmp);
    return 0;
}

/* The distinct keys of sorted k[0..n) into out (may be k itself) with how
 * often each occurs in cnt; returns how many. */
static size_t distinct_counts(const uint64_t *k, size_t n, uint64_t *out, uint32_t *cnt)
{
    size_t u = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && k[j] == k[i])
            j++;
        out[u] = k[i];
        cnt[u++] = (uint32_t)(j - i);
        i = j;
    }
    return u;
}

struct bft_ngram_corpus {
    featurizer fz;
    uint64_t *keys;          /* distinct keys of every row, row by row */
    uint32_t *counts;
    size_t nnz, cap;
    int64_t *off;            /* (rows + 1) */
    size_t rows, off_cap;
};

bft_ngram_corpus *bft_ngram_corpus_new(void)
{
    bft_ngram_corpus *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    fz_init(&c->fz);
    if (grow((void **)&c->off, &c->off_cap, 1, sizeof(int64_t))) {
        free(c);
        return NULL;
    }
    c->off[0] = 0;
    return c;
}

static int fz_error(int r, bft_error *err)
{
    if (r == TOK_INTERRUPTED)
        return bft_set_error(err, BFT_ECANCEL, "n-gram features: interrupted");
    return bft_set_error(err, BFT_ENOMEM, "n-gram features: out of memory");
}

int bft_ngram_corpus_add(bft_ngram_corpus *c, const char *text, size_t len, bft_error *err)
{
    int r = fz_text(&c->fz, text, len);
    if (r != 0)
        return fz_error(r, err);
    size_t cap = c->cap;
    if (grow((void **)&c->keys, &cap, c->nnz + c->fz.nkeys, sizeof(uint64_t)) ||
        grow((void **)&c->off, &c->off_cap, c->rows + 2, sizeof(int64_t)))
        return bft_set_error(err, BFT_ENOMEM, "n-gram features: out of memory");
    if (cap != c->cap) {
        /* the counts keep the keys' capacity */
        uint32_t *cn = realloc(c->counts, cap * sizeof(uint32_t));
        if (!cn)
            return bft_set_error(err, BFT_ENOMEM, "n-gram features: out of memory");
        c->counts = cn;
        c->cap = cap;
    }
    c->nnz += distinct_counts(c->fz.keys, c->fz.nkeys, c->keys + c->nnz, c->counts + c->nnz);
    c->off[++c->rows] = (int64_t)c->nnz;
    return BFT_OK;
}

int64_t bft_ngram_corpus_rows(const bft_ngram_corpus *c)
{
    return c ? (int64_t)c->rows : 0;
}

size_t bft_ngram_corpus_bytes(const bft_ngram_corpus *c)
{
    if (!c)
        return 0;
    return sizeof *c + c->cap * (sizeof(uint64_t) + sizeof(uint32_t)) + c->off_cap * sizeof(int64_t) +
        c->fz.bytes_cap + c->fz.off_cap * sizeof(size_t) + c->fz.keys_cap * sizeof(uint64_t) +
        c->fz.scratch_cap + c->fz.cps_cap * sizeof(size_t);
}

void bft_ngram_corpus_free(bft_ngram_corpus *c)
{
    if (!c)
        return;
    fz_free(&c->fz);
    free(c->keys);
    free(c->counts);
    free(c->off);
    free(c);
}

/* ---- vocabulary and TF-IDF rows ----------------------------------------- */

static uint64_t key_at(const float *keys, int64_t i)
{
    return ((uint64_t)keys[2 * i] << HALF_BITS) | (uint64_t)keys[2 * i + 1];
}

/* Index of key in the sorted (F, 2) float keys, or -1. */
static int64_t find_key(const float *keys, int64_t F, uint64_t key)
{
    int64_t lo = 0, hi = F - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        uint64_t k = key_at(keys, mid);
        if (k == key)
            return mid;
        if (k < key)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* TF-IDF values of one row's distinct (key, count) pairs: the features found
 * in keys (F) with their values, each group scaled to unit norm. Returns the
 * number written to col/val (room for n). */
static int64_t tfidf_row(const uint64_t *rk, const uint32_t *rc, int64_t n, const float *keys,
                         const float *idf, int64_t F, int32_t *col, float *val)
{
    int64_t m = 0;
    double ss[2] = {0, 0};
    for (int64_t i = 0; i < n; i++) {
        int64_t j = find_key(keys, F, rk[i]);
        if (j < 0)
            continue;
        float v = (float)((1.0 + log((double)rc[i])) * idf[j]);
        col[m] = (int32_t)j;
        val[m++] = v;
        ss[(rk[i] & GROUP_CHAR) != 0] += (double)v * v;
    }
    float inv[2] = {ss[0] > 0 ? (float)(1.0 / sqrt(ss[0])) : 0.0f, ss[1] > 0 ? (float)(1.0 / sqrt(ss[1])) : 0.0f};
    for (int64_t i = 0; i < m; i++)
        val[i] *= inv[(key_at(keys, col[i]) & GROUP_CHAR) != 0];
    return m;
}

typedef struct dfent {
    uint64_t key;
    int64_t df;
} dfent;

static int df_cmp_desc(const void *a, const void *b)
{
    const dfent *x = a, *y = b;
    if (x->df != y->df)
        return x->df > y->df ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

static int df_cmp_key(const void *a, const void *b)
{
    const dfent *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* The features of the training rows: keys (F, 2) and idf (F), malloc'd. */
static int build_vocab(const bft_ngram_corpus *c, const int64_t *rows, int64_t n, int64_t max_features,
                       float **keys_out, float **idf_out, int64_t *F_out, bft_error *err)
{
    size_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += (size_t)(c->off[rows[i] + 1] - c->off[rows[i]]);
    uint64_t *all = malloc((total ? total : 1) * sizeof(uint64_t));
    if (!all)
        return bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = c->off[rows[i]], b = c->off[rows[i] + 1];
        memcpy(all + at, c->keys + a, (size_t)(b - a) * sizeof(uint64_t));
        at += (size_t)(b - a);
    }
    qsort(all, total, sizeof(uint64_t), key_cmp);
    dfent *d = malloc((total ? total : 1) * sizeof(dfent));
    if (!d) {
        free(all);
        return bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
    }
    int64_t F = 0;
    for (size_t i = 0; i < total;) {
        size_t j = i;
        while (j < total && all[j] == all[i])
            j++;
        if ((int64_t)(j - i) >= MIN_DF) {
            d[F].key = all[i];
            d[F++].df = (int64_t)(j - i);
        }
        i = j;
    }
    free(all);
    if (F > max_features) {
        qsort(d, (size_t)F, sizeof(dfent), df_cmp_desc);
        F = max_features;
        qsort(d, (size_t)F, sizeof(dfent), df_cmp_key);
    }
    float *keys = malloc((size_t)(F ? F : 1) * 2 * sizeof(float));
    float *idf = malloc((size_t)(F ? F : 1) * sizeof(float));
    if (!keys || !idf) {
        free(d);
        free(keys);
        free(idf);
        return bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
    }
    for (int64_t j = 0; j < F; j++) {
        keys[2 * j] = (float)(d[j].key >> HALF_BITS);
        keys[2 * j + 1] = (float)(d[j].key & HALF_MASK);
        idf[j] = (float)(log((1.0 + (double)n) / (1.0 + (double)d[j].df)) + 1.0);
    }
    free(d);
    *keys_out = keys;
    *idf_out = idf;
    *F_out = F;
    return BFT_OK;
}

/* ---- the logistic regression ------------------------------------------- */

/* Rows as CSR over the features. */
typedef struct csr {
    int64_t n;
    int64_t *off;
    int32_t *col;
    float *val;
} csr;

static void csr_free(csr *x)
{
    free(x->off);
    free(x->col);
    free(x->val);
}

/* A problem: a subset of the CSR rows with labels and weights. */
typedef struct lr_problem {
    const csr *x;
    const int64_t *idx;      /* rows of x used (n) */
    int64_t n;
    const int32_t *y;        /* (x->n) labels by CSR row */
    const float *cw;         /* (K) class weights or NULL */
    int64_t F;
    int K;
    double lambda;           /* 1 / (C n) */
} lr_problem;

/* Logits (K) of CSR row r under theta = W (F, K) then b (K). */
static void lr_logits(const float *theta, int64_t F, int K, const csr *x, int64_t r, double *z)
{
    const float *b = theta + F * K;
    for (int k = 0; k < K; k++)
        z[k] = b[k];
    for (int64_t q = x->off[r]; q < x->off[r + 1]; q++) {
        const float *w = theta + (int64_t)x->col[q] * K;
        double v = x->val[q];
        for (int k = 0; k < K; k++)
            z[k] += v * w[k];
    }
}

/* In place: z (K) to its log-softmax. */
static void log_softmax(double *z, int K)
{
    double mx = z[0], s = 0;
    for (int k = 1; k < K; k++)
        mx = z[k] > mx ? z[k] : mx;
    for (int k = 0; k < K; k++)
        s += exp(z[k] - mx);
    double lse = mx + log(s);
    for (int k = 0; k < K; k++)
        z[k] -= lse;
}

/* Objective and gradient g (D = F K + K) at theta. */
static double lr_eval(const lr_problem *pb, const float *theta, float *g, double *z)
{
    int64_t F = pb->F;
    int K = pb->K;
    size_t D = (size_t)(F * K + K);
    double loss = 0, inv_n = 1.0 / (double)pb->n;
    memset(g, 0, D * sizeof(float));
    for (int64_t i = 0; i < pb->n; i++) {
        int64_t r = pb->idx[i];
        int y = pb->y[r];
        double wi = pb->cw ? pb->cw[y] : 1.0;
        lr_logits(theta, F, K, pb->x, r, z);
        log_softmax(z, K);
        loss -= wi * z[y];
        for (int k = 0; k < K; k++)
            z[k] = wi * (exp(z[k]) - (k == y)) * inv_n;
        float *gb = g + F * K;
        for (int k = 0; k < K; k++)
            gb[k] += (float)z[k];
        for (int64_t q = pb->x->off[r]; q < pb->x->off[r + 1]; q++) {
            float *gw = g + (int64_t)pb->x->col[q] * K;
            double v = pb->x->val[q];
            for (int k = 0; k < K; k++)
                gw[k] += (float)(v * z[k]);
        }
    }
    double reg = 0;
    for (size_t j = 0; j < (size_t)(F * K); j++) {
        reg += (double)theta[j] * theta[j];
        g[j] += (float)(pb->lambda * theta[j]);
    }
    return loss * inv_n + 0.5 * pb->lambda * reg;
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Minimise the problem from theta (in/out) by L-BFGS. Returns iterations, or
 * -1 when out of memory, -2 when interrupted. */
static int lbfgs(const lr_problem *pb, float *theta, int max_iter, double tol)
{
    size_t D = (size_t)(pb->F * pb->K + pb->K);
    float *mem = malloc(D * sizeof(float) * (4 + 2 * LBFGS_M));
    double *z = malloc((size_t)pb->K * sizeof(double));
    if (!mem || !z) {
        free(mem);
        free(z);
        return -1;
    }
    float *g = mem, *d = g + D, *xn = d + D, *gn = xn + D;
    float *S = gn + D, *Y = S + D * LBFGS_M;
    double rho[LBFGS_M], alpha[LBFGS_M];
    int head = 0, cnt = 0, it;
    double f = lr_eval(pb, theta, g, z);
    for (it = 0; it < max_iter; it++) {
        double gmax = 0;
        for (size_t j = 0; j < D; j++)
            gmax = fabs(g[j]) > gmax ? fabs(g[j]) : gmax;
        if (gmax < tol)
            break;
        if (bft_interrupted()) {
            free(mem);
            free(z);
            return -2;
        }
        /* two-loop recursion: d = -H g */
        for (size_t j = 0; j < D; j++)
            d[j] = -g[j];
        for (int h = 0; h < cnt; h++) {
            int s = (head - 1 - h + LBFGS_M) % LBFGS_M;
            alpha[s] = rho[s] * dot(S + (size_t)s * D, d, D);
            const float *ys = Y + (size_t)s * D;
            for (size_t j = 0; j < D; j++)
                d[j] -= (float)(alpha[s] * ys[j]);
        }
        double gamma = 1.0;
        if (cnt > 0) {
            int s = (head - 1 + LBFGS_M) % LBFGS_M;
            const float *ys = Y + (size_t)s * D;
            gamma = 1.0 / (rho[s] * dot(ys, ys, D));
        } else {
            double gn2 = sqrt(dot(g, g, D));
            gamma = gn2 > 1.0 ? 1.0 / gn2 : 1.0;
        }
        for (size_t j = 0; j < D; j++)
            d[j] = (float)(d[j] * gamma);
        for (int h = cnt - 1; h >= 0; h--) {
            int s = (head - 1 - h + LBFGS_M) % LBFGS_M;
            double beta = rho[s] * dot(Y + (size_t)s * D, d, D);
            const float *ss = S + (size_t)s * D;
            for (size_t j = 0; j < D; j++)
                d[j] += (float)((alpha[s] - beta) * ss[j]);
        }
        double gd = dot(g, d, D);
        if (!(gd < 0)) {
            /* not a descent direction: restart from steepest descent */
            cnt = 0;
            for (size_t j = 0; j < D; j++)
                d[j] = -g[j];
            gd = -dot(g, g, D);
        }
        /* backtracking line search (Armijo) */
        double step = 1.0, fn = 0;
        int ok = 0;
        for (int ls = 0; ls < 30; ls++) {
            for (size_t j = 0; j < D; j++)
                xn[j] = theta[j] + (float)(step * d[j]);
            fn = lr_eval(pb, xn, gn, z);
            if (fn <= f + 1e-4 * step * gd) {
                ok = 1;
                break;
            }
            step *= 0.5;
        }
        if (!ok) {
            break;
        }
        /* history */
        float *sn = S + (size_t)head * D, *yn = Y + (size_t)head * D;
        for (size_t j = 0; j < D; j++) {
            sn[j] = xn[j] - theta[j];
            yn[j] = gn[j] - g[j];
        }
        double sy = dot(sn, yn, D);
        memcpy(theta, xn, D * sizeof(float));
        memcpy(g, gn, D * sizeof(float));
        double fprev = f;
        f = fn;
        if (sy > 1e-12) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % LBFGS_M;
            cnt = cnt < LBFGS_M ? cnt + 1 : LBFGS_M;
        }
        if (fprev - f <= 1e-12 * (fabs(f) > 1 ? fabs(f) : 1)) {
            break;
        }
    }
    free(mem);
    free(z);
    return it;
}

static int argmax_d(const double *z, int K)
{
    int b = 0;
    for (int k = 1; k < K; k++)
        if (z[k] > z[b])
            b = k;
    return b;
}

bft_ngram_fit_opts bft_ngram_default_fit_opts(void)
{
    static const double grid[4] = {1.0, 10.0, 100.0, 1000.0};
    bft_ngram_fit_opts o;
    o.c_grid = grid;
    o.n_c = 4;
    o.folds = 3;
    o.max_iter = 300;
    o.tol = 1e-5;
    o.max_features = INT64_C(1) << 19;
    o.seed = 42;
    o.class_weights = NULL;
    return o;
}

void bft_ngram_head_free(bft_ngram_head *h)
{
    if (!h)
        return;
    free(h->keys);
    free(h->idf);
    free(h->w);
    free(h->b);
    h->keys = h->idf = h->w = h->b = NULL;
}

/* Stratified folds: the rows of each class in a seeded random order, dealt round-robin. */
static int assign_folds(const int32_t *labels, int64_t n, int K, int folds, uint64_t seed, int *fold)
{
    int64_t *perm = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    int64_t *seen = calloc((size_t)K, sizeof(int64_t));
    if (!perm || !seen) {
        free(perm);
        free(seen);
        return -1;
    }
    bft_rng rng;
    bft_rng_seed(&rng, seed);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)bft_rng_below(&rng, (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t i = 0; i < n; i++) {
        int y = labels[perm[i]];
        fold[perm[i]] = (int)(seen[y]++ % folds);
    }
    free(perm);
    free(seen);
    return 0;
}

int bft_ngram_fit(const bft_ngram_corpus *c, const int64_t *rows, const int32_t *labels, int64_t n, int K,
                  const bft_ngram_fit_opts *opts, bft_ngram_head *head, bft_error *err)
{
    bft_ngram_fit_opts o = opts ? *opts : bft_ngram_default_fit_opts();
    float *keys = NULL, *idf = NULL, *theta = NULL, *ftheta = NULL;
    int64_t F = 0;
    csr x = {0, NULL, NULL, NULL};
    int *fold = NULL;
    int64_t *idx = NULL, *storage = NULL;
    int rc = BFT_OK;

    memset(head, 0, sizeof *head);
    if (!c || !rows || !labels || n < 2 || K < 2 || o.n_c < 1 || o.folds < 2 || o.max_iter < 1 || !(o.tol > 0) ||
        o.max_features < 1)
        return bft_set_error(err, BFT_EINVAL, "n-gram head: invalid arguments");
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= K || rows[i] < 0 || rows[i] >= (int64_t)c->rows)
            return bft_set_error(err, BFT_EINVAL, "n-gram head: row %lld out of range", (long long)i);
    if ((rc = build_vocab(c, rows, n, o.max_features, &keys, &idf, &F, err)) != BFT_OK)
        return rc;
    if (F == 0) {
        /* no n-gram occurs in two training rows: no head (F = 0) */
        free(keys);
        free(idf);
        head->K = K;
        return BFT_OK;
    }
    /* CSR of the training rows */
    size_t nnz = 0;
    for (int64_t i = 0; i < n; i++)
        nnz += (size_t)(c->off[rows[i] + 1] - c->off[rows[i]]);
    size_t D = (size_t)(F * K + K);
    if (bft_memory_check(nnz * 8 + D * sizeof(float) * (8 + 2 * LBFGS_M) + (size_t)n * 24, "the n-gram head",
                         err) != BFT_OK) {
        free(keys);
        free(idf);
        return BFT_ENOMEM;
    }
    x.n = n;
    x.off = malloc((size_t)(n + 1) * sizeof(int64_t));
    x.col = malloc((nnz ? nnz : 1) * sizeof(int32_t));
    x.val = malloc((nnz ? nnz : 1) * sizeof(float));
    fold = malloc((size_t)n * sizeof(int));
    idx = malloc((size_t)n * sizeof(int64_t));
    theta = calloc(D * (size_t)o.folds, sizeof(float));
    ftheta = calloc(D, sizeof(float));
    storage = malloc(sizeof(int64_t) * 3 * (size_t)K);
    double *z = malloc(sizeof(double) * (size_t)K);
    if (!x.off || !x.col || !x.val || !fold || !idx || !theta || !ftheta || !storage || !z) {
        rc = bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
        goto done;
    }
    x.off[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = c->off[rows[i]], b = c->off[rows[i] + 1];
        x.off[i + 1] = x.off[i] + tfidf_row(c->keys + a, c->counts + a, b - a, keys, idf, F, x.col + x.off[i],
                                            x.val + x.off[i]);
    }
    if (assign_folds(labels, n, K, o.folds, o.seed, fold) < 0) {
        rc = bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
        goto done;
    }
    lr_problem pb = {&x, idx, 0, labels, o.class_weights, F, K, 0};
    double best_f1 = -1, best_c = o.c_grid[0];
    if (o.n_c > 1) {
        for (int ci = 0; ci < o.n_c; ci++) {
            bft_class_counts cc;
            memset(storage, 0, sizeof(int64_t) * 3 * (size_t)K);
            bft_counts_init(&cc, K, storage);
            for (int fo = 0; fo < o.folds; fo++) {
                pb.n = 0;
                for (int64_t i = 0; i < n; i++)
                    if (fold[i] != fo)
                        idx[pb.n++] = i;
                if (pb.n == 0 || pb.n == n)
                    continue;
                pb.lambda = 1.0 / (o.c_grid[ci] * (double)pb.n);
                float *th = theta + D * (size_t)fo; /* warm start from the previous C */
                int r = lbfgs(&pb, th, o.max_iter, o.tol);
                if (r < 0) {
                    rc = r == -2 ? bft_set_error(err, BFT_ECANCEL, "n-gram head: interrupted")
                                 : bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
                    goto done;
                }
                for (int64_t i = 0; i < n; i++)
                    if (fold[i] == fo) {
                        lr_logits(th, F, K, &x, i, z);
                        bft_counts_add(&cc, labels[i], argmax_d(z, K));
                    }
            }
            double f1 = bft_counts_macro_f1(&cc, 0);
            if (f1 > best_f1) {
                best_f1 = f1;
                best_c = o.c_grid[ci];
            }
        }
    }
    /* the final fit on every training row */
    pb.n = n;
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    pb.lambda = 1.0 / (best_c * (double)n);
    int iters = lbfgs(&pb, ftheta, o.max_iter, o.tol);
    if (iters < 0) {
        rc = iters == -2 ? bft_set_error(err, BFT_ECANCEL, "n-gram head: interrupted")
                         : bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
        goto done;
    }
    head->F = F;
    head->K = K;
    head->keys = keys;
    head->idf = idf;
    keys = idf = NULL;
    head->w = malloc((size_t)(F * K) * sizeof(float));
    head->b = malloc((size_t)K * sizeof(float));
    if (!head->w || !head->b) {
        bft_ngram_head_free(head);
        rc = bft_set_error(err, BFT_ENOMEM, "n-gram head: out of memory");
        goto done;
    }
    for (int64_t j = 0; j < F; j++)
        for (int k = 0; k < K; k++)
            head->w[(int64_t)k * F + j] = ftheta[j * K + k];
    memcpy(head->b, ftheta + F * K, (size_t)K * sizeof(float));
    head->C = best_c;
    head->cv_macro_f1 = o.n_c > 1 ? best_f1 : NAN;
    head->iterations = iters;
done:
    free(keys);
    free(idf);
    csr_free(&x);
    free(fold);
    free(idx);
    free(theta);
    free(ftheta);
    free(storage);
    free(z);
    return rc;
}

/* Log-probabilities (K) of the distinct (key, count) pairs under the head's
 * arrays; col/val: room for n. */
static void head_logprobs(const float *keys, const float *idf, const float *w, const float *b, int64_t F,
                          int K, const uint64_t *rk, const uint32_t *rc, int64_t n, int32_t *col, float *val,
                          float *logp)
{
    double zs[64], *z = K <= 64 ? zs : malloc((size_t)K * sizeof(double));
    int64_t m = tfidf_row(rk, rc, n, keys, idf, F, col, val);
    if (!z) {
        for (int k = 0; k < K; k++)
            logp[k] = -logf((float)K);
        return;
    }
    for (int k = 0; k < K; k++) {
        double s = b[k];
        const float *wk = w + (int64_t)k * F;
        for (int64_t q = 0; q < m; q++)
            s += (double)val[q] * wk[col[q]];
        z[k] = s;
    }
    log_softmax(z, K);
    for (int k = 0; k < K; k++)
        logp[k] = (float)z[k];
    if (z != zs)
        free(z);
}

void bft_ngram_head_logprobs(const bft_ngram_head *h, const bft_ngram_corpus *c, int64_t r, float *logp)
{
    int64_t a = c->off[r], n = c->off[r + 1] - a;
    int32_t *col = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    float *val = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!col || !val) {
        for (int k = 0; k < h->K; k++)
            logp[k] = -logf((float)h->K);
    } else {
        head_logprobs(h->keys, h->idf, h->w, h->b, h->F, h->K, c->keys + a, c->counts + a, n, col, val, logp);
    }
    free(col);
    free(val);
}

void bft_ngram_model_row_logprobs(const bft_model *m, const bft_ngram_corpus *c, int64_t r, float *logp)
{
    bft_ngram_head h;
    memset(&h, 0, sizeof h);
    h.F = m->parts.ngram;
    h.K = m->cfg.num_labels;
    h.keys = m->p.ng_keys;
    h.idf = m->p.ng_idf;
    h.w = m->p.ng_w;
    h.b = m->p.ng_b;
    bft_ngram_head_logprobs(&h, c, r, logp);
}

/* ---- in a model --------------------------------------------------------- */

int bft_model_drop_ngram(bft_model *m, bft_error *err)
{
    if (!m || m->parts.ngram == 0)
        return BFT_OK;
    bft_parts np = m->parts;
    np.ngram = 0;
    size_t count = bft_params_count(&m->cfg, np);
    float *mem = malloc(count * sizeof(float));
    if (!mem)
        return bft_set_error(err, BFT_ENOMEM, "model: out of memory");
    memcpy(mem, m->params_mem, count * sizeof(float)); /* the head is the block's tail */
    if (!m->params_external)
        free(m->params_mem);
    m->params_external = 0;
    m->params_mem = mem;
    m->num_params = count;
    m->parts = np;
    m->cfg.ngram_scale = 0;
    bft_params_assign(&m->p, mem, &m->cfg, m->parts);
    return BFT_OK;
}

int bft_model_set_ngram(bft_model *m, const bft_ngram_head *h, float scale, bft_error *err)
{
    if (!m || !h || !m->parts.classifier || m->cfg.num_labels != h->K ||
        m->cfg.problem_type != BFT_PROBLEM_SINGLE_LABEL || h->F < 1 || h->F > INT32_MAX || !(scale >= 0))
        return bft_set_error(err, BFT_EINVAL, "model: the n-gram head does not fit this model");
    int rc = bft_model_drop_ngram(m, err);
    if (rc != BFT_OK)
        return rc;
    bft_parts np = m->parts;
    np.ngram = (int)h->F;
    size_t count = bft_params_count(&m->cfg, np);
    if (bft_memory_check(count * sizeof(float), "the model with its n-gram head", err) != BFT_OK)
        return BFT_ENOMEM;
    float *mem = realloc(m->params_mem, count * sizeof(float));
    if (!mem)
        return bft_set_error(err, BFT_ENOMEM, "model: out of memory");
    m->params_mem = mem;
    m->num_params = count;
    m->parts = np;
    m->cfg.ngram_scale = scale;
    bft_params_assign(&m->p, mem, &m->cfg, m->parts);
    size_t F = (size_t)h->F, K = (size_t)h->K;
    memcpy(m->p.ng_keys, h->keys, F * 2 * sizeof(float));
    memcpy(m->p.ng_idf, h->idf, F * sizeof(float));
    memcpy(m->p.ng_w, h->w, F * K * sizeof(float));
    memcpy(m->p.ng_b, h->b, K * sizeof(float));
    return BFT_OK;
}

void bft_ngram_mix_logprobs(float *probs, const float *logp, int K, float scale)
{
    double mx = -INFINITY, s = 0;
    double zs[64], *z = K <= 64 ? zs : malloc((size_t)K * sizeof(double));
    if (!z)
        return;
    for (int k = 0; k < K; k++) {
        double p = probs[k] > 1e-30f ? (double)probs[k] : 1e-30;
        z[k] = log(p) + (double)scale * logp[k];
        mx = z[k] > mx ? z[k] : mx;
    }
    for (int k = 0; k < K; k++)
        s += (z[k] = exp(z[k] - mx));
    for (int k = 0; k < K; k++)
        probs[k] = (float)(z[k] / s);
    if (z != zs)
        free(z);
}

int bft_ngram_has_head(const bft_model *m)
{
    return m && m->parts.ngram > 0 && m->cfg.ngram_scale > 0;
}

int bft_ngram_text_logprobs(const bft_model *m, const char *text, size_t len, float *logp, bft_error *err)
{
    if (!m || m->parts.ngram == 0)
        return bft_set_error(err, BFT_EINVAL, "model: no n-gram head");
    int K = m->cfg.num_labels;
    featurizer f;
    fz_init(&f);
    int r = fz_text(&f, text, len);
    if (r != 0) {
        fz_free(&f);
        return fz_error(r, err);
    }
    /* distinct keys with counts, in place */
    size_t u;
    uint32_t *cnt = malloc((f.nkeys ? f.nkeys : 1) * sizeof(uint32_t));
    int32_t *col = malloc((f.nkeys ? f.nkeys : 1) * sizeof(int32_t));
    float *val = malloc((f.nkeys ? f.nkeys : 1) * sizeof(float));
    if (!cnt || !col || !val) {
        free(cnt);
        free(col);
        free(val);
        fz_free(&f);
        return bft_set_error(err, BFT_ENOMEM, "n-gram features: out of memory");
    }
    u = distinct_counts(f.keys, f.nkeys, f.keys, cnt);
    head_logprobs(m->p.ng_keys, m->p.ng_idf, m->p.ng_w, m->p.ng_b, m->parts.ngram, K, f.keys, cnt, (int64_t)u,
                  col, val, logp);
    free(cnt);
    free(col);
    free(val);
    fz_free(&f);
    return BFT_OK;
}

int bft_ngram_mix(const bft_model *m, const char *text, size_t len, float *probs, bft_error *err)
{
    if (!bft_ngram_has_head(m))
        return BFT_OK;
    int K = m->cfg.num_labels;
    float *logp = malloc((size_t)K * sizeof(float));
    if (!logp)
        return bft_set_error(err, BFT_ENOMEM, "n-gram features: out of memory");
    int rc = bft_ngram_text_logprobs(m, text, len, logp, err);
    if (rc == BFT_OK)
        bft_ngram_mix_logprobs(probs, logp, K, m->cfg.ngram_scale);
    free(logp);
    return rc;
}

int bft_ngram_check(const bft_model *m, bft_error *err)
{
    if (!m || m->parts.ngram == 0)
        return BFT_OK;
    if (!m->parts.classifier || m->cfg.problem_type != BFT_PROBLEM_SINGLE_LABEL)
        return bft_set_error(err, BFT_EMISMATCH, "model: an n-gram head needs a single-label classifier");
    uint64_t prev = 0;
    for (int64_t j = 0; j < m->parts.ngram; j++) {
        float hi = m->p.ng_keys[2 * j], lo = m->p.ng_keys[2 * j + 1];
        if (!(hi >= 0 && hi < (float)(1 << HALF_BITS) && lo >= 0 && lo < (float)(1 << HALF_BITS)) ||
            hi != floorf(hi) || lo != floorf(lo) || !isfinite(m->p.ng_idf[j]))
            return bft_set_error(err, BFT_EMISMATCH, "model: bft_ngram.keys row %lld is not a key", (long long)j);
        uint64_t k = key_at(m->p.ng_keys, j);
        if (j > 0 && k <= prev)
            return bft_set_error(err, BFT_EMISMATCH, "model: bft_ngram.keys are not in ascending order");
        prev = k;
    }
    return BFT_OK;
}
