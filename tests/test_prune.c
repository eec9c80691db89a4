/* tests/test_prune.c — prune_store and quantize_store (core/prune.h) on a
 * small GQA model (4 layers, 8 query heads / 4 KV heads of 8, ffn 96; pruned
 * layers 1..2 by default):
 *   (a) structured pruning keeps whole GQA groups: the pruned q/k/v rows, o
 *       columns, gate/up rows and down columns are exactly the original ones
 *       of the kept KV heads' groups and MLP channels of the pruning map;
 *       other layers and tensors are untouched;
 *   (b) the pruned model computes what the original computes with the pruned
 *       heads and channels zeroed (losses and per-layer outputs);
 *   (c) magnitude keeps the groups of largest squared norm (planted huge and
 *       tiny groups; the whole map against an independent ranking);
 *   (d) rand keeps valid groups, differs from stru, and is a function of --seed;
 *   (e) 2:4 leaves exactly two zeros in every group of four, the two smallest
 *       (a last group of 3 when the input size is 99: one zero);
 *       unstructured zeroes round(r n) weights per projection, the smallest,
 *       ties to the lower index (bf16 weights have many ties), lz4 layers;
 *   (f) quantize: every projection equals the NF4 round trip of the input,
 *       the rest and the pruning map are unchanged;
 *   plus every refusal (NF4 input, already pruned, bad ratio/layers, NaN
 *   weights, ...) leaving no output file, and Taylor importance (stru, 2:4,
 *   unstructured) against |w * grad| with the calibration gradients of
 *   fulltrain_calib_grads (of the pruned layers only), other layer ranges,
 *   and more calibration samples than tokens per window. */
#include "core/base/common.h"
#include "core/fulltrain.h"
#include "core/lora.h"
#include "core/model.h"
#include "core/prune.h"
#include "io/storeio.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>


#define A_LAYER 1 /* default pruned range of a 4-layer model: [1, 3) */
#define B_LAYER 3

static char g_dir[512];
static char *g_paths[64]; /* every path_of result, freed at the end */
static int g_npaths;

/* DIR/name, valid until the end of the test (one string per name). */
static const char *path_of(const char *name) {
    size_t nd = strlen(g_dir);
    for (int i = 0; i < g_npaths; i++)
        if (strcmp(g_paths[i] + nd + 1, name) == 0) return g_paths[i];
    TT_ASSERT(g_npaths < 64);
    char *p = tt_xmalloc(nd + strlen(name) + 2);
    sprintf(p, "%s/%s", g_dir, name);
    return g_paths[g_npaths++] = p;
}

/* 4 layers, hidden 64 = 8 heads x 8, 4 KV heads (GQA group 2), ffn 96, vocab 32. */
static void test_config(tt_config *c) {
    fixture_micro_config(c);
    c->n_layers = 4;
    c->head_dim = 8;
    c->n_heads = 8;
    c->n_kv_heads = 4;
    for (uint32_t l = 0; l < c->n_layers; l++) c->layers[l] = (tt_layer_dims){8, 4, 96, 0};
}

static float *read_tensor(store_reader *r, uint32_t i) {
    const tier_tensor *t = tier_tensor_at(r->s, i);
    float *x = tt_xmalloc(t->rows * t->cols * sizeof *x);
    int rc = store_reader_tensor(r, i, x);
    TT_ASSERT(rc == 0);
    return x;
}

static int open_reader(store_reader *r, const char *path) {
    int rc = store_reader_open(r, path);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    return rc;
}

static tt_prune_opts opts_of(int method, double ratio) {
    tt_prune_opts o = {0};
    o.method = method;
    o.importance = PRUNE_MAGNITUDE;
    o.ratio = ratio;
    o.seed = 1;
    return o;
}

static int prune_ok(const char *in, const char *out, const tt_prune_opts *o, tt_prune_report *rep) {
    int rc = prune_store(in, out, o, rep);
    CHECK_MSG(rc == 0, "prune %s -> %s: %s", in, out, tt_lasterr());
    return rc;
}

/* ---- sources ------------------------------------------------------------------ */

/* Copies the store at ctx's reader, scaling a few groups of layer 1 to plant
 * known winners and losers of the magnitude ranking: KV head 1 (with query
 * heads 2, 3 and their o_proj columns) and MLP channel 7 times 4, KV head 2
 * and channel 8 times 0.05. */
typedef struct plant_ctx {
    store_reader *r;
    const tt_config *c;
} plant_ctx;

static float plant_scale(const tt_config *c, int proj, uint64_t row, uint64_t col) {
    uint64_t hd = c->head_dim, g = c->n_heads / c->n_kv_heads;
    uint64_t kv = 99, ch = 9999;
    switch (proj) {
    case TT_PROJ_Q: kv = row / hd / g; break;
    case TT_PROJ_K: case TT_PROJ_V: kv = row / hd; break;
    case TT_PROJ_O: kv = col / hd / g; break;
    case TT_PROJ_GATE: case TT_PROJ_UP: ch = row; break;
    case TT_PROJ_DOWN: ch = col; break;
    }
    return kv == 1 || ch == 7 ? 4.0f : kv == 2 || ch == 8 ? 0.05f : 1.0f;
}

static int fill_plant(void *vc, uint32_t i, const tt_tensor_desc *d, float *out) {
    plant_ctx *p = vc;
    int rc = store_reader_tensor(p->r, i, out);
    if (rc || d->role != TT_ROLE_LINEAR || d->layer != 1) return rc;
    for (uint64_t r = 0; r < d->rows; r++)
        for (uint64_t c = 0; c < d->cols; c++) out[r * d->cols + c] *= plant_scale(p->c, d->proj, r, c);
    return 0;
}

static void write_planted(const char *base, const char *out) {
    store_reader r;
    if (open_reader(&r, base)) return;
    const tt_config *c = store_reader_config(&r);
    uint32_t *dt = fixture_dtypes(c, TT_DTYPE_F32);
    tier_write_opts wo = {dt, NULL, 0, NULL};
    plant_ctx p = {&r, c};
    int rc = store_write(out, c, &wo, fill_plant, &p);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    free(dt);
    store_reader_close(&r);
}

