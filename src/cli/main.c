/*
 * main.c — bft-cli: a command-line driver over the bft engine (tests,
 * benchmarks, offline use). Dispatches to the subcommands of the table below.
 *
 *   bft-cli help                 list the subcommands
 *   bft-cli SUBCOMMAND --help    usage of one subcommand
 *
 * Exit status: 0 success, 1 failure (message on stderr), 2 usage error.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand commands[] = {
    {"classify", cmd_classify, "one text per stdin line -> one JSON object per line (label, label_id, score, probs)"},
    {"train", cmd_train, "fine-tune a model on a CSV file and write a Hugging Face model directory"},
    {"embed", cmd_embed, "sentence embeddings (or last hidden states) of stdin lines, one JSON array per line"},
    {"fill-mask", cmd_fill_mask, "top-k predictions for every [MASK] of a text (token id score)"},
    {"bench", cmd_bench, "training and inference samples/s of a random model of a given shape"},
    {"tokenize", cmd_tokenize, "WordPiece ids of stdin lines, or learn a vocab.txt (--learn-vocab)"},
    {"info", cmd_info, "configuration, parts and parameter count of a model directory"},
    {"export", cmd_export, "load a model directory (F16/BF16, legacy names) and write it back as F32"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: bft-cli SUBCOMMAND [options]   (bft-cli SUBCOMMAND --help for its options)\n\n"
               "subcommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "this list");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) {
            int rc = commands[i].fn(argc - 1, argv + 1);
            if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "bft-cli %s: error writing the output\n", argv[1]);
                return 1;
            }
            return rc;
        }
    fprintf(stderr, "bft-cli: unknown subcommand \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
