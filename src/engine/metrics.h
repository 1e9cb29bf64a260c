/*
 * metrics.h — accuracy and macro-F1 of a classification, counted per class
 * (as scikit-learn's accuracy_score and f1_score(average="macro")).
 *
 * One routine serves every place that scores predictions: the trainer's
 * per-epoch validation, bft_evaluate() and bft_train()'s comparison with the
 * deployed version.
 */
#ifndef BFT_METRICS_H
#define BFT_METRICS_H

#include <stdint.h>

/* Per-class counts over C classes; the arrays are the caller's, zeroed. */
typedef struct bft_class_counts {
    int C;
    int64_t *tp, *fp, *fn; /* (C) true positives, false positives, false negatives */
    int64_t n;             /* rows counted */
    int64_t exact;         /* rows whose prediction (label or label set) was exactly right */
} bft_class_counts;

/* Point counts at storage: (3 * C) int64_t, zeroed by the caller. */
void bft_counts_init(bft_class_counts *c, int C, int64_t *storage);

/* Count one single-label row: true class truth, predicted class pred (0 <= both < C). */
void bft_counts_add(bft_class_counts *c, int truth, int pred);

/* Count one multi-label row: truth and pred are (C) flags (label in the set or not). */
void bft_counts_add_set(bft_class_counts *c, const unsigned char *truth, const unsigned char *pred);

/* F1 of one class, 2TP / (2TP + FP + FN); 0 when nothing is true nor predicted. */
double bft_f1(int64_t tp, int64_t fp, int64_t fn);

/* Accuracy (single-label) or subset accuracy (multi-label): exact / n. */
double bft_counts_accuracy(const bft_class_counts *c);

/* Macro-F1: the mean F1 over the classes present in the truth or the
 * predictions (every_class 0: single-label, 0 when none), or over all C
 * classes, absent ones counting 0 (every_class 1: multi-label). */
double bft_counts_macro_f1(const bft_class_counts *c, int every_class);

#endif
