/*
 * resource.h — what the engine may use of its host: a memory budget that
 * bounds the large allocations of one engine call, memory estimates that let
 * the host refuse a model, batch or vocabulary before any work starts, and an
 * interrupt hook that long loops poll so the host can cancel them.
 *
 * The host (the PostgreSQL glue, bft-cli) sets both per thread; threads that
 * never set them have no budget (unlimited) and no hook (never interrupted).
 * Letters as in model.h: V vocab, P positions, C hidden, L layers, NH heads,
 * I intermediate, K labels, B batch, T tokens.
 */
#ifndef BFT_RESOURCE_H
#define BFT_RESOURCE_H

#include <stddef.h>

#include "model.h"

/* ---- memory -------------------------------------------------------------- */

/* Budget in bytes for the calling thread's next engine calls (0: unlimited).
 * Loading or creating a model whose parameter block, or reading a model
 * directory whose files, would exceed it fails with BFT_ENOMEM before
 * allocating. */
void bft_set_memory_budget(size_t bytes);

/* The calling thread's budget (0: unlimited). */
size_t bft_memory_budget(void);

/* BFT_OK when bytes fit the calling thread's budget; otherwise BFT_ENOMEM
 * with a message "<what> needs N MB, more than the memory limit (M MB)". */
int bft_memory_check(size_t bytes, const char *what, bft_error *err);

/* Bytes of a loaded model: the parameter block (4 bytes per parameter of the
 * layout) plus the vocabulary and its tokenizer tables (vocab_bytes of
 * vocab.txt). */
size_t bft_mem_model_bytes(const bft_config *cfg, bft_parts parts, size_t vocab_bytes);

/* Bytes a training of a loaded model needs on top of the model itself:
 * gradients and both AdamW moments (12 bytes per parameter), the training
 * activations for batches of B sequences of T tokens, the evaluation
 * activations (validation), and with mlm the masked-LM head's workspace for up
 * to B*T masked rows ((B*T, V) logits and their gradient). K: labels. */
size_t bft_mem_train_bytes(const bft_config *cfg, bft_parts parts, int K, int B, int T, int mlm);

/* Bytes an inference call needs on top of the model: activations of one
 * batch of B sequences of T tokens (one layer slot). */
size_t bft_mem_infer_bytes(const bft_config *cfg, int K, int B, int T);

/* ---- interrupts ---------------------------------------------------------- */

/* Install the calling thread's interrupt hook: poll(ctx) returns nonzero when
 * the current engine call must stop. NULL removes it. */
void bft_set_interrupt_hook(int (*poll)(void *ctx), void *ctx);

/* Ask the calling thread's hook (0 without one). Loops that can run for
 * long (normalising a huge text, learning a vocabulary, initialising or
 * loading a large model, reading files) call it every few milliseconds of
 * work and return BFT_ECANCEL once it answers nonzero. Never call it from a
 * worker thread: the host's hook is only valid on the thread that set it. */
int bft_interrupted(void);

#endif
