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

#define CUDA_CHECK(call)                                                                                      \
    do {                                                                                                      \
        cudaError_t err_ = (call);                                                                            \
        if (err_ != cudaSuccess) {                                                                            \
            fprintf(stderr, "tiertrain: CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__,       \
                    __LINE__, cudaGetErrorString(err_));                                                      \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)

#define CUBLAS_CHECK(call)                                                                                    \
    do {                                                                                                      \
        cublasStatus_t st_ = (call);                                                                          \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                                   \
            fprintf(stderr, "tiertrain: cuBLAS error %d at %s:%d\n", (int)st_, __FILE__, __LINE__);          \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)

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
 * cublasGemmEx for every product. */
void cuda_gemm_init(void *ws, size_t ws_bytes, bf16 *cvt);
/* backend.h's gemm. */
void cu_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda, const void *B, int bt,
             int ldb, tt_real beta, void *C, int ct, int ldc);

#endif
