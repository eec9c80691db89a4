/* tests/test_grad_ops.c — the CPU backend's layer ops in double precision
 * (built with -DTT_F64, so tt_real is double):
 *   - every backward (linear dX/dW, rmsnorm, rope, GQA attention, swiglu,
 *     cross-entropy) against central finite differences of a scalar loss
 *     L = sum(y * R) for a fixed random R (xent: L = dscale * loss);
 *     max|analytic - numeric| / max(max|numeric|, 1e-8) < 1e-6 with h = 1e-5;
 *   - every forward against a naive reference written here independently
 *     (gemm in all four transpose modes with padded strides, rmsnorm, rope from
 *     the angles, attention with one explicit softmax per row, swiglu, xent);
 *   - adamw against a two-step example worked by hand;
 *   - dequant of f32 / bf16 / nf4 / nf4-dq against core/base/dtype.h and core/base/nf4.c.
 * Shapes are deliberately awkward (C = 24, V = 37, seq = 5, hd = 6). Inputs come
 * from core/base/rng.h with fixed seeds.
 */
#include "kernels/backend.h"

#include <math.h>
#include <string.h>

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#ifndef TT_F64
#error "test_grad_ops.c must be compiled with -DTT_F64 (the Makefile does so for tests/test_grad_*.c)"
#endif

#define FD_H 1e-5
#define FD_TOL 1e-6  /* normwise relative error of a gradient */
#define REF_TOL 1e-12 /* a forward against its naive double reference */

static tt_rng g_rng;

/* ---- helpers ---------------------------------------------------------------- */

/* n values ~ N(0, sd^2); the caller frees */
static tt_real *randv(size_t n, double sd) {
    tt_real *p = tt_xmalloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = sd * rng_normal(&g_rng);
    return p;
}

static tt_real *zerov(size_t n) { return tt_xcalloc(n ? n : 1, sizeof(tt_real)); }

static tt_real *dupv(const tt_real *x, size_t n) {
    tt_real *p = tt_xmalloc((n ? n : 1) * sizeof *p);
    memcpy(p, x, n * sizeof *p);
    return p;
}

/* max|a - b| / max(max|b|, 1e-8): b is the reference */
static double relerr(const tt_real *a, const tt_real *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / fmax(m, 1e-8);
}

static double dot(const tt_real *a, const tt_real *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

/* Central differences of f with respect to param[idx[0..m)] (every element
 * when idx is NULL, then m = n); returns the normwise relative error of
 * analytic (n) over the checked elements. */
static double fd_check(loss_fn f, void *ctx, tt_real *param, const size_t *idx, size_t m, const tt_real *analytic) {
    double d = 0, mx = 0;
    for (size_t c = 0; c < m; c++) {
        const size_t i = idx ? idx[c] : c;
        const tt_real save = param[i];
        param[i] = save + FD_H;
        const double lp = f(ctx);
        param[i] = save - FD_H;
        const double lm = f(ctx);
        param[i] = save;
        const double num = (lp - lm) / (2 * FD_H);
        d = fmax(d, fabs((double)analytic[i] - num));
        mx = fmax(mx, fabs(num));
    }
    return d / fmax(mx, 1e-8);
}

#define CHECK_GRAD(name, err)                                                                                  \
    do {                                                                                                       \
        double e_ = (err);                                                                                     \
        printf("%-28s rel err %.3g\n", name, e_);                                                              \
        CHECK_MSG(e_ < FD_TOL, "%s: gradient relative error %.3g", name, e_);                                 \
    } while (0)

#define CHECK_REF(name, err)                                                                                   \
    do {                                                                                                       \
        double e_ = (err);                                                                                     \
        CHECK_MSG(e_ < REF_TOL, "%s: relative error %.3g against the naive reference", name, e_);            \
    } while (0)

/* ---- gemm / linear ------------------------------------------------------------ */

static void test_gemm_ref(void) {
    /* C (M,N) = alpha op(A) op(B) + beta C, each stride padded by 3 */
    const int M = 5, N = 7, K = 11, pad = 3;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            const int ar = ta ? K : M, ac = ta ? M : K, brr = tb ? N : K, bc = tb ? K : N;
            const int lda = ac + pad, ldb = bc + pad, ldc = N + pad;
            tt_real *A = randv((size_t)ar * lda, 1), *Bm = randv((size_t)brr * ldb, 1), *C = randv((size_t)M * ldc, 1);
            tt_real *ref = dupv(C, (size_t)M * ldc);
            const double alpha = 0.75, beta = -0.5;
            for (int i = 0; i < M; i++) {
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int p = 0; p < K; p++) {
                        const double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                        const double b = tb ? Bm[(size_t)j * ldb + p] : Bm[(size_t)p * ldb + j];
                        s += a * b;
                    }
                    ref[(size_t)i * ldc + j] = alpha * s + beta * C[(size_t)i * ldc + j];
                }
            }
            be_gemm(ta, tb, M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
            /* the padding columns of C must be untouched: compare whole buffers */
            char name[64];
            snprintf(name, sizeof name, "gemm ta=%d tb=%d", ta, tb);
            CHECK_REF(name, relerr(C, ref, (size_t)M * ldc));
            free(A), free(Bm), free(C), free(ref);
        }
    }
}

