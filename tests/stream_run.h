/* tests/stream_run.h — what the streaming tests share: N training steps of
 * the executor under one plan request on a fixture store, the LoRA weights
 * and losses it ends with, and a bit-for-bit comparison of two runs.
 * (Header-only: each test program includes it once.) */
#ifndef TT_TEST_STREAM_RUN_H
#define TT_TEST_STREAM_RUN_H

#include "core/base/common.h"
#include "core/base/rng.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "sched/trace.h"
#include "tests/test.h"

#include <string.h>

#define STEPS 2

/* The trace run() hands the executor (NULL: none). */
static tt_trace *g_run_trace;

typedef struct run_out {
    double loss[STEPS];
    tt_real *params;
    size_t n;
} run_out;

static inline void make_batch(uint32_t vocab, int K, int T, int step, int32_t *in, int32_t *tg, tt_real *w) {
    tt_rng r;
    rng_seed(&r, 77, (uint64_t)step);
    for (int i = 0; i < K * T; i++) {
        in[i] = (int32_t)rng_below(&r, vocab);
        tg[i] = i % 11 == 3 ? -1 : (int32_t)rng_below(&r, vocab);
        w[i] = i % 7 == 2 ? 0 : 1;
    }
}

/* An executor on a fixture store under one plan request, and a step's batch buffers. */
typedef struct run_ctx {
    tier_store *s;
    tt_plan p;
    tt_exec *e;
    int K, T;
    int32_t *in, *tg;
    tt_real *w;
} run_ctx;

/* Opens the store, makes the plan (its failure is returned as it is: some callers expect a refusal) and
 * creates the executor (a failure there is a test failure, named by `what`). Free with run_close. */
static inline int run_open(run_ctx *c, const char *store, const tt_plan_req *req, tt_trace *trace, const char *what) {
    memset(c, 0, sizeof *c);
    TT_ASSERT(tier_open(&c->s, store) == 0);
    int rc = plan_make(c->s, req, &c->p);
    if (!rc) {
        rc = exec_create(&c->e, c->s, &c->p, 5, trace);
        CHECK_MSG(rc == 0, "%s: %s", what, tt_lasterr());
    }
    if (rc) {
        tier_close(c->s);
        c->s = NULL;
        return rc;
    }
    c->T = req->B * req->seq;
    c->K = req->K;
    size_t n = (size_t)c->K * c->T;
    c->in = malloc(sizeof *c->in * n);
    c->tg = malloc(sizeof *c->tg * n);
    c->w = malloc(sizeof *c->w * n);
    return 0;
}

static inline void run_close(run_ctx *c) {
    free(c->in); free(c->tg); free(c->w);
    exec_free(c->e);
    if (c->s) tier_close(c->s);
    memset(c, 0, sizeof *c);
}

static inline int run(const char *store, const tt_plan_req *req, float dropout, float clip, run_out *o, tt_plan *used) {
    run_ctx c;
    int rc = run_open(&c, store, req, g_run_trace, "run");
    if (rc) return rc;
    *used = c.p;
    tt_exec *e = c.e;
    tier_store *s = c.s;
    const tt_plan p = c.p;
    int T = c.T, K = c.K;
    int32_t *in = c.in, *tg = c.tg;
    tt_real *w = c.w;
    for (int st = 1; st <= STEPS && rc == 0; st++) {
        make_batch(tier_config(s)->vocab, K, T, st, in, tg, w);
        double g;
        rc = exec_step(e, in, tg, w, 2e-3f, st, 0.9f, 0.999f, 1e-8f, 0.01f, clip, dropout > 0 ? 99 : 0, &o->loss[st - 1], &g);
        CHECK_MSG(rc == 0, "step %d: %s", st, tt_lasterr());
    }
    CHECK_MSG(exec_dev_peak(e) <= (req->hbm ? req->hbm : UINT64_MAX), "device peak %llu > --hbm %llu",
              (unsigned long long)exec_dev_peak(e), (unsigned long long)req->hbm);
    CHECK_MSG(exec_dev_peak(e) == p.dev_bytes, "predicted device peak %llu, measured %llu",
              (unsigned long long)p.dev_bytes, (unsigned long long)exec_dev_peak(e));
    CHECK_MSG(exec_host_peak(e) == p.host_bytes, "predicted host peak %llu, measured %llu",
              (unsigned long long)p.host_bytes, (unsigned long long)exec_host_peak(e));
    tt_lora *lo = exec_lora(e);
    o->n = lo->n;
    o->params = malloc(lo->n * sizeof(tt_real));
    lora_params_get(lo, o->params);
    run_close(&c);
    return rc;
}

static inline void compare(const run_out *a, const run_out *b, const char *what, const tt_plan *p) {
    fprintf(stderr, "%-34s slots %d, lm_head %s, cells on device %d/%d, host cache %d, decoded layer %d: dev %llu B, "
            "host %llu B\n", what, p->slots, p->head_on_device ? "dev" : "host", p->dev_cells,
            p->dev_cells + p->host_cells, p->host_cache, p->user_opt,
            (unsigned long long)p->dev_bytes, (unsigned long long)p->host_bytes);
    CHECK(a->n == b->n);
    for (int i = 0; i < STEPS; i++) CHECK_MSG(a->loss[i] == b->loss[i], "%s: loss %d %.17g vs %.17g", what, i, a->loss[i], b->loss[i]);
    CHECK_MSG(a->n == b->n && memcmp(a->params, b->params, a->n * sizeof(tt_real)) == 0, "%s: LoRA weights differ", what);
}

#endif
