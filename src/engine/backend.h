/*
 * backend.h — compute backends behind ops.h (CPU: ops_cpu.c; CUDA: cuda/ops_cuda.cu).
 *
 * Every bft_op_* call of ops.h goes to the calling thread's current
 * backend (bft_backend_use; the CPU when none was chosen), so bert.c runs
 * unchanged on either: with the CUDA backend every tensor pointer it passes is
 * a device pointer. Memory for tensors comes from bft_dev_alloc and moves with
 * bft_dev_upload / bft_dev_download (plain malloc/memcpy on the CPU).
 *
 * Devices (BFT_DEVICE_*) and precisions (BFT_PRECISION_*) are train.h's.
 */
#ifndef BFT_BACKEND_H
#define BFT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "model.h"
#include "ops.h"
#include "train.h" /* BFT_DEVICE_*, BFT_PRECISION_* */

/* One backend: its memory functions and one entry per op of ops_list.h (same
 * signatures and semantics, pointers into the backend's memory). */
typedef struct bft_backend {
    const char *name;     /* "cpu", "cuda" */
    int device;           /* BFT_DEVICE_* */
    void *(*alloc)(size_t bytes);                  /* NULL on failure (check() says why) */
    void (*free)(void *p);
    void (*upload)(void *dst, const void *src_host, size_t bytes);
    void (*download)(void *dst_host, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);   /* within the backend's memory */
    int (*check)(bft_error *err);                  /* first failure since the last check */
    void (*set_weights)(const float *w, size_t n); /* parameter block hint (bf16 mirror) */

    /* the ops of ops_list.h, in its order */
#define BFT_OP(ret, name, params, args) ret(*name) params;
#include "ops_list.h"
#undef BFT_OP
} bft_backend;

/* The CPU backend (always present). */
const bft_backend *bft_cpu_backend(void);

/* Load OpenBLAS (dlopen on first use, never at library load, with no threads
 * of its own); BFT_EDEVICE with the reason when it cannot be loaded. */
int bft_cpu_blas_load(bft_error *err);

/* The CUDA backend, or NULL when bft was built without CUDA. Selecting it
 * does not initialise CUDA: bft_backend_open does. */
const bft_backend *bft_cuda_backend(void);

/* Open the backend of device (BFT_DEVICE_*) with precision (BFT_PRECISION_*):
 * initialises CUDA lazily (never at library load). No silent fallback: CUDA
 * without a usable GPU is BFT_EDEVICE with the reason. *out receives the
 * backend. Returns BFT_OK or an error code with err. */
int bft_backend_open(int device, int precision, const bft_backend **out, bft_error *err);

/* The calling thread's current backend (the CPU one unless changed). */
const bft_backend *bft_backend_current(void);

/* Make b the calling thread's current backend (NULL: the CPU); returns the
 * previous one so callers can restore it. */
const bft_backend *bft_backend_use(const bft_backend *b);

/* Memory of the current backend: allocate (64-byte aligned on the CPU), free,
 * copy in from / out to host memory. */
void *bft_dev_alloc(size_t bytes);
void bft_dev_free(void *p);
void bft_dev_upload(void *dst, const void *src_host, size_t bytes);
void bft_dev_download(void *dst_host, const void *src, size_t bytes);
void bft_dev_copy(void *dst, const void *src, size_t bytes);

/* The current backend's first failure since the last check (BFT_OK if none). */
int bft_dev_check(bft_error *err);

/* A model's weights on the device of one engine call. */
typedef struct bft_devmodel {
    const bft_backend *be;   /* the call's backend */
    const bft_backend *prev; /* the caller's backend, restored by close */
    bft_model dm;            /* the model with params_mem / p on the device (a shallow copy;
                              * on the CPU the very same weights as the model's) */
    float *owned;            /* device weights this handle frees (training) */
    int cpu_weights;         /* training on a CPU backend: set_weights(NULL) at close */
} bft_devmodel;

/* Make (device, precision) the calling thread's backend and put m's weights on
 * it: on the CPU the model's own weights (bf16 keeps a bf16 copy of them,
 * reused while they are unchanged); on CUDA an upload (training: a private
 * copy; inference: a cached copy reused while the model's weights are unchanged).
 * Returns BFT_OK or an error code with err (nothing to close then). */
int bft_devmodel_open(bft_devmodel *d, const bft_model *m, int device, int precision,
                      int training, bft_error *err);

/* Copy the device weights back into m->params_mem (no-op on the CPU). */
int bft_devmodel_download(bft_devmodel *d, bft_model *m, bft_error *err);

/* Free the private device weights and restore the caller's backend. */
void bft_devmodel_close(bft_devmodel *d);

#endif