typedef struct {
    int T, in, out;
    tt_real *x, *W, *R, *y; /* x (T, in), W (out, in), R, y (T, out) */
} linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *c = p;
    be_linear(c->T, c->in, c->out, c->x, c->W, c->y, 0);
    return dot(c->y, c->R, (size_t)c->T * c->out);
}

static void test_linear(void) {
    linear_ctx c = {.T = 5, .in = 24, .out = 7};
    const size_t nx = (size_t)c.T * c.in, nw = (size_t)c.out * c.in, ny = (size_t)c.T * c.out;
    c.x = randv(nx, 1), c.W = randv(nw, 0.3), c.R = randv(ny, 1), c.y = zerov(ny);
    /* forward: y = x W^T, and accumulate = 1 adds */
    tt_real *ref = zerov(ny);
    for (int t = 0; t < c.T; t++)
        for (int o = 0; o < c.out; o++)
            for (int i = 0; i < c.in; i++) ref[(size_t)t * c.out + o] += c.x[(size_t)t * c.in + i] * c.W[(size_t)o * c.in + i];
    be_linear(c.T, c.in, c.out, c.x, c.W, c.y, 0);
    CHECK_REF("linear fwd", relerr(c.y, ref, ny));
    be_linear(c.T, c.in, c.out, c.x, c.W, c.y, 1);
    for (size_t i = 0; i < ny; i++) ref[i] *= 2;
    CHECK_REF("linear fwd accumulate", relerr(c.y, ref, ny));
    /* backward of L = sum(y R): dX = R W, dW = R^T x */
    tt_real *dx = zerov(nx), *dw = zerov(nw);
    be_gemm(0, 0, c.T, c.in, c.out, 1, c.R, c.out, c.W, c.in, 0, dx, c.in);
    be_gemm(1, 0, c.out, c.in, c.T, 1, c.R, c.out, c.x, c.in, 0, dw, c.in);
    CHECK_GRAD("linear dX", fd_check(linear_loss, &c, c.x, NULL, nx, dx));
    CHECK_GRAD("linear dW", fd_check(linear_loss, &c, c.W, NULL, nw, dw));
    free(c.x), free(c.W), free(c.R), free(c.y), free(ref), free(dx), free(dw);
}

/* ---- rmsnorm -------------------------------------------------------------------- */

typedef struct {
    int T, C;
    tt_real eps;
    tt_real *x, *w, *R, *y, *rstd;
} rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    be_rmsnorm_fwd(c->T, c->C, c->x, c->w, c->eps, c->y, c->rstd, BE_REAL);
    return dot(c->y, c->R, (size_t)c->T * c->C);
}

