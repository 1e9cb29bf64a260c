/*
 * ops_cuda.cu — the CUDA backend of ops.h: cuBLAS for every matrix product
 * (strided-batched for the attention's per-head products) and one kernel per
 * fused elementwise / row operation. See ops_cuda.h for the contract.
 *
 * Layout conventions: tensors are row-major as in ops.h. cuBLAS is
 * column-major, so a row-major C (M,N) = op(A) op(B) is computed as the
 * column-major C^T = op(B)^T op(A)^T (operands swapped, same flags).
 *
 * Determinism: no floating-point atomics. Column sums (bias, LayerNorm
 * weight gradients) are two-stage reductions in a fixed order; the word
 * embedding gradient is accumulated by the block owning the first occurrence
 * of each id, in row order. Same inputs give bitwise the same outputs.
 *
 * Numerics vs the CPU backend: same formulas and summation structure where
 * cheap (two-pass LayerNorm statistics, losses in double), expf/erff from
 * CUDA's libdevice instead of the CPU's polynomials, different GEMM blocking:
 * fp32 mode agrees with the CPU to fp32 rounding (~1e-6 relative).
 */
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "bft_error.h"
#include "ops.h"
}
#include "ops_cuda.h"

typedef __nv_bfloat16 bf16;

/* ---------------------------------------------------------------- state and errors */

enum { WS_CVT_A, WS_CVT_B, WS_ATT, WS_RED, WS_HOST_RED, WS_COUNT };

typedef struct cuda_state {
    int ready;
    int index;
    int use_bf16;             /* 1: GEMM operands in bf16 */
    int sm_major, sm_minor;
    char name[320];
    cudaStream_t stream;
    cublasHandle_t blas;
    void *ws[WS_COUNT];       /* grow-only workspaces (WS_HOST_RED is host memory) */
    size_t ws_cap[WS_COUNT];
    const float *mir_src;     /* registered fp32 weights (device) */
    bf16 *mir;                /* their bf16 mirror (bf16 mode) */
    size_t mir_n;
    int err_code;             /* sticky error */
    char err_msg[480];
} cuda_state;

static cuda_state G;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(int code, const char *fmt, ...)
{
    if (G.err_code)
        return; /* keep the first error: later ones are usually consequences */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(G.err_msg, sizeof G.err_msg, fmt, ap);
    va_end(ap);
    G.err_code = code;
}

/* 1 when e is success; otherwise records it (naming what failed) and returns 0. */
static int cuda_ok(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 1;
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        set_err(BFT_ENOMEM, "CUDA out of memory in %s", what);
    } else {
        set_err(BFT_EDEVICE, "CUDA error in %s: %s (%s)", what, cudaGetErrorString(e),
                cudaGetErrorName(e));
    }
    return 0;
}

static const char *cublas_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
    }
}

static int blas_ok(cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 1;
    set_err(s == CUBLAS_STATUS_ALLOC_FAILED ? BFT_ENOMEM : BFT_EDEVICE, "cuBLAS error in %s: %s",
            what, cublas_name(s));
    return 0;
}

/* After a kernel launch. */
static int launched(const char *kernel)
{
    return cuda_ok(cudaGetLastError(), kernel);
}

/* Ops run only on an initialised backend without a pending error. */
static int live(void)
{
    if (!G.ready) {
        set_err(BFT_EDEVICE, "the CUDA backend was used before bft_cuda_init");
        return 0;
    }
    return G.err_code == 0;
}

/* ---------------------------------------------------------------- control */

/* bft_error without the engine's bft_error.c: this module links nothing of the
 * engine, so it loads into bft.so and bft-cli alike. */
static int seterr(bft_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int seterr(bft_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

static void clrerr(bft_error *err)
{
    if (err) {
        err->code = BFT_OK;
        err->msg[0] = '\0';
    }
}

/* Why the runtime found no device, in words. */
static void no_device(bft_error *err, cudaError_t e)
{
    const char *why = "";
    if (e == cudaErrorInsufficientDriver)
        why = " (no NVIDIA driver is loaded, or it is older than the CUDA runtime bft was built with)";
    else if (e == cudaErrorNoDevice)
        why = " (the driver reports no GPU; check CUDA_VISIBLE_DEVICES)";
    seterr(err, BFT_EDEVICE, "no CUDA device: %s [%s]%s", cudaGetErrorString(e),
                  cudaGetErrorName(e), why);
}

static int cu_available(bft_error *err)
{
    int n = 0;
    clrerr(err);
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        no_device(err, e);
        (void)cudaGetLastError();
        return 0;
    }
    if (n <= 0) {
        seterr(err, BFT_EDEVICE, "no CUDA device: the driver reports 0 GPUs");
        return 0;
    }
    int best = 0;
    for (int i = 0; i < n; i++) {
        int major = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i) == cudaSuccess &&
            major > best)
            best = major;
    }
    if (best < 8) {
        seterr(err, BFT_EDEVICE,
                      "no usable CUDA device: bft's CUDA kernels need compute capability 8.0 "
                      "(Ampere) or newer, the best of %d device(s) is %d.x",
                      n, best);
        return 0;
    }
    return 1;
}

static const char *cu_device_name(void)
{
    return G.ready ? G.name : "";
}

static void release_locked(void)
{
    if (G.ready)
        (void)cudaStreamSynchronize(G.stream);
    for (int i = 0; i < WS_COUNT; i++) {
        if (!G.ws[i])
            continue;
        if (i == WS_HOST_RED)
            free(G.ws[i]);
        else
            (void)cudaFree(G.ws[i]);
        G.ws[i] = NULL;
        G.ws_cap[i] = 0;
    }
    if (G.mir)
        (void)cudaFree(G.mir);
    G.mir = NULL;
    G.mir_src = NULL;
    G.mir_n = 0;
    if (G.blas)
        (void)cublasDestroy(G.blas);
    G.blas = NULL;
    if (G.stream)
        (void)cudaStreamDestroy(G.stream);
    G.stream = NULL;
    G.ready = 0;
    (void)cudaGetLastError();
}

static void cu_release(void)
{
    pthread_mutex_lock(&g_lock);
    release_locked();
    G.err_code = 0;
    G.err_msg[0] = '\0';
    pthread_mutex_unlock(&g_lock);
}

static int cu_init(int index, int precision, bft_error *err)
{
    clrerr(err);
    if (precision != 0 && precision != 1)
        return seterr(err, BFT_EINVAL, "CUDA precision must be 0 (fp32) or 1 (bf16), got %d",
                             precision);
    if (!cu_available(err))
        return BFT_EDEVICE;
    pthread_mutex_lock(&g_lock);
    if (G.ready && G.index != index)
        release_locked();
    if (!G.ready) {
        int n = 0;
        cudaDeviceProp prop;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e == cudaSuccess && (index < 0 || index >= n)) {
            pthread_mutex_unlock(&g_lock);
            return seterr(err, BFT_EDEVICE, "CUDA device %d does not exist (%d visible)",
                                 index, n);
        }
        if (e == cudaSuccess)
            e = cudaSetDevice(index);
        if (e == cudaSuccess)
            e = cudaGetDeviceProperties(&prop, index);
        if (e == cudaSuccess && prop.major < 8) {
            pthread_mutex_unlock(&g_lock);
            return seterr(err, BFT_EDEVICE,
                                 "CUDA device %d (%s) has compute capability %d.%d; bft needs 8.0 or newer",
                                 index, prop.name, prop.major, prop.minor);
        }
        if (e == cudaSuccess)
            e = cudaStreamCreateWithFlags(&G.stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            release_locked();
            pthread_mutex_unlock(&g_lock);
            return seterr(err, e == cudaErrorMemoryAllocation ? BFT_ENOMEM : BFT_EDEVICE,
                                 "CUDA initialisation of device %d failed: %s (%s)", index,
                                 cudaGetErrorString(e), cudaGetErrorName(e));
        }
        cublasStatus_t s = cublasCreate(&G.blas);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetStream(G.blas, G.stream);
        /* exact fp32 GEMMs unless bf16 operands are passed explicitly (no TF32) */
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetMathMode(G.blas, CUBLAS_DEFAULT_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) {
            release_locked();
            pthread_mutex_unlock(&g_lock);
            return seterr(err, BFT_EDEVICE, "cuBLAS initialisation failed: %s",
                                 cublas_name(s));
        }
        G.index = index;
        G.sm_major = prop.major;
        G.sm_minor = prop.minor;
        snprintf(G.name, sizeof G.name, "%s (sm_%d%d, %.1f GiB)", prop.name, prop.major,
                 prop.minor, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
        G.err_code = 0;
        G.ready = 1;
    }
    G.use_bf16 = precision;
    pthread_mutex_unlock(&g_lock);
    return BFT_OK;
}

