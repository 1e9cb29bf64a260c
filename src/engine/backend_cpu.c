/*
 * backend_cpu.c — the CPU backend table: the ops of ops_cpu.c (named
 * bft_cpu_* through ops_cpu_names.h) and host memory.
 */
#include "ops_cpu_names.h" /* first: the ops.h names below mean bft_cpu_* */

#include "backend.h"

#include <stdlib.h>
#include <string.h>

/* Tensors: 64-byte aligned; small buffers (batch ids, lengths) plain malloc,
 * which keeps aligned_alloc's split-off fragments out of the allocator's caches. */
static void *cpu_alloc(size_t bytes)
{
    if (bytes < 4096)
        return malloc(bytes ? bytes : 1);
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

static void cpu_free(void *p)
{
    free(p);
}

static void cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (dst != src && bytes)
        memcpy(dst, src, bytes);
}

static int cpu_check(bft_error *err)
{
    bft_clear_error(err);
    return BFT_OK;
}

static void cpu_set_weights(const float *w, size_t n)
{
    (void)w;
    (void)n;
}

void bft_op_strided_rows(int64_t *rows, int n, int64_t stride)
{
    for (int r = 0; r < n; r++)
        rows[r] = (int64_t)r * stride;
}

float bft_op_mean(const float *x, int n)
{
    double s = 0.0;
    if (n <= 0)
        return 0.0f;
    for (int i = 0; i < n; i++)
        s += x[i];
    return (float)(s / n);
}

static const bft_backend cpu_backend = {
    .name = "cpu",
    .device = BFT_DEVICE_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .check = cpu_check,
    .set_weights = cpu_set_weights,
    .gemm = bft_gemm,
    .linear_fwd = bft_op_linear_fwd,
    .linear_bwd = bft_op_linear_bwd,
    .colsum = bft_op_colsum,
    .bias_gelu_fwd = bft_op_bias_gelu_fwd,
    .gelu_fwd = bft_op_gelu_fwd,
    .gelu_bwd = bft_op_gelu_bwd,
    .gelu_recompute = bft_op_gelu_recompute,
    .mul = bft_op_mul,
    .embed_ln_fwd = bft_op_embed_ln_fwd,
    .embed_ln_bwd = bft_op_embed_ln_bwd,
    .residual_ln_fwd = bft_op_residual_ln_fwd,
    .layernorm_fwd = bft_op_layernorm_fwd,
    .layernorm_bwd = bft_op_layernorm_bwd,
    .dropout_bias_bwd = bft_op_dropout_bias_bwd,
    .attention_fwd = bft_op_attention_fwd,
    .attention_bwd = bft_op_attention_bwd,
    .attention_cls_fwd = bft_op_attention_cls_fwd,
    .attention_cls_bwd = bft_op_attention_cls_bwd,
    .gather_rows = bft_op_gather_rows,
    .scatter_add_rows = bft_op_scatter_add_rows,
    .bias_tanh_fwd = bft_op_bias_tanh_fwd,
    .tanh_bwd = bft_op_tanh_bwd,
    .dropout_fwd = bft_op_dropout_fwd,
    .dropout_bwd = bft_op_dropout_bwd,
    .softmax_xent = bft_op_softmax_xent,
    .sigmoid_bce = bft_op_sigmoid_bce,
    .adamw = bft_op_adamw,
    .sumsq = bft_op_sumsq,
    .zero = bft_op_zero,
    .strided_rows = bft_op_strided_rows,
    .mean = bft_op_mean,
};

const bft_backend *bft_cpu_backend(void)
{
    return &cpu_backend;
}
