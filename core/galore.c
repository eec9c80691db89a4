/* core/galore.c — see galore.h.
 *
 * The step (side LEFT; RIGHT is the mirror image with G Q and N Q^T):
 *   R = P^T G                     be_gemm, into the workspace's d0 (r, n)
 *   N = Adam(R)                   be_adamw on a zeroed "parameter" d1 with
 *                                 lr = -1, wd = 0: its formula
 *                                   p = p (1 - lr wd) - lr mhat / (sqrt(vhat) + eps)
 *                                 gives p = 0 * 1 + mhat / (sqrt(vhat) + eps) = +N,
 *                                 with mhat, vhat bias-corrected as in AdamW, and
 *                                 updates the moments M, V in place (float)
 *   W *= 1 - lr wd                be_scale (decoupled decay, first, as be_adamw)
 *   W += -lr scale P N            be_gemm with beta 1
 * so every device operation is a be_* op and runs on every backend.
 *
 * The projector: the range finder of Halko, Martinsson & Tropp (2011,
 * algorithms 4.4 and 5.1) for the top-r left singular vectors of an operator
 * A (rows, cols) — G for LEFT, G^T for RIGHT (whose left vectors are G's
 * right ones) — with k = min(r + GALORE_OVERSAMPLE, rows, cols) columns:
 *   Omega (cols, k) standard normal;  Q = qr(A Omega)
 *   GALORE_POWER_ITERS times:  Q = qr(A qr(A^T Q))   (re-orthonormalised)
 *   B^T = A^T Q (cols, k);  B B^T = W diag(lambda) W^T  (cyclic Jacobi)
 *   U = Q W[:, top r],  s = sqrt(lambda),  V = B^T W / s
 * The products with A are the only O(rows cols k) work: on the device path
 * they are be_gemm calls (the blocks travel as tt_real), everything else is
 * host double: qr is LAPACK's Householder (dgeqrf, Q formed by dorgqr: an
 * orthonormal Q even when A Omega is rank deficient, as a gradient of few
 * tokens is), B B^T and the products with W BLAS's (OpenBLAS, on every
 * core), the k x k eigenproblem cyclic Jacobi. Squaring
 * B loses nothing that matters here: the top eigenvalues come out with
 * relative error ~ 1e-16 * lambda_1 / lambda_i. */
#include "core/galore.h"

#include "core/base/common.h"
#include "core/base/rng.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK, in OpenBLAS (Fortran: column-major, every argument by reference) */
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork,
             int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
             const int *lwork, int *info);

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* ---- host dense algebra (double, row-major) --------------------------------- */

/* Q (rows, k) with orthonormal columns spanning (at least) the columns of Y
 * (rows, k), rows >= k, both row-major: Householder reflections (dgeqrf) on
 * Y's column-major copy, Q formed from them (dorgqr). Y is overwritten.
 * tmp: k doubles (the reflectors' scales). */
static void qr_q(double *Y, int rows, int k, double *Q, double *tmp) {
    for (int i = 0; i < rows; i++) /* Q = Y, column-major */
        for (int j = 0; j < k; j++) Q[(size_t)j * rows + i] = Y[(size_t)i * k + j];
    int info = 0, lwork = -1;
    double best = 0;
    dgeqrf_(&rows, &k, Q, &rows, tmp, &best, &lwork, &info);
    TT_ASSERT(info == 0);
    lwork = (int)best > k ? (int)best : k;
    double *work = tt_xmalloc((size_t)lwork * sizeof *work);
    dgeqrf_(&rows, &k, Q, &rows, tmp, work, &lwork, &info);
    TT_ASSERT(info == 0);
    int lq = -1;
    dorgqr_(&rows, &k, &k, Q, &rows, tmp, &best, &lq, &info);
    TT_ASSERT(info == 0);
    if ((int)best > lwork) {
        free(work);
        lwork = (int)best;
        work = tt_xmalloc((size_t)lwork * sizeof *work);
    }
    dorgqr_(&rows, &k, &k, Q, &rows, tmp, work, &lwork, &info);
    TT_ASSERT(info == 0);
    free(work);
    for (int i = 0; i < rows; i++) /* back to row-major, through Y */
        for (int j = 0; j < k; j++) Y[(size_t)i * k + j] = Q[(size_t)j * rows + i];
    memcpy(Q, Y, (size_t)rows * k * sizeof *Q);
}

