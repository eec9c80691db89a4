/* kernels/cuda/cuda_backend.cu — the CUDA backend: every op of tt_backend on
 * the GPU. The CPU backend (kernels/cpu/) is the reference each kernel is
 * tested against (tests/test_cuda_ops.c, skipped without a GPU).
 *
 * Activations are fp32 or bf16 (kernels templated on the storage type);
 * matrix products go to cuBLASLt with fp32 accumulation (bf16 operands:
 * tensor cores; cuda_gemm.cu). Every op runs on one non-blocking compute stream; layer loads,
 * unspills and spills get non-blocking streams of their own, ordered by the
 * runtime's events only. After start-up nothing allocates or synchronises
 * the device (tests/test_cuda_rules.sh): scratch comes from the workspace.
 * Attention is flash attention (cuda_flash.h: one thread per query or key
 * row against tiles staged in shared memory, the backward in two passes
 * without atomics), or with TT_CUDA_ATTN=cublas head-chunked through cuBLAS
 * (one (seq x seq) buffer pair at a time). Row reductions are one block per
 * row. The index arithmetic lives in cuda_index.h and cuda_flash.h, tested
 * on the CPU. */
#include "kernels/adamw.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_fa2.h"
#include "kernels/cuda/cuda_flash.h"
#include "kernels/cuda/cuda_impl.h"
#include "kernels/cuda/cuda_index.h"

extern "C" {
#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
}

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

/* The compute queue (cuda_impl.h). */
cudaStream_t g_compute;

/* Every host thread that talks to the GPU (the step loop, the IO and copy
 * threads) selects the device once. */
static void ensure_device(void) {
    static __thread int set;
    if (!set) {
        CUDA_CHECK(cudaSetDevice(0));
        set = 1;
    }
}
static __constant__ float c_nf4[16];
static __constant__ float c_dyn[256];


/* ---- memory ---------------------------------------------------------------- */

/* Start-up and exit only (the arenas, model_load's resident copies):
 * tests/test_cuda_rules.sh keeps cudaMalloc/cudaFree and every other
 * synchronising call out of the rest of this folder. */
static void *cu_alloc(size_t bytes) {
    ensure_device();
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError(); /* clear the error: the caller reports out-of-memory */
        return NULL;
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 256, g_compute));
    CUDA_CHECK(cudaStreamSynchronize(g_compute)); /* zeroed when it returns */
    return p;
}
static void cu_free(void *p) { CUDA_CHECK(cudaFree(p)); }
/* Synchronous for the host (backend.h): on the compute queue, after every op
 * issued before, then the host waits for that queue alone. */
static void cu_to_device(void *d, const void *s, size_t n) {
    ensure_device();
    CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyHostToDevice, g_compute));
    CUDA_CHECK(cudaStreamSynchronize(g_compute));
}
static void cu_to_host(void *d, const void *s, size_t n) {
    ensure_device();
    CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToHost, g_compute));
    CUDA_CHECK(cudaStreamSynchronize(g_compute));
}
static void cu_copy(void *d, const void *s, size_t n) { CUDA_CHECK(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice, g_compute)); }

__global__ void k_fill(float *x, size_t n, float v) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}
static void cu_fill(tt_real *x, size_t n, tt_real v) {
    if (!n) return;
    k_fill<<<blocks_for(n, 256), 256, 0, g_compute>>>(x, n, v);
    LAUNCHED();
}

/* ---- element types ------------------------------------------------------------
 * Activations are float or bf16 (backend.h's dt): kernels are templates on
 * the storage type T, read through ldv (to float) and write through stv
 * (round to nearest even); all arithmetic is float. TDISPATCH launches the
 * instance dt names. */
__device__ __forceinline__ float ldv(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ldv(const bf16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void stv(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void stv(bf16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

#define TDISPATCH(dt, kernel, grid, block, ...)                                                       \
    do {                                                                                               \
        if ((dt) == BE_BF16) kernel<bf16><<<(grid), (block), 0, g_compute>>>(__VA_ARGS__);             \
        else kernel<float><<<(grid), (block), 0, g_compute>>>(__VA_ARGS__);                            \
        LAUNCHED();                                                                                    \
    } while (0)


/* Element-wise kernels in bf16 take 8 values a thread where every operand
 * is 16-byte aligned: one 16-byte access for each (a warp's 2-byte accesses
 * keep too few bytes in flight to reach the memory's bandwidth). Each value's
 * arithmetic is one __device__ function that the one-a-thread kernel (float,
 * unaligned operands, a tail) calls too, with its multiply-adds written as
 * fmaf: whichever kernel a buffer's alignment picks, the same bits. */
__device__ __forceinline__ void ld8(const void *p, size_t g, float *f) {
    const uint4 r = ((const uint4 *)p)[g];
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
    for (int k = 0; k < 4; k++) {
        f[2 * k] = __bfloat162float(__ushort_as_bfloat16((unsigned short)(w[k] & 0xffffu)));
        f[2 * k + 1] = __bfloat162float(__ushort_as_bfloat16((unsigned short)(w[k] >> 16)));
    }
}
__device__ __forceinline__ void st8(void *p, size_t g, const float *f) {
    uint32_t w[4];
    for (int k = 0; k < 4; k++)
        w[k] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * k])) |
               (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * k + 1])) << 16;
    ((uint4 *)p)[g] = make_uint4(w[0], w[1], w[2], w[3]);
}
/* Whole groups of 8 bf16 values for the 8-wide kernel: n / 8 where dt is
 * bf16 and every pointer given is 16-byte aligned, else 0. */
static size_t vec8_groups(size_t n, int dt, const void *a, const void *b, const void *c, const void *d,
                          const void *e) {
    const void *p[5] = {a, b, c, d, e};
    if (dt != BE_BF16) return 0;
    for (int i = 0; i < 5; i++)
        if (p[i] && (uintptr_t)p[i] % 16) return 0;
    return n / 8;
}

/* ---- dense algebra (products: cuda_gemm.cu) ---------------------------------- */

__device__ __forceinline__ float axpy_v(float a, float x, float y) { return fmaf(a, x, y); }
template <typename T> __global__ void k_axpy(size_t n, float a, const void *x_, void *y_) {
    const T *x = (const T *)x_;
    T *y = (T *)y_;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) stv(y, i, axpy_v(a, ldv(x, i), ldv(y, i)));
}
__global__ void k_axpy8(size_t groups, float a, const void *x, void *y) {
    size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (g >= groups) return;
    float xv[8], yv[8];
    ld8(x, g, xv);
    ld8(y, g, yv);
    for (int k = 0; k < 8; k++) yv[k] = axpy_v(a, xv[k], yv[k]);
    st8(y, g, yv);
}
static void cu_axpy(size_t n, tt_real a, const void *x, void *y, int dt) {
    size_t g = vec8_groups(n, dt, x, y, NULL, NULL, NULL), done = 8 * g;
    if (g) {
        k_axpy8<<<blocks_for(g, 256), 256, 0, g_compute>>>(g, a, x, y);
        LAUNCHED();
    }
    if (n > done)
        TDISPATCH(dt, k_axpy, blocks_for(n - done, 256), 256, n - done, a, be_at(x, done, dt),
                  be_at(y, done, dt));
}
__global__ void k_scale(size_t n, float a, float *x) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}
static void cu_scale(size_t n, tt_real a, tt_real *x) {
    if (!n) return;
    k_scale<<<blocks_for(n, 256), 256, 0, g_compute>>>(n, a, x);
    LAUNCHED();
}
template <typename T> __global__ void k_mask_scale(size_t n, const void *x_, const void *m_, float a, void *y_) {
    const T *x = (const T *)x_, *m = (const T *)m_;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) stv((T *)y_, i, ldv(x, i) * ldv(m, i) * a);
}
static void cu_mask_scale(size_t n, const void *x, const void *m, tt_real a, void *y, int dt) {
    if (!n) return;
    TDISPATCH(dt, k_mask_scale, blocks_for(n, 256), 256, n, x, m, a, y);
}

/* Block partial sums of squares in double. */
__global__ void k_sumsq(size_t n, const float *x, double *part) {
    __shared__ double sh[256];
    double s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}
enum { SUMSQ_BLOCKS = 256 };
static double *g_sumsq_part; /* SUMSQ_BLOCKS partial sums, allocated at start-up */

/* *acc += the n values of part, summed in order by one thread (n is small:
 * block partials or one cross-entropy chunk's rows). */
__global__ void k_sum_into(int n, const double *part, double *acc) {
    double s = 0;
    for (int i = 0; i < n; i++) s += part[i];
    *acc += s;
}

static void cu_sumsq(size_t n, const tt_real *x, double *acc) {
    if (!n) return;
    k_sumsq<<<SUMSQ_BLOCKS, 256, 0, g_compute>>>(n, x, g_sumsq_part);
    LAUNCHED();
    k_sum_into<<<1, 1, 0, g_compute>>>(SUMSQ_BLOCKS, g_sumsq_part, acc);
    LAUNCHED();
}

/* LoRA dropout, y = [y +] a * keep * x: one thread per group of four
 * columns of a row, cuda_index.h's Philox draw and the CPU reference's two
 * roundings (a row's words depend only on (seed, its stream, the group), so
 * every element is independent of the others and a warp's accesses are
 * contiguous). */
template <typename T>
__global__ void k_dropout(int rows, int cols, uint64_t seed, uint64_t stream0, uint32_t thr, float a, const void *x_,
                          void *y_, int acc) {
    size_t groups = ((size_t)cols + 3) / 4, g = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (size_t)rows * groups) return;
    size_t t = g / groups;
    int i0 = (int)(g % groups) * 4;
    uint32_t w[4];
    tt_dropout_words(seed, stream0 + (uint64_t)t, (uint32_t)(i0 / 4), w);
    const T *x = (const T *)x_ + t * (size_t)cols;
    T *y = (T *)y_ + t * (size_t)cols;
    for (int k = 0; k < 4 && i0 + k < cols; k++) {
        float v = w[k] >= thr ? tt_mul_rn(ldv(x, i0 + k), a) : 0.f;
        stv(y, i0 + k, acc ? tt_add_rn(ldv(y, i0 + k), v) : v);
    }
}
static void cu_dropout(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real a, const void *x, void *y,
                       int acc, int dt) {
    size_t n = (size_t)rows * (((size_t)cols + 3) / 4);
    if (!n) return;
    TDISPATCH(dt, k_dropout, blocks_for(n, 256), 256, rows, cols, seed, stream0, tt_dropout_threshold(p), (float)a, x, y,
              acc);
}

/* ---- dequantization ------------------------------------------------------------ */

/* Value j of a decoded range goes to out[(j / w) * ldo + j % w]: rows of w
 * values at row stride ldo (a linear op's padded block; w == ldo: packed). */
__host__ __device__ __forceinline__ size_t dq_at(size_t j, int w, int ldo) {
    return w == ldo ? j : (j / (size_t)w) * (size_t)ldo + j % (size_t)w;
}
template <typename T> __global__ void k_f32(size_t n, const float *in, void *out, int w, int ldo) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) stv((T *)out, dq_at(i, w, ldo), in[i]);
}
template <typename T> __global__ void k_bf16(size_t n, const unsigned short *in, void *out, int w, int ldo) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) stv((T *)out, dq_at(i, w, ldo), __uint_as_float((unsigned)in[i] << 16));
}
/* One thread per value v0 + i: code from its nibble (first value in the high
 * nibble), absmax from the f32 array or through double quantization. */
