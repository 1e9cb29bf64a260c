/*
 * tokenizer.c — Hugging Face BertTokenizer (BertNormalizer + BertPreTokenizer
 * + WordPiece + [CLS]/[SEP] template), bit-for-bit against the reference
 * Hugging Face `tokenizers` (Rust; BertTokenizerFast in Python) with the
 * bert-base vocabularies and the all-MiniLM-L6-v2 tokenizer; goldens in
 * tests/data/tok/ (tests/hf/tok_goldens.py), test in
 * tests/engine/test_tokenizer.c.
 *
 * Pipeline for one text, exactly in the reference's order:
 *  1. Special tokens present in the vocabulary ([PAD] [UNK] [CLS] [SEP]
 *     [MASK]) are split out of the RAW text (longest match, anywhere, even
 *     inside words; before lower-casing, so "[mask]" is not special in the
 *     uncased model). Each remaining section is normalized on its own; a
 *     section that becomes "[MASK]" only after normalization (say
 *     "[MA\u200BSK]") is ordinary text.
 *  2. clean_text: drop NUL, U+FFFD and "control" characters (categories Cc,
 *     Cf, Co, Cs, except \t \n \r; U+FEFF and U+0085 are dropped too);
 *     every other whitespace character (\t \n \r, Zs, U+2028, U+2029)
 *     becomes a space. Unassigned code points (Cn) are kept.
 *  3. handle_chinese_chars: spaces around CJK ideographs, the ranges of the
 *     Rust BertNormalizer: U+3400–4DBF, U+4E00–9FFF, U+F900–FAFF,
 *     U+20000–2A6DF, U+2A700–2B81F, U+2B920–2CEAF, U+2F800–2FA1F.
 *  4. lowercase (do_lower_case): Unicode lower-casing character by character
 *     (full mappings: 'İ' → "i̇"; no final-sigma rule: "ΟΔΟΣ" → "οδοσ").
 *  5. strip_accents (when lower-casing unless strip_accents=0, or when
 *     strip_accents=1): NFD, then drop non-spacing marks (Mn).
 *  6. Pre-tokenize: split on whitespace; each punctuation character (Unicode
 *     P* or any ASCII non-alphanumeric symbol) is a word of its own.
 *  7. WordPiece: greedy longest-match-first with "##" continuations; a word
 *     of more than 100 code points, or with an unmatched rest, is [UNK].
 *  8. [CLS] pieces [SEP]; truncation keeps the first max_length-2 pieces.
 * Unicode properties, case mapping and NFD come from ICU (no tables here);
 * the fast paths for ASCII bytes give exactly what ICU would.
 *
 * Invalid UTF-8: a byte sequence that is not strict UTF-8 (stray
 * continuation bytes, overlong forms, UTF-8-encoded surrogates, code points
 * above U+10FFFF, truncated sequences) is what a lossy decoder (Node's
 * TextDecoder, Rust's String::from_utf8_lossy, Python's errors="replace")
 * turns into U+FFFD, and clean_text drops U+FFFD. So invalid bytes are
 * simply dropped: "a\xFFb" encodes like "ab". Valid characters around them
 * are never lost.
 *
 * Unicode data: ICU 72 (Unicode 15.0) here vs the Unicode tables compiled
 * into the reference; characters assigned after Unicode 15.0 may differ in
 * category.
 */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "resource.h"
#include "tok_internal.h"

/* ------------------------------------------------------------------ */
/* buffers                                                             */

int tok_buf_reserve(tok_buf *b, size_t extra)
{
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p;
    if (b->heap) {
        p = realloc(b->p, cap);
        if (!p) return -1;
    } else {
        p = malloc(cap);
        if (!p) return -1;
        if (b->n) memcpy(p, b->p, b->n);
    }
    b->p = p;
    b->cap = cap;
    b->heap = 1;
    return 0;
}

static int ubuf_reserve(tok_ubuf *u, int32_t need)
{
    if (need <= u->cap) return 0;
    int32_t cap = u->cap ? u->cap : 256;
    while (cap < need) {
        if (cap > INT32_MAX / 2) return -1;
        cap *= 2;
    }
    UChar *p = realloc(u->p, (size_t)cap * sizeof(UChar));
    if (!p) return -1;
    u->p = p;
    u->cap = cap;
    return 0;
}

void tok_ws_init(tok_ws *ws)
{
    ws->a = (tok_buf){ws->sa, 0, sizeof ws->sa, 0};
    ws->b = (tok_buf){ws->sb, 0, sizeof ws->sb, 0};
    ws->w = (tok_buf){ws->sw, 0, sizeof ws->sw, 0};
    ws->u1 = (tok_ubuf){NULL, 0};
    ws->u2 = (tok_ubuf){NULL, 0};
}

void tok_ws_free(tok_ws *ws)
{
    if (ws->a.heap) free(ws->a.p);
    if (ws->b.heap) free(ws->b.p);
    if (ws->w.heap) free(ws->w.p);
    free(ws->u1.p);
    free(ws->u2.p);
    tok_ws_init(ws);
}

/* ------------------------------------------------------------------ */
/* character classes                                                   */

/* Byte classes for the ASCII fast paths. */
enum { C_DROP = 0, C_SPACE = 1, C_PUNCT = 2, C_WORD = 3, C_HIGH = 4 };

/* Whitespace (Unicode White_Space) for a non-ASCII code point that survived
 * clean_text (U+0085 is a control character and does not). */