static int cu_check(bft_error *err)
{
    if (G.ready && !G.err_code)
        cuda_ok(cudaStreamSynchronize(G.stream), "a queued CUDA operation");
    if (!G.err_code)
        return BFT_OK;
    int code = G.err_code;
    seterr(err, code, "%s", G.err_msg);
    G.err_code = 0;
    G.err_msg[0] = '\0';
    return code;
}

/* ---------------------------------------------------------------- memory */

static void alloc_failed(size_t bytes)
{
    size_t fr = 0, tot = 0;
    (void)cudaGetLastError();
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess)
        fr = tot = 0;
    (void)cudaGetLastError();
    set_err(BFT_ENOMEM,
            "CUDA out of memory: cannot allocate %.1f MiB on %s (%.1f MiB free of %.1f MiB)",
            (double)bytes / 1048576.0, G.name, (double)fr / 1048576.0, (double)tot / 1048576.0);
}

extern "C" void *bft_cuda_alloc(size_t bytes)
{
    void *p = NULL;
    if (!live())
        return NULL;
    if (bytes == 0)
        bytes = 256;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        alloc_failed(bytes);
        return NULL;
    }
    return p;
}

extern "C" void bft_cuda_free(void *p)
{
    if (p)
        (void)cudaFree(p);
}

extern "C" void bft_cuda_upload(void *dst, const void *src, size_t bytes)
{
    if (!live() || bytes == 0)
        return;
    cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, G.stream), "upload");
}

extern "C" void bft_cuda_download(void *dst, const void *src, size_t bytes)
{
    if (!live() || bytes == 0)
        return;
    if (cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, G.stream), "download"))
        cuda_ok(cudaStreamSynchronize(G.stream), "download");
}

extern "C" void bft_cuda_copy(void *dst, const void *src, size_t bytes)
{
    if (!live() || bytes == 0 || dst == src)
        return;
    cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, G.stream), "device copy");
}

/* Workspace slot i of at least bytes (grow-only; NULL after an error). */
static void *ws(int i, size_t bytes)
{
    if (bytes <= G.ws_cap[i])
        return G.ws[i];
    size_t cap = bytes + bytes / 4 + 4096;
    if (i == WS_HOST_RED) {
        void *p = malloc(cap);
        if (!p) {
            set_err(BFT_ENOMEM, "out of host memory (%zu bytes) in the CUDA backend", cap);
            return NULL;
        }
        free(G.ws[i]);
        G.ws[i] = p;
        G.ws_cap[i] = cap;
        return p;
    }
    void *p = NULL;
    if (G.ws[i]) {
        /* queued work may still read the old buffer: cudaFree waits for the device */
        (void)cudaFree(G.ws[i]);
        G.ws[i] = NULL;
        G.ws_cap[i] = 0;
    }
    if (cudaMalloc(&p, cap) != cudaSuccess) {
        alloc_failed(cap);
        return NULL;
    }
    G.ws[i] = p;
    G.ws_cap[i] = cap;
    return p;
}

/* ---------------------------------------------------------------- device helpers */

#define NT 256 /* threads of elementwise kernels */

static unsigned grid_for(size_t n, unsigned per_block)
{
    size_t g = (n + per_block - 1) / per_block;
    if (g < 1)
        g = 1;
    if (g > 1048576)
        g = 1048576; /* kernels use grid-stride loops */
    return (unsigned)g;
}

__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Dropout of one site on the device: the CPU backend's hash (ops_cpu.c
 * drop_bits): element i is kept iff (splitmix64(seed + (i+1)·golden) >> 40) >= thresh. */
typedef struct dparam {
    uint64_t seed;
    uint32_t thresh;
    float scale;
    int active;
} dparam;

static dparam mkdrop(const bft_dropout *d)
{
    dparam r;
    r.active = d && d->p > 0.0f;
    r.seed = r.active ? d->seed : 0;
    r.thresh = r.active ? (uint32_t)((double)d->p * 16777216.0) : 0;
    r.scale = r.active ? 1.0f / (1.0f - d->p) : 1.0f;
    return r;
}

__device__ __forceinline__ int dkeep(const dparam &d, uint64_t i)
{
    return (uint32_t)(mix64(d.seed + (i + 1) * 0x9E3779B97F4A7C15ull) >> 40) >= d.thresh;
}

__device__ __forceinline__ float dapply(const dparam &d, uint64_t i, float v)
{
    if (!d.active)
        return v;
    return dkeep(d, i) ? v * d.scale : 0.0f;
}

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

__device__ __forceinline__ float gelu_d(float x)
{
    return 0.5f * x * (1.0f + erff(x * INV_SQRT2));
}

__device__ __forceinline__ float gelu_grad_d(float x)
{
    float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
    float pdf = INV_SQRT_2PI * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024), in a fixed order;
 * every thread gets the result. sh: 32 floats of shared memory. */
static __device__ float block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

static __device__ float block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16(v); }

/* ---------------------------------------------------------------- bf16 conversion and GEMM */

__global__ void k_f2bf(bf16 *dst, const float *src, size_t rows, size_t cols, size_t ld)
{
    size_t n = rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i - r * cols;
        dst[i] = __float2bfloat16(src[r * ld + c]);
    }
}

__global__ void k_f2bf_1d(bf16 *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16(src[i]);
}

typedef struct op16 {
    const bf16 *p;
    int ld;
} op16;

/* x (rows, cols, leading dimension ld, fp32, device) as bf16: the weights'
 * mirror when x lies in the registered block, else converted into workspace slot. */
static op16 as_bf16(const float *x, int rows, int cols, int ld, int slot)
{
    op16 r = {NULL, ld};
    if (G.mir && x >= G.mir_src && x < G.mir_src + G.mir_n) {
        r.p = G.mir + (x - G.mir_src);
        return r;
    }
    size_t n = (size_t)rows * cols;
    bf16 *dst = (bf16 *)ws(slot, n * sizeof(bf16));
    if (!dst)
        return r;
    if (ld == cols)
        k_f2bf_1d<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(dst, x, n);
    else
        k_f2bf<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(dst, x, (size_t)rows, (size_t)cols,
                                                          (size_t)ld);
    if (!launched("bf16 conversion"))
        return r;
    r.p = dst;
    r.ld = cols;
    return r;
}

/* Row-major C (M,N) = alpha op(A) op(B) + beta C with A, B of type t
 * (CUDA_R_32F or CUDA_R_16BF), C fp32, fp32 accumulation. */