template <typename T>
__global__ void k_nf4(size_t count, size_t v0, const unsigned char *codes, const float *absmax,
                      const unsigned char *qabs, const float *absmax2, const float *offset_p, void *out, int w, int ldo) {
    size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (j >= count) return;
    float offset = absmax ? 0.f : *offset_p; /* read on the device: no host round trip per call */
    size_t i = v0 + j, blk = i / NF4_BLOCK;
    /* cuda_index.h: the nibble order and the two roundings of the CPU reference */
    float am = absmax ? absmax[blk] : tt_nf4_dq_absmax(c_dyn[qabs[blk]], absmax2[blk / NF4_DQ_BLOCK], offset);
    stv((T *)out, dq_at(j, w, ldo), tt_nf4_value(c_nf4[tt_nf4_code(codes, i)], am));
}
/* The same into bf16, G (8 or 4) values a thread: one 16- or 8-byte store, the
 * codes one 4- or 2-byte load (dequant_rows checks the alignment), the code
 * book in shared memory (a warp's lanes look up different codes: from
 * constant memory those reads would be serialised). Group g is values
 * v0 + G g ..; a group lies in one row (w == ldo, or w a multiple of G). */
template <int G>
__global__ void k_nf4_vec(size_t groups, size_t v0, const unsigned char *codes, const float *absmax,
                          const unsigned char *qabs, const float *absmax2, const float *offset_p, bf16 *out, int w,
                          int ldo) {
    __shared__ float book[16];
    if (threadIdx.x < 16) book[threadIdx.x] = c_nf4[threadIdx.x];
    __syncthreads();
    size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (g >= groups) return;
    float offset = absmax ? 0.f : *offset_p;
    size_t j = (size_t)G * g, i = v0 + j, blk = i / NF4_BLOCK; /* G divides NF4_BLOCK: one block */
    float am = absmax ? absmax[blk] : tt_nf4_dq_absmax(c_dyn[qabs[blk]], absmax2[blk / NF4_DQ_BLOCK], offset);
    uint32_t word = G == 8 ? *(const uint32_t *)(codes + i / 2) : *(const unsigned short *)(codes + i / 2);
    uint32_t o[G / 2];
    for (int k = 0; k < G / 2; k++) {
        bf16 a = __float2bfloat16_rn(tt_nf4_value(book[tt_nf4_code_in(word, 2 * k)], am));
        bf16 b = __float2bfloat16_rn(tt_nf4_value(book[tt_nf4_code_in(word, 2 * k + 1)], am));
        o[k] = (uint32_t)__bfloat16_as_ushort(a) | (uint32_t)__bfloat16_as_ushort(b) << 16;
    }
    if constexpr (G == 8) *(uint4 *)(out + dq_at(j, w, ldo)) = make_uint4(o[0], o[1], o[2], o[3]);
    else *(uint2 *)(out + dq_at(j, w, ldo)) = make_uint2(o[0], o[1]);
}

/* Values [v0, v0 + count) as rows of w values at row stride ldo in out. */
static void dequant_rows(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, void *out, int odt,
                         int w, int ldo) {
    if (!count) return;
    const unsigned char *b = (const unsigned char *)blob;
    unsigned nb = blocks_for(count, 256);
    if (dtype == TT_DTYPE_F32) TDISPATCH(odt, k_f32, nb, 256, count, (const float *)blob + v0, out, w, ldo);
    else if (dtype == TT_DTYPE_BF16)
        TDISPATCH(odt, k_bf16, nb, 256, count, (const unsigned short *)blob + v0, out, w, ldo);
    else {
        nf4_layout L;
        nf4_layout_of(n, dtype == TT_DTYPE_NF4DQ, &L);
        const float *am = L.double_quant ? NULL : (const float *)(b + L.absmax_off);
        const unsigned char *qa = L.double_quant ? b + L.absmax_off : NULL;
        const float *am2 = L.double_quant ? (const float *)(b + L.absmax2_off) : NULL;
        const float *off = L.double_quant ? (const float *)(b + L.offset_off) : NULL;
        /* bf16 out, G values a thread, where a group's codes and values are aligned and lie in one row; a packed
         * range's last count % G values by the one-a-thread kernel */
        int G = 0;
        for (int g = 8; g >= 4 && !G; g /= 2)
            if (odt == BE_BF16 && v0 % g == 0 && (uintptr_t)b % (g / 2) == 0 && (uintptr_t)out % (2 * g) == 0 &&
                (w == ldo || (w % g == 0 && ldo % g == 0)))
                G = g;
        size_t groups = G ? count / G : 0;
        if (groups) {
            unsigned ng = blocks_for(groups, 256);
            if (G == 8) k_nf4_vec<8><<<ng, 256, 0, g_compute>>>(groups, v0, b, am, qa, am2, off, (bf16 *)out, w, ldo);
            else k_nf4_vec<4><<<ng, 256, 0, g_compute>>>(groups, v0, b, am, qa, am2, off, (bf16 *)out, w, ldo);
            LAUNCHED();
        }
        size_t done = groups * G, rest = count - done;
        if (!done) TDISPATCH(odt, k_nf4, nb, 256, count, v0, b, am, qa, am2, off, out, w, ldo);
        else if (rest) /* fewer than G values, after a whole group: in that group's row, packed */
            TDISPATCH(odt, k_nf4, 1, 256, rest, v0 + done, b, am, qa, am2, off, (bf16 *)out + dq_at(done, w, ldo), 1, 1);
    }
}
static void cu_dequant(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, void *out, int odt) {
    dequant_rows(dtype, blob, n, v0, count, out, odt, 1, 1);
}

/* Dequantize the block into scratch (type dt), rows padded to be_row_pad(in)
 * (a bf16 row then starts 16-byte aligned, as tensor-core products want),
 * then one cuBLASLt product (the reference's composition; a fused kernel may
 * replace it behind the same op). A block already in the product's type,
 * with unpadded 16-byte aligned rows (a bf16 lm_head's chunk, the layers of a
 * bf16 store), is the product's operand as it lies: the copy would be exact,
 * and cu_gemm's algorithm choice sees no alignment past 16 bytes, so both
 * ways give the same bits. */
static void cu_linear(int trans, int rows, int in, int n, const void *x, int ldx, uint32_t dtype, const void *blob,
                      size_t out_total, size_t o0, void *scratch, tt_real beta, void *y, int ldy, int dt) {
    int ldw = (int)be_row_pad((size_t)in);
    const void *wt = scratch;
    const int as_is = ldw == in && ((dtype == TT_DTYPE_BF16 && dt == BE_BF16) || (dtype == TT_DTYPE_F32 && dt == BE_REAL));
    const void *at = as_is ? be_at(blob, o0 * (size_t)in, dt) : NULL;
    if (as_is && (uintptr_t)at % 16 == 0) wt = at;
    else dequant_rows(dtype, blob, out_total * (size_t)in, o0 * (size_t)in, (size_t)n * in, scratch, dt, in, ldw);
    if (trans) cu_gemm(0, 0, rows, in, n, 1, x, dt, ldx, wt, dt, ldw, beta, y, dt, ldy);
    else cu_gemm(0, 1, rows, n, in, 1, x, dt, ldx, wt, dt, ldw, beta, y, dt, ldy);
}

/* ---- layer ops -------------------------------------------------------------- */

/* The sum over the block (float, or double where the CPU reference sums in double); blockDim.x a multiple of 32
 * (every caller launches 256), sh room for one value a warp. Each warp sums its lanes by shuffles, lane 0 keeps
 * the warp's sum, and every thread adds the warps' sums in warp order: one value for the whole block, the same
 * bits on every run, two barriers (the shared-memory tree took ten). */
template <typename V> __device__ V block_sum(V v, V *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    V r = sh[0];
    for (unsigned w = 1; w < blockDim.x >> 5; w++) r += sh[w];
    __syncthreads(); /* sh is free for the caller's next reduction */
    return r;
}

/* The largest value over the block, as block_sum (a maximum is exact in any order). */
__device__ float block_max(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = sh[0];
    for (unsigned w = 1; w < blockDim.x >> 5; w++) r = fmaxf(r, sh[w]);
    __syncthreads();
    return r;
}

template <typename T>
__global__ void k_rms_fwd(int C, const void *x_, const float *w, float eps, void *y_, float *rstd) {
    __shared__ float sh[256];
    size_t o = (size_t)blockIdx.x * C;
    const T *x = (const T *)x_;
    float s = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += ldv(x, o + i) * ldv(x, o + i);
    float r = rsqrtf(block_sum(s, sh) / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int i = threadIdx.x; i < C; i += blockDim.x) stv((T *)y_, o + i, w[i] * (ldv(x, o + i) * r));
}
static void cu_rms_fwd(int T, int C, const void *x, const tt_real *w, tt_real eps, void *y, tt_real *rstd, int dt) {
    TDISPATCH(dt, k_rms_fwd, T, 256, C, x, w, eps, y, rstd);
}
/* dx = rstd * (w dy) - x * rstd^3 * mean(w dy x) */
template <typename T>
__global__ void k_rms_bwd(int C, const void *x_, const float *w, const float *rstd, const void *dy_, void *dx_, int acc) {
    __shared__ float sh[256];
    const T *x = (const T *)x_, *dy = (const T *)dy_;
    T *dx = (T *)dx_;
    size_t o = (size_t)blockIdx.x * C;
    float r = rstd[blockIdx.x], s = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += w[i] * ldv(dy, o + i) * ldv(x, o + i);
    float m = block_sum(s, sh) / C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float g = r * w[i] * ldv(dy, o + i) - ldv(x, o + i) * r * r * r * m;
        stv(dx, o + i, acc ? ldv(dx, o + i) + g : g);
    }
}
static void cu_rms_bwd(int T, int C, const void *x, const tt_real *w, const tt_real *rstd, const void *dy, void *dx,
                       int acc, int dt) {
    TDISPATCH(dt, k_rms_bwd, T, 256, C, x, w, rstd, dy, dx, acc);
}

/* One block a token: its position once, then its heads' pairs in 32-bit
 * index arithmetic (a 64-bit division a value made the kernel ALU-bound). */
template <typename T>
__global__ void k_rope(int seq, int nh, int hd, const float *cs, const float *sn, void *x_, float sgn,
                       const int32_t *seg) {
    const int t = blockIdx.x, half = hd / 2, n = nh * half;
    const int pos = t % seq - (seg ? seg[t] : 0); /* packed examples: from the example's start */
    const float *ct = cs + (size_t)pos * half, *st = sn + (size_t)pos * half;
    T *row = (T *)x_ + (size_t)t * nh * hd;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const int i = j % half, h = j / half;
        float c = ct[i], s = sgn * st[i];
        T *p = row + h * hd;
        float a = ldv(p, i), b = ldv(p, i + half);
        stv(p, i, a * c - b * s);
        stv(p, i + half, b * c + a * s);
    }
}
static void cu_rope(int T, int seq, int nh, int hd, const tt_real *cs, const tt_real *sn, void *x, int inverse,
                    const int32_t *seg, int dt) {
    TDISPATCH(dt, k_rope, T, 256, seq, nh, hd, cs, sn, x, inverse ? -1.f : 1.f, seg);
}

/* ---- attention (head-chunked through cuBLAS) ----------------------------------
 * Scores and probabilities are fp32 (seq x seq per head); with bf16
 * activations the products that take P or dS take their bf16 copies (as a
 * flash kernel's second product does), written by the kernels that make them. */

/* Flash attention (cuda_flash.h, tested on the CPU by tests/test_cuda_flash.c)
 * for head_dim <= TT_FA_MAX_HD unless TT_CUDA_ATTN=cublas, which selects the
 * head-chunked cuBLAS path below (it needs seq x seq scratch). */
static int g_flash = 1;
static int g_flash_max_hd = TT_FA_MAX_HD; /* the largest head_dim whose tiles fit this GPU's shared memory */
/* The tensor-core kernels (cuda_fa2.h) for bf16 activations; off: TT_CUDA_ATTN=flash (the fp32-tile kernels) or
 * cublas, or too little shared memory. */
