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
 * plus params, train_step_ms, infer_batch_ms, peak_rss_mb and, when bf16 ran
 * on the CPU, the oneDNN implementations used.
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
               "                     [--device cpu|cuda] [--precision auto|fp32|bf16|int8]\n"
               "  Random weights and tokens; prints train_samples_per_s: X and infer_samples_per_s: Y.\n");
}

/* One `bft-cli bench` run: the shape and options, the model and its random data. */
typedef struct bench_run {
    int L, H, A, I, B, T, steps, threads, V, skip_train, skip_infer;
    float dropout;
    uint64_t seed;
    const char *device, *precision;
    bft_model *m;
    char *vocab;
    int64_t n;               /* sequences: B * steps */
    int32_t *tokens, *labels; /* (n, T), (n) */
    int64_t *offsets;        /* (n + 1) */
    float *probs;            /* (n, 2) */
} bench_run;

/* Parse the command line into b; -1 to go on, else the exit status. */
static int bench_parse(bench_run *b, int argc, char **argv)
{
    int npos, rc;
    cli_opt opts[] = {
        {"layers", OPT_INT, &b->L, 1, 1, 1024, 0, 0, 0},
        {"hidden", OPT_INT, &b->H, 1, 1, 1 << 16, 0, 0, 0},
        {"heads", OPT_INT, &b->A, 1, 1, 1 << 16, 0, 0, 0},
        {"intermediate", OPT_INT, &b->I, 1, 1, 1 << 18, 0, 0, 0},
        {"batch", OPT_INT, &b->B, 1, 1, 1 << 16, 0, 0, 0},
        {"seq", OPT_INT, &b->T, 1, 2, 1 << 16, 0, 0, 0},
        {"steps", OPT_INT, &b->steps, 1, 1, 1 << 20, 0, 0, 0},
        {"threads", OPT_INT, &b->threads, 0, 0, 1024, 0, 0, 0},
        {"vocab", OPT_INT, &b->V, 0, 6, 1 << 22, 0, 0, 0},
        {"dropout", OPT_FLOAT, &b->dropout, 0, 0, 0, 0.0, 0.999, 0},
        {"seed", OPT_U64, &b->seed, 0, 0, 0, 0, 0, 0},
        {"skip-train", OPT_FLAG, &b->skip_train, 0, 0, 0, 0, 0, 0},
        {"skip-infer", OPT_FLAG, &b->skip_infer, 0, 0, 0, 0, 0, 0},
        {"device", OPT_STR, &b->device, 0, 0, 0, 0, 0, 0},
        {"precision", OPT_STR, &b->precision, 0, 0, 0, 0, 0, 0},
    };
    if (cli_wants_help(argc, argv)) {
        bench_usage(stdout);
        return 0;
    }
    if (cli_parse_args("bench", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, &npos) != 0) {
        bench_usage(stderr);
        return 2;
    }
    if ((rc = cli_set_precision("bench", b->precision)) != 0 || (rc = cli_check_device("bench", b->device)) != 0)
        return rc;
    bft_set_threads(b->threads);
    return -1;
}

/* A randomly initialised classifier of the shape, with a synthetic vocabulary; 0 or 1. */
static int bench_model(bench_run *b)
{
    bft_config cfg = bft_config_default();
    bft_parts parts = {1, 1, 0, 0};
    size_t vlen = 0;
    bft_error err;
    cfg.num_hidden_layers = b->L;
    cfg.hidden_size = b->H;
    cfg.num_attention_heads = b->A;
    cfg.intermediate_size = b->I;
    cfg.vocab_size = b->V;
    cfg.max_position_embeddings = b->T > 512 ? b->T : 512;
    cfg.num_labels = 2;
    if (!(b->vocab = cli_synthetic_vocab(b->V, &vlen))) {
        fprintf(stderr, "bft-cli bench: out of memory\n");
        return 1;
    }
    if (!(b->m = bft_model_new(&cfg, b->vocab, vlen, parts, b->seed, &err))) {
        cli_error("bench", &err, "model");
        return 1;
    }
    return 0;
}

/* n random sequences of exactly T tokens ([CLS] random… [SEP]) with random labels; 0 or 1. */
static int bench_data(bench_run *b)
{
    int T = b->T;
    bft_rng r;
    b->n = (int64_t)b->B * b->steps;
    b->tokens = malloc((size_t)b->n * (size_t)T * sizeof *b->tokens);
    b->offsets = malloc(((size_t)b->n + 1) * sizeof *b->offsets);
    b->labels = malloc((size_t)b->n * sizeof *b->labels);
    b->probs = malloc((size_t)b->n * 2 * sizeof *b->probs);
    if (!b->tokens || !b->offsets || !b->labels || !b->probs) {
        fprintf(stderr, "bft-cli bench: out of memory for %lld sequences\n", (long long)b->n);
        return 1;
    }
    bft_rng_seed(&r, b->seed + 1);
    for (int64_t i = 0; i < b->n; i++) {
        int32_t *s = b->tokens + i * T;
        s[0] = 2;
        for (int t = 1; t < T - 1; t++)
            s[t] = 5 + (int32_t)bft_rng_below(&r, (uint64_t)(b->V - 5));
        s[T - 1] = 3;
        b->offsets[i] = i * T;
        b->labels[i] = (int32_t)bft_rng_below(&r, 2);
    }
    b->offsets[b->n] = b->n * T;
    return 0;
}

