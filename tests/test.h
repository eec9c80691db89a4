/* tests/test.h — the few macros every test program uses. A test is a plain C
 * program: exit 0 = pass, 1 = fail, 77 = skip (STYLE.md 11). CHECK records a
 * failure and goes on, so one run reports every mismatch; TEST_END returns the
 * exit code. */
#ifndef TT_TEST_H
#define TT_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int tt_test_failures __attribute__((unused)); /* a test that skips (77) before any CHECK */

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            tt_test_failures++;                                                \
        }                                                                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            tt_test_failures++;                                                \
        }                                                                      \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_) {                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n",   \
                    __FILE__, __LINE__, #a, #b, a_, b_);                       \
            tt_test_failures++;                                                \
        }                                                                      \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                  \
    do {                                                                       \
        double a_ = (double)(a), b_ = (double)(b);                             \
        if (!(fabs(a_ - b_) <= (tol))) {                                       \
            fprintf(stderr, "%s:%d: CHECK failed: |%s - %s| <= %g (%.9g vs %.9g)\n", \
                    __FILE__, __LINE__, #a, #b, (double)(tol), a_, b_);        \
            tt_test_failures++;                                                \
        }                                                                      \
    } while (0)

#define TEST_SKIP(...)                                                         \
    do {                                                                       \
        fprintf(stderr, "SKIP: ");                                             \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        exit(77);                                                              \
    } while (0)

#define TEST_END()                                                             \
    do {                                                                       \
        if (tt_test_failures) fprintf(stderr, "%d check(s) failed\n", tt_test_failures); \
        return tt_test_failures ? 1 : 0;                                       \
    } while (0)

#endif
