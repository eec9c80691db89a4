/* tests/test_loram.c — LoRAM after training (core/loram.h):
 *
 * (a) recovery: an adapter of random values on a pruned config (GQA groups of
 *     2 and of 4, a hand-made and a random pruning map) recovered to the
 *     original shapes puts every trained value at its original index and
 *     exactly 0 everywhere else; B·A is exactly 0 at pruned rows (q/k/v/gate/
 *     up) and pruned columns (o/down) and equals the pruned B·A at the kept
 *     ones; unpruned layers are copied; the checker catches a wrong map; the
 *     result round-trips through PEFT files; mismatched adapters are refused.
 * (b) merge: the original f32 model + an adapter with non-zero B computes the
 *     same hidden states and loss as the merged store with no adapter, for a
 *     random adapter and for a recovered one; merging into a pruned NF4 store
 *     keeps dtypes, the pruning map and every untouched tensor's bytes, and
 *     the merged projections are W + s·B·A up to NF4's error; a foreign
 *     adapter is refused and leaves no file.
 * (c) eval: train_eval through the executor (resident and streamed under the
 *     smallest --hbm) gives the loss model_micro_step gives directly.
 */
#include "core/base/common.h"
#include "core/loram.h"
#include "core/lora.h"
#include "core/model.h"
#include "io/storeio.h"
#include "core/train.h"
#include "io/peft.h"
#include "core/exec.h"
#include "sched/plan.h"
#include "tests/fixtures.h"
#include "tests/test.h"

#include <errno.h>

/* ---- helpers -------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* k distinct indices of 0..n-1, increasing. Caller frees. */
static uint32_t *random_subset(tt_rng *r, uint32_t n, uint32_t k) {
    uint32_t *all = malloc(n * sizeof *all);
    for (uint32_t i = 0; i < n; i++) all[i] = i;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = i + (uint32_t)rng_below(r, n - i), t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    qsort(all, k, sizeof *all, cmp_u32);
    return all;
}

/* A 3-layer model with 8 query heads of 8 and 8/g KV heads: layer 0
 * unpruned, layer 1 at LoRAM's ratio 0.5 with the hand-made map (KV heads 1
 * and 2 of each four, FFN channels 1, 3, 5, ...), layer 2 keeping 3 of 4 KV
 * groups (g = 2) or 1 of 2 (g = 4) and 70 of 96 channels at random. */
static void pruned_config(uint32_t g, uint64_t seed, tt_config *c, tier_prune_map *map) {
    fixture_micro_config(c);
    c->n_layers = 3;
    c->n_heads = 8;
    c->n_kv_heads = 8 / g;
    c->head_dim = 8;
    for (uint32_t l = 0; l < 3; l++) c->layers[l] = (tt_layer_dims){8, 8 / g, 96, 0};
    TT_ASSERT(config_prune(c, 0.5, 1, 2) == 0);
    uint32_t kv2 = g == 2 ? 3 : 1;
    c->layers[2] = (tt_layer_dims){kv2 * g, kv2, 70, 1};
    TT_ASSERT(config_validate(c, "test config") == 0);
    memset(map, 0, sizeof *map);
    uint32_t kv1 = c->layers[1].n_kv_heads;
    map->kv[1] = malloc(kv1 * sizeof(uint32_t));
    for (uint32_t j = 0; j < kv1; j++) map->kv[1][j] = (j / 2) * 4 + 1 + j % 2; /* {1,2} or {1} ... */
    map->ffn[1] = malloc(c->layers[1].ffn * sizeof(uint32_t));
    for (uint32_t i = 0; i < c->layers[1].ffn; i++) map->ffn[1][i] = 2 * i + 1;
    tt_rng r;
    rng_seed(&r, seed, 77);
    map->kv[2] = random_subset(&r, c->n_kv_heads, kv2);
    map->ffn[2] = random_subset(&r, c->ffn, 70);
}

/* Shape (out, in) of projection p of layer l in cfg, from the tensor table. */
static void shape_of(const tt_config *cfg, uint32_t l, int p, uint32_t *out, uint32_t *in) {
    tt_tensor_desc d;
    for (uint32_t i = 0; i < config_n_tensors(cfg); i++) {
        config_tensor(cfg, i, &d);
        if (d.role == TT_ROLE_LINEAR && d.layer == (int32_t)l && d.proj == p) {
            *out = (uint32_t)d.rows;
            *in = (uint32_t)d.cols;
            return;
        }
    }
    TT_ASSERT(!"no such projection");
}

