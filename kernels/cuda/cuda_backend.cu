/* kernels/cuda/cuda_backend.cu — the CUDA backend: every op of tt_backend on
 * the GPU, with cuBLAS for the matrix products (fp32 accumulation). The CPU
 * backend (kernels/cpu/) is the reference each kernel is tested against
 * (tests/test_cuda_ops.c, skipped without a GPU).
 *
 * First version, deliberately simple: every op on the legacy default stream
 * (the compute queue; layer loads and spills get non-blocking streams of
 * their own, ordered by events); attention is head-chunked through cuBLAS with one (seq x seq)
 * score buffer per head at a time (grow-only, outside the arenas — to be
 * accounted by the planner); row reductions one block per row. */
#include "kernels/cuda/cuda_backend.h"

extern "C" {
#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
}

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

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

static cublasHandle_t g_blas;
static __constant__ float c_nf4[16];
static __constant__ float c_dyn[256];

static unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---- memory ---------------------------------------------------------------- */

static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError(); /* clear the error: the caller reports out-of-memory */
        return NULL;
    }
    CUDA_CHECK(cudaMemset(p, 0, bytes ? bytes : 256));
    return p;
}
static void cu_free(void *p) { CUDA_CHECK(cudaFree(p)); }
static void cu_to_device(void *d, const void *s, size_t n) { CUDA_CHECK(cudaMemcpy(d, s, n, cudaMemcpyHostToDevice)); }
static void cu_to_host(void *d, const void *s, size_t n) { CUDA_CHECK(cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost)); }
static void cu_copy(void *d, const void *s, size_t n) { CUDA_CHECK(cudaMemcpy(d, s, n, cudaMemcpyDeviceToDevice)); }

__global__ void k_fill(float *x, size_t n, float v) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) x[i] = v;
}
static void cu_fill(tt_real *x, size_t n, tt_real v) {
    if (!n) return;
    k_fill<<<blocks_for(n, 256), 256>>>(x, n, v);
    LAUNCHED();
}

/* ---- dense algebra ---------------------------------------------------------- */

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T. */
static void cu_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const tt_real *A, int lda, const tt_real *B,
                    int ldb, tt_real beta, tt_real *C, int ldc) {
    CUBLAS_CHECK(cublasSgemm(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                             B, ldb, A, lda, &beta, C, ldc));
}

__global__ void k_axpy(size_t n, float a, const float *x, float *y) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * x[i];
}
static void cu_axpy(size_t n, tt_real a, const tt_real *x, tt_real *y) {
    if (!n) return;
    k_axpy<<<blocks_for(n, 256), 256>>>(n, a, x, y);
    LAUNCHED();
}
__global__ void k_scale(size_t n, float a, float *x) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) x[i] *= a;
}
static void cu_scale(size_t n, tt_real a, tt_real *x) {
    if (!n) return;
    k_scale<<<blocks_for(n, 256), 256>>>(n, a, x);
    LAUNCHED();
}
__global__ void k_mask_scale(size_t n, const float *x, const float *m, float a, float *y) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * m[i] * a;
}
static void cu_mask_scale(size_t n, const tt_real *x, const tt_real *m, tt_real a, tt_real *y) {
    if (!n) return;
    k_mask_scale<<<blocks_for(n, 256), 256>>>(n, x, m, a, y);
    LAUNCHED();
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
    k_sumsq<<<SUMSQ_BLOCKS, 256>>>(n, x, g_sumsq_part);
    LAUNCHED();
    k_sum_into<<<1, 1>>>(SUMSQ_BLOCKS, g_sumsq_part, acc);
    LAUNCHED();
}

/* LoRA dropout's keep mask: one thread per row, core/base/rng.c's generator
 * (splitmix64 seeding, xoshiro256**, 53-bit uniforms) step for step. */
__device__ static uint64_t d_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
__device__ static uint64_t d_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
__global__ void k_dropout_mask(int rows, int cols, uint64_t seed, uint64_t stream0, float p, float *mask) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= rows) return;
    uint64_t x = seed ^ ((stream0 + (uint64_t)t) * 0xd1342543de82ef95ull), s[4];
    for (int i = 0; i < 4; i++) s[i] = d_splitmix(&x);
    float *m = mask + (size_t)t * cols;
    for (int i = 0; i < cols; i++) {
        uint64_t r = d_rotl(s[1] * 5, 7) * 9, u = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
        s[2] ^= u;
        s[3] = d_rotl(s[3], 45);
        m[i] = (double)(r >> 11) * 0x1.0p-53 >= (double)p ? 1.f : 0.f;
    }
}
static void cu_dropout_mask(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real *mask) {
    k_dropout_mask<<<blocks_for((size_t)rows, 128), 128>>>(rows, cols, seed, stream0, p, mask);
    LAUNCHED();
}