static inline int is_uspace(uint32_t cp)
{
    return cp == 0x2028 || cp == 0x2029 || u_charType((UChar32)cp) == U_SPACE_SEPARATOR;
}

/* The CJK ideograph ranges of the Rust BertNormalizer (is_chinese_char). */
static inline int is_cjk(uint32_t cp)
{
    if (cp < 0x3400) return 0;
    if (cp < 0x10000)
        return (cp >= 0x4E00 && cp <= 0x9FFF) || cp <= 0x4DBF || (cp >= 0xF900 && cp <= 0xFAFF);
    return (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B81F) ||
           (cp >= 0x2B920 && cp <= 0x2CEAF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static inline int is_dropped_type(int8_t t)
{
    return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_PRIVATE_USE_CHAR ||
           t == U_SURROGATE;
}

/* ------------------------------------------------------------------ */
/* normalizer                                                          */

void tok_norm_finish(tok_norm *n)
{
    for (int c = 0; c < 256; c++) {
        uint8_t k;
        if (c >= 0x80) k = C_HIGH;
        else if (c == '\t' || c == '\n' || c == '\r' || c == ' ') k = C_SPACE;
        else if (c < 0x20 || c == 0x7F) k = C_DROP;             /* NUL and Cc */
        else if ((c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) ||
                 (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E)) k = C_PUNCT;   /* HF _is_punctuation */
        else k = C_WORD;
        n->cls[c] = k;
    }
    memset(n->spec_first, 0, sizeof n->spec_first);
    int first = -1, shared = 1;
    for (int i = 0; i < n->nspec; i++)
        if (n->spec_len[i] > 0) {
            uint8_t b = (uint8_t)n->spec[i][0];
            n->spec_first[b] = 1;
            if (first < 0) first = b;
            else if (first != b) shared = 0;
        }
    n->spec_byte = shared ? first : -1;
}

/* Lower-case and/or NFD+strip-Mn one space-free chunk with ICU, appending
 * UTF-8 to out. Returns 0 or -1 (out of memory). */
static int transform_chunk(const tok_norm *n, const char *s, size_t len, tok_ws *ws,
                           tok_buf *out)
{
    UErrorCode st = U_ZERO_ERROR;
    if (len > INT32_MAX / 4) return -1;
    if (ubuf_reserve(&ws->u1, (int32_t)len + 1)) return -1;
    int32_t ulen = 0;
    u_strFromUTF8(ws->u1.p, ws->u1.cap, &ulen, s, (int32_t)len, &st);
    if (U_FAILURE(st)) return -1;   /* cannot happen: the chunk is valid UTF-8 */
    UChar *cur = ws->u1.p;
    if (n->lower) {
        /* character by character: the root locale's only context-dependent
         * mapping is final sigma, so writing σ for every Σ first (σ is cased
         * like Σ, the context of other characters is unchanged) gives the
         * per-character result */
        for (int32_t i = 0; i < ulen; i++)
            if (cur[i] == 0x03A3) cur[i] = 0x03C3;
        for (;;) {
            st = U_ZERO_ERROR;
            int32_t need = u_strToLower(ws->u2.p, ws->u2.cap, cur, ulen, "", &st);
            if (st == U_BUFFER_OVERFLOW_ERROR) {
                if (ubuf_reserve(&ws->u2, need + 1)) return -1;
                continue;
            }
            if (U_FAILURE(st)) return -1;
            ulen = need;
            break;
        }
        /* swap so that the result is in u1 */
        tok_ubuf t = ws->u1; ws->u1 = ws->u2; ws->u2 = t;
        cur = ws->u1.p;
    }
    if (n->strip) {
        st = U_ZERO_ERROR;
        const UNormalizer2 *nfd = unorm2_getNFDInstance(&st);
        if (U_FAILURE(st)) return -1;
        for (;;) {
            st = U_ZERO_ERROR;
            int32_t need = unorm2_normalize(nfd, cur, ulen, ws->u2.p, ws->u2.cap, &st);
            if (st == U_BUFFER_OVERFLOW_ERROR) {
                if (ubuf_reserve(&ws->u2, need + 1)) return -1;
                continue;
            }
            if (U_FAILURE(st)) return -1;
            ulen = need;
            break;
        }
        cur = ws->u2.p;
    }
    if (tok_buf_reserve(out, (size_t)ulen * 3 + 4)) return -1;
    char *o = out->p + out->n;
    for (int32_t i = 0; i < ulen;) {
        UChar32 c;
        U16_NEXT(cur, i, ulen, c);
        if (n->strip && u_charType(c) == U_NON_SPACING_MARK) continue;
        o += tok_utf8_encode((uint32_t)c, o);
    }
    out->n = (size_t)(o - out->p);
    return 0;
}

/* Step 2–3 (clean_text, CJK spacing) for raw bytes text[*pos..stop) of a
 * section of len bytes, appended to a; a character that starts before stop
 * is taken whole (the decoder sees the section's bytes up to len, as when the
 * section is cleaned in one go). Sets *nonascii when a non-ASCII character
 * was kept. Returns 0 or -1 (out of memory). */
static int clean_into(const tok_norm *n, const char *text, size_t len, size_t *pos, size_t stop,
                      tok_buf *a, int *nonascii)
{
    const uint8_t *cls = n->cls;
    const uint8_t *s = (const uint8_t *)text;
    size_t i = *pos;
    while (i < stop) {
        /* worst case per input byte: 3-byte char → 5 bytes; reserve in blocks */
        size_t block = stop - i < 1024 ? stop - i : 1024;
        if (tok_buf_reserve(a, block * 2 + 8)) return -1;
        size_t bstop = i + block;
        char *o = a->p + a->n;
        while (i < bstop) {
            uint8_t b = s[i];
            if (b < 0x80) {
                uint8_t c = cls[b];
                if (c >= C_PUNCT) {
                    *o++ = (char)((n->lower && b >= 'A' && b <= 'Z') ? b + 32 : b);
                } else if (c == C_SPACE) {
                    *o++ = ' ';
                }
                i++;
                continue;
            }
            uint32_t cp;
            int l = tok_utf8_decode(s + i, len - i, &cp);
            if (l == 0) { i++; continue; }       /* invalid UTF-8: U+FFFD, dropped */
            i += (size_t)l;
            if (cp == 0xFFFD) continue;
            int8_t t = u_charType((UChar32)cp);
            if (is_dropped_type(t)) continue;
            if (t == U_SPACE_SEPARATOR || cp == 0x2028 || cp == 0x2029) {
                *o++ = ' ';
                continue;
            }
            if (n->chinese && is_cjk(cp)) {
                *o++ = ' ';
                o += tok_utf8_encode(cp, o);
                *o++ = ' ';
                continue;
            }
            memcpy(o, s + i - l, (size_t)l);
            o += l;
            *nonascii = 1;
        }
        a->n = (size_t)(o - a->p);
    }
    *pos = i;
    return 0;
}

/* Steps 4–5 over cleaned bytes src[0..len), appended to out. Per
 * space-separated chunk: a space is neither cased nor case-ignorable and is
 * an NFD starter, so chunk-wise lower-casing and NFD
 * equal the whole-string operations. ASCII chunks are done already. */
static int transform_spaced(const tok_norm *n, const char *src, size_t len, tok_ws *ws,
                            tok_buf *out)
{
    size_t p = 0;
    while (p < len) {
        if (src[p] == ' ') {
            if (tok_buf_reserve(out, 1)) return -1;
            out->p[out->n++] = ' ';
            p++;
            continue;
        }
        size_t q = p;
        int hi = 0;
        while (q < len && src[q] != ' ') {
            hi |= (uint8_t)src[q] >= 0x80;
            q++;
        }
        if (hi) {
            if (transform_chunk(n, src + p, q - p, ws, out)) return -1;
        } else {
            if (tok_buf_reserve(out, q - p)) return -1;
            memcpy(out->p + out->n, src + p, q - p);
            out->n += q - p;
        }
        p = q;
    }
    return 0;
}

/* Steps 2–5 for one section: raw bytes → normalized UTF-8 in ws->a. */
static int normalize_section(const tok_norm *n, const char *text, size_t len, tok_ws *ws)
{
    int nonascii = 0;
    size_t i = 0;
    ws->a.n = 0;
    if (clean_into(n, text, len, &i, len, &ws->a, &nonascii)) return -1;
    if (!nonascii || !(n->lower || n->strip)) return 0;
    ws->b.n = 0;
    if (transform_spaced(n, ws->a.p, ws->a.n, ws, &ws->b)) return -1;
    tok_buf t = ws->a; ws->a = ws->b; ws->b = t;
    return 0;
}

/* Step 7 over normalized bytes s[0..n). tail == NULL: every word is given to
 * the sink. Otherwise a word that runs up to the end of s is not (it may
 * continue in the next window): *tail receives its start (n when there is
 * none). */
static int pretokenize(const uint8_t *cls, const char *s, size_t n, const tok_sink *sink,
                       size_t *tail)
{
    if (tail) *tail = n;
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint8_t b = u[i];
        uint32_t cp;
        int l;
        if (b < 0x80) {
            uint8_t c = cls[b];
            if (c == C_SPACE || c == C_DROP) { i++; continue; }
            if (c == C_PUNCT) {
                if (sink->word(sink->ctx, s + i, 1)) return 1;
                i++;
                continue;
            }
        } else {
            l = tok_utf8_decode(u + i, n - i, &cp);
            if (l == 0) { i++; continue; }          /* cannot happen */
            if (is_uspace(cp)) { i += (size_t)l; continue; }
            if (u_ispunct((UChar32)cp)) {
                if (sink->word(sink->ctx, s + i, (size_t)l)) return 1;
                i += (size_t)l;
                continue;
            }
        }
        /* a word: up to the next space or punctuation */
        size_t w = i;
        while (i < n) {
            b = u[i];
            if (b < 0x80) {
                if (cls[b] != C_WORD) break;
                i++;
                continue;
            }
            l = tok_utf8_decode(u + i, n - i, &cp);
            if (l == 0) break;
            if (is_uspace(cp) || u_ispunct((UChar32)cp)) break;
            i += (size_t)l;
        }
        if (i > w && i == n && tail) {
            *tail = w;
            return 0;
        }
        if (i > w && sink->word(sink->ctx, s + w, i - w)) return 1;
        if (i == w) i++;   /* defensive: never loop */
    }
    return 0;
}

/* Whole-section path (sections up to TOK_STREAM_MIN bytes): normalize,
 * pre-tokenize. */
static int process_section_whole(const tok_norm *n, const char *text, size_t len, tok_ws *ws,
                                 const tok_sink *sink)
{
    if (normalize_section(n, text, len, ws)) return -1;
    const char *a = ws->a.p;
    size_t an = ws->a.n;
    if (an == 0) return 0;
    return pretokenize(n->cls, a, an, sink, NULL);
}

/* ---- streaming (sections longer than TOK_STREAM_MIN bytes) ---- */

/* May a window end between x and y? Lower-casing is per character (no
 * context); NFD reorders non-starters. So a split between x and y is exact
 * when y (and its lower-case form) starts a new NFD segment (when stripping
 * accents), and always otherwise. */
static int split_ok(const tok_norm *n, uint32_t x, uint32_t y)
{
    (void)x;
    if (!n->strip || y < 0x80) return 1;    /* every ASCII character is an NFD starter */
    UErrorCode st = U_ZERO_ERROR;
    const UNormalizer2 *nfd = unorm2_getNFDInstance(&st);
    if (U_FAILURE(st)) return 0;
    if (!unorm2_hasBoundaryBefore(nfd, (UChar32)y)) return 0;
    if (n->lower && !unorm2_hasBoundaryBefore(nfd, u_tolower((UChar32)y))) return 0;
    return 1;
}

/* Code point ending at b[p] (p > 0, b valid UTF-8); *start receives its first byte. */
static uint32_t cp_before(const char *b, size_t p, size_t *start)
{
    size_t q = p - 1;
    while (q > 0 && ((uint8_t)b[q] & 0xC0) == 0x80) q--;
    uint32_t cp;
    if (tok_utf8_decode((const uint8_t *)b + q, p - q, &cp) == 0) cp = 0xFFFD;
    *start = q;
    return cp;
}

/* The last position p in (lo, a->n) where the cleaned bytes may be split
 * (after a space, or between two characters split_ok accepts); 0 if none. */
static size_t find_split(const tok_norm *n, const tok_buf *a, size_t lo)
{
    if (!n->strip) return a->n;    /* no context at all */
    size_t p = a->n, ystart;
    if (p == 0) return 0;
    uint32_t y = cp_before(a->p, p, &ystart);
    p = ystart;
    while (p > lo) {
        size_t xstart;
        uint32_t x = cp_before(a->p, p, &xstart);
        if (x == ' ' || y == ' ' || split_ok(n, x, y)) return p;
        y = x;
        p = xstart;
    }
    return 0;
}

typedef struct stream_st {
    const tok_norm *n;
    const tok_sink *sink;
    tok_ws *ws;
    int longw;           /* the word in ws->w is longer than TOK_MAX_WORD (bytes dropped) */
} stream_st;

/* Append to the continuing word (or just count it once it is too long). */
static int carry_add(stream_st *st, const char *p, size_t len)
{
    tok_buf *w = &st->ws->w;
    if (st->longw) return 0;
    if (w->n + len > TOK_MAX_WORD) {
        st->longw = 1;
        w->n = 0;
        return 0;
    }
    if (tok_buf_reserve(w, len)) return -1;
    memcpy(w->p + w->n, p, len);
    w->n += len;
    return 0;
}

/* Give the continuing word to the sink. */
static int carry_emit(stream_st *st)
{
    tok_buf *w = &st->ws->w;
    int r = 0;
    if (st->longw)
        r = st->sink->long_word ? st->sink->long_word(st->sink->ctx) : 0;
    else if (w->n > 0)
        r = st->sink->word(st->sink->ctx, w->p, w->n);
    st->longw = 0;
    w->n = 0;
    return r ? 1 : 0;
}

/* Length of the word characters at the start of s[0..n) (up to the first
 * space or punctuation character). */
static size_t word_prefix(const uint8_t *cls, const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            if (cls[u[i]] != C_WORD) break;
            i++;
            continue;
        }
        uint32_t cp;
        int l = tok_utf8_decode(u + i, n - i, &cp);
        if (l == 0 || is_uspace(cp) || u_ispunct((UChar32)cp)) break;
        i += (size_t)l;
    }
    return i;
}

