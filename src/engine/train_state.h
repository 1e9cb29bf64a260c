/*
 * train_state.h — engine-internal: the training state file that lets a
 * training continue after its last completed epoch (bft_train_opts.state_path
 * / resume_path).
 *
 * A state file holds everything the rest of a training depends on: the
 * parameters, both AdamW moments, the best epoch's parameters (when kept),
 * the step counter (learning-rate schedule, Adam's bias correction, dropout
 * masks), the MLM masking generator, the loss sums, the best-epoch tracking
 * and the per-epoch history. Layout (native byte order: a state is read back
 * by the machine that wrote it):
 *   "BFTSTAT1", uint32 version, uint32 sizeof header, the header, note
 *   (note_len bytes), history (nhist records), then params, m, v and (has_best)
 *   the best parameters, num_params floats each, and a uint64 checksum of
 *   everything before it.
 * Writes go to path + ".<pid>.tmp", are flushed to disk and renamed over path, so a
 * crash leaves the previous state or the new one, never a torn file.
 */
#ifndef BFT_TRAIN_STATE_H
#define BFT_TRAIN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "train.h"

typedef struct bft_state_hdr {
    uint32_t task;           /* 0 fine-tuning, 1 MLM */
    uint32_t note_len;
    uint64_t fingerprint;    /* of the data, options and host salt */
    uint64_t num_params;
    int32_t epochs;          /* the run's epochs */
    int32_t epochs_done;     /* completed epochs saved here */
    int32_t nhist;           /* history records (= epochs_done) */
    int32_t best_epoch, bad_epochs, stop, has_best, pad_;
    int64_t step, samples;
    double loss_all, elapsed_s;
    float best, best_l, best_a, best_f;
    uint64_t rng[4];         /* MLM masking generator */
} bft_state_hdr;

/* What one completed epoch reported (phase-1 progress). */
typedef struct bft_epoch_rec {
    int32_t epoch;
    float loss, eval_loss, eval_accuracy, eval_macro_f1;
    float pad_;
    double samples_per_s, elapsed_s;
} bft_epoch_rec;

/* Write the state atomically. arrays: params, m, v (and best when
 * h->has_best), each h->num_params floats in the current backend's memory
 * (downloaded in chunks on a GPU). Returns BFT_OK or BFT_EIO with err. */
int bft_state_write(const char *path, const bft_state_hdr *h, const void *note,
                    const bft_epoch_rec *hist, float *const arrays[4], bft_error *err);

/* Read a state written by bft_state_write: the header into h, the note into
 * note (up to BFT_STATE_NOTE_MAX bytes), the history into *hist (malloc'd,
 * h->nhist records; the caller frees) and, when arrays is not NULL, the
 * arrays into the current backend's memory (arrays[3] may be NULL: the best
 * parameters are skipped). Checks the magic, the version, the sizes and the
 * checksum (only when arrays are read). Returns BFT_OK, BFT_EIO (unreadable,
 * truncated, corrupt) or BFT_EINVAL with err. */
int bft_state_read(const char *path, bft_state_hdr *h, void *note, bft_epoch_rec **hist,
                   float *const arrays[4], bft_error *err);

#endif