static void test_rmsnorm(void) {
    rms_ctx c = {.T = 3, .C = 24, .eps = 1e-5};
    const size_t n = (size_t)c.T * c.C;
    c.x = randv(n, 1), c.w = randv((size_t)c.C, 1), c.R = randv(n, 1), c.y = zerov(n), c.rstd = zerov((size_t)c.T);
    /* row 0: mean square ~ eps, so eps matters; h = 1e-5 is then 0.3% of x and the
     * finite-difference truncation error reaches ~1e-7, still well under 1e-6 */
    for (int i = 0; i < c.C; i++) c.x[i] *= 3e-3;
    tt_real *ref = zerov(n), *rref = zerov((size_t)c.T);
    for (int t = 0; t < c.T; t++) {
        double ms = 0;
        for (int i = 0; i < c.C; i++) ms += c.x[(size_t)t * c.C + i] * c.x[(size_t)t * c.C + i] / c.C;
        rref[t] = 1 / sqrt(ms + c.eps);
        for (int i = 0; i < c.C; i++) ref[(size_t)t * c.C + i] = c.x[(size_t)t * c.C + i] / sqrt(ms + c.eps) * c.w[i];
    }
    rms_loss(&c);
    CHECK_REF("rmsnorm fwd", relerr(c.y, ref, n));
    CHECK_REF("rmsnorm rstd", relerr(c.rstd, rref, (size_t)c.T));

    tt_real *dx = zerov(n);
    be_rmsnorm_bwd(c.T, c.C, c.x, c.w, c.rstd, c.R, dx, 0, BE_REAL);
    CHECK_GRAD("rmsnorm dx", fd_check(rms_loss, &c, c.x, NULL, n, dx));
    /* accumulate = 1 adds onto what is there */
    tt_real *base = randv(n, 1), *acc = dupv(base, n);
    rms_loss(&c);
    be_rmsnorm_bwd(c.T, c.C, c.x, c.w, c.rstd, c.R, acc, 1, BE_REAL);
    for (size_t i = 0; i < n; i++) base[i] += dx[i];
    CHECK_REF("rmsnorm bwd accumulate", relerr(acc, base, n));
    free(c.x), free(c.w), free(c.R), free(c.y), free(c.rstd), free(ref), free(rref), free(dx), free(base), free(acc);
}

/* ---- rope ------------------------------------------------------------------------- */

#define ROPE_THETA 10000.0

static double rope_freq(int i, int hd) { return pow(ROPE_THETA, -2.0 * i / hd); }

/* cos/sin tables (seq, hd/2) as the trainer would build them */
static void rope_tables(int seq, int hd, tt_real **cs, tt_real **sn) {
    const int half = hd / 2;
    *cs = zerov((size_t)seq * half), *sn = zerov((size_t)seq * half);
    for (int p = 0; p < seq; p++) {
        for (int i = 0; i < half; i++) {
            (*cs)[(size_t)p * half + i] = cos(p * rope_freq(i, hd));
            (*sn)[(size_t)p * half + i] = sin(p * rope_freq(i, hd));
        }
    }
}

typedef struct {
    int T, seq, nh, hd;
    tt_real *cs, *sn, *x, *R, *tmp;
    const int32_t *seg; /* packed examples: positions count from each token's example start */
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    const size_t n = (size_t)c->T * c->nh * c->hd;
    memcpy(c->tmp, c->x, n * sizeof *c->tmp);
    be_rope(c->T, c->seq, c->nh, c->hd, c->cs, c->sn, c->tmp, 0, c->seg, BE_REAL);
    return dot(c->tmp, c->R, n);
}