/* An adapter of cfg's shapes with values uniform in ±amp, never 0 (so that a
 * trained value is told from the zeros recovery adds). */
static void random_adapter(const tt_config *cfg, uint32_t rank, float alpha, unsigned targets, float amp, uint64_t seed,
                           peft_adapter *a) {
    memset(a, 0, sizeof *a);
    a->n_layers = cfg->n_layers;
    a->rank = rank;
    a->alpha = alpha;
    a->target_mask = targets;
    a->lora = calloc((size_t)cfg->n_layers * PEFT_N_PROJ, sizeof *a->lora);
    uint64_t n = 0;
    uint32_t out, in;
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++)
            if (targets >> p & 1) {
                shape_of(cfg, l, p, &out, &in);
                n += (uint64_t)rank * (out + in);
            }
    float *mem = malloc(n * sizeof *mem);
    a->mem_ = mem;
    tt_rng r;
    rng_seed(&r, seed, 3);
    for (uint64_t i = 0; i < n; i++) {
        mem[i] = (float)((2 * rng_uniform(&r) - 1) * amp);
        if (mem[i] == 0) mem[i] = amp / 2;
    }
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++)
            if (targets >> p & 1) {
                peft_lora *x = peft_at(a, l, p);
                shape_of(cfg, l, p, &x->out, &x->in);
                x->A = mem;
                mem += (uint64_t)rank * x->in;
                x->B = mem;
                mem += (uint64_t)x->out * rank;
            }
}

/* The original indices the pruned dimension of projection p in layer l kept,
 * in pruned order, enumerated group by group: for each kept KV head j, its
 * g query heads j*g .. j*g+g-1 (q/o), or its own rows (k/v); the kept
 * channels (gate/up/down). *n receives the count. Caller frees. */
static uint32_t *kept_list(const tt_config *c, const tier_prune_map *map, uint32_t l, int p, uint32_t *n) {
    uint32_t hd = c->head_dim, g = c->n_heads / c->n_kv_heads, nkv = c->layers[l].n_kv_heads;
    uint32_t *v = malloc((size_t)(c->n_heads * hd + c->ffn) * sizeof *v);
    *n = 0;
    if (p == TT_PROJ_Q || p == TT_PROJ_O) {
        for (uint32_t j = 0; j < nkv; j++)
            for (uint32_t q = map->kv[l][j] * g; q < map->kv[l][j] * g + g; q++)
                for (uint32_t d = 0; d < hd; d++) v[(*n)++] = q * hd + d;
    } else if (p == TT_PROJ_K || p == TT_PROJ_V) {
        for (uint32_t j = 0; j < nkv; j++)
            for (uint32_t d = 0; d < hd; d++) v[(*n)++] = map->kv[l][j] * hd + d;
    } else {
        for (uint32_t i = 0; i < c->layers[l].ffn; i++) v[(*n)++] = map->ffn[l][i];
    }
    return v;
}

/* B·A (out, in) in double. Caller frees. */
static double *product(const peft_lora *x, uint32_t r) {
    double *m = calloc((size_t)x->out * x->in, sizeof *m);
    for (uint32_t o = 0; o < x->out; o++)
        for (uint32_t k = 0; k < r; k++)
            for (uint32_t i = 0; i < x->in; i++) m[(size_t)o * x->in + i] += (double)x->B[o * r + k] * x->A[k * x->in + i];
    return m;
}

/* Mismatches of rec against the recovery rule for adapter a on the pruned
 * config c with map (0: rec is exactly right). */
