/* tests/test_fulltrain.c — full-parameter training (core/fulltrain.c) on a
 * micro model: the loss falls on learnable data, every trained tensor moves
 * while lm_head stays bit-identical (frozen, as LoRAM's alignment needs), the
 * output keeps the source's dtypes, config and pruning map, two runs with
 * the same seed write identical stores, and NF4 sources or a too-small --hbm
 * are refused. The weight gradients themselves are checked against finite
 * differences in tests/test_grad_model.c. Also the calibration gradients
 * Taylor pruning uses: present exactly for the projections, finite, nonzero,
 * and a descent direction of the calibration loss. */
#include "core/base/common.h"
#include "core/fulltrain.h"
#include "io/storeio.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>
#include <string.h>

#define NTOK 6000

/* Learnable tokens: a noisy periodic pattern over the micro vocabulary (32). */
static uint32_t *pattern_tokens(uint64_t n) {
    uint32_t *t = tt_xmalloc(n * sizeof *t);
    tt_rng r;
    rng_seed(&r, 3, 0);
    for (uint64_t i = 0; i < n; i++) t[i] = rng_below(&r, 8) == 0 ? (uint32_t)rng_below(&r, 32) : (uint32_t)((i * 5 + i / 7) % 29);
    return t;
}


/* g_fill's weights (fixture_fill) with 2:4-style zeros (two of every four) in layer 0's projections */
static fixture_fill_ctx g_fill = {21, 0.1f};

static int fill_sparse(void *ctx, uint32_t i, const tt_tensor_desc *d, float *out) {
    fixture_fill(ctx, i, d, out);
    if (d->role == TT_ROLE_LINEAR && d->layer == 0)
        for (uint64_t j = 0; j < d->rows * d->cols; j++)
            if (j % 4 < 2) out[j] = 0;
    return 0;
}

static tt_full_opts opts(const char *src, const char *out) {
    tt_full_opts o = {0};
    o.model_path = src; o.out_path = out; o.seed = 9;
    o.steps = 30; o.seq = 16; o.micro_batch = 2; o.accum = 2; o.warmup = 3;
    o.lr = 1e-2f; o.min_lr = 1e-3f; o.wd = 0.01f; o.b1 = 0.9f; o.b2 = 0.999f; o.eps = 1e-8f; o.clip = 1.f;
    o.eval_every = 0; o.eval_tokens = 512; o.quiet = 1;
    return o;
}

/* Tensor i of two stores: 1 if bit-identical. */
static int same_tensor(store_reader *a, store_reader *b, uint32_t i, uint64_t n, float *x, float *y) {
    CHECK(store_reader_tensor(a, i, x) == 0 && store_reader_tensor(b, i, y) == 0);
    return memcmp(x, y, n * sizeof *x) == 0;
}

/* A source store and the trained one, open side by side, with buffers for their largest tensor. */
typedef struct pair {
    store_reader a, b;
    float *x, *y;
} pair;

static void pair_open(pair *p, const char *src, const char *out) {
    CHECK(store_reader_open(&p->a, src) == 0);
    CHECK(store_reader_open(&p->b, out) == 0);
    uint64_t mx = store_max_tensor(store_reader_config(&p->a));
    p->x = tt_xmalloc(mx * 4);
    p->y = tt_xmalloc(mx * 4);
}

static void pair_close(pair *p) {
    free(p->x); free(p->y);
    store_reader_close(&p->a);
    store_reader_close(&p->b);
}

static void check_trained(const char *src, const char *out, int expect_map) {
    pair pr;
    pair_open(&pr, src, out);
    const tt_config *c = store_reader_config(&pr.a);
    const tier_prune_map *ma = tier_prune(pr.a.s), *mb = tier_prune(pr.b.s);
    CHECK(config_fingerprint(c) == config_fingerprint(store_reader_config(&pr.b)));
    CHECK(!mb == !expect_map);
    if (expect_map)
        for (uint32_t l = 0; l < c->n_layers; l++)
            if (ma->kv[l]) CHECK(memcmp(ma->ffn[l], mb->ffn[l], c->layers[l].ffn * 4) == 0);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        CHECK_EQ_INT(store_reader_dtype(&pr.a, i), store_reader_dtype(&pr.b, i));
        int same = same_tensor(&pr.a, &pr.b, i, d.rows * d.cols, pr.x, pr.y);
        if (d.role == TT_ROLE_LM_HEAD) CHECK_MSG(same, "lm_head changed: it must stay frozen");
        else CHECK_MSG(!same, "%s did not change", d.name);
    }
    pair_close(&pr);
}

