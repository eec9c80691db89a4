/* tests/test_mix.c — data mixtures (core/train.h, tt_mix): the dynamic
 * re-weighting rule (a source whose loss sits above its reference gains
 * weight, one at its reference does not, equal gaps give back the base
 * weights, the weights stay a distribution, no overflow at huge gaps); the
 * sampler (one source, or one with all the weight, is train_sample_batch's
 * batch bit for bit; the weights are the sources' frequencies; plain-text
 * rows in a packed batch are one segment); and through train_run: a dynamic
 * mixture resumed at a step that re-weighted and at one that did not gives
 * the uninterrupted run's checkpoint and adapter byte for byte, the weights
 * come back from the checkpoint, and a resume with other weights, another
 * --mix-every or one source is refused. */
#include "core/base/common.h"
#include "core/base/rng.h"
#include "core/exec.h"
#include "core/lora.h"
#include "core/tokfile.h"
#include "core/train.h"
#include "io/ckpt.h"
#include "tests/fixtures.h"
#include "tests/test.h"
#include "tests/train_run.h"

#include <errno.h>
#include <string.h>

/* ---- the re-weighting rule ------------------------------------------------ */

static void test_reweight(void) {
    const double tau = 0.25;
    double base[2] = {0.5, 0.5}, ref[2] = {3.0, 3.0}, w[2], gap[2];
    /* source 0 at its reference (gap 0), source 1 0.5 nats above it: the weight moves to source 1 */
    double loss[2] = {3.0, 3.5};
    train_mix_reweight(2, base, loss, ref, tau, w, gap);
    CHECK_NEAR(gap[0], 0, 0);
    CHECK_NEAR(gap[1], 0.5, 1e-15);
    CHECK_MSG(w[1] > 0.5 && w[0] < 0.5, "the weight did not move toward the source above its reference: %g %g", w[0],
              w[1]);
    CHECK_NEAR(w[0] + w[1], 1, 1e-15);
    CHECK_NEAR(w[1], 1 / (1 + exp(-0.5 / tau)), 1e-15); /* base * exp(gap / tau), normalised */
    /* below the reference counts as no gap: the same weights as at it */
    double below[2] = {2.5, 3.5}, w2[2];
    train_mix_reweight(2, base, below, ref, tau, w2, gap);
    CHECK(gap[0] == 0 && w2[0] == w[0] && w2[1] == w[1]);
    /* equal gaps: the base weights, whatever they are */
    double b3[3] = {0.7, 0.2, 0.1}, r3[3] = {2.0, 3.0, 4.0}, l3[3] = {2.3, 3.3, 4.3}, w3[3];
    train_mix_reweight(3, b3, l3, r3, tau, w3, NULL);
    for (int i = 0; i < 3; i++) CHECK_NEAR(w3[i], b3[i], 1e-15);
    /* all at the reference: the base weights */
    train_mix_reweight(3, b3, r3, r3, tau, w3, NULL);
    for (int i = 0; i < 3; i++) CHECK_NEAR(w3[i], b3[i], 1e-15);
    /* a base weight of 0 stays 0, however far its source is above the reference */
    double b0[2] = {0, 1}, l0[2] = {9, 3};
    train_mix_reweight(2, b0, l0, ref, tau, w, gap);
    CHECK(w[0] == 0 && w[1] == 1 && gap[0] == 6);
    /* a huge gap at a small temperature: no overflow, still a distribution */
    double lh[2] = {3.0, 1003.0};
    train_mix_reweight(2, base, lh, ref, 0.01, w, gap);
    CHECK(isfinite(w[0]) && isfinite(w[1]) && w[1] == 1 && w[0] == 0);
    /* NaN (a source with nothing scored) counts as no gap */
    double ln[2] = {NAN, 3.5};
    train_mix_reweight(2, base, ln, ref, tau, w, gap);
    CHECK(gap[0] == 0 && w[1] > 0.5 && fabs(w[0] + w[1] - 1) < 1e-15);
    /* the temperature: a gap of tau multiplies the weight by e against a source without one */
    train_mix_reweight(2, base, (double[]){3.0, 3.0 + tau}, ref, tau, w, NULL);
    CHECK_NEAR(w[1] / w[0], exp(1), 1e-12);
}

