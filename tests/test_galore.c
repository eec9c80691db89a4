/* tests/test_galore.c — the GaLore optimizer step (core/galore.c):
 *   1. three projected AdamW steps with a fixed random orthonormal projector
 *      against the same computed directly in double, both sides and odd
 *      shapes (f32 build: 1e-5 of the update; -DTT_F64: 1e-12);
 *   2. rank min(m, n) with the identity projector is AdamW itself (be_adamw,
 *      within a few ulps);
 *   3. the randomized SVD: a known spectrum's top-r singular vectors
 *      (subspace within 1e-8) and values (1e-10 relative) on the host in
 *      double, orthonormal outputs (1e-12), and the device path's projector
 *      against the host reference;
 *   4. the refresh schedule (update_every 2: new projectors at steps 1, 3, 5
 *      and not at 2, 4), with the moments kept across refreshes (the W after
 *      five steps recomputed in double from the projectors seen);
 *   5. memory: the state of a 4096 x 11008 weight at rank 1024 against AdamW's;
 * bad configurations refused; 1, 3 and 4 again on the asynchronous CPU backend. */
#include "core/base/common.h"
#include "core/base/rng.h"
#include "core/galore.h"
#include "tests/test.h"

#include <errno.h>
#include <float.h>
#include <string.h>

#ifdef TT_F64
#define REAL_EPS DBL_EPSILON
#define TOL_STEP 1e-12   /* test 1 and 4, relative to the update's size */
#define TOL_ORTHO 1e-12  /* a projector stored as tt_real */
#define TOL_DEV_SUB 1e-8 /* the device path's subspace */
#define TOL_DEV_VEC 1e-10 /* device vs host projector, entrywise */
#else
#define REAL_EPS FLT_EPSILON
#define TOL_STEP 1e-5
#define TOL_ORTHO 1e-6   /* an orthonormal double matrix rounded to float */
#define TOL_DEV_SUB 1e-5 /* products in f32 */
#define TOL_DEV_VEC 1e-4
#endif

static const float LR = 1e-2f, B1 = 0.9f, B2 = 0.999f, EPS = 1e-8f, WD = 0.1f;

/* ---- helpers ------------------------------------------------------------------ */

static double *normals(size_t n, double std, tt_rng *r) {
    double *x = tt_xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(r);
    return x;
}

static tt_real *to_real(const double *x, size_t n) {
    tt_real *y = tt_xmalloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = (tt_real)x[i];
    return y;
}

static tt_real *dev_from(const tt_real *h, size_t n) {
    tt_real *d = be_alloc(n * sizeof *d);
    TT_ASSERT(d);
    be_to_device(d, h, n * sizeof *d);
    return d;
}

/* A (rows, cols) matrix with orthonormal columns: random normals, modified Gram-Schmidt done twice. */
static double *orthonormal(int rows, int cols, tt_rng *r) {
    TT_ASSERT(cols <= rows);
    double *Q = normals((size_t)rows * cols, 1, r);
    for (int pass = 0; pass < 2; pass++)
        for (int j = 0; j < cols; j++) {
            for (int p = 0; p < j; p++) {
                double d = 0;
                for (int i = 0; i < rows; i++) d += Q[(size_t)i * cols + p] * Q[(size_t)i * cols + j];
                for (int i = 0; i < rows; i++) Q[(size_t)i * cols + j] -= d * Q[(size_t)i * cols + p];
            }
            double nn = 0;
            for (int i = 0; i < rows; i++) nn += Q[(size_t)i * cols + j] * Q[(size_t)i * cols + j];
            for (int i = 0; i < rows; i++) Q[(size_t)i * cols + j] /= sqrt(nn);
        }
    return Q;
}

/* max |X^T X - I| of X (rows, cols), double or tt_real. */
static double ortho_err_d(const double *X, int rows, int cols) {
    double e = 0;
    for (int a = 0; a < cols; a++)
        for (int b = 0; b < cols; b++) {
            double d = 0;
            for (int i = 0; i < rows; i++) d += X[(size_t)i * cols + a] * X[(size_t)i * cols + b];
            e = fmax(e, fabs(d - (a == b)));
        }
    return e;
}
static double ortho_err_r(const tt_real *X, int rows, int cols) {
    double *d = tt_xmalloc((size_t)rows * cols * sizeof *d);
    for (size_t i = 0; i < (size_t)rows * cols; i++) d[i] = X[i];
    double e = ortho_err_d(d, rows, cols);
    free(d);
    return e;
}