static int g_fa2 = 1;
/* Their forward's block shape (cuda_fa2.h, "forward"): 32 query rows a warp (k_fa2_fwd2, the default), or 16
 * with TT_CUDA_FA2_FWD=16 (k_fa2_fwd); the same bits either way. Fixed at start-up by fa2_setup. */
static int g_fa2_fwd_rows = 32;
/* The path the ops take for these shapes (cuda_backend.h's rule, which the planning estimate reads too). */
static int attn_path(int hd, int dt) { return cuda_attn_path(g_fa2, g_flash, g_flash_max_hd, hd, dt); }

/* cuDNN's fused attention in front of the kernels (TT_CUDA_ATTN=cudnn, cuda_attn_cudnn): the library and a
 * handle on the compute stream are opened at start-up, so the context measurement counts the handle; a plan is
 * built on a shape's first call and kept. g_cudnn_req (fixed at start-up) sizes the scratch. A shape cuDNN
 * refuses takes the kernels (one line says why); g_cudnn_on goes off, with one line, where cuDNN cannot start or
 * a plan fails to run, and the kernels take over for the rest of the run. */
static int g_cudnn_req, g_cudnn_on;
static tt_cudnn *g_cudnn;
static void *g_cudnn_h;
#define CUDNN_PLANS 16
static struct {
    int dir;
    tt_sdpa_shape sh;
    tt_sdpa_plan *p; /* NULL: cuDNN refused this shape (said once); the kernels run it */
} g_cudnn_plans[CUDNN_PLANS];
static int g_cudnn_nplans;

static void cudnn_off(const char *why) {
    fprintf(stderr, "tiertrain: TT_CUDA_ATTN=cudnn: %s; attention takes the tensor-core kernels instead\n", why);
    g_cudnn_on = 0;
}

static void cudnn_start(void) {
    char why[512];
    g_cudnn = tt_cudnn_open(why, sizeof why);
    if (g_cudnn) g_cudnn_h = tt_cudnn_handle(g_cudnn, g_compute, why, sizeof why);
    g_cudnn_req = g_cudnn_on = g_cudnn_h != NULL;
    if (!g_cudnn_h) cudnn_off(why);
}

/* The cache's entry for a direction and shape, or -1. */
static int cudnn_cached(int dir, tt_sdpa_shape sh) {
    for (int i = 0; i < g_cudnn_nplans; i++)
        if (g_cudnn_plans[i].dir == dir && !memcmp(&g_cudnn_plans[i].sh, &sh, sizeof sh)) return i;
    return -1;
}

/* The plan for a direction and shape, built on first use; NULL: the kernels run it (cuDNN refused the shape,
 * said once, or 16 shapes have plans already: a plan in flight cannot be freed). */
static tt_sdpa_plan *cudnn_plan(int dir, tt_sdpa_shape sh) {
    const int c = cudnn_cached(dir, sh);
    if (c >= 0) return g_cudnn_plans[c].p;
    if (g_cudnn_nplans == CUDNN_PLANS) return NULL;
    const char *d = dir == TT_SDPA_FWD ? "forward" : "backward";
    char why[512];
    tt_sdpa_plan *p = tt_sdpa_plan_new(g_cudnn, g_cudnn_h, NULL, dir, sh, why, sizeof why);
    const size_t reserved = cuda_attn_cudnn_scratch(sh.B, sh.S, sh.H, sh.Hkv, sh.D) - tt_sdpa_layout(sh).workspace;
    if (p && (size_t)tt_sdpa_plan_workspace(p) > reserved) {
        snprintf(why, sizeof why, "cuDNN %zu's %s plan asks %.1f MiB of workspace, %.1f MiB are reserved",
                 tt_cudnn_version(g_cudnn), d, tt_sdpa_plan_workspace(p) / 1048576.0, reserved / 1048576.0);
        tt_sdpa_plan_free(p);
        p = NULL;
    }
    if (p)
        fprintf(stderr, "tiertrain: cuDNN %zu attention %s plan, B %d seq %d heads %d/%d head_dim %d: engine %lld, "
                        "workspace %.1f MiB\n",
                tt_cudnn_version(g_cudnn), d, sh.B, sh.S, sh.H, sh.Hkv, sh.D, (long long)tt_sdpa_plan_engine(p),
                tt_sdpa_plan_workspace(p) / 1048576.0);
    else
        fprintf(stderr, "tiertrain: TT_CUDA_ATTN=cudnn: %s; the %s at B %d seq %d heads %d/%d head_dim %d takes the "
                        "tensor-core kernels\n",
                why, d, sh.B, sh.S, sh.H, sh.Hkv, sh.D);
    g_cudnn_plans[g_cudnn_nplans].dir = dir;
    g_cudnn_plans[g_cudnn_nplans].sh = sh;
    g_cudnn_plans[g_cudnn_nplans++].p = p;
    return p;
}

/* lse (B*S, H) <-> cuDNN's packed (B, H, S) (cuda_cudnn.h); to_packed 0: packed -> lse. */
__global__ void k_lse_pack(int S, int H, size_t n, const float *src, float *dst, int to_packed) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; /* packed index: (b * H + h) * S + s */
    if (i >= n) return;
    size_t s = i % S, bh = i / S, h = bh % H, b = bh / H, r = (b * S + s) * H + h;
    if (to_packed)
        dst[i] = src[r];
    else
        dst[r] = src[i];
}

/* One direction through cuDNN on the compute stream; 0: not run (the caller's kernels run instead). scratch:
 * cuda_cudnn.h's layout (the log-sum-exp packed, the backward's buffers), then cuDNN's workspace. */
static int cudnn_attn(int dir, int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                      const void *out, const float *lse, const void *dout, void *dq, void *dk, void *dv,
                      void *scratch) {
    const tt_sdpa_shape sh = {B, seq, nh, nkv, hd};
    tt_sdpa_plan *p = cudnn_plan(dir, sh);
    if (!p) return 0;
    const size_t n = (size_t)B * nh * seq;
    const tt_sdpa_scratch l = tt_sdpa_layout(sh);
    float *packed = (float *)((char *)scratch + l.lse);
    tt_sdpa_io io = {q, k, v, (void *)out, dout, dq, dk, dv, scratch, (char *)scratch + l.workspace};
    if (dir == TT_SDPA_BWD) {
        k_lse_pack<<<blocks_for(n, 256), 256, 0, g_compute>>>(seq, nh, n, lse, packed, 1);
        LAUNCHED();
        if (tt_cudnn_version(g_cudnn) < 90600) /* older engines add into the dQ accumulator */
            CUDA_CHECK(cudaMemsetAsync((char *)scratch + l.dqacc, 0, l.workspace - l.dqacc, g_compute));
    }
    char why[512];
    if (tt_sdpa_run(p, g_cudnn_h, &io, why, sizeof why) != 0) {
        cudnn_off(why);
        return 0;
    }
    if (dir == TT_SDPA_FWD) {
        k_lse_pack<<<blocks_for(n, 256), 256, 0, g_compute>>>(seq, nh, n, packed, (float *)lse, 0);
        LAUNCHED();
    }
    return 1;
}
static int use_cudnn(int hd, int dt, const int32_t *seg) { return g_cudnn_on && !seg && cuda_attn_cudnn(1, hd, dt); }

/* backend.h's attn_path_name: cuDNN's plans where both directions ran through them, else the kernel path. */
static const char *cu_attn_path_name(int B, int seq, int nh, int nkv, int hd, int dt) {
    static char name[160];
    const tt_sdpa_shape sh = {B, seq, nh, nkv, hd};
    tt_sdpa_plan *pl[2] = {NULL, NULL};
    for (int dir = TT_SDPA_FWD; dir <= TT_SDPA_BWD; dir++) {
        const int c = cudnn_cached(dir, sh);
        pl[dir] = c >= 0 ? g_cudnn_plans[c].p : NULL;
    }
    if (use_cudnn(hd, dt, NULL) && pl[TT_SDPA_FWD] && pl[TT_SDPA_BWD]) {
        const size_t v = tt_cudnn_version(g_cudnn);
        snprintf(name, sizeof name, "cuDNN %zu.%zu.%zu fused (engines %lld forward, %lld backward)", v / 10000,
                 v / 100 % 100, v % 100, (long long)tt_sdpa_plan_engine(pl[TT_SDPA_FWD]),
                 (long long)tt_sdpa_plan_engine(pl[TT_SDPA_BWD]));
        return name;
    }
    const int path = attn_path(hd, dt);
    char fa2[80];
    snprintf(fa2, sizeof fa2, "tensor-core flash kernels (cuda_fa2.h; forward %d rows a warp)", g_fa2_fwd_rows);
    snprintf(name, sizeof name, "%s%s",
             path == CUDA_ATTN_FA2     ? fa2
             : path == CUDA_ATTN_FLASH ? "fp32-tile flash kernels (cuda_flash.h)"
                                       : "head-chunked cuBLAS",
             g_cudnn_req && cuda_attn_cudnn(1, hd, dt) ? "; cuDNN refused these shapes or did not run both ways" : "");
    return name;
}

/* The scratch the attention ops take (the workspace carves it). */
static size_t cu_attn_scratch_bytes(int B, int seq, int nh, int nkv, int hd, int dt) {
    return cuda_attn_scratch(attn_path(hd, dt), cuda_attn_cudnn(g_cudnn_req, hd, dt), B, seq, nh, nkv, hd, dt);
}

/* Rows [r0, r0 + n) of a head's hd columns of src (row stride ss) into the
 * shared tile dst (float, row stride ld), by all threads of the block. */
template <typename T>
__device__ void fa_stage(float *dst, int ld, const T *src, int ss, int r0, int n, int hd) {
    for (int idx = threadIdx.x; idx < n * hd; idx += blockDim.x) {
        int i = idx / hd, d = idx - i * hd;
        dst[i * ld + d] = ldv(src, (size_t)(r0 + i) * ss + d);
    }
}

/* Forward: block (query tile, head, sequence), one thread per query row. Shared: Q, acc, K, V tiles. */
template <typename T>
__global__ void k_fa_fwd(int seq, int nh, int nkv, int hd, float scale, const void *q_, const void *k_, const void *v_,
                         void *out_, float *lse, const int32_t *seg) {
    extern __shared__ float fsh[];
    const int bq = TT_FA_TILE, ld = hd + 1, qt = blockIdx.x, h = blockIdx.y, g = tt_gqa_kv_head(h, nh, nkv);
    const int qs = nh * hd, ks = nkv * hd, i0 = qt * bq, nrows = seq - i0 < bq ? seq - i0 : bq, i = threadIdx.x;
    const size_t r0 = (size_t)blockIdx.z * seq;
    const T *Q = (const T *)q_ + r0 * qs + (size_t)h * hd, *K = (const T *)k_ + r0 * ks + (size_t)g * hd,
            *V = (const T *)v_ + r0 * ks + (size_t)g * hd;
    float *Qs = fsh, *Acc = Qs + bq * ld, *Ks = Acc + bq * ld, *Vs = Ks + bq * ld;
    fa_stage(Qs, ld, Q, qs, i0, nrows, hd);
    for (int idx = threadIdx.x; idx < bq * ld; idx += blockDim.x) Acc[idx] = 0.f;
    float m = -INFINITY, l = 0.f;
    const int lo = seg && i < nrows ? seg[r0 + i0 + i] : 0;
    const int nt = tt_causal_kv_tiles(qt, bq, bq, seq);
    for (int kt = 0; kt < nt; kt++) {
        const int nk = seq - kt * bq < bq ? seq - kt * bq : bq;
        __syncthreads(); /* the previous tile is done with */
        fa_stage(Ks, ld, K, ks, kt * bq, nk, hd);
        fa_stage(Vs, ld, V, ks, kt * bq, nk, hd);
        __syncthreads();
        if (i < nrows) tt_fa_fwd_tile(Qs + i * ld, hd, scale, Ks, Vs, ld, nk, kt * bq, i0 + i, lo, &m, &l, Acc + i * ld);
    }
    if (i >= nrows) return;
    T *O = (T *)out_ + (r0 + i0 + i) * qs + (size_t)h * hd;
    for (int d = 0; d < hd; d++) stv(O, d, Acc[i * ld + d] / l);
    lse[(r0 + i0 + i) * nh + h] = m + logf(l);
}