static void gemm_t(int tA, int tB, int M, int N, int K, float alpha, const void *A, int lda,
                   const void *B, int ldb, float beta, float *C, int ldc, cudaDataType_t t)
{
    if (M <= 0 || N <= 0)
        return; /* K = 0: cuBLAS computes C = beta C, as cblas does */
    blas_ok(cublasGemmEx(G.blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                         M, K, &alpha, B, t, ldb, A, t, lda, &beta, C, CUDA_R_32F, ldc,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx");
}

/* Batched row-major GEMM over `batch` matrices at fixed strides (elements). */
static void gemm_batched_t(int tA, int tB, int M, int N, int K, float alpha, const void *A,
                           int lda, long long sA, const void *B, int ldb, long long sB,
                           float beta, float *C, int ldc, long long sC, int batch,
                           cudaDataType_t t)
{
    if (M <= 0 || N <= 0 || batch <= 0)
        return;
    blas_ok(cublasGemmStridedBatchedEx(G.blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N,
                                       tA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, t, ldb,
                                       sB, A, t, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch,
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmStridedBatchedEx");
}

/* fp32 operands in, the mode's GEMM: exact fp32 or bf16 operands. */
static void gemm_f(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
    if (!G.use_bf16) {
        gemm_t(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, CUDA_R_32F);
        return;
    }
    op16 a = as_bf16(A, tA ? K : M, tA ? M : K, lda, WS_CVT_A);
    op16 b = as_bf16(B, tB ? N : K, tB ? K : N, ldb, WS_CVT_B);
    if (!a.p || !b.p)
        return;
    gemm_t(tA, tB, M, N, K, alpha, a.p, a.ld, b.p, b.ld, beta, C, ldc, CUDA_R_16BF);
}

extern "C" void bft_cuda_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A,
                              int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (!live())
        return;
    gemm_f(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ---------------------------------------------------------------- weights mirror */

extern "C" void bft_cuda_set_weights(const float *w, size_t n)
{
    /* the same block again (a cached model): its mirror is current, since only
     * bft_cuda_op_adamw changes registered weights and it updates the mirror */
    if (w && G.mir && w == G.mir_src && n == G.mir_n && G.use_bf16)
        return;
    if (G.mir)
        (void)cudaFree(G.mir);
    G.mir = NULL;
    G.mir_src = NULL;
    G.mir_n = 0;
    if (!w || n == 0 || !live() || !G.use_bf16)
        return;
    bf16 *m = NULL;
    if (cudaMalloc(&m, n * sizeof(bf16)) != cudaSuccess) {
        alloc_failed(n * sizeof(bf16));
        return;
    }
    k_f2bf_1d<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(m, w, n);
    if (!launched("bf16 weight mirror")) {
        (void)cudaFree(m);
        return;
    }
    G.mir = m;
    G.mir_src = w;
    G.mir_n = n;
}

/* ---------------------------------------------------------------- elementwise kernels */

#define GRID_STRIDE(i, n)                                                        \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);       \
         i += (size_t)gridDim.x * blockDim.x)

__global__ void k_bias_rows(float *out, const float *bias, size_t N, int OC)
{
    GRID_STRIDE(i, N * OC) out[i] = bias[i % OC];
}

__global__ void k_bias_gelu(float *pre, float *out, const float *bias, size_t N, int OC)
{
    GRID_STRIDE(i, N * OC)
    {
        float x = pre[i];
        if (bias) {
            x += bias[i % OC];
            pre[i] = x;
        }
        if (out)
            out[i] = gelu_d(x);
    }
}

__global__ void k_gelu(float *out, const float *inp, size_t n)
{
    GRID_STRIDE(i, n) out[i] = gelu_d(inp[i]);
}

__global__ void k_gelu_bwd(float *dinp, const float *dout, const float *inp, size_t n)
{
    GRID_STRIDE(i, n) dinp[i] = dout[i] * gelu_grad_d(inp[i]);
}

/* out = gelu(x); x = gelu'(x) */
__global__ void k_gelu_recompute(float *out, float *x, size_t n)
{
    GRID_STRIDE(i, n)
    {
        float v = x[i];
        out[i] = gelu_d(v);
        x[i] = gelu_grad_d(v);
    }
}

__global__ void k_mul(float *x, const float *y, size_t n)
{
    GRID_STRIDE(i, n) x[i] *= y[i];
}

__global__ void k_dropout(float *out, const float *inp, size_t n, dparam d)
{
    GRID_STRIDE(i, n) out[i] = dkeep(d, i) ? inp[i] * d.scale : 0.0f;
}

__global__ void k_bias_tanh(float *x, const float *bias, size_t N, int C)
{
    GRID_STRIDE(i, N * C) x[i] = tanhf(x[i] + (bias ? bias[i % C] : 0.0f));
}

__global__ void k_tanh_bwd(float *dinp, const float *dout, const float *y, size_t n)
{
    GRID_STRIDE(i, n) dinp[i] = dout[i] * (1.0f - y[i] * y[i]);
}

__global__ void k_gather_rows(float *out, const float *inp, const int64_t *rows, int n, int C)
{
    GRID_STRIDE(i, (size_t)n * C)
    {
        size_t r = i / C, c = i - r * C;
        out[i] = inp[(size_t)rows[r] * C + c];
    }
}

__global__ void k_scatter_add_rows(float *dinp, const float *dout, const int64_t *rows, int n,
                                   int C)
{
    GRID_STRIDE(i, (size_t)n * C)
    {
        size_t r = i / C, c = i - r * C;
        dinp[(size_t)rows[r] * C + c] += dout[i];
    }
}

__global__ void k_strided_rows(int64_t *rows, int n, int64_t stride)
{
    GRID_STRIDE(i, (size_t)n) rows[i] = (int64_t)i * stride;
}

__global__ void k_adamw(float *p, float *g, float *m, float *v, size_t n, float decay,
                        float b2, float c1, float c2, float gs, float ss, float bc2s,
                        float eps, bf16 *mir, int zero_grad)
{
    GRID_STRIDE(i, n)
    {
        float gi = g[i] * gs;
        if (zero_grad)
            g[i] = 0.0f;
        float pi = p[i] * decay;
        float mi = m[i] + c1 * (gi - m[i]); /* torch's lerp_ (weight < 0.5) */
        float vi = v[i] * b2 + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pn = pi + ss * (mi / (sqrtf(vi) / bc2s + eps));
        p[i] = pn;
        if (mir)
            mir[i] = __float2bfloat16(pn);
    }
}

__global__ void k_sumsq(const float *x, size_t n, double *part)
{
    __shared__ double sh[NT];
    double s = 0.0;
    GRID_STRIDE(i, n)
    {
        double v = (double)x[i];
        s += v * v;
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int o = NT / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o)
            sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        part[blockIdx.x] = sh[0];
}

/* ---------------------------------------------------------------- LayerNorm kernels */

#define LNT 128 /* threads per row */

/* out = LN(x)·w + b for one row of C, by the whole block; each thread only
 * reads the x elements it wrote itself (c = tid + k·LNT), so a caller may
 * write x just before. Two-pass statistics as the CPU backend. */
static __device__ void ln_row(float *out, const float *x, const float *w, const float *b, int C,
                       float eps, float *mean_o, float *rstd_o, float *sh)
{
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        s += x[c];
    float mean = block_sum(s, sh) / (float)C;
    float v = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float d = x[c] - mean;
        v += d * d;
    }
    float var = block_sum(v, sh) / (float)C;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        out[c] = (x[c] - mean) * rstd * w[c] + b[c];
    if (threadIdx.x == 0) {
        if (mean_o)
            *mean_o = mean;
        if (rstd_o)
            *rstd_o = rstd;
    }
}

__global__ void k_layernorm(float *out, float *mean, float *rstd, const float *x, const float *w,
                            const float *b, int C, float eps)
{
    __shared__ float sh[32];
    size_t r = blockIdx.x, o = r * C;
    ln_row(out + o, x + o, w, b, C, eps, mean ? mean + r : NULL, rstd ? rstd + r : NULL, sh);
}

__global__ void k_embed_ln(float *out, float *x, float *mean, float *rstd, const int32_t *ids,
                           const float *wte, const float *wpe, const float *wtt, const float *w,
                           const float *b, int T, int C, float eps, dparam d)
{
    __shared__ float sh[32];
    size_t r = blockIdx.x, o = r * C;
    int t = (int)(r % T);
    const float *we = wte + (size_t)ids[r] * C, *pe = wpe + (size_t)t * C;
    float *xr = x + o, *orow = out + o;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        xr[c] = (we[c] + wtt[c]) + pe[c];
    ln_row(orow, xr, w, b, C, eps, mean + r, rstd + r, sh);
    if (d.active)
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            orow[c] = dapply(d, o + c, orow[c]);
}

__global__ void k_residual_ln(float *out, float *x, float *mean, float *rstd, const float *proj,
                              const float *bias, const float *res, const float *w,
                              const float *b, int C, float eps, dparam d)
{
    __shared__ float sh[32];
    size_t r = blockIdx.x, o = r * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = proj[o + c];
        if (bias)
            v += bias[c];
        v = dapply(d, o + c, v);
        x[o + c] = v + res[o + c];
    }
    ln_row(out + o, x + o, w, b, C, eps, mean + r, rstd + r, sh);
}

/* dx (row) = (g·w - mean(g·w) - xhat·mean(g·w·xhat))·rstd; dx may alias dout. */
__global__ void k_ln_bwd_rows(float *dx, const float *dout, const float *x, const float *mean,
                              const float *rstd, const float *w, int C)
{
    __shared__ float sh[32];
    size_t r = blockIdx.x, o = r * C;
    float mu = mean[r], rs = rstd[r];
    float s1 = 0.0f, s2 = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float dn = dout[o + c] * w[c];
        s1 += dn;
        s2 += dn * ((x[o + c] - mu) * rs);
    }
    float m1 = block_sum(s1, sh) / (float)C;
    float m2 = block_sum(s2, sh) / (float)C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float xh = (x[o + c] - mu) * rs;
        dx[o + c] = (dout[o + c] * w[c] - m1 - xh * m2) * rs;
    }
}

