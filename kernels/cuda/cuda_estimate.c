/* kernels/cuda/cuda_estimate.c — the CUDA backend's memory accounting without
 * a GPU (plain C, built everywhere): `tiertrain plan --device cuda` on a
 * machine that cannot run the CUDA backend plans with these figures. */
#include "kernels/cuda/cuda_backend.h"

static size_t est_reserved(void) {
    return CUDA_CONTEXT_ESTIMATE + CUDA_BLAS_WORKSPACE + CUDA_CVT_ELEMS * 2 + CUDA_LAZY_MARGIN;
}
static size_t est_scratch(int seq) { return cuda_attn_scratch_bytes(seq); }

static const tt_backend g_estimate = {
    .name = "cuda-estimate",
    .reserved_bytes = est_reserved,
    .scratch_bytes = est_scratch,
};

const tt_backend *backend_cuda_estimate(void) { return &g_estimate; }
