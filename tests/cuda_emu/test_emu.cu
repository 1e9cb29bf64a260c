/*
 * test_emu.cu — tests of the bft CUDA emulator itself (written in CUDA C++,
 * rewritten by convert.sed like ops_cuda.cu): that it executes kernels with
 * CUDA's semantics (barriers, shuffles, shared memory, cuBLAS GEMMs), and that
 * the mistakes it is there to catch are caught (a test of a checker that
 * cannot fail would prove nothing). Mistakes that end the process (faults)
 * or leave a sticky error run in a forked child.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* ---------------------------------------------------------------- kernels */

__device__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* out[blockIdx.x] = sum of in over the block's elements (blockDim.x a multiple of 32). */
__global__ void k_block_sum(float *out, const float *in)
{
    __shared__ float sh[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float v = warp_sum(in[blockIdx.x * blockDim.x + threadIdx.x]);
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    v = warp_sum(v);
    if (threadIdx.x == 0)
        out[blockIdx.x] = v;
}

/* Two block sums in a row through one shared buffer: without the barrier that
 * keeps the second call's writes after the first call's reads (sync = 0), a
 * warp that runs ahead overwrites partial sums another warp still has to read. */
__device__ float block_sum2(float v, float *sh, int sync)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    if (sync)
        __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

__global__ void k_two_sums(float *out, int sync)
{
    __shared__ float sh[32];
    float a = block_sum2(1.0f, sh, sync);
    float b = block_sum2((float)threadIdx.x, sh, sync);
    out[2 * threadIdx.x] = a;
    out[2 * threadIdx.x + 1] = b;
}

/* out[t] for the shuffles: [0] down 1 width 16, [1] up 2, [2] broadcast lane 5, [3] syncthreads_or/count */
__global__ void k_shuffles(int *out)
{
    int t = threadIdx.x;
    out[4 * t + 0] = __shfl_down_sync(0xffffffffu, t, 1, 16);
    out[4 * t + 1] = __shfl_up_sync(0xffffffffu, t, 2);
    out[4 * t + 2] = __shfl_sync(0xffffffffu, t, 5);
    int any = __syncthreads_or(t == 37);
    int cnt = __syncthreads_count(t % 3 == 0);
    out[4 * t + 3] = any * 1000 + cnt;
}

/* Each thread writes sh[t] then reads its neighbour's value, with or without the barrier. */
__global__ void k_neighbour(int *out, int barrier)
{
    __shared__ int sh[256];
    int t = threadIdx.x;
    sh[t] = t;
    if (barrier)
        __syncthreads();
    out[t] = sh[(t + 1) % blockDim.x];
}

__global__ void k_read(float *out, const float *in, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = in[i];
}

__global__ void k_read_shared(float *out)
{
    __shared__ float never_written[8];
    out[threadIdx.x] = never_written[threadIdx.x % 8];
}

__global__ void k_dyn(float *out, int n, int extra)
{
    extern __shared__ float dyn[];
    for (int i = threadIdx.x; i < n + extra; i += blockDim.x)
        dyn[i] = (float)i;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int i = 0; i < n; i++)
            s += dyn[i];
        out[0] = s;
    }
}

__global__ void k_divergent_barrier(float *out)
{
    if (threadIdx.x < 32)
        return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

__global__ void k_partial_shuffle(float *out)
{
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

__global__ void k_write(float *out, int n)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[i] = 1.0f;
}

/* ---------------------------------------------------------------- helpers */

static float *dalloc(size_t n)
{
    float *p = NULL;
    if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess)
        return NULL;
    return p;
}

static void up(float *d, const float *h, size_t n)
{
    cudaMemcpyAsync(d, h, n * sizeof(float), cudaMemcpyHostToDevice, 0);
}

static void down(void *h, const void *d, size_t bytes)
{
    cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, 0);
    cudaStreamSynchronize(0);
}

/* Run fn in a child with stderr captured; *sig gets the terminating signal (0
 * when it exited, with its status in *code); the child's stderr goes to buf. */
