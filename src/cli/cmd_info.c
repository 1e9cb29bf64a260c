/*
 * cmd_info.c — `bft-cli info --model DIR` (configuration, parts, parameter
 * count, labels) and `bft-cli export --model DIR --out DIR` (load anything
 * the loader accepts — F16/BF16, legacy gamma/beta, no "bert." prefix — and
 * write it back as a standard F32 Hugging Face directory).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_info(int argc, char **argv)
{
    const char *model_dir = NULL;
    int npos;
    cli_opt opts[] = {{"model", OPT_STR, &model_dir, 1, 0, 0, 0, 0, 0}};
    bft_model *m;
    bft_error err;
    const bft_config *c;
    char buf[32];

    if (cli_wants_help(argc, argv)) {
        printf("usage: bft-cli info --model DIR\n");
        return 0;
    }
    if (cli_parse_args("info", argc, argv, opts, 1, NULL, 0, &npos) != 0)
        return 2;
    m = bft_model_load_dir(model_dir, &err);
    if (!m) {
        cli_error("info", &err, "loading %s", model_dir);
        return 1;
    }
    c = &m->cfg;
    printf("model: %s\n", model_dir);
    printf("layers: %d\nhidden: %d\nheads: %d\nintermediate: %d\nvocab: %d\nmax_positions: %d\ntoken_types: %d\n",
           c->num_hidden_layers, c->hidden_size, c->num_attention_heads, c->intermediate_size, c->vocab_size,
           c->max_position_embeddings, c->type_vocab_size);
    printf("layer_norm_eps: %g\nhidden_dropout: %g\nattention_dropout: %g\n", (double)c->layer_norm_eps,
           (double)c->hidden_dropout_prob, (double)c->attention_probs_dropout_prob);
    if (c->classifier_dropout < 0)
        printf("classifier_dropout: null\n");
    else
        printf("classifier_dropout: %g\n", (double)c->classifier_dropout);
    printf("pooler: %s\nclassifier: %s\nmlm_head: %s\n", m->parts.pooler ? "yes" : "no",
           m->parts.classifier ? "yes" : "no", m->parts.mlm ? "yes" : "no");
    printf("parameters: %zu\n", m->num_params);
    printf("do_lower_case: %d\nstrip_accents: %d\nmodel_max_length: %d\n", c->tok.do_lower_case,
           c->tok.strip_accents, c->tok.model_max_length);
    printf("num_labels: %d\n", c->num_labels);
    for (int i = 0; i < c->num_labels; i++) {
        printf("label %d: ", i);
        cli_json_string(stdout, bft_config_label(c, i, buf, sizeof buf));
        putchar('\n');
    }
    bft_model_free(m);
    return 0;
}

int cmd_export(int argc, char **argv)
{
    const char *model_dir = NULL, *out_dir = NULL;
    int npos;
    cli_opt opts[] = {{"model", OPT_STR, &model_dir, 1, 0, 0, 0, 0, 0}, {"out", OPT_STR, &out_dir, 1, 0, 0, 0, 0, 0}};
    bft_model *m;
    bft_error err;

    if (cli_wants_help(argc, argv)) {
        printf("usage: bft-cli export --model DIR --out DIR\n");
        return 0;
    }
    if (cli_parse_args("export", argc, argv, opts, 2, NULL, 0, &npos) != 0)
        return 2;
    m = bft_model_load_dir(model_dir, &err);
    if (!m) {
        cli_error("export", &err, "loading %s", model_dir);
        return 1;
    }
    if (bft_model_save_dir(m, out_dir, &err) != 0) {
        cli_error("export", &err, "writing %s", out_dir);
        bft_model_free(m);
        return 1;
    }
    printf("saved %s\n", out_dir);
    bft_model_free(m);
    return 0;
}
