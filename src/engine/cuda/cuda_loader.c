/*
 * cuda_loader.c — the engine's side of the CUDA backend (ops_cuda.h): it finds
 * and dlopen()s bft_cuda.so at the first CUDA request and forwards the control
 * calls to it, so that bft.so and bft-cli never link cudart/cuBLAS themselves
 * (no load-time cost without a GPU, nothing CUDA in the postmaster).
 *
 * Search order: $BFT_CUDA_MODULE (a path), then bft_cuda.so next to the object
 * holding this code (bft.so in $libdir, or the executable) and one directory up
 * (test binaries in BUILD/tests/). A bft_cuda.so of another build (ABI or
 * bft_backend size differ) is refused.
 *
 * In a build without CUDA (USE_CUDA=0; the Makefile defines BFT_WITH_CUDA for
 * this file only in CUDA builds) every call reports "bft was built without CUDA".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ops_cuda.h"

#include <stdio.h>
#include <string.h>

#include "backend.h"

#ifdef BFT_WITH_CUDA

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

/*
 * The CUDA runtime and driver start threads of their own when they are
 * loaded and when a context is created; a thread inherits its creator's
 * signal mask. Every signal is blocked around those calls, so that the host's
 * handlers (PostgreSQL's SIGINT for cancel, SIGALRM for statement_timeout,
 * SIGTERM, SIGUSR1 for latches and procsignals, ...) only ever run on the
 * host's own thread, as with the engine's worker threads (threads.c).
 */
static void block_signals(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, old);
}

static void restore_signals(const sigset_t *old)
{
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const bft_cuda_api *api;
static char load_error[sizeof(((bft_error *)0)->msg)];

/* Try one candidate path; 1 when the module is loaded. */
static int try_load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        /* keep the first message that is not a plain "not found" */
        if (!load_error[0] || strstr(load_error, "No such file"))
            snprintf(load_error, sizeof load_error, "%s", e ? e : path);
        return 0;
    }
    const bft_cuda_api *(*entry)(void) = (const bft_cuda_api *(*)(void))dlsym(h, "bft_cuda_module");
    const bft_cuda_api *a = entry ? entry() : NULL;
    if (!a || a->abi != BFT_CUDA_ABI || a->backend_size != sizeof(bft_backend)) {
        snprintf(load_error, sizeof load_error,
                 "%s is from another build of bft (module interface mismatch)", path);
        dlclose(h);
        return 0;
    }
    api = a; /* the handle stays open for the life of the process */
    return 1;
}

/* Try DIR/bft_cuda.so and DIR/../bft_cuda.so for the directory of file. */
static int try_beside(const char *file)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    if (!file || !strchr(file, '/'))
        return 0;
    snprintf(dir, sizeof dir, "%s", file);
    *strrchr(dir, '/') = '\0';
    snprintf(path, sizeof path, "%s/bft_cuda.so", dir);
    if (try_load(path))
        return 1;
    snprintf(path, sizeof path, "%s/../bft_cuda.so", dir);
    return try_load(path);
}

static void load(void)
{
    const char *env = getenv("BFT_CUDA_MODULE");
    Dl_info info;
    char exe[PATH_MAX];
    ssize_t n;
    if (env && env[0] && try_load(env))
        return;
    if (dladdr((void *)&load, &info) && try_beside(info.dli_fname))
        return;
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        if (try_beside(exe))
            return;
    }
    if (!load_error[0])
        snprintf(load_error, sizeof load_error, "bft_cuda.so not found");
}

static const bft_cuda_api *module(bft_error *err)
{
    sigset_t old;
    block_signals(&old);
    pthread_once(&load_once, load);
    restore_signals(&old);
    if (!api)
        bft_set_error(err, BFT_EDEVICE,
                      "no CUDA device: bft's CUDA module could not be loaded (%s); it is built with "
                      "USE_CUDA=1 and installed next to bft.so / bft-cli, and needs cudart and "
                      "cuBLAS 13",
                      load_error);
    return api;
}

int bft_cuda_built(void)
{
    return 1;
}

int bft_cuda_available(bft_error *err)
{
    const bft_cuda_api *a = module(err);
    sigset_t old;
    int r;
    if (!a)
        return 0;
    block_signals(&old);   /* cuInit and the first context start the driver's threads */
    r = a->available(err);
    restore_signals(&old);
    return r;
}

int bft_cuda_init(int index, int precision, bft_error *err)
{
    const bft_cuda_api *a = module(err);
    sigset_t old;
    int r;
    if (!a)
        return BFT_EDEVICE;
    block_signals(&old);
    r = a->init(index, precision, err);
    restore_signals(&old);
    return r;
}

int bft_cuda_check(bft_error *err)
{
    if (!api) {
        bft_clear_error(err);
        return BFT_OK;
    }
    return api->check(err);
}

void bft_cuda_release(void)
{
    if (api)
        api->release();
}

const char *bft_cuda_device_name(void)
{
    return api ? api->device_name() : "";
}

const bft_backend *bft_cuda_backend(void)
{
    const bft_cuda_api *a = module(NULL);
    return a ? a->backend : NULL;
}

#else /* no CUDA in this build */

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

#endif