/* ---------------------------------------------------------------- column reductions */

/* Stage 1 over a chunk of rows: part0[chunk][c] = sum of a (mode 0) or of
 * a·xhat (mode 1, LayerNorm weight), part1[chunk][c] = sum of a (mode 1).
 * Block (32, 8): 32 columns, 8 row lanes combined in a fixed order. */
__global__ void k_colsum_part(float *part0, float *part1, const float *a, const float *x,
                              const float *mean, const float *rstd, int N, int C, int rpc,
                              int mode)
{
    __shared__ float s0[8][33], s1[8][33];
    int c = blockIdx.x * 32 + threadIdx.x, chunk = blockIdx.y;
    int r0 = chunk * rpc, r1 = min(N, r0 + rpc);
    float acc0 = 0.0f, acc1 = 0.0f;
    if (c < C)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            float g = a[(size_t)r * C + c];
            if (mode) {
                acc0 += g * ((x[(size_t)r * C + c] - mean[r]) * rstd[r]);
                acc1 += g;
            } else {
                acc0 += g;
            }
        }
    s0[threadIdx.y][threadIdx.x] = acc0;
    s1[threadIdx.y][threadIdx.x] = acc1;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t0 = 0.0f, t1 = 0.0f;
        for (int k = 0; k < 8; k++) {
            t0 += s0[k][threadIdx.x];
            t1 += s1[k][threadIdx.x];
        }
        part0[(size_t)chunk * C + c] = t0;
        if (mode)
            part1[(size_t)chunk * C + c] = t1;
    }
}

/* Stage 2: acc0[c] (+)= sum over chunks of part0 (and acc1 from part1). */
__global__ void k_colsum_final(float *acc0, float *acc1, const float *part0, const float *part1,
                               int nchunks, int C, int accum)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    if (acc0) {
        float s = 0.0f;
        for (int k = 0; k < nchunks; k++)
            s += part0[(size_t)k * C + c];
        acc0[c] = accum ? acc0[c] + s : s;
    }
    if (acc1) {
        float s = 0.0f;
        for (int k = 0; k < nchunks; k++)
            s += part1[(size_t)k * C + c];
        acc1[c] = accum ? acc1[c] + s : s;
    }
}

/* mode 0: acc0 (C) = column sums of a (N,C).
 * mode 1: acc0 (C) = sum_r a·(x - mean[r])·rstd[r], acc1 (C) = column sums of a;
 * "=" is "+=" when accum; acc0 or acc1 may be NULL. */
static void colsum(float *acc0, float *acc1, const float *a, const float *x, const float *mean,
                   const float *rstd, int N, int C, int mode, int accum)
{
    if (C <= 0 || (!acc0 && !acc1))
        return;
    if (N <= 0) {
        if (!accum) {
            if (acc0)
                cuda_ok(cudaMemsetAsync(acc0, 0, (size_t)C * sizeof(float), G.stream), "zero");
            if (acc1)
                cuda_ok(cudaMemsetAsync(acc1, 0, (size_t)C * sizeof(float), G.stream), "zero");
        }
        return;
    }
    int rpc = 64;
    if ((N + rpc - 1) / rpc > 256)
        rpc = (N + 255) / 256;
    int nchunks = (N + rpc - 1) / rpc;
    float *part = (float *)ws(WS_RED, (size_t)nchunks * C * 2 * sizeof(float));
    if (!part)
        return;
    float *part1 = part + (size_t)nchunks * C;
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)nchunks), block(32, 8);
    k_colsum_part<<<grid, block, 0, G.stream>>>(part, part1, a, x, mean, rstd, N, C, rpc, mode);
    if (!launched("column sums"))
        return;
    k_colsum_final<<<(unsigned)((C + NT - 1) / NT), NT, 0, G.stream>>>(
        acc0, mode ? acc1 : NULL, part, part1, nchunks, C, accum);
    launched("column sums");
}

/* ---------------------------------------------------------------- embeddings backward */

/* dwpe[t] += sum over b of dx[b, t] (in b order, as the CPU). */
__global__ void k_emb_pos_bwd(float *dwpe, const float *dx, int B, int T, int C)
{
    GRID_STRIDE(i, (size_t)T * C)
    {
        size_t t = i / C, c = i - t * C;
        float s = dwpe[i];
        for (int b = 0; b < B; b++)
            s += dx[((size_t)b * T + t) * C + c];
        dwpe[i] = s;
    }
}

/* dwte[id] += dx rows with that id (pad rows skipped): the block of the first
 * row with a given id accumulates all of them in row order; no atomics. */
__global__ void k_emb_wte_bwd(float *dwte, const float *dx, const int32_t *ids, int N, int C,
                              int pad)
{
    int r = blockIdx.x;
    int id = ids[r];
    if (id == pad)
        return;
    int dup = 0;
    for (int q = threadIdx.x; q < r; q += blockDim.x)
        dup |= ids[q] == id;
    if (__syncthreads_or(dup))
        return;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float *dst = dwte + (size_t)id * C + c;
        float s = *dst;
        for (int q = r; q < N; q++)
            if (ids[q] == id)
                s += dx[(size_t)q * C + c];
        *dst = s;
    }
}

/* ---------------------------------------------------------------- attention kernels */

/* qkv (B,T,3C) → q, k, v each (B,NH,T,hs). */
template <typename TD>
__global__ void k_qkv_split(TD *q, TD *k, TD *v, const float *qkv, int B, int T, int C, int NH)
{
    int hs = C / NH;
    GRID_STRIDE(i, (size_t)B * T * C)
    {
        size_t d = i % hs, rest = i / hs;
        size_t t = rest % T, bh = rest / T;
        size_t h = bh % NH, b = bh / NH;
        const float *src = qkv + (b * T + t) * 3 * (size_t)C + h * hs + d;
        q[i] = from_f<TD>(src[0]);
        k[i] = from_f<TD>(src[C]);
        v[i] = from_f<TD>(src[2 * (size_t)C]);
    }
}

/* x (B,T,C) → y (B,NH,T,hs). */
template <typename TD>
__global__ void k_heads_split(TD *y, const float *x, int B, int T, int C, int NH)
{
    int hs = C / NH;
    GRID_STRIDE(i, (size_t)B * T * C)
    {
        size_t d = i % hs, rest = i / hs;
        size_t t = rest % T, bh = rest / T;
        size_t h = bh % NH, b = bh / NH;
        y[i] = from_f<TD>(x[(b * T + t) * (size_t)C + h * hs + d]);
    }
}

/* y (B,NH,T,hs) → x (B,T,C) (heads concatenated). */
__global__ void k_heads_merge(float *x, const float *y, int B, int T, int C, int NH)
{
    int hs = C / NH;
    GRID_STRIDE(i, (size_t)B * T * C)
    {
        size_t d = i % hs, rest = i / hs;
        size_t t = rest % T, bh = rest / T;
        size_t h = bh % NH, b = bh / NH;
        x[(b * T + t) * (size_t)C + h * hs + d] = y[i];
    }
}

/* dq, dk, dv (B,NH,T,hs) → dqkv (B,T,3C). */
__global__ void k_qkv_merge(float *dqkv, const float *dq, const float *dk, const float *dv, int B,
                            int T, int C, int NH)
{
    int hs = C / NH;
    GRID_STRIDE(i, (size_t)B * T * C)
    {
        size_t d = i % hs, rest = i / hs;
        size_t t = rest % T, bh = rest / T;
        size_t h = bh % NH, b = bh / NH;
        float *dst = dqkv + (b * T + t) * 3 * (size_t)C + h * hs + d;
        dst[0] = dq[i];
        dst[C] = dk[i];
        dst[2 * (size_t)C] = dv[i];
    }
}

/* Masked softmax of the scores, one warp per row (b,h,i) of S (B,NH,T,T):
 * P = softmax over keys < lens[b] (weight 0 beyond); P may alias S.
 * When Pd: Pd = dropout(P) (index = flat element index, as the CPU) in TD. */