static long verify_recovery(const peft_adapter *rec, const peft_adapter *a, const tt_config *c,
                            const tier_prune_map *map) {
    long bad = 0;
    tt_config orig;
    loram_original_config(c, &orig);
    if (rec->n_layers != a->n_layers || rec->rank != a->rank || rec->alpha != a->alpha ||
        rec->target_mask != a->target_mask)
        return 1;
    uint32_t r = a->rank;
    for (uint32_t l = 0; l < c->n_layers; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            if (!(a->target_mask >> p & 1)) continue;
            const peft_lora *x = peft_at(a, l, p), *y = peft_at(rec, l, p);
            uint32_t out, in;
            shape_of(&orig, l, p, &out, &in);
            if (y->out != out || y->in != in) { bad++; continue; }
            if (!c->layers[l].pruned) { /* copied */
                bad += memcmp(x->A, y->A, (size_t)r * in * sizeof(float)) != 0;
                bad += memcmp(x->B, y->B, (size_t)out * r * sizeof(float)) != 0;
                continue;
            }
            int cols = p == TT_PROJ_O || p == TT_PROJ_DOWN; /* which dimension was pruned */
            uint32_t nk, full = cols ? in : out;
            uint32_t *kept = kept_list(c, map, l, p, &nk);
            int32_t *pos = malloc(full * sizeof *pos); /* original index -> pruned index, or -1 */
            for (uint32_t i = 0; i < full; i++) pos[i] = -1;
            for (uint32_t i = 0; i < nk; i++) pos[kept[i]] = (int32_t)i;
            if (nk != (cols ? x->in : x->out)) bad++;
            /* the factor on the hidden side is copied; the other has the trained values at kept indices, 0 elsewhere */
            if (cols) {
                bad += memcmp(x->B, y->B, (size_t)out * r * sizeof(float)) != 0;
                for (uint32_t k = 0; k < r; k++)
                    for (uint32_t i = 0; i < in; i++)
                        bad += y->A[k * in + i] != (pos[i] < 0 ? 0.0f : x->A[k * x->in + (uint32_t)pos[i]]);
            } else {
                bad += memcmp(x->A, y->A, (size_t)r * in * sizeof(float)) != 0;
                for (uint32_t o = 0; o < out; o++)
                    for (uint32_t k = 0; k < r; k++)
                        bad += y->B[o * r + k] != (pos[o] < 0 ? 0.0f : x->B[(uint32_t)pos[o] * r + k]);
            }
            /* B·A: exactly 0 at pruned rows / columns, the pruned model's B·A at the kept ones */
            double *pf = product(y, r), *pp = product(x, r);
            for (uint32_t o = 0; o < out; o++)
                for (uint32_t i = 0; i < in; i++) {
                    int32_t q = pos[cols ? i : o];
                    double want = q < 0 ? 0.0 : cols ? pp[(size_t)o * x->in + (uint32_t)q] : pp[(size_t)q * x->in + i];
                    bad += pf[(size_t)o * in + i] != want;
                }
            free(pf);
            free(pp);
            free(pos);
            free(kept);
        }
    return bad;
}

static void free_adapter(peft_adapter *a) {
    free(a->lora);
    free(a->mem_);
    memset(a, 0, sizeof *a);
}

/* ---- (a) recovery ------------------------------------------------------------ */

