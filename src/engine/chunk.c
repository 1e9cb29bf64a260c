/*
 * chunk.c — windows over long texts, pooling of their probabilities and
 * combination of their embeddings (see chunk.h).
 */
#include "chunk.h"

#include <stdlib.h>
#include <string.h>

int bft_window_overlap(int max_length, int stride)
{
    int L = max_length - 2;
    if (L < 1)
        return 0;
    if (stride < 0)
        stride = 0;
    return stride > L / 2 ? L / 2 : stride;
}

int64_t bft_window_count(size_t n, int max_length, int stride)
{
    int L = max_length - 2;
    if (L < 1 || n <= (size_t)L)
        return 1;
    size_t step = (size_t)(L - bft_window_overlap(max_length, stride));
    /* windows start at 0, step, 2 step, ...: the last one reaches n */
    return 1 + (int64_t)((n - (size_t)L + step - 1) / step);
}

size_t bft_window_ids(size_t n, int max_length, int stride)
{
    int L = max_length - 2;
    int64_t w = bft_window_count(n, max_length, stride);
    if (L < 1)
        return 2;
    if (w == 1)
        return (n < (size_t)L ? n : (size_t)L) + 2;
    size_t step = (size_t)(L - bft_window_overlap(max_length, stride));
    size_t last_start = (size_t)(w - 1) * step;
    return (size_t)(w - 1) * ((size_t)L + 2) + (n - last_start) + 2;
}

void bft_windows(const int32_t *pieces, size_t n, int max_length, int stride, int cls_id,
                 int sep_id, int32_t *out_ids, int64_t *out_offsets)
{
    int L = max_length - 2;
    int64_t w = bft_window_count(n, max_length, stride);
    size_t step = L < 1 ? 1 : (size_t)(L - bft_window_overlap(max_length, stride));
    int64_t at = 0;
    out_offsets[0] = 0;
    for (int64_t k = 0; k < w; k++) {
        size_t start = (size_t)k * step;
        size_t len = L < 1 ? 0 : (n - start < (size_t)L ? n - start : (size_t)L);
        if (start > n)
            len = 0;
        out_ids[at++] = cls_id;
        if (len)
            memcpy(out_ids + at, pieces + start, len * sizeof *out_ids);
        at += (int64_t)len;
        out_ids[at++] = sep_id;
        out_offsets[k + 1] = at;
    }
}

int bft_encode_windows(const bft_tokenizer *tok, const char *text, size_t len, int max_length,
                       int stride, int32_t **ids, int64_t **offsets, int64_t *nwin,
                       bft_error *err)
{
    int32_t *pieces = NULL;
    size_t n = 0;
    *ids = NULL;
    *offsets = NULL;
    *nwin = 0;
    if (!tok || max_length < 2) {
        bft_set_error(err, BFT_EINVAL, "bft_encode_windows: no tokenizer or max_length < 2");
        return -1;
    }
    bft_special_ids sp = bft_tokenizer_special(tok);
    if (sp.cls < 0 || sp.sep < 0) {
        bft_set_error(err, BFT_EMISMATCH, "bft_encode_windows: vocabulary lacks [CLS] or [SEP]");
        return -1;
    }
    if (bft_encode_pieces(tok, text, len, &pieces, &n, err) != 0)
        return -1;
    int64_t w = bft_window_count(n, max_length, stride);
    *ids = malloc(bft_window_ids(n, max_length, stride) * sizeof **ids);
    *offsets = malloc((size_t)(w + 1) * sizeof **offsets);
    if (!*ids || !*offsets) {
        free(pieces);
        free(*ids);
        free(*offsets);
        *ids = NULL;
        *offsets = NULL;
        bft_set_error(err, BFT_ENOMEM, "out of memory for %lld windows", (long long)w);
        return -1;
    }
    bft_windows(pieces, n, max_length, stride, sp.cls, sp.sep, *ids, *offsets);
    free(pieces);
    *nwin = w;
    return 0;
}

void bft_pool_windows(const float *probs, int64_t nwin, int K, int mode, int renorm, float *out)
{
    for (int k = 0; k < K; k++) {
        double acc = mode == BFT_WINDOWS_MAX ? (double)probs[k] : 0.0;
        for (int64_t w = 0; w < nwin; w++) {
            double p = probs[(size_t)w * K + k];
            if (mode == BFT_WINDOWS_MAX)
                acc = p > acc ? p : acc;
            else
                acc += p;
        }
        out[k] = (float)(mode == BFT_WINDOWS_MAX ? acc : acc / (double)(nwin > 0 ? nwin : 1));
    }
    if (renorm) {
        double s = 0.0;
        for (int k = 0; k < K; k++)
            s += out[k];
        if (s > 0.0)
            for (int k = 0; k < K; k++)
                out[k] = (float)(out[k] / s);
    }
}

void bft_combine_windows(const float *emb, const int64_t *ntok, int64_t nwin, int D, int mode,
                         float *out)
{
    if (nwin <= 1) {
        if (nwin == 1)
            memcpy(out, emb, (size_t)D * sizeof *out);
        else
            memset(out, 0, (size_t)D * sizeof *out);
        return;
    }
    double wsum = 0.0;
    for (int64_t w = 0; w < nwin; w++)
        wsum += (double)ntok[w];
    for (int d = 0; d < D; d++) {
        double acc = mode == BFT_WINDOWS_MAX ? (double)emb[d] : 0.0;
        for (int64_t w = 0; w < nwin; w++) {
            double x = emb[(size_t)w * D + d];
            if (mode == BFT_WINDOWS_MAX)
                acc = x > acc ? x : acc;
            else
                acc += (double)ntok[w] * x;
        }
        out[d] = (float)(mode == BFT_WINDOWS_MAX ? acc : acc / (wsum > 0.0 ? wsum : 1.0));
    }
}