template <typename TD>
__global__ void k_att_softmax(float *P, TD *Pd, const float *S, const int32_t *lens, int NH,
                              int T, size_t rows, dparam d)
{
    size_t row = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    int b = (int)(row / ((size_t)T * NH));
    int len = lens[b];
    const float *s = S + row * T;
    float mx = -INFINITY;
    for (int k = lane; k < len; k += 32)
        mx = fmaxf(mx, s[k]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int k = lane; k < len; k += 32)
        sum += expf(s[k] - mx);
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    for (int k = lane; k < T; k += 32) {
        float p = k < len ? expf(s[k] - mx) * inv : 0.0f;
        P[row * T + k] = p;
        if (Pd)
            Pd[row * T + k] = from_f<TD>(dapply(d, row * T + k, p));
    }
}

/* Pd (B,NH,T,T) = dropout(P) in TD (the backward's recomputation). */
template <typename TD> __global__ void k_att_dropout(TD *Pd, const float *P, size_t n, dparam d)
{
    GRID_STRIDE(i, n) Pd[i] = from_f<TD>(dapply(d, i, P[i]));
}

/* Softmax backward, one warp per row: dp = dropout'(dPd) over keys < len,
 * dS = P·(dp - sum(P·dp)), 0 beyond len. dS may alias dPd. */
template <typename TD>
__global__ void k_att_softmax_bwd(TD *dS, const float *dPd, const float *P, const int32_t *lens,
                                  int NH, int T, size_t rows, dparam d)
{
    size_t row = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    int b = (int)(row / ((size_t)T * NH));
    int len = lens[b];
    const float *p = P + row * T, *dp = dPd + row * T;
    float s = 0.0f;
    for (int k = lane; k < len; k += 32)
        s += p[k] * dapply(d, row * T + k, dp[k]);
    s = warp_sum(s);
    for (int k = lane; k < T; k += 32) {
        float v = 0.0f;
        if (k < len)
            v = p[k] * (dapply(d, row * T + k, dp[k]) - s);
        dS[row * T + k] = from_f<TD>(v);
    }
}

/* ---------------------------------------------------------------- softmax cross-entropy */

#define XT 256

__global__ void k_softmax_xent(float *probs, float *losses, float *dlogits, const float *logits,
                               const int32_t *labels, const float *row_scale, int K, float dscale)
{
    __shared__ float sh[32];
    size_t r = blockIdx.x;
    const float *lg = logits + r * K;
    int y = labels ? labels[r] : -1;
    float mx = -INFINITY;
    for (int k = threadIdx.x; k < K; k += blockDim.x)
        mx = fmaxf(mx, lg[k]);
    mx = block_max(mx, sh);
    float s = 0.0f;
    for (int k = threadIdx.x; k < K; k += blockDim.x)
        s += expf(lg[k] - mx);
    float sum = block_sum(s, sh), inv = 1.0f / sum;
    if (row_scale)
        dscale *= row_scale[r];
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        float e = expf(lg[k] - mx) * inv;
        if (probs)
            probs[r * K + k] = e;
        if (dlogits) {
            float g = 0.0f;
            if (y >= 0) {
                g = e * dscale;
                if (k == y)
                    g -= dscale;
            }
            dlogits[r * K + k] = g;
        }
    }
    if (losses && threadIdx.x == 0)
        losses[r] = y >= 0 ? -(float)((double)lg[y] - (double)mx - log((double)sum)) : 0.0f;
}

/* ---------------------------------------------------------------- sigmoid binary cross-entropy */

/* One block per row: probs, dlogits element-wise, the row's mean loss summed
 * over the block (the CPU sums in double; here float partials, one per thread). */
__global__ void k_sigmoid_bce(float *probs, float *losses, float *dlogits, const float *logits,
                              const float *targets, int K, float dscale)
{
    __shared__ float sh[32];
    size_t r = blockIdx.x;
    const float *lg = logits + r * K;
    const float *y = targets ? targets + r * K : nullptr;
    float dk = dscale / (float)K, ls = 0.0f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        float x = lg[k];
        float e = expf(-fabsf(x));
        float p = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        if (probs)
            probs[r * K + k] = p;
        if (y) {
            ls += fmaxf(x, 0.0f) - x * y[k] + log1pf(e);
            if (dlogits)
                dlogits[r * K + k] = (p - y[k]) * dk;
        }
    }
    if (y && losses) {
        float total = block_sum(ls, sh);
        if (threadIdx.x == 0)
            losses[r] = total / (float)K;
    }
}

/* ---------------------------------------------------------------- ops */

extern "C" void bft_cuda_op_zero(float *x, size_t n)
{
    if (!live() || n == 0)
        return;
    cuda_ok(cudaMemsetAsync(x, 0, n * sizeof(float), G.stream), "zero");
}

extern "C" void bft_cuda_op_linear_fwd(float *out, const float *inp, const float *w,
                                       const float *bias, int N, int IC, int OC)
{
    if (!live() || N <= 0 || OC <= 0)
        return;
    float beta = 0.0f;
    if (bias) {
        size_t n = (size_t)N * OC;
        k_bias_rows<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(out, bias, (size_t)N, OC);
        if (!launched("linear bias"))
            return;
        beta = 1.0f;
    }
    gemm_f(0, 1, N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
}

extern "C" void bft_cuda_op_linear_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                                       const float *inp, const float *w, int N, int IC, int OC,
                                       int accum_dinp, int accum_dw)
{
    if (!live() || N <= 0)
        return;
    float bw = accum_dw ? 1.0f : 0.0f;
    if (dbias)
        colsum(dbias, NULL, dout, NULL, NULL, NULL, N, OC, 0, accum_dw);
    if (!G.use_bf16) {
        if (dw)
            gemm_t(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, bw, dw, IC, CUDA_R_32F);
        if (dinp)
            gemm_t(0, 0, N, IC, OC, 1.0f, dout, OC, w, IC, accum_dinp ? 1.0f : 0.0f, dinp, IC,
                   CUDA_R_32F);
        return;
    }
    /* bf16: dout converted once for both products */
    op16 g = as_bf16(dout, N, OC, OC, WS_CVT_A);
    if (!g.p)
        return;
    if (dw) {
        op16 x = as_bf16(inp, N, IC, IC, WS_CVT_B);
        if (!x.p)
            return;
        gemm_t(1, 0, OC, IC, N, 1.0f, g.p, g.ld, x.p, x.ld, bw, dw, IC, CUDA_R_16BF);
    }
    if (dinp) {
        op16 wt = as_bf16(w, OC, IC, IC, WS_CVT_B);
        if (!wt.p)
            return;
        gemm_t(0, 0, N, IC, OC, 1.0f, g.p, g.ld, wt.p, wt.ld, accum_dinp ? 1.0f : 0.0f, dinp, IC,
               CUDA_R_16BF);
    }
}

extern "C" void bft_cuda_op_bias_gelu_fwd(float *pre, float *out, const float *bias, int N, int OC)
{
    if (!live() || N <= 0 || OC <= 0)
        return;
    k_bias_gelu<<<grid_for((size_t)N * OC, NT * 4), NT, 0, G.stream>>>(pre, out, bias, (size_t)N,
                                                                         OC);
    launched("bias+GELU");
}

extern "C" void bft_cuda_op_gelu_fwd(float *out, const float *inp, size_t n)
{
    if (!live() || n == 0)
        return;
    k_gelu<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(out, inp, n);
    launched("GELU");
}

extern "C" void bft_cuda_op_gelu_bwd(float *dinp, const float *dout, const float *inp, size_t n)
{
    if (!live() || n == 0)
        return;
    k_gelu_bwd<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(dinp, dout, inp, n);
    launched("GELU backward");
}

extern "C" void bft_cuda_op_gelu_recompute(float *out, float *x, size_t n)
{
    if (!live() || n == 0)
        return;
    k_gelu_recompute<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(out, x, n);
    launched("GELU recompute");
}

extern "C" void bft_cuda_op_mul(float *x, const float *y, size_t n)
{
    if (!live() || n == 0)
        return;
    k_mul<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(x, y, n);
    launched("multiply");
}

extern "C" void bft_cuda_op_embed_ln_fwd(float *out, float *x, float *mean, float *rstd,
                                         const int32_t *ids, const float *wte, const float *wpe,
                                         const float *wtt, const float *w, const float *b, int B,
                                         int T, int C, float eps, const bft_dropout *d)
{
    if (!live() || B <= 0 || T <= 0)
        return;
    k_embed_ln<<<(unsigned)(B * T), LNT, 0, G.stream>>>(out, x, mean, rstd, ids, wte, wpe, wtt, w,
                                                        b, T, C, eps, mkdrop(d));
    launched("embeddings+LayerNorm");
}

