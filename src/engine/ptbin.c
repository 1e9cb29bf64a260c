/*
 * ptbin.c — PyTorch checkpoints (pytorch_model.bin) to safetensors bytes,
 * through a restricted pickle interpreter that never executes code (ptbin.h).
 *
 * The interpreter's values live in one arena freed at the end; strings point
 * into the input. Every count that grows with the input (stack, memo, objects,
 * storages, tensors) is bounded by the input's size and by PV_MAX_BYTES, so a
 * hostile pickle costs at most that much memory and time linear in its size.
 * Values are never traversed recursively (cycles made through the memo are
 * harmless): REDUCE, BUILD and the final dict look one level deep only.
 */
#include "ptbin.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resource.h"
#include "safetensors.h"

#define BIN "pytorch_model.bin"
#define PV_MAX_BYTES ((size_t)256 << 20) /* interpreter memory, whatever the input */
#define MAX_TENSORS 1000000

/* ---- little helpers ------------------------------------------------------ */

static uint64_t rd_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- values --------------------------------------------------------------- */

enum {
    V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_BYTES, V_TUPLE, V_LIST, V_DICT, V_GLOBAL,
    V_STORAGE, V_TENSOR
};

static const char *const kind_name[] = {"None", "bool", "int", "float", "str", "bytes", "tuple",
                                        "list", "dict", "global", "storage", "tensor"};

/* The globals a state dict may name. */
enum {
    G_ODICT, G_REBUILD_V2, G_REBUILD, G_REBUILD_PARAM, G_STORAGE /* + dtype index */
};

static const struct {
    const char *module, *name;
    int id;
    int dtype; /* storages: bft_st_dtype */
} globals_ok[] = {
    {"collections", "OrderedDict", G_ODICT, -1},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, -1},
    {"torch._utils", "_rebuild_tensor", G_REBUILD, -1},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, -1},
    {"torch", "FloatStorage", G_STORAGE, BFT_ST_F32},
    {"torch", "HalfStorage", G_STORAGE, BFT_ST_F16},
    {"torch", "BFloat16Storage", G_STORAGE, BFT_ST_BF16},
    {"torch", "DoubleStorage", G_STORAGE, BFT_ST_F64},
    {"torch", "LongStorage", G_STORAGE, BFT_ST_I64},
    {"torch", "IntStorage", G_STORAGE, BFT_ST_I32},
    {"torch", "ShortStorage", G_STORAGE, BFT_ST_I16},
    {"torch", "CharStorage", G_STORAGE, BFT_ST_I8},
    {"torch", "ByteStorage", G_STORAGE, BFT_ST_U8},
    {"torch", "BoolStorage", G_STORAGE, BFT_ST_BOOL},
};

typedef struct pv pv;
struct pv {
    int k;
    union {
        int64_t i;                                      /* BOOL, INT */
        double f;                                       /* FLOAT */
        struct { const char *s; size_t n; } str;        /* STR, BYTES (into the input) */
        struct { pv **a; size_t n, cap; } seq;          /* TUPLE, LIST; DICT: 2n (key, value) */
        struct { int id, dtype; } g;                    /* GLOBAL */
        struct {                                        /* STORAGE */
            int dtype;
            const char *key;
            size_t keylen;
            int64_t numel;
            const unsigned char *data; /* set after the pickle ran */
        } st;
        struct {                                        /* TENSOR */
            pv *storage;
            int64_t offset;
            int ndim;
            int64_t size[BFT_ST_MAX_DIMS], stride[BFT_ST_MAX_DIMS];
        } t;
    } u;
};

typedef struct vm {
    const unsigned char *p; /* the pickle */
    size_t len, pos;
    pv **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    pv **memo;
    size_t nmemo;           /* allocated slots */
    size_t memo_count;      /* keys set (MEMOIZE's next index) */
    void **arena;           /* every allocation, freed together */
    size_t narena, acap;
    size_t bytes;           /* allocated so far */
    pv **storages;          /* distinct storages, in first-use order */
    size_t nstorages, stcap;
    size_t *st_hash;        /* open addressing: index + 1, 0 empty */
    size_t st_hcap;
    int legacy;             /* persistent ids have 6 fields */
    bft_error *err;
} vm;

static void *vm_alloc(vm *m, size_t n)
{
    void *p;
    if (n > PV_MAX_BYTES || m->bytes + n > PV_MAX_BYTES) {
        bft_set_error(m->err, BFT_ENOMEM,
                      BIN ": the pickle needs more than %zu MB of objects (a state dict needs a few MB)",
                      PV_MAX_BYTES >> 20);
        return NULL;
    }
    if (m->narena == m->acap) {
        size_t nc = m->acap ? 2 * m->acap : 256;
        void **na = realloc(m->arena, nc * sizeof *na);
        if (!na) {
            bft_set_error(m->err, BFT_ENOMEM, BIN ": out of memory");
            return NULL;
        }
        m->arena = na;
        m->acap = nc;
    }
    if (!(p = calloc(1, n ? n : 1))) {
        bft_set_error(m->err, BFT_ENOMEM, BIN ": out of memory");
        return NULL;
    }
    m->arena[m->narena++] = p;
    m->bytes += n;
    return p;
}

/* Grow *arr (elements of size es, capacity *cap) to hold need; arena-free
 * buffers (the caller owns them) but counted against the budget. */
static int grow(vm *m, void **arr, size_t *cap, size_t need, size_t es)
{
    size_t nc;
    void *na;
    if (need <= *cap)
        return 0;
    nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    if ((nc - *cap) * es > PV_MAX_BYTES || m->bytes + (nc - *cap) * es > PV_MAX_BYTES) {
        bft_set_error(m->err, BFT_ENOMEM,
                      BIN ": the pickle needs more than %zu MB of objects (a state dict needs a few MB)",
                      PV_MAX_BYTES >> 20);
        return -1;
    }
    if (!(na = realloc(*arr, nc * es))) {
        bft_set_error(m->err, BFT_ENOMEM, BIN ": out of memory");
        return -1;
    }
    m->bytes += (nc - *cap) * es;
    *arr = na;
    *cap = nc;
    return 0;
}

static pv *new_value(vm *m, int k)
{
    pv *v = vm_alloc(m, sizeof *v);
    if (v)
        v->k = k;
    return v;
}

/* Sequences keep their item arrays in the arena too (freed with it). */
static int seq_push(vm *m, pv *s, pv *x)
{
    if (s->u.seq.n == s->u.seq.cap) {
        size_t nc = s->u.seq.cap ? 2 * s->u.seq.cap : 4;
        pv **na = vm_alloc(m, nc * sizeof *na);
        if (!na)
            return -1;
        if (s->u.seq.n)
            memcpy(na, s->u.seq.a, s->u.seq.n * sizeof *na);
        s->u.seq.a = na; /* the old array stays in the arena */
        s->u.seq.cap = nc;
    }
    s->u.seq.a[s->u.seq.n++] = x;
    return 0;
}

