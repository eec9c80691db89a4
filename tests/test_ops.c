/* tests/test_ops.c — the CPU backend in its normal float build: each op
 * against a naive double-precision reference written here, with a float
 * tolerance per op (the comment beside each says why it is that size). The
 * gradient formulas themselves are proven against finite differences in
 * double by tests/test_grad_ops.c; this program makes sure the float build
 * computes the same things, and covers memory, the vector helpers, adamw and
 * dequant in float. It also prints the time of one attention forward and
 * backward at B=4 seq=256 nh=8 nkv=4 hd=32 (information, not a check).
 */
#include "kernels/backend.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/base/common.h"
#include "core/base/dtype.h"
#include "core/base/nf4.h"
#include "core/base/rng.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#ifdef TT_F64
#error "test_ops.c tests the float build; tests/test_grad_ops.c is the double one"
#endif

static tt_rng g_rng;

/* ---- helpers ---------------------------------------------------------------- */

static float *randf(size_t n, double sd) {
    float *p = tt_xmalloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)(sd * rng_normal(&g_rng));
    return p;
}

static float *zerof(size_t n) { return tt_xcalloc(n ? n : 1, sizeof(float)); }
static double *zerod(size_t n) { return tt_xcalloc(n ? n : 1, sizeof(double)); }

/* max|a - b| / max(max|b|, 1e-30): b is the double reference */
static double relerr(const float *a, const double *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return d / fmax(m, 1e-30);
}

#define CHECK_REL(name, err, tol)                                                                              \
    do {                                                                                                       \
        double e_ = (err);                                                                                     \
        printf("%-24s rel err %.3g (tol %.g)\n", name, e_, (double)(tol));                                    \
        CHECK_MSG(e_ < (tol), "%s: relative error %.3g against the double reference", name, e_);             \
    } while (0)

/* ---- memory and vector helpers ------------------------------------------------ */

static void test_memory(void) {
    const tt_backend *b = backend_cpu();
    CHECK(be_current() == b && strcmp(b->name, "cpu") == 0);
    const size_t n = 1000;
    float *d = be_alloc(n * sizeof *d), *e = be_alloc(n * sizeof *e);
    TT_ASSERT(d && e);
    CHECK(((uintptr_t)d & 63) == 0 && ((uintptr_t)e & 63) == 0);
    int zero = 1;
    for (size_t i = 0; i < n; i++) zero &= d[i] == 0;
    CHECK_MSG(zero, "alloc must return zeroed memory");
    float *h = randf(n, 1), *back = zerof(n);
    be_to_device(d, h, n * sizeof *h);
    be_copy(e, d, n * sizeof *d);
    be_to_host(back, e, n * sizeof *e);
    CHECK(memcmp(back, h, n * sizeof *h) == 0);

    /* exact in float: one rounding each, compared with the same float expression */
    be_fill(d, n, 0.25f);
    CHECK(d[0] == 0.25f && d[n - 1] == 0.25f);
    be_axpy(n, -2.0f, h, d, BE_REAL); /* d = 0.25 - 2 h */
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= d[i] == 0.25f + -2.0f * h[i];
    CHECK_MSG(ok, "axpy");
    be_scale(n, 0.5f, d);
    ok = 1;
    for (size_t i = 0; i < n; i++) ok &= d[i] == (0.25f + -2.0f * h[i]) * 0.5f;
    CHECK_MSG(ok, "scale");
    for (size_t i = 0; i < n; i++) e[i] = (float)(i % 3 != 0);
    be_mask_scale(n, h, e, 1.25f, back, BE_REAL);
    ok = 1;
    for (size_t i = 0; i < n; i++) ok &= back[i] == (i % 3 ? h[i] * 1.25f : 0.0f);
    CHECK_MSG(ok, "mask_scale");
    /* sumsq accumulates in double: products of floats are exact in double,
     * so the only differences are the order of 1000 double additions */
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)h[i] * h[i];
    double acc = 1.5; /* accumulates: the CPU backend's device memory is host memory */
    be_sumsq(n, h, &acc);
    CHECK_NEAR(acc - 1.5, ref, 1e-12 * ref);
    be_free(d), be_free(e), free(h), free(back);
}

/* ---- gemm ------------------------------------------------------------------------ */

