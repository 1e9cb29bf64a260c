/*
 * ops_dnnl.c — the CPU backend's bf16 mode through oneDNN (see ops_dnnl.h).
 *
 * Loading: libdnnl.so.2 (or $BFT_DNNL_LIBRARY, a path or name of another
 * oneDNN 2.x build) is dlopen()ed (RTLD_LOCAL) at the first request with
 * OMP_NUM_THREADS=1 in the environment, and every thread that calls it sets
 * its OpenMP thread count to 1 as well, so Debian's OpenMP build of oneDNN
 * never starts a thread: the engine's pool splits each product into one block
 * per thread (like ops_cpu.c's OpenBLAS GEMMs) and each block is one
 * single-threaded oneDNN matmul. Results depend only on the thread count.
 *
 * Primitives: one matmul per (shape, strides, alpha, beta, bias), created on
 * the calling thread and kept in a small LRU cache (batches are padded to
 * their own length, so shapes repeat); scratchpads are per thread (user
 * mode), streams per thread.
 *
 * Errors: the ops return nothing; the first failure (oneDNN status, memory)
 * is kept as a sticky error that check() reports and clears, as the CUDA
 * backend does, and the ops after it do nothing until then.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ops_dnnl.h"
#include "train.h"

#include <stdio.h>
#include <string.h>

#ifdef BFT_WITH_DNNL

#include <dlfcn.h>
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>

#include "bf16.h"
#include "ops_cpu.h"
#include "resource.h"
#include "threads.h"

/* The elementwise loops (conversions, quantisation, dequantisation) are
 * compiled for AVX-512, AVX2 and the baseline and picked at run time, like
 * ops_cpu.c's (see BFT_HOT there). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX512F__) && \
    !defined(BFT_NO_CLONES)
#define BFT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BFT_HOT
#endif

/* ---------------------------------------------------------------- loading */

#define DNNL_FNS(X)                                                                                \
    X(dnnl_version)                                                                                \
    X(dnnl_get_effective_cpu_isa)                                                                  \
    X(dnnl_status2str)                                                                             \
    X(dnnl_engine_create)                                                                          \
    X(dnnl_stream_create)                                                                          \
    X(dnnl_stream_destroy)                                                                         \
    X(dnnl_stream_wait)                                                                            \
    X(dnnl_memory_desc_init_by_strides)                                                            \
    X(dnnl_memory_desc_get_size)                                                                   \
    X(dnnl_memory_create)                                                                          \
    X(dnnl_memory_destroy)                                                                         \
    X(dnnl_matmul_desc_init)                                                                       \
    X(dnnl_primitive_attr_create)                                                                  \
    X(dnnl_primitive_attr_destroy)                                                                 \
    X(dnnl_primitive_attr_set_scratchpad_mode)                                                     \
    X(dnnl_primitive_attr_set_output_scales)                                                       \
    X(dnnl_primitive_attr_set_post_ops)                                                            \
    X(dnnl_post_ops_create)                                                                        \
    X(dnnl_post_ops_destroy)                                                                       \
    X(dnnl_post_ops_append_sum)                                                                    \
    X(dnnl_primitive_desc_create)                                                                  \
    X(dnnl_primitive_desc_destroy)                                                                 \
    X(dnnl_primitive_desc_query)                                                                   \
    X(dnnl_primitive_desc_query_md)                                                                \
    X(dnnl_primitive_create)                                                                       \
    X(dnnl_primitive_destroy)                                                                      \
    X(dnnl_primitive_execute)

static struct {
#define X(f) __typeof__(&f) f;
    DNNL_FNS(X)
#undef X
    void (*omp_set_num_threads)(int);
} D;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int loaded;
static char load_error[256];
static dnnl_engine_t engine;
static pthread_key_t tkey;

/* oneDNN's name of an ISA (dnnl_cpu_isa_t), as ONEDNN_MAX_CPU_ISA spells it. */
static const char *isa_name(int isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "SSE41";
    case dnnl_cpu_isa_avx: return "AVX";
    case dnnl_cpu_isa_avx2: return "AVX2";
    case dnnl_cpu_isa_avx2_vnni: return "AVX2_VNNI";
    case dnnl_cpu_isa_avx512_mic: return "AVX512_MIC";
    case dnnl_cpu_isa_avx512_mic_4ops: return "AVX512_MIC_4OPS";
    case dnnl_cpu_isa_avx512_core: return "AVX512_CORE";
    case dnnl_cpu_isa_avx512_core_vnni: return "AVX512_CORE_VNNI";
    case dnnl_cpu_isa_avx512_core_bf16: return "AVX512_CORE_BF16";
    case dnnl_cpu_isa_avx512_core_amx: return "AVX512_CORE_AMX";
    default: return "no vector ISA";
    }
}

typedef struct tstate {
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_cap;
} tstate;

static void tstate_free(void *p)
{
    tstate *t = p;
    if (t->stream)
        D.dnnl_stream_destroy(t->stream);
    free(t->scratch);
    free(t);
}

static void load(void)
{
    const char *prev = getenv("OMP_NUM_THREADS");
    char *saved = prev ? strdup(prev) : NULL;
    void *h;

    const char *lib = getenv("BFT_DNNL_LIBRARY");
    if (!lib || !lib[0])
        lib = "libdnnl.so.2";
    setenv("OMP_NUM_THREADS", "1", 1);
    h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (saved) {
        setenv("OMP_NUM_THREADS", saved, 1);
        free(saved);
    } else {
        unsetenv("OMP_NUM_THREADS");
    }
    if (!h) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error, "cannot load oneDNN (%s): %s; install libdnnl2",
                 lib, e ? e : "not found");
        return;
    }