/* Every projection of the store at path has no exact zero (so zeros in a
 * pruned copy are exactly the pruned weights). */
static void check_no_zeros(const char *path) {
    store_reader r;
    if (open_reader(&r, path)) return;
    const tt_config *c = store_reader_config(&r);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        if (d.role != TT_ROLE_LINEAR) continue;
        float *x = read_tensor(&r, i);
        for (uint64_t j = 0; j < d.rows * d.cols; j++) CHECK(x[j] != 0.0f);
        free(x);
    }
    store_reader_close(&r);
}

/* ---- (a) structured: gathers against the map ----------------------------------- */

/* Original row of pruned row pr of a head-indexed matrix: head pr/hd of the
 * pruned layer is query head j = (pr/hd) % group of kept KV head (pr/hd)/group. */
static uint64_t orig_head_row(const uint32_t *kv, uint64_t pr, uint64_t hd, uint64_t group) {
    uint64_t h = pr / hd;
    return (kv[h / group] * group + h % group) * hd + pr % hd;
}

static void check_gathers(const char *orig, const char *pruned, const char *what) {
    store_reader ro, rp;
    if (open_reader(&ro, orig)) return;
    if (open_reader(&rp, pruned)) { store_reader_close(&ro); return; }
    const tt_config *co = store_reader_config(&ro), *cp = store_reader_config(&rp);
    const tier_prune_map *map = tier_prune(rp.s);
    CHECK_MSG(map != NULL, "%s: no pruning map", what);
    for (uint32_t l = 0; l < co->n_layers; l++) {
        int pr = l >= A_LAYER && l < B_LAYER;
        tt_layer_dims want = pr ? (tt_layer_dims){4, 2, 48, 1} : co->layers[l];
        CHECK_MSG(memcmp(&cp->layers[l], &want, sizeof want) == 0, "%s: layer %u dims %u/%u/%u/%u", what, l,
                  cp->layers[l].n_heads, cp->layers[l].n_kv_heads, cp->layers[l].ffn, cp->layers[l].pruned);
        if (map) CHECK(pr ? map->kv[l] != NULL && map->ffn[l] != NULL : map->kv[l] == NULL && map->ffn[l] == NULL);
    }
    if (!map) goto out;
    uint64_t hd = co->head_dim, g = co->n_heads / co->n_kv_heads;
    tt_tensor_desc d, e;
    for (uint32_t i = 0; i < config_n_tensors(co); i++) {
        config_tensor(co, i, &d);
        config_tensor(cp, i, &e);
        CHECK_EQ_INT(store_reader_dtype(&rp, i), store_reader_dtype(&ro, i));
        float *x = read_tensor(&ro, i), *y = read_tensor(&rp, i);
        uint64_t bad = 0;
        if (d.role != TT_ROLE_LINEAR || d.layer < A_LAYER || d.layer >= B_LAYER) {
            bad = d.rows * d.cols != e.rows * e.cols || memcmp(x, y, d.rows * d.cols * sizeof *x) != 0;
        } else {
            const uint32_t *kv = map->kv[d.layer], *ch = map->ffn[d.layer];
            for (uint64_t r = 0; r < e.rows; r++)
                for (uint64_t c = 0; c < e.cols; c++) {
                    uint64_t orow = r, ocol = c;
                    switch (d.proj) {
                    case TT_PROJ_Q: orow = orig_head_row(kv, r, hd, g); break;
                    case TT_PROJ_K: case TT_PROJ_V: orow = orig_head_row(kv, r, hd, 1); break;
                    case TT_PROJ_O: ocol = orig_head_row(kv, c, hd, g); break;
                    case TT_PROJ_GATE: case TT_PROJ_UP: orow = ch[r]; break;
                    case TT_PROJ_DOWN: ocol = ch[c]; break;
                    }
                    bad += y[r * e.cols + c] != x[orow * d.cols + ocol];
                }
        }
        CHECK_MSG(bad == 0, "%s: %s: %llu values are not the kept groups' originals", what, d.name,
                  (unsigned long long)bad);
        free(x);
        free(y);
    }
out:
    store_reader_close(&ro);
    store_reader_close(&rp);
}

/* ---- (b) forward equivalence ------------------------------------------------------ */

/* The original with everything the map drops set to zero: q/k/v rows and o
 * columns of dropped heads, gate/up rows and down columns of dropped channels. */
typedef struct zero_ctx {
    store_reader *r;
    const tt_config *c;
    const tier_prune_map *map;
} zero_ctx;

static int kept(const uint32_t *idx, uint32_t n, uint64_t x) {
    for (uint32_t k = 0; k < n; k++)
        if (idx[k] == x) return 1;
    return 0;
}

static int fill_zeroed(void *vc, uint32_t i, const tt_tensor_desc *d, float *out) {
    zero_ctx *z = vc;
    int rc = store_reader_tensor(z->r, i, out);
    if (rc || d->role != TT_ROLE_LINEAR || !z->map->kv[d->layer]) return rc;
    uint64_t hd = z->c->head_dim, g = z->c->n_heads / z->c->n_kv_heads;
    const uint32_t *kv = z->map->kv[d->layer], *ch = z->map->ffn[d->layer];
    uint32_t nkv = 2, nch = 48; /* the pruned dims (checked by check_gathers) */
    for (uint64_t r = 0; r < d->rows; r++)
        for (uint64_t c = 0; c < d->cols; c++) {
            int keep = 1;
            switch (d->proj) {
            case TT_PROJ_Q: keep = kept(kv, nkv, r / hd / g); break;
            case TT_PROJ_K: case TT_PROJ_V: keep = kept(kv, nkv, r / hd); break;
            case TT_PROJ_O: keep = kept(kv, nkv, c / hd / g); break;
            case TT_PROJ_GATE: case TT_PROJ_UP: keep = kept(ch, nch, r); break;
            case TT_PROJ_DOWN: keep = kept(ch, nch, c); break;
            }
            if (!keep) out[r * d->cols + c] = 0.0f;
        }
    return 0;
}