static void in_child(void (*fn)(void), int *sig, int *code, char *buf, size_t cap)
{
    int pfd[2];
    buf[0] = '\0';
    *sig = *code = -1;
    if (pipe(pfd) != 0)
        return;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        dup2(pfd[1], 2);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    size_t got = 0;
    ssize_t r;
    while ((r = read(pfd[0], buf + got, cap - 1 - got)) > 0 && got < cap - 1)
        got += (size_t)r;
    buf[got] = '\0';
    close(pfd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st))
        *sig = WTERMSIG(st);
    else {
        *sig = 0;
        *code = WEXITSTATUS(st);
    }
}

/* ---------------------------------------------------------------- semantics */

static void test_block_sum(void)
{
    const int B = 3, T = 256;
    float h[B * T], out[B];
    for (int i = 0; i < B * T; i++)
        h[i] = (float)((i * 37) % 101) - 50.0f;
    float *d = dalloc(B * T), *o = dalloc(B);
    up(d, h, B * T);
    k_block_sum<<<B, T>>>(o, d);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    down(out, o, sizeof out);
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int i = 0; i < T; i++)
            s += h[b * T + i];
        CHECK(out[b] == (float)s, "block %d: %g vs %g", b, out[b], s);
    }
    cudaFree(d);
    cudaFree(o);
}

static void test_shuffles(void)
{
    const int T = 64;
    int *d = NULL, h[4 * T];
    cudaMalloc(&d, sizeof h);
    k_shuffles<<<1, T>>>(d);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    down(h, d, sizeof h);
    int bad = 0;
    for (int t = 0; t < T; t++) {
        int lane = t % 32, seg = lane / 16 * 16, in = lane - seg;
        int down_v = in + 1 < 16 ? t + 1 : t;
        int up_v = lane >= 2 ? t - 2 : t;
        int bc = t / 32 * 32 + 5;
        int cnt = (T + 2) / 3;
        bad += h[4 * t] != down_v || h[4 * t + 1] != up_v || h[4 * t + 2] != bc ||
               h[4 * t + 3] != 1000 + cnt;
    }
    CHECK(bad == 0, "%d threads got wrong shuffle/vote results", bad);
    cudaFree(d);
}

static void test_missing_barrier_is_exposed(void)
{
    const int T = 256;
    int *d = NULL, h[T];
    cudaMalloc(&d, sizeof h);
    k_neighbour<<<1, T>>>(d, 1);
    down(h, d, sizeof h);
    int wrong = 0;
    for (int t = 0; t < T; t++)
        wrong += h[t] != (t + 1) % T;
    CHECK(wrong == 0, "with the barrier: %d wrong", wrong);
    k_neighbour<<<1, T>>>(d, 0);
    down(h, d, sizeof h);
    wrong = 0;
    for (int t = 0; t < T; t++)
        wrong += h[t] != (t + 1) % T;
    /* threads run in a shuffled order: about half read the neighbour's slot
     * before it was written and see the poison (-1) */
    CHECK(wrong > T / 8, "without the barrier only %d of %d threads saw the race", wrong, T);
    printf("  missing barrier: %d of %d threads read an unwritten shared slot\n", wrong, T);
    cudaFree(d);
    /* a write-after-read hazard between warps (the barrier before reusing a buffer) */
    float *o = dalloc(2 * T), h2[2 * T];
    int bad[2] = {0, 0};
    for (int sync = 1; sync >= 0; sync--) {
        k_two_sums<<<1, T>>>(o, sync);
        down(h2, o, sizeof h2);
        for (int t = 0; t < T; t++)
            bad[sync] += h2[2 * t] != (float)T || h2[2 * t + 1] != (float)(T * (T - 1) / 2);
    }
    CHECK(bad[1] == 0, "two block sums with the barrier: %d threads wrong", bad[1]);
    CHECK(bad[0] > 0, "two block sums without the barrier gave the right sums on every thread");
    printf("  missing barrier before reusing shared memory: %d of %d threads wrong\n", bad[0], T);
    cudaFree(o);
}

