/* tests/test_stream_async.c — the streaming runtime on `cpu-async`, the CPU
 * backend whose queues are worker threads with seeded random delays and real
 * events (kernels/cpu-async/). For f32 and bf16 activation cells, with and
 * without LoRA dropout + clipping: the LoRA weights and losses after N
 * streamed steps equal, bit for bit, N resident steps on the synchronous CPU
 * backend, for every budget (the smallest, the smallest with lm_head
 * streamed, a partial spill, a host cache, NVMe every step with the cells on
 * the device, and the same from a 2:4-sparse store whose layers are lz4-compressed,
 * so each goes through the decode buffer, and three slots with room for a layer decoded once a pass for all
 * micro-batches, kernels/backend.h's decode_layers) and every delay seed (4; 2 under ASan; 1 under TSan, whose
 * race reports do not depend on the order a seed's delays give, and there
 * two of the four cells: f32 plain, bf16 with dropout + clipping; unless
 * TT_TEST_SEEDS says otherwise). Each seed alone catches both dropped waits below (of 8 seeds, every one: a
 * dropped slot wait in 22-26 of its 26 runs, a dropped decode wait in 3-4 of its 4 lz4 runs), so 4 (8 before)
 * leave a wait whose loss shows in half the runs of one budget one chance in 2^16 to pass.
 *
 * A missing event wait in the runtime shows up here as a mismatch and, in
 * the ThreadSanitizer build (make test runs one), as a data race:
 * TT_TEST_DROP_WAIT=slot makes layer loads skip the wait for the compute
 * queue to be done with a slot, TT_TEST_DROP_WAIT=decode makes a decode rewrite
 * the decode buffer without waiting for its last copy to the device. With TT_TEST_EXPECT_FAIL=1 this program
 * inverts its verdict: it passes only when some seed caught the dropped wait, and stops at the first run that did
 * (tests/test_async_dropwait.sh). */
#include "kernels/backend.h"
#include "tests/fixtures.h"
#include "tests/stream_run.h"

#include <stdlib.h>

enum { B_SMALLEST, B_SMALLEST_HEAD_HOST, B_PARTIAL, B_CACHE, B_NVME, B_NVME_LZ4, B_DECODED, N_BUDGETS };
static const char *budget_name[N_BUDGETS] = {"smallest (all spilled)", "smallest, lm_head streamed",
                                             "partial spill", "host cache", "NVMe every step, cells on device",
                                             "NVMe every step, lz4 layers", "3 slots, a layer decoded once"};

/* The plan request of budget b for req (all derived from the planner's smallest). */
static tt_plan_req budget(const char *store, const tt_plan_req *req, int b, size_t cell_bytes) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, store) == 0);
    tt_plan_req r = *req;
    if (b == B_SMALLEST_HEAD_HOST) r.lm_head = PLAN_HEAD_HOST;
    uint64_t min_dev, min_host;
    plan_minimum(s, &r, &min_dev, &min_host);
    uint64_t slot = tier_extent_at(s, TT_EXTENT_LAYER(0))->raw; /* the tiny model's layers are all alike */
    tier_close(s);
    r.hbm = min_dev;
    r.host = b == B_SMALLEST || b == B_SMALLEST_HEAD_HOST ? min_host : 0; /* 0: room for a host cache */
    if (b == B_PARTIAL) r.hbm = min_dev + (uint64_t)cell_bytes * 12;
    if (b == B_NVME || b == B_NVME_LZ4) { /* two slots fed from NVMe through the two staging buffers, no unspills in between */
        r.no_host_cache = 1;
        r.hbm = min_dev + (uint64_t)cell_bytes * 64;
    }
    /* a third slot, then (bf16 cells: the f32 store's layers converted) a layer decoded once a pass, before the
     * activations; the layers still go through the slots in turn */
    if (b == B_DECODED) r.hbm = min_dev + 2 * slot;
    return r;
}

/* Every layer's forward and backward, the head and AdamW as device spans of
 * the compute queue (cpu-async's events time them), none dropped. */
static void check_trace(tt_trace *t, const tt_plan_req *r, const tt_plan *p, int L) {
    size_t want = (size_t)STEPS * (2 * (size_t)r->K * L + r->K);
    CHECK_MSG(trace_count(t, TRACE_COMPUTE) == want, "%zu compute spans, want %zu", trace_count(t, TRACE_COMPUTE), want);
    CHECK_MSG(trace_count(t, TRACE_OPT) == (size_t)STEPS * L, "%zu optimizer spans", trace_count(t, TRACE_OPT));
    CHECK_MSG(trace_count(t, TRACE_COPY) >= (size_t)L, "%zu layer copies (%d slots)", trace_count(t, TRACE_COPY), p->slots);
    CHECK_EQ_INT((int)trace_n_dropped(t), 0);
}

/* The planner's place for the decoded layer (plan.user_opt), over a sweep of --hbm with and without a tight
 * --host: a larger budget never loses a slot or (streaming) the host cache to it, never refuses what a smaller
 * one planned,
 * and its bytes are what the plan says fits. On cpu-async, which asks for the buffer (plans only, no runs). */
