/* kernels/cuda/cuda_estimate.c — the CUDA backend's memory accounting without
 * a GPU (plain C, built everywhere): `tiertrain plan --device cuda` on a
 * machine that cannot run the CUDA backend plans with these figures. */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_fa2.h"
#include "kernels/cuda/cuda_flash.h"

#include <stdlib.h>
#include <string.h>

static size_t est_reserved(void) {
    return CUDA_CONTEXT_ESTIMATE + CUDA_BLAS_WORKSPACE + CUDA_CVT_ELEMS * 2 + CUDA_LAZY_MARGIN;
}
/* As the backend on an H100/H200-class GPU (227 KiB of shared memory per
 * block): the tensor-core kernels for bf16 activations and head_dim <= 128,
 * else flash attention for head_dim <= 128, unless TT_CUDA_ATTN says
 * otherwise. A GPU with less (A100: 163 KiB) takes flash only up to a smaller
 * head_dim and plans the cuBLAS path's seq^2 scratch above it: plan there, on
 * the GPU. */
static size_t est_attn_scratch(int B, int seq, int nh, int nkv, int hd, int dt) {
    const char *a = getenv("TT_CUDA_ATTN");
    int cublas = a && strcmp(a, "cublas") == 0, flash = hd <= TT_FA_MAX_HD && !cublas;
    if (dt == BE_BF16 && hd <= TT_FA2_HD && !cublas && !(a && strcmp(a, "flash") == 0))
        return tt_fa2_scratch_bytes(B, seq, nh, nkv, hd);
    return flash ? cuda_flash_scratch_bytes(B, seq, nh) : cuda_attn_scratch_bytes(seq, dt);
}

static const tt_backend g_estimate = {
    .name = "cuda-estimate",
    .reserved_bytes = est_reserved,
    .attn_scratch_bytes = est_attn_scratch,
    .mlp_chunk_elems = CUDA_MLP_CHUNK_ELEMS,
};

const tt_backend *backend_cuda_estimate(void) { return &g_estimate; }
