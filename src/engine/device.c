/*
 * device.c — a model's weights on the compute device of one engine call
 * (bft_devmodel, backend.h), the process-wide inference device setting
 * (bft_set_device, train.h) and the inference weight cache.
 *
 * Training uploads the weights once, runs every step on the device and copies
 * them back at the end. Inference (bft_predict, bft_evaluate_ds,
 * bft_fill_mask) on CUDA keeps the weights of the last DEV_CACHE_MAX models
 * resident, so a caller classifying row by row (with one model or a few) does
 * not upload 400 MB per call: a cached copy is reused while (model address,
 * parameter block address, size, a sample of 64 weights, precision) match,
 * the least recently used one makes room, and bft_device_release() drops them
 * all (the extension calls it when its model cache drops a model; training
 * and an out-of-memory upload also drop them).
 */
#include "backend.h"

#include <string.h>

#include "cuda/ops_cuda.h"
#include "model.h"
#include "ops_dnnl.h"
#include "train.h"

static int g_device = BFT_DEVICE_CPU, g_precision = BFT_PRECISION_AUTO;

int bft_set_device(int device, int precision, bft_error *err)
{
    const bft_backend *be;
    int rc = bft_backend_open(device, precision, &be, err);
    if (rc != BFT_OK)
        return rc;
    g_device = device;
    g_precision = precision;
    return BFT_OK;
}

int bft_device_available(int device, bft_error *err)
{
    const bft_backend *be;
    return bft_backend_open(device, BFT_PRECISION_AUTO, &be, err);
}

int bft_precision_available(int device, int precision, bft_error *err)
{
    const bft_backend *be;
    return bft_backend_open(device, precision, &be, err);
}

const char *bft_device_name(int device)
{
    if (device == BFT_DEVICE_CUDA) {
        const char *n = bft_cuda_device_name();
        return n && n[0] ? n : "cuda";
    }
    return "cpu";
}

void bft_get_device(int *device, int *precision)
{
    if (device)
        *device = g_device;
    if (precision)
        *precision = g_precision;
}

/* ---------------------------------------------------------------- inference weight cache */

#define FP_SAMPLES 64
/* Models whose weights stay on the GPU at once: a statement that classifies
 * with two models per row (comparing versions) must not upload one of them
 * for every row. */
#define DEV_CACHE_MAX 4

typedef struct dev_entry {
    const bft_backend *be;
    const bft_model *m;
    const float *host;
    size_t n;
    int precision;
    float sample[FP_SAMPLES];
    float *dev;
    uint64_t used; /* LRU clock */
} dev_entry;

static dev_entry cache[DEV_CACHE_MAX];
static uint64_t cache_clock;

static void sample_of(const float *p, size_t n, float *out)
{
    for (int i = 0; i < FP_SAMPLES; i++)
        out[i] = n ? p[(size_t)((double)i * (double)(n - 1) / (FP_SAMPLES - 1))] : 0.0f;
}

/* Free one entry's device copy. The backend's bf16 mirror is dropped too: it
 * may belong to this block, whose address a later allocation can reuse. */
static void entry_free(dev_entry *c)
{
    if (c->dev && c->be) {
        const bft_backend *prev = bft_backend_use(c->be);
        c->be->set_weights(NULL, 0);
        bft_dev_free(c->dev);
        bft_backend_use(prev);
    }
    memset(c, 0, sizeof *c);
}

void bft_device_release(void)
{
    for (int i = 0; i < DEV_CACHE_MAX; i++)
        entry_free(&cache[i]);
    bft_dnnl_release();
}

/* The cached copy of m (same backend, model, parameter block, size, precision
 * and sampled weights), or NULL. */
static dev_entry *cache_find(const bft_backend *be, const bft_model *m, int precision,
                             const float *sample)
{
    for (int i = 0; i < DEV_CACHE_MAX; i++) {
        dev_entry *c = &cache[i];
        if (c->dev && c->be == be && c->m == m && c->host == m->params_mem &&
            c->n == m->num_params && c->precision == precision &&
            memcmp(c->sample, sample, sizeof c->sample) == 0)
            return c;
    }
    return NULL;
}

/* A free entry, making room by dropping the least recently used one; a stale
 * copy of the same model (its weights changed) is dropped first. */
