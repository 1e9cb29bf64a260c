/*
 * fuzz_tokenizer.c — libFuzzer target: arbitrary bytes through bft_encode,
 * bft_encode_pieces and bft_decode (bert-base-cased and -uncased settings),
 * plus the WordPiece trainer on small inputs. Differential: the streaming
 * normalizer, run with tiny windows, gives exactly the tokens of the
 * whole-section path unless it had to split a window without a split point.
 *
 *   make fuzz BUILD=build/fuzzdir
 *   build/fuzzdir/fuzz/fuzz_tokenizer -max_total_time=600
 *
 * The vocabulary comes from $BFT_FUZZ_VOCAB, else vocab/bert-base-cased-vocab.txt
 * of the shared data ($BFT_SHARED_DATA, default ../shared/data; run from the
 * repository root).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tokenizer.h"

static bft_tokenizer *tk[2];

static void die(const char *msg)
{
    fprintf(stderr, "fuzz_tokenizer: %s\n", msg);
    exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *path = getenv("BFT_FUZZ_VOCAB");
    char buf[4096];
    if (!path || !*path) {
        const char *d = getenv("BFT_SHARED_DATA");
        snprintf(buf, sizeof buf, "%s/vocab/bert-base-cased-vocab.txt", d && *d ? d : "../shared/data");
        path = buf;
    }
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open the vocabulary (set BFT_FUZZ_VOCAB or BFT_SHARED_DATA)");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *v = malloc((size_t)n);
    if (!v || fread(v, 1, (size_t)n, f) != (size_t)n) die("cannot read the vocabulary");
    fclose(f);
    for (int k = 0; k < 2; k++) {
        bft_tokenizer_opts o = bft_tokenizer_default_opts();
        o.do_lower_case = k;
        bft_error err;
        tk[k] = bft_tokenizer_new(v, (size_t)n, &o, &err);
        if (!tk[k]) die(err.msg);
    }
    free(v);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* copy so that ASan sees reads past the end */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    int which = size > 0 ? data[0] & 1 : 0;
    bft_tokenizer *t = tk[which];
    int vs = bft_tokenizer_vocab_size(t);
    bft_error err;

    int32_t *pieces = NULL;
    size_t np = 0;
    if (bft_encode_pieces(t, text, size, &pieces, &np, &err) != 0) die("encode_pieces failed");
    for (size_t i = 0; i < np; i++)
        if (pieces[i] < 0 || pieces[i] >= vs) die("piece id out of range");

    /* the same text streamed through 8..71-byte windows */
    {
        int32_t *sp = NULL;
        size_t sn = 0;
        unsigned long forced = tok_stream_forced;
        tok_stream_min = 0;
        tok_stream_window = 8 + (size > 3 ? data[3] % 64 : 0);
        tok_stream_force = 4 * tok_stream_window;
        int r = bft_encode_pieces(t, text, size, &sp, &sn, &err);
        tok_stream_min = TOK_STREAM_MIN;
        tok_stream_window = TOK_WINDOW;
        tok_stream_force = TOK_FORCE;
        if (r != 0) die("streamed encode_pieces failed");
        if (tok_stream_forced == forced && (sn != np || memcmp(sp, pieces, np * sizeof *sp) != 0))
            die("streamed tokens differ from the whole-section tokens");
        free(sp);
    }

    int max_length = 2 + (size > 1 ? data[1] % 64 : 0);
    int32_t ids[66];
    int m = bft_encode(t, text, size, max_length, ids, &err);
    if (m < 2 || m > max_length) die("bad encode length");
    size_t keep = np < (size_t)max_length - 2 ? np : (size_t)max_length - 2;
    if ((size_t)m != keep + 2 || memcmp(ids + 1, pieces, keep * sizeof *ids) != 0)
        die("bft_encode disagrees with bft_encode_pieces");

    char *s = bft_decode(t, pieces, np, size > 2 ? data[2] & 1 : 0);
    if (!s) die("decode failed");
    free(s);
    /* decode arbitrary ids, out of range included */
    size_t nr = size / 4;
    if (nr > 64) nr = 64;
    int32_t raw[64];
    memcpy(raw, data, nr * 4);
    s = bft_decode(t, raw, nr, 0);
    if (!s) die("decode of raw ids failed");
    free(s);

    if (size < 512) {
        bft_tokenizer_opts o = bft_tokenizer_default_opts();
        o.do_lower_case = which;
        bft_wp_trainer *tr = bft_wp_trainer_new(&o, 120, 0, &err);
        if (!tr) die("trainer_new failed");
        if (bft_wp_trainer_feed(tr, text, size, &err)) die("trainer feed failed");
        size_t vl = 0;
        char *voc = bft_wp_trainer_finish(tr, &vl, &err);
        if (!voc) die("trainer finish failed");
        bft_tokenizer *lt = bft_tokenizer_new(voc, vl, &o, &err);
        if (!lt) die("learned vocabulary does not load");
        int32_t *lp = NULL;
        size_t ln = 0;
        if (bft_encode_pieces(lt, text, size, &lp, &ln, &err)) die("encode with learned vocab failed");
        free(lp);
        bft_tokenizer_free(lt);
        free(voc);
        bft_wp_trainer_free(tr);
    }
    free(pieces);
    free(text);
    return 0;
}
