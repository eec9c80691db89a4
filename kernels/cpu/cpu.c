/* kernels/cpu/cpu.c — the CPU reference backend: every entry of tt_backend
 * written as plainly as possible, in the precision of tt_real (float, or
 * double under -DTT_F64). It is what CI trains with and what every CUDA kernel
 * is compared against, so clarity comes before speed; the dense products go
 * to OpenBLAS (cblas_sgemm / cblas_dgemm), everything else is plain loops.
 *
 * Single-threaded apart from OpenBLAS's own threads (the trainer decides on
 * threads). The scaled-dot-product attention lives in cpu_attn.c and reaches
 * the gemm below through cpu_impl.h.
 */
#include "kernels/cpu/cpu_impl.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"

/* ---- memory ---------------------------------------------------------------- */

/* Zeroed, 4096-byte aligned; NULL on failure. 0 bytes still returns a pointer
 * (one cache line) so callers can tell success from failure. */
static void *cpu_alloc(size_t bytes) {
    const size_t a = 4096; /* page-aligned: arenas are carved from one allocation */
    if (bytes > SIZE_MAX - a) return NULL;
    const size_t sz = bytes ? (bytes + a - 1) / a * a : a; /* aligned_alloc wants a multiple */
    void *p = aligned_alloc(a, sz);
    if (p) memset(p, 0, sz);
    return p;
}

static void cpu_free(void *p) { free(p); }

static void cpu_memcpy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_fill(tt_real *x, size_t n, tt_real v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

/* ---- dense algebra --------------------------------------------------------- */

/* C (M,N) = alpha op(A) op(B) + beta C, row-major; see backend.h for ta/tb. */
void cpu_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const tt_real *A, int lda, const tt_real *B,
              int ldb, tt_real beta, tt_real *C, int ldc) {
    const enum CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
#ifdef TT_F64
    cblas_dgemm(CblasRowMajor, oa, ob, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, oa, ob, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

/* Plain loops rather than cblas_?axpy: n is a size_t here and an int there. */
static void cpu_axpy(size_t n, tt_real alpha, const tt_real *x, tt_real *y) {
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void cpu_scale(size_t n, tt_real alpha, tt_real *x) {
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

static void cpu_mask_scale(size_t n, const tt_real *x, const tt_real *mask, tt_real alpha, tt_real *y) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] * mask[i] * alpha;
}

static void cpu_sumsq(size_t n, const tt_real *x, double *acc) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    *acc += s;
}

/* Row t: the stream rng_seed(seed, stream0 + t), one uniform per column. */
static void cpu_dropout_mask(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real *mask) {
    for (int t = 0; t < rows; t++) {
        tt_rng r;
        rng_seed(&r, seed, stream0 + (uint64_t)t);
        tt_real *m = mask + (size_t)t * cols;
        for (int i = 0; i < cols; i++) m[i] = rng_uniform(&r) >= (double)p ? 1 : 0;
    }
}

/* ---- frozen weights -------------------------------------------------------- */

/* Values per float-scratch step in the f64 build (a multiple of NF4_BLOCK). */
#define DQ_STEP 1024

/* Decodes values [v0, v0 + count) of a tensor of n values of dtype
 * (core/base/dtype.h, the store's one decoder) into out (count) tt_real:
 * directly in the float build, through a float scratch of DQ_STEP values
 * (a multiple of NF4_BLOCK) in the f64 build. */
static void cpu_dequant(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, tt_real *out) {
#ifdef TT_F64
    float tmp[DQ_STEP];
    for (size_t i0 = 0; i0 < count; i0 += DQ_STEP) {
        const size_t len = count - i0 < DQ_STEP ? count - i0 : DQ_STEP;
        dtype_decode_f32(dtype, blob, n, v0 + i0, len, tmp);
        for (size_t j = 0; j < len; j++) out[i0 + j] = tmp[j];
    }
#else
    dtype_decode_f32(dtype, blob, n, v0, count, out);
#endif
}

/* The reference composition: the block dequantized into scratch, then one gemm. */
static void cpu_linear(int trans, int rows, int in, int n, const tt_real *x, int ldx, uint32_t dtype, const void *blob,
                       size_t out_total, size_t o0, tt_real *scratch, tt_real beta, tt_real *y, int ldy) {
    cpu_dequant(dtype, blob, out_total * (size_t)in, o0 * (size_t)in, (size_t)n * in, scratch);
    if (trans) cpu_gemm(0, 0, rows, in, n, 1, x, ldx, scratch, in, beta, y, ldy);
    else cpu_gemm(0, 1, rows, n, in, 1, x, ldx, scratch, in, beta, y, ldy);
}

/* ---- bf16 activation storage ---------------------------------------------- */

static void cpu_to_bf16(size_t n, const tt_real *x, uint16_t *y) {
    for (size_t i = 0; i < n; i++) y[i] = f32_to_bf16((float)x[i]);
}
static void cpu_from_bf16(size_t n, const uint16_t *x, tt_real *y) {
    for (size_t i = 0; i < n; i++) y[i] = bf16_to_f32(x[i]);
}

/* ---- RMSNorm (Hugging Face LlamaRMSNorm) ----------------------------------- */

/* x, y (T, C); w (C); rstd (T). The sum of squares is accumulated in double,
 * the rest is tt_real: y = w * (x * rstd), rstd = 1 / sqrt(mean(x^2) + eps). */
static void cpu_rmsnorm_fwd(int T, int C, const tt_real *x, const tt_real *w, tt_real eps, tt_real *y,
                            tt_real *rstd) {
    for (int t = 0; t < T; t++) {
        const tt_real *xr = x + (size_t)t * C;
        tt_real *yr = y + (size_t)t * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        const tt_real r = 1 / R_SQRT((tt_real)(ss / C) + eps);
        rstd[t] = r;
        for (int c = 0; c < C; c++) yr[c] = w[c] * (xr[c] * r);
    }
}

/* With y_c = w_c x_c r and r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / C,
 * so dx_j = r * (w_j dy_j - x_j r^2 mean_c(w_c dy_c x_c)).
 * x, dy, dx (T, C); w (C); rstd (T) from the forward. */
static void cpu_rmsnorm_bwd(int T, int C, const tt_real *x, const tt_real *w, const tt_real *rstd, const tt_real *dy,
                            tt_real *dx, int accumulate) {
    for (int t = 0; t < T; t++) {
        const tt_real *xr = x + (size_t)t * C, *dyr = dy + (size_t)t * C;
        tt_real *dxr = dx + (size_t)t * C;
        const tt_real r = rstd[t];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)w[c] * dyr[c] * xr[c];
        const tt_real k = r * r * (tt_real)(dot / C);
        for (int c = 0; c < C; c++) {
            const tt_real g = r * (w[c] * dyr[c] - xr[c] * k);
            dxr[c] = accumulate ? dxr[c] + g : g;
        }
    }
}