static void test_gemm(void) {
    const int M = 13, N = 9, K = 37, pad = 2;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            float *A = randf((size_t)(ta ? K : M) * lda, 1), *B = randf((size_t)(tb ? N : K) * ldb, 1);
            float *C = randf((size_t)M * ldc, 1);
            double *ref = zerod((size_t)M * ldc);
            for (size_t i = 0; i < (size_t)M * ldc; i++) ref[i] = C[i];
            for (int i = 0; i < M; i++) {
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int p = 0; p < K; p++)
                        s += (double)(ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]) *
                             (tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j]);
                    ref[(size_t)i * ldc + j] = 2.0 * s + 0.5 * C[(size_t)i * ldc + j];
                }
            }
            be_gemm(ta, tb, M, N, K, 2.0f, A, lda, B, ldb, 0.5f, C, ldc);
            /* K = 37 float products of N(0,1) values, summed: |error| <~ K eps max|a b|
             * ~ 37 * 6e-8 * 10 against entries ~ sqrt(K) ~ 6: 1e-5 of the largest entry */
            CHECK_REL(ta ? (tb ? "gemm TT" : "gemm TN") : (tb ? "gemm NT" : "gemm NN"), relerr(C, ref, (size_t)M * ldc),
                      1e-5);
            free(A), free(B), free(C), free(ref);
        }
    }
}

/* ---- rmsnorm, rope, swiglu ---------------------------------------------------------- */

static void test_rmsnorm(void) {
    const int T = 7, C = 24;
    const size_t n = (size_t)T * C;
    const float eps = 1e-5f;
    float *x = randf(n, 1), *w = randf((size_t)C, 1), *dy = randf(n, 1), *y = zerof(n), *rstd = zerof((size_t)T);
    float *dx = zerof(n);
    double *yr = zerod(n), *dxr = zerod(n);
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C, *dyt = dy + (size_t)t * C;
        double ms = 0, m2 = 0;
        for (int c = 0; c < C; c++) ms += (double)xt[c] * xt[c] / C;
        const double r = 1 / sqrt(ms + eps);
        for (int c = 0; c < C; c++) m2 += (double)w[c] * dyt[c] * xt[c] / C;
        for (int c = 0; c < C; c++) {
            yr[(size_t)t * C + c] = xt[c] * r * w[c];
            dxr[(size_t)t * C + c] = r * (w[c] * dyt[c] - xt[c] * r * r * m2);
        }
    }
    be_rmsnorm_fwd(T, C, x, w, eps, y, rstd, BE_REAL);
    be_rmsnorm_bwd(T, C, x, w, rstd, dy, dx, 0, BE_REAL);
    /* y: a float rsqrt and two float products, a few ulps: 1e-6 */
    CHECK_REL("rmsnorm fwd", relerr(y, yr, n), 1e-6);
    /* dx: a difference of two terms of size ~|w dy| can cancel, so the error
     * is relative to the largest entry, a few ulps of it: 2e-6 */
    CHECK_REL("rmsnorm bwd", relerr(dx, dxr, n), 2e-6);
    free(x), free(w), free(dy), free(y), free(rstd), free(dx), free(yr), free(dxr);
}

static void test_rope(void) {
    const int seq = 11, T = 3 * seq, nh = 2, hd = 10, half = hd / 2;
    const size_t n = (size_t)T * nh * hd;
    float *cs = zerof((size_t)seq * half), *sn = zerof((size_t)seq * half), *x = randf(n, 1), *y = zerof(n);
    double *ref = zerod(n);
    for (int p = 0; p < seq; p++) {
        for (int i = 0; i < half; i++) {
            const double ang = p * pow(10000.0, -2.0 * i / hd);
            cs[(size_t)p * half + i] = (float)cos(ang), sn[(size_t)p * half + i] = (float)sin(ang);
        }
    }
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < nh; h++) {
            const float *xh = x + ((size_t)t * nh + h) * hd;
            for (int d = 0; d < hd; d++) {
                const double ang = (t % seq) * pow(10000.0, -2.0 * (d % half) / hd);
                const double rot = d < half ? -xh[d + half] : xh[d - half];
                ref[((size_t)t * nh + h) * hd + d] = xh[d] * cos(ang) + rot * sin(ang);
            }
        }
    }
    memcpy(y, x, n * sizeof *y);
    be_rope(T, seq, nh, hd, cs, sn, y, 0, NULL, BE_REAL);
    /* float tables (1 ulp each) and two float products and a sum: 1e-6 */
    CHECK_REL("rope fwd", relerr(y, ref, n), 1e-6);
    be_rope(T, seq, nh, hd, cs, sn, y, 1, NULL, BE_REAL);
    for (size_t i = 0; i < n; i++) ref[i] = x[i];
    /* the round trip: cos^2 + sin^2 = 1 only up to float table rounding */
    CHECK_REL("rope inverse", relerr(y, ref, n), 1e-6);
    free(cs), free(sn), free(x), free(y), free(ref);
}

