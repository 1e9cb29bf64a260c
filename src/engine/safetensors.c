/* safetensors.c — strict safetensors reader and float32 writer; see safetensors.h. */
#include "safetensors.h"

#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

static const struct {
    const char *name;
    size_t size;
} dtypes[BFT_ST_NDTYPES] = {
    [BFT_ST_F32] = {"F32", 4},   [BFT_ST_F16] = {"F16", 2},   [BFT_ST_BF16] = {"BF16", 2},
    [BFT_ST_F64] = {"F64", 8},   [BFT_ST_I64] = {"I64", 8},   [BFT_ST_I32] = {"I32", 4},
    [BFT_ST_I16] = {"I16", 2},   [BFT_ST_I8] = {"I8", 1},     [BFT_ST_U64] = {"U64", 8},
    [BFT_ST_U32] = {"U32", 4},   [BFT_ST_U16] = {"U16", 2},   [BFT_ST_U8] = {"U8", 1},
    [BFT_ST_BOOL] = {"BOOL", 1}, [BFT_ST_F8_E4M3] = {"F8_E4M3", 1}, [BFT_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *bft_st_dtype_name(bft_st_dtype d)
{
    return (unsigned)d < BFT_ST_NDTYPES ? dtypes[d].name : "?";
}

size_t bft_st_dtype_size(bft_st_dtype d)
{
    return (unsigned)d < BFT_ST_NDTYPES ? dtypes[d].size : 0;
}

void bft_st_release(bft_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free(f->t[i].name);
    free(f->t);
    f->t = NULL;
    f->n = 0;
}

const bft_st_tensor *bft_st_find(const bft_st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0)
            return &f->t[i];
    return NULL;
}

/* A non-negative JSON integer (json-c saturates values above INT64_MAX). */
static int get_u64(json_object *v, uint64_t *out)
{
    int64_t x;
    if (!v || !json_object_is_type(v, json_type_int))
        return -1;
    x = json_object_get_int64(v);
    if (x < 0)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Order of tensors in the data section: by begin, then end. */
static int cmp_span(const void *a, const void *b)
{
    const bft_st_tensor *x = *(const bft_st_tensor *const *)a, *y = *(const bft_st_tensor *const *)b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* Parse one header entry "name": {...} into t. */
static int parse_entry(const char *name, json_object *v, const unsigned char *data, size_t data_len,
                       bft_st_tensor *t, bft_error *err)
{
    json_object *jd, *js, *jo;
    const char *ds;
    size_t numel = 1, nbytes;
    uint64_t begin, end;
    int d;

    if (!v || !json_object_is_type(v, json_type_object))
        return bft_set_error(err, BFT_EFORMAT, "safetensors: entry for tensor \"%.200s\" is not an object", name);
    if (!json_object_object_get_ex(v, "dtype", &jd) || !jd || !json_object_is_type(jd, json_type_string))
        return bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\" has no dtype string", name);
    if (!json_object_object_get_ex(v, "shape", &js) || !js || !json_object_is_type(js, json_type_array))
        return bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\" has no shape array", name);
    if (!json_object_object_get_ex(v, "data_offsets", &jo) || !jo ||
        !json_object_is_type(jo, json_type_array) || json_object_array_length(jo) != 2)
        return bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\" has no data_offsets [begin, end]",
                             name);

    ds = json_object_get_string(jd);
    for (d = 0; d < BFT_ST_NDTYPES; d++)
        if (strcmp(ds, dtypes[d].name) == 0 && strlen(ds) == (size_t)json_object_get_string_len(jd))
            break;
    if (d == BFT_ST_NDTYPES)
        return bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\" has unknown dtype \"%.40s\"", name,
                             ds);
    t->dtype = (bft_st_dtype)d;

    t->ndim = (int)json_object_array_length(js);
    if (t->ndim > BFT_ST_MAX_DIMS)
        return bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\" has %d dimensions (max %d)", name,
                             t->ndim, BFT_ST_MAX_DIMS);
    {
        int zero = 0, overflow = 0;
        for (int i = 0; i < t->ndim; i++) {
            uint64_t dim;
            if (get_u64(json_object_array_get_idx(js, (size_t)i), &dim) < 0)
                return bft_set_error(err, BFT_EFORMAT,
                                     "safetensors: tensor \"%.200s\": shape[%d] is not a non-negative integer",
                                     name, i);
            if (dim == 0)
                zero = 1;
            else if (dim > (uint64_t)SIZE_MAX || numel > SIZE_MAX / (size_t)dim)
                overflow = 1;
            else
                numel *= (size_t)dim;
            t->shape[i] = (int64_t)dim; /* get_u64 caps at INT64_MAX */
        }
        if (zero)
            numel = 0;
        else if (overflow)
            return bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\": shape is too large", name);
    }

    if (get_u64(json_object_array_get_idx(jo, 0), &begin) < 0 ||
        get_u64(json_object_array_get_idx(jo, 1), &end) < 0)
        return bft_set_error(err, BFT_EFORMAT,
                             "safetensors: tensor \"%.200s\": data_offsets are not non-negative integers", name);
    if (begin > end || end > (uint64_t)data_len)
        return bft_set_error(err, BFT_EFORMAT,
                             "safetensors: tensor \"%.200s\": data_offsets [%llu, %llu] outside the data section "
                             "of %zu bytes",
                             name, (unsigned long long)begin, (unsigned long long)end, data_len);
    if (numel > SIZE_MAX / dtypes[d].size)
        return bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\": shape is too large", name);
    nbytes = numel * dtypes[d].size;
    if (nbytes != (size_t)(end - begin))
        return bft_set_error(err, BFT_EFORMAT,
                             "safetensors: tensor \"%.200s\": shape and dtype %s need %zu bytes but data_offsets "
                             "span %llu",
                             name, dtypes[d].name, nbytes, (unsigned long long)(end - begin));
    t->numel = numel;
    t->nbytes = nbytes;
    t->data = data + begin;
    return BFT_OK;
}

