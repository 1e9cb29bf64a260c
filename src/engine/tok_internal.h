/*
 * tok_internal.h — engine-internal pieces shared by tokenizer.c (encode) and
 * wordpiece_train.c (vocabulary learning): the BERT normalizer +
 * pre-tokenizer pipeline and small growable buffers. Not a public API.
 */
#ifndef BFT_TOK_INTERNAL_H
#define BFT_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <unicode/utypes.h>

#define TOK_MAX_SPECIALS 8
#define TOK_STACK_BYTES 2048

/* Sections (text between special tokens) of up to TOK_STREAM_MIN bytes are
 * normalized whole; longer ones stream through windows of about TOK_WINDOW
 * cleaned bytes, so memory stays bounded whatever the text's size and a
 * consumer that has enough tokens stops the work early (truncation before
 * normalization). A window ends at a split point where the normalizer has no
 * context across it (see tokenizer.c); TOK_FORCE bytes without one are split
 * anyway. Words longer than TOK_MAX_WORD bytes (far above WordPiece's 100
 * characters) reach the sink as long_word, not as bytes. */
#define TOK_STREAM_MIN (64 * 1024)
#define TOK_WINDOW (16 * 1024)
#define TOK_FORCE (256 * 1024)
#define TOK_MAX_WORD 4096

/* The streaming sizes in use (TOK_STREAM_MIN, TOK_WINDOW, TOK_FORCE): tests
 * and the fuzzer change them to compare streamed tokens with those of the
 * whole-section path on small inputs; tok_stream_forced counts windows that
 * were split without a split point. Not thread-safe to change. */
extern size_t tok_stream_min, tok_stream_window, tok_stream_force;
extern unsigned long tok_stream_forced;

/* Growable byte buffer; starts on caller-provided storage (no malloc for
 * short texts), moves to the heap when it outgrows it. */
typedef struct tok_buf {
    char *p;
    size_t n, cap;
    int heap;
} tok_buf;

/* Growable UTF-16 buffer (heap only; used for non-ASCII chunks). */
typedef struct tok_ubuf {
    UChar *p;
    int32_t cap;
} tok_ubuf;

/* Per-call scratch space for tok_process(); all heap memory is released by
 * tok_ws_free(). */
typedef struct tok_ws {
    tok_buf a, b;               /* normalized section / chunk transform scratch */
    tok_buf w;                  /* streaming: the word continuing into the next window */
    tok_ubuf u1, u2;            /* UTF-16 scratch for ICU */
    char sa[TOK_STACK_BYTES], sb[TOK_STACK_BYTES], sw[256];
} tok_ws;

/* Normalizer settings plus the special tokens that are split out of the raw
 * text before normalization (HF added tokens with normalized=false). */
typedef struct tok_norm {
    int lower;                  /* lower-case (full Unicode mapping, ICU root locale) */
    int strip;                  /* NFD + drop Mn */
    int chinese;                /* put spaces around CJK ideographs */
    int nspec;
    const char *spec[TOK_MAX_SPECIALS];
    int spec_len[TOK_MAX_SPECIALS];
    uint8_t spec_first[256];    /* 1 where some special starts with that byte */
    int spec_byte;              /* the first byte of every special when they share it, else -1 */
    uint8_t cls[256];           /* byte classes for the ASCII fast paths */
} tok_norm;

/* Receives the pre-tokenized stream: special tokens (index into tok_norm.spec)
 * and words (valid UTF-8, no whitespace; a punctuation character is a word of
 * its own); a word of more than TOK_MAX_WORD bytes in a streamed section comes
 * as long_word (its bytes are not kept). A nonzero return stops processing
 * early (not an error). */
typedef struct tok_sink {
    int (*special)(void *ctx, int spec_index);
    int (*word)(void *ctx, const char *w, size_t len);
    void *ctx;
    int (*long_word)(void *ctx);
} tok_sink;

void tok_ws_init(tok_ws *ws);
void tok_ws_free(tok_ws *ws);

/* Fill n->spec_first (from n->spec / n->spec_len) and n->cls. */
void tok_norm_finish(tok_norm *n);

/* Run the BERT normalizer + pre-tokenizer over text[0..len) and feed the
 * sink. Returns 0, 1 if the sink stopped early, -1 on out of memory, or
 * TOK_INTERRUPTED when bft_interrupted() (resource.h) asked to stop. */
#define TOK_INTERRUPTED (-2)
int tok_process(const tok_norm *n, const char *text, size_t len, tok_ws *ws,
                const tok_sink *sink);

/* Decode one strict UTF-8 sequence at s[0..n) (n >= 1). Returns its length
 * (1..4) and the code point, or 0 if the bytes are not valid UTF-8
 * (overlong forms, surrogates, > U+10FFFF, truncated sequences). */
static inline int tok_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b0 = s[0];
    if (b0 < 0x80) { *cp = b0; return 1; }
    if (b0 < 0xC2) return 0;
    if (b0 < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        *cp = ((uint32_t)(b0 & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (b0 < 0xF0) {
        if (n < 3) return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b0 == 0xE0) lo = 0xA0;
        else if (b0 == 0xED) hi = 0x9F;
        if (s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80) return 0;
        *cp = ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    if (b0 < 0xF5) {
        if (n < 4) return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b0 == 0xF0) lo = 0x90;
        else if (b0 == 0xF4) hi = 0x8F;
        if (s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        *cp = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
              ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return 4;
    }
    return 0;
}

/* Encode a code point as UTF-8 into out (>= 4 bytes); returns the length. */
static inline int tok_utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Make room for extra more bytes; returns 0 or -1 on out of memory. */
int tok_buf_reserve(tok_buf *b, size_t extra);

/* 64-bit hash of a byte string (vocabulary and trainer hash tables). */
static inline uint64_t tok_hash(const char *s, size_t n, uint64_t seed)
{
    const uint64_t m = 0x9E3779B97F4A7C15ull;
    uint64_t h = seed ^ ((uint64_t)n * m);
    const unsigned char *p = (const unsigned char *)s;
    while (n >= 8) {
        uint64_t v;
        __builtin_memcpy(&v, p, 8);
        h = (h ^ v) * m;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    h = (h ^ v) * m;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
}

#endif