/* Eigen-decomposition of the symmetric C (k, k) by cyclic Jacobi rotations
 * (Golub & Van Loan, algorithm 8.5.3): C is destroyed; d (k) receives the
 * eigenvalues, the rows of Wt (k, k) the eigenvectors (Wt[i] for d[i]).
 * Sweeps until the off-diagonal mass is below 1e-15 of the diagonal's
 * (Frobenius), at most 60 sweeps (about 10 for k = 264). */
static void jacobi_eig(double *C, int k, double *Wt, double *d) {
    memset(Wt, 0, (size_t)k * k * sizeof *Wt);
    for (int i = 0; i < k; i++) Wt[(size_t)i * k + i] = 1;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (int p = 0; p < k; p++) {
            diag += C[(size_t)p * k + p] * C[(size_t)p * k + p];
            for (int q = p + 1; q < k; q++) off += C[(size_t)p * k + q] * C[(size_t)p * k + q];
        }
        if (!(off > 1e-30 * diag)) break; /* also when C holds a NaN: nothing to converge to */
        for (int p = 0; p < k - 1; p++)
            for (int q = p + 1; q < k; q++) {
                const double apq = C[(size_t)p * k + q];
                if (apq == 0) continue;
                const double theta = (C[(size_t)q * k + q] - C[(size_t)p * k + p]) / (2 * apq);
                /* t = tan of the rotation angle, the smaller root; 1 / (2 theta) where theta^2 would overflow */
                const double t = fabs(theta) > 1e150 ? 1 / (2 * theta)
                                                     : (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                const double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int i = 0; i < k; i++) { /* C J: columns p, q */
                    double *row = C + (size_t)i * k;
                    const double a = row[p], b = row[q];
                    row[p] = c * a - s * b;
                    row[q] = s * a + c * b;
                }
                double *rp = C + (size_t)p * k, *rq = C + (size_t)q * k, *wp = Wt + (size_t)p * k,
                       *wq = Wt + (size_t)q * k;
                for (int i = 0; i < k; i++) { /* J^T (C J): rows p, q; W J: Wt's rows p, q */
                    const double a = rp[i], b = rq[i], e = wp[i], f = wq[i];
                    rp[i] = c * a - s * b;
                    rq[i] = s * a + c * b;
                    wp[i] = c * e - s * f;
                    wq[i] = s * e + c * f;
                }
            }
    }
    for (int i = 0; i < k; i++) d[i] = C[(size_t)i * k + i];
}

/* The operator A (rows, cols) of the range finder:
 *   trans 0: y (rows, k) = A x for x (cols, k);  trans 1: y (cols, k) = A^T x for x (rows, k). */
typedef void (*rsvd_mul_fn)(void *ctx, int trans, int k, const double *x, double *y);

/* Host blocks of the range finder: x, y, q hold max(rows, cols) * k doubles
 * each, c and wt k * k, v max(rows, cols) + 2 k, ord k. */
typedef struct rsvd_buf {
    double *x, *y, *q, *c, *wt, *v;
    int *ord;
} rsvd_buf;

/* The top-r left singular vectors of A (see the file's head) into b->y
 * (rows, r), returned; s (r) and V (cols, r) too when not NULL. */
