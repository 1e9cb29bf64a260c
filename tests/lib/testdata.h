/*
 * testdata.h — random test inputs shared by the engine's C tests.
 */
#ifndef BFT_TEST_DATA_H
#define BFT_TEST_DATA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"
#include "rng.h"
#include "train.h"

/* n normal(0, scale^2) floats from the engine's generator seeded with seed
 * (malloc'ed; the caller frees). */
static inline float *randn(size_t n, uint64_t seed, float scale)
{
    bft_rng r;
    float *x = malloc(n * sizeof *x);
    bft_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * bft_rng_normal(&r);
    return x;
}

/* A toy classification task of n examples: label k (of K) iff token 20+k
 * appears (once, at a random place), other tokens random from [30, 130),
 * lengths 4..14, [CLS]=2 and [SEP]=3 around them (toy_free frees it). */
typedef struct {
    bft_dataset ds;
    int32_t *tok, *lab;
    int64_t *off;
} toy;

static inline void toy_make(toy *t, int n, uint64_t seed, int K)
{
    bft_rng r;
    bft_rng_seed(&r, seed);
    t->tok = malloc((size_t)n * 16 * sizeof *t->tok);
    t->lab = malloc((size_t)n * sizeof *t->lab);
    t->off = malloc((size_t)(n + 1) * sizeof *t->off);
    t->off[0] = 0;
    for (int i = 0; i < n; i++) {
        int len = 4 + (int)bft_rng_below(&r, 11), k = (int)bft_rng_below(&r, (uint64_t)K);
        int32_t *s = t->tok + t->off[i];
        s[0] = 2;
        for (int j = 1; j < len - 1; j++)
            s[j] = 30 + (int32_t)bft_rng_below(&r, 100);
        s[1 + (int)bft_rng_below(&r, (uint64_t)(len - 2))] = 20 + k;
        s[len - 1] = 3;
        t->lab[i] = k;
        t->off[i + 1] = t->off[i] + len;
    }
    t->ds.n = n;
    t->ds.tokens = t->tok;
    t->ds.offsets = t->off;
    t->ds.labels = t->lab;
    t->ds.label_offsets = NULL;
    t->ds.label_ids = NULL;
}

static inline void toy_free(toy *t)
{
    free(t->tok);
    free(t->lab);
    free(t->off);
}

/* vocab.txt text of V lines: the five BERT specials, then "tok5" ... (malloc'ed;
 * *len receives its length). */
static inline char *synth_vocab(int V, size_t *len)
{
    char *v = malloc((size_t)V * 16 + 64), *p = v;
    const char *sp[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < V; i++)
        p += i < 5 ? sprintf(p, "%s\n", sp[i]) : sprintf(p, "tok%d\n", i);
    *len = (size_t)(p - v);
    return v;
}

#endif
