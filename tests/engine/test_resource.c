/*
 * test_resource.c — the engine's resource bounds (resource.h): memory
 * estimates cover what training and inference really allocate (peak RSS of
 * real runs, bert_acts_bytes), a memory budget refuses a model before
 * allocating it, and the interrupt hook stops model initialisation and a
 * directory import that would read a FIFO or a huge file.
 *
 * Run from the repository root (reads tests/data/ckpt/tiny).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bert.h"
#include "resource.h"
#include "test.h"
#include "train.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Current resident set in kB (VmRSS), for growth measurements. */
static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static bft_config small_cfg(int V, int C, int L, int NH, int I, int P)
{
    bft_config c = bft_config_default();
    c.vocab_size = V;
    c.hidden_size = C;
    c.num_hidden_layers = L;
    c.num_attention_heads = NH;
    c.intermediate_size = I;
    c.max_position_embeddings = P;
    c.pad_token_id = 0;
    c.num_labels = 4;
    return c;
}

/* a vocab.txt of V tokens with the specials first */
static char *make_vocab(int V, size_t *len)
{
    char *v = malloc((size_t)V * 16 + 64);
    size_t n = (size_t)sprintf(v, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
    for (int i = 5; i < V; i++) n += (size_t)sprintf(v + n, "t%d\n", i);
    *len = n;
    return v;
}

/* The estimates are upper bounds of the engine's own accounting. */
static void test_estimates_cover_layouts(void)
{
    const int shapes[][6] = {{200, 16, 1, 2, 32, 64}, {8000, 256, 4, 4, 1024, 128},
                             {28996, 768, 12, 12, 3072, 512}, {30522, 1024, 24, 16, 4096, 512}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        bft_config c = small_cfg(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4],
                                 shapes[s][5]);
        bft_parts parts = {1, 1, 1, 0};
        size_t np = bft_params_count(&c, parts);
        for (int B = 1; B <= 64; B *= 4)
            for (int T = 8; T <= 512; T *= 4) {
                size_t tr = bft_mem_train_bytes(&c, parts, 4, B, T, 1);
                size_t need = 3 * np * sizeof(float) + bert_acts_bytes(&c, 4, B, T, 1) +
                              bert_acts_bytes(&c, 4, B, T, 0);
                CHECK(tr >= need, "shape %zu B %d T %d: train estimate %zu < %zu", s, B, T, tr, need);
                CHECK(bft_mem_infer_bytes(&c, 4, B, T) >= bert_acts_bytes(&c, 4, B, T, 0),
                      "shape %zu B %d T %d: inference estimate too small", s, B, T);
            }
        CHECK(bft_mem_model_bytes(&c, parts, 0) >= np * sizeof(float), "model estimate");
    }
    /* absurd shapes saturate instead of wrapping */
    bft_config huge = small_cfg(1000000, 16384, 256, 256, 65536, 8192);
    CHECK(bft_mem_train_bytes(&huge, (bft_parts){1, 1, 1, 0}, 4, 65536, 8192, 1) > ((size_t)1 << 50),
          "huge shape estimate wrapped");
}

/* Peak RSS of a real training stays below the estimate. */
static void test_estimate_covers_training(void)
{
    bft_config c = small_cfg(8000, 256, 4, 4, 1024, 128);
    bft_parts parts = {1, 1, 1, 0};
    size_t vlen;
    char *vocab = make_vocab(c.vocab_size, &vlen);
    bft_error err;
    int B = 32, T = 128, n = 64;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n * T);
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(n + 1));
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        off[i] = (int64_t)i * T;
        lab[i] = i % 4;
        tok[(size_t)i * T] = 2;
        for (int t = 1; t < T - 1; t++) tok[(size_t)i * T + t] = 5 + (i * 31 + t * 7) % (c.vocab_size - 5);
        tok[(size_t)i * T + T - 1] = 3;
    }
    off[n] = (int64_t)n * T;
    bft_dataset ds = {n, tok, off, lab, NULL, NULL};
    bft_set_threads(1);
    long before = rss_kb();
    bft_model *m = bft_model_new(&c, vocab, vlen, parts, 1, &err);
    CHECK(m != NULL, "model: %s", err.msg);
    if (!m) return;
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 1;
    o.batch_size = B;
    bft_train_result res;
    int rc = bft_pretrain_mlm(m, &ds, &o, NULL, NULL, &res, &err);
    CHECK(rc == 0, "mlm: %s", err.msg);
    rc = bft_train(m, &ds, &o, NULL, NULL, &res, &err);
    CHECK(rc == 0, "train: %s", err.msg);
    long grew_kb = rss_kb() - before;
    size_t est = bft_mem_model_bytes(&c, parts, vlen) + bft_mem_train_bytes(&c, parts, 4, B, T, 1);
    CHECK((size_t)grew_kb * 1024 <= est, "peak RSS grew %ld kB, estimate %zu kB", grew_kb, est >> 10);
    printf("# training (8000 x 256 x 4 layers, batch %d x %d, MLM): peak RSS +%ld MB, estimate %zu MB\n", B, T,
           grew_kb >> 10, est >> 20);
    bft_model_free(m);
    free(vocab);
    free(tok);
    free(off);
    free(lab);
}