#define X(f)                                                                                       \
    if (!(D.f = (__typeof__(D.f))dlsym(h, #f))) {                                                  \
        snprintf(load_error, sizeof load_error,                                                    \
                 "libdnnl.so.2 has no " #f ": bft needs oneDNN 2.x (Debian's libdnnl2)");          \
        return;                                                                                    \
    }
    DNNL_FNS(X)
#undef X
    D.omp_set_num_threads = (void (*)(int))dlsym(h, "omp_set_num_threads");
    const dnnl_version_t *v = D.dnnl_version();
    if (!v || v->major != 2) {
        snprintf(load_error, sizeof load_error, "oneDNN %d.%d is not supported: bft needs 2.x",
                 v ? v->major : 0, v ? v->minor : 0);
        return;
    }
    dnnl_status_t s = D.dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (s != dnnl_success) {
        snprintf(load_error, sizeof load_error, "oneDNN: no CPU engine (%s)",
                 D.dnnl_status2str(s));
        return;
    }
    if (pthread_key_create(&tkey, tstate_free) != 0) {
        snprintf(load_error, sizeof load_error, "oneDNN: no thread-local key");
        return;
    }
    loaded = 1;
}

int bft_dnnl_available(int what, bft_error *err)
{
    bft_clear_error(err);
    pthread_once(&load_once, load);
    if (!loaded)
        return bft_set_error(err, BFT_EUNSUPPORTED, "%s on the CPU: %s",
                             what == BFT_DNNL_INT8 ? "int8" : "bf16", load_error);
    int isa = (int)D.dnnl_get_effective_cpu_isa();
    const char *lim = getenv("ONEDNN_MAX_CPU_ISA");
    if (!lim)
        lim = getenv("DNNL_MAX_CPU_ISA");
#define HAS(x) ((isa & (x)) == (x))
    if (what == BFT_DNNL_BF16 && !HAS(dnnl_cpu_isa_avx512_core_bf16))
        return bft_set_error(err, BFT_EUNSUPPORTED,
                             "bf16 on the CPU needs the AVX512-BF16 or AMX instructions: oneDNN "
                             "can use at most %s here%s%s%s",
                             isa_name(isa), lim ? " (limited by ONEDNN_MAX_CPU_ISA=" : "",
                             lim ? lim : "", lim ? ")" : "");
    if (what == BFT_DNNL_INT8 && !HAS(dnnl_cpu_isa_avx512_core_vnni) &&
        !HAS(dnnl_cpu_isa_avx2_vnni))
        return bft_set_error(err, BFT_EUNSUPPORTED,
                             "int8 on the CPU needs the AVX512-VNNI, AVX-VNNI or AMX instructions: "
                             "oneDNN can use at most %s here%s%s%s",
                             isa_name(isa), lim ? " (limited by ONEDNN_MAX_CPU_ISA=" : "",
                             lim ? lim : "", lim ? ")" : "");
#undef HAS
    return BFT_OK;
}

/* The calling thread's stream and scratchpad (its OpenMP thread count set to
 * 1 on first use); NULL when they cannot be created. */
static tstate *thread_state(void)
{
    tstate *t = pthread_getspecific(tkey);
    if (t)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (D.omp_set_num_threads)
        D.omp_set_num_threads(1);
    if (D.dnnl_stream_create(&t->stream, engine, dnnl_stream_default_flags) != dnnl_success ||
        pthread_setspecific(tkey, t) != 0) {
        tstate_free(t);
        return NULL;
    }
    return t;
}

/* ---------------------------------------------------------------- sticky error */

static pthread_mutex_t err_mu = PTHREAD_MUTEX_INITIALIZER;
static int err_code; /* BFT_OK or the first failure since the last check */
static char err_msg[sizeof(((bft_error *)0)->msg)];

static void fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(int code, const char *fmt, ...)
{
    pthread_mutex_lock(&err_mu);
    if (err_code == BFT_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err_msg, sizeof err_msg, fmt, ap);
        va_end(ap);
        err_code = code;
    }
    pthread_mutex_unlock(&err_mu);
}

static int failed(void)
{
    return __atomic_load_n(&err_code, __ATOMIC_RELAXED) != BFT_OK;
}

static int be_check(bft_error *err)
{
    int rc;
    pthread_mutex_lock(&err_mu);
    rc = err_code;
    if (rc != BFT_OK)
        bft_set_error(err, rc, "%s", err_msg);
    else
        bft_clear_error(err);
    err_code = BFT_OK;
    err_msg[0] = '\0';
    pthread_mutex_unlock(&err_mu);
    return rc;
}

/* ---------------------------------------------------------------- implementations seen */

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER; /* impls and the matmul cache */
static char impls[256];

/* Remember a primitive's implementation name for bft_dnnl_info (cache mutex held). */
static void note_impl(const char *name)
{
    if (!name || !name[0] || strstr(impls, name))
        return;
    size_t n = strlen(impls);
    snprintf(impls + n, sizeof impls - n, "%s%s", n ? ", " : "", name);
}

const char *bft_dnnl_info(void)
{
    static char buf[384];
    if (!loaded)
        return "";
    const dnnl_version_t *v = D.dnnl_version();
    pthread_mutex_lock(&cache_mu);
    snprintf(buf, sizeof buf, "oneDNN %d.%d.%d (%s)%s%s", v->major, v->minor, v->patch,
             isa_name((int)D.dnnl_get_effective_cpu_isa()), impls[0] ? ": " : "", impls);
    pthread_mutex_unlock(&cache_mu);
    return buf;
}

/* ---------------------------------------------------------------- matmul primitives */

/* One product C (M,N) = alpha op(A) op(B) (+ bias) + beta C: op(A)(m,k) at
 * A[m*sa0 + k*sa1], op(B)(k,n) at B[k*sb0 + n*sb1], C row-major with ldc. */
typedef struct mm_key {
    int64_t M, N, K, sa0, sa1, sb0, sb1, ldc;
    float alpha, beta;
    int bias;
    int int8; /* 0: bf16 x bf16 -> f32; 1: u8 x s8 -> s32 (no alpha, beta, bias) */
} mm_key;

typedef struct mm_entry {
    mm_key k;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t a, b, c, bias, scratch;
    size_t scratch_bytes;
    uint64_t used; /* LRU clock; 0: free slot */
    int busy;      /* executions in flight */
} mm_entry;

#define MM_CACHE 256

static mm_entry cache[MM_CACHE];
static uint64_t cache_clock;

static int create_matmul(mm_entry *e, const mm_key *k)
{
    dnnl_dims_t da = {k->M, k->K}, db = {k->K, k->N}, dc = {k->M, k->N}, dbias = {1, k->N};
    dnnl_dims_t sa = {k->sa0, k->sa1}, sb = {k->sb0, k->sb1}, sc = {k->ldc, 1}, sbias = {k->N, 1};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s;
    const char *what = "memory descriptors";

    memset(e, 0, sizeof *e);
    e->k = *k;
    dnnl_data_type_t ta = k->int8 ? dnnl_u8 : dnnl_bf16, tb = k->int8 ? dnnl_s8 : dnnl_bf16;
    dnnl_data_type_t tc = k->int8 ? dnnl_s32 : dnnl_f32;
    if ((s = D.dnnl_memory_desc_init_by_strides(&e->a, 2, da, ta, sa)) != dnnl_success ||
        (s = D.dnnl_memory_desc_init_by_strides(&e->b, 2, db, tb, sb)) != dnnl_success ||
        (s = D.dnnl_memory_desc_init_by_strides(&e->c, 2, dc, tc, sc)) != dnnl_success ||
        (s = D.dnnl_memory_desc_init_by_strides(&e->bias, 2, dbias, dnnl_f32, sbias)) !=
            dnnl_success)
        goto out;
    what = "matmul descriptor";
    if ((s = D.dnnl_matmul_desc_init(&md, &e->a, &e->b, k->bias ? &e->bias : NULL, &e->c)) !=
        dnnl_success)
        goto out;
    what = "attributes";
    if ((s = D.dnnl_primitive_attr_create(&attr)) != dnnl_success ||
        (s = D.dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)) !=
            dnnl_success)
        goto out;
    if (k->alpha != 1.0f &&
        (s = D.dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha)) != dnnl_success)
        goto out;
    if (k->beta != 0.0f) {
        if ((s = D.dnnl_post_ops_create(&po)) != dnnl_success ||
            (s = D.dnnl_post_ops_append_sum(po, k->beta)) != dnnl_success ||
            (s = D.dnnl_primitive_attr_set_post_ops(attr, po)) != dnnl_success)
            goto out;
    }
    what = "primitive descriptor";
    if ((s = D.dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL)) != dnnl_success)
        goto out;
    what = "primitive";
    if ((s = D.dnnl_primitive_create(&e->prim, pd)) != dnnl_success)
        goto out;
    e->scratch = *D.dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch_bytes = D.dnnl_memory_desc_get_size(&e->scratch);
    {
        const char *impl = NULL;
        if (D.dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success)
            note_impl(impl);
    }
