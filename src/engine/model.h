/*
 * model.h — BERT configuration, parameter layout and Hugging Face checkpoint I/O.
 *
 * Shapes use llm.c letters: V vocab, P max positions, Tt token types,
 * C hidden, L layers, NH heads, I intermediate, K labels.
 * Linear weights are stored as PyTorch does: (out_features, in_features).
 */
#ifndef BFT_MODEL_H
#define BFT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "tokenizer.h"

/* BertConfig (config.json) plus tokenizer_config.json settings. */
typedef struct bft_config {
    int vocab_size;              /* V */
    int hidden_size;             /* C */
    int num_hidden_layers;       /* L */
    int num_attention_heads;     /* NH, C % NH == 0 */
    int intermediate_size;       /* I */
    int max_position_embeddings; /* P */
    int type_vocab_size;         /* Tt */
    int pad_token_id;
    float layer_norm_eps;
    float hidden_dropout_prob;
    float attention_probs_dropout_prob;
    float classifier_dropout;    /* < 0: null in config.json, use hidden_dropout_prob */
    float initializer_range;
    char hidden_act[32];         /* only "gelu" (erf) is supported */
    int num_labels;              /* K; 0 when the model has no classifier */
    char **id2label;             /* K malloc'd names, or NULL (then "LABEL_i") */
    int problem_type;            /* BFT_PROBLEM_SINGLE_LABEL (softmax, cross-entropy) or
                                  * BFT_PROBLEM_MULTI_LABEL (a sigmoid per label, binary
                                  * cross-entropy): config.json's problem_type */
    bft_tokenizer_opts tok;      /* tokenizer_config.json (HF defaults when absent) */
    float ngram_scale;           /* weight of the n-gram head's log-probabilities when mixed
                                  * (ngram.h): config.json's "bft_ngram_scale", 0 when absent */
} bft_config;

/* bft_config.problem_type: Hugging Face's "single_label_classification" (the
 * default) and "multi_label_classification". */
#define BFT_PROBLEM_SINGLE_LABEL 0
#define BFT_PROBLEM_MULTI_LABEL 1

/* A config with BertConfig defaults (bert-base shape, V=30522, K=0). */
bft_config bft_config_default(void);

/* Parse config.json bytes into cfg (starting from bft_config_default()).
 * Validates: positive sizes, hidden % heads == 0, hidden_act, eps > 0,
 * probabilities in [0,1), id2label/label2id consistent. Returns 0 or -1 with err. */
int bft_config_parse(const char *json, size_t len, bft_config *cfg, bft_error *err);

/* Check a config built in code (the checks bft_config_parse applies):
 * sizes in range, hidden % heads == 0, pad_token_id < V, hidden_act "gelu",
 * eps > 0, probabilities in [0,1). Returns BFT_OK or the error code with err. */
int bft_config_validate(const bft_config *cfg, bft_error *err);

/* Apply tokenizer_config.json bytes to cfg->tok. Returns 0 or -1 with err. */
int bft_tokenizer_config_parse(const char *json, size_t len, bft_config *cfg, bft_error *err);

/* tokenizer.json bytes (a checkpoint that ships no vocab.txt): the WordPiece
 * vocabulary as vocab.txt text (one token per line, line = id; model.vocab and
 * added_tokens, ids dense from 0) in *vocab (malloc'd, caller frees) and the
 * BertNormalizer's lowercase / strip_accents / handle_chinese_chars in cfg->tok.
 * Other models, normalizers or pre-tokenizers are BFT_EUNSUPPORTED. Returns 0
 * or -1 with err. */
int bft_tokenizer_json_parse(const char *json, size_t len, bft_config *cfg, char **vocab,
                             size_t *vocab_len, bft_error *err);

/* config.json text for cfg (architectures BertForSequenceClassification or
 * BertForMaskedLM, model_type bert, id2label/label2id). malloc'd, caller frees. */
char *bft_config_to_json(const bft_config *cfg, int has_classifier, int has_mlm);

/* tokenizer_config.json text for cfg->tok. malloc'd, caller frees. */
char *bft_tokenizer_config_to_json(const bft_config *cfg);