static void plan_sweep(const char *store, const tt_plan_req *req, int placed[3]) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, store) == 0);
    uint64_t min_dev, min_host;
    plan_minimum(s, req, &min_dev, &min_host);
    tt_plan full;
    CHECK(plan_make(s, req, &full) == 0); /* no budget: everything resident, the buffer too */
    CHECK_MSG(full.user_opt && full.slots == full.L, "the unbudgeted plan: slots %d of %d, decoded layer %d",
              full.slots, full.L, full.user_opt);
    for (int h = 0; h < 2; h++) {
        tt_plan prev;
        int have_prev = 0;
        for (int i = 0; i <= 96; i++) {
            tt_plan_req r = *req;
            r.hbm = min_dev + (full.dev_bytes + full.dev_bytes / 4 - min_dev) * (uint64_t)i / 96;
            r.host = h ? min_host + (min_host >> 3) : 0; /* a --host with little room: spills it cannot hold */
            tt_plan p;
            int rc = plan_make(s, &r, &p);
            if (have_prev) {
                CHECK_MSG(rc == 0, "--hbm %llu --host %llu refused (%s) where --hbm %llu planned",
                          (unsigned long long)r.hbm, (unsigned long long)r.host, tt_lasterr(),
                          (unsigned long long)prev.req.hbm);
                if (rc) continue;
                CHECK_MSG(p.slots >= prev.slots && (p.slots == p.L || p.host_cache >= prev.host_cache),
                          "--hbm %llu --host %llu: %d slots, host cache %d; --hbm %llu: %d, %d", (unsigned long long)r.hbm,
                          (unsigned long long)r.host, p.slots, p.host_cache, (unsigned long long)prev.req.hbm,
                          prev.slots, prev.host_cache);
            }
            if (rc) continue;
            CHECK(plan_dev_fits(p.dev_bytes, r.hbm, NULL) && (!r.host || p.host_bytes <= r.host));
            placed[!p.user_opt ? 2 : p.slots == p.L && p.dev_cells == full.dev_cells ? 1 : 0]++;
            prev = p;
            have_prev = 1;
        }
    }
    tier_close(s);
}

