/*
 * cuda_stub.c — the CUDA control functions of ops_cuda.h for a build without
 * the CUDA backend (USE_CUDA=0, or no nvcc): they exist so that callers need
 * no #ifdef, and they say plainly that this build has no CUDA. In a CUDA build
 * the Makefile compiles this file with -DBFT_WITH_CUDA and it is empty
 * (ops_cuda.cu defines the real functions).
 */
#include "ops_cuda.h"

#include "backend.h"

#ifndef BFT_WITH_CUDA

#define NO_CUDA_MSG "bft was built without CUDA (rebuild with make USE_CUDA=1 where nvcc is installed)"

int bft_cuda_built(void)
{
    return 0;
}

int bft_cuda_available(bft_error *err)
{
    bft_set_error(err, BFT_EDEVICE, NO_CUDA_MSG);
    return 0;
}

int bft_cuda_init(int index, int precision, bft_error *err)
{
    (void)index;
    (void)precision;
    return bft_set_error(err, BFT_EDEVICE, NO_CUDA_MSG);
}

int bft_cuda_check(bft_error *err)
{
    bft_clear_error(err);
    return BFT_OK;
}

void bft_cuda_release(void)
{
}

const char *bft_cuda_device_name(void)
{
    return "";
}

const bft_backend *bft_cuda_backend(void)
{
    return NULL;
}

#else
/* ISO C forbids an empty translation unit */
typedef int bft_cuda_stub_unused;
#endif