/* ---- dequantization ------------------------------------------------------------ */

__global__ void k_f32(size_t n, const float *in, float *out) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i];
}
__global__ void k_bf16(size_t n, const unsigned short *in, float *out) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) out[i] = __uint_as_float((unsigned)in[i] << 16);
}
/* One thread per value v0 + i: code from its nibble (first value in the high
 * nibble), absmax from the f32 array or through double quantization. */
__global__ void k_nf4(size_t count, size_t v0, const unsigned char *codes, const float *absmax,
                      const unsigned char *qabs, const float *absmax2, const float *offset_p, float *out) {
    size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (j >= count) return;
    float offset = absmax ? 0.f : *offset_p; /* read on the device: no host round trip per call */
    size_t i = v0 + j;
    unsigned char b = codes[i >> 1];
    int code = (i & 1) ? (b & 15) : (b >> 4);
    size_t blk = i / NF4_BLOCK;
    /* Two roundings, as the CPU reference (nf4_double_dequant): __fmul_rn /
     * __fadd_rn are never contracted into one FMA. */
    float am = absmax ? absmax[blk] : __fadd_rn(__fmul_rn(c_dyn[qabs[blk]], absmax2[blk / NF4_DQ_BLOCK]), offset);
    out[j] = c_nf4[code] * am;
}
static void cu_dequant(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, tt_real *out) {
    if (!count) return;
    const unsigned char *b = (const unsigned char *)blob;
    unsigned nb = blocks_for(count, 256);
    if (dtype == TT_DTYPE_F32) k_f32<<<nb, 256>>>(count, (const float *)blob + v0, out);
    else if (dtype == TT_DTYPE_BF16) k_bf16<<<nb, 256>>>(count, (const unsigned short *)blob + v0, out);
    else {
        nf4_layout L;
        nf4_layout_of(n, dtype == TT_DTYPE_NF4DQ, &L);
        k_nf4<<<nb, 256>>>(count, v0, b, L.double_quant ? NULL : (const float *)(b + L.absmax_off),
                           L.double_quant ? b + L.absmax_off : NULL,
                           L.double_quant ? (const float *)(b + L.absmax2_off) : NULL,
                           L.double_quant ? (const float *)(b + L.offset_off) : NULL, out);
    }
    LAUNCHED();
}

/* Dequantize the block into scratch, then one cuBLAS product (the reference's
 * composition; a fused kernel may replace it behind the same op). */
static void cu_linear(int trans, int rows, int in, int n, const tt_real *x, int ldx, uint32_t dtype, const void *blob,
                      size_t out_total, size_t o0, tt_real *scratch, tt_real beta, tt_real *y, int ldy) {
    cu_dequant(dtype, blob, out_total * (size_t)in, o0 * (size_t)in, (size_t)n * in, scratch);
    if (trans) cu_gemm(0, 0, rows, in, n, 1, x, ldx, scratch, in, beta, y, ldy);
    else cu_gemm(0, 1, rows, n, in, 1, x, ldx, scratch, in, beta, y, ldy);
}

/* ---- layer ops -------------------------------------------------------------- */