/* The header length from the 8-byte little-endian prefix, checked against the buffer; -1 on error. */
static int st_header_len(const unsigned char *b, size_t len, uint64_t *hlen, bft_error *err)
{
    *hlen = 0;
    if (!b || len < 8)
        return bft_set_error(err, BFT_EFORMAT, "safetensors: %zu bytes is too short for a header", b ? len : 0),
               -1;
    for (int i = 7; i >= 0; i--)
        *hlen = (*hlen << 8) | b[i];
    if (*hlen < 2 || *hlen > BFT_ST_MAX_HEADER)
        return bft_set_error(err, BFT_EFORMAT, "safetensors: header length %llu is out of range [2, %u]",
                             (unsigned long long)*hlen, BFT_ST_MAX_HEADER),
               -1;
    if (*hlen > len - 8)
        return bft_set_error(err, BFT_EFORMAT,
                             "safetensors: header length %llu exceeds the %zu bytes after the length field (truncated?)",
                             (unsigned long long)*hlen, len - 8),
               -1;
    return 0;
}

/* The header (hlen bytes at h) as a JSON object, nothing but white space after it; NULL on error. */
static json_object *st_header_json(const unsigned char *h, uint64_t hlen, bft_error *err)
{
    char *hdr = malloc((size_t)hlen + 1);
    json_tokener *tk = hdr ? json_tokener_new() : NULL;
    json_object *root = NULL;
    int ok = 0;
    if (!hdr || !tk) {
        bft_set_error(err, BFT_ENOMEM, "safetensors: out of memory for the header");
        goto out;
    }
    memcpy(hdr, h, (size_t)hlen);
    hdr[hlen] = '\0';
    if (memchr(hdr, '\0', (size_t)hlen)) {
        bft_set_error(err, BFT_EFORMAT, "safetensors: header contains a NUL byte");
        goto out;
    }
    root = json_tokener_parse_ex(tk, hdr, (int)hlen + 1);
    if (!root || json_tokener_get_error(tk) != json_tokener_success) {
        bft_set_error(err, BFT_EFORMAT, "safetensors: header is not valid JSON (%s at byte %zu)",
                      json_tokener_error_desc(json_tokener_get_error(tk)), json_tokener_get_parse_end(tk));
        goto out;
    }
    for (size_t i = json_tokener_get_parse_end(tk); i < (size_t)hlen; i++)
        if (hdr[i] != ' ' && hdr[i] != '\t' && hdr[i] != '\n' && hdr[i] != '\r') {
            bft_set_error(err, BFT_EFORMAT, "safetensors: unexpected bytes after the header JSON at byte %zu", i);
            goto out;
        }
    if (!json_object_is_type(root, json_type_object)) {
        bft_set_error(err, BFT_EFORMAT, "safetensors: header is not a JSON object");
        goto out;
    }
    ok = 1;
out:
    if (!ok) {
        json_object_put(root);
        root = NULL;
    }
    if (tk)
        json_tokener_free(tk);
    free(hdr);
    return root;
}

/* __metadata__: an object of strings. */
static int st_check_metadata(json_object *val, bft_error *err)
{
    if (!val || !json_object_is_type(val, json_type_object))
        return bft_set_error(err, BFT_EFORMAT, "safetensors: __metadata__ is not an object");
    json_object_object_foreach(val, mk, mv)
    {
        if (!mv || !json_object_is_type(mv, json_type_string))
            return bft_set_error(err, BFT_EFORMAT, "safetensors: __metadata__[\"%.100s\"] is not a string", mk);
    }
    return BFT_OK;
}