/* Pre-tokenize normalized bytes s[0..len) that follow what came before;
 * final: nothing follows. */
static int stream_pretok(stream_st *st, const char *s, size_t len, int final)
{
    const uint8_t *cls = st->n->cls;
    if (st->longw || st->ws->w.n > 0) {
        size_t e = word_prefix(cls, s, len);
        if (carry_add(st, s, e)) return -1;
        s += e;
        len -= e;
        if (len == 0 && !final) return 0;
        int r = carry_emit(st);
        if (r) return r;
    }
    size_t tail;
    int r = pretokenize(cls, s, len, st->sink, final ? NULL : &tail);
    if (r) return r;
    if (!final && tail < len && carry_add(st, s + tail, len - tail)) return -1;
    return 0;
}

/* Normalize cleaned bytes a[0..p) (steps 4–5) and pass them on. */
static int stream_flush(stream_st *st, size_t p, int final)
{
    tok_ws *ws = st->ws;
    const tok_norm *n = st->n;
    int r;
    if (n->lower || n->strip) {
        ws->b.n = 0;
        if (transform_spaced(n, ws->a.p, p, ws, &ws->b)) return -1;
        r = stream_pretok(st, ws->b.p, ws->b.n, final);
    } else {
        r = stream_pretok(st, ws->a.p, p, final);
    }
    if (r) return r;
    memmove(ws->a.p, ws->a.p + p, ws->a.n - p);
    ws->a.n -= p;
    return 0;
}

