/* tests/test_train.c — the training loop: resume is bit-exact (N steps, then
 * resume to N+M, gives the same LoRA weights and optimizer state as N+M steps
 * in one run), a missing/corrupt/foreign checkpoint is refused with a clear
 * message, the learning-rate schedule, that training lowers the loss on
 * data with structure, and the budget check after the first step (a backend
 * that measures more device memory in use than --hbm stops the run with the
 * option named, nothing written). */
#include "core/base/common.h"
#include "core/lora.h"
#include "core/model.h"
#include "core/train.h"
#include "core/tokfile.h"
#include "io/ckpt.h"
#include "io/peft.h"
#include "core/exec.h"
#include "tests/fixtures.h"
#include "tests/test.h"
#include "tests/train_run.h"

#include <errno.h>
#include <unistd.h>


static tt_train_opts base_opts(const char *model, const char *out) {
    tt_train_opts o = {0};
    o.model_path = model;
    o.out_dir = out;
    o.lora = (tt_lora_cfg){4, 8.f, 0.1f, LORA_ALL_TARGETS, 0};
    o.seed = 9;
    o.steps = 6; o.seq = 8; o.micro_batch = 2; o.accum = 2; o.warmup = 2;
    o.lr = 5e-3f; o.min_lr = 5e-4f; o.b1 = 0.9f; o.b2 = 0.999f; o.eps = 1e-8f; o.clip = 1.0f; o.wd = 0.01f;
    o.eval_every = 2; o.eval_tokens = 64; o.quiet = 1;
    return o;
}

/* Tokens with structure: a repeating pattern with noise, so a few steps of
 * training must lower the loss. */
static uint32_t *make_tokens(uint64_t n, uint32_t vocab) {
    uint32_t *t = malloc(n * sizeof *t);
    tt_rng r;
    rng_seed(&r, 1, 2);
    for (uint64_t i = 0; i < n; i++) t[i] = rng_uniform(&r) < 0.1 ? (uint32_t)rng_below(&r, vocab) : (uint32_t)((i * 7) % 11);
    return t;
}

/* The CPU backend with a measured device use (the CUDA backend's NVML figure). */
static uint64_t g_fake_used;
static int fake_in_use(uint64_t *b) {
    *b = g_fake_used;
    return 0;
}

