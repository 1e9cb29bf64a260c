/*
 * chunk.h — long texts: overlapping windows of max_length tokens over a
 * text's WordPiece pieces, the pooling of the windows' class probabilities
 * into one prediction per text, and the combination of the windows'
 * sentence embeddings into one embedding per text.
 *
 * Windows follow Hugging Face's tokenizer(..., truncation=True,
 * return_overflowing_tokens=True, stride=S): a text of n pieces is cut into
 * windows of at most L = max_length - 2 pieces, each starting L - S pieces
 * after the previous one (so consecutive windows share S pieces), the last
 * one ending at the text's end; every window is [CLS] pieces [SEP]. The
 * overlap S is clamped to [0, L / 2] so windows always advance by at least
 * half a window. A text of at most L pieces is one window with exactly the
 * ids of bft_encode's truncation.
 */
#ifndef BFT_CHUNK_H
#define BFT_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "tokenizer.h"

/* How the windows' probabilities (bft_pool_windows) or embeddings
 * (bft_combine_windows) become the text's. */
#define BFT_WINDOWS_MEAN 0 /* average per class / dimension */
#define BFT_WINDOWS_MAX 1  /* largest per class / dimension */

/* The overlap actually used for max_length and a requested stride. */
int bft_window_overlap(int max_length, int stride);

/* Number of windows over n pieces (>= 1; 1 for n <= max_length - 2). */
int64_t bft_window_count(size_t n, int max_length, int stride);

/* Number of ids all windows over n pieces take ([CLS] and [SEP] included). */
size_t bft_window_ids(size_t n, int max_length, int stride);

/* Write the windows over pieces (n ids, no special tokens): out_ids (the
 * bft_window_ids count) receives them back to back, window w at
 * out_ids[out_offsets[w] .. out_offsets[w+1]); out_offsets holds
 * bft_window_count + 1 entries (out_offsets[0] = 0). */
void bft_windows(const int32_t *pieces, size_t n, int max_length, int stride, int cls_id,
                 int sep_id, int32_t *out_ids, int64_t *out_offsets);

/* Tokenize one UTF-8 text (len bytes) whole and cut it into windows as
 * above: *ids (malloc'd, all windows' ids) and *offsets (malloc'd,
 * *nwin + 1 entries); the caller frees both. Returns 0 or -1 with err
 * (BFT_ECANCEL when interrupted, resource.h). */
int bft_encode_windows(const bft_tokenizer *tok, const char *text, size_t len, int max_length,
                       int stride, int32_t **ids, int64_t **offsets, int64_t *nwin,
                       bft_error *err);

/* Pool the class probabilities of one text's nwin windows, probs (nwin, K)
 * row-major, into out (K): BFT_WINDOWS_MEAN averages each class over the
 * windows, BFT_WINDOWS_MAX takes each class's largest probability; renorm
 * then rescales out to sum 1 (softmax outputs pooled with max; not for
 * independent multi-label sigmoids). */
void bft_pool_windows(const float *probs, int64_t nwin, int K, int mode, int renorm, float *out);

/* Combine the embeddings of one text's nwin windows, emb (nwin, D)
 * row-major, into out (D): BFT_WINDOWS_MEAN averages them weighted by ntok
 * (nwin), each window's token count ([CLS] and [SEP] included), so that the
 * mean-pooled vectors of the windows combine into the mean over all their
 * tokens; BFT_WINDOWS_MAX takes each dimension's largest value. One window
 * is copied unchanged. Accumulates in double. */
void bft_combine_windows(const float *emb, const int64_t *ntok, int64_t nwin, int D, int mode,
                         float *out);

#endif
