/* kernels/cuda/cuda_impl.h — what the CUDA backend's files share (internal:
 * included by the .cu files of kernels/cuda only): the error checks, the compute stream,
 * the element types of activations and their loads and stores. */
#ifndef TT_CUDA_IMPL_H
#define TT_CUDA_IMPL_H

#include "kernels/backend.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

/* A CUDA or cuBLAS call failed: the run cannot go on (a device fault leaves the context unusable; another
 * process's memory or a stopped driver are not ours to mend). One sentence naming the error and the call's
 * place, what stands of the work (tt_fatal_context), the partial outputs removed, exit 1: cuda_failed. */
#define CUDA_CHECK(call)                                                                                      \
    do {                                                                                                      \
        cudaError_t err_ = (call);                                                                            \
        if (err_ != cudaSuccess) cuda_failed(err_, __FILE__, __LINE__);                                       \
    } while (0)

#define CUBLAS_CHECK(call)                                                                                    \
    do {                                                                                                      \
        int st_ = (int)(call);                                                                                \
        if (st_ != 0 /* CUBLAS_STATUS_SUCCESS */) cublas_failed(st_, __FILE__, __LINE__);                     \
    } while (0)

__attribute__((noreturn)) void cuda_failed(cudaError_t e, const char *file, int line);
__attribute__((noreturn)) void cublas_failed(int status, const char *file, int line);

/* After every launch (STYLE.md 5). */
#define LAUNCHED() CUDA_CHECK(cudaGetLastError())

/* The compute queue: a non-blocking stream every op, cuBLAS call and
 * synchronous-looking copy runs on (nothing orders it with the other queues
 * but the runtime's events). Created by backend_cuda. */
extern cudaStream_t g_compute;

typedef __nv_bfloat16 bf16;

static inline unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }
static inline cudaDataType cuda_type(int dt) { return dt == BE_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* ---- cuda_gemm.cu: matrix products (cuBLASLt, cuBLAS as the fallback) ---- */

/* At start-up, after g_compute exists: the handles; ws (ws_bytes) is the
 * products' workspace, cvt (CUDA_CVT_ELEMS bf16) a mixed product's rounded
 * float operand; both allocated by the caller. TT_CUDA_GEMM=cublas selects
 * cublasGemmEx for every product. 0, or the first cuBLAS status that failed
 * (the caller reports it: the GPU cannot be used). */
int cuda_gemm_init(void *ws, size_t ws_bytes, bf16 *cvt);
/* At start-up: loads this file's kernels (cudaFuncGetAttributes of one), so that a driver that cannot run the
 * build's code says so then; the error, or cudaSuccess. */
cudaError_t cuda_gemm_probe(void);
/* backend.h's gemm. */
void cu_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda, const void *B, int bt,
             int ldb, tt_real beta, void *C, int ct, int ldc);

#endif
