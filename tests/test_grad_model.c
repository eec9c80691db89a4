/* tests/test_grad_model.c — gradients of a whole layer with LoRA and of the
 * whole model's loss with respect to the LoRA parameters, against central
 * finite differences, in the double-precision build (-DTT_F64; the Makefile
 * builds every tests/test_grad_* that way). Covers GQA, a pruned layer
 * (fewer heads and channels than the model), LoRA dropout (the masks are a
 * fixed function of the seed, so the loss stays a smooth function), masked
 * tokens, NF4 weights, and accumulation over micro-batches; and the weight
 * gradients of full-parameter training (check_wgrad).
 *
 * Derivatives are estimated with the five-point stencil
 * (8(f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h, truncation error O(h^4):
 * with h = 1e-4 that is ~1e-16 times the fifth derivative, and the rounding
 * error is about 1e-16 * |L| / h ~ 1e-11 for the losses here. Errors are
 * relative to max(|analytic|, |numeric|, 1e-3 * the largest gradient of the
 * same set), so a tiny gradient is not judged by its own size alone.
 * Tolerance 1e-6: far above the numerical noise, far below any real mistake
 * (a missing term or a transposed product shows as O(1)). */
#include "core/base/common.h"
#include "core/lora.h"
#include "core/model.h"
#include "core/base/rng.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#ifndef TT_F64
#error "test_grad_model needs the double-precision build (-DTT_F64)"
#endif

#define H_FD 1e-4
#define TOL 1e-6

/* Under AddressSanitizer the finite-difference probes of the LoRA parameters and inputs are FD_SPARSE times
 * sparser (still across every projection of every layer): each probe repeats the same passes with one value
 * moved, which touch the same memory whatever the values, so the first probe already takes every path the
 * sanitizer watches; the release build probes at the full density, and the comparisons are the same. */
#if defined(__SANITIZE_ADDRESS__)
#define FD_SPARSE 5
#else
#define FD_SPARSE 1
#endif

/* micro config with layer 1 pruned (1 KV head of 2, ffn 48 of 96) */
static void cfg_pruned(tt_config *c) {
    fixture_micro_config(c);
    TT_ASSERT(config_prune(c, 0.5, 1, 2) == 0);
}

/* Wider (hidden 128, ffn 192), so that with the smallest dequantization
 * scratch (64 rows of the widest input) q/o/down come in two weight blocks. */
static void cfg_wide(tt_config *c) {
    fixture_micro_config(c);
    c->hidden = 128; c->n_heads = 8; c->n_kv_heads = 4; c->head_dim = 16; c->ffn = 192;
    for (uint32_t l = 0; l < c->n_layers; l++) c->layers[l] = (tt_layer_dims){8, 4, 192, 0};
    TT_ASSERT(config_prune(c, 0.5, 1, 2) == 0);
}

/* ffn 100 and, pruned, 50: the MLP's buffers get padded rows (stride 104),
 * with LoRA dropout on the padded inputs of down. */
static void cfg_odd_ffn(tt_config *c) {
    fixture_micro_config(c);
    c->ffn = 100;
    for (uint32_t l = 0; l < c->n_layers; l++) c->layers[l].ffn = 100;
    TT_ASSERT(config_prune(c, 0.5, 1, 2) == 0);
}

static void randomize_lora(tt_lora *lo, uint64_t seed) {
    tt_rng r;
    rng_seed(&r, seed, 99);
    tt_real *h = tt_xmalloc(lo->n * sizeof *h);
    for (size_t i = 0; i < lo->n; i++) h[i] = (tt_real)(0.3 * rng_normal(&r));
    be_to_device(lo->params, h, lo->n * sizeof *h);
    free(h);
}

static double rel_err(double a, double n, double floor) {
    double s = fabs(n) > fabs(a) ? fabs(n) : fabs(a);
    if (s < floor) s = floor;
    return s > 0 ? fabs(a - n) / s : 0;
}

static double max_abs(const tt_real *g, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) if (fabs(g[i]) > m) m = fabs(g[i]);
    return m;
}

