/*
 * embed.h — sentence embeddings: the pooling of sentence-transformers over
 * the last hidden states, its configuration (modules.json,
 * 1_Pooling/config.json, sentence_bert_config.json), and embedding inference.
 *
 * Letters as in model.h: B batch, T tokens, C hidden; D = nmodes * C, the
 * embedding width (the pooled vectors of several modes are concatenated, in
 * the order of the modes, as sentence-transformers does).
 */
#ifndef BFT_EMBED_H
#define BFT_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "model.h"
#include "train.h"

/* Pooling modes of sentence-transformers' Pooling module. */
enum {
    BFT_POOL_CLS = 0,        /* "cls": the first token ([CLS]) */
    BFT_POOL_MAX = 1,        /* "max": per channel, over the tokens */
    BFT_POOL_MEAN = 2,       /* "mean": over the tokens ([CLS] and [SEP] included) */
    BFT_POOL_MEAN_SQRT = 3,  /* "mean_sqrt_len_tokens": sum / sqrt(tokens) */
    BFT_POOL_WMEAN = 4,      /* "weightedmean": token t weighs t + 1 */
    BFT_POOL_LAST = 5,       /* "lasttoken": the last token ([SEP]) */
    BFT_POOL_NMODES = 6
};

typedef struct bft_pooling {
    int nmodes;                    /* 1..BFT_POOL_NMODES */
    int modes[BFT_POOL_NMODES];    /* concatenated in this order */
    int normalize;                 /* 1: L2-normalize the (concatenated) vector */
    int max_length;                /* tokens incl. [CLS]/[SEP]; 0: the model's */
} bft_pooling;

/* sentence-transformers' default for a plain checkpoint: mean, no
 * normalization, the model's max_length. */
bft_pooling bft_pooling_default(void);

/* Embedding width D for hidden size C. */
int bft_pooling_dim(const bft_pooling *p, int C);

/* Name of a mode ("cls", "max", "mean", "mean_sqrt_len_tokens",
 * "weightedmean", "lasttoken"), or NULL. */
const char *bft_pool_mode_name(int mode);

/* Pool hidden (B,T,C), row b valid for its first lens[b] >= 1 tokens (right
 * padding), into out (B,D) as sentence-transformers' Pooling (+ Normalize when
 * p->normalize: x / max(||x||, 1e-12)). Accumulates in double. */
void bft_pool(const float *hidden, const int32_t *lens, int B, int T, int C,
              const bft_pooling *p, float *out);

/* modules.json of a sentence-transformers directory: Transformer, Pooling and
 * an optional Normalize module, in that order. Writes the Pooling module's
 * directory (a plain relative name such as "1_Pooling"; "" when it is the
 * model directory itself) into pooling_dir and sets p->normalize. Other
 * modules (Dense, LayerNorm, ...) → BFT_EUNSUPPORTED naming the module;
 * malformed → BFT_EFORMAT. */
int bft_st_modules_parse(const char *json, size_t len, char *pooling_dir, size_t dirlen,
                         bft_pooling *p, bft_error *err);

/* The Pooling module's config.json: "pooling_mode" (a name or a list of names)
 * or the older pooling_mode_*_tokens booleans (none true: mean) → p->modes,
 * p->nmodes. include_prompt is accepted (bft uses no prompts). */
int bft_st_pooling_parse(const char *json, size_t len, bft_pooling *p, bft_error *err);

/* sentence_bert_config.json: max_seq_length → p->max_length (absent or null:
 * unchanged). */
int bft_st_sbert_parse(const char *json, size_t len, bft_pooling *p, bft_error *err);

/* The pooling of a model directory: modules.json (absent: *p =
 * bft_pooling_default(), *found = 0), the Pooling module's config.json and
 * sentence_bert_config.json (max_seq_length, optional); *found = 1 when
 * modules.json was there. Returns 0 or an error code with err (an
 * unsupported module: BFT_EUNSUPPORTED). */
int bft_pooling_load_dir(const char *dir, bft_pooling *p, int *found, bft_error *err);

/* A pooling written by a user: mode names joined by '+', optionally with the
 * word "normalize" ("mean", "cls", "mean+normalize", "cls+max"); case and
 * blanks around the names are ignored. p->max_length is left unchanged. */
int bft_pooling_parse_name(const char *s, bft_pooling *p, bft_error *err);

/* The name form of p ("mean+normalize"); writes at most buflen bytes. */
void bft_pooling_name(const bft_pooling *p, char *buf, size_t buflen);

/* bft's stored form: {"modes": ["mean"], "normalize": true, "max_length": 256}
 * (max_length omitted when 0). malloc'd, caller frees; NULL on OOM. */
char *bft_pooling_to_json(const bft_pooling *p);

/* Parse the stored form back. Returns 0 or an error code with err. */
int bft_pooling_from_json(const char *json, size_t len, bft_pooling *p, bft_error *err);

/* Eval-mode sentence embeddings of every example of ds (ids with [CLS]/[SEP],
 * labels ignored): out is (ds->n, D) row-major in dataset order. Batches of
 * batch_size (<= 0: 32), sorted by length; on the inference device
 * (bft_set_device). poll: see bft_predict_poll (may be NULL). */
int bft_embed(const bft_model *m, const bft_dataset *ds, int batch_size, const bft_pooling *p,
              float *out, int (*poll)(void *ctx), void *poll_ctx, bft_error *err);

/* Eval-mode sentence embeddings of texts cut into windows (chunk.h): ds
 * holds every window (ids with [CLS]/[SEP]), text i owning windows
 * first[i] .. first[i+1] (first: ntext + 1 entries, first[0] = 0,
 * first[ntext] = ds->n, at least one window per text); out is (ntext, D).
 * Each window is pooled as p says but not normalized, a text's windows are
 * combined by bft_combine_windows (mode BFT_WINDOWS_MEAN: mean weighted by
 * token count; BFT_WINDOWS_MAX: per-dimension max), and the result is
 * normalized when p->normalize (a text of one window: the same arithmetic
 * as bft_embed). Scratch (ds->n, D) floats. */
int bft_embed_windows(const bft_model *m, const bft_dataset *ds, const int64_t *first, int64_t ntext,
                      int mode, int batch_size, const bft_pooling *p, float *out,
                      int (*poll)(void *ctx), void *poll_ctx, bft_error *err);

/* Eval-mode last hidden states (the encoder output, before any pooler): out is
 * (total tokens, C), example i's rows at out[offsets[i] - offsets[0] ...]. */
int bft_hidden_states(const bft_model *m, const bft_dataset *ds, int batch_size, float *out,
                      int (*poll)(void *ctx), void *poll_ctx, bft_error *err);

/* (engine-internal, train.c) Eval-mode encoder over ds in length-sorted
 * batches of at most batch_size on the inference device: for each batch,
 * fn(ctx, hidden (B,T,C) in host memory, lens (B), idx (B) dataset indices,
 * B, T). Returns BFT_OK or an error code with err (BFT_ECANCEL when poll
 * stopped it). */
int bft_encoder_run(const bft_model *m, const bft_dataset *ds, int batch_size,
                    void (*fn)(void *ctx, const float *hidden, const int32_t *lens,
                               const int64_t *idx, int B, int T),
                    void *ctx, int (*poll)(void *ctx), void *poll_ctx, bft_error *err);

#endif