static void test_poison(void)
{
    float *a = dalloc(100), *o = dalloc(100), h[100];
    k_read<<<1, 64>>>(o, a, 100);
    down(h, o, sizeof h);
    int nan = 0;
    for (int i = 0; i < 100; i++)
        nan += isnan(h[i]);
    CHECK(nan == 100, "uninitialised device memory: %d of 100 NaN", nan);
    k_read_shared<<<2, 32>>>(o);
    down(h, o, 64 * sizeof(float));
    nan = 0;
    for (int i = 0; i < 64; i++)
        nan += isnan(h[i]);
    CHECK(nan == 64, "uninitialised shared memory: %d of 64 NaN", nan);
    k_dyn<<<1, 128, 100 * sizeof(float)>>>(o, 100, 0);
    down(h, o, sizeof(float));
    CHECK(h[0] == 4950.0f, "dynamic shared memory sum %g", h[0]);
    cudaFree(a);
    cudaFree(o);
}

/* ---------------------------------------------------------------- cuBLAS */

static void gemm_ref(int ta, int tb, int m, int n, int k, float al, const float *A, int lda,
                     const float *B, int ldb, float be, float *C, int ldc)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int l = 0; l < k; l++)
                s += (double)(ta ? A[l + i * lda] : A[i + l * lda]) *
                     (tb ? B[j + l * ldb] : B[l + j * ldb]);
            C[i + j * ldc] = (float)(al * s + (be == 0.0f ? 0.0 : be * C[i + j * ldc]));
        }
}

static float bfr(float x)
{
    return __bfloat162float(__float2bfloat16(x));
}

static void test_gemm(void)
{
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "create");
    const int m = 7, n = 5, k = 9, ld = 12, batch = 3, stride = 12 * 12;
    size_t sz = (size_t)stride * batch;
    float *A = (float *)malloc(sz * 4), *B = (float *)malloc(sz * 4), *C = (float *)malloc(sz * 4),
          *R = (float *)malloc(sz * 4), *G = (float *)malloc(sz * 4);
    __nv_bfloat16 *A16 = (__nv_bfloat16 *)malloc(sz * 2), *B16 = (__nv_bfloat16 *)malloc(sz * 2);
    for (size_t i = 0; i < sz; i++) {
        A[i] = (float)((i * 7919) % 113) / 56.0f - 1.0f;
        B[i] = (float)((i * 104729) % 127) / 63.0f - 1.0f;
        C[i] = (float)((i * 31) % 17) / 8.0f - 1.0f;
    }
    float *dA = dalloc(sz), *dB = dalloc(sz), *dC = dalloc(sz);
    __nv_bfloat16 *dA16 = NULL, *dB16 = NULL;
    cudaMalloc(&dA16, sz * 2);
    cudaMalloc(&dB16, sz * 2);
    up(dA, A, sz);
    up(dB, B, sz);
    double worst = 0, worst16 = 0;
    for (int bf = 0; bf < 2; bf++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int beta0 = 0; beta0 < 2; beta0++) {
                    float al = 0.75f, be = beta0 ? 0.0f : 0.5f;
                    memcpy(R, C, sz * 4);
                    if (beta0) /* beta = 0 must not read C: NaN there must not leak */
                        for (size_t i = 0; i < sz; i++)
                            R[i] = NAN;
                    up(dC, R, sz);
                    const float *Ar = A, *Br = B;
                    float *Aq = NULL, *Bq = NULL;
                    if (bf) {
                        Aq = (float *)malloc(sz * 4);
                        Bq = (float *)malloc(sz * 4);
                        for (size_t i = 0; i < sz; i++) {
                            A16[i] = __float2bfloat16(A[i]);
                            B16[i] = __float2bfloat16(B[i]);
                            Aq[i] = bfr(A[i]);
                            Bq[i] = bfr(B[i]);
                        }
                        cudaMemcpyAsync(dA16, A16, sz * 2, cudaMemcpyHostToDevice, 0);
                        cudaMemcpyAsync(dB16, B16, sz * 2, cudaMemcpyHostToDevice, 0);
                        Ar = Aq;
                        Br = Bq;
                    }
                    cublasStatus_t s = cublasGemmStridedBatchedEx(
                        h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                        &al, bf ? (const void *)dA16 : dA, bf ? CUDA_R_16BF : CUDA_R_32F, ld,
                        stride, bf ? (const void *)dB16 : dB, bf ? CUDA_R_16BF : CUDA_R_32F, ld,
                        stride, &be, dC, CUDA_R_32F, ld, stride, batch, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
                    CHECK(s == CUBLAS_STATUS_SUCCESS, "gemm status %d", (int)s);
                    down(G, dC, sz * 4);
                    for (int b = 0; b < batch; b++)
                        gemm_ref(ta, tb, m, n, k, al, Ar + b * stride, ld, Br + b * stride, ld, be,
                                 R + b * stride, ld);
                    for (int b = 0; b < batch; b++)
                        for (int j = 0; j < n; j++)
                            for (int i = 0; i < m; i++) {
                                size_t o = (size_t)b * stride + i + (size_t)j * ld;
                                double e = fabs((double)G[o] - R[o]);
                                if (!(e == e))
                                    e = 1e30;
                                if (bf)
                                    worst16 = fmax(worst16, e);
                                else
                                    worst = fmax(worst, e);
                            }
                    free(Aq);
                    free(Bq);
                }
    CHECK(worst <= 1e-5, "fp32 GEMM worst error %g", worst);
    CHECK(worst16 <= 1e-5, "bf16-operand GEMM worst error %g (vs rounded operands)", worst16);
    float al = 1.0f, be = 0.0f;
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &al, dA, CUDA_R_32F, m - 1, dB,
                       CUDA_R_32F, ld, &be, dC, CUDA_R_32F, ld, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE,
          "lda < m accepted");
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &al, dA, CUDA_R_32F, ld, dB16,
                       CUDA_R_16BF, ld, &be, dC, CUDA_R_32F, ld, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
          "mixed operand types accepted");
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
    cudaFree(dA16);
    cudaFree(dB16);
    cublasDestroy(h);
    free(A);
    free(B);
    free(C);
    free(R);
    free(G);
    free(A16);
    free(B16);
}

