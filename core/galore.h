/* core/galore.h — the GaLore optimizer step for one 2-D weight (Zhao et al.,
 * 2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
 * Projection"): Adam's moments live in a rank-r projection of the gradient,
 * so a (m, n) weight keeps 2 r max(m, n) moment values instead of 2 m n.
 *
 * For W (m, n) row-major (a projection (out, in) as the store holds it) and
 * its gradient G (m, n), with r = min(rank, m, n):
 *   side LEFT  (m <= n): P (m, r) = top-r left singular vectors of G,
 *                        R = P^T G (r, n),  update D = P N (m, n);
 *   side RIGHT (m >  n): Q (n, r) = top-r right singular vectors of G,
 *                        R = G Q (m, r),    update D = N Q^T (m, n);
 * (the projector sits on the short side, so it is the smaller matrix and the
 * moments take r * max(m, n) values). Adam on R, moments of R's shape (float):
 *   M = b1 M + (1-b1) R;  V = b2 V + (1-b2) R^2;
 *   N = (M / (1-b1^t)) / (sqrt(V / (1-b2^t)) + eps)
 * then, as PyTorch's AdamW (decay first, as be_adamw does):
 *   W -= lr * wd * W;  W -= lr * scale * D.
 * The projector is recomputed from the current gradient at steps 1, T+1,
 * 2T+1, ... (T = update_every); the moments are kept across a refresh (as
 * the reference implementation, galore_torch, does). Bias correction uses
 * the global step t.
 *
 * Everything on the device goes through the be_* ops, so it runs on every
 * backend: the projections and the update are gemms, the element-wise Adam is
 * be_adamw. The projector's SVD is a randomized range finder (Halko,
 * Martinsson & Tropp 2011) whose large products G X and G^T X are device
 * gemms and whose small dense algebra (Householder QR, the eigen-decomposition
 * of B B^T by cyclic Jacobi) runs on the host in double; deterministic from
 * the seed, the matrix's stream id and the step.
 *
 * Memory: the per-matrix state (tt_galore) holds the projector and the two
 * moments (galore_state_bytes); the scratch of a step and of a refresh is
 * one workspace shared by every matrix (tt_galore_ws, galore_ws_bytes). */
#ifndef TT_GALORE_H
#define TT_GALORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/alloc.h"
#include "kernels/backend.h"

/* The randomized SVD's oversampling (columns beyond r) and power iterations. */
#define GALORE_OVERSAMPLE 8
#define GALORE_POWER_ITERS 2

typedef struct tt_galore_cfg {
    int rank;          /* r = min(rank, m, n); >= 1 */
    int update_every;  /* T: refresh the projector at steps 1, T+1, 2T+1, ...; 0: only when there is none yet
                        * (at the first step, or never after galore_set_projector: a fixed projector) */
    float scale;       /* the update's scale (GaLore's alpha; 0.25 in the paper) */
    uint64_t seed;     /* the range finder's random matrix: rng_seed(seed, stream + (step << 32)) */
} tt_galore_cfg;

enum { GALORE_LEFT = 0, GALORE_RIGHT = 1 };

/* One matrix's state. Read the fields, change them only through the
 * functions below. */
typedef struct tt_galore {
    tt_galore_cfg cfg;
    int m, n;          /* the weight's shape */
    int r;             /* min(cfg.rank, m, n) */
    int side;          /* GALORE_LEFT (m <= n) or GALORE_RIGHT */
    int prows;         /* the projector's rows: m (LEFT) or n (RIGHT); it is (prows, r) */
    size_t nmom;       /* values in each moment: r * n (LEFT, (r, n)) or m * r (RIGHT, (m, r)) */
    uint64_t stream;   /* this matrix's random stream (e.g. its tensor index) */
    tt_real *proj;     /* device (prows, r): P or Q, orthonormal columns */
    float *mom_m, *mom_v; /* device, nmom each: Adam's moments of R */
    int has_proj;      /* 0 until the first refresh or galore_set_projector */
    int refresh_step;  /* the step of the last refresh (0: none, or set by galore_set_projector) */
    int owned_by_arena;
} tt_galore;