static const double g_steps[4] = {-2, -1, 1, 2};

/* f = L at x - 2h, x - h, x + h, x + 2h */
static double stencil(const double f[4]) { return (8 * (f[2] - f[1]) - (f[3] - f[0])) / (12 * H_FD); }

/* L = sum(layer(x) * R) */
static double layer_loss(tt_model *m, tt_lora *lo, tt_ws *w, int l, const tt_real *x, const tt_real *R, size_t n,
                         tt_real *y, uint64_t drop) {
    model_layer_forward(m, lo, w, l, x, y, drop);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += y[i] * R[i];
    return s;
}

static void check_layer(tt_model *m, tt_lora *lo, tt_ws *w, int l, int B, int S, uint64_t drop, const char *what) {
    const tt_config *c = model_config(m);
    size_t n = (size_t)B * S * c->hidden;
    tt_real *x = tt_xmalloc(n * sizeof *x), *R = tt_xmalloc(n * sizeof *R), *y = tt_xmalloc(n * sizeof *y);
    tt_real *dx = tt_xmalloc(n * sizeof *dx);
    tt_rng r;
    rng_seed(&r, 7, (uint64_t)l);
    for (size_t i = 0; i < n; i++) { x[i] = (tt_real)rng_normal(&r); R[i] = (tt_real)rng_normal(&r); }
    be_fill(lo->grads, lo->n, 0);
    model_layer_backward(m, lo, w, l, x, R, dx, drop);
    double worst = 0;
    /* LoRA parameters of this layer: every 7th one (7 * FD_SPARSE-th) plus the ends */
    size_t a = lo->layer_off[l], b = lo->layer_off[l + 1], st = 7 * FD_SPARSE;
    int checked = 0;
    double floor = 1e-3 * max_abs(lo->grads + a, b - a);
    for (size_t i = a; i < b; i += (i + st < b ? st : i + 7 < b ? 7 : 1)) {
        tt_real keep = lo->params[i];
        double f[4];
        for (int k = 0; k < 4; k++) {
            lo->params[i] = keep + (tt_real)(g_steps[k] * H_FD);
            f[k] = layer_loss(m, lo, w, l, x, R, n, y, drop);
        }
        lo->params[i] = keep;
        double num = stencil(f), e = rel_err(lo->grads[i], num, floor);
        if (e > worst) worst = e;
        CHECK_MSG(e < TOL, "%s: layer %d dparam[%zu] analytic %.10g fd %.10g", what, l, i, (double)lo->grads[i], num);
        checked++;
    }
    /* input gradient */
    floor = 1e-3 * max_abs(dx, n);
    for (size_t i = 0; i < n; i += 13 * FD_SPARSE) {
        tt_real keep = x[i];
        double f[4];
        for (int k = 0; k < 4; k++) {
            x[i] = keep + (tt_real)(g_steps[k] * H_FD);
            f[k] = layer_loss(m, lo, w, l, x, R, n, y, drop);
        }
        x[i] = keep;
        double num = stencil(f), e = rel_err(dx[i], num, floor);
        if (e > worst) worst = e;
        CHECK_MSG(e < TOL, "%s: layer %d dx[%zu] analytic %.10g fd %.10g", what, l, i, (double)dx[i], num);
    }
    CHECK(checked > 20);
    fprintf(stderr, "%s, layer %d: %d LoRA params + inputs, worst relative error %.2e\n", what, l, checked, worst);
    free(x); free(R); free(y); free(dx);
}

