/*
 * emu.cpp — the bft CUDA emulator: runs the CUDA backend (ops_cuda.cu,
 * rewritten by convert.sed and compiled by the host C++ compiler against
 * include/) on the CPU, so the backend's host code and every kernel are
 * exercised by the tests on machines without a GPU. Test-only.
 *
 * What it executes faithfully: kernel code with CUDA's thread/block/grid
 * coordinates, __syncthreads (and _or/_and/_count), warp shuffles and
 * __syncwarp with their masks, static and dynamic shared memory, the runtime
 * calls (malloc/free/memcpy/memset/streams/errors) and cuBLAS GemmEx /
 * GemmStridedBatchedEx (column-major, fp32 and bf16 operands, fp32
 * accumulation through OpenBLAS's sgemm, beta = 0 does not read C).
 *
 * What it checks, as a GPU would fault or silently misbehave:
 *   - device memory is mapped PROT_NONE except while a kernel, copy or GEMM
 *     runs, so host code that dereferences a device pointer faults at once
 *     (reported with the allocation it hit); each allocation ends at a guard
 *     page, so a kernel that reads or writes past the end faults too (a write
 *     into the allocation's 256-byte rounding is found after the kernel);
 *   - new device memory, shared memory (static and dynamic, before every
 *     block) are filled with all-one bits (NaN as float, -1 as int), so a
 *     read of memory nobody wrote shows up as NaN in the results;
 *   - kernel pointer arguments, copy and GEMM operands must lie in device
 *     allocations (whole extent, from m/n/k, leading dimensions and strides);
 *     memcpy kinds must match the pointers; cuBLAS argument rules
 *     (dimensions, leading dimensions, type combinations) are enforced;
 *   - launch configuration limits (1024 threads, 48 KiB dynamic shared
 *     memory, grid dimensions) of an sm_90 device;
 *   - a barrier that not every thread of the block reaches, a shuffle whose
 *     mask names lanes that do not take part, and deadlocks are launch errors;
 *   - warps run one at a time between block barriers, each as far as it can
 *     go, in a shuffled order (lanes too, between warp synchronisations), and
 *     blocks in a shuffled order, so code that depends on an order the
 *     hardware does not guarantee (a missing barrier) tends to read poison.
 * Blocks run one at a time: a result that depends on the order of blocks
 * shows up when two schedules (BFT_CUDA_EMU_SEED, bft_cuda_emu_set_seed) give
 * different bits (test_cuda's determinism test), but updates lost between
 * truly concurrent blocks (non-atomic read-modify-write) cannot happen here.
 * What it cannot show either: timing, occupancy, real cuBLAS/libdevice
 * rounding, streams running concurrently, and anything about the driver.
 *
 * Environment: BFT_CUDA_EMU_MEM (bytes of device memory, suffix K/M/G;
 * default 16G), BFT_CUDA_EMU_SEED (scheduling order; default 1),
 * BFT_CUDA_EMU_DEVICES (device count; default 1, 0 = no device),
 * BFT_CUDA_EMU_PROTECT=0 (device memory stays host-readable: faster, for long
 * runs; host dereferences of device pointers then go unnoticed).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <vector>

#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cuda_runtime.h"

dim3 threadIdx, blockIdx, blockDim, gridDim;

/* OpenBLAS's CBLAS single-precision GEMM (the emulated cuBLAS computes with it). */
enum { CBLAS_COL_MAJOR = 102, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
extern "C" void openblas_set_num_threads(int n);
extern "C" void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                            const float *a, int lda, const float *b, int ldb, float beta, float *c,
                            int ldc);