/* Scratch shared by every matrix stepped with it: sized for the largest. */
typedef struct tt_galore_ws {
    int max_m, max_n, k;  /* the shapes it serves; k: the range finder's columns (bound) */
    size_t dev_elems;     /* tt_real values in each of d0, d1 */
    tt_real *d0, *d1;     /* device: R and N in a step; the range finder's X and G X in a refresh */
    double *host;         /* host: the range finder's blocks, one allocation (galore.c, rsvd_carve) */
    int *ord;             /* host: k indices */
    tt_real *stage;       /* host: dev_elems values, the copies to and from the device */
    int owned_by_arena;
} tt_galore_ws;

/* Device bytes of one matrix's state: the projector (tt_real) and two float
 * moments — what the planner counts as optimizer memory (AdamW: 8 m n). */
size_t galore_state_bytes(int m, int n, const tt_galore_cfg *c);

/* Lays out and allocates the state of a (m, n) weight: device buffers from
 * dev (an arena: they are never freed one by one; when dev->measuring, only
 * their sizes are asked for and nothing is touched) or from be_alloc when
 * dev is NULL; zeroed moments, no projector yet. stream: the matrix's random
 * stream (distinct per matrix). Returns 0, -EINVAL (a bad shape or cfg, with
 * a message naming the option) or -ENOMEM. */
int galore_init(tt_galore *s, int m, int n, const tt_galore_cfg *c, uint64_t stream, const tt_alloc *dev);
void galore_free(tt_galore *s);
/* Points s's state at other buffers of its layout — the projector (prows, r)
 * and the two moments (nmom each) — which the caller owns and keeps (a
 * streamed run holds the state in host memory and moves it to the device for
 * each step). galore_free then leaves them alone. */
void galore_bind(tt_galore *s, tt_real *proj, float *mom_m, float *mom_v);

/* The workspace for matrices up to (max_m, max_n) (each dimension bounded
 * separately): device bytes (from dev as above, or be_alloc) and host bytes
 * (malloc'ed). */
size_t galore_ws_bytes(int max_m, int max_n, const tt_galore_cfg *c, size_t *host_bytes);
int galore_ws_init(tt_galore_ws *w, int max_m, int max_n, const tt_galore_cfg *c, const tt_alloc *dev);
void galore_ws_free(tt_galore_ws *w);

/* One optimizer step of W (device, (m, n), tt_real) given G (device, (m, n)):
 * refreshes the projector when the schedule says so (G is read, not
 * changed), then the projected AdamW above. step >= 1 is the global step
 * (bias correction and schedule). w must serve (m, n). Runs on the compute
 * queue like any op; a refresh copies to and from the host (synchronous). */
void galore_step(tt_galore *s, tt_galore_ws *w, tt_real *W, const tt_real *G, float lr, float b1, float b2, float eps,
                 float wd, int step);

/* Recomputes the projector from G now (what galore_step does on schedule);
 * refresh_step is set to step. */
void galore_refresh(tt_galore *s, tt_galore_ws *w, const tt_real *G, int step);

/* Checkpoints and tests. The projector is (prows, r) host tt_real values, the
 * moments nmom host floats each, in the layouts above. set_projector with
 * P == NULL sets the first r columns of the identity. With update_every 0 a
 * projector set here is never replaced (a fixed projector). get_moments
 * skips a NULL M or V. */
void galore_get_projector(const tt_galore *s, tt_real *P);
void galore_set_projector(tt_galore *s, const tt_real *P);
void galore_get_moments(const tt_galore *s, float *M, float *V);
void galore_set_moments(tt_galore *s, const float *M, const float *V);

/* The range finder on a host matrix in double (the reference the device path
 * follows, and what tests check): the top-r singular triplets of A (m, n),
 * row-major, r <= min(m, n): U (m, r) and V (n, r) with orthonormal columns,
 * s (r) descending; any output may be NULL. Random matrix from
 * rng_seed(seed, stream). Returns 0 or -ENOMEM. */
int galore_rsvd(const double *A, int m, int n, int r, uint64_t seed, uint64_t stream, double *U, double *s, double *V);

#endif