extern "C" void bft_cuda_op_layernorm_fwd(float *out, float *mean, float *rstd, const float *x,
                                          const float *w, const float *b, int N, int C, float eps)
{
    if (!live() || N <= 0)
        return;
    k_layernorm<<<(unsigned)N, LNT, 0, G.stream>>>(out, mean, rstd, x, w, b, C, eps);
    launched("LayerNorm");
}

extern "C" void bft_cuda_op_residual_ln_fwd(float *out, float *x, float *mean, float *rstd,
                                            const float *proj, const float *bias,
                                            const float *res, const float *w, const float *b,
                                            int N, int C, float eps, const bft_dropout *d)
{
    if (!live() || N <= 0)
        return;
    k_residual_ln<<<(unsigned)N, LNT, 0, G.stream>>>(out, x, mean, rstd, proj, bias, res, w, b, C,
                                                     eps, mkdrop(d));
    launched("residual+LayerNorm");
}

extern "C" void bft_cuda_op_layernorm_bwd(float *dx, float *dw, float *db, const float *dout,
                                          const float *x, const float *mean, const float *rstd,
                                          const float *w, int N, int C, int accum_w)
{
    if (!live() || N <= 0)
        return;
    /* weight gradients first: dx may overwrite dout */
    if (dw || db)
        colsum(dw, db, dout, x, mean, rstd, N, C, 1, accum_w);
    k_ln_bwd_rows<<<(unsigned)N, LNT, 0, G.stream>>>(dx, dout, x, mean, rstd, w, C);
    launched("LayerNorm backward");
}

extern "C" void bft_cuda_op_dropout_fwd(float *out, const float *inp, size_t n,
                                        const bft_dropout *d)
{
    if (!live() || n == 0)
        return;
    dparam dp = mkdrop(d);
    if (!dp.active) {
        bft_cuda_copy(out, inp, n * sizeof(float));
        return;
    }
    k_dropout<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(out, inp, n, dp);
    launched("dropout");
}

extern "C" void bft_cuda_op_dropout_bwd(float *dinp, const float *dout, size_t n,
                                        const bft_dropout *d)
{
    bft_cuda_op_dropout_fwd(dinp, dout, n, d);
}

extern "C" void bft_cuda_op_dropout_bias_bwd(float *dproj, float *dbias, const float *dx, int N,
                                             int C, const bft_dropout *d)
{
    if (!live() || N <= 0)
        return;
    bft_cuda_op_dropout_fwd(dproj, dx, (size_t)N * C, d);
    if (dbias)
        colsum(dbias, NULL, dproj, NULL, NULL, NULL, N, C, 0, 0);
}

extern "C" void bft_cuda_op_colsum(float *out, const float *x, int N, int C, int accum)
{
    if (!live())
        return;
    colsum(out, NULL, x, NULL, NULL, NULL, N, C, 0, accum);
}

extern "C" void bft_cuda_op_embed_ln_bwd(float *dwte, float *dwpe, float *dwtt, float *dw,
                                         float *db, float *dout, float *dx, const float *x,
                                         const float *mean, const float *rstd,
                                         const int32_t *ids, const float *w, int B, int T, int C,
                                         int pad_id, const bft_dropout *d)
{
    if (!live() || B <= 0 || T <= 0)
        return;
    int N = B * T;
    bft_cuda_op_dropout_bwd(dout, dout, (size_t)N * C, d);
    bft_cuda_op_layernorm_bwd(dx, dw, db, dout, x, mean, rstd, w, N, C, 0);
    if (!live())
        return;
    k_emb_pos_bwd<<<grid_for((size_t)T * C, NT), NT, 0, G.stream>>>(dwpe, dx, B, T, C);
    if (!launched("position embedding backward"))
        return;
    colsum(dwtt, NULL, dx, NULL, NULL, NULL, N, C, 0, 1);
    k_emb_wte_bwd<<<(unsigned)N, LNT, 0, G.stream>>>(dwte, dx, ids, N, C, pad_id);
    launched("word embedding backward");
}

/* ---- attention */

/* Carve n bytes (256-aligned) from *at. */
static char *carve(char **at, size_t n)
{
    char *p = *at;
    *at += (n + 255) / 256 * 256;
    return p;
}

#define ROWS_PER_BLOCK 4 /* warps per block in the softmax kernels */