out:
    if (pd)
        D.dnnl_primitive_desc_destroy(pd);
    if (po)
        D.dnnl_post_ops_destroy(po);
    if (attr)
        D.dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        fail(BFT_EDEVICE, "oneDNN: cannot create the %s matmul %lldx%lldx%lld (%s: %s)",
             k->int8 ? "int8" : "bf16", (long long)k->M, (long long)k->N, (long long)k->K, what,
             D.dnnl_status2str(s));
        e->prim = NULL;
        return -1;
    }
    return 0;
}

/* The cached primitive of k (created when missing), marked busy; NULL after a failure. */
static mm_entry *mm_acquire(const mm_key *k)
{
    mm_entry *hit = NULL, *victim = NULL;
    pthread_mutex_lock(&cache_mu);
    for (int i = 0; i < MM_CACHE; i++) {
        mm_entry *e = &cache[i];
        if (e->used && memcmp(&e->k, k, sizeof *k) == 0) {
            hit = e;
            break;
        }
        if (!e->busy && (!victim || e->used < victim->used))
            victim = e;
    }
    if (!hit && victim) {
        if (victim->prim)
            D.dnnl_primitive_destroy(victim->prim);
        if (create_matmul(victim, k) == 0)
            hit = victim;
        else
            memset(victim, 0, sizeof *victim);
    }
    if (hit) {
        hit->used = ++cache_clock;
        hit->busy++;
    }
    pthread_mutex_unlock(&cache_mu);
    if (!hit && !victim)
        fail(BFT_EDEVICE, "oneDNN: every cached matmul is in use");
    return hit;
}

static void mm_release(mm_entry *e)
{
    pthread_mutex_lock(&cache_mu);
    e->busy--;
    pthread_mutex_unlock(&cache_mu);
}

