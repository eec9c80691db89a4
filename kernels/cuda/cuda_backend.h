/* kernels/cuda/cuda_backend.h — the CUDA backend (plain C header; the
 * implementation is CUDA C++ behind extern "C"). Built when the Makefile
 * finds nvcc; float (tt_real = float) builds only. */
#ifndef TT_CUDA_BACKEND_H
#define TT_CUDA_BACKEND_H

#include "kernels/backend.h"
#include "kernels/cuda/cuda_cudnn.h"
#include "kernels/cuda/cuda_fa2.h"

#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA backend table, or NULL (with tt_lasterr set) when no CUDA device
 * can be used (no driver, no GPU). Initialises the device and cuBLAS on the
 * first call. */
const tt_backend *backend_cuda(void);

/* Opens cuBLAS and cuBLASLt (NULL names: libcublasLt.so.N and libcublas.so.N
 * of the toolkit built with): 0, or -1 with the reason in why. backend_cuda
 * calls it first; once it succeeded, later calls do nothing. */
int cuda_blas_open(const char *lt_name, const char *blas_name, char *why, size_t n);

/* What the CUDA backend holds outside the arena, shared by the backend and
 * its estimate below: cuBLAS's workspace (allocated at start-up), a margin
 * for kernels loaded lazily after start-up, and — where no GPU can measure
 * it — the context with cuBLAS's handle, estimated from the H200 runs of
 * docs/BENCHMARKS.md (2026-11-28: between 600 and 640 MiB beyond the arena,
 * attention scratch included). */
#define CUDA_BLAS_WORKSPACE ((size_t)32 << 20)
/* bf16 values of the buffer a mixed product's float operand (a LoRA factor,
 * rank x width) is rounded into, allocated at start-up: 16 MiB. */
#define CUDA_CVT_ELEMS ((size_t)8 << 20)
#define CUDA_LAZY_MARGIN ((size_t)64 << 20)
/* The MLP's chunk (tt_backend.mlp_chunk_elems): 64M values. Each chunk
 * dequantizes the MLP's weights again, 8 times a layer (3 forward, 2
 * recomputed, 3 backward): at 16M values llama3.1-8b's 8192-token micro-batch
 * goes in 8 chunks, ~4 ms of dequantization a layer against ~16 ms of
 * products on an H200 (2.5 TB/s, 600 TFLOP/s); at 64M in 2 (~1 ms). The
 * workspace holds 4 chunks (g, u, mm, dm): +384 MiB in bf16 over 16M values
 * (llama3.1-70b pruned 0.85 keeps some layers whole, ffn 28672: its smallest
 * --hbm at seq 4096 goes from 2.58 to 2.89 GiB; at 128M values, one chunk for
 * the 8B, it would be 3.33). */
#define CUDA_MLP_CHUNK_ELEMS ((size_t)64 << 20)
/* The dequantization scratch (tt_backend.wbuf_elems): 64M values, 128 MiB
 * in bf16. At 16M llama3.1-8b's gate/up went in 4 blocks and down_proj in
 * blocks of 1152 output rows (a 4096 x 1152 x 14336 product fills 55-73% of
 * an H200's SMs) whose input gradients were summed block by block in bf16;
 * at 64M every projection of the 8B is one product, the 70B's gate/up go in
 * blocks of 8192 output rows and its down_proj in blocks of 2304 (of 8192).
 * +96 MiB of --hbm. */
#define CUDA_WBUF_ELEMS ((size_t)64 << 20)
/* The head's logits chunk (tt_backend.xent_chunk_elems): 32M values, 64 MiB
 * in bf16. At 4M an 8192-token micro-batch went through llama3's 128256
 * words 512 at a time: 251 chunks, each three products of N or K = 512 (one
 * wave of tiles, or less) and each adding into the hidden-size gradient in
 * bf16 again; at 32M 4096 at a time, 32 chunks. */
#define CUDA_XENT_CHUNK_ELEMS ((size_t)32 << 20)
#define CUDA_CONTEXT_ESTIMATE ((size_t)640 << 20)
/* Attention's score buffers (its scratch, in the workspace): the backward's
 * two (seq x seq) fp32 matrices (P, dP) and, with bf16 activations, their two
 * bf16 copies. */