static void write_zeroed(const char *orig, const char *pruned, const char *out) {
    store_reader ro, rp;
    if (open_reader(&ro, orig)) return;
    if (open_reader(&rp, pruned)) { store_reader_close(&ro); return; }
    const tt_config *c = store_reader_config(&ro);
    uint32_t *dt = fixture_dtypes(c, TT_DTYPE_F32);
    tier_write_opts wo = {dt, NULL, 0, NULL};
    zero_ctx z = {&ro, c, tier_prune(rp.s)};
    TT_ASSERT(z.map);
    int rc = store_write(out, c, &wo, fill_zeroed, &z);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    free(dt);
    store_reader_close(&ro);
    store_reader_close(&rp);
}

typedef struct loaded {
    tt_model *m;
    tt_lora lo;
    tt_ws *w;
} loaded;

#define FB 2  /* sequences */
#define FS 16 /* tokens per sequence */

static int load(loaded *x, const char *path) {
    int rc = model_load(&x->m, path);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    if (rc) return rc;
    /* LoRA with B = 0 (lora_init, as PEFT): it adds exactly nothing */
    tt_lora_cfg lc = {4, 8.f, 0.f, LORA_ALL_TARGETS, 0};
    TT_ASSERT(lora_init(&x->lo, model_config(x->m), &lc, 3) == 0);
    tt_ws_opts wo = {.B = FB, .seq = FS, .with_ckpt = 1};
    TT_ASSERT(ws_create(&x->w, model_config(x->m), &lc, &wo, NULL) == 0);
    return 0;
}

static void unload(loaded *x) {
    ws_free(x->w);
    lora_free(&x->lo);
    model_free(x->m);
}

static double max_abs(const tt_real *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs((double)x[i]) > m ? fabs((double)x[i]) : m;
    return m;
}

/* The two models compute the same function up to float rounding: the
 * zeroed model's extra terms are exact zeros (0 * x, and attention-weighted
 * sums of all-zero value rows), so the only differences come from BLAS summing
 * the remaining products in another order over another inner size: float32's
 * 6e-8 times about sqrt(inner size) ~ 10, i.e. ~6e-7 relative per layer (the
 * largest measured here is 5e-7). The tolerance, 2e-5 relative, leaves 30x
 * room for that, while one wrong row or column (the map pointing at other
 * weights than those kept) changes outputs by tens of percent. */
static void check_forward(const char *zeroed, const char *pruned) {
    loaded za, pb;
    if (load(&za, zeroed)) return;
    if (load(&pb, pruned)) { unload(&za); return; }
    const tt_config *c = model_config(za.m);
    size_t T = FB * FS, H = c->hidden;
    int32_t in[FB * FS], tg[FB * FS];
    tt_real wt[FB * FS];
    tt_rng r;
    rng_seed(&r, 77, 1);
    for (int trial = 0; trial < 4; trial++) {
        for (size_t t = 0; t < T; t++) {
            in[t] = (int32_t)rng_below(&r, c->vocab);
            tg[t] = (int32_t)rng_below(&r, c->vocab);
            wt[t] = 1;
        }
        double la = model_micro_step(za.m, &za.lo, za.w, in, tg, wt, 1, 0, 0);
        double lb = model_micro_step(pb.m, &pb.lo, pb.w, in, tg, wt, 1, 0, 0);
        CHECK_MSG(isfinite(la) && fabs(la - lb) <= 2e-5 * fabs(la), "trial %d: loss %.9g (zeroed original) vs %.9g "
                  "(pruned)", trial, la, lb);
    }
    tt_real *xh = tt_xmalloc(T * H * sizeof *xh), *ya = tt_xmalloc(T * H * sizeof *ya),
            *yb = tt_xmalloc(T * H * sizeof *yb);
    tt_real *x = be_alloc(T * H * sizeof *x), *y = be_alloc(T * H * sizeof *y);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        for (size_t i = 0; i < T * H; i++) xh[i] = (tt_real)rng_normal(&r);
        be_to_device(x, xh, T * H * sizeof *x);
        model_layer_forward(za.m, &za.lo, za.w, (int)l, x, y, 0);
        be_to_host(ya, y, T * H * sizeof *y);
        model_layer_forward(pb.m, &pb.lo, pb.w, (int)l, x, y, 0);
        be_to_host(yb, y, T * H * sizeof *y);
        /* the layer adds its attention and MLP outputs to x: compare those */
        for (size_t i = 0; i < T * H; i++) { ya[i] -= xh[i]; yb[i] -= xh[i]; }
        double scale = max_abs(ya, T * H), err = 0;
        for (size_t i = 0; i < T * H; i++) err = fmax(err, fabs((double)ya[i] - (double)yb[i]));
        CHECK_MSG(scale > 0.1 && err <= 2e-5 * scale, "layer %u: max |dy| %.3g of max |y - x| %.3g", l, err, scale);
    }
    be_free(x);
    be_free(y);
    free(xh); free(ya); free(yb);
    unload(&za);
    unload(&pb);
}

/* ---- (c) the expected magnitude / Taylor ranking ----------------------------------- */

/* The k best of score[0..n) (ties: lower index), ascending, into out —
 * selection by repeated maximum, independent of the code under test. */
static void top_k(const double *score, uint32_t n, uint32_t k, uint32_t *out) {
    uint8_t taken[256] = {0};
    TT_ASSERT(n <= 256);
    for (uint32_t m = 0; m < k; m++) {
        int best = -1;
        for (uint32_t i = 0; i < n; i++)
            if (!taken[i] && (best < 0 || score[i] > score[best])) best = (int)i;
        taken[best] = 1;
    }
    for (uint32_t i = 0, m = 0; i < n; i++)
        if (taken[i]) out[m++] = i;
}

/* Group scores of layer l straight from the definition: KV head j's group is
 * k/v rows j*hd.., q rows of heads j*g..j*g+g-1 and the o columns of those
 * heads; channel c is gate/up row c and down column c. Saliency w^2, or
 * |w * grad| when grads is given. */