__device__ float block_sum(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + w]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__global__ void k_rms_fwd(int C, const float *x, const float *w, float eps, float *y, float *rstd) {
    __shared__ float sh[256];
    const float *xr = x + (size_t)blockIdx.x * C;
    float s = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += xr[i] * xr[i];
    float r = rsqrtf(block_sum(s, sh) / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int i = threadIdx.x; i < C; i += blockDim.x) y[(size_t)blockIdx.x * C + i] = xr[i] * r * w[i];
}
static void cu_rms_fwd(int T, int C, const tt_real *x, const tt_real *w, tt_real eps, tt_real *y, tt_real *rstd) {
    k_rms_fwd<<<T, 256>>>(C, x, w, eps, y, rstd);
    LAUNCHED();
}
/* dx = rstd * (w dy) - x * rstd^3 * mean(w dy x) */
__global__ void k_rms_bwd(int C, const float *x, const float *w, const float *rstd, const float *dy, float *dx, int acc) {
    __shared__ float sh[256];
    size_t o = (size_t)blockIdx.x * C;
    float r = rstd[blockIdx.x], s = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += w[i] * dy[o + i] * x[o + i];
    float m = block_sum(s, sh) / C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float g = r * w[i] * dy[o + i] - x[o + i] * r * r * r * m;
        dx[o + i] = acc ? dx[o + i] + g : g;
    }
}
static void cu_rms_bwd(int T, int C, const tt_real *x, const tt_real *w, const tt_real *rstd, const tt_real *dy,
                       tt_real *dx, int acc) {
    k_rms_bwd<<<T, 256>>>(C, x, w, rstd, dy, dx, acc);
    LAUNCHED();
}

__global__ void k_rope(int T, int seq, int nh, int hd, const float *cs, const float *sn, float *x, float sgn) {
    size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x, half = hd / 2;
    if (idx >= (size_t)T * nh * half) return;
    int i = (int)(idx % half);
    size_t th = idx / half;
    int h = (int)(th % nh), t = (int)(th / nh);
    float c = cs[(size_t)(t % seq) * half + i], s = sgn * sn[(size_t)(t % seq) * half + i];
    float *p = x + (size_t)t * nh * hd + (size_t)h * hd;
    float a = p[i], b = p[i + half];
    p[i] = a * c - b * s;
    p[i + half] = b * c + a * s;
}
static void cu_rope(int T, int seq, int nh, int hd, const tt_real *cs, const tt_real *sn, tt_real *x, int inverse) {
    size_t n = (size_t)T * nh * (hd / 2);
    k_rope<<<blocks_for(n, 256), 256>>>(T, seq, nh, hd, cs, sn, x, inverse ? -1.f : 1.f);
    LAUNCHED();
}

/* ---- attention (head-chunked through cuBLAS) ---------------------------------- */

static float *g_attn_scratch;
static size_t g_attn_cap;

/* What attention holds outside the arena for sequences of seq tokens: the
 * backward's two (seq x seq) buffers (the planner adds it to --hbm). */
static size_t cu_scratch_bytes(int seq) { return cuda_attn_scratch_bytes(seq); }

static float *attn_scratch(size_t n) {
    if (n > g_attn_cap) {
        if (g_attn_scratch) CUDA_CHECK(cudaFree(g_attn_scratch));
        CUDA_CHECK(cudaMalloc(&g_attn_scratch, n * sizeof(float)));
        g_attn_cap = n;
    }
    return g_attn_scratch;
}

/* Causal softmax of each row of S (seq, seq) in place; lse[row * ls] = log-sum-exp. */
__global__ void k_softmax_causal(int seq, float *S, float *lse, int ls) {
    __shared__ float sh[256];
    int r = blockIdx.x;
    float *row = S + (size_t)r * seq;
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= r; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, sh);
    float s = 0;
    for (int j = threadIdx.x; j <= r; j += blockDim.x) s += expf(row[j] - m);
    float tot = block_sum(s, sh);
    float l = m + logf(tot);
    for (int j = threadIdx.x; j < seq; j += blockDim.x) row[j] = j <= r ? expf(row[j] - l) : 0.f;
    if (threadIdx.x == 0) lse[(size_t)r * ls] = l;
}

/* P from scores and the saved lse (backward). */
__global__ void k_probs(int seq, float *S, const float *lse, int ls) {
    int r = blockIdx.x;
    float l = lse[(size_t)r * ls];
    for (int j = threadIdx.x; j < seq; j += blockDim.x) {
        float *p = S + (size_t)r * seq + j;
        *p = j <= r ? expf(*p - l) : 0.f;
    }
}

/* D[r] = sum_d dO[r, d] * O[r, d] for one head; dS = P * (dP - D). */
__global__ void k_dsoft(int seq, int hd, const float *dO, const float *O, int os, const float *P, float *dP) {
    __shared__ float sh[256];
    int r = blockIdx.x;
    float s = 0;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) s += dO[(size_t)r * os + d] * O[(size_t)r * os + d];
    float D = block_sum(s, sh);
    for (int j = threadIdx.x; j < seq; j += blockDim.x) {
        size_t i = (size_t)r * seq + j;
        dP[i] = P[i] * (dP[i] - D);
    }
}