namespace {

/* ---------------------------------------------------------------- errors */

cudaError_t last_err = cudaSuccess;   /* returned and cleared by cudaGetLastError */
cudaError_t sticky_err = cudaSuccess; /* a fault: every later call fails */

void report(const char *fmt, va_list ap)
{
    fputs("bft CUDA emulator: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
}

/* Record error e (sticky when it is a fault) and explain it on stderr. */
cudaError_t fail(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cudaError_t fail(cudaError_t e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(fmt, ap);
    va_end(ap);
    if (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure) {
        if (sticky_err == cudaSuccess)
            sticky_err = e;
    }
    last_err = e;
    return e;
}

cudaError_t status(void)
{
    return sticky_err != cudaSuccess ? sticky_err : cudaSuccess;
}

/* ---------------------------------------------------------------- configuration */

size_t env_size(const char *name, size_t dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; break;
    case 'm': case 'M': v *= 1048576.0; break;
    case 'g': case 'G': v *= 1073741824.0; break;
    default: break;
    }
    return v < 0 ? 0 : (size_t)v;
}

size_t page_size(void)
{
    static size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    return ps;
}

size_t round_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* ---------------------------------------------------------------- device memory */

struct alloc {
    char *map;     /* the whole mapping: guard page, data pages, guard page */
    size_t map_len;
    char *data;    /* first data page */
    size_t data_len;
    size_t bytes;  /* as requested; the pointer handed out is data + data_len - round_up(bytes, 256) */
};

std::map<uintptr_t, alloc> allocs; /* by the pointer handed out */
size_t mem_used = 0;
int device_open = 0; /* device memory is readable (kernel, copy or GEMM in progress) */
std::recursive_mutex big_lock;
const char *running_kernel = NULL;

/* The allocation holding [p, p + len), or NULL. */
const alloc *find(const void *p, size_t len, uintptr_t *base)
{
    if (allocs.empty())
        return NULL;
    uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin())
        return NULL;
    --it;
    if (a < it->first || a + len > it->first + it->second.bytes || a + len < a)
        return NULL;
    if (base)
        *base = it->first;
    return &it->second;
}

/* The allocation whose mapping (guards included) holds address p, or NULL. */
const alloc *find_map(const void *p, uintptr_t *base)
{
    const char *c = (const char *)p;
    for (auto &kv : allocs)
        if (c >= kv.second.map && c < kv.second.map + kv.second.map_len) {
            if (base)
                *base = kv.first;
            return &kv.second;
        }
    return NULL;
}

/* The bytes between an allocation's end and its 256-byte rounding (the guard
 * page starts after the rounding) keep their poison unless a kernel wrote
 * past the end: checked after every kernel. 0 when one was overwritten. */
int check_slack(const char *kernel)
{
    int ok = 1;
    for (auto &kv : allocs) {
        const unsigned char *end = (const unsigned char *)kv.first + kv.second.bytes;
        const unsigned char *lim = (const unsigned char *)kv.second.data + kv.second.data_len;
        for (const unsigned char *q = end; q < lim; q++)
            if (*q != 0xff) {
                fail(cudaErrorIllegalAddress,
                     "kernel %s wrote %td bytes past the end of the allocation of %zu bytes at %p "
                     "(inside its 256-byte rounding: a GPU would not fault, but the bytes may "
                     "belong to another allocation)",
                     kernel, q - end + 1, kv.second.bytes, (void *)kv.first);
                ok = 0;
                break;
            }
    }
    return ok;
}

/* BFT_CUDA_EMU_PROTECT=0 leaves device memory readable by the host (faster:
 * two mprotect calls per allocation and device operation are saved; for long
 * runs such as quality comparisons, not for the tests). */
int protecting(void)
{
    static int p = -1;
    if (p < 0) {
        const char *s = getenv("BFT_CUDA_EMU_PROTECT");
        p = !(s && strcmp(s, "0") == 0);
    }
    return p;
}

void protect_all(int prot)
{
    if (!protecting())
        return;
    for (auto &kv : allocs)
        if (mprotect(kv.second.data, kv.second.data_len, prot) != 0) {
            perror("bft CUDA emulator: mprotect");
            abort(); /* test tool only: the emulator itself is broken */
        }
}

/* Device memory is accessible between open_device() and close_device(). */
struct device_scope {
    device_scope()
    {
        if (device_open++ == 0)
            protect_all(PROT_READ | PROT_WRITE);
    }
    ~device_scope()
    {
        if (--device_open == 0)
            protect_all(PROT_NONE);
    }
};

struct sigaction old_segv, old_bus;

void on_fault(int sig, siginfo_t *si, void *uctx)
{
    uintptr_t base = 0;
    const alloc *a = find_map(si->si_addr, &base);
    char msg[512];
    if (a) {
        const char *at = (const char *)si->si_addr;
        const char *what;
        if (at < a->data)
            what = "the guard page before";
        else if (at >= a->data + a->data_len)
            what = "the guard page after";
        else
            what = "inside";
        long long off = (long long)((uintptr_t)at - base);
        if (!device_open)
            snprintf(msg, sizeof msg,
                     "bft CUDA emulator: HOST code touched device memory at %p (%s the allocation "
                     "of %zu bytes at %#lx, offset %lld): device pointers may only be passed to "
                     "CUDA calls and kernels\n",
                     si->si_addr, what, a->bytes, (unsigned long)base, off);
        else
            snprintf(msg, sizeof msg,
                     "bft CUDA emulator: %s%s accessed %p, %s the allocation of %zu bytes at "
                     "%#lx (offset %lld): out of bounds\n",
                     running_kernel ? "kernel " : "a copy or GEMM", running_kernel ? running_kernel : "",
                     si->si_addr, what, a->bytes, (unsigned long)base, off);
    } else {
        snprintf(msg, sizeof msg, "bft CUDA emulator: fault at %p (not device memory)%s%s\n",
                 si->si_addr, running_kernel ? " in kernel " : "",
                 running_kernel ? running_kernel : "");
    }
    ssize_t w = write(2, msg, strlen(msg));
    (void)w;
    /* hand the fault on: the default action ends the process with a core */
    struct sigaction *old = sig == SIGSEGV ? &old_segv : &old_bus;
    if (old->sa_flags & SA_SIGINFO && old->sa_sigaction) {
        old->sa_sigaction(sig, si, uctx);
        return;
    }
    signal(sig, old->sa_handler == SIG_IGN ? SIG_DFL : old->sa_handler);
}

void install_fault_handler(void)
{
    static int done = 0;
    if (done)
        return;
    done = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
}

/* ---------------------------------------------------------------- the thread scheduler */

enum { T_RUN, T_BAR, T_WARP, T_DONE };
enum { B_PLAIN, B_OR, B_AND, B_COUNT };

struct thr {
    char *stack;
    ucontext_t uc;
    jmp_buf jb;
    int started;  /* the coroutine is parked in its loop (or mid-kernel) */
    int state;
    unsigned lin;
    dim3 idx;
    int bar_kind, pred, bar_result;
    unsigned mask;
    int mode, arg, width;
    size_t size;
    unsigned char in[16], out[16];
};

const size_t STACK = 256 * 1024;
std::vector<thr *> thrs;
jmp_buf sched_jb;
thr *cur = NULL;
void (*cur_body)(void *) = NULL;
void *cur_arg = NULL;
int block_error = 0;
unsigned long long rng_state = 1;
char *dyn_smem = NULL; /* 48 KiB + guard page; the block's buffer ends at the guard */
char *dyn_base = NULL;
size_t dyn_cap = 0;

void set_seed(unsigned long long seed)
{
    rng_state = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (!rng_state)
        rng_state = 1;
}

/* The schedule's seed: BFT_CUDA_EMU_SEED, read at the first launch. */
void seed_once(void)
{
    static int done = 0;
    if (done)
        return;
    done = 1;
    const char *s = getenv("BFT_CUDA_EMU_SEED");
    set_seed(s && *s ? strtoull(s, NULL, 10) : 1);
}

unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

/* Park the running coroutine and go back to the scheduler. */
void yield(void)
{
    thr *t = cur;
    if (!_setjmp(t->jb))
        _longjmp(sched_jb, 1);
}

void entry(void)
{
    for (;;) {
        cur_body(cur_arg);
        cur->state = T_DONE;
        yield();
    }
}

thr *get_thr(unsigned i)
{
    while (thrs.size() <= i) {
        thr *t = new thr();
        size_t ps = page_size();
        char *m = (char *)mmap(NULL, STACK + ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                               -1, 0);
        if (m == MAP_FAILED) {
            perror("bft CUDA emulator: stack");
            abort();
        }
        mprotect(m, ps, PROT_NONE); /* stack overflow guard */
        t->stack = m + ps;
        thrs.push_back(t);
    }
    return thrs[i];
}

/* Run (or resume) t until it parks. */
void resume(thr *t)
{
    cur = t;
    threadIdx = t->idx;
    if (!_setjmp(sched_jb)) {
        if (!t->started) {
            t->started = 1;
            getcontext(&t->uc);
            t->uc.uc_stack.ss_sp = t->stack;
            t->uc.uc_stack.ss_size = STACK;
            t->uc.uc_link = NULL;
            makecontext(&t->uc, entry, 0);
            setcontext(&t->uc);
        }
        _longjmp(t->jb, 1);
    }
    cur = NULL;
}

void block_fail(const char *kernel, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void block_fail(const char *kernel, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fail(cudaErrorLaunchFailure, "kernel %s, block (%u,%u,%u): %s", kernel, blockIdx.x, blockIdx.y,
         blockIdx.z, buf);
    block_error = 1;
}

extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

/* Warp w of a block of n threads: 1 when its lanes waiting in a shuffle or
 * __syncwarp could all be released (done: outputs exchanged, lanes runnable),
 * 0 when none waits, -1 when some wait for lanes that are not there (yet), -2
 * after a launch error (inconsistent shuffles). */
int release_warp(const char *kernel, unsigned w, unsigned n, int diagnose)
{
    unsigned lo = w * 32, hi = std::min(n, lo + 32), present = 0, waiting = 0;
    thr *first = NULL;
    for (unsigned i = lo; i < hi; i++) {
        present |= 1u << (i - lo);
        if (thrs[i]->state == T_WARP) {
            waiting |= 1u << (i - lo);
            if (!first)
                first = thrs[i];
        }
    }
    if (!waiting)
        return 0;
    unsigned mask = first->mask;
    for (unsigned i = lo; i < hi; i++) {
        thr *t = thrs[i];
        if (t->state != T_WARP)
            continue;
        if (t->mask != mask || t->size != first->size || t->mode != first->mode ||
            t->width != first->width) {
            block_fail(kernel, "warp %u: lanes %u and %u are in different shuffles or syncs "
                       "(masks %#x and %#x)", w, first->lin - lo, i - lo, first->mask, t->mask);
            return -2;
        }
        if (!(mask & (1u << (i - lo)))) {
            block_fail(kernel, "warp %u: lane %u takes part in a shuffle whose mask %#x does not "
                       "include it", w, i - lo, mask);
            return -2;
        }
    }
    if (mask & ~present) {
        block_fail(kernel, "warp %u: shuffle mask %#x names lanes that do not exist (block of %u "
                   "threads)", w, mask, n);
        return -2;
    }
    if (waiting != mask) {
        if (!diagnose)
            return -1;
        for (unsigned i = lo; i < hi; i++) {
            thr *t = thrs[i];
            if ((mask & (1u << (i - lo))) && t->state != T_WARP) {
                block_fail(kernel, "warp %u: lane %u %s while lanes %#x wait in a warp shuffle/sync "
                           "with mask %#x", w, i - lo,
                           t->state == T_DONE ? "has exited" : "waits at __syncthreads", waiting,
                           mask);
                return -2;
            }
        }
        return -1;
    }
    int width = first->width;
    for (unsigned i = lo; i < hi; i++) {
        thr *t = thrs[i];
        if (t->state != T_WARP)
            continue;
        int lane = (int)(i - lo), seg = lane / width * width, in = lane - seg, src;
        switch (t->mode) {
        case 0: src = in ^ t->arg; break;
        case 1: src = t->arg % width; break;
        case 2: src = in + t->arg < width ? in + t->arg : in; break;
        default: src = in - t->arg >= 0 ? in - t->arg : in; break;
        }
        src += seg;
        if (src < 0 || src >= (int)(hi - lo) || !(mask & (1u << src)))
            src = lane; /* not a participant: own value (undefined on a GPU) */
        if (t->size)
            memcpy(t->out, thrs[lo + (unsigned)src]->in, t->size);
    }
    for (unsigned i = lo; i < hi; i++)
        if (thrs[i]->state == T_WARP)
            thrs[i]->state = T_RUN;
    return 1;
}

/* Run one block of n threads; 0 when it failed (the coroutines of a failed
 * block are abandoned and restarted fresh).
 *
 * Schedule: between two block barriers the warps run one at a time, in a
 * shuffled order, each as far as it can go (through its shuffles) before the
 * next starts; within a warp the lanes run in a shuffled order between two
 * warp synchronisations. That is a legal GPU schedule and the most hostile
 * one for missing barriers: a warp can reach the next phase's writes before
 * another warp has started the current phase's reads. */
int run_block(const char *kernel, unsigned n)
{
    if (__start_emu_shared && __stop_emu_shared)
        memset(__start_emu_shared, 0xff, (size_t)(__stop_emu_shared - __start_emu_shared));
    if (dyn_smem)
        memset(dyn_smem, 0xff, (size_t)(dyn_base + dyn_cap - dyn_smem));
    unsigned nwarps = (n + 31) / 32;
    std::vector<unsigned> worder(nwarps), lorder(32);
    for (unsigned i = 0; i < n; i++) {
        thr *t = get_thr(i);
        t->state = T_RUN;
        t->lin = i;
        t->idx = dim3(i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y));
    }
    for (unsigned w = 0; w < nwarps; w++)
        worder[w] = w;
    for (;;) {
        for (unsigned i = nwarps; i > 1; i--)
            std::swap(worder[i - 1], worder[rnd(i)]);
        for (unsigned wi = 0; wi < nwarps; wi++) {
            unsigned w = worder[wi], lo = w * 32, hi = std::min(n, lo + 32);
            for (;;) {
                unsigned nl = hi - lo;
                for (unsigned i = 0; i < nl; i++)
                    lorder[i] = lo + i;
                for (unsigned i = nl; i > 1; i--)
                    std::swap(lorder[i - 1], lorder[rnd(i)]);
                for (unsigned i = 0; i < nl; i++) {
                    thr *t = thrs[lorder[i]];
                    if (t->state == T_RUN)
                        resume(t);
                }
                int r = release_warp(kernel, w, n, 0);
                if (r == -2)
                    return 0;
                if (r != 1)
                    break;
            }
        }
        int done = 0, bar = 0, kind = -1, count = 0, kinds_differ = 0;
        for (unsigned w = 0; w < nwarps; w++)
            if (release_warp(kernel, w, n, 1) != 0) {
                if (!block_error)
                    block_fail(kernel, "deadlock in warp %u", w);
                return 0;
            }
        for (unsigned i = 0; i < n; i++) {
            thr *t = thrs[i];
            if (t->state == T_DONE)
                done++;
            else if (t->state == T_BAR) {
                bar++;
                if (kind < 0)
                    kind = t->bar_kind;
                else if (kind != t->bar_kind)
                    kinds_differ = 1;
                count += t->pred != 0;
            }
        }
        if (done == (int)n)
            return 1;
        if (done) {
            block_fail(kernel, "%d of %u threads exited while the others wait at __syncthreads "
                       "(a barrier in divergent code)", done, n);
            return 0;
        }
        if (kinds_differ) {
            block_fail(kernel, "threads wait at different kinds of __syncthreads");
            return 0;
        }
        int r = kind == B_OR ? count > 0 : kind == B_AND ? count == (int)n : count;
        for (unsigned i = 0; i < n; i++) {
            thrs[i]->bar_result = r;
            thrs[i]->state = T_RUN;
        }
    }
}

void abandon_threads(void)
{
    for (thr *t : thrs)
        t->started = 0; /* restarted from entry() at their next use */
}

/* ---------------------------------------------------------------- cuBLAS */

struct emu_blas_t {
    int alive;
};

size_t dtype_size(cudaDataType_t t)
{
    return t == CUDA_R_32F ? 4 : 2;
}

float load(const void *p, cudaDataType_t t, size_t i)
{
    if (t == CUDA_R_32F)
        return ((const float *)p)[i];
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

/* Extent (elements) of an operand with rows x cols (column-major) and ld. */
size_t extent(int rows, int cols, int ld)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    return (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
}

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const void *alpha, const void *A, cudaDataType_t At, int lda,
                    long long sA, const void *B, cudaDataType_t Bt, int ldb, long long sB,
                    const void *beta, void *C, cudaDataType_t Ct, int ldc, long long sC,
                    int batch, cublasComputeType_t ct, const char *fn)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    if (!h || !((emu_blas_t *)h)->alive)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (status() != cudaSuccess)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) ||
        (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T)) {
        fprintf(stderr, "bft CUDA emulator: %s: invalid m=%d n=%d k=%d batch=%d or op\n", fn, m, n,
                k, batch);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
    int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
    const char *which = lda < std::max(1, arows) ? "lda" : ldb < std::max(1, brows) ? "ldb"
                        : ldc < std::max(1, m)    ? "ldc" : NULL;
    if (which) {
        fprintf(stderr, "bft CUDA emulator: %s: %s too small (m %d n %d k %d, op(A) %s, op(B) %s: "
                "lda %d needs >= %d, ldb %d >= %d, ldc %d >= %d)\n", fn, which, m, n, k,
                ta == CUBLAS_OP_N ? "N" : "T", tb == CUBLAS_OP_N ? "N" : "T", lda,
                std::max(1, arows), ldb, std::max(1, brows), ldc, std::max(1, m));
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    int types_ok = ct == CUBLAS_COMPUTE_32F && Ct == CUDA_R_32F && At == Bt &&
                   (At == CUDA_R_32F || At == CUDA_R_16BF);
    if (!types_ok) {
        fprintf(stderr, "bft CUDA emulator: %s: unsupported types A %d B %d C %d compute %d\n", fn,
                At, Bt, Ct, ct);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (!alpha || !beta || find(alpha, 4, NULL) || find(beta, 4, NULL)) {
        fprintf(stderr, "bft CUDA emulator: %s: alpha and beta must be host pointers (pointer "
                "mode host)\n", fn);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m == 0 || n == 0 || batch == 0)
        return CUBLAS_STATUS_SUCCESS;
    float al = *(const float *)alpha, be = *(const float *)beta;
    size_t ea = extent(arows, acols, lda), eb = extent(brows, bcols, ldb), ec = extent(m, n, ldc);
    size_t es = dtype_size(At);
    /* every operand's whole extent over the batch must be device memory */
    struct {
        const void *p;
        size_t ext, es;
        long long stride;
        const char *name;
        int needed;
    } ops[3] = {{A, ea, es, sA, "A", k > 0 && al != 0.0f},
                {B, eb, es, sB, "B", k > 0 && al != 0.0f},
                {C, ec, 4, sC, "C", 1}};
    for (auto &o : ops) {
        if (!o.needed)
            continue;
        for (int b = 0; b < batch; b++) {
            const char *p = (const char *)o.p + (long long)b * o.stride * (long long)o.es;
            if (!find(p, o.ext * o.es, NULL)) {
                fail(cudaErrorIllegalAddress,
                     "%s: operand %s of batch %d (%zu elements from %p) is not inside one device "
                     "allocation", fn, o.name, b, o.ext, (const void *)p);
                return CUBLAS_STATUS_EXECUTION_FAILED;
            }
        }
    }
    static int one_thread = 0;
    if (!one_thread) { /* idle OpenBLAS threads spin: one thread, as the engine's CPU side */
        openblas_set_num_threads(1);
        one_thread = 1;
    }
    device_scope open;
    std::vector<float> abuf, bbuf;
    for (int b = 0; b < batch; b++) {
        const char *Ab = (const char *)A + (long long)b * sA * (long long)es;
        const char *Bb = (const char *)B + (long long)b * sB * (long long)es;
        float *Cb = (float *)C + (long long)b * sC;
        if (k == 0 || al == 0.0f) { /* C = beta C; beta = 0 does not read C */
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                    float *c = Cb + (size_t)i + (size_t)j * ldc;
                    *c = be == 0.0f ? 0.0f : be * *c;
                }
            continue;
        }
        /* bf16 operands are exact in fp32, so their products are too: an fp32
         * GEMM of the widened operands is cuBLAS's bf16 GEMM with fp32
         * accumulation (up to the order of the sums) */
        const float *Af = (const float *)Ab, *Bf = (const float *)Bb;
        if (At == CUDA_R_16BF) {
            abuf.resize(ea);
            bbuf.resize(eb);
            for (size_t i = 0; i < ea; i++)
                abuf[i] = load(Ab, At, i);
            for (size_t i = 0; i < eb; i++)
                bbuf[i] = load(Bb, Bt, i);
            Af = abuf.data();
            Bf = bbuf.data();
        }
        cblas_sgemm(CBLAS_COL_MAJOR, ta == CUBLAS_OP_N ? CBLAS_NO_TRANS : CBLAS_TRANS,
                    tb == CUBLAS_OP_N ? CBLAS_NO_TRANS : CBLAS_TRANS, m, n, k, al, Af, lda, Bf, ldb,
                    be, Cb, ldc);
    }
    return CUBLAS_STATUS_SUCCESS;
}

} // namespace

