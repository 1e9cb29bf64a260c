/*
 * bf16.h — bfloat16 conversions of the CPU backends: round to nearest even,
 * like CUDA's __float2bfloat16 (subnormals kept, NaN stays NaN), in plain C
 * that gcc vectorises. A bf16 value is the upper half of the fp32 one.
 */
#ifndef BFT_BF16_H
#define BFT_BF16_H

#include <stdint.h>
#include <string.h>

/* fp32 -> bf16 bits, round to nearest even. */
static inline uint16_t bft_f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* bf16 bits -> fp32 (exact). */
static inline float bft_bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* x rounded to the nearest bf16 value, as fp32. */
static inline float bft_bf16_round(float x)
{
    return bft_bf2f(bft_f2bf(x));
}

#endif
