/*
 * safetensors.h — engine-internal reader and writer of the safetensors format.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v", ...},
 *    "name": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its start.
 *
 * The reader validates strictly (as the reference Rust implementation does):
 * header length within the buffer and <= 100 MB, a JSON object, every entry
 * with a known dtype, a shape of non-negative dims (at most 8), offsets with
 * begin <= end, numel * dtype size == end - begin without overflow, tensors
 * contiguous and non-overlapping, covering the data section exactly.
 * Tensors are not copied: they point into the caller's buffer (which may be
 * unaligned).
 */
#ifndef BFT_SAFETENSORS_H
#define BFT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "bft_error.h"

typedef enum bft_st_dtype {
    BFT_ST_F32, BFT_ST_F16, BFT_ST_BF16, BFT_ST_F64,
    BFT_ST_I64, BFT_ST_I32, BFT_ST_I16, BFT_ST_I8,
    BFT_ST_U64, BFT_ST_U32, BFT_ST_U16, BFT_ST_U8,
    BFT_ST_BOOL, BFT_ST_F8_E4M3, BFT_ST_F8_E5M2,
    BFT_ST_NDTYPES
} bft_st_dtype;

#define BFT_ST_MAX_DIMS 8
#define BFT_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct bft_st_tensor {
    char *name;                      /* malloc'd */
    bft_st_dtype dtype;
    int ndim;
    int64_t shape[BFT_ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const unsigned char *data;       /* into the caller's buffer, nbytes long */
} bft_st_tensor;

typedef struct bft_st_file {
    int n;                           /* tensors, in header order */
    bft_st_tensor *t;
} bft_st_file;

/* Name of a dtype as in the header ("F32", "BF16", ...). */
const char *bft_st_dtype_name(bft_st_dtype d);

/* Bytes per element of a dtype. */
size_t bft_st_dtype_size(bft_st_dtype d);

/* Parse and validate buf[0..len). out receives the tensor list (pointing into
 * buf, which must outlive it). Returns 0 or -1 with err (BFT_EFORMAT for a
 * malformed file, BFT_ENOMEM). */
int bft_st_parse(const void *buf, size_t len, bft_st_file *out, bft_error *err);

/* Free what bft_st_parse allocated (not the buffer). */
void bft_st_release(bft_st_file *f);

/* The tensor with exactly this name, or NULL. */
const bft_st_tensor *bft_st_find(const bft_st_file *f, const char *name);

/* Convert a F32/F16/BF16 tensor to float32 into dst (t->numel floats); exact
 * (every F16 and BF16 value is representable in F32). Other dtypes:
 * BFT_EUNSUPPORTED naming the tensor. Returns 0 or -1 with err. */
int bft_st_to_f32(const bft_st_tensor *t, float *dst, bft_error *err);

/* One float32 tensor for the writer. */
typedef struct bft_st_out {
    const char *name;
    int ndim;                        /* 1..BFT_ST_MAX_DIMS */
    int64_t shape[BFT_ST_MAX_DIMS];
    const float *data;               /* numel floats */
} bft_st_out;

/* Serialise n float32 tensors: names sorted (byte order) in the header,
 * {"__metadata__":{"format":"pt"}} first, header padded with spaces so the
 * data section starts at an 8-byte aligned offset, data in the same sorted
 * order. Names must be distinct. Returns malloc'd bytes (*out_len) or NULL
 * with err. */
void *bft_st_write(const bft_st_out *tensors, int n, size_t *out_len, bft_error *err);

/* IEEE half / bfloat16 → float (exact). */
float bft_f16_to_f32(uint16_t h);
float bft_bf16_to_f32(uint16_t h);

#endif
