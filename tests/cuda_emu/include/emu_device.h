/*
 * emu_device.h — the device side of the bft CUDA emulator: the qualifiers,
 * built-in variables, barriers, warp shuffles and kernel launches that CUDA
 * C++ code uses, for a host C++ compiler. Kernels run on the CPU, one block
 * after another; the threads of a block are coroutines that switch only at
 * barriers and shuffles (emu.cpp), so the code between two synchronisation
 * points runs for one thread at a time, in a shuffled order.
 *
 * convert.sed rewrites a .cu file's launches `k<<<grid, block, smem, stream>>>(args)`
 * into `emu_launch(emu_cfg(grid, block, smem, stream), "k", k, args)` and its
 * `extern __shared__ T a[];` into a pointer to the launch's dynamic shared memory.
 */
#ifndef BFT_CUDA_EMU_DEVICE_H
#define BFT_CUDA_EMU_DEVICE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
/* Block-shared variables are statics in a section of their own, which the
 * emulator poisons (all bits set: NaN) before every block, as a GPU leaves
 * shared memory uninitialised. */
#define __shared__ static __attribute__((section("emu_shared")))

/* The running emulated thread's coordinates (set by the scheduler). */
extern dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

using std::max;
using std::min;

/* Barriers of the block (every thread of the block must reach the same one). */
void __syncthreads(void);
int __syncthreads_or(int pred);
int __syncthreads_and(int pred);
int __syncthreads_count(int pred);
/* Barrier of the lanes in mask of the calling warp. */
void __syncwarp(unsigned mask = 0xffffffffu);

/* Exchange `size` bytes among the lanes of mask: *out gets the value of lane
 * src(lane) where mode 0: lane ^ arg, 1: arg (broadcast), 2: lane + arg (down),
 * 3: lane - arg (up), within segments of `width` lanes. */
void emu_shfl(unsigned mask, const void *in, void *out, size_t size, int mode, int arg, int width);

template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    T r;
    emu_shfl(mask, &v, &r, sizeof(T), 0, lane_mask, width);
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    T r;
    emu_shfl(mask, &v, &r, sizeof(T), 1, src, width);
    return r;
}
template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    T r;
    emu_shfl(mask, &v, &r, sizeof(T), 2, (int)d, width);
    return r;
}
template <typename T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    T r;
    emu_shfl(mask, &v, &r, sizeof(T), 3, (int)d, width);
    return r;
}

static inline float rsqrtf(float x)
{
    return 1.0f / sqrtf(x);
}

/* The dynamic shared memory of the running block (emu_cfg's smem bytes). */
void *emu_dyn_smem(void);

struct emu_cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    emu_cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = 0) : grid(g), block(b), smem(s), stream(st) {}
};

/* Runs body(arg) as every thread of the grid of c; launch errors (a bad
 * configuration, a kernel that deadlocks or diverges at a barrier) become the
 * sticky error that cudaGetLastError reports. */
void emu_run(const emu_cfg &c, const char *kernel, void (*body)(void *), void *arg);
/* 1 when p (argument argno of kernel) is NULL or points into a device
 * allocation; otherwise records a launch error naming the argument. */
int emu_device_ptr_ok(const void *p, const char *kernel, int argno);

template <typename F> static void emu_trampoline(void *f)
{
    (*(F *)f)();
}

template <typename... P, typename... A>
static inline void emu_launch(const emu_cfg &c, const char *kernel, void (*k)(P...), A &&...a)
{
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with a wrong number of arguments");
    /* the arguments are converted to the parameter types at the launch, as nvcc does */
    std::tuple<typename std::decay<P>::type...> args(std::forward<A>(a)...);
    int ok = 1, argno = 0;
    std::apply(
        [&](const auto &...x) {
            (
                [&](const auto &v) {
                    argno++;
                    if constexpr (std::is_pointer<typename std::decay<decltype(v)>::type>::value)
                        ok &= emu_device_ptr_ok((const void *)v, kernel, argno);
                }(x),
                ...);
        },
        args);
    if (!ok)
        return;
    auto call = [&]() { std::apply(k, args); };
    emu_run(c, kernel, &emu_trampoline<decltype(call)>, &call);
}

#endif
