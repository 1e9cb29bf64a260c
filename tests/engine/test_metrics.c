/*
 * test_metrics.c — accuracy and macro-F1 (metrics.h) against values worked
 * out by hand (as scikit-learn's accuracy_score and f1_score(average="macro")
 * give them).
 */
#include <string.h>

#include "metrics.h"
#include "test.h"

/* truth 0 0 1 1 2, predicted 0 1 1 1 0: F1 0.5, 0.8, 0 */
static void test_single_label(void)
{
    int truth[5] = {0, 0, 1, 1, 2}, pred[5] = {0, 1, 1, 1, 0};
    int64_t store[3 * 4];
    bft_class_counts c;
    memset(store, 0, sizeof store);
    bft_counts_init(&c, 4, store); /* class 3 never true nor predicted */
    for (int i = 0; i < 5; i++)
        bft_counts_add(&c, truth[i], pred[i]);
    CHECK(c.n == 5 && c.exact == 3, "n %lld exact %lld", (long long)c.n, (long long)c.exact);
    CHECK(c.tp[0] == 1 && c.fp[0] == 1 && c.fn[0] == 1, "class 0 counts");
    CHECK(c.tp[1] == 2 && c.fp[1] == 1 && c.fn[1] == 0, "class 1 counts");
    CHECK(c.tp[2] == 0 && c.fp[2] == 0 && c.fn[2] == 1, "class 2 counts");
    CHECK_CLOSE(bft_counts_accuracy(&c), 0.6, 1e-12, 0, "accuracy %g", bft_counts_accuracy(&c));
    /* over the classes present: (0.5 + 0.8 + 0) / 3; over all four: / 4 */
    CHECK_CLOSE(bft_counts_macro_f1(&c, 0), 1.3 / 3, 1e-12, 0, "macro-F1 %g", bft_counts_macro_f1(&c, 0));
    CHECK_CLOSE(bft_counts_macro_f1(&c, 1), 1.3 / 4, 1e-12, 0, "macro-F1 (every class) %g",
                bft_counts_macro_f1(&c, 1));
}

/* label sets {0,1} -> {0}, {2} -> {2}, {} -> {1}: subset accuracy 1/3, F1 1, 0, 1 */
static void test_multi_label(void)
{
    unsigned char truth[3][3] = {{1, 1, 0}, {0, 0, 1}, {0, 0, 0}};
    unsigned char pred[3][3] = {{1, 0, 0}, {0, 0, 1}, {0, 1, 0}};
    int64_t store[3 * 3];
    bft_class_counts c;
    memset(store, 0, sizeof store);
    bft_counts_init(&c, 3, store);
    for (int i = 0; i < 3; i++)
        bft_counts_add_set(&c, truth[i], pred[i]);
    CHECK(c.n == 3 && c.exact == 1, "n %lld exact %lld", (long long)c.n, (long long)c.exact);
    CHECK(c.tp[1] == 0 && c.fp[1] == 1 && c.fn[1] == 1, "label 1 counts");
    CHECK_CLOSE(bft_counts_accuracy(&c), 1.0 / 3, 1e-12, 0, "subset accuracy");
    CHECK_CLOSE(bft_counts_macro_f1(&c, 1), 2.0 / 3, 1e-12, 0, "macro-F1 %g", bft_counts_macro_f1(&c, 1));
}

/* F1 of a class never true nor predicted is 0; nothing present: macro-F1 0 */
static void test_empty(void)
{
    int64_t store[3 * 2];
    bft_class_counts c;
    memset(store, 0, sizeof store);
    bft_counts_init(&c, 2, store);
    CHECK(bft_f1(0, 0, 0) == 0.0, "F1 of an absent class");
    CHECK(bft_f1(3, 0, 0) == 1.0, "F1 of a perfect class");
    CHECK(bft_counts_macro_f1(&c, 0) == 0.0, "macro-F1 with no class present");
}

int main(void)
{
    RUN(test_single_label);
    RUN(test_multi_label);
    RUN(test_empty);
    return test_summary();
}
