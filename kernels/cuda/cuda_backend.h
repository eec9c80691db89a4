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

/* The CUDA backend's memory accounting alone, for `tiertrain plan --device
 * cuda` on a machine without a (usable) GPU: name "cuda-estimate", the
 * outside-the-arena bytes above, and no ops (plans only measure). Always
 * available, also in builds without nvcc. */
const tt_backend *backend_cuda_estimate(void);

#ifdef __cplusplus
}
#endif

#endif
