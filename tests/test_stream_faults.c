/* tests/test_stream_faults.c — the layer-streaming runtime when things go
 * wrong, and what it reports:
 * a. an NVMe read error in the middle of a step (first, middle and last load
 *    of the step) ends exec_step with the injected -errno and a message naming
 *    the store and the offset; the step got exactly as far as the fault
 *    (bytes read before it), and exec_free returns (no hang); with either
 *    read engine (io_uring, the pread threads);
 * b. the same through train_run: a resumed run whose step 3 fails returns an
 *    error saying the step failed and the last checkpoint is intact, the
 *    checkpoint and adapter are byte-identical to before, and resuming again
 *    without the fault ends bit-identical to an uninterrupted run;
 * c. the Chrome trace of two streamed steps with spilled activations is valid
 *    JSON (jansson) with "io", "compute" and "spill" tracks on their own tids,
 *    complete events with ts, dur >= 0, and overlap statistics in range;
 * d. the planner refuses budgets below the smallest plan with -ENOSPC naming
 *    the option and the smallest budget (which it then accepts), and an
 *    unlimited budget keeps everything on the device.
 * The model is the micro config with 6 layers and f32 weights (one NVMe read
 * request per layer), so every part runs in well under a second; alarm(20)
 * turns a hang into a failure. */
#include "core/base/common.h"
#include "core/base/rng.h"
#include "core/train.h"
#include "io/ckpt.h"
#include "io/uring.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "sched/trace.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <jansson.h>

#define NL 6 /* layers: enough that two slots must evict every step */

static const char *g_store;
static tier_store *g_st; /* g_store, open for the executors (exec_create) */

static void micro6_config(tt_config *c) {
    fixture_micro_config(c);
    snprintf(c->name, sizeof c->name, "micro6");
    c->n_layers = NL;
    for (uint32_t l = 0; l < NL; l++) c->layers[l] = (tt_layer_dims){4, 2, 96, 0};
}

static tt_plan_req base_req(void) {
    tt_plan_req r = {0};
    r.B = 1; r.seq = 8; r.K = 2;
    exec_user(&r.user, &(tt_lora_cfg){4, 8.f, 0.f, LORA_ALL_TARGETS, 0}, 0);
    return r;
}

/* The smallest plan for req (2 slots, every activation spilled), read from
 * NVMe every step (no host cache). */
static tt_plan min_plan(tt_plan_req req) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, g_store) == 0);
    uint64_t dev, host;
    plan_minimum(s, &req, &dev, &host);
    req.hbm = dev;
    req.no_host_cache = 1;
    tt_plan p;
    int rc = plan_make(s, &req, &p);
    TT_ASSERT(rc == 0);
    tier_close(s);
    return p;
}

/* Bytes one layer load reads (every layer has the same shape). */
static uint64_t layer_read_bytes(void) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, g_store) == 0);
    uint64_t b = tt_align_up(tier_extent_at(s, TT_EXTENT_LAYER(1))->stored, UR_ALIGN);
    tier_close(s);
    return b;
}

static void make_batch(int n, int step, int32_t *in, int32_t *tg, tt_real *w) {
    tt_rng r;
    rng_seed(&r, 41, (uint64_t)step);
    for (int i = 0; i < n; i++) {
        in[i] = (int32_t)rng_below(&r, 32);
        tg[i] = (int32_t)rng_below(&r, 32);
        w[i] = 1;
    }
}

static int step(tt_exec *e, int st) {
    const tt_plan *p = exec_plan(e);
    int n = p->req.K * p->req.B * p->req.seq;
    int32_t in[64], tg[64];
    tt_real w[64];
    TT_ASSERT(n <= 64);
    make_batch(n, st, in, tg, w);
    double loss, g;
    return exec_step(e, in, tg, w, 1e-3f, st, 0.9f, 0.999f, 1e-8f, 0.f, 0.f, 0, &loss, &g);
}

/* ---- a. an IO error inside a step ------------------------------------------- */