/* Run e on the calling thread over A, B, C (and bias) of e's types. */
static void mm_exec(mm_entry *e, const void *A, const void *B, void *C, const float *bias)
{
    tstate *t = thread_state();
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, mbias = NULL, ms = NULL;
    dnnl_exec_arg_t args[5];
    int n = 0;
    dnnl_status_t s;

    if (!t) {
        fail(BFT_ENOMEM, "oneDNN: cannot create a stream for a thread");
        return;
    }
    if (e->scratch_bytes > t->scratch_cap) {
        void *p = aligned_alloc(64, (e->scratch_bytes + 63) / 64 * 64);
        if (!p) {
            fail(BFT_ENOMEM, "out of memory for a oneDNN scratchpad (%zu bytes)",
                 e->scratch_bytes);
            return;
        }
        free(t->scratch);
        t->scratch = p;
        t->scratch_cap = e->scratch_bytes;
    }
    if ((s = D.dnnl_memory_create(&ma, &e->a, engine, (void *)A)) != dnnl_success ||
        (s = D.dnnl_memory_create(&mb, &e->b, engine, (void *)B)) != dnnl_success ||
        (s = D.dnnl_memory_create(&mc, &e->c, engine, C)) != dnnl_success ||
        (bias && (s = D.dnnl_memory_create(&mbias, &e->bias, engine, (void *)bias)) !=
                     dnnl_success) ||
        (e->scratch_bytes &&
         (s = D.dnnl_memory_create(&ms, &e->scratch, engine, t->scratch)) != dnnl_success))
        goto out;
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, ma};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mb};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, mc};
    if (mbias)
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mbias};
    if (ms)
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, ms};
    if ((s = D.dnnl_primitive_execute(e->prim, t->stream, n, args)) == dnnl_success)
        s = D.dnnl_stream_wait(t->stream);
out:
    if (s != dnnl_success)
        fail(BFT_EDEVICE, "oneDNN: %s matmul %lldx%lldx%lld failed (%s)",
             e->k.int8 ? "int8" : "bf16", (long long)e->k.M, (long long)e->k.N, (long long)e->k.K,
             D.dnnl_status2str(s));
    if (ma)
        D.dnnl_memory_destroy(ma);
    if (mb)
        D.dnnl_memory_destroy(mb);
    if (mc)
        D.dnnl_memory_destroy(mc);
    if (mbias)
        D.dnnl_memory_destroy(mbias);
    if (ms)
        D.dnnl_memory_destroy(ms);
}

/* ---------------------------------------------------------------- GEMMs over the pool */

#define MAX_PARTS 64

/* int8: C (int32 accumulators in place) becomes
 * C[i][o] = sx[i] sw[o] (acc[i][o] - zp[i] wsum[o]) + bias[o]. */
typedef struct int8_epilogue {
    const float *sx;      /* (M) activation scales (per row) */
    const int32_t *zp;    /* (M) activation zero points */
    const float *sw;      /* (N) weight scales (per output channel) */
    const int32_t *wsum;  /* (N) sums of each output channel's int8 weights */
} int8_epilogue;

typedef struct {
    const char *A, *B; /* element size es_a, es_b */
    float *C;
    const float *bias;
    int64_t sa0, sb1, ldc, M, N, es_a, es_b;
    int split_n;
    const int8_epilogue *q;
    int64_t off[MAX_PARTS + 1]; /* part p covers rows or columns [off[p], off[p+1]) */
    mm_entry *e[MAX_PARTS];
} bgemm_job;

BFT_HOT static void epilogue(const bgemm_job *j, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    const int8_epilogue *q = j->q;
    for (int64_t i = r0; i < r1; i++) {
        float *row = j->C + i * j->ldc;
        float sx = q->sx[i];
        int32_t zp = q->zp[i];
        for (int64_t o = c0; o < c1; o++) {
            int32_t acc;
            memcpy(&acc, row + o, sizeof acc);
            row[o] = sx * q->sw[o] * (float)(acc - zp * q->wsum[o]) + (j->bias ? j->bias[o] : 0.0f);
        }
    }
}

static void bgemm_part(void *ctx, int64_t p0, int64_t p1, int tid)
{
    bgemm_job *j = ctx;
    (void)tid;
    for (int64_t p = p0; p < p1; p++) {
        int64_t o = j->off[p], o1 = j->off[p + 1];
        const float *bias = j->q ? NULL : j->bias; /* int8: added by the epilogue */
        if (j->split_n)
            mm_exec(j->e[p], j->A, j->B + o * j->sb1 * j->es_b, j->C + o, bias ? bias + o : NULL);
        else
            mm_exec(j->e[p], j->A + o * j->sa0 * j->es_a, j->B, j->C + o * j->ldc, bias);
        if (j->q && !failed()) {
            if (j->split_n)
                epilogue(j, 0, j->M, o, o1);
            else
                epilogue(j, o, o1, 0, j->N);
        }
    }
}

/* C (M,N) = alpha op(A) op(B) (+ bias (N)) + beta C over bf16 operands with the
 * element strides of mm_key, fp32 accumulation, split over the pool; or with q:
 * u8 A, s8 B, int32 accumulation and q's dequantisation (alpha 1, beta 0). */