static int push(vm *m, pv *v)
{
    if (!v)
        return -1;
    if (grow(m, (void **)&m->stack, &m->scap, m->sp + 1, sizeof *m->stack) < 0)
        return -1;
    m->stack[m->sp++] = v;
    return 0;
}

static int fail(vm *m, int code, const char *what)
{
    bft_set_error(m->err, code, BIN ": %s (pickle byte %zu)", what, m->pos);
    return -1;
}

static pv *pop(vm *m)
{
    size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    if (m->sp <= floor) {
        fail(m, BFT_EFORMAT, "stack underflow");
        return NULL;
    }
    return m->stack[--m->sp];
}

static pv *top(vm *m)
{
    size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    if (m->sp <= floor) {
        fail(m, BFT_EFORMAT, "stack underflow");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* Items above the last mark: *first index, count; the mark is removed. */
static int pop_mark(vm *m, size_t *first, size_t *count)
{
    if (!m->nmarks)
        return fail(m, BFT_EFORMAT, "no MARK on the stack");
    *first = m->marks[--m->nmarks];
    *count = m->sp - *first;
    return 0;
}

static int need(vm *m, size_t n)
{
    if (m->len - m->pos < n)
        return fail(m, BFT_EFORMAT, "truncated pickle");
    return 0;
}

/* A text line (GLOBAL, PUT, GET, INT): returns its start, *n without "\n". */
static const char *line(vm *m, size_t *n)
{
    const unsigned char *s = m->p + m->pos, *e = memchr(s, '\n', m->len - m->pos);
    if (!e) {
        fail(m, BFT_EFORMAT, "unterminated text argument");
        return NULL;
    }
    *n = (size_t)(e - s);
    m->pos += *n + 1;
    return (const char *)s;
}

static int parse_dec(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;
    int neg = 0;
    size_t i = 0;
    if (n > 0 && (s[0] == '-' || s[0] == '+'))
        neg = s[i++] == '-';
    if (i == n || n - i > 18)
        return -1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

static int memo_put(vm *m, uint64_t idx, pv *v)
{
    if (!v)
        return -1;
    /* indices a real pickler writes are sequential: never more than the bytes */
    if (idx > m->len + 16)
        return fail(m, BFT_EFORMAT, "memo index out of range");
    if (idx >= m->nmemo) {
        size_t cap = m->nmemo;
        if (grow(m, (void **)&m->memo, &cap, (size_t)idx + 1, sizeof *m->memo) < 0)
            return -1;
        memset(m->memo + m->nmemo, 0, (cap - m->nmemo) * sizeof *m->memo);
        m->nmemo = cap;
    }
    if (!m->memo[idx])
        m->memo_count++;
    m->memo[idx] = v;
    return 0;
}

static int memo_get(vm *m, uint64_t idx)
{
    if (idx >= m->nmemo || !m->memo[idx])
        return fail(m, BFT_EFORMAT, "memo key not found");
    return push(m, m->memo[idx]);
}

static pv *new_str(vm *m, int k, const unsigned char *s, size_t n)
{
    pv *v = new_value(m, k);
    if (v) {
        v->u.str.s = (const char *)s;
        v->u.str.n = n;
    }
    return v;
}

static int str_is(const pv *v, const char *s)
{
    return v && v->k == V_STR && v->u.str.n == strlen(s) && memcmp(v->u.str.s, s, v->u.str.n) == 0;
}

/* printable, bounded copy of a name for messages */
static void show(char *out, size_t cap, const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < cap; i++)
        out[j++] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
    if (n > 0 && j + 4 >= cap) {
        out[j++] = '.';
        out[j++] = '.';
        out[j++] = '.';
    }
    out[j] = '\0';
}

static int find_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl)
{
    char a[80], b[80];
    pv *v;
    for (size_t i = 0; i < sizeof globals_ok / sizeof globals_ok[0]; i++)
        if (strlen(globals_ok[i].module) == ml && memcmp(globals_ok[i].module, mod, ml) == 0 &&
            strlen(globals_ok[i].name) == nl && memcmp(globals_ok[i].name, name, nl) == 0) {
            if (!(v = new_value(m, V_GLOBAL)))
                return -1;
            v->u.g.id = globals_ok[i].id;
            v->u.g.dtype = globals_ok[i].dtype;
            return push(m, v);
        }
    show(a, sizeof a, mod, ml);
    show(b, sizeof b, name, nl);
    bft_set_error(m->err, BFT_EUNSAFE,
                  BIN ": the pickle names %s.%s (pickle byte %zu); bft reads only tensors from a state dict "
                  "and never runs code from a checkpoint",
                  a, b, m->pos);
    return -1;
}

/* ---- storages (persistent ids) ------------------------------------------- */

static uint64_t hash_key(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static pv *storage_lookup(vm *m, const char *key, size_t n)
{
    if (!m->st_hcap)
        return NULL;
    for (size_t h = hash_key(key, n) & (m->st_hcap - 1);; h = (h + 1) & (m->st_hcap - 1)) {
        size_t i = m->st_hash[h];
        if (!i)
            return NULL;
        pv *s = m->storages[i - 1];
        if (s->u.st.keylen == n && memcmp(s->u.st.key, key, n) == 0)
            return s;
    }
}

static int storage_add(vm *m, pv *s)
{
    if (grow(m, (void **)&m->storages, &m->stcap, m->nstorages + 1, sizeof *m->storages) < 0)
        return -1;
    m->storages[m->nstorages++] = s;
    if (2 * m->nstorages > m->st_hcap) {
        size_t nc = m->st_hcap ? 2 * m->st_hcap : 64, old = m->st_hcap;
        while (2 * m->nstorages > nc)
            nc *= 2;
        size_t *nh = calloc(nc, sizeof *nh);
        if (!nh || m->bytes + nc * sizeof *nh > PV_MAX_BYTES) {
            free(nh);
            return fail(m, BFT_ENOMEM, "too many storages");
        }
        m->bytes += (nc - old) * sizeof *nh;
        free(m->st_hash);
        m->st_hash = nh;
        m->st_hcap = nc;
        for (size_t i = 0; i < m->nstorages; i++) {
            pv *x = m->storages[i];
            size_t h = hash_key(x->u.st.key, x->u.st.keylen) & (nc - 1);
            while (nh[h])
                h = (h + 1) & (nc - 1);
            nh[h] = i + 1;
        }
        return 0;
    }
    size_t h = hash_key(s->u.st.key, s->u.st.keylen) & (m->st_hcap - 1);
    while (m->st_hash[h])
        h = (h + 1) & (m->st_hcap - 1);
    m->st_hash[h] = m->nstorages;
    return 0;
}

/* BINPERSID: ('storage', <storage type>, key, location, numel[, view]) */
static int persistent_load(vm *m, pv *pid)
{
    size_t want = m->legacy ? 6 : 5;
    pv **a;
    pv *s;
    if (pid->k != V_TUPLE || pid->u.seq.n != want || !str_is(pid->u.seq.a[0], "storage"))
        return fail(m, BFT_EFORMAT, "a persistent id that is not a tensor storage");
    a = pid->u.seq.a;
    if (a[1]->k != V_GLOBAL || a[1]->u.g.id != G_STORAGE)
        return fail(m, BFT_EFORMAT, "a storage whose type is not a torch storage class");
    if (a[2]->k != V_STR || a[2]->u.str.n == 0 || a[3]->k != V_STR || a[4]->k != V_INT || a[4]->u.i < 0)
        return fail(m, BFT_EFORMAT, "a malformed storage record");
    if (m->legacy && a[5]->k != V_NONE)
        return fail(m, BFT_EUNSUPPORTED, "storage views of old torch versions are not supported");
    s = storage_lookup(m, a[2]->u.str.s, a[2]->u.str.n);
    if (s) {
        if (s->u.st.dtype != a[1]->u.g.dtype || s->u.st.numel != a[4]->u.i)
            return fail(m, BFT_EFORMAT, "one storage key with two types or sizes");
        return push(m, s);
    }
    if (!(s = new_value(m, V_STORAGE)))
        return -1;
    s->u.st.dtype = a[1]->u.g.dtype;
    s->u.st.key = a[2]->u.str.s;
    s->u.st.keylen = a[2]->u.str.n;
    s->u.st.numel = a[4]->u.i;
    if (storage_add(m, s) < 0)
        return -1;
    return push(m, s);
}

/* ---- REDUCE of the allowed callables -------------------------------------- */

static int int_tuple(const pv *v, int64_t *out, int *n)
{
    if (v->k != V_TUPLE || v->u.seq.n > BFT_ST_MAX_DIMS)
        return -1;
    for (size_t i = 0; i < v->u.seq.n; i++) {
        if (v->u.seq.a[i]->k != V_INT)
            return -1;
        out[i] = v->u.seq.a[i]->u.i;
    }
    *n = (int)v->u.seq.n;
    return 0;
}

static int rebuild_tensor(vm *m, pv **a, size_t n, int v2)
{
    pv *t;
    int ns, nt;
    int64_t size[BFT_ST_MAX_DIMS], stride[BFT_ST_MAX_DIMS];
    if (v2 ? (n != 6 && n != 7) : n != 4)
        return fail(m, BFT_EFORMAT, "_rebuild_tensor with the wrong number of arguments");
    if (a[0]->k != V_STORAGE || a[1]->k != V_INT || int_tuple(a[2], size, &ns) < 0 ||
        int_tuple(a[3], stride, &nt) < 0 || ns != nt)
        return fail(m, BFT_EFORMAT, "_rebuild_tensor with malformed arguments (storage, offset, size, stride)");
    if (v2 && (a[4]->k != V_BOOL || !((a[5]->k == V_DICT && a[5]->u.seq.n == 0) || a[5]->k == V_NONE)))
        return fail(m, BFT_EFORMAT, "_rebuild_tensor_v2 with malformed requires_grad or backward hooks");
    /* the element range must lie inside the storage */
    {
        int64_t off = a[1]->u.i, last = off, numel = 1;
        if (off < 0)
            return fail(m, BFT_EFORMAT, "a tensor with a negative storage offset");
        for (int i = 0; i < ns; i++) {
            if (size[i] < 0 || stride[i] < 0 || size[i] > ((int64_t)1 << 40) ||
                stride[i] > ((int64_t)1 << 40))
                return fail(m, BFT_EFORMAT, "a tensor with a negative or huge size or stride");
            if (size[i] == 0)
                numel = 0;
            else if (numel)
                numel = numel > (((int64_t)1 << 40) / size[i]) ? -1 : numel * size[i];
            if (numel < 0)
                return fail(m, BFT_EFORMAT, "a tensor with too many elements");
        }
        if (numel > 0) {
            for (int i = 0; i < ns; i++) {
                if (stride[i] > 0 && size[i] - 1 > (INT64_MAX - last) / stride[i])
                    return fail(m, BFT_EFORMAT, "a tensor reaching past the end of its storage");
                last += (size[i] - 1) * stride[i];
            }
            if (last >= a[0]->u.st.numel)
                return fail(m, BFT_EFORMAT, "a tensor reaching past the end of its storage");
        }
    }
    if (!(t = new_value(m, V_TENSOR)))
        return -1;
    t->u.t.storage = a[0];
    t->u.t.offset = a[1]->u.i;
    t->u.t.ndim = ns;
    memcpy(t->u.t.size, size, sizeof size);
    memcpy(t->u.t.stride, stride, sizeof stride);
    return push(m, t);
}

static int reduce(vm *m)
{
    pv *args = pop(m), *fn;
    if (!args || !(fn = pop(m)))
        return -1;
    if (fn->k != V_GLOBAL)
        return fail(m, BFT_EFORMAT, "REDUCE of something that is not an allowed callable");
    if (args->k != V_TUPLE)
        return fail(m, BFT_EFORMAT, "REDUCE arguments are not a tuple");
    switch (fn->u.g.id) {
    case G_ODICT:
        if (args->u.seq.n != 0)
            return fail(m, BFT_EFORMAT, "OrderedDict with arguments");
        return push(m, new_value(m, V_DICT));
    case G_REBUILD_V2:
        return rebuild_tensor(m, args->u.seq.a, args->u.seq.n, 1);
    case G_REBUILD:
        return rebuild_tensor(m, args->u.seq.a, args->u.seq.n, 0);
    case G_REBUILD_PARAM:
        if (args->u.seq.n != 3 || args->u.seq.a[0]->k != V_TENSOR || args->u.seq.a[1]->k != V_BOOL)
            return fail(m, BFT_EFORMAT, "_rebuild_parameter with malformed arguments");
        return push(m, args->u.seq.a[0]);
    default:
        return fail(m, BFT_EFORMAT, "a storage class called directly");
    }
}

/* ---- the interpreter ---------------------------------------------------- */

static int op_name_refused(vm *m, int op)
{
    char msg[96];
    const char *name = NULL;
    int unsafe = 1;
    switch (op) {
    case 'i': name = "INST"; break;
    case 'o': name = "OBJ"; break;
    case 0x81: name = "NEWOBJ"; break;
    case 0x92: name = "NEWOBJ_EX"; break;
    case 0x82: case 0x83: case 0x84: name = "EXT"; break;
    case 'P': name = "PERSID"; break;
    default: unsafe = 0; break;
    }
    if (name)
        snprintf(msg, sizeof msg, "opcode %s is not allowed in a state dict", name);
    else
        snprintf(msg, sizeof msg, "opcode 0x%02x is not allowed in a state dict", op);
    return fail(m, unsafe ? BFT_EUNSAFE : BFT_EFORMAT, msg);
}

/* MARK, POP, POP_MARK, DUP: the stack and its marks. */
static int op_stack(vm *m, int op)
{
    size_t first, count;
    pv *v;
    switch (op) {
    case '(': /* MARK */
        if (grow(m, (void **)&m->marks, &m->mcap, m->nmarks + 1, sizeof *m->marks) < 0)
            return -1;
        m->marks[m->nmarks++] = m->sp;
        return 0;
    case '0': /* POP */
        if (m->nmarks && m->marks[m->nmarks - 1] == m->sp) {
            m->nmarks--; /* Python's POP also discards a MARK on top */
            return 0;
        }
        return pop(m) ? 0 : -1;
    case '1': /* POP_MARK */
        if (pop_mark(m, &first, &count) < 0)
            return -1;
        m->sp = first;
        return 0;
    default: /* '2': DUP */
        if (!(v = top(m)) || push(m, v) < 0)
            return -1;
        return 0;
    }
}

/* EMPTY_TUPLE, TUPLE, LIST, TUPLE1..3, EMPTY_LIST, EMPTY_DICT: a new container. */
static int op_new_seq(vm *m, int op)
{
    size_t first, count, n;
    pv *v;
    switch (op) {
    case ')': /* EMPTY_TUPLE */
        return push(m, new_value(m, V_TUPLE));
    case ']': /* EMPTY_LIST */
        return push(m, new_value(m, V_LIST));
    case '}': /* EMPTY_DICT */
        return push(m, new_value(m, V_DICT));
    case 't': /* TUPLE */
    case 'l': /* LIST */
        if (pop_mark(m, &first, &count) < 0 || !(v = new_value(m, op == 't' ? V_TUPLE : V_LIST)))
            return -1;
        for (size_t i = 0; i < count; i++)
            if (seq_push(m, v, m->stack[first + i]) < 0)
                return -1;
        m->sp = first;
        return push(m, v);
    default: /* 0x85, 0x86, 0x87: TUPLE1..3 */
        n = (size_t)(op - 0x84);
        {
            size_t floor = m->nmarks ? m->marks[m->nmarks - 1] : 0;
            if (m->sp < floor + n)
                return fail(m, BFT_EFORMAT, "stack underflow");
        }
        if (!(v = new_value(m, V_TUPLE)))
            return -1;
        for (size_t i = 0; i < n; i++)
            if (seq_push(m, v, m->stack[m->sp - n + i]) < 0)
                return -1;
        m->sp -= n;
        return push(m, v);
    }
}

/* APPEND, APPENDS, SETITEM, SETITEMS: items into the list or dict below them. */
static int op_fill(vm *m, int op)
{
    size_t first, count;
    pv *v, *x, *d;
    if (op == 'a') { /* APPEND */
        if (!(x = pop(m)) || !(v = top(m)))
            return -1;
        if (v->k != V_LIST)
            return fail(m, BFT_EFORMAT, "APPEND to something that is not a list");
        return seq_push(m, v, x);
    }
    if (op == 's') { /* SETITEM */
        if (!(x = pop(m)) || !(v = pop(m)) || !(d = top(m)))
            return -1;
        if (d->k != V_DICT)
            return fail(m, BFT_EFORMAT, "SETITEM on something that is not a dict");
        return seq_push(m, d, v) < 0 || seq_push(m, d, x) < 0 ? -1 : 0;
    }
    /* APPENDS ('e'): the items above the mark go into the list below it;
     * SETITEMS ('u'): key/value pairs above the mark into the dict below it */
    if (pop_mark(m, &first, &count) < 0)
        return -1;
    m->sp = first; /* the items stay in m->stack[first..) until pushed over */
    if (!(v = top(m)))
        return -1;
    if (op == 'e' && v->k != V_LIST)
        return fail(m, BFT_EFORMAT, "APPENDS to something that is not a list");
    if (op == 'u' && (v->k != V_DICT || count % 2))
        return fail(m, BFT_EFORMAT, "SETITEMS on something that is not a dict, or an odd count");
    for (size_t i = 0; i < count; i++)
        if (seq_push(m, v, m->stack[first + i]) < 0)
            return -1;
    return 0;
}

/* NONE, NEWTRUE, NEWFALSE, BININT, BININT1, BININT2, LONG1, INT, BINFLOAT. */
static int op_number(vm *m, int op)
{
    size_t n;
    uint64_t u;
    const char *s;
    pv *v;
    if (op == 'N')
        return push(m, new_value(m, V_NONE));
    if (op == 0x88 || op == 0x89) { /* NEWTRUE, NEWFALSE */
        if (!(v = new_value(m, V_BOOL)))
            return -1;
        v->u.i = op == 0x88;
        return push(m, v);
    }
    if (op == 'J' || op == 'K' || op == 'M') { /* BININT, BININT1, BININT2 */
        n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
        if (need(m, n) < 0 || !(v = new_value(m, V_INT)))
            return -1;
        u = rd_le(m->p + m->pos, (int)n);
        v->u.i = op == 'J' ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
        m->pos += n;
        return push(m, v);
    }
    if (op == 0x8a) { /* LONG1: n-byte two's complement */
        if (need(m, 1) < 0)
            return -1;
        n = m->p[m->pos++];
        if (n > 8)
            return fail(m, BFT_EFORMAT, "an integer wider than 64 bits");
        if (need(m, n) < 0 || !(v = new_value(m, V_INT)))
            return -1;
        u = rd_le(m->p + m->pos, (int)n);
        if (n > 0 && n < 8 && (m->p[m->pos + n - 1] & 0x80))
            u |= ~(uint64_t)0 << (8 * n);
        v->u.i = (int64_t)u;
        m->pos += n;
        return push(m, v);
    }
    if (op == 'I') { /* INT (text; "00"/"01" are bools in protocol 0) */
        if (!(s = line(m, &n)) || !(v = new_value(m, V_INT)))
            return -1;
        if (n == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) {
            v->k = V_BOOL;
            v->u.i = s[1] == '1';
        } else if (parse_dec(s, n, &v->u.i) < 0) {
            return fail(m, BFT_EFORMAT, "a malformed INT");
        }
        return push(m, v);
    }
    /* 'G': BINFLOAT, big-endian */
    if (need(m, 8) < 0 || !(v = new_value(m, V_FLOAT)))
        return -1;
    u = 0;
    for (int i = 0; i < 8; i++)
        u = (u << 8) | m->p[m->pos + i];
    memcpy(&v->u.f, &u, 8);
    m->pos += 8;
    return push(m, v);
}

/* SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, SHORT_BINSTRING, BINSTRING,
 * SHORT_BINBYTES, BINBYTES, BINBYTES8: a length-prefixed string or bytes. */
static int op_string(vm *m, int op)
{
    size_t n = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
    uint64_t u;
    if (need(m, n) < 0)
        return -1;
    u = rd_le(m->p + m->pos, (int)n);
    if (op == 'T' && (u & 0x80000000u))
        return fail(m, BFT_EFORMAT, "a negative string length");
    m->pos += n;
    if (u > m->len - m->pos)
        return fail(m, BFT_EFORMAT, "a string past the end of the pickle");
    if (push(m, new_str(m, (op == 'C' || op == 'B' || op == 0x8e) ? V_BYTES : V_STR, m->p + m->pos, (size_t)u)) < 0)
        return -1;
    m->pos += (size_t)u;
    return 0;
}

/* BINPUT, LONG_BINPUT, PUT, MEMOIZE (the top into the memo); BINGET,
 * LONG_BINGET, GET (a memo entry onto the stack). */
static int op_memo(vm *m, int op)
{
    size_t n;
    uint64_t u;
    int64_t idx;
    const char *s;
    int put = op == 'q' || op == 'r' || op == 'p' || op == 0x94;
    if (op == 0x94) /* MEMOIZE: the next key is the memo's size */
        return memo_put(m, m->memo_count, top(m));
    if (op == 'p' || op == 'g') { /* PUT, GET (text) */
        if (!(s = line(m, &n)))
            return -1;
        if (parse_dec(s, n, &idx) < 0 || idx < 0)
            return fail(m, BFT_EFORMAT, put ? "a malformed PUT" : "a malformed GET");
        u = (uint64_t)idx;
    } else { /* BINPUT, LONG_BINPUT, BINGET, LONG_BINGET */
        n = op == 'q' || op == 'h' ? 1 : 4;
        if (need(m, n) < 0)
            return -1;
        u = rd_le(m->p + m->pos, (int)n);
        m->pos += n;
    }
    return put ? memo_put(m, u, top(m)) : memo_get(m, u);
}

/* GLOBAL, STACK_GLOBAL, REDUCE, BUILD, BINPERSID: objects. */
static int op_object(vm *m, int op)
{
    pv *v, *x;
    if (op == 'c') { /* GLOBAL module\nname\n */
        size_t ml, nl;
        const char *mod = line(m, &ml), *name;
        if (!mod || !(name = line(m, &nl)))
            return -1;
        return find_global(m, mod, ml, name, nl);
    }
    if (op == 0x93) { /* STACK_GLOBAL */
        if (!(x = pop(m)) || !(v = pop(m)))
            return -1;
        if (v->k != V_STR || x->k != V_STR)
            return fail(m, BFT_EFORMAT, "STACK_GLOBAL of non-strings");
        return find_global(m, v->u.str.s, v->u.str.n, x->u.str.s, x->u.str.n);
    }
    if (op == 'R') /* REDUCE */
        return reduce(m);
    if (op == 'b') { /* BUILD: only a dict's attributes (state_dict()._metadata) */
        if (!(x = pop(m)) || !(v = top(m)))
            return -1;
        if (v->k != V_DICT || (x->k != V_DICT && x->k != V_NONE))
            return fail(m, BFT_EFORMAT, "BUILD on something other than a dict's attributes");
        return 0;
    }
    /* 'Q': BINPERSID */
    if (!(x = pop(m)) || persistent_load(m, x) < 0)
        return -1;
    return 0;
}

/* Run one pickle from m->pos to its STOP; *result receives the value. */
static int run(vm *m, pv **result)
{
    m->sp = 0;
    m->nmarks = 0;
    m->nmemo = 0;
    m->memo_count = 0;
    free(m->memo);
    m->memo = NULL;
    for (;;) {
        int op, rc;
        if (need(m, 1) < 0)
            return -1;
        if ((m->pos & 0xFFFF) == 0 && bft_interrupted())
            return fail(m, BFT_ECANCEL, "reading interrupted");
        op = m->p[m->pos++];
        switch (op) {
        case 0x80: /* PROTO */
            if (need(m, 1) < 0)
                return -1;
            if (m->p[m->pos] > 5)
                return fail(m, BFT_EFORMAT, "unknown pickle protocol");
            m->pos++;
            rc = 0;
            break;
        case 0x95: /* FRAME: a length hint */
            if (need(m, 8) < 0)
                return -1;
            m->pos += 8;
            rc = 0;
            break;
        case '.': { /* STOP */
            pv *v = pop(m);
            if (!v)
                return -1;
            *result = v;
            return 0;
        }
        case '(': case '0': case '1': case '2':
            rc = op_stack(m, op);
            break;
        case ')': case ']': case '}': case 't': case 'l': case 0x85: case 0x86: case 0x87:
            rc = op_new_seq(m, op);
            break;
        case 'a': case 'e': case 's': case 'u':
            rc = op_fill(m, op);
            break;
        case 'N': case 0x88: case 0x89: case 'J': case 'K': case 'M': case 0x8a: case 'I': case 'G':
            rc = op_number(m, op);
            break;
        case 0x8c: case 'X': case 0x8d: case 'U': case 'T': case 'C': case 'B': case 0x8e:
            rc = op_string(m, op);
            break;
        case 'q': case 'r': case 'p': case 0x94: case 'h': case 'j': case 'g':
            rc = op_memo(m, op);
            break;
        case 'c': case 0x93: case 'R': case 'b': case 'Q':
            rc = op_object(m, op);
            break;
        default:
            m->pos--;
            return op_name_refused(m, op);
        }
        if (rc < 0)
            return -1;
    }
}

/* ---- zip archives ------------------------------------------------------- */

typedef struct zentry {
    const char *name;
    size_t nlen;
    const unsigned char *data;
    size_t size;
} zentry;

static int zcmp(const void *a, const void *b)
{
    const zentry *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->nlen > y->nlen) - (x->nlen < y->nlen);
}

/* BFT_EFORMAT "pytorch_model.bin: ..." in err; returns -1 */
static int zerr(bft_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int zerr(bft_error *err, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bft_set_error(err, BFT_EFORMAT, BIN ": %s", msg);
    return -1;
}
#define ZERR(...) zerr(err, __VA_ARGS__)

/* The central directory's entry count, size and offset from the end record
 * (or its ZIP64 record); -1 with err. */
static int zip_directory(const unsigned char *b, size_t len, uint64_t *nent, uint64_t *cdsize, uint64_t *cdoff,
                         bft_error *err)
{
    size_t eocd = SIZE_MAX, lo = len > 22 + 65535 ? len - 22 - 65535 : 0;
    if (len < 22)
        return ZERR("not a zip archive (too short)");
    for (size_t i = len - 22 + 1; i-- > lo;)
        if (rd_le(b + i, 4) == 0x06054b50u && i + 22 + rd_le(b + i + 20, 2) <= len) {
            eocd = i;
            break;
        }
    if (eocd == SIZE_MAX)
        return ZERR("no zip end-of-central-directory record");
    *nent = rd_le(b + eocd + 10, 2);
    *cdsize = rd_le(b + eocd + 12, 4);
    *cdoff = rd_le(b + eocd + 16, 4);
    if (*nent == 0xFFFF || *cdsize == 0xFFFFFFFFu || *cdoff == 0xFFFFFFFFu) {
        /* ZIP64: the locator sits right before the record */
        uint64_t z;
        if (eocd < 20 || rd_le(b + eocd - 20, 4) != 0x07064b50u)
            return ZERR("a ZIP64 archive without its locator");
        z = rd_le(b + eocd - 20 + 8, 8);
        if (z > len || len - z < 56 || rd_le(b + z, 4) != 0x06064b50u)
            return ZERR("a bad ZIP64 end-of-central-directory record");
        *nent = rd_le(b + z + 32, 8);
        *cdsize = rd_le(b + z + 40, 8);
        *cdoff = rd_le(b + z + 48, 8);
    }
    if (*cdoff > len || *cdsize > len - *cdoff || *nent > *cdsize / 46)
        return ZERR("the zip central directory lies outside the file");
    return 0;
}

/* ZIP64 extended information in the extra field b[q .. q + xl): the fields that overflowed, in order. */
static void zip64_extra(const unsigned char *b, size_t q, size_t xl, uint64_t *usize, uint64_t *csize,
                        uint64_t *lho)
{
    for (size_t qe = q + xl; qe - q >= 4;) {
        size_t id = rd_le(b + q, 2), sz = rd_le(b + q + 2, 2), r = q + 4;
        if (qe - q - 4 < sz)
            break;
        if (id == 1) {
            if (*usize == 0xFFFFFFFFu && r + 8 <= q + 4 + sz) {
                *usize = rd_le(b + r, 8);
                r += 8;
            }
            if (*csize == 0xFFFFFFFFu && r + 8 <= q + 4 + sz) {
                *csize = rd_le(b + r, 8);
                r += 8;
            }
            if (*lho == 0xFFFFFFFFu && r + 8 <= q + 4 + sz)
                *lho = rd_le(b + r, 8);
        }
        q += 4 + sz;
    }
}

/* The central directory entry at b[*p ..] (the directory ends at end) into
 * e: a stored, unencrypted member inside the file; *p moves past it. */
static int zip_entry(const unsigned char *b, size_t len, size_t *p, size_t end, zentry *e, bft_error *err)
{
    uint64_t csize, usize, lho, data;
    size_t nl, xl, cl, method, flags, q = *p;
    if (end - q < 46 || rd_le(b + q, 4) != 0x02014b50u)
        return ZERR("a bad zip central directory entry");
    flags = rd_le(b + q + 8, 2);
    method = rd_le(b + q + 10, 2);
    csize = rd_le(b + q + 20, 4);
    usize = rd_le(b + q + 24, 4);
    nl = rd_le(b + q + 28, 2);
    xl = rd_le(b + q + 30, 2);
    cl = rd_le(b + q + 32, 2);
    lho = rd_le(b + q + 42, 4);
    if (end - q - 46 < nl + xl + cl)
        return ZERR("a zip central directory entry past its end");
    zip64_extra(b, q + 46 + nl, xl, &usize, &csize, &lho);
    if (flags & 1)
        return ZERR("encrypted zip members are not supported");
    if (method != 0 || csize != usize) {
        bft_set_error(err, BFT_EUNSUPPORTED,
                      BIN ": compressed zip members are not supported (torch.save stores them uncompressed)");
        return -1;
    }
    if (lho > len || len - lho < 30 || rd_le(b + lho, 4) != 0x04034b50u)
        return ZERR("a bad zip local header");
    data = lho + 30 + rd_le(b + lho + 26, 2) + rd_le(b + lho + 28, 2);
    if (data > len || usize > len - data)
        return ZERR("a zip member past the end of the file (truncated?)");
    e->data = b + data;
    e->name = (const char *)b + q + 46;
    e->nlen = nl;
    e->size = (size_t)usize;
    *p = q + 46 + nl + xl + cl;
    return 0;
}

/* The central directory of the zip in b[0..len): *out (malloc'd, sorted by name). */
static int zip_entries(const unsigned char *b, size_t len, zentry **out, size_t *nout, bft_error *err)
{
    uint64_t nent = 0, cdsize = 0, cdoff = 0;
    zentry *e;
    *out = NULL;
    *nout = 0;
    if (zip_directory(b, len, &nent, &cdsize, &cdoff, err) < 0)
        return -1;
    if (!(e = calloc(nent ? nent : 1, sizeof *e))) {
        bft_set_error(err, BFT_ENOMEM, BIN ": out of memory");
        return -1;
    }
    size_t p = cdoff, end = cdoff + cdsize;
    for (uint64_t k = 0; k < nent; k++)
        if (zip_entry(b, len, &p, end, &e[k], err) < 0) {
            free(e);
            return -1;
        }
    qsort(e, (size_t)nent, sizeof *e, zcmp);
    *out = e;
    *nout = (size_t)nent;
    return 0;
}

static const zentry *zfind(const zentry *e, size_t n, const char *name, size_t nlen)
{
    zentry key = {name, nlen, NULL, 0};
    return bsearch(&key, e, n, sizeof *e, zcmp);
}

/* ---- output -------------------------------------------------------------- */

typedef struct named {
    const char *name;
    size_t nlen;
    const pv *t;
    size_t order;
} named;

static int named_cmp(const void *a, const void *b)
{
    const named *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    if (x->nlen != y->nlen)
        return (x->nlen > y->nlen) - (x->nlen < y->nlen);
    return (x->order > y->order) - (x->order < y->order);
}

static int order_cmp(const void *a, const void *b)
{
    const named *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

static size_t tensor_numel(const pv *t)
{
    size_t n = 1;
    for (int i = 0; i < t->u.t.ndim; i++)
        n *= (size_t)t->u.t.size[i];
    return n;
}

/* Copy t's elements densely (row-major) to dst. */
static void gather(const pv *t, unsigned char *dst, size_t es)
{
    const unsigned char *src = t->u.t.storage->u.st.data;
    int nd = t->u.t.ndim;
    size_t numel = tensor_numel(t);
    int64_t idx[BFT_ST_MAX_DIMS] = {0}, expect = 1;
    int contiguous = 1;
    if (numel == 0)
        return;
    for (int i = nd - 1; i >= 0; i--) {
        if (t->u.t.size[i] != 1 && t->u.t.stride[i] != expect)
            contiguous = 0;
        expect *= t->u.t.size[i];
    }
    if (contiguous) {
        memcpy(dst, src + (size_t)t->u.t.offset * es, numel * es);
        return;
    }
    for (size_t k = 0; k < numel; k++) {
        int64_t off = t->u.t.offset;
        for (int i = 0; i < nd; i++)
            off += idx[i] * t->u.t.stride[i];
        memcpy(dst + k * es, src + (size_t)off * es, es);
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < t->u.t.size[i])
                break;
            idx[i] = 0;
        }
    }
}

/* JSON string body of s (n bytes) into out (NULL: just count). */
static size_t json_escape(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            if (out) {
                out[j] = '\\';
                out[j + 1] = (char)c;
            }
            j += 2;
        } else if (c < 0x20) {
            if (out) {
                memcpy(out + j, "\\u00", 4);
                out[j + 4] = hex[c >> 4];
                out[j + 5] = hex[c & 15];
            }
            j += 6;
        } else {
            if (out)
                out[j] = (char)c;
            j++;
        }
    }
    return j;
}