/* max |E - P P^T E| over E's entries: how far the columns of E (rows, ce) lie outside span(P (rows, cp)). */
static double outside(const double *P, int cp, const double *E, int ce, int rows) {
    double e = 0, *c = tt_xmalloc((size_t)cp * sizeof *c);
    for (int j = 0; j < ce; j++) {
        for (int a = 0; a < cp; a++) {
            c[a] = 0;
            for (int i = 0; i < rows; i++) c[a] += P[(size_t)i * cp + a] * E[(size_t)i * ce + j];
        }
        for (int i = 0; i < rows; i++) {
            double pe = 0;
            for (int a = 0; a < cp; a++) pe += P[(size_t)i * cp + a] * c[a];
            e = fmax(e, fabs(E[(size_t)i * ce + j] - pe));
        }
    }
    free(c);
    return e;
}

/* A = U diag(s) V^T for U (m, l), V (n, l). */
static double *compose(const double *U, const double *s, const double *V, int m, int n, int l) {
    double *A = tt_xcalloc((size_t)m * n, sizeof *A);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double a = 0;
            for (int c = 0; c < l; c++) a += U[(size_t)i * l + c] * s[c] * V[(size_t)j * l + c];
            A[(size_t)i * n + j] = a;
        }
    return A;
}

static double *transpose(const double *A, int m, int n) {
    double *T = tt_xmalloc((size_t)m * n * sizeof *T);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) T[(size_t)j * m + i] = A[(size_t)i * n + j];
    return T;
}

/* The first c columns of X (rows, cols). */
static double *first_cols(const double *X, int rows, int cols, int c) {
    double *Y = tt_xmalloc((size_t)rows * c * sizeof *Y);
    for (int i = 0; i < rows; i++) memcpy(Y + (size_t)i * c, X + (size_t)i * cols, (size_t)c * sizeof *Y);
    return Y;
}

/* ---- the reference step in double --------------------------------------------- */

/* W (m, n) after nsteps GaLore steps, computed directly in double: step t
 * (1-based) uses projector Ps[t-1] ((m, r) for LEFT, (n, r) for RIGHT) and
 * gradient Gs[t-1]. The moments are stored as float after each update, as
 * the module (be_adamw) keeps them; everything else is double. */
static void ref_steps(int m, int n, int r, int nsteps, double *const *Ps, tt_real *const *Gs, const tt_real *W0,
                      float scale, double *W) {
    const int left = m <= n;
    const size_t nm = (size_t)r * (left ? n : m);
    float *M = tt_xcalloc(nm, sizeof *M), *V = tt_xcalloc(nm, sizeof *V);
    double *R = tt_xmalloc(nm * sizeof *R), *N = tt_xmalloc(nm * sizeof *N);
    for (size_t i = 0; i < (size_t)m * n; i++) W[i] = W0[i];
    for (int t = 1; t <= nsteps; t++) {
        const double *P = Ps[t - 1];
        const tt_real *G = Gs[t - 1];
        if (left) /* R = P^T G (r, n) */
            for (int a = 0; a < r; a++)
                for (int j = 0; j < n; j++) {
                    double acc = 0;
                    for (int i = 0; i < m; i++) acc += P[(size_t)i * r + a] * G[(size_t)i * n + j];
                    R[(size_t)a * n + j] = acc;
                }
        else /* R = G Q (m, r) */
            for (int i = 0; i < m; i++)
                for (int a = 0; a < r; a++) {
                    double acc = 0;
                    for (int j = 0; j < n; j++) acc += G[(size_t)i * n + j] * P[(size_t)j * r + a];
                    R[(size_t)i * r + a] = acc;
                }
        const double bc1 = 1 - pow(B1, t), bc2 = 1 - pow(B2, t);
        for (size_t i = 0; i < nm; i++) {
            M[i] = (float)((double)B1 * M[i] + (1 - (double)B1) * R[i]);
            V[i] = (float)((double)B2 * V[i] + (1 - (double)B2) * R[i] * R[i]);
            N[i] = ((double)M[i] / bc1) / (sqrt((double)V[i] / bc2) + EPS);
        }
        for (size_t i = 0; i < (size_t)m * n; i++) W[i] *= 1 - (double)LR * WD;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double d = 0; /* (P N) LEFT, (N Q^T) RIGHT */
                if (left) for (int a = 0; a < r; a++) d += P[(size_t)i * r + a] * N[(size_t)a * n + j];
                else for (int a = 0; a < r; a++) d += N[(size_t)i * r + a] * P[(size_t)j * r + a];
                W[(size_t)i * n + j] -= (double)LR * scale * d;
            }
    }
    free(M); free(V); free(R); free(N);
}

