/*
 * params.c — the parameter block layout (see bft_params in model.h) and its
 * mapping to Hugging Face tensor names.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sizes (in floats) of every member of bft_params, in block order. */
enum { P_WTE, P_WPE, P_WTT, P_EMB_LNW, P_EMB_LNB, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
       P_LN1W, P_LN1B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LN2W, P_LN2B, P_POOLW, P_POOLB,
       P_CLSW, P_CLSB, P_MLM_W, P_MLM_B, P_MLM_LNW, P_MLM_LNB, P_MLM_BIAS, P_NG_KEYS, P_NG_IDF, P_NG_W, P_NG_B,
       P_COUNT };

static void param_sizes(const bft_config *cfg, bft_parts parts, size_t sz[P_COUNT])
{
    size_t V = (size_t)cfg->vocab_size, P = (size_t)cfg->max_position_embeddings;
    size_t Tt = (size_t)cfg->type_vocab_size, C = (size_t)cfg->hidden_size;
    size_t L = (size_t)cfg->num_hidden_layers, I = (size_t)cfg->intermediate_size;
    size_t K = parts.classifier ? (size_t)cfg->num_labels : 0;

    sz[P_WTE] = V * C; sz[P_WPE] = P * C; sz[P_WTT] = Tt * C;
    sz[P_EMB_LNW] = C; sz[P_EMB_LNB] = C;
    sz[P_QKVW] = L * 3 * C * C; sz[P_QKVB] = L * 3 * C;
    sz[P_ATTPROJW] = L * C * C; sz[P_ATTPROJB] = L * C;
    sz[P_LN1W] = L * C; sz[P_LN1B] = L * C;
    sz[P_FCW] = L * I * C; sz[P_FCB] = L * I;
    sz[P_FCPROJW] = L * C * I; sz[P_FCPROJB] = L * C;
    sz[P_LN2W] = L * C; sz[P_LN2B] = L * C;
    sz[P_POOLW] = parts.pooler ? C * C : 0; sz[P_POOLB] = parts.pooler ? C : 0;
    sz[P_CLSW] = K * C; sz[P_CLSB] = K;
    sz[P_MLM_W] = parts.mlm ? C * C : 0; sz[P_MLM_B] = parts.mlm ? C : 0;
    sz[P_MLM_LNW] = parts.mlm ? C : 0; sz[P_MLM_LNB] = parts.mlm ? C : 0;
    sz[P_MLM_BIAS] = parts.mlm ? V : 0;
    size_t F = parts.classifier && parts.ngram > 0 ? (size_t)parts.ngram : 0;
    sz[P_NG_KEYS] = F * 2; sz[P_NG_IDF] = F;
    sz[P_NG_W] = F ? K * F : 0; sz[P_NG_B] = F ? K : 0;
}

size_t bft_params_count(const bft_config *cfg, bft_parts parts)
{
    size_t sz[P_COUNT], total = 0;
    param_sizes(cfg, parts, sz);
    for (int i = 0; i < P_COUNT; i++)
        total += sz[i];
    return total;
}

void bft_params_assign(bft_params *p, float *base, const bft_config *cfg, bft_parts parts)
{
    size_t sz[P_COUNT];
    float **ptrs[P_COUNT] = {
        &p->wte, &p->wpe, &p->wtt, &p->emb_lnw, &p->emb_lnb, &p->qkvw, &p->qkvb,
        &p->attprojw, &p->attprojb, &p->ln1w, &p->ln1b, &p->fcw, &p->fcb, &p->fcprojw,
        &p->fcprojb, &p->ln2w, &p->ln2b, &p->poolw, &p->poolb, &p->clsw, &p->clsb,
        &p->mlm_w, &p->mlm_b, &p->mlm_lnw, &p->mlm_lnb, &p->mlm_bias,
        &p->ng_keys, &p->ng_idf, &p->ng_w, &p->ng_b };
    float *at = base;
    param_sizes(cfg, parts, sz);
    for (int i = 0; i < P_COUNT; i++) {
        *ptrs[i] = sz[i] ? at : NULL;
        at += sz[i];
    }
}

