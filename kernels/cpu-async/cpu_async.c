/* kernels/cpu-async/cpu_async.c — the CPU reference ops behind real queues:
 * `--device cpu-async` (DESIGN.md, "Asynchrony").
 *
 * Every queue is a worker thread running its tasks in order; ops go to the
 * compute queue, copies to whichever queue they name. Each task first waits
 * a seeded random delay (0 .. max_delay_us with probability 1/4), so work
 * finishes long after it was issued and in ever different interleavings.
 * Events are real: a generation counter per event under a mutex, "reached"
 * by the queue that recorded it. A missing wait therefore shows up as a
 * wrong result (the delays make the race likely) and, under ThreadSanitizer,
 * as a data race between the worker threads (the mutexes are the only
 * happens-before edges between them) — this is how the runtime's event
 * discipline is tested without a GPU.
 *
 * The results are the CPU backend's bit for bit: the same functions on the
 * same data, one compute thread. */
#include "kernels/backend.h"

#include "core/base/common.h"
#include "core/base/rng.h"

#include <pthread.h>
#include <sys/prctl.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARGS_MAX 128 /* bytes of one task's arguments */
#define QCAP 1024    /* tasks a queue holds before the issuer waits (a GPU's launch queue is finite too) */

typedef struct task {
    void (*run)(const void *args);
    alignas(16) unsigned char args[ARGS_MAX];
} task;

struct tt_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* work arrived, room freed, a task finished */
    task ring[QCAP];
    uint64_t head, tail; /* tasks [head, tail) are queued; head advances after a task has run */
    int stop;
    tt_rng rng;          /* the delays */
    uint64_t index;      /* creation order: the delay stream */
    pthread_t th;
    struct tt_queue *next;
};

struct tt_event {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t recorded, reached; /* generations: the latest mark, the latest mark its queue passed */
    double t_reached;           /* tt_now() when the latest reached mark was passed (timer_elapsed) */
};

static const tt_backend *cpu_ref(void) { return backend_cpu(); }

/* ---- queues --------------------------------------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER; /* the queue list and the settings */
static tt_queue *g_queues, *g_compute;
static uint64_t g_seed = 1, g_nqueues;
static int g_max_delay_us = 50;

static void delay(tt_queue *q) {
    uint64_t r = rng_next(&q->rng);
    if ((r & 3) != 0 || g_max_delay_us <= 0) return;
    long us = (long)((r >> 8) % (uint64_t)(g_max_delay_us + 1));
    struct timespec ts = {us / 1000000, us % 1000000 * 1000};
    nanosleep(&ts, NULL);
}

