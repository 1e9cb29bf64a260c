/*
 * ngram.h — the n-gram head: a multinomial logistic regression over TF-IDF
 * word and character n-grams, trained beside a from-scratch encoder and mixed
 * with it at inference.
 *
 * Features of a text (both lower-cased with accents stripped, split as the
 * BERT pre-tokenizer splits: whitespace, and every punctuation character a
 * token of its own):
 *   - words: unigrams and bigrams of the tokens of two or more characters;
 *   - characters: the 2- to 5-grams of every token padded with a space on
 *     each side (a token shorter than n gives itself, padded, once).
 * Only the first BFT_NGRAM_MAX_WORDS tokens of a text are read, in training
 * and classification alike (time and memory stay bounded on any text).
 * Each feature is a 47-bit hash of its string, with the group (word 0,
 * character 1) in bit 47: key = group << 47 | hash. Values are TF-IDF as
 * scikit-learn's TfidfVectorizer(sublinear_tf=True): (1 + ln tf) * idf,
 * idf = ln((1 + n) / (1 + df)) + 1 over the training rows, each group's
 * vector scaled to unit L2 norm; features in fewer than two training rows are
 * dropped (min_df = 2).
 *
 * The model: logits z = W x + b, W (K, F), b (K), fitted by L-BFGS on
 * mean cross-entropy (optionally class-weighted) + ||W||^2 / (2 C n); C is
 * chosen by stratified k-fold cross-validation (macro-F1) over a grid.
 *
 * Mixing: the class probabilities of a model with an n-gram head are
 * softmax(log p_encoder + scale * log_softmax(z)).
 *
 * In a model's parameter block (model.h, parts.ngram = F): "bft_ngram.keys"
 * (F, 2): each key as two integers below 2^24 (high, low) held exactly in
 * floats, sorted ascending; "bft_ngram.idf" (F); "bft_ngram.weight" (K, F);
 * "bft_ngram.bias" (K). The scale is config.json's "bft_ngram_scale".
 */
#ifndef BFT_NGRAM_H
#define BFT_NGRAM_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "model.h"

/* Tokens of a text the n-gram head reads (words and punctuation). */
#define BFT_NGRAM_MAX_WORDS 512

/* Rows featurized for fitting: row i's distinct keys (sorted) with their counts. */
typedef struct bft_ngram_corpus bft_ngram_corpus;

/* An empty corpus, or NULL when out of memory. */
bft_ngram_corpus *bft_ngram_corpus_new(void);

/* Append one UTF-8 text as the next row. BFT_OK, or BFT_ENOMEM / BFT_ECANCEL with err. */
int bft_ngram_corpus_add(bft_ngram_corpus *c, const char *text, size_t len, bft_error *err);

/* Rows appended so far. */
int64_t bft_ngram_corpus_rows(const bft_ngram_corpus *c);

/* Bytes the corpus holds. */
size_t bft_ngram_corpus_bytes(const bft_ngram_corpus *c);

/* Free a corpus (NULL is fine). */
void bft_ngram_corpus_free(bft_ngram_corpus *c);

typedef struct bft_ngram_fit_opts {
    const double *c_grid;     /* inverse regularisation strengths tried (> 0), ascending */
    int n_c;                  /* >= 1; one value: no cross-validation */
    int folds;                /* >= 2 (cross-validation folds) */
    int max_iter;             /* L-BFGS iterations per fit */
    double tol;               /* stop once every gradient entry is below this (the
                               * objective is a mean over the rows) */
    int64_t max_features;     /* keep at most this many features (the most frequent) */
    uint64_t seed;            /* fold assignment */
    const float *class_weights; /* (K) or NULL: weighted cross-entropy as the encoder's */
} bft_ngram_fit_opts;

/* Defaults: C in {1, 10, 100, 1000}, 3 folds, 300 iterations, tol 1e-5, 2^19 features. */
bft_ngram_fit_opts bft_ngram_default_fit_opts(void);

/* A fitted head (arrays malloc'd; bft_ngram_head_free). */
typedef struct bft_ngram_head {
    int64_t F;               /* features */
    int K;                   /* classes */
    float *keys;             /* (F, 2) */
    float *idf;              /* (F) */
    float *w;                /* (K, F) */
    float *b;                /* (K) */
    double C;                /* the chosen C */
    double cv_macro_f1;      /* its cross-validated macro-F1 (NaN: one C, no CV) */
    int iterations;          /* L-BFGS iterations of the final fit */
} bft_ngram_head;

/* Fit a head on the n rows rows[] of c (indices into the corpus) with class
 * ids labels[] (n, in [0, K)). BFT_OK (head->F = 0, nothing allocated, when
 * no n-gram occurs in two of the rows), or BFT_EINVAL / BFT_ENOMEM /
 * BFT_ECANCEL (bft_interrupted()) with err. */
int bft_ngram_fit(const bft_ngram_corpus *c, const int64_t *rows, const int32_t *labels, int64_t n,
                  int K, const bft_ngram_fit_opts *opts, bft_ngram_head *head, bft_error *err);

/* Free what a head owns (the struct itself is not freed). */
void bft_ngram_head_free(bft_ngram_head *head);

/* The head's log-probabilities (K) of corpus row r. */
void bft_ngram_head_logprobs(const bft_ngram_head *head, const bft_ngram_corpus *c, int64_t r,
                             float *logp);

/* The log-probabilities (K) m's n-gram head (m->parts.ngram > 0) gives corpus row r. */
void bft_ngram_model_row_logprobs(const bft_model *m, const bft_ngram_corpus *c, int64_t r, float *logp);

/* Give m (a single-label classifier with K = head->K) the head, mixed with the
 * given scale (>= 0): the parameter block grows by the head's tensors (an
 * existing head is replaced). BFT_OK, or BFT_EINVAL / BFT_ENOMEM with err. */
int bft_model_set_ngram(bft_model *m, const bft_ngram_head *head, float scale, bft_error *err);

/* Remove m's n-gram head (no-op without one). BFT_OK or BFT_ENOMEM. */
int bft_model_drop_ngram(bft_model *m, bft_error *err);

/* 1 when m has an n-gram head mixed with a scale above 0. */
int bft_ngram_has_head(const bft_model *m);

/* The log-probabilities (K) m's n-gram head gives text. BFT_OK, or
 * BFT_EINVAL (no head) / BFT_ENOMEM / BFT_ECANCEL with err. */
int bft_ngram_text_logprobs(const bft_model *m, const char *text, size_t len, float *logp, bft_error *err);

/* Mix m's n-gram head into probs (K, the encoder's probabilities of text):
 * probs = softmax(log probs + scale * log_softmax(z(text))). No-op when m
 * has no head or its scale is 0. BFT_OK, or BFT_ENOMEM / BFT_ECANCEL. */
int bft_ngram_mix(const bft_model *m, const char *text, size_t len, float *probs, bft_error *err);

/* BFT_OK when m has no n-gram head, or one a load can accept: a single-label
 * classifier's, with integer key halves below 2^24 in strictly ascending
 * order and finite idf; else BFT_EMISMATCH with err. */
int bft_ngram_check(const bft_model *m, bft_error *err);

/* Mix given n-gram log-probabilities into probs (K) with scale, as bft_ngram_mix. */
void bft_ngram_mix_logprobs(float *probs, const float *logp, int K, float scale);

#endif