static void test_rope_case(const int32_t *seg) {
    rope_ctx c = {.seq = 5, .nh = 3, .hd = 6, .seg = seg};
    c.T = 2 * c.seq; /* two sequences: row t is at position t % seq */
    const size_t n = (size_t)c.T * c.nh * c.hd;
    rope_tables(c.seq, c.hd, &c.cs, &c.sn);
    c.x = randv(n, 1), c.R = randv(n, 1), c.tmp = zerov(n);
    /* HF: out = x * cos(emb) + rotate_half(x) * sin(emb), emb = cat(freqs, freqs),
     * rotate_half(x) = cat(-x2, x1), angles computed here from scratch */
    tt_real *ref = zerov(n);
    const int half = c.hd / 2;
    for (int t = 0; t < c.T; t++) {
        const int pos = t % c.seq - (seg ? seg[t] : 0);
        for (int h = 0; h < c.nh; h++) {
            const tt_real *xh = c.x + ((size_t)t * c.nh + h) * c.hd;
            tt_real *rh = ref + ((size_t)t * c.nh + h) * c.hd;
            for (int d = 0; d < c.hd; d++) {
                const double ang = pos * pow(ROPE_THETA, -(double)(2 * (d % half)) / c.hd);
                const double rot = d < half ? -xh[d + half] : xh[d - half];
                rh[d] = xh[d] * cos(ang) + rot * sin(ang);
            }
        }
    }
    rope_loss(&c);
    CHECK_REF("rope fwd", relerr(c.tmp, ref, n));
    /* inverse undoes the forward */
    be_rope(c.T, c.seq, c.nh, c.hd, c.cs, c.sn, c.tmp, 1, c.seg, BE_REAL);
    CHECK_REF("rope inverse", relerr(c.tmp, c.x, n));
    /* backward of sum(rope(x) R) is rope^T(R) = the inverse rotation of R */
    tt_real *g = dupv(c.R, n);
    be_rope(c.T, c.seq, c.nh, c.hd, c.cs, c.sn, g, 1, c.seg, BE_REAL);
    CHECK_GRAD("rope dx", fd_check(rope_loss, &c, c.x, NULL, n, g));
    free(c.cs), free(c.sn), free(c.x), free(c.R), free(c.tmp), free(ref), free(g);
}

static void test_rope(void) {
    test_rope_case(NULL);
    /* packed: sequence 0 holds examples at 0..1 and 2..4, sequence 1 one example 0..4 */
    static const int32_t seg[10] = {0, 0, 2, 2, 2, 0, 0, 0, 0, 0};
    test_rope_case(seg);
}

/* ---- attention ---------------------------------------------------------------------- */

typedef struct {
    int B, seq, nh, nkv, hd;
    tt_real *q, *k, *v, *R, *out, *lse; /* q, R, out (T, nh*hd); k, v (T, nkv*hd); lse (T, nh) */
    void *scratch;                      /* the ops' scratch */
    const int32_t *seg;                 /* packed examples (T) or NULL */
} attn_ctx;

static double attn_loss(void *p) {
    attn_ctx *c = p;
    be_attn_fwd(c->B, c->seq, c->nh, c->nkv, c->hd, c->q, c->k, c->v, c->out, c->lse, c->seg, c->scratch, BE_REAL);
    return dot(c->out, c->R, (size_t)c->B * c->seq * c->nh * c->hd);
}