static void *worker(void *arg) {
    tt_queue *q = arg;
    /* the delays are microseconds: without this, Linux's default 50 us timer slack stretches each one (and
     * the tests that run thousands of them) several times over */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->head == q->tail && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
        if (q->head == q->tail) break; /* stopped and drained */
        task t = q->ring[q->head % QCAP];
        pthread_mutex_unlock(&q->mu);
        delay(q); /* the rng is the worker's alone while it runs */
        t.run(t.args);
        pthread_mutex_lock(&q->mu);
        q->head++;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static tt_queue *q_new(void) {
    tt_queue *q = tt_xcalloc(1, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_mutex_lock(&g_mu);
    q->index = g_nqueues++;
    rng_seed(&q->rng, g_seed, q->index);
    q->next = g_queues;
    g_queues = q;
    pthread_mutex_unlock(&g_mu);
    int rc = pthread_create(&q->th, NULL, worker, q);
    TT_ASSERT(rc == 0); /* out of threads: nothing sensible to go on with */
    return q;
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
/* The first use: TT_ASYNC_SEED and TT_ASYNC_DELAY_US may set the delays
 * (the CLI's `--device cpu-async`); tests call cpu_async_configure. */
static void make_compute(void) {
    const char *s = getenv("TT_ASYNC_SEED"), *d = getenv("TT_ASYNC_DELAY_US");
    if (s) g_seed = strtoull(s, NULL, 0);
    if (d) g_max_delay_us = atoi(d);
    g_compute = q_new();
}
static tt_queue *compute(void) {
    pthread_once(&g_once, make_compute); /* also publishes g_compute to every thread */
    return g_compute;
}

static void push(tt_queue *q, void (*run)(const void *), const void *args, size_t n) {
    TT_ASSERT(n <= ARGS_MAX);
    if (!q) q = compute();
    pthread_mutex_lock(&q->mu);
    while (q->tail - q->head >= QCAP) pthread_cond_wait(&q->cv, &q->mu);
    task *t = &q->ring[q->tail % QCAP];
    t->run = run;
    memcpy(t->args, args, n);
    q->tail++;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static void q_drain(tt_queue *q) {
    pthread_mutex_lock(&q->mu);
    while (q->head != q->tail) pthread_cond_wait(&q->cv, &q->mu);
    pthread_mutex_unlock(&q->mu);
}

/* Drains every queue. Holding g_mu is safe: a queued task never needs the
 * host to progress (a wait names a mark already issued on some queue). */
static void ca_synchronize(void) {
    pthread_mutex_lock(&g_mu);
    for (tt_queue *q = g_queues; q; q = q->next) q_drain(q);
    pthread_mutex_unlock(&g_mu);
}

static tt_queue *ca_queue_new(void) { return q_new(); }

static void ca_queue_free(tt_queue *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->th, NULL);
    pthread_mutex_lock(&g_mu);
    for (tt_queue **p = &g_queues; *p; p = &(*p)->next)
        if (*p == q) { *p = q->next; break; }
    pthread_mutex_unlock(&g_mu);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

void cpu_async_configure(uint64_t seed, int max_delay_us) {
    pthread_mutex_lock(&g_mu);
    for (tt_queue *q = g_queues; q; q = q->next) q_drain(q);
    g_seed = seed;
    g_max_delay_us = max_delay_us;
    for (tt_queue *q = g_queues; q; q = q->next) {
        pthread_mutex_lock(&q->mu); /* the worker is idle (drained): its rng is free */
        rng_seed(&q->rng, seed, q->index);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&g_mu);
}

/* ---- events ---------------------------------------------------------------- */

static tt_event *ca_event_new(void) {
    tt_event *ev = tt_xcalloc(1, sizeof *ev);
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->cv, NULL);
    return ev;
}

static void ca_event_free(tt_event *ev) {
    if (!ev) return;
    ca_synchronize(); /* no queued task still names it */
    pthread_mutex_destroy(&ev->mu);
    pthread_cond_destroy(&ev->cv);
    free(ev);
}

typedef struct { tt_event *ev; uint64_t gen; } a_mark;

static void r_reach(const void *p) {
    const a_mark *a = p;
    pthread_mutex_lock(&a->ev->mu);
    if (a->gen > a->ev->reached) {
        a->ev->reached = a->gen;
        a->ev->t_reached = tt_now();
    }
    pthread_cond_broadcast(&a->ev->cv);
    pthread_mutex_unlock(&a->ev->mu);
}

static void wait_gen(tt_event *ev, uint64_t gen) {
    pthread_mutex_lock(&ev->mu);
    while (ev->reached < gen) pthread_cond_wait(&ev->cv, &ev->mu);
    pthread_mutex_unlock(&ev->mu);
}

static void r_block(const void *p) {
    const a_mark *a = p;
    wait_gen(a->ev, a->gen);
}

static uint64_t latest(tt_event *ev) {
    pthread_mutex_lock(&ev->mu);
    uint64_t g = ev->recorded;
    pthread_mutex_unlock(&ev->mu);
    return g;
}

static void ca_event_record(tt_event *ev, tt_queue *q) {
    pthread_mutex_lock(&ev->mu);
    a_mark a = {ev, ++ev->recorded};
    pthread_mutex_unlock(&ev->mu);
    push(q, r_reach, &a, sizeof a);
}

static void ca_queue_wait(tt_queue *q, tt_event *ev) {
    a_mark a = {ev, latest(ev)};
    if (a.gen) push(q, r_block, &a, sizeof a); /* never recorded: complete */
}

static void ca_event_sync(tt_event *ev) { wait_gen(ev, latest(ev)); }

static int ca_event_query(tt_event *ev) {
    pthread_mutex_lock(&ev->mu);
    int done = ev->reached >= ev->recorded;
    pthread_mutex_unlock(&ev->mu);
    return done;
}

/* Every event notes when its mark is reached: a timer is an event. */
static double ca_timer_elapsed(tt_event *a, tt_event *b) {
    pthread_mutex_lock(&a->mu);
    double ta = a->t_reached;
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_lock(&b->mu);
    double tb = b->t_reached;
    pthread_mutex_unlock(&b->mu);
    return tb - ta;
}

/* ---- memory and copies ------------------------------------------------------ */

typedef struct { void *dst; const void *src; size_t n; } a_copy;
static void r_copy(const void *p) {
    const a_copy *a = p;
    if (a->n) memcpy(a->dst, a->src, a->n);
}

static void ca_copy_async(void *dst, const void *src, size_t n, int kind, tt_queue *q) {
    (void)kind;
    a_copy a = {dst, src, n};
    push(q, r_copy, &a, sizeof a);
}

/* The synchronous copies: on the compute queue, after what was issued before; the caller waits. */
static void copy_sync(void *dst, const void *src, size_t n) {
    tt_event ev;
    memset(&ev, 0, sizeof ev);
    pthread_mutex_init(&ev.mu, NULL);
    pthread_cond_init(&ev.cv, NULL);
    ca_copy_async(dst, src, n, BE_D2D, NULL);
    ca_event_record(&ev, NULL);
    ca_event_sync(&ev); /* the worker has let go of ev when this returns (reached is set under its mutex) */
    pthread_mutex_destroy(&ev.mu);
    pthread_cond_destroy(&ev.cv);
}

static void *ca_alloc(size_t bytes) { return cpu_ref()->alloc(bytes); }
static void ca_free(void *p) {
    ca_synchronize(); /* as cudaFree: nothing in flight still uses it */
    cpu_ref()->free(p);
}

/* ---- ops: the arguments packed, the CPU reference run on the compute queue -- */

#define LAUNCH(runner, ...)                                                                                          \
    do {                                                                                                             \
        runner##_args a_ = {__VA_ARGS__};                                                                            \
        push(NULL, runner, &a_, sizeof a_);                                                                          \
    } while (0)

typedef struct { tt_real *x; size_t n; tt_real v; } r_fill_args;
static void r_fill(const void *p) { const r_fill_args *a = p; cpu_ref()->fill(a->x, a->n, a->v); }
static void ca_fill(tt_real *x, size_t n, tt_real v) { LAUNCH(r_fill, x, n, v); }

typedef struct {
    int ta, tb, M, N, K, at, bt, ct;
    tt_real alpha, beta;
    const void *A, *B;
    void *C;
    int lda, ldb, ldc;
} r_gemm_args;
static void r_gemm(const void *p) {
    const r_gemm_args *a = p;
    cpu_ref()->gemm(a->ta, a->tb, a->M, a->N, a->K, a->alpha, a->A, a->at, a->lda, a->B, a->bt, a->ldb, a->beta, a->C,
                    a->ct, a->ldc);
}
static void ca_gemm(int ta, int tb, int M, int N, int K, tt_real alpha, const void *A, int at, int lda, const void *B,
                    int bt, int ldb, tt_real beta, void *C, int ct, int ldc) {
    LAUNCH(r_gemm, ta, tb, M, N, K, at, bt, ct, alpha, beta, A, B, C, lda, ldb, ldc);
}

typedef struct { size_t n; tt_real alpha; const void *x; void *y; int dt; } r_axpy_args;
static void r_axpy(const void *p) { const r_axpy_args *a = p; cpu_ref()->axpy(a->n, a->alpha, a->x, a->y, a->dt); }
static void ca_axpy(size_t n, tt_real alpha, const void *x, void *y, int dt) { LAUNCH(r_axpy, n, alpha, x, y, dt); }

typedef struct { size_t n; tt_real alpha; tt_real *x; } r_scale_args;
static void r_scale(const void *p) { const r_scale_args *a = p; cpu_ref()->scale(a->n, a->alpha, a->x); }
static void ca_scale(size_t n, tt_real alpha, tt_real *x) { LAUNCH(r_scale, n, alpha, x); }

typedef struct { size_t n; const void *x, *mask; tt_real alpha; void *y; int dt; } r_mask_scale_args;
static void r_mask_scale(const void *p) {
    const r_mask_scale_args *a = p;
    cpu_ref()->mask_scale(a->n, a->x, a->mask, a->alpha, a->y, a->dt);
}
static void ca_mask_scale(size_t n, const void *x, const void *mask, tt_real alpha, void *y, int dt) {
    LAUNCH(r_mask_scale, n, x, mask, alpha, y, dt);
}

typedef struct { size_t n; const tt_real *x; double *acc; } r_sumsq_args;
static void r_sumsq(const void *p) { const r_sumsq_args *a = p; cpu_ref()->sumsq(a->n, a->x, a->acc); }
static void ca_sumsq(size_t n, const tt_real *x, double *acc) { LAUNCH(r_sumsq, n, x, acc); }

typedef struct {
    int rows, cols;
    uint64_t seed, stream0;
    float p;
    tt_real alpha;
    const void *x;
    void *y;
    int accumulate, dt;
} r_dropout_args;
static void r_dropout(const void *p) {
    const r_dropout_args *a = p;
    cpu_ref()->dropout(a->rows, a->cols, a->seed, a->stream0, a->p, a->alpha, a->x, a->y, a->accumulate, a->dt);
}
static void ca_dropout(int rows, int cols, uint64_t seed, uint64_t stream0, float p, tt_real alpha, const void *x,
                       void *y, int accumulate, int dt) {
    LAUNCH(r_dropout, rows, cols, seed, stream0, p, alpha, x, y, accumulate, dt);
}

typedef struct { uint32_t dtype; const void *blob; size_t n, v0, count; void *out; int odt; } r_dequant_args;
static void r_dequant(const void *p) {
    const r_dequant_args *a = p;
    cpu_ref()->dequant(a->dtype, a->blob, a->n, a->v0, a->count, a->out, a->odt);
}
static void ca_dequant(uint32_t dtype, const void *blob, size_t n, size_t v0, size_t count, void *out, int odt) {
    LAUNCH(r_dequant, dtype, blob, n, v0, count, out, odt);
}

typedef struct {
    int trans, rows, in, n, ldx, ldy, dt;
    uint32_t dtype;
    const void *x;
    const void *blob;
    size_t out_total, o0;
    void *scratch, *y;
    tt_real beta;
} r_linear_args;
static void r_linear(const void *p) {
    const r_linear_args *a = p;
    cpu_ref()->linear(a->trans, a->rows, a->in, a->n, a->x, a->ldx, a->dtype, a->blob, a->out_total, a->o0, a->scratch,
                      a->beta, a->y, a->ldy, a->dt);
}
static void ca_linear(int trans, int rows, int in, int n, const void *x, int ldx, uint32_t dtype, const void *blob,
                      size_t out_total, size_t o0, void *scratch, tt_real beta, void *y, int ldy, int dt) {
    LAUNCH(r_linear, trans, rows, in, n, ldx, ldy, dt, dtype, x, blob, out_total, o0, scratch, y, beta);
}

typedef struct { int T, C, dt; const void *x; const tt_real *w; tt_real eps; void *y; tt_real *rstd; } r_rms_fwd_args;
static void r_rms_fwd(const void *p) {
    const r_rms_fwd_args *a = p;
    cpu_ref()->rmsnorm_fwd(a->T, a->C, a->x, a->w, a->eps, a->y, a->rstd, a->dt);
}
static void ca_rms_fwd(int T, int C, const void *x, const tt_real *w, tt_real eps, void *y, tt_real *rstd, int dt) {
    LAUNCH(r_rms_fwd, T, C, dt, x, w, eps, y, rstd);
}

typedef struct {
    int T, C, accumulate, dt;
    const void *x, *dy;
    const tt_real *w, *rstd;
    void *dx;
} r_rms_bwd_args;
static void r_rms_bwd(const void *p) {
    const r_rms_bwd_args *a = p;
    cpu_ref()->rmsnorm_bwd(a->T, a->C, a->x, a->w, a->rstd, a->dy, a->dx, a->accumulate, a->dt);
}
static void ca_rms_bwd(int T, int C, const void *x, const tt_real *w, const tt_real *rstd, const void *dy, void *dx,
                       int accumulate, int dt) {
    LAUNCH(r_rms_bwd, T, C, accumulate, dt, x, dy, w, rstd, dx);
}

typedef struct { int T, C, dt; const void *x, *dy; const tt_real *rstd; tt_real *dw; } r_rms_bwd_w_args;
static void r_rms_bwd_w(const void *p) {
    const r_rms_bwd_w_args *a = p;
    cpu_ref()->rmsnorm_bwd_w(a->T, a->C, a->x, a->rstd, a->dy, a->dw, a->dt);
}
static void ca_rms_bwd_w(int T, int C, const void *x, const tt_real *rstd, const void *dy, tt_real *dw, int dt) {
    LAUNCH(r_rms_bwd_w, T, C, dt, x, dy, rstd, dw);
}

typedef struct { int T, seq, nh, hd, inverse, dt; const tt_real *cos_t, *sin_t; void *x; const int32_t *seg; } r_rope_args;
static void r_rope(const void *p) {
    const r_rope_args *a = p;
    cpu_ref()->rope(a->T, a->seq, a->nh, a->hd, a->cos_t, a->sin_t, a->x, a->inverse, a->seg, a->dt);
}
static void ca_rope(int T, int seq, int nh, int hd, const tt_real *cos_t, const tt_real *sin_t, void *x, int inverse,
                    const int32_t *seg, int dt) {
    LAUNCH(r_rope, T, seq, nh, hd, inverse, dt, cos_t, sin_t, x, seg);
}

typedef struct {
    int B, seq, nh, nkv, hd, dt;
    const void *q, *k, *v;
    void *out, *scratch;
    tt_real *lse;
    const int32_t *seg;
} r_attn_fwd_args;
static void r_attn_fwd(const void *p) {
    const r_attn_fwd_args *a = p;
    cpu_ref()->attn_fwd(a->B, a->seq, a->nh, a->nkv, a->hd, a->q, a->k, a->v, a->out, a->lse, a->seg, a->scratch,
                        a->dt);
}
static void ca_attn_fwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                        void *out, tt_real *lse, const int32_t *seg, void *scratch, int dt) {
    LAUNCH(r_attn_fwd, B, seq, nh, nkv, hd, dt, q, k, v, out, scratch, lse, seg);
}

typedef struct {
    int B, seq, nh, nkv, hd, dt;
    const void *q, *k, *v, *out, *dout;
    const tt_real *lse;
    void *dq, *dk, *dv, *scratch;
    const int32_t *seg;
} r_attn_bwd_args;
static void r_attn_bwd(const void *p) {
    const r_attn_bwd_args *a = p;
    cpu_ref()->attn_bwd(a->B, a->seq, a->nh, a->nkv, a->hd, a->q, a->k, a->v, a->out, a->lse, a->dout, a->dq, a->dk,
                        a->dv, a->seg, a->scratch, a->dt);
}
static void ca_attn_bwd(int B, int seq, int nh, int nkv, int hd, const void *q, const void *k, const void *v,
                        const void *out, const tt_real *lse, const void *dout, void *dq, void *dk, void *dv,
                        const int32_t *seg, void *scratch, int dt) {
    LAUNCH(r_attn_bwd, B, seq, nh, nkv, hd, dt, q, k, v, out, dout, lse, dq, dk, dv, scratch, seg);
}
static size_t ca_attn_scratch(int B, int seq, int nh, int nkv, int hd, int dt) {
    return cpu_ref()->attn_scratch_bytes(B, seq, nh, nkv, hd, dt);
}

typedef struct {
    int B, n, cap, nh, nkv, hd, dt;
    const void *q, *kc, *vc;
    const int32_t *pos;
    void *out;
} r_attn_kv_args;
static void r_attn_kv(const void *p) {
    const r_attn_kv_args *a = p;
    cpu_ref()->attn_kv(a->B, a->n, a->cap, a->nh, a->nkv, a->hd, a->q, a->kc, a->vc, a->pos, a->out, a->dt);
}
static void ca_attn_kv(int B, int n, int cap, int nh, int nkv, int hd, const void *q, const void *kc, const void *vc,
                       const int32_t *pos, void *out, int dt) {
    LAUNCH(r_attn_kv, B, n, cap, nh, nkv, hd, dt, q, kc, vc, pos, out);
}

typedef struct { size_t n; const void *g, *u; void *m; int dt; } r_swiglu_fwd_args;
static void r_swiglu_fwd(const void *p) {
    const r_swiglu_fwd_args *a = p;
    cpu_ref()->swiglu_fwd(a->n, a->g, a->u, a->m, a->dt);
}
static void ca_swiglu_fwd(size_t n, const void *g, const void *u, void *m, int dt) {
    LAUNCH(r_swiglu_fwd, n, g, u, m, dt);
}

typedef struct { size_t n; const void *g, *u, *dm; void *dg, *du; int dt; } r_swiglu_bwd_args;
static void r_swiglu_bwd(const void *p) {
    const r_swiglu_bwd_args *a = p;
    cpu_ref()->swiglu_bwd(a->n, a->g, a->u, a->dm, a->dg, a->du, a->dt);
}
static void ca_swiglu_bwd(size_t n, const void *g, const void *u, const void *dm, void *dg, void *du, int dt) {
    LAUNCH(r_swiglu_bwd, n, g, u, dm, dg, du, dt);
}

typedef struct {
    int R, n, ld, v0, dt;
    const void *logits;
    const int32_t *targets;
    double *stats;
} r_xent_stats_args;
static void r_xent_stats(const void *p) {
    const r_xent_stats_args *a = p;
    cpu_ref()->xent_stats(a->R, a->n, a->ld, a->v0, a->logits, a->targets, a->stats, a->dt);
}
static void ca_xent_stats(int R, int n, int ld, int v0, const void *logits, const int32_t *targets, double *stats,
                          int dt) {
    LAUNCH(r_xent_stats, R, n, ld, v0, dt, logits, targets, stats);
}

typedef struct { int R; const double *stats; const int32_t *targets; const tt_real *weight; double *acc; } r_xent_loss_args;
static void r_xent_loss(const void *p) {
    const r_xent_loss_args *a = p;
    cpu_ref()->xent_loss(a->R, a->stats, a->targets, a->weight, a->acc);
}
static void ca_xent_loss(int R, const double *stats, const int32_t *targets, const tt_real *weight, double *acc) {
    LAUNCH(r_xent_loss, R, stats, targets, weight, acc);
}

typedef struct {
    int R, n, ld, v0, dt;
    void *logits;
    const int32_t *targets;
    const tt_real *weight;
    const double *stats;
    tt_real dscale;
} r_xent_grad_args;
static void r_xent_grad(const void *p) {
    const r_xent_grad_args *a = p;
    cpu_ref()->xent_grad(a->R, a->n, a->ld, a->v0, a->logits, a->targets, a->weight, a->dscale, a->stats, a->dt);
}
static void ca_xent_grad(int R, int n, int ld, int v0, void *logits, const int32_t *targets, const tt_real *weight,
                         tt_real dscale, const double *stats, int dt) {
    LAUNCH(r_xent_grad, R, n, ld, v0, dt, logits, targets, weight, stats, dscale);
}

typedef struct {
    int R, n, ld, v0, dt;
    const void *s, *t;
    tt_real tau;
    double *kstats;
} r_kd_stats_args;
static void r_kd_stats(const void *p) {
    const r_kd_stats_args *a = p;
    cpu_ref()->kd_stats(a->R, a->n, a->ld, a->v0, a->s, a->t, a->tau, a->kstats, a->dt);
}
static void ca_kd_stats(int R, int n, int ld, int v0, const void *s, const void *t, tt_real tau, double *kstats, int dt) {
    LAUNCH(r_kd_stats, R, n, ld, v0, dt, s, t, tau, kstats);
}

typedef struct {
    int R;
    const double *kstats;
    const int32_t *targets;
    const tt_real *weight;
    tt_real tau;
    double *acc;
} r_kd_loss_args;
static void r_kd_loss(const void *p) {
    const r_kd_loss_args *a = p;
    cpu_ref()->kd_loss(a->R, a->kstats, a->targets, a->weight, a->tau, a->acc);
}
static void ca_kd_loss(int R, const double *kstats, const int32_t *targets, const tt_real *weight, tt_real tau,
                       double *acc) {
    LAUNCH(r_kd_loss, R, kstats, targets, weight, tau, acc);
}

typedef struct {
    int R, n, ld, v0, dt;
    void *s;
    const void *t;
    const int32_t *targets;
    const tt_real *weight;
    tt_real dscale, alpha, tau;
    const double *xstats, *kstats;
} r_kd_grad_args;
static void r_kd_grad(const void *p) {
    const r_kd_grad_args *a = p;
    cpu_ref()->kd_grad(a->R, a->n, a->ld, a->v0, a->s, a->t, a->targets, a->weight, a->dscale, a->alpha, a->tau,
                       a->xstats, a->kstats, a->dt);
}
static void ca_kd_grad(int R, int n, int ld, int v0, void *s, const void *t, const int32_t *targets,
                       const tt_real *weight, tt_real dscale, tt_real alpha, tt_real tau, const double *xstats,
                       const double *kstats, int dt) {
    LAUNCH(r_kd_grad, R, n, ld, v0, dt, s, t, targets, weight, dscale, alpha, tau, xstats, kstats);
}

typedef struct {
    size_t n;
    tt_real *p;
    const tt_real *g;
    float *m, *v;
    float lr, b1, b2, eps, wd;
    int step;
} r_adamw_args;
static void r_adamw(const void *p) {
    const r_adamw_args *a = p;
    cpu_ref()->adamw(a->n, a->p, a->g, a->m, a->v, a->lr, a->b1, a->b2, a->eps, a->wd, a->step);
}
static void ca_adamw(size_t n, tt_real *p, const tt_real *g, float *m, float *v, float lr, float b1, float b2,
                     float eps, float wd, int step) {
    LAUNCH(r_adamw, n, p, g, m, v, lr, b1, b2, eps, wd, step);
}

/* ---- the table ------------------------------------------------------------- */

static const tt_backend g_cpu_async = {
    .name = "cpu-async",
    .alloc = ca_alloc,
    .free = ca_free,
    .to_device = copy_sync,
    .to_host = copy_sync,
    .copy = copy_sync,
    .fill = ca_fill,
    .gemm = ca_gemm,
    .axpy = ca_axpy,
    .scale = ca_scale,
    .mask_scale = ca_mask_scale,
    .sumsq = ca_sumsq,
    .dropout = ca_dropout,
    .dequant = ca_dequant,
    .linear = ca_linear,
    .rmsnorm_fwd = ca_rms_fwd,
    .rmsnorm_bwd = ca_rms_bwd,
    .rmsnorm_bwd_w = ca_rms_bwd_w,
    .rope = ca_rope,
    .attn_fwd = ca_attn_fwd,
    .attn_bwd = ca_attn_bwd,
    .attn_scratch_bytes = ca_attn_scratch,
    .attn_kv = ca_attn_kv,
    .swiglu_fwd = ca_swiglu_fwd,
    .swiglu_bwd = ca_swiglu_bwd,
    .xent_stats = ca_xent_stats,
    .xent_loss = ca_xent_loss,
    .xent_grad = ca_xent_grad,
    .kd_stats = ca_kd_stats,
    .kd_loss = ca_kd_loss,
    .kd_grad = ca_kd_grad,
    .adamw = ca_adamw,
    .queue_new = ca_queue_new,
    .queue_free = ca_queue_free,
    .event_new = ca_event_new,
    .event_free = ca_event_free,
    .event_record = ca_event_record,
    .queue_wait = ca_queue_wait,
    .event_sync = ca_event_sync,
    .event_query = ca_event_query,
    .copy_async = ca_copy_async,
    .synchronize = ca_synchronize,
    .timer_new = ca_event_new,
    .timer_elapsed = ca_timer_elapsed,
    /* as the CUDA backend: its streamed runs, compared bit for bit with the synchronous CPU backend's resident
     * ones (which dequantize every product's block), check that decoding a layer once gives the same bits, and
     * that the decode, the one read of a layer's slot, is ordered after the slot's load */
    .decode_layers = 1,
};

const tt_backend *backend_cpu_async(void) {
    compute();
    return &g_cpu_async;
}