/* max |got - want| relative to the largest change of W: the error in units of the update. */
static double step_err(const tt_real *got, const double *want, const tt_real *W0, size_t n) {
    double e = 0, upd = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)got[i] - want[i]));
        upd = fmax(upd, fabs(want[i] - (double)W0[i]));
    }
    return e / upd;
}

/* ---- 1. fixed projector against double ---------------------------------------- */

static void test_projected(int m, int n, int rank) {
    tt_galore_cfg c = {rank, 0, 0.25f, 5};
    tt_galore s;
    tt_galore_ws w;
    CHECK(galore_init(&s, m, n, &c, 1, NULL) == 0);
    CHECK(galore_ws_init(&w, m, n, &c, NULL) == 0);
    CHECK_EQ_INT(s.side, m <= n ? GALORE_LEFT : GALORE_RIGHT);
    const int r = s.r;
    const size_t mn = (size_t)m * n;
    tt_rng rng;
    rng_seed(&rng, 100 + (uint64_t)m, (uint64_t)n);
    double *Pd = orthonormal(s.prows, r, &rng);
    tt_real *P = to_real(Pd, (size_t)s.prows * r);
    for (size_t i = 0; i < (size_t)s.prows * r; i++) Pd[i] = P[i]; /* the reference uses what the module holds */
    galore_set_projector(&s, P);
    double *w0d = normals(mn, 0.02, &rng);
    tt_real *W0 = to_real(w0d, mn), *Wd = dev_from(W0, mn), *Gd = be_alloc(mn * sizeof(tt_real));
    tt_real *Gs[3];
    double *Ps[3] = {Pd, Pd, Pd};
    for (int t = 1; t <= 3; t++) {
        double *g = normals(mn, 0.01, &rng);
        Gs[t - 1] = to_real(g, mn);
        free(g);
        be_to_device(Gd, Gs[t - 1], mn * sizeof(tt_real));
        galore_step(&s, &w, Wd, Gd, LR, B1, B2, EPS, WD, t);
    }
    tt_real *got = tt_xmalloc(mn * sizeof *got), *P_after = tt_xmalloc((size_t)s.prows * r * sizeof *P_after);
    be_to_host(got, Wd, mn * sizeof *got);
    galore_get_projector(&s, P_after);
    CHECK_MSG(memcmp(P, P_after, (size_t)s.prows * r * sizeof *P) == 0, "update_every 0 kept the projector fixed");
    double *want = tt_xmalloc(mn * sizeof *want);
    ref_steps(m, n, r, 3, Ps, Gs, W0, c.scale, want);
    double e = step_err(got, want, W0, mn);
    printf("projected adam %3d x %3d rank %2d (%s): max error %.2e of the update\n", m, n, r,
           m <= n ? "left" : "right", e);
    CHECK_MSG(e <= TOL_STEP, "%d x %d rank %d: %.3g", m, n, r, e);
    for (int t = 0; t < 3; t++) free(Gs[t]);
    free(Pd); free(P); free(P_after); free(w0d); free(W0); free(got); free(want);
    be_free(Wd); be_free(Gd);
    galore_free(&s);
    galore_ws_free(&w);
}

/* ---- 2. identity projector == AdamW --------------------------------------------- */