/* Deep copy src into dst (id2label duplicated). Returns 0 or -1 on OOM. */
int bft_config_copy(bft_config *dst, const bft_config *src);

/* Free what a config owns (id2label); the struct itself is not freed. */
void bft_config_release(bft_config *cfg);

/* Two indices with the same string in names[0..n): returns 1 with *i < *j,
 * 0 when all are distinct, -1 on OOM. O(n log n) (label lists can be long). */
int bft_find_duplicate_name(char *const *names, int n, int *i, int *j);

/* Label name i (id2label[i] or "LABEL_i" written into buf). */
const char *bft_config_label(const bft_config *cfg, int i, char *buf, size_t buflen);

/*
 * Parameters: one contiguous float array, named pointers into it.
 * Q, K and V of a layer are stacked in qkvw as rows [0,C) [C,2C) [2C,3C)
 * so one GEMM computes all three.
 */
typedef struct bft_params {
    float *wte;       /* (V, C)  word embeddings (also the tied MLM decoder) */
    float *wpe;       /* (P, C)  position embeddings */
    float *wtt;       /* (Tt, C) token type embeddings */
    float *emb_lnw;   /* (C) */
    float *emb_lnb;   /* (C) */
    float *qkvw;      /* (L, 3C, C) */
    float *qkvb;      /* (L, 3C) */
    float *attprojw;  /* (L, C, C)  attention.output.dense */
    float *attprojb;  /* (L, C) */
    float *ln1w;      /* (L, C)     attention.output.LayerNorm */
    float *ln1b;      /* (L, C) */
    float *fcw;       /* (L, I, C)  intermediate.dense */
    float *fcb;       /* (L, I) */
    float *fcprojw;   /* (L, C, I)  output.dense */
    float *fcprojb;   /* (L, C) */
    float *ln2w;      /* (L, C)     output.LayerNorm */
    float *ln2b;      /* (L, C) */
    float *poolw;     /* (C, C)  pooler.dense (NULL when absent) */
    float *poolb;     /* (C) */
    float *clsw;      /* (K, C)  classifier (NULL when K == 0) */
    float *clsb;      /* (K) */
    float *mlm_w;     /* (C, C)  cls.predictions.transform.dense (NULL when no MLM head) */
    float *mlm_b;     /* (C) */
    float *mlm_lnw;   /* (C)     cls.predictions.transform.LayerNorm */
    float *mlm_lnb;   /* (C) */
    float *mlm_bias;  /* (V)     cls.predictions.bias */
    float *ng_keys;   /* (F, 2)  bft_ngram.keys: the n-gram head (ngram.h; NULL when absent) */
    float *ng_idf;    /* (F)     bft_ngram.idf */
    float *ng_w;      /* (K, F)  bft_ngram.weight */
    float *ng_b;      /* (K)     bft_ngram.bias */
} bft_params;

/* Which optional parts a parameter block has. */
typedef struct bft_parts {
    int pooler;      /* bert.pooler.dense.* */
    int classifier;  /* classifier.* with cfg->num_labels rows */
    int mlm;         /* cls.predictions.* */
    int ngram;       /* bft_ngram.*: F, the n-gram head's features (0: none); at the
                      * block's end, so the block without it is a prefix */
} bft_parts;

/* One tensor of the layout: its HF name (without "bert." prefix for encoder
 * tensors; e.g. "embeddings.word_embeddings.weight",
 * "encoder.layer.3.attention.self.query.weight", "pooler.dense.bias",
 * "classifier.weight", "cls.predictions.bias"), shape and offset (in floats)
 * in the parameter block. decay: 1 for weights that AdamW decays (not biases,
 * not LayerNorm weights, not embeddings' LayerNorm). */
typedef struct bft_tensor_info {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t offset;
    size_t numel;
    int decay;
    int in_encoder;  /* 1: takes the "bert." prefix in BertFor* checkpoints */
} bft_tensor_info;

/* Number of floats the layout needs. */
size_t bft_params_count(const bft_config *cfg, bft_parts parts);

/* Point every member of p into base (a block of bft_params_count floats);
 * absent parts get NULL. */
void bft_params_assign(bft_params *p, float *base, const bft_config *cfg, bft_parts parts);

