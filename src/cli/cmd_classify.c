/*
 * cmd_classify.c — `bft-cli classify --model DIR [--max-length N]
 * [--long-text truncate|mean|max] [--stride S]`:
 * one text per stdin line → one JSON object per line
 *   {"label": "...", "label_id": N, "score": P, "probs": [p0, p1, ...]}
 * (multi-label models: sigmoid probabilities, and "labels": [those >= 0.5])
 * (probs in label id order, eval mode, score = probs[label_id], the argmax;
 * ties go to the lowest id like torch.argmax). --long-text mean|max reads a
 * line longer than max_length whole, as bft.long_text does in SQL: windows of
 * max_length tokens sharing --stride tokens (default 32), their probabilities
 * averaged or maxed per label (a single-label model's maxima rescaled to sum
 * 1; bft_pool_windows). Lines are read and classified
 * in chunks, so output streams for long inputs; "\r\n" endings are accepted.
 * A model with an n-gram head (ngram.h) has it mixed into each line's
 * probabilities, as in SQL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "cli.h"
#include "ngram.h"
#include "train.h"

static void classify_usage(FILE *f)
{
    fprintf(f, "usage: bft-cli classify --model DIR [--max-length N] [--batch-size B] [--threads N]\n"
               "                        [--long-text truncate|mean|max] [--stride S]\n"
               "                        [--device cpu|cuda] [--precision auto|fp32|bf16]\n"
               "  Reads one text per line from stdin; prints one JSON object per line:\n"
               "  {\"label\": \"...\", \"label_id\": N, \"score\": P, \"probs\": [p0, p1, ...]}\n"
               "  (a multi-label model adds \"labels\": [the labels with probability >= 0.5])\n"
               "  --long-text mean|max classifies a line longer than max_length whole: windows\n"
               "  of max_length tokens sharing --stride tokens (default 32), probabilities\n"
               "  averaged or maxed per label over the windows.\n");
}

/* Classify lines[0..n) and print the results. Returns 0 or 1. */
static int classify_chunk(const bft_model *m, char **lines, size_t *lens, int64_t n, int max_length, int batch,
                          float *probs, int long_text, int stride)
{
    cli_tokens t;
    bft_error err;
    bft_dataset ds;
    int K = m->cfg.num_labels;
    int64_t *first = NULL;
    float *wprobs = NULL;
    if ((long_text < 0 ? cli_encode(m->tok, (const char *const *)lines, lens, n, max_length, &t, &err)
                       : cli_encode_windows(m->tok, (const char *const *)lines, lens, n, max_length, stride, &t,
                                            &first, &err)) < 0) {
        cli_error("classify", &err, "tokenizing");
        return 1;
    }
    ds.n = t.n;
    ds.tokens = t.tokens;
    ds.offsets = t.offsets;
    ds.labels = NULL;
    ds.label_offsets = NULL;
    ds.label_ids = NULL;
    /* windows: their probabilities (windows, K), pooled per line below */
    if (first && !(wprobs = malloc((size_t)t.n * (size_t)K * sizeof *wprobs))) {
        fprintf(stderr, "bft-cli classify: out of memory\n");
        free(first);
        cli_tokens_free(&t);
        return 1;
    }
    if (bft_predict(m, &ds, batch, first ? wprobs : probs, &err) != 0) {
        cli_error("classify", &err, NULL);
        free(wprobs);
        free(first);
        cli_tokens_free(&t);
        return 1;
    }
    for (int64_t i = 0; first && i < n; i++)
        bft_pool_windows(wprobs + (size_t)first[i] * K, first[i + 1] - first[i], K, long_text,
                         long_text == BFT_WINDOWS_MAX && m->cfg.problem_type != BFT_PROBLEM_MULTI_LABEL,
                         probs + (size_t)i * K);
    free(wprobs);
    free(first);
    /* a model with an n-gram head: mixed in per line, as bft_classify() does */
    for (int64_t i = 0; i < n; i++)
        if (bft_ngram_mix(m, lines[i], lens[i], probs + (size_t)i * K, &err) != BFT_OK) {
            cli_error("classify", &err, "n-gram features");
            cli_tokens_free(&t);
            return 1;
        }
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + i * K;
        int best = 0;
        char buf[32];
        for (int k = 1; k < K; k++)
            if (p[k] > p[best])
                best = k;
        fputs("{\"label\": ", stdout);
        cli_json_string(stdout, bft_config_label(&m->cfg, best, buf, sizeof buf));
        printf(", \"label_id\": %d, \"score\": %.8g, \"probs\": [", best, (double)p[best]);
        for (int k = 0; k < K; k++)
            printf("%s%.8g", k ? ", " : "", (double)p[k]);
        fputs("]", stdout);
        if (m->cfg.problem_type == BFT_PROBLEM_MULTI_LABEL) {
            /* a multi-label model's label set: every probability >= 0.5 */
            int first = 1;
            fputs(", \"labels\": [", stdout);
            for (int k = 0; k < K; k++)
                if (p[k] >= 0.5f) {
                    fputs(first ? "" : ", ", stdout);
                    cli_json_string(stdout, bft_config_label(&m->cfg, k, buf, sizeof buf));
                    first = 0;
                }
            fputs("]", stdout);
        }
        fputs("}\n", stdout);
    }
    fflush(stdout);
    cli_tokens_free(&t);
    return 0;
}

