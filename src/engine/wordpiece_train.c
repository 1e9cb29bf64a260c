/*
 * wordpiece_train.c — learn a WordPiece vocabulary from texts, in the manner
 * of Hugging Face's WordPieceTrainer (a BPE trainer with the "##"
 * continuing-subword prefix):
 *
 *   1. every text goes through the same BertNormalizer + BertPreTokenizer as
 *      encoding (tok_process); literal special tokens are skipped; words are
 *      counted;
 *   2. vocabulary = [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0..4), then every
 *      character seen (sorted by code point), then the "##" form of every
 *      character seen inside a word (sorted by code point);
 *   3. each word is a sequence of symbols (first char plain, the rest "##c");
 *      repeatedly the most frequent adjacent pair (weighted by word counts) is
 *      merged into a new token a+b (b's "##" dropped) until the vocabulary
 *      has vocab_size tokens or no pair occurs min_frequency times.
 *
 * Determinism: unique words are processed in byte order, ties between equal
 * pair counts go to the pair with the smaller (left id, right id) — HF's rule;
 * HF's own hash-map iteration order (which decides its "##c" ids) is replaced
 * by code point order. The result does not depend on the order of feeding,
 * unless the word table outgrew its memory bound (bft_wp_trainer_set_memory)
 * and rare words were pruned: then which ones depends on when it happened.
 * If the specials plus the alphabet alone exceed vocab_size, all of them are
 * kept (as HF does without limit_alphabet), so the vocabulary is larger.
 *
 * Cost: pair counts in a hash map, a lazy max-heap, and per pair the list of
 * words containing it, so a merge only touches the words it changes.
 */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "resource.h"
#include "tok_internal.h"

