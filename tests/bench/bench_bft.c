/*
 * bench_bft.c — the engine's own benchmark driver (tests/bench/bench_engine.sh):
 * a randomly initialised BertForSequenceClassification of the given shape,
 * random token sequences of exactly SEQ tokens, one epoch of STEPS training
 * steps (AdamW, dropout 0.1) and STEPS inference batches (bft_predict).
 * The first training step and the first inference batch are warm-up. Reports,
 * like tests/bench/bench_torch.py, the wall-clock rate and the CPU-time rate
 * (samples per CPU-second of the whole process times THREADS: what the run
 * would do with THREADS otherwise idle cores; robust on a loaded machine when
 * THREADS = 1).
 *
 *   bench_bft LAYERS HIDDEN HEADS INTERMEDIATE VOCAB BATCH SEQ STEPS THREADS
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "model.h"
#include "rng.h"
#include "train.h"

static double wall(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct {
    double w0, c0, w1, c1;
    int64_t steps;
} clock_ctx;

static int on_step(void *p, const bft_progress *pr)
{
    clock_ctx *c = p;
    if (pr->phase != 0)
        return 0;
    if (pr->step == 1) {
        c->w0 = wall();
        c->c0 = cpu();
    }
    c->w1 = wall();
    c->c1 = cpu();
    c->steps = pr->step;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 10) {
        fprintf(stderr, "usage: %s LAYERS HIDDEN HEADS INTERMEDIATE VOCAB BATCH SEQ STEPS THREADS\n", argv[0]);
        return 2;
    }
    int L = atoi(argv[1]), C = atoi(argv[2]), NH = atoi(argv[3]), I = atoi(argv[4]);
    int V = atoi(argv[5]), B = atoi(argv[6]), T = atoi(argv[7]), steps = atoi(argv[8]);
    int th = atoi(argv[9]);
    bft_error err;
    bft_set_threads(th);
    bft_config cfg = bft_config_default();
    cfg.num_hidden_layers = L;
    cfg.hidden_size = C;
    cfg.num_attention_heads = NH;
    cfg.intermediate_size = I;
    cfg.vocab_size = V;
    cfg.max_position_embeddings = T > 512 ? T : 512;
    cfg.num_labels = 2;
    /* vocabulary: the five specials, then filler tokens */
    size_t cap = (size_t)V * 12 + 64, len = 0;
    char *vocab = malloc(cap);
    const char *sp[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < V; i++)
        len += (size_t)(i < 5 ? sprintf(vocab + len, "%s\n", sp[i]) : sprintf(vocab + len, "w%d\n", i));
    bft_parts parts = {1, 1, 0, 0};
    bft_model *m = bft_model_new(&cfg, vocab, len, parts, 1, &err);
    if (!m) {
        fprintf(stderr, "bench_bft: %s\n", err.msg);
        return 1;
    }
    int64_t n = (int64_t)B * (steps + 1);
    int32_t *tok = malloc((size_t)n * T * sizeof *tok), *lab = malloc((size_t)n * sizeof *lab);
    int64_t *off = malloc((size_t)(n + 1) * sizeof *off);
    float *probs = malloc((size_t)n * 2 * sizeof *probs);
    bft_rng r;
    bft_rng_seed(&r, 2);
    for (int64_t i = 0; i < n; i++) {
        int32_t *s = tok + i * T;
        s[0] = 2;
        for (int t = 1; t < T - 1; t++)
            s[t] = 5 + (int32_t)bft_rng_below(&r, (uint64_t)(V - 5));
        s[T - 1] = 3;
        off[i] = i * T;
        lab[i] = (int32_t)bft_rng_below(&r, 2);
    }
    off[n] = n * T;
    bft_dataset ds = {n, tok, off, lab};
    bft_train_opts o = bft_train_default_opts();
    o.epochs = 1;
    o.batch_size = B;
    o.shuffle = 0;
    clock_ctx cc = {0};
    if (bft_train(m, &ds, &o, on_step, &cc, NULL, &err) != 0) {
        fprintf(stderr, "bench_bft: %s\n", err.msg);
        return 1;
    }
    double tw = (double)B * (cc.steps - 1) / (cc.w1 - cc.w0);
    double tc = (double)B * (cc.steps - 1) / (cc.c1 - cc.c0) * th;
    printf("bft_train_samples_per_s: %.3f\n", tw);
    printf("bft_train_samples_per_cpu_s_x_threads: %.3f\n", tc);
    fflush(stdout);
    bft_dataset warm = {B, tok, off, NULL}, inf = {(int64_t)B * steps, tok + (size_t)B * T, off, NULL};
    int64_t *off2 = malloc((size_t)(B * steps + 1) * sizeof *off2);
    for (int64_t i = 0; i <= (int64_t)B * steps; i++)
        off2[i] = i * T;
    inf.offsets = off2;
    bft_predict(m, &warm, B, probs, &err);
    double w0 = wall(), c0 = cpu();
    if (bft_predict(m, &inf, B, probs, &err) != 0) {
        fprintf(stderr, "bench_bft: %s\n", err.msg);
        return 1;
    }
    double w1 = wall(), c1 = cpu();
    printf("bft_infer_samples_per_s: %.3f\n", (double)B * steps / (w1 - w0));
    printf("bft_infer_samples_per_cpu_s_x_threads: %.3f\n", (double)B * steps / (c1 - c0) * th);
    /* a hash of the predicted probabilities' bits: after the same training, two
     * builds that compute identical results print the same value */
    uint64_t hsh = 1469598103934665603ull;
    const unsigned char *pb = (const unsigned char *)probs;
    for (size_t i = 0; i < (size_t)B * steps * 2 * sizeof *probs; i++)
        hsh = (hsh ^ pb[i]) * 1099511628211ull;
    printf("bft_probs_hash: %016llx\n", (unsigned long long)hsh);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("bft_peak_rss_mb: %.1f\n", ru.ru_maxrss / 1024.0);
    free(vocab);
    free(tok);
    free(lab);
    free(off);
    free(off2);
    free(probs);
    bft_model_free(m);
    return 0;
}