static void test_recover(uint32_t g, const char *dir) {
    tt_config c, orig;
    tier_prune_map map;
    pruned_config(g, 11 + g, &c, &map);
    loram_original_config(&c, &orig);
    peft_adapter a, rec, back;
    random_adapter(&c, 3, 6.f, LORA_ALL_TARGETS, 1.f, g, &a);
    CHECK_MSG(loram_check_adapter(&a, "pruned-adapter", &c, "pruned.tier") == 0, "%s", tt_lasterr());
    CHECK_MSG(loram_recover(&a, &c, &map, &rec) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(verify_recovery(&rec, &a, &c, &map), 0);

    /* Anchors written by hand, in case the checker and the code shared a
     * misreading of GQA: with g = 2, layer 1 keeps KV heads {1, 2}, so pruned
     * query heads 0,1,2,3 are original heads 2,3,4,5 (rows 16.., 24.., 32.., 40..). */
    if (g == 2) {
        const peft_lora *x = peft_at(&a, 1, TT_PROJ_Q), *y = peft_at(&rec, 1, TT_PROJ_Q);
        CHECK(memcmp(y->B + 16 * 3, x->B + 0 * 3, 3 * sizeof(float)) == 0);
        CHECK(memcmp(y->B + 24 * 3, x->B + 8 * 3, 3 * sizeof(float)) == 0);
        CHECK(memcmp(y->B + 47 * 3, x->B + 31 * 3, 3 * sizeof(float)) == 0);
        CHECK(y->B[15 * 3] == 0 && y->B[48 * 3] == 0);
        const peft_lora *kx = peft_at(&a, 1, TT_PROJ_K), *ky = peft_at(&rec, 1, TT_PROJ_K);
        CHECK(memcmp(ky->B + 8 * 3, kx->B, 3 * sizeof(float)) == 0); /* KV head 1 = rows 8..15 */
        const peft_lora *dx = peft_at(&a, 1, TT_PROJ_DOWN), *dy = peft_at(&rec, 1, TT_PROJ_DOWN);
        CHECK(dy->A[5] == dx->A[2] && dy->A[4] == 0); /* channel 2 of the pruned layer is channel 5 */
    }

    /* The checker fails on a wrong map: here layer 2's KV heads shifted by one. */
    tier_prune_map wrong = map;
    uint32_t kv_shift[4];
    for (uint32_t j = 0; j < c.layers[2].n_kv_heads; j++) kv_shift[j] = (map.kv[2][j] + 1) % c.n_kv_heads;
    qsort(kv_shift, c.layers[2].n_kv_heads, sizeof *kv_shift, cmp_u32);
    wrong.kv[2] = kv_shift;
    CHECK(memcmp(kv_shift, map.kv[2], c.layers[2].n_kv_heads * sizeof *kv_shift) != 0);
    CHECK_MSG(verify_recovery(&rec, &a, &c, &wrong) > 0, "the recovery check cannot fail");

    /* The recovered adapter is a PEFT adapter of the original model; it reads back exactly. */
    char path[600];
    snprintf(path, sizeof path, "%s/rec%u", dir, g);
    CHECK_MSG(peft_write(path, &rec) == 0, "%s", tt_lasterr());
    CHECK_MSG(peft_read(path, 0, &back) == 0, "%s", tt_lasterr());
    CHECK_EQ_INT(verify_recovery(&back, &a, &c, &map), 0);
    CHECK(loram_check_adapter(&back, path, &orig, "orig.tier") == 0);
    peft_free(&back);

    /* Mismatches are refused, naming the layer, the projection and both shapes. */
    CHECK(loram_check_adapter(&a, "pruned-adapter", &orig, "orig.tier") == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "adapter pruned-adapter was trained for another model: layer 1 q_proj is 32 x 64") &&
                  strstr(tt_lasterr(), "64 x 64 in orig.tier") && strstr(tt_lasterr(), "tiertrain recover"),
              "%s", tt_lasterr());
    CHECK(loram_check_adapter(&rec, "rec", &c, "pruned.tier") == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "layer 1 q_proj") && strstr(tt_lasterr(), "already recovered"), "%s", tt_lasterr());
    tt_config fewer = c;
    fewer.n_layers = 2;
    CHECK(loram_check_adapter(&a, "ad", &fewer, "two.tier") == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "it has 3 layers but two.tier has 2"), "%s", tt_lasterr());
    peft_at(&a, 2, TT_PROJ_UP)->B[5] = NAN;
    CHECK(loram_check_adapter(&a, "ad", &c, "pruned.tier") == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "layer 2 up_proj lora_B holds a non-finite value"), "%s", tt_lasterr());

    loram_free(&rec);
    free_adapter(&a);
    store_prune_map_clear(&map);
}

/* ---- (b) merge ------------------------------------------------------------- */

typedef struct fwd_out {
    double loss;
    tt_real *x; /* final hidden states (T, hidden), host */
} fwd_out;

/* Forward of B windows of S tokens through the store at path, with adapter a
 * (NULL: LoRA with B = 0, i.e. none): the last layer's output and the loss. */
static int forward(const char *path, const peft_adapter *a, const int32_t *in, const int32_t *tg, int B, int S,
                   fwd_out *o) {
    tt_model *m;
    int rc = model_load(&m, path);
    if (rc) return rc;
    const tt_config *c = model_config(m);
    tt_lora_cfg lc = a ? (tt_lora_cfg){(int)a->rank, a->alpha, 0.f, a->target_mask, a->rslora} : (tt_lora_cfg){1, 1.f, 0.f, 1, 0};
    tt_lora lo;
    TT_ASSERT(lora_init(&lo, c, &lc, 5) == 0);
    if (a) TT_ASSERT(loram_load_lora(&lo, a) == 0);
    tt_ws *w;
    tt_ws_opts wo = {.B = B, .seq = S, .with_ckpt = 1};
    TT_ASSERT(ws_create(&w, c, &lc, &wo, NULL) == 0);
    size_t T = (size_t)B * S, n = T * c->hidden;
    tt_real *wt = malloc(T * sizeof *wt);
    for (size_t i = 0; i < T; i++) wt[i] = 1;
    o->loss = model_micro_step(m, &lo, w, in, tg, wt, 1, 0, 0) / (double)T;
    tt_real *x = be_alloc(n * sizeof *x), *y = be_alloc(n * sizeof *y);
    model_embed(m, w, in, x);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        model_layer_forward(m, &lo, w, (int)l, x, y, 0);
        tt_real *t = x;
        x = y;
        y = t;
    }
    o->x = malloc(n * sizeof *o->x);
    be_to_host(o->x, x, n * sizeof *x);
    be_free(x);
    be_free(y);
    free(wt);
    ws_free(w);
    lora_free(&lo);
    model_free(m);
    return 0;
}