/* Step 1 runs; the nth read of step 2 fails with err. */
static void fault_in_step(const tt_plan *p, uint64_t nth, int err, uint64_t layer_bytes) {
    tt_exec *e;
    int rc = exec_create(&e, g_st, p, 3, NULL);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    if (rc) return;
    rc = step(e, 1);
    CHECK_MSG(rc == 0, "step 1: %s", tt_lasterr());
    uint64_t before = exec_io_bytes(e);
    exec_inject_io_fault(e, nth, err);
    tt_seterr("(no message)");
    rc = step(e, 2);
    CHECK_MSG(rc == -err, "read %llu of step 2 failed with %d: step returned %d (%s)", (unsigned long long)nth, err,
              rc, tt_lasterr());
    const char *msg = tt_lasterr();
    CHECK_MSG(strstr(msg, g_store) && strstr(msg, "offset"), "the message names neither the store nor the offset: %s",
              msg);
    /* the loads before the faulty one completed, none after it */
    uint64_t got = exec_io_bytes(e) - before;
    CHECK_MSG(got == (nth - 1) * layer_bytes, "fault at read %llu: %llu bytes read in step 2, expected %llu",
              (unsigned long long)nth, (unsigned long long)got, (unsigned long long)((nth - 1) * layer_bytes));
    exec_free(e); /* must return: the IO and copy threads stop although a step failed */
}

static void test_io_fault(void) {
    tt_plan p = min_plan(base_req());
    CHECK(p.slots == 2 && !p.host_cache && p.dev_cells == 0 && p.L == NL);
    uint64_t lb = layer_read_bytes();
    /* how many layer loads a steady-state step does (no fault) */
    tt_exec *e;
    TT_ASSERT(exec_create(&e, g_st, &p, 3, NULL) == 0);
    CHECK(step(e, 1) == 0);
    uint64_t io1 = exec_io_bytes(e);
    CHECK(step(e, 2) == 0);
    uint64_t per_step = exec_io_bytes(e) - io1;
    exec_free(e);
    CHECK_MSG(per_step % lb == 0 && per_step / lb >= 4, "a step read %llu bytes, not a number (>= 4) of %llu-byte layers",
              (unsigned long long)per_step, (unsigned long long)lb);
    uint64_t reads = per_step / lb;
    fprintf(stderr, "a. smallest plan: %d slots, %llu layer loads per step of %d layers\n", p.slots,
            (unsigned long long)reads, NL);
    fault_in_step(&p, 1, EIO, lb);                 /* the step's first load (forward) */
    fault_in_step(&p, reads / 2 + 1, EIO, lb);     /* the middle: the turn to backward */
    fault_in_step(&p, reads, ENODATA, lb);         /* the last load (backward, after optimizer steps ran) */
}

/* ---- b. the same through train_run ------------------------------------------- */

/* train_run on a fresh executor with the smallest streaming plan; with
 * fault_nth > 0, that NVMe read request (counted from the start of training)
 * fails with EIO. */
static int run_train(const tt_train_opts *o, const tt_tokens *train, const tt_tokens *val, uint64_t fault_nth,
                     tt_train_result *res) {
    tt_plan_req req = base_req();
    req.B = o->micro_batch; req.seq = o->seq; req.K = o->accum; exec_user(&req.user, &o->lora, o->clip > 0);
    tt_plan p = min_plan(req);
    tt_exec *e;
    int rc = exec_create(&e, g_st, &p, o->seed, NULL);
    if (rc) return rc;
    if (fault_nth) exec_inject_io_fault(e, fault_nth, EIO);
    rc = train_run(o, e, train, val, res);
    exec_free(e);
    return rc;
}

static tt_train_opts train_opts(const char *out) {
    tt_train_opts o = {0};
    o.model_path = g_store;
    o.out_dir = out;
    o.lora = (tt_lora_cfg){4, 8.f, 0.f, LORA_ALL_TARGETS, 0};
    o.seed = 7;
    o.steps = 4; o.seq = 8; o.micro_batch = 1; o.accum = 2; o.warmup = 1;
    o.lr = 5e-3f; o.min_lr = 5e-4f; o.b1 = 0.9f; o.b2 = 0.999f; o.eps = 1e-8f;
    o.save_every = 1; o.eval_every = 0; o.eval_tokens = 32; o.quiet = 1;
    return o;
}

