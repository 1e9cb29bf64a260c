/*
 * test_ptbin.c — pytorch_model.bin (torch.save) reading, with the files of
 * tests/data/hf written by the real torch (tests/hf/make_test_files.py):
 *   - one state dict of every storage type, views (transposed, sliced with an
 *     offset), two names for one tensor, a scalar and an empty tensor, in the
 *     zip format (also rewritten with ZIP64 records) and the legacy format:
 *     every tensor equals what safetensors.torch wrote for the same dict
 *     (name, dtype, shape, bytes);
 *   - nn.Parameter values (_rebuild_parameter);
 *   - a whole checkpoint directory with pytorch_model.bin only loads with the
 *     same parameters as tests/data/ckpt/tiny (directory and in-memory forms);
 *     model.safetensors is preferred when both exist;
 *   - pickles that run code under Python (os.system, posix.system,
 *     builtins.eval through GLOBAL/STACK_GLOBAL/REDUCE, INST) and NEWOBJ are
 *     refused with BFT_EUNSAFE and run nothing (their marker files never
 *     appear);
 *   - every truncation of both formats, a big-endian archive, a compressed
 *     member and a nested dict are clean errors.
 * Run from the repository root.
 */
#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "ptbin.h"
#include "safetensors.h"
#include "test.h"
#include "testfiles.h"

#define HF "tests/data/hf/"

/* bft's safetensors bytes for a .bin must hold exactly the expected tensors. */
static void same_tensors(const char *what, const unsigned char *got, size_t got_len,
                         const unsigned char *want, size_t want_len, int expect_n)
{
    bft_st_file g, w;
    bft_error err;
    if (bft_st_parse(got, got_len, &g, &err) != 0) {
        CHECK(0, "%s: converted bytes do not parse: %s", what, err.msg);
        return;
    }
    if (bft_st_parse(want, want_len, &w, &err) != 0) {
        CHECK(0, "expected file: %s", err.msg);
        bft_st_release(&g);
        return;
    }
    CHECK(g.n == w.n && g.n == expect_n, "%s: %d tensors, expected %d (%d)", what, g.n, w.n, expect_n);
    for (int i = 0; i < w.n; i++) {
        const bft_st_tensor *a = &w.t[i], *b = bft_st_find(&g, a->name);
        int same = b && a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes &&
                   memcmp(a->shape, b->shape, sizeof a->shape[0] * (size_t)a->ndim) == 0 &&
                   (a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0);
        CHECK(same, "%s: tensor %s differs (%s)", what, a->name, b ? bft_st_dtype_name(b->dtype) : "missing");
    }
    bft_st_release(&g);
    bft_st_release(&w);
}

static void test_synthetic_both_formats(void)
{
    size_t wl = 0;
    unsigned char *want = test_read_file(HF "bin/synth_expected.safetensors", &wl);
    static const char *files[] = {HF "bin/synth_zip.bin", HF "bin/synth_legacy.bin", HF "bin/synth_zip64.bin"};
    CHECK(want != NULL, "expected file (run from the repository root)");
    if (!want)
        return;
    for (int k = 0; k < 3; k++) {
        size_t len = 0, out_len = 0;
        unsigned char *bin = test_read_file(files[k], &len);
        bft_error err;
        CHECK(bin && bft_pt_detect(bin, len), "%s detected", files[k]);
        if (!bin)
            continue;
        void *st = bft_pt_to_safetensors(bin, len, &out_len, &err);
        CHECK(st != NULL, "%s: %s", files[k], err.msg);
        if (st)
            same_tensors(files[k], st, out_len, want, wl, 16);
        /* the dict's order is kept (tied_b right after tied_a) */
        if (st) {
            bft_st_file f;
            if (bft_st_parse(st, out_len, &f, &err) == 0) {
                /* the data section is laid out in header order == dict order */
                const bft_st_tensor *a = bft_st_find(&f, "tied_a"), *b = bft_st_find(&f, "tied_b"),
                                    *f32 = bft_st_find(&f, "f32");
                CHECK(a && b && f32 && f32->data < a->data && a->data + a->nbytes == b->data,
                      "tensors laid out in the dict's order");
                bft_st_release(&f);
            }
        }
        free(st);
        free(bin);
    }
    free(want);
}