/* ---------------------------------------------------------------- device side */

static thr *self(const char *what)
{
    if (!cur) {
        fprintf(stderr, "bft CUDA emulator: %s called outside a kernel\n", what);
        abort(); /* a bug in the emulated code that cannot happen on a GPU either */
    }
    return cur;
}

static int barrier(int kind, int pred)
{
    thr *t = self("__syncthreads");
    t->state = T_BAR;
    t->bar_kind = kind;
    t->pred = pred;
    yield();
    return t->bar_result;
}

void __syncthreads(void)
{
    (void)barrier(B_PLAIN, 0);
}

int __syncthreads_or(int pred)
{
    return barrier(B_OR, pred);
}

int __syncthreads_and(int pred)
{
    return barrier(B_AND, pred);
}

int __syncthreads_count(int pred)
{
    return barrier(B_COUNT, pred);
}

void emu_shfl(unsigned mask, const void *in, void *out, size_t size, int mode, int arg, int width)
{
    thr *t = self("a warp shuffle");
    if (size > sizeof t->in || width <= 0 || width > 32 || (width & (width - 1))) {
        fprintf(stderr, "bft CUDA emulator: unsupported shuffle (size %zu, width %d)\n", size, width);
        abort();
    }
    t->state = T_WARP;
    t->mask = mask;
    t->mode = mode;
    t->arg = arg;
    t->width = width;
    t->size = size;
    if (size)
        memcpy(t->in, in, size);
    yield();
    if (size)
        memcpy(out, t->out, size);
}