static inline size_t cuda_attn_scratch_bytes(int seq, int dt) {
    return 2 * (size_t)seq * (size_t)seq * (dt == BE_BF16 ? 4 + 2 : 4);
}
/* The flash kernels' (the default for head_dim <= 128): D = dO . O per row
 * and head (fp32), between the backward's two passes. */
static inline size_t cuda_flash_scratch_bytes(int B, int seq, int nh) { return (size_t)B * seq * nh * sizeof(float); }

/* Attention's paths, and the one rule that picks a path for given shapes —
 * the backend's ops and scratch and its planning estimate all read it, so the
 * planner counts the scratch of the path that runs. TT_CUDA_ATTN=cublas
 * closes both kernel paths, =flash the tensor-core one, =cudnn puts cuDNN
 * in front of them (cuda_attn_cudnn below) (cuda_attn_env); the backend also
 * closes what this GPU's shared memory cannot hold, the estimate assumes an
 * H100/H200. */
enum { CUDA_ATTN_FA2, CUDA_ATTN_FLASH, CUDA_ATTN_CUBLAS };
static inline void cuda_attn_env(int *fa2_open, int *flash_open, int *cudnn_open) {
    const char *a = getenv("TT_CUDA_ATTN");
    int cublas = a && strcmp(a, "cublas") == 0;
    *flash_open = !cublas;
    *fa2_open = !cublas && !(a && strcmp(a, "flash") == 0);
    *cudnn_open = a && strcmp(a, "cudnn") == 0;
}
/* The tensor-core kernels for bf16 activations and head_dim <= TT_FA2_HD,
 * else the fp32-tile kernels for head_dim <= flash_max_hd, else cuBLAS. */
static inline int cuda_attn_path(int fa2_open, int flash_open, int flash_max_hd, int hd, int dt) {
    if (fa2_open && dt == BE_BF16 && hd <= TT_FA2_HD) return CUDA_ATTN_FA2;
    return flash_open && hd <= flash_max_hd ? CUDA_ATTN_FLASH : CUDA_ATTN_CUBLAS;
}
static inline size_t cuda_attn_path_scratch(int path, int B, int seq, int nh, int nkv, int hd, int dt) {
    if (path == CUDA_ATTN_FA2) return tt_fa2_scratch_bytes(B, seq, nh, nkv, hd);
    return path == CUDA_ATTN_FLASH ? cuda_flash_scratch_bytes(B, seq, nh) : cuda_attn_scratch_bytes(seq, dt);
}
/* TT_CUDA_ATTN=cudnn: cuDNN's fused flash-attention engines (cuda_cudnn.h,
 * loaded at run time) for bf16 activations and head_dim <= 128, a multiple
 * of 8. Packed examples (seg) and whatever cuDNN refuses (no library, no
 * engine, a plan asking more workspace than reserved) take the path above,
 * so the scratch holds either: cuDNN's share is our backward buffers plus
 * the workspace its engines ask (tt_sdpa_workspace_estimate). */
static inline int cuda_attn_cudnn(int cudnn_open, int hd, int dt) {
    return cudnn_open && dt == BE_BF16 && hd % 8 == 0 && hd <= 128;
}
static inline size_t cuda_attn_cudnn_scratch(int B, int seq, int nh, int nkv, int hd) {
    const tt_sdpa_shape sh = {B, seq, nh, nkv, hd};
    const size_t f = tt_sdpa_workspace_estimate(TT_SDPA_FWD, sh), b = tt_sdpa_workspace_estimate(TT_SDPA_BWD, sh);
    return tt_sdpa_layout(sh).workspace + (f > b ? f : b);
}
/* The attention scratch for a path (cuda_attn_path) and the cuDNN choice. */
static inline size_t cuda_attn_scratch(int path, int cudnn, int B, int seq, int nh, int nkv, int hd, int dt) {
    const size_t s = cuda_attn_path_scratch(path, B, seq, nh, nkv, hd, dt);
    const size_t c = cudnn ? cuda_attn_cudnn_scratch(B, seq, nh, nkv, hd) : 0;
    return s > c ? s : c;
}

/* The CUDA backend's memory accounting alone, for `tiertrain plan --device
 * cuda` on a machine without a (usable) GPU: name "cuda-estimate", the
 * outside-the-arena bytes above, and no ops (plans only measure). Always
 * available, also in builds without nvcc. */
const tt_backend *backend_cuda_estimate(void);

#ifdef __cplusplus
}
#endif

#endif