static void test_identity(int m, int n) {
    tt_galore_cfg c = {m < n ? m : n, 0, 1.f, 5};
    tt_galore s;
    tt_galore_ws w;
    CHECK(galore_init(&s, m, n, &c, 2, NULL) == 0);
    CHECK(galore_ws_init(&w, m, n, &c, NULL) == 0);
    galore_set_projector(&s, NULL);
    const size_t mn = (size_t)m * n;
    tt_rng rng;
    rng_seed(&rng, 7, (uint64_t)m * 1000 + n);
    double *w0d = normals(mn, 0.02, &rng);
    tt_real *W0 = to_real(w0d, mn), *Wg = dev_from(W0, mn), *Wa = dev_from(W0, mn),
            *Gd = be_alloc(mn * sizeof(tt_real));
    float *Ma = be_alloc(mn * sizeof(float)), *Va = be_alloc(mn * sizeof(float));
    for (int t = 1; t <= 3; t++) {
        double *g = normals(mn, 0.01, &rng);
        tt_real *G = to_real(g, mn);
        be_to_device(Gd, G, mn * sizeof *G);
        galore_step(&s, &w, Wg, Gd, LR, B1, B2, EPS, WD, t);
        be_adamw(mn, Wa, Gd, Ma, Va, LR, B1, B2, EPS, WD, t);
        free(g); free(G);
    }
    tt_real *a = tt_xmalloc(mn * sizeof *a), *b = tt_xmalloc(mn * sizeof *b);
    be_to_host(a, Wg, mn * sizeof *a);
    be_to_host(b, Wa, mn * sizeof *b);
    /* a few roundings apart: W (1 - lr wd), lr N and their sum each round once where be_adamw rounds once;
     * counted in ulps of max(|W|, lr) (an update is at most ~lr per step): at most 2 a step, 6 in 3 */
    double ulps = 0;
    for (size_t i = 0; i < mn; i++) ulps = fmax(ulps, fabs((double)a[i] - b[i]) / (REAL_EPS * fmax(fabs(b[i]), LR)));
    printf("identity %2d x %2d: max %.2f ulps from be_adamw\n", m, n, ulps);
    CHECK_MSG(ulps <= 6, "%d x %d: %.3g ulps", m, n, ulps);
    free(w0d); free(W0); free(a); free(b);
    be_free(Wg); be_free(Wa); be_free(Gd); be_free(Ma); be_free(Va);
    galore_free(&s);
    galore_ws_free(&w);
}

/* ---- 3. the randomized SVD ------------------------------------------------------ */

/* A (m, n) = U0 diag(s0) V0^T with l singular values s0; its top r recovered by galore_rsvd. */
static void test_rsvd_spectrum(int m, int n, int l, int r, const double *s0, const char *what) {
    tt_rng rng;
    rng_seed(&rng, 11, (uint64_t)m * 7 + (uint64_t)n + (uint64_t)l);
    double *U0 = orthonormal(m, l, &rng), *V0 = orthonormal(n, l, &rng);
    double *A = compose(U0, s0, V0, m, n, l);
    double *U = tt_xmalloc((size_t)m * r * sizeof *U), *V = tt_xmalloc((size_t)n * r * sizeof *V),
           *s = tt_xmalloc((size_t)r * sizeof *s);
    CHECK(galore_rsvd(A, m, n, r, 3, 0, U, s, V) == 0);
    double *Ur = first_cols(U0, m, l, r), *Vr = first_cols(V0, n, l, r);
    double eu = outside(U, r, Ur, r, m), ev = outside(V, r, Vr, r, n), es = 0;
    for (int i = 0; i < r; i++) es = fmax(es, fabs(s[i] - s0[i]) / s0[i]);
    double ou = ortho_err_d(U, m, r), ov = ortho_err_d(V, n, r);
    printf("rsvd %-22s %2d x %2d r %2d: subspace U %.1e V %.1e, singular values %.1e rel, U^T U - I %.1e, "
           "V^T V - I %.1e\n", what, m, n, r, eu, ev, es, ou, ov);
    CHECK_MSG(eu < 1e-8 && ev < 1e-8, "%s: subspace %.3g %.3g", what, eu, ev);
    CHECK_MSG(es < 1e-10, "%s: singular values %.3g", what, es);
    CHECK_MSG(ou < 1e-12 && ov < 1e-12, "%s: orthonormality %.3g %.3g", what, ou, ov);
    free(U0); free(V0); free(A); free(U); free(V); free(s); free(Ur); free(Vr);
}

/* A random matrix (flat spectrum, nothing to find): the outputs are still orthonormal. */
static void test_rsvd_random(int m, int n, int r) {
    tt_rng rng;
    rng_seed(&rng, 12, (uint64_t)m * 7 + (uint64_t)n);
    double *A = normals((size_t)m * n, 1, &rng);
    double *U = tt_xmalloc((size_t)m * r * sizeof *U), *V = tt_xmalloc((size_t)n * r * sizeof *V),
           *s = tt_xmalloc((size_t)r * sizeof *s);
    CHECK(galore_rsvd(A, m, n, r, 3, 0, U, s, V) == 0);
    double ou = ortho_err_d(U, m, r), ov = ortho_err_d(V, n, r);
    int sorted = 1;
    for (int i = 1; i < r; i++) sorted &= s[i] <= s[i - 1];
    printf("rsvd random %2d x %2d r %2d: U^T U - I %.1e, V^T V - I %.1e\n", m, n, r, ou, ov);
    CHECK(ou < 1e-12 && ov < 1e-12);
    CHECK_MSG(sorted, "singular values descending");
    free(A); free(U); free(V); free(s);
}