void __syncwarp(unsigned mask)
{
    emu_shfl(mask, NULL, NULL, 0, 0, 0, 32);
}

void *emu_dyn_smem(void)
{
    (void)self("dynamic shared memory");
    return dyn_smem;
}

int emu_device_ptr_ok(const void *p, const char *kernel, int argno)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    if (!p || find(p, 0, NULL) || find((const char *)p - 1, 1, NULL))
        return 1; /* NULL, inside, or one past the end of an allocation */
    fail(cudaErrorIllegalAddress, "kernel %s: argument %d (%p) is not a device pointer", kernel,
         argno, p);
    return 0;
}

void emu_run(const emu_cfg &c, const char *kernel, void (*body)(void *), void *arg)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    if (status() != cudaSuccess)
        return;
    unsigned nt = c.block.x * c.block.y * c.block.z;
    if (c.block.x == 0 || c.block.y == 0 || c.block.z == 0 || nt > 1024 || c.block.z > 64 ||
        c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 2147483647u ||
        c.grid.y > 65535 || c.grid.z > 65535 || c.smem > 48 * 1024) {
        fail(cudaErrorInvalidConfiguration,
             "kernel %s: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u) shared %zu",
             kernel, c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z, c.smem);
        return;
    }
    seed_once();
    if (!dyn_base) {
        size_t ps = page_size();
        dyn_cap = round_up(48 * 1024, ps);
        dyn_base = (char *)mmap(NULL, dyn_cap + ps, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (dyn_base == MAP_FAILED) {
            perror("bft CUDA emulator: shared memory");
            abort();
        }
        mprotect(dyn_base + dyn_cap, ps, PROT_NONE); /* overruns of dynamic shared memory fault */
    }
    dyn_smem = c.smem ? dyn_base + dyn_cap - round_up(c.smem, 16) : NULL;
    device_scope open;
    running_kernel = kernel;
    cur_body = body;
    cur_arg = arg;
    gridDim = c.grid;
    blockDim = c.block;
    block_error = 0;
    size_t nb = (size_t)c.grid.x * c.grid.y * c.grid.z;
    std::vector<size_t> border(nb);
    for (size_t i = 0; i < nb; i++)
        border[i] = i;
    for (size_t i = nb; i > 1; i--)
        std::swap(border[i - 1], border[rnd((unsigned)std::min<size_t>(i, 0xffffffffu))]);
    for (size_t bi = 0; bi < nb; bi++) {
        size_t b = border[bi];
        blockIdx = dim3((unsigned)(b % c.grid.x), (unsigned)(b / c.grid.x % c.grid.y),
                        (unsigned)(b / ((size_t)c.grid.x * c.grid.y)));
        if (!run_block(kernel, nt)) {
            abandon_threads();
            break;
        }
    }
    if (!block_error)
        check_slack(kernel);
    running_kernel = NULL;
    cur_body = NULL;
}

