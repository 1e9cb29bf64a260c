/*
 * cli.h — subcommands of bft-cli (dispatched by src/cli/main.c) and the
 * helpers they share (src/cli/cli_util.c).
 * Each cmd_* gets argv starting at the subcommand name (argv[0] == "tokenize")
 * and returns the process exit status (0 ok, 1 failure, 2 usage error).
 */
#ifndef BFT_CLI_H
#define BFT_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bft_error.h"
#include "model.h"
#include "tokenizer.h"

/* bft-cli tokenize: stdin lines → ids per line, or --learn-vocab (cmd_tokenize.c). */
int cmd_tokenize(int argc, char **argv);

/* bft-cli classify --model DIR: stdin lines → one JSON object per line (cmd_classify.c). */
int cmd_classify(int argc, char **argv);

/* bft-cli train --model DIR --csv FILE ... --out DIR: fine-tune, write an HF directory (cmd_train.c). */
int cmd_train(int argc, char **argv);

/* bft-cli embed --model DIR: stdin lines → sentence embeddings / hidden states (cmd_embed.c). */
int cmd_embed(int argc, char **argv);

/* bft-cli fill-mask --model DIR [--top-k K] TEXT: "token id score" lines (cmd_fill_mask.c). */
int cmd_fill_mask(int argc, char **argv);

/* bft-cli bench --layers L --hidden H ...: training / inference samples per second (cmd_bench.c). */
int cmd_bench(int argc, char **argv);

/* bft-cli info --model DIR: configuration and parameter summary (cmd_info.c). */
int cmd_info(int argc, char **argv);

/* bft-cli export --model DIR --out DIR: rewrite as F32 HF directory (cmd_info.c). */
int cmd_export(int argc, char **argv);

/* ---- option parsing ---- */

typedef enum cli_opt_type { OPT_FLAG, OPT_INT, OPT_U64, OPT_FLOAT, OPT_DOUBLE, OPT_STR } cli_opt_type;

/* One --name option. dst: int* (FLAG/INT), uint64_t* (U64), float* (FLOAT),
 * double* (DOUBLE: optimizer hyper-parameters, kept as the decimal's double
 * like Python's floats), const char ** (STR). lo/hi bound INT, flo/fhi bound
 * FLOAT and DOUBLE. */
typedef struct cli_opt {
    const char *name;
    cli_opt_type type;
    void *dst;
    int required;
    long long lo, hi;
    double flo, fhi;
    int seen;               /* set by cli_parse_args */
} cli_opt;

/* Parse argv[1..] ("--name value", "--name=value", flags, positionals; "--"
 * ends options). Positionals go to pos (at most maxpos). Prints the problem
 * and returns 2 on a usage error, else 0. */
int cli_parse_args(const char *cmd, int argc, char **argv, cli_opt *opts, int nopts, char **pos, int maxpos,
                   int *npos);

/* 1 when argv has --help or -h. */
int cli_wants_help(int argc, char **argv);

/* ---- files and output ---- */

/* Whole stream / file into a malloc'd NUL-terminated buffer (NULL + errno). */
char *cli_read_stream(FILE *f, size_t *len);
char *cli_read_file(const char *path, size_t *len);

/* Next line of f without its "\n" / "\r\n" into *line (getline buffer).
 * Returns 1, or 0 at end of input. */
int cli_next_line(FILE *f, char **line, size_t *cap, size_t *len);

/* Most lines cli_stdin_chunks hands over at once. */
#define CLI_LINE_CHUNK 256

/* Read stdin line by line (cli_next_line) and call fn(ctx, lines, lens, n) for
 * every chunk of n lines: one at a time when stdin is a terminal (answers come
 * at once), else up to CLI_LINE_CHUNK (output streams for long inputs).
 * Returns fn's first nonzero result, 1 on out of memory or a read error
 * (reported as "bft-cli CMD: ..."), else 0. */
int cli_stdin_chunks(const char *cmd, int (*fn)(void *ctx, char **lines, size_t *lens, int64_t n),
                     void *ctx);

/* s as a JSON string literal (quotes, escapes; UTF-8 passed through). */
void cli_json_string(FILE *f, const char *s);

/* "bft-cli CMD: <fmt>: <err->msg> (<code>)" on stderr. */
void cli_error(const char *cmd, const bft_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic seconds; peak resident set size in MB. */
double cli_now(void);
double cli_peak_rss_mb(void);

/* ---- models and data ---- */

/* 0 for "cpu" (or NULL); prints an error and returns 1 for "cuda" (no CUDA
 * backend in this build), 2 for anything else. */
int cli_check_device(const char *cmd, const char *device);
/* --precision auto|fp32|bf16 for the following cli_check_device (CUDA only). */
int cli_set_precision(const char *cmd, const char *precision);

/* The max_length to encode with: requested when > 0 (checked against
 * max_position_embeddings; -1 with a message when out of range), else
 * min(model_max_length, max_position_embeddings, 512). */
int cli_max_length(const char *cmd, const bft_model *m, int requested);

/* Encoded texts in bft_dataset layout. */
typedef struct cli_tokens {
    int64_t n;
    int32_t *tokens;
    int64_t *offsets;   /* n + 1 */
} cli_tokens;

/* Encode n texts ([CLS] … [SEP], truncated to max_length). 0 or -1 with err. */
int cli_encode(const bft_tokenizer *tok, const char *const *texts, const size_t *lens, int64_t n, int max_length,
               cli_tokens *out, bft_error *err);
void cli_tokens_free(cli_tokens *t);

/* --long-text NAME: -1 for "truncate", BFT_WINDOWS_MEAN / BFT_WINDOWS_MAX
 * (chunk.h) for "mean" / "max"; anything else prints an error naming cmd
 * and returns -2. */
int cli_long_text(const char *cmd, const char *name);

/* Encode n texts whole as windows of max_length ids sharing stride tokens
 * (chunk.h): out holds every window (out->n of them), text i owning windows
 * (*first)[i] .. (*first)[i+1] (*first: n + 1 entries, malloc'd, the caller
 * frees it). 0 or -1 with err. */
int cli_encode_windows(const bft_tokenizer *tok, const char *const *texts, const size_t *lens, int64_t n,
                       int max_length, int stride, cli_tokens *out, int64_t **first, bft_error *err);

/* A CSV file's text and label columns (RFC 4180, header row required). */
typedef struct cli_csv {
    int64_t n;
    char **text;        /* n NUL-terminated fields */
    size_t *text_len;
    char **label;       /* n fields (each NULL when label_col was NULL) */
} cli_csv;

/* Read path ("-" = stdin) with libcsv; columns found by header name
 * (label_col may be NULL). 0, or -1 with a message in msg. */
int cli_read_csv(const char *path, const char *text_col, const char *label_col, cli_csv *out, char *msg,
                 size_t msglen);
void cli_csv_free(cli_csv *c);

/* vocab.txt bytes of V tokens: [PAD] [UNK] [CLS] [SEP] [MASK] w5 w6 …
 * (malloc'd; for random-weight benchmarks). */
char *cli_synthetic_vocab(int V, size_t *len);

#endif