/* Every tensor entry of the header into f (data: the data section). */
static int st_entries(json_object *root, const unsigned char *data, size_t data_len, bft_st_file *f,
                      bft_error *err)
{
    int cap = json_object_object_length(root), rc;
    if (cap > 0 && !(f->t = calloc((size_t)cap, sizeof *f->t)))
        return bft_set_error(err, BFT_ENOMEM, "safetensors: out of memory");
    json_object_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = st_check_metadata(val, err)) != BFT_OK)
                return rc;
            continue;
        }
        if (key[0] == '\0')
            return bft_set_error(err, BFT_EFORMAT, "safetensors: empty tensor name");
        if ((rc = parse_entry(key, val, data, data_len, &f->t[f->n], err)) != BFT_OK)
            return rc;
        if (!(f->t[f->n].name = strdup(key)))
            return bft_set_error(err, BFT_ENOMEM, "safetensors: out of memory");
        f->n++;
    }
    return BFT_OK;
}

/* Tensors must tile the data section: sorted by offset, each starts where
 * the previous ended, the last ends at the end of the buffer. */
static int st_check_tiling(const bft_st_file *f, const unsigned char *data, size_t data_len, bft_error *err)
{
    bft_st_tensor **order = NULL;
    size_t at = 0;
    int rc = BFT_OK;
    if (f->n > 0 && !(order = malloc((size_t)f->n * sizeof *order)))
        return bft_set_error(err, BFT_ENOMEM, "safetensors: out of memory");
    for (int i = 0; i < f->n; i++)
        order[i] = &f->t[i];
    if (f->n > 1)
        qsort(order, (size_t)f->n, sizeof *order, cmp_span);
    for (int i = 0; i < f->n && rc == BFT_OK; i++) {
        size_t begin = (size_t)(order[i]->data - data);
        if (begin < at)
            rc = bft_set_error(err, BFT_EFORMAT, "safetensors: tensor \"%.200s\" overlaps \"%.200s\"",
                               order[i]->name, order[i - 1]->name);
        else if (begin > at)
            rc = bft_set_error(err, BFT_EFORMAT,
                               "safetensors: %zu unused bytes before tensor \"%.200s\" at data offset %zu",
                               begin - at, order[i]->name, at);
        at = begin + order[i]->nbytes;
    }
    if (rc == BFT_OK && at != data_len)
        rc = bft_set_error(err, BFT_EFORMAT, "safetensors: tensors cover %zu bytes but the data section has %zu",
                           at, data_len);
    free(order);
    return rc;
}

int bft_st_parse(const void *buf, size_t len, bft_st_file *out, bft_error *err)
{
    const unsigned char *b = buf;
    uint64_t hlen;
    json_object *root;
    bft_st_file f = {0, NULL};
    int rc;

    out->n = 0;
    out->t = NULL;
    if (st_header_len(b, len, &hlen, err) < 0)
        return -1;
    if (!(root = st_header_json(b + 8, hlen, err)))
        return -1;
    const unsigned char *data = b + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    rc = st_entries(root, data, data_len, &f, err);
    if (rc == BFT_OK)
        rc = st_check_tiling(&f, data, data_len, err);
    json_object_put(root);
    if (rc != BFT_OK) {
        bft_st_release(&f);
        return -1;
    }
    *out = f;
    return 0;
}

float bft_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    float f;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        f = (float)mant * 5.9604644775390625e-8f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

float bft_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int bft_st_to_f32(const bft_st_tensor *t, float *dst, bft_error *err)
{
    const unsigned char *s = t->data;
    switch (t->dtype) {
    case BFT_ST_F32:
        if (t->nbytes)
            memcpy(dst, s, t->nbytes); /* little-endian host, source may be unaligned */
        return 0;
    case BFT_ST_F16:
        for (size_t i = 0; i < t->numel; i++)
            dst[i] = bft_f16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
        return 0;
    case BFT_ST_BF16:
        for (size_t i = 0; i < t->numel; i++)
            dst[i] = bft_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
        return 0;
    default:
        bft_set_error(err, BFT_EUNSUPPORTED,
                      "safetensors: tensor \"%.200s\" has dtype %s; only F32, F16 and BF16 weights are supported",
                      t->name, bft_st_dtype_name(t->dtype));
        return -1;
    }
}

/* ---- writer ----------------------------------------------------------- */

