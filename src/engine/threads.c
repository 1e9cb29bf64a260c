/*
 * threads.c — lazily started worker pool (see threads.h).
 *
 * One job at a time: the caller publishes (fn, ctx, ranges) and bumps a
 * generation counter; workers spin briefly on it, then sleep on a condition
 * variable (so they do not steal the cores from BLAS while it runs), run their
 * range and count down `pending`. The caller runs range 0 itself.
 */
#include "threads.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_THREADS 64
#define SPIN_ITERS 4000

static struct {
    pthread_mutex_t job_mu;    /* held by the thread that owns the pool for a job */
    pthread_mutex_t mu;        /* protects the sleeping handshake */
    pthread_cond_t cv_work, cv_done;
    pthread_t th[MAX_THREADS];
    int nworkers;              /* started workers (pool size - 1) */
    int want;                  /* requested size (0: not set yet) */
    atomic_uint_fast64_t gen;
    atomic_int pending;
    atomic_int quit;
    bft_range_fn fn;
    void *ctx;
    int64_t n, chunk;
    int nparts;
} P = {
    .job_mu = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv_work = PTHREAD_COND_INITIALIZER,
    .cv_done = PTHREAD_COND_INITIALIZER,
};

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > MAX_THREADS)
        n = MAX_THREADS;
    return (int)n;
}

int bft_threads_count(void)
{
    int w = __atomic_load_n(&P.want, __ATOMIC_RELAXED);
    return w > 0 ? w : online_cpus();
}

static void run_part(int part)
{
    int64_t i0 = (int64_t)part * P.chunk, i1 = i0 + P.chunk;
    if (i1 > P.n)
        i1 = P.n;
    if (i0 < i1)
        P.fn(P.ctx, i0, i1, part);
}

static void *worker(void *arg)
{
    int tid = (int)(intptr_t)arg;
    uint_fast64_t seen = 0;
    for (;;) {
        uint_fast64_t g = atomic_load(&P.gen);
        for (int s = 0; s < SPIN_ITERS && g == seen && !atomic_load(&P.quit); s++) {
            CPU_RELAX();
            g = atomic_load(&P.gen);
        }
        if (g == seen) {
            pthread_mutex_lock(&P.mu);
            while ((g = atomic_load(&P.gen)) == seen && !atomic_load(&P.quit))
                pthread_cond_wait(&P.cv_work, &P.mu);
            pthread_mutex_unlock(&P.mu);
        }
        if (atomic_load(&P.quit))
            return NULL;
        seen = g;
        if (tid < P.nparts)
            run_part(tid);
        if (atomic_fetch_sub(&P.pending, 1) == 1) {
            pthread_mutex_lock(&P.mu);
            pthread_cond_signal(&P.cv_done);
            pthread_mutex_unlock(&P.mu);
        }
    }
}

/* Stop workers; job_mu held by the caller. */
static void stop_workers(void)
{
    if (P.nworkers == 0)
        return;
    pthread_mutex_lock(&P.mu);
    atomic_store(&P.quit, 1);
    pthread_cond_broadcast(&P.cv_work);
    pthread_mutex_unlock(&P.mu);
    for (int i = 0; i < P.nworkers; i++)
        pthread_join(P.th[i + 1], NULL);
    P.nworkers = 0;
    atomic_store(&P.quit, 0);
}

/* Start size-1 workers; job_mu held. Returns the number started. The workers
 * block every signal: the host's handlers (PostgreSQL's SIGINT/SIGTERM/latch
 * handlers) must only ever run on the host's own thread. */
static int start_workers(int size)
{
    pthread_attr_t attr;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    atomic_store(&P.gen, 0);
    for (int i = 1; i < size; i++) {
        if (pthread_create(&P.th[i], &attr, worker, (void *)(intptr_t)i) != 0)
            break;
        pthread_setname_np(P.th[i], "bft-worker");
        P.nworkers++;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return P.nworkers;
}

void bft_parallel_for(int64_t n, int64_t min_chunk, bft_range_fn fn, void *ctx)
{
    int size = bft_threads_count();
    int64_t parts, chunk;
    if (n <= 0)
        return;
    if (min_chunk < 1)
        min_chunk = 1;
    parts = n / min_chunk;
    if (parts > size)
        parts = size;
    if (parts < 1)
        parts = 1;
    chunk = (n + parts - 1) / parts;
    /* The split depends only on n, min_chunk and the pool size, never on whether
     * the pool is free: a caller that finds it busy (another host thread) runs the
     * same ranges itself, so results do not depend on what else is running. */
    if (parts == 1 || pthread_mutex_trylock(&P.job_mu) != 0) {
        for (int64_t p = 0; p < parts; p++) {
            int64_t i0 = p * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
            if (i0 < i1)
                fn(ctx, i0, i1, 0);
        }
        return;
    }
    if (P.nworkers != size - 1) {
        stop_workers();
        start_workers(size);
    }
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.chunk = chunk;
    /* workers run parts 1..nworkers; parts beyond that (workers that failed to
     * start) are run by the caller after its own part 0 */
    P.nparts = (int)(parts < P.nworkers + 1 ? parts : P.nworkers + 1);
    if (P.nworkers > 0) {
        atomic_store(&P.pending, P.nworkers);
        pthread_mutex_lock(&P.mu);
        atomic_fetch_add(&P.gen, 1);
        pthread_cond_broadcast(&P.cv_work);
        pthread_mutex_unlock(&P.mu);
    }

    run_part(0);
    for (int64_t p = P.nparts; p < parts; p++)
        run_part((int)p);

    for (int s = 0; s < SPIN_ITERS && atomic_load(&P.pending) > 0; s++)
        CPU_RELAX();
    if (atomic_load(&P.pending) > 0) {
        pthread_mutex_lock(&P.mu);
        while (atomic_load(&P.pending) > 0)
            pthread_cond_wait(&P.cv_done, &P.mu);
        pthread_mutex_unlock(&P.mu);
    }
    pthread_mutex_unlock(&P.job_mu);
}

void bft_threads_set(int n)
{
    if (n <= 0)
        n = online_cpus();
    if (n > MAX_THREADS)
        n = MAX_THREADS;
    __atomic_store_n(&P.want, n, __ATOMIC_RELAXED);
}

void bft_threads_shutdown(void)
{
    pthread_mutex_lock(&P.job_mu);
    stop_workers();
    pthread_mutex_unlock(&P.job_mu);
}