static const char *const SPECIALS[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

/* string → index hash set over an arena of strings */
typedef struct strmap {
    char *arena;
    size_t arena_n, arena_cap;
    uint64_t *off;     /* per entry: offset << 24 | len  (len < 16M) */
    int64_t *count;
    int n, cap;        /* entries */
    int32_t *slots;    /* -1 empty */
    uint32_t mask;
} strmap;

static int strmap_init(strmap *m)
{
    memset(m, 0, sizeof *m);
    m->mask = 1023;
    m->slots = malloc((m->mask + 1) * sizeof *m->slots);
    if (!m->slots) return -1;
    memset(m->slots, 0xFF, (m->mask + 1) * sizeof *m->slots);
    return 0;
}

static void strmap_free(strmap *m)
{
    free(m->arena);
    free(m->off);
    free(m->count);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static inline const char *strmap_str(const strmap *m, int i, size_t *len)
{
    *len = (size_t)(m->off[i] & 0xFFFFFF);
    return m->arena + (m->off[i] >> 24);
}

static int strmap_grow(strmap *m)
{
    uint32_t nslots = (m->mask + 1) * 2;
    int32_t *s = malloc(nslots * sizeof *s);
    if (!s) return -1;
    memset(s, 0xFF, nslots * sizeof *s);
    for (int i = 0; i < m->n; i++) {
        size_t l;
        const char *p = strmap_str(m, i, &l);
        uint32_t h = (uint32_t)tok_hash(p, l, 7) & (nslots - 1);
        while (s[h] >= 0) h = (h + 1) & (nslots - 1);
        s[h] = i;
    }
    free(m->slots);
    m->slots = s;
    m->mask = nslots - 1;
    return 0;
}

/* Index of s (added with count 0 if new), or -1 on out of memory. */
static int strmap_get(strmap *m, const char *s, size_t len, int add)
{
    uint32_t h = (uint32_t)tok_hash(s, len, 7) & m->mask;
    for (;;) {
        int32_t e = m->slots[h];
        if (e < 0) break;
        size_t l;
        const char *p = strmap_str(m, e, &l);
        if (l == len && memcmp(p, s, len) == 0) return e;
        h = (h + 1) & m->mask;
    }
    if (!add) return -2;
    if (len >= 0xFFFFFF) return -1;
    if (m->n == m->cap) {
        int cap = m->cap ? m->cap * 2 : 1024;
        uint64_t *o = realloc(m->off, (size_t)cap * sizeof *o);
        if (!o) return -1;
        m->off = o;
        int64_t *c = realloc(m->count, (size_t)cap * sizeof *c);
        if (!c) return -1;
        m->count = c;
        m->cap = cap;
    }
    if (m->arena_n + len > m->arena_cap) {
        size_t cap = m->arena_cap ? m->arena_cap : 65536;
        while (cap < m->arena_n + len) cap *= 2;
        char *a = realloc(m->arena, cap);
        if (!a) return -1;
        m->arena = a;
        m->arena_cap = cap;
    }
    if ((m->arena_n >> 40) != 0) return -1;
    memcpy(m->arena + m->arena_n, s, len);
    int i = m->n++;
    m->off[i] = ((uint64_t)m->arena_n << 24) | len;
    m->count[i] = 0;
    m->arena_n += len;
    m->slots[h] = i;
    if ((uint32_t)m->n * 2 > m->mask + 1 && strmap_grow(m)) return -1;
    return i;
}

struct bft_wp_trainer {
    bft_tokenizer_opts opts;
    tok_norm norm;
    int vocab_size;
    int min_frequency;
    strmap words;
    int oom;
    size_t mem_limit;      /* bytes for the table and bft_wp_trainer_finish (0: none) */
    size_t pruned;         /* distinct words dropped by pruning */
    int64_t prune_below;   /* the last pruning dropped words seen fewer times than this */
};

/* Bytes bft_wp_trainer_finish needs for a table of n words with arena_n
 * bytes, table included: per word its entry, order, start, length, count and
 * stamp (~80 bytes); per byte (>= per character) the symbol array and, at
 * worst, one pair with its heap entry and occurrence (~72 bytes). */
static size_t finish_bytes(size_t n, size_t arena_n)
{
    return n * 80 + arena_n * 72;
}

/* Keep the table within mem_limit: drop the words seen fewest times (all
 * words with a count below the smallest threshold that frees half the
 * budget). Returns 0 or -1 (out of memory). */
static int prune_words(bft_wp_trainer *tr)
{
    strmap *m = &tr->words;
    int64_t below = 2;
    for (;;) {
        size_t n = 0, bytes = 0;
        for (int i = 0; i < m->n; i++)
            if (m->count[i] >= below) {
                n++;
                bytes += (size_t)(m->off[i] & 0xFFFFFF);
            }
        if (finish_bytes(n, bytes) <= tr->mem_limit / 2 || n == 0)
            break;
        below = below < ((int64_t)1 << 40) ? below * 2 : below + 1;
    }
    strmap k;
    if (strmap_init(&k)) return -1;
    for (int i = 0; i < m->n; i++) {
        if (m->count[i] < below) {
            tr->pruned++;
            continue;
        }
        size_t l;
        const char *p = strmap_str(m, i, &l);
        int j = strmap_get(&k, p, l, 1);
        if (j < 0) {
            strmap_free(&k);
            return -1;
        }
        k.count[j] = m->count[i];
    }
    strmap_free(m);
    *m = k;
    tr->prune_below = below;
    return 0;
}

static int tr_special(void *ctx, int k)
{
    (void)ctx;
    (void)k;
    return 0;
}

static int tr_word(void *ctx, const char *w, size_t len)
{
    bft_wp_trainer *tr = ctx;
    if (len > TOK_MAX_WORD) return 0;   /* a > 4 KB "word" ([UNK] anyway) is not learned from */
    int i = strmap_get(&tr->words, w, len, 1);
    if (i < 0) {
        tr->oom = 1;
        return 1;
    }
    tr->words.count[i]++;
    if (tr->mem_limit && tr->words.count[i] == 1 &&
        finish_bytes((size_t)tr->words.n, tr->words.arena_n) > tr->mem_limit && prune_words(tr)) {
        tr->oom = 1;
        return 1;
    }
    return 0;
}

void bft_wp_trainer_set_memory(bft_wp_trainer *tr, size_t bytes)
{
    if (tr)
        tr->mem_limit = bytes;
}

size_t bft_wp_trainer_stats(const bft_wp_trainer *tr, size_t *pruned, long long *min_count)
{
    if (pruned) *pruned = tr ? tr->pruned : 0;
    if (min_count) *min_count = tr ? (long long)tr->prune_below : 0;
    return tr ? (size_t)tr->words.n : 0;
}

bft_wp_trainer *bft_wp_trainer_new(const bft_tokenizer_opts *opts, int vocab_size,
                                   int min_frequency, bft_error *err)
{
    if (vocab_size < 100) {
        bft_set_error(err, BFT_EINVAL, "wordpiece trainer: vocab_size must be >= 100 (got %d)",
                      vocab_size);
        return NULL;
    }
    bft_wp_trainer *tr = calloc(1, sizeof *tr);
    if (!tr || strmap_init(&tr->words)) {
        free(tr);
        bft_set_error(err, BFT_ENOMEM, "wordpiece trainer: out of memory");
        return NULL;
    }
    tr->opts = opts ? *opts : bft_tokenizer_default_opts();
    tr->vocab_size = vocab_size;
    tr->min_frequency = min_frequency;
    tr->norm.lower = tr->opts.do_lower_case != 0;
    tr->norm.strip = tr->opts.strip_accents < 0 ? tr->norm.lower : tr->opts.strip_accents != 0;
    tr->norm.chinese = tr->opts.tokenize_chinese_chars != 0;
    tr->norm.nspec = 5;
    for (int k = 0; k < 5; k++) {
        tr->norm.spec[k] = SPECIALS[k];
        tr->norm.spec_len[k] = (int)strlen(SPECIALS[k]);
    }
    tok_norm_finish(&tr->norm);
    return tr;
}

void bft_wp_trainer_free(bft_wp_trainer *tr)
{
    if (!tr) return;
    strmap_free(&tr->words);
    free(tr);
}

int bft_wp_trainer_feed(bft_wp_trainer *tr, const char *text, size_t len, bft_error *err)
{
    if (!tr || (!text && len)) {
        bft_set_error(err, BFT_EINVAL, "wordpiece trainer: NULL argument");
        return -1;
    }
    tok_ws ws;
    tok_ws_init(&ws);
    tok_sink sink = {tr_special, tr_word, tr, NULL};
    int r = tok_process(&tr->norm, text, len, &ws, &sink);
    tok_ws_free(&ws);
    if (r == TOK_INTERRUPTED) {
        bft_set_error(err, BFT_ECANCEL, "wordpiece trainer: interrupted");
        return -1;
    }
    if (r < 0 || tr->oom) {
        tr->oom = 0;
        bft_set_error(err, BFT_ENOMEM, "wordpiece trainer: out of memory");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* merges                                                              */

typedef struct pairinfo {
    int32_t a, b;
    int64_t count;
    int32_t *where;    /* word indices (may repeat / be stale) */
    int32_t nwhere, capwhere;
} pairinfo;

typedef struct heapent {
    int64_t count;
    int32_t a, b;
} heapent;

typedef struct trainer_state {
    /* pair map */
    pairinfo *pairs;
    int32_t npairs, cappairs;
    int32_t *pslots;
    uint32_t pmask;
    /* heap */
    heapent *heap;
    size_t nheap, capheap;
    /* tokens */
    strmap toks;
    /* words */
    int32_t *sym;        /* all symbols */
    size_t *wstart;      /* per word offset into sym */
    int32_t *wlen;
    int64_t *wcount;
    int32_t *stamp;
    int nwords;
    /* pairs whose count went up during one merge */
    int32_t *changed;
    size_t nchanged, capchanged;
} trainer_state;

static inline uint32_t pair_hash(int32_t a, int32_t b)
{
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (uint32_t)x;
}

static int pairs_grow(trainer_state *s)
{
    uint32_t n = (s->pmask + 1) * 2;
    int32_t *sl = malloc(n * sizeof *sl);
    if (!sl) return -1;
    memset(sl, 0xFF, n * sizeof *sl);
    for (int32_t i = 0; i < s->npairs; i++) {
        uint32_t h = pair_hash(s->pairs[i].a, s->pairs[i].b) & (n - 1);
        while (sl[h] >= 0) h = (h + 1) & (n - 1);
        sl[h] = i;
    }
    free(s->pslots);
    s->pslots = sl;
    s->pmask = n - 1;
    return 0;
}

/* Index of pair (a,b), created with count 0 if absent; -1 on OOM. */
static int32_t pair_get(trainer_state *s, int32_t a, int32_t b)
{
    uint32_t h = pair_hash(a, b) & s->pmask;
    for (;;) {
        int32_t e = s->pslots[h];
        if (e < 0) break;
        if (s->pairs[e].a == a && s->pairs[e].b == b) return e;
        h = (h + 1) & s->pmask;
    }
    if (s->npairs == s->cappairs) {
        int32_t cap = s->cappairs ? s->cappairs * 2 : 4096;
        pairinfo *p = realloc(s->pairs, (size_t)cap * sizeof *p);
        if (!p) return -1;
        s->pairs = p;
        s->cappairs = cap;
    }
    int32_t i = s->npairs++;
    s->pairs[i] = (pairinfo){a, b, 0, NULL, 0, 0};
    s->pslots[h] = i;
    if ((uint32_t)s->npairs * 2 > s->pmask + 1 && pairs_grow(s)) return -1;
    return i;
}

static int pair_add_where(pairinfo *p, int32_t w)
{
    if (p->nwhere > 0 && p->where[p->nwhere - 1] == w) return 0;
    if (p->nwhere == p->capwhere) {
        int32_t cap = p->capwhere ? p->capwhere * 2 : 4;
        int32_t *n = realloc(p->where, (size_t)cap * sizeof *n);
        if (!n) return -1;
        p->where = n;
        p->capwhere = cap;
    }
    p->where[p->nwhere++] = w;
    return 0;
}

/* heap order: larger count first, then smaller (a, b) */
static inline int heap_before(const heapent *x, const heapent *y)
{
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int heap_push(trainer_state *s, heapent e)
{
    if (s->nheap == s->capheap) {
        size_t cap = s->capheap ? s->capheap * 2 : 4096;
        heapent *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return -1;
        s->heap = h;
        s->capheap = cap;
    }
    size_t i = s->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(&e, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
    return 0;
}

static heapent heap_pop(trainer_state *s)
{
    heapent top = s->heap[0];
    heapent last = s->heap[--s->nheap];
    size_t i = 0, n = s->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(&s->heap[c + 1], &s->heap[c])) c++;
        if (!heap_before(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* Add delta to the count of (a,b) for word w (delta > 0 records w). */
static int pair_delta(trainer_state *s, int32_t a, int32_t b, int64_t delta, int32_t w)
{
    int32_t i = pair_get(s, a, b);
    if (i < 0) return -1;
    pairinfo *p = &s->pairs[i];
    p->count += delta;
    if (delta > 0) {
        if (pair_add_where(p, w)) return -1;
        if (s->nchanged == s->capchanged) {
            size_t cap = s->capchanged ? s->capchanged * 2 : 256;
            int32_t *c = realloc(s->changed, cap * sizeof *c);
            if (!c) return -1;
            s->changed = c;
            s->capchanged = cap;
        }
        s->changed[s->nchanged++] = i;
    }
    return 0;
}

static int cmp_words(const void *x, const void *y, void *m_)
{
    const strmap *m = m_;
    size_t lx, ly;
    const char *px = strmap_str(m, *(const int *)x, &lx);
    const char *py = strmap_str(m, *(const int *)y, &ly);
    int c = memcmp(px, py, lx < ly ? lx : ly);
    if (c) return c;
    return lx < ly ? -1 : lx > ly;
}

/* Sort word indices in byte order (a bottom-up merge sort, polling the
 * interrupt hook: a million words take a while). Returns 1 when interrupted,
 * else 0 (sorted; without memory for the merge buffer, by qsort_r). */
static int sort_words(int *order, int n, const strmap *m)
{
    int *tmp = malloc((size_t)(n ? n : 1) * sizeof *tmp);
    long work = 0;
    if (!tmp) {
        qsort_r(order, (size_t)n, sizeof *order, cmp_words, (void *)m);
        return 0;
    }
    int *src = order, *dst = tmp;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                dst[k++] = cmp_words(&src[i], &src[j], (void *)m) <= 0 ? src[i++] : src[j++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
            work += hi - lo;
            if (work >= (1 << 18)) {
                work = 0;
                if (bft_interrupted()) {
                    free(tmp);
                    return 1;
                }
            }
        }
        int *t = src; src = dst; dst = t;
    }
    if (src != order)
        memcpy(order, src, (size_t)n * sizeof *order);
    free(tmp);
    return 0;
}

static void state_free(trainer_state *s)
{
    for (int32_t i = 0; i < s->npairs; i++) free(s->pairs[i].where);
    free(s->pairs);
    free(s->pslots);
    free(s->heap);
    strmap_free(&s->toks);
    free(s->sym);
    free(s->wstart);
    free(s->wlen);
    free(s->wcount);
    free(s->stamp);
    free(s->changed);
}

/* token id of a (plain or "##") single character, adding it if asked */
static int char_token(trainer_state *s, uint32_t cp, int cont, int add)
{
    char buf[8];
    int l = 0;
    if (cont) { buf[0] = '#'; buf[1] = '#'; l = 2; }
    l += tok_utf8_encode(cp, buf + l);
    return strmap_get(&s->toks, buf, (size_t)l, add);
}

/* The steps of bft_wp_trainer_finish return BFT_OK, BFT_ENOMEM or BFT_ECANCEL. */

/* Empty token map with the five special tokens, an empty pair map. */
static int wp_init(trainer_state *s)
{
    if (strmap_init(&s->toks)) return BFT_ENOMEM;
    s->pmask = 4095;
    s->pslots = malloc((s->pmask + 1) * sizeof *s->pslots);
    if (!s->pslots) return BFT_ENOMEM;
    memset(s->pslots, 0xFF, (s->pmask + 1) * sizeof *s->pslots);
    for (int k = 0; k < 5; k++)
        if (strmap_get(&s->toks, SPECIALS[k], strlen(SPECIALS[k]), 1) < 0) return BFT_ENOMEM;
    return BFT_OK;
}

/* Mark the code points of word p (l bytes) in plain, and those inside it in cont. */
static void wp_mark_chars(const uint8_t *p, size_t l, uint32_t *plain, uint32_t *cont)
{
    for (size_t j = 0; j < l;) {
        uint32_t cp;
        int cl = tok_utf8_decode(p + j, l - j, &cp);
        if (cl == 0) { j++; continue; }   /* cannot happen */
        plain[cp >> 5] |= 1u << (cp & 31);
        if (j > 0) cont[cp >> 5] |= 1u << (cp & 31);
        j += (size_t)cl;
    }
}

/* The alphabet: a token for every code point seen (plain) and seen inside a
 * word (##), in code point order. */
static int wp_alphabet(trainer_state *s, const strmap *W)
{
    uint32_t *plain = calloc(0x110000 / 32, sizeof *plain);   /* bitmaps over code points */
    uint32_t *cont = calloc(0x110000 / 32, sizeof *cont);
    int rc = plain && cont ? BFT_OK : BFT_ENOMEM;
    for (int i = 0; rc == BFT_OK && i < W->n; i++) {
        size_t l;
        const uint8_t *p = (const uint8_t *)strmap_str(W, i, &l);
        wp_mark_chars(p, l, plain, cont);
        if ((i & 0xFFFF) == 0xFFFF && bft_interrupted()) rc = BFT_ECANCEL;
    }
    for (uint32_t cp = 0; rc == BFT_OK && cp < 0x110000; cp++)
        if ((plain[cp >> 5] >> (cp & 31)) & 1 && char_token(s, cp, 0, 1) < 0) rc = BFT_ENOMEM;
    for (uint32_t cp = 0; rc == BFT_OK && cp < 0x110000; cp++)
        if ((cont[cp >> 5] >> (cp & 31)) & 1 && char_token(s, cp, 1, 1) < 0) rc = BFT_ENOMEM;
    free(plain);
    free(cont);
    return rc;
}

/* Every word (in order[]) as its sequence of character tokens, with its count. */
static int wp_words(trainer_state *s, const strmap *W, const int *order)
{
    int nw = W->n;
    size_t nsym = 0, at = 0;
    for (int i = 0; i < nw; i++) {
        size_t l;
        strmap_str(W, i, &l);
        nsym += l;   /* bytes >= chars */
    }
    s->sym = malloc((nsym + 1) * sizeof *s->sym);
    s->wstart = malloc((size_t)(nw ? nw : 1) * sizeof *s->wstart);
    s->wlen = malloc((size_t)(nw ? nw : 1) * sizeof *s->wlen);
    s->wcount = malloc((size_t)(nw ? nw : 1) * sizeof *s->wcount);
    s->stamp = malloc((size_t)(nw ? nw : 1) * sizeof *s->stamp);
    if (!s->sym || !s->wstart || !s->wlen || !s->wcount || !s->stamp) return BFT_ENOMEM;
    s->nwords = nw;
    for (int k = 0; k < nw; k++) {
        int i = order[k];
        size_t l;
        const uint8_t *p = (const uint8_t *)strmap_str(W, i, &l);
        s->wstart[k] = at;
        s->wcount[k] = W->count[i];
        s->stamp[k] = -1;
        int32_t n = 0;
        for (size_t j = 0; j < l;) {
            uint32_t cp;
            int cl = tok_utf8_decode(p + j, l - j, &cp);
            if (cl == 0) { j++; continue; }
            s->sym[at + (size_t)n++] = char_token(s, cp, j > 0, 0);
            j += (size_t)cl;
        }
        s->wlen[k] = n;
        at += (size_t)n;
        if ((k & 0xFFFF) == 0xFFFF && bft_interrupted()) return BFT_ECANCEL;
    }
    return BFT_OK;
}

/* Count every adjacent pair of symbols (weighted by word counts) and heap them. */
static int wp_count_pairs(trainer_state *s)
{
    for (int k = 0; k < s->nwords; k++) {
        const int32_t *q = s->sym + s->wstart[k];
        for (int32_t j = 0; j + 1 < s->wlen[k]; j++)
            if (pair_delta(s, q[j], q[j + 1], s->wcount[k], k)) return BFT_ENOMEM;
        if ((k & 0xFFFF) == 0xFFFF && bft_interrupted()) return BFT_ECANCEL;
    }
    for (int32_t i = 0; i < s->npairs; i++) {
        if (s->pairs[i].count > 0 &&
            heap_push(s, (heapent){s->pairs[i].count, s->pairs[i].a, s->pairs[i].b}))
            return BFT_ENOMEM;
        if ((i & 0xFFFF) == 0xFFFF && bft_interrupted()) return BFT_ECANCEL;
    }
    s->nchanged = 0;
    return BFT_OK;
}

/* The token A + B (without B's "##"), added: its id, or -1 out of memory. */
static int32_t wp_merged_token(trainer_state *s, int32_t A, int32_t B)
{
    size_t la, lb;
    const char *sa = strmap_str(&s->toks, A, &la);
    const char *sb = strmap_str(&s->toks, B, &lb);
    if (lb >= 2 && sb[0] == '#' && sb[1] == '#') { sb += 2; lb -= 2; }
    char *nt = malloc(la + lb + 1);
    if (!nt) return -1;
    memcpy(nt, sa, la);
    memcpy(nt + la, sb, lb);
    int32_t N = strmap_get(&s->toks, nt, la + lb, 1);
    free(nt);
    return N;
}

/* Replace every (A, B) in word w by N, moving the counts of the pairs around it. */
static int wp_merge_word(trainer_state *s, int32_t w, int32_t A, int32_t B, int32_t N)
{
    int32_t *q = s->sym + s->wstart[w];
    int32_t n = s->wlen[w], o = 0;
    int64_t c = s->wcount[w];
    for (int32_t j = 0; j < n;) {
        if (j + 1 < n && q[j] == A && q[j + 1] == B) {
            if (o > 0 && (pair_delta(s, q[o - 1], A, -c, w) || pair_delta(s, q[o - 1], N, c, w)))
                return BFT_ENOMEM;
            if (j + 2 < n && (pair_delta(s, B, q[j + 2], -c, w) || pair_delta(s, N, q[j + 2], c, w)))
                return BFT_ENOMEM;
            if (pair_delta(s, A, B, -c, w)) return BFT_ENOMEM;
            q[o++] = N;
            j += 2;
        } else {
            q[o++] = q[j++];
        }
    }
    s->wlen[w] = o;
    return BFT_OK;
}

/* Merge pair pi = (A, B) into the new token N in every word containing it
 * (merge number merge_no), then re-heap the pairs whose count went up. */
static int wp_apply_merge(trainer_state *s, int32_t pi, int32_t A, int32_t B, int32_t N, int merge_no)
{
    /* the where list is taken over because pair_delta may append to it (when N pairs with itself) */
    pairinfo *pp = &s->pairs[pi];
    int32_t nwhere = pp->nwhere;
    int32_t *where = pp->where;
    int rc = BFT_OK;
    pp->where = NULL;
    pp->nwhere = pp->capwhere = 0;
    for (int32_t wi = 0; rc == BFT_OK && wi < nwhere; wi++) {
        int32_t w = where[wi];
        if ((wi & 0xFFF) == 0xFFF && bft_interrupted()) {
            rc = BFT_ECANCEL;
            break;
        }
        if (s->stamp[w] == merge_no) continue;
        s->stamp[w] = merge_no;
        rc = wp_merge_word(s, w, A, B, N);
    }
    free(where);
    if (rc != BFT_OK) return rc;
    for (size_t k = 0; k < s->nchanged; k++) {
        pairinfo *p = &s->pairs[s->changed[k]];
        if (p->count > 0 && heap_push(s, (heapent){p->count, p->a, p->b})) return BFT_ENOMEM;
    }
    s->nchanged = 0;
    return BFT_OK;
}

/* Merge the most frequent pair until the vocabulary is full or no pair is
 * frequent enough (min_frequency). */
static int wp_merge(trainer_state *s, const bft_wp_trainer *tr)
{
    int64_t minf = tr->min_frequency > 1 ? tr->min_frequency : 1;
    int merge_no = 0, rc;
    while (s->toks.n < tr->vocab_size && s->nheap > 0) {
        if (bft_interrupted()) return BFT_ECANCEL;
        heapent top = heap_pop(s);
        int32_t pi = pair_get(s, top.a, top.b);
        if (pi < 0) return BFT_ENOMEM;
        int64_t cur = s->pairs[pi].count;
        if (cur != top.count) {
            /* stale entry: a fresher one exists if the count went up */
            if (cur > 0 && cur < top.count && heap_push(s, (heapent){cur, top.a, top.b})) return BFT_ENOMEM;
            continue;
        }
        if (cur < minf) break;
        int32_t N = wp_merged_token(s, top.a, top.b);
        if (N < 0) return BFT_ENOMEM;
        if ((rc = wp_apply_merge(s, pi, top.a, top.b, N, merge_no)) != BFT_OK) return rc;
        merge_no++;
    }
    return BFT_OK;
}

/* The tokens as vocab.txt (one per line, by id); NULL out of memory. */
static char *wp_vocab_text(const trainer_state *s, size_t *out_len)
{
    size_t total = 0, w = 0;
    for (int i = 0; i < s->toks.n; i++) {
        size_t l;
        strmap_str(&s->toks, i, &l);
        total += l + 1;
    }
    char *out = malloc(total + 1);
    if (!out) return NULL;
    for (int i = 0; i < s->toks.n; i++) {
        size_t l;
        const char *p = strmap_str(&s->toks, i, &l);
        memcpy(out + w, p, l);
        w += l;
        out[w++] = '\n';
    }
    out[w] = '\0';
    *out_len = w;
    return out;
}

char *bft_wp_trainer_finish(bft_wp_trainer *tr, size_t *out_len, bft_error *err)
{
    if (!tr || !out_len) {
        bft_set_error(err, BFT_EINVAL, "wordpiece trainer: NULL argument");
        return NULL;
    }
    trainer_state s;
    memset(&s, 0, sizeof s);
    const strmap *W = &tr->words;
    char *out = NULL;
    /* words in byte order */
    int *order = malloc((size_t)(W->n ? W->n : 1) * sizeof *order);
    int rc = wp_init(&s);
    if (rc == BFT_OK && !order) rc = BFT_ENOMEM;
    if (rc == BFT_OK) {
        for (int i = 0; i < W->n; i++)
            order[i] = i;
        if (W->n > 0 && sort_words(order, W->n, W)) rc = BFT_ECANCEL;
    }
    if (rc == BFT_OK) rc = wp_alphabet(&s, W);
    if (rc == BFT_OK) rc = wp_words(&s, W, order);
    if (rc == BFT_OK) rc = wp_count_pairs(&s);
    if (rc == BFT_OK) rc = wp_merge(&s, tr);
    if (rc == BFT_OK && !(out = wp_vocab_text(&s, out_len))) rc = BFT_ENOMEM;
    free(order);
    state_free(&s);
    if (rc == BFT_ENOMEM)
        bft_set_error(err, BFT_ENOMEM, "wordpiece trainer: out of memory");
    else if (rc == BFT_ECANCEL)
        bft_set_error(err, BFT_ECANCEL, "wordpiece trainer: interrupted");
    return out;
}

int bft_wp_trainer_set_vocab_size(bft_wp_trainer *tr, int vocab_size, bft_error *err)
{
    if (!tr || vocab_size < 100)
        return bft_set_error(err, BFT_EINVAL, "wordpiece trainer: vocab_size must be >= 100 (got %d)",
                             vocab_size);
    tr->vocab_size = vocab_size;
    return 0;
}
