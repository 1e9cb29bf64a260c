/*
 * ops_cpu_names.h — maps the op names of ops.h to the CPU backend's own
 * names (bft_cpu_*). Included first by ops_cpu.c, whose definitions (and the
 * ops.h declarations it sees) thereby become bft_cpu_op_* / bft_cpu_gemm, and by
 * backend_cpu.c, which puts them into the CPU backend table. Everyone else
 * calls the ops.h names, which backend.c dispatches to the current backend.
 * Every op declared in ops.h must be listed here, in backend.h's table, in
 * backend.c's dispatchers and in the CUDA backend (cuda/ops_cuda.cu).
 */
#ifndef BFT_OPS_CPU_NAMES_H
#define BFT_OPS_CPU_NAMES_H

#define bft_gemm bft_cpu_gemm
#define bft_op_linear_fwd bft_cpu_op_linear_fwd
#define bft_op_linear_bwd bft_cpu_op_linear_bwd
#define bft_op_colsum bft_cpu_op_colsum
#define bft_op_bias_gelu_fwd bft_cpu_op_bias_gelu_fwd
#define bft_op_gelu_fwd bft_cpu_op_gelu_fwd
#define bft_op_gelu_bwd bft_cpu_op_gelu_bwd
#define bft_op_gelu_recompute bft_cpu_op_gelu_recompute
#define bft_op_mul bft_cpu_op_mul
#define bft_op_embed_ln_fwd bft_cpu_op_embed_ln_fwd
#define bft_op_embed_ln_bwd bft_cpu_op_embed_ln_bwd
#define bft_op_residual_ln_fwd bft_cpu_op_residual_ln_fwd
#define bft_op_layernorm_fwd bft_cpu_op_layernorm_fwd
#define bft_op_layernorm_bwd bft_cpu_op_layernorm_bwd
#define bft_op_dropout_bias_bwd bft_cpu_op_dropout_bias_bwd
#define bft_op_attention_fwd bft_cpu_op_attention_fwd
#define bft_op_attention_bwd bft_cpu_op_attention_bwd
#define bft_op_attention_cls_fwd bft_cpu_op_attention_cls_fwd
#define bft_op_attention_cls_bwd bft_cpu_op_attention_cls_bwd
#define bft_op_gather_rows bft_cpu_op_gather_rows
#define bft_op_scatter_add_rows bft_cpu_op_scatter_add_rows
#define bft_op_bias_tanh_fwd bft_cpu_op_bias_tanh_fwd
#define bft_op_tanh_bwd bft_cpu_op_tanh_bwd
#define bft_op_dropout_fwd bft_cpu_op_dropout_fwd
#define bft_op_dropout_bwd bft_cpu_op_dropout_bwd
#define bft_op_softmax_xent bft_cpu_op_softmax_xent
#define bft_op_sigmoid_bce bft_cpu_op_sigmoid_bce
#define bft_op_adamw bft_cpu_op_adamw
#define bft_op_sumsq bft_cpu_op_sumsq
#define bft_op_zero bft_cpu_op_zero
#define bft_op_strided_rows bft_cpu_op_strided_rows
#define bft_op_mean bft_cpu_op_mean

#endif