/* Whole model: loss(params) = sum weighted NLL over one micro-batch. */
static void check_model(tt_model *m, tt_lora *lo, tt_ws *w, int B, int S, uint64_t drop, const char *what) {
    const tt_config *c = model_config(m);
    int T = B * S;
    int32_t *in = tt_xmalloc((size_t)T * sizeof *in), *tg = tt_xmalloc((size_t)T * sizeof *tg);
    tt_real *wt = tt_xmalloc((size_t)T * sizeof *wt);
    tt_rng r;
    rng_seed(&r, 11, 0);
    for (int t = 0; t < T; t++) {
        in[t] = (int32_t)rng_below(&r, c->vocab);
        tg[t] = (int32_t)rng_below(&r, c->vocab);
        wt[t] = t % 5 == 1 ? 0 : 1; /* some tokens out of the loss (prompt tokens) */
        if (t % 7 == 3) tg[t] = -1;  /* and some without a target */
    }
    be_fill(lo->grads, lo->n, 0);
    double l0 = model_micro_step(m, lo, w, in, tg, wt, 1, 1, drop);
    CHECK(isfinite(l0) && l0 > 0);
    double worst = 0;
    int checked = 0;
    double floor = 1e-3 * max_abs(lo->grads, lo->n);
    for (size_t i = 0; i < lo->n; i += 17 * FD_SPARSE) {
        tt_real keep = lo->params[i];
        double f[4];
        for (int k = 0; k < 4; k++) {
            lo->params[i] = keep + (tt_real)(g_steps[k] * H_FD);
            f[k] = model_micro_step(m, lo, w, in, tg, wt, 1, 0, drop);
        }
        lo->params[i] = keep;
        double num = stencil(f), e = rel_err(lo->grads[i], num, floor);
        if (e > worst) worst = e;
        CHECK_MSG(e < TOL, "%s: dloss/dparam[%zu] analytic %.10g fd %.10g", what, i, (double)lo->grads[i], num);
        checked++;
    }
    CHECK(checked > 30);
    fprintf(stderr, "%s, whole model: %d LoRA params, worst relative error %.2e\n", what, checked, worst);
    /* Accumulation: a second micro-batch with dscale 1 doubles the gradient. */
    tt_real *g1 = tt_xmalloc(lo->n * sizeof *g1);
    memcpy(g1, lo->grads, lo->n * sizeof *g1);
    double l1 = model_micro_step(m, lo, w, in, tg, wt, 1, 1, drop);
    CHECK_NEAR(l1, l0, 1e-12 * fabs(l0));
    for (size_t i = 0; i < lo->n; i++) CHECK_MSG(fabs(lo->grads[i] - 2 * g1[i]) <= 1e-12 * (1 + fabs(g1[i])), "accum %zu", i);
    free(g1); free(in); free(tg); free(wt);
}

/* The weight gradients of full-parameter training (model_set_wgrad): every
 * projection, both norms of each layer, the final norm and the embedding,
 * against the five-point stencil on the f32 weights themselves. The step is
 * 2^-13 (~1.2e-4) so that w + k*h is exact in float for the weights checked
 * (a weight where it would round is skipped and counted). */
#define H_W (1.0 / 8192.0)
static double fd_float(float *wp, tt_model *m, tt_lora *lo, tt_ws *w, const int32_t *in, const int32_t *tg,
                       const tt_real *wt, uint64_t drop, int kd, int *exact) {
    float keep = *wp;
    double f[4];
    *exact = 1;
    for (int k = 0; k < 4; k++) {
        *wp = (float)((double)keep + g_steps[k] * H_W);
        if ((double)*wp - (double)keep != g_steps[k] * H_W) *exact = 0;
        /* distillation's objective is what a training pass returns (its gradients are not read here) */
        f[k] = model_micro_step(m, lo, w, in, tg, wt, 1, kd, drop);
    }
    *wp = keep;
    return (8 * (f[2] - f[1]) - (f[3] - f[0])) / (12 * H_W);
}

/* teacher != NULL: the objective is distillation's (1 - 0.7) CE + 0.7 * 2^2 KL
 * from the teacher (its forward on the same inputs with its workspace tw). */