/* Backward pass A: dq by query rows, and D = dO . O per row into Dbuf (T, nh).
 * Shared: Q, dO, dq, K, V tiles. */
template <typename T>
__global__ void k_fa_dq(int seq, int nh, int nkv, int hd, float scale, const void *q_, const void *k_, const void *v_,
                        const void *o_, const float *lse, const void *do_, void *dq_, float *Dbuf, const int32_t *seg) {
    extern __shared__ float fsh[];
    const int bq = TT_FA_TILE, ld = hd + 1, qt = blockIdx.x, h = blockIdx.y, g = tt_gqa_kv_head(h, nh, nkv);
    const int qs = nh * hd, ks = nkv * hd, i0 = qt * bq, nrows = seq - i0 < bq ? seq - i0 : bq, i = threadIdx.x;
    const size_t r0 = (size_t)blockIdx.z * seq;
    const T *Q = (const T *)q_ + r0 * qs + (size_t)h * hd, *dO = (const T *)do_ + r0 * qs + (size_t)h * hd;
    const T *K = (const T *)k_ + r0 * ks + (size_t)g * hd, *V = (const T *)v_ + r0 * ks + (size_t)g * hd;
    float *Qs = fsh, *dOs = Qs + bq * ld, *dQ = dOs + bq * ld, *Ks = dQ + bq * ld, *Vs = Ks + bq * ld;
    fa_stage(Qs, ld, Q, qs, i0, nrows, hd);
    fa_stage(dOs, ld, dO, qs, i0, nrows, hd);
    for (int idx = threadIdx.x; idx < bq * ld; idx += blockDim.x) dQ[idx] = 0.f;
    __syncthreads();
    float D = 0.f, L = 0.f;
    const int lo = seg && i < nrows ? seg[r0 + i0 + i] : 0;
    if (i < nrows) {
        const T *O = (const T *)o_ + (r0 + i0 + i) * qs + (size_t)h * hd;
        for (int d = 0; d < hd; d++) D += dOs[i * ld + d] * ldv(O, d);
        Dbuf[(r0 + i0 + i) * nh + h] = D;
        L = lse[(r0 + i0 + i) * nh + h];
    }
    const int nt = tt_causal_kv_tiles(qt, bq, bq, seq);
    for (int kt = 0; kt < nt; kt++) {
        const int nk = seq - kt * bq < bq ? seq - kt * bq : bq;
        __syncthreads();
        fa_stage(Ks, ld, K, ks, kt * bq, nk, hd);
        fa_stage(Vs, ld, V, ks, kt * bq, nk, hd);
        __syncthreads();
        if (i < nrows)
            tt_fa_dq_tile(Qs + i * ld, dOs + i * ld, L, D, hd, scale, Ks, Vs, ld, nk, kt * bq, i0 + i, lo, dQ + i * ld);
    }
    if (i >= nrows) return;
    T *dq = (T *)dq_ + (r0 + i0 + i) * qs + (size_t)h * hd;
    for (int d = 0; d < hd; d++) stv(dq, d, dQ[i * ld + d]);
}

/* Backward pass B: dk, dv by key rows (block: key tile, KV head, sequence),
 * over every query head of the group and the query tiles that see the key
 * tile. Shared: K, V, dK, dV, Q, dO tiles, then the Q tile's lse and D. */
template <typename T>
__global__ void k_fa_dkv(int seq, int nh, int nkv, int hd, float scale, const void *q_, const void *k_, const void *v_,
                         const float *lse, const void *do_, const float *Dbuf, void *dk_, void *dv_, const int32_t *seg) {
    extern __shared__ float fsh[];
    const int bt = TT_FA_TILE, ld = hd + 1, kt = blockIdx.x, g = blockIdx.y, grp = nh / nkv;
    const int qs = nh * hd, ks = nkv * hd, j0 = kt * bt, nkeys = seq - j0 < bt ? seq - j0 : bt, j = threadIdx.x;
    const size_t r0 = (size_t)blockIdx.z * seq;
    const T *K = (const T *)k_ + r0 * ks + (size_t)g * hd, *V = (const T *)v_ + r0 * ks + (size_t)g * hd;
    float *Kr = fsh, *Vr = Kr + bt * ld, *dK = Vr + bt * ld, *dV = dK + bt * ld, *Qs = dV + bt * ld, *dOs = Qs + bt * ld;
    float *Ls = dOs + bt * ld, *Ds = Ls + bt;
    int *Lo = (int *)(Ds + bt); /* the query tile's example starts (with seg) */
    fa_stage(Kr, ld, K, ks, j0, nkeys, hd);
    fa_stage(Vr, ld, V, ks, j0, nkeys, hd);
    for (int idx = threadIdx.x; idx < 2 * bt * ld; idx += blockDim.x) dK[idx] = 0.f; /* dK and dV */
    for (int h = g * grp; h < (g + 1) * grp; h++) {
        const T *Q = (const T *)q_ + r0 * qs + (size_t)h * hd, *dO = (const T *)do_ + r0 * qs + (size_t)h * hd;
        for (int qt = tt_fa_first_qtile(kt, bt, bt); qt * bt < seq; qt++) {
            const int nq = seq - qt * bt < bt ? seq - qt * bt : bt;
            __syncthreads();
            fa_stage(Qs, ld, Q, qs, qt * bt, nq, hd);
            fa_stage(dOs, ld, dO, qs, qt * bt, nq, hd);
            for (int x = threadIdx.x; x < nq; x += blockDim.x) {
                Ls[x] = lse[(r0 + qt * bt + x) * nh + h];
                Ds[x] = Dbuf[(r0 + qt * bt + x) * nh + h];
                Lo[x] = seg ? seg[r0 + qt * bt + x] : 0;
            }
            __syncthreads();
            if (j < nkeys)
                tt_fa_dkv_tile(Kr + j * ld, Vr + j * ld, hd, scale, Qs, dOs, Ls, Ds, seg ? Lo : NULL, ld, nq, qt * bt,
                               j0 + j, dK + j * ld, dV + j * ld);
        }
    }
    if (j >= nkeys) return;
    T *dk = (T *)dk_ + (r0 + j0 + j) * ks + (size_t)g * hd, *dv = (T *)dv_ + (r0 + j0 + j) * ks + (size_t)g * hd;
    for (int d = 0; d < hd; d++) {
        stv(dk, d, dK[j * ld + d]);
        stv(dv, d, dV[j * ld + d]);
    }
}

/* Shared memory per block of each kernel (float tiles of hd + 1 per row). */
static size_t fa_smem(int tiles, int hd) { return (size_t)tiles * TT_FA_TILE * (hd + 1) * sizeof(float); }
#define FA_FWD_TILES 4
#define FA_DQ_TILES 5
#define FA_DKV_TILES 6 /* plus the lse, D and example starts of a query tile */
#define FA_DKV_ROWS (3 * TT_FA_TILE * sizeof(float))

static void fa_launch_fwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v, void *out,
                          float *lse, const int32_t *seg, int dt) {
    dim3 grid((unsigned)((seq + TT_FA_TILE - 1) / TT_FA_TILE), (unsigned)nh, (unsigned)B);
    float scale = 1.0f / sqrtf((float)hd);
    size_t sm = fa_smem(FA_FWD_TILES, hd);
    if (dt == BE_BF16) k_fa_fwd<bf16><<<grid, TT_FA_TILE, sm, g_compute>>>(seq, nh, nkv, hd, scale, q, k, v, out, lse, seg);
    else k_fa_fwd<float><<<grid, TT_FA_TILE, sm, g_compute>>>(seq, nh, nkv, hd, scale, q, k, v, out, lse, seg);
    LAUNCHED();
}

static void fa_launch_bwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                          const void *out, const float *lse, const void *dout, void *dq, void *dk, void *dv, float *D,
                          const int32_t *seg, int dt) {
    unsigned tiles = (unsigned)((seq + TT_FA_TILE - 1) / TT_FA_TILE);
    float scale = 1.0f / sqrtf((float)hd);
    size_t sa = fa_smem(FA_DQ_TILES, hd), sb = fa_smem(FA_DKV_TILES, hd) + FA_DKV_ROWS;
    dim3 ga(tiles, (unsigned)nh, (unsigned)B), gb(tiles, (unsigned)nkv, (unsigned)B);
    if (dt == BE_BF16) {
        k_fa_dq<bf16><<<ga, TT_FA_TILE, sa, g_compute>>>(seq, nh, nkv, hd, scale, q, k, v, out, lse, dout, dq, D, seg);
        LAUNCHED();
        k_fa_dkv<bf16><<<gb, TT_FA_TILE, sb, g_compute>>>(seq, nh, nkv, hd, scale, q, k, v, lse, dout, D, dk, dv, seg);
    } else {
        k_fa_dq<float><<<ga, TT_FA_TILE, sa, g_compute>>>(seq, nh, nkv, hd, scale, q, k, v, out, lse, dout, dq, D, seg);
        LAUNCHED();
        k_fa_dkv<float><<<gb, TT_FA_TILE, sb, g_compute>>>(seq, nh, nkv, hd, scale, q, k, v, lse, dout, D, dk, dv, seg);
    }
    LAUNCHED();
}

/* The shared memory the flash kernels ask for, allowed once at start-up:
 * for head_dim up to TT_FA_MAX_HD (194 KiB per block; an H100/H200 has
 * 227), or the largest head_dim this GPU's per-block limit takes (a smaller
 * head_dim then goes to the cuBLAS path); 0 where not even 16 fits. */
static int fa_setup(void) {
    int optin = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    int hd = TT_FA_MAX_HD;
    while (hd >= 16 && fa_smem(FA_DKV_TILES, hd) + FA_DKV_ROWS > (size_t)optin) hd -= 16;
    if (hd < 16) return 0;
    g_flash_max_hd = hd;
    size_t mx = fa_smem(FA_DKV_TILES, hd) + FA_DKV_ROWS;
    CUDA_CHECK(cudaFuncSetAttribute(k_fa_fwd<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mx));
    CUDA_CHECK(cudaFuncSetAttribute(k_fa_fwd<bf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mx));
    CUDA_CHECK(cudaFuncSetAttribute(k_fa_dq<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mx));
    CUDA_CHECK(cudaFuncSetAttribute(k_fa_dq<bf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mx));
    CUDA_CHECK(cudaFuncSetAttribute(k_fa_dkv<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mx));
    CUDA_CHECK(cudaFuncSetAttribute(k_fa_dkv<bf16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mx));
    return 1;
}

/* Causal softmax of each row of S (seq, seq) in place; lse[row * ls] =
 * log-sum-exp; p16 (optional): the probabilities in bf16 too. */
__global__ void k_softmax_causal(int seq, float *S, float *lse, int ls, bf16 *p16, const int32_t *seg) {
    __shared__ float sh[256];
    int r = blockIdx.x, lo = seg ? seg[r] : 0; /* packed: keys lo..r */
    float *row = S + (size_t)r * seq;
    float m = -INFINITY;
    for (int j = lo + threadIdx.x; j <= r; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, sh);
    float s = 0;
    for (int j = lo + threadIdx.x; j <= r; j += blockDim.x) s += expf(row[j] - m);
    float tot = block_sum(s, sh);
    float l = m + logf(tot);
    for (int j = threadIdx.x; j < seq; j += blockDim.x) {
        float p = j <= r && j >= lo ? expf(row[j] - l) : 0.f;
        row[j] = p;
        if (p16) p16[(size_t)r * seq + j] = __float2bfloat16_rn(p);
    }
    if (threadIdx.x == 0) lse[(size_t)r * ls] = l;
}