static void expected_map(store_reader *r, float **grads, uint32_t l, uint32_t *kv_out, uint32_t *ffn_out) {
    const tt_config *c = store_reader_config(r);
    uint64_t hd = c->head_dim, g = c->n_heads / c->n_kv_heads;
    double kv[4] = {0}, ch[96] = {0};
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        if (d.role != TT_ROLE_LINEAR || d.layer != (int32_t)l) continue;
        float *w = read_tensor(r, i);
        for (uint32_t j = 0; j < 4; j++)
            for (uint64_t a = 0; a < d.rows; a++)
                for (uint64_t b = 0; b < d.cols; b++) {
                    uint64_t e = a * d.cols + b;
                    double s = grads ? fabs((double)w[e] * grads[i][e]) : (double)w[e] * w[e];
                    int in_kv = (d.proj == TT_PROJ_Q && a / hd / g == j) ||
                                ((d.proj == TT_PROJ_K || d.proj == TT_PROJ_V) && a / hd == j) ||
                                (d.proj == TT_PROJ_O && b / hd / g == j);
                    if (in_kv) kv[j] += s;
                    if (j == 0 && (d.proj == TT_PROJ_GATE || d.proj == TT_PROJ_UP)) ch[a] += s;
                    if (j == 0 && d.proj == TT_PROJ_DOWN) ch[b] += s;
                }
        free(w);
    }
    top_k(kv, 4, 2, kv_out);
    top_k(ch, 96, 48, ffn_out);
}

static void check_map(const char *orig, const char *pruned, float **grads, const char *what) {
    store_reader ro;
    tier_store *s;
    if (open_reader(&ro, orig)) return;
    int rc = tier_open(&s, pruned);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    const tier_prune_map *map = rc ? NULL : tier_prune(s);
    for (uint32_t l = A_LAYER; map && l < B_LAYER; l++) {
        uint32_t kv[2], ch[48];
        expected_map(&ro, grads, l, kv, ch);
        CHECK_MSG(memcmp(kv, map->kv[l], sizeof kv) == 0, "%s: layer %u keeps KV heads %u,%u, expected %u,%u", what,
                  l, map->kv[l][0], map->kv[l][1], kv[0], kv[1]);
        CHECK_MSG(memcmp(ch, map->ffn[l], sizeof ch) == 0, "%s: layer %u keeps other MLP channels", what, l);
        if (!grads && l == 1) { /* the planted groups */
            CHECK_MSG(map->kv[1][0] == 1 || map->kv[1][1] == 1, "%s: planted KV head 1 was pruned", what);
            CHECK_MSG(map->kv[1][0] != 2 && map->kv[1][1] != 2, "%s: planted tiny KV head 2 was kept", what);
            CHECK_MSG(kept(map->ffn[1], 48, 7) && !kept(map->ffn[1], 48, 8), "%s: planted channels 7/8", what);
        }
    }
    if (rc == 0) tier_close(s);
    store_reader_close(&ro);
}

/* ---- (e) masks ----------------------------------------------------------------------- */

/* What ranks a weight: |w| (the order of w^2) or |w * grad|; the
 * unstructured threshold compares f32 keys (core/prune.c, sal_key), 2:4 the
 * saliency in double. */
static double key(const float *w, const float *g, uint64_t j) {
    return g ? fabs((double)w[j] * g[j]) : fabs((double)w[j]);
}
static double ukey(const float *w, const float *g, uint64_t j) { return (double)(float)key(w, g, j); }

/* semi: every group of 4 of a row keeps exactly its 2 largest (ties: lower
 * index), unchanged, and zeroes 2. unst: exactly round(r n) zeros, every
 * zeroed weight ranks below every kept one, ties at the threshold go
 * lowest index first. Outside the pruned layers: identical. */
static void check_masked(const char *orig, const char *pruned, int method, double ratio, float **grads,
                         const char *what) {
    store_reader ro, rp;
    if (open_reader(&ro, orig)) return;
    if (open_reader(&rp, pruned)) { store_reader_close(&ro); return; }
    const tt_config *c = store_reader_config(&ro);
    CHECK(memcmp(c, store_reader_config(&rp), sizeof *c) == 0);
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        CHECK_EQ_INT(store_reader_dtype(&rp, i), store_reader_dtype(&ro, i));
        float *x = read_tensor(&ro, i), *y = read_tensor(&rp, i);
        const float *g = grads ? grads[i] : NULL;
        uint64_t n = d.rows * d.cols, bad = 0;
        if (d.role != TT_ROLE_LINEAR || d.layer < A_LAYER || d.layer >= B_LAYER) {
            bad = memcmp(x, y, n * sizeof *x) != 0;
        } else if (method == PRUNE_SEMI) {
            for (uint64_t r = 0; r < d.rows; r++)
                for (uint64_t c0 = 0; c0 < d.cols; c0 += 4) {
                    /* a last group of t < 4 (input size not a multiple of 4) keeps min(t, 2) */
                    uint64_t b = r * d.cols + c0, t = d.cols - c0 < 4 ? d.cols - c0 : 4, keep = t < 2 ? t : 2;
                    uint64_t zeros = 0;
                    for (uint64_t e = 0; e < t; e++) {
                        uint64_t better = 0;
                        for (uint64_t f = 0; f < t; f++)
                            better += key(x, g, b + f) > key(x, g, b + e) ||
                                      (key(x, g, b + f) == key(x, g, b + e) && f < e);
                        float want = better < keep ? x[b + e] : 0.0f;
                        bad += y[b + e] != want;
                        zeros += y[b + e] == 0.0f;
                    }
                    bad += zeros != t - keep;
                }
        } else {
            uint64_t k = (uint64_t)floor(ratio * (double)n + 0.5), zeros = 0;
            double thr = -1, lo_kept = INFINITY;
            for (uint64_t j = 0; j < n; j++) {
                if (y[j] == 0.0f) { zeros++; thr = fmax(thr, ukey(x, g, j)); }
                else { bad += y[j] != x[j]; lo_kept = fmin(lo_kept, ukey(x, g, j)); }
            }
            CHECK_MSG(zeros == k, "%s: %s: %llu zeros, expected round(%g x %llu) = %llu", what, d.name,
                      (unsigned long long)zeros, ratio, (unsigned long long)n, (unsigned long long)k);
            CHECK_MSG(thr <= lo_kept, "%s: %s: a zeroed weight (%g) ranks above a kept one (%g)", what, d.name, thr,
                      lo_kept);
            int seen_kept_tie = 0; /* at the threshold, zeroed ones come first */
            for (uint64_t j = 0; j < n; j++)
                if (ukey(x, g, j) == thr) {
                    if (y[j] != 0.0f) seen_kept_tie = 1;
                    else bad += seen_kept_tie;
                }
        }
        CHECK_MSG(bad == 0, "%s: %s: %llu wrong values", what, d.name, (unsigned long long)bad);
        free(x);
        free(y);
    }
    store_reader_close(&ro);
    store_reader_close(&rp);
}

