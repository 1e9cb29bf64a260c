/* bft_error.c — see bft_error.h. */
#include "bft_error.h"

#include <stdarg.h>
#include <stdio.h>

int bft_set_error(bft_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void bft_clear_error(bft_error *err)
{
    if (err) {
        err->code = BFT_OK;
        err->msg[0] = '\0';
    }
}

const char *bft_status_name(int code)
{
    switch (code) {
    case BFT_OK: return "BFT_OK";
    case BFT_EINVAL: return "BFT_EINVAL";
    case BFT_EFORMAT: return "BFT_EFORMAT";
    case BFT_EMISMATCH: return "BFT_EMISMATCH";
    case BFT_ENOMEM: return "BFT_ENOMEM";
    case BFT_EIO: return "BFT_EIO";
    case BFT_ECANCEL: return "BFT_ECANCEL";
    case BFT_EDEVICE: return "BFT_EDEVICE";
    case BFT_EUNSUPPORTED: return "BFT_EUNSUPPORTED";
    case BFT_EUNSAFE: return "BFT_EUNSAFE";
    default: return "BFT_E?";
    }
}