/* ---- the sampler ------------------------------------------------------------ */

static void test_sampler(void) {
    enum { B = 4, S = 8, NA = 500, NB = 700 };
    uint32_t *ta = tt_xmalloc(NA * sizeof *ta), *tb = tt_xmalloc(NB * sizeof *tb);
    for (int i = 0; i < NA; i++) ta[i] = (uint32_t)(i % 50);        /* source A: ids < 50 */
    for (int i = 0; i < NB; i++) tb[i] = 100 + (uint32_t)(i % 50);  /* source B: ids >= 100 */
    tt_tokens a = {.t = ta, .n = NA}, b = {.t = tb, .n = NB};
    int32_t in[B * S], tg[B * S], in2[B * S], tg2[B * S];
    tt_real wt[B * S], wt2[B * S];
    tt_mix m;
    /* one source: train_sample_batch's batch */
    train_mix_single(&m, &a, NULL);
    for (int step = 1; step <= 5; step++) {
        CHECK(train_sample_mix(&m, 3, step, 1, B, S, in, tg, wt, NULL) == 0);
        train_sample_batch(&a, 3, step, 1, B, S, in2, tg2, wt2, NULL);
        CHECK(memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0 && memcmp(wt, wt2, sizeof wt) == 0);
    }
    /* two sources, all the weight on B: B's batch, no source drawn */
    m.n = 2;
    m.train[1] = b;
    m.base[0] = m.w[0] = 0;
    m.base[1] = m.w[1] = 1;
    train_sample_mix(&m, 3, 7, 0, B, S, in, tg, wt, NULL);
    train_sample_batch(&b, 3, 7, 0, B, S, in2, tg2, wt2, NULL);
    CHECK(memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0);
    /* 0.8 / 0.2: the rows' sources in those proportions; each row whole from one source; deterministic */
    m.base[0] = m.w[0] = 0.8;
    m.base[1] = m.w[1] = 0.2;
    int rows = 0, from_a = 0, differ = 0;
    for (int step = 1; step <= 1000; step++) {
        train_sample_mix(&m, 11, step, 0, B, S, in, tg, wt, NULL);
        train_sample_mix(&m, 11, step, 0, B, S, in2, tg2, wt2, NULL);
        CHECK(memcmp(in, in2, sizeof in) == 0);
        for (int r = 0; r < B; r++) {
            int a_row = in[r * S] < 50;
            for (int t = 0; t < S; t++) CHECK((in[r * S + t] < 50) == a_row && (tg[r * S + t] < 50) == a_row);
            from_a += a_row;
            rows++;
        }
        train_sample_mix(&m, 12, step, 0, B, S, in2, tg2, wt2, NULL); /* another seed, another batch */
        differ += memcmp(in, in2, sizeof in) != 0;
    }
    double frac = (double)from_a / rows; /* 4000 rows: a standard error of 0.0063 */
    CHECK_MSG(fabs(frac - 0.8) < 0.03, "source A drew %.4f of the rows, not 0.8", frac);
    CHECK(differ > 990);
    /* a plain source mixed with an example source in a packed batch: plain rows are one segment (seg 0), and
     * the return counts the example rows */
    uint32_t te[60];
    uint8_t fe[60];
    for (int i = 0; i < 60; i++) {
        te[i] = 200 + (uint32_t)i;
        fe[i] = (uint8_t)((i % 6 == 0 ? TOKFILE_START : 0) | TOKFILE_TRAIN);
    }
    tt_tokens e = {.t = te, .n = 60, .flags = fe};
    train_index_examples(&e);
    m.train[1] = e;
    m.w[0] = m.w[1] = 0.5;
    int32_t seg[B * S];
    int ex_total = 0, ex_counted = 0;
    for (int step = 1; step <= 50; step++) {
        for (int i = 0; i < B * S; i++) seg[i] = -7;
        ex_total += train_sample_mix(&m, 5, step, 0, B, S, in, tg, wt, seg);
        for (int r = 0; r < B; r++) {
            int ex_row = in[r * S] >= 200;
            ex_counted += ex_row;
            for (int t = 0; t < S; t++) {
                if (!ex_row) CHECK(seg[r * S + t] == 0);
                else CHECK(seg[r * S + t] >= 0 && seg[r * S + t] <= t);
            }
        }
    }
    CHECK(ex_total == ex_counted && ex_total > 50 && ex_total < 150);
    train_free_examples(&e);
    free(ta);
    free(tb);
}

