/*
 * ops_cpu.h — the CPU backend's ops: bft_cpu_op_<name> for every op of
 * ops_list.h, with the signature and semantics given there (host pointers).
 * Implemented in ops_cpu.c (strided_rows and mean in backend_cpu.c) and
 * put into the CPU backend table by backend_cpu.c. Everyone else calls the
 * ops.h names, which backend.c dispatches to the current backend.
 */
#ifndef BFT_OPS_CPU_H
#define BFT_OPS_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

#define BFT_OP(ret, name, params, args) ret bft_cpu_op_##name params;
#include "ops_list.h"
#undef BFT_OP

/* The bf16 mode of the CPU backend (ops_dnnl.c) shares these with it. */

/* bft_cpu_op_attention_fwd / _bwd; bf16 nonzero: every product's operands
 * (Q, K, V, the dropped-out probabilities, dctx, dS) rounded to bf16, with
 * fp32 accumulation, softmax and saved probabilities (the CUDA backend's bf16
 * attention). */
void bft_cpu_attention_fwd_mode(float *ctx, float *att, const float *qkv, const int32_t *lens,
                                int B, int T, int C, int NH, const bft_dropout *d, int bf16);
void bft_cpu_attention_bwd_mode(float *dqkv, const float *dctx, const float *att,
                                const float *qkv, const int32_t *lens, int B, int T, int C, int NH,
                                const bft_dropout *d, int bf16);

/* bft_cpu_op_adamw that also writes the updated p (n) rounded to bf16 into
 * mir (n) when mir is not NULL (the weights' bf16 copy). */
void bft_cpu_adamw_mirror(float *p, float *g, float *m, float *v, size_t n, double lr, double b1,
                          double b2, double eps, double wd, float gscale, int64_t t, int zero_grad,
                          uint16_t *mir);

#endif
