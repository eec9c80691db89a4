/* tests/test_fullstream.c — streamed full training (core/fulltrain.c on
 * sched/stream.h with req.trainable) against the resident run, bit for bit:
 * the `small` preset's width with 6 of its 16 layers (enough for three
 * distinct plans; each layer is another copy of the same code), trained for a few steps
 * resident, then streamed with every layer on the device, at the smallest
 * plan (2 layer slots, every activation spilled to the host), between the
 * two, and on the asynchronous CPU backend (real events and random delays:
 * a load that does not wait for a layer's write-back reads stale weights);
 * then with GaLore on the projections (its states in the host arena) at the
 * smallest plan on cpu-async and half way; a bf16 store (f32 master copies
 * in the host cache). Every written store must equal the resident one byte
 * for byte. Checkpoints: stopped after step N and resumed == one run, and
 * the same file from both runs. Also the streamed run's refusal of a
 * gradient clip. */
#include "core/base/common.h"
#include "core/fulltrain.h"
#include "io/storeio.h"
#include "sched/plan.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define NTOK 20000

/* Under AddressSanitizer (CI runs every test twice) only the asynchronous runs at the smallest plans and the
 * two stop-and-resume runs: they touch every path (loads, spills, write-backs, GaLore's state moves,
 * checkpoints); the plain build runs all of them. */
#if defined(__SANITIZE_ADDRESS__)
#define ALL_BUDGETS 0
#else
#define ALL_BUDGETS 1
#endif

static tt_full_opts opts(const char *src, const char *out) {
    tt_full_opts o = {0};
    o.model_path = src; o.out_path = out; o.seed = 5;
    o.steps = 3; o.seq = 32; o.micro_batch = 2; o.accum = 2; o.warmup = 1;
    o.lr = 3e-3f; o.min_lr = 1e-3f; o.wd = 0.01f; o.b1 = 0.9f; o.b2 = 0.999f; o.eps = 1e-8f;
    o.clip = 0; /* the streamed run steps each layer after its backward: no global clipping */
    o.eval_every = 0; o.eval_tokens = 256; o.quiet = 1;
    return o;
}

static void streamed(const char *what, tt_full_opts o, uint64_t hbm, const char *ref, const tt_tokens *train,
                     const tt_tokens *val, int *slots) {
    o.stream = 1;
    o.hbm = hbm;
    tt_plan p;
    int rc = fulltrain_plan(&o, &p, NULL, NULL);
    CHECK_MSG(rc == 0, "%s: %s", what, tt_lasterr());
    if (rc) return;
    *slots = p.slots;
    tt_train_result res;
    rc = fulltrain_run(&o, train, val, &res);
    CHECK_MSG(rc == 0, "%s: %s", what, tt_lasterr());
    CHECK_EQ_INT(res.steps_done, o.steps);
    int same = rc == 0 && fixture_same_file(ref, o.out_path);
    CHECK_MSG(same, "%s: the streamed store differs from the resident one", what);
    fprintf(stderr, "%-44s %2d of %d layers on the device, %3d of %d activations spilled, device %.1f MiB, host "
            "%.1f MiB: %s\n", what, p.slots, p.L, p.host_cells, p.host_cells + p.dev_cells,
            (double)p.dev_bytes / (1 << 20), (double)p.host_bytes / (1 << 20), same ? "identical" : "DIFFERENT");
}