/* Largest |a - b| over n values, and the largest |a|. */
static double max_diff(const tt_real *a, const tt_real *b, size_t n, double *amax) {
    double d = 0;
    *amax = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
        if (fabs((double)a[i]) > *amax) *amax = fabs((double)a[i]);
    }
    return d;
}

/* model + adapter versus merge(model, adapter) with no adapter.
 *
 * Tolerance: both compute x·W^T + s·(x·A^T)·B^T, one as written (tt_real =
 * f32), the other with W' = fl(W + s·B·A) folded first. Only the f32 rounding
 * differs: about k·2^-24 relative per dot product of length k ≤ 96 here, i.e.
 * ~1e-5 relative in the worst case per layer (typically far less, errors
 * being random), over 3 layers. We allow 1e-4 of the largest hidden value
 * and 1e-4 nats on the loss; the adapter itself moves the loss by about a
 * nat and the hidden states by O(1), which the "bare" check confirms. */
static void check_merge_equivalent(const char *orig_path, const peft_adapter *a, const char *merged_path,
                                   const char *what) {
    CHECK_MSG(loram_merge(orig_path, a, what, merged_path, NULL, NULL) == 0, "%s: %s", what, tt_lasterr());
    int B = 2, S = 12;
    int32_t in[24], tg[24];
    tt_rng r;
    rng_seed(&r, 9, 9);
    for (int i = 0; i < B * S; i++) {
        in[i] = (int32_t)rng_below(&r, 32);
        tg[i] = (int32_t)rng_below(&r, 32);
    }
    fwd_out with, merged, bare;
    CHECK(forward(orig_path, a, in, tg, B, S, &with) == 0);
    CHECK(forward(merged_path, NULL, in, tg, B, S, &merged) == 0);
    CHECK(forward(orig_path, NULL, in, tg, B, S, &bare) == 0);
    size_t n = (size_t)B * S * 64;
    double amax, d = max_diff(with.x, merged.x, n, &amax), db = max_diff(with.x, bare.x, n, &amax);
    CHECK_MSG(d <= 1e-4 * amax, "%s: hidden states of model + adapter and of the merged model differ by %g (max |x| %g)",
              what, d, amax);
    CHECK_NEAR(with.loss, merged.loss, 1e-4);
    /* the comparison is not vacuous: the adapter changes the model far beyond the tolerance */
    CHECK_MSG(db > 0.1 * amax && fabs(with.loss - bare.loss) > 0.05, "%s: the adapter hardly changes the model (%g, %g)",
              what, db, fabs(with.loss - bare.loss));
    fprintf(stderr, "%s: merged vs model + adapter: hidden max diff %.3g (max |x| %.3g), loss %.9f vs %.9f; bare "
                    "loss %.6f\n", what, d, amax, merged.loss, with.loss, bare.loss);
    free(with.x);
    free(merged.x);
    free(bare.x);
}


/* Merging into a pruned NF4 store: dtypes, the pruning map and untouched
 * tensors kept byte for byte; merged projections re-quantized close to
 * W + s·B·A; a foreign adapter refused with nothing written. */
