/*
 * cuda_bf16.h of the bft CUDA emulator: the bfloat16 type and its
 * conversions, with CUDA's rounding (__float2bfloat16: to nearest, ties to
 * even; NaN stays a quiet NaN).
 */
#ifndef BFT_CUDA_EMU_BF16_H
#define BFT_CUDA_EMU_BF16_H

#include <stdint.h>
#include <string.h>

typedef struct __nv_bfloat16 {
    uint16_t x;
} __nv_bfloat16;

static inline __nv_bfloat16 __float2bfloat16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    __nv_bfloat16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.x = (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN, sign kept */
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.x = (uint16_t)(u >> 16);
    return r;
}

static inline float __bfloat162float(__nv_bfloat16 h)
{
    uint32_t u = (uint32_t)h.x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
