/*
 * test_chunk.c — windows over long texts and the pooling of their
 * probabilities (src/engine/chunk.c):
 *   - counts, sizes and contents of the windows for many (n, max_length,
 *     stride) against a direct transcription of Hugging Face's overflowing
 *     windows (start += L - stride until a window reaches the end);
 *   - a 2,600-piece text through the real tokenizer: the first window is
 *     bft_encode's truncation, the windows joined without their overlaps are
 *     the text's pieces, consecutive windows share exactly the overlap;
 *   - mean / max pooling with and without renormalisation;
 *   - the combination of window embeddings: token-weighted mean, max.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "test.h"
#include "testfiles.h"
#include "tokenizer.h"

/* Reference: the windows' [start, end) over n pieces as HF computes them. */
static int64_t ref_windows(size_t n, int max_length, int stride, size_t *starts, size_t *ends,
                           int64_t cap)
{
    int L = max_length - 2;
    if (L < 1) {
        starts[0] = ends[0] = 0;
        return 1;
    }
    if (stride > L / 2)
        stride = L / 2;
    if (stride < 0)
        stride = 0;
    int64_t w = 0;
    size_t start = 0;
    for (;;) {
        size_t end = start + (size_t)L < n ? start + (size_t)L : n;
        if (w < cap) {
            starts[w] = start;
            ends[w] = end;
        }
        w++;
        if (end >= n)
            break;
        start += (size_t)(L - stride);
    }
    return w;
}

static void test_windows_vs_reference(void)
{
    enum { CAP = 5000 };
    size_t *starts = malloc(CAP * sizeof *starts), *ends = malloc(CAP * sizeof *ends);
    int32_t *pieces = malloc(3000 * sizeof *pieces);
    for (int i = 0; i < 3000; i++)
        pieces[i] = 1000 + i;
    int cases = 0, bad = 0;
    const int mls[] = {2, 3, 4, 5, 8, 16, 33, 128, 512};
    const int strides[] = {-3, 0, 1, 2, 7, 32, 64, 200, 1000};
    const size_t ns[] = {0, 1, 2, 3, 6, 7, 14, 31, 126, 127, 128, 129, 500, 2047, 2600, 3000};
    for (size_t a = 0; a < sizeof mls / sizeof *mls; a++)
        for (size_t b = 0; b < sizeof strides / sizeof *strides; b++)
            for (size_t c = 0; c < sizeof ns / sizeof *ns; c++) {
                int ml = mls[a], st = strides[b];
                size_t n = ns[c];
                int64_t rw = ref_windows(n, ml, st, starts, ends, CAP);
                int64_t w = bft_window_count(n, ml, st);
                size_t total = bft_window_ids(n, ml, st);
                cases++;
                if (w != rw) {
                    if (bad++ < 5)
                        CHECK(0, "n %zu max_length %d stride %d: %lld windows, reference %lld", n, ml,
                              st, (long long)w, (long long)rw);
                    continue;
                }
                int32_t *ids = malloc(total * sizeof *ids);
                int64_t *off = malloc((size_t)(w + 1) * sizeof *off);
                bft_windows(pieces, n, ml, st, 2, 3, ids, off);
                int ok = off[0] == 0 && (size_t)off[w] == total;
                for (int64_t k = 0; ok && k < w; k++) {
                    size_t len = ends[k] - starts[k];
                    ok = off[k + 1] - off[k] == (int64_t)len + 2 && ids[off[k]] == 2 &&
                         ids[off[k + 1] - 1] == 3 &&
                         (len == 0 ||
                          memcmp(ids + off[k] + 1, pieces + starts[k], len * sizeof *ids) == 0) &&
                         (int)len <= (ml - 2 > 0 ? ml - 2 : 0);
                }
                if (!ok && bad++ < 5)
                    CHECK(0, "n %zu max_length %d stride %d: window contents differ", n, ml, st);
                free(ids);
                free(off);
            }
    printf("  %d (pieces, max_length, stride) cases against the reference windows\n", cases);
    CHECK(bad == 0, "%d cases differ", bad);
    /* the overlap is clamped to half a window; nothing is lost at any size */
    CHECK(bft_window_overlap(128, 32) == 32 && bft_window_overlap(128, 100) == 63 &&
              bft_window_overlap(128, -1) == 0 && bft_window_overlap(2, 5) == 0,
          "overlaps %d %d %d %d", bft_window_overlap(128, 32), bft_window_overlap(128, 100),
          bft_window_overlap(128, -1), bft_window_overlap(2, 5));
    free(starts);
    free(ends);
    free(pieces);
}

