/* kernels/cpu/cpu_impl.h — what the files of the CPU backend share with each
 * other (and nothing outside kernels/cpu/ includes): the tt_real math
 * functions and the entries defined outside cpu.c. */
#ifndef TT_CPU_IMPL_H
#define TT_CPU_IMPL_H

#include "kernels/backend.h"

/* libm in the precision of tt_real */
#ifdef TT_F64
#define R_EXP exp
#define R_LOG log
#define R_SQRT sqrt
#else
#define R_EXP expf
#define R_LOG logf
#define R_SQRT sqrtf
#endif

/* cpu.c: thread-local scratch for the tt_real copies of bf16 operands, grown
 * on first use and kept (the backend runs on the compute thread: no
 * allocation per call once warm). */
#define CPU_SCRATCH_SLOTS 8
tt_real *cpu_scratch(int slot, size_t n);

/* cpu.c: C (M,N) = alpha op(A) op(B) + beta C through OpenBLAS (tt_real operands). */
void cpu_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const tt_real *A, int lda, const tt_real *B,
              int ldb, tt_real beta, tt_real *C, int ldc);

/* cpu_attn.c: attention on tt_real (backend.h's attn_fwd / attn_bwd) with
 * cpu_attn_scratch_bytes(seq) bytes of scratch. */
void cpu_attn_fwd(int B, int seq, int nh, int nkv, int hd, const tt_real *q, const tt_real *k, const tt_real *v,
                  tt_real *out, tt_real *lse, const int32_t *seg, tt_real *scratch);
void cpu_attn_bwd(int B, int seq, int nh, int nkv, int hd, const tt_real *q, const tt_real *k, const tt_real *v,
                  const tt_real *out, const tt_real *lse, const tt_real *dout, tt_real *dq, tt_real *dk,
                  tt_real *dv, const int32_t *seg, tt_real *scratch);
size_t cpu_attn_scratch_bytes(int seq);

#endif
