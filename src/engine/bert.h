/*
 * bert.h — engine-internal BERT forward/backward (BertForSequenceClassification
 * and the BertForMaskedLM head) over the ops of ops.h.
 *
 * Letters as in model.h: B batch, T tokens (the batch's own longest sequence),
 * C hidden, NH heads, I intermediate, L layers, K labels, V vocab, M masked rows.
 * Activations live in one allocation (bert_acts) sized for (Bmax, Tmax); a
 * training forward keeps every layer's activations for the backward, an
 * inference forward reuses one layer slot.
 */
#ifndef BFT_BERT_H
#define BFT_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "ops.h"

/* One padded batch: ids (B,T) right-padded with pad ids, lens (B) real lengths,
 * labels (B) class ids (single-label classification) or NULL, targets (B,K)
 * multi-hot in {0,1} (multi-label classification) or NULL, weights (B) each
 * example's share of the batch loss (summing to 1: weighted cross-entropy,
 * single-label only) or NULL (1/B). */
typedef struct bert_batch {
    int B, T;
    const int32_t *ids;
    const int32_t *lens;
    const int32_t *labels;
    const float *targets;
    const float *weights;
} bert_batch;

/* Dropout probabilities of one forward (all 0 in eval mode) and the seeds. */
typedef struct bert_dropout_cfg {
    float hidden, attn, classifier;
    uint64_t seed;  /* training seed */
    uint64_t step;  /* optimizer step (a fresh mask per step) */
} bert_dropout_cfg;

typedef struct bert_acts {
    int Bmax, Tmax, train, slots;
    int K;
    float *mem;
    size_t nfloats;
    float *emb_x;                 /* (B,T,C) embeddings sum (LN input) */
    float *emb_mean, *emb_rstd;   /* (B,T) */
    float *h0;                    /* (B,T,C) embeddings output = layer 0 input */
    float *qkv;                   /* (S,B,T,3C) */
    float *att;                   /* (S,B,NH,T,T) softmax probabilities (train only) */
    float *ctx;                   /* (S,B,T,C) attention output (heads concatenated) */
    float *res1;                  /* (S,B,T,C) dropout(attn dense) + input: LN1 input */
    float *ln1;                   /* (S,B,T,C) */
    float *ln1_mean, *ln1_rstd;   /* (S,B,T) */
    float *fch;                   /* (S,B,T,I) intermediate pre-activation */
    float *res2;                  /* (S,B,T,C) dropout(output dense) + ln1: LN2 input */
    float *ln2;                   /* (S,B,T,C) layer output */
    float *ln2_mean, *ln2_rstd;   /* (S,B,T) */
    float *gelu;                  /* (B,T,I) GELU output (scratch, recomputed in backward) */
    float *cls;                   /* (B,C) [CLS] rows of the last layer */
    float *pooled;                /* (B,C) tanh(pooler) */
    float *pooled_d;              /* (B,C) after classifier dropout */
    float *logits, *probs;        /* (B,K) */
    float *losses;                /* (B) */
    /* backward scratch (train only) */
    float *dA, *dB, *dC;          /* (B,T,C) */
    float *dqkv;                  /* (B,T,3C) */
    float *dI;                    /* (B,T,I) */
    float *dlogits;               /* (B,K) */
    float *dpool;                 /* (B,C) */
    int64_t *rows;                /* (B) [CLS] row indices */
    float *hcls, *dhcls;          /* (B,C) [CLS] rows of the last layer's input and its grad */
    /* cls_only: the last encoder layer computes only the [CLS] rows (set by
     * bert_cls_forward; the classifier needs nothing else): its activations are
     * (B,...) instead of (B,T,...) and bert_encoder_forward returns (B,C) */
    int cls_only;
    /* cancellation: poll(poll_ctx) is called before every encoder layer of a
     * forward (from the second on) and of a backward; once it returns nonzero,
     * stopped is set and the remaining layers are skipped (the results are
     * then garbage: the caller checks stopped and gives up). */
    int (*poll)(void *ctx);
    void *poll_ctx;
    int stopped;
} bert_acts;