/* P from scores and the saved lse (backward); p16 as above. */
__global__ void k_probs(int seq, float *S, const float *lse, int ls, bf16 *p16, const int32_t *seg) {
    int r = blockIdx.x, lo = seg ? seg[r] : 0;
    float l = lse[(size_t)r * ls];
    for (int j = threadIdx.x; j < seq; j += blockDim.x) {
        size_t i = (size_t)r * seq + j;
        float p = j <= r && j >= lo ? expf(S[i] - l) : 0.f;
        S[i] = p;
        if (p16) p16[i] = __float2bfloat16_rn(p);
    }
}

/* D[r] = sum_d dO[r, d] * O[r, d] for one head; dS = P * (dP - D) (into dP;
 * ds16: in bf16 too). */
template <typename T>
__global__ void k_dsoft(int seq, int hd, const void *dO_, const void *O_, int os, const float *P, float *dP, bf16 *ds16) {
    __shared__ float sh[256];
    const T *dO = (const T *)dO_, *O = (const T *)O_;
    int r = blockIdx.x;
    float s = 0;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) s += ldv(dO, (size_t)r * os + d) * ldv(O, (size_t)r * os + d);
    float D = block_sum(s, sh);
    for (int j = threadIdx.x; j < seq; j += blockDim.x) {
        size_t i = (size_t)r * seq + j;
        dP[i] = P[i] * (dP[i] - D);
        if (ds16) ds16[i] = __float2bfloat16_rn(dP[i]);
    }
}

/* Tensor-core flash attention (cuda_fa2.h, emulated on the CPU by tests/test_cuda_fa2.c): bf16 activations,
 * head_dim up to TT_FA2_HD; block (query tile, head, sequence). The forward and the dq pass take their query
 * tiles last first: under the causal mask a tile's work grows with its index, and blocks start in index order,
 * so the longest start first and the short ones fill the end. */
__global__ void __launch_bounds__(TT_FA2_THREADS) k_fa2_fwd(int seq, int nh, int nkv, int hd, const uint16_t *q,
                                                            const uint16_t *k, const uint16_t *v, uint16_t *out,
                                                            float *lse, const int32_t *seg) {
    extern __shared__ __align__(16) unsigned char fa2_sh[];
    tt_fa2_fwd_block(NULL, (int)threadIdx.x, (int)(gridDim.x - 1 - blockIdx.x), (int)blockIdx.y, (int)blockIdx.z, seq,
                     nh, nkv, hd, q, k, v, out, lse, seg, (uint16_t *)fa2_sh);
}
__global__ void __launch_bounds__(TT_FA2_THREADS) k_fa2_fwd2(int seq, int nh, int nkv, int hd, const uint16_t *q,
                                                             const uint16_t *k, const uint16_t *v, uint16_t *out,
                                                             float *lse, const int32_t *seg) {
    extern __shared__ __align__(16) unsigned char fa2_sh[];
    tt_fa2_fwd2_block(NULL, (int)threadIdx.x, (int)(gridDim.x - 1 - blockIdx.x), (int)blockIdx.y, (int)blockIdx.z,
                      seq, nh, nkv, hd, q, k, v, out, lse, seg, (uint16_t *)fa2_sh);
}
__global__ void __launch_bounds__(TT_FA2_THREADS)
    k_fa2_dq(int seq, int nh, int nkv, int hd, const uint16_t *q, const uint16_t *k, const uint16_t *v, const uint16_t *o,
             const float *lse, const uint16_t *dout, uint16_t *dq, float *Dbuf, const int32_t *seg) {
    extern __shared__ __align__(16) unsigned char fa2_sh[];
    tt_fa2_dq_block(NULL, (int)threadIdx.x, (int)(gridDim.x - 1 - blockIdx.x), (int)blockIdx.y, (int)blockIdx.z, seq,
                    nh, nkv, hd, q, k, v, o, lse, dout, dq, Dbuf, seg, (uint16_t *)fa2_sh);
}
__global__ void __launch_bounds__(TT_FA2_THREADS)
    k_fa2_dkv(int seq, int nh, int nkv, int hd, int parts, const uint16_t *q, const uint16_t *k, const uint16_t *v,
              const float *lse, const uint16_t *dout, const float *Dbuf, uint16_t *dk, uint16_t *dv, float *pk,
              float *pv, size_t pn, const int32_t *seg) {
    extern __shared__ __align__(16) unsigned char fa2_sh[];
    tt_fa2_dkv_block(NULL, (int)threadIdx.x, (int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z, seq, nh, nkv, hd,
                     parts, q, k, v, lse, dout, Dbuf, dk, dv, pk, pv, pn, seg, (uint16_t *)fa2_sh);
}
__global__ void k_fa2_dkv_sum(size_t n, int parts, const float *pk, const float *pv, float scale, uint16_t *dk,
                              uint16_t *dv) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) tt_fa2_dkv_sum(i, n, parts, pk, pv, scale, dk, dv);
}

/* The kernels ask for more than the default 48 KiB of shared memory (two tiles in flight): allowed once
 * at start-up; 0 where the GPU's per-block limit is below it (TT_FA2_SMEM_DKV, the most; the 32-row
 * forward's is below it). The 32-row forward where an SM holds two of its blocks (8 warps, as the 16-row
 * forward's two: an H100/H200's 228 KiB of shared memory and 64K registers at its 254 a thread); else (an
 * A100's 164 KiB: one) the 16-row one, which keeps its two. */
static int fa2_setup(void) {
    int optin = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    if ((size_t)optin < TT_FA2_SMEM_DKV || (size_t)optin < TT_FA2_SMEM_FWD) return 0;
    CUDA_CHECK(cudaFuncSetAttribute(k_fa2_fwd, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)TT_FA2_SMEM_FWD));
    const char *r = getenv("TT_CUDA_FA2_FWD");
    g_fa2_fwd_rows = 16;
    if (!(r && strcmp(r, "16") == 0)) {
        CUDA_CHECK(cudaFuncSetAttribute(k_fa2_fwd2, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)TT_FA2_SMEM_FWD2));
        int per_sm = 0;
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_fa2_fwd2, TT_FA2_THREADS, TT_FA2_SMEM_FWD2));
        if (per_sm >= 2) g_fa2_fwd_rows = 32;
    }
    CUDA_CHECK(cudaFuncSetAttribute(k_fa2_dq, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)TT_FA2_SMEM_DQ));
    CUDA_CHECK(cudaFuncSetAttribute(k_fa2_dkv, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)TT_FA2_SMEM_DKV));
    return 1;
}

static void fa2_launch_bwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                           const void *out, const float *lse, const void *dout, void *dq, void *dk, void *dv, float *D,
                           const int32_t *seg) {
    unsigned tiles = (unsigned)((seq + TT_FA2_BR - 1) / TT_FA2_BR);
    const tt_fa2_scratch sl = tt_fa2_scratch_layout(B, seq, nh, nkv, hd); /* D at the scratch's start */
    const int parts = sl.parts;
    const size_t pn = sl.pn;
    float *pk = parts > 1 ? D + sl.pk : NULL, *pv = parts > 1 ? D + sl.pv : NULL;
    dim3 ga(tiles, (unsigned)nh, (unsigned)B), gb(tiles, (unsigned)(nkv * parts), (unsigned)B);
    k_fa2_dq<<<ga, TT_FA2_THREADS, TT_FA2_SMEM_DQ, g_compute>>>(seq, nh, nkv, hd, (const uint16_t *)q, (const uint16_t *)k,
                                                                (const uint16_t *)v, (const uint16_t *)out, lse,
                                                                (const uint16_t *)dout, (uint16_t *)dq, D, seg);
    LAUNCHED();
    k_fa2_dkv<<<gb, TT_FA2_THREADS, TT_FA2_SMEM_DKV, g_compute>>>(
        seq, nh, nkv, hd, parts, (const uint16_t *)q, (const uint16_t *)k, (const uint16_t *)v, lse,
        (const uint16_t *)dout, D, (uint16_t *)dk, (uint16_t *)dv, pk, pv, pn, seg);
    LAUNCHED();
    if (parts > 1) {
        k_fa2_dkv_sum<<<(unsigned)((pn + 255) / 256), 256, 0, g_compute>>>(pn, parts, pk, pv, 1.0f / sqrtf((float)hd),
                                                                            (uint16_t *)dk, (uint16_t *)dv);
        LAUNCHED();
    }
}

/* seg (packed examples): every path masks the keys before a row's example start (cuda_fa2.h, cuda_flash.h,
 * and k_softmax_causal / k_probs here). */
static void cu_attn_fwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v, void *out,
                        tt_real *lse, const int32_t *seg, void *scratch, int dt) {
    if (use_cudnn(hd, dt, seg) &&
        cudnn_attn(TT_SDPA_FWD, B, seq, nh, nkv, hd, q, k, v, out, lse, NULL, NULL, NULL, NULL, scratch))
        return;
    const int path = attn_path(hd, dt);
    if (path == CUDA_ATTN_FA2) {
        const int br = g_fa2_fwd_rows == 32 ? TT_FA2_FWD2_BR : TT_FA2_BR;
        dim3 grid((unsigned)((seq + br - 1) / br), (unsigned)nh, (unsigned)B);
        if (g_fa2_fwd_rows == 32)
            k_fa2_fwd2<<<grid, TT_FA2_THREADS, TT_FA2_SMEM_FWD2, g_compute>>>(seq, nh, nkv, hd, (const uint16_t *)q,
                                                                              (const uint16_t *)k, (const uint16_t *)v,
                                                                              (uint16_t *)out, lse, seg);
        else
            k_fa2_fwd<<<grid, TT_FA2_THREADS, TT_FA2_SMEM_FWD, g_compute>>>(seq, nh, nkv, hd, (const uint16_t *)q,
                                                                            (const uint16_t *)k, (const uint16_t *)v,
                                                                            (uint16_t *)out, lse, seg);
        LAUNCHED();
        return;
    }
    if (path == CUDA_ATTN_FLASH) {
        fa_launch_fwd(B, seq, nh, nkv, hd, q, k, v, out, lse, seg, dt);
        return;
    }
    int qs = nh * hd, ks = nkv * hd;
    size_t ss = (size_t)seq * seq;
    float scale = 1.0f / sqrtf((float)hd);
    float *S = (float *)scratch;
    bf16 *P16 = dt == BE_BF16 ? (bf16 *)(S + 2 * ss) : NULL; /* after the backward's two fp32 buffers */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            size_t r0 = (size_t)b * seq, qo = r0 * qs + (size_t)h * hd;
            size_t ko = r0 * ks + (size_t)tt_gqa_kv_head(h, nh, nkv) * hd;
            cu_gemm(0, 1, seq, seq, hd, scale, be_at(q, qo, dt), dt, qs, be_at(k, ko, dt), dt, ks, 0, S, BE_REAL, seq);
            k_softmax_causal<<<seq, 256, 0, g_compute>>>(seq, S, lse + r0 * nh + h, nh, P16, seg ? seg + r0 : NULL);
            LAUNCHED();
            cu_gemm(0, 0, seq, hd, seq, 1, P16 ? (const void *)P16 : S, dt, seq, be_at(v, ko, dt), dt, ks, 0,
                    be_at(out, qo, dt), dt, qs);
        }
}