/* How many values of x have a tie among the other values (for the bf16 source). */
static uint64_t count_ties(const char *path) {
    store_reader r;
    if (open_reader(&r, path)) return 0;
    tt_tensor_desc d;
    config_tensor(store_reader_config(&r), 1 + 9 * A_LAYER + 1, &d); /* layer 1's q_proj */
    TT_ASSERT(d.role == TT_ROLE_LINEAR && d.layer == A_LAYER);
    float *x = read_tensor(&r, 1 + 9 * A_LAYER + 1);
    uint64_t ties = 0, n = d.rows * d.cols;
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t k = 0; k < n; k++)
            if (k != j && fabsf(x[k]) == fabsf(x[j])) { ties++; break; }
    free(x);
    store_reader_close(&r);
    return ties;
}

/* The stores at a and b have the same config (per-layer dims) and pruning map. */
static void check_same_map(const char *a, const char *b) {
    tier_store *sa, *sb;
    if (tier_open(&sa, a)) { CHECK_MSG(0, "%s", tt_lasterr()); return; }
    if (tier_open(&sb, b)) { CHECK_MSG(0, "%s", tt_lasterr()); tier_close(sa); return; }
    const tt_config *c = tier_config(sa);
    CHECK(memcmp(c, tier_config(sb), sizeof *c) == 0);
    const tier_prune_map *ma = tier_prune(sa), *mb = tier_prune(sb);
    CHECK((ma == NULL) == (mb == NULL));
    for (uint32_t l = 0; ma && mb && l < c->n_layers; l++) {
        if (!c->layers[l].pruned) continue;
        CHECK(memcmp(ma->kv[l], mb->kv[l], c->layers[l].n_kv_heads * sizeof(uint32_t)) == 0);
        CHECK(memcmp(ma->ffn[l], mb->ffn[l], c->layers[l].ffn * sizeof(uint32_t)) == 0);
    }
    tier_close(sa);
    tier_close(sb);
}

/* ---- (f) quantize ------------------------------------------------------------------------ */

static void check_quantized(const char *src, const char *q, int dq) {
    store_reader rs, rq;
    if (open_reader(&rs, src)) return;
    if (open_reader(&rq, q)) { store_reader_close(&rs); return; }
    const tt_config *c = store_reader_config(&rs);
    check_same_map(src, q); /* per-layer dims and kept indices */
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        config_tensor(c, i, &d);
        uint64_t n = d.rows * d.cols;
        float *x = read_tensor(&rs, i), *y = read_tensor(&rq, i);
        if (d.role == TT_ROLE_LINEAR) {
            CHECK_EQ_INT(store_reader_dtype(&rq, i), dq ? TT_DTYPE_NF4DQ : TT_DTYPE_NF4);
            uint8_t *blob = fixture_nf4_blob(x, n, dq);
            nf4_dequantize_tensor(blob, n, dq, x);
            free(blob);
        } else {
            CHECK_EQ_INT(store_reader_dtype(&rq, i), store_reader_dtype(&rs, i));
        }
        CHECK_MSG(memcmp(x, y, n * sizeof *x) == 0, "%s differs from the NF4 round trip of the input", d.name);
        free(x);
        free(y);
    }
    store_reader_close(&rs);
    store_reader_close(&rq);
}

/* ---- refusals ---------------------------------------------------------------------------- */

/* A copy of the store with one NaN in layer 1's q_proj. */
static int fill_nan(void *vc, uint32_t i, const tt_tensor_desc *d, float *out) {
    int rc = store_reader_tensor(vc, i, out);
    if (rc == 0 && d->layer == A_LAYER && d->proj == TT_PROJ_Q) out[5] = NAN;
    return rc;
}

static void expect_refused(const char *in, const tt_prune_opts *o, const char *pat, const char *what) {
    const char *out = path_of("refused.tier");
    int rc = prune_store(in, out, o, NULL);
    CHECK_MSG(rc < 0, "%s: accepted", what);
    CHECK_MSG(strstr(tt_lasterr(), pat) != NULL, "%s: message '%s' lacks '%s'", what, tt_lasterr(), pat);
    CHECK_MSG(!fixture_exists(out), "%s: left %s behind", what, out);
}

