/*
 * train.h — fine-tuning (HF Trainer semantics), MLM pre-training and inference.
 *
 * A dataset holds already-tokenized examples: ids include [CLS] … [SEP]
 * (as produced by bft_encode). Batches are padded to their own longest
 * sequence (dynamic padding), never to max_length.
 */
#ifndef BFT_TRAIN_H
#define BFT_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"
#include "model.h"

typedef struct bft_dataset {
    int64_t n;               /* number of examples */
    const int32_t *tokens;   /* all ids, example i at tokens[offsets[i] .. offsets[i+1]) */
    const int64_t *offsets;  /* (n + 1) */
    const int32_t *labels;   /* (n) class ids in [0, K), or NULL for unlabeled (inference / MLM) */
    /* Multi-label models (cfg.problem_type BFT_PROBLEM_MULTI_LABEL) instead: example i
     * has the labels label_ids[label_offsets[i] .. label_offsets[i+1]) (class ids in
     * [0, K); none: every target 0); both NULL for unlabeled data. */
    const int64_t *label_offsets; /* (n + 1) */
    const int32_t *label_ids;
} bft_dataset;

typedef struct bft_train_opts {
    int epochs;              /* > 0 */
    int batch_size;          /* default 8 */
    /* The optimizer's hyper-parameters are doubles, as Trainer's Python floats:
     * warmup steps = ceil(total_steps * warmup_ratio) in double gives Trainer's
     * count (20 steps x 0.1 -> 2; in float, 0.1f makes it 3). */
    double learning_rate;    /* default 5e-5 */
    double warmup_ratio;     /* default 0; warmup steps = ceil(total_steps * ratio) */
    double weight_decay;     /* default 0; never on biases / LayerNorm weights */
    float max_grad_norm;     /* default 1.0; <= 0 disables clipping */
    double adam_beta1, adam_beta2, adam_eps; /* 0.9, 0.999, 1e-8 */
    float dropout;           /* < 0: keep the config's probabilities; else overrides all */
    int shuffle;             /* 1: reshuffle every epoch from seed; 0: dataset order */
    int group_by_length;     /* 1: length-grouped batches (HF group_by_length) */
    uint64_t seed;           /* shuffling, dropout, fresh heads */
    const bft_dataset *valid;/* optional: evaluated after every epoch */
    float mlm_probability;   /* bft_pretrain_mlm only: default 0.15 (80/10/10) */
    const float *class_weights; /* bft_train only: (K) positive finite weights, or NULL
                              * (default): weighted cross-entropy as torch
                              * CrossEntropyLoss(weight=class_weights), i.e. a batch's loss
                              * is sum_r w[y_r] loss_r / sum_r w[y_r]. The evaluation
                              * loss (eval_loss) stays the unweighted mean. */
    /* Optional cancellation poll, called on the calling thread between the
     * encoder layers of every forward and backward pass (training steps and
     * the per-epoch evaluation), i.e. many times per optimizer step: a BERT-base
     * step on a CPU can take seconds, too long to wait for the progress
     * callback. Nonzero stops the call like a progress callback returning
     * nonzero (everything freed, BFT_ECANCEL). NULL (default): no polling. */
    int (*poll)(void *ctx);
    void *poll_ctx;
    /* Best epoch and early stopping (bft_train only; need valid), as HF Trainer's
     * load_best_model_at_end / metric_for_best_model / EarlyStoppingCallback:
     * after each epoch's evaluation an epoch is the best so far when its metric
     * is strictly better than every earlier epoch's. */
    int load_best_model_at_end;  /* 1: end with the best epoch's weights (a copy
                              * of the parameters is kept); 0 (default): the last */
    int metric_for_best;     /* BFT_METRIC_LOSS (default, lower is better),
                              * BFT_METRIC_ACCURACY or BFT_METRIC_MACRO_F1 */
    int early_stopping_patience; /* > 0: stop once this many epochs in a row did
                              * not improve on the best; 0 (default): never */
    /* Resuming (bft_train and bft_pretrain_mlm). state_path: after every
     * completed epoch the whole training state (parameters, AdamW moments,
     * the best epoch's parameters, step, loss sums, generators, history) is
     * written there atomically (NULL: never). resume_path: continue from the
     * state saved there instead of starting (NULL: start); the result is that
     * of the uninterrupted run, bit for bit, with the same threads and device.
     * A state whose fingerprint (data, validation set, these options except
     * the paths and callbacks, the model's shape, state_salt) differs is
     * BFT_EMISMATCH. */
    const char *state_path;
    const char *resume_path;
    uint64_t state_salt;     /* the host's fingerprint of what the engine cannot see
                              * (e.g. how the model was made) */
    const void *state_note;  /* opaque bytes (<= BFT_STATE_NOTE_MAX) stored with the state */
    size_t state_note_len;
    int device;              /* BFT_DEVICE_CPU (default) or BFT_DEVICE_CUDA: where the whole
                              * step runs; CUDA without a usable GPU is BFT_EDEVICE, never a
                              * silent fallback */
    int precision;           /* BFT_PRECISION_AUTO (default: bf16 mixed precision on CUDA,
                              * fp32 on the CPU), _FP32 or _BF16 (CUDA only) */
} bft_train_opts;