/* ---------------------------------------------------------------- test hook */

/* Bytes of device memory the process holds (as requested from cudaMalloc):
 * lets the tests check that the backend gives device memory back. */
extern "C" __attribute__((visibility("default"))) size_t bft_cuda_emu_bytes_in_use(void)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    size_t s = 0;
    for (auto &kv : allocs)
        s += kv.second.bytes;
    return s;
}

/* Restart the thread/block schedule from seed (tests: the same computation
 * under two schedules must give bitwise the same result). */
extern "C" __attribute__((visibility("default"))) void bft_cuda_emu_set_seed(unsigned long long seed)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    seed_once();
    set_seed(seed);
}

size_t h2d_bytes = 0;

/* Bytes copied from host to device so far (uploads). */
extern "C" __attribute__((visibility("default"))) size_t bft_cuda_emu_h2d_bytes(void)
{
    return h2d_bytes;
}

/* ---------------------------------------------------------------- runtime API */

static int device_count(void)
{
    const char *s = getenv("BFT_CUDA_EMU_DEVICES");
    return s && *s ? atoi(s) : 1;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    int n = device_count();
    *count = n > 0 ? n : 0;
    if (n <= 0)
        return last_err = cudaErrorNoDevice;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device)
{
    if (device < 0 || device >= device_count())
        return last_err = cudaErrorInvalidDevice;
    *value = attr == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= device_count())
        return last_err = cudaErrorInvalidDevice;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    if (device < 0 || device >= device_count())
        return last_err = cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "bft CUDA emulator (CPU)");
    prop->totalGlobalMem = env_size("BFT_CUDA_EMU_MEM", (size_t)16 << 30);
    prop->sharedMemPerBlock = 48 * 1024;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}

