/*
 * golden.h — reader of the golden files written by tests/ref/bert_ref.py
 * (tests/data/golden/NAME.bin): "BFTGOLD1", int32 record count, then per record
 * a 96-byte name, int32 type, int32 ndim, 4 int64 dims and the f32 data.
 * Shared by test_bert.c (CPU) and test_cuda.c (GPU).
 */
#ifndef BFT_TEST_GOLDEN_H
#define BFT_TEST_GOLDEN_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[96];
    int type, ndim;
    int64_t dims[4];
    int64_t numel;
    void *data;
} rec;

typedef struct {
    rec *r;
    int n;
    char *buf;
} golden;

static inline int golden_load(golden *g, const char *path)
{
    FILE *f = fopen(path, "rb");
    memset(g, 0, sizeof *g);
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    g->buf = malloc((size_t)len);
    if (!g->buf || fread(g->buf, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        return -1;
    }
    fclose(f);
    if (len < 12 || memcmp(g->buf, "BFTGOLD1", 8) != 0)
        return -1;
    int32_t n;
    memcpy(&n, g->buf + 8, 4);
    g->r = calloc((size_t)n, sizeof *g->r);
    char *p = g->buf + 12;
    for (int i = 0; i < n; i++) {
        rec *r = &g->r[i];
        memcpy(r->name, p, 96);
        r->name[95] = 0;
        p += 96;
        memcpy(&r->type, p, 4);
        memcpy(&r->ndim, p + 4, 4);
        memcpy(r->dims, p + 8, 32);
        p += 40;
        r->numel = 1;
        for (int d = 0; d < r->ndim; d++)
            r->numel *= r->dims[d];
        r->data = p;
        p += r->numel * 4;
        if (p > g->buf + len)
            return -1;
    }
    g->n = n;
    return 0;
}

static inline const rec *gfind(const golden *g, const char *name)
{
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->r[i].name, name))
            return &g->r[i];
    return NULL;
}

static inline void golden_free(golden *g)
{
    free(g->r);
    free(g->buf);
}

#endif
