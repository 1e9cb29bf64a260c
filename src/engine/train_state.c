/*
 * train_state.c — the training state file (see train_state.h) and
 * bft_train_state_info (train.h).
 */
#include "train_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"

#define STATE_MAGIC "BFTSTAT1"
#define STATE_VERSION 1u
#define CHUNK_FLOATS ((size_t)1 << 20) /* 4 MB host bounce buffer for device arrays */

/* 64-bit checksum of a byte stream, 8 bytes at a time (FNV-1a style mixing of words). */
typedef struct {
    uint64_t h;
    unsigned char tail[8];
    size_t ntail;
} csum;

static void csum_init(csum *c)
{
    c->h = 0xcbf29ce484222325ull;
    c->ntail = 0;
}

static void csum_word(csum *c, uint64_t w)
{
    c->h ^= w;
    c->h *= 0x100000001b3ull;
    c->h ^= c->h >> 29;
}

static void csum_add(csum *c, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n > 0 && c->ntail > 0 && c->ntail < 8) {
        c->tail[c->ntail++] = *b++;
        n--;
        if (c->ntail == 8) {
            uint64_t w;
            memcpy(&w, c->tail, 8);
            csum_word(c, w);
            c->ntail = 0;
        }
    }
    for (; n >= 8; n -= 8, b += 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        csum_word(c, w);
    }
    for (; n > 0; n--)
        c->tail[c->ntail++] = *b++;
}

static uint64_t csum_final(csum *c)
{
    uint64_t w = 0;
    memcpy(&w, c->tail, c->ntail);
    csum_word(c, w ^ ((uint64_t)c->ntail << 56));
    return c->h;
}

typedef struct {
    int fd;
    csum c;
    const char *path;
    bft_error *err;
} wfile;

static int put(wfile *f, const void *p, size_t n)
{
    const char *b = p;
    csum_add(&f->c, p, n);
    while (n > 0) {
        ssize_t w = write(f->fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return bft_set_error(f->err, BFT_EIO, "could not write %s: %s", f->path,
                                 w < 0 ? strerror(errno) : "short write");
        b += w;
        n -= (size_t)w;
    }
    return BFT_OK;
}

/* n floats from the current backend's memory (device or host) to the file. */
static int put_array(wfile *f, const float *a, size_t n, float *bounce)
{
    if (bft_backend_current()->device == BFT_DEVICE_CPU)
        return put(f, a, n * sizeof *a);
    for (size_t i = 0; i < n; i += CHUNK_FLOATS) {
        size_t k = n - i < CHUNK_FLOATS ? n - i : CHUNK_FLOATS;
        bft_dev_download(bounce, a + i, k * sizeof *a);
        int rc = bft_dev_check(f->err);
        if (rc != BFT_OK)
            return rc;
        if ((rc = put(f, bounce, k * sizeof *a)) != BFT_OK)
            return rc;
    }
    return BFT_OK;
}

int bft_state_write(const char *path, const bft_state_hdr *h, const void *note,
                    const bft_epoch_rec *hist, float *const arrays[4], bft_error *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    float *bounce = NULL;
    wfile f = {-1, {0, {0}, 0}, path, err};
    uint32_t ver = STATE_VERSION, hsz = (uint32_t)sizeof *h;
    int rc = BFT_OK, na = h->has_best ? 4 : 3;
    if (!tmp)
        return bft_set_error(err, BFT_ENOMEM, "out of memory");
    /* per process: two writers of one path never share a temporary file */
    snprintf(tmp, plen + 32, "%s.%ld.tmp", path, (long)getpid());
    if (bft_backend_current()->device != BFT_DEVICE_CPU &&
        !(bounce = malloc(CHUNK_FLOATS * sizeof *bounce))) {
        free(tmp);
        return bft_set_error(err, BFT_ENOMEM, "out of memory");
    }
    f.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (f.fd < 0) {
        rc = bft_set_error(err, BFT_EIO, "could not create %s: %s", tmp, strerror(errno));
        goto done;
    }
    f.path = tmp;
    csum_init(&f.c);
    if ((rc = put(&f, STATE_MAGIC, 8)) || (rc = put(&f, &ver, 4)) || (rc = put(&f, &hsz, 4)) ||
        (rc = put(&f, h, sizeof *h)) || (rc = put(&f, note, h->note_len)) ||
        (rc = put(&f, hist, (size_t)h->nhist * sizeof *hist)))
        goto done;
    for (int i = 0; i < na; i++)
        if ((rc = put_array(&f, arrays[i], (size_t)h->num_params, bounce)) != BFT_OK)
            goto done;
    uint64_t sum = csum_final(&f.c);
    if ((rc = put(&f, &sum, 8)) != BFT_OK)
        goto done;
    if (fsync(f.fd) != 0) {
        rc = bft_set_error(err, BFT_EIO, "could not flush %s: %s", tmp, strerror(errno));
        goto done;
    }
    if (close(f.fd) != 0) {
        f.fd = -1;
        rc = bft_set_error(err, BFT_EIO, "could not close %s: %s", tmp, strerror(errno));
        goto done;
    }
    f.fd = -1;
    if (rename(tmp, path) != 0) {
        rc = bft_set_error(err, BFT_EIO, "could not rename %s to %s: %s", tmp, path, strerror(errno));
        goto done;
    }
    /* the rename itself: flush the directory */
    {
        char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash) {
            *slash = '\0';
            int dfd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                (void)fsync(dfd);
                close(dfd);
            }
        }
        free(dir);
    }