typedef struct {
    const bft_model *m;
    int max_length, batch;
    float *probs; /* (CLI_LINE_CHUNK, K) */
    int long_text, stride; /* BFT_WINDOWS_MEAN / _MAX, or -1: truncate */
} classify_ctx;

/* cli_stdin_chunks callback: classify_chunk with the command's settings. */
static int classify_lines(void *ctx, char **lines, size_t *lens, int64_t n)
{
    classify_ctx *c = ctx;
    return classify_chunk(c->m, lines, lens, n, c->max_length, c->batch, c->probs, c->long_text, c->stride);
}

int cmd_classify(int argc, char **argv)
{
    const char *model_dir = NULL, *device = "cpu", *precision = "auto", *long_text = "truncate";
    int max_length = 0, batch = 32, threads = 0, stride = 32, npos, rc = 0, lt;
    cli_opt opts[] = {
        {"model", OPT_STR, &model_dir, 1, 0, 0, 0, 0, 0},
        {"max-length", OPT_INT, &max_length, 0, 2, 1 << 20, 0, 0, 0},
        {"batch-size", OPT_INT, &batch, 0, 1, 1 << 16, 0, 0, 0},
        {"threads", OPT_INT, &threads, 0, 0, 1024, 0, 0, 0},
        {"device", OPT_STR, &device, 0, 0, 0, 0, 0, 0},
        {"precision", OPT_STR, &precision, 0, 0, 0, 0, 0, 0},
        {"long-text", OPT_STR, &long_text, 0, 0, 0, 0, 0, 0},
        {"stride", OPT_INT, &stride, 0, 0, 8192, 0, 0, 0},
    };
    bft_model *m;
    bft_error err;
    float *probs;

    if (cli_wants_help(argc, argv)) {
        classify_usage(stdout);
        return 0;
    }
    if (cli_parse_args("classify", argc, argv, opts, 8, NULL, 0, &npos) != 0 ||
        (lt = cli_long_text("classify", long_text)) == -2) {
        classify_usage(stderr);
        return 2;
    }
    if ((rc = cli_set_precision("classify", precision)) != 0 || (rc = cli_check_device("classify", device)) != 0)
        return rc;
    bft_set_threads(threads);
    m = bft_model_load_dir(model_dir, &err);
    if (!m) {
        cli_error("classify", &err, "loading %s", model_dir);
        return 1;
    }
    if (!m->parts.classifier || m->cfg.num_labels < 1) {
        fprintf(stderr, "bft-cli classify: %s has no classifier head (train one with bft-cli train)\n", model_dir);
        bft_model_free(m);
        return 1;
    }
    if ((max_length = cli_max_length("classify", m, max_length)) < 0) {
        bft_model_free(m);
        return 2;
    }
    probs = malloc((size_t)CLI_LINE_CHUNK * (size_t)m->cfg.num_labels * sizeof *probs);
    if (!probs) {
        fprintf(stderr, "bft-cli classify: out of memory\n");
        bft_model_free(m);
        return 1;
    }
    classify_ctx c = {m, max_length, batch, probs, lt, stride};
    rc = cli_stdin_chunks("classify", classify_lines, &c);
    free(probs);
    bft_model_free(m);
    return rc;
}