static void cu_attn_bwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                        const void *out, const tt_real *lse, const void *dout, void *dq, void *dk, void *dv,
                        const int32_t *seg, void *scratch, int dt) {
    if (use_cudnn(hd, dt, seg) &&
        cudnn_attn(TT_SDPA_BWD, B, seq, nh, nkv, hd, q, k, v, out, lse, dout, dq, dk, dv, scratch))
        return;
    const int path = attn_path(hd, dt);
    if (path == CUDA_ATTN_FA2) {
        fa2_launch_bwd(B, seq, nh, nkv, hd, q, k, v, out, lse, dout, dq, dk, dv, (float *)scratch, seg);
        return;
    }
    if (path == CUDA_ATTN_FLASH) {
        fa_launch_bwd(B, seq, nh, nkv, hd, q, k, v, out, lse, dout, dq, dk, dv, (float *)scratch, seg, dt);
        return;
    }
    int qs = nh * hd, ks = nkv * hd;
    size_t ss = (size_t)seq * seq;
    float scale = 1.0f / sqrtf((float)hd);
    CUDA_CHECK(cudaMemsetAsync(dk, 0, (size_t)B * seq * ks * be_elem_size(dt), g_compute));
    CUDA_CHECK(cudaMemsetAsync(dv, 0, (size_t)B * seq * ks * be_elem_size(dt), g_compute));
    float *P = (float *)scratch, *dP = P + ss;
    bf16 *P16 = dt == BE_BF16 ? (bf16 *)(P + 2 * ss) : NULL, *dS16 = P16 ? P16 + ss : NULL;
    const void *Pm = P16 ? (const void *)P16 : P, *dSm = dS16 ? (const void *)dS16 : dP;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            size_t r0 = (size_t)b * seq, qo = r0 * qs + (size_t)h * hd;
            size_t ko = r0 * ks + (size_t)tt_gqa_kv_head(h, nh, nkv) * hd;
            const void *Q = be_at(q, qo, dt), *K = be_at(k, ko, dt), *V = be_at(v, ko, dt), *dO = be_at(dout, qo, dt);
            cu_gemm(0, 1, seq, seq, hd, scale, Q, dt, qs, K, dt, ks, 0, P, BE_REAL, seq);
            k_probs<<<seq, 256, 0, g_compute>>>(seq, P, lse + r0 * nh + h, nh, P16, seg ? seg + r0 : NULL);
            LAUNCHED();
            cu_gemm(1, 0, seq, hd, seq, 1, Pm, dt, seq, dO, dt, qs, 1, be_at(dv, ko, dt), dt, ks); /* dV += P^T dO */
            cu_gemm(0, 1, seq, seq, hd, 1, dO, dt, qs, V, dt, ks, 0, dP, BE_REAL, seq);           /* dP = dO V^T */
            TDISPATCH(dt, k_dsoft, seq, 256, seq, hd, dO, be_at(out, qo, dt), qs, P, dP, dS16);
            cu_gemm(0, 0, seq, hd, seq, scale, dSm, dt, seq, K, dt, ks, 0, be_at(dq, qo, dt), dt, qs); /* dQ = s dS K */
            cu_gemm(1, 0, seq, hd, seq, scale, dSm, dt, seq, Q, dt, qs, 1, be_at(dk, ko, dt), dt, ks); /* dK += s dS^T Q */
        }
}

/* ---- SwiGLU, cross-entropy, AdamW -------------------------------------------- */

/* Attention against a KV cache (backend.h's attn_kv): one warp per (query
 * row, head); the warp walks the keys the row sees with an online softmax,
 * each lane holding C of the dimensions (C = 8: head_dim <= 256, every
 * LLaMA's; C = 32 up to the 1024 a config allows) and the score reduced
 * across the warp. Decoding has one query row per sequence, so this is
 * bandwidth-bound on the cache, as decoding is. */
#define KV_WARPS 4
template <typename T, int C>
__device__ __forceinline__ void attn_kv_warp(int n, int cap, int nh, int nkv, int hd, const void *q_, const void *kc_,
                                             const void *vc_, const int32_t *pos, void *out_, float scale) {
    const T *q = (const T *)q_, *kc = (const T *)kc_, *vc = (const T *)vc_;
    T *out = (T *)out_;
    const int lane = threadIdx.x & 31, h = blockIdx.y * KV_WARPS + (threadIdx.x >> 5);
    const int row = blockIdx.x, b = row / n, i = row % n; /* rows on x: up to 2^31 - 1 of them */
    if (h >= nh) return;
    const int qs = nh * hd, ks = nkv * hd, p = pos[b] + i;
    const size_t qo = (size_t)row * qs + (size_t)h * hd, ko = (size_t)b * cap * ks + (size_t)tt_gqa_kv_head(h, nh, nkv) * hd;
    float qv[C], acc[C];
    for (int c = 0; c < C; c++) {
        int d = lane + 32 * c;
        qv[c] = d < hd ? ldv(q, qo + d) : 0.f;
        acc[c] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int j = 0; j <= p; j++) {
        const size_t kr = ko + (size_t)j * ks;
        float s = 0.f;
        for (int c = 0; c < C; c++) {
            int d = lane + 32 * c;
            if (d < hd) s += qv[c] * ldv(kc, kr + d);
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= scale;
        const float mn = fmaxf(m, s), corr = __expf(m - mn), w = __expf(s - mn);
        l = l * corr + w;
        for (int c = 0; c < C; c++) {
            int d = lane + 32 * c;
            acc[c] = acc[c] * corr + (d < hd ? w * ldv(vc, kr + d) : 0.f);
        }
        m = mn;
    }
    for (int c = 0; c < C; c++) {
        int d = lane + 32 * c;
        if (d < hd) stv(out, qo + d, acc[c] / l);
    }
}

template <typename T>
__global__ void k_attn_kv(int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                          const int32_t *pos, void *out, float scale) {
    attn_kv_warp<T, 8>(n, cap, nh, nkv, hd, q, kc, vc, pos, out, scale);
}
template <typename T>
__global__ void k_attn_kv_wide(int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                               const int32_t *pos, void *out, float scale) {
    attn_kv_warp<T, 32>(n, cap, nh, nkv, hd, q, kc, vc, pos, out, scale);
}

static void cu_attn_kv(int B, int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                       const int32_t *pos, void *out, int dt) {
    TT_ASSERT(hd <= 1024); /* config_validate's bound */
    dim3 grid((unsigned)(B * n), (unsigned)((nh + KV_WARPS - 1) / KV_WARPS));
    const float scale = 1.0f / sqrtf((float)hd);
    if (hd <= 256) TDISPATCH(dt, k_attn_kv, grid, 32 * KV_WARPS, n, cap, nh, nkv, hd, q, kc, vc, pos, out, scale);
    else TDISPATCH(dt, k_attn_kv_wide, grid, 32 * KV_WARPS, n, cap, nh, nkv, hd, q, kc, vc, pos, out, scale);
}

__device__ __forceinline__ float swiglu_v(float g, float u) { return g / (1.f + expf(-g)) * u; }
/* dg and du of one value */
__device__ __forceinline__ void swiglu_bwd_v(float g, float u, float d, float *dg, float *du) {
    float sg = 1.f / (1.f + expf(-g));
    *dg = d * u * sg * fmaf(g, 1.f - sg, 1.f);
    *du = d * g * sg;
}
template <typename T> __global__ void k_swiglu_fwd(size_t n, const void *g_, const void *u_, void *m_) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    stv((T *)m_, i, swiglu_v(ldv((const T *)g_, i), ldv((const T *)u_, i)));
}
__global__ void k_swiglu_fwd8(size_t groups, const void *g_, const void *u_, void *m_) {
    size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (g >= groups) return;
    float gv[8], uv[8];
    ld8(g_, g, gv);
    ld8(u_, g, uv);
    for (int k = 0; k < 8; k++) gv[k] = swiglu_v(gv[k], uv[k]);
    st8(m_, g, gv);
}
template <typename T>
__global__ void k_swiglu_bwd(size_t n, const void *g_, const void *u_, const void *dm_, void *dg_, void *du_) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    /* all read first: dg/du may alias g/u/dm */
    float gi = ldv((const T *)g_, i), ui = ldv((const T *)u_, i), d = ldv((const T *)dm_, i), dg, du;
    swiglu_bwd_v(gi, ui, d, &dg, &du);
    stv((T *)dg_, i, dg);
    stv((T *)du_, i, du);
}
__global__ void k_swiglu_bwd8(size_t groups, const void *g_, const void *u_, const void *dm_, void *dg_, void *du_) {
    size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (g >= groups) return;
    float gv[8], uv[8], dv[8]; /* all read first: dg/du may alias g/u/dm (the same group of each) */
    ld8(g_, g, gv);
    ld8(u_, g, uv);
    ld8(dm_, g, dv);
    for (int k = 0; k < 8; k++) swiglu_bwd_v(gv[k], uv[k], dv[k], &gv[k], &uv[k]);
    st8(dg_, g, gv);
    st8(du_, g, uv);
}
static void cu_swiglu_fwd(size_t n, const void *g, const void *u, void *m, int dt) {
    size_t G = vec8_groups(n, dt, g, u, m, NULL, NULL), done = 8 * G;
    if (G) {
        k_swiglu_fwd8<<<blocks_for(G, 256), 256, 0, g_compute>>>(G, g, u, m);
        LAUNCHED();
    }
    if (n > done)
        TDISPATCH(dt, k_swiglu_fwd, blocks_for(n - done, 256), 256, n - done, be_at(g, done, dt), be_at(u, done, dt),
                  be_at(m, done, dt));
}
static void cu_swiglu_bwd(size_t n, const void *g, const void *u, const void *dm, void *dg, void *du, int dt) {
    size_t G = vec8_groups(n, dt, g, u, dm, dg, du), done = 8 * G;
    if (G) {
        k_swiglu_bwd8<<<blocks_for(G, 256), 256, 0, g_compute>>>(G, g, u, dm, dg, du);
        LAUNCHED();
    }
    if (n > done)
        TDISPATCH(dt, k_swiglu_bwd, blocks_for(n - done, 256), 256, n - done, be_at(g, done, dt), be_at(u, done, dt),
                  be_at(dm, done, dt), be_at(dg, done, dt), be_at(du, done, dt));
}

/* Cross-entropy a vocabulary chunk at a time (backend.h): one block per row.
 * stats row r = (running max, sum of exp(x - max), target logit) in double;
 * the chunk's (max, sum) merged with cuda_index.h's online log-sum-exp. */
template <typename T>
__global__ void k_xent_stats(int n, int ld, int v0, const void *logits, const int *tg, double *stats) {
    __shared__ float sh[256];
    int r = blockIdx.x;
    const T *row = (const T *)logits + (size_t)r * ld;
    float cm = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) cm = fmaxf(cm, ldv(row, j));
    cm = block_max(cm, sh);
    __shared__ double shd[256];
    double cs = 0; /* in double, as the CPU reference */
    for (int j = threadIdx.x; j < n; j += blockDim.x) cs += expf(ldv(row, j) - cm);
    cs = block_sum(cs, shd);
    if (threadIdx.x == 0) {
        double *st = stats + 3 * (size_t)r;
        if (v0 == 0) { st[0] = -INFINITY; st[1] = 0; st[2] = 0; }
        tt_lse_merge(&st[0], &st[1], cm, cs);
        int t = tg[r];
        if (t >= v0 && t < v0 + n) st[2] = ldv(row, (size_t)(t - v0));
    }
}
static void cu_xent_stats(int R, int n, int ld, int v0, const void *logits, const int32_t *targets, double *stats,
                          int dt) {
    TDISPATCH(dt, k_xent_stats, R, 256, n, ld, v0, logits, targets, stats);
}

/* Per-row losses (into g_xent_loss), then summed in row order. */
__global__ void k_xent_loss(int R, const double *stats, const int *tg, const float *wt, double *loss) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= R) return;
    const double *st = stats + 3 * (size_t)r;
    float w = tg[r] >= 0 ? wt[r] : 0.f;
    loss[r] = w == 0.f ? 0.0 : (double)w * (st[0] + log(st[1]) - st[2]);
}
/* Per-row losses of one chunk of rows (XENT_MAX_ROWS doubles, allocated at
 * start-up), summed in row order into the caller's double. */
static double *g_xent_loss;