/* The HF tensor list of the layout in a stable order; *n receives the count.
 * Returns a malloc'd array (caller frees) or NULL on OOM. */
bft_tensor_info *bft_params_tensors(const bft_config *cfg, bft_parts parts, int *n);

/* A model: config, tokenizer, parameters. */
typedef struct bft_model {
    bft_config cfg;
    bft_parts parts;
    bft_tokenizer *tok;
    char *vocab;          /* vocab.txt bytes (owned) */
    size_t vocab_len;
    float *params_mem;    /* bft_params_count floats (owned unless params_external) */
    size_t num_params;
    bft_params p;
    int params_external;  /* 1: params_mem is read-only memory the model does not own
                           * (bft_model_share_params, bft_model_wrap_params) */
} bft_model;

/* Load an HF model directory: config.json, vocab.txt, tokenizer_config.json
 * (optional), model.safetensors (F32/F16/BF16). Names with or without "bert.",
 * LayerNorm weight/bias or gamma/beta; MLM decoder tied to wte. Missing or
 * unexpected tensors, shape/dtype mismatch, vocab size mismatch: NULL + err. */
bft_model *bft_model_load_dir(const char *dir, bft_error *err);

/* Same from memory buffers (tokenizer_config may be NULL). The safetensors
 * bytes are read in place (converted straight into the parameter block); the
 * caller keeps ownership of every buffer. */
bft_model *bft_model_load_mem(const char *config_json, size_t config_len,
                              const char *vocab, size_t vocab_len,
                              const char *tokenizer_config, size_t tokcfg_len,
                              const void *safetensors, size_t st_len, bft_error *err);

/* Make m's parameters the num_params floats at block (same layout, e.g. a
 * read-only shared mapping holding a copy of them): the owned block is freed
 * and m->params_external set, so bft_model_free leaves block alone. Inference
 * only reads it; training refuses such a model. n must equal m->num_params.
 * Returns 0 or -1 with err. */
int bft_model_share_params(bft_model *m, const float *block, size_t n, bft_error *err);

/* A model whose parameters are external read-only memory: config.json,
 * vocab.txt and tokenizer_config.json (may be NULL) as for bft_model_load_mem,
 * and the parameter block of a model loaded from them before (parts and
 * num_labels as that model had them; n floats, which must be
 * bft_params_count of the resulting layout). Nothing is copied from block;
 * the caller keeps it valid until bft_model_free. NULL + err on mismatch. */
bft_model *bft_model_wrap_params(const char *config_json, size_t config_len,
                                 const char *vocab, size_t vocab_len,
                                 const char *tokenizer_config, size_t tokcfg_len,
                                 bft_parts parts, int num_labels,
                                 const float *block, size_t n, bft_error *err);

/* A freshly initialised model like HF _init_weights: Linear/Embedding weights
 * normal(0, initializer_range), biases 0, LayerNorm 1/0, padding row of wte 0.
 * parts selects pooler/classifier/mlm. Deterministic in seed. */
bft_model *bft_model_new(const bft_config *cfg, const char *vocab, size_t vocab_len,
                         bft_parts parts, uint64_t seed, bft_error *err);

/* Make the classifier fit num_labels: a classifier with exactly num_labels
 * rows is kept (HF semantics when the labels fit); otherwise a fresh head
 * normal(0, initializer_range), zero bias, is created (pooler too if absent).
 * names: NULL or num_labels strings, copied into cfg.id2label. */
int bft_model_set_labels(bft_model *m, int num_labels, const char *const *names,
                         uint64_t seed, bft_error *err);

/* Serialise the parameters as safetensors (F32, HF names with the "bert."
 * prefix, sorted header, 8-byte aligned). Returns malloc'd bytes or NULL. */
void *bft_model_to_safetensors(const bft_model *m, size_t *out_len, bft_error *err);

/* Write config.json, model.safetensors, vocab.txt, tokenizer_config.json into
 * dir (created if missing). Returns 0 or -1 with err. */
int bft_model_save_dir(const bft_model *m, const char *dir, bft_error *err);

/* Free a model (NULL is fine). */
void bft_model_free(bft_model *m);

#endif