/* The shape, parameter count, device and precision. */
static void bench_header(const bench_run *b)
{
    int dev = BFT_DEVICE_CPU, prec = BFT_PRECISION_AUTO;
    printf("shape: layers %d hidden %d heads %d intermediate %d vocab %d batch %d seq %d steps %d\n", b->L, b->H,
           b->A, b->I, b->V, b->B, b->T, b->steps);
    printf("params: %zu\n", b->m->num_params);
    bft_get_device(&dev, &prec);
    printf("device: %s, %s\n", bft_device_name(dev),
           dev == BFT_DEVICE_CPU ? (prec == BFT_PRECISION_BF16   ? "bf16 mixed precision (oneDNN)"
                                    : prec == BFT_PRECISION_INT8 ? "int8 (oneDNN)"
                                                                 : "fp32")
           : prec == BFT_PRECISION_FP32 ? "fp32" : "bf16 mixed precision");
    fflush(stdout);
}

/* One epoch of steps optimizer steps; the rate counts the steps after the first. 0 or 1. */
static int bench_train(bench_run *b)
{
    bft_dataset ds = {b->n, b->tokens, b->offsets, b->labels, NULL, NULL};
    bft_train_opts o = bft_train_default_opts();
    bft_train_result res;
    bench_ctx bc = {-1, 0, 0, 0};
    bft_error err;
    double t0 = cli_now(), t1, rate;
    o.epochs = 1;
    o.batch_size = b->B;
    o.shuffle = 0;
    o.dropout = b->dropout;
    o.seed = b->seed;
    bft_get_device(&o.device, &o.precision);
    if (bft_train(b->m, &ds, &o, bench_progress, &bc, &res, &err) != 0) {
        cli_error("bench", &err, "training");
        return 1;
    }
    t1 = cli_now();
    if (bc.last_step > bc.first_step && bc.t_last > bc.t_first)
        rate = (double)b->B * (double)(bc.last_step - bc.first_step) / (bc.t_last - bc.t_first);
    else
        rate = (double)b->n / (t1 - t0);
    printf("train_samples_per_s: %.3f\n", rate);
    printf("train_step_ms: %.1f\n", 1000.0 * b->B / rate);
    printf("train_total_s: %.2f\n", t1 - t0);
    fflush(stdout);
    return 0;
}

/* Inference over the steps batches after one warm-up batch. 0 or 1. */
static int bench_infer(bench_run *b)
{
    bft_dataset warm = {b->B < b->n ? b->B : b->n, b->tokens, b->offsets, NULL, NULL, NULL},
                ds = {b->n, b->tokens, b->offsets, NULL, NULL, NULL};
    bft_error err;
    double t0, t1;
    if (bft_predict(b->m, &warm, b->B, b->probs, &err) != 0) {
        cli_error("bench", &err, "inference");
        return 1;
    }
    t0 = cli_now();
    if (bft_predict(b->m, &ds, b->B, b->probs, &err) != 0) {
        cli_error("bench", &err, "inference");
        return 1;
    }
    t1 = cli_now();
    printf("infer_samples_per_s: %.3f\n", (double)b->n / (t1 - t0));
    printf("infer_batch_ms: %.1f\n", 1000.0 * (t1 - t0) / b->steps);
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    bench_run b;
    int rc;
    memset(&b, 0, sizeof b);
    b.V = 28996;
    b.dropout = -1.0f;
    b.seed = 1;
    b.device = "cpu";
    b.precision = "auto";
    if ((rc = bench_parse(&b, argc, argv)) >= 0)
        return rc;
    if ((rc = bench_model(&b)) == 0 && (rc = bench_data(&b)) == 0) {
        bench_header(&b);
        if (!b.skip_train)
            rc = bench_train(&b);
        if (rc == 0 && !b.skip_infer)
            rc = bench_infer(&b);
    }
    if (rc == 0) {
        printf("peak_rss_mb: %.1f\n", cli_peak_rss_mb());
        printf("openblas: %s\n", bft_blas_info());
        if (bft_dnnl_info()[0])
            printf("onednn: %s\n", bft_dnnl_info());
    }
    free(b.vocab);
    free(b.tokens);
    free(b.offsets);
    free(b.labels);
    free(b.probs);
    bft_model_free(b.m);
    return rc;
}