static void bgemm(int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t sa0,
                  int64_t sa1, const void *B, int64_t sb0, int64_t sb1, const float *bias,
                  float beta, float *C, int64_t ldc, const int8_epilogue *q)
{
    if (M <= 0 || N <= 0 || failed())
        return;
    if (K <= 0) { /* no product: C = beta C (+ bias), as cblas does */
        for (int64_t i = 0; i < M; i++)
            for (int64_t c = 0; c < N; c++) {
                float *y = C + i * ldc + c;
                *y = (beta != 0.0f ? beta * *y : 0.0f) + (bias ? bias[c] : 0.0f);
            }
        return;
    }
    bgemm_job j;
    int nt = bft_threads_count();
    double flops = 2.0 * (double)M * (double)N * (double)K;
    /* split into equal blocks of whole units, at most one per thread (small
     * products: one block): rows when there are enough of them, since a block
     * of rows of C is dense (oneDNN 2.6's brgemm kernels need a dense
     * destination; column blocks of C run on its slower gemm:jit), else
     * columns */
    int parts = nt > MAX_PARTS ? MAX_PARTS : nt;
    j.split_n = M < 32 * (int64_t)parts && N > M;
    int64_t dim = j.split_n ? N : M, unit = j.split_n ? 64 : 32;
    int64_t units = (dim + unit - 1) / unit;
    if (flops < 4e6)
        parts = 1;
    if (parts > units)
        parts = (int)units;
    int64_t per = (units + parts - 1) / parts;
    parts = (int)((units + per - 1) / per);
    j.A = A;
    j.B = B;
    j.C = C;
    j.bias = bias;
    j.sa0 = sa0;
    j.sb1 = sb1;
    j.ldc = ldc;
    j.M = M;
    j.N = N;
    j.es_a = q ? 1 : 2;
    j.es_b = q ? 1 : 2;
    j.q = q;
    int ok = 1;
    for (int p = 0; p < parts; p++) {
        j.off[p] = (int64_t)p * per * unit;
        j.off[p + 1] = (int64_t)(p + 1) * per * unit < dim ? (int64_t)(p + 1) * per * unit : dim;
        mm_key k;
        memset(&k, 0, sizeof k);
        k.M = j.split_n ? M : j.off[p + 1] - j.off[p];
        k.N = j.split_n ? j.off[p + 1] - j.off[p] : N;
        k.K = K;
        k.sa0 = sa0;
        k.sa1 = sa1;
        k.sb0 = sb0;
        k.sb1 = sb1;
        k.ldc = ldc;
        k.alpha = q ? 1.0f : alpha;
        k.beta = q ? 0.0f : beta;
        k.bias = !q && bias != NULL;
        k.int8 = q != NULL;
        j.e[p] = ok ? mm_acquire(&k) : NULL;
        if (!j.e[p])
            ok = 0;
    }
    if (ok)
        bft_parallel_for(parts, 1, bgemm_part, &j);
    for (int p = 0; p < parts; p++)
        if (j.e[p])
            mm_release(j.e[p]);
}

/* ---------------------------------------------------------------- low-precision weight copies */

/* A weights block's low-precision copy for the bf16 mode (the whole block in
 * bf16) or the int8 mode (each linear layer's weights quantised at its first
 * use). The active copy of each mode (registered by its set_weights) serves
 * the operands inside its block; a few more stay for models used again. */
#define COPIES 2
#define FP_SAMPLES 64

/* One linear layer's int8 weights: per output channel symmetric. */
typedef struct qmat {
    size_t off;      /* offset of the fp32 weights (OC, IC) in the block */
    int OC, IC;
    int8_t *q;       /* (OC, IC): round(w / scale[o]) in [-127, 127] */
    float *scale;    /* (OC): max_k |w[o][k]| / 127 */
    int32_t *wsum;   /* (OC): sum_k q[o][k] */
} qmat;

typedef struct wcopy {
    int kind;        /* BFT_DNNL_BF16 or BFT_DNNL_INT8; 0: free slot */
    const float *src;
    size_t n;
    float sample[FP_SAMPLES];
    uint16_t *bf;    /* bf16: (n) */
    qmat *q;         /* int8: nq layers quantised so far */
    int nq, capq;
    size_t bytes;    /* memory held */
    uint64_t used;
} wcopy;

static wcopy copies[2][COPIES]; /* [kind - 1] */
static wcopy *active[2];
static uint64_t copy_clock;

static void sample_of(const float *p, size_t n, float *out)
{
    for (int i = 0; i < FP_SAMPLES; i++)
        out[i] = n ? p[(size_t)((double)i * (double)(n - 1) / (FP_SAMPLES - 1))] : 0.0f;
}

static void qmat_free(qmat *m)
{
    free(m->q);
    free(m->scale);
    free(m->wsum);
    memset(m, 0, sizeof *m);
}

static void copy_free(wcopy *c)
{
    if (c->kind && active[c->kind - 1] == c)
        active[c->kind - 1] = NULL;
    free(c->bf);
    for (int i = 0; i < c->nq; i++)
        qmat_free(&c->q[i]);
    free(c->q);
    memset(c, 0, sizeof *c);
}

void bft_dnnl_release(void)
{
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < COPIES; i++)
            copy_free(&copies[k][i]);
}

/* The active copy of kind holding x, or NULL. */
static wcopy *holding(int kind, const float *x)
{
    wcopy *c = active[kind - 1];
    return c && x >= c->src && x < c->src + c->n ? c : NULL;
}

typedef struct {
    uint16_t *dst;
    const float *src;
    int64_t cols, ld;
} cvt_job;

BFT_HOT static void cvt_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    cvt_job *j = ctx;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        uint16_t *d = j->dst + r * j->cols;
        const float *s = j->src + r * j->ld;
        for (int64_t c = 0; c < j->cols; c++)
            d[c] = bft_f2bf(s[c]);
    }
}

/* dst (rows, cols) dense = src (rows, cols; leading dimension ld) in bf16, over the pool. */
static void to_bf16(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld)
{
    cvt_job j = {dst, src, cols, ld};
    if (rows == 1 || ld == cols) { /* one contiguous run: rows of 4096 and a tail */
        int64_t n = rows * cols, full = n / 4096;
        j.cols = j.ld = 4096;
        if (full > 0)
            bft_parallel_for(full, 16, cvt_part, &j);
        for (int64_t i = full * 4096; i < n; i++)
            dst[i] = bft_f2bf(src[i]);
        return;
    }
    bft_parallel_for(rows, (4096 + cols - 1) / cols, cvt_part, &j);
}