/* Mean calibration loss of the store at path over the windows
 * fulltrain_calib_grads documents. */
static double calib_loss(const char *path, const uint32_t *tok, uint64_t n, int samples, int seq) {
    tt_model *m;
    CHECK(model_load(&m, path) == 0);
    const tt_config *c = model_config(m);
    tt_lora_cfg lc = {1, 1.f, 0.f, 0, 0};
    tt_lora lo;
    CHECK(lora_init(&lo, c, &lc, 0) == 0);
    tt_ws *w;
    tt_ws_opts wo = {.B = 1, .seq = seq, .with_ckpt = 1};
    CHECK(ws_create(&w, c, &lc, &wo, NULL) == 0);
    int32_t in[64], tg[64];
    tt_real wt[64];
    double sum = 0;
    uint64_t stride = (n - 1) / (uint64_t)samples;
    for (int s = 0; s < samples; s++) {
        for (int t = 0; t < seq; t++) {
            in[t] = (int32_t)tok[s * stride + t];
            tg[t] = (int32_t)tok[s * stride + t + 1];
            wt[t] = 1;
        }
        sum += model_micro_step(m, &lo, w, in, tg, wt, 1, 0, 0);
    }
    ws_free(w);
    lora_free(&lo);
    model_free(m);
    return sum / ((double)samples * seq);
}

typedef struct step_ctx {
    store_reader *r;
    float **g;
    float eps;
} step_ctx;

/* W - eps * G for the projections, the source's values elsewhere. */
static int fill_step(void *ctx, uint32_t i, const tt_tensor_desc *d, float *out) {
    step_ctx *sc = ctx;
    int rc = store_reader_tensor(sc->r, i, out);
    if (rc == 0 && sc->g[i])
        for (uint64_t j = 0; j < d->rows * d->cols; j++) out[j] -= sc->eps * sc->g[i][j];
    return rc;
}

static void check_calib(const char *dir, const char *src, const uint32_t *tok, uint64_t n) {
    store_reader r;
    CHECK(store_reader_open(&r, src) == 0);
    const tt_config *c = store_reader_config(&r);
    uint32_t nt = config_n_tensors(c);
    float **g = tt_xcalloc(nt, sizeof *g);
    int rc = fulltrain_calib_grads(src, tok, n, 4, 32, 0, c->n_layers, g);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    tt_tensor_desc d;
    double ss = 0;
    for (uint32_t i = 0; i < nt; i++) {
        config_tensor(c, i, &d);
        CHECK((g[i] != NULL) == (d.role == TT_ROLE_LINEAR));
        if (!g[i]) continue;
        for (uint64_t j = 0; j < d.rows * d.cols; j++) {
            CHECK(isfinite(g[i][j]));
            ss += (double)g[i][j] * g[i][j];
        }
    }
    CHECK(ss > 0);
    /* a small step against the gradient lowers the calibration loss by about eps * |G|^2 */
    char stepped[600];
    snprintf(stepped, sizeof stepped, "%s/stepped.tier", dir);
    float eps = (float)(1e-3 / sqrt(ss));
    step_ctx sc = {&r, g, eps};
    uint32_t *dt = tt_xcalloc(nt, sizeof *dt);
    for (uint32_t i = 0; i < nt; i++) dt[i] = store_reader_dtype(&r, i);
    tier_write_opts wo = {dt, NULL, 0, NULL};
    CHECK(store_write(stepped, c, &wo, fill_step, &sc) == 0);
    double l0 = calib_loss(src, tok, n, 4, 32), l1 = calib_loss(stepped, tok, n, 4, 32);
    double expect = (double)eps * ss;
    fprintf(stderr, "calibration loss %.9f -> %.9f (first-order prediction -%.3g)\n", l0, l1, expect);
    CHECK(l1 < l0);
    CHECK_NEAR(l0 - l1, expect, 0.2 * expect);
    for (uint32_t i = 0; i < nt; i++) free(g[i]);
    /* too little data for the windows is refused (and nothing is handed out) */
    rc = fulltrain_calib_grads(src, tok, 40, 4, 32, 0, c->n_layers, g);
    CHECK(rc == -EINVAL && strstr(tt_lasterr(), "calibration data"));
    for (uint32_t i = 0; i < nt; i++) CHECK(g[i] == NULL);
    free(g); free(dt);
    store_reader_close(&r);
}