static double *rsvd_run(int rows, int cols, int r, int k, tt_rng *rng, rsvd_mul_fn mul, void *ctx,
                        const rsvd_buf *b, double *s, double *V) {
    TT_ASSERT(r >= 1 && r <= k && k <= rows && k <= cols);
    for (size_t i = 0; i < (size_t)cols * k; i++) b->x[i] = rng_normal(rng);
    mul(ctx, 0, k, b->x, b->y);                   /* Y = A Omega (rows, k) */
    qr_q(b->y, rows, k, b->q, b->v);              /* Q (rows, k) */
    for (int it = 0; it < GALORE_POWER_ITERS; it++) {
        mul(ctx, 1, k, b->q, b->x);               /* A^T Q (cols, k) */
        qr_q(b->x, cols, k, b->y, b->v);
        mul(ctx, 0, k, b->y, b->x);               /* A qr(A^T Q) (rows, k) */
        qr_q(b->x, rows, k, b->q, b->v);
    }
    mul(ctx, 1, k, b->q, b->x);                   /* B^T = A^T Q (cols, k) */
    double *C = b->c, *d = b->v;                  /* B B^T = (B^T)^T B^T, upper triangle, then mirrored */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, k, cols, 1.0, b->x, k, 0.0, C, k);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < i; j++) C[(size_t)i * k + j] = C[(size_t)j * k + i];
    jacobi_eig(C, k, b->wt, d);
    int *ord = b->ord; /* eigenvalues in descending order (insertion sort: k is small) */
    for (int i = 0; i < k; i++) {
        int j = i;
        for (; j > 0 && d[ord[j - 1]] < d[i]; j--) ord[j] = ord[j - 1];
        ord[j] = i;
    }
    double *U = b->y, *P = b->c; /* P (k, r): the top r eigenvectors as columns (C is spent) */
    for (int j = 0; j < k; j++)
        for (int c = 0; c < r; c++) P[(size_t)j * r + c] = b->wt[(size_t)ord[c] * k + j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, r, k, 1.0, b->q, k, P, r, 0.0, U, r); /* Q W */
    if (s)
        for (int c = 0; c < r; c++) s[c] = sqrt(fmax(d[ord[c]], 0));
    if (V) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cols, r, k, 1.0, b->x, k, P, r, 0.0, V, r); /* B^T W */
        for (int c = 0; c < r; c++) {
            const double sc = sqrt(fmax(d[ord[c]], 0));
            for (int l = 0; l < cols; l++) V[(size_t)l * r + c] = sc > 0 ? V[(size_t)l * r + c] / sc : 0;
        }
    }
    return U;
}

/* The range finder's blocks for an operator of at most D rows or columns and k columns, carved from one array. */
static size_t rsvd_doubles(int D, int k) { return 3 * (size_t)D * k + 2 * (size_t)k * k + (size_t)D + 2 * (size_t)k; }
static rsvd_buf rsvd_carve(double *base, int D, int k, int *ord) {
    rsvd_buf b;
    size_t blk = (size_t)D * k;
    b.x = base;
    b.y = b.x + blk;
    b.q = b.y + blk;
    b.c = b.q + blk;
    b.wt = b.c + (size_t)k * k;
    b.v = b.wt + (size_t)k * k;
    b.ord = ord;
    return b;
}

/* ---- the host reference ------------------------------------------------------- */

typedef struct host_op {
    const double *A;
    int m, n;
} host_op;

static void host_mul(void *ctx, int trans, int k, const double *x, double *y) {
    const host_op *h = ctx;
    if (!trans) {
        for (int i = 0; i < h->m; i++) {
            double *yi = y + (size_t)i * k;
            for (int c = 0; c < k; c++) yi[c] = 0;
            for (int l = 0; l < h->n; l++) {
                const double a = h->A[(size_t)i * h->n + l], *xl = x + (size_t)l * k;
                for (int c = 0; c < k; c++) yi[c] += a * xl[c];
            }
        }
    } else {
        memset(y, 0, (size_t)h->n * k * sizeof *y);
        for (int i = 0; i < h->m; i++) {
            const double *xi = x + (size_t)i * k;
            for (int l = 0; l < h->n; l++) {
                const double a = h->A[(size_t)i * h->n + l];
                double *yl = y + (size_t)l * k;
                for (int c = 0; c < k; c++) yl[c] += a * xi[c];
            }
        }
    }
}

int galore_rsvd(const double *A, int m, int n, int r, uint64_t seed, uint64_t stream, double *U, double *s, double *V) {
    TT_ASSERT(A && m >= 1 && n >= 1 && r >= 1 && r <= imin(m, n));
    const int k = imin(r + GALORE_OVERSAMPLE, imin(m, n)), D = imax(m, n);
    double *base = malloc(rsvd_doubles(D, k) * sizeof *base);
    int *ord = malloc((size_t)k * sizeof *ord);
    if (!base || !ord) {
        free(base);
        free(ord);
        return TT_FAIL(-ENOMEM, "out of memory for the randomized SVD of a %d x %d matrix", m, n);
    }
    rsvd_buf b = rsvd_carve(base, D, k, ord);
    host_op h = {A, m, n};
    tt_rng rng;
    rng_seed(&rng, seed, stream);
    const double *u = rsvd_run(m, n, r, k, &rng, host_mul, &h, &b, s, V);
    if (U) memcpy(U, u, (size_t)m * r * sizeof *U);
    free(base);
    free(ord);
    return 0;
}

