/*
 * testdata.h — random test inputs shared by the engine's C tests.
 */
#ifndef BFT_TEST_DATA_H
#define BFT_TEST_DATA_H

#include <stdint.h>
#include <stdlib.h>

#include "rng.h"

/* n normal(0, scale^2) floats from the engine's generator seeded with seed
 * (malloc'ed; the caller frees). */
static inline float *randn(size_t n, uint64_t seed, float scale)
{
    bft_rng r;
    float *x = malloc(n * sizeof *x);
    bft_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * bft_rng_normal(&r);
    return x;
}

#endif
