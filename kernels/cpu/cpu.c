/* kernels/cpu/cpu.c — the CPU reference backend: every entry of tt_backend
 * written as plainly as possible, in the precision of tt_real (float, or
 * double under -DTT_F64). It is what CI trains with and what every CUDA kernel
 * is compared against, so clarity comes before speed; the dense products go
 * to OpenBLAS (cblas_sgemm / cblas_dgemm), everything else is plain loops.
 * bf16 activations (dt == BE_BF16) are read into tt_real, computed on as
 * such and rounded once on store: the numerics a tensor-core backend has,
 * up to summation order.
 *
 * Single-threaded apart from OpenBLAS's own threads (the trainer decides on
 * threads). The scaled-dot-product attention lives in cpu_attn.c and reaches
 * the gemm below through cpu_impl.h.
 */
#include "kernels/adamw.h"
#include "kernels/cpu/cpu_impl.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "kernels/cuda/cuda_index.h" /* plain C: tt_lse_merge, the dropout draw */

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

/* ---- element types ---------------------------------------------------------
 * dt == BE_REAL: tt_real, read and written as is (the code below is then the
 * plain reference). dt == BE_BF16: each value read as f32, computed on in
 * tt_real, rounded to nearest even once when stored. Element-wise ops read
 * and write through LD/ST; ops built on OpenBLAS or on whole-row passes work
 * on tt_real copies in thread-local scratch (grow-only: no allocation per
 * call once warm). */

static inline tt_real LD(const void *p, size_t i, int dt) {
    return dt == BE_BF16 ? (tt_real)bf16_to_f32(((const uint16_t *)p)[i]) : ((const tt_real *)p)[i];
}
static inline void ST(void *p, size_t i, int dt, tt_real v) {
    if (dt == BE_BF16) ((uint16_t *)p)[i] = f32_to_bf16((float)v);
    else ((tt_real *)p)[i] = v;
}

/* Scratch slot `slot` (cpu_impl.h) with room for n tt_real: this thread's,
 * grown on first use and then reused. Slots 0..7 hold the tt_real copies
 * below. */
tt_real *cpu_scratch(int slot, size_t n) {
    static _Thread_local tt_real *buf[CPU_SCRATCH_SLOTS];
    static _Thread_local size_t cap[CPU_SCRATCH_SLOTS];
    TT_ASSERT(slot >= 0 && slot < CPU_SCRATCH_SLOTS);
    if (n > cap[slot]) {
        free(buf[slot]);
        buf[slot] = tt_xmalloc(n * sizeof(tt_real));
        cap[slot] = n;
    }
    return buf[slot];
}

/* The (rows, cols) matrix x (row stride ld, type dt) as tt_real with the same
 * stride: x itself when dt is BE_REAL and no rounding is asked, else a copy
 * in slot. round_real: a BE_REAL x rounded to bf16 values (a mixed product). */
static tt_real *in_mat(int slot, const void *x, int dt, size_t rows, size_t cols, size_t ld, int round_real) {
    if (dt == BE_REAL && !round_real) return (tt_real *)(uintptr_t)x;
    tt_real *t = cpu_scratch(slot, (rows - 1) * ld + cols);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            tt_real v = LD(x, r * ld + c, dt);
            t[r * ld + c] = dt == BE_REAL ? (tt_real)bf16_to_f32(f32_to_bf16((float)v)) : v;
        }
    return t;
}
/* Writes the (rows, cols) tt_real matrix t back into y (type dt, stride ld) unless t is y. */
static void out_mat(void *y, int dt, const tt_real *t, size_t rows, size_t cols, size_t ld) {
    if (t == y) return;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) ST(y, r * ld + c, dt, t[r * ld + c]);
}

/* ---- dense algebra --------------------------------------------------------- */