/* ---- state -------------------------------------------------------------------- */

static int cfg_check(int m, int n, const tt_galore_cfg *c) {
    if (m < 1 || n < 1) return TT_FAIL(-EINVAL, "GaLore needs a 2-D weight, not %d x %d", m, n);
    if (c->rank < 1) return TT_FAIL(-EINVAL, "--galore-rank must be at least 1 (got %d)", c->rank);
    if (c->update_every < 0)
        return TT_FAIL(-EINVAL, "--galore-update-every must be 0 (never) or a number of steps (got %d)", c->update_every);
    if (!(c->scale > 0) || !isfinite(c->scale))
        return TT_FAIL(-EINVAL, "--galore-scale must be a positive number (got %g)", (double)c->scale);
    return 0;
}

/* The layout of a (m, n) state: r, side, projector rows, moment values. */
static void layout(int m, int n, const tt_galore_cfg *c, int *r, int *side, int *prows, size_t *nmom) {
    *r = imin(c->rank, imin(m, n));
    *side = m <= n ? GALORE_LEFT : GALORE_RIGHT;
    *prows = *side == GALORE_LEFT ? m : n;
    *nmom = (size_t)*r * (size_t)(*side == GALORE_LEFT ? n : m);
}

size_t galore_state_bytes(int m, int n, const tt_galore_cfg *c) {
    int r, side, prows;
    size_t nmom;
    layout(m, n, c, &r, &side, &prows, &nmom);
    return (size_t)prows * r * sizeof(tt_real) + 2 * nmom * sizeof(float);
}

static void *dev_get(const tt_alloc *dev, size_t bytes, const char *label) {
    return dev ? dev->fn(dev->ctx, bytes, label) : be_alloc(bytes);
}

/* n floats of device memory set to 0 (an arena's memory may hold anything), a block at a time. */
static void zero_floats(float *p, size_t n) {
    enum { BLK = 16384 };
    float *z = tt_xcalloc(BLK, sizeof *z);
    for (size_t at = 0; at < n; at += BLK) be_to_device(p + at, z, (n - at < BLK ? n - at : BLK) * sizeof *z);
    free(z);
}

int galore_init(tt_galore *s, int m, int n, const tt_galore_cfg *c, uint64_t stream, const tt_alloc *dev) {
    memset(s, 0, sizeof *s);
    int rc = cfg_check(m, n, c);
    if (rc) return rc;
    s->cfg = *c;
    s->m = m;
    s->n = n;
    s->stream = stream;
    layout(m, n, c, &s->r, &s->side, &s->prows, &s->nmom);
    s->proj = dev_get(dev, (size_t)s->prows * s->r * sizeof(tt_real), "GaLore projectors");
    s->mom_m = dev_get(dev, s->nmom * sizeof(float), "GaLore moments");
    s->mom_v = dev_get(dev, s->nmom * sizeof(float), "GaLore moments");
    s->owned_by_arena = dev != NULL;
    if (!s->proj || !s->mom_m || !s->mom_v) {
        galore_free(s);
        return TT_FAIL(-ENOMEM, "out of device memory for the GaLore state of a %d x %d weight (rank %d)", m, n, s->r);
    }
    if (dev && dev->measuring) return 0;
    if (dev) { /* be_alloc's memory is zeroed already */
        zero_floats(s->mom_m, s->nmom);
        zero_floats(s->mom_v, s->nmom);
    }
    return 0;
}

void galore_free(tt_galore *s) {
    if (!s->owned_by_arena) {
        be_free(s->proj);
        be_free(s->mom_m);
        be_free(s->mom_v);
    }
    s->proj = NULL;
    s->mom_m = s->mom_v = NULL;
    s->has_proj = 0;
}

void galore_bind(tt_galore *s, tt_real *proj, float *mom_m, float *mom_v) {
    TT_ASSERT(proj && mom_m && mom_v);
    s->proj = proj;
    s->mom_m = mom_m;
    s->mom_v = mom_v;
    s->owned_by_arena = 1;
}