int main(void) {
    char *dir = fixture_tmpdir();
    char src[600], out[600], out2[600], bsrc[600], bout[600], nf4[600];
    snprintf(src, sizeof src, "%s/src.tier", dir);
    snprintf(out, sizeof out, "%s/out.tier", dir);
    snprintf(out2, sizeof out2, "%s/out2.tier", dir);
    snprintf(bsrc, sizeof bsrc, "%s/bsrc.tier", dir);
    snprintf(bout, sizeof bout, "%s/bout.tier", dir);
    snprintf(nf4, sizeof nf4, "%s/nf4.tier", dir);
    tt_config c;
    fixture_micro_config(&c);
    CHECK(fixture_write_model(src, &c, TT_DTYPE_F32, 0.1f, 4) == 0);
    uint32_t *tok = pattern_tokens(NTOK);
    tt_tokens train = {.t = tok, .n = NTOK - 1000}, val = {.t = tok + NTOK - 1000, .n = 1000};

    /* 1. the loss falls; lm_head frozen, everything else trained */
    tt_full_opts o = opts(src, out);
    tt_train_result res;
    int rc = fulltrain_run(&o, &train, &val, &res);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(res.steps_done, 30);
    fprintf(stderr, "train loss %.4f -> %.4f, validation %.4f -> %.4f\n", res.first_loss, res.last_loss,
            res.first_val, res.last_val);
    CHECK(res.last_loss < res.first_loss - 0.5);
    CHECK(res.last_val < res.first_val - 0.5);
    check_trained(src, out, 0);

    /* 2. deterministic: the same run writes the same bytes */
    o.out_path = out2;
    CHECK(fulltrain_run(&o, &train, &val, &res) == 0);
    CHECK(fixture_same_file(out, out2));

    /* 3. a pruned bf16 source: dtypes, dims and the pruning map carry over */
    tt_config pc = c;
    CHECK(config_prune(&pc, 0.5, 1, 2) == 0);
    tier_prune_map map = {0};
    map.kv[1] = tt_xmalloc(4);
    map.kv[1][0] = 1;
    map.ffn[1] = tt_xmalloc(pc.layers[1].ffn * 4);
    for (uint32_t j = 0; j < pc.layers[1].ffn; j++) map.ffn[1][j] = 2 * j;
    uint32_t *dt = tt_xcalloc(config_n_tensors(&pc), sizeof *dt);
    store_default_dtypes(&pc, TT_DTYPE_BF16, TT_DTYPE_BF16, dt);
    tier_write_opts wo = {dt, &map, 0, NULL};
    rc = store_write(bsrc, &pc, &wo, fixture_fill, &g_fill);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    o = opts(bsrc, bout);
    o.steps = 5;
    rc = fulltrain_run(&o, &train, NULL, &res);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    check_trained(bsrc, bout, 1);
    free(dt);
    store_prune_map_clear(&map);

    /* 3b. tied embeddings: the embedding is lm_head, so it stays frozen too */
    {
        char tsrc[600], tout[600];
        snprintf(tsrc, sizeof tsrc, "%s/tied.tier", dir);
        snprintf(tout, sizeof tout, "%s/tied-out.tier", dir);
        tt_config tc = c;
        tc.tie_embeddings = 1;
        CHECK(fixture_write_model(tsrc, &tc, TT_DTYPE_F32, 0.1f, 6) == 0);
        o = opts(tsrc, tout);
        o.steps = 8;
        rc = fulltrain_run(&o, &train, &val, &res);
        CHECK_MSG(rc == 0, "%s", tt_lasterr());
        CHECK(res.last_loss < res.first_loss);
        pair pr;
        pair_open(&pr, tsrc, tout);
        tt_tensor_desc d;
        for (uint32_t i = 0; i < config_n_tensors(&tc); i++) {
            config_tensor(&tc, i, &d);
            int same = same_tensor(&pr.a, &pr.b, i, d.rows * d.cols, pr.x, pr.y);
            CHECK_MSG(same == (d.role == TT_ROLE_EMBED), "tied: %s %s", d.name, same ? "unchanged" : "changed");
        }
        pair_close(&pr);
    }

    /* 3c. a sparse (2:4) projection keeps exactly its zeros; the others move; validation data shorter than
     * one window is skipped (NaN), not refused */
    {
        char ssrc[600], sout[600];
        snprintf(ssrc, sizeof ssrc, "%s/sparse.tier", dir);
        snprintf(sout, sizeof sout, "%s/sparse-out.tier", dir);
        uint32_t *sdt = tt_xcalloc(config_n_tensors(&c), sizeof *sdt);
        store_default_dtypes(&c, TT_DTYPE_F32, TT_DTYPE_F32, sdt);
        tier_write_opts so = {sdt, NULL, 1, NULL};
        CHECK(store_write(ssrc, &c, &so, fill_sparse, &g_fill) == 0);
        o = opts(ssrc, sout);
        o.steps = 5;
        tt_tokens tiny_val = {.t = tok, .n = 10};
        rc = fulltrain_run(&o, &train, &tiny_val, &res);
        CHECK_MSG(rc == 0, "%s", tt_lasterr());
        CHECK(isnan(res.last_val));
        pair pr;
        pair_open(&pr, ssrc, sout);
        float *x = pr.x, *y = pr.y;
        tt_tensor_desc d;
        for (uint32_t i = 0; i < config_n_tensors(&c); i++) {
            config_tensor(&c, i, &d);
            if (d.role != TT_ROLE_LINEAR) continue;
            CHECK(store_reader_tensor(&pr.a, i, x) == 0 && store_reader_tensor(&pr.b, i, y) == 0);
            uint64_t n = d.rows * d.cols, kept_zero = 0, moved = 0, zeros_in = 0;
            for (uint64_t j = 0; j < n; j++) {
                zeros_in += x[j] == 0;
                kept_zero += x[j] == 0 && y[j] == 0;
                moved += x[j] != 0 && y[j] != x[j];
            }
            CHECK_MSG(kept_zero == zeros_in, "%s: %llu of %llu pruned zeros stayed zero", d.name,
                      (unsigned long long)kept_zero, (unsigned long long)zeros_in);
            CHECK_MSG(moved > (n - zeros_in) / 2, "%s: only %llu weights moved", d.name, (unsigned long long)moved);
            if (d.layer == 0) CHECK(zeros_in == n / 2);
        }
        free(sdt);
        pair_close(&pr);
    }

    /* 4. refused: NF4 weights; a budget below every plan */
    CHECK(fixture_write_model(nf4, &c, TT_DTYPE_NF4DQ, 0.1f, 4) == 0);
    o = opts(nf4, out2);
    rc = fulltrain_run(&o, &train, &val, &res);
    CHECK(rc == -EINVAL && strstr(tt_lasterr(), "NF4"));
    o = opts(src, out2); /* below the resident need, it streams; below the smallest streamed plan too */
    o.hbm = 64 << 10;
    rc = fulltrain_run(&o, &train, &val, &res);
    CHECK(rc == -ENOSPC && strstr(tt_lasterr(), "--hbm") && strstr(tt_lasterr(), "smallest plan"));

    /* 5. Taylor pruning's calibration gradients */
    check_calib(dir, src, tok, NTOK);

    free(tok);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