static void cu_attn_fwd(int B, int seq, int nh, int nkv, int hd, const tt_real *q, const tt_real *k, const tt_real *v,
                        tt_real *out, tt_real *lse) {
    int qs = nh * hd, ks = nkv * hd, grp = nh / nkv;
    float scale = 1.0f / sqrtf((float)hd);
    float *S = attn_scratch((size_t)seq * seq);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            size_t r0 = (size_t)b * seq;
            const float *Q = q + r0 * qs + (size_t)h * hd, *K = k + r0 * ks + (size_t)(h / grp) * hd;
            const float *V = v + r0 * ks + (size_t)(h / grp) * hd;
            cu_gemm(0, 1, seq, seq, hd, scale, Q, qs, K, ks, 0, S, seq);
            k_softmax_causal<<<seq, 256>>>(seq, S, lse + r0 * nh + h, nh);
            LAUNCHED();
            cu_gemm(0, 0, seq, hd, seq, 1, S, seq, V, ks, 0, out + r0 * qs + (size_t)h * hd, qs);
        }
}

static void cu_attn_bwd(int B, int seq, int nh, int nkv, int hd, const tt_real *q, const tt_real *k, const tt_real *v,
                        const tt_real *out, const tt_real *lse, const tt_real *dout, tt_real *dq, tt_real *dk,
                        tt_real *dv) {
    int qs = nh * hd, ks = nkv * hd, grp = nh / nkv;
    float scale = 1.0f / sqrtf((float)hd);
    CUDA_CHECK(cudaMemset(dk, 0, (size_t)B * seq * ks * sizeof(float)));
    CUDA_CHECK(cudaMemset(dv, 0, (size_t)B * seq * ks * sizeof(float)));
    float *P = attn_scratch(2 * (size_t)seq * seq), *dP = P + (size_t)seq * seq;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            size_t r0 = (size_t)b * seq, qo = r0 * qs + (size_t)h * hd, ko = r0 * ks + (size_t)(h / grp) * hd;
            cu_gemm(0, 1, seq, seq, hd, scale, q + qo, qs, k + ko, ks, 0, P, seq);
            k_probs<<<seq, 256>>>(seq, P, lse + r0 * nh + h, nh);
            LAUNCHED();
            cu_gemm(1, 0, seq, hd, seq, 1, P, seq, dout + qo, qs, 1, dv + ko, ks);  /* dV += P^T dO */
            cu_gemm(0, 1, seq, seq, hd, 1, dout + qo, qs, v + ko, ks, 0, dP, seq);  /* dP = dO V^T */
            k_dsoft<<<seq, 256>>>(seq, hd, dout + qo, out + qo, qs, P, dP);
            LAUNCHED();
            cu_gemm(0, 0, seq, hd, seq, scale, dP, seq, k + ko, ks, 0, dq + qo, qs);   /* dQ = s dS K */
            cu_gemm(1, 0, seq, hd, seq, scale, dP, seq, q + qo, qs, 1, dk + ko, ks);   /* dK += s dS^T Q */
        }
}

/* ---- bf16 activation storage (the CPU's f32_to_bf16: nearest even, NaN quiet) -- */

__global__ void k_to_bf16(size_t n, const float *x, unsigned short *y) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned u = __float_as_uint(x[i]);
    if ((u & 0x7fffffffu) > 0x7f800000u) y[i] = (unsigned short)((u >> 16) | 0x40);
    else y[i] = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__global__ void k_from_bf16(size_t n, const unsigned short *x, float *y) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = __uint_as_float((unsigned)x[i] << 16);
}
static void cu_to_bf16(size_t n, const tt_real *x, uint16_t *y) {
    if (!n) return;
    k_to_bf16<<<blocks_for(n, 256), 256>>>(n, x, y);
    LAUNCHED();
}
static void cu_from_bf16(size_t n, const uint16_t *x, tt_real *y) {
    if (!n) return;
    k_from_bf16<<<blocks_for(n, 256), 256>>>(n, x, y);
    LAUNCHED();
}

/* ---- SwiGLU, cross-entropy, AdamW -------------------------------------------- */