extern "C" void bft_cuda_op_attention_fwd(float *ctx, float *att, const float *qkv,
                                          const int32_t *lens, int B, int T, int C, int NH,
                                          const bft_dropout *d)
{
    if (!live() || B <= 0 || T <= 0)
        return;
    int hs = C / NH, BH = B * NH;
    size_t BTC = (size_t)B * T * C, TT = (size_t)T * T, BNTT = (size_t)BH * TT;
    size_t es = G.use_bf16 ? sizeof(bf16) : sizeof(float);
    dparam dp = mkdrop(d);
    int need_pd = G.use_bf16 || dp.active;
    size_t bytes = 3 * ((BTC * es + 255) / 256 * 256) + (att ? 0 : (BNTT * 4 + 255) / 256 * 256) +
                   (need_pd ? (BNTT * es + 255) / 256 * 256 : 0) + (BTC * 4 + 255) / 256 * 256;
    char *at = (char *)ws(WS_ATT, bytes);
    if (!at)
        return;
    void *q = carve(&at, BTC * es), *k = carve(&at, BTC * es), *v = carve(&at, BTC * es);
    float *P = att ? att : (float *)carve(&at, BNTT * 4);
    void *Pd = need_pd ? carve(&at, BNTT * es) : NULL;
    float *y = (float *)carve(&at, BTC * 4);
    cudaDataType_t t = G.use_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    unsigned g = grid_for(BTC, NT);
    if (G.use_bf16)
        k_qkv_split<bf16><<<g, NT, 0, G.stream>>>((bf16 *)q, (bf16 *)k, (bf16 *)v, qkv, B, T, C, NH);
    else
        k_qkv_split<float><<<g, NT, 0, G.stream>>>((float *)q, (float *)k, (float *)v, qkv, B, T, C,
                                                   NH);
    if (!launched("attention split"))
        return;
    /* S (B,NH,T,T) = Q K^T / sqrt(hs), into P */
    gemm_batched_t(0, 1, T, T, hs, 1.0f / sqrtf((float)hs), q, hs, (long long)T * hs, k, hs,
                   (long long)T * hs, 0.0f, P, T, (long long)TT, BH, t);
    size_t rows = (size_t)BH * T;
    unsigned gs = (unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
    if (G.use_bf16)
        k_att_softmax<bf16><<<gs, 32 * ROWS_PER_BLOCK, 0, G.stream>>>(P, (bf16 *)Pd, P, lens, NH, T,
                                                                      rows, dp);
    else
        k_att_softmax<float><<<gs, 32 * ROWS_PER_BLOCK, 0, G.stream>>>(P, (float *)Pd, P, lens, NH,
                                                                       T, rows, dp);
    if (!launched("attention softmax"))
        return;
    /* y (B,NH,T,hs) = dropout(P) V */
    gemm_batched_t(0, 0, T, hs, T, 1.0f, need_pd ? Pd : (const void *)P, T, (long long)TT, v, hs,
                   (long long)T * hs, 0.0f, y, hs, (long long)T * hs, BH, t);
    k_heads_merge<<<g, NT, 0, G.stream>>>(ctx, y, B, T, C, NH);
    launched("attention merge");
}

extern "C" void bft_cuda_op_attention_bwd(float *dqkv, const float *dctx, const float *att,
                                          const float *qkv, const int32_t *lens, int B, int T,
                                          int C, int NH, const bft_dropout *d)
{
    if (!live() || B <= 0 || T <= 0)
        return;
    int hs = C / NH, BH = B * NH;
    size_t BTC = (size_t)B * T * C, TT = (size_t)T * T, BNTT = (size_t)BH * TT;
    size_t es = G.use_bf16 ? sizeof(bf16) : sizeof(float);
    long long sT = (long long)T * hs, sTT = (long long)TT;
    dparam dp = mkdrop(d);
    int need_pd = G.use_bf16 || dp.active;
#define AL(n) (((n) + 255) / 256 * 256)
    size_t bytes = 4 * AL(BTC * es) + (need_pd ? AL(BNTT * es) : 0) + AL(BNTT * 4) + 3 * AL(BTC * 4);
#undef AL
    char *at = (char *)ws(WS_ATT, bytes);
    if (!at)
        return;
    void *q = carve(&at, BTC * es), *k = carve(&at, BTC * es), *v = carve(&at, BTC * es);
    void *dy = carve(&at, BTC * es);
    void *Pd = need_pd ? carve(&at, BNTT * es) : NULL;
    float *dP = (float *)carve(&at, BNTT * 4);
    float *dq = (float *)carve(&at, BTC * 4), *dk = (float *)carve(&at, BTC * 4);
    float *dv = (float *)carve(&at, BTC * 4);
    cudaDataType_t t = G.use_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    unsigned g = grid_for(BTC, NT);
    size_t rows = (size_t)BH * T;
    unsigned gs = (unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
    if (G.use_bf16) {
        k_qkv_split<bf16><<<g, NT, 0, G.stream>>>((bf16 *)q, (bf16 *)k, (bf16 *)v, qkv, B, T, C, NH);
        k_heads_split<bf16><<<g, NT, 0, G.stream>>>((bf16 *)dy, dctx, B, T, C, NH);
        k_att_dropout<bf16><<<grid_for(BNTT, NT * 4), NT, 0, G.stream>>>((bf16 *)Pd, att, BNTT, dp);
    } else {
        k_qkv_split<float><<<g, NT, 0, G.stream>>>((float *)q, (float *)k, (float *)v, qkv, B, T, C,
                                                   NH);
        k_heads_split<float><<<g, NT, 0, G.stream>>>((float *)dy, dctx, B, T, C, NH);
        if (need_pd)
            k_att_dropout<float><<<grid_for(BNTT, NT * 4), NT, 0, G.stream>>>((float *)Pd, att,
                                                                              BNTT, dp);
    }
    if (!launched("attention backward split"))
        return;
    const void *Pu = need_pd ? Pd : (const void *)att;
    /* dV = dropout(P)^T dy; dPd = dy V^T */
    gemm_batched_t(1, 0, T, hs, T, 1.0f, Pu, T, sTT, dy, hs, sT, 0.0f, dv, hs, sT, BH, t);
    gemm_batched_t(0, 1, T, T, hs, 1.0f, dy, hs, sT, v, hs, sT, 0.0f, dP, T, sTT, BH, t);
    /* dS: in place over dP (fp32) or into the Pd buffer (bf16; Pd is no longer needed) */
    void *dS;
    if (G.use_bf16) {
        dS = Pd;
        k_att_softmax_bwd<bf16><<<gs, 32 * ROWS_PER_BLOCK, 0, G.stream>>>((bf16 *)dS, dP, att, lens,
                                                                          NH, T, rows, dp);
    } else {
        dS = dP;
        k_att_softmax_bwd<float><<<gs, 32 * ROWS_PER_BLOCK, 0, G.stream>>>((float *)dS, dP, att,
                                                                           lens, NH, T, rows, dp);
    }
    if (!launched("attention softmax backward"))
        return;
    float scale = 1.0f / sqrtf((float)hs);
    /* dQ = dS K / sqrt(hs); dK = dS^T Q / sqrt(hs) */
    gemm_batched_t(0, 0, T, hs, T, scale, dS, T, sTT, k, hs, sT, 0.0f, dq, hs, sT, BH, t);
    gemm_batched_t(1, 0, T, hs, T, scale, dS, T, sTT, q, hs, sT, 0.0f, dk, hs, sT, BH, t);
    k_qkv_merge<<<g, NT, 0, G.stream>>>(dqkv, dq, dk, dv, B, T, C, NH);
    launched("attention backward merge");
}

/* ---- [CLS]-row attention (the last layer of a classifier): one block per (b, h) */

#define ATTC_T 128 /* threads */

/* For (b, h) = blockIdx.x: p = softmax(q_b0 K_b^T / sqrt(hs)) over keys < lens[b]
 * (0 beyond), att (B,NH,T) = p when att, ctx (B,C) head h of row b = dropout(p) V_b;
 * dropout element j of (b, h) is element (b, h, 0, j) of the full attention. */
__global__ void k_attc_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens, int T,
                           int C, int NH, dparam d)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    int pidx = blockIdx.x, b = pidx / NH, h = pidx % NH, hs = C / NH;
    size_t C3 = 3 * (size_t)C;
    int len = lens[b];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float *sp = sm, *sw = sm + T, *sq = sm + 2 * T;
    const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *K = q + C, *V = q + 2 * (size_t)C;
    float scale = 1.0f / sqrtf((float)hs);
    uint64_t base = (uint64_t)pidx * T * T;
    for (int c = threadIdx.x; c < hs; c += blockDim.x)
        sq[c] = q[c];
    __syncthreads();
    for (int k = warp; k < len; k += nw) {
        float s = 0.0f;
        for (int c = lane; c < hs; c += 32)
            s += sq[c] * K[(size_t)k * C3 + c];
        s = warp_sum(s);
        if (lane == 0)
            sp[k] = s * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int k = threadIdx.x; k < len; k += blockDim.x)
        mx = fmaxf(mx, sp[k]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x) {
        float e = expf(sp[k] - mx);
        sp[k] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum, red);
    for (int k = threadIdx.x; k < T; k += blockDim.x) {
        float pk = k < len ? sp[k] * inv : 0.0f;
        if (att)
            att[(size_t)pidx * T + k] = pk;
        sw[k] = k < len ? dapply(d, base + k, pk) : 0.0f;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < hs; c += blockDim.x) {
        float o = 0.0f;
        for (int k = 0; k < len; k++)
            o += sw[k] * V[(size_t)k * C3 + c];
        ctx[(size_t)b * C + (size_t)h * hs + c] = o;
    }
}

/* Backward of k_attc_fwd for (b, h) = blockIdx.x: writes every element of head h's
 * columns of dqkv rows of batch b (Q rows t > 0 and K/V rows t >= len are 0). */
__global__ void k_attc_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                           const int32_t *lens, int T, int C, int NH, dparam d)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    int pidx = blockIdx.x, b = pidx / NH, h = pidx % NH, hs = C / NH;
    size_t C3 = 3 * (size_t)C;
    int len = lens[b];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float *skeep = sm, *sds = sm + T, *sq = sm + 2 * T, *sdc = sm + 2 * T + hs;
    size_t qo = (size_t)b * T * C3 + (size_t)h * hs;
    const float *q = qkv + qo, *K = q + C, *V = q + 2 * (size_t)C;
    float *dq = dqkv + qo, *dK = dq + C, *dV = dq + 2 * (size_t)C;
    const float *p = att + (size_t)pidx * T;
    const float *dc = dctx + (size_t)b * C + (size_t)h * hs;
    float scale = 1.0f / sqrtf((float)hs);
    uint64_t base = (uint64_t)pidx * T * T;
    for (int c = threadIdx.x; c < hs; c += blockDim.x) {
        sq[c] = q[c];
        sdc[c] = dc[c];
    }
    for (int k = threadIdx.x; k < len; k += blockDim.x)
        skeep[k] = d.active ? (dkeep(d, base + k) ? d.scale : 0.0f) : 1.0f;
    __syncthreads();
    /* ds_k = keep_k (dctx . v_k) */
    for (int k = warp; k < len; k += nw) {
        float s = 0.0f;
        for (int c = lane; c < hs; c += 32)
            s += sdc[c] * V[(size_t)k * C3 + c];
        s = warp_sum(s);
        if (lane == 0)
            sds[k] = skeep[k] * s;
    }
    __syncthreads();
    float dot = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x)
        dot += p[k] * sds[k];
    dot = block_sum(dot, red);
    for (int k = threadIdx.x; k < len; k += blockDim.x)
        sds[k] = p[k] * (sds[k] - dot) * scale;
    __syncthreads();
    /* dq (row 0) = sum_k ds_k K_k */
    for (int c = threadIdx.x; c < hs; c += blockDim.x) {
        float o = 0.0f;
        for (int k = 0; k < len; k++)
            o += sds[k] * K[(size_t)k * C3 + c];
        dq[c] = o;
    }
    /* dK_k = ds_k q, dV_k = keep_k p_k dctx for k < len; zeros elsewhere */
    for (size_t i = threadIdx.x; i < (size_t)T * hs; i += blockDim.x) {
        int t = (int)(i / hs), c = (int)(i % hs);
        size_t o = (size_t)t * C3 + c;
        if (t > 0)
            dq[o] = 0.0f;
        if (t < len) {
            dK[o] = sds[t] * sq[c];
            dV[o] = skeep[t] * p[t] * sdc[c];
        } else {
            dK[o] = 0.0f;
            dV[o] = 0.0f;
        }
    }
}