static void test_swiglu(void) {
    const size_t n = 1001;
    float *g = randf(n, 3), *u = randf(n, 1), *dm = randf(n, 1), *m = zerof(n), *dg = zerof(n), *du = zerof(n);
    double *mr = zerod(n), *dgr = zerod(n), *dur = zerod(n);
    for (size_t i = 0; i < n; i++) {
        const double s = 1 / (1 + exp(-(double)g[i]));
        mr[i] = g[i] * s * u[i];
        dgr[i] = dm[i] * u[i] * s * (1 + g[i] * (1 - s));
        dur[i] = dm[i] * g[i] * s;
    }
    be_swiglu_fwd(n, g, u, m, BE_REAL);
    be_swiglu_bwd(n, g, u, dm, dg, du, BE_REAL);
    /* expf and a handful of float operations per element: a few ulps, 1e-6
     * of the largest entry; dg also has g (1 - sig), where 1 - sig loses
     * accuracy as sig -> 1 (an error of ~|g| ulps, |g| up to ~10 here): 3e-6 */
    CHECK_REL("swiglu fwd", relerr(m, mr, n), 1e-6);
    CHECK_REL("swiglu dg", relerr(dg, dgr, n), 3e-6);
    CHECK_REL("swiglu du", relerr(du, dur, n), 1e-6);
    /* in place, as the workspace runs it: dg over g, du over u — bit for bit the out-of-place result */
    float *g2 = zerof(n), *u2 = zerof(n);
    memcpy(g2, g, n * sizeof *g), memcpy(u2, u, n * sizeof *u);
    be_swiglu_bwd(n, g2, u2, dm, g2, u2, BE_REAL);
    CHECK_MSG(memcmp(g2, dg, n * sizeof *g) == 0 && memcmp(u2, du, n * sizeof *u) == 0, "swiglu_bwd in place differs");
    free(g2), free(u2);
    free(g), free(u), free(dm), free(m), free(dg), free(du), free(mr), free(dgr), free(dur);
}

/* ---- attention ------------------------------------------------------------------------ */

/* naive causal GQA forward and backward in double, straight from the
 * definitions (D_i = sum_j p_ij dp_ij, not rowsum(dO * O) as the kernel) */
static void attn_naive(int B, int seq, int nh, int nkv, int hd, const float *q, const float *k, const float *v,
                       const float *dout, double *out, double *lse, double *dq, double *dk, double *dv) {
    const int qs = nh * hd, ks = nkv * hd;
    const double scale = 1 / sqrt((double)hd);
    double *p = zerod((size_t)seq), *dp = zerod((size_t)seq);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < nh; h++) {
            const int g = h / (nh / nkv);
            for (int i = 0; i < seq; i++) {
                const size_t ti = (size_t)b * seq + i;
                const float *qi = q + ti * qs + h * hd, *doi = dout + ti * qs + h * hd;
                double z = 0, D = 0;
                for (int j = 0; j <= i; j++) {
                    const size_t tj = (size_t)b * seq + j;
                    double s = 0, d = 0;
                    for (int e = 0; e < hd; e++) {
                        s += (double)qi[e] * k[tj * ks + g * hd + e];
                        d += (double)doi[e] * v[tj * ks + g * hd + e];
                    }
                    p[j] = exp(s * scale), dp[j] = d;
                    z += p[j];
                }
                lse[ti * nh + h] = log(z);
                for (int j = 0; j <= i; j++) p[j] /= z, D += p[j] * dp[j];
                for (int j = 0; j <= i; j++) {
                    const size_t tj = (size_t)b * seq + j;
                    const double ds = p[j] * (dp[j] - D);
                    for (int e = 0; e < hd; e++) {
                        out[ti * qs + h * hd + e] += p[j] * v[tj * ks + g * hd + e];
                        dv[tj * ks + g * hd + e] += p[j] * doi[e];
                        dq[ti * qs + h * hd + e] += scale * ds * k[tj * ks + g * hd + e];
                        dk[tj * ks + g * hd + e] += scale * ds * qi[e];
                    }
                }
            }
        }
    }
    free(p), free(dp);
}