static void cu_xent_loss(int R, const double *stats, const int32_t *targets, const tt_real *weight, double *acc) {
    k_xent_loss<<<blocks_for((size_t)R, 256), 256, 0, g_compute>>>(R, stats, targets, weight, g_xent_loss);
    LAUNCHED();
    k_sum_into<<<1, 1, 0, g_compute>>>(R, g_xent_loss, acc);
    LAUNCHED();
}

template <typename T>
__global__ void k_xent_grad(int n, int ld, int v0, void *logits, const int *tg, const float *wt, float dscale,
                            const double *stats) {
    int r = blockIdx.x;
    T *row = (T *)logits + (size_t)r * ld;
    int t = tg[r];
    float w = t >= 0 ? wt[r] : 0.f;
    if (w == 0.f) {
        for (int j = threadIdx.x; j < n; j += blockDim.x) stv(row, j, 0.f);
        return;
    }
    const double *st = stats + 3 * (size_t)r;
    float m = (float)st[0], inv = (float)(1.0 / st[1]), ws = w * dscale;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float e = expf(ldv(row, j) - m) * inv * ws;
        stv(row, j, v0 + j == t ? e - ws : e);
    }
}
static void cu_xent_grad(int R, int n, int ld, int v0, void *logits, const int32_t *targets, const tt_real *weight,
                         tt_real dscale, const double *stats, int dt) {
    TDISPATCH(dt, k_xent_grad, R, 256, n, ld, v0, logits, targets, weight, dscale, stats);
}

/* Distillation a vocabulary chunk at a time (backend.h, kd_*): one block per
 * row, the statistics of u = s/tau and v = t/tau merged like the
 * cross-entropy's (cuda_index.h). */
template <typename T>
__global__ void k_kd_stats(int n, int ld, int v0, const void *s, const void *t, float it, double *kstats) {
    __shared__ float sh[256];
    __shared__ double shd[256];
    int r = blockIdx.x;
    const T *sr = (const T *)s + (size_t)r * ld, *tr = (const T *)t + (size_t)r * ld;
    float mu = -INFINITY, mv = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        mu = fmaxf(mu, ldv(sr, j) * it);
        mv = fmaxf(mv, ldv(tr, j) * it);
    }
    mu = block_max(mu, sh);
    mv = block_max(mv, sh);
    double su = 0, sv = 0, a = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float u = ldv(sr, j) * it, v = ldv(tr, j) * it, e = expf(v - mv);
        su += expf(u - mu);
        sv += e;
        a += (double)e * (double)(v - u);
    }
    su = block_sum(su, shd);
    sv = block_sum(sv, shd);
    a = block_sum(a, shd);
    if (threadIdx.x == 0) {
        double *st = kstats + 5 * (size_t)r;
        if (v0 == 0) { st[0] = -INFINITY; st[1] = 0; st[2] = -INFINITY; st[3] = 0; st[4] = 0; }
        tt_lse_merge(&st[0], &st[1], mu, su);
        tt_lse_merge_w(&st[2], &st[3], &st[4], mv, sv, a);
    }
}
static void cu_kd_stats(int R, int n, int ld, int v0, const void *s, const void *t, tt_real tau, double *kstats,
                        int dt) {
    TDISPATCH(dt, k_kd_stats, R, 256, n, ld, v0, s, t, 1.f / tau, kstats);
}
__global__ void k_kd_loss(int R, const double *kstats, const int *tg, const float *wt, double t2, double *loss) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= R) return;
    const double *st = kstats + 5 * (size_t)r;
    float w = tg[r] >= 0 ? wt[r] : 0.f;
    loss[r] = w == 0.f ? 0.0 : (double)w * t2 * (st[4] / st[3] - (st[2] + log(st[3])) + (st[0] + log(st[1])));
}
static void cu_kd_loss(int R, const double *kstats, const int32_t *targets, const tt_real *weight, tt_real tau,
                       double *acc) {
    k_kd_loss<<<blocks_for((size_t)R, 256), 256, 0, g_compute>>>(R, kstats, targets, weight, (double)tau * tau,
                                                                  g_xent_loss);
    LAUNCHED();
    k_sum_into<<<1, 1, 0, g_compute>>>(R, g_xent_loss, acc);
    LAUNCHED();
}
template <typename T>
__global__ void k_kd_grad(int n, int ld, int v0, void *s, const void *t, const int *tg, const float *wt, float dscale,
                          float alpha, float tau, const double *xstats, const double *kstats) {
    int r = blockIdx.x;
    T *sr = (T *)s + (size_t)r * ld;
    const T *tr = (const T *)t + (size_t)r * ld;
    int g = tg[r];
    float w = g >= 0 ? wt[r] : 0.f;
    if (w == 0.f) {
        for (int j = threadIdx.x; j < n; j += blockDim.x) stv(sr, j, 0.f);
        return;
    }
    const double *xs = xstats + 3 * (size_t)r, *ks = kstats + 5 * (size_t)r;
    float ws = w * dscale, ce = (1.f - alpha) * ws, kd = alpha * tau * ws, it = 1.f / tau;
    float m = (float)xs[0], inv = (float)(1.0 / xs[1]);
    float mu = (float)ks[0], iu = (float)(1.0 / ks[1]), mv = (float)ks[2], iv = (float)(1.0 / ks[3]);
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float x = ldv(sr, j), u = x * it, v = ldv(tr, j) * it;
        float p = expf(x - m) * inv, ps = expf(u - mu) * iu, pt = expf(v - mv) * iv;
        stv(sr, j, ce * (v0 + j == g ? p - 1.f : p) + kd * (ps - pt));
    }
}
static void cu_kd_grad(int R, int n, int ld, int v0, void *s, const void *t, const int32_t *targets,
                       const tt_real *weight, tt_real dscale, tt_real alpha, tt_real tau, const double *xstats,
                       const double *kstats, int dt) {
    TDISPATCH(dt, k_kd_grad, R, 256, n, ld, v0, s, t, targets, weight, dscale, alpha, tau, xstats, kstats);
}

/* kernels/adamw.h's update, the CPU reference's bits. */
__global__ void k_adamw(size_t n, float *p, const float *g, float *m, float *v, tt_adamw_k k) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    p[i] = (float)tt_adamw_elem(&k, (double)p[i], (double)g[i], &m[i], &v[i]);
}
static void cu_adamw(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2, float eps,
                     float wd, int step) {
    if (!n) return;
    k_adamw<<<blocks_for(n, 256), 256, 0, g_compute>>>(n, p, g, m, v, tt_adamw_consts(lr, b1, b2, eps, wd, step));
    LAUNCHED();
}

/* ---- pinned host memory and accounting --------------------------------------- */

static int cu_host_register(void *p, size_t bytes) {
    cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        tt_seterr("cannot pin %zu bytes of host memory for the GPU (%s); lower --host or raise `ulimit -l`", bytes,
                  cudaGetErrorString(e));
        return -ENOMEM;
    }
    return 0;
}
static void cu_host_unregister(void *p) { CUDA_CHECK(cudaHostUnregister(p)); }
static void *cu_host_alloc_pinned(size_t bytes) {
    void *p = NULL;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}
static void cu_host_free_pinned(void *p) { CUDA_CHECK(cudaFreeHost(p)); }

/* ---- queues and events ------------------------------------------------------------
 * The compute queue (q == NULL) is g_compute, where every op runs; other
 * queues (loads and unspills, spills) are non-blocking streams too: nothing
 * orders any two of them but the runtime's events, as DESIGN.md's event rule
 * says. tt_queue and tt_event are cudaStream_t and cudaEvent_t. */
static cudaStream_t sq(tt_queue *q) { return q ? (cudaStream_t)q : g_compute; }
static tt_queue *cu_queue_new(void) {
    ensure_device();
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return (tt_queue *)s;
}
static void cu_queue_free(tt_queue *q) {
    CUDA_CHECK(cudaStreamSynchronize(sq(q)));
    CUDA_CHECK(cudaStreamDestroy(sq(q)));
}
static tt_event *cu_event_new(void) {
    ensure_device();
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return (tt_event *)e;
}
static void cu_event_free(tt_event *ev) { CUDA_CHECK(cudaEventDestroy((cudaEvent_t)ev)); }
static void cu_event_record(tt_event *ev, tt_queue *q) {
    ensure_device();
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)ev, sq(q)));
}
static void cu_queue_wait(tt_queue *q, tt_event *ev) {
    ensure_device();
    CUDA_CHECK(cudaStreamWaitEvent(sq(q), (cudaEvent_t)ev, 0));
}
static void cu_event_sync(tt_event *ev) {
    ensure_device();
    CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)ev));
}
static int cu_event_query(tt_event *ev) {
    cudaError_t e = cudaEventQuery((cudaEvent_t)ev);
    if (e == cudaErrorNotReady) {
        cudaGetLastError();
        return 0;
    }
    CUDA_CHECK(e);
    return 1;
}
static void cu_copy_async(void *dst, const void *src, size_t n, int kind, tt_queue *q) {
    if (!n) return;
    ensure_device();
    cudaMemcpyKind k = kind == BE_H2D ? cudaMemcpyHostToDevice : kind == BE_D2H ? cudaMemcpyDeviceToHost
                                                                               : cudaMemcpyDeviceToDevice;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n, k, sq(q)));
}
/* Timing events: the trace's device times. */
static tt_event *cu_timer_new(void) {
    ensure_device();
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDefault));
    return (tt_event *)e;
}
static double cu_timer_elapsed(tt_event *a, tt_event *b) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, (cudaEvent_t)a, (cudaEvent_t)b));
    return ms * 1e-3;
}
/* Teardown and a failed step only (backend.h's be_synchronize). */
static void cu_synchronize(void) {
    ensure_device();
    CUDA_CHECK(cudaDeviceSynchronize());
}

/* dw_c += sum_t dy_tc x_tc rstd_t. A block takes RBW_COLS columns with RBW_ROWS rows of threads: thread row g
 * walks rows g, g + RBW_ROWS, ... in order (a warp reads RBW_COLS consecutive values of a row), then a column's
 * RBW_ROWS partial sums are added in row order: the same sums in the same order on every run. A thread walks
 * T / 16 rows, not T, and a 4096-wide layer takes 128 blocks, not 16 (one thread a column left most SMs idle). */
#define RBW_COLS 32
#define RBW_ROWS 16
template <typename T>
__global__ void k_rms_bwd_w(int T_, int C, const void *x_, const float *rstd, const void *dy_, float *dw) {
    __shared__ float part[RBW_ROWS][RBW_COLS];
    const int c = blockIdx.x * RBW_COLS + threadIdx.x;
    const T *x = (const T *)x_, *dy = (const T *)dy_;
    float s = 0;
    if (c < C)
        for (int t = threadIdx.y; t < T_; t += RBW_ROWS) s += ldv(dy, (size_t)t * C + c) * ldv(x, (size_t)t * C + c) * rstd[t];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float a = 0;
        for (int g = 0; g < RBW_ROWS; g++) a += part[g][threadIdx.x];
        dw[c] += a;
    }
}
static void cu_rms_bwd_w(int T, int C, const void *x, const tt_real *rstd, const void *dy, tt_real *dw, int dt) {
    TDISPATCH(dt, k_rms_bwd_w, (C + RBW_COLS - 1) / RBW_COLS, dim3(RBW_COLS, RBW_ROWS), T, C, x, rstd, dy, dw);
}

static size_t g_reserved;
static size_t cu_reserved_bytes(void) { return g_reserved; }

/* ---- what the process holds outside the arena ----------------------------------
 * The driver's context, cuBLAS's handle and workspace and the buffers above
 * are measured: NVML (the driver's library, opened at run time, so nothing
 * links against it) reads the device's used memory before the context exists
 * and again after start-up. Kernels load lazily (CUDA_MODULE_LOADING=LAZY, the
 * default) on their first launch, after the measurement: CUDA_LAZY_MARGIN covers
 * them. Without NVML, the context is estimated (CUDA_CONTEXT_ESTIMATE). */