static int process_section_stream(const tok_norm *n, const char *text, size_t len, tok_ws *ws,
                                  const tok_sink *sink)
{
    stream_st st;
    memset(&st, 0, sizeof st);
    st.n = n;
    st.sink = sink;
    st.ws = ws;
    ws->a.n = 0;
    ws->w.n = 0;
    size_t i = 0;
    int nonascii = 0, r;
    size_t searched = 0;
    while (i < len) {
        size_t stop = len - i < tok_stream_window ? len : i + tok_stream_window;
        if (clean_into(n, text, len, &i, stop, &ws->a, &nonascii)) return -1;
        if (i < len && ws->a.n < tok_stream_window) continue;   /* most of it was dropped */
        if (i >= len) break;
        /* positions up to 'searched' were refused before */
        size_t p = find_split(n, &ws->a, searched > 0 ? searched - 1 : 0);
        searched = ws->a.n;
        if (p == 0) {
            if (ws->a.n < tok_stream_force) continue;
            p = ws->a.n;    /* no split point in TOK_FORCE bytes: split anyway */
            tok_stream_forced++;
        }
        if ((r = stream_flush(&st, p, 0)) != 0) return r;
        searched = ws->a.n;
        if (bft_interrupted()) return TOK_INTERRUPTED;
    }
    return stream_flush(&st, ws->a.n, 1);
}