/* ---- workspace ---------------------------------------------------------------- */

/* The workspace's dimensions: D = the largest side, k = the range finder's columns at most. */
static void ws_dims(int max_m, int max_n, const tt_galore_cfg *c, int *D, int *k) {
    *D = imax(max_m, max_n);
    *k = imin(c->rank + GALORE_OVERSAMPLE, imin(max_m, max_n));
}

size_t galore_ws_bytes(int max_m, int max_n, const tt_galore_cfg *c, size_t *host_bytes) {
    int D, k;
    ws_dims(max_m, max_n, c, &D, &k);
    const size_t elems = (size_t)D * k;
    if (host_bytes)
        *host_bytes = rsvd_doubles(D, k) * sizeof(double) + (size_t)k * sizeof(int) + elems * sizeof(tt_real);
    return 2 * elems * sizeof(tt_real);
}

int galore_ws_init(tt_galore_ws *w, int max_m, int max_n, const tt_galore_cfg *c, const tt_alloc *dev) {
    memset(w, 0, sizeof *w);
    int rc = cfg_check(max_m, max_n, c);
    if (rc) return rc;
    int D, k;
    ws_dims(max_m, max_n, c, &D, &k);
    w->max_m = max_m;
    w->max_n = max_n;
    w->k = k;
    w->dev_elems = (size_t)D * k;
    w->d0 = dev_get(dev, w->dev_elems * sizeof(tt_real), "GaLore workspace");
    w->d1 = dev_get(dev, w->dev_elems * sizeof(tt_real), "GaLore workspace");
    w->owned_by_arena = dev != NULL;
    if (!w->d0 || !w->d1) {
        galore_ws_free(w);
        return TT_FAIL(-ENOMEM, "out of device memory for the GaLore workspace (%d x %d weights, rank %d)", max_m,
                       max_n, c->rank);
    }
    if (dev && dev->measuring) return 0;
    w->host = malloc(rsvd_doubles(D, k) * sizeof(double));
    w->ord = malloc((size_t)k * sizeof *w->ord);
    w->stage = malloc(w->dev_elems * sizeof *w->stage);
    if (!w->host || !w->ord || !w->stage) {
        galore_ws_free(w);
        return TT_FAIL(-ENOMEM, "out of host memory for the GaLore workspace (%d x %d weights, rank %d)", max_m, max_n,
                       c->rank);
    }
    return 0;
}

void galore_ws_free(tt_galore_ws *w) {
    if (!w->owned_by_arena) {
        be_free(w->d0);
        be_free(w->d1);
    }
    free(w->host);
    free(w->ord);
    free(w->stage);
    memset(w, 0, sizeof *w);
}

/* ---- the device path ---------------------------------------------------------- */

/* The operator G (m, n) on the device, or G^T when flip (the RIGHT side):
 * each block goes to the device as tt_real, through one gemm, and back. */
typedef struct dev_op {
    const tt_real *G;
    int m, n, flip;
    tt_galore_ws *w;
} dev_op;

static void dev_mul(void *ctx, int trans, int k, const double *x, double *y) {
    const dev_op *o = ctx;
    tt_galore_ws *w = o->w;
    const int t = trans ^ o->flip; /* 0: y (m, k) = G x; 1: y (n, k) = G^T x */
    const size_t xn = (size_t)(t ? o->m : o->n) * k, yn = (size_t)(t ? o->n : o->m) * k;
    TT_ASSERT(xn <= w->dev_elems && yn <= w->dev_elems);
    for (size_t i = 0; i < xn; i++) w->stage[i] = (tt_real)x[i];
    be_to_device(w->d0, w->stage, xn * sizeof(tt_real));
    if (!t) be_gemm(0, 0, o->m, k, o->n, 1, o->G, o->n, w->d0, k, 0, w->d1, k);
    else be_gemm(1, 0, o->n, k, o->m, 1, o->G, o->n, w->d0, k, 0, w->d1, k);
    be_to_host(w->stage, w->d1, yn * sizeof(tt_real));
    for (size_t i = 0; i < yn; i++) y[i] = w->stage[i];
}

