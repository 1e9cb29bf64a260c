/*
 * backend_cpu.c — the CPU backend table: the ops of ops_cpu.c (ops_cpu.h)
 * and host memory.
 */
#include "backend.h"
#include "ops_cpu.h"

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

void bft_cpu_op_strided_rows(int64_t *rows, int n, int64_t stride)
{
    for (int r = 0; r < n; r++)
        rows[r] = (int64_t)r * stride;
}

float bft_cpu_op_mean(const float *x, int n)
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
#define BFT_OP(ret, name, params, args) .name = bft_cpu_op_##name,
#include "ops_list.h"
#undef BFT_OP
};

const bft_backend *bft_cpu_backend(void)
{
    return &cpu_backend;
}