/* ---- through train_run: resume == one run -------------------------------------- */


static tt_train_opts base_opts(const char *model, const char *out, tt_mix *mix) {
    tt_train_opts o = {0};
    o.model_path = model;
    o.out_dir = out;
    o.lora = (tt_lora_cfg){4, 8.f, 0.f, LORA_ALL_TARGETS, 0};
    o.seed = 9;
    o.steps = 7; o.seq = 8; o.micro_batch = 2; o.accum = 2; o.warmup = 2;
    o.lr = 5e-3f; o.min_lr = 5e-4f; o.b1 = 0.9f; o.b2 = 0.999f; o.eps = 1e-8f; o.clip = 1.0f;
    o.eval_every = 0; o.eval_tokens = 64; o.quiet = 1;
    o.mix = mix;
    return o;
}

/* Two sources of different structure (period 7 and period 5 patterns with noise), each with a validation
 * tail; dynamic, re-weighted every 2 steps, against reference losses below the start so both have gaps. */
static void make_mix(tt_mix *m, uint32_t *tok, uint32_t vocab) {
    tt_rng r;
    rng_seed(&r, 4, 5);
    for (int i = 0; i < 4000; i++) {
        uint32_t pat = i < 2000 ? (uint32_t)((i * 7) % 11) : (uint32_t)(20 + (i * 3) % 5);
        tok[i] = rng_uniform(&r) < 0.1 ? (uint32_t)rng_below(&r, vocab) : pat;
    }
    memset(m, 0, sizeof *m);
    m->n = 2;
    m->name[0] = "sevens";
    m->name[1] = "fives";
    m->train[0] = (tt_tokens){.t = tok, .n = 1800};
    m->val[0] = (tt_tokens){.t = tok + 1800, .n = 200};
    m->train[1] = (tt_tokens){.t = tok + 2000, .n = 1800};
    m->val[1] = (tt_tokens){.t = tok + 3800, .n = 200};
    m->base[0] = m->w[0] = 0.6;
    m->base[1] = m->w[1] = 0.4;
    m->mode = TT_MIX_DYNAMIC;
    m->every = 2;
    m->tau = 0.25;
    m->ref[0] = 3.0;
    m->ref[1] = 2.0;
}

