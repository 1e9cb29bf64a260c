/*
 * ptbin.h — reader of PyTorch checkpoints (pytorch_model.bin, torch.save of a
 * state dict) that never executes anything.
 *
 * Two layouts are read:
 *   - the zip archive of torch >= 1.6: <dir>/data.pkl (the pickle) and one
 *     stored (uncompressed) member <dir>/data/<key> per storage, ZIP64 too;
 *   - the legacy stream of older torch: magic, protocol and system-info
 *     pickles, the state-dict pickle, the list of storage keys, then each
 *     storage as an 8-byte element count and its raw bytes.
 * The pickle runs in a small interpreter that knows only the opcodes a state
 * dict needs and only these globals: collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2 / _rebuild_tensor / _rebuild_parameter and
 * the typed storage classes torch.FloatStorage, HalfStorage, BFloat16Storage,
 * DoubleStorage, LongStorage, IntStorage, ShortStorage, CharStorage,
 * ByteStorage and BoolStorage (as persistent-id storage types, never called).
 * Any other global (os.system, builtins.eval, ...) or an opcode that builds
 * arbitrary objects (INST, OBJ, NEWOBJ, EXT*) is refused with BFT_EUNSAFE;
 * other unknown opcodes and malformed data are BFT_EFORMAT; big-endian
 * archives and old storage views are BFT_EUNSUPPORTED.
 * The result must be a dict of name -> tensor; tensors may share storages,
 * have offsets and arbitrary (non-negative) strides: each is copied out
 * densely in its own dtype.
 */
#ifndef BFT_PTBIN_H
#define BFT_PTBIN_H

#include <stddef.h>

#include "bft_error.h"

/* 1 when buf looks like a PyTorch checkpoint (zip local-file signature or the
 * legacy magic number), else 0. */
int bft_pt_detect(const void *buf, size_t len);

/* Read the state dict in buf[0..len) and return it as safetensors bytes
 * (malloc'd, *out_len bytes; the caller frees): every tensor in its own dtype
 * (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL), dense row-major, in the
 * dict's order (a name set twice keeps its last value). Returns NULL with err
 * on failure (codes above; BFT_ENOMEM, BFT_ECANCEL when interrupted). */
void *bft_pt_to_safetensors(const void *buf, size_t len, size_t *out_len, bft_error *err);

#endif
