/*
 * device.c — a model's weights on the compute device of one engine call
 * (bft_devmodel, backend.h), the process-wide inference device setting
 * (bft_set_device, train.h) and the inference weight cache.
 *
 * Training uploads the weights once, runs every step on the device and copies
 * them back at the end. Inference (bft_predict, bft_evaluate_ds,
 * bft_fill_mask) on CUDA keeps the last model's weights resident, so a caller
 * classifying row by row does not upload 400 MB per call: the cached copy is
 * reused while (model address, parameter block address, size, a sample of 64
 * weights, precision) match, and bft_device_release() drops it (the extension
 * calls it when its model cache drops a model; training also drops it).
 */
#include "backend.h"

#include <string.h>

#include "cuda/ops_cuda.h"
#include "model.h"
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

static struct {
    const bft_backend *be;
    const bft_model *m;
    const float *host;
    size_t n;
    int precision;
    float sample[FP_SAMPLES];
    float *dev;
} cache;

static void sample_of(const float *p, size_t n, float *out)
{
    for (int i = 0; i < FP_SAMPLES; i++)
        out[i] = n ? p[(size_t)((double)i * (double)(n - 1) / (FP_SAMPLES - 1))] : 0.0f;
}

void bft_device_release(void)
{
    if (cache.dev && cache.be) {
        const bft_backend *prev = bft_backend_use(cache.be);
        cache.be->set_weights(NULL, 0);
        bft_dev_free(cache.dev);
        bft_backend_use(prev);
    }
    memset(&cache, 0, sizeof cache);
}

/* ---------------------------------------------------------------- bft_devmodel */

int bft_devmodel_open(bft_devmodel *d, const bft_model *m, int device, int precision,
                      int training, bft_error *err)
{
    const bft_backend *be;
    memset(d, 0, sizeof *d);
    int rc = bft_backend_open(device, precision, &be, err);
    if (rc != BFT_OK)
        return rc;
    d->be = be;
    d->prev = bft_backend_use(be);
    d->dm = *m;
    if (be->device == BFT_DEVICE_CPU)
        return BFT_OK;

    size_t n = m->num_params;
    float sample[FP_SAMPLES];
    sample_of(m->params_mem, n, sample);
    if (training) {
        /* the weights will change: never keep them cached */
        bft_device_release();
    } else if (cache.dev && cache.be == be && cache.m == m && cache.host == m->params_mem &&
               cache.n == n && cache.precision == precision &&
               memcmp(cache.sample, sample, sizeof sample) == 0) {
        d->dm.params_mem = cache.dev;
        bft_params_assign(&d->dm.p, cache.dev, &m->cfg, m->parts);
        be->set_weights(cache.dev, n);
        if ((rc = bft_dev_check(err)) != BFT_OK) {
            bft_devmodel_close(d);
            bft_device_release();
        }
        return rc;
    } else {
        bft_device_release();
    }
    float *dev = bft_dev_alloc(n * sizeof(float));
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
        cache.be = be;
        cache.m = m;
        cache.host = m->params_mem;
        cache.n = n;
        cache.precision = precision;
        memcpy(cache.sample, sample, sizeof sample);
        cache.dev = dev;
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
        bft_backend_use(d->prev);
    }
    memset(d, 0, sizeof *d);
}