static void test_attention(void) {
    const int B = 2, seq = 70, nh = 4, nkv = 2, hd = 16; /* seq 70: blocks of 35 rows */
    const size_t T = (size_t)B * seq, nq = T * nh * hd, nk = T * nkv * hd;
    float *q = randf(nq, 1), *k = randf(nk, 1), *v = randf(nk, 1), *dout = randf(nq, 1);
    float *out = zerof(nq), *lse = zerof(T * nh), *dq = zerof(nq), *dk = zerof(nk), *dv = zerof(nk);
    double *outr = zerod(nq), *lser = zerod(T * nh), *dqr = zerod(nq), *dkr = zerod(nk), *dvr = zerod(nk);
    attn_naive(B, seq, nh, nkv, hd, q, k, v, dout, outr, lser, dqr, dkr, dvr);
    void *sc = tt_xmalloc(be_attn_scratch_bytes(B, seq, nh, nkv, hd, BE_REAL) + 1);
    be_attn_fwd(B, seq, nh, nkv, hd, q, k, v, out, lse, NULL, sc, BE_REAL);
    be_attn_bwd(B, seq, nh, nkv, hd, q, k, v, out, lse, dout, dq, dk, dv, NULL, sc, BE_REAL);
    free(sc);
    /* out and lse: float scores (16-term dots), expf and a 70-term weighted
     * sum — a few ulps relative to the largest entry: 2e-6 */
    CHECK_REL("attn out", relerr(out, outr, nq), 2e-6);
    CHECK_REL("attn lse", relerr(lse, lser, T * nh), 2e-6);
    /* gradients go through dS = P (dP - D), which cancels, and dk/dv sum over
     * up to 70 rows of 2 query heads: 1e-5 of the largest entry */
    CHECK_REL("attn dq", relerr(dq, dqr, nq), 1e-5);
    CHECK_REL("attn dk", relerr(dk, dkr, nk), 1e-5);
    CHECK_REL("attn dv", relerr(dv, dvr, nk), 1e-5);
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(outr), free(lser), free(dqr), free(dkr), free(dvr);
}

/* information only: the time of one forward and one backward at a small
 * training shape (the first call also warms OpenBLAS up) */
static void time_attention(void) {
    const int B = 4, seq = 256, nh = 8, nkv = 4, hd = 32;
    const size_t T = (size_t)B * seq, nq = T * nh * hd, nk = T * nkv * hd;
    float *q = randf(nq, 1), *k = randf(nk, 1), *v = randf(nk, 1), *dout = randf(nq, 1);
    float *out = zerof(nq), *lse = zerof(T * nh), *dq = zerof(nq), *dk = zerof(nk), *dv = zerof(nk);
    double tf = 1e30, tb = 1e30;
    void *sc = tt_xmalloc(be_attn_scratch_bytes(B, seq, nh, nkv, hd, BE_REAL) + 1);
    for (int rep = 0; rep < 3; rep++) {
        double t0 = tt_now();
        be_attn_fwd(B, seq, nh, nkv, hd, q, k, v, out, lse, NULL, sc, BE_REAL);
        double t1 = tt_now();
        be_attn_bwd(B, seq, nh, nkv, hd, q, k, v, out, lse, dout, dq, dk, dv, NULL, sc, BE_REAL);
        double t2 = tt_now();
        tf = fmin(tf, t1 - t0), tb = fmin(tb, t2 - t1);
    }
    printf("attention B=%d seq=%d nh=%d nkv=%d hd=%d: fwd %.2f ms, bwd %.2f ms (best of 3)\n", B, seq, nh, nkv, hd,
           tf * 1e3, tb * 1e3);
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(sc);
}

/* ---- cross-entropy ----------------------------------------------------------------------- */

/* vc: vocabulary columns per chunk (the online log-sum-exp across chunks) */
static void test_xent(int vc) {
    const int R = 9, V = 1003;
    const size_t n = (size_t)R * V;
    float *x = randf(n, 3), *w = zerof((size_t)R);
    int32_t tg[9] = {0, 1002, -1, 500, 7, 7, 999, 12, 3};
    for (int r = 0; r < R; r++) w[r] = r == 4 ? 0.0f : 1.0f; /* row 2: ignored target, row 4: weight 0 */
    for (int j = 0; j < V; j++) x[(size_t)8 * V + j] += 100; /* row 8: expf(100) overflows a float */
    double loss_ref = 0, *dref = zerod(n);
    const float dscale = 1.0f / 7;
    for (int r = 0; r < R; r++) {
        if (tg[r] < 0 || w[r] == 0) continue;
        const float *xr = x + (size_t)r * V;
        double z = 0;
        for (int j = 0; j < V; j++) z += exp((double)xr[j] - xr[tg[r]]);
        loss_ref += log(z);
        for (int j = 0; j < V; j++) dref[(size_t)r * V + j] = (exp((double)xr[j] - xr[tg[r]]) / z - (j == tg[r])) * dscale;
    }
    double loss = 0;
    double *stats = zerod(3 * (size_t)R);
    int32_t *tgd = tt_xmalloc(sizeof tg);
    memcpy(tgd, tg, sizeof tg);
    be_xent(R, V, vc, x, tgd, w, dscale, &loss, stats, BE_REAL);
    free(stats), free(tgd);
    /* per row: the float subtraction x - max rounds by up to half an ulp of
     * ~100 (4e-6 absolute, row 8), the sums are double; the loss is ~7 rows
     * * 8 = 56: 1e-6 relative */
    CHECK_MSG(fabs(loss - loss_ref) <= 1e-6 * loss_ref, "xent loss (chunks of %d) %.9g vs %.9g", vc, loss, loss_ref);
    /* dlogits: expf of arguments off by up to 4e-6 (see above): 2e-5 of the
     * largest entry (which is ~dscale) */
    CHECK_REL("xent dlogits", relerr(x, dref, n), 2e-5);
    free(x), free(w), free(dref);
}