static void check_wgrad(tt_model *m, tt_lora *lo, tt_ws *w, int B, int S, uint64_t drop, tt_model *teacher,
                        tt_ws *tw, const char *what) {
    const tt_config *c = model_config(m);
    int T = B * S, H = (int)c->hidden;
    int32_t *in = tt_xmalloc((size_t)T * sizeof *in), *tg = tt_xmalloc((size_t)T * sizeof *tg);
    tt_real *wt = tt_xmalloc((size_t)T * sizeof *wt);
    tt_rng r;
    rng_seed(&r, 13, 0);
    for (int t = 0; t < T; t++) {
        in[t] = (int32_t)rng_below(&r, 7); /* few distinct tokens: embedding rows get several contributions */
        tg[t] = (int32_t)rng_below(&r, c->vocab);
        wt[t] = t % 5 == 1 ? 0 : 1;
    }
    /* own copies of the embedding and the final norm, so the test can perturb them */
    float *emb = tt_xmalloc((size_t)c->vocab * H * sizeof *emb), *fnorm = tt_xmalloc((size_t)H * sizeof *fnorm);
    for (size_t i = 0; i < (size_t)c->vocab * H; i++) emb[i] = (float)(0.5 * rng_normal(&r));
    for (int i = 0; i < H; i++) fnorm[i] = (float)(1 + 0.2 * rng_normal(&r));
    model_bind_embed(m, emb, TT_DTYPE_F32);
    model_bind_head_norm(m, fnorm);
    tt_wgrad *g = tt_xcalloc(1, sizeof *g);
    /* every weight gradient array, with where its weights live */
    enum { MAXW = 4 * TT_PROJ_COUNT + 16 };
    float *wp[MAXW];
    tt_real *gp[MAXW];
    size_t wn[MAXW];
    const char *wname[MAXW];
    int nw = 0;
    for (int l = 0; l < (int)c->n_layers; l++) {
        const tt_layer_weights *lw = model_layer(m, l);
        for (int p = 0; p < TT_PROJ_COUNT; p++) {
            int in_f, out_f;
            const tt_layer_dims *d = &c->layers[l];
            int q = (int)(d->n_heads * c->head_dim), kv = (int)(d->n_kv_heads * c->head_dim), F = (int)d->ffn;
            int ins[TT_PROJ_COUNT] = {H, H, H, q, H, H, F}, outs[TT_PROJ_COUNT] = {q, kv, kv, H, F, F, H};
            in_f = ins[p]; out_f = outs[p];
            wn[nw] = (size_t)in_f * out_f;
            wp[nw] = (float *)(uintptr_t)lw->proj[p];
            gp[nw] = g->proj[l][p] = tt_xcalloc(wn[nw], sizeof(tt_real));
            wname[nw++] = lora_proj_name(p);
        }
        for (int k = 0; k < 2; k++) {
            wn[nw] = (size_t)H;
            wp[nw] = (float *)(uintptr_t)lw->norm[k];
            gp[nw] = g->norm[l][k] = tt_xcalloc((size_t)H, sizeof(tt_real));
            wname[nw++] = k ? "post_attention_layernorm" : "input_layernorm";
        }
    }
    wn[nw] = (size_t)H; wp[nw] = fnorm; gp[nw] = g->final_norm = tt_xcalloc((size_t)H, sizeof(tt_real));
    wname[nw++] = "model.norm";
    wn[nw] = (size_t)c->vocab * H; wp[nw] = emb; gp[nw] = g->embed = tt_xcalloc(wn[nw], sizeof(tt_real));
    wname[nw++] = "embed_tokens";
    TT_ASSERT(nw <= MAXW);
    if (teacher) {
        tt_distill d = {teacher, model_forward(teacher, lo, tw, in), 0.7f, 2.0f};
        ws_set_distill(w, &d);
    }
    model_set_wgrad(m, g);
    be_fill(lo->grads, lo->n, 0);
    double obj = model_micro_step(m, lo, w, in, tg, wt, 1, 1, drop);
    model_set_wgrad(m, NULL); /* the finite differences need no gradients */
    if (teacher) { /* not vacuous: the objective is not the cross-entropy an evaluation pass gives */
        double ce = model_micro_step(m, lo, w, in, tg, wt, 1, 0, drop);
        CHECK_MSG(fabs(obj - ce) > 1e-3 * fabs(ce), "%s: distillation's objective %.9g is the cross-entropy %.9g",
                  what, obj, ce);
    }
    double worst = 0;
    int checked = 0, skipped = 0;
    for (int k = 0; k < nw; k++) {
        double floor = 1e-3 * max_abs(gp[k], wn[k]);
        size_t stride = wn[k] / 12 + 1;
        for (size_t j = k % 3; j < wn[k]; j += stride) {
            size_t i = k == nw - 1 ? (size_t)in[j % T] * H + j % H : j; /* embedding: rows that were used */
            int exact;
            double num = fd_float(wp[k] + i, m, lo, w, in, tg, wt, drop, teacher != NULL, &exact);
            if (!exact) { skipped++; continue; }
            double e = rel_err(gp[k][i], num, floor);
            if (e > worst) worst = e;
            CHECK_MSG(e < TOL, "%s: d/d%s[%zu] analytic %.10g fd %.10g", what, wname[k], i, (double)gp[k][i], num);
            checked++;
        }
    }
    /* an embedding row no token used has exactly zero gradient */
    CHECK(gp[nw - 1][(size_t)(c->vocab - 1) * H] == 0);
    CHECK(checked > 150 && skipped < checked / 10);
    fprintf(stderr, "%s, weight gradients%s: %d weights (%d skipped), worst relative error %.2e\n", what,
            teacher ? " of distillation from a teacher (weight 0.7, temperature 2)" : "", checked, skipped, worst);
    ws_set_distill(w, NULL);
    for (int k = 0; k < nw; k++) free(gp[k]);
    free(g); free(emb); free(fnorm); free(in); free(tg); free(wt);
}