/* set_weights of a mode: register the fp32 block w (n) as the model's
 * weights (NULL: drop the active copy). A copy of the same block with the
 * same sampled weights is reused; otherwise the least recently used one
 * makes room. bf16 converts the block now; int8 quantises layers lazily. */
static void set_weights_kind(int kind, const float *w, size_t n)
{
    float sample[FP_SAMPLES];
    wcopy *slots = copies[kind - 1];
    if (!w || n == 0) {
        if (active[kind - 1])
            copy_free(active[kind - 1]);
        return;
    }
    sample_of(w, n, sample);
    wcopy *lru = &slots[0];
    for (int i = 0; i < COPIES; i++) {
        wcopy *c = &slots[i];
        if (c->kind && c->src == w && c->n == n &&
            memcmp(c->sample, sample, sizeof sample) == 0) {
            c->used = ++copy_clock;
            active[kind - 1] = c;
            return;
        }
        if (c->kind && c->src == w) /* the same block with other weights: stale */
            copy_free(c);
    }
    for (int i = 0; i < COPIES; i++)
        if (!slots[i].kind || slots[i].used < lru->used)
            lru = &slots[i];
    copy_free(lru);
    if (kind == BFT_DNNL_BF16) {
        bft_error e;
        if (bft_memory_check(n * sizeof(uint16_t), "the weights' bf16 copy", &e) != BFT_OK) {
            fail(e.code, "%s", e.msg);
            return;
        }
        uint16_t *bf = aligned_alloc(64, (n * sizeof(uint16_t) + 63) / 64 * 64);
        if (!bf) {
            fail(BFT_ENOMEM, "out of memory for the weights' bf16 copy (%zu MB)", n * 2 >> 20);
            return;
        }
        to_bf16(bf, w, 1, (int64_t)n, (int64_t)n);
        lru->bf = bf;
        lru->bytes = n * sizeof(uint16_t);
    }
    lru->kind = kind;
    lru->src = w;
    lru->n = n;
    memcpy(lru->sample, sample, sizeof sample);
    lru->used = ++copy_clock;
    active[kind - 1] = lru;
}

/* Conversion buffers of the calling thread's current op. */
enum { SLOT_A, SLOT_B, SLOTS };
static _Thread_local void *slot_buf[SLOTS];
static _Thread_local size_t slot_cap[SLOTS];

/* The calling thread's buffer slot of at least bytes (NULL after a failure). */
static void *slot(int i, size_t bytes)
{
    if (bytes > slot_cap[i]) {
        size_t cap = bytes + bytes / 4 + 4096;
        void *p = aligned_alloc(64, (cap + 63) / 64 * 64);
        if (!p) {
            fail(BFT_ENOMEM, "out of memory for a %zu-byte operand buffer", bytes);
            return NULL;
        }
        free(slot_buf[i]);
        slot_buf[i] = p;
        slot_cap[i] = cap;
    }
    return slot_buf[i];
}

typedef struct op16 {
    const uint16_t *p;
    int64_t ld;
} op16;

/* x (rows, cols; leading dimension ld) as bf16: the active copy when x lies
 * in the registered weights, else converted into the slot's buffer. */
static op16 as_bf16(const float *x, int64_t rows, int64_t cols, int64_t ld, int i)
{
    op16 r = {NULL, ld};
    wcopy *c = holding(BFT_DNNL_BF16, x);
    if (c) {
        r.p = c->bf + (x - c->src);
        return r;
    }
    uint16_t *dst = slot(i, (size_t)rows * (size_t)cols * sizeof(uint16_t));
    if (!dst)
        return r;
    to_bf16(dst, x, rows, cols, ld);
    r.p = dst;
    r.ld = cols;
    return r;
}

/* ---------------------------------------------------------------- int8 operands */

typedef struct {
    qmat *m;
    const float *w;
} qw_job;

BFT_HOT static void qw_part(void *ctx, int64_t o0, int64_t o1, int tid)
{
    qw_job *j = ctx;
    int IC = j->m->IC;
    (void)tid;
    for (int64_t o = o0; o < o1; o++) {
        const float *w = j->w + o * IC;
        int8_t *q = j->m->q + o * IC;
        float mx = 0.0f;
        for (int k = 0; k < IC; k++)
            mx = fabsf(w[k]) > mx ? fabsf(w[k]) : mx;
        float sc = mx > 0.0f ? mx / 127.0f : 1.0f, inv = 1.0f / sc;
        int32_t sum = 0;
        for (int k = 0; k < IC; k++) {
            float v = nearbyintf(w[k] * inv);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            q[k] = (int8_t)v;
            sum += q[k];
        }
        j->m->scale[o] = sc;
        j->m->wsum[o] = sum;
    }
}

/* Quantise w (OC, IC) into m (allocated here); -1 after a failure. */
static int quantize_weights(qmat *m, const float *w, int OC, int IC)
{
    memset(m, 0, sizeof *m);
    m->OC = OC;
    m->IC = IC;
    m->q = aligned_alloc(64, ((size_t)OC * IC + 63) / 64 * 64);
    m->scale = malloc((size_t)OC * sizeof *m->scale);
    m->wsum = malloc((size_t)OC * sizeof *m->wsum);
    if (!m->q || !m->scale || !m->wsum) {
        qmat_free(m);
        fail(BFT_ENOMEM, "out of memory quantising a %dx%d weight matrix", OC, IC);
        return -1;
    }
    qw_job j = {m, w};
    bft_parallel_for(OC, 16, qw_part, &j);
    return 0;
}

/* The int8 weights of w (OC, IC): from the active copy (quantised now when
 * first used), or quantised into *tmp (the caller frees it) when w lies
 * outside the registered block. NULL after a failure. */
