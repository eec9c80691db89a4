/* tests/test_stream.c — the layer-streaming runtime on the CPU backend:
 * 1. streamed training gives bit-identical LoRA weights (and losses) to fully
 *    resident training after N steps, for several budgets: the smallest the
 *    planner accepts (2 slots, lm_head streamed, every activation spilled),
 *    one that spills some activations, one with a host layer cache, and with
 *    LoRA dropout and per-layer or deferred (clipped) optimizer steps;
 * 2. the device arena's peak never exceeds --hbm, and the planner's
 *    prediction equals the measured peak (the 5% of the issue: here exact);
 * 3. budgets below the smallest plan are refused with the smallest budget;
 * 4. exec_eval_tokens: exec_eval's loss sum bit for bit, per-token NLLs that
 *    sum to it (NaN where nothing is scored), the same bits under the
 *    smallest budget with lm_head streamed and on cpu-async.
 * (IO errors inside a step: tests/test_stream_faults.c.) The model is the
 * `small` preset (16 layers, GQA) with f32 weights. */
#include "core/base/common.h"
#include "sched/arena.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "sched/stream.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <math.h>

#include "tests/stream_run.h"

/* After one training step (so the LoRA term is not zero): exec_eval's loss
 * sum, then exec_eval_tokens' on the same batch, then exec_eval's again;
 * returns the per-token NLLs (malloc'ed; NULL when the run failed). */
static double *eval_tokens(const char *store, const tt_plan_req *req, const char *what) {
    run_ctx c;
    int rc = run_open(&c, store, req, NULL, what);
    CHECK_MSG(rc == 0, "%s: %s", what, tt_lasterr());
    if (rc) return NULL;
    tt_exec *e = c.e;
    int T = c.T, K = c.K;
    size_t n = (size_t)K * T;
    int32_t *in = c.in, *tg = c.tg;
    tt_real *w = c.w;
    double *nll = malloc(sizeof *nll * n), g, l0 = 0, l1 = 0, l2 = 0, sum = 0;
    make_batch(tier_config(c.s)->vocab, K, T, 1, in, tg, w);
    if (!rc) rc = exec_step(e, in, tg, w, 2e-3f, 1, 0.9f, 0.999f, 1e-8f, 0.01f, 0.f, 0, &g, &g);
    make_batch(tier_config(c.s)->vocab, K, T, 2, in, tg, w);
    if (!rc) rc = exec_eval(e, in, tg, w, &l0);
    if (!rc) rc = exec_eval_tokens(e, in, tg, w, &l1, nll);
    if (!rc) rc = exec_eval(e, in, tg, w, &l2);
    CHECK_MSG(rc == 0, "%s: %s", what, tt_lasterr());
    CHECK_MSG(rc || (l0 == l1 && l1 == l2), "%s: exec_eval %.17g, exec_eval_tokens %.17g, exec_eval again %.17g", what,
              l0, l1, l2);
    int pattern = 1;
    for (size_t i = 0; !rc && i < n; i++) {
        int off = tg[i] < 0 || w[i] == 0;
        pattern &= off ? isnan(nll[i]) : nll[i] >= 0;
        if (!off) sum += (double)w[i] * nll[i];
    }
    CHECK_MSG(rc || pattern, "%s: a per-token NLL is negative, or NaN is not exactly where nothing is scored", what);
    /* the same doubles summed in another order: a few units in the last place */
    CHECK_MSG(rc || fabs(sum - l0) <= 1e-14 * fabs(l0), "%s: the per-token NLLs sum to %.17g, the loss is %.17g", what,
              sum, l0);
    run_close(&c);
    if (rc) { free(nll); return NULL; }
    return nll;
}