int main(void) {
    const char *ns = getenv("TT_TEST_SEEDS"), *ef = getenv("TT_TEST_EXPECT_FAIL");
    /* the sanitizer builds (several times slower) take fewer seeds unless told */
#if defined(__SANITIZE_THREAD__)
    int seeds = ns ? atoi(ns) : 1;
#elif defined(__SANITIZE_ADDRESS__)
    int seeds = ns ? atoi(ns) : 2;
#else
    int seeds = ns ? atoi(ns) : 4;
#endif
    int expect_fail = ef && strcmp(ef, "1") == 0;
    if (seeds < 1) seeds = 1;
    const char *dl = getenv("TT_TEST_DELAY_US");
    int delay_us = dl ? atoi(dl) : 50;
    char *dir = fixture_tmpdir();
    char store[600], store_lz4[600];
    snprintf(store, sizeof store, "%s/tiny.tier", dir);
    snprintf(store_lz4, sizeof store_lz4, "%s/tiny-lz4.tier", dir);
    tt_config c;
    TT_ASSERT(config_preset("tiny", &c) == 0);
    CHECK(fixture_write_model(store, &c, TT_DTYPE_F32, 0.02f, 1) == 0);
    CHECK(fixture_write_model_ex(store_lz4, &c, TT_DTYPE_F32, 0.02f, 1, 1) == 0);
    { /* every layer compressed: B_NVME_LZ4's loads all decode */
        tier_store *s;
        TT_ASSERT(tier_open(&s, store_lz4) == 0);
        int lz4 = 0;
        for (uint32_t l = 0; l < c.n_layers; l++) lz4 += tier_extent_at(s, TT_EXTENT_LAYER(l))->codec == TIER_CODEC_LZ4;
        CHECK_MSG(lz4 == (int)c.n_layers, "%d of %u layers lz4-compressed in %s", lz4, c.n_layers, store_lz4);
        tier_close(s);
    }
    const tt_backend *cpu = backend_cpu(), *async = be_by_name("cpu-async");
    TT_ASSERT(async);
    /* The plan sweeps: plans only, on this thread, so not under ThreadSanitizer (it has no threads to watch there;
     * the release and ASan builds sweep), nor with a dropped wait (tests/test_async_dropwait.sh: it asks the
     * runs whether they catch it, and the plans do not depend on it). */
#if defined(__SANITIZE_THREAD__)
    int sweep = 0;
#else
    int sweep = !getenv("TT_TEST_DROP_WAIT");
#endif
    if (sweep) { /* the f32 store (its decoded layer half a slot: placed before the activations where there is room)
       * and an NF4 one (four times a slot: before the activations it would cost a slot) */
        char nf4[600];
        snprintf(nf4, sizeof nf4, "%s/tiny-nf4.tier", dir);
        CHECK(fixture_write_model(nf4, &c, TT_DTYPE_NF4, 0.02f, 1) == 0);
        tt_plan_req req = {0};
        req.B = 1; req.seq = 16; req.K = 3; req.act_bf16 = 1;
        exec_user(&req.user, &(tt_lora_cfg){4, 8.f, 0.f, LORA_ALL_TARGETS, 0}, 0);
        be_use(async);
        int placed[3] = {0, 0, 0};
        plan_sweep(store, &req, placed);
        plan_sweep(nf4, &req, placed);
        be_use(cpu);
        fprintf(stderr, "plan sweeps: the decoded layer placed before the activations %d times, after everything %d, "
                "not at all %d\n", placed[0], placed[1], placed[2]);
        CHECK_MSG(placed[0] && placed[1] && placed[2], "the sweeps must see each placement (%d, %d, %d)", placed[0],
                  placed[1], placed[2]);
    }
    /* variants: bit 0 bf16 cells, bit 1 dropout + clipping. Under TSan, f32 without and bf16 with (variants 0
     * and 3): between them every path of the runtime's; the other builds compare all four. */
#if defined(__SANITIZE_THREAD__)
    const int vstep = 3;
#else
    const int vstep = 1;
#endif
    int runs = 0, mismatches = 0, base_failures = tt_test_failures, variants = 0, decoded[2] = {0, 0};
    /* with TT_TEST_EXPECT_FAIL the first mismatch is the verdict: the runs after it are not made */
    for (int variant = 0; variant < 4 && !(expect_fail && mismatches); variant += vstep, variants++) {
        int bf16 = variant & 1, drop = variant >> 1;
        float dropout = drop ? 0.1f : 0.f, clip = drop ? 1.f : 0.f;
        tt_plan_req req = {0};
        req.B = 1; req.seq = 16; req.K = 3;
        exec_user(&req.user, &(tt_lora_cfg){4, 8.f, dropout, LORA_ALL_TARGETS, 0}, clip > 0);
        req.act_bf16 = bf16;
        be_use(cpu);
        run_out ref, ref_lz4;
        tt_plan p;
        CHECK(run(store, &req, dropout, clip, &ref, &p) == 0);
        CHECK(run(store_lz4, &req, dropout, clip, &ref_lz4, &p) == 0);
        size_t cell = (size_t)req.B * req.seq * c.hidden * (bf16 ? 2 : sizeof(tt_real));
        be_use(async);
        for (int seed = 1; seed <= seeds && !(expect_fail && mismatches); seed++)
            for (int b = 0; b < N_BUDGETS && !(expect_fail && mismatches); b++) {
                if (b == B_DECODED && !bf16) continue; /* f32 cells on an f32 store: nothing to decode */
                cpu_async_configure((uint64_t)seed * 1000 + (uint64_t)variant * 10 + (uint64_t)b, delay_us);
                const char *st = b == B_NVME_LZ4 ? store_lz4 : store;
                tt_plan_req r = budget(st, &req, b, cell);
                run_out o;
                int before = tt_test_failures;
                /* the first seed's runs traced: spans timed by the queues' events change nothing */
                g_run_trace = seed == 1 ? trace_create(1u << 16) : NULL;
                int failed = run(st, &r, dropout, clip, &o, &p) != 0;
                if (g_run_trace) {
                    check_trace(g_run_trace, &r, &p, (int)c.n_layers);
                    trace_free(g_run_trace);
                    g_run_trace = NULL;
                }
                if (failed) {
                    CHECK_MSG(0, "%s: the run failed", budget_name[b]);
                    continue;
                }
                char what[160];
                snprintf(what, sizeof what, "%s, %s%s, seed %d", budget_name[b], bf16 ? "bf16" : "f32",
                         drop ? ", dropout+clip" : "", seed);
                compare(b == B_NVME_LZ4 ? &ref_lz4 : &ref, &o, what, &p);
                /* an f32 store's layers are decoded once a pass (cpu-async asks for it) under bf16 activations,
                 * where the budget has room, and never under f32 ones (nothing to convert) */
                if (bf16) decoded[p.user_opt]++;
                else CHECK_MSG(!p.user_opt, "%s: a decoded layer planned with nothing to decode", what);
                mismatches += tt_test_failures != before;
                runs++;
                free(o.params);
            }
        be_use(cpu);
        free(ref.params);
        free(ref_lz4.params);
    }
    fprintf(stderr, "cpu-async: %d streamed runs (%d seeds x %d budgets x %d variants; the decoded layer's budget "
            "bf16 only), %d differ from the resident CPU run; of the bf16 ones, %d decoded each layer once a pass and "
            "%d every product's block\n", runs, seeds, N_BUDGETS, variants, mismatches, decoded[1], decoded[0]);
    CHECK_MSG(decoded[0] && decoded[1], "the bf16 runs must both decode layers once and not (%d, %d)", decoded[1],
              decoded[0]);
    fixture_rm_rf(dir);
    free(dir);
    if (expect_fail) { /* the dropped wait must have been caught */
        int caught = mismatches > 0;
        fprintf(stderr, "%s\n", caught ? "the dropped event wait was caught" : "the dropped event wait went unnoticed");
        tt_test_failures = base_failures + !caught;
    }
    TEST_END();
}
