/*
 * engine_util.h — (engine-internal) the JSON reader of config.c and the file
 * reader of checkpoint.c, for the other engine modules.
 */
#ifndef BFT_ENGINE_UTIL_H
#define BFT_ENGINE_UTIL_H

#include <stddef.h>

#include <json-c/json.h>

#include "bft_error.h"

/* Parse len bytes of JSON (need not be NUL-terminated; trailing whitespace
 * allowed) into a json-c object (caller puts it); what names the file in
 * messages. NULL with err (BFT_EFORMAT, BFT_ENOMEM, BFT_EINVAL) on failure. */
json_object *bft_json_parse(const char *json, size_t len, const char *what, bft_error *err);

/* Whole regular file dir/name into a malloc'd NUL-terminated buffer (never
 * blocking on a FIFO or device; refused when larger than the memory budget).
 * Returns 0, 1 when it does not exist (and missing_ok), -1 with err. */
int bft_read_dir_file(const char *dir, const char *name, char **out, size_t *len, int missing_ok,
                      bft_error *err);

#endif