static void test_long_text_windows(void)
{
    size_t vlen;
    char *vocab = test_read_file("tests/data/ckpt/tiny/vocab.txt", &vlen);
    CHECK(vocab != NULL, "cannot read the tiny vocabulary");
    if (!vocab)
        return;
    bft_error err;
    bft_tokenizer_opts o = bft_tokenizer_default_opts();
    bft_tokenizer *tok = bft_tokenizer_new(vocab, vlen, &o, &err);
    CHECK(tok != NULL, "tokenizer: %s", err.msg);
    if (!tok) {
        free(vocab);
        return;
    }
    /* ~2,600 pieces: words, word pieces, punctuation, an unknown word */
    const char *words[] = {"the", "stock", "market", "is", "up,", "bank", "shares", "working",
                           "sold!", "zzqx", "the", "dog", "sat", "on", "the", "mat."};
    size_t cap = 64 * 1024, used = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 1500; i++)
        used += (size_t)snprintf(text + used, cap - used, "%s ", words[(i * 7) % 16]);
    int32_t *pieces;
    size_t n;
    CHECK(bft_encode_pieces(tok, text, used, &pieces, &n, &err) == 0, "pieces: %s", err.msg);
    CHECK(n >= 2000, "only %zu pieces", n);
    const int mls[] = {128, 64, 512};
    for (int c = 0; c < 3; c++) {
        int ml = mls[c], stride = 32, L = ml - 2, S = bft_window_overlap(ml, stride);
        int32_t *ids;
        int64_t *off, w;
        CHECK(bft_encode_windows(tok, text, used, ml, stride, &ids, &off, &w, &err) == 0,
              "windows: %s", err.msg);
        CHECK(w == bft_window_count(n, ml, stride) && w > 1, "%lld windows", (long long)w);
        /* window 0 = truncation */
        int32_t *t = malloc((size_t)ml * sizeof *t);
        int tn = bft_encode(tok, text, used, ml, t, &err);
        CHECK(tn == off[1] - off[0] && memcmp(t, ids, (size_t)tn * sizeof *t) == 0,
              "max_length %d: the first window is not bft_encode's truncation", ml);
        free(t);
        /* joined without overlaps = the pieces; overlaps are exactly S pieces */
        size_t at = 0;
        int ok = 1;
        for (int64_t k = 0; k < w && ok; k++) {
            const int32_t *win = ids + off[k] + 1;
            size_t len = (size_t)(off[k + 1] - off[k] - 2);
            size_t skip = k == 0 ? 0 : (size_t)S;
            ok = len <= (size_t)L && (k == w - 1 || len == (size_t)L);
            if (k > 0)
                ok = ok && memcmp(win, pieces + at - S, (size_t)S * sizeof *win) == 0;
            ok = ok && at + len - skip <= n &&
                 memcmp(win + skip, pieces + at, (len - skip) * sizeof *win) == 0;
            at += len - skip;
        }
        CHECK(ok && at == n, "max_length %d: windows do not rebuild the %zu pieces (at %zu)", ml, n,
              at);
        printf("  %zu pieces, max_length %d, overlap %d: %lld windows rebuild the text\n", n, ml, S,
               (long long)w);
        free(ids);
        free(off);
    }
    /* an empty text is one window [CLS][SEP] */
    int32_t *ids;
    int64_t *off, w;
    CHECK(bft_encode_windows(tok, "", 0, 128, 32, &ids, &off, &w, &err) == 0 && w == 1 &&
              off[1] == 2,
          "empty text");
    free(ids);
    free(off);
    free(pieces);
    free(text);
    bft_tokenizer_free(tok);
    free(vocab);
}