static void test_resume(const char *dir) {
    tt_config c;
    fixture_micro_config(&c);
    char model[700], a[700], b[700], fa[800], fb[800];
    snprintf(model, sizeof model, "%s/micro.tier", dir);
    CHECK(fixture_write_model(model, &c, TT_DTYPE_NF4DQ, 0.2f, 3) == 0);
    uint32_t *tok = tt_xmalloc(4000 * sizeof *tok);
    tt_mix m;
    tt_train_result res;
    /* A: one run of 7 steps */
    make_mix(&m, tok, c.vocab);
    snprintf(a, sizeof a, "%s/a", dir);
    tt_train_opts o = base_opts(model, a, &m);
    CHECK_MSG(test_run_train(model, &o, NULL, NULL, &res) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 7);
    double w_end[2] = {m.w[0], m.w[1]};
    CHECK_MSG(w_end[0] != 0.6 && fabs(w_end[0] + w_end[1] - 1) < 1e-12, "the weights did not move: %g %g", w_end[0],
              w_end[1]);
    ckpt_state cs;
    void *cp;
    float *cm, *cv;
    CHECK(ckpt_read(a, &cs, &cp, &cm, &cv) == 0);
    CHECK(cs.mix_n == 2 && cs.mix_mode == 1 && cs.mix_every == 2 && cs.mix_w[0] == w_end[0] && cs.mix_ref[1] == 2.0 &&
          cs.mix_base[0] == 0.6 && cs.mix_tokens[1] == 1800);
    free(cp); free(cm); free(cv);
    /* B: stopped at 4 (a re-weighting step) and at 3 (not one), each resumed to 7: the same bytes */
    for (int stop = 3; stop <= 4; stop++) {
        snprintf(b, sizeof b, "%s/b%d", dir, stop);
        make_mix(&m, tok, c.vocab);
        o = base_opts(model, b, &m);
        o.stop_after = stop;
        CHECK_MSG(test_run_train(model, &o, NULL, NULL, &res) == 0, "%s", tt_lasterr());
        make_mix(&m, tok, c.vocab); /* a fresh process: base weights and a placeholder reference until the resume */
        m.ref[0] = m.ref[1] = NAN;
        o = base_opts(model, b, &m);
        o.resume_dir = b;
        CHECK_MSG(test_run_train(model, &o, NULL, NULL, &res) == 0, "%s", tt_lasterr());
        CHECK_EQ_INT(res.steps_done, 7);
        CHECK(m.w[0] == w_end[0] && m.w[1] == w_end[1]);
        snprintf(fa, sizeof fa, "%s/" CKPT_FILE, a);
        snprintf(fb, sizeof fb, "%s/" CKPT_FILE, b);
        CHECK_MSG(fixture_same_file(fa, fb), "stopped at %d: the resumed checkpoint differs from one run", stop);
        snprintf(fa, sizeof fa, "%s/adapter_model.safetensors", a);
        snprintf(fb, sizeof fb, "%s/adapter_model.safetensors", b);
        CHECK_MSG(fixture_same_file(fa, fb), "stopped at %d: the resumed adapter differs from one run", stop);
    }
    /* the check can fail: static mixing at the base weights trains another adapter */
    snprintf(b, sizeof b, "%s/static", dir);
    make_mix(&m, tok, c.vocab);
    m.mode = TT_MIX_STATIC;
    o = base_opts(model, b, &m);
    CHECK(test_run_train(model, &o, NULL, NULL, &res) == 0);
    CHECK(m.w[0] == 0.6 && m.w[1] == 0.4);
    snprintf(fb, sizeof fb, "%s/adapter_model.safetensors", b);
    CHECK(!fixture_same_file(fa, fb));
    /* a resume with other weights, another --mix-every, or one source: refused, named */
    make_mix(&m, tok, c.vocab);
    m.base[0] = m.w[0] = 0.5;
    m.base[1] = m.w[1] = 0.5;
    o = base_opts(model, a, &m);
    o.steps = 7;
    o.resume_dir = a;
    CHECK(test_run_train(model, &o, NULL, NULL, &res) == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "--data weights") && strstr(tt_lasterr(), "sevens"), "%s", tt_lasterr());
    make_mix(&m, tok, c.vocab);
    m.every = 3;
    CHECK(test_run_train(model, &o, NULL, NULL, &res) == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "--mix-every was 2, now 3"), "%s", tt_lasterr());
    make_mix(&m, tok, c.vocab);
    tt_mix one;
    train_mix_single(&one, &m.train[0], &m.val[0]);
    o.mix = &one;
    CHECK(test_run_train(model, &o, NULL, NULL, &res) == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "2 data sources, this run has 1"), "%s", tt_lasterr());
    /* a dynamic mixture needs every source scored: a source without validation tokens is refused up front */
    make_mix(&m, tok, c.vocab);
    m.val[1].n = 3;
    snprintf(b, sizeof b, "%s/noval", dir);
    o = base_opts(model, b, &m);
    CHECK(test_run_train(model, &o, NULL, NULL, &res) == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "fives") && strstr(tt_lasterr(), "none to score"), "%s", tt_lasterr());
    free(tok);
}

int main(void) {
    test_reweight();
    test_sampler();
    char *dir = fixture_tmpdir();
    test_resume(dir);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
