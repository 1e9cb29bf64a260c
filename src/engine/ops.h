/*
 * ops.h — the engine's narrow compute interface.
 *
 * Everything the BERT forward/backward (bert.c) computes goes through these
 * functions; a backend implements all of them over its own memory (the CPU
 * backend, ops_cpu.c: OpenBLAS sgemm + vectorised C loops on the engine's
 * thread pool; the CUDA backend, cuda/ops_cuda.cu, takes device pointers). Pointers are to
 * row-major fp32 tensors; shapes use N rows (usually B*T tokens), C channels,
 * OC/IC output/input features, K classes, B batch, T tokens, NH heads.
 *
 * The ops are declared once, in ops_list.h, with their shapes and semantics;
 * this header turns that list into the prototypes bft_op_<name>, which
 * backend.c dispatches to the calling thread's backend (backend.h).
 *
 * Every op gives the same result for any thread count: parallel loops split
 * independent rows or columns, reductions run in a fixed order, and dropout
 * masks come from a counter-based hash of (seed, element index).
 */
#ifndef BFT_OPS_H
#define BFT_OPS_H

#include <stddef.h>
#include <stdint.h>

/* One dropout site: drop probability p (0: identity), the stream seed (a hash of
 * the training seed, step and site) and nothing else: element i is kept iff
 * hash(seed, i) >= p * 2^24, and kept elements are scaled by 1 / (1 - p). */
typedef struct bft_dropout {
    float p;
    uint64_t seed;
} bft_dropout;

/* The dropout seed of one site: a hash of (base seed, step, site id). */
uint64_t bft_dropout_seed(uint64_t base, uint64_t step, uint64_t site);

/* 1 if element i of site d is kept (exposed for tests). */
int bft_dropout_keep(const bft_dropout *d, uint64_t i);

/* The ops of ops_list.h: bft_op_gemm, bft_op_linear_fwd, ... */
#define BFT_OP(ret, name, params, args) ret bft_op_##name params;
#include "ops_list.h"
#undef BFT_OP

/* Erf GELU of one value and its derivative (reference for tests). */
float bft_gelu_ref(float x);

#endif