size_t tok_stream_min = TOK_STREAM_MIN, tok_stream_window = TOK_WINDOW, tok_stream_force = TOK_FORCE;
unsigned long tok_stream_forced;

static int process_section(const tok_norm *n, const char *text, size_t len, tok_ws *ws,
                           const tok_sink *sink)
{
    if (len == 0) return 0;
    if (len <= tok_stream_min) return process_section_whole(n, text, len, ws, sink);
    return process_section_stream(n, text, len, ws, sink);
}

int tok_process(const tok_norm *n, const char *text, size_t len, tok_ws *ws,
                const tok_sink *sink)
{
    size_t start = 0, i = 0, next_poll = (size_t)1 << 20;
    if (n->nspec > 0) {
        while (i < len) {
            if (i >= next_poll) {
                if (bft_interrupted()) return TOK_INTERRUPTED;
                next_poll = i + ((size_t)1 << 20);
            }
            if (!n->spec_first[(uint8_t)text[i]]) {
                if (n->spec_byte >= 0) {
                    /* every special starts with one byte ('['): jump to it */
                    size_t upto = next_poll < len ? next_poll : len;
                    const char *q = memchr(text + i, n->spec_byte, upto - i);
                    i = q ? (size_t)(q - text) : upto;
                } else {
                    i++;
                }
                continue;
            }
            int best = -1, best_len = 0;
            for (int k = 0; k < n->nspec; k++) {
                int l = n->spec_len[k];
                if (l > best_len && (size_t)l <= len - i && memcmp(text + i, n->spec[k], (size_t)l) == 0) {
                    best = k;
                    best_len = l;
                }
            }
            if (best < 0) { i++; continue; }
            int r = process_section(n, text + start, i - start, ws, sink);
            if (r) return r;
            if (sink->special(sink->ctx, best)) return 1;
            i += (size_t)best_len;
            start = i;
        }
    }
    return process_section(n, text + start, len - start, ws, sink);
}

/* ------------------------------------------------------------------ */
/* vocabulary                                                          */

struct bft_tokenizer {
    bft_tokenizer_opts opts;
    tok_norm norm;
    int n;                 /* tokens */
    char *str;             /* all tokens, NUL-terminated */
    uint32_t *off;         /* n offsets into str */
    uint32_t *len;         /* n byte lengths */
    uint32_t mask;         /* hash slots - 1 */
    int32_t *slot_id;      /* -1 empty */
    uint32_t *slot_h;      /* high bits of the hash */
    size_t max_plain;      /* longest token without "##", bytes */
    size_t max_cont;       /* longest "##" token minus the prefix, bytes */
    bft_special_ids sp;
    int spec_ids[TOK_MAX_SPECIALS];
};

#define TOK_SEED_PLAIN 0x243F6A8885A308D3ull
#define TOK_SEED_CONT 0x13198A2E03707344ull

/* Key of a vocabulary string: "##x" is (cont, "x"), anything else (plain, s). */
static inline uint64_t key_hash(int cont, const char *s, size_t n)
{
    return tok_hash(s, n, cont ? TOK_SEED_CONT : TOK_SEED_PLAIN);
}

static inline int is_cont_token(const char *s, size_t n)
{
    return n >= 2 && s[0] == '#' && s[1] == '#';
}

static inline int vocab_find(const bft_tokenizer *t, int cont, const char *s, size_t n)
{
    uint64_t h = key_hash(cont, s, n);
    uint32_t hh = (uint32_t)(h >> 32);
    uint32_t i = (uint32_t)h & t->mask;
    for (;;) {
        int32_t id = t->slot_id[i];
        if (id < 0) return -1;
        if (t->slot_h[i] == hh) {
            const char *ts = t->str + t->off[id];
            size_t tl = t->len[id];
            int tc = is_cont_token(ts, tl);
            if (tc) { ts += 2; tl -= 2; }
            if (tc == cont && tl == n && memcmp(ts, s, n) == 0) return id;
        }
        i = (i + 1) & t->mask;
    }
}

bft_tokenizer_opts bft_tokenizer_default_opts(void)
{
    bft_tokenizer_opts o = {1, -1, 1, 512};
    return o;
}