static void check_refusals(const char *f32, const char *nf4, const char *pruned) {
    tt_prune_opts o = opts_of(PRUNE_STRU, 0.5);
    expect_refused(nf4, &o, "quantize after pruning", "NF4 input");
    expect_refused(pruned, &o, "already structurally pruned", "stru on a pruned store");
    o.method = PRUNE_RAND;
    expect_refused(pruned, &o, "already structurally pruned", "rand on a pruned store");
    o = opts_of(PRUNE_STRU, 1.0);
    expect_refused(f32, &o, "--ratio", "ratio 1");
    o.ratio = 0;
    expect_refused(f32, &o, "--ratio", "ratio 0");
    o = opts_of(PRUNE_UNST, -0.1);
    expect_refused(f32, &o, "--ratio", "unst ratio < 0");
    o = opts_of(PRUNE_SEMI, 0.3);
    expect_refused(f32, &o, "--ratio", "semi ratio 0.3");
    o = opts_of(PRUNE_STRU, 0.5);
    o.layer_a = 2; o.layer_b = 9;
    expect_refused(f32, &o, "--layers", "layers past the model");
    o.layer_a = 2; o.layer_b = 2;
    expect_refused(f32, &o, "--layers", "empty layer range");
    o = opts_of(PRUNE_STRU, 0.995); /* ffn' = 96 - ceil(95.52) = 0 */
    expect_refused(f32, &o, "--ratio", "ratio removing every channel");
    o = opts_of(PRUNE_RAND, 0.5);
    o.importance = PRUNE_TAYLOR;
    expect_refused(f32, &o, "--importance", "rand with taylor");
    o = opts_of(PRUNE_STRU, 0.5);
    o.importance = PRUNE_TAYLOR;
    expect_refused(f32, &o, "--calib", "taylor without tokens");
    o = opts_of(PRUNE_STRU, 0.5);
    expect_refused(path_of("missing.tier"), &o, "missing.tier", "missing input");
    int rc = prune_store(f32, f32, &o, NULL);
    CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "is the input"), "pruning onto the input: %s", tt_lasterr());
    CHECK(fixture_exists(f32));
    rc = quantize_store(f32, f32, 1, NULL, NULL);
    CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "is the input"), "quantizing onto the input: %s", tt_lasterr());
    CHECK(fixture_exists(f32));
    /* the output is checked before any work: a missing folder, a directory (taylor would calibrate first) */
    uint32_t few[64] = {0};
    o.importance = PRUNE_TAYLOR;
    o.calib = few; o.n_calib = 64; o.calib_samples = 2; o.calib_seq = 8;
    rc = prune_store(f32, path_of("nodir/x.tier"), &o, NULL);
    CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "does not exist"), "-o in a missing folder: %s", tt_lasterr());
    rc = prune_store(f32, g_dir, &o, NULL);
    CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "is a directory"), "-o a directory: %s", tt_lasterr());
    rc = quantize_store(f32, path_of("nodir/q.tier"), 1, NULL, NULL);
    CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "does not exist"), "quantize -o in a missing folder: %s", tt_lasterr());
    /* windows of one token predict nothing */
    o.calib_seq = 1;
    expect_refused(f32, &o, "--calib-seq", "calib_seq 1");
    o.calib_seq = 8;
    o.calib_samples = 0;
    expect_refused(f32, &o, "--calib-samples", "calib_samples 0");
    o = opts_of(PRUNE_STRU, 0.5);
    rc = quantize_store(nf4, path_of("refused.tier"), 1, NULL, NULL);
    CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "already NF4"), "quantize of NF4: %s", tt_lasterr());
    CHECK(!fixture_exists(path_of("refused.tier")));
    /* a non-finite weight cannot be ranked; rand ranks nothing and copies it */
    store_reader r;
    if (open_reader(&r, f32)) return;
    const tt_config *c = store_reader_config(&r);
    uint32_t *dt = fixture_dtypes(c, TT_DTYPE_F32);
    tier_write_opts wo = {dt, NULL, 0, NULL};
    rc = store_write(path_of("nan.tier"), c, &wo, fill_nan, &r);
    CHECK_MSG(rc == 0, "%s", tt_lasterr());
    free(dt);
    store_reader_close(&r);
    o = opts_of(PRUNE_STRU, 0.5);
    expect_refused(path_of("nan.tier"), &o, "non-finite", "stru of a NaN weight");
    o = opts_of(PRUNE_UNST, 0.5);
    expect_refused(path_of("nan.tier"), &o, "non-finite", "unst of a NaN weight");
    o = opts_of(PRUNE_RAND, 0.5);
    prune_ok(path_of("nan.tier"), path_of("nan-rand.tier"), &o, NULL);
    /* nor quantized: the refusal names the input store (the NaN is its), and no output is left */
    rc = quantize_store(path_of("nan.tier"), path_of("nan-q.tier"), 1, NULL, NULL);
    CHECK_MSG(rc < 0 && strstr(tt_lasterr(), "nan.tier: tensor ") && strstr(tt_lasterr(), "cannot quantize it to NF4"),
              "quantize of a NaN weight: %s", tt_lasterr());
    CHECK(!fixture_exists(path_of("nan-q.tier")));
}

/* ---- Taylor -------------------------------------------------------------------------------- */

/* Taylor importance: prune's choices against |w * grad| with the gradients
 * fulltrain_calib_grads gives for the same calibration windows. */