static void test_merge_nf4(const char *dir) {
    tt_config c, orig;
    tier_prune_map map;
    pruned_config(2, 21, &c, &map);
    loram_original_config(&c, &orig);
    char src[600], dst[600], part[700];
    snprintf(src, sizeof src, "%s/pruned-nf4.tier", dir);
    snprintf(dst, sizeof dst, "%s/pruned-merged.tier", dir);
    uint32_t nt = config_n_tensors(&c);
    uint32_t *dt = fixture_dtypes(&c, TT_DTYPE_NF4DQ);
    tier_write_opts wo = {dt, &map, 0, NULL};
    fixture_fill_ctx fc = {4, 0.2f};
    CHECK_MSG(store_write(src, &c, &wo, fixture_fill, &fc) == 0, "%s", tt_lasterr());
    unsigned targets = 1u << TT_PROJ_Q | 1u << TT_PROJ_O | 1u << TT_PROJ_DOWN; /* k, v, gate, up stay untouched */
    peft_adapter a;
    random_adapter(&c, 2, 4.f, targets, 0.3f, 8, &a);
    CHECK_MSG(loram_merge(src, &a, "pruned-adapter", dst, NULL, NULL) == 0, "%s", tt_lasterr());

    store_reader rs, rd;
    CHECK(store_reader_open(&rs, src) == 0);
    CHECK(store_reader_open(&rd, dst) == 0);
    const tier_prune_map *m2 = tier_prune(rd.s);
    CHECK(m2 != NULL);
    for (uint32_t l = 1; m2 && l < 3; l++) {
        CHECK(memcmp(m2->kv[l], map.kv[l], c.layers[l].n_kv_heads * sizeof(uint32_t)) == 0);
        CHECK(memcmp(m2->ffn[l], map.ffn[l], c.layers[l].ffn * sizeof(uint32_t)) == 0);
    }
    uint64_t maxn = store_max_tensor(&c);
    float *w = malloc(maxn * sizeof *w), *m = malloc(maxn * sizeof *m);
    tt_tensor_desc d;
    int n_merged = 0;
    for (uint32_t i = 0; i < nt; i++) {
        config_tensor(&c, i, &d);
        CHECK_EQ_INT(store_reader_dtype(&rd, i), dt[i]);
        CHECK(store_reader_tensor(&rs, i, w) == 0 && store_reader_tensor(&rd, i, m) == 0);
        const tier_tensor *ts = tier_tensor_at(rs.s, i), *td = tier_tensor_at(rd.s, i);
        int same_bytes = ts->nbytes == td->nbytes && memcmp(rs.raw + ts->offset, rd.raw + td->offset, ts->nbytes) == 0;
        if (d.role != TT_ROLE_LINEAR || !(targets >> d.proj & 1)) {
            CHECK_MSG(same_bytes, "%s was not copied byte for byte", d.name);
            continue;
        }
        /* Expected: W + s B A. NF4 stores each value as a code times its block's
         * absmax: the code is within half the largest code gap (between -1 and
         * -0.69620, so 0.1519 of the absmax) of it, and double quantization
         * perturbs the absmax by a few percent. The element holding the block's
         * absmax is coded exactly +-1, so max|merged| over the block is the
         * stored absmax and its distance from the true one is that perturbation. */
        const peft_lora *x = peft_at(&a, (uint32_t)d.layer, d.proj);
        double err_m = 0, err_w = 0;
        uint64_t n = d.rows * d.cols, nbad = 0;
        double *e = malloc(n * sizeof *e);
        for (uint64_t j = 0; j < n; j++) {
            uint64_t o = j / d.cols, k = j % d.cols;
            double s = 0;
            for (uint32_t q = 0; q < a.rank; q++) s += (double)x->B[o * a.rank + q] * x->A[q * d.cols + k];
            e[j] = w[j] + a.alpha / a.rank * s;
        }
        for (uint64_t b0 = 0; b0 < n; b0 += 64) {
            double amax = 0, mmax = 0;
            for (uint64_t j = b0; j < b0 + 64 && j < n; j++) {
                amax = fmax(amax, fabs(e[j]));
                mmax = fmax(mmax, fabs(m[j]));
            }
            nbad += fabs(mmax - amax) > 0.05 * amax;
            for (uint64_t j = b0; j < b0 + 64 && j < n; j++) {
                nbad += fabs(m[j] - e[j]) > 0.1520 * amax + fabs(mmax - amax) + 1e-6 * amax;
                err_m += fabs(m[j] - e[j]);
                err_w += fabs(w[j] - e[j]);
            }
        }
        CHECK_MSG(nbad == 0, "%s: %llu merged values (or block absmax values) off W + sBA by more than NF4's error",
                  d.name, (unsigned long long)nbad);
        CHECK_MSG(err_m < 0.5 * err_w, "%s: merged is no closer to W + sBA (mean error %g) than W is (%g)", d.name,
                  err_m / n, err_w / n);
        n_merged++;
        free(e);
    }
    CHECK_EQ_INT(n_merged, 3 * 3);
    free(w);
    free(m);
    store_reader_close(&rs);
    store_reader_close(&rd);

    /* a foreign adapter (the original model's shapes) is refused; nothing is written */
    peft_adapter big;
    random_adapter(&orig, 2, 4.f, targets, 0.3f, 8, &big);
    snprintf(dst, sizeof dst, "%s/never.tier", dir);
    CHECK(loram_merge(src, &big, "big-adapter", dst, NULL, NULL) == -EINVAL);
    CHECK_MSG(strstr(tt_lasterr(), "adapter big-adapter was trained for another model: layer 1 q_proj is 64 x 64"),
              "%s", tt_lasterr());
    snprintf(part, sizeof part, "%s.partial", dst);
    CHECK(!fixture_exists(dst) && !fixture_exists(part));
    CHECK(loram_merge("/nonexistent/m.tier", &a, "ad", dst, NULL, NULL) != 0);
    CHECK_MSG(strstr(tt_lasterr(), "/nonexistent/m.tier"), "%s", tt_lasterr());
    free_adapter(&big);
    free_adapter(&a);
    free(dt);
    store_prune_map_clear(&map);
}