/* ---- distillation ------------------------------------------------------------------------ */

/* The objective f = sum_r w_r [(1 - a) CE_r + a tau^2 KL_r(teacher || student)] of rows s (student)
 * and t (teacher) in double, straight from the definition. */
static double kd_ref(int R, int V, const double *s, const float *t, const int32_t *tg, const float *w, double a,
                     double tau, double *kl_sum) {
    double f = 0, kls = 0;
    for (int r = 0; r < R; r++) {
        if (tg[r] < 0 || w[r] == 0) continue;
        const double *sr = s + (size_t)r * V;
        const float *tr = t + (size_t)r * V;
        double ms = -INFINITY, mu = -INFINITY, mv = -INFINITY, zs = 0, zu = 0, zv = 0;
        for (int j = 0; j < V; j++) {
            ms = fmax(ms, sr[j]);
            mu = fmax(mu, sr[j] / tau);
            mv = fmax(mv, tr[j] / tau);
        }
        for (int j = 0; j < V; j++) {
            zs += exp(sr[j] - ms);
            zu += exp(sr[j] / tau - mu);
            zv += exp(tr[j] / tau - mv);
        }
        double ce = ms + log(zs) - sr[tg[r]], kl = 0;
        for (int j = 0; j < V; j++) {
            double lpt = tr[j] / tau - mv - log(zv), lps = sr[j] / tau - mu - log(zu);
            kl += exp(lpt) * (lpt - lps);
        }
        f += w[r] * ((1 - a) * ce + a * tau * tau * kl);
        kls += w[r] * tau * tau * kl;
    }
    *kl_sum = kls;
    return f;
}

/* kd_stats / kd_loss / kd_grad in chunks of vc columns against kd_ref: the
 * KL sum, and the gradient against kd_ref's finite differences (central, in
 * double) at a few entries and against its closed form everywhere. */
