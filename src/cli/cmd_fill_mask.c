/*
 * cmd_fill_mask.c — `bft-cli fill-mask --model DIR [--top-k K] TEXT`:
 * the top-k tokens for every [MASK] in TEXT, one "token id score" line each
 * (score = softmax probability over the vocabulary, 4 decimals), like the
 * fill-mask pipeline table "waitress 15098 0.2799". With several masks the
 * groups are separated by an empty line, in the order of the masks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "train.h"

static void fill_mask_usage(FILE *f)
{
    fprintf(f, "usage: bft-cli fill-mask --model DIR [--top-k K] [--max-length N] [--threads N]\n"
               "                         [--device cpu|cuda] [--precision auto|fp32|bf16] TEXT\n"
               "  TEXT contains [MASK] one or more times; prints \"token id score\" lines.\n");
}

int cmd_fill_mask(int argc, char **argv)
{
    const char *model_dir = NULL, *device = "cpu", *precision = "auto";
    int top_k = 5, max_length = 0, threads = 0, npos = 0, rc = 1, n, masks = 0, found = 0;
    char *pos[1];
    cli_opt opts[] = {
        {"model", OPT_STR, &model_dir, 1, 0, 0, 0, 0, 0},
        {"top-k", OPT_INT, &top_k, 0, 1, 1 << 24, 0, 0, 0},
        {"max-length", OPT_INT, &max_length, 0, 2, 1 << 20, 0, 0, 0},
        {"threads", OPT_INT, &threads, 0, 0, 1024, 0, 0, 0},
        {"device", OPT_STR, &device, 0, 0, 0, 0, 0, 0},
        {"precision", OPT_STR, &precision, 0, 0, 0, 0, 0, 0},
    };
    bft_model *m;
    bft_error err;
    int32_t *ids = NULL, *out_ids = NULL;
    float *scores = NULL;
    bft_special_ids sp;

    if (cli_wants_help(argc, argv)) {
        fill_mask_usage(stdout);
        return 0;
    }
    if (cli_parse_args("fill-mask", argc, argv, opts, 6, pos, 1, &npos) != 0 || npos != 1) {
        if (npos != 1)
            fprintf(stderr, "bft-cli fill-mask: give exactly one TEXT\n");
        fill_mask_usage(stderr);
        return 2;
    }
    if ((rc = cli_set_precision("fill-mask", precision)) != 0 || (rc = cli_check_device("fill-mask", device)) != 0)
        return rc;
    rc = 1;
    bft_set_threads(threads);
    m = bft_model_load_dir(model_dir, &err);
    if (!m) {
        cli_error("fill-mask", &err, "loading %s", model_dir);
        return 1;
    }
    if (!m->parts.mlm) {
        fprintf(stderr, "bft-cli fill-mask: %s has no MLM head (cls.predictions.*)\n", model_dir);
        goto out;
    }
    if ((max_length = cli_max_length("fill-mask", m, max_length)) < 0) {
        rc = 2;
        goto out;
    }
    if (top_k > m->cfg.vocab_size)
        top_k = m->cfg.vocab_size;
    sp = bft_tokenizer_special(m->tok);
    ids = malloc((size_t)max_length * sizeof *ids);
    if (!ids)
        goto oom;
    n = bft_encode(m->tok, pos[0], strlen(pos[0]), max_length, ids, &err);
    if (n < 0) {
        cli_error("fill-mask", &err, "tokenizing");
        goto out;
    }
    for (int i = 0; i < n; i++)
        masks += ids[i] == sp.mask;
    if (masks == 0) {
        fprintf(stderr, "bft-cli fill-mask: the text has no [MASK] token%s\n",
                sp.mask < 0 ? " (the vocabulary has none)" : "");
        goto out;
    }
    out_ids = malloc((size_t)masks * (size_t)top_k * sizeof *out_ids);
    scores = malloc((size_t)masks * (size_t)top_k * sizeof *scores);
    if (!out_ids || !scores)
        goto oom;
    if (bft_fill_mask(m, ids, n, top_k, masks, &found, out_ids, scores, &err) != 0) {
        cli_error("fill-mask", &err, NULL);
        goto out;
    }
    for (int j = 0; j < found; j++) {
        if (j)
            putchar('\n');
        for (int k = 0; k < top_k; k++) {
            int id = out_ids[(size_t)j * top_k + k];
            const char *tok = bft_tokenizer_token(m->tok, id);
            printf("%s %d %.4f\n", tok ? tok : "?", id, (double)scores[(size_t)j * top_k + k]);
        }
    }
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "bft-cli fill-mask: out of memory\n");
out:
    free(ids);
    free(out_ids);
    free(scores);
    bft_model_free(m);
    return rc;
}