/* out/lse of causal GQA, one explicit softmax per (sequence, head, row); row i sees keys seg[i]..i */
static void attn_naive(const attn_ctx *c, tt_real *out, tt_real *lse) {
    const int qs = c->nh * c->hd, ks = c->nkv * c->hd;
    const double scale = 1 / sqrt((double)c->hd);
    double *s = tt_xmalloc((size_t)c->seq * sizeof *s);
    for (int b = 0; b < c->B; b++) {
        for (int h = 0; h < c->nh; h++) {
            const int g = h / (c->nh / c->nkv);
            for (int i = 0; i < c->seq; i++) {
                const size_t ti = (size_t)b * c->seq + i;
                const int lo = c->seg ? c->seg[ti] : 0;
                double z = 0;
                for (int j = lo; j <= i; j++) {
                    const size_t tj = (size_t)b * c->seq + j;
                    double d = 0;
                    for (int e = 0; e < c->hd; e++) d += c->q[ti * qs + h * c->hd + e] * c->k[tj * ks + g * c->hd + e];
                    s[j] = exp(d * scale);
                    z += s[j];
                }
                lse[ti * c->nh + h] = log(z);
                for (int e = 0; e < c->hd; e++) {
                    double o = 0;
                    for (int j = lo; j <= i; j++) o += s[j] / z * c->v[((size_t)b * c->seq + j) * ks + g * c->hd + e];
                    out[ti * qs + h * c->hd + e] = o;
                }
            }
        }
    }
    free(s);
}

/* idx: NULL checks every element; otherwise m random elements of each input */
static void attn_case(const char *tag, int B, int seq, int nh, int nkv, int hd, size_t m, const int32_t *seg) {
    attn_ctx c = {.B = B, .seq = seq, .nh = nh, .nkv = nkv, .hd = hd, .seg = seg};
    const size_t T = (size_t)B * seq, nq = T * nh * hd, nk = T * nkv * hd;
    c.q = randv(nq, 1), c.k = randv(nk, 1), c.v = randv(nk, 1), c.R = randv(nq, 1);
    c.out = zerov(nq), c.lse = zerov(T * nh);
    c.scratch = tt_xmalloc(be_attn_scratch_bytes(B, seq, nh, nkv, hd, BE_REAL) + 1);
    tt_real *ref = zerov(nq), *lref = zerov(T * nh);
    attn_naive(&c, ref, lref);
    attn_loss(&c);
    char name[64];
    snprintf(name, sizeof name, "attn fwd %s", tag);
    CHECK_REF(name, relerr(c.out, ref, nq));
    snprintf(name, sizeof name, "attn lse %s", tag);
    CHECK_REF(name, relerr(c.lse, lref, T * nh));

    tt_real *dq = randv(nq, 1), *dk = randv(nk, 1), *dv = randv(nk, 1); /* garbage: must be overwritten */
    be_attn_bwd(B, seq, nh, nkv, hd, c.q, c.k, c.v, c.out, c.lse, c.R, dq, dk, dv, c.seg, c.scratch, BE_REAL);
    size_t *iq = NULL, *ik = NULL;
    if (m) {
        iq = tt_xmalloc(m * sizeof *iq), ik = tt_xmalloc(m * sizeof *ik);
        for (size_t i = 0; i < m; i++) iq[i] = rng_below(&g_rng, nq), ik[i] = rng_below(&g_rng, nk);
    }
    snprintf(name, sizeof name, "attn dq %s", tag);
    CHECK_GRAD(name, fd_check(attn_loss, &c, c.q, iq, m ? m : nq, dq));
    snprintf(name, sizeof name, "attn dk %s", tag);
    CHECK_GRAD(name, fd_check(attn_loss, &c, c.k, ik, m ? m : nk, dk));
    snprintf(name, sizeof name, "attn dv %s", tag);
    CHECK_GRAD(name, fd_check(attn_loss, &c, c.v, ik, m ? m : nk, dv));
    free(c.q), free(c.k), free(c.v), free(c.R), free(c.out), free(c.lse), free(c.scratch), free(ref), free(lref);
    free(dq), free(dk), free(dv), free(iq), free(ik);
}

