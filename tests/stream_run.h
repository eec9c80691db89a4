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

static inline int run(const char *store, const tt_plan_req *req, float dropout, float clip, run_out *o, tt_plan *used) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, store) == 0);
    tt_plan p;
    int rc = plan_make(s, req, &p);
    if (rc) { tier_close(s); return rc; }
    *used = p;
    tt_exec *e;
    rc = exec_create(&e, store, &p, 5, g_run_trace);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    if (rc) { tier_close(s); return rc; }
    int T = req->B * req->seq, K = req->K;
    int32_t *in = malloc(sizeof *in * K * T), *tg = malloc(sizeof *tg * K * T);
    tt_real *w = malloc(sizeof *w * K * T);
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
    free(in); free(tg); free(w);
    exec_free(e);
    tier_close(s);
    return rc;
}

static inline void compare(const run_out *a, const run_out *b, const char *what, const tt_plan *p) {
    fprintf(stderr, "%-34s slots %d, lm_head %s, cells on device %d/%d, host cache %d: dev %llu B, host %llu B\n", what,
            p->slots, p->head_on_device ? "dev" : "host", p->dev_cells, p->dev_cells + p->host_cells, p->host_cache,
            (unsigned long long)p->dev_bytes, (unsigned long long)p->host_bytes);
    CHECK(a->n == b->n);
    for (int i = 0; i < STEPS; i++) CHECK_MSG(a->loss[i] == b->loss[i], "%s: loss %d %.17g vs %.17g", what, i, a->loss[i], b->loss[i]);
    CHECK_MSG(a->n == b->n && memcmp(a->params, b->params, a->n * sizeof(tt_real)) == 0, "%s: LoRA weights differ", what);
}

#endif