#define BFT_STATE_NOTE_MAX 4096

/* What a training state file holds (bft_train_state_info). */
typedef struct bft_train_state_info_t {
    int task;                /* 0 fine-tuning (bft_train), 1 MLM (bft_pretrain_mlm) */
    int epochs;              /* the run's epochs */
    int epochs_done;         /* completed epochs saved */
    int64_t step;
    uint64_t fingerprint;
    int64_t bytes;           /* file size */
    size_t note_len;
    char note[BFT_STATE_NOTE_MAX];
} bft_train_state_info_t;

/* Read the header of the training state at path (bft_train_opts.state_path)
 * without its arrays. BFT_OK, or BFT_EIO / BFT_EFORMAT with err. */
int bft_train_state_info(const char *path, bft_train_state_info_t *info, bft_error *err);

/* Continue the 64-bit hash h (start with 0) over n bytes at p: for
 * bft_train_opts.state_salt (e.g. the initial weights and the vocabulary). */
uint64_t bft_train_hash(uint64_t h, const void *p, size_t n);

/* Metrics for bft_train_opts.metric_for_best. */
#define BFT_METRIC_LOSS 0
#define BFT_METRIC_ACCURACY 1
#define BFT_METRIC_MACRO_F1 2

/* Compute devices and precisions (bft_train_opts.device / .precision, bft_set_device). */
#define BFT_DEVICE_CPU 0
#define BFT_DEVICE_CUDA 1
#define BFT_PRECISION_AUTO 0
#define BFT_PRECISION_FP32 1
#define BFT_PRECISION_BF16 2

/* Trainer defaults as above. */
bft_train_opts bft_train_default_opts(void);

typedef struct bft_progress {
    int phase;               /* 0 training step, 1 end of epoch (eval fields set) */
    int epoch;               /* 1-based */
    int epochs;
    int64_t step;            /* optimizer steps done, over all epochs */
    int64_t total_steps;
    float loss;              /* mean loss over the steps of this epoch so far */
    float step_loss;         /* phase 0: the loss of this step's batch (Trainer's
                              * per-step log with logging_steps=1) */
    double lr;               /* learning rate of the last step */
    double samples_per_s;
    double elapsed_s;
    double eta_s;
    /* phase 1 only, when opts.valid is set (else NaN): */
    float eval_loss, eval_accuracy, eval_macro_f1;
    int restored;            /* phase 1: an epoch completed before, replayed from the
                              * resumed state (nothing was computed now) */
} bft_progress;

/* Called after every optimizer step and at each epoch end, on the calling
 * thread. Return nonzero to stop: the engine frees everything and returns
 * BFT_ECANCEL. */
typedef int (*bft_progress_fn)(void *ctx, const bft_progress *p);

typedef struct bft_train_result {
    int64_t steps;
    int64_t warmup_steps;    /* ceil(total steps * warmup_ratio), as Trainer */
    int epochs;
    float train_loss;        /* mean over all steps (HF train_loss) */
    float last_epoch_loss;
    double samples_per_s;
    double seconds;
    float eval_loss, eval_accuracy, eval_macro_f1; /* of the weights returned: the last
                              * epoch, or the best with load_best_model_at_end; NaN
                              * when no valid */
    int best_epoch;          /* 1-based epoch of the best metric (0 without valid) */
    float best_metric;       /* its value of metric_for_best (NaN without valid) */
    int kept_epoch;          /* the epoch whose weights were returned */
    int early_stopped;       /* 1: stopped by early_stopping_patience before epochs */
    int resumed_epochs;      /* completed epochs taken from resume_path (0: none) */
} bft_train_result;