/* y_c = w_c x_c r, so dL/dw_c = sum_t dy_tc x_tc r_t (accumulated in double per column). */
static void cpu_rmsnorm_bwd_w(int T, int C, const tt_real *x, const tt_real *rstd, const tt_real *dy, tt_real *dw) {
    double *acc = tt_xcalloc((size_t)C, sizeof *acc);
    for (int t = 0; t < T; t++) {
        const tt_real *xr = x + (size_t)t * C, *dyr = dy + (size_t)t * C;
        const double r = rstd[t];
        for (int c = 0; c < C; c++) acc[c] += (double)dyr[c] * xr[c] * r;
    }
    for (int c = 0; c < C; c++) dw[c] += (tt_real)acc[c];
    free(acc);
}

/* ---- rotary embedding ------------------------------------------------------ */

/* x (T, nh*hd) in place; cos_t, sin_t (seq, hd/2). HF rotate_half: with
 * a = x_i, b = x_{i+hd/2}: a' = a cos - b sin, b' = b cos + a sin. The inverse
 * (sin -> -sin) is the transpose of this rotation, hence the exact backward. */
static void cpu_rope(int T, int seq, int nh, int hd, const tt_real *cos_t, const tt_real *sin_t, tt_real *x,
                     int inverse) {
    const int half = hd / 2;
    for (int t = 0; t < T; t++) {
        const tt_real *cr = cos_t + (size_t)(t % seq) * half, *sr = sin_t + (size_t)(t % seq) * half;
        for (int h = 0; h < nh; h++) {
            tt_real *xh = x + ((size_t)t * nh + h) * hd;
            for (int i = 0; i < half; i++) {
                const tt_real c = cr[i], s = inverse ? -sr[i] : sr[i];
                const tt_real a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
    }
}

/* ---- SwiGLU ---------------------------------------------------------------- */

/* g, u, m (n): m = silu(g) * u with silu(g) = g * sigmoid(g). */
static void cpu_swiglu_fwd(size_t n, const tt_real *g, const tt_real *u, tt_real *m) {
    for (size_t i = 0; i < n; i++) {
        const tt_real sig = 1 / (1 + R_EXP(-g[i]));
        m[i] = g[i] * sig * u[i];
    }
}

/* dg = dm u sig (1 + g (1 - sig)), du = dm silu(g); all (n). */
static void cpu_swiglu_bwd(size_t n, const tt_real *g, const tt_real *u, const tt_real *dm, tt_real *dg,
                           tt_real *du) {
    for (size_t i = 0; i < n; i++) {
        /* every input read before writing: dg may alias g, du u (the workspace does), either dm */
        const tt_real gi = g[i], ui = u[i], dmi = dm[i];
        const tt_real sig = 1 / (1 + R_EXP(-gi));
        dg[i] = dmi * ui * sig * (1 + gi * (1 - sig));
        du[i] = dmi * gi * sig;
    }
}

/* ---- cross-entropy --------------------------------------------------------- */

/* logits (R, V) in, dlogits out; targets (R), weight (R). A row with a
 * negative target or zero weight contributes nothing and gets dlogits 0.
 * exp is taken once per element in tt_real; sums and the loss are double. */
static void cpu_xent(int R, int V, tt_real *logits, const int32_t *targets, const tt_real *weight, tt_real dscale,
                     double *acc) {
    double loss = 0;
    for (int r = 0; r < R; r++) {
        tt_real *x = logits + (size_t)r * V;
        const int32_t tgt = targets[r];
        if (tgt < 0 || weight[r] == 0) {
            memset(x, 0, (size_t)V * sizeof *x);
            continue;
        }
        TT_ASSERT(tgt < V);
        tt_real mx = x[0];
        for (int j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        const tt_real xt = x[tgt];
        double sum = 0;
        for (int j = 0; j < V; j++) {
            x[j] = R_EXP(x[j] - mx);
            sum += x[j];
        }
        loss += (double)weight[r] * ((double)mx + log(sum) - (double)xt);
        const tt_real ws = weight[r] * dscale, inv = (tt_real)(1 / sum);
        for (int j = 0; j < V; j++) x[j] = x[j] * inv * ws;
        x[tgt] -= ws;
    }
    *acc += loss;
}

/* ---- AdamW ----------------------------------------------------------------- */

/* p, g (n) tt_real; m, v (n) float. PyTorch's torch.optim.AdamW (non-amsgrad,
 * non-fused): p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), bc_k = 1 - b_k^step.
 * Per-element arithmetic in double, m and v stored back as float. */
static void cpu_adamw(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2,
                      float eps, float wd, int step) {
    const double bc1 = 1 - pow((double)b1, step), bc2 = 1 - pow((double)b2, step);
    const double step_size = (double)lr / bc1, bc2_sqrt = sqrt(bc2), decay = 1 - (double)lr * wd;
    for (size_t i = 0; i < n; i++) {
        const double gi = g[i];
        m[i] = (float)((double)b1 * m[i] + (1 - (double)b1) * gi);
        v[i] = (float)((double)b2 * v[i] + (1 - (double)b2) * gi * gi);
        const double denom = sqrt((double)v[i]) / bc2_sqrt + eps;
        p[i] = (tt_real)((double)p[i] * decay - step_size * m[i] / denom);
    }
}

/* ---- the table ------------------------------------------------------------- */

static const tt_backend g_cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_memcpy,
    .to_host = cpu_memcpy,
    .copy = cpu_memcpy,
    .fill = cpu_fill,
    .gemm = cpu_gemm,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .mask_scale = cpu_mask_scale,
    .sumsq = cpu_sumsq,
    .dropout_mask = cpu_dropout_mask,
    .dequant = cpu_dequant,
    .linear = cpu_linear,
    .to_bf16 = cpu_to_bf16,
    .from_bf16 = cpu_from_bf16,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rmsnorm_bwd_w = cpu_rmsnorm_bwd_w,
    .rope = cpu_rope,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .xent = cpu_xent,
    .adamw = cpu_adamw,
};

const tt_backend *backend_cpu(void) { return &g_cpu; }