__global__ void k_swiglu_fwd(size_t n, const float *g, const float *u, float *m) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) m[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}
__global__ void k_swiglu_bwd(size_t n, const float *g, const float *u, const float *dm, float *dg, float *du) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i], ui = u[i], d = dm[i], sg = 1.f / (1.f + expf(-gi)); /* all read first: dg/du may alias g/u/dm */
    dg[i] = d * ui * sg * (1.f + gi * (1.f - sg));
    du[i] = d * gi * sg;
}
static void cu_swiglu_fwd(size_t n, const tt_real *g, const tt_real *u, tt_real *m) {
    if (!n) return;
    k_swiglu_fwd<<<blocks_for(n, 256), 256>>>(n, g, u, m);
    LAUNCHED();
}
static void cu_swiglu_bwd(size_t n, const tt_real *g, const tt_real *u, const tt_real *dm, tt_real *dg, tt_real *du) {
    if (!n) return;
    k_swiglu_bwd<<<blocks_for(n, 256), 256>>>(n, g, u, dm, dg, du);
    LAUNCHED();
}

__global__ void k_xent(int V, float *logits, const int *tg, const float *wt, float dscale, double *loss) {
    __shared__ float sh[256];
    int r = blockIdx.x;
    float *row = logits + (size_t)r * V;
    int t = tg[r];
    float w = t >= 0 ? wt[r] : 0.f;
    if (w == 0.f) {
        for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = 0.f;
        if (threadIdx.x == 0) loss[r] = 0;
        return;
    }
    float m = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, sh);
    float s = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(row[j] - m);
    float l = m + logf(block_sum(s, sh));
    float target = row[t];
    __syncthreads();
    for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = (expf(row[j] - l) - (j == t ? 1.f : 0.f)) * w * dscale;
    if (threadIdx.x == 0) loss[r] = (double)w * (l - target);
}
/* Per-row losses of one cross-entropy chunk (XENT_MAX_ROWS doubles,
 * allocated at start-up), summed in row order into the caller's double. */
static double *g_xent_loss;

static void cu_xent(int R, int V, tt_real *logits, const int32_t *targets, const tt_real *weight, tt_real dscale,
                    double *acc) {
    k_xent<<<R, 256>>>(V, logits, targets, weight, dscale, g_xent_loss);
    LAUNCHED();
    k_sum_into<<<1, 1>>>(R, g_xent_loss, acc);
    LAUNCHED();
}