static void test_budget_after_step1(const char *model, const char *dir, const tt_tokens *train, const tt_tokens *val) {
    tt_backend fake = *backend_cpu();
    fake.dev_in_use = fake_in_use;
    be_use(&fake);
    char out[700], f[800];
    snprintf(out, sizeof out, "%s/budget", dir);
    tt_train_opts o = base_opts(model, out);
    o.steps = 3;
    o.hbm = (uint64_t)64 << 20;
    g_fake_used = o.hbm + 1;
    tt_train_result res;
    CHECK(test_run_train(model, &o, train, val, &res) != 0);
    CHECK_MSG(strstr(tt_lasterr(), "--hbm") && strstr(tt_lasterr(), "after the first step"), "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 0);
    snprintf(f, sizeof f, "%s/adapter_model.safetensors", out);
    CHECK(access(f, F_OK) != 0);
    g_fake_used = o.hbm; /* at the budget: fine, and reported */
    CHECK_MSG(test_run_train(model, &o, train, val, &res) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 3);
    CHECK(res.dev_in_use == o.hbm);
    be_use(backend_cpu());
}

/* Examples (version-2 data): three examples of 5, 12 and 3 tokens (ids 100 + position, so a row tells where it
 * comes from); targets are the flagged tokens. Every sampled row is one example from its start: its tokens
 * predicting the next, weight = the next token's target flag, padding (target -1, weight 0) after its end or
 * after S + 1 of its tokens. Evaluation scores each example once, in order, normalised by the targets. */
static double g_eval_rows_weight;
static int fake_eval(void *ctx, const int32_t *in, const int32_t *tgt, const tt_real *wt, double *loss) {
    int n = *(int *)ctx;
    double s = 0;
    for (int i = 0; i < n; i++) {
        CHECK(wt[i] == 0 || tgt[i] >= 0);
        s += wt[i] * (tgt[i] >= 0 ? 2.0 : 100.0); /* 2 nats per scored target */
    }
    g_eval_rows_weight += s / 2;
    *loss = s;
    return 0;
}

static void test_examples(void) {
    enum { N = 20, S = 8, B = 4 };
    uint32_t tok[N];
    uint8_t fl[N] = {0};
    for (int i = 0; i < N; i++) tok[i] = 100 + (uint32_t)i;
    fl[0] = fl[5] = fl[17] = TOKFILE_START;
    fl[3] = fl[4] = TOKFILE_TRAIN;                                /* example 0: its last two */
    for (int i = 10; i < 17; i++) fl[i] |= TOKFILE_TRAIN;         /* example 1: 10..16, of which 10..13 lie within S + 1 */
    tt_tokens t = {.t = tok, .n = N, .flags = fl};                 /* example 2 (17..19): no target */
    train_index_examples(&t);
    CHECK(t.n_ex == 3 && t.starts[0] == 0 && t.starts[1] == 5 && t.starts[2] == 17);
    uint64_t cut, untrained, lost;
    train_example_stats(&t, S, &cut, &untrained, &lost);
    CHECK(cut == 1 && untrained == 1 && lost == 3); /* example 1's targets 14..16 lie past S + 1 */
    int32_t in[B * S], tgt[B * S];
    tt_real wt[B * S];
    int seen[3] = {0};
    for (int step = 1; step <= 20; step++) {
        train_sample_batch(&t, 5, step, 0, B, S, in, tgt, wt, NULL);
        for (int b = 0; b < B; b++) {
            int s = in[b * S] - 100, e = s == 0 ? 5 : s == 5 ? 17 : 20;
            CHECK_MSG(s == 0 || s == 5 || s == 17, "a row starts at %d, not at an example", s);
            seen[s == 0 ? 0 : s == 5 ? 1 : 2]++;
            for (int k = 0; k < S; k++) {
                int p = s + k, ok = p + 1 < e;
                CHECK(tgt[b * S + k] == (ok ? 100 + p + 1 : -1));
                CHECK(wt[b * S + k] == (ok && (fl[p + 1] & TOKFILE_TRAIN) ? 1 : 0));
                if (ok) CHECK(in[b * S + k] == 100 + p);
            }
        }
    }
    CHECK(seen[0] && seen[1] && seen[2]);
    /* a pure function of (seed, step, micro): the same rows again */
    int32_t in2[B * S], tgt2[B * S];
    tt_real wt2[B * S];
    train_sample_batch(&t, 5, 20, 0, B, S, in2, tgt2, wt2, NULL);
    CHECK(memcmp(in, in2, sizeof in) == 0 && memcmp(wt, wt2, sizeof wt) == 0);
    /* evaluation: 2 + 4 targets (example 1 is cut after S + 1 tokens), mean 2 nats */
    int n = 2 * S;
    double loss;
    g_eval_rows_weight = 0;
    CHECK(train_eval_with(fake_eval, &n, 2, S, 1, &t, 1000, &loss) == 0);
    CHECK_NEAR(loss, 2.0, 1e-12);
    CHECK_NEAR(g_eval_rows_weight, 6.0, 1e-12);
    /* packed rows of 8: each segment is a whole example from its start (the first may be cut at 8), its
     * tokens predicting the next within it, its last one nothing; the segments tile the row in order */
    int32_t seg[B * S];
    int packed_twice = 0;
    for (int step = 1; step <= 30; step++) {
        train_sample_batch(&t, 7, step, 1, B, S, in, tgt, wt, seg);
        for (int b = 0; b < B; b++) {
            const int32_t *I = in + b * S, *G = tgt + b * S, *Z = seg + b * S;
            const tt_real *W = wt + b * S;
            int segs = 0;
            for (int a = 0; a < S;) {
                int e = a;
                while (e < S && Z[e] == a) e++;
                CHECK_MSG(e > a, "row %d: position %d starts no segment (seg %d)", b, a, Z[a]);
                if (e == a) break;
                int s0 = I[a] - 100, end = s0 == 0 ? 5 : s0 == 5 ? 17 : s0 == 17 ? 20 : -1;
                if (end < 0) { /* padding: no target */
                    for (int p = a; p < e; p++) CHECK(G[p] == -1 && W[p] == 0);
                } else {
                    segs++;
                    for (int p = a; p < e; p++) {
                        int tokpos = s0 + (p - a), ok = tokpos + 1 < end && !(p == e - 1 && e - a == end - s0);
                        CHECK(I[p] == 100 + tokpos);
                        CHECK_MSG(G[p] == (ok ? 100 + tokpos + 1 : -1), "row %d pos %d: target %d", b, p, G[p]);
                        CHECK(W[p] == (ok && (fl[tokpos + 1] & TOKFILE_TRAIN) ? 1 : 0));
                    }
                }
                a = e;
            }
            packed_twice += segs >= 2;
        }
    }
    CHECK_MSG(packed_twice > 0, "no row held two examples");
    train_free_examples(&t);
}

int main(void) {
    char *dir = fixture_tmpdir();
    char model[600], a[600], b[600], fa[700], fb[700];
    snprintf(model, sizeof model, "%s/micro.tier", dir);
    tt_config c;
    fixture_micro_config(&c);
    CHECK(fixture_write_model(model, &c, TT_DTYPE_NF4DQ, 0.2f, 3) == 0);
    uint32_t *tok = make_tokens(4000, c.vocab);
    tt_tokens train = {.t = tok, .n = 3500}, val = {.t = tok + 3500, .n = 500};
    tt_train_result res;
    test_budget_after_step1(model, dir, &train, &val);
    test_examples();

    /* Schedule: warmup then cosine to min_lr. */
    tt_train_opts o = base_opts(model, "x");
    CHECK_NEAR(train_lr(&o, 1), 2.5e-3, 1e-9);
    CHECK_NEAR(train_lr(&o, 2), 5e-3, 1e-9);
    CHECK_NEAR(train_lr(&o, 4), 5e-4 + 0.5 * (5e-3 - 5e-4), 1e-9);
    CHECK_NEAR(train_lr(&o, 6), 5e-4, 1e-9);

    /* The ETA: steps left at 1 s, validations left at 10 s (every --eval-every, a dynamic mixture's re-weights,
     * the last step; up to --stop-after). */
    {
        tt_train_opts e = o;
        e.steps = 40, e.eval_every = 10, e.stop_after = 0;
        CHECK_NEAR(train_eta_s(&e, 1, 0, 17, 1, 10), 23 + 3 * 10, 1e-9); /* 20, 30, 40 */
        CHECK_NEAR(train_eta_s(&e, 0, 0, 17, 1, 10), 23, 1e-9);          /* no validation data */
        e.stop_after = 25;
        CHECK_NEAR(train_eta_s(&e, 1, 0, 17, 1, 10), 8 + 2 * 10, 1e-9); /* 20, and 25 where it stops */
        e.steps = 20, e.stop_after = 0;
        CHECK_NEAR(train_eta_s(&e, 1, 4, 0, 1, 10), 20 + 6 * 10, 1e-9); /* 4, 8, 10, 12, 16, 20 */
        e.eval_every = 0;
        CHECK_NEAR(train_eta_s(&e, 1, 0, 5, 1, 10), 15 + 10, 1e-9);      /* the last step's alone */
        CHECK_NEAR(train_eta_s(&e, 1, 0, 20, 1, 10), 0, 1e-9);
    }

    /* A: 6 steps in one run. */
    snprintf(a, sizeof a, "%s/a", dir);
    o = base_opts(model, a);
    CHECK_MSG(test_run_train(model, &o, &train, &val, &res) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 6);
    CHECK_MSG(res.last_val < res.first_val - 0.05, "validation loss did not fall: %f -> %f", res.first_val, res.last_val);
    /* B: 3 steps (stopped as if interrupted), then resumed to 6. */
    snprintf(b, sizeof b, "%s/b", dir);
    o = base_opts(model, b);
    o.stop_after = 3;
    CHECK(test_run_train(model, &o, &train, &val, &res) == 0);
    CHECK_EQ_INT(res.steps_done, 3);
    o = base_opts(model, b);
    o.resume_dir = b;
    CHECK_MSG(test_run_train(model, &o, &train, &val, &res) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 6);
    snprintf(fa, sizeof fa, "%s/%s", a, CKPT_FILE);
    snprintf(fb, sizeof fb, "%s/%s", b, CKPT_FILE);
    CHECK_MSG(fixture_same_file(fa, fb), "resumed checkpoint differs from the uninterrupted run");
    snprintf(fa, sizeof fa, "%s/adapter_model.safetensors", a);
    snprintf(fb, sizeof fb, "%s/adapter_model.safetensors", b);
    CHECK_MSG(fixture_same_file(fa, fb), "resumed adapter differs from the uninterrupted run");
    /* The check can fail: a different seed gives different weights. */
    char d2[600];
    snprintf(d2, sizeof d2, "%s/c", dir);
    o = base_opts(model, d2);
    o.seed = 10;
    CHECK(test_run_train(model, &o, &train, &val, &res) == 0);
    snprintf(fb, sizeof fb, "%s/%s", d2, CKPT_FILE);
    snprintf(fa, sizeof fa, "%s/%s", a, CKPT_FILE);
    CHECK(!fixture_same_file(fa, fb));

    /* The exported adapter reads back with PEFT names and shapes. */
    peft_adapter ad;
    CHECK_MSG(peft_read(a, c.n_layers, &ad) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(ad.rank, 4);
    CHECK_EQ_INT(peft_at(&ad, 1, 6)->in, 96);
    CHECK_EQ_INT(peft_at(&ad, 1, 6)->out, 64);
    peft_free(&ad);

    /* --rslora: the adapter scaled by alpha / sqrt(r) (8 / 2 = 4 where alpha / r is 2), recorded in the
     * checkpoint and the adapter, and a resume without it refused */
    {
        tt_lora lo;
        tt_lora_cfg lc = {4, 8.f, 0.f, LORA_ALL_TARGETS, 1};
        CHECK(lora_init(&lo, &c, &lc, 1) == 0);
        CHECK_NEAR(lo.scale, 4.0, 0);
        lora_free(&lo);
        lc.rslora = 0;
        CHECK(lora_init(&lo, &c, &lc, 1) == 0);
        CHECK_NEAR(lo.scale, 2.0, 0);
        lora_free(&lo);
        char rs[600];
        snprintf(rs, sizeof rs, "%s/rslora", dir);
        o = base_opts(model, rs);
        o.lora.rslora = 1;
        o.stop_after = 3;
        CHECK_MSG(test_run_train(model, &o, &train, &val, &res) == 0, "%s", tt_lasterr());
        ckpt_state cs;
        void *cp;
        float *cm, *cv;
        CHECK(ckpt_read(rs, &cs, &cp, &cm, &cv) == 0 && cs.rslora == 1);
        free(cp); free(cm); free(cv);
        CHECK(peft_read(rs, c.n_layers, &ad) == 0 && ad.rslora == 1);
        peft_free(&ad);
        o = base_opts(model, rs);
        o.resume_dir = rs;
        CHECK(test_run_train(model, &o, &train, &val, &res) == -EINVAL);
        CHECK_MSG(strstr(tt_lasterr(), "LoRA shape") && strstr(tt_lasterr(), "--rslora"), "%s", tt_lasterr());
        o.lora.rslora = 1;
        CHECK_MSG(test_run_train(model, &o, &train, &val, &res) == 0, "%s", tt_lasterr());
        CHECK_EQ_INT(res.steps_done, 6);
        /* the scaling is not a no-op: the same seed without it trains other weights */
        snprintf(fa, sizeof fa, "%s/adapter_model.safetensors", a);
        snprintf(fb, sizeof fb, "%s/adapter_model.safetensors", rs);
        CHECK(!fixture_same_file(fa, fb));
    }

    /* Bad checkpoints. */
    o = base_opts(model, a);
    o.resume_dir = "/nonexistent/run";
    CHECK(test_run_train(model, &o, &train, &val, &res) != 0);
    CHECK(strstr(tt_lasterr(), "/nonexistent/run") != NULL);
    o.resume_dir = d2; /* other seed */
    CHECK(test_run_train(model, &o, &train, &val, &res) == -EINVAL);
    CHECK(strstr(tt_lasterr(), "other training options") != NULL);
    o = base_opts(model, a);
    o.lora.rank = 8;
    o.resume_dir = a;
    CHECK(test_run_train(model, &o, &train, &val, &res) == -EINVAL);
    CHECK(strstr(tt_lasterr(), "LoRA shape") != NULL);
    o.lora.rank = base_opts(model, a).lora.rank; /* other targets: both sets named */
    o.lora.targets = 1u << TT_PROJ_Q;
    CHECK(test_run_train(model, &o, &train, &val, &res) == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "LoRA shape") && strstr(tt_lasterr(), "on q_proj)"), "%s", tt_lasterr());
    /* other tokens, as many of them: the message does not call them other by their count */
    o = base_opts(model, a);
    o.resume_dir = a;
    uint32_t t0 = tok[0];
    tok[0] = t0 ? 0 : 1;
    CHECK(test_run_train(model, &o, &train, &val, &res) == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "as many tokens, 3500, but other ones"), "%s", tt_lasterr());
    tok[0] = t0;
    /* flip one byte of the checkpoint: refused, named */
    uint64_t n;
    snprintf(fa, sizeof fa, "%s/%s", a, CKPT_FILE);
    uint8_t *ck = fixture_slurp(fa, &n);
    TT_ASSERT(ck);
    ck[n / 2] ^= 1;
    FILE *f = fopen(fa, "wb");
    fwrite(ck, 1, n, f);
    fclose(f);
    o = base_opts(model, a);
    o.resume_dir = a;
    CHECK(test_run_train(model, &o, &train, &val, &res) == -EINVAL);
    CHECK(strstr(tt_lasterr(), "corrupt") && strstr(tt_lasterr(), CKPT_FILE));
    f = fopen(fa, "wb");
    fwrite(ck, 1, n / 3, f);
    fclose(f);
    CHECK(test_run_train(model, &o, &train, &val, &res) == -EINVAL);
    CHECK(strstr(tt_lasterr(), "truncated") != NULL);
    free(ck);

    free(tok);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