int main(void) {
    char *dir = fixture_tmpdir();
    char store[600];
    snprintf(store, sizeof store, "%s/small.tier", dir);
    tt_config c;
    TT_ASSERT(config_preset("small", &c) == 0);
    CHECK(fixture_write_model(store, &c, TT_DTYPE_F32, 0.02f, 1) == 0);
    {   /* 4. exec_eval_tokens, resident and streamed, on cpu and cpu-async */
        tt_plan_req req = {0};
        req.B = 2; req.seq = 16; req.K = 2;
        exec_user(&req.user, &(tt_lora_cfg){4, 8.f, 0.f, LORA_ALL_TARGETS, 0}, 0);
        double *ref = eval_tokens(store, &req, "exec_eval_tokens, resident");
        tier_store *s;
        TT_ASSERT(tier_open(&s, store) == 0);
        tt_plan_req r2 = req;
        r2.lm_head = PLAN_HEAD_HOST;
        plan_minimum(s, &r2, &r2.hbm, &r2.host);
        tier_close(s);
        double *sm = eval_tokens(store, &r2, "exec_eval_tokens, smallest budget");
        const tt_backend *cpu = be_current(), *async = be_by_name("cpu-async");
        TT_ASSERT(async);
        cpu_async_configure(7, 50);
        be_use(async);
        double *as = eval_tokens(store, &r2, "exec_eval_tokens, smallest budget, cpu-async");
        be_use(cpu);
        size_t n = (size_t)req.K * req.B * req.seq;
        CHECK_MSG(ref && sm && memcmp(ref, sm, n * sizeof *ref) == 0, "exec_eval_tokens: streamed != resident");
        CHECK_MSG(ref && as && memcmp(ref, as, n * sizeof *ref) == 0, "exec_eval_tokens: cpu-async != cpu");
        free(ref); free(sm); free(as);
    }
    run_out f32ref = {0};
    /* variants: plain; dropout + clipping; dropout + clipping with bf16 activation cells */
    for (int variant = 0; variant < 3; variant++) {
        float dropout = variant ? 0.1f : 0.f, clip = variant ? 1.f : 0.f;
        tt_plan_req req = {0};
        req.B = 1; req.seq = 16; req.K = 3;
        exec_user(&req.user, &(tt_lora_cfg){4, 8.f, dropout, LORA_ALL_TARGETS, 0}, clip > 0);
        req.act_bf16 = variant == 2;
        run_out ref, o;
        tt_plan p;
        CHECK(run(store, &req, dropout, clip, &ref, &p) == 0);
        compare(&ref, &ref, variant == 2 ? "resident (dropout, clip, bf16 activations)" : variant ? "resident (dropout, clip)"
                                         : "resident", &p);
        if (variant == 1) { /* the f32 twin of variant 2 */
            f32ref = ref;
            f32ref.params = malloc(ref.n * sizeof(tt_real));
            memcpy(f32ref.params, ref.params, ref.n * sizeof(tt_real));
        }
        if (variant == 2) { /* bf16 activations round every stored value: a different, close run */
            double dl = 0, dp = 0, pm = 0;
            for (int st = 0; st < STEPS; st++) dl = fmax(dl, fabs(ref.loss[st] - f32ref.loss[st]) / f32ref.loss[st]);
            for (size_t i = 0; i < ref.n; i++) {
                dp = fmax(dp, fabs((double)ref.params[i] - f32ref.params[i]));
                pm = fmax(pm, fabs((double)f32ref.params[i]));
            }
            CHECK_MSG(dl > 0 && dl < 0.02, "bf16 vs f32 activations: loss differs by %.3g relative", dl);
            CHECK_MSG(dp > 0, "bf16 activations changed nothing: are they used?");
            fprintf(stderr, "bf16 vs f32 activations: loss within %.2e relative, LoRA within %.2e of %.2e\n", dl, dp,
                    pm);
            free(f32ref.params);
        }
        tier_store *s;
        TT_ASSERT(tier_open(&s, store) == 0);
        uint64_t min_dev, min_host;
        plan_minimum(s, &req, &min_dev, &min_host);
        tier_close(s);
        /* the smallest budget the planner accepts */
        tt_plan_req r2 = req;
        r2.hbm = min_dev; r2.host = min_host;
        CHECK(run(store, &r2, dropout, clip, &o, &p) == 0);
        CHECK(p.slots == 2 && p.dev_cells == 0 && !p.host_cache);
        compare(&ref, &o, "smallest budget (all spilled)", &p);
        free(o.params);
        /* the same with lm_head streamed from the host in vocab chunks */
        r2.lm_head = PLAN_HEAD_HOST;
        tier_store *s2;
        TT_ASSERT(tier_open(&s2, store) == 0);
        plan_minimum(s2, &r2, &r2.hbm, &r2.host);
        tier_close(s2);
        CHECK(run(store, &r2, dropout, clip, &o, &p) == 0);
        CHECK(p.slots == 2 && p.dev_cells == 0 && !p.head_on_device);
        compare(&ref, &o, "smallest, lm_head streamed", &p);
        free(o.params);
        r2.lm_head = PLAN_HEAD_AUTO;
        /* some activations spill: room for about half of them */
        r2.hbm = min_dev + (uint64_t)req.B * req.seq * c.hidden * sizeof(tt_real) * 12;
        r2.host = 0;
        CHECK(run(store, &r2, dropout, clip, &o, &p) == 0);
        CHECK(p.dev_cells > 0 && p.host_cells > 0);
        compare(&ref, &o, "partial spill", &p);
        free(o.params);
        /* a host cache: the model is read from NVMe once */
        r2.hbm = min_dev; r2.host = 0;
        CHECK(run(store, &r2, dropout, clip, &o, &p) == 0);
        CHECK(p.host_cache == 1);
        compare(&ref, &o, "host cache", &p);
        free(o.params);
        /* below the smallest plan: refused, naming the smallest budget */
        r2.hbm = min_dev - 4096; r2.host = 0;
        CHECK(run(store, &r2, dropout, clip, &o, &p) == -ENOSPC);
        CHECK_MSG(strstr(tt_lasterr(), "--hbm") && strstr(tt_lasterr(), "needs --hbm"), "%s", tt_lasterr());
        r2.hbm = 0; r2.host = min_host / 2;
        CHECK(run(store, &r2, dropout, clip, &o, &p) == -ENOSPC);
        CHECK_MSG(strstr(tt_lasterr(), "--host") != NULL, "%s", tt_lasterr());
        free(ref.params);
    }
    /* A pruned model (layers of different sizes): the host cache holds each
     * layer at its own size, and streamed == resident still. */
    {
        char pstore[600];
        snprintf(pstore, sizeof pstore, "%s/pruned.tier", dir);
        tt_config pc = c;
        TT_ASSERT(config_prune(&pc, 0.5, 4, 14) == 0);
        CHECK(fixture_write_model(pstore, &pc, TT_DTYPE_F32, 0.02f, 1) == 0);
        tt_plan_req req = {0};
        req.B = 1; req.seq = 16; req.K = 2;
        exec_user(&req.user, &(tt_lora_cfg){4, 8.f, 0.f, LORA_ALL_TARGETS, 0}, 0);
        run_out ref, o;
        tt_plan p;
        CHECK(run(pstore, &req, 0.f, 0.f, &ref, &p) == 0);
        tier_store *s;
        TT_ASSERT(tier_open(&s, pstore) == 0);
        uint64_t min_dev, min_host, layers = 0;
        plan_minimum(s, &req, &min_dev, &min_host);
        for (uint32_t l = 0; l < pc.n_layers; l++) layers += tt_align_up(tier_extent_at(s, TT_EXTENT_LAYER(l))->raw, 256);
        tt_plan_req r2 = req;
        r2.hbm = min_dev; r2.host = 0;
        CHECK(run(pstore, &r2, 0.f, 0.f, &o, &p) == 0);
        CHECK(p.host_cache == 1);
        compare(&ref, &o, "pruned, host cache", &p);
        /* the cache is the layers' own bytes: the host arena holds no more than they and the rest */
        tt_arena *d = arena_measure("device"), *h = arena_measure("host");
        stream_measure(s, &p, d, h);
        uint64_t cache = 0;
        for (int i = 0; i < arena_n_labels(h); i++) {
            const char *lab;
            size_t bytes;
            arena_label(h, i, &lab, &bytes, NULL);
            if (strcmp(lab, "layer cache") == 0) cache = bytes;
        }
        CHECK_MSG(cache == layers, "layer cache %llu bytes, the layers %llu", (unsigned long long)cache,
                  (unsigned long long)layers);
        arena_free(d);
        arena_free(h);
        /* No --host: the memory the machine has available bounds the plan
         * (both arenas: the CPU backend's "device" is host memory too). Just
         * below what this plan takes it is planned again without the host
         * cache; far below, it is refused in one sentence. */
        tt_plan_req r3 = r2;
        tt_plan q;
        uint64_t ram = p.host_bytes + p.dev_bytes;
        r3.host_avail = ram; /* enough: the same plan, untouched */
        CHECK(plan_make(s, &r3, &q) == 0 && !q.host_from_avail && q.host_cache && q.host_bytes == p.host_bytes);
        r3.host_avail = ram - 1;
        CHECK(plan_make(s, &r3, &q) == 0);
        CHECK(q.host_from_avail && q.host_bytes + q.dev_bytes <= r3.host_avail && !q.host_cache);
        r3.host_avail = 1 << 20;
        CHECK(plan_make(s, &r3, &q) == -ENOMEM);
        CHECK_MSG(strstr(tt_lasterr(), "MemAvailable") != NULL, "%s", tt_lasterr());
        /* --host given: the plan within it must fit the memory available
         * too (a cap: one beyond the machine plans as no --host does, within
         * both); plan's what_if keeps the budgets as given and marks it */
        r3.host = p.host_bytes;
        r3.host_avail = ram;
        CHECK(plan_make(s, &r3, &q) == 0 && !q.host_from_avail && q.host_cache && q.host_bytes == p.host_bytes);
        r3.host_avail = ram - 1;
        CHECK(plan_make(s, &r3, &q) == 0);
        CHECK(q.host_from_avail && q.host_bytes + q.dev_bytes <= r3.host_avail &&
              !q.host_cache && q.req.host <= r3.host);
        r3.host = 1ull << 40; /* far beyond: the same plan as none */
        tt_plan q2;
        CHECK(plan_make(s, &r3, &q2) == 0 && q2.host_bytes == q.host_bytes && q2.dev_bytes == q.dev_bytes);
        r3.what_if = 1;
        CHECK(plan_make(s, &r3, &q2) == 0 && q2.over_avail == r3.host_avail && q2.host_cache && !q2.host_from_avail);
        r3.what_if = 0;
        r3.host_avail = 1 << 20;
        CHECK(plan_make(s, &r3, &q) == -ENOMEM);
        CHECK_MSG(strstr(tt_lasterr(), "MemAvailable") != NULL, "%s", tt_lasterr());
        /* no --hbm either (everything resident on the CPU "device", in host
         * memory): below the resident plan's memory the device is budgeted
         * too, and the plan streams within what is available */
        tt_plan_req r4 = req;
        tt_plan res;
        CHECK(plan_make(s, &r4, &res) == 0 && res.slots == (int)pc.n_layers);
        uint64_t dmin, hmin;
        plan_minimum(s, &r4, &dmin, &hmin);
        r4.host_avail = (dmin + hmin + res.dev_bytes + res.host_bytes) / 2;
        CHECK_MSG(plan_make(s, &r4, &q) == 0, "%s", tt_lasterr());
        CHECK(q.host_from_avail && q.dev_bytes + q.host_bytes <= r4.host_avail && q.slots < (int)pc.n_layers);
        tier_close(s);
        free(o.params);
        free(ref.params);
    }
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
