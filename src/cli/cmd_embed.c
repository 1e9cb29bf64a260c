/*
 * cmd_embed.c — `bft-cli embed --model DIR`: sentence embeddings (or the last
 * hidden states) of stdin lines.
 *
 *   bft-cli embed --model DIR [--pooling NAME] [--max-length N] [--hidden] [--binary]
 *                 [--long-text truncate|mean|max] [--stride S]
 *       one text per stdin line → one JSON array per line (the embedding,
 *       D floats). The pooling is the directory's sentence-transformers
 *       configuration (modules.json, 1_Pooling/config.json,
 *       sentence_bert_config.json; without modules.json: mean, not
 *       normalized); --pooling overrides it ("mean", "cls+normalize", ...).
 *       --hidden: the last hidden states instead, one JSON array of T arrays
 *       of C floats per line. --binary: little-endian float32 instead of JSON
 *       (embeddings: D floats per line; --hidden: an int32 T, then T*C floats).
 *       --long-text mean|max: a line longer than max_length is embedded
 *       whole, as bft.long_text does in SQL: windows of max_length tokens
 *       sharing --stride tokens (default 32), their un-normalized embeddings
 *       averaged weighted by token count (mean) or their per-dimension max,
 *       then normalized if the pooling normalizes (bft_embed_windows).
 * Lines are read and embedded in chunks; "\r\n" endings are accepted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "cli.h"
#include "embed.h"
#include "train.h"

static void embed_usage(FILE *f)
{
    fprintf(f, "usage: bft-cli embed --model DIR [--pooling NAME] [--max-length N] [--hidden] [--binary]\n"
               "                     [--long-text truncate|mean|max] [--stride S]\n"
               "                     [--batch-size B] [--threads N] [--device cpu|cuda] [--precision auto|fp32|bf16]\n"
               "  Reads one text per line from stdin; prints one JSON array per line: the\n"
               "  sentence embedding with the directory's sentence-transformers pooling\n"
               "  (modules.json; mean without it), or --pooling NAME (mode names joined by\n"
               "  '+': cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken, normalize).\n"
               "  --hidden prints the last hidden states (T arrays of C floats) instead;\n"
               "  --binary writes little-endian float32 (--hidden: an int32 T before each text).\n"
               "  --long-text mean|max embeds a line longer than max_length whole: windows of\n"
               "  max_length tokens sharing --stride tokens (default 32), combined by a\n"
               "  token-weighted mean or a per-dimension max, then normalized if the pooling is.\n");
}

static void put_floats(const float *x, size_t n, int binary)
{
    if (binary) {
        fwrite(x, sizeof *x, n, stdout);
        return;
    }
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf("%s%.9g", i ? ", " : "", (double)x[i]);
    putchar(']');
}

/* Embed lines[0..n) and print the results. Returns 0 or 1. */
static int embed_chunk(const bft_model *m, char **lines, size_t *lens, int64_t n, int max_length, int batch,
                       const bft_pooling *pool, int hidden, int binary, int long_text, int stride)
{
    cli_tokens t;
    bft_error err;
    bft_dataset ds;
    int C = m->cfg.hidden_size, D = bft_pooling_dim(pool, C), rc;
    int64_t *first = NULL;
    float *out;

    if ((long_text < 0 ? cli_encode(m->tok, (const char *const *)lines, lens, n, max_length, &t, &err)
                       : cli_encode_windows(m->tok, (const char *const *)lines, lens, n, max_length, stride, &t,
                                            &first, &err)) < 0) {
        cli_error("embed", &err, "tokenizing");
        return 1;
    }
    ds.n = t.n;
    ds.tokens = t.tokens;
    ds.offsets = t.offsets;
    ds.labels = NULL;
    ds.label_offsets = NULL;
    ds.label_ids = NULL;
    out = malloc((size_t)(hidden ? t.offsets[n] : n) * (hidden ? C : D) * sizeof *out);
    if (!out) {
        fprintf(stderr, "bft-cli embed: out of memory\n");
        cli_tokens_free(&t);
        return 1;
    }
    rc = hidden ? bft_hidden_states(m, &ds, batch, out, NULL, NULL, &err)
         : first ? bft_embed_windows(m, &ds, first, n, long_text, batch, pool, out, NULL, NULL, &err)
                 : bft_embed(m, &ds, batch, pool, out, NULL, NULL, &err);
    free(first);
    if (rc != BFT_OK) {
        cli_error("embed", &err, NULL);
        free(out);
        cli_tokens_free(&t);
        return 1;
    }
    for (int64_t i = 0; i < n; i++) {
        if (!hidden) {
            put_floats(out + (size_t)i * D, (size_t)D, binary);
        } else {
            int32_t T = (int32_t)(t.offsets[i + 1] - t.offsets[i]);
            const float *h = out + (size_t)t.offsets[i] * C;
            if (binary) {
                fwrite(&T, sizeof T, 1, stdout);
                put_floats(h, (size_t)T * C, 1);
            } else {
                putchar('[');
                for (int32_t r = 0; r < T; r++) {
                    if (r)
                        fputs(", ", stdout);
                    put_floats(h + (size_t)r * C, (size_t)C, 0);
                }
                putchar(']');
            }
        }
        if (!binary)
            putchar('\n');
    }
    fflush(stdout);
    free(out);
    cli_tokens_free(&t);
    return 0;
}