static const qmat *int8_weights(const float *w, int OC, int IC, qmat *tmp)
{
    wcopy *c = holding(BFT_DNNL_INT8, w);
    if (!c)
        return quantize_weights(tmp, w, OC, IC) == 0 ? tmp : NULL;
    size_t off = (size_t)(w - c->src);
    for (int i = 0; i < c->nq; i++)
        if (c->q[i].off == off && c->q[i].OC == OC && c->q[i].IC == IC)
            return &c->q[i];
    size_t bytes = (size_t)OC * IC + (size_t)OC * 8;
    bft_error e;
    if (bft_memory_check(c->bytes + bytes, "the weights' int8 copy", &e) != BFT_OK) {
        fail(e.code, "%s", e.msg);
        return NULL;
    }
    if (c->nq == c->capq) {
        int cap = c->capq ? 2 * c->capq : 64;
        qmat *q = realloc(c->q, (size_t)cap * sizeof *q);
        if (!q) {
            fail(BFT_ENOMEM, "out of memory for the int8 weights' index");
            return NULL;
        }
        c->q = q;
        c->capq = cap;
    }
    if (quantize_weights(&c->q[c->nq], w, OC, IC) != 0)
        return NULL;
    c->q[c->nq].off = off;
    c->bytes += bytes;
    return &c->q[c->nq++];
}

typedef struct {
    uint8_t *q;
    float *sx;
    int32_t *zp;
    const float *x;
    int64_t cols;
} qa_job;

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

/* The smallest and largest of x[0..C) and 0: sixteen running minima and
 * maxima (one compare and blend per vector of the CPU the clone is for)
 * instead of one dependency chain per element. */
static inline void row_range(const float *x, int64_t C, float *mn_out, float *mx_out)
{
    v16f vmn = {0}, vmx = {0};
    int64_t k = 0;
    for (; k + 16 <= C; k += 16) {
        v16f v;
        memcpy(&v, x + k, sizeof v);
        v16i lt = v < vmn, gt = v > vmx;
        vmn = (v16f)(((v16i)v & lt) | ((v16i)vmn & ~lt));
        vmx = (v16f)(((v16i)v & gt) | ((v16i)vmx & ~gt));
    }
    float mn = 0.0f, mx = 0.0f;
    for (int l = 0; l < 16; l++) {
        mn = vmn[l] < mn ? vmn[l] : mn;
        mx = vmx[l] > mx ? vmx[l] : mx;
    }
    for (; k < C; k++) {
        mn = x[k] < mn ? x[k] : mn;
        mx = x[k] > mx ? x[k] : mx;
    }
    *mn_out = mn;
    *mx_out = mx;
}

BFT_HOT static void qa_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    qa_job *j = ctx;
    int64_t C = j->cols;
    (void)tid;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * C;
        uint8_t *q = j->q + r * C;
        float mn, mx;
        row_range(x, C, &mn, &mx);
        float sc = mx > mn ? (mx - mn) / 255.0f : 1.0f, inv = 1.0f / sc;
        float z = nearbyintf(-mn * inv);
        z = z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z;
        for (int64_t k = 0; k < C; k++) {
            float v = nearbyintf(x[k] * inv) + z;
            v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
            q[k] = (uint8_t)v;
        }
        j->sx[r] = sc;
        j->zp[r] = (int32_t)z;
    }
}

/* ---------------------------------------------------------------- the bf16 ops */

static void be_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0 || failed())
        return;
    op16 a = as_bf16(A, tA ? K : M, tA ? M : K, lda, SLOT_A);
    op16 b = as_bf16(B, tB ? N : K, tB ? K : N, ldb, SLOT_B);
    if (!a.p || !b.p)
        return;
    bgemm(M, N, K, alpha, a.p, tA ? 1 : a.ld, tA ? a.ld : 1, b.p, tB ? 1 : b.ld, tB ? b.ld : 1,
          NULL, beta, C, ldc, NULL);
}

static void be_linear_fwd(float *out, const float *inp, const float *w, const float *bias, int N,
                          int IC, int OC)
{
    if (N <= 0 || OC <= 0 || failed())
        return;
    op16 x = as_bf16(inp, N, IC, IC, SLOT_A);
    op16 wt = as_bf16(w, OC, IC, IC, SLOT_B);
    if (!x.p || !wt.p)
        return;
    /* out (N, OC) = x (N, IC) . w^T (IC, OC) + bias */
    bgemm(N, OC, IC, 1.0f, x.p, x.ld, 1, wt.p, 1, wt.ld, bias, 0.0f, out, OC, NULL);
}

static void be_linear_bwd(float *dinp, float *dw, float *dbias, const float *dout,
                          const float *inp, const float *w, int N, int IC, int OC, int accum_dinp,
                          int accum_dw)
{
    if (N <= 0 || failed())
        return;
    if (dbias)
        bft_cpu_op_colsum(dbias, dout, N, OC, accum_dw);
    /* dout converted once for both products */
    op16 g = as_bf16(dout, N, OC, OC, SLOT_A);
    if (!g.p)
        return;
    if (dw) { /* dw (OC, IC) = dout^T (OC, N) . inp (N, IC) */
        op16 x = as_bf16(inp, N, IC, IC, SLOT_B);
        if (!x.p)
            return;
        bgemm(OC, IC, N, 1.0f, g.p, 1, g.ld, x.p, x.ld, 1, NULL, accum_dw ? 1.0f : 0.0f, dw, IC,
              NULL);
    }
    if (dinp) { /* dinp (N, IC) = dout (N, OC) . w (OC, IC) */
        op16 wt = as_bf16(w, OC, IC, IC, SLOT_B);
        if (!wt.p)
            return;
        bgemm(N, IC, OC, 1.0f, g.p, g.ld, 1, wt.p, wt.ld, 1, NULL, accum_dinp ? 1.0f : 0.0f,
              dinp, IC, NULL);
    }
}

