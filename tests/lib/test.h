/*
 * test.h — minimal unit-test harness for the engine's C tests.
 *
 *   static void test_foo(void) { CHECK(x == 1, "x is %d", x); }
 *   int main(void) { RUN(test_foo); return test_summary(); }
 *
 * A test case passes when none of its CHECKs failed. test_summary() prints
 * "RESULT: P passed, F failed" (counted in test cases), which
 * tests/run_all.sh adds up, and returns the exit status.
 */
#ifndef BFT_TEST_H
#define BFT_TEST_H

#include <math.h>
#include <stdio.h>

static int test_cases_passed, test_cases_failed, test_case_checks_failed;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            test_case_checks_failed++;                                          \
            if (test_case_checks_failed <= 20) {                                \
                fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
                fprintf(stderr, __VA_ARGS__);                                   \
                fputc('\n', stderr);                                            \
            }                                                                   \
        }                                                                       \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol, ...)                                      \
    CHECK(fabs((double)(a) - (double)(b)) <= (atol) + (rtol) * fabs((double)(b)), __VA_ARGS__)

#define RUN(fn)                                                                 \
    do {                                                                        \
        test_case_checks_failed = 0;                                            \
        fn();                                                                   \
        if (test_case_checks_failed == 0) {                                     \
            test_cases_passed++;                                                \
            printf("ok - %s\n", #fn);                                           \
        } else {                                                                \
            test_cases_failed++;                                                \
            printf("not ok - %s (%d failed checks)\n", #fn, test_case_checks_failed); \
        }                                                                       \
        fflush(stdout);                                                         \
    } while (0)

static inline int test_summary(void)
{
    printf("RESULT: %d passed, %d failed\n", test_cases_passed, test_cases_failed);
    return test_cases_failed ? 1 : 0;
}

#endif
