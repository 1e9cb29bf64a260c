/*
 * ops_dnnl.h — bf16 arithmetic on the CPU through oneDNN (ops_dnnl.c).
 *
 * The CPU backend's bf16 mode: the ops of ops_list.h with the CUDA backend's
 * bf16 semantics — every matrix product (linear layers, attention) takes bf16
 * operands (rounded to nearest even) and accumulates in fp32; master weights,
 * gradients, AdamW moments, activations, LayerNorm, softmax and GELU stay
 * fp32. The linear layers run on oneDNN's matmul (brgemm kernels with
 * AVX512-BF16 or AMX); the attention's small per-head products round their
 * operands and use OpenBLAS. The weights registered with set_weights get a
 * bf16 copy that the AdamW step refreshes in the same pass.
 *
 * oneDNN (libdnnl.so.2, Debian's libdnnl2) is dlopen()ed at the first bf16
 * request, never at library load, and runs single-threaded inside the
 * engine's own pool (threads.h): it starts no thread of its own. It is an
 * optional build dependency: without its headers (libdnnl-dev) bft builds,
 * and asking for bf16 on the CPU reports that it was built without oneDNN.
 * A CPU without the instructions (or oneDNN limited by ONEDNN_MAX_CPU_ISA) is
 * refused with a message naming what is missing: never a silent fp32
 * fallback, never an illegal instruction.
 *
 * int8 (inference only) is the same machinery with u8 x s8 products and
 * int32 accumulation (bft_dnnl_int8_backend). Like the CUDA backend, both
 * keep process-wide state (the weights' copies, the sticky error): they are
 * meant for one host thread at a time (a PostgreSQL backend, bft-cli).
 */
#ifndef BFT_OPS_DNNL_H
#define BFT_OPS_DNNL_H

#include "backend.h"
#include "bft_error.h"

/* What a caller asks oneDNN for. */
#define BFT_DNNL_BF16 1 /* bf16 matrix products: AVX512-BF16 or AMX */
#define BFT_DNNL_INT8 2 /* int8 inference: VNNI (AVX512 or AVX) or AMX */

/* BFT_OK when this build has oneDNN, libdnnl.so.2 loads and the CPU runs
 * `what` natively; else BFT_EUNSUPPORTED with what is missing. Loads oneDNN
 * on the first call. */
int bft_dnnl_available(int what, bft_error *err);

/* The CPU backend in bf16 mode (bft_dnnl_available(BFT_DNNL_BF16) first):
 * BFT_OK with *out, or its error. */
int bft_dnnl_bf16_backend(const bft_backend **out, bft_error *err);

/* The CPU backend in int8 mode, for inference only: the linear layers' forward
 * with int8 weights (per output channel, symmetric, quantised at a layer's
 * first use and kept with the registered weights) and int8 activations (per
 * row, asymmetric u8, quantised at each call), int32 accumulation, fp32
 * dequantisation and bias; everything else fp32. */
int bft_dnnl_int8_backend(const bft_backend **out, bft_error *err);

/* Free the bf16 and int8 copies of weights kept by these backends (no-op without). */
void bft_dnnl_release(void);

/* bft_dnnl_info: train.h. */

#endif
