/*
 * ops_cpu.h — the CPU backend's ops: bft_cpu_op_<name> for every op of
 * ops_list.h, with the signature and semantics given there (host pointers).
 * Implemented in ops_cpu.c (strided_rows and mean in backend_cpu.c) and
 * put into the CPU backend table by backend_cpu.c. Everyone else calls the
 * ops.h names, which backend.c dispatches to the current backend.
 */
#ifndef BFT_OPS_CPU_H
#define BFT_OPS_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

#define BFT_OP(ret, name, params, args) ret bft_cpu_op_##name params;
#include "ops_list.h"
#undef BFT_OP

#endif