/* w serves s: its blocks hold the range finder's and the step's. */
static void check_ws(const tt_galore *s, const tt_galore_ws *w) {
    TT_ASSERT(w->d0 && w->host && s->m <= w->max_m && s->n <= w->max_n && s->r <= w->k);
}

void galore_refresh(tt_galore *s, tt_galore_ws *w, const tt_real *G, int step) {
    TT_ASSERT(s->proj && G && step >= 1);
    check_ws(s, w);
    const int rows = s->prows, cols = s->side == GALORE_LEFT ? s->n : s->m;
    const int k = imin(s->r + GALORE_OVERSAMPLE, imin(s->m, s->n));
    rsvd_buf b = rsvd_carve(w->host, imax(w->max_m, w->max_n), w->k, w->ord);
    dev_op o = {G, s->m, s->n, s->side == GALORE_RIGHT, w};
    tt_rng rng;
    rng_seed(&rng, s->cfg.seed, s->stream + ((uint64_t)step << 32));
    const double *U = rsvd_run(rows, cols, s->r, k, &rng, dev_mul, &o, &b, NULL, NULL);
    const size_t np = (size_t)rows * s->r;
    for (size_t i = 0; i < np; i++) w->stage[i] = (tt_real)U[i];
    be_to_device(s->proj, w->stage, np * sizeof(tt_real));
    s->has_proj = 1;
    s->refresh_step = step;
}

void galore_step(tt_galore *s, tt_galore_ws *w, tt_real *W, const tt_real *G, float lr, float b1, float b2, float eps,
                 float wd, int step) {
    TT_ASSERT(s->proj && W && G && step >= 1);
    check_ws(s, w);
    const int T = s->cfg.update_every, m = s->m, n = s->n, r = s->r;
    if (!s->has_proj || (T > 0 && (step - 1) % T == 0 && s->refresh_step != step)) galore_refresh(s, w, G, step);
    tt_real *R = w->d0, *N = w->d1; /* (r, n) LEFT, (m, r) RIGHT */
    if (s->side == GALORE_LEFT) be_gemm(1, 0, r, n, m, 1, s->proj, r, G, n, 0, R, n); /* R = P^T G */
    else be_gemm(0, 0, m, r, n, 1, G, n, s->proj, r, 0, R, r);                         /* R = G Q */
    be_fill(N, s->nmom, 0);
    be_adamw(s->nmom, N, R, s->mom_m, s->mom_v, -1.f, b1, b2, eps, 0.f, step); /* N = +Adam direction (file head) */
    if (wd != 0) be_scale((size_t)m * n, (tt_real)(1 - (double)lr * wd), W);
    const tt_real alpha = (tt_real)(-(double)lr * s->cfg.scale);
    if (s->side == GALORE_LEFT) be_gemm(0, 0, m, n, r, alpha, s->proj, r, N, n, 1, W, n); /* W += alpha P N */
    else be_gemm(0, 1, m, n, r, alpha, N, r, s->proj, r, 1, W, n);                       /* W += alpha N Q^T */
}

/* ---- checkpoints and tests ---------------------------------------------------- */

void galore_get_projector(const tt_galore *s, tt_real *P) {
    be_to_host(P, s->proj, (size_t)s->prows * s->r * sizeof *P);
}

void galore_set_projector(tt_galore *s, const tt_real *P) {
    const size_t np = (size_t)s->prows * s->r;
    if (P) {
        be_to_device(s->proj, P, np * sizeof *P);
    } else {
        tt_real *eye = tt_xcalloc(np, sizeof *eye);
        for (int i = 0; i < s->r; i++) eye[(size_t)i * s->r + i] = 1;
        be_to_device(s->proj, eye, np * sizeof *eye);
        free(eye);
    }
    s->has_proj = 1;
    s->refresh_step = 0;
}

void galore_get_moments(const tt_galore *s, float *M, float *V) {
    if (M) be_to_host(M, s->mom_m, s->nmom * sizeof *M);
    if (V) be_to_host(V, s->mom_v, s->nmom * sizeof *V);
}

void galore_set_moments(tt_galore *s, const float *M, const float *V) {
    be_to_device(s->mom_m, M, s->nmom * sizeof *M);
    be_to_device(s->mom_v, V, s->nmom * sizeof *V);
}
