/*
 * threads.h — the engine's small worker pool for its non-GEMM loops (and the
 * GEMM splits in ops_cpu.c).
 *
 * Nothing is started at library load (bft.so is loaded in the postmaster):
 * the workers are created on the first parallel call. Workers only run engine
 * code; they never call back into the host, and they block every signal (the
 * host's handlers run on its own thread only). The pool is process-wide; when
 * two threads of the host use the engine at once, the one that finds the pool
 * busy runs the same ranges one after the other on its own thread, so results
 * never depend on what else is running.
 */
#ifndef BFT_THREADS_H
#define BFT_THREADS_H

#include <stdint.h>

/* Work over [i0, i1) on thread tid (0 = caller, < bft_threads_count()). */
typedef void (*bft_range_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

/* Split [0, n) into at most bft_threads_count() contiguous ranges of at least
 * min_chunk items and run fn over each, the caller taking the first range.
 * Returns when every range is done. The ranges depend only on n, min_chunk and
 * the pool size (a caller finding the pool busy runs the same ranges itself). */
void bft_parallel_for(int64_t n, int64_t min_chunk, bft_range_fn fn, void *ctx);

/* Number of threads parallel loops use (the pool's size, caller included). */
int bft_threads_count(void);

/* Set the pool size for later calls (<= 0: number of online CPUs, capped at 64).
 * A running pool of another size is stopped and restarted lazily. */
void bft_threads_set(int n);

/* Stop the workers (they are restarted lazily); for tests and shutdown. */
void bft_threads_shutdown(void);

#endif