static void be_attention_fwd(float *ctx, float *att, const float *qkv, const int32_t *lens, int B,
                             int T, int C, int NH, const bft_dropout *d)
{
    if (!failed())
        bft_cpu_attention_fwd_mode(ctx, att, qkv, lens, B, T, C, NH, d, 1);
}

static void be_attention_bwd(float *dqkv, const float *dctx, const float *att, const float *qkv,
                             const int32_t *lens, int B, int T, int C, int NH,
                             const bft_dropout *d)
{
    if (!failed())
        bft_cpu_attention_bwd_mode(dqkv, dctx, att, qkv, lens, B, T, C, NH, d, 1);
}

/* AdamW on fp32 master weights; the active bf16 copy follows in the same pass. */
static void be_adamw(float *p, float *g, float *m, float *v, size_t n, double lr, double b1,
                     double b2, double eps, double wd, float gscale, int64_t t, int zero_grad)
{
    uint16_t *mir = NULL;
    wcopy *c = holding(BFT_DNNL_BF16, p);
    if (failed())
        return;
    if (c && p + n <= c->src + c->n)
        mir = c->bf + (p - c->src);
    bft_cpu_adamw_mirror(p, g, m, v, n, lr, b1, b2, eps, wd, gscale, t, zero_grad, mir);
    if (mir)
        sample_of(c->src, c->n, c->sample);
}

static void be_set_weights(const float *w, size_t n)
{
    set_weights_kind(BFT_DNNL_BF16, w, n);
}

/* ---------------------------------------------------------------- the int8 ops */

/* Linear forward with int8 weights (per output channel) and int8 activations
 * (per row, asymmetric, quantised now): out = dequant(q(inp) . q(w)^T) + bias. */
static void q8_linear_fwd(float *out, const float *inp, const float *w, const float *bias, int N,
                          int IC, int OC)
{
    qmat tmp;
    memset(&tmp, 0, sizeof tmp);
    if (N <= 0 || OC <= 0 || failed())
        return;
    const qmat *qm = int8_weights(w, OC, IC, &tmp);
    uint8_t *qx = slot(SLOT_A, (size_t)N * IC);
    char *meta = slot(SLOT_B, (size_t)N * (sizeof(float) + sizeof(int32_t)));
    if (qm && qx && meta) {
        float *sx = (float *)meta;
        int32_t *zp = (int32_t *)(meta + (size_t)N * sizeof(float));
        qa_job qj = {qx, sx, zp, inp, IC};
        bft_parallel_for(N, (4096 + IC - 1) / IC, qa_part, &qj);
        int8_epilogue ep = {sx, zp, qm->scale, qm->wsum};
        /* out (N, OC) = qx (N, IC) . q^T (IC, OC) */
        bgemm(N, OC, IC, 1.0f, qx, IC, 1, qm->q, 1, IC, bias, 0.0f, out, OC, &ep);
    }
    qmat_free(&tmp);
}

static void q8_set_weights(const float *w, size_t n)
{
    set_weights_kind(BFT_DNNL_INT8, w, n);
}

/* ---------------------------------------------------------------- the backends */

static pthread_once_t be_once = PTHREAD_ONCE_INIT;
static bft_backend bf16_backend, int8_backend;

static void be_init(void)
{
    bf16_backend = *bft_cpu_backend();
    bf16_backend.check = be_check;
    bf16_backend.set_weights = be_set_weights;
    bf16_backend.gemm = be_gemm;
    bf16_backend.linear_fwd = be_linear_fwd;
    bf16_backend.linear_bwd = be_linear_bwd;
    bf16_backend.attention_fwd = be_attention_fwd;
    bf16_backend.attention_bwd = be_attention_bwd;
    bf16_backend.adamw = be_adamw;
    /* int8: the linear layers' forward only (inference); the rest fp32 */
    int8_backend = *bft_cpu_backend();
    int8_backend.check = be_check;
    int8_backend.set_weights = q8_set_weights;
    int8_backend.linear_fwd = q8_linear_fwd;
}

int bft_dnnl_bf16_backend(const bft_backend **out, bft_error *err)
{
    int rc = bft_dnnl_available(BFT_DNNL_BF16, err);
    if (rc != BFT_OK)
        return rc;
    pthread_once(&be_once, be_init);
    *out = &bf16_backend;
    return BFT_OK;
}

int bft_dnnl_int8_backend(const bft_backend **out, bft_error *err)
{
    int rc = bft_dnnl_available(BFT_DNNL_INT8, err);
    if (rc != BFT_OK)
        return rc;
    pthread_once(&be_once, be_init);
    *out = &int8_backend;
    return BFT_OK;
}

#else /* !BFT_WITH_DNNL */

int bft_dnnl_available(int what, bft_error *err)
{
    return bft_set_error(err, BFT_EUNSUPPORTED,
                         "%s on the CPU needs oneDNN, and bft was built without it "
                         "(install libdnnl-dev and rebuild bft)",
                         what == BFT_DNNL_INT8 ? "int8" : "bf16");
}

int bft_dnnl_bf16_backend(const bft_backend **out, bft_error *err)
{
    (void)out;
    return bft_dnnl_available(BFT_DNNL_BF16, err);
}

int bft_dnnl_int8_backend(const bft_backend **out, bft_error *err)
{
    (void)out;
    return bft_dnnl_available(BFT_DNNL_INT8, err);
}

void bft_dnnl_release(void)
{
}

const char *bft_dnnl_info(void)
{
    return "";
}

#endif