static void test_attention(void) {
    /* GQA 4 query heads on 2 KV heads, two sequences of 5: every element */
    attn_case("B2 seq5 nh4 nkv2 hd6", 2, 5, 4, 2, 6, 0, NULL);
    /* one KV head for 3 query heads; seq 130 runs blocks of 64, 64, 2 rows: sampled */
    attn_case("B1 seq130 nh3 nkv1 hd4", 1, 130, 3, 1, 4, 60, NULL);
    /* plain MHA, seq 1 */
    attn_case("B3 seq1 nh2 nkv2 hd2", 3, 1, 2, 2, 2, 0, NULL);
    /* packed examples: sequence 0 holds three (rows 0-2, 3-5, 6), sequence 1 two (0-1, 2-6): every element,
     * the masked keys' gradients included */
    static const int32_t seg[14] = {0, 0, 0, 3, 3, 3, 6, 0, 0, 2, 2, 2, 2, 2};
    attn_case("packed B2 seq7 nh4 nkv2 hd6", 2, 7, 4, 2, 6, 0, seg);
    /* packed across the 64-row blocks: examples of 50, 40 and 40 rows in seq 130, sampled */
    static int32_t seg130[130];
    for (int i = 0; i < 130; i++) seg130[i] = i < 50 ? 0 : i < 90 ? 50 : 90;
    attn_case("packed B1 seq130 nh3 nkv1 hd4", 1, 130, 3, 1, 4, 60, seg130);
}

/* ---- swiglu ------------------------------------------------------------------------------ */

typedef struct {
    size_t n;
    tt_real *g, *u, *R, *m;
} swiglu_ctx;

static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    be_swiglu_fwd(c->n, c->g, c->u, c->m, BE_REAL);
    return dot(c->m, c->R, c->n);
}