static void gemm_past_end(void)
{
    cublasHandle_t h;
    cublasCreate(&h);
    float *a = dalloc(16), *c = dalloc(16), al = 1, be = 0;
    /* 4x4 times 4x5: B needs 20 elements, the allocation has 16 */
    cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 5, 4, &al, a, CUDA_R_32F, 4, a,
                                    CUDA_R_32F, 4, &be, c, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    _exit(s == CUBLAS_STATUS_EXECUTION_FAILED && cudaGetLastError() == cudaErrorIllegalAddress ? 7 : 1);
}

/* ---------------------------------------------------------------- mistakes caught */

static void host_deref(void)
{
    float *d = dalloc(10);
    volatile float x = d[3]; /* host code reading device memory */
    (void)x;
}

static void kernel_oob(void)
{
    float *d = dalloc(1000);
    k_write<<<1, 128>>>(d, 1000 + 64 + 1024); /* past the end (and the 256-byte rounding) */
    cudaStreamSynchronize(0);
}

static void kernel_small_overrun(void)
{
    float *d = dalloc(10); /* 40 bytes, rounded to 256: no fault, but the slack is watched */
    k_write<<<1, 32>>>(d, 11);
    _exit(cudaGetLastError() == cudaErrorIllegalAddress ? 7 : 1);
}

static void dyn_smem_oob(void)
{
    float *d = dalloc(4);
    k_dyn<<<1, 128, 100 * sizeof(float)>>>(d, 100, 4096);
    cudaStreamSynchronize(0);
}

static void divergent_barrier(void)
{
    float *d = dalloc(128);
    k_divergent_barrier<<<1, 128>>>(d);
    _exit(cudaGetLastError() == cudaErrorLaunchFailure &&
                  cudaStreamSynchronize(0) == cudaErrorLaunchFailure
              ? 7
              : 1);
}

static void partial_shuffle(void)
{
    float *d = dalloc(32);
    k_partial_shuffle<<<1, 32>>>(d);
    _exit(cudaGetLastError() == cudaErrorLaunchFailure ? 7 : 1);
}