static void test_parameters(void)
{
    size_t len = 0, out_len = 0;
    unsigned char *bin = test_read_file(HF "bin/synth_params.bin", &len);
    bft_error err;
    bft_st_file f;
    if (!bin) {
        CHECK(0, "synth_params.bin");
        return;
    }
    void *st = bft_pt_to_safetensors(bin, len, &out_len, &err);
    CHECK(st != NULL, "parameters: %s", err.msg);
    if (st && bft_st_parse(st, out_len, &f, &err) == 0) {
        const bft_st_tensor *w = bft_st_find(&f, "w"), *b = bft_st_find(&f, "b");
        float wv[6], bv[3];
        CHECK(w && b && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3 && b->numel == 3, "shapes");
        if (w && b && w->numel == 6 && b->numel == 3 && bft_st_to_f32(w, wv, &err) == 0 &&
            bft_st_to_f32(b, bv, &err) == 0) {
            for (int i = 0; i < 6; i++)
                CHECK(wv[i] == (float)i, "w[%d] = %g", i, wv[i]);
            for (int i = 0; i < 3; i++)
                CHECK(bv[i] == 1.0f, "b[%d] = %g", i, bv[i]);
        }
        bft_st_release(&f);
    }
    free(st);
    free(bin);
}

static void copy_file(const char *from, const char *to)
{
    size_t n = 0;
    unsigned char *b = test_read_file(from, &n);
    FILE *f = fopen(to, "wb");
    if (b && f)
        fwrite(b, 1, n, f);
    if (f)
        fclose(f);
    free(b);
}

static void test_checkpoint_directory(void)
{
    bft_error err;
    bft_model *ref = bft_model_load_dir("tests/data/ckpt/tiny", &err);
    bft_model *m = bft_model_load_dir(HF "tiny_bin", &err);
    CHECK(ref && m, "load tiny_bin (pytorch_model.bin only): %s", err.msg);
    if (ref && m) {
        CHECK(m->num_params == ref->num_params &&
                  memcmp(m->params_mem, ref->params_mem, m->num_params * sizeof(float)) == 0,
              "pytorch_model.bin parameters == model.safetensors parameters");
        CHECK(m->parts.pooler && m->parts.classifier && m->cfg.num_labels == 3, "parts");
    }
    bft_model_free(m);
    /* the in-memory form (a client's large object) */
    {
        size_t cl = 0, vl = 0, tl = 0, bl = 0;
        unsigned char *c = test_read_file(HF "tiny_bin/config.json", &cl), *v = test_read_file(HF "tiny_bin/vocab.txt", &vl),
                      *t = test_read_file(HF "tiny_bin/tokenizer_config.json", &tl),
                      *b = test_read_file(HF "tiny_bin/pytorch_model.bin", &bl);
        m = (c && v && t && b) ? bft_model_load_mem((char *)c, cl, (char *)v, vl, (char *)t, tl, b, bl, &err) : NULL;
        CHECK(m && ref && memcmp(m->params_mem, ref->params_mem, m->num_params * sizeof(float)) == 0,
              "bft_model_load_mem with .bin bytes: %s", m ? "" : err.msg);
        bft_model_free(m);
        free(c);
        free(v);
        free(t);
        free(b);
    }
    /* model.safetensors wins over pytorch_model.bin: a bin that must never be read */
    {
        char tmpl[] = "/tmp/bft-ptbin-XXXXXX", p[PATH_MAX];
        char *dir = mkdtemp(tmpl);
        if (dir) {
            static const char *f[] = {"config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors"};
            for (int i = 0; i < 4; i++) {
                char from[PATH_MAX];
                snprintf(from, sizeof from, "tests/data/ckpt/tiny/%s", f[i]);
                snprintf(p, sizeof p, "%s/%s", dir, f[i]);
                copy_file(from, p);
            }
            snprintf(p, sizeof p, "%s/pytorch_model.bin", dir);
            copy_file(HF "bin/evil_os_system.bin", p);
            m = bft_model_load_dir(dir, &err);
            CHECK(m != NULL, "model.safetensors preferred over pytorch_model.bin: %s", err.msg);
            bft_model_free(m);
            /* without model.safetensors the bin is read, and refused */
            snprintf(p, sizeof p, "%s/model.safetensors", dir);
            unlink(p);
            m = bft_model_load_dir(dir, &err);
            CHECK(!m && err.code == BFT_EUNSAFE, "evil bin in a directory: %s %s", bft_status_name(err.code),
                  err.msg);
            test_rm_dir(dir);
        }
    }
    bft_model_free(ref);
}