static void test_swiglu(void) {
    swiglu_ctx c = {.n = 53};
    c.g = randv(c.n, 2), c.u = randv(c.n, 1), c.R = randv(c.n, 1), c.m = zerov(c.n);
    c.g[0] = -30, c.g[1] = 30; /* saturated sigmoid on both sides */
    tt_real *ref = zerov(c.n);
    for (size_t i = 0; i < c.n; i++) ref[i] = c.g[i] / (1 + exp(-c.g[i])) * c.u[i];
    swiglu_loss(&c);
    CHECK_REF("swiglu fwd", relerr(c.m, ref, c.n));
    tt_real *dg = zerov(c.n), *du = zerov(c.n);
    be_swiglu_bwd(c.n, c.g, c.u, c.R, dg, du, BE_REAL);
    CHECK_GRAD("swiglu dg", fd_check(swiglu_loss, &c, c.g, NULL, c.n, dg));
    CHECK_GRAD("swiglu du", fd_check(swiglu_loss, &c, c.u, NULL, c.n, du));
    free(c.g), free(c.u), free(c.R), free(c.m), free(ref), free(dg), free(du);
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

typedef struct {
    int R, V, vc;         /* vc: vocabulary columns per chunk */
    tt_real dscale;
    tt_real *x, *tmp, *w; /* x, tmp (R, V); w (R) */
    double *stats;        /* (R, 3) */
    int32_t *tgt;         /* (R) */
} xent_ctx;

static double xent_loss(void *p) {
    xent_ctx *c = p;
    memcpy(c->tmp, c->x, (size_t)c->R * c->V * sizeof *c->tmp);
    double loss = 0;
    be_xent(c->R, c->V, c->vc, c->tmp, c->tgt, c->w, c->dscale, &loss, c->stats, BE_REAL);
    return c->dscale * loss;
}

static void test_xent(int vc) {
    xent_ctx c = {.R = 6, .V = 37, .vc = vc, .dscale = 0.7};
    const size_t n = (size_t)c.R * c.V;
    c.x = randv(n, 2), c.tmp = zerov(n), c.w = zerov((size_t)c.R), c.stats = tt_xcalloc(3 * (size_t)c.R, sizeof(double));
    c.tgt = tt_xmalloc((size_t)c.R * sizeof *c.tgt);
    const int32_t tg[6] = {3, -1, 36, 0, 17, 5};
    const tt_real wt[6] = {1, 1, 1, 0, 0.5, 1}; /* row 1: ignored target; row 3: zero weight */
    memcpy(c.tgt, tg, sizeof tg), memcpy(c.w, wt, sizeof wt);
    for (int j = 0; j < c.V; j++) c.x[(size_t)5 * c.V + j] += 1000; /* row 5: huge logits */

    /* direct formula: loss_r = log(sum_j exp(x_j - x_t)) (no max shift needed
     * for the relative form), dlogits = (softmax - onehot) w dscale */
    double ref = 0;
    tt_real *dref = zerov(n);
    for (int r = 0; r < c.R; r++) {
        if (tg[r] < 0 || wt[r] == 0) continue;
        const tt_real *x = c.x + (size_t)r * c.V;
        double z = 0;
        for (int j = 0; j < c.V; j++) z += exp(x[j] - x[tg[r]]);
        ref += wt[r] * log(z);
        for (int j = 0; j < c.V; j++) dref[(size_t)r * c.V + j] = (exp(x[j] - x[tg[r]]) / z - (j == tg[r])) * wt[r] * c.dscale;
    }
    memcpy(c.tmp, c.x, n * sizeof *c.tmp);
    double loss = 0;
    be_xent(c.R, c.V, c.vc, c.tmp, c.tgt, c.w, c.dscale, &loss, c.stats, BE_REAL);
    CHECK_MSG(fabs(loss - ref) <= REF_TOL * fabs(ref), "xent loss (chunks of %d) %.17g vs %.17g", vc, loss, ref);
    CHECK_REF("xent dlogits", relerr(c.tmp, dref, n));
    int zero_rows_ok = 1;
    for (int j = 0; j < c.V; j++) zero_rows_ok &= c.tmp[(size_t)1 * c.V + j] == 0 && c.tmp[(size_t)3 * c.V + j] == 0;
    CHECK_MSG(zero_rows_ok, "masked rows must get dlogits 0");
    tt_real *g = dupv(c.tmp, n); /* the kernel's dlogits (xent_loss reuses tmp) */
    CHECK_GRAD("xent dlogits", fd_check(xent_loss, &c, c.x, NULL, n, dref));
    CHECK_GRAD("xent dlogits (kernel)", fd_check(xent_loss, &c, c.x, NULL, n, g));
    free(c.x), free(c.tmp), free(c.w), free(c.tgt), free(c.stats), free(dref), free(g);
}

/* ---- adamw ------------------------------------------------------------------------------------ */

static void test_adamw(void) {
    /* p0 = 1, g1 = 0.5, g2 = -0.25, lr 0.1, b1 0.9, b2 0.999, eps 1e-8, wd 0.01.
     * step 1: p = 1 * (1 - 0.1 * 0.01) = 0.999; m = 0.1 * 0.5 = 0.05;
     *   v = 0.001 * 0.25 = 2.5e-4; bc1 = 0.1, bc2 = 0.001;
     *   m^ = 0.05 / 0.1 = 0.5; sqrt(v^) = sqrt(2.5e-4 / 0.001) = 0.5;
     *   p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.899000002 (to 1e-16)
     * step 2: p = 0.899000002 * 0.999 = 0.898101001998; m = 0.9 * 0.05 - 0.1 * 0.25 = 0.02;
     *   v = 0.999 * 2.5e-4 + 0.001 * 0.0625 = 3.1225e-4; bc1 = 0.19, bc2 = 0.001999;
     *   m^ = 0.02 / 0.19 = 0.1052631578947; sqrt(v^) = sqrt(0.1562031015508) = 0.3952253807017;
     *   p = 0.898101001998 - 0.1 * 0.1052631578947 / 0.3952253907017 = 0.8714672987058
     * A second element with p0 = -2 and g = 0 twice: only the decay acts
     * (m = v = 0): p = -2 * 0.999^2 = -1.996002.
     * Tolerances: the hyper-parameters arrive as float (0.9f = 0.899999976,
     * 0.999f = 0.99900001287) and m, v are stored as float, so m and v carry
     * relative errors up to 1.3e-5 (1 - 0.999f); in p the (1 - b2) factor
     * cancels against bc2 and what is left moves p by 1.5e-9 (computed with
     * the exact float values): 1e-8 absolute. */
    tt_real p[2] = {1, -2}, g[2] = {0.5, 0};
    float m[2] = {0, 0}, v[2] = {0, 0};
    be_adamw(2, p, g, m, v, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
    CHECK_NEAR(p[0], 0.899000002, 1e-8);
    CHECK_NEAR(m[0], 0.05, 0.05 * 1e-6);
    CHECK_NEAR(v[0], 2.5e-4, 2.5e-4 * 2e-5);
    g[0] = -0.25;
    be_adamw(2, p, g, m, v, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 2);
    CHECK_NEAR(p[0], 0.8714672987058, 1e-8);
    CHECK_NEAR(m[0], 0.02, 0.02 * 1e-6);
    CHECK_NEAR(v[0], 3.1225e-4, 3.1225e-4 * 2e-5);
    CHECK_NEAR(p[1], -1.996002, 1e-8);
    CHECK(m[1] == 0 && v[1] == 0);
}

/* ---- dequant ------------------------------------------------------------------------------------ */

static void test_dequant(void) {
    const size_t n = 64 * 300 + 37; /* > 256 NF4 blocks (two double-quant blocks), odd, partial last block */
    float *x = tt_xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_normal(&g_rng) * (1 + (double)(i / 64 % 7)));
    tt_real *out = zerov(n);

    /* f32: exact */
    be_dequant(TT_DTYPE_F32, x, n, out, BE_REAL);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= out[i] == (tt_real)x[i];
    CHECK_MSG(ok, "dequant f32 differs from the stored floats");

    /* bf16: exactly bf16_to_f32 of the stored halves */
    uint16_t *h = tt_xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(x[i]);
    be_dequant(TT_DTYPE_BF16, h, n, out, BE_REAL);
    ok = 1;
    for (size_t i = 0; i < n; i++) ok &= out[i] == (tt_real)bf16_to_f32(h[i]);
    CHECK_MSG(ok, "dequant bf16 differs from bf16_to_f32");

    /* nf4 / nf4-dq: exactly core/base/nf4.c's nf4_dequantize_tensor */
    for (int dq = 0; dq < 2; dq++) {
        uint8_t *blob = fixture_nf4_blob(x, n, dq);
        float *ref = tt_xmalloc(n * sizeof *ref);
        nf4_dequantize_tensor(blob, n, dq, ref);
        be_dequant(dq ? TT_DTYPE_NF4DQ : TT_DTYPE_NF4, blob, n, out, BE_REAL);
        ok = 1;
        for (size_t i = 0; i < n; i++) ok &= out[i] == (tt_real)ref[i];
        CHECK_MSG(ok, "dequant %s differs from nf4_dequantize_tensor", dq ? "nf4-dq" : "nf4");
        /* a short tensor (one partial block) too */
        nf4_quantize_tensor(x, 5, dq, blob);
        nf4_dequantize_tensor(blob, 5, dq, ref);
        be_dequant(dq ? TT_DTYPE_NF4DQ : TT_DTYPE_NF4, blob, 5, out, BE_REAL);
        ok = 1;
        for (size_t i = 0; i < 5; i++) ok &= out[i] == (tt_real)ref[i];
        CHECK_MSG(ok, "dequant %s of 5 values differs", dq ? "nf4-dq" : "nf4");
        free(blob), free(ref);
    }
    free(x), free(h), free(out);
}

int main(void) {
    rng_seed(&g_rng, 20240611, rng_hash_str("test_grad_ops"));
    test_gemm_ref();
    test_linear();
    test_rmsnorm();
    test_rope();
    test_attention();
    test_swiglu();
    test_xent(37); /* one chunk */
    test_xent(5);  /* 8 chunks, the last partial */
    test_adamw();
    test_dequant();
    TEST_END();
}