/* The device path (galore_refresh) on a gradient with a known spectrum: its
 * projector spans the top-r singular vectors of the projector's side and
 * equals the host reference run on the same operator (same seed and stream);
 * on a random gradient it is orthonormal. */
static void test_device_projector(int m, int n, int r) {
    const int l = r + 4, mn = m * n;
    double *s0 = tt_xmalloc((size_t)l * sizeof *s0);
    for (int i = 0; i < l; i++) s0[i] = pow(0.8, i);
    tt_rng rng;
    rng_seed(&rng, 13, (uint64_t)m * 7 + (uint64_t)n);
    double *U0 = orthonormal(m, l, &rng), *V0 = orthonormal(n, l, &rng);
    double *A = compose(U0, s0, V0, m, n, l);
    tt_real *Ar = to_real(A, (size_t)mn), *Gd = dev_from(Ar, (size_t)mn);
    tt_galore_cfg c = {r, 1, 0.25f, 21};
    tt_galore s;
    tt_galore_ws w;
    CHECK(galore_init(&s, m, n, &c, 9, NULL) == 0);
    CHECK(galore_ws_init(&w, m, n, &c, NULL) == 0);
    galore_refresh(&s, &w, Gd, 1);
    const int rows = s.prows;
    tt_real *P = tt_xmalloc((size_t)rows * r * sizeof *P);
    galore_get_projector(&s, P);
    double *Pd = tt_xmalloc((size_t)rows * r * sizeof *Pd);
    for (int i = 0; i < rows * r; i++) Pd[i] = P[i];
    /* the side's singular vectors: U0 (LEFT) or V0 (RIGHT) */
    double *E = first_cols(s.side == GALORE_LEFT ? U0 : V0, rows, l, r);
    double sub = outside(Pd, r, E, r, rows), orth = ortho_err_r(P, rows, r);
    /* the host reference on the operator the device path factors: A (LEFT) or A^T (RIGHT), as stored (tt_real) */
    double *Aop = tt_xmalloc((size_t)mn * sizeof *Aop);
    for (int i = 0; i < mn; i++) Aop[i] = Ar[i];
    if (s.side == GALORE_RIGHT) {
        double *t = transpose(Aop, m, n);
        free(Aop);
        Aop = t;
    }
    double *Uh = tt_xmalloc((size_t)rows * r * sizeof *Uh), vec = 0;
    CHECK(galore_rsvd(Aop, rows, s.side == GALORE_LEFT ? n : m, r, c.seed, s.stream + (1ull << 32), Uh, NULL, NULL) == 0);
    for (int i = 0; i < rows * r; i++) vec = fmax(vec, fabs(Pd[i] - Uh[i]));
    printf("device projector %2d x %2d r %2d (%s): subspace %.1e, P^T P - I %.1e, vs host reference %.1e\n", m, n, r,
           s.side == GALORE_LEFT ? "left" : "right", sub, orth, vec);
    CHECK_MSG(sub < TOL_DEV_SUB, "subspace %.3g", sub);
    CHECK_MSG(orth < TOL_ORTHO, "orthonormality %.3g", orth);
    CHECK_MSG(vec < TOL_DEV_VEC, "device vs host %.3g", vec);
    /* a random gradient (a real gradient has no structure to speak of) */
    double *g = normals((size_t)mn, 0.01, &rng);
    tt_real *gr = to_real(g, (size_t)mn);
    be_to_device(Gd, gr, (size_t)mn * sizeof *gr);
    galore_refresh(&s, &w, Gd, 2);
    galore_get_projector(&s, P);
    orth = ortho_err_r(P, rows, r);
    printf("device projector of a random gradient: P^T P - I %.1e\n", orth);
    CHECK_MSG(orth < TOL_ORTHO, "orthonormality %.3g", orth);
    free(s0); free(U0); free(V0); free(A); free(Ar); free(P); free(Pd); free(E); free(Aop); free(Uh); free(g);
    free(gr);
    be_free(Gd);
    galore_free(&s);
    galore_ws_free(&w);
}