/* mlp_rows: tokens per MLP chunk (0: the default, one chunk at these sizes;
 * 3 of the 10 tokens: four chunks, the last one partial), and then the wider
 * model with its weights dequantized in the smallest blocks, 64 rows. */
static void run_case(const char *dir, uint32_t lin, float dropout, int mlp_rows, int odd_ffn, const char *what) {
    char path[600];
    tt_config c;
    if (odd_ffn) cfg_odd_ffn(&c);
    else if (mlp_rows) cfg_wide(&c);
    else cfg_pruned(&c);
    snprintf(path, sizeof path, "%s/m%u-%d-%d.tier", dir, lin, mlp_rows, odd_ffn);
    CHECK(fixture_write_model(path, &c, lin, 0.3f, 5) == 0);
    tt_model *m;
    int rc = model_load(&m, path);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    if (rc) return;
    tt_lora_cfg lc = {4, 8.f, dropout, LORA_ALL_TARGETS, 0};
    tt_lora lo;
    CHECK(lora_init(&lo, &c, &lc, 3) == 0);
    randomize_lora(&lo, 4);
    int B = 2, S = 5;
    tt_ws *w;
    /* chunked: weights in 64-row blocks too, and the LoRA dropout path a row at a time (of the widest input) */
    tt_ws_opts wo = {.B = B, .seq = S, .with_ckpt = 1, .mlp_rows = mlp_rows, .wbuf_elems = mlp_rows ? 1 : 0,
                      .drop_elems = mlp_rows ? 1 : 0, .with_distill = 1};
    CHECK(ws_create(&w, &c, &lc, &wo, NULL) == 0);
    uint64_t drop = dropout > 0 ? 12345 : 0;
    check_layer(m, &lo, w, 0, B, S, drop, what);
    check_layer(m, &lo, w, 1, B, S, drop, what); /* the pruned layer */
    check_model(m, &lo, w, B, S, drop, what);
    if (mlp_rows) { /* chunked == whole: the same loss and LoRA gradients as one MLP chunk and one weight block */
        tt_ws *w1;
        tt_ws_opts wo1 = {.B = B, .seq = S, .with_ckpt = 1};
        CHECK(ws_create(&w1, &c, &lc, &wo1, NULL) == 0);
        int T = B * S;
        int32_t *in = tt_xmalloc((size_t)T * sizeof *in), *tg = tt_xmalloc((size_t)T * sizeof *tg);
        tt_real *wt = tt_xmalloc((size_t)T * sizeof *wt), *g1 = tt_xmalloc(lo.n * sizeof *g1);
        for (int t = 0; t < T; t++) { in[t] = (t * 7 + 3) % (int)c.vocab; tg[t] = (t * 5 + 1) % (int)c.vocab; wt[t] = 1; }
        be_fill(lo.grads, lo.n, 0);
        double lw = model_micro_step(m, &lo, w1, in, tg, wt, 1, 1, drop);
        memcpy(g1, lo.grads, lo.n * sizeof *g1);
        be_fill(lo.grads, lo.n, 0);
        double lc3 = model_micro_step(m, &lo, w, in, tg, wt, 1, 1, drop);
        CHECK_MSG(fabs(lc3 - lw) <= 1e-12 * fabs(lw), "%s: loss %.15g chunked vs %.15g whole", what, lc3, lw);
        double worst = 0, gmax = max_abs(g1, lo.n);
        for (size_t i = 0; i < lo.n; i++) worst = fmax(worst, fabs(lo.grads[i] - g1[i]) / gmax);
        CHECK_MSG(worst <= 1e-12, "%s: LoRA gradients chunked vs whole differ by %.3g", what, worst);
        fprintf(stderr, "%s: chunked vs whole MLP: loss |diff| %.2e, gradients %.2e of the largest\n", what,
                fabs(lc3 - lw), worst);
        free(in); free(tg); free(wt); free(g1);
        ws_free(w1);
    }
    if (lin == TT_DTYPE_F32) check_wgrad(m, &lo, w, B, S, drop, NULL, NULL, what); /* last: it rebinds the embedding */
    if (lin == TT_DTYPE_F32 && dropout == 0 && !mlp_rows && !odd_ffn) { /* distillation: a teacher of other weights */
        snprintf(path, sizeof path, "%s/teacher.tier", dir);
        CHECK(fixture_write_model(path, &c, lin, 0.3f, 9) == 0);
        tt_model *tm;
        tt_ws *tw;
        tt_ws_opts two = {.B = B, .seq = S, .with_ckpt = 1};
        CHECK(model_load(&tm, path) == 0 && ws_create(&tw, &c, &lc, &two, NULL) == 0);
        check_wgrad(m, &lo, w, B, S, drop, tm, tw, what);
        ws_free(tw);
        model_free(tm);
    }
    ws_free(w);
    lora_free(&lo);
    model_free(m);
}

