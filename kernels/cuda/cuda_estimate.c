/* kernels/cuda/cuda_estimate.c — the CUDA backend's memory accounting without
 * a GPU (plain C, built everywhere): `tiertrain plan --device cuda` on a
 * machine that cannot run the CUDA backend plans with these figures. */
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_flash.h"

static size_t est_reserved(void) {
    return CUDA_CONTEXT_ESTIMATE + CUDA_BLAS_WORKSPACE + CUDA_CVT_ELEMS * 2 + CUDA_LAZY_MARGIN;
}
/* As the backend on an H100/H200-class GPU (227 KiB of shared memory per
 * block: every path open up to its largest head_dim; cuda_attn_path). A GPU
 * with less (A100: 163 KiB) takes the fp32-tile kernels only up to a smaller
 * head_dim and plans the cuBLAS path's seq^2 scratch above it: plan there, on
 * the GPU. */
static size_t est_attn_scratch(int B, int seq, int nh, int nkv, int hd, int dt) {
    int fa2, flash, cudnn;
    cuda_attn_env(&fa2, &flash, &cudnn);
    return cuda_attn_scratch(cuda_attn_path(fa2, flash, TT_FA_MAX_HD, hd, dt), cuda_attn_cudnn(cudnn, hd, dt), B, seq,
                             nh, nkv, hd, dt);
}

static const tt_backend g_estimate = {
    .name = "cuda-estimate",
    .reserved_bytes = est_reserved,
    .attn_scratch_bytes = est_attn_scratch,
    .mlp_chunk_elems = CUDA_MLP_CHUNK_ELEMS,
    .wbuf_elems = CUDA_WBUF_ELEMS,
    .xent_chunk_elems = CUDA_XENT_CHUNK_ELEMS,
    .decode_layers = 1,
};

const tt_backend *backend_cuda_estimate(void) { return &g_estimate; }