static void test_kd(int vc, double a, double tau) {
    const int R = 7, V = 301;
    const size_t n = (size_t)R * V;
    float *s = randf(n, 3), *t = randf(n, 3), *w = zerof((size_t)R);
    int32_t tg[7] = {0, 300, -1, 150, 7, 7, 99};
    for (int r = 0; r < R; r++) w[r] = r == 4 ? 0.0f : 0.5f + 0.25f * (float)r; /* row 2: no target, row 4: weight 0 */
    for (int j = 0; j < V; j++) t[(size_t)5 * V + j] = s[(size_t)5 * V + j]; /* row 5: the teacher is the student */
    const float dscale = 1.0f / 5;
    double *sd = zerod(n);
    for (size_t i = 0; i < n; i++) sd[i] = s[i];
    double kl_ref;
    kd_ref(R, V, sd, t, tg, w, a, tau, &kl_ref);
    /* the closed form: dscale w [(1 - a)(softmax(s) - onehot) + a tau (softmax(s/tau) - softmax(t/tau))] */
    double *gref = zerod(n);
    for (int r = 0; r < R; r++) {
        if (tg[r] < 0 || w[r] == 0) continue;
        const double *sr = sd + (size_t)r * V;
        const float *tr = t + (size_t)r * V;
        double zs = 0, zu = 0, zv = 0;
        for (int j = 0; j < V; j++) { zs += exp(sr[j]); zu += exp(sr[j] / tau); zv += exp(tr[j] / tau); }
        for (int j = 0; j < V; j++)
            gref[(size_t)r * V + j] = dscale * w[r] *
                ((1 - a) * (exp(sr[j]) / zs - (j == tg[r])) + a * tau * (exp(sr[j] / tau) / zu - exp(tr[j] / tau) / zv));
    }
    /* the closed form is the derivative: central differences of kd_ref at a few entries */
    const size_t probe[] = {0, 17, (size_t)V + 300, (size_t)3 * V + 150, (size_t)5 * V + 3, (size_t)6 * V + 99};
    for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
        size_t i = probe[k];
        double h = 1e-5, keep = sd[i], kp, km, fp, fm;
        sd[i] = keep + h; fp = kd_ref(R, V, sd, t, tg, w, a, tau, &kp);
        sd[i] = keep - h; fm = kd_ref(R, V, sd, t, tg, w, a, tau, &km);
        sd[i] = keep;
        double fd = dscale * (fp - fm) / (2 * h);
        CHECK_MSG(fabs(fd - gref[i]) <= 1e-7 + 1e-5 * fabs(gref[i]), "kd gradient [%zu]: closed form %.9g vs finite "
                  "differences %.9g", i, gref[i], fd);
    }
    double *xst = zerod(3 * (size_t)R), *kst = zerod(5 * (size_t)R), kl = 0;
    int32_t *tgd = tt_xmalloc(sizeof tg);
    memcpy(tgd, tg, sizeof tg);
    for (int v0 = 0; v0 < V; v0 += vc) {
        int m = V - v0 < vc ? V - v0 : vc;
        be_xent_stats(R, m, V, v0, s + v0, tgd, xst, BE_REAL);
        be_kd_stats(R, m, V, v0, s + v0, t + v0, (tt_real)tau, kst, BE_REAL);
    }
    be_kd_loss(R, kst, tgd, w, (tt_real)tau, &kl);
    /* row 5's KL is that of two identical distributions */
    CHECK_MSG(fabs(kst[5 * 5 + 4]) <= 1e-12 * kst[5 * 5 + 3], "kd: a teacher equal to the student gives KL term %g",
              kst[5 * 5 + 4]);
    CHECK_MSG(fabs(kl - kl_ref) <= 1e-5 * fabs(kl_ref) + 1e-9, "kd loss (chunks of %d, tau %g) %.9g vs %.9g", vc, tau, kl,
              kl_ref);
    for (int v0 = 0; v0 < V; v0 += vc) {
        int m = V - v0 < vc ? V - v0 : vc;
        be_kd_grad(R, m, V, v0, s + v0, t + v0, tgd, w, dscale, (tt_real)a, (tt_real)tau, xst, kst, BE_REAL);
    }
    CHECK_REL("kd dlogits", relerr(s, gref, n), 2e-5);
    free(xst), free(kst), free(tgd), free(gref), free(sd), free(s), free(t), free(w);
}

/* ---- adamw and dequant -------------------------------------------------------------------- */

static void test_adamw(void) {
    const size_t n = 257;
    float *p = randf(n, 1), *m = zerof(n), *v = zerof(n);
    double *pr = zerod(n), *mr = zerod(n), *vr = zerod(n);
    for (size_t i = 0; i < n; i++) pr[i] = p[i];
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-6f, wd = 0.1f;
    for (int step = 1; step <= 3; step++) {
        float *g = randf(n, 1);
        be_adamw(n, p, g, m, v, lr, b1, b2, eps, wd, step);
        for (size_t i = 0; i < n; i++) {
            pr[i] *= 1 - (double)lr * wd;
            mr[i] = b1 * mr[i] + (1 - (double)b1) * g[i];
            vr[i] = b2 * vr[i] + (1 - (double)b2) * g[i] * g[i];
            pr[i] -= lr * (mr[i] / (1 - pow(b1, step))) / (sqrt(vr[i] / (1 - pow(b2, step))) + eps);
        }
        free(g);
    }
    /* p ~ 1 is stored as float after each step (6e-8 relative) and the
     * moments are float: 3e-7 of the largest entry */
    CHECK_REL("adamw p", relerr(p, pr, n), 3e-7);
    CHECK_REL("adamw m", relerr(m, mr, n), 3e-7);
    CHECK_REL("adamw v", relerr(v, vr, n), 3e-7);
    free(p), free(m), free(v), free(pr), free(mr), free(vr);
}

static void test_dequant(void) {
    const size_t n = 64 * 260 + 9;
    float *x = randf(n, 1), *out = zerof(n), *ref = zerof(n);
    uint16_t *h = tt_xmalloc(n * sizeof *h);
    be_dequant(TT_DTYPE_F32, x, n, out, BE_REAL);
    CHECK_MSG(memcmp(out, x, n * sizeof *x) == 0, "dequant f32");
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(x[i]);
    be_dequant(TT_DTYPE_BF16, h, n, out, BE_REAL);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= out[i] == bf16_to_f32(h[i]);
    CHECK_MSG(ok, "dequant bf16");
    for (int dq = 0; dq < 2; dq++) {
        uint8_t *blob = fixture_nf4_blob(x, n, dq);
        nf4_dequantize_tensor(blob, n, dq, ref);
        be_dequant(dq ? TT_DTYPE_NF4DQ : TT_DTYPE_NF4, blob, n, out, BE_REAL);
        /* the same float arithmetic as core/base/nf4.c: bit-identical */
        CHECK_MSG(memcmp(out, ref, n * sizeof *out) == 0, "dequant %s", dq ? "nf4-dq" : "nf4");
        free(blob);
    }
    free(x), free(out), free(ref), free(h);
}