/* Packed examples: three examples (4, 3 and 5 tokens) packed into one sequence of 12 with their starts
 * (ws_set_seg) give the same loss and LoRA gradients as each example alone in its own sequence (B 3 x
 * seq 5, padded with untrained positions) — the attention never crosses an example and positions restart
 * at each one. In f64, to 1e-12; and the comparison is not vacuous: without the starts, the packed
 * sequence gives another loss. */
static void test_packing(const char *dir) {
    char path[600];
    tt_config c;
    cfg_pruned(&c);
    snprintf(path, sizeof path, "%s/pack.tier", dir);
    CHECK(fixture_write_model(path, &c, TT_DTYPE_F32, 0.3f, 8) == 0);
    tt_model *m;
    if (model_load(&m, path) != 0) { CHECK_MSG(0, "%s", tt_lasterr()); return; }
    tt_lora_cfg lc = {4, 8.f, 0.f, LORA_ALL_TARGETS, 0};
    tt_lora lo;
    CHECK(lora_init(&lo, &c, &lc, 3) == 0);
    randomize_lora(&lo, 6);
    enum { NE = 3, SP = 12, SS = 5 };
    static const int len[NE] = {4, 3, 5};
    int32_t tok[NE][SS], pin[SP], ptg[SP], seg[SP], sin_[NE * SS], stg[NE * SS];
    tt_real pwt[SP], swt[NE * SS];
    int a = 0;
    for (int e = 0; e < NE; e++) {
        for (int t = 0; t < len[e]; t++) tok[e][t] = (int32_t)((e * 11 + t * 7 + 2) % (int)c.vocab);
        for (int t = 0; t < SS; t++) {
            int ok = t + 1 < len[e];
            tt_real w = ok && (t + e) % 3 != 0 ? 1 : 0; /* some targets trained, some context */
            sin_[e * SS + t] = t < len[e] ? tok[e][t] : 0;
            stg[e * SS + t] = ok ? tok[e][t + 1] : -1;
            swt[e * SS + t] = w;
            if (t < len[e]) {
                pin[a + t] = tok[e][t];
                ptg[a + t] = stg[e * SS + t];
                pwt[a + t] = w;
                seg[a + t] = a;
            }
        }
        a += len[e];
    }
    TT_ASSERT(a == SP);
    tt_ws *wp, *wsep;
    tt_ws_opts op = {.B = 1, .seq = SP, .with_ckpt = 1}, os = {.B = NE, .seq = SS, .with_ckpt = 1};
    CHECK(ws_create(&wp, &c, &lc, &op, NULL) == 0 && ws_create(&wsep, &c, &lc, &os, NULL) == 0);
    tt_real *g1 = tt_xmalloc(lo.n * sizeof *g1);
    be_fill(lo.grads, lo.n, 0);
    double ls = model_micro_step(m, &lo, wsep, sin_, stg, swt, 1, 1, 0);
    memcpy(g1, lo.grads, lo.n * sizeof *g1);
    be_fill(lo.grads, lo.n, 0);
    ws_set_seg(wp, seg);
    double lp = model_micro_step(m, &lo, wp, pin, ptg, pwt, 1, 1, 0);
    double worst = 0, gmax = max_abs(g1, lo.n);
    for (size_t i = 0; i < lo.n; i++) worst = fmax(worst, fabs(lo.grads[i] - g1[i]) / gmax);
    CHECK_MSG(fabs(lp - ls) <= 1e-12 * fabs(ls), "packed loss %.15g, separate %.15g", lp, ls);
    CHECK_MSG(worst <= 1e-12 && gmax > 0, "packed vs separate LoRA gradients differ by %.3g of the largest", worst);
    ws_set_seg(wp, NULL);
    double lx = model_micro_step(m, &lo, wp, pin, ptg, pwt, 1, 0, 0);
    CHECK_MSG(fabs(lx - ls) > 1e-6 * fabs(ls), "without the starts the packed loss is the same (%.15g)", lx);
    fprintf(stderr, "packing: loss %.15g packed vs %.15g separate (%.15g unmasked), gradients %.2e of the largest\n",
            lp, ls, lx, worst);
    free(g1);
    ws_free(wp);
    ws_free(wsep);
    lora_free(&lo);
    model_free(m);
}

