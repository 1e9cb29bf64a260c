/*
 * tokenizer.h — Hugging Face BertTokenizer (BasicTokenizer + WordPiece),
 * bit-for-bit, plus WordPiece vocabulary learning for from-scratch models.
 *
 * Ids produced by bft_encode are exactly those of Hugging Face tokenizers'
 * BertTokenizerFast (Rust) with the same vocab.txt and settings.
 * A tokenizer is immutable after creation and safe to share between threads.
 */
#ifndef BFT_TOKENIZER_H
#define BFT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"

typedef struct bft_tokenizer_opts {
    int do_lower_case;          /* 1: lower-case (uncased models); HF default 1 */
    int strip_accents;          /* -1: follow do_lower_case (HF None); 0/1 explicit */
    int tokenize_chinese_chars; /* HF default 1 */
    int model_max_length;       /* 0: unknown; informational (callers pass max_length) */
} bft_tokenizer_opts;

/* HF defaults: do_lower_case=1, strip_accents=-1, tokenize_chinese_chars=1, model_max_length=512. */
bft_tokenizer_opts bft_tokenizer_default_opts(void);

typedef struct bft_tokenizer bft_tokenizer;

/* Build a tokenizer from vocab.txt bytes (one token per line, id = line number,
 * LF or CRLF). The bytes are copied. Returns NULL and fills err on failure
 * (empty vocabulary, missing [UNK], ...). */
bft_tokenizer *bft_tokenizer_new(const char *vocab, size_t vocab_len,
                                 const bft_tokenizer_opts *opts, bft_error *err);

/* Free a tokenizer (NULL is fine). */
void bft_tokenizer_free(bft_tokenizer *tok);

/* Settings the tokenizer was built with. */
bft_tokenizer_opts bft_tokenizer_get_opts(const bft_tokenizer *tok);

/* Number of tokens in the vocabulary. */
int bft_tokenizer_vocab_size(const bft_tokenizer *tok);

/* Token string of an id (NUL-terminated, owned by tok), or NULL if out of range. */
const char *bft_tokenizer_token(const bft_tokenizer *tok, int id);

/* Id of an exact token string, or -1. */
int bft_tokenizer_token_id(const bft_tokenizer *tok, const char *token);

/* Ids of the special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]); -1 if absent
 * ([UNK] is always present). */
typedef struct bft_special_ids { int cls, sep, pad, mask, unk; } bft_special_ids;
bft_special_ids bft_tokenizer_special(const bft_tokenizer *tok);

/* Encode one UTF-8 text (len bytes, need not be NUL-terminated; invalid UTF-8
 * is handled as documented in tokenizer.c) as [CLS] pieces… [SEP], truncating
 * the pieces so the total is at most max_length (max_length >= 2).
 * out_ids must hold max_length ids. Returns the number of ids written
 * (2..max_length), or -1 with err set (e.g. out of memory; BFT_ECANCEL when
 * interrupted, resource.h). Work stops once max_length ids are out, so a
 * huge text costs memory and time bounded by max_length (plus a scan for
 * special tokens), not by its size. */
int bft_encode(const bft_tokenizer *tok, const char *text, size_t len,
               int max_length, int32_t *out_ids, bft_error *err);

/* Encode without [CLS]/[SEP] and without truncation. *out_ids receives a
 * malloc'd array (caller frees) of *out_n ids. Returns 0 or -1 with err. */
int bft_encode_pieces(const bft_tokenizer *tok, const char *text, size_t len,
                      int32_t **out_ids, size_t *out_n, bft_error *err);

/* Decode ids to text like the tokenizers library's decode() (WordPiece
 * decoder with clean-up): tokens joined by spaces, "##" pieces merged into
 * the previous word, a space before a token that is just . ? ! or , removed;
 * special tokens dropped when skip_special; ids out of range left out.
 * Returns a malloc'd NUL-terminated string (caller frees) or NULL on OOM. */
char *bft_decode(const bft_tokenizer *tok, const int32_t *ids, size_t n, int skip_special);

/*
 * WordPiece vocabulary learning (in the manner of HF WordPieceTrainer):
 * special tokens first ([PAD] [UNK] [CLS] [SEP] [MASK], so [PAD]=0),
 * then every character seen (with "##" continuation forms), then merges,
 * until vocab_size tokens. Texts are pre-tokenized with the same
 * BasicTokenizer settings as opts. Deterministic for the same input order.
 */
typedef struct bft_wp_trainer bft_wp_trainer;

/* New trainer for a vocabulary of vocab_size tokens (>= 100). min_frequency: pairs seen fewer times are not merged (HF default 2... use 0 for HF's default). */
bft_wp_trainer *bft_wp_trainer_new(const bft_tokenizer_opts *opts, int vocab_size,
                                   int min_frequency, bft_error *err);

/* Bound the memory of learning (the word table and bft_wp_trainer_finish) to
 * about bytes (0: unbounded). When the table of distinct words would exceed
 * it, the words seen fewest times are dropped (counts of words seen again
 * later start over), so a huge column still learns a vocabulary of its
 * frequent words. */
void bft_wp_trainer_set_memory(bft_wp_trainer *tr, size_t bytes);

/* Distinct words in the table; *pruned: distinct words dropped so far;
 * *min_count: the last pruning dropped words seen fewer times than this. */
size_t bft_wp_trainer_stats(const bft_wp_trainer *tr, size_t *pruned, long long *min_count);

/* Feed one training text (words longer than 4096 bytes are not learned
 * from). Returns 0 or -1 with err (BFT_ECANCEL when interrupted,
 * resource.h). */
int bft_wp_trainer_feed(bft_wp_trainer *tr, const char *text, size_t len, bft_error *err);

/* Learn the vocabulary; returns malloc'd vocab.txt bytes (caller frees, length in *out_len)
 * or NULL with err (BFT_ECANCEL when interrupted, resource.h). The trainer
 * stays valid and must still be freed. */
char *bft_wp_trainer_finish(bft_wp_trainer *tr, size_t *out_len, bft_error *err);

/* Change the vocabulary size (>= 100) before bft_wp_trainer_finish (e.g.
 * once the texts were counted). Returns 0 or an error code with err. */
int bft_wp_trainer_set_vocab_size(bft_wp_trainer *tr, int vocab_size, bft_error *err);

/* Free a trainer (NULL is fine). */
void bft_wp_trainer_free(bft_wp_trainer *tr);

#endif