typedef struct { unsigned long long total, free, used; } nvml_memory;
typedef struct {
    void *lib, *dev;
    int (*init)(void);
    int (*shutdown)(void);
    int (*by_pci)(const char *, void **);
    int (*meminfo)(void *, nvml_memory *);
} nvml_api;

/* Opens NVML on the device CUDA calls 0; 0 or -1 (no NVML: estimates). */
static int nvml_open(nvml_api *n) {
    memset(n, 0, sizeof *n);
    n->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) return -1;
    *(void **)&n->init = dlsym(n->lib, "nvmlInit_v2");
    *(void **)&n->shutdown = dlsym(n->lib, "nvmlShutdown");
    *(void **)&n->by_pci = dlsym(n->lib, "nvmlDeviceGetHandleByPciBusId_v2");
    *(void **)&n->meminfo = dlsym(n->lib, "nvmlDeviceGetMemoryInfo");
    char bus[64];
    if (n->init && n->shutdown && n->by_pci && n->meminfo && n->init() == 0) {
        if (cudaDeviceGetPCIBusId(bus, sizeof bus, 0) == cudaSuccess && n->by_pci(bus, &n->dev) == 0) return 0;
        cudaGetLastError();
        n->shutdown();
    }
    dlclose(n->lib);
    n->lib = NULL;
    return -1;
}
static int nvml_used(nvml_api *n, unsigned long long *used) {
    nvml_memory m;
    if (!n->lib || n->meminfo(n->dev, &m) != 0) return -1;
    *used = m.used;
    return 0;
}
static void nvml_close(nvml_api *n) {
    if (!n->lib) return;
    n->shutdown();
    dlclose(n->lib);
    n->lib = NULL;
}

/* NVML, kept open after start-up when it measured the context: the device's
 * used memory before the context existed, for dev_in_use. */
static nvml_api g_nv;
static unsigned long long g_nv_before;
static int g_nv_ok;

/* Everything since before the context (the machine runs nothing else: NVML
 * counts the whole device). */
static int cu_dev_in_use(uint64_t *bytes) {
    unsigned long long now;
    if (!g_nv_ok || nvml_used(&g_nv, &now) != 0 || now < g_nv_before) return -1;
    *bytes = now - g_nv_before;
    return 0;
}

/* backend.h's dev_avail: the arena may take what is free now, less CUDA_LAZY_MARGIN (counted in g_reserved, taken
 * later by kernels as they load) and 128 MiB to spare (a single arena of all the rest may not be granted). */
static uint64_t cu_dev_avail(void) {
    size_t free_b = 0, total = 0;
    ensure_device();
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    const size_t keep = CUDA_LAZY_MARGIN + ((size_t)128 << 20);
    return (uint64_t)g_reserved + (free_b > keep ? free_b - keep : 0);
}

/* ---- the table ---------------------------------------------------------------- */

static tt_backend g_cuda = {
    "cuda",      cu_alloc,      cu_free,     cu_to_device, cu_to_host,    cu_copy,       cu_fill,
    cu_gemm,     cu_axpy,       cu_scale,    cu_mask_scale, cu_sumsq,     cu_dropout, cu_dequant,  cu_linear, cu_rms_fwd,
    cu_rms_bwd,  cu_rms_bwd_w, cu_rope,       cu_attn_fwd, cu_attn_bwd, cu_attn_scratch_bytes, cu_attn_kv,
    cu_swiglu_fwd, cu_swiglu_bwd, cu_xent_stats, cu_xent_loss, cu_xent_grad,
    cu_kd_stats, cu_kd_loss, cu_kd_grad,
    cu_adamw,    cu_host_register, cu_host_unregister, cu_reserved_bytes,
    cu_host_alloc_pinned, cu_host_free_pinned,
    cu_queue_new, cu_queue_free, cu_event_new, cu_event_free, cu_event_record, cu_queue_wait, cu_event_sync,
    cu_event_query, cu_copy_async, cu_synchronize, cu_timer_new, cu_timer_elapsed, cu_dev_in_use,
    CUDA_MLP_CHUNK_ELEMS, CUDA_WBUF_ELEMS, CUDA_XENT_CHUNK_ELEMS, 1 /* decode_layers */,
    cu_attn_path_name, cu_dev_avail,
};

/* ---- errors ---------------------------------------------------------------- */

static const char *cublas_status_name(int st) {
    switch (st) {
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: {
        static __thread char b[40];
        snprintf(b, sizeof b, "cuBLAS status %d", st);
        return b;
    }
    }
}

/* What an error that ends the run adds to its name: the cause a user can act on, where the error says it. */
static const char *cuda_hint(cudaError_t e) {
    switch (e) {
    case cudaErrorMemoryAllocation:
        return ": the GPU's memory ran out beyond what the run planned (another process may be using the GPU)";
    case cudaErrorDevicesUnavailable:
        return ": another process may hold the GPU (exclusive-process mode; nvidia-smi lists the processes)";
    case cudaErrorLaunchTimeout:
        return ": the driver stopped a kernel that ran past its time limit (a GPU that drives a display has one: "
               "run on a GPU that drives none)";
    case cudaErrorECCUncorrectable:
        return ": the GPU's memory failed (nvidia-smi -q -d ECC shows its errors)";
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorInsufficientDriver:
        return ": the NVIDIA driver is older than the CUDA toolkit tiertrain was built with (update the driver)";
    case cudaErrorNoKernelImageForDevice:
        return ": this build has no kernel code for this GPU (rebuild with the Makefile's CUDA_ARCH naming its "
               "compute capability)";
    default: return "";
    }
}

/* cuda_impl.h's CUDA_CHECK. */
void cuda_failed(cudaError_t e, const char *file, int line) {
    char what[768];
    snprintf(what, sizeof what, "CUDA reported %s (%s) at %s:%d%s; the run cannot go on", cudaGetErrorName(e),
             cudaGetErrorString(e), file, line, cuda_hint(e));
    tt_device_failed(what);
}

/* cuda_impl.h's CUBLAS_CHECK. */
void cublas_failed(int st, const char *file, int line) {
    char what[512];
    snprintf(what, sizeof what, "cuBLAS reported %s at %s:%d; the run cannot go on", cublas_status_name(st), file,
             line);
    tt_device_failed(what);
}

#define CUDA_TOO_LITTLE_FREE ": too little of the GPU's memory is free (another process may be using it)"
/* A start-up call failed: the sentence for the caller, the backend unavailable from now on. */
static const tt_backend *start_failed(int *state, cudaError_t e, const char *doing) {
    cudaGetLastError();
    tt_seterr("the GPU cannot be used: CUDA reported %s (%s) %s%s; use --device cpu", cudaGetErrorName(e),
              cudaGetErrorString(e), doing, e == cudaErrorMemoryAllocation ? CUDA_TOO_LITTLE_FREE : cuda_hint(e));
    *state = -1;
    return NULL;
}

extern "C" const tt_backend *backend_cuda(void) {
    static int state; /* 0 untried, 1 ready, -1 unavailable */
    if (state == 1) return &g_cuda;
    if (state == -1) return NULL;
    char why[512];
    if (cuda_blas_open(NULL, NULL, why, sizeof why) != 0) { /* before the device: a missing library says so anywhere */
        tt_seterr("%s", why);
        state = -1;
        return NULL;
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        /* the runtime says "driver version is insufficient" where there is no driver at all */
        void *drv = e == cudaErrorInsufficientDriver ? dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL) : NULL;
        if (drv) dlclose(drv);
        tt_seterr("no CUDA device can be used (%s); use --device cpu",
                  e == cudaErrorInsufficientDriver && !drv ? "no NVIDIA driver here: libcuda.so.1 cannot be loaded"
                  : e != cudaSuccess                       ? cudaGetErrorString(e)
                                                           : "no GPU found");
        state = -1;
        return NULL;
    }
    /* Start-up: what fails here (an older GPU, one another process holds, too little free memory) is a sentence
     * and --device cpu, not the end of the process; the process ends after it, so nothing made here is freed. */
    int major = 0, minor = 0;
    if ((e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0)) != cudaSuccess)
        return start_failed(&state, e, "reading its compute capability");
    if (major < 8) { /* bf16 and the tensor-core kernels' mma.sync shapes start at Ampere */
        tt_seterr("the GPU's compute capability is %d.%d; tiertrain's CUDA kernels need 8.0 or newer (Ampere, Ada, "
                  "Hopper or later): use --device cpu", major, minor);
        state = -1;
        return NULL;
    }
    nvml_api &nv = g_nv;
    unsigned long long before = 0, after = 0;
    int measured = nvml_open(&nv) == 0 && nvml_used(&nv, &before) == 0; /* before the context exists */
    size_t free0, free1, total;
    void *ws;
    bf16 *cvt;
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaFree(0)) != cudaSuccess) /* cudaFree(0): the context */
        return start_failed(&state, e, "creating its context");
    if ((e = cudaMemGetInfo(&free0, &total)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&g_compute, cudaStreamNonBlocking)) != cudaSuccess)
        return start_failed(&state, e, "creating its stream");
    /* the products' workspace, ours to count (else it grows lazily), and the buffers every run uses */
    if ((e = cudaMalloc(&ws, CUDA_BLAS_WORKSPACE)) != cudaSuccess ||
        (e = cudaMalloc(&cvt, CUDA_CVT_ELEMS * sizeof(bf16))) != cudaSuccess ||
        (e = cudaMalloc(&g_sumsq_part, SUMSQ_BLOCKS * sizeof(double))) != cudaSuccess ||
        (e = cudaMalloc(&g_xent_loss, XENT_MAX_ROWS * sizeof(double))) != cudaSuccess)
        return start_failed(&state, e, "allocating its working buffers (49 MiB)");
    /* the kernels' code for this GPU, loaded (lazily, on a kernel's first use) from each file's image: a driver
     * older than the toolkit that built them fails here, not at the first launch */
    cudaFuncAttributes fattr;
    if ((e = cudaFuncGetAttributes(&fattr, (const void *)k_sum_into)) != cudaSuccess || (e = cuda_gemm_probe()) != cudaSuccess)
        return start_failed(&state, e, "loading its kernels");
    if (int st = cuda_gemm_init(ws, CUDA_BLAS_WORKSPACE, cvt)) {
        tt_seterr("the GPU cannot be used: cuBLAS could not start (%s)%s; use --device cpu", cublas_status_name(st),
                  st == 3 /* CUBLAS_STATUS_ALLOC_FAILED */ ? CUDA_TOO_LITTLE_FREE : "");
        state = -1;
        return NULL;
    }
    int fa2_open, flash_open, cudnn_open;
    cuda_attn_env(&fa2_open, &flash_open, &cudnn_open);
    g_flash = flash_open && fa_setup();
    g_fa2 = fa2_open && fa2_setup();
    if (cudnn_open) cudnn_start();
    CUDA_CHECK(cudaMemcpyToSymbol(c_nf4, nf4_code, sizeof(float) * 16));
    CUDA_CHECK(cudaMemcpyToSymbol(c_dyn, nf4_dynamic_map, sizeof(float) * 256));
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    measured = measured && nvml_used(&nv, &after) == 0 && after >= before;
    /* measured: everything since before the context; else the growth seen after the context plus a guess for
     * it. NVML counts the whole device: a delta far above the estimate means another process allocated
     * meanwhile, and the estimate is taken instead. */
    size_t estimate = (free0 - free1) + CUDA_CONTEXT_ESTIMATE;
    if (measured && (size_t)(after - before) > 2 * estimate) measured = 0;
    if (measured) {
        g_nv_ok = 1;
        g_nv_before = before;
    } else {
        nvml_close(&nv);
    }
    g_reserved = (measured ? (size_t)(after - before) : estimate) + CUDA_LAZY_MARGIN;
    state = 1;
    return &g_cuda;
}