int main(void) {
    char *dir = fixture_tmpdir();
    test_packing(dir);
    /* Under AddressSanitizer (CI runs every test twice) the four cases whose paths cover the others' (each weight
     * type, dropout, the MLP in chunks, padded rows); the plain build checks all eight. */
#if !defined(__SANITIZE_ADDRESS__)
    run_case(dir, TT_DTYPE_F32, 0.f, 0, 0, "f32 weights");
    run_case(dir, TT_DTYPE_F32, 0.25f, 0, 0, "f32 weights, LoRA dropout 0.25");
    run_case(dir, TT_DTYPE_NF4DQ, 0.f, 0, 0, "nf4-dq weights");
#endif
    run_case(dir, TT_DTYPE_BF16, 0.25f, 0, 0, "bf16 weights, LoRA dropout 0.25");
#if !defined(__SANITIZE_ADDRESS__)
    run_case(dir, TT_DTYPE_F32, 0.25f, 3, 0, "f32 weights, LoRA dropout 0.25, MLP in 3-token chunks, 64-row weight blocks");
#endif
    run_case(dir, TT_DTYPE_NF4DQ, 0.f, 3, 0, "nf4-dq weights, MLP in 3-token chunks, 64-row weight blocks");
    run_case(dir, TT_DTYPE_F32, 0.25f, 0, 1, "f32 weights, ffn 100 / 50 (padded MLP rows), LoRA dropout 0.25");
    run_case(dir, TT_DTYPE_NF4DQ, 0.f, 3, 1, "nf4-dq weights, ffn 100 / 50 (padded MLP rows), 3-token chunks");
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