extern "C" void bft_cuda_op_attention_cls_fwd(float *ctx, float *att, const float *qkv,
                                              const int32_t *lens, int B, int T, int C, int NH,
                                              const bft_dropout *d)
{
    if (!live() || B <= 0 || T <= 0)
        return;
    size_t shm = (2 * (size_t)T + (size_t)(C / NH)) * sizeof(float);
    k_attc_fwd<<<(unsigned)(B * NH), ATTC_T, shm, G.stream>>>(ctx, att, qkv, lens, T, C, NH,
                                                              mkdrop(d));
    launched("[CLS] attention");
}

extern "C" void bft_cuda_op_attention_cls_bwd(float *dqkv, const float *dctx, const float *att,
                                              const float *qkv, const int32_t *lens, int B, int T,
                                              int C, int NH, const bft_dropout *d)
{
    if (!live() || B <= 0 || T <= 0)
        return;
    size_t shm = (2 * (size_t)T + 2 * (size_t)(C / NH)) * sizeof(float);
    k_attc_bwd<<<(unsigned)(B * NH), ATTC_T, shm, G.stream>>>(dqkv, dctx, att, qkv, lens, T, C,
                                                              NH, mkdrop(d));
    launched("[CLS] attention backward");
}

/* ---- small ops */

extern "C" void bft_cuda_op_gather_rows(float *out, const float *inp, const int64_t *rows, int n,
                                        int C)
{
    if (!live() || n <= 0)
        return;
    k_gather_rows<<<grid_for((size_t)n * C, NT), NT, 0, G.stream>>>(out, inp, rows, n, C);
    launched("gather rows");
}

extern "C" void bft_cuda_op_scatter_add_rows(float *dinp, const float *dout, const int64_t *rows,
                                             int n, int C)
{
    if (!live() || n <= 0)
        return;
    k_scatter_add_rows<<<grid_for((size_t)n * C, NT), NT, 0, G.stream>>>(dinp, dout, rows, n, C);
    launched("scatter-add rows");
}

extern "C" void bft_cuda_op_strided_rows(int64_t *rows, int n, int64_t stride)
{
    if (!live() || n <= 0)
        return;
    k_strided_rows<<<grid_for((size_t)n, NT), NT, 0, G.stream>>>(rows, n, stride);
    launched("row indices");
}

extern "C" void bft_cuda_op_bias_tanh_fwd(float *x, const float *bias, int N, int C)
{
    if (!live() || N <= 0)
        return;
    k_bias_tanh<<<grid_for((size_t)N * C, NT), NT, 0, G.stream>>>(x, bias, (size_t)N, C);
    launched("bias+tanh");
}

extern "C" void bft_cuda_op_tanh_bwd(float *dinp, const float *dout, const float *y, size_t n)
{
    if (!live() || n == 0)
        return;
    k_tanh_bwd<<<grid_for(n, NT), NT, 0, G.stream>>>(dinp, dout, y, n);
    launched("tanh backward");
}

extern "C" void bft_cuda_op_softmax_xent(float *probs, float *losses, float *dlogits,
                                         const float *logits, const int32_t *labels,
                                         const float *row_scale, int N, int K, float dscale)
{
    if (!live() || N <= 0 || (!probs && !dlogits))
        return;
    k_softmax_xent<<<(unsigned)N, XT, 0, G.stream>>>(probs, losses, dlogits, logits, labels,
                                                    row_scale, K, dscale);
    launched("softmax cross-entropy");
}

extern "C" void bft_cuda_op_sigmoid_bce(float *probs, float *losses, float *dlogits,
                                        const float *logits, const float *targets, int N, int K,
                                        float dscale)
{
    if (!live() || N <= 0 || (!probs && !(targets && (losses || dlogits))))
        return;
    k_sigmoid_bce<<<(unsigned)N, XT, 0, G.stream>>>(probs, losses, dlogits, logits, targets, K,
                                                   dscale);
    launched("sigmoid binary cross-entropy");
}

extern "C" void bft_cuda_op_adamw(float *p, float *g, float *m, float *v, size_t n,
                                  double lr, double b1, double b2, double eps, double wd,
                                  float gscale, int64_t t, int zero_grad)
{
    if (!live() || n == 0)
        return;
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    float step_size = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
    bf16 *mir = NULL;
    if (G.mir && p >= G.mir_src && p + n <= G.mir_src + G.mir_n)
        mir = G.mir + (p - G.mir_src);
    k_adamw<<<grid_for(n, NT * 4), NT, 0, G.stream>>>(p, g, m, v, n, (float)(1.0 - lr * wd),
                                                      (float)b2, (float)(1.0 - b1),
                                                      (float)(1.0 - b2), gscale, -step_size,
                                                      bc2s, (float)eps, mir, zero_grad);
    launched("AdamW");
}

extern "C" double bft_cuda_op_sumsq(const float *x, size_t n)
{
    if (!live() || n == 0)
        return 0.0;
    unsigned nb = grid_for(n, NT * 8);
    if (nb > 1024)
        nb = 1024;
    double *part = (double *)ws(WS_RED, nb * sizeof(double));
    double *host = (double *)ws(WS_HOST_RED, nb * sizeof(double));
    if (!part || !host)
        return 0.0;
    k_sumsq<<<nb, NT, 0, G.stream>>>(x, n, part);
    if (!launched("sum of squares"))
        return 0.0;
    bft_cuda_download(host, part, nb * sizeof(double));
    if (G.err_code)
        return 0.0;
    double s = 0.0;
    for (unsigned b = 0; b < nb; b++)
        s += host[b];
    return s;
}

extern "C" float bft_cuda_op_mean(const float *x, int n)
{
    if (!live() || n <= 0)
        return 0.0f;
    float *host = (float *)ws(WS_HOST_RED, (size_t)n * sizeof(float));
    if (!host)
        return 0.0f;
    bft_cuda_download(host, x, (size_t)n * sizeof(float));
    if (G.err_code)
        return 0.0f;
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += host[i];
    return (float)(s / n);
}

/* ---------------------------------------------------------------- the backend table */

static void *be_alloc(size_t bytes)
{
    return bft_cuda_alloc(bytes);
}

static const bft_backend cuda_backend = {
    "cuda",
    BFT_DEVICE_CUDA,
    be_alloc,
    bft_cuda_free,
    bft_cuda_upload,
    bft_cuda_download,
    bft_cuda_copy,
    cu_check,
    bft_cuda_set_weights,
    bft_cuda_gemm,
    bft_cuda_op_linear_fwd,
    bft_cuda_op_linear_bwd,
    bft_cuda_op_colsum,
    bft_cuda_op_bias_gelu_fwd,
    bft_cuda_op_gelu_fwd,
    bft_cuda_op_gelu_bwd,
    bft_cuda_op_gelu_recompute,
    bft_cuda_op_mul,
    bft_cuda_op_embed_ln_fwd,
    bft_cuda_op_embed_ln_bwd,
    bft_cuda_op_residual_ln_fwd,
    bft_cuda_op_layernorm_fwd,
    bft_cuda_op_layernorm_bwd,
    bft_cuda_op_dropout_bias_bwd,
    bft_cuda_op_attention_fwd,
    bft_cuda_op_attention_bwd,
    bft_cuda_op_attention_cls_fwd,
    bft_cuda_op_attention_cls_bwd,
    bft_cuda_op_gather_rows,
    bft_cuda_op_scatter_add_rows,
    bft_cuda_op_bias_tanh_fwd,
    bft_cuda_op_tanh_bwd,
    bft_cuda_op_dropout_fwd,
    bft_cuda_op_dropout_bwd,
    bft_cuda_op_softmax_xent,
    bft_cuda_op_sigmoid_bce,
    bft_cuda_op_adamw,
    bft_cuda_op_sumsq,
    bft_cuda_op_zero,
    bft_cuda_op_strided_rows,
    bft_cuda_op_mean,
};

static const bft_cuda_api cuda_api = {
    BFT_CUDA_ABI,    sizeof(bft_backend), cu_available, cu_init, cu_check,
    cu_release,      cu_device_name,      &cuda_backend,
};

/* The module's one exported symbol (everything else is hidden). */
extern "C" __attribute__((visibility("default"))) const bft_cuda_api *bft_cuda_module(void)
{
    return &cuda_api;
}