/* be_dequant_range == the same slice of the whole tensor, for every dtype, at
 * offsets inside and across double-quant spans (16384 values), up to the end. */
static void test_dequant_range(void) {
    const size_t n = 16384 * 2 + 64 * 7 + 21;
    float *x = randf(n, 1), *whole = zerof(n), *part = zerof(n);
    uint16_t *h = tt_xmalloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(x[i]);
    static const size_t cuts[][2] = {{0, 5}, {64, 1000}, {16384 - 128, 300}, {16384, 16384}, {64 * 300, 8000 + 77},
                                     {n - 21, 21}, {n - 85, 85}, {0, 0}};
    for (int dt = 1; dt <= 4; dt++) {
        uint8_t *blob = dt >= 3 ? fixture_nf4_blob(x, n, dt == 4) : NULL;
        const void *src = dt == 1 ? (const void *)x : dt == 2 ? (const void *)h : blob;
        be_dequant((uint32_t)dt, src, n, whole, BE_REAL);
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            size_t v0 = cuts[c][0], k = cuts[c][1];
            be_fill(part, n, -7);
            be_dequant_range((uint32_t)dt, src, n, v0, k, part, BE_REAL);
            CHECK_MSG(memcmp(part, whole + v0, k * sizeof *part) == 0 && (k == n || part[k] == -7),
                      "dequant_range dtype %d [%zu, +%zu)", dt, v0, k);
        }
        free(blob);
    }
    free(x), free(whole), free(part), free(h);
}

/* linear with a stored weight: a row block of an NF4 (double-quant) matrix,
 * both directions, equals dequantizing the block and multiplying with gemm,
 * bit for bit (the reference composition), and its values are right: the
 * block product against the whole matrix dequantized. */
static void test_linear_w(void) {
    const int out = 320, in = 96, rows = 7, o0 = 128, n = 128; /* o0 * in a multiple of 64 */
    float *W = randf((size_t)out * in, 1), *x = randf((size_t)rows * in, 1), *dy = randf((size_t)rows * out, 1);
    uint8_t *blob = fixture_nf4_blob(W, (size_t)out * in, 1);
    float *Wd = zerof((size_t)out * in), *scratch = zerof((size_t)n * in), *y1 = zerof((size_t)rows * out),
          *y2 = zerof((size_t)rows * out), *d1 = randf((size_t)rows * in, 2), *d2 = zerof((size_t)rows * in);
    memcpy(d2, d1, (size_t)rows * in * sizeof *d1);
    be_dequant(TT_DTYPE_NF4DQ, blob, (size_t)out * in, Wd, BE_REAL);
    be_linear_w(0, rows, in, n, x, in, TT_DTYPE_NF4DQ, blob, out, o0, scratch, 0, y1 + o0, out, BE_REAL);
    be_gemm(0, 1, rows, n, in, 1, x, in, Wd + (size_t)o0 * in, in, 0, y2 + o0, out);
    CHECK_MSG(memcmp(y1, y2, (size_t)rows * out * sizeof *y1) == 0, "linear (x W^T) differs from dequant + gemm");
    be_linear_w(1, rows, in, n, dy + o0, out, TT_DTYPE_NF4DQ, blob, out, o0, scratch, 1, d1, in, BE_REAL);
    be_gemm(0, 0, rows, in, n, 1, dy + o0, out, Wd + (size_t)o0 * in, in, 1, d2, in);
    CHECK_MSG(memcmp(d1, d2, (size_t)rows * in * sizeof *d1) == 0, "linear (dy W, accumulating) differs");
    double err = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) {
            double ref = 0;
            for (int i = 0; i < in; i++) ref += (double)x[r * in + i] * Wd[(size_t)(o0 + j) * in + i];
            err = fmax(err, fabs(ref - y1[(size_t)r * out + o0 + j]));
        }
    CHECK_MSG(err < 1e-4, "linear block product off by %g", err);
    free(W), free(x), free(dy), free(blob), free(Wd), free(scratch), free(y1), free(y2), free(d1), free(d2);
}

/* LoRA dropout's mask, as be_dropout applies it to ones (alpha 1): each row
 * its own stream, so a chunk of rows [t0, t0+r) drawn with stream0 + t0
 * equals those rows of the whole mask; about 1 - p of the values are kept;
 * another seed gives another mask. */
