/*
 * resource.c — memory budget, memory estimates and the interrupt hook (see
 * resource.h).
 */
#include "resource.h"

#include <stdint.h>

static _Thread_local size_t budget;
static _Thread_local int (*hook)(void *ctx);
static _Thread_local void *hook_ctx;

void bft_set_memory_budget(size_t bytes)
{
    budget = bytes;
}

size_t bft_memory_budget(void)
{
    return budget;
}

int bft_memory_check(size_t bytes, const char *what, bft_error *err)
{
    if (budget == 0 || bytes <= budget)
        return BFT_OK;
    return bft_set_error(err, BFT_ENOMEM, "%s needs %zu MB, more than the memory limit (%zu MB)", what,
                         (bytes + (1u << 20) - 1) >> 20, budget >> 20);
}

/* Estimates are computed in double and clamped: absurd shapes (a batch of
 * 65536 sequences of 8192 tokens) must give a huge number, never a wrapped
 * small one. */
static size_t clamp(double x)
{
    return x >= (double)SIZE_MAX ? SIZE_MAX : (size_t)x;
}

/* Floats of bert_acts_alloc (bert.c) for (B, T): per layer slot qkv, ctx,
 * res1, ln1, res2, ln2 (B,T,C), fch (B,T,I), LayerNorm statistics, the
 * attention probabilities (B,NH,T,T) when training; backward scratch; plus the
 * 16-float alignment of each of the ~40 buffers. */
static double acts_floats(const bft_config *cfg, int K, int B, int T, int train)
{
    double C = cfg->hidden_size, I = cfg->intermediate_size, NH = cfg->num_attention_heads;
    double S = train ? cfg->num_hidden_layers : 1, b = B > 0 ? B : 1, t = T > 0 ? T : 1;
    double k = K > 0 ? K : 1, BT = b * t, BTC = BT * C, BTI = BT * I;
    double f = 2 * BTC + 2 * BT;                              /* embeddings */
    f += S * (8 * BTC + 4 * BT + BTI + (train ? b * NH * t * t : 0));
    f += BTI + 5 * b * C + 3 * b * k + 3 * b;                  /* gelu, [CLS], pooler, head */
    if (train)
        f += 6 * BTC + BTI + b * k + 2 * b * C;               /* dA dB dC dqkv dI dlogits dpool dhcls */
    return f + 40 * 16;
}

/* Parameters of the layout, in double (bft_params_count could wrap). */
static double params_d(const bft_config *cfg, bft_parts parts)
{
    double V = cfg->vocab_size, P = cfg->max_position_embeddings, Tt = cfg->type_vocab_size;
    double C = cfg->hidden_size, L = cfg->num_hidden_layers, I = cfg->intermediate_size;
    double K = parts.classifier ? cfg->num_labels : 0;
    double n = (V + P + Tt + 2) * C + L * (4 * C * C + 2 * C * I + 9 * C + I);
    if (parts.pooler)
        n += C * C + C;
    n += K * C + K;
    if (parts.mlm)
        n += C * C + 3 * C + V;
    return n;
}

size_t bft_mem_model_bytes(const bft_config *cfg, bft_parts parts, size_t vocab_bytes)
{
    /* parameters, vocab.txt copy + the tokenizer's strings, offsets and hash slots */
    return clamp(params_d(cfg, parts) * sizeof(float) + 2.0 * (double)vocab_bytes +
                 32.0 * (cfg->vocab_size > 0 ? cfg->vocab_size : 0));
}

size_t bft_mem_train_bytes(const bft_config *cfg, bft_parts parts, int K, int B, int T, int mlm)
{
    double bt = (double)(B > 0 ? B : 1) * (T > 0 ? T : 1);
    double f = 3 * params_d(cfg, parts);              /* gradients, AdamW m and v */
    f += acts_floats(cfg, K, B, T, 1);                /* training activations */
    f += acts_floats(cfg, K, B, T, 0);                /* evaluation */
    f += bt * 8;                                      /* ids, masks, rows, labels (host and device) */
    if (mlm)                                          /* bert_mlm_reserve for M = B*T rows */
        f += bt * (6.0 * cfg->hidden_size + 3 + 2.0 * cfg->vocab_size);
    return clamp(f * sizeof(float));
}

size_t bft_mem_infer_bytes(const bft_config *cfg, int K, int B, int T)
{
    double bt = (double)(B > 0 ? B : 1) * (T > 0 ? T : 1);
    return clamp((acts_floats(cfg, K, B, T, 0) + bt * 4) * sizeof(float));
}

void bft_set_interrupt_hook(int (*poll)(void *ctx), void *ctx)
{
    hook = poll;
    hook_ctx = ctx;
}

int bft_interrupted(void)
{
    return hook ? hook(hook_ctx) != 0 : 0;
}