static void test_merge(const char *dir) {
    tt_config c, orig;
    tier_prune_map map;
    pruned_config(2, 31, &c, &map);
    loram_original_config(&c, &orig);
    char op[600], mp[600];
    snprintf(op, sizeof op, "%s/orig-f32.tier", dir);
    CHECK(fixture_write_model(op, &orig, TT_DTYPE_F32, 0.2f, 6) == 0);

    peft_adapter a, p, rec;
    random_adapter(&orig, 3, 6.f, LORA_ALL_TARGETS, 0.3f, 12, &a);
    snprintf(mp, sizeof mp, "%s/merged-random.tier", dir);
    check_merge_equivalent(op, &a, mp, "random adapter");

    /* rank-stabilised LoRA (use_rslora): merged and applied alike, and the same model as plain LoRA with
     * alpha x sqrt(r) (PEFT: scaling = alpha / sqrt(r) instead of alpha / r) */
    a.rslora = 1;
    snprintf(mp, sizeof mp, "%s/merged-rslora.tier", dir);
    check_merge_equivalent(op, &a, mp, "rslora adapter");
    {
        int32_t in[16], tg[16];
        for (int i = 0; i < 16; i++) in[i] = (i * 7 + 3) % 32, tg[i] = (i * 5 + 1) % 32;
        fwd_out rs, plain, same;
        float alpha = a.alpha;
        CHECK(forward(op, &a, in, tg, 2, 8, &rs) == 0);
        a.rslora = 0;
        CHECK(forward(op, &a, in, tg, 2, 8, &plain) == 0);
        a.alpha = alpha * sqrtf((float)a.rank);
        CHECK(forward(op, &a, in, tg, 2, 8, &same) == 0);
        a.alpha = alpha;
        CHECK_MSG(fabs(rs.loss - same.loss) < 1e-5 && fabs(rs.loss - plain.loss) > 1e-3,
                  "rslora loss %.7f, plain alpha x sqrt(r) %.7f, plain alpha %.7f", rs.loss, same.loss, plain.loss);
        free(rs.x); free(plain.x); free(same.x);
    }

    /* the wording: a recovered adapter merged into the original model
     * gives the same logits as original + adapter */
    random_adapter(&c, 3, 6.f, LORA_ALL_TARGETS, 0.3f, 13, &p);
    CHECK(loram_recover(&p, &c, &map, &rec) == 0);
    snprintf(mp, sizeof mp, "%s/merged-recovered.tier", dir);
    check_merge_equivalent(op, &rec, mp, "recovered adapter");

    loram_free(&rec);
    free_adapter(&p);
    free_adapter(&a);
    store_prune_map_clear(&map);
}

/* ---- (c) eval ---------------------------------------------------------------- */

/* train_eval's windows computed directly with model_micro_step: consecutive
 * windows of S + 1 tokens, B per micro-batch (the last one padded with weight 0). */
static double direct_eval(const char *path, const peft_adapter *a, const uint32_t *tok, uint64_t ntok, int B, int S) {
    tt_model *m;
    TT_ASSERT(model_load(&m, path) == 0);
    const tt_config *c = model_config(m);
    tt_lora_cfg lc = {(int)a->rank, a->alpha, 0.f, a->target_mask, a->rslora};
    tt_lora lo;
    TT_ASSERT(lora_init(&lo, c, &lc, 5) == 0 && loram_load_lora(&lo, a) == 0);
    tt_ws *w;
    tt_ws_opts wo = {.B = B, .seq = S, .with_ckpt = 1};
    TT_ASSERT(ws_create(&w, c, &lc, &wo, NULL) == 0);
    int T = B * S;
    int32_t *in = malloc(T * sizeof *in), *tg = malloc(T * sizeof *tg);
    tt_real *wt = malloc(T * sizeof *wt);
    double sum = 0, count = 0;
    uint64_t pos = 0;
    while (pos + S + 1 <= ntok) {
        for (int b = 0; b < B; b++) {
            int ok = pos + S + 1 <= ntok;
            for (int t = 0; t < S; t++) {
                in[b * S + t] = ok ? (int32_t)tok[pos + t] : 0;
                tg[b * S + t] = ok ? (int32_t)tok[pos + t + 1] : -1;
                wt[b * S + t] = ok;
            }
            if (ok) {
                pos += S;
                count += S;
            }
        }
        sum += model_micro_step(m, &lo, w, in, tg, wt, 1, 0, 0);
    }
    free(in);
    free(tg);
    free(wt);
    ws_free(w);
    lora_free(&lo);
    model_free(m);
    return sum / count;
}