static void test_train_fault(const char *dir) {
    uint32_t tok[1200];
    tt_rng r;
    rng_seed(&r, 5, 6);
    for (int i = 0; i < 1200; i++) tok[i] = (uint32_t)rng_below(&r, 32);
    tt_tokens train = {.t = tok, .n = 1000}, val = {.t = tok + 1000, .n = 200};
    char a[600], b[600], fa[700], fb[700], keep[700], ad[700], adkeep[700];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    tt_train_result res;
    /* reference: 4 steps in one run */
    tt_train_opts o = train_opts(a);
    CHECK_MSG(run_train(&o, &train, &val, 0, &res) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 4);
    /* 2 steps, a checkpoint after each */
    o = train_opts(b);
    o.stop_after = 2;
    CHECK_MSG(run_train(&o, &train, &val, 0, &res) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 2);
    snprintf(fb, sizeof fb, "%s/%s", b, CKPT_FILE);
    snprintf(keep, sizeof keep, "%s/ckpt.keep", dir);
    snprintf(ad, sizeof ad, "%s/adapter_model.safetensors", b);
    snprintf(adkeep, sizeof adkeep, "%s/adapter.keep", dir);
    uint64_t n;
    uint8_t *x = fixture_slurp(fb, &n);
    CHECK(x != NULL);
    if (x) { fixture_spit(keep, x, n); free(x); }
    x = fixture_slurp(ad, &n);
    CHECK(x != NULL);
    if (x) { fixture_spit(adkeep, x, n); free(x); }
    /* resume; step 3's third layer load (its first eviction) fails */
    o = train_opts(b);
    o.resume_dir = b;
    tt_seterr("(no message)");
    int rc = run_train(&o, &train, &val, 3, &res);
    CHECK_MSG(rc == -EIO, "train_run returned %d: %s", rc, tt_lasterr());
    const char *msg = tt_lasterr();
    CHECK_MSG(strstr(msg, "step 3 failed") && strstr(msg, "last checkpoint") && strstr(msg, "intact") &&
                  strstr(msg, g_store) && strstr(msg, "offset"),
              "message: %s", msg);
    CHECK_MSG(res.steps_done < 3, "steps_done %d after a failed step 3", res.steps_done);
    CHECK_MSG(fixture_same_file(keep, fb), "the failed step changed %s", fb);
    CHECK_MSG(fixture_same_file(adkeep, ad), "the failed step changed %s", ad);
    /* the intact checkpoint resumes to the same weights as the uninterrupted run */
    CHECK_MSG(run_train(&o, &train, &val, 0, &res) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 4);
    snprintf(fa, sizeof fa, "%s/%s", a, CKPT_FILE);
    CHECK_MSG(fixture_same_file(fa, fb), "resumed after a failed step: checkpoint differs from the uninterrupted run");
    /* (which can fail: step 2's checkpoint is not step 4's) */
    CHECK(!fixture_same_file(fa, keep));
}

/* ---- c. the trace ------------------------------------------------------------- */

static int tid_of(json_t *events, const char *track) {
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        const char *nm = json_string_value(json_object_get(ev, "name"));
        const char *an = json_string_value(json_object_get(json_object_get(ev, "args"), "name"));
        if (ph && nm && an && !strcmp(ph, "M") && !strcmp(nm, "thread_name") && !strcmp(an, track))
            return (int)json_integer_value(json_object_get(ev, "tid"));
    }
    return -1;
}