/* ---- 4. the refresh schedule, moments kept ----------------------------------------- */

static void test_schedule(int m, int n, int rank) {
    tt_galore_cfg c = {rank, 2, 0.25f, 17};
    tt_galore s, s2;
    tt_galore_ws w;
    CHECK(galore_init(&s, m, n, &c, 4, NULL) == 0);
    CHECK(galore_init(&s2, m, n, &c, 4, NULL) == 0);
    CHECK(galore_ws_init(&w, m, n, &c, NULL) == 0);
    const int r = s.r, rows = s.prows, steps = 5;
    const size_t mn = (size_t)m * n, np = (size_t)rows * r;
    tt_rng rng;
    rng_seed(&rng, 23, (uint64_t)m * 7 + (uint64_t)n);
    double *w0d = normals(mn, 0.02, &rng);
    tt_real *W0 = to_real(w0d, mn), *Wd = dev_from(W0, mn), *W2 = dev_from(W0, mn),
            *Gd = be_alloc(mn * sizeof(tt_real));
    tt_real *Gs[5], *prev = tt_xcalloc(np, sizeof *prev), *cur = tt_xmalloc(np * sizeof *cur);
    double *Ps[5];
    static const int want_refresh[5] = {1, 1, 3, 3, 5};
    int same_run = 1;
    for (int t = 1; t <= steps; t++) {
        double *g = normals(mn, 0.01, &rng);
        Gs[t - 1] = to_real(g, mn);
        free(g);
        be_to_device(Gd, Gs[t - 1], mn * sizeof(tt_real));
        galore_step(&s, &w, Wd, Gd, LR, B1, B2, EPS, WD, t);
        galore_step(&s2, &w, W2, Gd, LR, B1, B2, EPS, WD, t); /* a second run: the same projectors */
        galore_get_projector(&s, cur);
        int changed = memcmp(cur, prev, np * sizeof *cur) != 0;
        CHECK_MSG(changed == (t % 2 == 1), "step %d: projector %s", t, changed ? "changed" : "kept");
        CHECK_EQ_INT(s.refresh_step, want_refresh[t - 1]);
        CHECK_MSG(ortho_err_r(cur, rows, r) < TOL_ORTHO, "step %d: orthonormal projector", t);
        tt_real *p2 = tt_xmalloc(np * sizeof *p2);
        galore_get_projector(&s2, p2);
        same_run &= memcmp(cur, p2, np * sizeof *p2) == 0;
        free(p2);
        Ps[t - 1] = tt_xmalloc(np * sizeof(double));
        for (size_t i = 0; i < np; i++) Ps[t - 1][i] = cur[i];
        memcpy(prev, cur, np * sizeof *cur);
    }
    CHECK_MSG(same_run, "two runs with the same seed and stream compute the same projectors");
    tt_real *got = tt_xmalloc(mn * sizeof *got);
    be_to_host(got, Wd, mn * sizeof *got);
    double *want = tt_xmalloc(mn * sizeof *want);
    ref_steps(m, n, r, steps, Ps, Gs, W0, c.scale, want);
    double e = step_err(got, want, W0, mn);
    printf("schedule %2d x %2d rank %d every 2: refreshes at 1 3 5, W after 5 steps (moments kept) %.2e of the "
           "update\n", m, n, r, e);
    CHECK_MSG(e <= TOL_STEP, "%.3g", e);
    for (int t = 0; t < steps; t++) { free(Gs[t]); free(Ps[t]); }
    free(prev); free(cur); free(w0d); free(W0); free(got); free(want);
    be_free(Wd); be_free(W2); be_free(Gd);
    galore_free(&s);
    galore_free(&s2);
    galore_ws_free(&w);
}

/* ---- 5. memory and configuration ----------------------------------------------------- */

static void *measure(void *ctx, size_t bytes, const char *label) {
    (void)label;
    *(size_t *)ctx += bytes;
    return (void *)(uintptr_t)4096;
}