void bft_tokenizer_free(bft_tokenizer *t)
{
    if (!t) return;
    free(t->str);
    free(t->off);
    free(t->len);
    free(t->slot_id);
    free(t->slot_h);
    free(t);
}

static void norm_from_opts(tok_norm *n, const bft_tokenizer_opts *o)
{
    memset(n, 0, sizeof *n);
    n->lower = o->do_lower_case != 0;
    n->strip = o->strip_accents < 0 ? n->lower : o->strip_accents != 0;
    n->chinese = o->tokenize_chinese_chars != 0;
}

/* A vocab.txt's token count (Python readlines(): a last line without LF
 * counts), after checking the bytes; 0 after an error. */
static size_t vocab_tokens(const char *vocab, size_t vocab_len, bft_error *err)
{
    if (!vocab && vocab_len)
        return bft_set_error(err, BFT_EINVAL, "tokenizer: NULL vocabulary"), 0;
    if (vocab_len > UINT32_MAX / 2)
        return bft_set_error(err, BFT_EFORMAT, "tokenizer: vocabulary too large (%zu bytes)", vocab_len), 0;
    if (vocab_len && memchr(vocab, '\0', vocab_len))
        return bft_set_error(err, BFT_EFORMAT, "tokenizer: vocabulary contains a NUL byte"), 0;
    size_t nl = 0;
    for (size_t i = 0; i < vocab_len; i++) nl += vocab[i] == '\n';
    size_t ntok = nl + (vocab_len > 0 && vocab[vocab_len - 1] != '\n');
    if (ntok == 0)
        return bft_set_error(err, BFT_EFORMAT, "tokenizer: empty vocabulary"), 0;
    if (ntok > INT32_MAX / 4)
        return bft_set_error(err, BFT_EFORMAT, "tokenizer: too many tokens (%zu)", ntok), 0;
    return ntok;
}

/* The token strings (NUL-terminated, a trailing CR dropped) and the hash
 * table's slots (twice the tokens, a power of two); 0, or -1 out of memory. */
static int tok_alloc(bft_tokenizer *t, const char *vocab, size_t vocab_len, size_t ntok)
{
    uint32_t slots = 64;
    size_t p = 0, w = 0;
    t->n = (int)ntok;
    t->str = malloc(vocab_len + 1);
    t->off = malloc(ntok * sizeof *t->off);
    t->len = malloc(ntok * sizeof *t->len);
    while (slots < ntok * 2) slots *= 2;
    t->mask = slots - 1;
    t->slot_id = malloc(slots * sizeof *t->slot_id);
    t->slot_h = malloc(slots * sizeof *t->slot_h);
    if (!t->str || !t->off || !t->len || !t->slot_id || !t->slot_h) return -1;
    memset(t->slot_id, 0xFF, slots * sizeof *t->slot_id);
    for (size_t k = 0; k < ntok; k++) {
        const char *nlp = memchr(vocab + p, '\n', vocab_len - p);
        size_t e = nlp ? (size_t)(nlp - vocab) : vocab_len;
        size_t l = e - p;
        if (l > 0 && vocab[p + l - 1] == '\r') l--;
        memcpy(t->str + w, vocab + p, l);
        t->str[w + l] = '\0';
        t->off[k] = (uint32_t)w;
        t->len[k] = (uint32_t)l;
        w += l + 1;
        p = e + 1;
    }
    return 0;
}

/* Hash every token (plain or "##" continuation) and note the longest of each kind. */
static void tok_index(bft_tokenizer *t)
{
    for (int id = 0; id < t->n; id++) {
        const char *s = t->str + t->off[id];
        size_t l = t->len[id];
        int cont = is_cont_token(s, l);
        if (cont) { s += 2; l -= 2; }
        if (cont && l > t->max_cont) t->max_cont = l;
        if (!cont && l > t->max_plain) t->max_plain = l;
        uint64_t h = key_hash(cont, s, l);
        uint32_t i = (uint32_t)h & t->mask;
        for (;;) {
            int32_t e = t->slot_id[i];
            if (e < 0) break;
            if (t->slot_h[i] == (uint32_t)(h >> 32)) {
                const char *es = t->str + t->off[e];
                size_t el = t->len[e];
                if (el == t->len[id] && memcmp(es, t->str + t->off[id], el) == 0) break;
            }
            i = (i + 1) & t->mask;
        }
        t->slot_id[i] = id;   /* a duplicate line: the later id wins, as in HF load_vocab */
        t->slot_h[i] = (uint32_t)(h >> 32);
    }
}

/* The special tokens ([UNK] required) and the normalizer that keeps them whole. */
static int tok_specials(bft_tokenizer *t, const bft_tokenizer_opts *o, bft_error *err)
{
    t->sp.unk = bft_tokenizer_token_id(t, "[UNK]");
    t->sp.cls = bft_tokenizer_token_id(t, "[CLS]");
    t->sp.sep = bft_tokenizer_token_id(t, "[SEP]");
    t->sp.pad = bft_tokenizer_token_id(t, "[PAD]");
    t->sp.mask = bft_tokenizer_token_id(t, "[MASK]");
    if (t->sp.unk < 0)
        return bft_set_error(err, BFT_EFORMAT, "tokenizer: vocabulary has no [UNK] token");
    norm_from_opts(&t->norm, o);
    /* HF added-token order: [PAD] [UNK] [CLS] [SEP] [MASK] */
    const int ids[5] = {t->sp.pad, t->sp.unk, t->sp.cls, t->sp.sep, t->sp.mask};
    for (int k = 0; k < 5; k++) {
        if (ids[k] < 0) continue;
        int j = t->norm.nspec++;
        t->norm.spec[j] = t->str + t->off[ids[k]];
        t->norm.spec_len[j] = (int)t->len[ids[k]];
        t->spec_ids[j] = ids[k];
    }
    tok_norm_finish(&t->norm);
    return BFT_OK;
}