/* Append one tensor description to list[*n]. */
static void add_tensor(bft_tensor_info *list, int *n, const char *name, int64_t d0, int64_t d1,
                       size_t offset, int decay, int in_encoder)
{
    bft_tensor_info *t = &list[(*n)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    t->offset = offset;
    t->decay = decay;
    t->in_encoder = in_encoder;
}

bft_tensor_info *bft_params_tensors(const bft_config *cfg, bft_parts parts, int *n)
{
    int L = cfg->num_hidden_layers;
    int64_t V = cfg->vocab_size, P = cfg->max_position_embeddings, Tt = cfg->type_vocab_size;
    int64_t C = cfg->hidden_size, I = cfg->intermediate_size, K = cfg->num_labels;
    int cap = 5 + 16 * L + 2 + 2 + 5 + 4;
    bft_tensor_info *list = calloc((size_t)cap, sizeof *list);
    size_t sz[P_COUNT], off[P_COUNT], at = 0;
    char name[96];

    if (!list)
        return NULL;
    param_sizes(cfg, parts, sz);
    for (int i = 0; i < P_COUNT; i++) {
        off[i] = at;
        at += sz[i];
    }
    *n = 0;
    add_tensor(list, n, "embeddings.word_embeddings.weight", V, C, off[P_WTE], 1, 1);
    add_tensor(list, n, "embeddings.position_embeddings.weight", P, C, off[P_WPE], 1, 1);
    add_tensor(list, n, "embeddings.token_type_embeddings.weight", Tt, C, off[P_WTT], 1, 1);
    add_tensor(list, n, "embeddings.LayerNorm.weight", C, 0, off[P_EMB_LNW], 0, 1);
    add_tensor(list, n, "embeddings.LayerNorm.bias", C, 0, off[P_EMB_LNB], 0, 1);
    for (int l = 0; l < L; l++) {
        static const char *qkv[3] = {"query", "key", "value"};
        size_t lc = (size_t)l * (size_t)C, li = (size_t)l * (size_t)I;
        for (int j = 0; j < 3; j++) {
            snprintf(name, sizeof name, "encoder.layer.%d.attention.self.%s.weight", l, qkv[j]);
            add_tensor(list, n, name, C, C, off[P_QKVW] + ((size_t)l * 3 + (size_t)j) * (size_t)(C * C), 1, 1);
            snprintf(name, sizeof name, "encoder.layer.%d.attention.self.%s.bias", l, qkv[j]);
            add_tensor(list, n, name, C, 0, off[P_QKVB] + ((size_t)l * 3 + (size_t)j) * (size_t)C, 0, 1);
        }
        snprintf(name, sizeof name, "encoder.layer.%d.attention.output.dense.weight", l);
        add_tensor(list, n, name, C, C, off[P_ATTPROJW] + lc * (size_t)C, 1, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.attention.output.dense.bias", l);
        add_tensor(list, n, name, C, 0, off[P_ATTPROJB] + lc, 0, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.attention.output.LayerNorm.weight", l);
        add_tensor(list, n, name, C, 0, off[P_LN1W] + lc, 0, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.attention.output.LayerNorm.bias", l);
        add_tensor(list, n, name, C, 0, off[P_LN1B] + lc, 0, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.intermediate.dense.weight", l);
        add_tensor(list, n, name, I, C, off[P_FCW] + li * (size_t)C, 1, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.intermediate.dense.bias", l);
        add_tensor(list, n, name, I, 0, off[P_FCB] + li, 0, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.output.dense.weight", l);
        add_tensor(list, n, name, C, I, off[P_FCPROJW] + lc * (size_t)I, 1, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.output.dense.bias", l);
        add_tensor(list, n, name, C, 0, off[P_FCPROJB] + lc, 0, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.output.LayerNorm.weight", l);
        add_tensor(list, n, name, C, 0, off[P_LN2W] + lc, 0, 1);
        snprintf(name, sizeof name, "encoder.layer.%d.output.LayerNorm.bias", l);
        add_tensor(list, n, name, C, 0, off[P_LN2B] + lc, 0, 1);
    }
    if (parts.pooler) {
        add_tensor(list, n, "pooler.dense.weight", C, C, off[P_POOLW], 1, 1);
        add_tensor(list, n, "pooler.dense.bias", C, 0, off[P_POOLB], 0, 1);
    }
    if (parts.classifier && K > 0) {
        add_tensor(list, n, "classifier.weight", K, C, off[P_CLSW], 1, 0);
        add_tensor(list, n, "classifier.bias", K, 0, off[P_CLSB], 0, 0);
    }
    if (parts.mlm) {
        add_tensor(list, n, "cls.predictions.transform.dense.weight", C, C, off[P_MLM_W], 1, 0);
        add_tensor(list, n, "cls.predictions.transform.dense.bias", C, 0, off[P_MLM_B], 0, 0);
        add_tensor(list, n, "cls.predictions.transform.LayerNorm.weight", C, 0, off[P_MLM_LNW], 0, 0);
        add_tensor(list, n, "cls.predictions.transform.LayerNorm.bias", C, 0, off[P_MLM_LNB], 0, 0);
        add_tensor(list, n, "cls.predictions.bias", V, 0, off[P_MLM_BIAS], 0, 0);
    }
    if (sz[P_NG_IDF]) {
        int64_t F = parts.ngram;
        add_tensor(list, n, "bft_ngram.keys", F, 2, off[P_NG_KEYS], 0, 0);
        add_tensor(list, n, "bft_ngram.idf", F, 0, off[P_NG_IDF], 0, 0);
        add_tensor(list, n, "bft_ngram.weight", K, F, off[P_NG_W], 0, 0);
        add_tensor(list, n, "bft_ngram.bias", K, 0, off[P_NG_B], 0, 0);
    }
    return list;
}