static void check_taylor(const char *f32) {
    uint32_t tokens[600];
    for (int i = 0; i < 600; i++) tokens[i] = (uint32_t)(i * 7 + i / 5) % 32;
    tt_config c;
    test_config(&c);
    float **grads = tt_xcalloc(config_n_tensors(&c), sizeof *grads);
    /* the gradients of the pruned layers' projections, which prune_store asks for */
    int rc = fulltrain_calib_grads(f32, tokens, 600, 4, 32, A_LAYER, B_LAYER, grads);
    CHECK_MSG(rc == 0, "fulltrain_calib_grads: %s", tt_lasterr());
    tt_tensor_desc d;
    for (uint32_t i = 0; rc == 0 && i < config_n_tensors(&c); i++) {
        config_tensor(&c, i, &d);
        int want = d.role == TT_ROLE_LINEAR && d.layer >= A_LAYER && d.layer < B_LAYER;
        CHECK_MSG((grads[i] != NULL) == want, "fulltrain_calib_grads: %s has %s gradient", d.name,
                  grads[i] ? "a" : "no");
    }
    if (rc == 0) {
        tt_prune_opts o = opts_of(PRUNE_STRU, 0.5);
        o.importance = PRUNE_TAYLOR;
        o.calib = tokens; o.n_calib = 600; o.calib_samples = 4; o.calib_seq = 32;
        if (prune_ok(f32, path_of("taylor.tier"), &o, NULL) == 0) {
            check_gathers(f32, path_of("taylor.tier"), "stru taylor");
            check_map(f32, path_of("taylor.tier"), grads, "stru taylor");
        }
        o.method = PRUNE_SEMI;
        if (prune_ok(f32, path_of("taylor-semi.tier"), &o, NULL) == 0)
            check_masked(f32, path_of("taylor-semi.tier"), PRUNE_SEMI, 0.5, grads, "semi taylor");
        o.method = PRUNE_UNST;
        o.ratio = 0.4;
        if (prune_ok(f32, path_of("taylor-unst.tier"), &o, NULL) == 0)
            check_masked(f32, path_of("taylor-unst.tier"), PRUNE_UNST, 0.4, grads, "unst taylor");
    }
    /* streamed calibration (fulltrain_calib_grads_stream) at the smallest plan: the same gradients bit for bit,
     * from a mapping of a temporary file that is already unlinked; prune with --hbm writes the same store */
    {
        float **sg = tt_xcalloc(config_n_tensors(&c), sizeof *sg);
        void *map = NULL;
        uint64_t map_len = 0;
        char *tmp = fixture_tmpdir();
        /* a budget far too small first: the planner names the smallest, which is then used */
        rc = fulltrain_calib_grads_stream(f32, tokens, 600, 4, 32, A_LAYER, B_LAYER, 1, 0, tmp, sg, &map, &map_len);
        CHECK(rc == -ENOSPC && strstr(tt_lasterr(), "--hbm"));
        uint64_t need = 0;
        const char *at = strstr(tt_lasterr(), "needs --hbm ");
        double v = 0;
        char unit[8] = "";
        if (at && sscanf(at + 12, "%lf %7s", &v, unit) == 2) need = (uint64_t)(v * (unit[0] == 'K' ? 1024.0 : unit[0] == 'M' ? 1048576.0 : 1073741824.0));
        CHECK(need > 0);
        rc = fulltrain_calib_grads_stream(f32, tokens, 600, 4, 32, A_LAYER, B_LAYER, need, 0, tmp, sg, &map, &map_len);
        CHECK_MSG(rc == 0, "fulltrain_calib_grads_stream: %s", tt_lasterr());
        int same = rc == 0, n_cmp = 0;
        for (uint32_t i = 0; rc == 0 && i < config_n_tensors(&c); i++) {
            config_tensor(&c, i, &d);
            if (!grads[i] || !sg[i]) { same &= !grads[i] == !sg[i]; continue; }
            same &= memcmp(grads[i], sg[i], d.rows * d.cols * sizeof(float)) == 0;
            n_cmp++;
        }
        CHECK_MSG(same && n_cmp > 0, "streamed calibration gradients differ from the resident ones");
        DIR *dd = opendir(tmp); /* the temporary file was unlinked at once */
        int left = 0;
        for (struct dirent *de; dd && (de = readdir(dd));) left += de->d_name[0] != '.' || strncmp(de->d_name, ".tiertrain", 10) == 0;
        if (dd) closedir(dd);
        CHECK_MSG(left == 0, "the streamed calibration left %d files in its folder", left);
        if (map) munmap(map, map_len);
        fixture_rm_rf(tmp);
        free(tmp);
        free(sg);
        tt_prune_opts o = opts_of(PRUNE_UNST, 0.4);
        o.importance = PRUNE_TAYLOR;
        o.calib = tokens; o.n_calib = 600; o.calib_samples = 4; o.calib_seq = 32;
        o.hbm = need;
        if (prune_ok(f32, path_of("taylor-unst-streamed.tier"), &o, NULL) == 0)
            CHECK_MSG(fixture_same_file(path_of("taylor-unst.tier"), path_of("taylor-unst-streamed.tier")),
                      "prune --hbm (streamed calibration) wrote another store than the resident one");
        fprintf(stderr, "taylor: streamed calibration at --hbm %llu bytes: %d gradients identical, the same store\n",
                (unsigned long long)need, n_cmp);
    }
    for (uint32_t i = 0; i < config_n_tensors(&c); i++) free(grads[i]);
    free(grads);

    /* other layer ranges: gradients only of those layers, every path reads only them */
    tt_prune_opts o = opts_of(PRUNE_STRU, 0.5);
    o.importance = PRUNE_TAYLOR;
    o.calib = tokens; o.n_calib = 600; o.calib_samples = 4; o.calib_seq = 32;
    o.layer_a = 0; o.layer_b = 4;
    prune_ok(f32, path_of("taylor-all.tier"), &o, NULL);
    o.layer_a = 3; o.layer_b = 4;
    prune_ok(f32, path_of("taylor-last.tier"), &o, NULL);
    o.method = PRUNE_UNST;
    o.ratio = 0.3;
    o.layer_a = 0; o.layer_b = 1;
    prune_ok(f32, path_of("taylor-unst-first.tier"), &o, NULL);
    o.method = PRUNE_SEMI;
    o.ratio = 0.5;
    prune_ok(f32, path_of("taylor-semi-first.tier"), &o, NULL);

    /* more samples than tokens per window, the data near the minimum (300 x 2 + 1 = 601 of 1016 tokens): the
     * windows must stay inside the array (an exact heap allocation, so ASan sees any read past it) */
    uint32_t *few = tt_xmalloc(1016 * sizeof *few);
    for (int i = 0; i < 1016; i++) few[i] = (uint32_t)(i * 5 + i / 3) % 32;
    o = opts_of(PRUNE_UNST, 0.5);
    o.importance = PRUNE_TAYLOR;
    o.calib = few; o.n_calib = 1016; o.calib_samples = 300; o.calib_seq = 2;
    prune_ok(f32, path_of("taylor-300x2.tier"), &o, NULL);
    o.n_calib = 601; /* exactly samples * seq + 1 */
    prune_ok(f32, path_of("taylor-300x2-min.tier"), &o, NULL);
    o.n_calib = 600;
    expect_refused(f32, &o, "600 tokens", "calibration one token short");
    free(few);
}

