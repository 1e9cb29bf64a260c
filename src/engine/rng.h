/*
 * rng.h — the engine's small deterministic random number generator.
 *
 * xoshiro256** (Blackman & Vigna) seeded through splitmix64, so any 64-bit
 * seed (0 included) gives a well-mixed state. Same seed → same sequence on
 * every platform (no libc rand, no floating-point state). Not thread-safe:
 * give each thread its own bft_rng (e.g. seeded with seed + thread index).
 */
#ifndef BFT_RNG_H
#define BFT_RNG_H

#include <stdint.h>

typedef struct bft_rng {
    uint64_t s[4];
} bft_rng;

/* Initialise the state from a 64-bit seed (splitmix64 expansion). */
void bft_rng_seed(bft_rng *r, uint64_t seed);

/* Next 64 random bits. */
uint64_t bft_rng_next(bft_rng *r);

/* Uniform float in [0, 1) with 24 random bits (multiples of 2^-24). */
float bft_rng_uniform(bft_rng *r);

/* Standard normal N(0, 1) (Box-Muller; one value per call, computed in double). */
float bft_rng_normal(bft_rng *r);

/* Uniform integer in [0, n) without modulo bias (n > 0). */
uint64_t bft_rng_below(bft_rng *r, uint64_t n);

#endif