/* Growable byte buffer. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (!(p = realloc(b->p, cap))) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* A JSON string literal. */
static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Each tensor's name, rank, shape and data; nbytes[i] its F32 bytes. */
static int st_out_sizes(const bft_st_out *tensors, int n, size_t *nbytes, bft_error *err)
{
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        const bft_st_out *t = &tensors[i];
        if (!t->name || !t->name[0] || t->ndim < 0 || t->ndim > BFT_ST_MAX_DIMS)
            return bft_set_error(err, BFT_EINVAL, "safetensors: tensor %d has no name or a bad rank", i);
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || (t->shape[d] && numel > SIZE_MAX / 4 / (size_t)t->shape[d]))
                return bft_set_error(err, BFT_EINVAL, "safetensors: tensor \"%.200s\" has a bad shape", t->name);
            numel *= (size_t)t->shape[d];
        }
        if (numel && !t->data)
            return bft_set_error(err, BFT_EINVAL, "safetensors: tensor \"%.200s\" has no data", t->name);
        nbytes[i] = numel * 4;
    }
    return BFT_OK;
}

/* idx: the tensors in name order (insertion sort: n is a few hundred at most); names must be distinct. */
static int st_out_order(const bft_st_out *tensors, int n, int *idx, bft_error *err)
{
    for (int i = 0; i < n; i++)
        idx[i] = i;
    for (int i = 1; i < n; i++) {
        int v = idx[i], j = i;
        while (j > 0 && strcmp(tensors[idx[j - 1]].name, tensors[v].name) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
    for (int i = 1; i < n; i++)
        if (strcmp(tensors[idx[i - 1]].name, tensors[idx[i]].name) == 0)
            return bft_set_error(err, BFT_EINVAL, "safetensors: tensor name \"%.200s\" given twice",
                                 tensors[idx[i]].name);
    return BFT_OK;
}

/* The JSON header (padded to 8 bytes) into h; *data_len the data section's bytes. */
static int st_out_header(sbuf *h, const bft_st_out *tensors, int n, const int *idx, const size_t *nbytes,
                         size_t *data_len, bft_error *err)
{
    size_t off = 0;
    sb_str(h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < n; k++) {
        const bft_st_out *t = &tensors[idx[k]];
        char num[64];
        sb_put(h, ",", 1);
        sb_json_string(h, t->name);
        sb_str(h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_str(h, num);
        }
        if (nbytes[idx[k]] > SIZE_MAX - off)
            return bft_set_error(err, BFT_EINVAL, "safetensors: tensors too large");
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + nbytes[idx[k]]);
        sb_str(h, num);
        off += nbytes[idx[k]];
    }
    sb_put(h, "}", 1);
    while (!h->oom && h->len % 8 != 0)
        sb_put(h, " ", 1);
    if (h->oom)
        return bft_set_error(err, BFT_ENOMEM, "safetensors: out of memory for the header");
    if (off > SIZE_MAX - 8 - h->len)
        return bft_set_error(err, BFT_EINVAL, "safetensors: tensors too large");
    *data_len = off;
    return BFT_OK;
}

void *bft_st_write(const bft_st_out *tensors, int n, size_t *out_len, bft_error *err)
{
    sbuf h = {0};
    int *idx = NULL;
    size_t *nbytes = NULL, off = 0, total = 0;
    unsigned char *out = NULL;
    int rc;

    if (n < 0 || (n > 0 && !tensors)) {
        bft_set_error(err, BFT_EINVAL, "safetensors: bad tensor list");
        return NULL;
    }
    idx = malloc(((size_t)n + 1) * sizeof *idx);
    nbytes = malloc(((size_t)n + 1) * sizeof *nbytes);
    rc = idx && nbytes ? BFT_OK : bft_set_error(err, BFT_ENOMEM, "safetensors: out of memory");
    if (rc == BFT_OK)
        rc = st_out_sizes(tensors, n, nbytes, err);
    if (rc == BFT_OK)
        rc = st_out_order(tensors, n, idx, err);
    if (rc == BFT_OK)
        rc = st_out_header(&h, tensors, n, idx, nbytes, &off, err);
    if (rc == BFT_OK) {
        total = 8 + h.len + off;
        if (!(out = malloc(total ? total : 1)))
            bft_set_error(err, BFT_ENOMEM, "safetensors: out of memory (%zu bytes)", total);
    }
    if (out) {
        for (int i = 0; i < 8; i++)
            out[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
        memcpy(out + 8, h.p, h.len);
        off = 8 + h.len;
        for (int k = 0; k < n; k++) {
            size_t nb = nbytes[idx[k]];
            if (nb)
                memcpy(out + off, tensors[idx[k]].data, nb);
            off += nb;
        }
        *out_len = total;
    }
    free(h.p);
    free(idx);
    free(nbytes);
    return out;
}
