/*
 * fuzz_ptbin.c — libFuzzer target for the pytorch_model.bin reader (zip
 * archive, legacy stream, restricted pickle interpreter).
 *
 *   make fuzz BUILD=build/fuzzdir
 *   build/fuzzdir/fuzz/fuzz_ptbin -max_total_time=600 tests/fuzz/corpus/fuzz_ptbin
 *
 * Each input is read twice:
 *   1. as a whole file (zip or legacy), from an exactly sized heap copy at an
 *      odd address;
 *   2. as the pickle itself: wrapped as archive/data.pkl in a stored zip built
 *      here, with members archive/data/0 .. archive/data/3 of 256 bytes each,
 *      so that mutations reach the interpreter directly.
 * A success must give safetensors bytes that bft_st_parse accepts, with every
 * float tensor convertible; a refusal must carry a code and a message. Any
 * violation aborts. Nothing in the input can make the reader run code: the
 * target would notice a created /tmp file only indirectly, so the unit test
 * test_ptbin checks that with real malicious pickles.
 * Seeds: tests/fuzz/corpus/fuzz_ptbin (tests/fuzz/make_corpus.py).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ptbin.h"
#include "safetensors.h"

static void check(const unsigned char *buf, size_t size)
{
    size_t out_len = 0;
    bft_error err;
    bft_clear_error(&err);
    void *st = bft_pt_to_safetensors(buf, size, &out_len, &err);
    if (st) {
        bft_st_file f;
        if (bft_st_parse(st, out_len, &f, &err) != 0)
            abort();
        for (int i = 0; i < f.n; i++) {
            const bft_st_tensor *t = &f.t[i];
            if (t->dtype == BFT_ST_F32 || t->dtype == BFT_ST_F16 || t->dtype == BFT_ST_BF16) {
                float *o = malloc(t->numel * sizeof(float) + 1);
                if (o && bft_st_to_f32(t, o, &err) != 0)
                    abort();
                free(o);
            }
        }
        bft_st_release(&f);
        free(st);
    } else if (err.code == BFT_OK || err.msg[0] == '\0') {
        abort();
    }
}

static unsigned char *put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    return p + 2;
}

static unsigned char *put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return p + 4;
}

/* A stored zip of the named members (no CRCs: the reader does not check them). */
static unsigned char *make_zip(const char *const *names, const unsigned char *const *data, const size_t *sizes,
                               int n, size_t *out_len)
{
    size_t total = 22, off = 0;
    for (int i = 0; i < n; i++)
        total += 30 + 46 + 2 * strlen(names[i]) + sizes[i];
    unsigned char *z = malloc(total), *p = z;
    uint32_t offs[8];
    if (!z)
        return NULL;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        offs[i] = (uint32_t)(p - z);
        p = put32(p, 0x04034b50u);
        p = put16(p, 20);
        p = put16(p, 0);
        p = put16(p, 0);
        p = put32(p, 0);
        p = put32(p, 0);
        p = put32(p, (uint32_t)sizes[i]);
        p = put32(p, (uint32_t)sizes[i]);
        p = put16(p, (unsigned)nl);
        p = put16(p, 0);
        memcpy(p, names[i], nl);
        p += nl;
        if (sizes[i])
            memcpy(p, data[i], sizes[i]);
        p += sizes[i];
    }
    off = (size_t)(p - z);
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        p = put32(p, 0x02014b50u);
        p = put16(p, 20);
        p = put16(p, 20);
        p = put16(p, 0);
        p = put16(p, 0);
        p = put32(p, 0);
        p = put32(p, 0);
        p = put32(p, (uint32_t)sizes[i]);
        p = put32(p, (uint32_t)sizes[i]);
        p = put16(p, (unsigned)nl);
        p = put16(p, 0);
        p = put16(p, 0);
        p = put16(p, 0);
        p = put16(p, 0);
        p = put32(p, 0);
        p = put32(p, offs[i]);
        memcpy(p, names[i], nl);
        p += nl;
    }
    size_t cd = (size_t)(p - z) - off;
    p = put32(p, 0x06054b50u);
    p = put16(p, 0);
    p = put16(p, 0);
    p = put16(p, (unsigned)n);
    p = put16(p, (unsigned)n);
    p = put32(p, (uint32_t)cd);
    p = put32(p, (uint32_t)off);
    p = put16(p, 0);
    *out_len = (size_t)(p - z);
    return z;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *raw = malloc(size + 1), *buf = raw + 1;
    if (!raw)
        return 0;
    if (size)
        memcpy(buf, data, size);
    check(buf, size);
    free(raw);

    if (size < (1u << 20)) {
        static unsigned char storage[256];
        const char *names[] = {"archive/data.pkl", "archive/data/0", "archive/data/1", "archive/data/2",
                               "archive/data/3"};
        const unsigned char *d[] = {data, storage, storage, storage, storage};
        size_t sizes[] = {size, 256, 256, 256, 256}, zl = 0;
        for (int i = 0; i < 256; i++)
            storage[i] = (unsigned char)(i * 37);
        unsigned char *z = make_zip(names, d, sizes, 5, &zl);
        if (z) {
            unsigned char *exact = malloc(zl);
            if (exact) {
                memcpy(exact, z, zl);
                check(exact, zl);
                free(exact);
            }
            free(z);
        }
    }
    return 0;
}