static void test_trace(const char *dir) {
    tt_plan_req req = base_req();
    req.no_host_cache = 1;
    tier_store *s;
    TT_ASSERT(tier_open(&s, g_store) == 0);
    uint64_t dev, host;
    plan_minimum(s, &req, &dev, &host);
    /* room for a few activations on the device: the others spill */
    req.hbm = dev + 5 * (uint64_t)req.B * req.seq * 64 * sizeof(tt_real);
    tt_plan p;
    CHECK_MSG(plan_make(s, &req, &p) == 0, "%s", tt_lasterr());
    tier_close(s);
    CHECK_MSG(p.dev_cells > 0 && p.host_cells > 0 && p.slots < NL, "plan: %d slots, %d cells on device, %d spilled",
              p.slots, p.dev_cells, p.host_cells);
    tt_trace *t = trace_create(1 << 14);
    tt_exec *e;
    TT_ASSERT(exec_create(&e, g_st, &p, 3, t) == 0);
    CHECK(step(e, 1) == 0);
    trace_step_begin(t, tt_now());
    CHECK(step(e, 2) == 0);
    tt_trace_stats st;
    trace_step_stats(t, tt_now(), &st);
    CHECK_MSG(st.io_busy > 0 && st.compute_busy > 0 && st.n_events > 0, "step 2: io %g s, compute %g s, %zu events",
              st.io_busy, st.compute_busy, st.n_events);
    CHECK_MSG(st.overlap_eff > 0 && st.overlap_eff <= 1 + 1e-9, "overlap_eff %g", st.overlap_eff);
    CHECK_MSG(st.io_busy <= st.step_time + 1e-9 && st.compute_busy <= st.step_time + 1e-9,
              "busy longer than the step: io %g, compute %g, step %g", st.io_busy, st.compute_busy, st.step_time);
    char path[700];
    snprintf(path, sizeof path, "%s/trace.json", dir);
    exec_free(e); /* every event is recorded now */
    CHECK_MSG(trace_write_chrome(t, path) == 0, "%s", tt_lasterr());
    size_t recorded = trace_n_events(t);
    CHECK(trace_n_dropped(t) == 0);
    trace_free(t);

    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECK_MSG(root != NULL, "%s is not valid JSON: line %d: %s", path, jerr.line, jerr.text);
    if (!root) return;
    json_t *events = json_object_get(root, "traceEvents");
    CHECK(json_is_array(events));
    if (!json_is_array(events)) { json_decref(root); return; }
    int tio = tid_of(events, "io"), tcomp = tid_of(events, "compute"), tspill = tid_of(events, "spill");
    CHECK_MSG(tio >= 0 && tcomp >= 0 && tspill >= 0 && tio != tcomp && tspill != tio && tspill != tcomp,
              "tids: io %d, compute %d, spill %d", tio, tcomp, tspill);
    size_t i, n_x = 0, n_io = 0, n_comp = 0, n_spill = 0, n_unspill = 0, bad = 0;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        if (!ph || strcmp(ph, "X") != 0) continue;
        n_x++;
        json_t *ts = json_object_get(ev, "ts"), *dur = json_object_get(ev, "dur");
        const char *name = json_string_value(json_object_get(ev, "name"));
        int tid = (int)json_integer_value(json_object_get(ev, "tid"));
        if (!json_is_number(ts) || !json_is_number(dur) || json_number_value(ts) < 0 || json_number_value(dur) < 0 ||
            !name || !json_is_string(json_object_get(ev, "cat"))) {
            if (bad++ < 3) fprintf(stderr, "bad X event %zu\n", i);
            continue;
        }
        if (tid == tio) n_io++;
        if (tid == tcomp) n_comp++;
        if (tid == tspill && !strcmp(name, "spill")) n_spill++;
        if (tid == tspill && !strcmp(name, "unspill")) n_unspill++;
    }
    CHECK_MSG(bad == 0, "%zu complete events lack name/cat or have ts or dur < 0", bad);
    /* no host cache: both steps read their layers; 6 layers x 2 micro-batches forward and backward */
    CHECK_MSG(n_io >= 2 * (size_t)(2 * NL - 2 * p.slots), "%zu io events", n_io);
    CHECK_MSG(n_comp >= 2 * 2 * (size_t)NL * 2, "%zu compute events", n_comp);
    /* every host cell spills its checkpoint and its gradient each step; all of
     * step 1's and step 2's checkpoints were read back before the end */
    CHECK_MSG(n_spill >= 3 * (size_t)p.host_cells && n_unspill > 0, "%zu spills, %zu unspills for %d spilled cells",
              n_spill, n_unspill, p.host_cells);
    json_t *other = json_object_get(root, "otherData");
    CHECK_EQ_INT(json_integer_value(json_object_get(other, "events")), recorded);
    CHECK_EQ_INT(n_x, recorded);
    fprintf(stderr, "c. trace: %zu events (io %zu, compute %zu, spill %zu, unspill %zu); step 2 overlap_eff %.3f\n", n_x,
            n_io, n_comp, n_spill, n_unspill, st.overlap_eff);
    json_decref(root);
}

