/*
 * cmd_bench.c — `bft-cli bench`: training and inference throughput of a
 * randomly initialised BertForSequenceClassification of a given shape on
 * random token sequences of exactly --seq tokens ([CLS] random… [SEP]).
 *
 * Training: one epoch of --steps optimizer steps of --batch examples (AdamW,
 * dropout as in the config unless --dropout); the rate counts the steps after
 * the first one (timed from the progress callback), so allocation and the
 * first-touch of optimizer state are excluded, as in a steady-state
 * PyTorch loop. Inference: bft_predict over --steps batches after one
 * warm-up batch. Prints
 *   train_samples_per_s: X
 *   infer_samples_per_s: Y
 * plus params, train_step_ms, infer_batch_ms and peak_rss_mb.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rng.h"
#include "train.h"

typedef struct bench_ctx {
    int64_t first_step;
    double t_first, t_last;
    int64_t last_step;
} bench_ctx;

static int bench_progress(void *ctx, const bft_progress *p)
{
    bench_ctx *b = ctx;
    double t = cli_now();
    if (p->phase != 0)
        return 0;
    if (b->first_step < 0) {
        b->first_step = p->step;
        b->t_first = t;
    }
    b->last_step = p->step;
    b->t_last = t;
    return 0;
}

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: bft-cli bench --layers L --hidden H --heads A --intermediate I --batch B --seq T --steps N\n"
               "                     [--threads N] [--vocab V] [--dropout P] [--seed S] [--skip-train] [--skip-infer]\n"
               "                     [--device cpu|cuda] [--precision auto|fp32|bf16]\n"
               "  Random weights and tokens; prints train_samples_per_s: X and infer_samples_per_s: Y.\n");
}

int cmd_bench(int argc, char **argv)
{
    int L = 0, H = 0, A = 0, I = 0, B = 0, T = 0, steps = 0, threads = 0, V = 28996, npos, rc = 1;
    int skip_train = 0, skip_infer = 0;
    float dropout = -1.0f;
    uint64_t seed = 1;
    const char *device = "cpu", *precision = "auto";
    cli_opt opts[] = {
        {"layers", OPT_INT, &L, 1, 1, 1024, 0, 0, 0},
        {"hidden", OPT_INT, &H, 1, 1, 1 << 16, 0, 0, 0},
        {"heads", OPT_INT, &A, 1, 1, 1 << 16, 0, 0, 0},
        {"intermediate", OPT_INT, &I, 1, 1, 1 << 18, 0, 0, 0},
        {"batch", OPT_INT, &B, 1, 1, 1 << 16, 0, 0, 0},
        {"seq", OPT_INT, &T, 1, 2, 1 << 16, 0, 0, 0},
        {"steps", OPT_INT, &steps, 1, 1, 1 << 20, 0, 0, 0},
        {"threads", OPT_INT, &threads, 0, 0, 1024, 0, 0, 0},
        {"vocab", OPT_INT, &V, 0, 6, 1 << 22, 0, 0, 0},
        {"dropout", OPT_FLOAT, &dropout, 0, 0, 0, 0.0, 0.999, 0},
        {"seed", OPT_U64, &seed, 0, 0, 0, 0, 0, 0},
        {"skip-train", OPT_FLAG, &skip_train, 0, 0, 0, 0, 0, 0},
        {"skip-infer", OPT_FLAG, &skip_infer, 0, 0, 0, 0, 0, 0},
        {"device", OPT_STR, &device, 0, 0, 0, 0, 0, 0},
        {"precision", OPT_STR, &precision, 0, 0, 0, 0, 0, 0},
    };
    bft_config cfg = bft_config_default();
    bft_parts parts = {1, 1, 0};
    bft_model *m = NULL;
    bft_error err;
    char *vocab = NULL;
    size_t vlen = 0;
    int64_t n;
    int32_t *tokens = NULL, *labels = NULL;
    int64_t *offsets = NULL;
    float *probs = NULL;
    bft_rng r;

    if (cli_wants_help(argc, argv)) {
        bench_usage(stdout);
        return 0;
    }
    if (cli_parse_args("bench", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, &npos) != 0) {
        bench_usage(stderr);
        return 2;
    }
    if ((rc = cli_set_precision("bench", precision)) != 0 || (rc = cli_check_device("bench", device)) != 0)
        return rc;
    rc = 1;
    bft_set_threads(threads);
    cfg.num_hidden_layers = L;
    cfg.hidden_size = H;
    cfg.num_attention_heads = A;
    cfg.intermediate_size = I;
    cfg.vocab_size = V;
    cfg.max_position_embeddings = T > 512 ? T : 512;
    cfg.num_labels = 2;
    if (!(vocab = cli_synthetic_vocab(V, &vlen))) {
        fprintf(stderr, "bft-cli bench: out of memory\n");
        return 1;
    }
    m = bft_model_new(&cfg, vocab, vlen, parts, seed, &err);
    if (!m) {
        cli_error("bench", &err, "model");
        goto out;
    }
    n = (int64_t)B * steps;
    tokens = malloc((size_t)n * (size_t)T * sizeof *tokens);
    offsets = malloc(((size_t)n + 1) * sizeof *offsets);
    labels = malloc((size_t)n * sizeof *labels);
    probs = malloc((size_t)n * 2 * sizeof *probs);
    if (!tokens || !offsets || !labels || !probs) {
        fprintf(stderr, "bft-cli bench: out of memory for %lld sequences\n", (long long)n);
        goto out;
    }
    bft_rng_seed(&r, seed + 1);
    for (int64_t i = 0; i < n; i++) {
        int32_t *s = tokens + i * T;
        s[0] = 2;
        for (int t = 1; t < T - 1; t++)
            s[t] = 5 + (int32_t)bft_rng_below(&r, (uint64_t)(V - 5));
        s[T - 1] = 3;
        offsets[i] = i * T;
        labels[i] = (int32_t)bft_rng_below(&r, 2);
    }
    offsets[n] = n * T;
    printf("shape: layers %d hidden %d heads %d intermediate %d vocab %d batch %d seq %d steps %d\n", L, H, A, I, V,
           B, T, steps);
    printf("params: %zu\n", m->num_params);
    {
        int dev = BFT_DEVICE_CPU, prec = BFT_PRECISION_AUTO;
        bft_get_device(&dev, &prec);
        printf("device: %s, %s\n", bft_device_name(dev),
               dev == BFT_DEVICE_CPU || prec == BFT_PRECISION_FP32 ? "fp32" : "bf16 mixed precision");
    }
    fflush(stdout);

    if (!skip_train) {
        bft_dataset ds = {n, tokens, offsets, labels, NULL, NULL};
        bft_train_opts o = bft_train_default_opts();
        bft_train_result res;
        bench_ctx bc = {-1, 0, 0, 0};
        double t0 = cli_now(), t1, rate;
        o.epochs = 1;
        o.batch_size = B;
        o.shuffle = 0;
        o.dropout = dropout;
        o.seed = seed;
        bft_get_device(&o.device, &o.precision);
        if (bft_train(m, &ds, &o, bench_progress, &bc, &res, &err) != 0) {
            cli_error("bench", &err, "training");
            goto out;
        }
        t1 = cli_now();
        if (bc.last_step > bc.first_step && bc.t_last > bc.t_first)
            rate = (double)B * (double)(bc.last_step - bc.first_step) / (bc.t_last - bc.t_first);
        else
            rate = (double)n / (t1 - t0);
        printf("train_samples_per_s: %.3f\n", rate);
        printf("train_step_ms: %.1f\n", 1000.0 * B / rate);
        printf("train_total_s: %.2f\n", t1 - t0);
        fflush(stdout);
    }
    if (!skip_infer) {
        bft_dataset warm = {B < n ? B : n, tokens, offsets, NULL, NULL, NULL},
                    ds = {n, tokens, offsets, NULL, NULL, NULL};
        double t0, t1;
        if (bft_predict(m, &warm, B, probs, &err) != 0) {
            cli_error("bench", &err, "inference");
            goto out;
        }
        t0 = cli_now();
        if (bft_predict(m, &ds, B, probs, &err) != 0) {
            cli_error("bench", &err, "inference");
            goto out;
        }
        t1 = cli_now();
        printf("infer_samples_per_s: %.3f\n", (double)n / (t1 - t0));
        printf("infer_batch_ms: %.1f\n", 1000.0 * (t1 - t0) / steps);
    }
    printf("peak_rss_mb: %.1f\n", cli_peak_rss_mb());
    rc = 0;
out:
    free(vocab);
    free(tokens);
    free(offsets);
    free(labels);
    free(probs);
    bft_model_free(m);
    return rc;
}