static void dropout_mask(int rows, int cols, uint64_t seed, uint64_t s0, float p, float *mask) {
    float *ones = zerof((size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) ones[i] = 1.f;
    be_dropout(rows, cols, seed, s0, p, 1, ones, mask, 0, BE_REAL);
    free(ones);
}
static void test_dropout(void) {
    const int rows = 64, cols = 300;
    const float p = 0.25f;
    float *all = zerof((size_t)rows * cols), *part = zerof((size_t)rows * cols), *other = zerof((size_t)rows * cols);
    const uint64_t s0 = (uint64_t)3 << 32;
    dropout_mask(rows, cols, 42, s0, p, all);
    dropout_mask(40, cols, 42, s0, p, part);
    dropout_mask(rows - 40, cols, 42, s0 + 40, p, part + (size_t)40 * cols);
    dropout_mask(rows, cols, 43, s0, p, other);
    CHECK_MSG(memcmp(all, part, (size_t)rows * cols * sizeof *all) == 0, "dropout mask depends on the chunking");
    size_t kept = 0, same = 0, binary = 1;
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        kept += all[i] == 1.0f;
        same += all[i] == other[i];
        binary &= all[i] == 0.0f || all[i] == 1.0f;
    }
    double frac = (double)kept / ((double)rows * cols);
    CHECK_MSG(binary, "dropout mask values must be 0 or 1");
    CHECK_MSG(fabs(frac - (1 - p)) < 0.02, "dropout keeps %.3f, expected %.3f", frac, 1 - p);
    CHECK_MSG(same < (size_t)rows * cols * 0.8, "another seed gives nearly the same mask");
    /* a padded row (more columns, as core/model.c's row stride gives it) keeps its real columns' values */
    const int wide = cols + 7;
    float *padded = zerof((size_t)rows * wide);
    dropout_mask(rows, wide, 42, s0, p, padded);
    for (int t = 0; t < rows; t++)
        CHECK_MSG(memcmp(padded + (size_t)t * wide, all + (size_t)t * cols, (size_t)cols * sizeof *all) == 0,
                  "dropout mask row %d changes with the row's padding", t);
    /* rows are independent: row t's columns are not row t+1's shifted (each row its own stream) */
    size_t eq = 0;
    for (int i = 0; i < cols; i++) eq += all[i] == all[(size_t)cols + i];
    CHECK_MSG(eq < (size_t)cols * 0.8, "two rows' masks nearly agree (%zu of %d)", eq, cols);
    /* y = alpha * mask * x, and y + alpha * mask * x with accumulate, in place too */
    const size_t n = (size_t)rows * cols;
    float *x = zerof(n), *y = zerof(n), *y0 = zerof(n), *acc = zerof(n);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(&g_rng), y0[i] = acc[i] = (float)rng_normal(&g_rng);
    be_dropout(rows, cols, 42, s0, p, 1 / (1 - p), x, y, 0, BE_REAL);
    be_dropout(rows, cols, 42, s0, p, 1 / (1 - p), x, acc, 1, BE_REAL);
    size_t bad = 0, bad_acc = 0;
    for (size_t i = 0; i < n; i++) {
        float v = all[i] == 1.f ? x[i] * (1 / (1 - p)) : 0.f;
        bad += y[i] != v;
        bad_acc += acc[i] != y0[i] + v;
    }
    CHECK_MSG(!bad, "dropout: %zu of %zu values are not alpha * mask * x", bad, n);
    CHECK_MSG(!bad_acc, "dropout, accumulating: %zu of %zu values are not y + alpha * mask * x", bad_acc, n);
    be_dropout(rows, cols, 42, s0, p, 1 / (1 - p), x, x, 0, BE_REAL); /* in place: x may be y */
    CHECK_MSG(memcmp(x, y, n * sizeof *x) == 0, "dropout in place differs");
    free(all), free(part), free(other), free(padded), free(x), free(y), free(y0), free(acc);
}

int main(void) {
    rng_seed(&g_rng, 7, rng_hash_str("test_ops"));
    test_dropout();
    test_linear_w();
    test_memory();
    test_dequant_range();
    test_gemm();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_attention();
    test_xent(1003); /* one chunk */
    test_xent(64);   /* 16 chunks, the last partial */
    test_xent(1);
    test_kd(301, 1.0, 1.0);  /* one chunk, distillation alone */
    test_kd(64, 0.5, 2.0);   /* 5 chunks, half and half, softened */
    test_kd(1, 0.25, 0.5);
    test_adamw();
    test_dequant();
    time_attention();
    TEST_END();
}