bft_tokenizer *bft_tokenizer_new(const char *vocab, size_t vocab_len,
                                 const bft_tokenizer_opts *opts, bft_error *err)
{
    bft_tokenizer_opts o = opts ? *opts : bft_tokenizer_default_opts();
    size_t ntok = vocab_tokens(vocab, vocab_len, err);
    if (ntok == 0)
        return NULL;
    bft_tokenizer *t = calloc(1, sizeof *t);
    if (!t || tok_alloc(t, vocab, vocab_len, ntok) != 0) {
        bft_tokenizer_free(t);
        bft_set_error(err, BFT_ENOMEM, "tokenizer: out of memory loading a vocabulary of %zu bytes",
                      vocab_len);
        return NULL;
    }
    t->opts = o;
    tok_index(t);
    if (tok_specials(t, &o, err) != BFT_OK) {
        bft_tokenizer_free(t);
        return NULL;
    }
    return t;
}

bft_tokenizer_opts bft_tokenizer_get_opts(const bft_tokenizer *t) { return t->opts; }

int bft_tokenizer_vocab_size(const bft_tokenizer *t) { return t->n; }

const char *bft_tokenizer_token(const bft_tokenizer *t, int id)
{
    if (!t || id < 0 || id >= t->n) return NULL;
    return t->str + t->off[id];
}

int bft_tokenizer_token_id(const bft_tokenizer *t, const char *token)
{
    if (!t || !token) return -1;
    size_t l = strlen(token);
    int cont = is_cont_token(token, l);
    return cont ? vocab_find(t, 1, token + 2, l - 2) : vocab_find(t, 0, token, l);
}

bft_special_ids bft_tokenizer_special(const bft_tokenizer *t) { return t->sp; }

/* ------------------------------------------------------------------ */
/* encode                                                              */

typedef struct enc_ctx {
    const bft_tokenizer *t;
    int32_t *ids;
    size_t n, cap;
    int32_t stack[256];
    size_t limit;    /* stop once this many ids are out (SIZE_MAX: never) */
    int oom;
} enc_ctx;

static int enc_push(enc_ctx *c, int32_t id)
{
    if (c->n == c->cap) {
        size_t cap = c->cap * 2;
        int32_t *p;
        if (c->ids == c->stack) {
            p = malloc(cap * sizeof *p);
            if (p) memcpy(p, c->ids, c->n * sizeof *p);
        } else {
            p = realloc(c->ids, cap * sizeof *p);
        }
        if (!p) { c->oom = 1; return -1; }
        c->ids = p;
        c->cap = cap;
    }
    c->ids[c->n++] = id;
    return 0;
}

static int enc_special(void *ctx, int k)
{
    enc_ctx *c = ctx;
    if (enc_push(c, c->t->spec_ids[k])) return 1;
    return c->n >= c->limit;
}

static int enc_word(void *ctx, const char *w, size_t len)
{
    enc_ctx *c = ctx;
    const bft_tokenizer *t = c->t;
    /* whole-word hit first (most words); <= 100 bytes means <= 100 chars */
    if (len <= t->max_plain && len <= 100) {
        int id = vocab_find(t, 0, w, len);
        if (id >= 0) {
            if (enc_push(c, id)) return 1;
            return c->n >= c->limit;
        }
    }
    /* code point boundaries; more than 100 code points → [UNK] */
    uint32_t off[102];
    int nch = 0;
    for (size_t i = 0; i < len;) {
        if (nch > 100) break;
        off[nch++] = (uint32_t)i;
        uint8_t b = (uint8_t)w[i];
        i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;   /* w is valid UTF-8 */
    }
    if (nch > 100) {
        if (enc_push(c, t->sp.unk)) return 1;
        return c->n >= c->limit;
    }
    off[nch] = (uint32_t)len;
    size_t mark = c->n;
    int start = 0;
    while (start < nch) {
        int cont = start > 0;
        size_t maxb = cont ? t->max_cont : t->max_plain;
        int end = nch;
        while (end > start && off[end] - off[start] > maxb) end--;
        int id = -1;
        for (; end > start; end--) {
            id = vocab_find(t, cont, w + off[start], off[end] - off[start]);
            if (id >= 0) break;
        }
        if (id < 0) {
            c->n = mark;
            if (enc_push(c, t->sp.unk)) return 1;
            return c->n >= c->limit;
        }
        if (enc_push(c, id)) return 1;
        start = end;
    }
    return c->n >= c->limit;
}

/* A streamed word of more than TOK_MAX_WORD bytes (> 100 characters): [UNK]. */
static int enc_long_word(void *ctx)
{
    enc_ctx *c = ctx;
    if (enc_push(c, c->t->sp.unk)) return 1;
    return c->n >= c->limit;
}

