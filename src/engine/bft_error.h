/*
 * bft_error.h — error reporting shared by every engine module.
 *
 * The engine never aborts or exits on bad input: every fallible function
 * returns a status (or NULL) and fills a bft_error that the caller turns into
 * its own error (ereport in the extension, a message in bft-cli).
 */
#ifndef BFT_ERROR_H
#define BFT_ERROR_H

#include <stddef.h>

typedef enum bft_status {
    BFT_OK = 0,
    BFT_EINVAL = 1,    /* invalid argument or option value */
    BFT_EFORMAT = 2,   /* malformed / corrupt / truncated input file */
    BFT_EMISMATCH = 3, /* config, weights and vocabulary disagree */
    BFT_ENOMEM = 4,    /* allocation failed */
    BFT_EIO = 5,       /* file system error */
    BFT_ECANCEL = 6,   /* a callback asked to stop */
    BFT_EDEVICE = 7,   /* compute device unavailable or failed */
    BFT_EUNSUPPORTED = 8, /* valid input the engine does not implement */
    BFT_EUNSAFE = 9    /* input that asks to run code (a pickle naming os.system, ...): refused */
} bft_status;

typedef struct bft_error {
    int code;        /* a bft_status */
    char msg[512];   /* human-readable, names the offending item */
} bft_error;

/* Set err (if not NULL) to code and a printf-style message; returns code. */
int bft_set_error(bft_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clear err (if not NULL) to BFT_OK and an empty message. */
void bft_clear_error(bft_error *err);

/* Short constant name of a status, e.g. "BFT_EFORMAT". */
const char *bft_status_name(int code);

#endif