struct emu_stream {
    int alive;
};

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags)
{
    (void)flags;
    if (status() != cudaSuccess)
        return status();
    emu_stream *s = new emu_stream();
    s->alive = 1;
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (stream) {
        if (!stream->alive)
            return fail(cudaErrorInvalidValue, "cudaStreamDestroy of a destroyed stream");
        stream->alive = 0; /* not freed: a later use is detected */
    }
    return cudaSuccess;
}

static cudaError_t stream_ok(cudaStream_t stream, const char *fn)
{
    if (stream && !stream->alive)
        return fail(cudaErrorInvalidValue, "%s on a destroyed stream", fn);
    return status();
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    return stream_ok(stream, "cudaStreamSynchronize");
}

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    *ptr = NULL;
    if (status() != cudaSuccess)
        return status();
    if (bytes == 0)
        return cudaSuccess;
    size_t limit = env_size("BFT_CUDA_EMU_MEM", (size_t)16 << 30);
    size_t ps = page_size(), rounded = round_up(bytes, 256), data_len = round_up(rounded, ps);
    if (bytes > limit || mem_used + data_len > limit)
        return last_err = cudaErrorMemoryAllocation;
    install_fault_handler();
    size_t map_len = data_len + 2 * ps;
    char *m = (char *)mmap(NULL, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
    if (m == MAP_FAILED)
        return last_err = cudaErrorMemoryAllocation;
    alloc a;
    a.map = m;
    a.map_len = map_len;
    a.data = m + ps;
    a.data_len = data_len;
    a.bytes = bytes;
    if (mprotect(a.data, data_len, PROT_READ | PROT_WRITE) != 0) {
        munmap(m, map_len);
        return last_err = cudaErrorMemoryAllocation;
    }
    memset(a.data, 0xff, data_len); /* uninitialised device memory reads as NaN / -1 */
    if (!device_open && protecting())
        mprotect(a.data, data_len, PROT_NONE);
    char *p = a.data + data_len - rounded;
    allocs[(uintptr_t)p] = a;
    mem_used += data_len;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    if (!ptr)
        return cudaSuccess;
    auto it = allocs.find((uintptr_t)ptr);
    if (it == allocs.end())
        return fail(cudaErrorInvalidDevicePointer,
                    "cudaFree(%p): not the start of a live device allocation (double free?)", ptr);
    mem_used -= it->second.data_len;
    munmap(it->second.map, it->second.map_len);
    allocs.erase(it);
    return status();
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    size_t limit = env_size("BFT_CUDA_EMU_MEM", (size_t)16 << 30);
    *total_bytes = limit;
    *free_bytes = limit > mem_used ? limit - mem_used : 0;
    return status();
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    cudaError_t e = stream_ok(stream, "cudaMemcpyAsync");
    if (e != cudaSuccess || bytes == 0)
        return e;
    int dd = find(dst, bytes, NULL) != NULL, sd = find(src, bytes, NULL) != NULL;
    int want_dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    int want_sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault || kind == cudaMemcpyHostToHost) {
        want_dd = dd;
        want_sd = sd;
    }
    if (dd != want_dd || sd != want_sd || (!dd && find_map(dst, NULL)) || (!sd && find_map(src, NULL)))
        return fail(cudaErrorInvalidValue,
                    "cudaMemcpyAsync(%p <- %p, %zu bytes, kind %d): the %s %s", dst, src, bytes,
                    (int)kind, dd != want_dd || (!dd && find_map(dst, NULL)) ? "destination" : "source",
                    (dd != want_dd ? want_dd : want_sd)
                        ? "is not (wholly) inside one device allocation"
                        : "is device memory where host memory is expected");
    device_scope open;
    memmove(dst, src, bytes);
    if (dd && !sd)
        h2d_bytes += bytes;
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    cudaError_t e = stream_ok(stream, "cudaMemsetAsync");
    if (e != cudaSuccess || bytes == 0)
        return e;
    if (!find(dst, bytes, NULL))
        return fail(cudaErrorInvalidValue,
                    "cudaMemsetAsync(%p, %zu bytes): not inside one device allocation", dst, bytes);
    device_scope open;
    memset(dst, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = sticky_err != cudaSuccess ? sticky_err : last_err;
    last_err = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return sticky_err != cudaSuccess ? sticky_err : last_err;
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

/* ---------------------------------------------------------------- cuBLAS API */

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    if (status() != cudaSuccess)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    emu_blas_t *b = new emu_blas_t();
    b->alive = 1;
    *handle = (cublasHandle_t)b;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    if (!handle || !((emu_blas_t *)handle)->alive)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    ((emu_blas_t *)handle)->alive = 0;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    if (!handle || !((emu_blas_t *)handle)->alive)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    return stream && !stream->alive ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    if (!handle || !((emu_blas_t *)handle)->alive)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    /* only exact fp32 is emulated: TF32 modes would round differently on a GPU */
    return mode == CUBLAS_DEFAULT_MATH || mode == CUBLAS_PEDANTIC_MATH ? CUBLAS_STATUS_SUCCESS
                                                                       : CUBLAS_STATUS_NOT_SUPPORTED;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType_t Atype, int lda, const void *B,
                            cudaDataType_t Btype, int ldb, const void *beta, void *C,
                            cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo)
{
    (void)algo;
    return gemm(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta,
                C, Ctype, ldc, 0, 1, computeType, "cublasGemmEx");
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t Atype,
                                          int lda, long long strideA, const void *B,
                                          cudaDataType_t Btype, int ldb, long long strideB,
                                          const void *beta, void *C, cudaDataType_t Ctype,
                                          int ldc, long long strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t algo)
{
    (void)algo;
    return gemm(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb,
                strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType,
                "cublasGemmStridedBatchedEx");
}