/* C (M,N) = alpha op(A) op(B) + beta C, row-major, tt_real; see backend.h for ta/tb. */
void cpu_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const tt_real *A, int lda, const tt_real *B,
              int ldb, tt_real beta, tt_real *C, int ldc) {
    const enum CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
#ifdef TT_F64
    cblas_dgemm(CblasRowMajor, oa, ob, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, oa, ob, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

/* The typed product (backend.h): operands as tt_real (a BE_REAL one rounded
 * to bf16 when the other is bf16), one tt_real gemm, C rounded once. */
static void cpu_gemm_t(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda,
                       const void *B, int bt, int ldb, tt_real beta, void *C, int ct, int ldc) {
    const int mixed = at != bt;
    const tt_real *a = in_mat(0, A, at, ta ? K : M, ta ? M : K, lda, mixed);
    const tt_real *b = in_mat(1, B, bt, tb ? N : K, tb ? K : N, ldb, mixed);
    tt_real *c = ct == BE_REAL ? C
                 : beta != 0   ? in_mat(2, C, ct, M, N, ldc, 0)
                               : cpu_scratch(2, (size_t)(M - 1) * ldc + N); /* not read: beta 0 */
    cpu_gemm(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
    out_mat(C, ct, c, M, N, ldc);
}

/* Plain loops rather than cblas_?axpy: n is a size_t here and an int there. */
static void cpu_axpy(size_t n, tt_real alpha, const void *x, void *y, int dt) {
    for (size_t i = 0; i < n; i++) ST(y, i, dt, LD(y, i, dt) + alpha * LD(x, i, dt));
}

static void cpu_scale(size_t n, tt_real alpha, tt_real *x) {
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

static void cpu_mask_scale(size_t n, const void *x, const void *mask, tt_real alpha, void *y, int dt) {
    for (size_t i = 0; i < n; i++) ST(y, i, dt, LD(x, i, dt) * LD(mask, i, dt) * alpha);
}

static void cpu_sumsq(size_t n, const tt_real *x, double *acc) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    *acc += s;
}

/* Row t: the stream stream0 + t, column i its word i % 4 of the group i / 4
 * (cuda_index.h's Philox draw, which the CUDA kernel computes per group). */
static void cpu_dropout(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real alpha, const void *x,
                        void *y, int accumulate, int dt) {
    uint32_t thr = tt_dropout_threshold(p), w[4];
    for (int t = 0; t < rows; t++)
        for (int i = 0; i < cols; i++) {
            size_t at = (size_t)t * cols + i;
            if (i % 4 == 0) tt_dropout_words(seed, stream0 + (uint64_t)t, (uint32_t)(i / 4), w);
            tt_real v = w[i % 4] >= thr ? LD(x, at, dt) * alpha : 0;
            ST(y, at, dt, accumulate ? LD(y, at, dt) + v : v);
        }
}

/* ---- frozen weights -------------------------------------------------------- */

/* Values per float-scratch step (a multiple of NF4_BLOCK). */
#define DQ_STEP 1024

/* Decodes values [v0, v0 + count) of a tensor of n values of dtype
 * (core/base/dtype.h, the store's one decoder) into out (count values of
 * type odt): directly into a float build's tt_real, else through a float
 * scratch of DQ_STEP values (a multiple of NF4_BLOCK). */
static void cpu_dequant(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, void *out, int odt) {
#ifndef TT_F64
    if (odt == BE_REAL) {
        dtype_decode_f32(dtype, blob, n, v0, count, out);
        return;
    }
#endif
    float tmp[DQ_STEP];
    for (size_t i0 = 0; i0 < count; i0 += DQ_STEP) {
        const size_t len = count - i0 < DQ_STEP ? count - i0 : DQ_STEP;
        dtype_decode_f32(dtype, blob, n, v0 + i0, len, tmp);
        for (size_t j = 0; j < len; j++) ST(out, i0 + j, odt, tmp[j]);
    }
}

/* The reference composition: the block dequantized into scratch, then one gemm. */
static void cpu_linear(int trans, int rows, int in, int n, const void *x, int ldx, uint32_t dtype, const void *blob,
                       size_t out_total, size_t o0, void *scratch, tt_real beta, void *y, int ldy, int dt) {
    cpu_dequant(dtype, blob, out_total * (size_t)in, o0 * (size_t)in, (size_t)n * in, scratch, dt);
    if (trans) cpu_gemm_t(0, 0, rows, in, n, 1, x, dt, ldx, scratch, dt, in, beta, y, dt, ldy);
    else cpu_gemm_t(0, 1, rows, n, in, 1, x, dt, ldx, scratch, dt, in, beta, y, dt, ldy);
}

/* ---- RMSNorm (Hugging Face LlamaRMSNorm) ----------------------------------- */

/* x, y (T, C); w (C); rstd (T). The sum of squares is accumulated in double,
 * the rest is tt_real: y = w * (x * rstd), rstd = 1 / sqrt(mean(x^2) + eps). */
static void cpu_rmsnorm_fwd(int T, int C, const void *x, const tt_real *w, tt_real eps, void *y, tt_real *rstd,
                            int dt) {
    for (int t = 0; t < T; t++) {
        const size_t o = (size_t)t * C;
        double ss = 0;
        for (int c = 0; c < C; c++) {
            const tt_real xc = LD(x, o + c, dt);
            ss += (double)xc * xc;
        }
        const tt_real r = 1 / R_SQRT((tt_real)(ss / C) + eps);
        rstd[t] = r;
        for (int c = 0; c < C; c++) ST(y, o + c, dt, w[c] * (LD(x, o + c, dt) * r));
    }
}

/* With y_c = w_c x_c r and r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / C,
 * so dx_j = r * (w_j dy_j - x_j r^2 mean_c(w_c dy_c x_c)).
 * x, dy, dx (T, C); w (C); rstd (T) from the forward. */
static void cpu_rmsnorm_bwd(int T, int C, const void *x, const tt_real *w, const tt_real *rstd, const void *dy,
                            void *dx, int accumulate, int dt) {
    for (int t = 0; t < T; t++) {
        const size_t o = (size_t)t * C;
        const tt_real r = rstd[t];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)w[c] * LD(dy, o + c, dt) * LD(x, o + c, dt);
        const tt_real k = r * r * (tt_real)(dot / C);
        for (int c = 0; c < C; c++) {
            const tt_real g = r * (w[c] * LD(dy, o + c, dt) - LD(x, o + c, dt) * k);
            ST(dx, o + c, dt, accumulate ? LD(dx, o + c, dt) + g : g);
        }
    }
}

/* y_c = w_c x_c r, so dL/dw_c = sum_t dy_tc x_tc r_t (accumulated in double per column). */
static void cpu_rmsnorm_bwd_w(int T, int C, const void *x, const tt_real *rstd, const void *dy, tt_real *dw, int dt) {
    double *acc = tt_xcalloc((size_t)C, sizeof *acc);
    for (int t = 0; t < T; t++) {
        const size_t o = (size_t)t * C;
        const double r = rstd[t];
        for (int c = 0; c < C; c++) acc[c] += (double)LD(dy, o + c, dt) * LD(x, o + c, dt) * r;
    }
    for (int c = 0; c < C; c++) dw[c] += (tt_real)acc[c];
    free(acc);
}

/* ---- rotary embedding ------------------------------------------------------ */

/* x (T, nh*hd) in place; cos_t, sin_t (seq, hd/2). HF rotate_half: with
 * a = x_i, b = x_{i+hd/2}: a' = a cos - b sin, b' = b cos + a sin. The inverse
 * (sin -> -sin) is the transpose of this rotation, hence the exact backward. */
static void cpu_rope(int T, int seq, int nh, int hd, const tt_real *cos_t, const tt_real *sin_t, void *x, int inverse,
                     const int32_t *seg, int dt) {
    const int half = hd / 2;
    for (int t = 0; t < T; t++) {
        const int pos = t % seq - (seg ? seg[t] : 0); /* packed: counted from the example's start */
        TT_ASSERT(pos >= 0);
        const tt_real *cr = cos_t + (size_t)pos * half, *sr = sin_t + (size_t)pos * half;
        for (int h = 0; h < nh; h++) {
            const size_t o = ((size_t)t * nh + h) * hd;
            for (int i = 0; i < half; i++) {
                const tt_real c = cr[i], s = inverse ? -sr[i] : sr[i];
                const tt_real a = LD(x, o + i, dt), b = LD(x, o + i + half, dt);
                ST(x, o + i, dt, a * c - b * s);
                ST(x, o + i + half, dt, b * c + a * s);
            }
        }
    }
}

/* ---- attention: cpu_attn.c on tt_real copies of bf16 operands -------------- */

static void cpu_attn_fwd_t(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                           void *out, tt_real *lse, const int32_t *seg, void *scratch, int dt) {
    const size_t T = (size_t)B * seq, qn = T * nh * hd, kn = T * nkv * hd;
    tt_real *o = dt == BE_REAL ? out : cpu_scratch(3, qn);
    cpu_attn_fwd(B, seq, nh, nkv, hd, in_mat(0, q, dt, 1, qn, qn, 0), in_mat(1, k, dt, 1, kn, kn, 0),
                 in_mat(2, v, dt, 1, kn, kn, 0), o, lse, seg, scratch);
    out_mat(out, dt, o, 1, qn, qn);
}

static void cpu_attn_bwd_t(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                           const void *out, const tt_real *lse, const void *dout, void *dq, void *dk, void *dv,
                           const int32_t *seg, void *scratch, int dt) {
    const size_t T = (size_t)B * seq, qn = T * nh * hd, kn = T * nkv * hd;
    const int bf = dt == BE_BF16;
    tt_real *gq = bf ? cpu_scratch(5, qn) : dq, *gk = bf ? cpu_scratch(6, kn) : dk, *gv = bf ? cpu_scratch(7, kn) : dv;
    cpu_attn_bwd(B, seq, nh, nkv, hd, in_mat(0, q, dt, 1, qn, qn, 0), in_mat(1, k, dt, 1, kn, kn, 0),
                 in_mat(2, v, dt, 1, kn, kn, 0), in_mat(3, out, dt, 1, qn, qn, 0), lse,
                 in_mat(4, dout, dt, 1, qn, qn, 0), gq, gk, gv, seg, scratch);
    out_mat(dq, dt, gq, 1, qn, qn);
    out_mat(dk, dt, gk, 1, kn, kn);
    out_mat(dv, dt, gv, 1, kn, kn);
}

static size_t cpu_attn_scratch_t(int B, int seq, int nh, int nkv, int hd, int dt) { return cpu_attn_scratch_bytes(seq); }

/* Attention against a KV cache (backend.h's attn_kv): one (sequence, query
 * row, head) at a time, scores over the keys it sees, a softmax in double,
 * then the weighted sum of the values. Direct loops: a decoding step has one
 * query row per sequence. */
static void cpu_attn_kv(int B, int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                        const int32_t *pos, void *out, int dt) {
    const int qs = nh * hd, ks = nkv * hd, grp = nh / nkv;
    const tt_real scale = 1 / R_SQRT((tt_real)hd);
    tt_real *S = cpu_scratch(0, (size_t)cap);
    double *acc = (double *)(void *)cpu_scratch(1, 2 * (size_t)hd); /* hd doubles */
    for (int b = 0; b < B; b++) {
        TT_ASSERT(pos[b] >= 0 && pos[b] + n <= cap);
        for (int i = 0; i < n; i++) {
            const int p = pos[b] + i; /* sees keys 0..p */
            for (int h = 0; h < nh; h++) {
                const size_t qo = ((size_t)b * n + i) * qs + (size_t)h * hd;
                const size_t ko = (size_t)b * cap * ks + (size_t)(h / grp) * hd;
                tt_real mx = 0;
                for (int j = 0; j <= p; j++) {
                    tt_real s = 0;
                    for (int d = 0; d < hd; d++) s += LD(q, qo + d, dt) * LD(kc, ko + (size_t)j * ks + d, dt);
                    S[j] = s * scale;
                    mx = j == 0 || S[j] > mx ? S[j] : mx;
                }
                double sum = 0;
                memset(acc, 0, (size_t)hd * sizeof *acc);
                for (int j = 0; j <= p; j++) {
                    const double w = R_EXP(S[j] - mx);
                    sum += w;
                    for (int d = 0; d < hd; d++) acc[d] += w * LD(vc, ko + (size_t)j * ks + d, dt);
                }
                for (int d = 0; d < hd; d++) ST(out, qo + d, dt, (tt_real)(acc[d] / sum));
            }
        }
    }
}

/* ---- SwiGLU ---------------------------------------------------------------- */

/* g, u, m (n): m = silu(g) * u with silu(g) = g * sigmoid(g). */
static void cpu_swiglu_fwd(size_t n, const void *g, const void *u, void *m, int dt) {
    for (size_t i = 0; i < n; i++) {
        const tt_real gi = LD(g, i, dt);
        const tt_real sig = 1 / (1 + R_EXP(-gi));
        ST(m, i, dt, gi * sig * LD(u, i, dt));
    }
}

/* dg = dm u sig (1 + g (1 - sig)), du = dm silu(g); all (n). */
static void cpu_swiglu_bwd(size_t n, const void *g, const void *u, const void *dm, void *dg, void *du, int dt) {
    for (size_t i = 0; i < n; i++) {
        /* every input read before writing: dg may alias g, du u (the workspace does), either dm */
        const tt_real gi = LD(g, i, dt), ui = LD(u, i, dt), dmi = LD(dm, i, dt);
        const tt_real sig = 1 / (1 + R_EXP(-gi));
        ST(dg, i, dt, dmi * ui * sig * (1 + gi * (1 - sig)));
        ST(du, i, dt, dmi * gi * sig);
    }
}

/* ---- cross-entropy (a vocabulary chunk at a time) ------------------------- */

/* Rows that add nothing to the loss (and get dlogits 0). */
static int xent_row_off(const int32_t *targets, const tt_real *weight, int r) {
    return targets[r] < 0 || weight[r] == 0;
}

/* stats row r: (running max m, sum s of exp(x - m), target logit), double.
 * The chunk's own max and sum (exp in tt_real, the sum in double), merged
 * by the online log-sum-exp the CUDA kernel uses too (cuda_index.h). One
 * chunk leaves exactly the chunk's (max, sum): the single-pass softmax. */
static void cpu_xent_stats(int R, int n, int ld, int v0, const void *logits, const int32_t *targets, double *stats,
                           int dt) {
    for (int r = 0; r < R; r++) {
        const size_t o = (size_t)r * ld;
        double *st = stats + 3 * (size_t)r;
        if (v0 == 0) { st[0] = -INFINITY; st[1] = 0; st[2] = 0; }
        tt_real cm = LD(logits, o, dt);
        for (int j = 1; j < n; j++) {
            const tt_real x = LD(logits, o + j, dt);
            cm = x > cm ? x : cm;
        }
        double cs = 0;
        for (int j = 0; j < n; j++) cs += R_EXP(LD(logits, o + j, dt) - cm);
        tt_lse_merge(&st[0], &st[1], cm, cs);
        const int32_t t = targets[r];
        if (t >= v0 && t < v0 + n) st[2] = LD(logits, o + (size_t)(t - v0), dt);
    }
}

static void cpu_xent_loss(int R, const double *stats, const int32_t *targets, const tt_real *weight, double *acc) {
    double loss = 0;
    for (int r = 0; r < R; r++) {
        if (xent_row_off(targets, weight, r)) continue;
        const double *st = stats + 3 * (size_t)r;
        loss += (double)weight[r] * (st[0] + log(st[1]) - st[2]);
    }
    *acc += loss;
}

/* dlogits_j = (exp(x_j - m) / s - [j == target]) * weight * dscale: exp in
 * tt_real of x - m, 1/s rounded to tt_real (the single-pass reference's
 * arithmetic). */
static void cpu_xent_grad(int R, int n, int ld, int v0, void *logits, const int32_t *targets, const tt_real *weight,
                          tt_real dscale, const double *stats, int dt) {
    for (int r = 0; r < R; r++) {
        const size_t o = (size_t)r * ld;
        if (xent_row_off(targets, weight, r)) {
            for (int j = 0; j < n; j++) ST(logits, o + j, dt, 0);
            continue;
        }
        const double *st = stats + 3 * (size_t)r;
        const tt_real m = (tt_real)st[0], inv = (tt_real)(1 / st[1]), ws = weight[r] * dscale;
        const int32_t t = targets[r];
        for (int j = 0; j < n; j++) {
            const tt_real e = R_EXP(LD(logits, o + j, dt) - m) * inv * ws;
            ST(logits, o + j, dt, v0 + j == t ? e - ws : e);
        }
    }
}

/* ---- distillation (KL of the teacher's and the student's distributions) ---- */

/* kstats row r: (max u, sum exp(u - max u), max v, sum exp(v - max v), sum
 * exp(v - max v) (v - u)), u = s/tau and v = t/tau in tt_real, sums in
 * double, the chunk's merged like the cross-entropy's. */
static void cpu_kd_stats(int R, int n, int ld, int v0, const void *s, const void *t, tt_real tau, double *kstats,
                         int dt) {
    const tt_real it = 1 / tau;
    for (int r = 0; r < R; r++) {
        const size_t o = (size_t)r * ld;
        double *st = kstats + 5 * (size_t)r;
        if (v0 == 0) { st[0] = -INFINITY; st[1] = 0; st[2] = -INFINITY; st[3] = 0; st[4] = 0; }
        tt_real mu = LD(s, o, dt) * it, mv = LD(t, o, dt) * it;
        for (int j = 1; j < n; j++) {
            const tt_real u = LD(s, o + j, dt) * it, v = LD(t, o + j, dt) * it;
            mu = u > mu ? u : mu;
            mv = v > mv ? v : mv;
        }
        double su = 0, sv = 0, a = 0;
        for (int j = 0; j < n; j++) {
            const tt_real u = LD(s, o + j, dt) * it, v = LD(t, o + j, dt) * it, e = R_EXP(v - mv);
            su += R_EXP(u - mu);
            sv += e;
            a += (double)e * (double)(v - u);
        }
        tt_lse_merge(&st[0], &st[1], mu, su);
        tt_lse_merge_w(&st[2], &st[3], &st[4], mv, sv, a);
    }
}

/* KL_r = a / sum_v - lse(v) + lse(u): sum_j p_t (v_j - u_j) - lse(v) + lse(u). */
static void cpu_kd_loss(int R, const double *kstats, const int32_t *targets, const tt_real *weight, tt_real tau,
                        double *acc) {
    double loss = 0, t2 = (double)tau * tau;
    for (int r = 0; r < R; r++) {
        if (xent_row_off(targets, weight, r)) continue;
        const double *st = kstats + 5 * (size_t)r;
        loss += (double)weight[r] * t2 * (st[4] / st[3] - (st[2] + log(st[3])) + (st[0] + log(st[1])));
    }
    *acc += loss;
}

static void cpu_kd_grad(int R, int n, int ld, int v0, void *s, const void *t, const int32_t *targets,
                        const tt_real *weight, tt_real dscale, tt_real alpha, tt_real tau, const double *xstats,
                        const double *kstats, int dt) {
    const tt_real it = 1 / tau;
    for (int r = 0; r < R; r++) {
        const size_t o = (size_t)r * ld;
        if (xent_row_off(targets, weight, r)) {
            for (int j = 0; j < n; j++) ST(s, o + j, dt, 0);
            continue;
        }
        const double *xs = xstats + 3 * (size_t)r, *ks = kstats + 5 * (size_t)r;
        const tt_real ws = weight[r] * dscale, ce = (1 - alpha) * ws, kd = alpha * tau * ws;
        const tt_real m = (tt_real)xs[0], inv = (tt_real)(1 / xs[1]);
        const tt_real mu = (tt_real)ks[0], iu = (tt_real)(1 / ks[1]), mv = (tt_real)ks[2], iv = (tt_real)(1 / ks[3]);
        const int32_t tg = targets[r];
        for (int j = 0; j < n; j++) {
            const tt_real x = LD(s, o + j, dt), u = x * it, v = LD(t, o + j, dt) * it;
            const tt_real p = R_EXP(x - m) * inv, ps = R_EXP(u - mu) * iu, pt = R_EXP(v - mv) * iv;
            ST(s, o + j, dt, ce * (v0 + j == tg ? p - 1 : p) + kd * (ps - pt));
        }
    }
}

/* ---- AdamW ----------------------------------------------------------------- */

/* p, g (n) tt_real; m, v (n) float. PyTorch's torch.optim.AdamW (non-amsgrad,
 * non-fused): p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), bc_k = 1 - b_k^step.
 * Per-element arithmetic in double, m and v stored back as float. */
static void cpu_adamw(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2,
                      float eps, float wd, int step) {
    const tt_adamw_k k = tt_adamw_consts(lr, b1, b2, eps, wd, step); /* kernels/adamw.h: the CUDA kernel's bits too */
    for (size_t i = 0; i < n; i++) p[i] = (tt_real)tt_adamw_elem(&k, (double)p[i], (double)g[i], &m[i], &v[i]);
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
    .gemm = cpu_gemm_t,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .mask_scale = cpu_mask_scale,
    .sumsq = cpu_sumsq,
    .dropout = cpu_dropout,
    .dequant = cpu_dequant,
    .linear = cpu_linear,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rmsnorm_bwd_w = cpu_rmsnorm_bwd_w,
    .rope = cpu_rope,
    .attn_fwd = cpu_attn_fwd_t,
    .attn_bwd = cpu_attn_bwd_t,
    .attn_scratch_bytes = cpu_attn_scratch_t,
    .attn_kv = cpu_attn_kv,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .xent_stats = cpu_xent_stats,
    .xent_loss = cpu_xent_loss,
    .xent_grad = cpu_xent_grad,
    .kd_stats = cpu_kd_stats,
    .kd_loss = cpu_kd_loss,
    .kd_grad = cpu_kd_grad,
    .adamw = cpu_adamw,
};

const tt_backend *backend_cpu(void) { return &g_cpu; }