static void test_memory(void) {
    tt_galore_cfg c = {1024, 200, 0.25f, 1};
    const double adamw = 2.0 * 4096 * 11008 * 4;
    for (int flip = 0; flip < 2; flip++) {
        int m = flip ? 11008 : 4096, n = flip ? 4096 : 11008;
        size_t b = galore_state_bytes(m, n, &c);
        printf("memory %5d x %5d rank 1024: GaLore %.1f MiB, AdamW %.1f MiB, ratio %.3f\n", m, n, b / 1048576.0,
               adamw / 1048576.0, b / adamw);
        CHECK(b <= 0.35 * adamw);
        /* what galore_init asks an arena for is what galore_state_bytes says */
        size_t asked = 0;
        tt_alloc meas = {measure, &asked, 1};
        tt_galore s;
        CHECK(galore_init(&s, m, n, &c, 0, &meas) == 0);
        CHECK_EQ_INT(asked, b);
        galore_free(&s);
    }
    size_t host = 0, dev = galore_ws_bytes(11008, 11008, &c, &host), asked = 0;
    tt_alloc meas = {measure, &asked, 1};
    tt_galore_ws w;
    CHECK(galore_ws_init(&w, 11008, 11008, &c, &meas) == 0);
    CHECK_EQ_INT(asked, dev);
    galore_ws_free(&w);
    printf("workspace for LLaMA-2-7B's projections at rank 1024: %.1f MiB device, %.1f MiB host\n", dev / 1048576.0,
           host / 1048576.0);
    /* small rank: r = min(rank, m, n) */
    c.rank = 4000;
    tt_galore s;
    CHECK(galore_init(&s, 30, 50, &c, 0, NULL) == 0);
    CHECK_EQ_INT(s.r, 30);
    galore_free(&s);
}

static void test_bad_cfg(void) {
    tt_galore s;
    tt_galore_cfg c = {0, 1, 0.25f, 1};
    CHECK_EQ_INT(galore_init(&s, 8, 8, &c, 0, NULL), -EINVAL);
    CHECK(strstr(tt_lasterr(), "--galore-rank") != NULL);
    c.rank = 4;
    c.update_every = -1;
    CHECK_EQ_INT(galore_init(&s, 8, 8, &c, 0, NULL), -EINVAL);
    c.update_every = 1;
    c.scale = 0;
    CHECK_EQ_INT(galore_init(&s, 8, 8, &c, 0, NULL), -EINVAL);
    c.scale = NAN;
    CHECK_EQ_INT(galore_init(&s, 8, 8, &c, 0, NULL), -EINVAL);
    c.scale = 1;
    CHECK_EQ_INT(galore_init(&s, 0, 8, &c, 0, NULL), -EINVAL);
}

int main(void) {
    be_use(backend_cpu());
    /* 1 */
    test_projected(24, 40, 8);
    test_projected(40, 24, 8);
    test_projected(32, 32, 7);
    test_projected(37, 100, 5);
    test_projected(100, 37, 5);
    test_projected(9, 13, 9);
    /* 2 */
    test_identity(20, 30);
    test_identity(30, 20);
    test_identity(16, 16);
    /* 3 */
    double s_low[14], s_gap[60];
    for (int i = 0; i < 14; i++) s_low[i] = pow(0.8, i);
    test_rsvd_spectrum(60, 90, 14, 10, s_low, "rank 14 (exact)");
    test_rsvd_spectrum(90, 60, 14, 10, s_low, "rank 14 (exact)");
    for (int i = 0; i < 60; i++) s_gap[i] = i < 10 ? pow(10, -i / 10.0) : 1e-3 * pow(0.9, i - 10);
    test_rsvd_spectrum(90, 60, 60, 10, s_gap, "full rank, gap 1e-2");
    test_rsvd_spectrum(60, 90, 60, 10, s_gap, "full rank, gap 1e-2");
    test_rsvd_random(40, 70, 12);
    test_rsvd_random(70, 40, 40); /* r = min(m, n): k = r, no oversampling room */
    test_device_projector(48, 80, 8);
    test_device_projector(80, 48, 8);
    /* 4 */
    test_schedule(24, 40, 4);
    test_schedule(40, 24, 4);
    /* 5 */
    test_memory();
    test_bad_cfg();
    /* the same on the asynchronous CPU backend (worker-thread queue, random delays): a refresh's copies and the
     * step's ops stay in order */
    be_use(backend_cpu_async());
    cpu_async_configure(31, 200);
    printf("-- cpu-async --\n");
    test_projected(37, 100, 5);
    test_device_projector(80, 48, 8);
    test_schedule(40, 24, 4);
    be_use(backend_cpu());
    TEST_END();
}