static void host_pointer_arg(void)
{
    static float host[64];
    k_write<<<1, 32>>>(host, 64);
    _exit(cudaGetLastError() == cudaErrorIllegalAddress ? 7 : 1);
}

static void bad_config(void)
{
    float *d = dalloc(4);
    k_write<<<1, 2048>>>(d, 4);
    cudaError_t e1 = cudaGetLastError();
    k_dyn<<<1, 32, 64 * 1024>>>(d, 1, 0);
    cudaError_t e2 = cudaGetLastError();
    _exit(e1 == cudaErrorInvalidConfiguration && e2 == cudaErrorInvalidConfiguration ? 7 : 1);
}

static void memcpy_kind(void)
{
    float *d = dalloc(8), h[8] = {0};
    cudaError_t e1 = cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyHostToDevice, 0); /* reversed */
    cudaError_t e2 = cudaMemcpyAsync(d, h, 2 * sizeof h + 2048, cudaMemcpyHostToDevice, 0);
    _exit(e1 == cudaErrorInvalidValue && e2 == cudaErrorInvalidValue ? 7 : 1);
}

static void out_of_memory(void)
{
    setenv("BFT_CUDA_EMU_MEM", "1M", 1);
    void *p = NULL, *q = NULL;
    cudaError_t e1 = cudaMalloc(&p, 600 * 1024);
    cudaError_t e2 = cudaMalloc(&q, 600 * 1024);
    cudaError_t last = cudaGetLastError(), after = cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    _exit(e1 == cudaSuccess && e2 == cudaErrorMemoryAllocation && !q &&
                  last == cudaErrorMemoryAllocation && after == cudaSuccess && tot == 1048576 &&
                  fr < 500 * 1024
              ? 7
              : 1);
}

static void double_free(void)
{
    void *p = NULL;
    cudaMalloc(&p, 64);
    cudaFree(p);
    _exit(cudaFree(p) == cudaErrorInvalidDevicePointer ? 7 : 1);
}

static void expect(void (*fn)(void), const char *what, int want_sig, const char *want_msg)
{
    int sig, code;
    char buf[4096];
    in_child(fn, &sig, &code, buf, sizeof buf);
    if (want_sig)
        CHECK(sig == want_sig, "%s: child ended with signal %d, exit %d, expected signal %d; "
              "stderr: %s", what, sig, code, want_sig, buf);
    else
        CHECK(sig == 0 && code == 7, "%s: child ended with signal %d, exit %d (7 = the error was "
              "reported); stderr: %s", what, sig, code, buf);
    if (want_msg)
        CHECK(strstr(buf, want_msg) != NULL, "%s: stderr lacks \"%s\": %s", what, want_msg, buf);
}

static void test_mistakes_caught(void)
{
    expect(host_deref, "host dereference of a device pointer", SIGSEGV, "HOST code touched device memory");
    expect(kernel_oob, "kernel writing past an allocation", SIGSEGV, "out of bounds");
    expect(kernel_small_overrun, "kernel writing one element past an allocation", 0,
           "bytes past the end");
    expect(dyn_smem_oob, "kernel writing past its dynamic shared memory", SIGSEGV, "k_dyn");
    expect(divergent_barrier, "barrier in divergent code", 0, "exited while the others wait");
    expect(partial_shuffle, "shuffle with absent lanes", 0, "wait in a warp shuffle");
    expect(host_pointer_arg, "host pointer passed to a kernel", 0, "is not a device pointer");
    expect(bad_config, "launch limits", 0, "invalid launch configuration");
    expect(memcpy_kind, "copy direction and extent", 0, "cudaMemcpyAsync");
    expect(gemm_past_end, "GEMM operand past its allocation", 0, "operand B");
    expect(out_of_memory, "device memory limit", 0, NULL);
    expect(double_free, "double cudaFree", 0, "double free");
}

int main(void)
{
    RUN(test_block_sum);
    RUN(test_shuffles);
    RUN(test_missing_barrier_is_exposed);
    RUN(test_poison);
    RUN(test_gemm);
    RUN(test_mistakes_caught);
    return test_summary();
}