/* Safetensors bytes for the n named tensors; in_len bounds the output (4x:
 * tensors sharing storages, e.g. tied embeddings, are each written out). */
static void *write_st(named *ts, size_t n, size_t in_len, size_t *out_len, bft_error *err)
{
    size_t hlen = 2, data = 0, pad, total;
    unsigned char *buf;
    char num[200];
    /* header size first */
    hlen += strlen("\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        const pv *t = ts[i].t;
        size_t nb = tensor_numel(t) * bft_st_dtype_size(t->u.t.storage->u.st.dtype);
        int w = snprintf(num, sizeof num, ",\"\":{\"dtype\":\"%s\",\"shape\":[",
                         bft_st_dtype_name(t->u.t.storage->u.st.dtype));
        hlen += json_escape(NULL, ts[i].name, ts[i].nlen) + (size_t)w;
        for (int d = 0; d < t->u.t.ndim; d++)
            hlen += (size_t)snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->u.t.size[d]);
        hlen += (size_t)snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", data, data + nb);
        data += nb;
        if (data > 4 * in_len + ((size_t)1 << 20)) {
            bft_set_error(err, BFT_EFORMAT,
                          BIN ": its tensors expand to more than 4 times the file (storages shared too often)");
            return NULL;
        }
    }
    pad = (8 - (8 + hlen) % 8) % 8;
    total = 8 + hlen + pad + data;
    if (bft_memory_check(total, "the converted " BIN, err) != BFT_OK)
        return NULL;
    if (!(buf = malloc(total))) {
        bft_set_error(err, BFT_ENOMEM, BIN ": out of memory for %zu bytes", total);
        return NULL;
    }
    {
        char *h = (char *)buf + 8;
        size_t j = 0, off = 0;
        uint64_t hl = hlen + pad;
        for (int i = 0; i < 8; i++)
            buf[i] = (unsigned char)(hl >> (8 * i));
        j += (size_t)sprintf(h + j, "{\"__metadata__\":{\"format\":\"pt\"}");
        for (size_t i = 0; i < n; i++) {
            const pv *t = ts[i].t;
            size_t es = bft_st_dtype_size(t->u.t.storage->u.st.dtype), nb = tensor_numel(t) * es;
            h[j++] = ',';
            h[j++] = '"';
            j += json_escape(h + j, ts[i].name, ts[i].nlen);
            j += (size_t)sprintf(h + j, "\":{\"dtype\":\"%s\",\"shape\":[",
                                 bft_st_dtype_name(t->u.t.storage->u.st.dtype));
            for (int d = 0; d < t->u.t.ndim; d++)
                j += (size_t)sprintf(h + j, "%s%lld", d ? "," : "", (long long)t->u.t.size[d]);
            j += (size_t)sprintf(h + j, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
            if (bft_interrupted()) {
                free(buf);
                bft_set_error(err, BFT_ECANCEL, BIN ": converting interrupted");
                return NULL;
            }
            gather(t, buf + 8 + hlen + pad + off, es);
            off += nb;
        }
        h[j++] = '}';
        memset(h + j, ' ', pad);
    }
    *out_len = total;
    return buf;
}