static void test_pooling(void)
{
    /* 3 windows, 4 classes */
    const float p[12] = {0.1f, 0.2f, 0.3f, 0.4f, 0.7f, 0.1f, 0.1f, 0.1f, 0.25f, 0.25f, 0.25f, 0.25f};
    float out[4];
    bft_pool_windows(p, 3, 4, BFT_WINDOWS_MEAN, 0, out);
    CHECK(fabsf(out[0] - 0.35f) < 1e-7f && fabsf(out[1] - 0.55f / 3) < 1e-7f &&
              fabsf(out[3] - 0.25f) < 1e-7f,
          "mean %g %g %g %g", out[0], out[1], out[2], out[3]);
    bft_pool_windows(p, 3, 4, BFT_WINDOWS_MAX, 0, out);
    CHECK(out[0] == 0.7f && out[1] == 0.25f && out[2] == 0.3f && out[3] == 0.4f, "max %g %g %g %g",
          out[0], out[1], out[2], out[3]);
    bft_pool_windows(p, 3, 4, BFT_WINDOWS_MAX, 1, out);
    CHECK(fabsf(out[0] + out[1] + out[2] + out[3] - 1.0f) < 1e-6f &&
              fabsf(out[0] - 0.7f / 1.65f) < 1e-6f,
          "renormalised max %g (sum %g)", out[0], out[0] + out[1] + out[2] + out[3]);
    /* one window: pooling is the identity */
    bft_pool_windows(p, 1, 4, BFT_WINDOWS_MEAN, 0, out);
    CHECK(memcmp(out, p, sizeof out) == 0, "one window, mean");
    bft_pool_windows(p, 1, 4, BFT_WINDOWS_MAX, 0, out);
    CHECK(memcmp(out, p, sizeof out) == 0, "one window, max");
}

static void test_combine(void)
{
    /* 3 windows of 16, 16 and 4 tokens, 2 dimensions */
    const float e[6] = {1.0f, -2.0f, 3.0f, 0.5f, -1.0f, 4.0f};
    const int64_t ntok[3] = {16, 16, 4};
    float out[2];
    bft_combine_windows(e, ntok, 3, 2, BFT_WINDOWS_MEAN, out);
    /* (16*1 + 16*3 + 4*-1) / 36, (16*-2 + 16*0.5 + 4*4) / 36 */
    CHECK(fabsf(out[0] - 60.0f / 36) < 1e-7f && fabsf(out[1] - (-8.0f / 36)) < 1e-7f,
          "weighted mean %.9g %.9g", out[0], out[1]);
    /* not the plain mean (1, 0.833) */
    CHECK(fabsf(out[0] - 1.0f) > 0.5f, "weights used");
    bft_combine_windows(e, ntok, 3, 2, BFT_WINDOWS_MAX, out);
    CHECK(out[0] == 3.0f && out[1] == 4.0f, "max %g %g", out[0], out[1]);
    /* one window: copied bit for bit */
    const float odd[2] = {0.1f, 1.0f / 3.0f};
    bft_combine_windows(odd, ntok + 2, 1, 2, BFT_WINDOWS_MEAN, out);
    CHECK(memcmp(out, odd, sizeof out) == 0, "one window, mean");
    bft_combine_windows(odd, ntok, 1, 2, BFT_WINDOWS_MAX, out);
    CHECK(memcmp(out, odd, sizeof out) == 0, "one window, max");
}

int main(void)
{
    RUN(test_windows_vs_reference);
    RUN(test_long_text_windows);
    RUN(test_pooling);
    RUN(test_combine);
    return test_summary();
}