done:
    if (f.fd >= 0)
        close(f.fd);
    if (rc != BFT_OK)
        unlink(tmp);
    free(tmp);
    free(bounce);
    return rc;
}

typedef struct {
    FILE *fp;
    csum c;
    const char *path;
    bft_error *err;
} rfile;

static int get(rfile *f, void *p, size_t n)
{
    if (n == 0)
        return BFT_OK;
    if (fread(p, 1, n, f->fp) != n)
        return bft_set_error(f->err, ferror(f->fp) ? BFT_EIO : BFT_EFORMAT,
                             "could not read %s: %s", f->path,
                             ferror(f->fp) ? strerror(errno) : "truncated training state");
    csum_add(&f->c, p, n);
    return BFT_OK;
}

/* n floats from the file into the current backend's memory (a == NULL: skipped, still summed). */
static int get_array(rfile *f, float *a, size_t n, float *bounce)
{
    if (a && bft_backend_current()->device == BFT_DEVICE_CPU)
        return get(f, a, n * sizeof *a);
    for (size_t i = 0; i < n; i += CHUNK_FLOATS) {
        size_t k = n - i < CHUNK_FLOATS ? n - i : CHUNK_FLOATS;
        int rc = get(f, bounce, k * sizeof *bounce);
        if (rc != BFT_OK)
            return rc;
        if (a) {
            bft_dev_upload(a + i, bounce, k * sizeof *a);
            if ((rc = bft_dev_check(f->err)) != BFT_OK)
                return rc;
        }
    }
    return BFT_OK;
}

int bft_state_read(const char *path, bft_state_hdr *h, void *note, bft_epoch_rec **hist,
                   float *const arrays[4], bft_error *err)
{
    rfile f = {NULL, {0, {0}, 0}, path, err};
    char magic[8];
    uint32_t ver = 0, hsz = 0;
    float *bounce = NULL;
    int rc;
    *hist = NULL;
    csum_init(&f.c);
    if (!(f.fp = fopen(path, "rbe")))
        return bft_set_error(err, BFT_EIO, "could not open %s: %s", path, strerror(errno));
    if ((rc = get(&f, magic, 8)) || (rc = get(&f, &ver, 4)) || (rc = get(&f, &hsz, 4)))
        goto done;
    if (memcmp(magic, STATE_MAGIC, 8) != 0 || ver != STATE_VERSION || hsz != sizeof *h) {
        rc = bft_set_error(err, BFT_EFORMAT, "%s is not a training state of this bft version", path);
        goto done;
    }
    if ((rc = get(&f, h, sizeof *h)) != BFT_OK)
        goto done;
    if (h->note_len > BFT_STATE_NOTE_MAX || h->nhist < 0 || h->nhist > 1000000 ||
        h->epochs_done < 0 || h->epochs_done > h->epochs || h->nhist != h->epochs_done) {
        rc = bft_set_error(err, BFT_EFORMAT, "%s: corrupt training state header", path);
        goto done;
    }
    if ((rc = get(&f, note, h->note_len)) != BFT_OK)
        goto done;
    *hist = malloc(((size_t)h->nhist + 1) * sizeof **hist);
    if (!*hist) {
        rc = bft_set_error(err, BFT_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = get(&f, *hist, (size_t)h->nhist * sizeof **hist)) != BFT_OK || !arrays)
        goto done;
    if (!(bounce = malloc(CHUNK_FLOATS * sizeof *bounce))) {
        rc = bft_set_error(err, BFT_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < (h->has_best ? 4 : 3); i++)
        if ((rc = get_array(&f, arrays[i], (size_t)h->num_params, bounce)) != BFT_OK)
            goto done;
    uint64_t want = csum_final(&f.c), got = 0;
    if (fread(&got, 1, 8, f.fp) != 8 || got != want || fgetc(f.fp) != EOF) {
        rc = bft_set_error(err, BFT_EFORMAT, "%s: training state checksum mismatch (corrupt file)", path);
        goto done;
    }
    rc = BFT_OK;
done:
    if (rc != BFT_OK) {
        free(*hist);
        *hist = NULL;
    }
    fclose(f.fp);
    free(bounce);
    return rc;
}

int bft_train_state_info(const char *path, bft_train_state_info_t *info, bft_error *err)
{
    bft_state_hdr h;
    bft_epoch_rec *hist = NULL;
    struct stat st;
    bft_clear_error(err);
    memset(info, 0, sizeof *info);
    int rc = bft_state_read(path, &h, info->note, &hist, NULL, err);
    if (rc != BFT_OK)
        return rc;
    free(hist);
    info->task = (int)h.task;
    info->epochs = h.epochs;
    info->epochs_done = h.epochs_done;
    info->step = h.step;
    info->fingerprint = h.fingerprint;
    info->note_len = h.note_len;
    info->bytes = stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
    return BFT_OK;
}

uint64_t bft_train_hash(uint64_t h, const void *p, size_t n)
{
    csum c;
    csum_init(&c);
    csum_word(&c, h);
    csum_word(&c, (uint64_t)n);
    csum_add(&c, p, n);
    return csum_final(&c);
}