int main(void) {
    char *dir = fixture_tmpdir();
    snprintf(g_dir, sizeof g_dir, "%s", dir);
    tt_config c;
    test_config(&c);
    const char *base = path_of("base.tier"), *f32 = path_of("f32.tier");
    CHECK(fixture_write_model(base, &c, TT_DTYPE_F32, 0.1f, 11) == 0);
    write_planted(base, f32);
    check_no_zeros(f32);

    /* (a)-(c): structured, magnitude */
    tt_prune_report rep;
    tt_prune_opts o = opts_of(PRUNE_STRU, 0.5);
    const char *stru = path_of("stru.tier");
    if (prune_ok(f32, stru, &o, &rep) == 0) {
        CHECK_EQ_INT(rep.layer_a, A_LAYER);
        CHECK_EQ_INT(rep.layer_b, B_LAYER);
        CHECK(config_n_params(&rep.after) < config_n_params(&rep.before));
        check_gathers(f32, stru, "stru");
        write_zeroed(f32, stru, path_of("zeroed.tier"));
        check_forward(path_of("zeroed.tier"), stru);
        check_map(f32, stru, NULL, "stru magnitude");
    }

    /* (d) rand: valid, seed-deterministic, not the magnitude choice */
    o = opts_of(PRUNE_RAND, 0.5);
    if (prune_ok(f32, path_of("rand1.tier"), &o, NULL) == 0 && prune_ok(f32, path_of("rand1b.tier"), &o, NULL) == 0) {
        check_gathers(f32, path_of("rand1.tier"), "rand");
        CHECK_MSG(fixture_same_file(path_of("rand1.tier"), path_of("rand1b.tier")), "rand: same seed, other store");
        CHECK_MSG(!fixture_same_file(path_of("rand1.tier"), stru), "rand chose what magnitude chose");
    }
    o.seed = 2;
    if (prune_ok(f32, path_of("rand2.tier"), &o, NULL) == 0)
        CHECK_MSG(!fixture_same_file(path_of("rand1.tier"), path_of("rand2.tier")), "rand: seed 2 = seed 1");

    /* (e) 2:4 and unstructured, on f32 and on bf16 (many equal magnitudes) */
    const char *bf16 = path_of("bf16.tier");
    CHECK(fixture_write_model(bf16, &c, TT_DTYPE_BF16, 0.3f, 12) == 0);
    check_no_zeros(bf16);
    CHECK_MSG(count_ties(bf16) > 100, "the bf16 source has too few equal magnitudes to test ties");
    const char *src[2] = {f32, bf16};
    for (int s = 0; s < 2; s++) {
        o = opts_of(PRUNE_SEMI, 0.5);
        if (prune_ok(src[s], path_of("semi.tier"), &o, &rep) == 0) {
            check_masked(src[s], path_of("semi.tier"), PRUNE_SEMI, 0.5, NULL, s ? "semi bf16" : "semi f32");
            CHECK_EQ_INT(rep.zeroed * 2, rep.masked);
        }
        double ratios[3] = {0.3, 0.75, 0.001};
        for (int k = 0; k < 3; k++) {
            o = opts_of(PRUNE_UNST, ratios[k]);
            if (prune_ok(src[s], path_of("unst.tier"), &o, NULL) == 0)
                check_masked(src[s], path_of("unst.tier"), PRUNE_UNST, ratios[k], NULL, s ? "unst bf16" : "unst f32");
        }
    }
    /* lz4: three quarters zeros compress by far more than 1/8 */
    o = opts_of(PRUNE_UNST, 0.75);
    if (prune_ok(f32, path_of("unst75.tier"), &o, NULL) == 0) {
        tier_store *s;
        if (tier_open(&s, path_of("unst75.tier")) == 0) {
            for (uint32_t l = 0; l < c.n_layers; l++)
                CHECK_EQ_INT(tier_extent_at(s, TT_EXTENT_LAYER(l))->codec,
                             l >= A_LAYER && l < B_LAYER ? TIER_CODEC_LZ4 : TIER_CODEC_RAW);
            tier_close(s);
        }
    }
    /* 2:4 with input sizes that are not multiples of 4: ffn 99 leaves down_proj
     * rows a last group of 3 */
    tt_config c99 = c;
    c99.ffn = 99;
    for (uint32_t l = 0; l < c99.n_layers; l++) c99.layers[l].ffn = 99;
    CHECK(fixture_write_model(path_of("ffn99.tier"), &c99, TT_DTYPE_F32, 0.1f, 14) == 0);
    o = opts_of(PRUNE_SEMI, 0.5);
    if (prune_ok(path_of("ffn99.tier"), path_of("ffn99-semi.tier"), &o, NULL) == 0)
        check_masked(path_of("ffn99.tier"), path_of("ffn99-semi.tier"), PRUNE_SEMI, 0.5, NULL, "semi, ffn 99");

    /* 2:4 after structured pruning keeps the map and the pruned dims */
    o = opts_of(PRUNE_SEMI, 0.5);
    if (prune_ok(stru, path_of("stru-semi.tier"), &o, NULL) == 0) {
        check_masked(stru, path_of("stru-semi.tier"), PRUNE_SEMI, 0.5, NULL, "semi after stru");
        check_same_map(stru, path_of("stru-semi.tier"));
    }

    /* (f) quantize: NF4 with and without double quant, map kept */
    for (int dq = 0; dq < 2; dq++) {
        const char *q = path_of(dq ? "q-dq.tier" : "q.tier");
        int rc = quantize_store(stru, q, dq, NULL, NULL);
        CHECK_MSG(rc == 0, "%s", tt_lasterr());
        if (rc == 0) check_quantized(stru, q, dq);
    }

    CHECK(fixture_write_model(path_of("nf4.tier"), &c, TT_DTYPE_NF4DQ, 0.3f, 13) == 0);
    check_refusals(f32, path_of("nf4.tier"), stru);
    check_taylor(f32);
    fixture_rm_rf(dir);
    free(dir);
    for (int i = 0; i < g_npaths; i++) free(g_paths[i]);
    TEST_END();
}