static void test_evil_pickles(void)
{
    static const struct {
        const char *file, *marker, *needle;
    } evil[] = {
        {"evil_posix_system.bin", "posix_system", "posix.system"},
        {"evil_builtins_eval_legacy.bin", "builtins_eval", "__builtin__.eval"},
        {"evil_stack_global.bin", "stack_global", "posix.system"},
        {"evil_os_system.bin", "os_system", "os.system"},
        {"evil_inst.bin", "inst", "INST"},
        {"evil_newobj.bin", NULL, "NEWOBJ"},
    };
    for (size_t k = 0; k < sizeof evil / sizeof evil[0]; k++) {
        char path[PATH_MAX], mark[PATH_MAX];
        size_t len = 0, out_len = 0;
        bft_error err;
        if (evil[k].marker) {
            snprintf(mark, sizeof mark, "/tmp/bft-pickle-ran-%s", evil[k].marker);
            unlink(mark);
        }
        snprintf(path, sizeof path, HF "bin/%s", evil[k].file);
        unsigned char *bin = test_read_file(path, &len);
        CHECK(bin != NULL, "%s", path);
        if (!bin)
            continue;
        void *st = bft_pt_to_safetensors(bin, len, &out_len, &err);
        CHECK(!st && err.code == BFT_EUNSAFE && strstr(err.msg, evil[k].needle),
              "%s refused as unsafe: %s %s", evil[k].file, bft_status_name(err.code), err.msg);
        if (evil[k].marker)
            CHECK(access(mark, F_OK) != 0, "%s ran code: %s exists", evil[k].file, mark);
        free(st);
        free(bin);
    }
}

static void test_corrupt(void)
{
    static const char *files[] = {HF "bin/synth_zip.bin", HF "bin/synth_legacy.bin"};
    for (int k = 0; k < 2; k++) {
        size_t len = 0, out_len = 0, bad = 0;
        unsigned char *bin = test_read_file(files[k], &len);
        bft_error err;
        if (!bin) {
            CHECK(0, "%s", files[k]);
            continue;
        }
        /* every truncation (an exact-size copy, so reads past the end are caught by ASan) */
        for (size_t n = 0; n < len; n++) {
            unsigned char *cut = malloc(n ? n : 1);
            memcpy(cut, bin, n);
            void *st = bft_pt_to_safetensors(cut, n, &out_len, &err);
            if (st || err.code == BFT_OK || err.msg[0] == '\0')
                bad++;
            free(st);
            free(cut);
        }
        CHECK(bad == 0, "%s: %zu of %zu truncations not refused", files[k], bad, len);
        free(bin);
    }
    /* big-endian archive, compressed member */
    {
        size_t len = 0, out_len = 0;
        unsigned char *bin = test_read_file(HF "bin/synth_zip.bin", &len);
        bft_error err;
        if (bin) {
            unsigned char *p = memmem(bin, len, "little", 6);
            CHECK(p != NULL, "byteorder member");
            if (p) {
                memcpy(p, "bigend", 6);
                void *st = bft_pt_to_safetensors(bin, len, &out_len, &err);
                CHECK(!st && err.code == BFT_EUNSUPPORTED && strstr(err.msg, "little-endian"), "big-endian: %s",
                      err.msg);
                free(st);
                memcpy(p, "little", 6);
            }
            p = memmem(bin, len, "PK\x01\x02", 4);
            if (p) {
                p[10] = 8; /* deflate */
                void *st = bft_pt_to_safetensors(bin, len, &out_len, &err);
                CHECK(!st && err.code == BFT_EUNSUPPORTED && strstr(err.msg, "compressed"), "deflate: %s",
                      err.msg);
                free(st);
            }
            free(bin);
        }
    }
    {
        size_t len = 0, out_len = 0;
        unsigned char *bin = test_read_file(HF "bin/nested.bin", &len);
        bft_error err;
        void *st = bin ? bft_pt_to_safetensors(bin, len, &out_len, &err) : NULL;
        CHECK(bin && !st && err.code == BFT_EFORMAT && strstr(err.msg, "\"model\" is a dict, not a tensor"),
              "nested dict: %s", err.msg);
        free(st);
        free(bin);
        st = bft_pt_to_safetensors("PK\x03\x04", 4, &out_len, &err);
        CHECK(!st && err.code == BFT_EFORMAT, "4 bytes: %s", err.msg);
        st = bft_pt_to_safetensors("{}", 2, &out_len, &err);
        CHECK(!st && err.code == BFT_EFORMAT && !bft_pt_detect("{}", 2), "not a bin: %s", err.msg);
    }
}

int main(void)
{
    RUN(test_synthetic_both_formats);
    RUN(test_parameters);
    RUN(test_checkpoint_directory);
    RUN(test_evil_pickles);
    RUN(test_corrupt);
    return test_summary();
}