static double exec_eval_loss(const char *path, const peft_adapter *a, const tt_tokens *tok, int B, int S, int K,
                             int streamed) {
    tier_store *s;
    TT_ASSERT(tier_open(&s, path) == 0);
    tt_plan_req req = {0};
    req.B = B;
    req.seq = S;
    req.K = K;
    exec_user(&req.user, &(tt_lora_cfg){(int)a->rank, a->alpha, 0.f, a->target_mask, a->rslora}, 0);
    if (streamed) plan_minimum(s, &req, &req.hbm, &req.host);
    tt_plan p;
    TT_ASSERT(plan_make(s, &req, &p) == 0);
    if (streamed) CHECK_MSG(p.slots < p.L, "the streamed plan keeps every layer resident (%d slots)", p.slots);
    tt_exec *e;
    TT_ASSERT(exec_create(&e, s, &p, 1, NULL) == 0);
    tier_close(s);
    CHECK(loram_load_lora(exec_lora(e), a) == 0);
    double loss = NAN;
    CHECK_MSG(train_eval(e, tok, 1 << 30, &loss) == 0, "%s", tt_lasterr());
    exec_free(e);
    return loss;
}

static void test_eval(const char *dir) {
    tt_config c;
    fixture_micro_config(&c);
    c.n_layers = 3;
    for (uint32_t l = 0; l < 3; l++) c.layers[l] = c.layers[0];
    char path[600];
    snprintf(path, sizeof path, "%s/eval-nf4.tier", dir);
    CHECK(fixture_write_model(path, &c, TT_DTYPE_NF4DQ, 0.2f, 8) == 0);
    peft_adapter a;
    random_adapter(&c, 4, 8.f, LORA_ALL_TARGETS, 0.3f, 14, &a);
    /* 13 windows of 8: three full passes of K * B = 4 windows and one padded */
    uint64_t n = 13 * 8 + 1;
    uint32_t *tok = malloc(n * sizeof *tok);
    tt_rng r;
    rng_seed(&r, 2, 2);
    for (uint64_t i = 0; i < n; i++) tok[i] = (uint32_t)rng_below(&r, c.vocab);
    tt_tokens tt = {.t = tok, .n = n};
    double direct = direct_eval(path, &a, tok, n, 2, 8);
    double resident = exec_eval_loss(path, &a, &tt, 2, 8, 2, 0), streamed = exec_eval_loss(path, &a, &tt, 2, 8, 2, 1);
    /* the same operations on the same data: only the double sum's order over micro-batches may differ */
    CHECK_NEAR(resident, direct, 1e-9 * fabs(direct));
    CHECK_NEAR(streamed, direct, 1e-9 * fabs(direct));
    fprintf(stderr, "eval: direct %.12f, executor %.12f, streamed %.12f\n", direct, resident, streamed);
    /* and the adapter is in it: with B = 0 the loss differs */
    for (uint32_t l = 0; l < 3; l++)
        for (int p = 0; p < PEFT_N_PROJ; p++) {
            peft_lora *x = peft_at(&a, l, p);
            memset(x->B, 0, (size_t)x->out * a.rank * sizeof(float));
        }
    CHECK(fabs(exec_eval_loss(path, &a, &tt, 2, 8, 2, 0) - direct) > 1e-3);
    free(tok);
    free_adapter(&a);
}

int main(void) {
    char *dir = fixture_tmpdir();
    test_recover(2, dir);
    test_recover(4, dir);
    test_merge(dir);
    test_merge_nf4(dir);
    test_eval(dir);
    fixture_rm_rf(dir);
    free(dir);
    TEST_END();
}