static int polls;
static int count_hook(void *ctx)
{
    (void)ctx;
    return ++polls > 3;
}

/* A budget refuses a model before allocating it; initialisation polls. */
static void test_budget_and_interrupts(void)
{
    bft_config c = small_cfg(30000, 512, 8, 8, 2048, 512);
    bft_parts parts = {1, 1, 0, 0};
    size_t vlen;
    char *vocab = make_vocab(c.vocab_size, &vlen);
    bft_error err;
    bft_set_memory_budget(32u << 20);
    double t0 = now_s();
    bft_model *m = bft_model_new(&c, vocab, vlen, parts, 1, &err);
    CHECK(m == NULL && err.code == BFT_ENOMEM && strstr(err.msg, "memory limit"),
          "budget not enforced: %s", err.msg);
    CHECK(now_s() - t0 < 0.1, "refusal was not immediate");
    bft_set_memory_budget(0);
    polls = 0;
    bft_set_interrupt_hook(count_hook, NULL);
    m = bft_model_new(&c, vocab, vlen, parts, 1, &err);
    bft_set_interrupt_hook(NULL, NULL);
    CHECK(m == NULL && err.code == BFT_ECANCEL, "initialisation not interrupted: %s", err.msg);
    CHECK(polls >= 4, "polled %d times", polls);
    bft_model_free(m);
    free(vocab);
}

/* A directory import never blocks on a FIFO and refuses files over the budget. */
static void test_directory_files(void)
{
    char dir[] = "/tmp/bft_resource_XXXXXX";
    char path[256], cmd[512];
    bft_error err;
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(cmd, sizeof cmd, "cp tests/data/ckpt/tiny/* %s/", dir);
    CHECK(system(cmd) == 0, "copy tiny");
    bft_model *m = bft_model_load_dir(dir, &err);
    CHECK(m != NULL, "tiny loads: %s", err.msg);
    bft_model_free(m);
    const char *files[] = {"vocab.txt", "model.safetensors", "config.json"};
    for (int k = 0; k < 3; k++) {
        char saved[256];
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        snprintf(saved, sizeof saved, "%s/%s.saved", dir, files[k]);
        rename(path, saved);
        CHECK(mkfifo(path, 0600) == 0, "mkfifo");
        double t0 = now_s();
        m = bft_model_load_dir(dir, &err);
        CHECK(m == NULL && strstr(err.msg, "not a regular file") && now_s() - t0 < 0.5,
              "%s as a FIFO: %s", files[k], err.msg);
        unlink(path);
        rename(saved, path);
    }
    /* a 3 GB sparse vocab.txt: over the budget, refused without reading */
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)3 << 30) == 0, "grow vocab.txt");
    close(fd);
    bft_set_memory_budget(1u << 30);
    double t0 = now_s();
    m = bft_model_load_dir(dir, &err);
    bft_set_memory_budget(0);
    CHECK(m == NULL && err.code == BFT_ENOMEM && now_s() - t0 < 0.5, "huge file: %s", err.msg);
    /* within the budget the read is interrupted */
    polls = 0;
    bft_set_interrupt_hook(count_hook, NULL);
    t0 = now_s();
    m = bft_model_load_dir(dir, &err);
    bft_set_interrupt_hook(NULL, NULL);
    CHECK(m == NULL && err.code == BFT_ECANCEL && now_s() - t0 < 1.0, "huge file read not interrupted: %s",
          err.msg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

int main(void)
{
    RUN(test_estimates_cover_layouts);
    RUN(test_estimate_covers_training);
    RUN(test_budget_and_interrupts);
    RUN(test_directory_files);
    return test_summary();
}
