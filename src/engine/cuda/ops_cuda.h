/*
 * ops_cuda.h — the CUDA backend of ops.h (cuBLAS GEMMs + CUDA kernels).
 *
 * Every bft_cuda_op_* function has the signature and the semantics of the
 * bft_op_* function of ops.h (ops_list.h) with the same suffix, but takes
 * DEVICE pointers (tensors, ids, lens, labels and row indices all
 * live in GPU memory). Shapes use the letters of ops.h: N rows, C channels,
 * OC/IC output/input features, K classes, B batch, T tokens, NH heads.
 *
 * Precision: fp32 mode (the default) computes everything in fp32 with exact
 * fp32 GEMMs (no TF32); bf16 mode rounds GEMM inputs to bf16 and accumulates
 * in fp32 (tensor cores), activations, LayerNorm/softmax statistics, gradients,
 * master weights and AdamW moments stay fp32. Weights registered with
 * bft_cuda_set_weights get a bf16 mirror that bft_cuda_op_adamw refreshes in
 * the same pass, so weight operands are never converted twice.
 *
 * Errors: the ops return nothing; the first CUDA / cuBLAS failure (or an
 * out-of-memory) is kept as a sticky error, every later op is skipped, and
 * bft_cuda_check reports it (BFT_EDEVICE with the CUDA error string, or
 * BFT_ENOMEM). Dropout masks come from the same counter-based hash as the CPU
 * backend (bft_dropout_keep), so both backends drop the same elements.
 *
 * Loading and initialisation are lazy. The CUDA code lives in a separate
 * shared object, bft_cuda.so (this file's ops + cudart + cuBLAS), that
 * cuda_loader.c dlopen()s at the first CUDA request: bft.so and bft-cli do not
 * link the CUDA libraries, so loading them costs nothing on machines or in
 * sessions that never use the GPU (linking cuBLAS directly added ~0.14 s and
 * ~96 MB of private relocated memory to every process that loads bft.so).
 * bft_cuda.so is looked for in $BFT_CUDA_MODULE, next to the object that holds
 * the engine (bft.so in PostgreSQL's $libdir, or the bft-cli / test binary)
 * and one directory up. Nothing runs at library load; the first
 * bft_cuda_available / bft_cuda_init call loads the driver through cudart.
 * The backend keeps one process-wide state (handles, stream, workspaces): it
 * is meant for one caller thread at a time (a PostgreSQL backend, bft-cli).
 */
#ifndef BFT_OPS_CUDA_H
#define BFT_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "bft_error.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- engine side (cuda_loader.c) */

/* 1 when this build has the CUDA backend (USE_CUDA=1: bft_cuda.so was built). */
int bft_cuda_built(void);

/* 1 when a usable CUDA device (compute capability >= 8.0) is present, else 0
 * with err explaining why (built without CUDA, bft_cuda.so or cuBLAS missing,
 * no driver, no device, too old). */
int bft_cuda_available(bft_error *err);

/* Initialise the backend on device `index` (0 = first visible device): cuBLAS
 * handle, stream. Idempotent. precision: 0 fp32, 1 bf16 mixed precision.
 * Returns BFT_OK or BFT_EDEVICE / BFT_ENOMEM with err. */
int bft_cuda_init(int index, int precision, bft_error *err);

/* Synchronise, then report (and clear) the sticky error: BFT_OK or the code
 * of the first failure since the last check, with its message in err. */
int bft_cuda_check(bft_error *err);

/* Free every device buffer the backend holds (workspaces, bf16 mirror) and
 * the cuBLAS handle and stream; the next bft_cuda_init starts afresh. */
void bft_cuda_release(void);

/* "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", or "" when not initialised. */
const char *bft_cuda_device_name(void);

/* ---------------------------------------------------------------- the module's interface */

/* Bumped whenever this struct or bft_backend changes: a bft_cuda.so of another
 * build is refused instead of called with the wrong layout. */
#define BFT_CUDA_ABI 5

typedef struct bft_cuda_api {
    int abi;                 /* BFT_CUDA_ABI */
    size_t backend_size;     /* sizeof(bft_backend) */
    int (*available)(bft_error *err);
    int (*init)(int index, int precision, bft_error *err);
    int (*check)(bft_error *err);
    void (*release)(void);
    const char *(*device_name)(void);
    const bft_backend *backend;
} bft_cuda_api;

/* Exported by bft_cuda.so (the only symbol it exports). */
const bft_cuda_api *bft_cuda_module(void);

#ifdef BFT_CUDA_MODULE /* the module's own (hidden) functions */

/* ---------------------------------------------------------------- memory */

/* Device allocation of bytes (256-byte aligned); NULL on failure (sticky
 * BFT_ENOMEM error naming the size and the free memory). */
void *bft_cuda_alloc(size_t bytes);

/* Free a device allocation (NULL is fine). */
void bft_cuda_free(void *p);

/* Host → device and device → host copies of bytes (ordered on the backend's
 * stream; the download waits for the copy). */
void bft_cuda_upload(void *dst_dev, const void *src_host, size_t bytes);
void bft_cuda_download(void *dst_host, const void *src_dev, size_t bytes);

/* Device → device copy of bytes. */
void bft_cuda_copy(void *dst_dev, const void *src_dev, size_t bytes);

/* Register the fp32 parameter block w (n floats, device) as the model's
 * weights: in bf16 mode a bf16 mirror is allocated and filled, GEMM operands
 * inside the block use it, and bft_cuda_op_adamw updates it. w NULL clears. */
void bft_cuda_set_weights(const float *w, size_t n);

/* ---------------------------------------------------------------- ops (device pointers) */

/* bft_cuda_op_<name> for every op of ops_list.h (there: semantics and shapes;
 * here every pointer is a device pointer). sumsq and mean synchronise (their
 * result is returned to the host; 0 after an error); mean sums in double in
 * index order on the host, the CPU backend's order. */
#define BFT_OP(ret, name, params, args) ret bft_cuda_op_##name params;
#include "ops_list.h"
#undef BFT_OP

#endif /* BFT_CUDA_MODULE */

#ifdef __cplusplus
}
#endif

#endif