/* ---- d. the planner ------------------------------------------------------------ */

static void test_planner(void) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, g_store) == 0);
    tt_plan_req req = base_req();
    uint64_t min_dev, min_host;
    plan_minimum(s, &req, &min_dev, &min_host);
    tt_plan p;
    char need[32];
    tt_fmt_bytes(tt_align_up(min_dev, 1 << 20), need, sizeof need);
    /* --hbm below the smallest plan */
    uint64_t small[] = {min_dev - 1, min_dev / 2, 1};
    for (int i = 0; i < 3; i++) {
        tt_plan_req r = req;
        r.hbm = small[i];
        tt_seterr("(no message)");
        CHECK_EQ_INT(plan_make(s, &r, &p), -ENOSPC);
        CHECK_MSG(strstr(tt_lasterr(), "--hbm") && strstr(tt_lasterr(), "needs --hbm") && strstr(tt_lasterr(), need),
                  "--hbm %llu: message lacks 'needs --hbm %s': %s", (unsigned long long)r.hbm, need, tt_lasterr());
    }
    /* exactly the smallest, and the rounded budget the message names, are accepted */
    tt_plan_req r = req;
    r.hbm = min_dev;
    CHECK_MSG(plan_make(s, &r, &p) == 0, "%s", tt_lasterr());
    CHECK(p.slots == 2 && p.dev_cells == 0 && p.host_cells == NL * req.K && !p.head_on_device && p.dev_bytes == min_dev);
    r.hbm = tt_align_up(min_dev, 1 << 20);
    CHECK_MSG(plan_make(s, &r, &p) == 0, "%s", tt_lasterr());
    CHECK(p.dev_bytes <= r.hbm);
    /* --host below what any plan needs: the staging buffer and the embedding
     * (an unlimited --hbm keeps every activation on the device) */
    tt_plan res;
    TT_ASSERT(plan_make(s, &req, &res) == 0);
    r = req;
    r.host = res.host_bytes / 2;
    tt_seterr("(no message)");
    CHECK_EQ_INT(plan_make(s, &r, &p), -ENOSPC);
    CHECK_MSG(strstr(tt_lasterr(), "--host") != NULL, "%s", tt_lasterr());
    /* ... and with --hbm at the smallest too, every activation spills: below min_host is refused */
    r.hbm = min_dev;
    r.host = min_host - 1;
    CHECK_EQ_INT(plan_make(s, &r, &p), -ENOSPC);
    CHECK_MSG(strstr(tt_lasterr(), "--host") && strstr(tt_lasterr(), "needs --host"), "%s", tt_lasterr());
    r.host = min_host;
    CHECK_MSG(plan_make(s, &r, &p) == 0, "%s", tt_lasterr());
    CHECK(p.host_bytes <= min_host && p.dev_bytes <= min_dev);
    /* unlimited: everything resident */
    CHECK(res.slots == NL && res.L == NL && res.dev_cells == NL * req.K && res.host_cells == 0 && res.head_on_device &&
          !res.host_cache && res.prefetch == (NL - 1 < 4 ? NL - 1 : 4) && res.io_bytes_step == 0);
    CHECK(res.host_bytes < min_host && res.dev_bytes > min_dev);
    tier_close(s);
}

int main(void) {
    alarm(20); /* a hang (a thread waiting for a load that never comes) fails the test */
    char *dir = fixture_tmpdir();
    char store[600];
    snprintf(store, sizeof store, "%s/micro6.tier", dir);
    g_store = store;
    tt_config c;
    micro6_config(&c);
    CHECK(fixture_write_model(store, &c, TT_DTYPE_F32, 0.05f, 1) == 0);
    TT_ASSERT(tier_open(&g_st, store) == 0);
    test_planner();
    test_io_fault();
    setenv("TT_IO_ENGINE", "threads", 1); /* the same faults through the pread threads (io/uring.h) */
    fprintf(stderr, "a. again, read by the pread threads (TT_IO_ENGINE=threads)\n");
    test_io_fault();
    unsetenv("TT_IO_ENGINE");
    test_train_fault(dir);
    test_trace(dir);
    tier_close(g_st);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