/* ---- the two layouts ------------------------------------------------------ */

static const unsigned char LEGACY_MAGIC[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                             0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

int bft_pt_detect(const void *buf, size_t len)
{
    const unsigned char *b = buf;
    if (!b)
        return 0;
    if (len >= 4 && memcmp(b, "PK\x03\x04", 4) == 0)
        return 1;
    return len >= sizeof LEGACY_MAGIC && memcmp(b, LEGACY_MAGIC, sizeof LEGACY_MAGIC) == 0;
}

static void vm_free(vm *m)
{
    for (size_t i = 0; i < m->narena; i++)
        free(m->arena[i]);
    free(m->arena);
    free(m->stack);
    free(m->marks);
    free(m->memo);
    free(m->storages);
    free(m->st_hash);
}

/* Zip: run <dir>/data.pkl, then point each storage at <dir>/data/<key>. */
static int read_zip(vm *m, const unsigned char *b, size_t len, pv **result, bft_error *err)
{
    zentry *e = NULL;
    size_t n = 0, plen = 0;
    const zentry *pkl = NULL;
    const char *prefix = NULL;
    char *name = NULL;
    int rc = -1;
    if (zip_entries(b, len, &e, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *s = e[i].name, *sl = memchr(s, '/', e[i].nlen);
        if (sl && (size_t)(sl - s) + 1 + 8 == e[i].nlen && memcmp(sl + 1, "data.pkl", 8) == 0) {
            if (pkl) {
                ZERR("two data.pkl members in one archive");
                goto out;
            }
            pkl = &e[i];
            prefix = s;
            plen = (size_t)(sl - s) + 1;
        }
    }
    if (!pkl) {
        ZERR("no <dir>/data.pkl in the zip archive (not a torch.save file)");
        goto out;
    }
    if (!(name = malloc(plen + 64 + 65536))) {
        bft_set_error(err, BFT_ENOMEM, BIN ": out of memory");
        goto out;
    }
    memcpy(name, prefix, plen);
    memcpy(name + plen, "byteorder", 9);
    {
        const zentry *bo = zfind(e, n, name, plen + 9);
        if (bo && !(bo->size == 6 && memcmp(bo->data, "little", 6) == 0)) {
            bft_set_error(err, BFT_EUNSUPPORTED, BIN ": only little-endian archives are supported");
            goto out;
        }
    }
    m->p = pkl->data;
    m->len = pkl->size;
    m->pos = 0;
    if (run(m, result) < 0)
        goto out;
    for (size_t i = 0; i < m->nstorages; i++) {
        pv *s = m->storages[i];
        const zentry *z;
        size_t need_bytes;
        char shown[80];
        if (s->u.st.keylen > 65536 || (uint64_t)s->u.st.numel > (uint64_t)len) {
            ZERR("a storage key or size out of range");
            goto out;
        }
        need_bytes = (size_t)s->u.st.numel * bft_st_dtype_size(s->u.st.dtype);
        memcpy(name + plen, "data/", 5);
        memcpy(name + plen + 5, s->u.st.key, s->u.st.keylen);
        z = zfind(e, n, name, plen + 5 + s->u.st.keylen);
        show(shown, sizeof shown, s->u.st.key, s->u.st.keylen);
        if (!z) {
            ZERR("storage \"%s\" has no data/%s member", shown, shown);
            goto out;
        }
        if (z->size != need_bytes) {
            ZERR("storage \"%s\" holds %zu bytes, its %lld elements need %zu", shown, z->size,
                 (long long)s->u.st.numel, need_bytes);
            goto out;
        }
        s->u.st.data = z->data;
    }
    rc = 0;
out:
    free(name);
    free(e);
    return rc;
}

/* Legacy stream: magic, protocol, sys info, the object, keys, storages. */
static int read_legacy(vm *m, const unsigned char *b, size_t len, pv **result, bft_error *err)
{
    pv *v, *keys;
    size_t pos;
    m->p = b;
    m->len = len;
    m->pos = sizeof LEGACY_MAGIC;
    if (run(m, &v) < 0)
        return -1;
    if (v->k != V_INT || v->u.i != 1001)
        return ZERR("unknown legacy protocol version");
    if (run(m, &v) < 0)
        return -1;
    if (v->k != V_DICT)
        return ZERR("malformed system information");
    for (size_t i = 0; i + 1 < v->u.seq.n; i += 2)
        if (str_is(v->u.seq.a[i], "little_endian") &&
            !(v->u.seq.a[i + 1]->k == V_BOOL && v->u.seq.a[i + 1]->u.i == 1)) {
            bft_set_error(err, BFT_EUNSUPPORTED, BIN ": only little-endian files are supported");
            return -1;
        }
    m->legacy = 1;
    if (run(m, result) < 0)
        return -1;
    m->legacy = 0;
    if (run(m, &keys) < 0)
        return -1;
    if (keys->k != V_LIST)
        return ZERR("the storage key list is missing");
    pos = m->pos;
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        pv *k = keys->u.seq.a[i], *s;
        uint64_t numel;
        size_t es, nb;
        if (k->k != V_STR)
            return ZERR("a storage key that is not a string");
        if (!(s = storage_lookup(m, k->u.str.s, k->u.str.n)))
            return ZERR("data for a storage no tensor uses");
        if (s->u.st.data)
            return ZERR("a storage stored twice");
        if (len - pos < 8)
            return ZERR("truncated storage data");
        numel = rd_le(b + pos, 8);
        es = bft_st_dtype_size(s->u.st.dtype);
        if (numel != (uint64_t)s->u.st.numel)
            return ZERR("a storage whose size disagrees with its record");
        if (numel > len)
            return ZERR("truncated storage data");
        nb = (size_t)numel * es;
        if (len - pos - 8 < nb)
            return ZERR("truncated storage data");
        s->u.st.data = b + pos + 8;
        pos += 8 + nb;
    }
    for (size_t i = 0; i < m->nstorages; i++)
        if (!m->storages[i]->u.st.data)
            return ZERR("a storage without data");
    return 0;
}

void *bft_pt_to_safetensors(const void *buf, size_t len, size_t *out_len, bft_error *err)
{
    vm m;
    pv *res = NULL;
    named *ts = NULL;
    size_t n = 0, k = 0;
    void *out = NULL;
    const unsigned char *b = buf;

    bft_clear_error(err);
    *out_len = 0;
    memset(&m, 0, sizeof m);
    m.err = err;
    if (!b || !bft_pt_detect(b, len)) {
        bft_set_error(err, BFT_EFORMAT, BIN ": not a PyTorch checkpoint (neither a zip archive nor the legacy format)");
        return NULL;
    }
    if ((b[0] == 'P' ? read_zip(&m, b, len, &res, err) : read_legacy(&m, b, len, &res, err)) < 0)
        goto out;
    if (res->k != V_DICT) {
        bft_set_error(err, BFT_EFORMAT, BIN ": holds a %s, not a state dict", kind_name[res->k]);
        goto out;
    }
    n = res->u.seq.n / 2;
    if (n > MAX_TENSORS) {
        bft_set_error(err, BFT_EFORMAT, BIN ": %zu entries", n);
        goto out;
    }
    if (!(ts = malloc((n ? n : 1) * sizeof *ts))) {
        bft_set_error(err, BFT_ENOMEM, BIN ": out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const pv *key = res->u.seq.a[2 * i], *val = res->u.seq.a[2 * i + 1];
        char shown[120];
        if (key->k != V_STR) {
            bft_set_error(err, BFT_EFORMAT, BIN ": a state dict key that is a %s", kind_name[key->k]);
            goto out;
        }
        show(shown, sizeof shown, key->u.str.s, key->u.str.n);
        if (val->k != V_TENSOR) {
            bft_set_error(err, BFT_EFORMAT, BIN ": \"%s\" is a %s, not a tensor", shown, kind_name[val->k]);
            goto out;
        }
        if (key->u.str.n == 0 || memchr(key->u.str.s, 0, key->u.str.n)) {
            bft_set_error(err, BFT_EFORMAT, BIN ": an empty tensor name or one with a NUL");
            goto out;
        }
        ts[i].name = key->u.str.s;
        ts[i].nlen = key->u.str.n;
        ts[i].t = val;
        ts[i].order = i;
    }
    /* a name set twice keeps its last value, at its first position */
    qsort(ts, n, sizeof *ts, named_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && ts[i].nlen == ts[i + 1].nlen && memcmp(ts[i].name, ts[i + 1].name, ts[i].nlen) == 0) {
            ts[i + 1].order = ts[i].order;
            continue;
        }
        ts[k++] = ts[i];
    }
    qsort(ts, k, sizeof *ts, order_cmp);
    out = write_st(ts, k, len, out_len, err);
out:
    free(ts);
    vm_free(&m);
    return out;
}