typedef struct {
    const bft_model *m;
    int max_length, batch;
    const bft_pooling *pool;
    int hidden, binary;
    int long_text, stride;   /* BFT_WINDOWS_MEAN / _MAX, or -1: truncate */
} embed_ctx;

/* cli_stdin_chunks callback: embed_chunk with the command's settings. */
static int embed_lines(void *ctx, char **lines, size_t *lens, int64_t n)
{
    embed_ctx *c = ctx;
    return embed_chunk(c->m, lines, lens, n, c->max_length, c->batch, c->pool, c->hidden, c->binary, c->long_text,
                       c->stride);
}

int cmd_embed(int argc, char **argv)
{
    const char *model_dir = NULL, *device = "cpu", *precision = "auto", *pooling = NULL, *long_text = "truncate";
    int max_length = 0, batch = 32, threads = 0, hidden = 0, binary = 0, stride = 32, npos, rc = 0, found, lt;
    cli_opt opts[] = {
        {"model", OPT_STR, &model_dir, 1, 0, 0, 0, 0, 0},
        {"pooling", OPT_STR, &pooling, 0, 0, 0, 0, 0, 0},
        {"max-length", OPT_INT, &max_length, 0, 2, 1 << 20, 0, 0, 0},
        {"hidden", OPT_FLAG, &hidden, 0, 0, 0, 0, 0, 0},
        {"binary", OPT_FLAG, &binary, 0, 0, 0, 0, 0, 0},
        {"batch-size", OPT_INT, &batch, 0, 1, 1 << 16, 0, 0, 0},
        {"threads", OPT_INT, &threads, 0, 0, 1024, 0, 0, 0},
        {"device", OPT_STR, &device, 0, 0, 0, 0, 0, 0},
        {"precision", OPT_STR, &precision, 0, 0, 0, 0, 0, 0},
        {"long-text", OPT_STR, &long_text, 0, 0, 0, 0, 0, 0},
        {"stride", OPT_INT, &stride, 0, 0, 8192, 0, 0, 0},
    };
    bft_model *m;
    bft_error err;
    bft_pooling pool;

    if (cli_wants_help(argc, argv)) {
        embed_usage(stdout);
        return 0;
    }
    if (cli_parse_args("embed", argc, argv, opts, 11, NULL, 0, &npos) != 0) {
        embed_usage(stderr);
        return 2;
    }
    if ((lt = cli_long_text("embed", long_text)) == -2 || (lt >= 0 && hidden)) {
        if (lt >= 0)
            fprintf(stderr, "bft-cli embed: --long-text applies to embeddings, not --hidden\n");
        embed_usage(stderr);
        return 2;
    }
    if ((rc = cli_set_precision("embed", precision)) != 0 || (rc = cli_check_device("embed", device)) != 0)
        return rc;
    bft_set_threads(threads);
    if (bft_pooling_load_dir(model_dir, &pool, &found, &err) != BFT_OK) {
        cli_error("embed", &err, "reading the pooling of %s", model_dir);
        return 1;
    }
    if (pooling && bft_pooling_parse_name(pooling, &pool, &err) != BFT_OK) {
        cli_error("embed", &err, NULL);
        return 2;
    }
    m = bft_model_load_dir(model_dir, &err);
    if (!m) {
        cli_error("embed", &err, "loading %s", model_dir);
        return 1;
    }
    if (max_length <= 0 && pool.max_length > 0)
        max_length = pool.max_length < m->cfg.max_position_embeddings ? pool.max_length
                                                                       : m->cfg.max_position_embeddings;
    if ((max_length = cli_max_length("embed", m, max_length)) < 0) {
        bft_model_free(m);
        return 2;
    }
    embed_ctx c = {m, max_length, batch, &pool, hidden, binary, lt, stride};
    rc = cli_stdin_chunks("embed", embed_lines, &c);
    bft_model_free(m);
    return rc;
}