/* Fine-tune m (needs a classifier) on ds with labels in [0, K). AdamW as
 * torch.optim.AdamW, linear warmup/decay schedule (first update uses step 0),
 * gradient clipping, loss = mean over the batch, last partial batch kept.
 * Same seed, data and thread count give identical weights. */
int bft_train(bft_model *m, const bft_dataset *ds, const bft_train_opts *opts,
              bft_progress_fn progress, void *ctx, bft_train_result *res, bft_error *err);

/* Masked-language-model pre-training of m (needs the MLM head) on ds
 * (labels ignored): mlm_probability of non-special tokens chosen, 80% [MASK],
 * 10% random, 10% kept, as DataCollatorForLanguageModeling. */
int bft_pretrain_mlm(bft_model *m, const bft_dataset *ds, const bft_train_opts *opts,
                     bft_progress_fn progress, void *ctx, bft_train_result *res, bft_error *err);

/* Eval-mode class probabilities for every example: probs is (ds->n, K) row-major.
 * Batches of batch_size (<= 0: 32) sorted by length internally; order of
 * output rows = dataset order. */
int bft_predict(const bft_model *m, const bft_dataset *ds, int batch_size,
                float *probs, bft_error *err);

/* bft_predict with a cancellation poll (see bft_train_opts.poll): polled
 * between encoder layers and batches; nonzero stops with BFT_ECANCEL. */
int bft_predict_poll(const bft_model *m, const bft_dataset *ds, int batch_size, float *probs,
                     int (*poll)(void *ctx), void *poll_ctx, bft_error *err);

/* Eval-mode mean cross-entropy, accuracy and macro-F1 over a labeled dataset;
 * confusion (K*K, row = true, col = predicted) filled when not NULL.
 * Multi-label models: mean binary cross-entropy, subset accuracy (the labels
 * with probability >= 0.5 are exactly the true ones) and macro-F1 over all K
 * labels (a label never true nor predicted counts 0, as scikit-learn);
 * confusion is left untouched. */
int bft_evaluate_ds(const bft_model *m, const bft_dataset *ds, int batch_size,
                    float *loss, float *accuracy, float *macro_f1,
                    int64_t *confusion, bft_error *err);

/* Top-k fill-mask at every [MASK] of one encoded sequence (ids with [CLS]/[SEP]).
 * Results for mask j (in order of position) are at out_ids/out_scores[j*top_k ..].
 * *n_masks receives the number of masks (0: nothing written). Scores are
 * softmax probabilities over the vocabulary. Needs the MLM head. */
int bft_fill_mask(const bft_model *m, const int32_t *ids, int n, int top_k,
                  int max_masks, int *n_masks, int32_t *out_ids, float *out_scores,
                  bft_error *err);

/* Device and precision of the inference calls (bft_predict, bft_evaluate_ds,
 * bft_fill_mask) of this process: BFT_DEVICE_CPU (the default) or
 * BFT_DEVICE_CUDA. Checks the device now (CUDA is initialised here, lazily,
 * never at library load): BFT_EDEVICE with the reason when there is no usable
 * GPU or bft was built without CUDA, and the setting is left unchanged.
 * On CUDA the weights of the last 4 models used stay on the GPU until they are
 * displaced or bft_device_release() is called. */
int bft_set_device(int device, int precision, bft_error *err);

/* BFT_OK when device can be used in this process (CUDA: initialised now), else
 * BFT_EDEVICE with the reason ("bft was built without CUDA", "no CUDA device: ...").
 * Changes no setting. */
int bft_device_available(int device, bft_error *err);

/* "cpu", or the CUDA device's name once initialised ("NVIDIA H100 80GB HBM3
 * (sm_90, 79.1 GiB)"), else "cuda". */
const char *bft_device_name(int device);

/* The current inference device and precision (either may be NULL). */
void bft_get_device(int *device, int *precision);

/* Parse "cpu" / "cuda" (also "gpu", "cuda:0") into BFT_DEVICE_*; -1 if unknown. */
int bft_device_parse(const char *name);

/* Free the GPU copies of the weights kept for inference (no-op without any). */
void bft_device_release(void);

/* Threads used by BLAS and the engine's own loops (<= 0: number of CPUs).
 * Takes effect on the next call; threads are created lazily on first use. */
void bft_set_threads(int n);

#endif
