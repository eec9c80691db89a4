/* tests/train_run.h — train_run on a fresh executor with a resident plan
 * for o's shapes, as the training tests call it. (Header-only: each test
 * program includes it once.) */
#ifndef TT_TEST_TRAIN_RUN_H
#define TT_TEST_TRAIN_RUN_H

#include "core/base/common.h"
#include "core/exec.h"
#include "core/train.h"
#include "sched/plan.h"

static inline int test_run_train(const char *model, const tt_train_opts *o, const tt_tokens *train,
                                 const tt_tokens *val, tt_train_result *res) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, model) == 0);
    tt_plan_req req = {0};
    req.B = o->micro_batch; req.seq = o->seq; req.K = o->accum; exec_user(&req.user, &o->lora, o->clip > 0);
    tt_plan p;
    TT_ASSERT(plan_make(s, &req, &p) == 0);
    tt_exec *e;
    int rc = exec_create(&e, s, &p, o->seed, NULL);
    tier_close(s);
    if (rc) return rc;
    rc = train_run(o, e, train, val, res);
    exec_free(e);
    return rc;
}

#endif