/* Run the pipeline; pieces end up in c->ids[0..c->n). */
static int encode_into(const bft_tokenizer *t, const char *text, size_t len, enc_ctx *c,
                       bft_error *err)
{
    c->t = t;
    c->ids = c->stack;
    c->n = 0;
    c->cap = sizeof c->stack / sizeof c->stack[0];
    c->oom = 0;
    if (!text && len) {
        bft_set_error(err, BFT_EINVAL, "tokenizer: NULL text");
        return -1;
    }
    tok_ws ws;
    tok_ws_init(&ws);
    tok_sink sink = {enc_special, enc_word, c, enc_long_word};
    int r = len ? tok_process(&t->norm, text, len, &ws, &sink) : 0;
    tok_ws_free(&ws);
    if (r < 0 || c->oom) {
        if (c->ids != c->stack) free(c->ids);
        c->ids = c->stack;
        if (r == TOK_INTERRUPTED)
            bft_set_error(err, BFT_ECANCEL, "tokenizer: interrupted");
        else
            bft_set_error(err, BFT_ENOMEM, "tokenizer: out of memory encoding %zu bytes", len);
        return -1;
    }
    return 0;
}

int bft_encode(const bft_tokenizer *t, const char *text, size_t len,
               int max_length, int32_t *out_ids, bft_error *err)
{
    if (!t || !out_ids) {
        bft_set_error(err, BFT_EINVAL, "bft_encode: NULL argument");
        return -1;
    }
    if (max_length < 2) {
        bft_set_error(err, BFT_EINVAL, "bft_encode: max_length must be >= 2 (got %d)", max_length);
        return -1;
    }
    if (t->sp.cls < 0 || t->sp.sep < 0) {
        bft_set_error(err, BFT_EMISMATCH, "bft_encode: vocabulary lacks [CLS] or [SEP]");
        return -1;
    }
    enc_ctx c;
    c.limit = (size_t)max_length - 2;
    if (c.limit == 0) {
        /* nothing of the text fits */
        out_ids[0] = t->sp.cls;
        out_ids[1] = t->sp.sep;
        return 2;
    }
    if (encode_into(t, text, len, &c, err)) return -1;
    size_t n = c.n < c.limit ? c.n : c.limit;
    out_ids[0] = t->sp.cls;
    memcpy(out_ids + 1, c.ids, n * sizeof *out_ids);
    out_ids[n + 1] = t->sp.sep;
    if (c.ids != c.stack) free(c.ids);
    return (int)n + 2;
}

int bft_encode_pieces(const bft_tokenizer *t, const char *text, size_t len,
                      int32_t **out_ids, size_t *out_n, bft_error *err)
{
    if (!t || !out_ids || !out_n) {
        bft_set_error(err, BFT_EINVAL, "bft_encode_pieces: NULL argument");
        return -1;
    }
    enc_ctx c;
    c.limit = SIZE_MAX;
    if (encode_into(t, text, len, &c, err)) return -1;
    int32_t *res;
    if (c.ids == c.stack) {
        res = malloc((c.n ? c.n : 1) * sizeof *res);
        if (!res) {
            bft_set_error(err, BFT_ENOMEM, "bft_encode_pieces: out of memory");
            return -1;
        }
        memcpy(res, c.ids, c.n * sizeof *res);
    } else {
        res = c.ids;
    }
    *out_ids = res;
    *out_n = c.n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* decode                                                              */

/* The clean-up of the WordPiece decoder (cleanup=true), applied to each
 * token with its leading space: the replacements, in order, each global. */
static void cleanup_spaces(char *s)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t r = 0; r < sizeof from / sizeof from[0]; r++) {
        size_t fl = strlen(from[r]), tl = strlen(to[r]);
        if (!strstr(s, from[r])) continue;
        char *w = s;
        const char *p = s;
        while (*p) {
            if (strncmp(p, from[r], fl) == 0) {
                memmove(w, to[r], tl);   /* tl < fl: never overtakes p */
                w += tl;
                p += fl;
            } else {
                *w++ = *p++;
            }
        }
        *w = '\0';
    }
}

static int is_special_id(const bft_tokenizer *t, int id)
{
    for (int k = 0; k < t->norm.nspec; k++)
        if (t->spec_ids[k] == id) return 1;
    return 0;
}

char *bft_decode(const bft_tokenizer *t, const int32_t *ids, size_t n, int skip_special)
{
    if (!t || (!ids && n)) return NULL;
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n) cap += t->len[ids[i]] + 1;
    char *out = malloc(cap);
    char *tmp = malloc(cap);
    if (!out || !tmp) {
        free(out);
        free(tmp);
        return NULL;
    }
    size_t o = 0;
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        /* ids out of range are left out, like the reference */
        if (ids[i] < 0 || ids[i] >= t->n) continue;
        int id = ids[i];
        if (skip_special && is_special_id(t, id)) continue;
        const char *s = t->str + t->off[id];
        size_t l = t->len[id];
        /* WordPiece decoder: "##" pieces glue on, others get a space; then
         * the clean-up of that token (so "don ' t" stays as it is) */
        size_t tl = 0;
        if (!first && is_cont_token(s, l)) {
            memcpy(tmp, s + 2, l - 2);
            tl = l - 2;
        } else {
            if (!first) tmp[tl++] = ' ';
            memcpy(tmp + tl, s, l);
            tl += l;
        }
        tmp[tl] = '\0';
        cleanup_spaces(tmp);
        tl = strlen(tmp);
        memcpy(out + o, tmp, tl);
        o += tl;
        first = 0;
    }
    out[o] = '\0';
    free(tmp);
    return out;
}
