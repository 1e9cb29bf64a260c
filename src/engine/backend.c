/*
 * backend.c — dispatch of the ops of ops.h to the calling thread's current
 * backend (see backend.h), device selection and the backend memory calls.
 */
#include "backend.h"

#include <string.h>
#include <strings.h>

#include "cuda/ops_cuda.h"
#include "ops_dnnl.h"

static _Thread_local const bft_backend *current;

const bft_backend *bft_backend_current(void)
{
    return current ? current : bft_cpu_backend();
}

const bft_backend *bft_backend_use(const bft_backend *b)
{
    const bft_backend *prev = bft_backend_current();
    current = b;
    return prev;
}

int bft_device_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcasecmp(s, "cpu") == 0)
        return BFT_DEVICE_CPU;
    if (strcasecmp(s, "cuda") == 0 || strcasecmp(s, "gpu") == 0 || strcasecmp(s, "cuda:0") == 0)
        return BFT_DEVICE_CUDA;
    return -1;
}

static const struct {
    int precision;
    const char *name;
} precisions[] = {
    {BFT_PRECISION_AUTO, "auto"},
    {BFT_PRECISION_FP32, "fp32"},
    {BFT_PRECISION_BF16, "bf16"},
    {BFT_PRECISION_INT8, "int8"},
};
#define N_PRECISIONS ((int)(sizeof precisions / sizeof *precisions))

int bft_precision_parse(const char *s)
{
    for (int i = 0; s && i < N_PRECISIONS; i++)
        if (strcasecmp(s, precisions[i].name) == 0)
            return precisions[i].precision;
    return -1;
}

const char *bft_precision_name(int precision)
{
    for (int i = 0; i < N_PRECISIONS; i++)
        if (precisions[i].precision == precision)
            return precisions[i].name;
    return "?";
}

int bft_backend_open(int device, int precision, const bft_backend **out, bft_error *err)
{
    bft_clear_error(err);
    if (precision < BFT_PRECISION_AUTO || precision > BFT_PRECISION_INT8)
        return bft_set_error(err, BFT_EINVAL,
                             "unknown precision %d (0 auto, 1 fp32, 2 bf16, 3 int8)", precision);
    if (device == BFT_DEVICE_CPU) {
        if (bft_cpu_blas_load(err) != BFT_OK)
            return BFT_EDEVICE;
        /* oneDNN, loaded now; no fp32 fallback */
        if (precision == BFT_PRECISION_BF16)
            return bft_dnnl_bf16_backend(out, err);
        if (precision == BFT_PRECISION_INT8)
            return bft_dnnl_int8_backend(out, err);
        *out = bft_cpu_backend();
        return BFT_OK;
    }
    if (device != BFT_DEVICE_CUDA)
        return bft_set_error(err, BFT_EINVAL, "unknown device %d (0 cpu, 1 cuda)", device);
    if (precision == BFT_PRECISION_INT8)
        return bft_set_error(err, BFT_EUNSUPPORTED, "int8 inference runs on the CPU only");
    const bft_backend *cb = bft_cuda_backend();
    if (!cb) {
        bft_cuda_available(err); /* "bft was built without CUDA ..." */
        return BFT_EDEVICE;
    }
    int rc = bft_cuda_init(0, precision == BFT_PRECISION_FP32 ? 0 : 1, err);
    if (rc != BFT_OK)
        return rc;
    (void)bft_cuda_check(NULL); /* drop a failure a previous caller left unreported */
    *out = cb;
    return BFT_OK;
}

void *bft_dev_alloc(size_t bytes)
{
    return bft_backend_current()->alloc(bytes);
}

void bft_dev_free(void *p)
{
    if (p)
        bft_backend_current()->free(p);
}

void bft_dev_upload(void *dst, const void *src_host, size_t bytes)
{
    bft_backend_current()->upload(dst, src_host, bytes);
}

void bft_dev_download(void *dst_host, const void *src, size_t bytes)
{
    bft_backend_current()->download(dst_host, src, bytes);
}

void bft_dev_copy(void *dst, const void *src, size_t bytes)
{
    bft_backend_current()->copy(dst, src, bytes);
}

int bft_dev_check(bft_error *err)
{
    return bft_backend_current()->check(err);
}

/* ---------------------------------------------------------------- ops.h dispatch */

/* bft_op_<name>(args) calls the current backend's <name>; BFT_RET_<type> is
 * "return" for the ops that return a value (ops_list.h's return types). */
#define BFT_RET_void
#define BFT_RET_float return
#define BFT_RET_double return
#define BFT_OP(ret, name, params, args)                                                          \
    ret bft_op_##name params                                                                     \
    {                                                                                            \
        BFT_RET_##ret bft_backend_current()->name args;                                          \
    }
#include "ops_list.h"
#undef BFT_OP
