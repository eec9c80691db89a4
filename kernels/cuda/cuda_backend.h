/* kernels/cuda/cuda_backend.h — the CUDA backend (plain C header; the
 * implementation is CUDA C++ behind extern "C"). Built when the Makefile
 * finds nvcc; float (tt_real = float) builds only. */
#ifndef TT_CUDA_BACKEND_H
#define TT_CUDA_BACKEND_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend table, or NULL (with tt_lasterr set) when no CUDA device
 * can be used (no driver, no GPU). Initialises the device and cuBLAS on the
 * first call. */
const tt_backend *backend_cuda(void);

#ifdef __cplusplus
}
#endif

#endif