int main(void) {
    char *dir = fixture_tmpdir();
    char src[600], ref[600], out[600], bsrc[600];
    snprintf(src, sizeof src, "%s/small.tier", dir);
    snprintf(ref, sizeof ref, "%s/resident.tier", dir);
    snprintf(bsrc, sizeof bsrc, "%s/small-bf16.tier", dir);
    tt_config c;
    CHECK(config_preset("small", &c) == 0);
    c.n_layers = 6;
    CHECK(fixture_write_model(src, &c, TT_DTYPE_F32, 0.05f, 3) == 0);
    uint32_t *tok = tt_xmalloc(NTOK * sizeof *tok);
    tt_rng r;
    rng_seed(&r, 7, 0);
    for (int i = 0; i < NTOK; i++) tok[i] = rng_below(&r, 6) == 0 ? (uint32_t)rng_below(&r, c.vocab) : (uint32_t)((i * 7) % 97);
    tt_tokens train = {.t = tok, .n = NTOK - 2000}, val = {.t = tok + NTOK - 2000, .n = 2000};

    tt_full_opts o = opts(src, ref);
    tt_train_result res;
    int rc = fulltrain_run(&o, &train, &val, &res);
    CHECK_MSG(rc == 0, "resident: %s", tt_lasterr());
    CHECK(res.last_loss < res.first_loss);
    fprintf(stderr, "resident: train loss %.4f -> %.4f\n", res.first_loss, res.last_loss);

    /* the budgets: the smallest plan, everything on the device, and between */
    uint64_t min_dev = 0, min_host = 0;
    tt_plan all;
    o.stream = 1;
    CHECK(fulltrain_plan(&o, &all, &min_dev, &min_host) == 0);
    o.stream = 0;
    int s_all = 0, s_min = 0, s_mid = 0, s_async = 0;
    if (ALL_BUDGETS) {
        snprintf(out, sizeof out, "%s/s-all.tier", dir);
        o.out_path = out;
        streamed("streamed, no budget", o, 0, ref, &train, &val, &s_all);
        snprintf(out, sizeof out, "%s/s-min.tier", dir);
        o.out_path = out;
        streamed("streamed, the smallest plan", o, min_dev, ref, &train, &val, &s_min);
        snprintf(out, sizeof out, "%s/s-mid.tier", dir);
        o.out_path = out;
        streamed("streamed, half way", o, (min_dev + all.dev_bytes) / 2, ref, &train, &val, &s_mid);
        CHECK_MSG(s_min == 2 && s_mid > s_min && s_all == (int)c.n_layers && s_mid < s_all,
                  "the budgets did not give three plans (slots %d, %d, %d)", s_min, s_mid, s_all);
    }
    be_use(backend_cpu_async());
    snprintf(out, sizeof out, "%s/s-async.tier", dir);
    o.out_path = out;
    streamed("streamed, the smallest plan, cpu-async", o, min_dev, ref, &train, &val, &s_async);
    be_use(backend_cpu());
    CHECK_EQ_INT(s_async, 2);

    /* GaLore on the projections (rank 16, a new projector every 2 steps: at steps 1 and 3), AdamW on the rest:
     * its states in the host arena, each matrix's on the device for its step */
    char gref[600];
    snprintf(gref, sizeof gref, "%s/galore-resident.tier", dir);
    tt_full_opts g = opts(src, gref);
    g.optim = FULL_OPTIM_GALORE;
    g.galore = (tt_galore_cfg){16, 2, 0.25f, 5};
    g.lr = 1e-2f;
    rc = fulltrain_run(&g, &train, &val, &res);
    CHECK_MSG(rc == 0, "resident GaLore: %s", tt_lasterr());
    CHECK(!fixture_same_file(ref, gref));
    int gs_min = 0, gs_mid = 0;
    {
        uint64_t gmin = 0, ghost = 0;
        g.stream = 1;
        CHECK(fulltrain_plan(&g, NULL, &gmin, &ghost) == 0);
        g.stream = 0;
        be_use(backend_cpu_async());
        snprintf(out, sizeof out, "%s/g-min-async.tier", dir);
        g.out_path = out;
        streamed("GaLore streamed, the smallest plan, cpu-async", g, gmin, gref, &train, &val, &gs_min);
        be_use(backend_cpu());
        CHECK_EQ_INT(gs_min, 2);
        if (ALL_BUDGETS) {
            snprintf(out, sizeof out, "%s/g-mid.tier", dir);
            g.out_path = out;
            streamed("GaLore streamed, half way", g, (gmin + all.dev_bytes) / 2, gref, &train, &val, &gs_mid);
            CHECK(gs_mid > 2);
        }
    }

    /* checkpoints: stopped after step N and resumed to the end == the run in one go. Resident AdamW stops at 1;
     * streamed AdamW at 1 writes the same checkpoint file; streamed GaLore stops at 2, right before a projector
     * refresh, and resumes on the smallest plan */
    {
        char ck1[600], ck2[600], ck3[600], f1[600];
        snprintf(ck1, sizeof ck1, "%s/ck-resident", dir);
        snprintf(ck2, sizeof ck2, "%s/ck-streamed", dir);
        snprintf(ck3, sizeof ck3, "%s/ck-galore", dir);
        tt_full_opts a = opts(src, out);
        snprintf(out, sizeof out, "%s/r-stop.tier", dir);
        a.ckpt_dir = ck1;
        a.stop_after = 1;
        CHECK(fulltrain_run(&a, &train, &val, &res) == 0 && res.steps_done == 1);
        a.stop_after = 0;
        a.resume_dir = ck1;
        snprintf(out, sizeof out, "%s/r-resumed.tier", dir);
        rc = fulltrain_run(&a, &train, &val, &res);
        CHECK_MSG(rc == 0, "resident resume: %s", tt_lasterr());
        CHECK_MSG(fixture_same_file(ref, out), "resident: stopped at 1 and resumed differs from 3 steps in one go");
        if (ALL_BUDGETS) {
            tt_full_opts b = opts(src, out);
            snprintf(out, sizeof out, "%s/s-stop.tier", dir);
            b.stream = 1;
            b.hbm = min_dev;
            b.ckpt_dir = ck2;
            b.stop_after = 1;
            CHECK(fulltrain_run(&b, &train, &val, &res) == 0);
            char a1[700], a2[700];
            snprintf(a2, sizeof a2, "%s/checkpoint.bin", ck2);
            snprintf(f1, sizeof f1, "%s/ck-resident-1", dir); /* ck1 holds step 3 now: a fresh stop at 1 */
            a = opts(src, out);
            snprintf(out, sizeof out, "%s/r-stop2.tier", dir);
            a.ckpt_dir = f1;
            a.stop_after = 1;
            CHECK(fulltrain_run(&a, &train, &val, &res) == 0);
            snprintf(a1, sizeof a1, "%s/checkpoint.bin", f1);
            CHECK_MSG(fixture_same_file(a1, a2), "the resident and the streamed run wrote different checkpoints at step 1");
        }
        g.stream = 1;
        g.hbm = 0;
        uint64_t gmin = 0, ghost = 0;
        CHECK(fulltrain_plan(&g, NULL, &gmin, &ghost) == 0);
        g.hbm = gmin;
        g.ckpt_dir = ck3;
        g.stop_after = 2;
        snprintf(out, sizeof out, "%s/g-stop.tier", dir);
        g.out_path = out;
        CHECK(fulltrain_run(&g, &train, &val, &res) == 0 && res.steps_done == 2);
        g.stop_after = 0;
        g.resume_dir = ck3;
        snprintf(out, sizeof out, "%s/g-resumed.tier", dir);
        rc = fulltrain_run(&g, &train, &val, &res);
        CHECK_MSG(rc == 0, "GaLore streamed resume: %s", tt_lasterr());
        CHECK_MSG(fixture_same_file(gref, out), "GaLore streamed: stopped at 2 and resumed differs from the resident run");
        /* a checkpoint of another optimizer is refused */
        a = opts(src, out);
        snprintf(out, sizeof out, "%s/never2.tier", dir);
        a.resume_dir = ck3;
        CHECK(fulltrain_run(&a, &train, &val, &res) == -EINVAL && strstr(tt_lasterr(), "another optimizer"));
        fprintf(stderr, "checkpoints: resident stop at 1 + resume == 3 steps;%s GaLore streamed stop at 2 + resume == "
                "resident GaLore\n", ALL_BUDGETS ? " streamed and resident checkpoints at step 1 identical;" : "");
    }

    /* distillation from a teacher (another small model) on its own stream: resident == streamed, the teacher's
     * smallest plan taken from the student's budget */
    if (ALL_BUDGETS) {
        char tsrc[600], dref[600];
        snprintf(tsrc, sizeof tsrc, "%s/teacher.tier", dir);
        snprintf(dref, sizeof dref, "%s/kd-resident.tier", dir);
        CHECK(fixture_write_model(tsrc, &c, TT_DTYPE_F32, 0.05f, 11) == 0);
        tt_full_opts k = opts(src, dref);
        k.teacher_path = tsrc;
        k.distill_weight = 0.5f;
        k.distill_temp = 2.0f;
        rc = fulltrain_run(&k, &train, &val, &res);
        CHECK_MSG(rc == 0, "resident distillation: %s", tt_lasterr());
        CHECK(!fixture_same_file(ref, dref));
        int sk = 0;
        snprintf(out, sizeof out, "%s/kd-streamed.tier", dir);
        k.out_path = out;
        streamed("distillation, streamed (teacher streamed too)", k, min_dev * 3 / 2, dref, &train, &val, &sk);
        CHECK_MSG(sk >= 2 && sk < (int)c.n_layers, "distillation: %d of %u layers on the device: not streamed", sk,
                  c.n_layers);
    }

    /* a refusal, with nothing written: a gradient clip */
    snprintf(out, sizeof out, "%s/never.tier", dir);
    o.out_path = out;
    o.stream = 1;
    o.clip = 1;
    CHECK(fulltrain_run(&o, &train, &val, &res) == -EINVAL);
    CHECK(strstr(tt_lasterr(), "--clip 0") != NULL);
    CHECK(access(out, F_OK) != 0);
    o.clip = 0;

    /* a bf16 store: its layers widened to f32 master weights in the host cache; the trained store keeps bf16 and
     * equals the resident run's (which widens them on the device) */
    uint32_t *dt = tt_xcalloc(config_n_tensors(&c), sizeof *dt);
    store_default_dtypes(&c, TT_DTYPE_BF16, TT_DTYPE_BF16, dt);
    fixture_fill_ctx fc = {4, 0.05f};
    tier_write_opts wo = {dt, NULL, 0, NULL};
    CHECK(store_write(bsrc, &c, &wo, fixture_fill, &fc) == 0);
    if (ALL_BUDGETS) {
        char bref[600];
        snprintf(bref, sizeof bref, "%s/bf16-resident.tier", dir);
        tt_full_opts bo = opts(bsrc, bref);
        rc = fulltrain_run(&bo, &train, &val, &res);
        CHECK_MSG(rc == 0, "resident bf16: %s", tt_lasterr());
        uint64_t bmin = 0, bhost = 0;
        bo.stream = 1;
        CHECK(fulltrain_plan(&bo, NULL, &bmin, &bhost) == 0);
        bo.stream = 0;
        int sb = 0;
        snprintf(out, sizeof out, "%s/bf16-streamed.tier", dir);
        bo.out_path = out;
        streamed("bf16 store, streamed, the smallest plan", bo, bmin, bref, &train, &val, &sb);
        store_reader r1;
        CHECK(store_reader_open(&r1, out) == 0);
        CHECK(store_reader_dtype(&r1, 5) == TT_DTYPE_BF16);
        store_reader_close(&r1);
    }
    free(dt);
    free(tok);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