__global__ void k_adamw(size_t n, float *p, const float *g, float *m, float *v, float lr, float b1, float b2, float eps,
                        float wd, float c1, float c2) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float pi = p[i] - lr * wd * p[i];
    m[i] = b1 * m[i] + (1.f - b1) * g[i];
    v[i] = b2 * v[i] + (1.f - b2) * g[i] * g[i];
    p[i] = pi - lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
}
static void cu_adamw(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2, float eps,
                     float wd, int step) {
    if (!n) return;
    float c1 = (float)(1.0 - pow((double)b1, step)), c2 = (float)(1.0 - pow((double)b2, step));
    k_adamw<<<blocks_for(n, 256), 256>>>(n, p, g, m, v, lr, b1, b2, eps, wd, c1, c2);
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
 * The compute queue is the legacy default stream, where every op runs; other
 * queues are non-blocking streams (they do not synchronise with it
 * implicitly: only the runtime's events order them, as DESIGN.md's event rule
 * says). tt_queue and tt_event are cudaStream_t and cudaEvent_t. */
static cudaStream_t sq(tt_queue *q) { return q ? (cudaStream_t)q : (cudaStream_t)0; }
static tt_queue *cu_queue_new(void) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return (tt_queue *)s;
}
static void cu_queue_free(tt_queue *q) {
    CUDA_CHECK(cudaStreamSynchronize(sq(q)));
    CUDA_CHECK(cudaStreamDestroy(sq(q)));
}
static tt_event *cu_event_new(void) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return (tt_event *)e;
}
static void cu_event_free(tt_event *ev) { CUDA_CHECK(cudaEventDestroy((cudaEvent_t)ev)); }
static void cu_event_record(tt_event *ev, tt_queue *q) { CUDA_CHECK(cudaEventRecord((cudaEvent_t)ev, sq(q))); }
static void cu_queue_wait(tt_queue *q, tt_event *ev) { CUDA_CHECK(cudaStreamWaitEvent(sq(q), (cudaEvent_t)ev, 0)); }
static void cu_event_sync(tt_event *ev) { CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)ev)); }
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
    cudaMemcpyKind k = kind == BE_H2D ? cudaMemcpyHostToDevice : kind == BE_D2H ? cudaMemcpyDeviceToHost
                                                                               : cudaMemcpyDeviceToDevice;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n, k, sq(q)));
}
static void cu_synchronize(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

/* dw_c += sum_t dy_tc x_tc rstd_t: one thread per column, rows walked in
 * order (coalesced across the columns of a row). */
__global__ void k_rms_bwd_w(int T, int C, const float *x, const float *rstd, const float *dy, float *dw) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0;
    for (int t = 0; t < T; t++) s += dy[(size_t)t * C + c] * x[(size_t)t * C + c] * rstd[t];
    dw[c] += s;
}
static void cu_rms_bwd_w(int T, int C, const tt_real *x, const tt_real *rstd, const tt_real *dy, tt_real *dw) {
    k_rms_bwd_w<<<(C + 255) / 256, 256>>>(T, C, x, rstd, dy, dw);
    LAUNCHED();
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

/* ---- the table ---------------------------------------------------------------- */

static tt_backend g_cuda = {
    "cuda",      cu_alloc,      cu_free,     cu_to_device, cu_to_host,    cu_copy,       cu_fill,
    cu_gemm,     cu_axpy,       cu_scale,    cu_mask_scale, cu_sumsq,     cu_dropout_mask, cu_dequant,  cu_linear, cu_rms_fwd,
    cu_rms_bwd,  cu_rms_bwd_w, cu_rope,       cu_attn_fwd, cu_attn_bwd,  cu_to_bf16,    cu_from_bf16,
    cu_swiglu_fwd, cu_swiglu_bwd, cu_xent,
    cu_adamw,    cu_host_register, cu_host_unregister, cu_reserved_bytes, cu_scratch_bytes,
    cu_host_alloc_pinned, cu_host_free_pinned,
    cu_queue_new, cu_queue_free, cu_event_new, cu_event_free, cu_event_record, cu_queue_wait, cu_event_sync,
    cu_event_query, cu_copy_async, cu_synchronize,
};

extern "C" const tt_backend *backend_cuda(void) {
    static int state; /* 0 untried, 1 ready, -1 unavailable */
    if (state == 1) return &g_cuda;
    if (state == -1) return NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        tt_seterr("no CUDA device can be used (%s); use --device cpu",
                  e != cudaSuccess ? cudaGetErrorString(e) : "no GPU found");
        state = -1;
        return NULL;
    }
    nvml_api nv;
    unsigned long long before = 0, after = 0;
    int measured = nvml_open(&nv) == 0 && nvml_used(&nv, &before) == 0; /* before the context exists */
    CUDA_CHECK(cudaSetDevice(0));
    size_t free0, free1, total;
    CUDA_CHECK(cudaFree(0)); /* create the context */
    CUDA_CHECK(cudaMemGetInfo(&free0, &total));
    CUBLAS_CHECK(cublasCreate(&g_blas));
    void *ws;
    CUDA_CHECK(cudaMalloc(&ws, CUDA_BLAS_WORKSPACE)); /* cuBLAS's workspace, ours to count (else it grows lazily) */
    CUBLAS_CHECK(cublasSetWorkspace(g_blas, ws, CUDA_BLAS_WORKSPACE));
    CUDA_CHECK(cudaMalloc(&g_sumsq_part, SUMSQ_BLOCKS * sizeof(double)));
    CUDA_CHECK(cudaMalloc(&g_xent_loss, XENT_MAX_ROWS * sizeof(double)));
    CUDA_CHECK(cudaMemcpyToSymbol(c_nf4, nf4_code, sizeof(float) * 16));
    CUDA_CHECK(cudaMemcpyToSymbol(c_dyn, nf4_dynamic_map, sizeof(float) * 256));
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    measured = measured && nvml_used(&nv, &after) == 0 && after >= before;
    nvml_close(&nv);
    /* measured: everything since before the context; else the growth seen after the context plus a guess for
     * it. NVML counts the whole device: a delta far above the estimate means another process allocated
     * meanwhile, and the estimate is taken instead. */
    size_t estimate = (free0 - free1) + CUDA_CONTEXT_ESTIMATE;
    if (measured && (size_t)(after - before) > 2 * estimate) measured = 0;
    g_reserved = (measured ? (size_t)(after - before) : estimate) + CUDA_LAZY_MARGIN;
    state = 1;
    return &g_cuda;
}
