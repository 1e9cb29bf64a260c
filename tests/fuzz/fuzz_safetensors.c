/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors reader and the
 * checkpoint name mapping.
 *
 *   make fuzz BUILD=build/fuzzdir
 *   build/fuzzdir/fuzz/fuzz_safetensors -max_total_time=600 tests/fuzz/corpus/fuzz_safetensors
 *
 * Each input is a whole model.safetensors file. It is
 *   1. parsed with bft_st_parse; every tensor with a float dtype is converted
 *      (the reader promised offsets inside the buffer: ASan checks it);
 *   2. loaded with bft_model_load_mem against a built-in tiny config
 *      (V=8, C=4, L=1, NH=2, I=8, P=8, Tt=2, 2 labels) and vocabulary; when it
 *      loads, the model is written back and reloaded, and the parameters
 *      must be bit-identical (abort otherwise).
 * The input is copied to an exactly sized heap buffer at an odd address so
 * that any read past the end or any aligned-load assumption is caught.
 * Seeds: tests/fuzz/corpus/fuzz_safetensors (tests/fuzz/make_corpus.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "safetensors.h"

static const char CONFIG[] =
    "{\"vocab_size\": 8, \"hidden_size\": 4, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
    " \"intermediate_size\": 8, \"max_position_embeddings\": 8, \"type_vocab_size\": 2,"
    " \"id2label\": {\"0\": \"no\", \"1\": \"yes\"}, \"label2id\": {\"no\": 0, \"yes\": 1}}";
static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\nc\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *raw = malloc(size + 1), *buf = raw + 1;
    bft_st_file f;
    bft_error err;
    bft_model *m;

    if (!raw)
        return 0;
    if (size)
        memcpy(buf, data, size);

    bft_clear_error(&err);
    if (bft_st_parse(buf, size, &f, &err) == 0) {
        for (int i = 0; i < f.n; i++) {
            const bft_st_tensor *t = &f.t[i];
            if (t->data < buf || t->data + t->nbytes > buf + size)
                abort();
            if (t->dtype == BFT_ST_F32 || t->dtype == BFT_ST_F16 || t->dtype == BFT_ST_BF16) {
                float *out = malloc(t->numel * sizeof(float) + 1);
                if (out && bft_st_to_f32(t, out, &err) != 0)
                    abort();
                free(out);
            }
        }
        bft_st_release(&f);
    } else if (err.code == BFT_OK || err.msg[0] == '\0') {
        abort(); /* a refusal must say why */
    }

    m = bft_model_load_mem(CONFIG, sizeof CONFIG - 1, VOCAB, sizeof VOCAB - 1, NULL, 0, buf, size, &err);
    if (m) {
        size_t len;
        void *st = bft_model_to_safetensors(m, &len, &err);
        bft_model *m2;
        if (!st)
            abort();
        m2 = bft_model_load_mem(CONFIG, sizeof CONFIG - 1, VOCAB, sizeof VOCAB - 1, NULL, 0, st, len, &err);
        if (!m2 || m2->num_params != m->num_params ||
            memcmp(m2->params_mem, m->params_mem, m->num_params * sizeof(float)) != 0 ||
            m2->parts.pooler != m->parts.pooler || m2->parts.classifier != m->parts.classifier ||
            m2->parts.mlm != m->parts.mlm)
            abort();
        bft_model_free(m2);
        free(st);
        bft_model_free(m);
    } else if (err.code == BFT_OK || err.msg[0] == '\0') {
        abort();
    }
    free(raw);
    return 0;
}