static dev_entry *cache_slot(const bft_model *m)
{
    dev_entry *lru = &cache[0];
    for (int i = 0; i < DEV_CACHE_MAX; i++)
        if (cache[i].dev && cache[i].m == m)
            entry_free(&cache[i]);
    for (int i = 0; i < DEV_CACHE_MAX; i++) {
        if (!cache[i].dev)
            return &cache[i];
        if (cache[i].used < lru->used)
            lru = &cache[i];
    }
    entry_free(lru);
    return lru;
}

static int cache_count(void)
{
    int k = 0;
    for (int i = 0; i < DEV_CACHE_MAX; i++)
        k += cache[i].dev != NULL;
    return k;
}

/* ---------------------------------------------------------------- bft_devmodel */

int bft_devmodel_open(bft_devmodel *d, const bft_model *m, int device, int precision,
                      int training, bft_error *err)
{
    const bft_backend *be;
    memset(d, 0, sizeof *d);
    if (training && precision == BFT_PRECISION_INT8)
        return bft_set_error(err, BFT_EUNSUPPORTED,
                             "int8 is for inference (classification): train in fp32 or bf16");
    int rc = bft_backend_open(device, precision, &be, err);
    if (rc != BFT_OK)
        return rc;
    d->be = be;
    d->prev = bft_backend_use(be);
    d->dm = *m;
    if (be->device == BFT_DEVICE_CPU) {
        /* the model's own weights; the bf16 mode keeps a bf16 copy of them
         * (a no-op in fp32), dropped after a training changed them */
        be->set_weights(m->params_mem, m->num_params);
        d->cpu_weights = training;
        if ((rc = bft_dev_check(err)) != BFT_OK)
            bft_devmodel_close(d);
        return rc;
    }

    size_t n = m->num_params;
    float sample[FP_SAMPLES];
    dev_entry *slot = NULL;
    sample_of(m->params_mem, n, sample);
    if (training) {
        /* the weights will change: never keep them cached; and training
         * needs the memory more than idle copies do */
        bft_device_release();
    } else {
        dev_entry *c = cache_find(be, m, precision, sample);
        if (c) {
            c->used = ++cache_clock;
            d->dm.params_mem = c->dev;
            bft_params_assign(&d->dm.p, c->dev, &m->cfg, m->parts);
            be->set_weights(c->dev, n);
            if ((rc = bft_dev_check(err)) != BFT_OK) {
                bft_devmodel_close(d);
                bft_device_release();
            }
            return rc;
        }
        slot = cache_slot(m);
    }
    float *dev = bft_dev_alloc(n * sizeof(float));
    if (!dev && !training && cache_count() > 0) {
        /* out of device memory with other models cached: drop them, retry */
        bft_error ignored;
        (void)bft_dev_check(&ignored);
        bft_device_release();
        dev = bft_dev_alloc(n * sizeof(float));
    }
    if (!dev) {
        rc = bft_dev_check(err);
        if (rc == BFT_OK)
            rc = bft_set_error(err, BFT_ENOMEM, "out of device memory for %zu parameters", n);
        bft_devmodel_close(d);
        return rc;
    }
    bft_dev_upload(dev, m->params_mem, n * sizeof(float));
    be->set_weights(dev, n);
    d->dm.params_mem = dev;
    bft_params_assign(&d->dm.p, dev, &m->cfg, m->parts);
    if (training) {
        d->owned = dev;
    } else {
        slot->be = be;
        slot->m = m;
        slot->host = m->params_mem;
        slot->n = n;
        slot->precision = precision;
        memcpy(slot->sample, sample, sizeof sample);
        slot->dev = dev;
        slot->used = ++cache_clock;
    }
    if ((rc = bft_dev_check(err)) != BFT_OK) {
        bft_devmodel_close(d);
        if (!training)
            bft_device_release();
        return rc;
    }
    return BFT_OK;
}

int bft_devmodel_download(bft_devmodel *d, bft_model *m, bft_error *err)
{
    if (!d->be || d->be->device == BFT_DEVICE_CPU || d->dm.params_mem == m->params_mem)
        return BFT_OK;
    bft_dev_download(m->params_mem, d->dm.params_mem, m->num_params * sizeof(float));
    return bft_dev_check(err);
}

void bft_devmodel_close(bft_devmodel *d)
{
    if (d->be) {
        if (d->owned) {
            d->be->set_weights(NULL, 0);
            bft_dev_free(d->owned);
        }
        if (d->cpu_weights)
            d->be->set_weights(NULL, 0);
        bft_backend_use(d->prev);
    }
    memset(d, 0, sizeof *d);
}
