/*
 * metrics.c — per-class counts, accuracy and macro-F1 (metrics.h).
 */
#include "metrics.h"

void bft_counts_init(bft_class_counts *c, int C, int64_t *storage)
{
    c->C = C;
    c->tp = storage;
    c->fp = storage + C;
    c->fn = storage + 2 * (int64_t)C;
    c->n = 0;
    c->exact = 0;
}

void bft_counts_add(bft_class_counts *c, int truth, int pred)
{
    if (truth == pred) {
        c->tp[truth]++;
        c->exact++;
    } else {
        c->fp[pred]++;
        c->fn[truth]++;
    }
    c->n++;
}

void bft_counts_add_set(bft_class_counts *c, const unsigned char *truth, const unsigned char *pred)
{
    int same = 1;
    for (int k = 0; k < c->C; k++) {
        if (pred[k] && truth[k])
            c->tp[k]++;
        else if (pred[k])
            c->fp[k]++;
        else if (truth[k])
            c->fn[k]++;
        if (!pred[k] != !truth[k])
            same = 0;
    }
    c->exact += same;
    c->n++;
}

double bft_f1(int64_t tp, int64_t fp, int64_t fn)
{
    return tp + fp + fn > 0 ? 2.0 * tp / (double)(2 * tp + fp + fn) : 0.0;
}

double bft_counts_accuracy(const bft_class_counts *c)
{
    return (double)c->exact / c->n;
}

double bft_counts_macro_f1(const bft_class_counts *c, int every_class)
{
    double sum = 0.0;
    int classes = 0;
    for (int k = 0; k < c->C; k++) {
        if (c->tp[k] + c->fp[k] + c->fn[k] == 0)
            continue;
        sum += bft_f1(c->tp[k], c->fp[k], c->fn[k]);
        classes++;
    }
    if (every_class)
        return c->C > 0 ? sum / c->C : 0.0;
    return classes > 0 ? sum / classes : 0.0;
}