/* Allocate activations for batches up to (Bmax, Tmax); train: keep every layer
 * and the backward scratch. Returns 0 or -1 (OOM). */
int bert_acts_alloc(bert_acts *a, const bft_config *cfg, int K, int Bmax, int Tmax, int train);
void bert_acts_free(bert_acts *a);

/* Bytes bert_acts_alloc would take. */
size_t bert_acts_bytes(const bft_config *cfg, int K, int Bmax, int Tmax, int train);

/* Encoder forward: ids → a->ln2 of the last layer (returned pointer, (B,T,C);
 * (B,C) [CLS] rows only when a->cls_only). Dropout from dc when a->train (dc may
 * be NULL: eval). */
const float *bert_encoder_forward(const bft_model *m, bert_acts *a, const bert_batch *bt,
                                  const bert_dropout_cfg *dc);

/* Sequence classification forward (encoder + pooler + classifier):
 * a->probs (B,K), a->losses (B) when labels; returns the mean loss (0 without labels),
 * with bt->weights the weighted sum sum_r weights[r] * loss[r] (a->losses then
 * holds the products). When a->train, also a->dlogits = d(returned loss)/d logits.
 * Single-label models (cfg.problem_type): softmax and cross-entropy with
 * bt->labels; multi-label: a sigmoid per label and binary cross-entropy (mean
 * over B*K) with bt->targets. */
float bert_cls_forward(const bft_model *m, bert_acts *a, const bert_batch *bt,
                       const bert_dropout_cfg *dc);

/* Backward of bert_cls_forward (after a training forward): writes every
 * parameter gradient into g (same layout as m->p). Gradients are assigned,
 * except the embedding tables (wte, wpe, wtt), which are accumulated and must be
 * zero before. Consumes the forward's activations (a->fch is overwritten): one
 * backward per forward. */
void bert_cls_backward(const bft_model *m, const bft_params *g, bert_acts *a,
                       const bert_batch *bt, const bert_dropout_cfg *dc);

/* Encoder backward given a->dA (B,T,C), the gradient at the last layer output
 * ((B,C) at the [CLS] rows when a->cls_only); a->dA and the other scratch buffers
 * are overwritten. */
void bert_encoder_backward(const bft_model *m, const bft_params *g, bert_acts *a,
                           const bert_batch *bt, const bert_dropout_cfg *dc);

/* MLM head workspace for M rows (grown as needed). */
typedef struct bert_mlm_ws {
    int cap;                      /* rows allocated */
    float *mem;
    float *h;                     /* (M,C) gathered hidden rows */
    float *pre;                   /* (M,C) transform dense pre-activation */
    float *g;                     /* (M,C) GELU output */
    float *ln;                    /* (M,C) LayerNorm output */
    float *mean, *rstd;           /* (M) */
    float *logits;                /* (M,V) */
    float *dlogits;               /* (M,V) (also probs when not training) */
    float *losses;                /* (M) */
    float *dh;                    /* (M,C) */
    float *dh2;                   /* (M,C) */
} bert_mlm_ws;

int bert_mlm_reserve(bert_mlm_ws *w, const bft_config *cfg, int M);
void bert_mlm_free(bert_mlm_ws *w);

/* MLM head on M rows of hidden (B*T,C) (row indices rows[M]):
 * softmax probabilities (M,V) into w->dlogits when labels == NULL; otherwise
 * returns the mean cross-entropy over the rows and leaves d(mean)/d logits in
 * w->dlogits. */
float bert_mlm_forward(const bft_model *m, bert_mlm_ws *w, const float *hidden,
                       const int64_t *rows, int M, const int32_t *labels);

/* Backward of bert_mlm_forward (with labels): writes the head's gradients into g,
 * adds the tied decoder's gradient into g->wte (zero before) and adds d hidden
 * rows into dhidden (B*T,C). */
void bert_mlm_backward(const bft_model *m, const bft_params *g, bert_mlm_ws *w,
                       const int64_t *rows, int M, float *dhidden);

#endif
